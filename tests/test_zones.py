"""inference/zones.py and --zones/--exclude: every zone counts exactly the points inside it (even-odd rule),
overlapping and concave zones and zones partly off the picture included, in bounded memory for millions of
points; excluded points are gone from everything; bad files and polygons past the caps are one line and
nothing is written."""
import csv
import json
import tracemalloc

import cv2
import numpy as np
import pytest
import torch

import run_test
from inference import Counter, CountingOptions
import inference.zones
from inference.zones import MAX_NAME_CHARS, MAX_POLYGONS, MAX_VERTICES, check_polygons, inside, read_polygons
from util.script import EXIT_SKIPPED
from helpers import FixedScores, counting_checkpoint

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10]]
# An L: the square [0, 40) x [0, 40) without its top-right quarter [20, 40) x [0, 20).
CONCAVE = [[0, 0], [20, 0], [20, 20], [40, 20], [40, 40], [0, 40]]


def crossings(x: float, y: float, polygon: list) -> bool:
    """The even-odd rule for one point, written plainly: count the edges that a ray towards +x crosses."""
    odd = False
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            odd = not odd
    return odd


def test_inside_agrees_with_the_rule_on_random_points_and_edges():
    star = [[50, 0], [61, 35], [98, 35], [68, 57], [79, 91], [50, 70], [21, 91], [32, 57], [2, 35], [39, 35]]
    crossed = [[0, 0], [60, 60], [60, 0], [0, 60]]  # self-crossing: a bow tie
    points = np.random.default_rng(0).uniform(-10, 110, size=(4000, 2))
    points = np.concatenate([points, [[0, 5], [10, 5], [5, 0], [5, 10], [20, 30]]])  # on edges and vertices
    for polygon in (SQUARE, CONCAVE, star, crossed):
        expected = [crossings(x, y, polygon) for x, y in points]
        assert inside(points, np.array(polygon, dtype=np.float64)).tolist() == expected
    assert inside(np.array([[0, 5], [10, 5], [5, 0], [5, 10]]), np.array(SQUARE, float)).tolist() == [
        True, False, True, False], "half-open as pixels are: left and top edges in, right and bottom out"


def inside_at_once(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``inside`` in one piece, as it was: the whole ``[N, V]`` arithmetic at once (``inside`` must agree
    with it bit for bit)."""
    x, y = points[:, :1], points[:, 1:]
    start, end = polygon, np.roll(polygon, -1, axis=0)
    spans = (start[:, 1] > y) != (end[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = start[:, 0] + (y - start[:, 1]) * (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
    return (spans & (x < crossing_x)).sum(axis=1) % 2 == 1


def grid_polygons(rng) -> list:
    """Polygons with whole-pixel vertices in [0, 40]: concave stars, self-crossing scribbles and a comb, so
    that many edges are horizontal and many rows hold several vertices."""
    stars = []
    for count in (5, 12, 40):
        angles, radii = np.sort(rng.uniform(0, 2 * np.pi, count)), rng.integers(3, 20, count)
        stars.append(np.round(np.stack([20 + radii * np.cos(angles), 20 + radii * np.sin(angles)], axis=1)))
    scribbles = [rng.integers(0, 41, size=(count, 2)) for count in (4, 9, 30)]
    comb = [[0, 0], [40, 0], [40, 10], [30, 10], [30, 40], [25, 40], [25, 10], [15, 10], [15, 40], [10, 40],
            [10, 10], [0, 10]]
    return [np.array(polygon, dtype=np.float64) for polygon in [*stars, *scribbles, comb, CONCAVE]]


@pytest.mark.parametrize("block_pairs", [97, inference.zones.BLOCK_PAIRS])
def test_inside_in_blocks_agrees_with_the_rule_on_random_polygons(monkeypatch, block_pairs):
    monkeypatch.setattr(inference.zones, "BLOCK_PAIRS", block_pairs)
    rng = np.random.default_rng(2)
    whole = np.stack(np.meshgrid(np.arange(-1, 42), np.arange(-1, 42)), axis=-1).reshape(-1, 2)
    halves = rng.integers(-2, 84, size=(1000, 2)) / 2
    anywhere = rng.uniform(-2, 42, size=(1000, 2))
    for polygon in grid_polygons(rng):
        midpoints = (polygon + np.roll(polygon, -1, axis=0)) / 2
        points = np.concatenate([whole, halves, anywhere, polygon, midpoints, [[5, np.nan], [np.nan, 5]]])
        points = points[rng.permutation(len(points))]
        expected = [crossings(x, y, polygon.tolist()) for x, y in points.tolist()]
        assert inside(points, polygon).tolist() == expected == inside_at_once(points, polygon).tolist()
    # Several blocks of the largest polygons, against the one-piece arithmetic.
    polygon = rng.uniform(0, 40, size=(MAX_VERTICES, 2))
    points = rng.uniform(-2, 42, size=(3 * max(1, block_pairs // MAX_VERTICES) + 500, 2))
    points[::7] = np.round(points[::7])
    assert (inside(points, polygon) == inside_at_once(points, polygon)).all()


def test_inside_needs_bounded_memory_for_every_anchor_of_a_large_picture():
    rng = np.random.default_rng(0)
    angles, radii = np.sort(rng.uniform(0, 2 * np.pi, MAX_VERTICES)), rng.uniform(500, 2500, MAX_VERTICES)
    polygon = np.stack([4000 + radii * np.cos(angles), 3000 + radii * np.sin(angles)], axis=1)
    # 3 million points: every anchor of a 48 MP picture at threshold 0. 20,000 first, where [N, V] float64
    # arrays in one piece already take 160 MB each: such an inside() fails there, before taking tens of GB.
    for count in (20_000, 3_000_000):
        points = rng.uniform(0, [8000, 6000], size=(count, 2))
        tracemalloc.start()
        try:
            inside(points, polygon)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 200e6, f"inside() of {count} points took {peak / 1e6:.0f} MB at its peak"


def test_polygons_past_the_caps_are_refused_in_one_line():
    circle = [[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, MAX_VERTICES, endpoint=False)]
    at_the_caps = {f"{index:0{MAX_NAME_CHARS}d}": SQUARE for index in range(MAX_POLYGONS - 1)}
    at_the_caps["circle"] = circle
    assert list(check_polygons(at_the_caps, "zones")) == list(at_the_caps)
    for polygons, message in [
        ({**at_the_caps, "one more": SQUARE}, f"zones: {MAX_POLYGONS + 1} polygons; at most {MAX_POLYGONS} may be"),
        ({"circle": circle + [[0, 0]]}, f"zones: polygon 'circle' has {MAX_VERTICES + 1} points; at most "
                                        f"{MAX_VERTICES}"),
        ({"x" * (MAX_NAME_CHARS + 1): SQUARE}, f"zones: the name '{'x' * 20}...' has {MAX_NAME_CHARS + 1} "
                                               f"characters; at most {MAX_NAME_CHARS}"),
    ]:
        with pytest.raises(ValueError) as refused:
            check_polygons(polygons, "zones")
        assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_counter_counts_each_zone_independently_and_drops_excluded_points_first():
    # Every stride-8 cell centre of a 200 x 300 picture (padded to 256 x 384) is a person: (4 + 8i, 4 + 8j).
    counter = Counter(FixedScores(lambda points: points[:, 0] >= 0), tile_size=128)
    zones = {"left": [[0, 0], [100, 0], [100, 200], [0, 200]],
             "overlap": [[60, 60], [160, 60], [160, 140], [60, 140]],
             "concave": [[x * 2 + 150, y * 2 + 40] for x, y in CONCAVE],
             "partly_off": [[250, -50], [400, -50], [400, 100], [250, 100]]}
    exclude = {"roof": [[0, 0], [300, 0], [300, 30], [0, 30]]}
    result = counter.predict(torch.rand(3, 200, 300), CountingOptions(zones=zones, exclusions=exclude))
    grid = [(4 + 8 * i, 4 + 8 * j) for i in range(48) for j in range(32)]
    kept = [(x, y) for x, y in grid if not crossings(x, y, exclude["roof"])]
    assert result.count == len(kept) == len(grid) - 37 * 4  # centres x < 300 and y < 30
    assert sorted(map(tuple, result.points.tolist())) == sorted(kept)
    assert len(result.scores) == result.count
    assert result.zones == {name: sum(crossings(x, y, polygon) for x, y in kept) for name, polygon in zones.items()}
    assert list(result.zones) == list(zones), "in the order given"
    assert min(result.zones.values()) > 0
    plain = counter.predict(torch.rand(3, 200, 300))
    assert plain.zones == {} and plain.count == len(grid) and (plain.height, plain.width) == (200, 300)


def write_json(path, content):
    path.write_text(json.dumps(content))
    return path


def test_run_test_prints_writes_and_draws_zone_counts_with_the_default_workers(tmp_path, capsys):
    counting_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.jpg"):
        cv2.imwrite(str(pictures / name), rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8))
    (pictures / "notes.txt").write_text("not a picture")
    zones = write_json(tmp_path / "zones.json", {"gate": [[0, 0], [80, 0], [80, 120], [0, 120]],
                                                 "stage": [[40, 20], [160, 20], [120, 110]],
                                                 "far": [[500, 500], [600, 500], [600, 600]]})
    labelme = {"version": "5.4.1", "flags": {}, "imagePath": "a.png", "imageHeight": 120, "imageWidth": 160,
               "shapes": [{"label": "sign", "points": [[100, 0], [160, 40]], "shape_type": "rectangle",
                           "group_id": None, "flags": {}},
                          {"label": "head", "points": [[5, 5]], "shape_type": "point", "group_id": None, "flags": {}}]}
    exclude = write_json(tmp_path / "exclude.json", labelme)
    out = tmp_path / "out"
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures), "--device", "cpu",
                          "--zones", str(zones), "--exclude", str(exclude), "--output_dir", str(out)])
    printed = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert printed.err.count("warning: zone 'far' lies wholly outside") == 1
    with open(out / "counts.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["image", "count", "gate", "stage", "far"]
    polygons = {name: polygon.tolist() for name, polygon in read_polygons(zones).items()}
    sign = read_polygons(exclude)["sign"].tolist()
    for row in rows:
        stem = row["image"].rsplit(".", 1)[0]
        with open(out / "points" / f"{stem}.csv") as file:
            points = [(float(p["x"]), float(p["y"])) for p in csv.DictReader(file)]
        assert int(row["count"]) == len(points) > 0
        assert not any(crossings(x, y, sign) for x, y in points), "excluded points are gone from points/"
        for name, polygon in polygons.items():
            assert int(row[name]) == sum(crossings(x, y, polygon) for x, y in points)
        assert f"{row['image']}: {row['count']} (gate: {row['gate']}, stage: {row['stage']}, far: 0)" in printed.out
        assert (out / "vis" / f"{stem}.jpg").is_file()
    assert int(rows[0]["gate"]) > 0 and int(rows[0]["stage"]) > 0


@pytest.mark.parametrize("content,message", [
    ({"gate": [[0, 0], [1, 1]]}, "polygon 'gate' has 2 points; a polygon needs at least 3"),
    ({"gate": [[0, 0], [1, "x"], [2, 2]]}, "polygon 'gate' has a coordinate that is not a number"),
    ({"": [[0, 0], [1, 0], [1, 1]]}, "a polygon has an empty name"),
    ({"count": [[0, 0], [1, 0], [1, 1]]}, "the name 'count' is a column of counts.csv; choose another"),
    ([[0, 0], [1, 0], [1, 1]], "neither an object of named polygons"),
    ({"shapes": [{"label": "x", "points": [[1, 1]], "shape_type": "point"}]}, "without polygon or rectangle shapes"),
    ({f"zone {index}": SQUARE for index in range(65)}, "65 polygons; at most 64 may be given"),
])
def test_bad_zone_files_are_one_line_and_nothing_is_written(tmp_path, capsys, content, message):
    counting_checkpoint(tmp_path / "model.pth")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64, 3), np.uint8))
    zones = write_json(tmp_path / "zones.json", content)
    for flag in ("--zones", "--exclude"):
        assert run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path / "a.png"),
                              flag, str(zones), "--output_dir", str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith(f"error: {zones}: ") and message in error[0], error
        assert not (tmp_path / "out").exists()


def test_a_name_given_twice_and_zones_with_a_dataset_are_refused(tmp_path, capsys):
    (tmp_path / "twice.json").write_text('{"gate": [[0, 0], [1, 0], [1, 1]], "gate": [[0, 0], [2, 0], [2, 2]]}')
    with pytest.raises(ValueError, match="the name 'gate' is given twice"):
        read_polygons(tmp_path / "twice.json")
    with pytest.raises(SystemExit) as stop:
        run_test.main(["--weight_path", "w.pth", "--dataset_file", "Demo_Hazy", "--zones", "twice.json"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and "--zones, --exclude and --save_density are for your own pictures" in error
