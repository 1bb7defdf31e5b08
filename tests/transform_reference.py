"""Reference implementation of the training augmentation, step by step: the oracle that the fused
``crowd_datasets.transforms.TrainTransform`` is checked against, bit for bit.

``RandomScale``, ``RandomCrops`` and ``RandomHorizontalFlip`` applied in turn with one generator are
what ``TrainTransform`` computes; each step materialises its whole output (the rescaled image, the
padded image, every crop) and is built from the plain operations ``resize``, ``crop`` and ``hflip``,
so that each can be checked on its own. Only tests use this module. Tensor shapes and the coordinate
convention are those of ``crowd_datasets.transforms``.
"""

from typing import List, Optional, Tuple

import torch

from crowd_datasets.transforms import (
    BilinearResize,
    _check_sample,
    _points_in_window,
    _randint,
    _scale_points,
    _uniform,
    pad_to_at_least,
)

Tensor = torch.Tensor


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
        image = pad_to_at_least(image, self.crop_size)
        clean = None if clean is None else pad_to_at_least(clean, self.crop_size)
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
