"""``watching.camera.CameraReader`` on real sources: a video file played in a loop, MJPEG over HTTP and RTSP
served on 127.0.0.1 by ``tests/streams.py``, stopped and started again under the reader. Short stall and
backoff settings keep each test within seconds."""
import time
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from crowd_datasets.demo import make_scene
from inference.video_io import VideoWriter
from streams import MjpegServer, RtspServer, require_rtsp, scene_jpegs
from watching.camera import CLOSED, FAILED, LIVE, RECONNECTING, CameraReader

FPS, FRAMES, SIZE = 20.0, 8, (160, 120)
QUICK = dict(stall_s=1.0, open_timeout_s=1.0, backoff_s=0.2, max_backoff_s=0.8)


def write_clip(path):
    """An mp4 of ``FRAMES`` demo scenes of ``SIZE`` (width, height) at ``FPS``: a loop lasts 0.4 s."""
    rng, writer = np.random.default_rng(0), VideoWriter(path, FPS)
    for _ in range(FRAMES):
        writer.write(make_scene(rng, SIZE).image)
    writer.close()
    return path


def wait_for(reader, wanted, timeout_s: float, poll_s: float = 0.02):
    """The reader's first status for which ``wanted(status)`` holds within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = reader.status()
        if wanted(status):
            return status
        time.sleep(poll_s)
    pytest.fail(f"not within {timeout_s} s: {reader.status()}", pytrace=False)


def closes_promptly(reader, within_s: float = 2.0):
    started = time.monotonic()
    assert reader.close(timeout_s=within_s)
    assert time.monotonic() - started < within_s and reader.status().state == CLOSED


def test_a_looping_file_stays_live_and_paced_for_several_loops(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    capture, decoded = cv2.VideoCapture(str(clip)), []
    while (frame := capture.read()[1]) is not None:
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    reader = CameraReader(str(clip), name="loop", **QUICK)
    wait_for(reader, lambda status: status.state == LIVE, timeout_s=5)
    started, states, times, last = time.monotonic(), set(), [], None
    while time.monotonic() - started < 2.0:  # five loops
        states.add(reader.status().state)
        newest = reader.newest(after=last)
        if newest is not None:
            last, rgb = newest
            times.append(last)
            assert rgb.shape == (SIZE[1], SIZE[0], 3) and rgb.dtype == np.uint8
            assert any(np.array_equal(rgb, frame) for frame in decoded)  # RGB, whole, as decoded
        time.sleep(0.01)
    status = reader.status()
    assert states == {LIVE} and status.attempts == 1 and status.reconnects == 0
    assert times == sorted(times) and len(set(times)) == len(times) > 3 * FRAMES
    assert all(moment.tzinfo == timezone.utc for moment in times)
    # Paced at the clip's frame rate, as a camera would send it, not read as fast as it decodes.
    assert 3 * FRAMES <= status.frames_read <= (time.monotonic() - started + 0.5) * FPS + FRAMES
    assert reader.newest(after=times[-1]) is None or reader.newest()[0] > times[-1]
    closes_promptly(reader)


def test_a_file_that_cannot_be_decoded_fails_with_a_reason_and_still_retries(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    reader = CameraReader(str(tmp_path / "broken.mp4"), name="broken", **QUICK)
    status = wait_for(reader, lambda status: status.state == FAILED, timeout_s=5)
    assert "cannot be opened" in status.reason or "no frame could be decoded" in status.reason
    wait_for(reader, lambda status: status.attempts >= 3, timeout_s=5)
    assert reader.newest() is None and reader.status().state == FAILED
    closes_promptly(reader)


def test_frames_over_the_pixel_limit_are_never_kept(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    limit = SIZE[0] * SIZE[1] - 1
    reader = CameraReader(str(clip), name="big", max_pixels=limit, **QUICK)
    status = wait_for(reader, lambda status: status.state == FAILED, timeout_s=5)
    assert status.reason == f"frames of {SIZE[0]} x {SIZE[1]} pixels are over the limit of {limit} pixels"
    assert reader.newest() is None and status.frames_read == 0
    closes_promptly(reader)


def attempt_times(reader, count: int, timeout_s: float) -> list:
    """Monotonic times at which the reader's ``attempts`` went up, from 0 until it reached ``count``."""
    seen, times = 0, []
    deadline = time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        attempts = reader.status().attempts
        times += [time.monotonic()] * (attempts - seen)
        seen = attempts
        time.sleep(0.002)
    return times


def test_a_stream_that_is_not_up_yet_is_retried_with_doubling_backoff_then_followed():
    server = MjpegServer(scene_jpegs(4, size=SIZE), fps=25, lifetime_s=30)
    reader = CameraReader(server.url, name="late", stall_s=1.0, open_timeout_s=1.0, backoff_s=0.1,
                          max_backoff_s=0.8)
    try:
        gaps = np.diff(attempt_times(reader, count=6, timeout_s=5))
        # Nothing listens: each open is refused at once, so attempts are the waits apart.
        assert np.allclose(gaps, [0.1, 0.2, 0.4, 0.8, 0.8], atol=0.1), gaps
        status = reader.status()
        assert status.state == RECONNECTING and "cannot be opened" in status.reason and status.backoff_s == 0.8
        server.start()
        status = wait_for(reader, lambda status: status.state == LIVE, timeout_s=5)
        assert status.reconnects == 0 and status.reason == "" and reader.newest() is not None
    finally:
        server.stop()
        closes_promptly(reader)


def test_a_stalled_http_stream_is_reopened_when_it_comes_back():
    with MjpegServer(scene_jpegs(4, size=SIZE), fps=25, lifetime_s=30) as server:
        reader = CameraReader(server.url, name="gate", **QUICK)
        wait_for(reader, lambda status: status.state == LIVE, timeout_s=5)
        paused = datetime.now(timezone.utc)
        server.pause()  # connected, nothing sent: only the read timeout can tell
        status = wait_for(reader, lambda status: status.state == RECONNECTING, timeout_s=4)
        assert status.reason == "no frame for 1 s" and status.since >= paused
        assert status.last_frame_at <= paused
        server.stop()
        time.sleep(1.0)
        assert reader.status().state == RECONNECTING and reader.newest(after=paused) is None
        server.start()
        status = wait_for(reader, lambda status: status.state == LIVE, timeout_s=5)
        assert status.reconnects == 1 and status.attempts >= 2 and reader.newest(after=paused) is not None
        closes_promptly(reader)


def test_close_returns_while_a_read_blocks_and_the_thread_ends_by_its_read_timeout():
    with MjpegServer(scene_jpegs(2, size=SIZE), fps=25, lifetime_s=30) as server:
        reader = CameraReader(server.url, name="stuck", stall_s=3.0, open_timeout_s=3.0, backoff_s=0.2)
        wait_for(reader, lambda status: status.state == LIVE, timeout_s=5)
        server.pause()
        time.sleep(0.3)  # the reader is now inside a read that waits for a frame
        started = time.monotonic()
        ended = reader.close(timeout_s=0.5)
        assert time.monotonic() - started < 1.0 and reader.status().state == CLOSED
        if not ended:
            reader.thread.join(timeout=4.0)  # FFmpeg's read timeout (stall_s) lets it go
        assert not reader.thread.is_alive()


def test_an_rtsp_camera_killed_for_a_few_seconds_is_followed_again():
    require_rtsp()
    with RtspServer(scene_jpegs(6, size=SIZE), fps=10, lifetime_s=40) as server:
        reader = CameraReader(server.url, name="rtsp", stall_s=2.0, open_timeout_s=4.0, backoff_s=0.2,
                              max_backoff_s=0.8)
        wait_for(reader, lambda status: status.state == LIVE, timeout_s=10)
        killed = datetime.now(timezone.utc)
        server.stop()
        status = wait_for(reader, lambda status: status.state == RECONNECTING, timeout_s=4)
        assert status.since >= killed
        time.sleep(2.0)
        assert reader.status().state == RECONNECTING and reader.status().attempts >= 3
        server.start()
        status = wait_for(reader, lambda status: status.state == LIVE, timeout_s=10)
        assert status.reconnects == 1 and reader.newest(after=killed) is not None
        closes_promptly(reader)
