"""``GET /api/events``: a stream of Server-Sent Events telling the page when a camera was counted or changed
state, or an alert changed. It checks the token itself (EventSource cannot send headers, so ``?token=``
is taken here, and only here), and every stream ends when the server stops (``EventHub.stop``)."""
import asyncio
import hmac
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..answers import answer_fields, json_text
from ..models import CameraAnswer
from ..state import Service, ServiceState, authorised
from ..uploads import ApiError
from .cameras import camera_answer

# GET /api/events: at most this many streams are open at once (each holds a connection); more are answered 503.
MAX_EVENT_STREAMS = 32
# A stream ends after this many seconds; the browser's EventSource opens a new one by itself.
EVENT_STREAM_LIFETIME_S = 3600.0
# A comment line is sent when nothing else was for this many seconds, so that proxies keep the stream open.
KEEP_ALIVE_S = 15.0
# How often the cameras and alerts are compared with what the streams were last told, seconds.
EVENT_CHECK_S = 0.5
# How long the browser waits before it reconnects (the stream's retry: field), milliseconds.
RECONNECT_MS = 3000

log = logging.getLogger("dehaze_p2pnet.events")
router = APIRouter()


@router.get("/api/events", include_in_schema=False)
async def events(request: Request, state: Service):
    """Server-Sent Events (``text/event-stream``) for the page: ``event: camera`` with the camera as
    ``/api/cameras`` lists it whenever it was counted or changed state, ``event: alert`` with ``{"camera",
    "zone", "raised"}`` whenever an alert was raised or cleared, and a comment every ``KEEP_ALIVE_S`` seconds
    of quiet. At most ``MAX_EVENT_STREAMS`` at once (then 503); each ends after ``EVENT_STREAM_LIFETIME_S``.
    The token may come as ``?token=`` (here only: EventSource cannot send headers)."""
    await events_authorised(state, request)
    if state.watcher is None:
        raise ApiError(404, "no cameras: serve.py was started without --site")
    if state.events is None:  # made by the first stream
        state.events = EventHub(state.watcher)
    return EventStreamResponse(state.events)


async def events_authorised(state: ServiceState, request: Request) -> None:
    """The token rule, with the token also accepted as ``?token=`` (compared in constant time)."""
    given, token = request.query_params.get("token"), state.settings.token
    if given is None or token is None:
        return await authorised(state, request)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "this server needs its token: send ?token=<token> or the header 'Authorization: Bearer "
                            "<token>' (the --token serve.py was started with)", {"WWW-Authenticate": "Bearer"})


class EventQueue:
    """What one stream has yet to send: the newest event text per camera and alert (a client that reads slowly
    holds at most one each, never a growing backlog), and an ``asyncio.Event`` set while there is any."""

    def __init__(self):
        self.pending, self.ready = {}, asyncio.Event()

    def put(self, events: dict) -> None:
        self.pending.update(events)
        self.ready.set()

    async def take(self, timeout_s: float) -> str:
        """The pending events as one text, waiting at most ``timeout_s`` seconds for any ("" if none came)."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            return ""
        self.ready.clear()
        text = "".join(self.pending.values())
        self.pending.clear()
        return text


class EventHub:
    """The event streams of one service. While any is open, one task compares every ``EVENT_CHECK_S`` seconds
    each camera's count and state, and each alert rule's state, with what it saw last (reading memory only:
    no history query, no encoding of frames) and hands what changed to every stream's ``EventQueue``."""

    def __init__(self, watcher):
        self.watcher, self.queues, self.seen, self.task = watcher, set(), {}, None
        self.stopping = False

    def stop(self) -> None:
        """The server is stopping: every stream ends now (else the server would wait for each to end by itself,
        which an event stream never does) and no new one opens."""
        self.stopping = True
        for queue in self.queues:
            queue.ready.set()

    def open(self) -> EventQueue:
        """A new stream's queue; ``ApiError`` 503 when ``MAX_EVENT_STREAMS`` are open."""
        if self.stopping:
            raise ApiError(503, "the server is stopping", {"Retry-After": "30"})
        if len(self.queues) >= MAX_EVENT_STREAMS:
            raise ApiError(503, f"busy: {MAX_EVENT_STREAMS} event streams are open (GET /api/events); try again "
                                "shortly", {"Retry-After": "30"})
        queue = EventQueue()
        self.queues.add(queue)
        if self.task is None:
            self.changes()  # what is now is the starting point: a page reads it from the other routes
            self.task = asyncio.create_task(self.run(), name="camera events")
        return queue

    def close(self, queue: EventQueue) -> None:
        self.queues.discard(queue)
        if not self.queues and self.task is not None:
            self.task.cancel()
            self.task = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EVENT_CHECK_S)
            try:
                changed = self.changes()
            except Exception:  # a camera being replaced or closed mid-read: the next check sees it settled
                log.exception("events: checking the cameras failed")
                continue
            if changed:
                for queue in self.queues:
                    queue.put(changed)

    def changes(self) -> dict:
        """Key -> event text of each camera and alert rule that changed since the last call."""
        changed = {}
        for name, view in self.watcher.views.items():
            answer = answer_fields(camera_answer(CameraAnswer, view))
            marker = (answer["frames_counted"], answer["state"], answer["since"], answer["reason"])
            if self.seen.get(("camera", name)) != marker:
                self.seen[("camera", name)] = marker
                changed[("camera", name)] = f"event: camera\ndata: {json_text(answer)}\n\n"
            for zone, raised in self.watcher.active_alerts(name).items():
                if self.seen.get(("alert", name, zone)) != raised:
                    self.seen[("alert", name, zone)] = raised
                    body = json_text({"camera": name, "zone": zone, "raised": raised})
                    changed[("alert", name, zone)] = f"event: alert\ndata: {body}\n\n"
        return changed


async def event_lines(queue: EventQueue, hub: EventHub, ends_at: float):
    """The stream's text: the reconnection delay, then events as they come and a comment after each
    ``KEEP_ALIVE_S`` seconds of quiet, until ``ends_at`` (``time.monotonic()``) or the server stops."""
    yield f"retry: {RECONNECT_MS}\n: connected\n\n"
    while (left := ends_at - time.monotonic()) > 0 and not hub.stopping:
        text = await queue.take(min(KEEP_ALIVE_S, left))
        if hub.stopping:
            return
        yield text or ": keep-alive\n\n"


class EventStreamResponse(Response):
    """``GET /api/events``'s answer: takes a place among the hub's streams when it starts sending (503 when
    there is none) and gives it back however it ends: at its lifetime, the client leaving, or the server
    stopping."""

    media_type = "text/event-stream"

    def __init__(self, hub: EventHub):
        super().__init__()
        self.hub = hub

    async def __call__(self, scope, receive, send):
        try:
            queue = self.hub.open()
        except ApiError as refusal:
            refused = JSONResponse({"error": refusal.message}, refusal.status, headers=refusal.headers)
            return await refused(scope, receive, send)
        try:
            # no-transform and X-Accel-Buffering: proxies must pass each event on as it comes.
            stream = StreamingResponse(event_lines(queue, self.hub, time.monotonic() + EVENT_STREAM_LIFETIME_S),
                                       media_type=self.media_type,
                                       headers={"Cache-Control": "no-store, no-transform", "X-Accel-Buffering": "no"})
            await stream(scope, receive, send)
        finally:
            self.hub.close(queue)

