"""Counting and localization metrics for point-annotated crowd images.

All point arrays are float ``[N, 2]`` arrays of ``(x, y)`` pixel coordinates (``N`` may be 0).
Counts are plain integers. The chart of an evaluation is drawn by ``inference.visualize.plot_counts``.
P2PNet's nAP (``point_ap``) joins the summary when every image's predictions come with scores.
"""
import csv
import math
import os

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from .point_ap import (NAP_DELTAS, REPORTED_DELTAS, as_scores, checked_nap_fields, dataset_nap, knn_distances,
                       lone_point_distance, match_predictions, nap_key, pack_hits)

GAME_LEVELS = (0, 1, 2, 3)
CSV_HEADER = ("image", "gt", "pred", "abs_err")


def _as_points(points, name):
    """Return ``points`` as a float64 ``[N, 2]`` array, raising ValueError on anything else.

    Accepts numpy arrays, nested sequences and array-likes with ``detach().cpu().numpy()``
    (torch tensors on any device) without importing torch. An empty input of any shape is ``[0, 2]``.
    """
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name}: expected an array of shape [N, 2] holding (x, y) pixels, "
                         f"got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite (x, y) pixels, found NaN or infinity")
    return array


def _check_positive(value, name):
    if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
            and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")


def match_within(pred, gt, sigma):
    """Count one-to-one matches between predicted and true points closer than ``sigma``.

    A prediction and a true point may be paired only if their Euclidean distance is at most
    ``sigma`` pixels (equality counts). Among all one-to-one pairings the one with the most pairs
    is taken (maximum-cardinality bipartite matching), so the result does not depend on point
    order and never falls short of what a better pairing could achieve, as greedy matching can.

    Args:
        pred: float ``[P, 2]`` predicted ``(x, y)`` pixels.
        gt: float ``[G, 2]`` annotated ``(x, y)`` pixels.
        sigma: non-negative distance threshold in pixels.

    Returns:
        ``(tp, fp, fn)`` ints: matched pairs, unmatched predictions, unmatched true points.
    """
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a non-negative finite distance in pixels, got {sigma!r}")
    if len(pred) == 0 or len(gt) == 0:
        return 0, len(pred), len(gt)

    # The tree only proposes candidates (with a little slack against its own rounding); the exact
    # distance test below decides, so a pair at exactly sigma is always a match.
    slack = 1e-9 * max(1.0, sigma)
    candidates = cKDTree(pred).query_ball_tree(cKDTree(gt), r=sigma + slack)
    rows = np.repeat(np.arange(len(pred)), [len(c) for c in candidates])
    cols = np.fromiter((j for c in candidates for j in c), dtype=np.int64, count=len(rows))
    if len(rows):
        offsets = pred[rows] - gt[cols]
        within = np.sqrt((offsets ** 2).sum(axis=1)) <= sigma
        rows, cols = rows[within], cols[within]
    if len(rows) == 0:
        return 0, len(pred), len(gt)

    adjacency = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                           shape=(len(pred), len(gt)))
    partner_of_pred = maximum_bipartite_matching(adjacency, perm_type="column")
    tp = int((partner_of_pred >= 0).sum())
    return tp, len(pred) - tp, len(gt) - tp


def _cell_counts(points, height, width, level):
    """Number of points in each cell of a ``2^level x 2^level`` grid, as an int ``[4^level]`` array."""
    cells = 2 ** level
    column = np.clip(np.floor(points[:, 0] * cells / width), 0, cells - 1).astype(np.int64)
    row = np.clip(np.floor(points[:, 1] * cells / height), 0, cells - 1).astype(np.int64)
    return np.bincount(row * cells + column, minlength=cells * cells)


def grid_error(pred, gt, height, width, level):
    """Grid Average Mean absolute Error (GAME) of one image at one level.

    The image is split into ``2^level x 2^level`` equal cells; the result is the sum over cells of
    ``|#pred in cell - #gt in cell|``. Points on or beyond the image border count in the border
    cell, so level 0 is ``|P - G|``.

    Args:
        pred: float ``[P, 2]`` predicted ``(x, y)`` pixels.
        gt: float ``[G, 2]`` annotated ``(x, y)`` pixels.
        height, width: image size in pixels (positive).
        level: non-negative int grid level.

    Returns:
        float, the summed per-cell absolute count error.
    """
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    _check_positive(height, "height")
    _check_positive(width, "width")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(f"level: expected a non-negative int, got {level!r}")
    difference = (_cell_counts(pred, height, width, level)
                  - _cell_counts(gt, height, width, level))
    return float(np.abs(difference).sum())


def _sigma_tag(sigma):
    """Key suffix for a sigma: 4 and 4.0 give ``'4'``, 2.5 gives ``'2.5'``."""
    return f"{float(sigma):g}"


def _ratio(numerator, denominator, empty_value):
    return numerator / denominator if denominator else empty_value


def _copy_record(record):
    """A copy of a record whose lists are copies too, so callers cannot change the stored one."""
    return {key: list(value) if isinstance(value, list) else value for key, value in record.items()}


class CountingMetrics:
    """Accumulates per-image counting and localization records and summarises them.

    One record per image id: a second record for an id already held (as a distributed sampler
    produces when it pads the dataset by repeating images) is ignored, whether it arrives through
    :meth:`update` or :meth:`merge`. Records hold plain Python values, so they can be gathered
    across processes and merged.

    Args:
        sigmas: distance thresholds in pixels for precision / recall / F1 (default ``(4, 8)``).

    nAP thresholds are ``point_ap.NAP_DELTAS`` (0.05 to 0.50 of each true point's ``d_kNN``).
    """

    def __init__(self, sigmas=(4, 8)):
        sigmas = tuple(sigmas)
        if not sigmas:
            raise ValueError("sigmas: expected at least one distance threshold")
        for sigma in sigmas:
            _check_positive(sigma, "sigmas")
        tags = [_sigma_tag(sigma) for sigma in sigmas]
        if len(set(tags)) != len(tags):
            raise ValueError(f"sigmas: expected distinct thresholds, got {sigmas!r}")
        self.sigmas = sigmas
        self._tags = tags
        self._records = {}

    @property
    def records(self):
        """Stored records (list of dicts) in the order they were added."""
        return [_copy_record(record) for record in self._records.values()]

    def _required_keys(self):
        keys = ["image", "gt", "pred", "abs_err", "sq_err", "game"]
        for tag in self._tags:
            keys += [f"tp_s{tag}", f"fp_s{tag}", f"fn_s{tag}"]
        return keys

    def update(self, image_id, pred_points, gt_points, height, width, pred_scores=None):
        """Score one image and store its record (ignored if ``image_id`` is already held).

        Args:
            image_id: str, unique id of the image (e.g. the file stem).
            pred_points: float ``[P, 2]`` predicted ``(x, y)`` pixels.
            gt_points: float ``[G, 2]`` annotated ``(x, y)`` pixels.
            height, width: image size in pixels, for GAME (and nAP's ``d_kNN`` of a lone true point).
            pred_scores: optional float ``[P]`` confidence of each prediction, for nAP.

        Returns:
            The record dict: ``image``, ``gt``, ``pred``, ``abs_err``, ``sq_err``, ``game``
            (4 floats, levels 0..3) and ``tp_s{s}``, ``fp_s{s}``, ``fn_s{s}`` for each sigma; with
            ``pred_scores`` also ``nap_scores`` (``P`` floats) and ``nap_hits`` (``P`` ints, bit ``j``
            set when that prediction is a true positive at ``NAP_DELTAS[j]``).
        """
        pred = _as_points(pred_points, f"pred_points of image {image_id!r}")
        gt = _as_points(gt_points, f"gt_points of image {image_id!r}")
        error = len(pred) - len(gt)
        record = {
            "image": str(image_id),
            "gt": len(gt),
            "pred": len(pred),
            "abs_err": abs(error),
            "sq_err": error * error,
            "game": [grid_error(pred, gt, height, width, level) for level in GAME_LEVELS],
        }
        for sigma, tag in zip(self.sigmas, self._tags):
            tp, fp, fn = match_within(pred, gt, sigma)
            record.update({f"tp_s{tag}": tp, f"fp_s{tag}": fp, f"fn_s{tag}": fn})
        if pred_scores is not None:
            scores = as_scores(pred_scores, len(pred), f"pred_scores of image {image_id!r}")
            knn = knn_distances(gt, lone_distance=lone_point_distance(height, width))
            hits = match_predictions(pred, scores, gt, knn=knn, deltas=NAP_DELTAS)
            record.update(nap_scores=scores.tolist(), nap_hits=pack_hits(hits))
        self._records.setdefault(record["image"], record)
        return _copy_record(record)

    def merge(self, records):
        """Add records gathered elsewhere (e.g. other processes); ids already held are ignored.

        Args:
            records: iterable of record dicts as returned by :meth:`update` / :attr:`records`
                from a ``CountingMetrics`` with the same sigmas (their ``nap_scores`` /
                ``nap_hits``, when scored, are checked and kept).
        """
        required = self._required_keys()
        for position, record in enumerate(records):
            missing = [key for key in required if key not in record]
            if missing:
                raise ValueError(f"merge: record {position} (image {record.get('image')!r}) lacks "
                                 f"keys {missing}; expected records from CountingMetrics with "
                                 f"sigmas {self.sigmas}")
            if len(record["game"]) != len(GAME_LEVELS):
                raise ValueError(f"merge: record {position} (image {record['image']!r}) has "
                                 f"{len(record['game'])} GAME values, expected {len(GAME_LEVELS)}")
            checked = {key: int(record[key]) for key in required if key not in ("image", "game")}
            checked["image"] = str(record["image"])
            checked["game"] = [float(value) for value in record["game"]]
            stored = {key: checked[key] for key in required}
            if "nap_scores" in record or "nap_hits" in record:
                where = f"merge: record {position} (image {record['image']!r})"
                stored["nap_scores"], stored["nap_hits"] = checked_nap_fields(
                    record.get("nap_scores", ()), record.get("nap_hits", ()), stored["pred"], NAP_DELTAS, where)
            self._records.setdefault(checked["image"], stored)

    def summary(self):
        """Dataset-level metrics over all stored records.

        Returns:
            dict with ``images`` (int), ``mae``, ``mse`` (root of the mean squared count error),
            ``game0``..``game3`` (means over images) and, per sigma ``s``, ``precision_s{s}``,
            ``recall_s{s}``, ``f1_s{s}`` from TP / FP / FN summed over images (micro average),
            plus those sums as ``tp_s{s}``, ``fp_s{s}``, ``fn_s{s}``. Precision is 1.0 when there
            are no predictions at all, recall is 1.0 when there are no true points at all. When every
            record has scores: ``nap`` (mean AP over ``NAP_DELTAS``) and ``nap_0.05`` .. ``nap_0.50``
            (``point_ap.nap_key``), each AP over all images' predictions ranked together.

        Raises:
            ValueError: when no image has been recorded.
        """
        if not self._records:
            raise ValueError("CountingMetrics.summary: no images recorded; call update() or "
                             "merge() with at least one image first")
        # Sorted ids plus exactly rounded sums make the result independent of arrival order.
        records = [self._records[image] for image in sorted(self._records)]
        count = len(records)
        result = {
            "images": count,
            "mae": math.fsum(r["abs_err"] for r in records) / count,
            "mse": math.sqrt(math.fsum(r["sq_err"] for r in records) / count),
        }
        for index, level in enumerate(GAME_LEVELS):
            result[f"game{level}"] = math.fsum(r["game"][index] for r in records) / count
        for tag in self._tags:
            tp, fp, fn = (sum(r[f"{kind}_s{tag}"] for r in records) for kind in ("tp", "fp", "fn"))
            precision = _ratio(tp, tp + fp, 1.0)
            recall = _ratio(tp, tp + fn, 1.0)
            f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
            result.update({f"precision_s{tag}": precision, f"recall_s{tag}": recall,
                           f"f1_s{tag}": f1, f"tp_s{tag}": tp, f"fp_s{tag}": fp, f"fn_s{tag}": fn})
        if all("nap_scores" in r for r in records):
            scores = [score for r in records for score in r["nap_scores"]]
            masks = [mask for r in records for mask in r["nap_hits"]]
            result.update(dataset_nap(scores, masks, sum(r["gt"] for r in records), NAP_DELTAS))
        return result


def write_records_csv(records, path):
    """Write ``image,gt,pred,abs_err`` rows of ``records`` sorted by image id, with a header line.

    Args:
        records: iterable of record dicts as :attr:`CountingMetrics.records` returns them
        path: output file path; its parent folder is created if missing.
    """
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for record in sorted(records, key=lambda r: r["image"]):
            writer.writerow([record[key] for key in CSV_HEADER])


def format_summary(summary):
    """Human-readable lines for a :meth:`CountingMetrics.summary` dict.

    Lines: ``images: N``; one ``sigma=s: precision … recall … f1 … (tp … fp … fn …)`` line per
    sigma (ascending); ``GAME(0..3): a / b / c / d``; with nAP in the summary
    ``nAP delta=0.05: … delta=0.25: … delta=0.50: … mean(0.05:0.05:0.50): …``; and last
    ``mae: <mae> mse: <mse>``.

    Returns:
        list of str.
    """
    tags = sorted((key[len("precision_s"):] for key in summary if key.startswith("precision_s")),
                  key=float)
    lines = [f"images: {summary['images']}"]
    for tag in tags:
        lines.append(f"sigma={tag}: precision {summary[f'precision_s{tag}']:.4f} "
                     f"recall {summary[f'recall_s{tag}']:.4f} f1 {summary[f'f1_s{tag}']:.4f} "
                     f"(tp {summary[f'tp_s{tag}']} fp {summary[f'fp_s{tag}']} "
                     f"fn {summary[f'fn_s{tag}']})")
    game = " / ".join(f"{summary[f'game{level}']:.4f}" for level in GAME_LEVELS)
    lines.append(f"GAME({GAME_LEVELS[0]}..{GAME_LEVELS[-1]}): {game}")
    if "nap" in summary:
        single = " ".join(f"delta={delta:.2f}: {summary[nap_key(delta)]:.4f}" for delta in REPORTED_DELTAS)
        lines.append(f"nAP {single} mean({NAP_DELTAS[0]:.2f}:{NAP_DELTAS[1] - NAP_DELTAS[0]:.2f}:"
                     f"{NAP_DELTAS[-1]:.2f}): {summary['nap']:.4f}")
    lines.append(f"mae: {summary['mae']:.4f} mse: {summary['mse']:.4f}")
    return lines


def summary_json(summary):
    """The metrics of a :meth:`CountingMetrics.summary` dict as plain JSON values, for ``json.dump``.

    Keeps every int and float entry (``images``, ``mae``, ``mse``, ``game0``.., per-sigma ``precision_s{s}``
    .., ``nap``, ``nap_0.05``..) in the summary's order, as Python ``int`` / ``float`` (a non-finite float
    becomes ``None``, which JSON writes as ``null``); drops anything else, such as ``records``.

    Returns:
        dict of str to int, float or None.
    """
    plain = {}
    for key, value in summary.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            continue
        if isinstance(value, (int, np.integer)):
            plain[str(key)] = int(value)
        else:
            plain[str(key)] = float(value) if math.isfinite(value) else None
    return plain
