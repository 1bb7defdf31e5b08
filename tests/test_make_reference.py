"""tools/make_reference.py: the reference fixtures made by running the original P2PNet code, and tools/parity.py
passing against them.

The tests that run the original code need a checkout of it, which CI cannot download; they skip unless
``DEHAZE_P2PNET_UPSTREAM`` names one:

    git clone https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet /tmp/p2pnet
    DEHAZE_P2PNET_UPSTREAM=/tmp/p2pnet .venv/bin/python -m pytest -q -rs tests/test_make_reference.py
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import REAL_SAMPLES, REFERENCE, ROOT
from inference.parity import LOGIT_TOLERANCE, POINT_TOLERANCE_PX

TOOL = ROOT / "tools" / "make_reference.py"
UPSTREAM_ENV_VAR = "DEHAZE_P2PNET_UPSTREAM"
UPSTREAM = os.environ.get(UPSTREAM_ENV_VAR)
needs_upstream = pytest.mark.skipif(
    not UPSTREAM, reason=f"needs a checkout of the original P2PNet code: set {UPSTREAM_ENV_VAR} to one "
                         "(git clone https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet)")
GENERATION_TIMEOUT_S = 900  # the two real samples take about 70 s on 2 cores; the small pictures a few
SAME_FILES = ("upstream_state_dict_keys.json", "reference_counts.json")


def run(script: Path, *args) -> subprocess.CompletedProcess:
    """``script`` run with this interpreter and ``args``; its exit code and output."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=GENERATION_TIMEOUT_S, cwd=ROOT)


def small_pictures(folder: Path) -> Path:
    """Two random pictures in ``folder``, sizes no multiple of 128: a 200 x 150 JPEG and a 300 x 260 PNG with
    an alpha channel (decoded without it, as the rainy real sample)."""
    generator = np.random.default_rng(seed=0)
    folder.mkdir()
    cv2.imwrite(str(folder / "street.jpg"), generator.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "plaza.png"), generator.integers(0, 256, (260, 300, 4), dtype=np.uint8))
    return folder


def test_an_upstream_that_is_not_a_checkout_is_one_error_line(tmp_path):
    upstream = tmp_path / "not_p2pnet"
    (upstream / "models").mkdir(parents=True)
    (upstream / "models" / "__init__.py").write_text("")
    result = run(TOOL, "--upstream", upstream, "--output", tmp_path / "made", "--images", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(upstream) in result.stderr and "models/p2pnet.py" in result.stderr
    assert "util/misc.py" in result.stderr and "models/__init__.py" not in result.stderr
    assert not (tmp_path / "made").exists()


def load_tool():
    """tools/make_reference.py as a module (its ``main`` returns before importing any upstream code when the
    arguments are wrong)."""
    spec = importlib.util.spec_from_file_location("make_reference", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_a_missing_upstream_folder_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert load_tool().main(["--upstream", str(missing), "--output", str(tmp_path / "made")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: --upstream {missing}: no such folder") and error.count("\n") == 1


def test_an_output_folder_that_holds_fixtures_is_left_alone(tmp_path, capsys):
    made = tmp_path / "made"
    made.mkdir()
    (made / "reference_counts.json").write_text("{}")
    assert load_tool().main(["--upstream", str(tmp_path), "--output", str(made)]) == 1
    assert capsys.readouterr().err == f"error: --output {made} already holds reference_counts.json; give a new " \
                                      "or empty folder\n"
    assert (made / "reference_counts.json").read_text() == "{}"


@pytest.mark.slow
@pytest.mark.cpu_kernels
@needs_upstream
def test_parity_passes_against_fixtures_made_from_small_pictures(tmp_path):
    images, made = small_pictures(tmp_path / "pictures"), tmp_path / "made"
    result = run(TOOL, "--upstream", UPSTREAM, "--output", made, "--images", images, "--seed", "3")
    assert result.returncode == 0, result.stderr
    counts = json.loads((made / "reference_counts.json").read_text())
    assert counts["plaza"]["padded_input_chw"] == [3, 384, 384] and counts["plaza"]["gt_count"] is None
    assert counts["street"]["image_size_wh"] == [200, 150]
    parity = run(ROOT / "tools" / "parity.py", "--reference", made, "--images", images)
    assert parity.returncode == 0, parity.stdout + parity.stderr
    assert parity.stdout.splitlines()[-1].startswith("parity: PASS")
    assert "plaza.png:" in parity.stdout and "street.jpg:" in parity.stdout


@pytest.mark.slow
@pytest.mark.cpu_kernels
@pytest.mark.reference_fixtures
@needs_upstream
def test_seed_0_on_the_real_samples_gives_the_shared_fixtures(tmp_path):
    made = tmp_path / "made"
    result = run(TOOL, "--upstream", UPSTREAM, "--output", made, "--images", REAL_SAMPLES, "--seed", "0")
    assert result.returncode == 0, result.stderr
    for name in SAME_FILES:
        assert (made / name).read_text() == (REFERENCE / name).read_text(), name
    ours, theirs = (torch.load(folder / "upstream_format_checkpoint.pth", weights_only=True)["model"]
                    for folder in (made, REFERENCE))
    assert list(ours) == list(theirs)
    assert all(ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]) for key in ours)
    assert_same_criterion(made / "criterion_reference.json", REFERENCE / "criterion_reference.json")
    for name in json.loads((REFERENCE / "reference_counts.json").read_text()):
        ours, theirs = (np.load(folder / f"{name}_reference_outputs.npz") for folder in (made, REFERENCE))
        assert np.array_equal(ours["padded_input_shape"], theirs["padded_input_shape"])
        # The same network on another CPU sums in another order: equal within the parity tolerances.
        assert np.abs(ours["pred_logits"] - theirs["pred_logits"]).max() <= LOGIT_TOLERANCE
        assert np.abs(ours["pred_points"] - theirs["pred_points"]).max() <= POINT_TOLERANCE_PX


def assert_same_criterion(made: Path, shared: Path) -> None:
    """The same batch and assignments; losses equal within float32 summation-order rounding (rel 1e-6)."""
    ours, theirs = (json.loads(path.read_text()) for path in (made, shared))
    assert ours["inputs"] == theirs["inputs"] and ours["settings"] == theirs["settings"]
    assert ours["matching"] == theirs["matching"]
    for name, value in theirs["unweighted_losses"].items():
        assert ours["unweighted_losses"][name] == pytest.approx(value, rel=1e-6)
