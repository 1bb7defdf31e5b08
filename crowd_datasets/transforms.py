"""Joint training transforms: pixels and head points move together.

Tensors:
    image   float32 ``[3, H, W]`` in ``[0, 1]`` (the degraded, e.g. hazy, image); ``TrainTransform``
            also takes uint8 pixels and converts (value / 255) only the pixels its crops read
    points  float32 ``[N, 2]`` of ``(x, y)`` in pixels (N may be 0)
    clean   float32 ``[3, H, W]`` haze-free image of the same scene, or ``None``; it always gets
            exactly the same geometric transform as ``image``.

Coordinate convention: pixel column ``i`` covers ``x in [i, i + 1)`` and pixel row ``j`` covers
``y in [j, j + 1)``; a point lies on pixel ``(floor(y), floor(x))``. Under this convention

* resizing ``W -> W'`` (bilinear, ``align_corners=False``) maps ``x -> x * W' / W`` with the
  actual ratio of the integer sizes, per axis;
* a horizontal flip of a width-``W`` image maps ``x -> W - x``;
* cropping at origin ``(x0, y0)`` maps ``x -> x - x0``, ``y -> y - y0``.

A point exactly on a pixel's left edge (integer x) lands on the right edge of the mirrored pixel
after a flip, which by the half-open rule belongs to the next pixel: that is the convention, not
an error, and it is at most one pixel.

All randomness comes from the ``generator`` argument (a ``torch.Generator``) when one is given,
otherwise from torch's global generator.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .image_io import unit_float

Tensor = torch.Tensor


def _check_sample(image: Tensor, points: Tensor, clean: Optional[Tensor]) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(image.shape)}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [N, 2] (x, y), got shape {tuple(points.shape)}")
    if clean is not None and clean.shape != image.shape:
        raise ValueError(
            f"clean image shape {tuple(clean.shape)} differs from image shape {tuple(image.shape)}"
        )


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    device = generator.device if generator is not None else "cpu"
    return low + (high - low) * torch.rand((), generator=generator, device=device).item()


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in ``[0, high]`` (inclusive)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, high + 1, (), generator=generator, device=device).item())


def _bilinear_taps(old: int, new: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Source pixels ``low``, ``high`` (int64 ``[new]``) and the weight of ``high`` (float32 ``[new]``)
    of each output pixel along one axis of a bilinear resize from ``old`` to ``new`` pixels. Beyond the
    outermost pixel centres the edge pixel is copied, with weight 0 on its clamped neighbour."""
    source = ((torch.arange(new, dtype=torch.float64) + 0.5) * (old / new) - 0.5).clamp(min=0, max=old - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=old - 1)
    return low, high, (source - low).float()


class BilinearResize:
    """Bilinear resizing from ``old = (H, W)`` to ``new = (h, w)`` pixels, with pixel centres at
    half-integers as ``F.interpolate(mode="bilinear", align_corners=False)``, computed window by
    window: a crop of the resized image costs only its own pixels.

    Pixels are gathered and blended in plain elementwise steps (rows, then columns), so each has the
    same value whether the whole image or a window is computed, with any number of threads.
    ``F.interpolate`` is not used because its last bit depends on the thread count: loader workers
    run one thread, and crops would then depend on ``--num_workers``.

    Call: ``(tensor [..., H, W], y0=0, x0=0, height=h - y0, width=w - x0) -> [..., height, width]``,
    the window at ``(y0, x0)`` of the resized tensor; uint8 pixels are read as float32 value / 255.
    """

    def __init__(self, old: Tuple[int, int], new: Tuple[int, int]):
        self.size = tuple(new)
        self.rows = _bilinear_taps(old[0], new[0])
        self.cols = _bilinear_taps(old[1], new[1])

    def __call__(self, tensor: Tensor, y0: int = 0, x0: int = 0, height: int = None, width: int = None) -> Tensor:
        height = self.size[0] - y0 if height is None else height
        width = self.size[1] - x0 if width is None else width
        # Only the source columns the window reads are blended along the rows (the taps never
        # decrease); index_select rather than indexing, much faster with the same values.
        # a + (b - a) * w rather than a * (1 - w) + b * w: a flat region stays exactly flat.
        column_low, column_high, column_weight = (taps[x0:x0 + width] for taps in self.cols)
        first = int(column_low[0])
        tensor = tensor[..., first:int(column_high[-1]) + 1]
        low, high, weight = (taps[y0:y0 + height] for taps in self.rows)
        top = unit_float(tensor.index_select(-2, low))
        tensor = top + (unit_float(tensor.index_select(-2, high)) - top) * weight[:, None]
        left = tensor.index_select(-1, column_low - first)
        return left + (tensor.index_select(-1, column_high - first) - left) * column_weight


def _scale_points(points: Tensor, old: Tuple[int, int], new: Tuple[int, int]) -> Tensor:
    """Points ``[N, 2]`` (x, y) of an ``old = (H, W)`` image moved to the ``new = (h, w)`` resized one."""
    ratio = torch.tensor([new[1] / old[1], new[0] / old[0]], dtype=points.dtype, device=points.device)
    return points * ratio


def _points_in_window(points: Tensor, x0: int, y0: int, size: int) -> Tensor:
    """The points ``[M, 2]`` inside the square window ``[x0, x0 + size) x [y0, y0 + size)``, shifted by its origin."""
    x, y = points[:, 0], points[:, 1]
    inside = (x >= x0) & (x < x0 + size) & (y >= y0) & (y < y0 + size)
    return points[inside] - torch.tensor([x0, y0], dtype=points.dtype, device=points.device)


def pad_to_at_least(tensor: Tensor, size: int) -> Tensor:
    """``[C, H, W]`` zero-padded at the bottom and right to ``[C, max(H, size), max(W, size)]``.

    Points keep their coordinates under this padding.
    """
    height, width = tensor.shape[-2:]
    pad = (0, max(0, size - width), 0, max(0, size - height))
    if pad == (0, 0, 0, 0):
        return tensor
    return F.pad(tensor, pad)


class TrainTransform:
    """Training augmentation: random scale, then ``num_crops`` random crops, then random flips.

    * Scale: a factor ``s`` is drawn uniformly from ``[min_scale, max_scale]``. As upstream, the image
      is rescaled to ``round(H * s) x round(W * s)`` only if ``s * min(H, W) >= crop_size``, so that a
      crop still fits afterwards; points follow the actual per-axis ratio of the integer sizes.
    * Crops: ``num_crops`` independent square windows of side ``crop_size``; an unscaled image smaller
      than the crop is first zero-padded at the bottom and right. Each crop keeps the points inside
      its window, shifted by its origin.
    * Flips: each crop is mirrored independently with probability ``flip_prob``, its points mapping
      ``x -> c - x``.

    A rescaled image is only computed inside the crops (:class:`BilinearResize`), which makes loading
    an image several times cheaper. The generator is read in this order: the scale, the origin
    ``(y0, x0)`` of each crop, then one draw per crop for its flip.

    Call: ``(image [3, H, W], points [N, 2], clean [3, H, W] or None, generator or None)
    -> (images [K, 3, c, c], list of K points [Ni, 2], clean [K, 3, c, c] or None)``
    with ``K = num_crops`` and ``c = crop_size``; images float32, or uint8 pixels (read as value / 255),
    and the crops are float32.
    """

    def __init__(
        self,
        crop_size: int,
        num_crops: int = 4,
        min_scale: float = 0.7,
        max_scale: float = 1.3,
        flip_prob: float = 0.5,
    ):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if crop_size < 1 or num_crops < 1:
            raise ValueError(f"need crop_size >= 1 and num_crops >= 1, got {crop_size}, {num_crops}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {flip_prob}")
        self.crop_size = crop_size
        self.num_crops = num_crops
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.flip_prob = flip_prob

    def draw_size(self, height: int, width: int, generator: Optional[torch.Generator] = None):
        """Draw the scale; return the new ``(height, width)``, or ``None`` to keep the image as it is."""
        scale = _uniform(self.min_scale, self.max_scale, generator)
        if scale * min(height, width) < self.crop_size:
            return None
        return round(height * scale), round(width * scale)

    def draw_origins(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> list:
        """``num_crops`` window origins ``(y0, x0)`` in an image of at least the crop size."""
        return [(_randint(height - self.crop_size, generator), _randint(width - self.crop_size, generator))
                for _ in range(self.num_crops)]

    def __call__(
        self,
        image: Tensor,
        points: Tensor,
        clean: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, List[Tensor], Optional[Tensor]]:
        _check_sample(image, points, clean)
        side = self.crop_size
        old = tuple(image.shape[-2:])
        size = self.draw_size(*old, generator)
        sources = [image] if clean is None else [image, clean]
        if size is None:
            resize = None
            sources = [pad_to_at_least(unit_float(source), side) for source in sources]
            size = tuple(sources[0].shape[-2:])
        else:
            # Rescaled, the image holds a crop (see draw_size), so no padding is needed.
            resize = BilinearResize(old, size)
            points = _scale_points(points, old, size)
        crops, points_per_crop = [[] for _ in sources], []
        for y0, x0 in self.draw_origins(*size, generator):
            for source, windows in zip(sources, crops):
                if resize is None:
                    windows.append(source[:, y0:y0 + side, x0:x0 + side])
                else:
                    windows.append(resize(source, y0, x0, side, side))
            points_per_crop.append(_points_in_window(points, x0, y0, side))
        # All origins are drawn before any flip: the generator order predates this fused form and
        # fixes the crops that every seed has produced so far.
        for index, crop_points in enumerate(points_per_crop):
            if _uniform(0.0, 1.0, generator) < self.flip_prob:
                for windows in crops:
                    windows[index] = windows[index].flip(-1)
                mirrored = crop_points.clone()
                mirrored[:, 0] = side - crop_points[:, 0]
                points_per_crop[index] = mirrored
        crops = [torch.stack(windows) for windows in crops]
        return crops[0], points_per_crop, (None if clean is None else crops[1])
