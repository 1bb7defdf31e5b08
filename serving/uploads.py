"""What a client sends, checked: the upload size limit (enforced while the body streams in), multipart
forms, and the form fields the API takes. Every problem is an ``ApiError``: a 4xx answer with a JSON
body ``{"error": "<one line naming the problem>"}``."""
import json
from argparse import ArgumentTypeError

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from inference.zones import check_polygons
from util.options import at_least, probability

# Form fields are short text (a threshold, zone JSON): larger parts are refused.
MAX_FIELD_BYTES = 1024 * 1024


class ApiError(Exception):
    """An answer that refuses a request: HTTP ``status``, a one-line ``message`` and extra ``headers``."""

    def __init__(self, status: int, message: str, headers: dict = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class UploadTooLarge(Exception):
    """Raised from inside the body stream when it passes the limit."""


class UploadLimit:
    """ASGI middleware that refuses request bodies over ``max_bytes`` with 413: at once when the declared
    ``Content-Length`` is over, else as soon as the streamed body passes it, so that nothing over the
    limit is ever read, buffered or parsed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except UploadTooLarge:
            if not started:
                await self.refuse(send)

    async def refuse(self, send):
        megabytes = self.max_bytes / 2 ** 20
        body = error_body(f"the upload is over the limit of {megabytes:g} MB (serve.py --max_upload_mb)")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, fields: tuple) -> tuple:
    """``(file bytes, file name, {field: text})`` of a multipart request with a part ``file`` and at most
    the text ``fields`` named; the parts are read in memory (the spooled file is closed, so nothing stays
    on disk). ``ClientDisconnect`` propagates: the client is gone and no answer is needed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "expected a multipart/form-data upload with the picture or video in a part named 'file'")
    try:
        form = await request.form(max_files=1, max_fields=len(fields) + 1, max_part_size=MAX_FIELD_BYTES)
    except (ClientDisconnect, UploadTooLarge):
        raise
    except Exception as error:  # Starlette's multipart errors carry the reason in their detail
        raise ApiError(400, f"not a readable multipart upload ({getattr(error, 'detail', error)})") from None
    try:
        unknown = sorted(set(form.keys()) - {"file", *fields})
        if unknown:
            raise ApiError(400, f"unknown form field {unknown[0]!r}; expected 'file' and optionally "
                                + ", ".join(repr(name) for name in fields))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "no file: send the picture or video as a file part named 'file'")
        data = await upload.read()
        if not data:
            raise ApiError(400, f"the file {upload.filename!r} is empty")
        values = {}
        for name in fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise ApiError(400, f"form field {name!r} must be text, not a file")
            if value is not None and value.strip():
                values[name] = value.strip()
        return data, upload.filename or "upload", values
    finally:
        await form.close()


def parse_threshold(text, default: float) -> float:
    """A threshold field: a number in [0, 1] (the rule of ``--threshold``); ``default`` when absent."""
    if text is None:
        return default
    try:
        return probability(str(text))
    except (ArgumentTypeError, ValueError):
        raise ApiError(400, f"threshold: expected a number in [0, 1], got {str(text)[:40]!r}") from None


def parse_polygons(value, field: str) -> dict:
    """A ``zones`` or ``exclude`` field (JSON text, or an already parsed object) as checked polygons."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ApiError(400, f"{field}: not JSON ({error}); expected {{\"name\": [[x, y], [x, y], [x, y]]}}") \
                from None
    try:
        return check_polygons(value, field)
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def parse_flag(text, field: str) -> bool:
    if text is None:
        return False
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{field}: expected true or false, got {text[:40]!r}")


def parse_int(text, field: str, minimum: int, default: int) -> int:
    """A whole-number field of at least ``minimum`` (the rule of ``--frame_stride``); ``default`` when absent."""
    if text is None:
        return default
    try:
        return at_least(minimum)(str(text))
    except (ArgumentTypeError, ValueError):
        raise ApiError(400, f"{field}: expected a whole number of at least {minimum}, got {str(text)[:40]!r}") \
            from None
