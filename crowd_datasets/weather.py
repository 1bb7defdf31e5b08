"""Synthetic weather degradations for clean RGB images: haze and rain.

All functions are pure: they read their inputs, never modify them, and return a new
``float32`` array of shape ``H×W×3`` (RGB) with values in ``[0, 1]``. Randomness comes
only from the ``numpy.random.Generator`` passed in, so a seeded generator gives the same
output every time.

Shared by the procedural demo datasets (``crowd_datasets.demo``) and the tool that builds
weather datasets from clean photographs (``tools/synthesize_weather.py``).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

WEATHER_KINDS = ("haze", "rain")


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """Return ``image`` as float32 ``H×W×3`` or raise naming the argument and what was expected."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an H×W×3 RGB image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name}: expected a float image with values in [0, 1], got dtype {image.dtype}")
    return image.astype(np.float32, copy=False)


def _check_depth(depth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return ``depth`` as float32 ``H×W`` or raise if it does not match the image or is invalid."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != shape:
        raise ValueError(f"depth: expected shape {shape} (the image's H×W), got {depth.shape}")
    if not np.all(np.isfinite(depth)) or depth.min() < 0:
        raise ValueError("depth: expected finite, non-negative values")
    return depth


def _airlight_rgb(airlight: float | tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Airlight as a float32 array of shape ``(3,)``; a scalar is used for all three channels."""
    values = np.asarray(airlight, dtype=np.float32)
    if values.ndim == 0:
        values = np.repeat(values, 3)
    if values.shape != (3,) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"airlight: expected a scalar or an RGB triple in [0, 1], got {airlight!r}")
    return values


def add_haze(
    clean: np.ndarray,
    depth: np.ndarray,
    beta: float,
    airlight: float | tuple[float, float, float] | np.ndarray = 0.85,
) -> np.ndarray:
    """Apply the atmospheric scattering model ``I = J·t + A·(1 − t)`` with ``t = exp(−β·depth)``.

    Args:
        clean: ``J``, float ``H×W×3`` RGB in ``[0, 1]``.
        depth: float ``H×W`` scene depth in relative units (larger = farther), non-negative.
        beta: scattering coefficient ``β ≥ 0`` per depth unit; 0 returns the clean image.
        airlight: ``A``, global atmospheric light, a scalar or an RGB triple in ``[0, 1]``.

    Returns:
        The hazy image ``I``, float32 ``H×W×3`` in ``[0, 1]``.
    """
    clean = _check_image(clean, "clean")
    depth = _check_depth(depth, clean.shape[:2])
    if not beta >= 0:
        raise ValueError(f"beta: expected a non-negative scattering coefficient, got {beta!r}")
    transmission = np.exp(-np.float32(beta) * depth)[..., None]
    hazy = clean * transmission + _airlight_rgb(airlight) * (1.0 - transmission)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32, copy=False)


def _streak_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Float32 square kernel holding one anti-aliased line of ``length`` px through its centre.

    ``angle_deg`` is measured from the vertical, positive = the lower end leans right. The
    line is brightest at its lower end and fades towards the upper one, like a falling drop.
    """
    size = int(math.ceil(length)) | 1
    centre = size // 2
    dx = math.sin(math.radians(angle_deg)) * (length - 1) / 2
    dy = math.cos(math.radians(angle_deg)) * (length - 1) / 2
    shift = 4
    scale = 1 << shift
    canvas = np.zeros((size, size), np.uint8)
    cv2.line(
        canvas,
        (round((centre - dx) * scale), round((centre - dy) * scale)),
        (round((centre + dx) * scale), round((centre + dy) * scale)),
        255, 1, cv2.LINE_AA, shift,
    )
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - centre
    along = (xs * dx + ys * dy) / max(dx * dx + dy * dy, 1e-6)
    fade = np.clip(0.6 + 0.4 * along, 0.2, 1.0)
    return canvas.astype(np.float32) / 255.0 * fade


def add_rain(
    clean: np.ndarray,
    rng: np.random.Generator,
    depth: np.ndarray | None = None,
    *,
    angle_deg: float = 10.0,
    num_layers: int = 3,
    density: float = 0.004,
    streak_length: float = 16.0,
    intensity: float = 0.6,
    veil_beta: float = 0.3,
    airlight: float | tuple[float, float, float] | np.ndarray = 0.85,
    streak_width: float = 1.0,
) -> np.ndarray:
    """Add a light haze veil and several layers of oriented rain streaks.

    Each layer is sparse random noise smeared along a line kernel. Layer ``i`` of ``n``
    stands at relative nearness ``s = (i + 1) / n``: nearer layers have longer, wider,
    brighter and sparser streaks. Every layer jitters the angle by a few degrees. Streaks
    are screen-blended over the veiled image, so they only brighten it.

    Args:
        clean: float ``H×W×3`` RGB in ``[0, 1]``.
        rng: source of all randomness.
        depth: float ``H×W`` relative depth for the veil; ``None`` = uniform depth 1.
        angle_deg: mean streak angle from the vertical in degrees.
        num_layers: number of streak layers, ≥ 1.
        density: streak seeds per pixel in the nearest layer, in ``(0, 1)``.
        streak_length: streak length in pixels in the nearest layer.
        intensity: peak streak brightness in ``[0, 1]`` in the nearest layer.
        veil_beta: scattering coefficient of the veil per depth unit (see ``add_haze``).
        airlight: veil colour, a scalar or an RGB triple in ``[0, 1]``.
        streak_width: factor on every layer's streak width (its blur), > 0.

    Returns:
        The rainy image, float32 ``H×W×3`` in ``[0, 1]``.
    """
    clean = _check_image(clean, "clean")
    height, width = clean.shape[:2]
    if num_layers < 1:
        raise ValueError(f"num_layers: expected at least 1, got {num_layers}")
    if not 0 < density < 1:
        raise ValueError(f"density: expected a fraction of pixels in (0, 1), got {density!r}")
    if not streak_length >= 1:
        raise ValueError(f"streak_length: expected at least 1 pixel, got {streak_length!r}")
    if not 0 <= intensity <= 1:
        raise ValueError(f"intensity: expected a value in [0, 1], got {intensity!r}")
    if not streak_width > 0:
        raise ValueError(f"streak_width: expected a positive factor, got {streak_width!r}")
    if depth is None:
        depth = np.ones((height, width), np.float32)
    rainy = add_haze(clean, depth, veil_beta, airlight)

    streaks = np.zeros((height, width), np.float32)
    for layer in range(num_layers):
        nearness = (layer + 1) / num_layers
        seeds = rng.random((height, width), dtype=np.float32)
        layer_density = min(density / nearness, 0.5)
        noise = np.where(seeds < layer_density, rng.uniform(0.5, 1.0, (height, width)), 0.0).astype(np.float32)
        length = max(2.0, streak_length * nearness * rng.uniform(0.85, 1.15))
        kernel = _streak_kernel(length, angle_deg + rng.normal(0.0, 2.5))
        layer_streaks = cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT)
        width_sigma = (0.3 + 0.7 * nearness) * streak_width
        layer_streaks = cv2.GaussianBlur(layer_streaks, (0, 0), width_sigma)
        # Blurring spreads a 1-px line's energy over ~2.5·sigma px; undo that loss of peak brightness.
        layer_streaks *= min(2.5 * width_sigma, 3.0) * intensity * (0.5 + 0.5 * nearness)
        streaks = 1.0 - (1.0 - streaks) * (1.0 - np.clip(layer_streaks, 0.0, 1.0))

    rainy = 1.0 - (1.0 - rainy) * (1.0 - streaks[..., None])
    return np.clip(rainy, 0.0, 1.0).astype(np.float32, copy=False)


# Strength ranges per severity. Haze: the scattering coefficient beta per normalised depth unit (the
# transmission at the farthest point is exp(-beta)) and the airlight; RESIDE (Li et al., TIP 2019)
# draws beta in 0.6-1.8 and A in 0.7-1.0 on metric-scale indoor depth. Rain: streak seeds per streak
# area, streak length as a fraction of the image height, peak brightness and the veil's beta, chosen
# by eye to go from drizzle to a downpour (heavier rain: longer, wider, more slanted streaks, a thicker
# veil). "mixed" is the demo datasets' spread over all of them.
SEVERITIES = {
    "haze": {"light": {"beta": (0.4, 0.9), "airlight": (0.75, 0.95)},
             "moderate": {"beta": (0.9, 1.8), "airlight": (0.70, 0.95)},
             "heavy": {"beta": (1.8, 3.0), "airlight": (0.70, 0.90)},
             "mixed": {"beta": (1.0, 2.6), "airlight": (0.70, 0.95)}},
    "rain": {"light": {"density": (0.02, 0.05), "length": (0.03, 0.07), "intensity": (0.3, 0.5),
                       "veil": (0.05, 0.2), "angle": (-15.0, 15.0), "width": 0.7},
             "moderate": {"density": (0.04, 0.08), "length": (0.05, 0.10), "intensity": (0.45, 0.7),
                          "veil": (0.15, 0.4), "angle": (-25.0, 25.0), "width": 1.0},
             "heavy": {"density": (0.08, 0.14), "length": (0.08, 0.14), "intensity": (0.6, 0.85),
                       "veil": (0.4, 0.8), "angle": (-35.0, 35.0), "width": 1.4},
             "mixed": {"density": (0.04, 0.10), "length": (0.05, 0.12), "intensity": (0.45, 0.8),
                       "veil": (0.15, 0.5), "angle": (-25.0, 25.0), "width": 1.0}},
}


def draw_weather(kind: str, rng: np.random.Generator, height: int, severity: str = "mixed") -> dict:
    """Random parameters of one degradation of ``kind`` at ``severity`` (see ``SEVERITIES``) for an
    image ``height`` pixels tall: haze ``beta``, ``airlight`` (RGB); rain ``angle_deg``, ``num_layers``,
    ``density`` (seeds per pixel), ``streak_length`` (pixels), ``intensity``, ``veil_beta``, ``airlight``."""
    if kind not in WEATHER_KINDS:
        raise ValueError(f"weather kind {kind!r} is unknown; expected one of {', '.join(WEATHER_KINDS)}")
    if severity not in SEVERITIES[kind]:
        raise ValueError(f"severity {severity!r} is unknown; expected one of {', '.join(SEVERITIES[kind])}")
    ranges = SEVERITIES[kind][severity]
    if kind == "haze":
        airlight = np.clip(rng.uniform(*ranges["airlight"]) + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0)
        return {"beta": float(rng.uniform(*ranges["beta"])), "airlight": [float(value) for value in airlight]}
    streak_length = max(4.0, height * rng.uniform(*ranges["length"]))
    # Seeds are set per unit of streak area so the rain looks equally dense at any resolution.
    density = rng.uniform(*ranges["density"]) / streak_length
    return {"angle_deg": float(rng.uniform(*ranges["angle"])), "num_layers": int(rng.integers(2, 5)),
            "density": float(density), "streak_length": float(streak_length),
            "intensity": float(rng.uniform(*ranges["intensity"])), "veil_beta": float(rng.uniform(*ranges["veil"])),
            "airlight": float(rng.uniform(0.75, 0.9)), "streak_width": ranges["width"]}


def apply_weather(clean: np.ndarray, depth, kind: str, parameters: dict, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``clean`` (float ``H×W×3`` RGB in ``[0, 1]``) with ``draw_weather``'s ``parameters``.
    ``depth`` (float ``H×W``, larger = farther) is divided by its maximum, so the strengths hold for
    depth in any unit; haze needs it, rain uses it for its veil (``None``: a uniform veil). ``rng``
    places the rain streaks. Returns float32 ``H×W×3`` in ``[0, 1]``."""
    clean = _check_image(clean, "clean")
    if depth is not None:
        depth = _check_depth(depth, clean.shape[:2])
        if depth.max() <= 0:
            raise ValueError("depth: expected a positive maximum (all values are zero)")
        depth = depth / depth.max()
    elif kind == "haze":
        raise ValueError("depth: haze needs a depth map, got None")
    if kind == "haze":
        return add_haze(clean, depth, parameters["beta"], np.asarray(parameters["airlight"]))
    return add_rain(clean, rng, depth, **parameters)


def random_weather(
    clean: np.ndarray,
    depth: np.ndarray | None,
    kind: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Degrade ``clean`` with haze or rain of randomised ("mixed") strength: ``draw_weather`` then
    ``apply_weather`` with the same ``rng``. Haze: ``β`` in ``[1.0, 2.6]`` per normalised depth unit
    (transmission at the farthest point 0.07–0.37), greyish airlight 0.70–0.95 with a slight tint.
    Rain: 2–4 layers at −25…25° from the vertical, streaks 5–12 % of the image height long, a veil
    with ``β`` in ``[0.15, 0.5]``.
    """
    clean = _check_image(clean, "clean")
    parameters = draw_weather(kind, rng, clean.shape[0])
    return apply_weather(clean, depth, kind, parameters, rng)
