"""Alerts of watched cameras: ``AlertWatch`` turns a camera's counts into raised and cleared alerts (its
``AlertRule``s, watching/site.py), stores them in a ``History`` and logs them (logger
``dehaze_p2pnet.alerts``, one line each); ``Webhook`` POSTs them as JSON from a background thread.

The rules of ``AlertWatch.update`` (one ``AlertRule``; "the count" is its zone's count, or the total for
zone ``"total"``):

- Raised when the count is above ``above`` at every update from a first such count until one at least
  ``for_s`` seconds after it (``for_s = 0``: the first count above raises). The alert's time is that last
  update's; its peak starts at the highest count of that stretch and rises with every higher count while
  raised (``History.update_peak``).
- Cleared likewise when the count is at or below ``above`` at every update for ``for_s`` seconds. One frame
  on the other side restarts the stretch: no alert for a one-frame spike, no clearing on a one-frame dip.
- Gaps: a stretch must be watched without a break. When two updates of a rule are more than ``max_gap_s``
  apart (the camera was down, counting stalled), or time goes backwards (the clock was set back), the
  stretch in progress is dropped and starts again at the update after the gap. The state itself survives a
  gap: a raised alert stays raised until counts at or below ``above`` span ``for_s`` after it.
  ``max_gap_s`` defaults to ``GAP_FACTOR`` times the camera's ``every_s``, at least ``MIN_GAP_S``.
  An update without the rule's zone among ``zones`` is no update for that rule.
- Restarts: a new ``AlertWatch`` takes over the open alerts of its camera in the history: a rule with an open
  alert of its zone and ``above`` (the newest, if several) starts raised with that alert and its peak, so
  it is never raised twice and clears by the rules above. Any other open alert of the camera (its rule left
  the site file or changed ``above``; an older duplicate) is cleared at the first update, as an event with
  that zone's count then (0 when the zone is no longer counted): nothing else would ever clear it.
- A failed history write (the database is away) is logged and leaves the rule as it was, so that the next
  update tries again; counting goes on.

``Webhook`` POSTs each event's ``webhook_body()``; ``send`` never blocks (see ``Webhook``).
"""
import base64
import http.client
import json
import logging
import math
import numbers
import threading
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy.exc import SQLAlchemyError

from watching.history import History, iso
from watching.site import TOTAL, AlertRule, CameraSpec

LOGGER = logging.getLogger("dehaze_p2pnet.alerts")
RAISED, CLEARED = "raised", "cleared"
# A stretch may skip two counts (a dropped frame, a slow count) but not a camera that was down. The floor
# keeps runs whole where counting is slower than every_s (a CPU shared by several cameras).
GAP_FACTOR, MIN_GAP_S = 3.0, 30.0
WEBHOOK_SCHEMES = ("http", "https")
# 408 and 429 ask the client to come back later; every other 4xx would fail again the same way.
RETRIED_4XX = (408, 429)
USER_AGENT = "dehaze-p2pnet-alerts"


@dataclass(frozen=True)
class AlertEvent:
    """An alert raised or cleared at ``time`` (UTC aware): ``camera``'s ``zone`` (``"total"``: its whole
    count) counted ``count`` people against the rule's ``above``; ``state`` is ``"raised"`` or
    ``"cleared"``."""
    camera: str
    zone: str
    count: float
    above: float
    state: str
    time: datetime

    def webhook_body(self) -> dict:
        """The JSON object a webhook receives: exactly camera, zone, count, above, state and time (ISO 8601
        UTC, ``2026-12-07T23:40:05.123Z``). Whole numbers are written as integers."""
        return {"camera": self.camera, "zone": self.zone, "count": _plain(self.count),
                "above": _plain(self.above), "state": self.state, "time": iso(self.time)}


class _RuleState:
    """Where one rule stands: its open alert (``alert_id``, ``peak``) and the stretch in progress."""

    def __init__(self, rule: AlertRule):
        self.rule = rule
        self.alert_id = None  # the open alert's id in the history, None while not raised
        self.peak = None
        self.since = None  # time of the first update of the stretch on the other side, None: no stretch
        self.stretch_peak = None  # the highest count of that stretch
        self.last = None  # time of the rule's previous update


class AlertWatch:
    """The alerts of one camera, fed its counts in time order by one thread (see the module's docstring for
    the rules). ``history``: where alerts are stored and open ones taken over from; ``webhook``: an optional
    ``Webhook`` every event is also sent to; ``max_gap_s``: seconds between two updates beyond which a
    stretch is broken (default: ``GAP_FACTOR * camera.every_s``, at least ``MIN_GAP_S``)."""

    def __init__(self, camera: CameraSpec, *, history: History, webhook=None, max_gap_s: float | None = None):
        self.camera = camera.name
        self.history = history
        self.webhook = webhook
        self.max_gap = timedelta(seconds=max(GAP_FACTOR * camera.every_s, MIN_GAP_S)
                                 if max_gap_s is None else max_gap_s)
        self.states = [_RuleState(rule) for rule in camera.alerts]
        self.orphans = self._take_over(history.alerts(camera=self.camera, open_only=True))

    def _take_over(self, open_alerts: list) -> list:
        """Give each rule its open alert (newest first, one each); returns the alerts no rule took."""
        orphans = []
        for alert in open_alerts:
            zone = TOTAL if alert["zone"] is None else alert["zone"]
            state = next((state for state in self.states if state.alert_id is None
                          and state.rule.zone == zone and state.rule.above == alert["above"]), None)
            if state is None:
                orphans.append(alert)
                continue
            state.alert_id, state.peak = alert["id"], alert["peak"]
            LOGGER.info("alert %d taken over: camera %r zone %r above %s, raised at %s, peak %s", alert["id"],
                        self.camera, zone, _plain(alert["above"]), iso(alert["raised"]), _plain(alert["peak"]))
        return orphans

    def update(self, time: datetime, total, zones: dict) -> list:
        """Feed the count at ``time`` (timezone-aware): ``total`` people, ``zones`` {zone name: count}.
        Returns the ``AlertEvent``s raised or cleared by it (already stored, logged and sent)."""
        if not isinstance(time, datetime) or time.utcoffset() is None:
            raise ValueError(f"time must be a timezone-aware datetime, not {time!r}")
        counts = {**zones, TOTAL: total}
        for zone, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, numbers.Real) or not math.isfinite(count):
                raise ValueError(f"the count of {zone!r} must be a finite number, not {count!r}")
        events = self._clear_orphans(time, counts)
        for state in self.states:
            if state.rule.zone in counts:
                event = self._step(state, time, counts[state.rule.zone])
                if event is not None:
                    events.append(event)
        for event in events:
            self._announce(event)
        return events

    def _step(self, state: _RuleState, time: datetime, count) -> AlertEvent | None:
        """One update of one rule; the event it gives, if any."""
        rule = state.rule
        if state.last is not None and (time < state.last or time - state.last > self.max_gap):
            state.since = None  # a stretch must be watched without a break
        state.last = time
        if state.alert_id is not None and count > state.peak:
            self._raise_peak(state, count)
        other_side = count <= rule.above if state.alert_id is not None else count > rule.above
        if not other_side:
            state.since = None
            return None
        if state.since is None:
            state.since, state.stretch_peak = time, count
        state.stretch_peak = max(state.stretch_peak, count)
        if time - state.since < timedelta(seconds=rule.for_s):
            return None
        return self._clear(state, time, count) if state.alert_id is not None else self._raise(state, time, count)

    def _raise(self, state: _RuleState, time: datetime, count) -> AlertEvent | None:
        rule = state.rule
        zone = None if rule.zone == TOTAL else rule.zone
        try:
            state.alert_id = self.history.raise_alert(camera=self.camera, zone=zone, above=rule.above, time=time,
                                                      peak=state.stretch_peak)
        except (SQLAlchemyError, OSError) as error:
            LOGGER.error("alert of camera %r zone %r not stored, tried again at the next count: %s", self.camera,
                         rule.zone, _one_line(error))
            return None
        state.peak, state.since = state.stretch_peak, None
        return AlertEvent(camera=self.camera, zone=rule.zone, count=count, above=rule.above, state=RAISED, time=time)

    def _clear(self, state: _RuleState, time: datetime, count) -> AlertEvent | None:
        if not self._store_clear(state.alert_id, time):
            return None
        state.alert_id, state.peak, state.since = None, None, None
        rule = state.rule
        return AlertEvent(camera=self.camera, zone=rule.zone, count=count, above=rule.above, state=CLEARED,
                          time=time)

    def _raise_peak(self, state: _RuleState, count) -> None:
        try:
            self.history.update_peak(alert_id=state.alert_id, peak=count)
        except (SQLAlchemyError, OSError) as error:
            LOGGER.error("peak of alert %d not stored: %s", state.alert_id, _one_line(error))
            return
        state.peak = count

    def _clear_orphans(self, time: datetime, counts: dict) -> list:
        """Clear the open alerts no rule took over (their rule left the site file); kept if not stored."""
        events, kept = [], []
        for alert in self.orphans:
            zone = TOTAL if alert["zone"] is None else alert["zone"]
            if not self._store_clear(alert["id"], time):
                kept.append(alert)
                continue
            LOGGER.info("alert %d of camera %r zone %r above %s matches no alert rule now: cleared", alert["id"],
                        self.camera, zone, _plain(alert["above"]))
            events.append(AlertEvent(camera=self.camera, zone=zone, count=counts.get(zone, 0),
                                     above=alert["above"], state=CLEARED, time=time))
        self.orphans = kept
        return events

    def _store_clear(self, alert_id: int, time: datetime) -> bool:
        """Mark the alert cleared in the history; False when that failed (it stays open, tried again)."""
        try:
            # False here means someone else cleared it already: it is cleared all the same.
            self.history.clear_alert(alert_id=alert_id, time=time)
        except (SQLAlchemyError, OSError) as error:
            LOGGER.error("clearing alert %d not stored, tried again at the next count: %s", alert_id,
                         _one_line(error))
            return False
        return True

    def _announce(self, event: AlertEvent) -> None:
        level = logging.WARNING if event.state == RAISED else logging.INFO
        LOGGER.log(level, "alert %s: camera %r zone %r count %s above %s at %s", event.state, event.camera,
                   event.zone, _plain(event.count), _plain(event.above), iso(event.time))
        if self.webhook is not None:
            self.webhook.send(event)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would turn the POST into a GET without its body, and
    could carry the credentials to another host."""

    def redirect_request(self, *args, **kwargs):
        return None


class Webhook:
    """POSTs events as JSON (``Content-Type: application/json``) to ``url`` (http or https; credentials in it,
    ``http://user:password@host/``, are sent as basic authentication and never logged) from a background
    thread, one event at a time in order.

    ``send`` never blocks: events wait in a queue of at most ``max_pending``; when it is full the oldest is
    dropped (counted, logged). Each event is tried ``retries + 1`` times at most: a connection error, a
    timeout (``timeout_s`` seconds per connect or read), a 5xx, 408 or 429 answer is tried again after
    ``backoff_s``, then twice as long each time; any other answer outside 2xx (other 4xx, a redirect) gives
    up at once. Given-up events are counted as ``failed`` and logged; delivered ones as ``sent``. A receiver
    that times out may have taken the event: it can arrive twice.

    ``close`` stops the thread after the request in flight (at most about ``timeout_s``); the events still
    queued then are dropped."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 1.0,
                 max_pending: int = 1000):
        self.url, self.target, self.headers, self.secrets = _parse_url(url)
        if not timeout_s > 0 or not backoff_s >= 0 or not int(retries) >= 0 or not int(max_pending) >= 1:
            raise ValueError("a webhook needs timeout_s > 0, backoff_s >= 0, retries >= 0 and max_pending >= 1")
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_pending = int(max_pending)
        self.sent = self.failed = self.dropped = 0
        self._pending = deque()
        self._changed = threading.Condition()
        self._busy = False  # an event is being delivered
        self._closing = threading.Event()
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def send(self, event) -> None:
        """Queue ``event`` (an ``AlertEvent``) for delivery; returns at once."""
        body = json.dumps(event.webhook_body()).encode("utf-8")
        with self._changed:
            closed = self._closing.is_set()
            oldest = None if closed or len(self._pending) < self.max_pending else self._pending.popleft()
            if closed or oldest is not None:
                self.dropped += 1
            if not closed:
                self._pending.append(body)
                self._changed.notify_all()
        if closed:
            LOGGER.warning("webhook %s closed: alert event dropped", self.url)
        elif oldest is not None:
            LOGGER.warning("webhook %s: %d alert events waiting, the oldest dropped (%d dropped so far)", self.url,
                           self.max_pending, self.dropped)

    def pending(self) -> int:
        """Events queued, not yet taken for delivery."""
        with self._changed:
            return len(self._pending)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until every queued event is delivered or given up; whether it was."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout=timeout_s)

    def close(self) -> bool:
        """Stop the thread: after the request in flight, never waiting longer than ``timeout_s`` plus a
        second. Safe to call twice. Returns whether the thread has stopped."""
        with self._changed:
            self._closing.set()
            self._changed.notify_all()
        self._thread.join(timeout=self.timeout_s + 1.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing.is_set())
                if self._closing.is_set():
                    break
                body, self._busy = self._pending.popleft(), True
            try:
                self._deliver(body)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        with self._changed:
            left, self.dropped = len(self._pending), self.dropped + len(self._pending)
            self._pending.clear()
            self._changed.notify_all()
        if left:
            LOGGER.warning("webhook %s closed: %d alert events not sent", self.url, left)

    def _deliver(self, body: bytes) -> None:
        """Try one event up to ``retries + 1`` times; count it sent or failed."""
        reason, attempts = "closed", 0
        for attempt in range(self.retries + 1):
            if attempt and self._closing.wait(self.backoff_s * 2 ** (attempt - 1)):
                break  # closing: stop waiting to try again
            attempts += 1
            ok, again, reason = self._post(body)
            if ok:
                self.sent += 1
                return
            if not again:
                break
        self.failed += 1
        LOGGER.warning("webhook %s: alert event not delivered after %d attempts: %s", self.url, attempts, reason)

    def _post(self, body: bytes) -> tuple:
        """One POST: ``(delivered, worth trying again, why not)``."""
        request = urllib.request.Request(self.target, data=body, method="POST",
                                         headers={**self.headers, "Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout_s):
                return True, False, ""
        except urllib.error.HTTPError as error:
            error.close()
            return False, error.code >= 500 or error.code in RETRIED_4XX, f"HTTP {error.code}"
        except urllib.error.URLError as error:
            return False, True, self._hide(str(error.reason))
        except (OSError, http.client.HTTPException) as error:  # a timeout or broken connection while reading
            return False, True, self._hide(_one_line(error) or type(error).__name__)

    def _hide(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _parse_url(url: str) -> tuple:
    """``(URL as logged, URL requested, headers, credentials)``: credentials move from the URL to an
    Authorization header; the logged form masks them and any query (tokens often travel there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        raise ValueError("webhook: not a URL") from None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    shown = urlunsplit((parts.scheme, ("***@" if "@" in parts.netloc else "") + netloc, parts.path,
                        "***" if parts.query else "", ""))
    if parts.scheme.lower() not in WEBHOOK_SCHEMES or not host:
        raise ValueError(f"webhook {shown}: give an http:// or https:// URL with a host")
    headers = {"User-Agent": USER_AGENT}
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if parts.username is not None:
        token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    # A token may be the user name alone (https://TOKEN@host/): both are hidden.
    secrets = tuple(text for text in (parts.password, password, parts.username, user) if text)
    return shown, urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), headers, secrets


def _plain(value):
    """A number as JSON writes it: whole ones as ``int`` (a count of people), others as ``float`` (NumPy's
    numbers too, which ``json`` refuses)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return int(value) if value.is_integer() else value


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
