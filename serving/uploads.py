"""What a client sends, read within bounds: the upload size limit (enforced while the body streams in),
multipart forms and JSON bodies (their fields are checked by ``serving.fields``). Every problem is an
``ApiError``: a 4xx answer with a JSON body ``{"error": "<one line naming the problem>"}``."""
import asyncio
import json
import time

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

# Form fields are short text (a threshold, zone JSON): larger parts are refused.
MAX_FIELD_BYTES = 1024 * 1024
# Names a client sent are echoed back (in errors, a video job's name) cut to this many characters.
MAX_SHOWN_CHARS = 100


class ApiError(Exception):
    """An answer that refuses a request: HTTP ``status``, a one-line ``message`` and extra ``headers``."""

    def __init__(self, status: int, message: str, headers: dict = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def shown_name(text: str) -> str:
    """A name a client sent (a file name, a field, a job id) as the service may echo it: control characters
    replaced and cut to ``MAX_SHOWN_CHARS``."""
    text = "".join(character if character.isprintable() else "?" for character in str(text)[:MAX_SHOWN_CHARS + 1])
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 1] + "…"


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class UploadRefused(Exception):
    """Raised from inside the body stream to refuse the request with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: dict = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class UploadLimit:
    """ASGI middleware that bounds what reading request bodies can cost.

    - ``max_bytes`` per request: a declared ``Content-Length`` over it is refused with 413 at once, before
      any of the body is read, and a streamed body as soon as it passes it.
    - ``budget_bytes`` across all requests under way (uploads still arriving, and those read and waiting
      for the network): a request that would pass it is answered 503 with ``Retry-After``, so that
      memory and temporary files stay bounded however many clients upload at once.
    - ``client_timeout_s``: a body that sends nothing for that long is answered 408, and so is one that
      arrives, after that grace, slower than ``MIN_UPLOAD_BYTES_PER_S`` on average: a client sending a
      byte now and then cannot hold its request forever.
    """

    def __init__(self, app, max_bytes: int, budget_bytes: int, client_timeout_s: float):
        self.app, self.max_bytes, self.budget_bytes = app, max_bytes, budget_bytes
        self.client_timeout_s = client_timeout_s
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and declared > self.max_bytes:
            return await refuse(send, self.too_large())
        if declared is not None and self.in_flight + declared > self.budget_bytes:
            return await refuse(send, self.over_budget())
        body = BodyMeter(self, receive, declared)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, tracked_send)
        except UploadRefused as refusal:
            if not started:
                await refuse(send, refusal)
        finally:
            self.in_flight -= body.received

    def too_large(self) -> UploadRefused:
        megabytes = self.max_bytes / 2 ** 20
        return UploadRefused(413, f"the upload is over the limit of {megabytes:g} MB (serve.py --max_upload_mb)")

    def over_budget(self) -> UploadRefused:
        return UploadRefused(503, "busy: other uploads fill the server's upload memory; try again shortly",
                             {"Retry-After": "5"})


# After the grace of --client_timeout_s, an upload must arrive at least this fast on average (bytes per
# second): 256 kbit/s, slower than any phone's upload, faster than a client holding its request open.
MIN_UPLOAD_BYTES_PER_S = 32 * 1024


class BodyMeter:
    """The ``receive`` of one request, counting its body into the limit's bytes in flight and enforcing
    its size limit, budget and timeouts (``UploadLimit``)."""

    def __init__(self, limit: UploadLimit, receive, declared: int):
        self.limit, self.inner, self.received, self.done = limit, receive, 0, False
        expected = declared if declared is not None else limit.max_bytes
        self.deadline = time.monotonic() + limit.client_timeout_s + expected / MIN_UPLOAD_BYTES_PER_S

    async def receive(self):
        if self.done:
            return await self.inner()
        timeout = min(self.limit.client_timeout_s, self.deadline - time.monotonic())
        try:
            message = await asyncio.wait_for(self.inner(), max(timeout, 0.001))
        except TimeoutError:
            raise UploadRefused(408, f"the upload stalled: nothing arrived for {self.limit.client_timeout_s:g} s, "
                                     "or it arrived too slowly (serve.py --client_timeout_s)") from None
        if message["type"] != "http.request":
            self.done = True
            return message
        size = len(message.get("body", b""))
        self.received += size
        self.limit.in_flight += size
        self.done = not message.get("more_body", False)
        if self.received > self.limit.max_bytes:
            raise self.limit.too_large()
        if self.limit.in_flight > self.limit.budget_bytes:
            raise self.limit.over_budget()
        return message


async def refuse(send, refusal: UploadRefused) -> None:
    await send_error(send, refusal.status, refusal.message, refusal.headers)


async def send_error(send, status: int, message: str, headers: dict = None) -> None:
    """Answer ``{"error": message}`` with ``status`` from ASGI middleware, and close the connection (the rest of
    the body, if any, is never read)."""
    body = error_body(message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, fields: tuple) -> tuple:
    """``(file bytes, file name, {field: text})`` of a multipart request with a part ``file`` and at most
    the text ``fields`` named; the parts are read in memory (the spooled file is closed, so nothing stays
    on disk). ``ClientDisconnect`` propagates: the client is gone and no answer is needed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "expected a multipart/form-data upload with the picture or video in a part named 'file'")
    try:
        form = await request.form(max_files=1, max_fields=len(fields) + 1, max_part_size=MAX_FIELD_BYTES)
    except (ClientDisconnect, UploadRefused):
        raise
    except Exception as error:  # Starlette's multipart errors carry the reason in their detail
        raise ApiError(400, f"not a readable multipart upload ({getattr(error, 'detail', error)})") from None
    try:
        unknown = sorted(set(form.keys()) - {"file", *fields})
        if unknown:
            raise ApiError(400, f"unknown form field {shown_name(unknown[0])!r}; expected 'file' and optionally "
                                + ", ".join(repr(name) for name in fields))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "no file: send the picture or video as a file part named 'file'")
        data = await upload.read()
        filename = shown_name(upload.filename or "upload")
        if not data:
            raise ApiError(400, f"the file {filename!r} is empty")
        values = {}
        for name in fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise ApiError(400, f"form field {name!r} must be text, not a file")
            if value is not None and value.strip():
                values[name] = value.strip()
        return data, filename, values
    finally:
        await form.close()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body of a request that is not an upload (a recount's JSON), refused with 413 past
    ``max_bytes`` as it arrives."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the request body is over the limit of {max_bytes / 2 ** 20:g} MB for this route",
                           {"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)
