"""``GET /metrics``: the service in Prometheus' text format (through ``prometheus-client``), read at each
scrape from the same state the API answers from, so the two never disagree. Per camera and zone (zone
``total``: the whole view) the current count, whether the camera is up, frames counted, reconnects,
the seconds each count took (a histogram), active alerts; and the network's queue."""
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Seconds a count took on the network: a 2-core CPU takes 0.3 to 10 s a picture, a GPU a few hundredths.
COUNT_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    """The registry of one service (not the process-wide default: tests run several services in one process).
    ``state`` is the ``ServiceState``; ``observe(view, seconds)`` is the watcher's ``on_count``."""

    def __init__(self, state):
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.count_seconds = Histogram("crowd_count_seconds", "Seconds a camera frame took on the network",
                                       labelnames=("camera",), buckets=COUNT_SECONDS_BUCKETS, registry=self.registry)
        self.registry.register(StateCollector(state))

    def observe(self, view, seconds: float) -> None:
        self.count_seconds.labels(camera=view.spec.name).observe(seconds)

    def text(self) -> bytes:
        """The exposition, on a worker (it reads every camera's state)."""
        return generate_latest(self.registry)


class StateCollector:
    """Reads the service's state at each scrape."""

    def __init__(self, state):
        self.state = state

    def collect(self):
        yield from camera_metrics(self.state.watcher)
        queue = GaugeMetricFamily("crowd_queue_length", "Calls waiting for the network, per lane", labels=["lane"])
        for lane in self.state.network.lanes:
            queue.add_metric([lane], self.state.network.waiting_in(lane))
        yield queue
        pictures = CounterMetricFamily("crowd_pictures_counted", "Uploaded pictures counted since the start")
        pictures.add_metric([], self.state.statistics.pictures)
        yield pictures


def camera_metrics(watcher):
    """The per-camera families (empty without ``--site``)."""
    count = GaugeMetricFamily("crowd_count", "People counted in the newest counted frame", labels=["camera", "zone"])
    up = GaugeMetricFamily("crowd_camera_up", "1 while the camera delivers frames, else 0", labels=["camera"])
    frames = CounterMetricFamily("crowd_frames_counted", "Frames counted", labels=["camera"])
    reconnects = CounterMetricFamily("crowd_camera_reconnects", "Times the camera came back after being lost",
                                     labels=["camera"])
    alerts = GaugeMetricFamily("crowd_alerts_active", "Alerts raised and not cleared", labels=["camera", "zone"])
    for name, view in (watcher.views.items() if watcher is not None else ()):
        state, _, _ = view.state
        up.add_metric([name], 1.0 if state == "live" else 0.0)
        frames.add_metric([name], view.counted)
        reconnects.add_metric([name], view.reader.status().reconnects)
        if view.result is not None:
            count.add_metric([name, "total"], view.result.count)
            for zone, value in view.result.zones.items():
                count.add_metric([name, zone], value)
        for zone, active in watcher.active_alerts(name).items():
            alerts.add_metric([name, zone], 1.0 if active else 0.0)
    yield from (count, up, frames, reconnects, alerts)
