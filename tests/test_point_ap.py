"""Hand-worked checks of P2PNet's nAP (crowd_datasets.point_ap) and its place in CountingMetrics."""
import json
import math

import numpy as np
import pytest

from crowd_datasets.metrics import CountingMetrics, format_summary, summary_json
from crowd_datasets.point_ap import (NAP_DELTAS, average_precision, dataset_nap, knn_distances, match_predictions,
                                     nap_key, pack_hits, unpack_hits)

# Every expected value below is a few float64 operations away from exact, so a relative 1e-12 is ample.
REL = 1e-12


def points(*xy):
    return np.array(xy, dtype=np.float64).reshape(-1, 2)


# A row of five true points 10 px apart. d_kNN (mean distance to the 3 nearest others):
#   g0 (0, 0) and g4 (40, 0): (10 + 20 + 30) / 3 = 20;  g1, g2, g3: (10 + 10 + 20) / 3 = 40/3.
ROW_GT = points((0, 0), (10, 0), (20, 0), (30, 0), (40, 0))
# Predictions (score): which true point each can reach, and from which delta on (strictly closer than
# delta * d_kNN; none lies on a threshold):
#   p0 (0.90) at (10, 3):    g1 at 3        -> delta > 3 / (40/3) = 0.225  -> 0.25 .. 0.50
#   p1 (0.80) at (10, 1):    g1 at 1        -> delta > 0.075 -> 0.10 .. 0.50, but from 0.25 on p0 (higher score)
#                            holds g1; g0 / g2 at sqrt(101) = 10.05 exceed even 0.5 * 20 = 10 -> 0.10 .. 0.20
#   p2 (0.70) at (40, 8.5):  g4 at 8.5      -> delta > 8.5 / 20 = 0.425 -> 0.45, 0.50
#   p3 (0.50) at (100, 100): nothing        -> never
#   p4 (0.65) at (20, 2.5):  g2 at 2.5      -> delta > 2.5 / (40/3) = 0.1875 -> 0.20 .. 0.50
ROW_PRED = points((10, 3), (10, 1), (40, 8.5), (100, 100), (20, 2.5))
ROW_SCORES = np.array([0.9, 0.8, 0.7, 0.5, 0.65])
ROW_HITS = {  # prediction -> deltas at which it is a true positive
    0: {0.25, 0.3, 0.35, 0.4, 0.45, 0.5},
    1: {0.1, 0.15, 0.2},
    2: {0.45, 0.5},
    3: set(),
    4: {0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5},
}
# Ranked by score: p0, p1, p2, p4, p3; G = 5. AP = sum over TPs of the interpolated precision (the best
# precision at that recall or beyond), divided by G:
#   0.05:             F F F F F -> 0
#   0.10, 0.15:       F T F F F -> precision 1/2 at the TP                   -> (1/2) / 5 = 0.1
#   0.20:             F T F T F -> 1/2, 2/4                                  -> (1/2 + 1/2) / 5 = 0.2
#   0.25 .. 0.40:     T F F T F -> 1, 2/4                                    -> (1 + 1/2) / 5 = 0.3
#   0.45, 0.50:       T F T T F -> 1, 2/3 raised to 3/4 by the next TP, 3/4 -> (1 + 3/4 + 3/4) / 5 = 0.5
ROW_AP = [0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.5, 0.5]


def test_knn_distances_of_a_row_and_of_small_images():
    assert knn_distances(ROW_GT, lone_distance=99.0) == pytest.approx([20, 40 / 3, 40 / 3, 40 / 3, 20], rel=REL)
    # 2 or 3 points: the mean over all others; one point: the fallback; none: empty.
    assert knn_distances(points((0, 0), (3, 4)), lone_distance=99.0).tolist() == [5.0, 5.0]
    assert knn_distances(points((0, 0), (6, 0), (0, 8)), lone_distance=99.0) == pytest.approx([7, 8, 9], rel=REL)
    assert knn_distances(points((7, 7)), lone_distance=12.5).tolist() == [12.5]
    assert knn_distances(points(), lone_distance=12.5).shape == (0,)


def test_hand_worked_matching_of_the_row():
    knn = knn_distances(ROW_GT, lone_distance=99.0)
    hits = match_predictions(ROW_PRED, ROW_SCORES, ROW_GT, knn=knn, deltas=NAP_DELTAS)
    expected = [[delta in ROW_HITS[p] for delta in NAP_DELTAS] for p in range(len(ROW_PRED))]
    assert hits.tolist() == expected


def test_hand_worked_average_precision_of_the_row():
    knn = knn_distances(ROW_GT, lone_distance=99.0)
    hits = match_predictions(ROW_PRED, ROW_SCORES, ROW_GT, knn=knn, deltas=NAP_DELTAS)
    for column, expected in enumerate(ROW_AP):
        assert average_precision(ROW_SCORES, hits[:, column], len(ROW_GT)) == pytest.approx(expected, rel=REL)
    result = dataset_nap(ROW_SCORES, pack_hits(hits), len(ROW_GT))
    # mean over the ten deltas: (0 + 0.1 + 0.1 + 0.2 + 4 * 0.3 + 2 * 0.5) / 10 = 0.26
    assert result["nap"] == pytest.approx(0.26, rel=REL)
    assert (result["nap_0.05"], result["nap_0.25"]) == (0.0, pytest.approx(0.3, rel=REL))
    assert result["nap_0.50"] == pytest.approx(0.5, rel=REL)
    assert list(result) == ["nap"] + [nap_key(delta) for delta in NAP_DELTAS]


def test_matching_is_greedy_by_score_to_the_nearest_free_point():
    # g0 (0, 0), g1 (6, 0), g2 (0, 30): d_kNN (mean over the 2 others) g0 (6 + 30) / 2 = 18, g1
    # (6 + sqrt(936)) / 2 = 18.30, so delta 0.5 allows 9 px around g0 and 9.15 px around g1.
    # p (score 0.9) at (4, 0) is within reach of g0 (4 px) and g1 (2 px) and takes the nearer, g1.
    # q (score 0.5) at (10, 0) reaches only g1 (4 px; g0 is 10 px away), now taken: a false positive,
    # although pairing p-g0 and q-g1 would match both (the standard detection matching, not the largest one).
    gt = points((0, 0), (6, 0), (0, 30))
    pred = points((10, 0), (4, 0))
    knn = knn_distances(gt, lone_distance=1.0)
    assert knn == pytest.approx([18, (6 + math.sqrt(936)) / 2, (30 + math.sqrt(936)) / 2], rel=REL)
    assert match_predictions(pred, [0.5, 0.9], gt, knn=knn, deltas=(0.5,)).tolist() == [[False], [True]]
    # with the scores swapped q comes first, takes g1, and p takes g0
    assert match_predictions(pred, [0.9, 0.5], gt, knn=knn, deltas=(0.5,)).tolist() == [[True], [True]]


def test_threshold_is_strict():
    # d_kNN 8 (two points), delta 0.5: 4 px. A prediction exactly 4 px away does not match.
    gt = points((0, 0), (8, 0))
    knn = knn_distances(gt, lone_distance=1.0)
    assert match_predictions(points((0, 4)), [1.0], gt, knn=knn, deltas=(0.5,)).tolist() == [[False]]
    assert match_predictions(points((0, 3.999)), [1.0], gt, knn=knn, deltas=(0.5,)).tolist() == [[True]]


def test_empty_cases():
    gt = points((5, 5), (9, 9))
    knn = knn_distances(gt, lone_distance=1.0)
    assert match_predictions(points(), [], gt, knn=knn).shape == (0, len(NAP_DELTAS))
    assert not match_predictions(gt, [0.5, 0.4], points(), knn=[]).any()
    # no predictions: recall never rises; no true points: every prediction is false; neither: nothing missed
    assert average_precision([], [], 2) == 0.0
    assert average_precision([0.9, 0.3], [False, False], 0) == 0.0
    assert average_precision([], [], 0) == 1.0
    assert dataset_nap([], [], 0) == {"nap": 1.0, **{nap_key(delta): 1.0 for delta in NAP_DELTAS}}


def test_tied_scores_enter_the_curve_together():
    # G = 2; a TP and an FP both at 0.9, a TP at 0.5. Points of the curve: after the tie tp 1 of 2 ranked
    # (precision 1/2, recall 1/2), after 0.5 tp 2 of 3 (2/3, recall 1). Interpolated: 2/3 at both recalls,
    # AP = (2/3 + 2/3) / 2 = 2/3, whichever of the tied pair is listed first (one by one it would be 5/6 or 2/3).
    assert average_precision([0.9, 0.9, 0.5], [True, False, True], 2) == pytest.approx(2 / 3, rel=REL)
    assert average_precision([0.9, 0.9, 0.5], [False, True, True], 2) == pytest.approx(2 / 3, rel=REL)


def test_tied_scores_in_matching_do_not_depend_on_input_order():
    # Two predictions with the same score compete for one true point: the one with smaller x wins.
    gt = points((10, 10), (100, 100))
    knn = knn_distances(gt, lone_distance=1.0)
    pred = points((11, 10), (9.5, 10))
    forward = match_predictions(pred, [0.7, 0.7], gt, knn=knn)
    backward = match_predictions(pred[::-1], [0.7, 0.7], gt, knn=knn)
    assert forward[:, -1].tolist() == [False, True]
    np.testing.assert_array_equal(forward, backward[::-1])


def test_pack_and_unpack_hits():
    hits = np.array([[True, False, True], [False, False, False], [True, True, True]])
    assert pack_hits(hits) == [5, 0, 7]
    np.testing.assert_array_equal(unpack_hits([5, 0, 7], 3), hits)


def random_images(seed, count=6):
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        gt = rng.uniform(0, 90, size=(rng.integers(0, 9), 2))
        pred = gt[: rng.integers(0, len(gt) + 1)] + rng.normal(0, 3, size=(1, 2))
        pred = np.concatenate([pred, rng.uniform(0, 90, size=(rng.integers(0, 4), 2))])
        # scores on a coarse grid, so that ties within and across images occur
        scores = rng.integers(1, 5, size=len(pred)) / 4
        images.append((f"img{index}", pred, gt, 90, 97, scores))
    return images


def update(metrics, image_id, pred, gt, height, width, scores):
    return metrics.update(image_id, pred, gt, height, width, pred_scores=scores)


def test_counting_metrics_reports_the_hand_worked_nap():
    metrics = CountingMetrics()
    update(metrics, "row", ROW_PRED, ROW_GT, 50, 120, ROW_SCORES)
    summary = metrics.summary()
    assert summary["nap"] == pytest.approx(0.26, rel=REL)
    for delta, expected in zip(NAP_DELTAS, ROW_AP):
        assert summary[nap_key(delta)] == pytest.approx(expected, rel=REL)
    record = metrics.records[0]
    assert record["nap_scores"] == ROW_SCORES.tolist()
    assert unpack_hits(record["nap_hits"], len(NAP_DELTAS)).tolist() == [
        [delta in ROW_HITS[p] for delta in NAP_DELTAS] for p in range(len(ROW_PRED))]
    lines = format_summary(summary)
    assert lines[-2] == "nAP delta=0.05: 0.0000 delta=0.25: 0.3000 delta=0.50: 0.5000 mean(0.05:0.05:0.50): 0.2600"
    assert lines[-1].startswith("mae: ")


def test_ap_ranks_all_images_together():
    # Image a: one TP at 0.9. Image b: one FP at 0.8, one TP at 0.3. G = 2 over both.
    # Ranked together: T F T -> precision 1, then 2/3 -> AP = (1 + 2/3) / 2 = 5/6 at every delta.
    # (A per-image mean would give (1 + 1/2) / 2 = 3/4.) The lone true points take (h + w) / 8 = 10 px.
    metrics = CountingMetrics()
    metrics.update("a", points((20, 20)), points((20, 20.2)), 40, 40, pred_scores=[0.9])
    metrics.update("b", points((5, 5), (30, 30)), points((30, 30.2)), 40, 40, pred_scores=[0.8, 0.3])
    assert metrics.summary()["nap"] == pytest.approx(5 / 6, rel=REL)


def test_summary_does_not_depend_on_image_or_point_order():
    images = random_images(seed=3)
    forward, backward = CountingMetrics(), CountingMetrics()
    for image in images:
        update(forward, *image)
    rng = np.random.default_rng(4)
    for image_id, pred, gt, height, width, scores in reversed(images):
        pred_order, gt_order = rng.permutation(len(pred)), rng.permutation(len(gt))
        update(backward, image_id, pred[pred_order], gt[gt_order], height, width, scores[pred_order])
    assert "nap" in forward.summary()
    assert forward.summary() == backward.summary()


def test_merge_of_two_processes_equals_one_process():
    images = random_images(seed=5, count=8)
    single, rank0, rank1 = CountingMetrics(), CountingMetrics(), CountingMetrics()
    for index, image in enumerate(images):
        update(single, *image)
        update(rank0 if index % 2 == 0 else rank1, *image)
    # a padding sampler repeats an image on the other rank
    update(rank1, *images[0])
    gathered = CountingMetrics()
    for records in (rank0.records, rank1.records):
        gathered.merge(records)
    assert gathered.summary() == single.summary()
    assert json.loads(json.dumps(rank0.records)) == rank0.records


def test_merge_rejects_broken_nap_fields():
    metrics = CountingMetrics()
    record = metrics.update("a", points((1, 1), (9, 9)), points((1, 1)), 20, 20, pred_scores=[0.9, 0.1])
    with pytest.raises(ValueError, match="nap_hits"):
        CountingMetrics().merge([dict(record, nap_hits=[1])])
    with pytest.raises(ValueError, match="nap_hits"):
        CountingMetrics().merge([dict(record, nap_hits=[1, 1 << len(NAP_DELTAS)])])
    with pytest.raises(ValueError, match="nap_scores"):
        CountingMetrics().merge([dict(record, nap_scores=[0.9])])


def test_scores_are_checked():
    with pytest.raises(ValueError, match="2 scores"):
        CountingMetrics().update("a", points((1, 1), (2, 2)), points(), 10, 10, pred_scores=[0.5])
    with pytest.raises(ValueError, match="finite"):
        CountingMetrics().update("a", points((1, 1)), points(), 10, 10, pred_scores=[math.nan])


def test_without_scores_for_every_image_there_is_no_nap():
    metrics = CountingMetrics()
    record = metrics.update("a", points((1, 1)), points((1, 2)), 10, 10)
    assert not any(key.startswith("nap") for key in record)
    metrics.update("b", points((1, 1)), points((1, 2)), 10, 10, pred_scores=[0.5])
    summary = metrics.summary()
    assert not any(key.startswith("nap") for key in summary)
    assert not any(line.startswith("nAP") for line in format_summary(summary))


def test_records_are_copies():
    metrics = CountingMetrics()
    metrics.update("a", points((1, 1)), points((1, 2)), 10, 10, pred_scores=[0.5])
    metrics.records[0]["nap_scores"].append(2.0)
    metrics.records[0]["game"].append(1.0)
    assert metrics.records[0]["nap_scores"] == [0.5] and len(metrics.records[0]["game"]) == 4


def test_summary_json_holds_plain_numbers_only():
    metrics = CountingMetrics()
    update(metrics, "row", ROW_PRED, ROW_GT, 50, 120, ROW_SCORES)
    summary = metrics.summary()
    summary["records"] = metrics.records
    summary["extra"] = np.float32(float("inf"))
    plain = summary_json(summary)
    assert "records" not in plain and plain["extra"] is None
    assert plain["images"] == 1 and type(plain["images"]) is int
    assert plain["nap"] == summary["nap"] and plain["mae"] == summary["mae"] and plain["mse"] == summary["mse"]
    assert {key for key in summary if key != "records"} == set(plain)
    assert json.loads(json.dumps(plain)) == plain


def test_a_prediction_exactly_at_the_threshold_distance_is_no_match():
    # Heads on a line 10 px apart: the first one's 3 nearest are 10, 20 and 30 px away, d_kNN = 20 px, so at
    # delta = 0.5 its radius is exactly 10 px (all exact in float64). The paper's rule is strictly closer.
    gt = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    knn = knn_distances(gt, lone_distance=100.0)
    assert knn[0] == 20.0
    on_the_edge, inside = np.array([[0.0, 10.0]]), np.array([[0.0, 9.999]])
    # With a wider delta beside it, the pair is a candidate and the rule at 0.5 alone decides.
    assert match_predictions(on_the_edge, np.array([0.9]), gt, knn=knn, deltas=(0.5, 1.0)).tolist() == [[False, True]]
    assert match_predictions(on_the_edge, np.array([0.9]), gt, knn=knn, deltas=(0.5,)).tolist() == [[False]]
    assert match_predictions(inside, np.array([0.9]), gt, knn=knn, deltas=(0.5,)).tolist() == [[True]]
