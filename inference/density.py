"""Density maps from counted points: each person's point spread by a Gaussian, so that a map sums to the
count and shows where the crowd stands.

Sigma is geometry-adaptive by default, as crowd-counting datasets make their density targets: 0.3 times a
person's mean distance to the 3 nearest others (heads farther apart are larger, so nearer the camera),
within [``MIN_SIGMA``, ``MAX_SIGMA``] pixels; alone, a person gets ``LONE_SIGMA``. Each Gaussian is cut
at 3 sigma and renormalised over the pixels of the picture it covers, so that a person near the border
(or on the padding, where upstream's points may lie) still adds exactly 1.
"""
import numpy as np
from scipy.spatial import cKDTree

NEIGHBOURS = 3
SPREAD = 0.3
MIN_SIGMA, MAX_SIGMA, LONE_SIGMA = 1.0, 40.0, 15.0


def adaptive_sigmas(points: np.ndarray) -> np.ndarray:
    """float64 ``[N]``: each point's sigma in pixels from its nearest neighbours (see the module's docstring)."""
    if len(points) < 2:
        return np.full(len(points), LONE_SIGMA)
    neighbours = min(NEIGHBOURS, len(points) - 1)
    distances, _ = cKDTree(points).query(points, k=neighbours + 1)
    return np.clip(SPREAD * distances[:, 1:].mean(axis=1), MIN_SIGMA, MAX_SIGMA)


def density_map(points, height: int, width: int, sigma: float = None) -> np.ndarray:
    """float32 ``[height, width]`` summing to ``len(points)``: each of ``points`` (``[N, 2]``, ``(x, y)``
    pixels) spread by a Gaussian of ``sigma`` pixels, or of its adaptive sigma when ``sigma`` is None."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    density = np.zeros((height, width), dtype=np.float64)
    sigmas = adaptive_sigmas(points) if sigma is None else np.full(len(points), float(sigma))
    for (x, y), spread in zip(points, sigmas):
        # The pixel the point lies on, moved onto the picture if it lies beyond it.
        column, row = min(max(int(np.floor(x)), 0), width - 1), min(max(int(np.floor(y)), 0), height - 1)
        radius = max(1, int(np.ceil(3 * spread)))
        top, bottom = max(row - radius, 0), min(row + radius + 1, height)
        left, right = max(column - radius, 0), min(column + radius + 1, width)
        ys = np.arange(top, bottom) + 0.5 - min(max(y, 0.0), height)
        xs = np.arange(left, right) + 0.5 - min(max(x, 0.0), width)
        kernel = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * spread ** 2))
        density[top:bottom, left:right] += kernel / kernel.sum()
    return density.astype(np.float32)
