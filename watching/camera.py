"""One camera watched around the clock: ``CameraReader`` keeps the newest frame of a source, reopening it
whenever it drops, so that whoever counts it always gets the present.

States (``CameraReader.status().state``), each with ``since`` (UTC, when it was entered) and a ``reason``:

- ``connecting``: opening the source the first time, no frame yet;
- ``live``: frames arrive;
- ``reconnecting``: the source could not be opened, ended, broke off, or gave no frame for ``stall_s``
  seconds; it is closed and opened again after a wait that starts at ``backoff_s`` and doubles up to
  ``max_backoff_s`` (back to ``backoff_s`` once a frame arrives), forever;
- ``failed``: retrying cannot help until someone changes the source: its frames are over ``max_pixels`` (no
  such frame is ever kept), or a video file cannot be opened or decoded at all. A failed camera still
  retries with the same backoff (a camera can be reconfigured, a file replaced); the state stays ``failed``
  until a frame is kept;
- ``closed``: after ``close()``.

A file source is played in a loop at its declared frame rate (``FALLBACK_FPS`` without one), so that it
behaves like a camera. URLs are opened through OpenCV's FFmpeg backend with its open and read timeouts
(``open_timeout_s``, ``stall_s``), so that a read on a dead stream gives up instead of blocking forever.
"""
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np

from inference.video_io import FALLBACK_FPS, is_live_source

CONNECTING, LIVE, RECONNECTING, FAILED, CLOSED = "connecting", "live", "reconnecting", "failed", "closed"


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of a reader. ``since``: UTC time the state was entered; ``reason``: why the camera is not
    live (``""`` when it is); ``frames_read``: frames taken from the source, every loop of a file included;
    ``reconnects``: times the camera came back live after it was lost; ``attempts``: times the source was
    opened, the first included; ``last_frame_at``: UTC arrival of the newest frame (``None`` before one);
    ``backoff_s``: the wait before the next try while not live."""
    state: str
    since: datetime
    reason: str
    frames_read: int
    reconnects: int
    attempts: int
    last_frame_at: datetime | None
    backoff_s: float


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Lost(Exception):
    """The source was lost; ``state`` (``reconnecting`` or ``failed``) and ``reason`` say how."""

    def __init__(self, state: str, reason: str):
        super().__init__(reason)
        self.state, self.reason = state, reason


class CameraReader:
    """A thread that reads ``source`` (a URL, a video file played in a loop, or a camera index such as
    ``"0"``) continuously and keeps only its newest frame, with its UTC time of arrival (see the module's
    docstring for the states and retries). It never raises into its caller: ``status()`` says how it goes.

    ``stall_s``: seconds without a frame after which the source counts as lost (also FFmpeg's read timeout);
    ``open_timeout_s``: how long opening a URL may take; ``backoff_s``, ``max_backoff_s``: the first and
    the longest wait between tries; ``max_pixels``: frames with more pixels are never kept (``None``: no
    limit). At most two frames are held: the newest and the one being read.
    """

    def __init__(self, source: str, *, name: str = "camera", stall_s: float = 10.0, open_timeout_s: float = 10.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, max_pixels: int = None):
        if not 0 < backoff_s <= max_backoff_s or stall_s <= 0 or open_timeout_s <= 0:
            raise ValueError("stall_s and open_timeout_s must be positive, and 0 < backoff_s <= max_backoff_s")
        self.source, self.name, self.max_pixels = str(source), name, max_pixels
        self.stall_s, self.open_timeout_s = stall_s, open_timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.kind = "index" if self.source.isdigit() else "url" if is_live_source(self.source) else "file"
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.frame = None  # (UTC time, H x W x 3 uint8 BGR, or H x W grey): only ever replaced, never written
        self.state, self.since, self.reason, self.wait_s = CONNECTING, utc_now(), "opening the source", backoff_s
        self.frames_read = self.reconnects = self.attempts = 0
        self.was_live = False
        self.thread = threading.Thread(target=self.run, name=f"camera {name}", daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def newest(self, after: datetime = None):
        """``(UTC time, H x W x 3 uint8 RGB array)`` of the newest frame, or ``None`` when there is none yet
        or none that arrived after ``after``. The array is the caller's own (converted from the kept frame,
        the one copy needed); while the camera is not live the newest frame is an old one: see its time."""
        with self.lock:
            frame = self.frame
        if frame is None or (after is not None and frame[0] <= after):
            return None
        arrived, image = frame
        return arrived, cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)

    def status(self) -> CameraStatus:
        """How the camera goes now. A read that blocks past ``stall_s`` (a backend without a read timeout,
        such as a local camera's) already shows as ``reconnecting`` while the thread waits for it to return."""
        with self.lock:
            last = self.frame[0] if self.frame is not None else None
            state, since, reason = self.state, self.since, self.reason
            snapshot = dict(frames_read=self.frames_read, reconnects=self.reconnects, attempts=self.attempts,
                            last_frame_at=last, backoff_s=self.wait_s)
        overdue = last + timedelta(seconds=self.stall_s) if last is not None else None
        if state == LIVE and overdue is not None and utc_now() > overdue:
            state, since, reason = RECONNECTING, overdue, f"no frame for {self.stall_s:g} s"
        return CameraStatus(state=state, since=since, reason=reason, **snapshot)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stops the thread; whether it ended within ``timeout_s`` seconds. A thread still inside a blocking
        open or read ends by itself when that times out (``open_timeout_s``, ``stall_s``) and releases the
        source then: only that thread ever touches it."""
        self.stop.set()
        with self.lock:
            self.state, self.since, self.reason = CLOSED, utc_now(), "closed"
        self.thread.join(timeout=timeout_s)
        return not self.thread.is_alive()

    def set_state(self, state: str, reason: str = "") -> None:
        with self.lock:
            if self.stop.is_set() or (state == self.state and reason == self.reason):
                return
            self.state, self.since, self.reason = state, utc_now(), reason

    def run(self) -> None:
        """Open, read until lost, wait, and again, until ``close()``."""
        wait_s = self.backoff_s
        while not self.stop.is_set():
            with self.lock:
                self.attempts += 1
            try:
                self.read_session()
                return  # only a close() ends a session without losing the source
            except Exception as error:  # the thread must outlive anything a source does
                lost = error if isinstance(error, Lost) else Lost(RECONNECTING, f"{type(error).__name__}: {error}")
                if self.stop.is_set():
                    return
                if self.state == LIVE:
                    wait_s = self.backoff_s
                with self.lock:
                    self.wait_s = wait_s
                self.set_state(lost.state, " ".join(lost.reason.split()))
            if self.stop.wait(wait_s):
                return
            wait_s = min(2 * wait_s, self.max_backoff_s)

    def open_capture(self) -> cv2.VideoCapture:
        if self.kind == "index":
            return cv2.VideoCapture(int(self.source))
        if self.kind == "file":
            return cv2.VideoCapture(self.source, cv2.CAP_FFMPEG)
        # Without these FFmpeg waits forever for a stream that stopped sending (and close() with it).
        return cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.stall_s * 1000)])

    def read_session(self) -> None:
        """Open the source and keep its newest frame until ``close()`` (returns) or until the source is lost
        (``Lost``). The capture is released here, by the one thread that uses it."""
        capture = self.open_capture()
        try:
            if not capture.isOpened():
                raise Lost(FAILED if self.kind == "file" else RECONNECTING, self.unopened_reason())
            self.check_declared_size(capture)
            if self.kind == "file":
                self.play_file(capture)
            else:
                self.follow_stream(capture)
        finally:
            capture.release()

    def unopened_reason(self) -> str:
        if self.kind == "file":
            return "cannot be opened as a video (not a format OpenCV reads, or a damaged file)"
        if self.kind == "index":
            return f"camera {self.source} cannot be opened (not connected, or in use by another program)"
        return f"cannot be opened (no answer within {self.open_timeout_s:g} s, refused, or not a video)"

    def check_declared_size(self, capture: cv2.VideoCapture) -> None:
        """Refuses a source whose declared frame size is over ``max_pixels`` before any frame is decoded."""
        width, height = (int(capture.get(prop)) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise Lost(FAILED, self.size_reason(width, height))

    def size_reason(self, width: int, height: int) -> str:
        return f"frames of {width} x {height} pixels are over the limit of {self.max_pixels} pixels"

    def follow_stream(self, capture: cv2.VideoCapture) -> None:
        """Keep the newest frame of a camera or stream, as fast as it sends them."""
        while not self.stop.is_set():
            started = time.monotonic()
            ok, image = capture.read()
            if self.stop.is_set():
                return
            if not ok or image is None:
                waited = time.monotonic() - started
                raise Lost(RECONNECTING, f"no frame for {self.stall_s:g} s" if waited >= 0.9 * self.stall_s
                           else "the stream ended or broke off")
            self.keep(image)

    def play_file(self, capture: cv2.VideoCapture) -> None:
        """Play a video file in a loop at its frame rate, keeping the newest frame, as a camera would."""
        fps = capture.get(cv2.CAP_PROP_FPS)
        period = 1.0 / (fps if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS)
        due, since_start, looped = time.monotonic(), 0, False
        while not self.stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                if since_start == 0 and looped:
                    raise Lost(RECONNECTING, "no frame after seeking back to the start; opening it again")
                if since_start == 0:
                    raise Lost(FAILED, "no frame could be decoded")
                # The end: start again, as a camera would go on.
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                since_start, looped = 0, True
                continue
            since_start += 1
            self.keep(image)
            due += period
            # Behind by more than a frame (a slow decode, a busy machine): carry on from now, without a burst.
            due = max(due, time.monotonic() - period)
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return

    def keep(self, image: np.ndarray) -> None:
        """Make ``image`` (BGR or grey, as OpenCV reads it) the newest frame, unless it is over the limit."""
        height, width = image.shape[:2]
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise Lost(FAILED, self.size_reason(width, height))
        with self.lock:
            self.frame = (utc_now(), image)
            self.frames_read += 1
            if self.state == LIVE or self.stop.is_set():
                return
            if self.was_live:
                self.reconnects += 1
            self.state, self.since, self.reason, self.was_live = LIVE, self.frame[0], "", True
