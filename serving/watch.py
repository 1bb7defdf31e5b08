"""The cameras of a site file (``serve.py --site site.toml``), counted around the clock: one reader per
camera keeps its newest frame (``watching.camera``), and one task per camera takes it every ``every_s``
seconds to the network, in a lane of its own (pictures people upload and video jobs keep their turns),
stores the count in the history (``watching.history``) and feeds the camera's alerts."""
import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from inference import Counter, CountingOptions, CountResult
from watching.alerts import AlertWatch, Webhook
from watching.camera import FAILED, LIVE, CameraReader
from watching.history import History
from watching.site import CameraSpec

from .work import WorkQueue

log = logging.getLogger("dehaze_p2pnet.cameras")
# A camera whose reader has no new frame is asked again after this many seconds (at most every_s).
NO_FRAME_RETRY_S = 0.5
# After a failure of the counting step itself (not of the camera), the task waits this long and goes on.
FAILURE_PAUSE_S = 5.0
# Weight of the newest interval in the achieved interval (a moving average).
INTERVAL_WEIGHT = 0.2
PRUNE_EVERY_S = 3600


@dataclass
class CameraView:
    """One camera as the service knows it: its ``spec``, its ``reader``, what it is counted with
    (``options``), the newest count (``result`` of the frame ``frame``, an ``H x W x 3`` uint8 RGB array,
    taken at ``counted_at``, UTC), how many frames it counted, the ``interval_s`` achieved between counts
    (a moving average, seconds) and the seconds each count took on the network (``seconds``, the last)."""

    spec: CameraSpec
    reader: CameraReader
    options: CountingOptions
    result: CountResult = None
    frame: np.ndarray = None
    counted_at: datetime = None
    counted: int = 0
    interval_s: float = None
    seconds: float = None

    @property
    def state(self) -> tuple:
        """``(state, since, reason)``: ``live``, ``reconnecting`` (also while first connecting) or ``failed``."""
        status = self.reader.status()
        state = status.state if status.state in (LIVE, FAILED) else "reconnecting"
        return state, status.since, status.reason


class Watcher:
    """Every camera of ``settings.site`` (``settings``: the ``ServiceSettings``), counted by ``counter`` on the
    ``network`` queue (lane ``cameras``), each count stored in ``history`` under the checkpoint's shown
    name and fed to the camera's alerts (``watching.alerts``; sent to ``settings.webhook`` too when given).
    History older than ``settings.keep_days`` is pruned at the start and every hour. ``on_count(view,
    seconds)`` is told of every count (metrics)."""

    def __init__(self, settings, counter: Counter, network: WorkQueue, history: History, on_count=None):
        self.counter, self.network, self.history, self.checkpoint = counter, network, history, settings.shown_name
        self.keep_days, self.on_count = settings.keep_days, on_count
        self.webhook = Webhook(settings.webhook) if settings.webhook else None
        cameras = settings.site.cameras
        self.alerts = {spec.name: AlertWatch(spec, history=history, webhook=self.webhook) for spec in cameras}
        self.views = {spec.name: CameraView(spec=spec, reader=CameraReader(spec.source, name=spec.name,
                                                                            max_pixels=counter.max_pixels),
                                            options=CountingOptions(threshold=counter.threshold, zones=spec.zones,
                                                                    exclusions=spec.exclusions))
                      for spec in cameras}
        self.tasks = []

    def active_alerts(self, camera: str) -> dict:
        """Zone (``total``: the whole view) -> whether its alert is raised now, for each rule of ``camera``."""
        return {state.rule.zone: state.alert_id is not None for state in self.alerts[camera].states}

    def start(self) -> None:
        """One counting task per camera, and the pruning of old history, on the running event loop."""
        self.tasks = [asyncio.create_task(self.watch(view), name=f"camera {name}") for name, view in self.views.items()]
        if self.keep_days is not None:
            self.tasks.append(asyncio.create_task(self.prune(), name="history pruning"))

    async def prune(self) -> None:
        """Delete history older than ``keep_days`` now and every ``PRUNE_EVERY_S``."""
        while True:
            try:
                removed = await asyncio.to_thread(self.history.prune, self.keep_days)
                log.info("history: removed %d counts and %d alerts older than %g days", removed["counts"],
                         removed["alerts"], self.keep_days)
            except Exception:  # a database that is away for a while: the next prune tries again
                log.exception("history: pruning failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    async def watch(self, view: CameraView) -> None:
        """Count ``view``'s newest frame every ``every_s`` seconds, for ever; a failure is logged and waited out."""
        due = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                counted = await self.count_newest(view)
            except Exception:  # a failure of one count never stops the camera: logged with its traceback
                log.exception("camera %s: counting failed", view.spec.name)
                due = time.monotonic() + FAILURE_PAUSE_S
                continue
            now = time.monotonic()
            # When the machine cannot keep every_s the next count starts at once; interval_s shows the lag.
            due = max(now, due + view.spec.every_s) if counted else now + min(NO_FRAME_RETRY_S, view.spec.every_s)

    async def count_newest(self, view: CameraView) -> bool:
        """Count the frame that arrived last, if newer than the last counted; whether there was one."""
        newest = view.reader.newest(after=view.counted_at)
        if newest is None:
            return False
        arrived, rgb = newest
        started = time.monotonic()
        result = await self.network.run(self.counter.predict, rgb, view.options, lane="cameras", limit=False)
        seconds = time.monotonic() - started
        if view.counted_at is not None:
            interval = (arrived - view.counted_at).total_seconds()
            view.interval_s = interval if view.interval_s is None else (
                (1 - INTERVAL_WEIGHT) * view.interval_s + INTERVAL_WEIGHT * interval)
        view.result, view.frame, view.counted_at, view.seconds = result, rgb, arrived, seconds
        view.counted += 1
        if self.on_count is not None:
            self.on_count(view, seconds)
        await asyncio.to_thread(self.store, view.spec.name, arrived, result)
        return True

    def store(self, camera: str, arrived: datetime, result: CountResult) -> None:
        """On a thread: the count into the history, then its alerts."""
        self.history.record(camera=camera, time=arrived, count=result.count, zones=result.zones,
                            threshold=self.counter.threshold, checkpoint=self.checkpoint)
        # Stored, logged and sent to the webhook by the watch itself.
        self.alerts[camera].update(arrived, result.count, result.zones)

    async def close(self) -> None:
        """Stop the tasks, then the readers (each within a few seconds, on threads: closing may wait)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(view.reader.close) for view in self.views.values()))
        if self.webhook is not None:
            await asyncio.to_thread(self.webhook.close)
