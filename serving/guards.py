"""What guards the service before a request reaches a route: the Host and Origin rules (a web page the
user visits must not be able to use a service on 127.0.0.1, by a cross-site form post or by DNS
rebinding), the security headers on every answer, and a deadline for a request's head on each
connection (uvicorn has none: a client sending a header byte now and then would hold its connection
forever)."""
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from util.addresses import is_unspecified

from .uploads import send_error

# The page and its API docs load nothing from elsewhere; pictures shown are data: and blob: URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                           "style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(host: str, port: int, extra: tuple = ()) -> frozenset | None:
    """The ``Host`` header values the service answers when bound to ``host:port`` (``--host``, the port it
    got): the loopback names, the bound address and the ``extra`` names (``--allowed_hosts``), each with
    the port or without it (a page that reaches the server by DNS rebinding names its own host either way).
    ``None`` (any) when bound to every address without ``extra``: then the token, which ``serve.py``
    requires there, is what guards it."""
    if is_unspecified(host) and not extra:
        return None
    names = {*LOOPBACK_NAMES, *(f"[{name}]" if ":" in name else name for name in (host, *extra))}
    names = {name.lower() for name in names if not is_unspecified(name.strip("[]"))}
    values = {f"{name}:{port}" for name in names}
    return frozenset(values | names)


class RequestGuard:
    """ASGI middleware: a ``Host`` header outside ``hosts`` (``allowed_hosts``; ``None``: any) is answered
    400, and a request whose ``Origin`` is not the page's own (its host and port equal to ``Host``) 403.
    Browsers send ``Origin`` on every cross-origin POST, so another site's page cannot make the user's
    browser count pictures here; no CORS headers are ever sent."""

    def __init__(self, app, hosts: frozenset | None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if self.hosts is not None and host not in self.hosts:
            return await send_error(send, 400, f"the Host header {host[:80]!r} does not name this server "
                                                 "(serve.py --allowed_hosts adds names)")
        origin = headers.get(b"origin")
        if origin is not None and urlsplit(origin.decode("latin-1").lower()).netloc != host:
            return await send_error(send, 403, "requests from another site's page are refused (its Origin is "
                                                 "not this server)")
        return await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware, the outermost: ``SECURITY_HEADERS`` on every answer, errors and refusals included."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [header for header in SECURITY_HEADERS if header[0] not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def head_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline: a connection whose request head (request line and headers)
    is not complete ``seconds`` after the connection opened, or after the first byte of a later request
    on it, is closed; so is one answered before its request's body was read. Idle connections between
    requests are closed by uvicorn's keep-alive timeout."""

    class HeadDeadlineProtocol(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self.head_timer is None:
                    self.arm_head_timer()
            else:
                self.disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Answered before its body was read (a refusal): a client that goes on sending it would keep
            # the connection open for ever, as each byte resets the keep-alive timer.
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self.disarm_head_timer()
            super().connection_lost(exc)

        def arm_head_timer(self) -> None:
            self.head_timer = self.loop.call_later(seconds, self.head_too_slow)

        def disarm_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_too_slow(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineProtocol
