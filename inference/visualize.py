"""The one place that draws pictures of predictions: points and labels on pictures and frames, and the
chart of predicted against true counts of an evaluation."""
import os

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


def plot_counts(records, path, title_prefix=""):
    """Save a PNG scatter of predicted against true counts, with the line y = x and MAE in the title.

    Renders through matplotlib's Agg canvas directly, so no display is needed and the global
    pyplot backend is left untouched.

    Args:
        records: non-empty list of record dicts with ``gt`` and ``pred`` counts.
        path: output PNG path; its parent folder is created if missing.
        title_prefix: text put before ``MAE …`` in the title (e.g. the dataset name).
    """
    # matplotlib takes a second to import: only the scripts that draw a chart pay for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = list(records)
    if not records:
        raise ValueError("plot_counts: no records to plot")
    true_counts = np.array([record["gt"] for record in records], dtype=np.float64)
    pred_counts = np.array([record["pred"] for record in records], dtype=np.float64)
    mae = float(np.abs(pred_counts - true_counts).mean())
    upper = max(true_counts.max(), pred_counts.max(), 1.0) * 1.05

    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, upper], [0, upper], color="gray", linestyle="--", linewidth=1, label="y = x")
    axes.scatter(true_counts, pred_counts, s=12, alpha=0.7, label="images")
    axes.set_xlim(0, upper)
    axes.set_ylim(0, upper)
    axes.set_xlabel("true count")
    axes.set_ylabel("predicted count")
    title = f"MAE {mae:.2f} ({len(records)} images)"
    axes.set_title(f"{title_prefix.rstrip()} {title}" if title_prefix.strip() else title)
    axes.legend(loc="upper left")
    save_figure(figure, path)


ZONE_COLORS = ((0, 200, 255), (255, 200, 0), (120, 255, 120), (255, 120, 255), (255, 255, 255), (255, 140, 0))


def draw_zones(rgb: np.ndarray, zones: dict = None, counts: dict = None, exclusions: dict = None) -> np.ndarray:
    """A copy of ``H x W x 3`` uint8 RGB ``rgb`` with the ``exclusions`` polygons shaded and each of ``zones``
    (name -> ``[V, 2]`` pixels) outlined in its own colour and labelled with its name and count; ``rgb``
    itself when there is nothing to draw (every picture and frame passes here, most without zones)."""
    if not zones and not exclusions:
        return rgb
    canvas = np.ascontiguousarray(rgb).copy()
    if exclusions:
        shade = canvas.copy()
        for polygon in exclusions.values():
            cv2.fillPoly(shade, [np.round(polygon).astype(np.int32)], (40, 40, 40), lineType=cv2.LINE_AA)
        canvas = cv2.addWeighted(shade, 0.6, canvas, 0.4, 0)
    thickness = max(1, int(round(max(canvas.shape[:2]) * 0.002)))
    scale = max(0.4, canvas.shape[0] / 1400)
    for index, (name, polygon) in enumerate((zones or {}).items()):
        color = ZONE_COLORS[index % len(ZONE_COLORS)]
        vertices = np.round(polygon).astype(np.int32)
        cv2.polylines(canvas, [vertices], True, color, thickness, lineType=cv2.LINE_AA)
        text = f"{name}: {counts[name]}" if counts and name in counts else name
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x = int(np.clip(vertices[:, 0].min(), 0, max(canvas.shape[1] - width, 0)))
        y = int(np.clip(vertices[:, 1].min() - baseline - 2, height + 2, canvas.shape[0] - baseline - 1))
        # On a dark box, so that the label reads over a crowd's points.
        cv2.rectangle(canvas, (x - 1, y - height - 2), (x + width + 1, y + baseline), (0, 0, 0), thickness=-1)
        cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, lineType=cv2.LINE_AA)
    return canvas


def density_colours(density: np.ndarray) -> tuple:
    """How a density map (float ``[H, W]``) is shown: ``(heat, weight, peak)``, the ``H x W x 3`` uint8 RGB
    colour of each pixel on the jet scale from 0 to ``peak`` (the 99.5th percentile of the occupied pixels:
    a few piled-up pixels, such as people beyond the border counted at its edge, would otherwise set the
    scale and leave the crowd colourless) and its opacity ``weight`` (float ``[H, W]`` in [0, 0.7], 0 where
    nobody is)."""
    occupied = density[density > 0]
    peak = float(np.percentile(occupied, 99.5)) if occupied.size else 0.0
    level = np.clip(density / peak, 0, 1) if peak > 0 else np.zeros_like(density)
    heat = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return heat, 0.7 * np.sqrt(level), peak


def density_layer(density: np.ndarray) -> tuple:
    """``(H x W x 4 uint8 RGBA, peak)``: the heatmap of ``draw_density`` as a layer to lay over the picture
    (the web page's), transparent where nobody is."""
    heat, weight, peak = density_colours(density)
    return np.dstack([heat, np.round(weight * 255).astype(np.uint8)]), peak


def draw_density(rgb: np.ndarray, density: np.ndarray, label: str = "people per pixel") -> np.ndarray:
    """``rgb`` (``H x W x 3`` uint8) with ``density`` (float ``[H, W]``) over it as a heatmap, transparent where
    nobody is (``density_colours``), and a colour scale at the right; higher values show as the top colour."""
    heat, weight, peak = density_colours(density)
    weight = weight[:, :, None]
    canvas = np.round(np.ascontiguousarray(rgb) * (1 - weight) + heat * weight).astype(np.uint8)
    height, width = canvas.shape[:2]
    bar_width, margin = max(8, width // 60), max(4, width // 100)
    bar_top, bar_bottom = margin + 14, height - margin
    if bar_bottom - bar_top > 10:
        ramp = np.linspace(255, 0, bar_bottom - bar_top).astype(np.uint8)[:, None].repeat(bar_width, axis=1)
        bar = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, :, ::-1]
        canvas[bar_top:bar_bottom, width - margin - bar_width:width - margin] = bar
        scale = max(0.35, height / 1600)
        text = f">= {peak:.3g} {label}"
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = max(0, width - margin - text_width)
        cv2.rectangle(canvas, (x - 2, 0), (width, bar_top - 2), (0, 0, 0), thickness=-1)
        cv2.putText(canvas, text, (x, bar_top - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    lineType=cv2.LINE_AA)
    return canvas


def plot_counts_over_time(times: list, counts: list, zone_counts: dict, path, title: str = "") -> None:
    """Save a PNG line chart of ``counts`` (and each zone's, name -> list) against ``times`` (seconds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(times, counts, label="count", linewidth=2)
    for name, values in zone_counts.items():
        axes.plot(times, values, label=name, linewidth=1)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("people")
    axes.set_ylim(bottom=0)
    if title:
        axes.set_title(title)
    axes.legend(loc="upper left")
    save_figure(figure, path)


def save_figure(figure, path) -> None:
    """Write a matplotlib ``figure`` as a PNG at ``path``, its folder made if missing."""
    figure.tight_layout()
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, format="png")
