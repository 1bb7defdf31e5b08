"""Video in and out: frames of a video file, a camera or a stream (``VideoSource``), and an mp4 writer
(``VideoWriter``), both through OpenCV's FFmpeg backend."""
import math
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Frame rate of the written video when the source does not declare one (cameras and some streams).
FALLBACK_FPS = 25.0


class VideoError(Exception):
    """A video that cannot be counted; ``reason`` says why, for a ``skipped <name>: <reason>`` line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def is_video_file(path) -> bool:
    """Whether ``path`` names a video file (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_live_source(text: str) -> bool:
    """Whether ``--input`` names a camera (an index such as ``0``) or a stream URL rather than a file."""
    return text.isdigit() or text.lower().startswith(STREAM_SCHEMES)


class VideoSource:
    """Every ``stride``-th frame of ``source``: a video file, a camera index (``"0"``) or a stream URL.

    Iterating yields ``(frame index, time in seconds, H x W x 3 uint8 RGB array)``; frames in between
    are skipped without being decoded. Attributes: ``fps`` (``None`` when the source declares none),
    ``frame_count`` (frames the file declares; ``None`` for cameras and streams), ``frames_read``
    (frames taken from the source so far, skipped ones included) and ``ended_early`` (a file that
    stopped before its declared frame count). Raises ``VideoError`` when the source cannot be opened
    or its frames have more than ``max_pixels`` pixels.
    """

    def __init__(self, source, stride: int = 1, max_pixels: int = None):
        if stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {stride}")
        self.live = is_live_source(str(source))
        self.stride = stride
        self.capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
        if not self.capture.isOpened():
            raise VideoError("cannot be opened as a video (not a format OpenCV reads, a damaged file, or a camera "
                             "or stream that does not answer)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        declared = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = declared if declared > 0 and not self.live else None
        width, height = (int(self.capture.get(prop)) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if max_pixels is not None and width * height > max_pixels:
            self.close()
            raise VideoError(f"frames of {width} x {height} pixels are over the limit of {max_pixels / 1e6:g} MP "
                             "(--max_megapixels)")
        self.frames_read = 0

    @property
    def ended_early(self) -> bool:
        return self.frame_count is not None and self.frames_read < self.frame_count

    def time_of(self, index: int) -> float:
        """Seconds from the start to frame ``index``: from the frame rate, else the source's clock."""
        if self.fps is not None:
            return index / self.fps
        return self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def __iter__(self):
        while True:
            index = self.frames_read
            keep = index % self.stride == 0
            if not self.capture.grab():
                return
            self.frames_read += 1
            if not keep:
                continue
            ok, bgr = self.capture.retrieve()
            if not ok or bgr is None:
                return
            if bgr.ndim == 2:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            yield index, self.time_of(index), np.ascontiguousarray(bgr[:, :, 2::-1])

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """An mp4 file (MPEG-4 part 2, which every OpenCV build with FFmpeg writes) of ``H x W x 3`` uint8
    RGB frames at ``fps``; its size is that of the first frame. ``OSError`` names the file when it
    cannot be written."""

    def __init__(self, path, fps: float):
        self.path, self.fps, self.writer = Path(path), fps, None

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():
                raise OSError(f"could not write the video {self.path}")
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
