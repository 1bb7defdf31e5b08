"""P2PNet's localization metric: density-normalized average precision (nAP) of scored predicted points.

Song et al., "Rethinking Counting and Localization in Crowds: A Purely Point-Based Framework", ICCV 2021,
section 3.1. A predicted point is a true positive at a threshold ``delta`` when it is matched to a true point
``g`` closer than ``delta * d_kNN(g)``, where ``d_kNN(g)`` is the mean distance from ``g`` to its ``k = 3``
nearest other true points, so the tolerance widens where people stand far apart and narrows in dense crowds.
The paper reports nAP at ``delta = 0.05, 0.25, 0.50`` and the mean over ``delta = 0.05:0.05:0.50``.

Details the definition above does not fix, decided here (each is also stated where it is made):

* Fewer than 4 true points in an image: ``d_kNN`` is the mean distance to all ``G - 1`` other true points
  (2 or 3 points); a lone true point takes ``lone_distance`` (``lone_point_distance``: a quarter of the mean
  image side, the scale the geometry-adaptive density-map code of MCNN / CSRNet gives a lone point).
* Matching, per image and per delta: predictions in descending score order (ties broken by ``x``, then ``y``,
  so the result does not depend on input order) each take the nearest still unmatched true point within that
  point's threshold (strictly closer, as the paper's ``<``); a prediction left without one is a false positive.
* AP is computed once over the whole dataset: every image's predictions are ranked together by score, each
  keeping the true / false positive flag of its own image's matching, and recall is over all true points.
  The precision-recall curve is read at every distinct score (tied scores enter together) and AP is the
  area under its monotone envelope (all-point interpolation, as PASCAL VOC since 2010).

Point arrays are float ``[N, 2]`` ``(x, y)`` pixel coordinates; distances are in pixels.
"""
import math

import numpy as np
from scipy.spatial import cKDTree

# delta = 0.05, 0.10, ..., 0.50: the thresholds the paper averages over (written as the decimals they are).
NAP_DELTAS = tuple(round(0.05 * step, 2) for step in range(1, 11))
# The single thresholds the paper's tables report beside the mean.
REPORTED_DELTAS = (0.05, 0.25, 0.5)
KNN_NEIGHBOURS = 3


def nap_key(delta):
    """Summary key of the AP at one threshold: ``0.05`` gives ``'nap_0.05'``, ``0.5`` gives ``'nap_0.50'``."""
    return f"nap_{delta:.2f}"


def lone_point_distance(height, width):
    """``d_kNN`` in pixels given to the only true point of an image: a quarter of the mean image side.

    Args:
        height, width: image size in pixels.
    """
    return (height + width) / 8.0


def as_scores(scores, count, name):
    """Return ``scores`` as a float64 ``[count]`` array, raising ValueError on anything else.

    Accepts numpy arrays, sequences and torch tensors (through ``detach().cpu().numpy()``).
    """
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.size == 0:
        array = np.zeros(0)
    if array.shape != (count,):
        raise ValueError(f"{name}: expected {count} scores, one per predicted point, got shape "
                         f"{tuple(np.shape(scores))}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite scores, found NaN or infinity")
    return array


def knn_distances(gt, *, lone_distance, k=KNN_NEIGHBOURS):
    """Mean distance from each true point to its ``k`` nearest other true points.

    With ``2 <= G <= k`` points, the mean over all ``G - 1`` others; a single point gets ``lone_distance``.
    Coinciding true points count as neighbours at distance 0.

    Args:
        gt: float ``[G, 2]`` true ``(x, y)`` pixels.
        lone_distance: pixels, the value for an image's only true point.
        k: number of neighbours (the paper's 3).

    Returns:
        float64 ``[G]`` distances in pixels.
    """
    count = len(gt)
    if count <= 1:
        return np.full(count, float(lone_distance))
    neighbours = min(k, count - 1)
    # The tree picks the neighbours; the distances are recomputed here so that equal inputs give equal bits.
    _, index = cKDTree(gt).query(gt, k=neighbours + 1)
    distances = np.sqrt(((gt[index] - gt[:, None, :]) ** 2).sum(axis=2))
    # The smallest distance of each row is the point to itself (0); the rest are its neighbours.
    return np.sort(distances, axis=1)[:, 1:].mean(axis=1)


def _candidate_pairs(pred, gt, knn, widest):
    """Pairs ``(p, g, distance)`` with ``distance < widest * knn[g]``: int, int, float64 ``[M]`` arrays."""
    # The tree proposes (with slack against its own rounding); the exact strict test below decides.
    radii = widest * knn * (1 + 1e-9) + 1e-12
    found = cKDTree(pred).query_ball_point(gt, r=radii)
    g_index = np.repeat(np.arange(len(gt)), [len(row) for row in found])
    p_index = np.fromiter((p for row in found for p in row), dtype=np.int64, count=len(g_index))
    distance = np.sqrt(((pred[p_index] - gt[g_index]) ** 2).sum(axis=1))
    keep = distance < widest * knn[g_index]
    return p_index[keep], g_index[keep], distance[keep]


def _greedy_hits(p_sorted, g_sorted, count):
    """TP flags ``[count]`` from pairs sorted by prediction rank, then distance: each prediction in turn takes
    its first pair whose true point is still free."""
    matched, taken = set(), set()
    for p, g in zip(p_sorted.tolist(), g_sorted.tolist()):
        if p not in matched and g not in taken:
            matched.add(p)
            taken.add(g)
    hits = np.zeros(count, dtype=bool)
    hits[list(matched)] = True
    return hits


def match_predictions(pred, scores, gt, *, knn, deltas=NAP_DELTAS):
    """Which predictions of one image are true positives at each threshold (greedy matching by score).

    At each ``delta`` the predictions are visited in descending score (ties: smaller ``x``, then smaller
    ``y`` first); each takes the nearest unmatched true point ``g`` with distance ``< delta * knn[g]``
    (ties in distance: smaller ``x``, then ``y`` of ``g``). Each true point is matched at most once.

    Args:
        pred: float ``[P, 2]`` predicted ``(x, y)`` pixels.
        scores: float ``[P]`` confidence of each prediction (higher ranks first).
        gt: float ``[G, 2]`` true ``(x, y)`` pixels.
        knn: float ``[G]`` pixels, ``d_kNN`` of each true point (see :func:`knn_distances`).
        deltas: ``D`` positive thresholds, as fractions of ``d_kNN``.

    Returns:
        bool ``[P, D]``: ``[i, j]`` is whether prediction ``i`` (input order) is a true positive at ``deltas[j]``.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    scores, knn = np.asarray(scores, dtype=np.float64), np.asarray(knn, dtype=np.float64)
    if len(scores) != len(pred) or len(knn) != len(gt):
        raise ValueError(f"match_predictions: expected one score per prediction and one d_kNN per true point, got "
                         f"{len(scores)} scores for {len(pred)} predictions, {len(knn)} for {len(gt)} true points")
    hits = np.zeros((len(pred), len(deltas)), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return hits
    rank = np.empty(len(pred), dtype=np.int64)
    rank[np.lexsort((pred[:, 1], pred[:, 0], -scores))] = np.arange(len(pred))
    p_index, g_index, distance = _candidate_pairs(pred, gt, knn, max(deltas))
    order = np.lexsort((gt[g_index, 1], gt[g_index, 0], distance, rank[p_index]))
    p_index, g_index, distance = p_index[order], g_index[order], distance[order]
    for column, delta in enumerate(deltas):
        within = distance < delta * knn[g_index]
        hits[:, column] = _greedy_hits(p_index[within], g_index[within], len(pred))
    return hits


def pack_hits(hits):
    """One int per prediction from bool ``[P, D]`` flags: bit ``j`` set when a true positive at ``deltas[j]``.

    Keeps per-image records small and plainly picklable (a list of ints).
    """
    weights = 1 << np.arange(hits.shape[1], dtype=np.int64)
    return [int(value) for value in (hits.astype(np.int64) * weights).sum(axis=1)]


def unpack_hits(masks, count):
    """Bool ``[P, count]`` flags from the ints of :func:`pack_hits`."""
    masks = np.asarray(masks, dtype=np.int64).reshape(-1)
    return (masks[:, None] >> np.arange(count, dtype=np.int64)) & 1 == 1


def average_precision(scores, hits, num_gt):
    """Area under the interpolated precision-recall curve of ranked predictions.

    The curve has one point per distinct score (tied predictions enter together, so their order does not
    matter): ``precision = TP / (TP + FP)`` and ``recall = TP / num_gt`` over the predictions scored at least
    that high. Precision is replaced by its maximum at equal or higher recall, and AP is the sum of
    ``(recall step) * precision`` over the points.

    Args:
        scores: float ``[N]`` confidences of all predictions (of all images).
        hits: bool ``[N]``, whether each prediction is a true positive.
        num_gt: int, number of true points (of all images).

    Returns:
        float in [0, 1]. Without true points: 1.0 when there are no predictions either, else 0.0 (every
        prediction is false). With true points but no predictions: 0.0.
    """
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    if num_gt == 0:
        return 1.0 if len(scores) == 0 else 0.0
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    true_positives = np.cumsum(hits)
    # The last prediction of each run of equal scores ends a point of the curve.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp = true_positives[ends]
    precision = tp / (ends + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    new_tp = np.diff(tp, prepend=0)
    return math.fsum((new_tp * envelope).tolist()) / num_gt


def dataset_nap(scores, masks, num_gt, deltas=NAP_DELTAS):
    """nAP of a whole dataset from its per-prediction scores and packed hits.

    Args:
        scores: float ``[N]`` confidences of every image's predictions, concatenated.
        masks: int ``[N]`` packed TP flags (:func:`pack_hits`) of the same predictions.
        num_gt: int, total number of true points.
        deltas: the ``D`` thresholds the masks were packed for.

    Returns:
        dict: ``nap`` (mean AP over ``deltas``) and ``nap_<delta>`` (:func:`nap_key`) for each delta.
    """
    hits = unpack_hits(masks, len(deltas))
    per_delta = {nap_key(delta): average_precision(scores, hits[:, column], num_gt)
                 for column, delta in enumerate(deltas)}
    return {"nap": math.fsum(per_delta.values()) / len(deltas), **per_delta}


def checked_nap_fields(scores, masks, count, deltas, where):
    """A record's ``nap_scores`` / ``nap_hits`` as plain lists (floats, ints), raising ValueError when they do
    not hold one finite score and one mask below ``2 ** len(deltas)`` for each of its ``count`` predictions."""
    scores = as_scores(scores, count, f"{where}: nap_scores")
    masks = list(masks)
    if len(masks) != count or not all(0 <= int(mask) < 1 << len(deltas) for mask in masks):
        raise ValueError(f"{where}: nap_hits must hold {count} ints in [0, {1 << len(deltas)}), one per "
                         f"prediction; expected records from CountingMetrics with {len(deltas)} nAP thresholds")
    return scores.tolist(), [int(mask) for mask in masks]
