"""inference/counter.py: Counter, the one prediction path: upstream parity on real pictures, what it takes as an
image, any backend, and a clear error for what it cannot count."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from crowd_datasets.image_io import read_rgb
from inference import Counter, CountingOptions
from inference.parity import compare_outputs, within_parity
from helpers import ROOT, REAL_SAMPLES, REFERENCE, REFERENCE_CHECKPOINT, FixedScores, random_checkpoint


@pytest.fixture(scope="module")
def reference_counter():
    return Counter.from_checkpoint(REFERENCE_CHECKPOINT, device="cpu", log=lambda message: None)


@pytest.mark.slow
@pytest.mark.cpu_kernels
@pytest.mark.reference_fixtures
@pytest.mark.parametrize("name", ["A_IMG_160", "Rain_IMG_0045"])  # the second: a 1920 x 1080 PNG with alpha
def test_parity_with_upstream_on_real_images(reference_counter, name):
    reference = np.load(REFERENCE / f"{name}_reference_outputs.npz")
    image = reference_counter.read(REAL_SAMPLES / f"{name}.jpg")
    outputs = reference_counter.outputs(image)
    row = compare_outputs(outputs, reference)
    assert within_parity(row), row
    assert row["decisive_anchors"] > 0.9 * row["anchors"]
    counts = json.loads((REFERENCE / "reference_counts.json").read_text())[name]
    assert abs(row["count"] - counts["pred_count_at_0.5"]) <= row["anchors_in_band"]
    assert list(image.shape[:2]) == [counts["image_size_wh"][1], counts["image_size_wh"][0]]


@pytest.mark.reference_fixtures
def test_counter_accepts_path_and_array_identically(reference_counter):
    by_path = reference_counter(REAL_SAMPLES / "A_IMG_160.jpg")
    by_array = reference_counter(read_rgb(REAL_SAMPLES / "A_IMG_160.jpg"))
    assert by_path.count == by_array.count == len(by_path.points)
    assert by_path.points.dtype == np.float32 and by_path.scores.dtype == np.float32
    assert by_path.points.shape == (by_path.count, 2)
    np.testing.assert_array_equal(by_path.points, by_array.points)
    assert (by_path.scores > 0.5).all()
    with pytest.raises(ValueError, match="uint8"):
        reference_counter(np.zeros((10, 10, 3), dtype=np.float32))


@pytest.mark.parametrize("array", [np.zeros((0, 0, 3), np.uint8), np.zeros((8, 0, 3), np.uint8),
                                   np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)])
def test_counter_names_an_array_it_cannot_count(tmp_path, array):
    random_checkpoint(tmp_path / "model.pth")
    counter = Counter.from_checkpoint(tmp_path / "model.pth", device="cpu")
    with pytest.raises(ValueError, match=r"non-empty H x W x 3 uint8 RGB array, got shape"):
        counter(array)


def test_counter_runs_any_backend_and_refuses_what_is_none():
    # A 200 x 300 picture is padded to 256 x 384: 32 x 48 cells, 12 columns of them with centres at x < 100
    # (points are not cut to the picture, as upstream).
    left = Counter(FixedScores(lambda points: points[:, 0] < 100), tile_size=0).predict(torch.rand(3, 200, 300))
    assert left.count == 32 * 12 and (left.points[:, 0] < 100).all()
    # In 2 x 3 tiles every cell is taken once, from the tile whose core holds it.
    everyone = FixedScores(lambda points: points[:, 0] >= 0)
    tiled = Counter(everyone, tile_size=128).predict(torch.rand(3, 200, 300))
    assert tiled.count == 32 * 48
    assert sorted(map(tuple, tiled.points.tolist())) == [(4.0 + 8 * x, 4.0 + 8 * y) for x in range(48)
                                                            for y in range(32)]
    with pytest.raises(ValueError, match="fast mode .* runs in fp32"):
        Counter(FixedScores(lambda points: points[:, 0] < 100), amp=True)
    with pytest.raises(TypeError, match="expected a PointCounter or a NetworkBackend, got str"):
        Counter("weights.pth")


def test_restoring_with_a_network_without_the_module_is_one_clear_error():
    counter = Counter(FixedScores(lambda points: points[:, 0] >= 0))
    with pytest.raises(ValueError, match="no restoration module, so it cannot restore images: that needs a .pth"):
        counter.predict(torch.rand(3, 64, 64), CountingOptions(restore=True))


@pytest.mark.parametrize("first", ["models", "inference"])
def test_from_models_import_counter_still_works_whichever_package_loads_first(first):
    # Users' code written for the earlier layout imports Counter from models.
    code = f"import {first}; from models import Counter; import inference; assert Counter is inference.Counter"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
