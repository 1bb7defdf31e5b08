"""``tools/prepare_dataset.py``: each public release's layout becomes a ``Custom`` dataset with exactly
the original points, and every annotation problem is reported."""
import csv
import json
import sys

import cv2
import numpy as np
import pytest
import scipy.io

from crowd_datasets import build_dataset
from util.script import EXIT_SKIPPED
from helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import prepare_dataset  # noqa: E402

SIZE = (90, 60)  # width, height of every fake picture
POINTS = {"a": [[10.25, 20.5], [70.125, 5.0]], "b": [], "c": [[44.0, 33.75]]}
SPLIT = {"a": "train", "b": "train", "c": "test"}


def picture(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8))


def shanghaitech_release(root):
    for seed, (name, points) in enumerate(POINTS.items()):
        folder = root / f"{SPLIT[name]}_data"
        picture(folder / "images" / f"IMG_{name}.jpg", seed)
        info = np.empty((1, 1), dtype=object)
        location = np.array(points, dtype=np.float64).reshape(-1, 2)
        info[0, 0] = np.array([[(location, np.array([[float(len(points))]]))]],
                              dtype=[("location", object), ("number", object)])
        (folder / "ground-truth").mkdir(exist_ok=True)
        scipy.io.savemat(folder / "ground-truth" / f"GT_IMG_{name}.mat", {"image_info": info})
    return root


def qnrf_release(root):
    for seed, (name, points) in enumerate(POINTS.items()):
        folder = root / ("Train" if SPLIT[name] == "train" else "Test")
        picture(folder / f"img_{name}.jpg", seed)
        annotation = np.array(points, dtype=np.float64).reshape(-1, 2)
        scipy.io.savemat(folder / f"img_{name}_ann.mat", {"annPoints": annotation})
    return root


def jhu_release(root):
    for seed, (name, points) in enumerate(POINTS.items()):
        folder = root / SPLIT[name]
        picture(folder / "images" / f"{name}.jpg", seed)
        (folder / "gt").mkdir(exist_ok=True)
        (folder / "gt" / f"{name}.txt").write_text("".join(f"{x} {y} 4 4 0 1\n" for x, y in points))
    return root


def nwpu_release(root):
    for seed, (name, points) in enumerate(POINTS.items()):
        picture(root / "images" / f"{name}.jpg", seed)
        (root / "jsons").mkdir(exist_ok=True)
        (root / "jsons" / f"{name}.json").write_text(json.dumps({"img_id": f"{name}.jpg", "points": points}))
    (root / "train.txt").write_text("a 0 1\nb 1 2\n")
    (root / "val.txt").write_text("c 0 3\n")
    return root


def csv_release(root):
    rows = [["image", "x", "y", "split"]]
    for seed, (name, points) in enumerate(POINTS.items()):
        picture(root / "pictures" / f"{name}.png", seed)
        rows += [[f"pictures/{name}.png", x, y, SPLIT[name]] for x, y in points] or [[f"pictures/{name}.png", "", "",
                                                                                       SPLIT[name]]]
    with open(root / "heads.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return root / "heads.csv"


RELEASES = {"shanghaitech": shanghaitech_release, "qnrf": qnrf_release, "jhu": jhu_release, "nwpu": nwpu_release,
            "csv": csv_release}


def points_by_name(dst, split):
    dataset = build_dataset("Custom", "test", data_root=dst, list_path=f"{split}.list")
    found = {}
    for index in range(len(dataset)):
        image, target = dataset[index]
        name = next(key for key in POINTS if target["image_id"].endswith(key))
        found[name] = (target["points"].numpy(), tuple(image.shape[1:]))
    return found


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_each_release_becomes_a_custom_dataset_with_exactly_its_points(tmp_path, release, capsys):
    src = RELEASES[release](tmp_path / "release")
    assert prepare_dataset.main(["--format", release, "--src", str(src), "--dst", str(tmp_path / "out")]) == 0
    assert "converted 2 train, 1 test images with 3 points" in capsys.readouterr().out
    for split in ("train", "test"):
        converted = points_by_name(tmp_path / "out", split)
        assert sorted(converted) == sorted(name for name in POINTS if SPLIT[name] == split)
        for name, (points, shape) in converted.items():
            assert SPLIT[name] == split
            np.testing.assert_array_equal(points, np.array(POINTS[name], dtype=np.float32).reshape(-1, 2))
            assert shape == (SIZE[1], SIZE[0])


def test_max_side_scales_images_and_points_together(tmp_path, capsys):
    src = jhu_release(tmp_path / "release")
    assert prepare_dataset.main(["--format", "jhu", "--src", str(src), "--dst", str(tmp_path / "out"),
                                 "--max_side", "45"]) == 0
    converted = points_by_name(tmp_path / "out", "train")
    assert sorted(converted) == sorted(name for name in POINTS if SPLIT[name] == "train")
    for name, (points, shape) in converted.items():
        assert shape == (30, 45)
        np.testing.assert_allclose(points, np.array(POINTS[name], dtype=np.float32).reshape(-1, 2) / 2, atol=1e-5)


def test_annotation_problems_are_reported_per_file_and_nothing_is_dropped_silently(tmp_path, capsys):
    src = jhu_release(tmp_path / "release")
    (src / "train" / "gt" / "a.txt").write_text("10 20\n200 30\n")      # off the 90 x 60 picture
    (src / "train" / "gt" / "b.txt").write_text("10 70\n20 85\n")      # on the picture only as (y, x)
    (src / "test" / "gt" / "c.txt").write_text("5 5\nnan 4\n")
    code = prepare_dataset.main(["--format", "jhu", "--src", str(src), "--dst", str(tmp_path / "out")])
    err = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert "a.txt: 1 of 2 points lie off the 90 x 60 image; kept" in err.err
    assert "b.txt: 2 of 2 points lie off the 90 x 60 image as (x, y) but all lie on it as (y, x)" in err.err
    assert "c.txt: dropped 1 point(s) that are NaN or infinite" in err.err
    assert "3 annotation file(s) with problems" in err.out
    with pytest.warns(UserWarning, match="lie outside"):  # the dataset says so again when it reads them
        kept = {name: len(points) for name, (points, _) in points_by_name(tmp_path / "out", "train").items()}
    assert kept == {"a": 2, "b": 2}


def test_bad_sources_and_used_destinations_are_one_line_errors(tmp_path, capsys):
    missing = str(tmp_path / "none")
    assert prepare_dataset.main(["--format", "qnrf", "--src", missing, "--dst", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.startswith("error: --src")
    src = jhu_release(tmp_path / "release")
    assert prepare_dataset.main(["--format", "shanghaitech", "--src", str(src), "--dst", str(tmp_path / "o")]) == 1
    assert "ShanghaiTech" in capsys.readouterr().err
    assert prepare_dataset.main(["--format", "jhu", "--src", str(src), "--dst", str(tmp_path / "o")]) == 0
    assert prepare_dataset.main(["--format", "jhu", "--src", str(src), "--dst", str(tmp_path / "o")]) == 1
    assert "already holds test.list, train.list" in capsys.readouterr().err


def test_csv_split_places_a_csv_without_split_column_and_overwrite_replaces_the_lists(tmp_path, capsys):
    src = csv_release(tmp_path / "release")
    rows = list(csv.reader(open(src)))
    no_split = tmp_path / "release" / "no_split.csv"
    with open(no_split, "w", newline="") as file:
        csv.writer(file).writerows([row[:3] for row in rows])
    dst = tmp_path / "out"
    assert prepare_dataset.main(["--format", "csv", "--src", str(no_split), "--dst", str(dst)]) == 0
    assert sorted(points_by_name(dst, "test")) == ["a", "b", "c"], "without a split column: --csv_split, test"
    assert not (dst / "train.list").exists()
    assert prepare_dataset.main(["--format", "csv", "--src", str(no_split), "--dst", str(dst),
                                 "--csv_split", "train"]) == 1
    assert "already holds test.list" in capsys.readouterr().err and not (dst / "train.list").exists()
    assert prepare_dataset.main(["--format", "csv", "--src", str(no_split), "--dst", str(dst), "--csv_split", "train",
                                 "--overwrite"]) == 0
    assert f"removed {dst / 'test.list'} of the earlier conversion" in capsys.readouterr().out
    assert sorted(path.name for path in dst.glob("*.list")) == ["train.list"], "a stale test.list would leak"
    assert sorted(points_by_name(dst, "train")) == ["a", "b", "c"]
    for name, (points, _) in points_by_name(dst, "train").items():
        np.testing.assert_array_equal(points, np.array(POINTS[name], dtype=np.float32).reshape(-1, 2))


def labelme_file(path, image_name, points, size):
    """A LabelMe 5 annotation as LabelMe saves it: heads as point shapes, the picture beside it."""
    shapes = [{"label": "head", "points": [[x, y]], "group_id": None, "description": "", "shape_type": "point",
               "flags": {}, "mask": None} for x, y in points]
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_name,
                                "imageData": None, "imageHeight": size[1], "imageWidth": size[0]}, indent=2))


def labelme_release(root):
    root.mkdir(parents=True)
    for seed, (name, points) in enumerate(POINTS.items()):
        picture(root / f"{name}.jpg", seed)
        labelme_file(root / f"{name}.json", f"{name}.jpg", points, SIZE)
    picture(root / "unlabelled.jpg", 9)
    return root


def cvat_release(root):
    """A "CVAT for images 1.1" export: annotations.xml beside images/, coordinates with 2 decimals."""
    (root / "images").mkdir(parents=True)
    images = []
    for index, (name, points) in enumerate(POINTS.items()):
        picture(root / "images" / f"{name}.png", index)
        coordinates = ";".join(f"{x:.2f},{y:.2f}" for x, y in points)
        shape = (f'    <points label="head" source="manual" occluded="0" points="{coordinates}" z_order="0">\n'
                 "    </points>\n") if points else ""
        images.append(f'  <image id="{index}" name="{name}.png" width="{SIZE[0]}" height="{SIZE[1]}">\n{shape}'
                      "  </image>\n")
    (root / "annotations.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n'
                                          "  <version>1.1</version>\n  <meta>\n    <task>\n      <name>site</name>\n"
                                          "    </task>\n  </meta>\n" + "".join(images) + "</annotations>\n")
    return root / "annotations.xml"


@pytest.mark.parametrize("release", ["labelme", "cvat"])
def test_your_own_labels_become_a_custom_dataset_split_by_test_every(tmp_path, release, capsys):
    src = {"labelme": labelme_release, "cvat": cvat_release}[release](tmp_path / "release")
    # a, b, c in name order: every 3rd goes to test, which is the split SPLIT gives them.
    assert prepare_dataset.main(["--format", release, "--src", str(src), "--dst", str(tmp_path / "out"),
                                 "--split", "train", "--test_every", "3"]) == 0
    printed = capsys.readouterr()
    assert "converted 2 train, 1 test images with 3 points" in printed.out
    if release == "labelme":
        assert "1 picture(s) without a LabelMe file left out: unlabelled.jpg" in printed.err
    for split in ("train", "test"):
        converted = points_by_name(tmp_path / "out", split)
        assert sorted(converted) == sorted(name for name in POINTS if SPLIT[name] == split)
        for name, (points, shape) in converted.items():
            expected = np.array(POINTS[name], dtype=np.float64).reshape(-1, 2)
            if release == "cvat":
                expected = np.array([[float(f"{value:.2f}") for value in row] for row in expected]).reshape(-1, 2)
            np.testing.assert_array_equal(points, expected.astype(np.float32))
            assert shape == (SIZE[1], SIZE[0])


def test_bad_labelme_and_cvat_files_are_one_line(tmp_path, capsys):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.json").write_text("{not json")
    assert prepare_dataset.main(["--format", "labelme", "--src", str(tmp_path / "labels"),
                                 "--dst", str(tmp_path / "out")]) == 1
    assert "a.json: not a LabelMe file" in capsys.readouterr().err
    (tmp_path / "bad.xml").write_text('<annotations><image name="gone.png"></image></annotations>')
    assert prepare_dataset.main(["--format", "cvat", "--src", str(tmp_path / "bad.xml"),
                                 "--dst", str(tmp_path / "out")]) == 1
    assert "picture 'gone.png' is neither beside it nor in images/" in capsys.readouterr().err
