"""Tiling changes nothing: tiles and blocks give the whole image's anchors, points and counts."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import inference.torch_network as torch_network
import run_test
from crowd_datasets import CrowdDataset, find_samples
from engine import evaluate
from inference import Counter
from models import PointCounter
from inference.tiling import TILE_MARGIN, plan_tiles
from crowd_datasets import collate_images
from inference.parity import compare_outputs, within_parity
from helpers import padded_outputs, random_checkpoint, tiny_dataset, trained_looking_model


def assert_same_outputs(tiled: dict, whole: dict) -> None:
    assert tiled["pred_logits"].shape == whole["pred_logits"].shape
    assert (tiled["pred_logits"] - whole["pred_logits"]).abs().max() <= 1e-5
    row = compare_outputs(tiled, whole)
    assert within_parity(row) and row["count"] == row["reference_count"], row
    assert 0.05 < row["count"] / row["anchors"] < 0.95, "a comparison of near-empty outputs proves little"


@pytest.mark.parametrize("height,width,tile_size", [(300, 400, 128), (384, 640, 256), (1000, 260, 384)])
def test_cores_partition_the_padded_image_and_windows_add_the_margin_inside_it(height, width, tile_size):
    tiles = plan_tiles(height // 128 * 128 + 128, width // 128 * 128 + 128, tile_size)
    padded = (height // 128 * 128 + 128, width // 128 * 128 + 128)
    owner = np.zeros(padded, dtype=int)
    for tile in tiles:
        top, bottom, left, right = tile.core
        owner[top:bottom, left:right] += 1
        assert bottom - top <= tile_size and right - left <= tile_size
        assert all(edge % 128 == 0 for edge in tile.core)
        assert tile.window == (max(top - TILE_MARGIN, 0), min(bottom + TILE_MARGIN, padded[0]),
                               max(left - TILE_MARGIN, 0), min(right + TILE_MARGIN, padded[1]))
        assert all(edge % 16 == 0 for edge in tile.window)
    assert (owner == 1).all(), "every pixel (and so every anchor) belongs to exactly one core"
    assert len(plan_tiles(*padded, 0)) == 1


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_tiled_outputs_equal_the_whole_image_with_small_tiles_and_blocks(monkeypatch):
    model = trained_looking_model(restoration=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 420, 3), dtype=np.uint8)
    image[100:200, 150:300] = 255  # structure, so that tiles differ from each other
    whole = padded_outputs(model, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    untiled = Counter(model, tile_size=0).outputs(image, restore=True)
    assert_same_outputs(untiled, whole)
    monkeypatch.setattr(torch_network, "EARLY_BLOCK", 128)  # stages 1-2 in up to 4 blocks per tile
    tiled = Counter(model, tile_size=128)
    assert len(plan_tiles(384, 512, tiled.tile_size)) == 12
    result = tiled.outputs(image, restore=True)
    assert_same_outputs(result, whole)
    assert (result["pred_restored"] - untiled["pred_restored"]).abs().max() <= 1e-5
    assert result["pred_restored"].shape == (3, 300, 420)
    counts = [len(tiled.select(outputs)[0]) for outputs in (untiled, result)]
    assert counts[0] == counts[1] == Counter(model, tile_size=256)(image).count


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_dataset_evaluation_tiles_images_over_the_tile_size_with_the_same_numbers(tmp_path):
    model = trained_looking_model()
    data = tiny_dataset(tmp_path, num_train=1, num_test=3, size=(300, 200))
    dataset = CrowdDataset(find_samples("Custom", "test", tmp_path, data[-1]))
    summaries = [evaluate(Counter(model, tile_size=tile_size), DataLoader(dataset, collate_fn=collate_images),
                          progress=False) for tile_size in (0, 128)]
    # Tiled logits differ from whole-image ones by float rounding, so an anchor scoring within the parity
    # band of the threshold may be counted in one and not the other (one such anchor here): counts may
    # differ by the anchors in the band, and by nothing else.
    band = []
    for index in range(len(dataset)):
        image, _ = dataset[index]
        whole, tiled = (Counter(model, tile_size=tile_size).outputs(image) for tile_size in (0, 128))
        row = compare_outputs(tiled, whole)
        assert within_parity(row), row
        band.append(row["anchors_in_band"])
    for whole_record, tiled_record, in_band in zip(*(summary["records"] for summary in summaries), band):
        assert whole_record["image"] == tiled_record["image"] and whole_record["gt"] == tiled_record["gt"]
        assert abs(whole_record["pred"] - tiled_record["pred"]) <= in_band
    assert abs(summaries[0]["mae"] - summaries[1]["mae"]) <= sum(band) / len(band)
    assert sum(record["pred"] for record in summaries[0]["records"]) > 0


def test_a_tile_size_off_the_grid_is_refused(tmp_path, capsys):
    random_checkpoint(tmp_path / "model.pth")
    with pytest.raises(ValueError, match="tile_size must be 0 .* multiple of 128 pixels, got 300"):
        Counter(PointCounter(), tile_size=300)
    with pytest.raises(SystemExit) as stop:
        run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(tmp_path), "--tile_size", "300"])
    assert stop.value.code == 2 and "argument --tile_size: must be 0 (never tile)" in capsys.readouterr().err
    assert run_test.build_parser().parse_args(["--weight_path", "w"]).tile_size == 2048
