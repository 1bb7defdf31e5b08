"""Alerts of watched cameras (``watching/alerts.py``) on real parts: ``AlertWatch`` stores in an SQLite history
in ``tmp_path``, and ``Webhook`` POSTs to an HTTP receiver on 127.0.0.1 run by the test (answering 200, 500,
400, a redirect, slowly, or held at a gate), or to a closed port. Backoffs and timeouts are a fraction of a
second, so that the module runs in a few seconds."""
import base64
import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.exc import OperationalError

from watching.alerts import AlertEvent, AlertWatch, Webhook
from watching.history import History, open_history
from watching.site import AlertRule, CameraSpec

T0 = datetime(2026, 12, 7, 23, 40, tzinfo=timezone.utc)
GATE = AlertRule(zone="gate", above=5, for_s=10)
LOGGER = "dehaze_p2pnet.alerts"
SEND_LIMIT_S = 0.05  # send() must return within this, whatever the receiver does


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def camera(*rules, every_s: float = 1.0) -> CameraSpec:
    return CameraSpec(name="north", source="0", every_s=every_s, alerts=rules or (GATE,))


def feed(watch: AlertWatch, counts: dict, zone: str = "gate") -> list:
    """Feed ``{second: count}`` of ``zone`` (the total is 100 unless the zone is "total"); returns
    ``[(second, state, count)]`` of the events."""
    events = []
    for second, count in counts.items():
        total, zones = (count, {}) if zone == "total" else (100, {zone: count})
        for event in watch.update(time=at(second), total=total, zones=zones):
            events.append((second, event.state, event.count))
    return events


@pytest.fixture
def store(tmp_path):
    with open_history(tmp_path / "history.db") as history:
        yield history


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            server.requests.append((dict(self.headers), json.loads(body)))
        server.arrived.set()
        if server.mode == "slow":
            time.sleep(server.delay_s)
        elif server.mode == "gate":
            server.gate.wait(timeout=10)
        status = {"error": 500, "bad": 400, "redirect": 302}.get(server.mode, 200)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Receiver(ThreadingHTTPServer):
    """A webhook receiver recording ``(headers, body)`` of each POST; ``mode``: ok, error (500), bad (400),
    redirect (302), slow (answers after ``delay_s``), gate (answers once ``gate`` is set)."""
    daemon_threads = True

    def __init__(self, mode: str, delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode, self.delay_s = mode, delay_s
        self.requests, self.lock = [], threading.Lock()
        self.arrived, self.gate = threading.Event(), threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a slow answer: writing to it fails, as expected

    def bodies(self) -> list:
        with self.lock:
            return [body for _, body in self.requests]


@pytest.fixture
def receiver():
    """Start receivers: ``receiver(mode, delay_s=0)``; all are shut down after the test."""
    servers = []

    def start(mode: str, delay_s: float = 0.0) -> Receiver:
        server = Receiver(mode=mode, delay_s=delay_s)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.gate.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # urllib would send 127.0.0.1 through a proxy named in the environment.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def event(count: int = 7, state: str = "raised") -> AlertEvent:
    return AlertEvent(camera="north", zone="gate", count=count, above=5.0, state=state,
                      time=T0 + timedelta(milliseconds=123))


def timed_send(webhook: Webhook, alert: AlertEvent) -> float:
    start = time.perf_counter()
    webhook.send(alert)
    return time.perf_counter() - start


# AlertWatch


def test_raises_after_exactly_for_s_above(store, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    watch = AlertWatch(camera(), history=store)
    assert feed(watch, {second: 6 for second in range(10)} | {9.999: 6}) == []
    assert store.alerts() == []
    assert feed(watch, {10: 6}) == [(10, "raised", 6)]
    [alert] = store.alerts()
    assert (alert["zone"], alert["above"], alert["raised"], alert["cleared"]) == ("gate", 5, at(10), None)
    [line] = [record for record in caplog.records if record.name == LOGGER]
    assert line.levelno == logging.WARNING and "\n" not in line.getMessage()
    assert "raised" in line.getMessage() and "'gate'" in line.getMessage()


def test_one_count_at_or_below_restarts_the_stretch(store):
    watch = AlertWatch(camera(), history=store)
    counts = {second: 6 for second in range(5)} | {5: 5} | {second: 6 for second in range(6, 17)}
    assert feed(watch, counts) == [(16, "raised", 6)]


def test_a_one_frame_spike_raises_nothing(store):
    watch = AlertWatch(camera(), history=store)
    assert feed(watch, {second: 50 if second == 3 else 0 for second in range(40)}) == []
    assert store.alerts() == []


def test_clears_after_for_s_at_or_below_and_keeps_the_peak(store):
    watch = AlertWatch(camera(), history=store)
    raised = {0: 6, 4: 9, 8: 7, 10: 6}  # raised at 10 with the stretch's peak, 9
    assert feed(watch, raised) == [(10, "raised", 6)]
    assert store.alerts()[0]["peak"] == 9
    # Higher while raised: the peak follows. A one-frame rise restarts clearing (at 14), cleared 10 s later.
    calm = {11: 12, 12: 5, 13: 0, 14: 8} | {second: 5 for second in range(15, 26)}
    assert feed(watch, calm) == [(25, "cleared", 5)]
    [alert] = store.alerts()
    assert (alert["peak"], alert["cleared"]) == (12, at(25))
    assert store.alerts(open_only=True) == []


def test_for_s_zero_follows_each_count_of_the_total(store):
    watch = AlertWatch(camera(AlertRule(zone="total", above=20)), history=store)
    events = feed(watch, {0: 20, 1: 21, 2: 30, 3: 20, 4: 25}, zone="total")
    assert events == [(1, "raised", 21), (3, "cleared", 20), (4, "raised", 25)]
    assert [(alert["zone"], alert["peak"]) for alert in store.alerts()] == [(None, 25), (None, 30)]


def test_a_gap_breaks_a_stretch_but_not_a_raised_alert(store):
    watch = AlertWatch(camera(), history=store)  # every_s 1: a gap is over 30 s
    # Above from 0 to 5, nothing until 40: the stretch starts again at 40.
    assert feed(watch, {second: 6 for second in (0, 2, 4, 5, 40, 45)}) == []
    assert feed(watch, {50: 6}) == [(50, "raised", 6)]
    # At or below at 51, camera down until 200: still raised at 200, cleared 10 s of counts later.
    assert feed(watch, {51: 0, 200: 0, 205: 0}) == []
    assert store.alerts(open_only=True) != []
    assert feed(watch, {210: 0}) == [(210, "cleared", 0)]


def test_time_going_back_restarts_the_stretch(store):
    watch = AlertWatch(camera(), history=store, max_gap_s=60)
    assert feed(watch, {0: 6, 8: 6, 3: 6, 12: 6}) == []  # 3 after 8: counted from 3
    assert feed(watch, {13: 6}) == [(13, "raised", 6)]


def test_a_restart_takes_over_the_open_alert(tmp_path):
    with open_history(tmp_path / "history.db") as history:
        assert feed(AlertWatch(camera(), history=history), {0: 6, 10: 8}) == [(10, "raised", 8)]
    with open_history(tmp_path / "history.db") as history:  # the service started again
        watch = AlertWatch(camera(), history=history)
        assert feed(watch, {20: 9, 40: 6, 45: 7}) == []
        [alert] = history.alerts(open_only=True)
        assert alert["peak"] == 9
        assert feed(watch, {46: 3, 50: 1, 56: 2}) == [(56, "cleared", 2)]
        assert [(each["raised"], each["cleared"]) for each in history.alerts()] == [(at(10), at(56))]


def test_open_alerts_without_a_rule_are_cleared_at_the_first_count(store):
    gone = store.raise_alert(camera="north", zone="old-gate", above=5, time=at(0), peak=6)
    duplicate = store.raise_alert(camera="north", zone="gate", above=5, time=at(0.5), peak=6)
    kept = store.raise_alert(camera="north", zone="gate", above=5, time=at(1), peak=6)
    changed = store.raise_alert(camera="north", zone="gate", above=3, time=at(2), peak=6)  # above was 3 then
    watch = AlertWatch(camera(), history=store)
    # Newest first: the changed rule's, the older duplicate, then old-gate, no longer counted (0).
    assert feed(watch, {5: 6}) == [(5, "cleared", 6), (5, "cleared", 6), (5, "cleared", 0)]
    assert [alert["id"] for alert in store.alerts(open_only=True)] == [kept]
    cleared = {alert["id"]: alert["cleared"] for alert in store.alerts()}
    assert [cleared[alert_id] for alert_id in (gone, duplicate, changed)] == [at(5)] * 3


class FailingOnce(History):
    """A history whose first ``raise_alert`` fails as a database that went away would."""

    def __init__(self, engine):
        super().__init__(engine=engine)
        self.failures = 1

    def raise_alert(self, **kwargs):
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return super().raise_alert(**kwargs)


def test_a_failed_store_is_tried_again_at_the_next_count(store, caplog):
    watch = AlertWatch(camera(), history=FailingOnce(engine=store.engine))
    assert feed(watch, {0: 6, 10: 6}) == []
    assert "not stored" in caplog.text
    assert feed(watch, {11: 6}) == [(11, "raised", 6)]
    assert len(store.alerts()) == 1


def test_update_refuses_naive_times_and_bad_counts(store):
    watch = AlertWatch(camera(), history=store)
    with pytest.raises(ValueError, match="timezone-aware"):
        watch.update(time=datetime(2026, 1, 1), total=1, zones={})
    with pytest.raises(ValueError, match="finite"):
        watch.update(time=at(0), total=1, zones={"gate": float("nan")})


# Webhook


def test_the_webhook_body_is_exactly_the_interface(receiver):
    alert = AlertEvent(camera="north", zone="total", count=57, above=50.0, state="cleared",
                       time=datetime(2026, 12, 8, 1, 40, 5, 123456, tzinfo=timezone(timedelta(hours=2))))
    body = {"camera": "north", "zone": "total", "count": 57, "above": 50, "state": "cleared",
            "time": "2026-12-07T23:40:05.123Z"}
    assert alert.webhook_body() == body
    server = receiver("ok")
    with Webhook(server.url) as webhook:
        webhook.send(alert)
        assert webhook.flush(timeout_s=5)
        assert (webhook.sent, webhook.failed, webhook.dropped) == (1, 0, 0)
    [(headers, received)] = server.requests
    assert received == body and list(received) == list(body)
    assert headers["Content-Type"] == "application/json"


def test_alert_watch_sends_its_events(store, receiver):
    server = receiver("ok")
    with Webhook(server.url) as webhook:
        feed(AlertWatch(camera(), history=store, webhook=webhook), {0: 6, 10: 6, 11: 0, 21: 0})
        assert webhook.flush(timeout_s=5)
    assert [(body["state"], body["time"]) for body in server.bodies()] == [
        ("raised", "2026-12-07T23:40:10.000Z"), ("cleared", "2026-12-07T23:40:21.000Z")]


def test_5xx_is_tried_retries_plus_one_times_then_given_up(receiver, caplog):
    server = receiver("error")
    with Webhook(server.url, retries=2, backoff_s=0.01, timeout_s=2) as webhook:
        assert timed_send(webhook, event()) < SEND_LIMIT_S
        assert webhook.flush(timeout_s=5)
        assert (webhook.sent, webhook.failed) == (0, 1)
    assert len(server.requests) == 3
    assert "after 3 attempts: HTTP 500" in caplog.text


@pytest.mark.parametrize("mode", ["bad", "redirect"])
def test_4xx_and_redirects_are_not_tried_again(receiver, mode):
    server = receiver(mode)
    with Webhook(server.url, retries=3, backoff_s=0.01) as webhook:
        webhook.send(event())
        assert webhook.flush(timeout_s=5)
        assert webhook.failed == 1
    assert [body["count"] for body in server.bodies()] == [7]  # the redirect's target was never asked


def test_a_dead_receiver_never_blocks_send(caplog):
    with Webhook(closed_port_url(), retries=1, backoff_s=0.01, timeout_s=0.5) as webhook:
        assert max(timed_send(webhook, event(count=count)) for count in range(5)) < SEND_LIMIT_S
        assert webhook.flush(timeout_s=5)
        assert (webhook.sent, webhook.failed) == (0, 5)
    assert "after 2 attempts" in caplog.text


def test_a_slow_receiver_never_blocks_send(receiver):
    server = receiver("slow", delay_s=2.0)
    with Webhook(server.url, retries=0, timeout_s=0.2) as webhook:
        assert timed_send(webhook, event(count=1)) < SEND_LIMIT_S
        assert server.arrived.wait(timeout=5)
        assert timed_send(webhook, event(count=2)) < SEND_LIMIT_S  # while the first is in flight
        assert webhook.flush(timeout_s=5)
        assert (webhook.sent, webhook.failed) == (0, 2)


def test_a_full_queue_drops_the_oldest(receiver, caplog):
    server = receiver("gate")
    with Webhook(server.url, max_pending=2, timeout_s=5) as webhook:
        webhook.send(event(count=1))
        assert server.arrived.wait(timeout=5)  # 1 is in flight, held at the gate
        for count in (2, 3, 4):
            assert timed_send(webhook, event(count=count)) < SEND_LIMIT_S
        assert (webhook.dropped, webhook.pending()) == (1, 2)
        server.gate.set()
        assert webhook.flush(timeout_s=5)
        assert (webhook.sent, webhook.failed, webhook.dropped) == (3, 0, 1)
    assert [body["count"] for body in server.bodies()] == [1, 3, 4]
    assert "oldest dropped" in caplog.text


def test_close_is_prompt_and_safe_twice(receiver):
    server = receiver("slow", delay_s=3.0)
    webhook = Webhook(server.url, timeout_s=0.3, retries=3, backoff_s=10)
    webhook.send(event(count=1))
    webhook.send(event(count=2))
    assert server.arrived.wait(timeout=5)
    start = time.monotonic()
    assert webhook.close()  # the request in flight times out; no backoff, no second event
    assert time.monotonic() - start < 0.3 + 0.5
    start = time.monotonic()
    assert webhook.close()
    webhook.send(event(count=3))
    assert time.monotonic() - start < 0.1
    assert (webhook.sent, webhook.failed, webhook.dropped) == (0, 1, 2)


def test_close_does_not_wait_out_a_backoff():
    webhook = Webhook(closed_port_url(), retries=3, backoff_s=10)
    webhook.send(event())
    deadline = time.monotonic() + 5
    while webhook.pending() and time.monotonic() < deadline:  # taken: refused at once, then a 10 s wait
        time.sleep(0.01)
    start = time.monotonic()
    assert webhook.close()
    assert time.monotonic() - start < 0.5
    assert webhook.failed == 1


def test_credentials_are_sent_but_never_logged(receiver, caplog):
    server = receiver("error")
    port = server.server_address[1]
    with Webhook(f"http://alice:s3cr%40t@127.0.0.1:{port}/hook?token=abcd", retries=0) as webhook:
        assert webhook.url == f"http://***@127.0.0.1:{port}/hook?***"
        webhook.send(event())
        assert webhook.flush(timeout_s=5)
    [(headers, _)] = server.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert "HTTP 500" in caplog.text
    assert not any(secret in caplog.text for secret in ("alice", "s3cr", "abcd"))


@pytest.mark.parametrize("url", ["ftp://alice:s3cret@example.org/", "file:///etc/passwd", "http:///hook",
                                 "https://alice:s3cret@example.org:99999/", "example.org/hook"])
def test_only_http_urls_are_taken(url):
    with pytest.raises(ValueError) as error:
        Webhook(url)
    assert "s3cret" not in str(error.value)
