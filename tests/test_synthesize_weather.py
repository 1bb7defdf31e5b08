"""``tools/synthesize_weather.py``: haze grows with depth (given or estimated from the heads), rain streaks
fall at the recorded angle, runs are reproducible and a rerun redoes only what is missing."""
import csv
import json
import sys

import cv2
import numpy as np

from crowd_datasets import build_dataset
from crowd_datasets.image_io import read_rgb
from helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import synthesize_weather  # noqa: E402

WIDTH, HEIGHT = 160, 120


def clean_dataset(root, images=2, value=90, heads=None):
    """A clean dataset in prepare_dataset's layout: flat grey pictures, ``heads`` points each."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = []
        for index in range(images):
            image = root / f"{split}_data" / "images" / f"{split}_{index}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), np.full((HEIGHT, WIDTH, 3), value, np.uint8))
            annotation = root / f"{split}_data" / "ground_truth" / f"{split}_{index}.txt"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(annotation, np.zeros((0, 2)) if heads is None else heads, fmt="%.3f")
            lines.append(f"{image.relative_to(root)} {annotation.relative_to(root)}")
        (root / f"{split}.list").write_text("\n".join(lines) + "\n")
    return root


def weather_rows(dst):
    with open(dst / "weather.csv") as file:
        return {row["image"]: json.loads(row["parameters"]) for row in csv.DictReader(file)}


def test_haze_with_a_depth_map_brings_far_pixels_closer_to_the_airlight(tmp_path):
    src = clean_dataset(tmp_path / "clean", images=1, value=40)
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    for stem in ("train_0", "test_0"):
        np.save(depth_dir / f"{stem}.npy", np.tile(np.linspace(0.1, 1.0, WIDTH, dtype=np.float32), (HEIGHT, 1)))
    dst = tmp_path / "hazy"
    assert synthesize_weather.main(["--src", str(src), "--dst", str(dst), "--weather", "haze", "--severity", "heavy",
                                    "--depth_dir", str(depth_dir)]) == 0
    hazy = read_rgb(dst / "train_data" / "images" / "train_0.png").astype(float) / 255
    airlight = np.array(weather_rows(dst)["train_0.png"]["airlight"])
    distance = np.abs(hazy - airlight).mean(axis=(0, 2))
    assert distance[-10:].mean() < 0.5 * distance[:10].mean(), "far (right) pixels must be nearer the airlight"
    np.testing.assert_array_equal(read_rgb(dst / "train_data" / "HR" / "train_0.png"), np.full((HEIGHT, WIDTH, 3), 40))


def test_haze_without_depth_grows_with_distance_as_the_heads_indicate(tmp_path):
    rows = np.linspace(10, HEIGHT - 10, 8)
    heads = np.array([[x, y] for y in rows for x in np.arange(5, WIDTH, 3 + 0.25 * y)])  # closer together at the top
    src = clean_dataset(tmp_path / "clean", images=1, value=30, heads=heads)
    dst = tmp_path / "hazy"
    assert synthesize_weather.main(["--src", str(src), "--dst", str(dst), "--weather", "haze",
                                    "--severity", "heavy"]) == 0
    brightness = read_rgb(dst / "test_data" / "images" / "test_0.png").astype(float).mean(axis=(1, 2))
    assert brightness[:20].mean() > brightness[-20:].mean() + 20, "the top (far, small heads) must be hazier"
    assert (np.diff(brightness) <= 1).all(), "haze must not grow towards the camera anywhere"
    flat = synthesize_weather.depth_from_heads(np.zeros((0, 2)), HEIGHT, WIDTH)
    assert flat[0, 0] == 1.0 and flat[-1, 0] < flat[0, 0], "without heads, the top is farthest"


def streak_angle(rain: np.ndarray) -> float:
    """Angle from the vertical (positive: lower end to the right) of the dominant streak direction."""
    gray = cv2.GaussianBlur(rain.mean(axis=2), (0, 0), 1.0)
    gx, gy = cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1)
    tensor = np.array([[(gx * gx).sum(), (gx * gy).sum()], [(gx * gy).sum(), (gy * gy).sum()]])
    values, vectors = np.linalg.eigh(tensor)
    vx, vy = vectors[:, 0]  # least gradient: along the streaks
    if vy < 0:
        vx, vy = -vx, -vy
    return float(np.degrees(np.arctan2(vx, vy)))


def test_rain_adds_bright_streaks_at_the_recorded_angle(tmp_path):
    src = clean_dataset(tmp_path / "clean", images=3, value=20)
    dst = tmp_path / "rainy"
    assert synthesize_weather.main(["--src", str(src), "--dst", str(dst), "--weather", "rain", "--severity", "heavy",
                                    "--num_workers", "0"]) == 0
    rows = weather_rows(dst)
    assert len(rows) == 2 * 3, "one row per picture of both splits"
    for name, parameters in rows.items():
        split = name.split("_")[0]
        rain = read_rgb(dst / f"{split}_data" / "images" / name).astype(float)
        assert rain.mean() > 20 + 5 and rain.max() > 120, "rain only brightens, with bright streaks"
        assert abs(streak_angle(rain) - parameters["angle_deg"]) < 6, (name, parameters["angle_deg"])


def test_same_seed_same_bytes_and_a_rerun_redoes_only_what_is_missing(tmp_path, capsys):
    src = clean_dataset(tmp_path / "clean", images=3)
    runs = [tmp_path / "a", tmp_path / "b"]
    for dst, workers in zip(runs, ("2", "0")):
        assert synthesize_weather.main(["--src", str(src), "--dst", str(dst), "--weather", "rain", "--seed", "7",
                                        "--num_workers", workers]) == 0
    files = sorted(path.relative_to(runs[0]) for path in runs[0].rglob("*") if path.is_file())
    assert len(files) == 3 * 6 + 4  # 6 images x (degraded, clean, annotation); 2 lists, weather.csv, examples.jpg
    assert all((runs[0] / name).read_bytes() == (runs[1] / name).read_bytes() for name in files)
    written = {name: (runs[0] / name).stat().st_mtime_ns for name in files}
    (runs[0] / "test_data" / "images" / "test_1.png").unlink()
    capsys.readouterr()
    assert synthesize_weather.main(["--src", str(src), "--dst", str(runs[0]), "--weather", "rain", "--seed", "7"]) == 0
    assert "wrote 1 images" in capsys.readouterr().out
    for name in files:
        if name.parts[0].endswith("_data") and name.stem != "test_1":  # the image redone, with its pair
            assert (runs[0] / name).stat().st_mtime_ns == written[name], name
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    dataset = build_dataset("Custom", "train", data_root=runs[0], list_path="train.list", use_clean=True, crop_size=32)
    assert dataset.has_clean_pairs and len(dataset) == 3
