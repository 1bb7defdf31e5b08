"""A ``serve.py`` process on a free port of 127.0.0.1 and a small HTTP client for its API, for the tests and
``tools/load_test.py`` (the standard library's only, so that they need nothing the service does not), and
``png_declaring``, a picture over any pixel limit in a few hundred bytes."""
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDRESS = re.compile(r"on http://\S+:(\d+)/")


class Client:
    """A client of the service listening on ``127.0.0.1:port``."""

    def __init__(self, port: int):
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes = None, headers: dict = None, timeout: float = 120):
        """``(status, headers, body bytes)`` of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: bytes = None, headers: dict = None, timeout: float = 120):
        status, response_headers, data = self.request(method, path, body, headers, timeout)
        return status, response_headers, json.loads(data) if data else None

    def upload(self, path: str, data: bytes, filename: str = "picture.jpg", fields: dict = None,
               headers: dict = None, timeout: float = 120):
        """POST a multipart form: ``data`` as the part ``file``, and the text ``fields``; ``(status, headers,
        JSON)``."""
        body, content_type = multipart(data, filename, fields or {})
        return self.json("POST", path, body, {"Content-Type": content_type, **(headers or {})}, timeout)

    def health(self) -> dict:
        return self.json("GET", "/api/health")[2]

    def wait_until(self, condition, timeout: float = 60) -> dict:
        """Poll ``/api/health`` until ``condition(health)`` holds; the last health."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if condition(health) or time.monotonic() > deadline:
                return health
            time.sleep(0.05)


class Service(Client):
    """``serve.py`` with ``arguments`` on a free port of 127.0.0.1; ``stop()`` sends a signal and returns the
    exit code. Its output is collected in ``output``."""

    def __init__(self, arguments: list, environment: dict = None, startup_s: float = 120):
        self.process = subprocess.Popen([sys.executable, "serve.py", "--port", "0", *arguments], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(environment or {})})
        self.lines, self.port = [], None
        started = threading.Event()

        def read():
            for line in self.process.stdout:
                self.lines.append(line)
                match = ADDRESS.search(line)
                if match:
                    self.port = int(match.group(1))
                    started.set()
            started.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not started.wait(startup_s) or self.port is None:
            self.process.kill()
            raise RuntimeError("serve.py did not start:\n" + self.output)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, stop_signal=signal.SIGTERM, timeout: float = 60) -> int:
        """Stop the server with ``stop_signal`` (SIGINT is Ctrl-C); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.reader.join(10)
        return code


def multipart(data: bytes, filename: str, fields: dict) -> tuple:
    """``(body, content type)`` of a multipart/form-data form with a file part and text parts."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png_declaring(path, width: int, height: int) -> None:
    """A PNG of a few hundred bytes at ``path`` whose header declares ``width x height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
