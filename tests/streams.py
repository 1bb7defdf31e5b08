"""Live test streams on 127.0.0.1, for tests of readers of cameras: each can be stopped mid-run and started
again on the same port, and stops by itself after ``lifetime_s`` seconds whatever the test does.

- ``MjpegServer``: MJPEG over HTTP (``multipart/x-mixed-replace`` of JPEG frames, as many IP cameras
  send), served by a thread of this process; ``pause()`` keeps its clients connected but sends nothing (a
  stalled camera).
- ``RtspServer``: RTSP (RTP/JPEG) from Debian's GStreamer RTSP server, in a child process of the system's
  ``/usr/bin/python3`` (which has ``gi``); ``rtsp_problem()`` says what is missing for it, and
  ``require_rtsp()`` skips a test without it, or fails it under ``CI``.

Run as a script (``python3 tests/streams.py rtsp PORT FOLDER FPS LIFETIME_S``), this file is that RTSP server;
the stdlib is all it imports at the top, so that the system's python can run it.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good python3-gi"
# multifilesrc loops the frames; jpegdec ! videoconvert ! jpegenc makes each a baseline JPEG that rtpjpegpay
# can packetise whatever encoder wrote it.
RTSP_ELEMENTS = ("multifilesrc", "jpegdec", "videoconvert", "jpegenc", "rtpjpegpay")
RTSP_PATH = "/stream"
BOUNDARY = "frame"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scene_jpegs(count: int, *, size=(320, 240), seed: int = 0) -> list:
    """``count`` JPEG-encoded demo crowd scenes of ``size`` (width, height) pixels, as bytes."""
    import cv2
    import numpy as np

    from crowd_datasets.demo import make_scene

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        bgr = cv2.cvtColor(make_scene(rng, size).image, cv2.COLOR_RGB2BGR)
        frames.append(cv2.imencode(".jpg", bgr)[1].tobytes())
    return frames


def wait_for_port(port: int, timeout_s: float) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class MjpegHandler(BaseHTTPRequestHandler):
    """Sends the server's frames in a loop at its frame rate, until the client leaves or the server stops."""
    timeout = 5  # seconds a write may block on a client that stopped reading

    def do_GET(self):
        stream, running = self.server.stream, self.server.running
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        index = 0
        while running.is_set():
            if not stream.paused.is_set():
                frame = stream.frames[index % len(stream.frames)]
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n\r\n"
                try:
                    self.wfile.write(head.encode() + frame + b"\r\n")
                    self.wfile.flush()
                except OSError:
                    return
                index += 1
            time.sleep(1.0 / stream.fps)
        self.close_connection = True

    def log_message(self, *args):
        pass  # one line per request on stderr would drown the test's output


class MjpegServer:
    """MJPEG over HTTP at ``url`` (``http://127.0.0.1:PORT/stream.mjpg``): ``frames`` (JPEG bytes) in a loop at
    ``fps``. ``start()`` and ``stop()`` may alternate; the port stays the same. Stops itself ``lifetime_s``
    seconds after it was made."""

    def __init__(self, frames: list, *, fps: float = 25.0, port: int = None, lifetime_s: float = 120.0):
        self.frames, self.fps, self.port = frames, fps, port or free_port()
        self.paused, self.server, self.lock = threading.Event(), None, threading.Lock()
        self.timer = threading.Timer(lifetime_s, self.stop)
        self.timer.daemon = True
        self.timer.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        with self.lock:
            self.paused.clear()
            server = ThreadingHTTPServer(("127.0.0.1", self.port), MjpegHandler)  # allow_reuse_address is set
            # Each start has its own event: a client of the last one never sees this one as running.
            server.daemon_threads, server.stream, server.running = True, self, threading.Event()
            server.running.set()
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            self.server = server
        return self

    def pause(self) -> None:
        """Clients stay connected and get nothing: a stalled stream."""
        self.paused.set()

    def stop(self) -> None:
        """Close the port and every client's connection (within a frame's time)."""
        with self.lock:
            server, self.server = self.server, None
        if server is not None:
            server.running.clear()
            server.shutdown()
            server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.timer.cancel()
        self.stop()


def rtsp_problem():
    """Why ``RtspServer`` cannot run here (one line), or ``None``."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs {SYSTEM_PYTHON} with gi (apt-get install {RTSP_PACKAGES})"
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             f"print(' '.join(e for e in {RTSP_ELEMENTS!r} if Gst.ElementFactory.find(e) is None))")
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"{SYSTEM_PYTHON} took over 30 s to load GStreamer"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"needs GStreamer's RTSP server for {SYSTEM_PYTHON} ({last}; apt-get install {RTSP_PACKAGES})"
    if done.stdout.strip():
        return f"needs the GStreamer elements {done.stdout.strip()} (apt-get install {RTSP_PACKAGES})"
    return None


def require_rtsp() -> None:
    """Skip the calling test without ``RtspServer``'s parts; under ``CI`` (1, true, yes) fail it instead."""
    import pytest

    problem = rtsp_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"RTSP test under CI: {problem}", pytrace=False)
    pytest.skip(problem)


class RtspServer:
    """RTSP at ``url`` (``rtsp://127.0.0.1:PORT/stream``): ``frames`` (JPEG bytes) in a loop at ``fps``, as
    RTP/JPEG, from GStreamer's RTSP server in a child process. ``start()`` (waits until the port answers)
    and ``stop()`` (kills the process) may alternate on the same port; the process ends by itself
    ``lifetime_s`` seconds after each start."""

    def __init__(self, frames: list, *, fps: float = 10.0, port: int = None, lifetime_s: float = 120.0):
        self.fps, self.port, self.lifetime_s, self.process = fps, port or free_port(), lifetime_s, None
        self.folder = tempfile.TemporaryDirectory(prefix="rtsp-frames-")
        for index, frame in enumerate(frames):
            (Path(self.folder.name) / f"{index:05d}.jpg").write_bytes(frame)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{RTSP_PATH}"

    def start(self, timeout_s: float = 15.0) -> "RtspServer":
        command = [SYSTEM_PYTHON, __file__, "rtsp", str(self.port), self.folder.name, str(self.fps),
                   str(self.lifetime_s)]
        # Its messages go to a file, not a pipe: nobody reads while it runs, and a full pipe would stop it.
        log = Path(self.folder.name) / "server.log"
        with open(log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output)
        if not wait_for_port(self.port, timeout_s):
            self.stop()
            error = log.read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"the RTSP server did not listen on port {self.port} within {timeout_s:g} s: "
                               f"{error[-1] if error else 'no output'}")
        return self

    def stop(self) -> None:
        """Kill the server at once, as a camera that loses power."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
        self.folder.cleanup()


def serve_rtsp(port: int, folder: str, fps: float, lifetime_s: float) -> None:
    """The RTSP server's process (see ``RtspServer``); runs under the system's python3."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    rate = f"{round(fps * 1000)}/1000"
    factory.set_launch(f'( multifilesrc location="{folder}/%05d.jpg" index=0 loop=true '
                       f'caps="image/jpeg,framerate={rate}" ! jpegdec ! videoconvert ! jpegenc ! '
                       "rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)  # one pipeline for every client, as a camera has
    server.get_mount_points().add_factory(RTSP_PATH, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.timeout_add(round(lifetime_s * 1000), loop.quit)
    loop.run()


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "rtsp":
        sys.exit("usage: python3 tests/streams.py rtsp PORT FOLDER FPS LIFETIME_S")
    serve_rtsp(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
