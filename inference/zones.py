"""Zones and exclusions: named polygons in a picture's pixel coordinates (origin top-left, x right, y down).

A point belongs to a polygon when it lies inside it by the even-odd rule (a concave or self-crossing
polygon counts what that rule says). Zones may overlap; each counts its own points. Points inside any
exclusion polygon are dropped before anything else looks at them.

Files (``--zones``, ``--exclude``) are JSON: either an object ``{"name": [[x, y], [x, y], [x, y], ...]}``
(in the order given), or a LabelMe annotation, whose ``polygon`` and ``rectangle`` shapes become
polygons named by their ``label``.

Zones and exclusions also come from clients of ``serve.py``, so each field (zones or exclusions) is capped:
at most ``MAX_POLYGONS`` polygons, each of at most ``MAX_VERTICES`` vertices and with a name of at most
``MAX_NAME_CHARS`` characters. ``inside`` takes at most ``BLOCK_PAIRS`` (point, edge) pairs at a time, so
that millions of points (every anchor of a large picture at threshold 0) need a few numbers each, not V.
"""
import json
from pathlib import Path

import numpy as np

# counts.csv columns that a zone may not be named after (pictures: image,count; videos: frame,time_s,count).
RESERVED_NAMES = ("image", "count", "frame", "time_s")
MAX_POLYGONS, MAX_VERTICES, MAX_NAME_CHARS = 64, 1000, 100
# inside() takes at most this many (point, edge) pairs at once: 8 MiB per float64 temporary.
BLOCK_PAIRS = 1 << 20


def check_polygons(polygons: dict, source: str) -> dict:
    """``polygons`` (name -> ``[[x, y], ...]``) as name -> float64 ``[V, 2]`` arrays, in their order, or
    ``ValueError`` naming ``source`` and the polygon: fewer than 3 vertices, a coordinate that is not a
    finite number, an empty, repeated or reserved name, more than the caps (see the module's docstring)."""
    if not isinstance(polygons, dict):
        raise ValueError(f"{source}: expected an object of named polygons, got {type(polygons).__name__}")
    if len(polygons) > MAX_POLYGONS:
        raise ValueError(f"{source}: {len(polygons)} polygons; at most {MAX_POLYGONS} may be given")
    checked = {}
    for name, vertices in polygons.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{source}: a polygon has an empty name")
        if len(name) > MAX_NAME_CHARS:
            # Only the name's start: the whole one could be megabytes.
            raise ValueError(f"{source}: the name {name[:20] + '...'!r} has {len(name)} characters; "
                             f"at most {MAX_NAME_CHARS}")
        if name in checked:
            raise ValueError(f"{source}: the name {name!r} is given twice")
        if name in RESERVED_NAMES:
            raise ValueError(f"{source}: the name {name!r} is a column of counts.csv; choose another")
        try:
            array = np.array(vertices, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: polygon {name!r} has a coordinate that is not a number") from None
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(f"{source}: polygon {name!r} must be a list of [x, y] pairs")
        if not np.isfinite(array).all():
            raise ValueError(f"{source}: polygon {name!r} has a coordinate that is not a finite number")
        if len(array) < 3:
            raise ValueError(f"{source}: polygon {name!r} has {len(array)} points; a polygon needs at least 3")
        if len(array) > MAX_VERTICES:
            raise ValueError(f"{source}: polygon {name!r} has {len(array)} points; at most {MAX_VERTICES}")
        checked[name] = array
    return checked


def read_polygons(path) -> dict:
    """The polygons of a ``--zones`` or ``--exclude`` file (see the module's docstring), checked."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected a JSON file of named polygons)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error}); expected named polygons or a LabelMe file") from None
    if isinstance(content, dict) and isinstance(content.get("shapes"), list):
        return check_polygons(labelme_polygons(content["shapes"], path), str(path))
    if isinstance(content, dict) and all(isinstance(value, list) for value in content.values()) and content:
        return check_polygons(content, str(path))
    raise ValueError(f"{path}: neither an object of named polygons ({{\"name\": [[x, y], ...]}}) nor a LabelMe "
                     "file (with \"shapes\")")


def unique_keys(path: Path):
    """A ``json`` object hook that refuses a name given twice in one object (``json`` keeps the last)."""
    def build(pairs: list) -> dict:
        names = [name for name, _ in pairs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{path}: the name {repeated[0]!r} is given twice")
        return dict(pairs)

    return build


def labelme_polygons(shapes: list, path: Path) -> dict:
    """LabelMe ``polygon`` shapes as they are and ``rectangle`` shapes (two corners) as 4 vertices, by label;
    other shapes (points, lines) are not areas and are left out."""
    polygons = {}
    for shape in shapes:
        kind, label, points = shape.get("shape_type", "polygon"), shape.get("label", ""), shape.get("points", [])
        if kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            points = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        elif kind != "polygon":
            continue
        if label in polygons:
            raise ValueError(f"{path}: the label {label!r} is given to two shapes")
        polygons[label] = points
    if not polygons:
        raise ValueError(f"{path}: a LabelMe file without polygon or rectangle shapes")
    return polygons


def y_order(points: np.ndarray) -> np.ndarray:
    """Indices of ``points`` (``[N, 2]``) in order of y, those with a NaN y left out: such a point crosses no
    edge (every comparison with NaN is False). ``inside`` takes it, so that several polygons share one sort."""
    return np.argsort(points[:, 1])[:np.count_nonzero(~np.isnan(points[:, 1]))]


def inside(points: np.ndarray, polygon: np.ndarray, order: np.ndarray = None) -> np.ndarray:
    """bool ``[N]``: which of ``points`` (``[N, 2]`` pixels) lie inside ``polygon`` (``[V, 2]``) by the
    even-odd rule: a ray from the point towards +x crosses the polygon's edges an odd number of times.

    The points go in order of y, in blocks of ``BLOCK_PAIRS // V``, each against the edges that reach its
    band of rows (``inside_band``): the float64 arithmetic of all ``[N, V]`` pairs at once, so the same
    answers, with temporaries that do not grow with N. ``order``: ``y_order(points)``, when already known."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    start, end = polygon, np.roll(polygon, -1, axis=0)
    low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    result = np.zeros(len(points), dtype=bool)
    order = y_order(points) if order is None else order
    step = max(1, BLOCK_PAIRS // len(polygon))
    for first in range(0, len(order), step):
        rows = order[first:first + step]
        result[rows] = inside_band(points[rows], start, end, low, high)
    return result


def inside_band(points: np.ndarray, start: np.ndarray, end: np.ndarray, low: np.ndarray,
                high: np.ndarray) -> np.ndarray:
    """bool ``[B]``: ``inside`` for ``points`` (``[B, 2]``, sorted by y) and the edges ``start -> end``
    (``[V, 2]`` each), which span the rows ``low <= y < high`` (``[V]``). An edge outside the band of rows
    of the points cannot be crossed by their rays, so it is left out."""
    x, y = points[:, :1], points[:, 1:]
    near = (high > y[0, 0]) & (low <= y[-1, 0])
    start, end = start[near], end[near]
    spans = (start[:, 1] > y) != (end[:, 1] > y)  # [B, E]: the edge straddles the point's row
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = start[:, 0] + (y - start[:, 1]) * (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
    return (spans & (x < crossing_x)).sum(axis=1) % 2 == 1


def zone_counts(points: np.ndarray, zones: dict) -> dict:
    """Name -> how many of ``points`` (``[N, 2]``) lie in each of ``zones`` (name -> ``[V, 2]``)."""
    if not zones:
        return {}
    order = y_order(points)
    return {name: int(inside(points, polygon, order).sum()) for name, polygon in zones.items()}


def outside_all(points: np.ndarray, exclusions: dict) -> np.ndarray:
    """bool ``[N]``: the points in none of the ``exclusions`` polygons."""
    keep, order = np.ones(len(points), dtype=bool), y_order(points)
    for polygon in exclusions.values():
        keep &= ~inside(points, polygon, order)
    return keep


def count_points(points: np.ndarray, scores: np.ndarray, zones: dict, exclusions: dict) -> tuple:
    """``(points, scores, zone counts)``: the ``points`` (``[N, 2]`` pixels) and their ``scores`` (``[N]``)
    left outside all ``exclusions``, and name -> how many of them each of the ``zones`` holds. Polygons are
    checked ones (``check_polygons``)."""
    if exclusions:
        keep = outside_all(points, exclusions)
        points, scores = points[keep], scores[keep]
    return points, scores, zone_counts(points, zones)


def zones_outside(zones: dict, height: int, width: int) -> list:
    """The names of ``zones`` that lie wholly outside a ``height`` x ``width`` picture (their bounding box
    misses it), which can only count 0."""
    return [name for name, polygon in zones.items()
            if polygon[:, 0].max() < 0 or polygon[:, 1].max() < 0 or polygon[:, 0].min() >= width
            or polygon[:, 1].min() >= height]


def describe(count: int, counts: dict) -> str:
    """``117 (gate: 40, stage: 77)``, or the count alone without zones."""
    if not counts:
        return str(count)
    return f"{count} (" + ", ".join(f"{name}: {value}" for name, value in counts.items()) + ")"

