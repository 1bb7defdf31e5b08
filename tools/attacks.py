"""Hostile and careless clients of ``serve.py`` on 127.0.0.1, for its tests and ``tools/attack_test.py``:
sockets that send a request's head or body a byte now and then or nothing at all, requests that cost the
server much work, and the measures taken meanwhile (``/api/health``'s latency, the server's peak memory).
Every loop here is bounded in count and time and talks to 127.0.0.1 only."""
import json
import socket
import threading
import time

# What a slow socket sends: part of a request's head; the head and then an upload byte by byte; a body the
# server refuses at once (not multipart), and then more of it byte by byte; or nothing.
SLOW_KINDS = ("head", "body", "refused body", "idle")


class SlowClients:
    """``count`` connections to ``127.0.0.1:port``, spread over ``SLOW_KINDS``, each sending a byte every
    ``every_s`` seconds (the idle ones never send) until ``stop()``; ``closed()`` counts those the server
    has closed (or answered and closed)."""

    def __init__(self, port: int, count: int, every_s: float = 0.5):
        self.port, self.every_s = port, every_s
        self.sockets = []
        for index in range(count):
            kind = SLOW_KINDS[index % len(SLOW_KINDS)]
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.setblocking(False)
            self.sockets.append((kind, connection, self.first_bytes(kind)))
        self.halt = threading.Event()
        self.gone = set()
        self.thread = threading.Thread(target=self.trickle, daemon=True)
        self.thread.start()

    def first_bytes(self, kind: str) -> bytes:
        head = f"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode()
        if kind == "head":
            return head + b"X-Slow: " + b"a" * 1000  # never ends its head
        if kind == "body":
            return head + (b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200000\r\n\r\n"
                           b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n')
        if kind == "refused body":
            return head + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200000\r\n\r\n--bx"
        return b""

    def trickle(self) -> None:
        for kind, connection, data in self.sockets:
            self.send(connection, data[:-1000] if kind == "head" else data)
        sent = 0
        while not self.halt.wait(self.every_s) and sent < 1000:
            for kind, connection, data in self.sockets:
                if kind == "head":
                    self.send(connection, data[len(data) - 1000 + sent:len(data) - 999 + sent])
                elif kind in ("body", "refused body"):
                    self.send(connection, b"x")
            sent += 1

    def send(self, connection: socket.socket, data: bytes) -> None:
        if connection.fileno() < 0 or connection in self.gone or not data:
            return
        try:
            connection.send(data)
        except OSError:
            self.gone.add(connection)

    def closed(self) -> int:
        """How many of the connections the server has closed so far."""
        for _, connection, _ in self.sockets:
            if connection in self.gone:
                continue
            try:
                while True:
                    data = connection.recv(65536)
                    if not data:
                        self.gone.add(connection)
                        break
            except BlockingIOError:
                continue
            except OSError:
                self.gone.add(connection)
        return len(self.gone)

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(10)
        for _, connection, _ in self.sockets:
            connection.close()


def health_latencies(service, seconds: float, every_s: float = 0.1) -> list:
    """Seconds each ``/api/health`` call took, calling it every ``every_s`` for ``seconds``; a call that
    failed or timed out (after 30 s) counts as infinitely slow."""
    latencies, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = service.request("GET", "/api/health", timeout=30)[0]
        except OSError:
            status = None
        latencies.append(time.monotonic() - started if status == 200 else float("inf"))
        time.sleep(every_s)
    return latencies


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` so far (MB), from ``/proc``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmHWM for process {pid}")


def zigzag(width: float, height: float, vertices: int) -> list:
    """A polygon of ``vertices`` corners zigzagging across a ``width`` x ``height`` picture: every row of
    the picture crosses about ``vertices`` of its edges, the worst case of point-in-polygon."""
    teeth = vertices // 2
    top = [[width * index / teeth, 0.0 if index % 2 else height] for index in range(teeth)]
    return top + [[width * (teeth - index) / teeth, height / 2] for index in range(vertices - teeth)]


def heavy_recount(points: int, polygons: int, vertices: int, width: int = 1920, height: int = 1080,
                  seed: int = 0) -> bytes:
    """A ``/api/recount`` body that costs the server much work within every limit: ``points`` random
    points, ``polygons`` zigzag zones of ``vertices`` corners and a density layer of the whole picture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = np.column_stack([rng.uniform(0, width, points), rng.uniform(0, height, points), rng.uniform(0, 1, points)])
    zones = {f"zone {index}": zigzag(width, height, vertices) for index in range(polygons)}
    return json.dumps({"points": rows.round(2).tolist(), "threshold": 0.0, "zones": zones, "density": True,
                       "width": width, "height": height}).encode()
