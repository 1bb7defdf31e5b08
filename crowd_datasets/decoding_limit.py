"""The most pixels any picture may decode to, and the value of OpenCV's own limit that enforces it. A module of its
own that imports no cv2, so that ``crowd_datasets/__init__`` can set OpenCV's limit before the library loads."""

# 268 MP (16384 x 16384 pixels, 805 MB as uint8 RGB): far above any photo (an 8000 x 6000 one is 48 MP).
MAX_DECODED_PIXELS = 2 ** 28

# OpenCV refuses, before allocating, a picture whose header declares more pixels than this variable says; it
# reads the variable once, when the library loads (set after ``import cv2``, it has no effect).
OPENCV_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


def opencv_pixel_limit(current: str = None) -> str:
    """The value to give ``OPENCV_IO_MAX_IMAGE_PIXELS``: ``current`` (the value already set, or ``None``) when it is a
    positive whole number of pixels up to ``MAX_DECODED_PIXELS``, otherwise ``MAX_DECODED_PIXELS``."""
    text = (current or "").strip()
    if text.isdigit() and 0 < int(text) <= MAX_DECODED_PIXELS:
        return text
    return str(MAX_DECODED_PIXELS)
