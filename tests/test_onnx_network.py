"""ONNX export and onnxruntime inference: upstream parity, any input size, the same run_test outputs."""
import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import run_test
from util.script import EXIT_SKIPPED
from inference import Counter
from models.checkpoint import build_from_checkpoint
from inference.onnx_network import SETTINGS_KEY, OnnxNetwork, export_onnx
from tools import export_onnx as export_tool
from inference.parity import LOGIT_TOLERANCE, POINT_TOLERANCE_PX, compare_outputs, within_parity
from helpers import REAL_SAMPLES, REFERENCE, REFERENCE_CHECKPOINT, ROOT, random_checkpoint


@pytest.fixture(scope="module")
def reference_onnx(tmp_path_factory):
    """The reference checkpoint exported by the command-line tool, as a user would."""
    path = tmp_path_factory.mktemp("onnx") / "reference.onnx"
    assert export_tool.main(["--weight_path", str(REFERENCE_CHECKPOINT), "--output", str(path)]) == 0
    return path


@pytest.mark.slow
@pytest.mark.cpu_kernels
@pytest.mark.reference_fixtures
@pytest.mark.parametrize("name", ["A_IMG_160", "Rain_IMG_0045"])
def test_onnxruntime_matches_the_upstream_outputs_on_both_reference_images(reference_onnx, name):
    counter = Counter.from_checkpoint(reference_onnx)
    assert isinstance(counter.network, OnnxNetwork)
    reference = np.load(REFERENCE / f"{name}_reference_outputs.npz")
    row = compare_outputs(counter.outputs(REAL_SAMPLES / f"{name}.jpg"), reference)
    assert within_parity(row), row
    assert row["decisive_anchors"] > 0.9 * row["anchors"]
    counts = json.loads((REFERENCE / "reference_counts.json").read_text())[name]
    assert abs(row["count"] - counts["pred_count_at_0.5"]) <= row["anchors_in_band"]


@pytest.mark.slow
@pytest.mark.cpu_kernels
@pytest.mark.reference_fixtures
def test_one_exported_file_takes_any_padded_size_and_tiles_like_the_checkpoint(reference_onnx):
    exact = Counter.from_checkpoint(REFERENCE_CHECKPOINT, device="cpu", log=lambda message: None, tile_size=0)
    exported = Counter.from_checkpoint(reference_onnx, tile_size=0)
    generator = torch.Generator().manual_seed(1)
    for height, width in ((100, 300), (300, 140)):
        image = torch.rand(3, height, width, generator=generator)
        row = compare_outputs(exported.outputs(image), exact.outputs(image))
        assert row["max_logit_diff"] <= LOGIT_TOLERANCE and row["max_point_diff"] <= POINT_TOLERANCE_PX, row
    tiled = Counter.from_checkpoint(reference_onnx, tile_size=128)
    image = torch.rand(3, 300, 270, generator=generator)
    row = compare_outputs(tiled.outputs(image), exported.outputs(image))
    assert row["max_logit_diff"] <= 1e-5 and row["max_point_diff"] <= 1e-4, row


@pytest.mark.slow
@pytest.mark.reference_fixtures
def test_run_test_writes_the_same_counts_from_the_onnx_file_as_from_the_checkpoint(reference_onnx, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = cv2.imread(str(REAL_SAMPLES / "A_IMG_160.jpg"))
    for index in range(3):
        cv2.imwrite(str(photos / f"crop{index}.jpg"), rgb[index * 40:index * 40 + 300, index * 60:index * 60 + 400])
    (photos / "readme.txt").write_text("not an image")
    runs = {}
    for weights in (REFERENCE_CHECKPOINT, reference_onnx):
        out = tmp_path / weights.suffix.lstrip(".")
        code = run_test.main(["--weight_path", str(weights), "--input", str(photos), "--output_dir", str(out)])
        assert code == EXIT_SKIPPED and "skipped readme.txt" in capsys.readouterr().err
        runs[weights.suffix] = out
    pth, onnx = ((out / "counts.csv").read_text() for out in runs.values())
    assert pth == onnx and len(pth.splitlines()) == 4
    for index in range(3):
        points = [np.loadtxt(out / "points" / f"crop{index}.csv", delimiter=",", skiprows=1, ndmin=2)
                  for out in runs.values()]
        assert points[0].shape == points[1].shape and points[0].shape[0] > 0
        np.testing.assert_allclose(points[0][:, :2], points[1][:, :2], atol=POINT_TOLERANCE_PX)
    with open(runs[".onnx"] / "counts.csv") as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["crop0.jpg", "crop1.jpg", "crop2.jpg"]


@pytest.mark.slow
@pytest.mark.reference_fixtures
def test_exported_file_carries_the_settings_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from models import ModelSettings

    random_checkpoint(tmp_path / "model.pth", ModelSettings(row=3, line=1, input_norm="imagenet", restoration=True))
    model, _, _ = build_from_checkpoint(tmp_path / "model.pth", log=lambda message: None)
    export_onnx(model, tmp_path / "model.onnx")
    network = OnnxNetwork(tmp_path / "model.onnx")
    assert network.settings == ModelSettings(row=3, line=1, input_norm="imagenet", restoration=False)
    assert torch.equal(network.padding_fill, model.padding_fill)
    image = torch.rand(3, 130, 120, generator=torch.Generator().manual_seed(2))
    row = compare_outputs(Counter(network).outputs(image), Counter(model, device="cpu").outputs(image))
    assert row["anchors"] == 32 * 16 * 3 and row["max_logit_diff"] <= LOGIT_TOLERANCE, row

    args = ["--weight_path", str(tmp_path / "model.onnx"), "--input", str(REAL_SAMPLES / "A_IMG_160.jpg")]
    assert run_test.main(args + ["--amp"]) == 1
    assert "fast mode (--amp) is for PyTorch checkpoints; model.onnx runs in fp32" in capsys.readouterr().err
    assert run_test.main(args + ["--input_norm", "none"]) == 1
    assert "--input_norm none: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_test.main(args + ["--save_restored", "--output_dir", str(tmp_path / "out")])
    assert "--save_restored needs" in capsys.readouterr().err

    (tmp_path / "notes.onnx").write_text("not a model")
    assert run_test.main(["--weight_path", str(tmp_path / "notes.onnx"), "--input", args[3]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notes.onnx: onnxruntime cannot load it" in err and len(err.splitlines()) == 1

    import onnx

    proto = onnx.load(str(tmp_path / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    assert run_test.main(["--weight_path", str(tmp_path / "foreign.onnx"), "--input", args[3]]) == 1
    assert "foreign.onnx: an ONNX file without this project's model settings" in capsys.readouterr().err
    assert SETTINGS_KEY not in {entry.key for entry in proto.metadata_props}


def test_export_tool_names_a_bad_output_and_writes_nothing(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    with pytest.raises(SystemExit):
        export_tool.main(["--weight_path", str(tmp_path / "model.pth"), "--output", str(tmp_path / "model.pt")])
    err = capsys.readouterr().err
    assert f"--output {tmp_path / 'model.pt'}: the file name must end in .onnx" in err
    assert export_tool.main(["--weight_path", str(tmp_path / "none.pth"), "--output", str(tmp_path / "m.onnx")]) == 1
    assert "none.pth" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pth"]


@pytest.mark.reference_fixtures
def test_counting_with_a_checkpoint_never_imports_onnx_or_onnxruntime(tmp_path):
    random_checkpoint(tmp_path / "model.pth")
    code = ("import sys, run_test; "
            f"assert run_test.main(['--weight_path', {str(tmp_path / 'model.pth')!r}, '--input', "
            f"{str(REAL_SAMPLES / 'A_IMG_160.jpg')!r}]) == 0; "
            "loaded = [name for name in ('onnx', 'onnxruntime', 'onnxscript') if name in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_export_tool_exits_1_when_the_file_differs_from_pytorch_beyond_the_tolerances(tmp_path, monkeypatch, capsys):
    random_checkpoint(tmp_path / "model.pth")
    args = ["--weight_path", str(tmp_path / "model.pth"), "--output", str(tmp_path / "model.onnx")]
    monkeypatch.setattr(export_tool, "POINT_TOLERANCE_PX", 0.0)  # fp32 rounding is then "beyond"
    assert export_tool.main(args) == 1
    captured = capsys.readouterr()
    assert "differs from the PyTorch network beyond the parity tolerances" in captured.err
    assert captured.out.count("max |point diff|") == 2 and "max |point diff| 0.00e+00" not in captured.out
    monkeypatch.undo()
    assert export_tool.main(args) == 0
