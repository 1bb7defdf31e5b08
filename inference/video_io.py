"""Video in and out: frames of a video file, a camera or a stream (``VideoSource``), and an mp4 writer
(``VideoWriter``), both through OpenCV's FFmpeg backend."""
import math
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Frame rate of the written video when the source does not declare one (cameras and some streams).
FALLBACK_FPS = 25.0
# Reconnecting a lost camera or stream: the first wait before a try and the longest (seconds); each failed
# try doubles the wait, as watching.camera.CameraReader does for serve.py's cameras.
BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
# With reconnect, seconds without a frame after which a stream counts as lost, and that opening one may take
# (FFmpeg's read and open timeouts). Without it OpenCV's own defaults (30 s each) stay, as before.
STALL_S = OPEN_TIMEOUT_S = 10.0


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


def open_capture(source, timeouts: bool = False) -> cv2.VideoCapture:
    """OpenCV's capture of a file, a camera index (``"0"``) or a URL. ``timeouts``: open a URL through FFmpeg
    with ``OPEN_TIMEOUT_S`` and ``STALL_S``, so that a dead stream gives up soon and can be reopened."""
    text = str(source)
    if text.isdigit():
        return cv2.VideoCapture(int(text))
    if not timeouts or not is_live_source(text):
        return cv2.VideoCapture(text)
    return cv2.VideoCapture(text, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(OPEN_TIMEOUT_S * 1000),
                                                   cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(STALL_S * 1000)])


class Frame(NamedTuple):
    """A frame of a ``VideoSource``: its ``index`` in the source, ``time_s`` (seconds from the start), ``rgb``
    (``H x W x 3`` uint8) and ``arrived``, the UTC wall-clock time it arrived (cameras and streams; ``None``
    for a file)."""

    index: int
    time_s: float
    rgb: np.ndarray
    arrived: datetime = None


class VideoSource:
    """Every ``stride``-th frame of ``source``: a video file, a camera index (``"0"``) or a stream URL.

    ``frames()`` yields a ``Frame`` per frame, iterating yields ``(frame index, time in seconds, H x W x 3
    uint8 RGB array)``; frames in between are skipped without being decoded. A camera or stream does not
    wait for its reader: a thread takes every frame as it arrives, and each step yields the newest one at
    least ``stride`` frames after the last, with the time since the source was opened and the UTC time it
    arrived. The frames in between are dropped, so a network slower than the stream counts the present
    rather than an ever older backlog.

    ``reconnect`` (cameras and streams only): a source that ends, breaks off or sends nothing for
    ``STALL_S`` seconds is reopened, after ``BACKOFF_S`` and then waits doubling up to ``MAX_BACKOFF_S``,
    until it sends again or ``close()``; frame indices and times go on from before. ``report`` is called
    (from the reader thread) with one line when the source is lost and one when it is back.

    Attributes: ``fps`` (``None`` when the source declares none), ``frame_count`` (frames the file
    declares; ``None`` for cameras and streams), ``frames_read`` (frames taken from the source so far,
    skipped and dropped ones included), ``reconnects`` (times a lost source came back) and ``ended_early``
    (a file that stopped before its declared frame count). Raises ``VideoError`` when the source cannot
    be opened or its frames have more than ``max_pixels`` pixels.
    """

    def __init__(self, source, stride: int = 1, max_pixels: int = None, *, reconnect: bool = False,
                 report=None):
        if stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {stride}")
        self.live = is_live_source(str(source))
        if reconnect and not self.live:
            raise ValueError("reconnect is for cameras and streams; a video file ends where it ends")
        self.source, self.stride, self.max_pixels = source, stride, max_pixels
        self.reconnect, self.report = reconnect, report or (lambda line: None)
        self.stop, self.reader = threading.Event(), None
        self.capture = open_capture(source, timeouts=reconnect)
        if not self.capture.isOpened():
            raise VideoError("cannot be opened as a video (not a format OpenCV reads, a damaged file, or a camera "
                             "or stream that does not answer)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        declared = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = declared if declared > 0 and not self.live else None
        try:
            self.check_declared_size()
        except VideoError:
            self.close()
            raise
        self.frames_read = self.reconnects = 0

    @property
    def ended_early(self) -> bool:
        return self.frame_count is not None and self.frames_read < self.frame_count

    def check_declared_size(self) -> None:
        """``VideoError`` when the frame size the capture declares is over ``max_pixels``."""
        width, height = (int(self.capture.get(prop)) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise VideoError(f"frames of {width} x {height} pixels are over the limit of {self.max_pixels / 1e6:g} MP "
                             "(--max_megapixels)")

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
        for frame in self.frames():
            yield frame.index, frame.time_s, frame.rgb

    def frames(self):
        """A ``Frame`` for every ``stride``-th frame of a file, or the newest frames of a camera or stream."""
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
            yield Frame(index, self.time_of(index), rgb)

    def newest_frames(self):
        """The frames of a camera or stream, newest first (see the class)."""
        newest = threading.Condition()
        state = {"frame": None, "wanted": 0, "ended": False, "error": None}
        opened = time.monotonic()

        def read():
            try:
                while not self.stop.is_set() and self.grab_live():
                    index, seconds, arrived = self.frames_read, time.monotonic() - opened, datetime.now(timezone.utc)
                    self.frames_read += 1
                    with newest:
                        wanted = index >= state["wanted"]
                    rgb = self.decode() if wanted else None
                    if rgb is not None:
                        with newest:
                            state["frame"] = Frame(index, seconds, rgb, arrived)
                            newest.notify()
            except VideoError as error:
                state["error"] = error
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
                state["wanted"] = frame.index + self.stride
            yield frame

    def grab_live(self) -> bool:
        """Grab the next frame of a camera or stream (reader thread). With ``reconnect`` a lost source is
        reopened until it sends again; ``False`` when it ended without, or at ``close()``."""
        started = time.monotonic()
        if self.capture.grab():
            return True
        if not self.reconnect or self.stop.is_set():
            return False
        # A read that gave up after about the read timeout is a stall; a quick failure is a closed stream.
        stalled = time.monotonic() - started >= 0.9 * STALL_S
        self.report(f"lost ({f'no frame for {STALL_S:g} s' if stalled else 'the stream ended or broke off'}); "
                    f"reconnecting, first in {BACKOFF_S:g} s, then waits doubling up to {MAX_BACKOFF_S:g} s")
        return self.reopen(lost=time.monotonic())

    def reopen(self, lost: float) -> bool:
        """Open the source again after each wait until a frame is grabbed (``True``) or ``close()``
        (``False``); ``lost``: ``time.monotonic()`` when it was lost, for the line saying it is back."""
        wait_s, tries = BACKOFF_S, 0
        while not self.stop.wait(wait_s):
            tries += 1
            self.capture.release()
            self.capture = open_capture(self.source, timeouts=True)
            if self.capture.isOpened():
                self.check_declared_size()  # a camera reconfigured beyond the limit cannot be counted
                if self.capture.grab():
                    self.reconnects += 1
                    self.report(f"back after {time.monotonic() - lost:.1f} s ({tries} "
                                f"{'try' if tries == 1 else 'tries'})")
                    return True
            wait_s = min(2 * wait_s, MAX_BACKOFF_S)
        return False

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
