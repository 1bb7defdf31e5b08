"""Image decoding shared by datasets and inference: RGB exactly as OpenCV decodes it, of the picture formats of
``IMAGE_SUFFIXES`` only (``check_encoded`` holds the rule every path applies before OpenCV sees any bytes)."""
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# The formats of IMAGE_SUFFIXES (what ``sniff_format`` names) -> the names Pillow gives them; a JPEG that holds
# several pictures (a camera's stereo or preview frames) opens in Pillow as MPO, and OpenCV decodes its first.
PICTURE_FORMATS = {"JPEG": ("JPEG", "MPO"), "PNG": ("PNG",), "BMP": ("BMP",), "TIFF": ("TIFF",), "WebP": ("WEBP",),
                   "PNM": ("PPM",)}
NOT_A_PICTURE_FORMAT = "not a readable image: not a picture format this project reads (" + ", ".join(
    PICTURE_FORMATS) + ")"


def is_image_file(path) -> bool:
    """Whether ``path`` is a regular file with an image suffix (the content is checked on decoding)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


class ImageReadError(ValueError):
    """A file that exists but is not decoded as an image: ``reason`` says why, the message also names it."""

    def __init__(self, path, reason: str):
        super().__init__(f"{printable(path)}: {reason}")
        self.reason = reason


def sniff_format(data: bytes):
    """The picture format ``data`` starts with, a key of ``PICTURE_FORMATS``, or ``None`` for any other content.
    Decided by the magic bytes by which OpenCV picks its decoder too (no other decoder of OpenCV's claims them)."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:2] == b"BM":
        return "BMP"
    # Classic TIFF and BigTIFF (42 and 43 after the byte order), both of which libtiff and Pillow read.
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    # P1 to P6 and whitespace, as OpenCV's PNM decoder requires; P7 (PAM) and PF/Pf (PFM) are other decoders.
    if data[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6") and data[2:3].isspace():
        return "PNM"
    return None


def header_size(data: bytes, picture_format: str):
    """``(width, height)`` in pixels that Pillow reads from the header of ``data`` as ``picture_format`` (a key of
    ``PICTURE_FORMATS``), without decoding; ``None`` when it cannot. Pillow's reader of that one format is called
    directly: ``Image.open`` would try the others too, and its decompression-bomb warning could only be silenced
    with ``warnings.catch_warnings``, which makes every once-only warning of the process (a dataset's) show again."""
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, PpmImagePlugin, TiffImagePlugin, WebPImagePlugin

    readers = {"JPEG": JpegImagePlugin.jpeg_factory, "PNG": PngImagePlugin.PngImageFile,
               "BMP": BmpImagePlugin.BmpImageFile, "TIFF": TiffImagePlugin.TiffImageFile,
               "WebP": WebPImagePlugin.WebPImageFile, "PNM": PpmImagePlugin.PpmImageFile}
    try:
        # Pillow checks that both sides are positive; its readers turn a short or odd header into SyntaxError.
        with readers[picture_format](io.BytesIO(data)) as image:
            return image.size if image.format in PICTURE_FORMATS[picture_format] else None
    except (SyntaxError, OSError, ValueError):
        return None


def described_size(width: int, height: int) -> str:
    """A declared size as errors give it, ``10000 x 8000 pixels (80 MP)``; above twice Pillow's ``MAX_IMAGE_PIXELS``
    (179 MP) ``more than 179 MP``, as ``declared_pixels`` can only give it."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and width * height > 2 * Image.MAX_IMAGE_PIXELS:
        return f"more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP"
    return f"{width} x {height} pixels ({width * height / 1e6:.0f} MP)"


def declared_pixels(data: bytes):
    """``(pixels, description)`` of the size an encoded image's header declares, read without decoding,
    or ``None`` when Pillow does not know the format: any format Pillow knows (the service tells pictures from
    videos by it), where ``check_encoded`` reads only those of the list. Above Pillow's own limit (twice
    ``PIL.Image.MAX_IMAGE_PIXELS``, 179 MP) only that bound is known."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow warns about huge declared sizes itself; the caller's limit decides here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            bound = 2 * Image.MAX_IMAGE_PIXELS
            return bound + 1, f"more than {bound / 1e6:.0f} MP"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None
    return width * height, described_size(width, height)


def truncation(data: bytes):
    """Why an encoded JPEG or PNG ends before its picture does (a partial download or copy), or ``None``.

    A JPEG's compressed data cannot hold an end-of-image marker, so a whole file has one after its
    last start-of-scan (later bytes, such as a camera's appended previews, may follow); a PNG ends
    with an ``IEND`` chunk. Other formats are left to the decoder.
    """
    if data[:3] == b"\xff\xd8\xff":
        scan = data.rfind(b"\xff\xda")
        if scan < 0 or data.find(b"\xff\xd9", scan) < 0:
            return "truncated JPEG: the file ends before its end-of-image marker (an interrupted download or copy?)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG: the file ends before its IEND chunk (an interrupted download or copy?)"
    return None


def read_rgb(path, max_pixels: int = None) -> np.ndarray:
    """Decode an image file to ``H x W x 3`` uint8 RGB; refuse (``ImageReadError``), before decoding, a file
    that is not one of the picture formats of ``IMAGE_SUFFIXES`` by its content or whose header does not give its
    size, and with ``max_pixels`` one whose header declares more pixels: a tiny file can declare a picture that
    would take gigabytes (``check_encoded``). A truncated JPEG or PNG is refused too (``truncation``): decoders
    differ in whether they fill its missing part with grey or fail, and a count of half a picture is wrong.

    Decodes as ``cv2.imread(path, cv2.IMREAD_COLOR)`` does, as upstream: an alpha channel is dropped (not
    blended), grey images are expanded to three channels, 16-bit images are scaled to 8 bits, and the
    file's content decides the format, not its suffix (real datasets hold PNGs named ``.jpg``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {printable(path)}")
    # Decoded from the file's bytes (the same decoder, EXIF orientation included): OpenCV's own path
    # handling crashes the process on file names that are not valid UTF-8, as in old zip archives.
    return decode_rgb(path.read_bytes(), path, max_pixels)


def check_encoded(data: bytes, name, max_pixels: int = None) -> None:
    """The rule every path applies to an encoded image's bytes before OpenCV sees them (``read_rgb``,
    ``decode_rgb``, the service's uploads): ``ImageReadError`` naming ``name`` unless

    - its magic bytes are those of a format of ``IMAGE_SUFFIXES`` (``sniff_format``): OpenCV decodes many more,
      some of which a few KB expand to gigabytes (Radiance HDR), or go through a temporary file;
    - Pillow reads its size from its header as that same format, so that the header checked is the one the
      decoder OpenCV picks by the same magic bytes reads;
    - that size is at most ``max_pixels`` pixels (no limit when ``None``);
    - it is not a truncated JPEG or PNG (``truncation``).
    """
    picture_format = sniff_format(data)
    if picture_format is None:
        raise ImageReadError(name, NOT_A_PICTURE_FORMAT)
    size = header_size(data, picture_format)
    if size is None:
        raise ImageReadError(name, f"not a readable image: its size cannot be read from its header (a damaged "
                                   f"{picture_format} file?)")
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(name, f"declares {described_size(*size)}, over the limit of {max_pixels / 1e6:g} MP "
                                   "(--max_megapixels raises it)")
    damage = truncation(data)
    if damage is not None:
        raise ImageReadError(name, damage)


def decode_rgb(data: bytes, name, max_pixels: int = None) -> np.ndarray:
    """``read_rgb`` for an encoded image's bytes (an upload, say); ``name`` is what errors call it."""
    check_encoded(data, name, max_pixels)
    return decode_checked(data, name, max_pixels)


def decode_checked(data: bytes, name, max_pixels: int = None) -> np.ndarray:
    """Decode bytes that ``check_encoded`` has accepted (with the same ``max_pixels``) to ``H x W x 3`` uint8 RGB,
    as ``read_rgb`` does; ``ImageReadError`` when OpenCV cannot. Content of other formats is refused here too, so
    that OpenCV never sees it whoever calls this; with ``max_pixels`` the decoded size is checked again, as a
    header can lie."""
    if sniff_format(data) is None:
        raise ImageReadError(name, NOT_A_PICTURE_FORMAT)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageReadError(name, f"not a readable image (OpenCV: {str(error).strip().splitlines()[-1]})") from None
    if bgr is None:
        raise ImageReadError(name, "not a readable image (OpenCV could not decode it)")
    height, width = bgr.shape[:2]
    if max_pixels is not None and height * width > max_pixels:
        raise ImageReadError(name, f"decodes to {width} x {height} pixels ({height * width / 1e6:.0f} MP), more than "
                                   f"its header declares and over the limit of {max_pixels / 1e6:g} MP")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def unique_names(paths: list) -> list:
    """A name for each of ``paths`` (files), unique among them, that its outputs or records go by: its stem;
    where several share a stem, the nearest folder that tells it from the others' goes before it
    (``Demo_Hazy_IMG_1``) and, for files of one folder, the suffix after it (``a_jpg``); a name still
    taken gets a counter (``a_jpg_2``), in the order of ``paths``."""
    paths = [Path(path) for path in paths]
    names, used = [], set()
    for path in paths:
        name = path.stem
        namesakes = [other for other in paths if other.stem == path.stem and other != path]
        elsewhere = [other.parent for other in namesakes if other.parent != path.parent]
        folder = distinguishing_folder(path.parent, elsewhere) if elsewhere else None
        if folder is not None:
            name = f"{folder}_{name}"
        if any(other.parent == path.parent for other in namesakes):
            name = f"{name}_{path.suffix.lstrip('.')}"
        candidate, number = name, 2
        while candidate in used:
            candidate, number = f"{name}_{number}", number + 1
        used.add(candidate)
        names.append(candidate)
    return names


def distinguishing_folder(folder: Path, others: list):
    """The name of ``folder``'s nearest enclosing folder (itself first) whose name differs from those of the
    ``others``' folders at the same depth from the file, or ``None``."""
    for depth in range(1, len(folder.parts) + 1):
        name = folder.parts[-depth]
        if all(len(other.parts) < depth or other.parts[-depth] != name for other in others):
            return name
    return None


def printable(path) -> str:
    """``path`` as text that can always be printed or written: bytes of a file name that are not
    valid UTF-8 (kept by Python as surrogates) appear as ``\\xe9`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` itself, or ``ValueError`` unless it is a non-empty ``H x W x 3`` uint8 array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected a non-empty H x W x 3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    return rgb


def pixel_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 RGB -> uint8 ``[3, H, W]``, a view of the same memory."""
    check_rgb(rgb)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


def unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (value / 255, the same values as torchvision's ``ToTensor``);
    a float tensor is returned as it is."""
    return pixels.float().div(255) if pixels.dtype == torch.uint8 else pixels


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 RGB -> float32 ``[3, H, W]`` in [0, 1] (the same values as torchvision's
    ``ToTensor``)."""
    return unit_float(pixel_tensor(rgb))


def write_rgb(path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write ``H x W x 3`` uint8 RGB to ``path`` (format from its suffix); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    # Encoded in memory and written by Python: OpenCV's path handling fails on names that are not UTF-8.
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode image {path}")
    encoded.tofile(path)
