"""The service's state, one object per application (``app.state.service``): the counter, the settings
``serve.py`` decided, the two work queues, the video jobs and what the service counted. Routes reach it
through the ``Service`` dependency; ``authorised`` is the token rule as a dependency."""
import hmac
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from inference import Counter

from watching.history import open_history
from watching.site import Site

from .metrics import ServiceMetrics
from .uploads import ApiError
from .videos import VideoJobs, VideoLimits
from .watch import Watcher
from .work import QueueFull, WorkQueue


@dataclass(frozen=True)
class ServiceSettings:
    """What ``serve.py`` decides about the service: the checkpoint's ``name`` as given, the bearer ``token``
    (``None``: none needed), the upload limit in MB, how many requests may wait for the network (and, as
    many, for the CPU's other work), the ``Host`` values answered (``guards.allowed_hosts``; ``None``:
    any), the seconds a client may leave a request's head or body without progress, the video jobs'
    limits, and the cameras to watch: the ``site`` file's, their history's ``database`` (a SQLite file or a
    PostgreSQL URL), the ``webhook`` URL alerts are sent to, and the days of history kept (``None``: all)."""

    name: str
    token: str = None
    max_upload_mb: float = 50.0
    max_queue: int = 16
    allowed_hosts: frozenset = None
    client_timeout_s: float = 15.0
    videos: VideoLimits = field(default_factory=VideoLimits)
    site: Site = None
    database: str = None
    webhook: str = None
    keep_days: float = None

    @property
    def shown_name(self) -> str:
        """The checkpoint as the API shows it: its file name, never the folders it is in."""
        return Path(self.name).name

    @property
    def upload_budget_bytes(self) -> int:
        """Bytes of request bodies under way at once: each waiting request's upload, and a few arriving."""
        return int((self.max_queue + self.videos.active + 2) * self.max_upload_mb * 2 ** 20)


@dataclass
class Statistics:
    """What the network did: ``seconds_per_picture``, a moving average of the seconds a picture took to decode
    and count (``None`` before the first), and the ``pictures`` counted since the start. Written on the
    network's thread only."""

    seconds_per_picture: float = None
    pictures: int = 0

    def record(self, seconds: float) -> None:
        """One more picture, counted in ``seconds``."""
        previous = self.seconds_per_picture
        self.seconds_per_picture = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self.pictures += 1


class ServiceState:
    """Everything the routes share: ``counter`` (loaded once; it runs one picture or frame at a time) and
    ``settings``; ``network``, the queue of pictures, video frames and camera frames for the counter, in
    three lanes taken in turns; ``cpu``, the queue of the other CPU-heavy steps (recounts, density layers,
    long answers, history queries), off the event loop and bounded as the network; the ``videos`` jobs; the
    ``statistics``; with a site file the ``history`` (opened here, so that a bad database stops the start)
    and, once started, the ``watcher`` of its cameras; and the ``metrics``."""

    def __init__(self, counter: Counter, settings: ServiceSettings):
        self.counter, self.settings = counter, settings
        self.network = WorkQueue(settings.max_queue, lanes=("pictures", "frames", "cameras"), name="network")
        self.cpu = WorkQueue(settings.max_queue, name="cpu work")
        self.videos = VideoJobs(counter, self.network, settings.videos)
        self.statistics = Statistics()
        self.history = open_history(settings.database) if settings.site is not None else None
        self.watcher = None
        self.events = None  # the page's event streams (routes.events.EventHub), made by the first
        self.metrics = ServiceMetrics(self)

    def start(self) -> None:
        """Start watching the site's cameras (on the running event loop)."""
        if self.settings.site is None:
            return
        self.watcher = Watcher(self.settings, counter=self.counter, network=self.network, history=self.history,
                               on_count=self.metrics.observe)
        self.watcher.start()

    def busy(self, queue: WorkQueue, lane: str) -> ApiError:
        """The 503 of a full ``lane``, whose ``Retry-After`` (seconds) guesses when its turn would come."""
        waiting = queue.waiting_in(lane)
        retry_after = max(1, math.ceil((self.statistics.seconds_per_picture or 1.0) * (waiting + 1)))
        return ApiError(503, f"busy: {waiting} requests are waiting (serve.py --max_queue); try again shortly",
                        {"Retry-After": str(retry_after), "Connection": "close"})

    def videos_busy(self) -> ApiError:
        """The 503 of a video upload while ``--max_videos`` jobs wait or count."""
        return ApiError(503, f"busy: {self.videos.active} videos are being counted (serve.py --max_videos); try "
                             "again later", {"Retry-After": "30", "Connection": "close"})

    async def run(self, queue: WorkQueue, function, *args, request: Request, lane: str = "default"):
        """``function(*args)`` on ``queue``'s worker, dropped if the client of ``request`` leaves while it
        waits (``ClientGone``); the 503 of ``busy`` when the lane is full."""
        try:
            return await queue.run(function, *args, lane=lane, disconnected=request.is_disconnected)
        except QueueFull:
            raise self.busy(queue, lane) from None

    def begin_stop(self) -> None:
        """The server was asked to stop: end the event streams now, so that it need not wait for them."""
        if self.events is not None:
            self.events.stop()

    async def close(self) -> None:
        """Stop the cameras and the video jobs (their files removed), then the queues' workers and the history."""
        if self.watcher is not None:
            await self.watcher.close()
        await self.videos.close()
        self.network.close()
        self.cpu.close()
        if self.history is not None:
            self.history.close()


async def service_state(request: Request) -> ServiceState:
    """The application's ``ServiceState`` (async: a plain function would run on Starlette's thread pool)."""
    return request.app.state.service


Service = Annotated[ServiceState, Depends(service_state)]


async def authorised(state: Service, request: Request) -> None:
    """401 unless the request carries the token (``Authorization: Bearer <token>``), when one is set."""
    token = state.settings.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "this server needs its token: send the header 'Authorization: Bearer <token>' "
                            "(the --token serve.py was started with)", {"WWW-Authenticate": "Bearer"})
