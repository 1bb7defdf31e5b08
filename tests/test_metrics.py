"""Hand-worked checks of the counting and localization metrics."""
import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crowd_datasets.metrics import CountingMetrics, format_summary, grid_error, match_within, write_records_csv
from inference.visualize import plot_counts

REPO_ROOT = Path(__file__).resolve().parents[1]


def points(*xy):
    return np.array(xy, dtype=np.float32).reshape(-1, 2)


def brute_force_max_matches(pred, gt, sigma):
    """Largest number of one-to-one pairs within sigma, by trying every injection."""
    small, large = (pred, gt) if len(pred) <= len(gt) else (gt, pred)
    best = 0
    for chosen in itertools.permutations(range(len(large)), len(small)):
        pairs = sum(np.hypot(*(small[i] - large[j])) <= sigma for i, j in enumerate(chosen))
        best = max(best, int(pairs))
    return best


# ---------------------------------------------------------------- match_within

def test_maximum_matching_beats_greedy_nearest_first():
    # p0 is nearest to g0 (2.5 vs 3.5), so nearest-first greedy pairs p0-g0 and leaves p1,
    # whose only neighbour is g0, unmatched: 1 pair. Pairing p0-g1 and p1-g0 gives 2 pairs,
    # which is maximal because it equals min(#pred, #gt).
    gt = points((0, 0), (6, 0))
    pred = points((2.5, 0), (-3.5, 0))
    assert match_within(pred, gt, 4) == (2, 0, 0)
    assert match_within(pred[::-1], gt[::-1], 4) == (2, 0, 0)


def test_matching_is_maximum_on_random_layouts():
    rng = np.random.default_rng(0)
    for _ in range(40):
        pred = rng.uniform(0, 20, size=(rng.integers(0, 5), 2))
        gt = rng.uniform(0, 20, size=(rng.integers(0, 6), 2))
        best = brute_force_max_matches(pred, gt, 6.0)
        assert match_within(pred, gt, 6.0) == (best, len(pred) - best, len(gt) - best)


def test_empty_inputs():
    assert match_within(points(), points(), 4) == (0, 0, 0)
    assert match_within(points((1, 1), (5, 5)), np.zeros((0, 2)), 4) == (0, 2, 0)
    assert match_within([], points((1, 1)), 4) == (0, 0, 1)


def test_more_predictions_than_gt():
    gt = points((10, 10), (50, 50))
    pred = points((11, 10), (10, 12), (49, 50), (80, 80))
    # Two predictions compete for the point at (10, 10): only one may take it.
    assert match_within(pred, gt, 4) == (2, 2, 0)


def test_distance_exactly_sigma_is_a_match():
    assert match_within(points((0, 0)), points((3, 4)), 5) == (1, 0, 0)
    assert match_within(points((10, 10)), points((14, 10)), 4) == (1, 0, 0)
    assert match_within(points((10, 10)), points((14.001, 10)), 4) == (0, 1, 1)


def test_bad_points_raise_with_name():
    with pytest.raises(ValueError, match="gt"):
        match_within(points((1, 1)), np.zeros((3, 3)), 4)
    with pytest.raises(ValueError, match="pred"):
        match_within(points((np.nan, 1)), points((1, 1)), 4)


# ---------------------------------------------------------------- grid_error

def test_grid_error_hand_worked_two_points():
    # Image 100 wide, 80 high. True points: (10, 10) and the bottom-right corner (100, 80), which
    # belongs to the last cell at every level. Predictions: (40, 30) and (99, 79).
    # level 0: 2 vs 2 -> 0
    # level 1 (50x40 cells): (10,10)->(0,0), (40,30)->(0,0); corner and (99,79)->(1,1) -> 0
    # level 2 (25x20 cells): (10,10)->col 0,row 0; (40,30)->col 1,row 1 -> 1 + 1 = 2
    # level 3 (12.5x10 cells): (10,10)->col 0,row 1; (40,30)->col 3,row 3 -> 2
    gt = points((10, 10), (100, 80))
    pred = points((40, 30), (99, 79))
    errors = [grid_error(pred, gt, 80, 100, level) for level in range(4)]
    assert errors == [0.0, 0.0, 2.0, 2.0]


def test_grid_error_border_and_outside_points_fall_in_border_cells():
    # (100, 80) on the right/bottom edge and (130, 95) outside both go to the last cell;
    # (-3, -1) goes to the first cell.
    assert grid_error(points((130, 95)), points((100, 80)), 80, 100, 3) == 0.0
    assert grid_error(points((-3, -1)), points((0, 0)), 80, 100, 3) == 0.0
    assert grid_error(points((99.9, 0)), points((100, 0)), 80, 100, 3) == 0.0


def test_grid_error_level_zero_is_count_difference():
    gt = points((5, 5), (60, 20))
    pred = points((1, 1), (2, 2), (3, 3), (90, 70), (50, 50))
    assert grid_error(pred, gt, 80, 100, 0) == 3.0
    assert grid_error(points(), gt, 80, 100, 2) == 2.0


# ---------------------------------------------------------------- CountingMetrics

def scatter(count, offset=0.0):
    """`count` points spaced 20 px apart along a row (no two within 8 px)."""
    return np.array([(10.0 + 20 * i + offset, 50.0) for i in range(count)]).reshape(-1, 2)


def test_mae_and_root_mse_on_three_images():
    metrics = CountingMetrics()
    metrics.update("a", scatter(12), scatter(10), 100, 400)
    metrics.update("b", scatter(17), scatter(20), 100, 400)
    metrics.update("c", scatter(0), scatter(0), 100, 400)
    summary = metrics.summary()
    # abs errors 2, 3, 0; squared errors 4, 9, 0
    assert summary["images"] == 3
    assert summary["mae"] == pytest.approx(5 / 3)
    assert summary["mse"] == pytest.approx(math.sqrt(13 / 3))
    assert summary["game0"] == pytest.approx(5 / 3)


def test_record_contents():
    metrics = CountingMetrics()
    record = metrics.update("x", points((10, 10), (50, 50)), points((16, 10)), 64, 64)
    # (10,10)-(16,10) is 6 px apart: a match at sigma 8, not at sigma 4.
    assert record["image"] == "x" and record["gt"] == 1 and record["pred"] == 2
    assert record["abs_err"] == 1 and record["sq_err"] == 1
    # GAME: 2 vs 1 overall; at levels 2 and 3 (16 and 8 px cells) (10,10) and (16,10) part ways.
    assert record["game"] == [1.0, 1.0, 3.0, 3.0]
    assert (record["tp_s4"], record["fp_s4"], record["fn_s4"]) == (0, 2, 1)
    assert (record["tp_s8"], record["fp_s8"], record["fn_s8"]) == (1, 1, 0)
    assert metrics.records == [record]


def test_precision_recall_f1_are_micro_averaged():
    metrics = CountingMetrics()
    # image A: both predictions on target -> tp 2 fp 0 fn 0
    metrics.update("A", points((10, 10), (40, 40)), points((11, 10), (40, 42)), 64, 64)
    # image B: one prediction far from both true points -> tp 0 fp 1 fn 2
    metrics.update("B", points((60, 60)), points((5, 5), (20, 5)), 64, 64)
    summary = metrics.summary()
    # summed: tp 2, fp 1, fn 2 -> precision 2/3, recall 1/2, f1 = 2PR/(P+R) = 4/7
    # (a per-image mean would give precision (1 + 0)/2 = 0.5 instead)
    for tag in ("4", "8"):
        assert (summary[f"tp_s{tag}"], summary[f"fp_s{tag}"], summary[f"fn_s{tag}"]) == (2, 1, 2)
        assert summary[f"precision_s{tag}"] == pytest.approx(2 / 3)
        assert summary[f"recall_s{tag}"] == pytest.approx(1 / 2)
        assert summary[f"f1_s{tag}"] == pytest.approx(4 / 7)


def test_zero_people_without_predictions_is_perfect():
    metrics = CountingMetrics()
    metrics.update("empty", points(), points(), 32, 32)
    summary = metrics.summary()
    assert summary["mae"] == 0.0 and summary["mse"] == 0.0
    assert (summary["precision_s4"], summary["recall_s4"], summary["f1_s4"]) == (1.0, 1.0, 1.0)


def test_zero_people_with_predictions():
    metrics = CountingMetrics()
    metrics.update("empty", points((3, 3), (9, 9), (20, 20)), points(), 32, 32)
    summary = metrics.summary()
    # no true points: recall is 1 by definition, but every prediction is false
    assert summary["mae"] == 3.0 and summary["mse"] == 3.0
    assert (summary["tp_s8"], summary["fp_s8"], summary["fn_s8"]) == (0, 3, 0)
    assert summary["precision_s8"] == 0.0
    assert summary["recall_s8"] == 1.0
    assert summary["f1_s8"] == 0.0


def test_merge_ignores_duplicate_image_ids():
    rank0, rank1 = CountingMetrics(), CountingMetrics()
    rank0.update("img1", scatter(3), scatter(5), 100, 200)
    rank0.update("img2", scatter(4), scatter(4), 100, 200)
    rank1.update("img3", scatter(1), scatter(2), 100, 200)
    # the padding sampler hands img1 to rank 1 again
    rank1.update("img1", scatter(3), scatter(5), 100, 200)
    rank0.merge(rank1.records)
    rank0.merge(rank0.records)
    # a later record for an id already held never replaces the first one
    rank0.merge([dict(rank0.records[0], pred=50, abs_err=45, sq_err=2025)])
    summary = rank0.summary()
    assert summary["images"] == 3
    assert sorted(r["image"] for r in rank0.records) == ["img1", "img2", "img3"]
    assert summary["mae"] == pytest.approx((2 + 0 + 1) / 3)


def test_merge_rejects_records_from_other_sigmas():
    other = CountingMetrics(sigmas=(2,))
    other.update("a", scatter(1), scatter(1), 64, 256)
    with pytest.raises(ValueError, match="tp_s4"):
        CountingMetrics().merge(other.records)


def test_summary_is_independent_of_order():
    rng = np.random.default_rng(1)
    images = []
    for index in range(6):
        gt = rng.uniform(0, 90, size=(rng.integers(0, 9), 2))
        pred = gt[: rng.integers(0, len(gt) + 1)] + rng.normal(0, 4, size=(1, 2))
        pred = np.concatenate([pred, rng.uniform(0, 90, size=(rng.integers(0, 4), 2))])
        images.append((f"img{index}", pred, gt, 90, 97))
    forward, backward, merged = CountingMetrics(), CountingMetrics(), CountingMetrics()
    for image in images:
        forward.update(*image)
    for image in reversed(images):
        backward.update(*image)
    merged.merge(list(reversed(forward.records))[:3])
    merged.merge(forward.records)
    assert forward.summary() == backward.summary() == merged.summary()


def test_summary_of_zero_images_raises():
    with pytest.raises(ValueError, match="no images"):
        CountingMetrics().summary()


def test_format_summary_lines():
    metrics = CountingMetrics()
    metrics.update("A", points((10, 10), (40, 40)), points((11, 10), (40, 42)), 64, 64)
    metrics.update("B", points((60, 60)), points((5, 5), (20, 5)), 64, 64)
    lines = format_summary(metrics.summary())
    assert lines == [
        "images: 2",
        "sigma=4: precision 0.6667 recall 0.5000 f1 0.5714 (tp 2 fp 1 fn 2)",
        "sigma=8: precision 0.6667 recall 0.5000 f1 0.5714 (tp 2 fp 1 fn 2)",
        "GAME(0..3): 0.5000 / 1.5000 / 1.5000 / 1.5000",
        "mae: 0.5000 mse: 0.7071",
    ]


def test_write_csv_sorted_with_header(tmp_path):
    metrics = CountingMetrics()
    metrics.update("IMG_2", scatter(5), scatter(3), 100, 200)
    metrics.update("IMG_10", scatter(1), scatter(1), 100, 200)
    metrics.update("IMG_1", scatter(0), scatter(2), 100, 200)
    path = tmp_path / "out" / "counts.csv"
    write_records_csv(metrics.records, path)
    assert path.read_text().splitlines() == [
        "image,gt,pred,abs_err",
        "IMG_1,2,0,2",
        "IMG_10,1,1,0",
        "IMG_2,3,5,2",
    ]


def test_plot_counts_writes_png(tmp_path):
    metrics = CountingMetrics()
    for index, (pred, true) in enumerate([(3, 4), (10, 8), (0, 0), (6, 6)]):
        metrics.update(f"im{index}", scatter(pred), scatter(true), 100, 200)
    path = tmp_path / "plots" / "counts.png"
    plot_counts(metrics.records, path, title_prefix="Demo_Hazy")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    with pytest.raises(ValueError, match="no records"):
        plot_counts([], tmp_path / "empty.png")


def test_importing_metrics_and_drawing_does_not_load_matplotlib():
    code = "import sys, crowd_datasets.metrics, inference.visualize; sys.exit('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT)
    assert result.returncode == 0
