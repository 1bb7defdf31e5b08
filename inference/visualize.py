"""The one place that draws pictures of predictions: points and labels on pictures and frames."""
import cv2
import numpy as np


def draw_points(rgb: np.ndarray, points, color=(255, 0, 0), radius: int = None) -> np.ndarray:
    """Return a copy of ``H x W x 3`` uint8 RGB ``rgb`` with a filled dot at each ``(x, y)`` of ``points``
    ``[N, 2]`` (pixels); ``radius`` defaults to about 0.4 % of the longer side (at least 2 px)."""
    canvas = np.ascontiguousarray(rgb).copy()
    if radius is None:
        radius = max(2, int(round(max(canvas.shape[:2]) * 0.004)))
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, color, thickness=-1, lineType=cv2.LINE_AA)
    return canvas


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    """Return a copy of ``H x W x 3`` uint8 RGB ``rgb`` with ``text`` in white on a dark box at the top
    left, sized to about 4 % of the picture's height (at least legible on small frames)."""
    canvas = np.ascontiguousarray(rgb).copy()
    scale = max(0.4, canvas.shape[0] / 900)
    thickness = max(1, int(round(scale * 2)))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(2, height // 3)
    cv2.rectangle(canvas, (0, 0), (width + 2 * margin, height + baseline + 2 * margin), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, text, (margin, margin + height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, lineType=cv2.LINE_AA)
    return canvas
