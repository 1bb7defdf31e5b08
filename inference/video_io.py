"""Video in and out: frames of a video file, a camera or a stream (``VideoSource``), and an mp4 writer
(``VideoWriter``), both through OpenCV's FFmpeg backend."""
import math
import threading
import time
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
    are skipped without being decoded. A camera or stream does not wait for its reader: a thread takes
    every frame as it arrives, and each step yields the newest one at least ``stride`` frames after the
    last, with the time since the source was opened. The frames in between are dropped, so a network
    slower than the stream counts the present rather than an ever older backlog.

    Attributes: ``fps`` (``None`` when the source declares none), ``frame_count`` (frames the file
    declares; ``None`` for cameras and streams), ``frames_read`` (frames taken from the source so far,
    skipped and dropped ones included) and ``ended_early`` (a file that stopped before its declared
    frame count). Raises ``VideoError`` when the source cannot be opened or its frames have more than
    ``max_pixels`` pixels.
    """

    def __init__(self, source, stride: int = 1, max_pixels: int = None):
        if stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {stride}")
        self.live = is_live_source(str(source))
        self.stride, self.max_pixels = stride, max_pixels
        self.stop, self.reader = threading.Event(), None
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

    def decode(self):
        """The frame just grabbed as ``H x W x 3`` uint8 RGB, or ``None`` when it cannot be decoded;
        ``VideoError`` when it has more than ``max_pixels`` pixels (a stream may change its size midway)."""
        ok, bgr = self.capture.retrieve()
        if not ok or bgr is None:
            return None
        if self.max_pixels is not None and bgr.shape[0] * bgr.shape[1] > self.max_pixels:
            raise VideoError(f"frame {self.frames_read - 1} has {bgr.shape[1]} x {bgr.shape[0]} pixels, over the "
                             f"limit of {self.max_pixels / 1e6:g} MP (--max_megapixels)")
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)

    def __iter__(self):
        if self.live:
            yield from self.newest_frames()
            return
        while True:
            index = self.frames_read
            if not self.capture.grab():
                return
            self.frames_read += 1
            if index % self.stride:
                continue
            rgb = self.decode()
            if rgb is None:
                return
            yield index, self.time_of(index), rgb

    def newest_frames(self):
        """The frames of a camera or stream, newest first (see the class)."""
        newest = threading.Condition()
        state = {"frame": None, "wanted": 0, "ended": False, "error": None}
        opened = time.monotonic()

        def read():
            try:
                while not self.stop.is_set() and self.capture.grab():
                    index, seconds = self.frames_read, time.monotonic() - opened
                    self.frames_read += 1
                    with newest:
                        wanted = index >= state["wanted"]
                    try:
                        rgb = self.decode() if wanted else None
                    except VideoError as error:
                        state["error"] = error
                        return
                    if rgb is not None:
                        with newest:
                            state["frame"] = (index, seconds, rgb)
                            newest.notify()
            finally:
                with newest:
                    state["ended"] = True
                    newest.notify()

        self.reader = threading.Thread(target=read, name="video reader", daemon=True)
        self.reader.start()
        while True:
            with newest:
                newest.wait_for(lambda: state["frame"] is not None or state["ended"])
                if state["frame"] is None:
                    if state["error"] is not None:
                        raise state["error"]
                    return
                frame, state["frame"] = state["frame"], None
                state["wanted"] = frame[0] + self.stride
            yield frame

    def close(self) -> None:
        """Stop the reader thread, if any, and release the source."""
        self.stop.set()
        if self.reader is not None:
            self.reader.join(timeout=10)
            if self.reader.is_alive():
                return  # still inside a blocking read: releasing the capture under it could crash
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
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
