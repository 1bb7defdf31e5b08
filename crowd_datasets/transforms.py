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
        # decrease); index_select rather than indexing: a 128-px crop of a 1024-px wide image took
        # 0.9 instead of 5.2 ms, with the same values. a + (b - a) * w rather than a * (1 - w) + b * w:
        # a flat region stays exactly flat.
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


def resize(
    image: Tensor, points: Tensor, height: int, width: int, clean: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Resize to ``height x width`` (bilinear, see :class:`BilinearResize`) and move the points along.

    Args:
        image: float32 ``[C, H, W]``.
        points: float32 ``[N, 2]`` (x, y) pixels.
        height, width: output size in pixels.
        clean: optional float32 ``[C, H, W]``, resized the same way.

    Returns:
        ``(image [C, height, width], points [N, 2] scaled by (width / W, height / H), clean)``.
    """
    _check_sample(image, points, clean)
    old = tuple(image.shape[-2:])
    if (height, width) == old:
        return image, points, clean
    stacked = image[None] if clean is None else torch.stack([image, clean])
    resized = BilinearResize(old, (height, width))(stacked)
    return resized[0], _scale_points(points, old, (height, width)), (None if clean is None else resized[1])


def crop(
    image: Tensor, points: Tensor, x0: int, y0: int, size: int, clean: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Cut the square ``[x0, x0 + size) x [y0, y0 + size)`` and keep the points inside it.

    The window must lie inside the image (pad first if the image is smaller).

    Args:
        image: float32 ``[C, H, W]``; clean: optional, same shape.
        points: float32 ``[N, 2]`` (x, y) pixels.
        x0, y0: crop origin in pixels; size: crop side in pixels.

    Returns:
        ``(image [C, size, size], points [M, 2] shifted by -(x0, y0), clean [C, size, size])``
        with only the M points that fall inside the window.
    """
    _check_sample(image, points, clean)
    height, width = image.shape[-2:]
    if x0 < 0 or y0 < 0 or x0 + size > width or y0 + size > height:
        raise ValueError(
            f"crop window x0={x0}, y0={y0}, size={size} does not fit a {height}x{width} image"
        )
    window = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    cropped_clean = None if clean is None else clean[window]
    return image[window], _points_in_window(points, x0, y0, size), cropped_clean


def hflip(
    image: Tensor, points: Tensor, clean: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Mirror left-right; with the image width W, points map ``x -> W - x``.

    Args:
        image: float32 ``[C, H, W]``; clean: optional, same shape.
        points: float32 ``[N, 2]`` (x, y) pixels.

    Returns:
        ``(image [C, H, W], points [N, 2], clean)`` mirrored.
    """
    _check_sample(image, points, clean)
    width = image.shape[-1]
    flipped_points = points.clone()
    flipped_points[:, 0] = width - points[:, 0]
    flipped_clean = None if clean is None else clean.flip(-1)
    return image.flip(-1), flipped_points, flipped_clean


def pad_to_at_least(
    image: Tensor, size: int, clean: Optional[Tensor] = None
) -> Tuple[Tensor, Optional[Tensor]]:
    """Zero-pad at the bottom and right so both sides are at least ``size`` pixels.

    Points are unchanged by this padding, so they are not taken.

    Returns:
        ``(image [C, max(H, size), max(W, size)], clean of the same shape or None)``.
    """
    height, width = image.shape[-2:]
    pad = (0, max(0, size - width), 0, max(0, size - height))
    if pad == (0, 0, 0, 0):
        return image, clean
    return F.pad(image, pad), (None if clean is None else F.pad(clean, pad))


class RandomScale:
    """Rescale by a factor drawn uniformly from ``[min_scale, max_scale]``.

    As upstream, the image is rescaled only if ``s * min(H, W) >= crop_size``, so that a crop
    still fits afterwards; otherwise the sample is returned unchanged. The output size is
    ``round(H * s) x round(W * s)`` and points follow the actual per-axis ratio.

    Call: ``(image [3, H, W], points [N, 2], clean or None, generator or None)
    -> (image [3, H', W'], points [N, 2], clean [3, H', W'] or None)``.
    """

    def __init__(self, crop_size: int, min_scale: float = 0.7, max_scale: float = 1.3):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.crop_size = crop_size
        self.min_scale = min_scale
        self.max_scale = max_scale

    def __call__(
        self,
        image: Tensor,
        points: Tensor,
        clean: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        _check_sample(image, points, clean)
        size = self.draw_size(*image.shape[-2:], generator)
        if size is None:
            return image, points, clean
        return resize(image, points, *size, clean)

    def draw_size(self, height: int, width: int, generator: Optional[torch.Generator] = None):
        """Draw the scale; return the new ``(height, width)``, or ``None`` to keep the image as it is."""
        scale = _uniform(self.min_scale, self.max_scale, generator)
        if scale * min(height, width) < self.crop_size:
            return None
        return round(height * scale), round(width * scale)


class RandomCrops:
    """Cut ``num_crops`` independent random square crops of side ``crop_size``.

    Images smaller than the crop in either dimension are first zero-padded at the bottom and
    right up to the crop size. Each crop keeps the points inside its window, shifted by its
    origin.

    Call: ``(image [3, H, W], points [N, 2], clean or None, generator or None)
    -> (images [K, 3, c, c], list of K points [Ni, 2], clean [K, 3, c, c] or None)``.
    """

    def __init__(self, crop_size: int, num_crops: int = 4):
        if crop_size < 1 or num_crops < 1:
            raise ValueError(f"need crop_size >= 1 and num_crops >= 1, got {crop_size}, {num_crops}")
        self.crop_size = crop_size
        self.num_crops = num_crops

    def __call__(
        self,
        image: Tensor,
        points: Tensor,
        clean: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, List[Tensor], Optional[Tensor]]:
        _check_sample(image, points, clean)
        image, clean = pad_to_at_least(image, self.crop_size, clean)
        images, points_per_crop, cleans = [], [], []
        for y0, x0 in self.draw_origins(*image.shape[-2:], generator):
            crop_image, crop_points, crop_clean = crop(image, points, x0, y0, self.crop_size, clean)
            images.append(crop_image)
            points_per_crop.append(crop_points)
            cleans.append(crop_clean)
        return torch.stack(images), points_per_crop, (None if clean is None else torch.stack(cleans))

    def draw_origins(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> list:
        """``num_crops`` window origins ``(y0, x0)`` in an image of at least the crop size."""
        return [(_randint(height - self.crop_size, generator), _randint(width - self.crop_size, generator))
                for _ in range(self.num_crops)]


class RandomHorizontalFlip:
    """Mirror each crop of a batch independently with probability ``p``.

    Points of a flipped crop map ``x -> c - x`` with that crop's real width ``c``.

    Call: ``(images [K, 3, c, c], list of K points [Ni, 2], clean [K, 3, c, c] or None,
    generator or None) -> same shapes``.
    """

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(
        self,
        images: Tensor,
        points_per_crop: List[Tensor],
        clean: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, List[Tensor], Optional[Tensor]]:
        if images.ndim != 4 or len(points_per_crop) != images.shape[0]:
            raise ValueError(
                f"expected images [K, C, H, W] and K points tensors, got shape "
                f"{tuple(images.shape)} and {len(points_per_crop)} points tensors"
            )
        out_images, out_points, out_cleans = [], [], []
        for index, points in enumerate(points_per_crop):
            image = images[index]
            crop_clean = None if clean is None else clean[index]
            if _uniform(0.0, 1.0, generator) < self.p:
                image, points, crop_clean = hflip(image, points, crop_clean)
            out_images.append(image)
            out_points.append(points)
            out_cleans.append(crop_clean)
        return (
            torch.stack(out_images),
            out_points,
            None if clean is None else torch.stack(out_cleans),
        )


class TrainTransform:
    """Training augmentation: random scale, then ``num_crops`` random crops, then random flips.

    The result equals ``RandomScale``, ``RandomCrops`` and ``RandomHorizontalFlip`` applied in turn
    with the same generator, but a rescaled image is only computed inside the crops
    (:class:`BilinearResize`), which makes loading an image several times cheaper.

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
        self.scale = RandomScale(crop_size, min_scale, max_scale)
        self.crops = RandomCrops(crop_size, num_crops)
        self.flip = RandomHorizontalFlip(flip_prob)

    def __call__(
        self,
        image: Tensor,
        points: Tensor,
        clean: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, List[Tensor], Optional[Tensor]]:
        _check_sample(image, points, clean)
        old = tuple(image.shape[-2:])
        size = self.scale.draw_size(*old, generator)
        if size is None:
            clean = None if clean is None else unit_float(clean)
            images, points_per_crop, clean = self.crops(unit_float(image), points, clean, generator)
            return self.flip(images, points_per_crop, clean, generator)
        # Rescaled, the image holds a crop (see RandomScale), so no padding is needed.
        resize, side = BilinearResize(old, size), self.crops.crop_size
        points = _scale_points(points, old, size)
        sources = [image] if clean is None else [image, clean]
        windows, points_per_crop = [[] for _ in sources], []
        for y0, x0 in self.crops.draw_origins(*size, generator):
            for source, crops in zip(sources, windows):
                crops.append(resize(source, y0, x0, side, side))
            points_per_crop.append(_points_in_window(points, x0, y0, side))
        windows = [torch.stack(crops) for crops in windows]
        return self.flip(windows[0], points_per_crop, None if clean is None else windows[1], generator)
