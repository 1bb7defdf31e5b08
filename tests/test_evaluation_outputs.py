"""run_test.py --dataset_file: what a researcher keeps of an evaluation (predicted and true points per image,
every metric as JSON, NWPU-Crowd's result files) and the dataset names the released checkpoints use."""
import contextlib
import csv
import io
import json
import re

import numpy as np
import pytest

import run_test
from crowd_datasets.annotations import read_points
from crowd_datasets.demo import generate_split
from helpers import counting_checkpoint


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A 4-image dataset with numeric ids (as NWPU-Crowd's), evaluated once with every output."""
    root = tmp_path_factory.mktemp("evaluation")
    counting_checkpoint(root / "model.pth")
    generate_split(root / "data" / "test_data", 4, "haze", seed=5)
    # Ids 9..12: in numeric order 9 comes first, in the order of names last.
    images = []
    for number, image in enumerate(sorted((root / "data" / "test_data" / "images").glob("*.jpg")), start=9):
        image.with_suffix(".txt").rename(image.with_name(f"{number}.txt"))
        images.append(image.rename(image.with_name(f"{number}.jpg")))
    (root / "data" / "test.list").write_text("".join(
        f"test_data/images/{path.name} test_data/images/{path.stem}.txt\n" for path in images))
    out = root / "out"
    printed = run_and_capture(["--weight_path", str(root / "model.pth"), "--dataset_file", "Custom", "--data_root",
                               str(root / "data"), "--test_list", "test.list",
                               "--output_dir", str(out), "--metrics_json", str(out / "metrics.json"),
                               "--match_radius", "3", "6", "--nwpu_submission"])
    return {"root": root, "out": out, "printed": printed, "images": images}


def run_and_capture(argv: list) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_test.main(argv) == 0
    return printed.getvalue()


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_each_image_keeps_its_predicted_and_true_points(evaluated):
    out = evaluated["out"]
    per_image = {row["image"]: row for row in read_csv(out / "per_image.csv")}
    for image in evaluated["images"]:
        predicted = read_csv(out / "predictions" / f"{image.stem}.csv")
        truth = read_csv(out / "truth" / f"{image.stem}.csv")
        assert len(predicted) == int(per_image[image.stem]["pred"])
        assert all(float(row["score"]) > 0.5 for row in predicted)
        np.testing.assert_allclose([[float(row["x"]), float(row["y"])] for row in truth],
                                   read_points(image.with_suffix(".txt")).reshape(-1, 2), atol=5e-5)
        assert len(truth) == int(per_image[image.stem]["gt"])


def test_metrics_json_holds_the_printed_metrics(evaluated):
    metrics = json.loads((evaluated["out"] / "metrics.json").read_text())
    printed = evaluated["printed"].splitlines()
    mae, mse = map(float, re.fullmatch(r"mae: (\S+) mse: (\S+)", printed[-1]).groups())
    assert (round(metrics["mae"], 4), round(metrics["mse"], 4)) == (mae, mse)
    assert metrics["images"] == 4 and {"nap", "nap_0.05", "nap_0.50", "f1_s3", "f1_s6"} <= set(metrics)
    assert 0.0 <= metrics["nap"] <= 1.0 and "records" not in metrics
    assert any(line.startswith("sigma=3: precision") for line in printed)
    assert any(line.startswith("sigma=6: precision") for line in printed)
    nap_line = next(line for line in printed if line.startswith("nAP"))
    assert f"{metrics['nap_0.50']:.4f}" in nap_line


def test_nwpu_result_files_list_every_image_in_id_order(evaluated):
    out = evaluated["out"]
    counting = (out / "nwpu_counting.txt").read_text().splitlines()
    localization = (out / "nwpu_localization.txt").read_text().splitlines()
    assert len(counting) == len(localization) == 4
    for count_line, point_line in zip(counting, localization):
        image, count = count_line.split()
        predicted = read_csv(out / "predictions" / f"{image}.csv")
        assert count == f"{len(predicted)}.0000"
        values = point_line.split()
        assert values[0] == image and int(values[1]) == len(predicted) and len(values) == 2 + 2 * len(predicted)
        assert [int(value) for value in values[2:]] == [round(float(row[key])) for row in predicted for key in "xy"]
    assert [line.split()[0] for line in counting] == ["9", "10", "11", "12"]


@pytest.mark.parametrize("flags, message", [
    (["--input", "photos", "--metrics_json", "m.json"], "--metrics_json and --nwpu_submission are for a dataset"),
    (["--dataset_file", "Custom", "--nwpu_submission"], "--nwpu_submission writes the result files into --output_dir"),
    (["--dataset_file", "Custom", "--match_radius", "0"], "argument --match_radius: must be positive, got 0"),
])
def test_evaluation_flags_where_they_cannot_apply_are_one_usage_line(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        run_test.main(["--weight_path", "model.pth", *flags])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and "Traceback" not in error


def test_the_released_checkpoints_spelling_of_a_dataset_is_the_registry_name():
    args = run_test.build_parser().parse_args(["--weight_path", "Hazy_SHTRGBD", "--dataset_file", "Hazy_SHTRGBD"])
    assert args.dataset_file == "Hazy_SHARGBD"
