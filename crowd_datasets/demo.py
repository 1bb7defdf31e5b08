"""Embedded procedural crowd datasets ``Demo_Hazy`` and ``Demo_Rainy``, generated on first use.

A scene is a cluttered street-like background (sky, buildings, ground with perspective
lines, objects) with head-and-shoulders figures drawn in perspective: a figure's size grows
linearly with its distance below the horizon, and figures crowd towards the horizon. Each
scene has a depth map (sky farthest) that drives the haze. The layout on disk follows the
upstream datasets::

    <root>/<Name>/{train_data,test_data}/images/IMG_<n>.jpg   degraded image
    <root>/<Name>/{train_data,test_data}/images/IMG_<n>.txt   one "x y" line per head
    <root>/<Name>/{train_data,test_data}/HR/IMG_<n>.jpg       clean image
    <root>/<Name>/{train_data,test_data}/depth/IMG_<n>.npy    float32 H×W depth

Everything is deterministic by seed: the same call writes byte-identical files.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import time
import uuid
from dataclasses import dataclass

import cv2
import numpy as np

from crowd_datasets.weather import WEATHER_KINDS, random_weather
from util.cache import default_cache_dir

GENERATOR_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
DEMO_WEATHER = {"Demo_Hazy": "haze", "Demo_Rainy": "rain"}
_DEMO_SEEDS = {"Demo_Hazy": 41_000, "Demo_Rainy": 42_000}
_SPLIT_SEED_OFFSETS = {"train_data": 1, "test_data": 2}
# A temporary folder this old cannot belong to a running generation (which takes seconds).
_STALE_TEMP_SECONDS = 3600

# cv2 drawing takes integer coordinates; a fixed-point shift keeps sub-pixel positions.
_SHIFT = 4
_SCALE = 1 << _SHIFT

_SKIN = np.array([[0.96, 0.80, 0.69], [0.89, 0.69, 0.56], [0.78, 0.57, 0.42],
                  [0.62, 0.43, 0.30], [0.45, 0.30, 0.20], [0.33, 0.22, 0.15]], np.float32)
_HAIR = np.array([[0.06, 0.05, 0.05], [0.20, 0.13, 0.08], [0.40, 0.26, 0.14],
                  [0.80, 0.66, 0.40], [0.60, 0.60, 0.60], [0.12, 0.10, 0.09]], np.float32)


@dataclass
class Scene:
    """One procedural scene.

    Attributes:
        image: uint8 ``H×W×3`` RGB, the clean image.
        depth: float32 ``H×W`` relative depth, larger = farther; sky is 1, ground ≤ 0.95.
        points: float32 ``[N, 2]`` head centres ``(x, y)`` in pixels, 0-based, inside the image.
    """

    image: np.ndarray
    depth: np.ndarray
    points: np.ndarray


def _fixed(value: float) -> int:
    return int(round(value * _SCALE))


def _colour(rgb: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(c) * 255.0 for c in np.clip(rgb, 0.0, 1.0))


def _ground_depth(y: np.ndarray | float, horizon: float, height: int) -> np.ndarray:
    """Depth of the ground plane seen at image row ``y``: inversely proportional to the row's
    distance below the horizon, 0.12 at the bottom row, capped at 0.95 near the horizon."""
    below = np.maximum(np.asarray(y, np.float32) - horizon, 1e-3)
    return np.minimum(0.12 * (height - 1 - horizon) / below, 0.95).astype(np.float32)


def _draw_background(rng: np.random.Generator, width: int, height: int,
                     horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky, ground, buildings, ground objects and texture below/above row ``horizon``.

    Returns the uint8 ``H×W×3`` RGB image and its float32 ``H×W`` depth map."""
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    sky_top = rng.uniform([0.25, 0.40, 0.65], [0.55, 0.65, 0.95])
    sky_low = np.clip(sky_top + rng.uniform(0.15, 0.35), 0.0, 1.0)
    sky_t = np.clip(rows / max(horizon, 1.0), 0.0, 1.0)
    ground_far = rng.uniform([0.35, 0.33, 0.30], [0.60, 0.58, 0.52])
    ground_near = np.clip(ground_far * rng.uniform(0.6, 0.9), 0.0, 1.0)
    ground_t = np.clip((rows - horizon) / max(height - horizon, 1.0), 0.0, 1.0)
    sky = sky_top + (sky_low - sky_top) * sky_t
    ground = ground_far + (ground_near - ground_far) * ground_t
    image = np.where(rows < horizon, sky, ground) * np.ones((1, width, 1))

    # Mostly brightness variation with a little colour, like uneven lighting and dirt.
    blotches = 0.3 * rng.normal(0.0, 1.0, (height // 16 + 2, width // 16 + 2, 3))
    blotches += rng.normal(0.0, 1.0, (height // 16 + 2, width // 16 + 2, 1))
    low_freq = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    image = image + 0.035 * low_freq + rng.normal(0.0, 0.012, image.shape)
    image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    depth = np.where(rows[..., 0] < horizon, np.float32(1.0),
                     _ground_depth(rows[..., 0], horizon, height)) * np.ones((1, width), np.float32)
    depth = depth.astype(np.float32)

    vanish_x = rng.uniform(0.2, 0.8) * width
    for _ in range(int(rng.integers(4, 10))):
        bottom_x = rng.uniform(-width, 2 * width)
        shade = _colour(ground_far * rng.uniform(0.7, 1.2))
        cv2.line(image, (_fixed(vanish_x), _fixed(horizon)), (_fixed(bottom_x), _fixed(height)),
                 shade, 1, cv2.LINE_AA, _SHIFT)

    for _ in range(int(rng.integers(3, 10))):
        left = rng.uniform(-0.1, 0.95) * width
        right = left + rng.uniform(0.08, 0.3) * width
        top = max(horizon - rng.uniform(0.05, 0.35) * height, 0.0)
        base = horizon + rng.uniform(0.0, 0.03) * height
        wall = rng.uniform(0.25, 0.85) * rng.uniform(0.85, 1.15, 3)
        cv2.rectangle(image, (_fixed(left), _fixed(top)), (_fixed(right), _fixed(base)), _colour(wall), -1,
                      cv2.LINE_AA, _SHIFT)
        cv2.rectangle(depth, (int(left), int(top)), (int(right), int(base)), float(rng.uniform(0.85, 0.95)), -1)
        step = rng.uniform(3.0, 7.0) * height / 192.0
        window = np.clip(wall * rng.uniform(0.4, 1.4) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < 0.7:
            x0, x1 = max(int(left), 0), min(int(right), width)
            y0, y1 = max(int(top), 0), min(int(base - step), height)
            offset_y = np.arange(y0, y1, dtype=np.float32)[:, None] - top
            offset_x = np.arange(x0, x1, dtype=np.float32)[None, :] - left
            windows = (offset_y % step > step / 2) & (offset_x % step > step / 2) & (offset_x < right - left - 1)
            image[y0:y1, x0:x1][windows] = window

    for _ in range(int(rng.integers(2, 8))):
        y = rng.uniform(horizon + 2.0, height + 10.0)
        size = max(1.0, 0.06 * (y - horizon)) * rng.uniform(1.0, 2.5)
        x = rng.uniform(0.0, width)
        colour = _colour(rng.uniform(0.05, 0.95, 3))
        axes = (_fixed(size * rng.uniform(1.0, 2.5)), _fixed(size * rng.uniform(0.4, 1.0)))
        cv2.ellipse(image, (_fixed(x), _fixed(y)), axes, 0.0, 0.0, 360.0, colour, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(depth, (_fixed(x), _fixed(y)), axes, 0.0, 0.0, 360.0,
                    float(_ground_depth(y, horizon, height)), -1, cv2.LINE_8, _SHIFT)
    return image, depth


def _sample_heads(rng: np.random.Generator, count: int, width: int, height: int, horizon: float) -> np.ndarray:
    """``count`` head centres ``(x, y)``, float32 ``[count, 2]``, denser towards the horizon.

    The depth below the horizon ``u = (y − horizon) / (H − 1 − horizon)`` is log-uniform in
    ``[0.06, 1]`` (density ∝ 1/u); about half of the people stand in a few Gaussian groups.
    """
    u = np.exp(rng.uniform(np.log(0.06), 0.0, count))
    x = rng.uniform(0.0, width - 1.0, count)
    grouped = rng.random(count) < 0.5
    num_groups = int(rng.integers(1, 5))
    group = rng.integers(0, num_groups, count)
    centre_x = rng.uniform(0.1, 0.9, num_groups) * width
    centre_u = np.exp(rng.uniform(np.log(0.1), np.log(0.8), num_groups))
    spread = rng.uniform(0.04, 0.12, num_groups)
    x = np.where(grouped, centre_x[group] + rng.normal(0.0, 1.0, count) * spread[group] * width, x)
    u = np.where(grouped, centre_u[group] * np.exp(rng.normal(0.0, 0.35, count)), u)
    x = np.clip(x, 0.0, width - 1.0)
    y = np.clip(horizon + np.clip(u, 0.03, 1.0) * (height - 1.0 - horizon), 0.0, height - 1.0)
    return np.stack([x, y], axis=1).astype(np.float32)


def _draw_people(rng: np.random.Generator, image: np.ndarray, depth: np.ndarray, points: np.ndarray,
                 horizon: float, head_scale: float) -> None:
    """Draw one head-and-shoulders figure per point into ``image`` and ``depth`` (in place),
    far ones first so that nearer figures occlude them."""
    height = image.shape[0]
    order = np.argsort(points[:, 1], kind="stable")
    radii = 0.8 + head_scale * (points[:, 1] - horizon)
    skins = _SKIN[rng.integers(0, len(_SKIN), len(points))] * rng.uniform(0.9, 1.1, (len(points), 1))
    hairs = _HAIR[rng.integers(0, len(_HAIR), len(points))]
    clothes = rng.uniform(0.05, 0.95, (len(points), 3)) * rng.uniform(0.4, 1.0, (len(points), 1))
    from_behind = rng.random(len(points)) < 0.25
    widths = rng.uniform(0.8, 1.0, len(points))
    for index in order:
        x, y = points[index]
        r = float(radii[index])
        body_centre = (_fixed(x), _fixed(y + 3.1 * r))
        body_axes = (_fixed(2.1 * r), _fixed(2.2 * r))
        cv2.ellipse(image, body_centre, body_axes, 0.0, 0.0, 360.0, _colour(clothes[index]), -1,
                    cv2.LINE_AA, _SHIFT)
        body_depth = float(_ground_depth(y + 3.1 * r, horizon, height))
        cv2.ellipse(depth, body_centre, body_axes, 0.0, 0.0, 360.0, body_depth, -1, cv2.LINE_8, _SHIFT)
        head_axes = (_fixed(0.85 * r * widths[index]), _fixed(r))
        head_colour = hairs[index] if from_behind[index] else skins[index]
        cv2.ellipse(image, (_fixed(x), _fixed(y)), head_axes, 0.0, 0.0, 360.0, _colour(head_colour), -1,
                    cv2.LINE_AA, _SHIFT)
        cv2.ellipse(depth, (_fixed(x), _fixed(y)), head_axes, 0.0, 0.0, 360.0, body_depth, -1, cv2.LINE_8,
                    _SHIFT)
        if not from_behind[index]:
            hair_axes = (_fixed(0.9 * r * widths[index]), _fixed(0.75 * r))
            cv2.ellipse(image, (_fixed(x), _fixed(y - 0.3 * r)), hair_axes, 0.0, 180.0, 360.0,
                        _colour(hairs[index]), -1, cv2.LINE_AA, _SHIFT)


def make_scene(rng: np.random.Generator, size: tuple[int, int] = (256, 192)) -> Scene:
    """Draw one random crowd scene of ``size = (W, H)`` pixels with 3 to 300 people
    (count log-uniform). Returns a ``Scene`` (uint8 RGB image, float32 depth, float32 points)."""
    width, height = size
    if width < 16 or height < 16:
        raise ValueError(f"size: expected (W, H) of at least 16×16 pixels, got {size}")
    horizon = rng.uniform(0.22, 0.38) * height
    image, depth = _draw_background(rng, width, height, horizon)
    count = int(round(np.exp(rng.uniform(np.log(3.0), np.log(300.0)))))
    points = _sample_heads(rng, count, width, height, horizon)
    head_scale = rng.uniform(0.045, 0.075)
    _draw_people(rng, image, depth, points, horizon, head_scale)
    return Scene(image=image, depth=depth, points=points)


def make_degraded_scene(seed: np.random.SeedSequence, weather: str,
                        size: tuple[int, int] = (256, 192)) -> tuple[Scene, np.ndarray]:
    """One scene of ``size = (W, H)`` and its copy in ``weather`` ("haze" or "rain"), both drawn from
    ``seed``: ``(Scene, degraded uint8 H×W×3 RGB)``."""
    scene_rng, weather_rng = (np.random.default_rng(s) for s in seed.spawn(2))
    scene = make_scene(scene_rng, size)
    degraded = random_weather(scene.image.astype(np.float32) / 255.0, scene.depth, weather, weather_rng)
    return scene, (degraded * 255.0 + 0.5).astype(np.uint8)


def _write_jpeg(path: pathlib.Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write JPEG image {path}")


def generate_split(out_dir: str | os.PathLike, num_images: int, weather: str, seed: int,
                   size: tuple[int, int] = (256, 192)) -> None:
    """Write ``num_images`` scenes ``IMG_1 … IMG_<num_images>`` under ``out_dir``.

    Per image ``n``: ``images/IMG_n.jpg`` (degraded, JPEG quality 95), ``images/IMG_n.txt``
    (``x y`` head centres in pixels, 2 decimals, one line per head), ``HR/IMG_n.jpg`` (clean)
    and ``depth/IMG_n.npy`` (float32 ``H×W``). ``weather`` is ``"haze"`` or ``"rain"``;
    ``size`` is ``(W, H)``. Image ``n`` depends only on ``seed`` and ``n``.
    """
    if weather not in WEATHER_KINDS:
        raise ValueError(f"weather {weather!r} is unknown; expected one of {', '.join(WEATHER_KINDS)}")
    out_dir = pathlib.Path(out_dir)
    folders = {name: out_dir / name for name in ("images", "HR", "depth")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    image_seeds = np.random.SeedSequence(seed).spawn(num_images)
    for n, image_seed in enumerate(image_seeds, start=1):
        scene, degraded = make_degraded_scene(image_seed, weather, size)
        _write_jpeg(folders["images"] / f"IMG_{n}.jpg", degraded)
        _write_jpeg(folders["HR"] / f"IMG_{n}.jpg", scene.image)
        lines = "".join(f"{x:.2f} {y:.2f}\n" for x, y in scene.points)
        (folders["images"] / f"IMG_{n}.txt").write_text(lines)
        np.save(folders["depth"] / f"IMG_{n}.npy", scene.depth)


def _marker_text(num_train: int, num_test: int, size: tuple[int, int]) -> str:
    return f"generator_version={GENERATOR_VERSION} train={num_train} test={num_test} size={size[0]}x{size[1]}\n"


def _is_complete(folder: pathlib.Path, marker: str) -> bool:
    try:
        return (folder / COMPLETE_MARKER).read_text() == marker
    except OSError:
        return False


def _remove_stale_temporaries(cache_dir: pathlib.Path, name: str) -> None:
    """Delete temporary folders left behind by crashed generations of ``name``."""
    now = time.time()
    for leftover in cache_dir.glob(f".{name}.*"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def ensure_demo(cache_dir: str | os.PathLike | None, name: str, *, num_train: int = 64, num_test: int = 24,
                size: tuple[int, int] = (256, 192)) -> pathlib.Path:
    """Return ``cache_dir/name``, generating the demo dataset there first if it is not complete.

    ``name`` is ``"Demo_Hazy"`` (haze) or ``"Demo_Rainy"`` (rain). The dataset has
    ``train_data`` (``num_train`` images) and ``test_data`` (``num_test`` images) of
    ``size = (W, H)`` pixels, each laid out as ``generate_split`` writes. ``cache_dir=None``
    means ``default_cache_dir()``.

    Generation happens in a temporary sibling folder that is renamed into place only when
    finished, with a ``COMPLETE`` marker naming the generator version and settings. A crash
    midway therefore leaves no folder that looks complete, and of two processes generating
    at once the one that renames second discards its own copy.
    """
    if name not in DEMO_WEATHER:
        raise ValueError(f"demo dataset {name!r} is unknown; expected one of {', '.join(DEMO_WEATHER)}")
    cache_dir = default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    target = cache_dir / name
    marker = _marker_text(num_train, num_test, size)
    if _is_complete(target, marker):
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(cache_dir, name)
    print(f"Generating demo dataset {name} into {target} (first use) ...", flush=True)
    temporary = cache_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        base_seed = _DEMO_SEEDS[name]
        for split, num_images in (("train_data", num_train), ("test_data", num_test)):
            generate_split(temporary / split, num_images, DEMO_WEATHER[name],
                           base_seed + _SPLIT_SEED_OFFSETS[split], size)
        (temporary / COMPLETE_MARKER).write_text(marker)
        if target.exists() and not _is_complete(target, marker):
            # An incomplete or outdated folder is moved aside, since rename cannot replace a non-empty one.
            outdated = cache_dir / f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(target, outdated)
            except FileNotFoundError:
                pass
            shutil.rmtree(outdated, ignore_errors=True)
        try:
            os.replace(temporary, target)
        except OSError as error:
            if not _is_complete(target, marker):
                raise OSError(f"could not move the generated demo dataset into {target}: {error}") from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target
