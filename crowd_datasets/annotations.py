"""Readers for head-point annotation files.

Every reader returns the points of one image as a float32 array of shape ``[N, 2]`` holding
``(x, y)`` in 0-based pixel coordinates (N may be 0). Two formats are understood:

* ``.txt``: one point per line, ``x y`` separated by whitespace or commas, integers or floats.
  Further columns (JHU-Crowd writes ``x y w h o b``) are ignored and blank lines are skipped.
* ``.mat``: ShanghaiTech's ``GT_IMG_n.mat``, a 1x1 cell ``image_info`` holding a 1x1 struct
  whose first field (``location``) is the ``N x 2`` array of ``(x, y)``.
"""

import re
from pathlib import Path

import numpy as np
import scipy.io

SUPPORTED_SUFFIXES = (".txt", ".mat")

_FIELD_SEPARATOR = re.compile(r"[\s,]+")


def read_points(path, allow_nonfinite: bool = False) -> np.ndarray:
    """Read the head points of one image.

    Args:
        path: annotation file (``str`` or ``Path``), ``.txt`` or ``.mat``.
        allow_nonfinite: keep ``nan``/``inf`` coordinates of ``.txt`` files (for a converter that
            reports them) instead of refusing the file.

    Returns:
        float32 array ``[N, 2]`` of ``(x, y)`` pixel coordinates, 0-based; ``(0, 2)`` when empty.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported suffix, a malformed text line, or a ``.mat`` file without the
            ShanghaiTech ``image_info`` structure.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported annotation format {suffix or '(no suffix)'!r}; "
            f"supported suffixes are {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected an annotation file ({suffix}) here, found none")
    if suffix == ".txt":
        return _read_text_points(path, allow_nonfinite)
    return _read_mat_points(path)


def points_outside(points, width: int, height: int) -> int:
    """Count points that do not lie on the image.

    Args:
        points: array-like ``[N, 2]`` of ``(x, y)`` pixels.
        width, height: image size in pixels; pixel column i covers ``x in [i, i + 1)``.

    Returns:
        number of points with ``x < 0``, ``y < 0``, ``x >= width`` or ``y >= height``.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    return int(np.count_nonzero(outside))


def _read_text_points(path: Path, allow_nonfinite: bool) -> np.ndarray:
    points = []
    # utf-8-sig: annotation files written on Windows sometimes start with a byte-order mark.
    with open(path, encoding="utf-8-sig") as lines:
        for line_number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            fields = _FIELD_SEPARATOR.split(stripped)
            try:
                x, y = float(fields[0]), float(fields[1])
                numeric = True
            except (IndexError, ValueError):
                x = y = float("nan")
                numeric = False
            if not numeric or not (allow_nonfinite or (np.isfinite(x) and np.isfinite(y))):
                raise ValueError(
                    f"{path}, line {line_number}: expected 'x y' as the first two numeric "
                    f"columns, got {stripped!r}"
                )
            points.append((x, y))
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


def _read_mat_points(path: Path) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, TypeError) as error:
        raise ValueError(f"{path}: cannot read as a MATLAB annotation file: {error}") from error
    expected = "expected key 'image_info' holding a 1x1 cell with a struct whose first field is N x 2 (x, y)"
    if "image_info" not in mat:
        raise ValueError(f"{path}: no 'image_info' in this .mat file; {expected}")
    try:
        record = mat["image_info"][0, 0][0, 0]
        names = record.dtype.names or ()
        location = record["location"] if "location" in names else record[0]
        location = np.asarray(location, dtype=np.float64)
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: 'image_info' has an unexpected structure ({error}); {expected}") from error
    if location.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if location.ndim != 2 or location.shape[1] != 2:
        raise ValueError(f"{path}: 'image_info' points have shape {location.shape}; {expected}")
    return location.astype(np.float32)
