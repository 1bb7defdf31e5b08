"""Image decoding shared by datasets and inference: RGB exactly as OpenCV decodes it."""
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def is_image_file(path) -> bool:
    """Whether ``path`` is a regular file with an image suffix (the content is checked on decoding)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


class ImageReadError(ValueError):
    """A file that exists but cannot be decoded as an image; the message names it."""


def read_rgb(path) -> np.ndarray:
    """Decode an image file to ``H x W x 3`` uint8 RGB.

    Decodes as ``cv2.imread(path, cv2.IMREAD_COLOR)`` does, as upstream: an alpha channel is dropped (not
    blended), grey images are expanded to three channels, 16-bit images are scaled to 8 bits, and the
    file's content decides the format, not its suffix (real datasets hold PNGs named ``.jpg``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {printable(path)}")
    # Decoded from the file's bytes (the same decoder, EXIF orientation included): OpenCV's own path
    # handling crashes the process on file names that are not valid UTF-8, as in old zip archives.
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageReadError(f"{printable(path)}: not a readable image (OpenCV could not decode it)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def printable(path) -> str:
    """``path`` as text that can always be printed or written: bytes of a file name that are not
    valid UTF-8 (kept by Python as surrogates) appear as ``\\xe9`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 RGB -> float32 ``[3, H, W]`` in [0, 1] (the same values as torchvision's
    ``ToTensor``)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected a non-empty H x W x 3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255)
