"""Weather synthesis and the embedded procedural demo datasets."""
import math
import os

import cv2
import numpy as np
import pytest

from crowd_datasets import demo
from tools import demo_pictures
from crowd_datasets.demo import ensure_demo, generate_split, make_scene
from crowd_datasets.weather import add_haze, add_rain, random_weather

SMALL = dict(num_train=2, num_test=1, size=(64, 48))


def _tree_bytes(root):
    return {
        os.path.relpath(os.path.join(folder, name), root): open(os.path.join(folder, name), "rb").read()
        for folder, _, names in os.walk(root) for name in names
    }


def _read_points(path):
    lines = path.read_text().splitlines()
    return np.array([[float(v) for v in line.split()] for line in lines], dtype=np.float64).reshape(-1, 2)


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    """Both demo datasets at their default settings, generated once for the module."""
    cache = tmp_path_factory.mktemp("cache")
    for name in ("Demo_Hazy", "Demo_Rainy"):
        ensure_demo(cache, name)
    return cache


def test_haze_matches_scattering_model_on_constant_image():
    clean = np.full((4, 5, 3), 0.2, np.float32)
    depth = np.full((4, 5), 0.5, np.float32)
    airlight = (0.9, 0.8, 0.7)
    hazy = add_haze(clean, depth, beta=2.0, airlight=airlight)
    t = math.exp(-1.0)
    expected = [0.2 * t + a * (1 - t) for a in airlight]
    assert hazy.dtype == np.float32 and hazy.shape == clean.shape
    np.testing.assert_allclose(hazy, np.broadcast_to(expected, clean.shape), atol=1e-6)
    np.testing.assert_allclose(add_haze(clean, depth, beta=0.0, airlight=0.5), clean, atol=1e-7)


def test_haze_moves_farther_pixels_closer_to_airlight():
    rng = np.random.default_rng(0)
    clean = np.repeat(rng.uniform(0.0, 0.6, (6, 1, 3)), 10, axis=1).astype(np.float32)
    depth = np.tile(np.linspace(0.0, 3.0, 10, dtype=np.float32), (6, 1))
    hazy = add_haze(clean, depth, beta=1.0, airlight=0.9)
    distance = np.abs(hazy - 0.9).sum(axis=2)
    assert np.all(np.diff(distance, axis=1) < 0)


def test_haze_rejects_depth_of_wrong_shape():
    with pytest.raises(ValueError, match="depth"):
        add_haze(np.zeros((4, 5, 3), np.float32), np.zeros((5, 4), np.float32), 1.0)


def test_rain_changes_image_stays_in_range_and_leaves_input_alone():
    clean = np.random.default_rng(1).uniform(0.0, 1.0, (48, 64, 3)).astype(np.float32)
    original = clean.copy()
    rainy = add_rain(clean, np.random.default_rng(2))
    assert rainy.dtype == np.float32 and rainy.shape == clean.shape
    assert rainy.min() >= 0.0 and rainy.max() <= 1.0
    assert np.abs(rainy - clean).mean() > 0.02
    np.testing.assert_array_equal(clean, original)
    np.testing.assert_array_equal(rainy, add_rain(clean, np.random.default_rng(2)))


def test_rain_streaks_follow_their_angle():
    black = np.zeros((96, 96, 3), np.float32)
    rainy = add_rain(black, np.random.default_rng(3), angle_deg=0.0, veil_beta=0.0)[..., 0]
    centred = rainy - rainy.mean()
    vertical = (centred[4:] * centred[:-4]).mean()
    horizontal = (centred[:, 4:] * centred[:, :-4]).mean()
    assert rainy.max() > 0.3
    assert vertical > 3 * abs(horizontal)


def test_random_weather_kinds_and_errors():
    rng = np.random.default_rng(4)
    clean = rng.uniform(0.0, 1.0, (32, 40, 3)).astype(np.float32)
    depth = np.tile(np.linspace(1.0, 10.0, 32, dtype=np.float32)[:, None], (1, 40))
    for kind in ("haze", "rain"):
        degraded = random_weather(clean, depth, kind, rng)
        assert degraded.shape == clean.shape and degraded.dtype == np.float32
        assert 0.0 <= degraded.min() and degraded.max() <= 1.0
        assert np.abs(degraded - clean).mean() > 0.02
    assert random_weather(clean, None, "rain", rng).shape == clean.shape
    with pytest.raises(ValueError, match="snow"):
        random_weather(clean, depth, "snow", rng)
    with pytest.raises(ValueError, match="depth"):
        random_weather(clean, None, "haze", rng)


def test_scene_depth_is_farthest_in_sky_and_points_inside():
    scene = make_scene(np.random.default_rng(5), (80, 60))
    assert scene.image.shape == (60, 80, 3) and scene.image.dtype == np.uint8
    assert scene.depth.shape == (60, 80) and scene.depth.dtype == np.float32
    assert scene.depth[0].min() == pytest.approx(1.0)
    assert scene.depth[-1].mean() < scene.depth[0].mean()
    assert np.all((scene.points >= 0) & (scene.points <= [79, 59]))


def test_generate_split_is_deterministic(tmp_path):
    generate_split(tmp_path / "a", 3, "rain", seed=7, size=(64, 48))
    generate_split(tmp_path / "b", 3, "rain", seed=7, size=(64, 48))
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(first) == 12
    assert first == second
    generate_split(tmp_path / "c", 3, "rain", seed=8, size=(64, 48))
    assert _tree_bytes(tmp_path / "c") != first


def test_generate_split_rejects_unknown_weather(tmp_path):
    with pytest.raises(ValueError, match="fog"):
        generate_split(tmp_path, 1, "fog", seed=0)


@pytest.mark.parametrize("name", ["Demo_Hazy", "Demo_Rainy"])
def test_default_demo_files_pair_up_and_points_lie_inside(default_cache, name):
    for split, expected_images in (("train_data", 64), ("test_data", 24)):
        folder = default_cache / name / split
        images = sorted((folder / "images").glob("*.jpg"))
        assert [p.name for p in images] == sorted(f"IMG_{n}.jpg" for n in range(1, expected_images + 1))
        for image_path in images:
            degraded = cv2.imread(str(image_path))
            clean = cv2.imread(str(folder / "HR" / image_path.name))
            assert degraded.shape == clean.shape == (192, 256, 3)
            assert np.abs(degraded.astype(np.int16) - clean).mean() > 3
            depth = np.load(folder / "depth" / f"{image_path.stem}.npy")
            assert depth.shape == (192, 256) and depth.dtype == np.float32
            lines = (folder / "images" / f"{image_path.stem}.txt").read_text().splitlines()
            assert all(len(line.split()) == 2 for line in lines)
            points = _read_points(folder / "images" / f"{image_path.stem}.txt")
            assert 3 <= len(points) <= 300
            assert np.all((points >= 0) & (points[:, 0] < 256)[:, None] & (points[:, 1] < 192)[:, None])


@pytest.mark.parametrize("name", ["Demo_Hazy", "Demo_Rainy"])
def test_default_demo_counts_span_sparse_to_dense(default_cache, name):
    texts = (default_cache / name / "train_data" / "images").glob("*.txt")
    counts = [len(path.read_text().splitlines()) for path in texts]
    assert min(counts) < 10
    assert max(counts) > 100


def test_splits_and_names_differ(default_cache):
    hazy_train = default_cache / "Demo_Hazy" / "train_data" / "HR" / "IMG_1.jpg"
    assert hazy_train.read_bytes() != (default_cache / "Demo_Hazy" / "test_data" / "HR" / "IMG_1.jpg").read_bytes()
    assert hazy_train.read_bytes() != (default_cache / "Demo_Rainy" / "train_data" / "HR" / "IMG_1.jpg").read_bytes()


def test_ensure_demo_does_not_regenerate_a_complete_dataset(default_cache, monkeypatch):
    marker = default_cache / "Demo_Hazy" / demo.COMPLETE_MARKER
    mtime = marker.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("generate_split must not run for a complete dataset")

    monkeypatch.setattr(demo, "generate_split", fail)
    assert ensure_demo(default_cache, "Demo_Hazy") == default_cache / "Demo_Hazy"
    assert marker.stat().st_mtime_ns == mtime


def test_ensure_demo_replaces_incomplete_folder_and_ignores_leftover_temporary(tmp_path):
    target = tmp_path / "Demo_Rainy"
    (target / "train_data" / "images").mkdir(parents=True)
    (target / "train_data" / "images" / "IMG_1.jpg").write_bytes(b"half written")
    leftover = tmp_path / ".Demo_Rainy.tmp-1-deadbeef"
    (leftover / "train_data").mkdir(parents=True)
    (leftover / demo.COMPLETE_MARKER).write_text("anything")
    crashed_long_ago = tmp_path / ".Demo_Rainy.tmp-2-feedface"
    crashed_long_ago.mkdir()
    os.utime(crashed_long_ago, (0, 0))

    assert ensure_demo(tmp_path, "Demo_Rainy", **SMALL) == target
    assert (target / demo.COMPLETE_MARKER).is_file()
    assert cv2.imread(str(target / "train_data" / "images" / "IMG_1.jpg")).shape == (48, 64, 3)
    assert sorted(p.name for p in (target / "test_data" / "HR").iterdir()) == ["IMG_1.jpg"]
    assert not crashed_long_ago.exists()
    assert leftover.exists(), "a recent temporary folder may belong to a running generation"


def test_ensure_demo_regenerates_when_marker_is_from_another_version(tmp_path, monkeypatch):
    ensure_demo(tmp_path, "Demo_Hazy", **SMALL)
    (tmp_path / "Demo_Hazy" / demo.COMPLETE_MARKER).write_text("generator_version=0\n")
    calls = []
    real_generate = demo.generate_split
    monkeypatch.setattr(demo, "generate_split", lambda *a, **k: calls.append(a) or real_generate(*a, **k))
    ensure_demo(tmp_path, "Demo_Hazy", **SMALL)
    assert len(calls) == 2
    assert (tmp_path / "Demo_Hazy" / demo.COMPLETE_MARKER).read_text().startswith(
        f"generator_version={demo.GENERATOR_VERSION} ")


def test_ensure_demo_crash_midway_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real_generate = demo.generate_split

    def crash_on_test_split(out_dir, *args, **kwargs):
        if out_dir.name == "test_data":
            raise RuntimeError("simulated crash")
        real_generate(out_dir, *args, **kwargs)

    monkeypatch.setattr(demo, "generate_split", crash_on_test_split)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_demo(tmp_path, "Demo_Hazy", **SMALL)
    assert not (tmp_path / "Demo_Hazy").exists()
    monkeypatch.setattr(demo, "generate_split", real_generate)
    assert (ensure_demo(tmp_path, "Demo_Hazy", **SMALL) / demo.COMPLETE_MARKER).is_file()


def test_ensure_demo_losing_a_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    winner_cache = tmp_path / "winner"
    (ensure_demo(winner_cache, "Demo_Hazy", **SMALL) / "written_by_winner").write_text("")
    cache = tmp_path / "cache"
    real_generate = demo.generate_split

    def other_process_finishes_first(out_dir, *args, **kwargs):
        if not (cache / "Demo_Hazy").exists():
            os.rename(winner_cache / "Demo_Hazy", cache / "Demo_Hazy")
        real_generate(out_dir, *args, **kwargs)

    monkeypatch.setattr(demo, "generate_split", other_process_finishes_first)
    result = ensure_demo(cache, "Demo_Hazy", **SMALL)
    assert result == cache / "Demo_Hazy"
    assert (result / "written_by_winner").is_file()
    assert (result / demo.COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["Demo_Hazy"]


def test_ensure_demo_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="Demo_Foggy.*Demo_Hazy.*Demo_Rainy"):
        ensure_demo(tmp_path, "Demo_Foggy")
    assert not (tmp_path / "Demo_Foggy").exists()


def test_the_commands_of_tools_demo_sh_parse_with_the_scripts_own_options():
    """A renamed flag or dataset would only show when a new user runs the demo: parse every train.py,
    run_test.py and tools/ command of demo.sh with the option definitions the scripts use."""
    import shlex
    from pathlib import Path

    import run_test
    import train

    script = (Path(__file__).resolve().parents[1] / "tools" / "demo.sh").read_text().replace("\\\n", " ")
    commands = [shlex.split(line.replace('"$dataset"', "Demo_Rainy"), comments=True)
                for line in script.splitlines() if line.lstrip().startswith(".venv/bin/python ")]
    scripts = [command[1] for command in commands]
    assert scripts == ["train.py", "run_test.py", "run_test.py", "tools/demo_pictures.py"], scripts
    train_args = train.build_parser().parse_args(commands[0][2:])
    assert train_args.dataset_file == "Demo_Weather" and train_args.amp is True and train_args.resume == "auto"
    assert train_args.lr_drop < train_args.epochs, "the learning rate must drop before the end"
    for command in commands[1:3]:
        test_args = run_test.build_parser().parse_args(command[2:])
        assert test_args.weight_path == "runs/demo_weather/best_mae.pth"
    assert run_test.build_parser().parse_args(commands[2][2:]).input == "assets/demo"
    assert commands[3][2] == "compare" and demo_pictures.TRUE_COUNTS.is_file()


def test_demo_weather_holds_both_demo_datasets_and_the_demo_pictures_their_true_counts(default_cache, tmp_path,
                                                                                        capsys):
    import csv
    from pathlib import Path

    from crowd_datasets import find_samples

    combined = find_samples("Demo_Weather", "test", ".", cache_dir=default_cache)
    parts = [find_samples(name, "test", ".", cache_dir=default_cache) for name in ("Demo_Hazy", "Demo_Rainy")]
    assert [sample.image for sample in combined] == [sample.image for part in parts for sample in part]
    assert len(combined) == 48 and all(sample.clean is not None for sample in combined)

    root = Path(__file__).resolve().parents[1]
    assert demo_pictures.make(tmp_path, tmp_path / "counts.csv") == 0
    assert capsys.readouterr().out.splitlines()[0] == "hazy_square.jpg: haze, 109 people"
    with open(root / "assets" / "demo_counts.csv", newline="") as file:
        committed = {row["image"]: int(row["true_count"]) for row in csv.DictReader(file)}
    with open(tmp_path / "counts.csv", newline="") as file:
        made = {row["image"]: int(row["true_count"]) for row in csv.DictReader(file)}
    assert made == committed and sorted(committed) == sorted(path.name for path in (root / "assets" / "demo").iterdir())
    for name in committed:  # the committed pictures are the generator's (JPEG-decoded, so within a few levels)
        drawn, stored = (cv2.imread(str(folder / name)).astype(int) for folder in (tmp_path, root / "assets" / "demo"))
        assert drawn.shape == stored.shape == (192, 256, 3) and np.abs(drawn - stored).mean() < 1.0
    (tmp_path / "counted.csv").write_text("image,count\nhazy_square.jpg,100\nhazy_street.jpg,150\nrainy_plaza.jpg,80\n")
    assert demo_pictures.compare(tmp_path / "counted.csv", root / "assets" / "demo_counts.csv") == 0
    assert committed["hazy_square.jpg"] == 109
    assert capsys.readouterr().out.splitlines()[0] == "hazy_square.jpg: counted 100, drawn 109 (-9, -8 %)"
