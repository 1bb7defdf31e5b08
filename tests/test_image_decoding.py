"""crowd_datasets/image_io.py: what reaches OpenCV's decoders. Only the picture formats of ``IMAGE_SUFFIXES``, by
their magic bytes, with a size read from the header, under the pixel limit, checked again after decoding; and
OpenCV's own limit (``decoding_limit``), set before cv2 loads in every script."""
import io
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

import crowd_datasets.image_io as image_io
from crowd_datasets.image_io import ImageReadError
from helpers import REAL_SAMPLES, ROOT

LIMIT = 50_000_000  # pixels: the default of --max_megapixels
NOT_LISTED = "not a picture format this project reads"


def radiance_hdr(width: int, height: int) -> bytes:
    """A Radiance HDR file whose header declares ``width`` x ``height`` pixels, followed by one RLE scanline's
    start and a few bytes: ~70 bytes that OpenCV's HDR decoder would allocate a float picture for."""
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    return header + bytes([2, 2, width >> 8, width & 255]) + bytes(16)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def black_bilevel_png(width: int, height: int) -> bytes:
    """A whole, valid 1-bit grey PNG of ``width`` x ``height`` black pixels: 17000 x 17000 (289 MP, as many
    bytes once decoded) compresses to ~35 KB."""
    row = bytes(1 + (width + 7) // 8)  # the filter byte, then 8 pixels a byte
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels)
            + png_chunk(b"IEND", b""))


def colour_picture(height: int = 24, width: int = 32) -> np.ndarray:
    """``height x width x 3`` uint8 BGR with every value different along a row: a mix-up of channels or rows shows."""
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return (values * 7 % 251).astype(np.uint8)


def pillow_bytes(rgb: np.ndarray, pillow_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, pillow_format, **options)
    return buffer.getvalue()


def opencv_bytes(suffix: str, picture: np.ndarray, params=()) -> bytes:
    ok, encoded = cv2.imencode(suffix, picture, list(params))
    assert ok, f"OpenCV could not write {suffix}"
    return encoded.tobytes()


def refuse_opencv(monkeypatch):
    """Make any call of ``cv2.imdecode`` fail the test: the check must come first."""
    def imdecode(*args):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", imdecode)


@pytest.mark.parametrize("start,name", [
    (b"\xff\xd8\xff\xe0", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM6\x00", "BMP"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"), (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WebP"),
    (b"P6\n", "PNM"), (b"P1 ", "PNM"), (b"P5\r", "PNM"),
    (b"", None), (b"P", None), (b"P6", None), (b"P7\nWIDTH", None), (b"PF\n6 8", None), (b"Pf\n6 8", None),
    (b"#?RADIANCE\n", None), (b"Y\xa6j\x95", None), (b"GIF89a", None), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", None),
    (b"\x00\x00\x00 ftypavif", None), (b"RIFF\x10\x00\x00\x00AVI ", None), (b"\xff\xd8", None), (b"hello", None),
])
def test_the_format_is_decided_by_the_magic_bytes(start, name):
    assert image_io.sniff_format(start) == name


@pytest.mark.parametrize("reader", ["check_encoded", "decode_rgb", "read_rgb"])
def test_radiance_hdr_declaring_80_mp_is_refused_before_opencv_decodes_it(reader, tmp_path, monkeypatch):
    data = radiance_hdr(10_000, 8_000)
    path = tmp_path / "bomb.hdr"
    path.write_bytes(data)
    refuse_opencv(monkeypatch)
    with pytest.raises(ImageReadError, match=f"bomb.hdr: not a readable image: {NOT_LISTED} "
                                             r"\(JPEG, PNG, BMP, TIFF, WebP, PNM\)"):
        if reader == "read_rgb":
            image_io.read_rgb(path, LIMIT)
        else:
            getattr(image_io, reader)(data, path.name, LIMIT)


def test_a_refused_radiance_hdr_leaves_the_temporary_folder_untouched(tmp_path, monkeypatch):
    # OpenCV decodes an HDR file from memory by writing it to a temporary file: in OPENCV_TEMP_PATH (read at each
    # call), not TMPDIR; both point here. Any file made, even if removed again, moves the folder's mtime.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("OPENCV_TEMP_PATH", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    long_ago = 946_684_800_000_000_000  # 2000-01-01, in ns
    os.utime(scratch, ns=(long_ago, long_ago))
    data = radiance_hdr(10_000, 8_000)
    (tmp_path / "bomb.hdr").write_bytes(data)
    with pytest.raises(ImageReadError) as from_bytes:
        image_io.decode_rgb(data, "bomb.hdr", LIMIT)
    with pytest.raises(ImageReadError) as from_file:
        image_io.read_rgb(tmp_path / "bomb.hdr", LIMIT)
    assert os.listdir(scratch) == [] and os.stat(scratch).st_mtime_ns == long_ago, "OpenCV made a temporary file"
    assert NOT_LISTED in from_bytes.value.reason and NOT_LISTED in from_file.value.reason


def other_format(kind: str) -> bytes:
    """A small picture (24 x 32) in a format OpenCV decodes but this project does not read."""
    picture = colour_picture()
    if kind == "GIF":
        return pillow_bytes(picture, "GIF")
    if kind in ("PFM", "HDR"):
        return opencv_bytes(f".{kind.lower()}", picture.astype(np.float32) / 255)
    return opencv_bytes({"PAM": ".pam", "Sun raster": ".ras", "JPEG 2000": ".jp2", "AVIF": ".avif"}[kind],
                        colour_picture(64, 64) if kind == "JPEG 2000" else picture)


@pytest.mark.parametrize("kind", ["PAM", "Sun raster", "PFM", "HDR", "GIF", "JPEG 2000", "AVIF"])
def test_small_pictures_of_formats_outside_the_list_are_refused(kind, tmp_path):
    try:
        data = other_format(kind)
    except (AssertionError, cv2.error):
        pytest.skip(f"this OpenCV cannot write {kind}")
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
        pytest.skip(f"this OpenCV does not decode {kind}")
    path = tmp_path / "small.png"  # the suffix does not decide: the content does
    path.write_bytes(data)
    for max_pixels in (LIMIT, None):
        with pytest.raises(ImageReadError, match=f"small.png: not a readable image: {NOT_LISTED}"):
            image_io.read_rgb(path, max_pixels)


def test_a_file_whose_header_pillow_cannot_read_as_its_format_is_refused(monkeypatch):
    refuse_opencv(monkeypatch)
    with pytest.raises(ImageReadError, match=r"odd.bmp: not a readable image: its size cannot be read from its header "
                                             r"\(a damaged BMP file\?\)"):
        image_io.decode_rgb(b"BM" + bytes(60), "odd.bmp")


def test_a_header_that_lies_is_refused_after_decoding(monkeypatch):
    # No file of the listed formats was found whose pixels OpenCV reads beyond the size Pillow reads (duplicate
    # TIFF tags, WebP canvas and frame sizes, PNM comments agree), so the header's answer is made to lie here.
    data = opencv_bytes(".png", colour_picture(48, 64))
    monkeypatch.setattr(image_io, "header_size", lambda data, picture_format: (10, 10))
    with pytest.raises(ImageReadError, match="liar.png: decodes to 64 x 48 pixels .* over the limit of 0.001 MP"):
        image_io.decode_rgb(data, "liar.png", 1000)
    assert image_io.decode_rgb(data, "liar.png", 64 * 48).shape == (48, 64, 3)


GUARD_CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
import cv2
import numpy as np
try:
    decoded = cv2.imdecode(np.fromfile(sys.argv[2], np.uint8), cv2.IMREAD_GRAYSCALE)
except cv2.error as error:
    decoded = None
    print(error)
print("refused" if decoded is None else f"decoded {decoded.shape}")
"""


@pytest.mark.parametrize("script", ["run_test", "train", "serve"])
def test_opencv_refuses_more_than_max_decoded_pixels_once_a_script_is_imported(script, tmp_path):
    # 289 MP, over 2**28 but under OpenCV's default limit of 2**30: decoded when the limit is not set before cv2
    # loads (a value set after `import cv2` has no effect).
    path = tmp_path / "huge.png"
    path.write_bytes(black_bilevel_png(17_000, 17_000))
    environment = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    finished = subprocess.run([sys.executable, "-c", GUARD_CHECK, script, str(path)], capture_output=True, text=True,
                              cwd=ROOT, env=environment, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip().endswith("refused"), finished.stdout
    assert "CV_IO_MAX_IMAGE_PIXELS" in finished.stdout + finished.stderr


@pytest.mark.parametrize("current,value", [
    (None, "268435456"), ("", "268435456"), ("1000000", "1000000"), ("268435456", "268435456"),
    ("268435457", "268435456"), ("1073741824", "268435456"), ("0", "268435456"), ("1GB", "268435456"),
])
def test_a_lower_opencv_limit_already_set_is_kept(current, value):
    from crowd_datasets.decoding_limit import opencv_pixel_limit

    assert opencv_pixel_limit(current) == value


def test_max_megapixels_stops_at_what_opencv_decodes(capsys):
    import run_test

    arguments = ["--weight_path", "model.pth", "--max_megapixels"]
    assert run_test.build_parser().parse_args(arguments + ["268"]).max_megapixels == 268
    with pytest.raises(SystemExit) as stop:
        run_test.build_parser().parse_args(arguments + ["300"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2
    assert error.endswith("error: argument --max_megapixels: must be at most 268.435456 (the most megapixels OpenCV "
                          "decodes here), got 300"), error


def exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    return pillow_bytes(rgb, "JPEG", exif=exif.tobytes(), quality=95)


def allowed_picture(kind: str) -> bytes:
    """A small picture in one of the listed formats, as OpenCV or Pillow writes it."""
    bgr = colour_picture()
    grey = bgr[:, :, 0]
    writers = {
        "JPEG": lambda: opencv_bytes(".jpg", bgr), "grey JPEG": lambda: opencv_bytes(".jpg", grey),
        "EXIF-rotated JPEG": lambda: exif_rotated_jpeg(bgr[:, :, ::-1]),
        "MPO": lambda: pillow_bytes(bgr, "MPO", save_all=True, append_images=[Image.fromarray(bgr[::-1])]),
        "PNG": lambda: opencv_bytes(".png", bgr),
        "16-bit PNG": lambda: opencv_bytes(".png", bgr.astype(np.uint16) * 257),
        "PNG with alpha": lambda: opencv_bytes(".png", np.dstack([bgr, grey])),
        "BMP": lambda: opencv_bytes(".bmp", bgr), "TIFF": lambda: opencv_bytes(".tif", bgr),
        "BigTIFF": lambda: pillow_bytes(bgr, "TIFF", big_tiff=True), "WebP": lambda: opencv_bytes(".webp", bgr),
        "PPM": lambda: opencv_bytes(".ppm", bgr), "PGM": lambda: opencv_bytes(".pgm", grey),
        "PBM": lambda: opencv_bytes(".pbm", grey),
    }
    return writers[kind]()


@pytest.mark.parametrize("kind", ["JPEG", "grey JPEG", "EXIF-rotated JPEG", "MPO", "PNG", "16-bit PNG",
                                  "PNG with alpha", "BMP", "TIFF", "BigTIFF", "WebP", "PPM", "PGM", "PBM"])
def test_every_listed_format_decodes_as_cv2_imread_does(kind, tmp_path):
    path = tmp_path / "picture.jpg"  # real datasets hold PNGs named .jpg: the content decides
    path.write_bytes(allowed_picture(kind))
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert expected is not None
    if kind == "EXIF-rotated JPEG":
        assert expected.shape[:2] == (32, 24), "OpenCV turns the picture as its EXIF orientation says"
    np.testing.assert_array_equal(image_io.read_rgb(path, LIMIT), expected[:, :, ::-1])
    np.testing.assert_array_equal(image_io.read_rgb(path), expected[:, :, ::-1])


@pytest.mark.reference_fixtures
@pytest.mark.parametrize("name", ["A_IMG_160.jpg", "Rain_IMG_0045.jpg"])
def test_real_samples_decode_as_cv2_imread_does(name):
    path = REAL_SAMPLES / name
    np.testing.assert_array_equal(image_io.read_rgb(path, LIMIT), cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_a_folder_with_pictures_in_other_formats_counts_the_rest_with_the_default_flags(tmp_path, capsys):
    import run_test
    from helpers import random_checkpoint
    from util.script import EXIT_SKIPPED

    random_checkpoint(tmp_path / "model.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "street.jpg"), colour_picture(96, 128))
    (photos / "sky.jpg").write_bytes(radiance_hdr(10_000, 8_000))  # named like a photo, as downloads are
    (photos / "crowd.png").write_bytes(other_format("GIF"))
    code = run_test.main(["--weight_path", str(tmp_path / "model.pth"), "--input", str(photos)])
    printed = capsys.readouterr()
    assert code == EXIT_SKIPPED
    for name in ("sky.jpg", "crowd.png"):
        assert f"skipped {name}: not a readable image: {NOT_LISTED}" in printed.err
    assert "Traceback" not in printed.err and "street.jpg: " in printed.out and "counted 1 images" in printed.out
