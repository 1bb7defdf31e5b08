"""The history of watched cameras, in a database through SQLAlchemy 2 Core: every count (UTC time, camera,
total, zone counts, threshold, checkpoint) and every alert.

A file path opens SQLite (WAL, ``synchronous=NORMAL``: a committed row survives Ctrl-C, SIGKILL and restarts;
only a power cut may lose the last ones); a ``postgresql://`` URL opens PostgreSQL through psycopg 3, so that
services on several machines share one history. Tables are created when missing, never dropped; only
``prune`` deletes. The schema, and why:

- ``watch_counts`` (id, camera, ms, count, threshold, checkpoint). Time is an integer, milliseconds since
  1970-01-01 UTC: a bucket is then the same integer arithmetic on both databases (``ms / width * width``),
  with no time zone or date type of either involved.
- ``watch_zone_counts`` (count_id, camera, ms, zone, count), a row per zone of a count. Not a JSON column:
  the mean of every zone per bucket is then one portable ``GROUP BY bucket, zone`` with ``AVG``, where JSON
  needs each database's own functions to take it apart. Camera and time are repeated so that the query
  reads one index and joins nothing.
- ``watch_alerts`` (id, camera, zone or NULL for the total, above, raised_ms, cleared_ms or NULL, peak).

Times in the API are timezone-aware UTC ``datetime`` values (naive ones are refused); ``iso`` writes
``2026-12-07T23:40:05.123Z``. A query returns at most ``MAX_ROWS`` rows: see ``History.history``. A store
may be shared by threads (an Engine with a pool of connections)."""
import csv
import io
import math
import numbers
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .database import (ALERTS, CAMERAS_SQL, COUNTS, NAME_LENGTH, CHECKPOINT_LENGTH, ZONE_COUNTS, create_tables,
                       postgresql_engine, sqlite_engine)

MAX_ROWS = 10_000  # rows (counts or buckets) one query returns at most
# Bucket widths (s) that ``choose_every`` picks from: round numbers for a chart's axis.
NICE_EVERY_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)

class HistoryPage(NamedTuple):
    """``History.history``'s rows and the bucket width (s) they were averaged over (``None``: none)."""
    rows: list
    every_s: float | None


def iso(time: datetime) -> str:
    """``time`` (timezone-aware) as ISO 8601 UTC with milliseconds and ``Z``: ``2026-12-07T23:40:05.123Z``."""
    utc = _aware(time, "time").astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def choose_every(start: datetime, end: datetime) -> int:
    """The bucket width in seconds that ``history`` averages ``[start, end)`` over when it holds more than
    ``MAX_ROWS`` counts: the narrowest of ``NICE_EVERY_S`` (then whole days) giving at most ``MAX_ROWS``
    buckets."""
    start_ms, end_ms = _range_ms(start, end)
    for every_s in NICE_EVERY_S:
        if _bucket_count(start_ms, end_ms, every_s * 1000) <= MAX_ROWS:
            return every_s
    days = math.ceil((end_ms - start_ms) / (MAX_ROWS - 1) / 86_400_000)
    return 86_400 * days


def history_csv(rows: list, zones: list) -> str:
    """``rows`` (as ``History.history`` gives them) as CSV text: the header ``time,count,<zone>...`` and a
    line per row, time in ``iso`` form, a zone a row lacks empty. Zone names pass through
    ``inference.outputs.csv_text``, so a spreadsheet never runs one (``=cmd``) as a formula."""
    # Imported here: ``inference`` brings PyTorch, which a process that only stores counts does not need.
    from inference.outputs import csv_row

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(csv_row(["time", "count", *zones]))
    for row in rows:
        values = [row["zones"].get(zone, "") for zone in zones]
        writer.writerow([iso(row["time"]), *(_cell(value) for value in [row["count"], *values])])
    return text.getvalue()


def open_history(where) -> "History":
    """The history store at ``where``: a file path (``str`` or ``Path``; SQLite, its folder must exist) or a
    ``postgresql://user:password@host:port/database`` URL. Creates its tables when missing. Raises
    ``ValueError`` for a URL it cannot use and ``OSError`` when the database cannot be opened, in one line
    naming the file or the URL (never its password)."""
    if isinstance(where, str) and "://" in where and not where.startswith("sqlite:"):
        engine, shown, secret = postgresql_engine(where)
    else:
        engine, shown, secret = sqlite_engine(where), str(where).removeprefix("sqlite:///"), None
    try:
        create_tables(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        reason = str(getattr(error, "orig", None) or error).strip().split("\n")[0]
        if secret:
            reason = reason.replace(secret, "***")
        raise OSError(f"history database {shown}: cannot open it ({reason})") from error
    return History(engine=engine)


class History:
    """A history store: counts and alerts of cameras (``open_history`` makes one). Safe to share between
    threads. Use it as a context manager, or call ``close``."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        """Close the pool's connections (committed rows are already stored)."""
        self.engine.dispose()

    def record(self, camera: str, time: datetime, count, zones: dict, threshold, checkpoint: str) -> None:
        """Store one count of ``camera`` at ``time``: ``count`` people in all, ``zones`` {zone name: count},
        counted at score ``threshold`` with the checkpoint named ``checkpoint``. One transaction: the row
        and its zones are stored together or not at all."""
        camera, ms = _name(camera, "camera"), _ms(time)
        row = {"camera": camera, "ms": ms, "count": _number(count, "count"),
               "threshold": _number(threshold, "threshold"),
               "checkpoint": _name(checkpoint, "checkpoint", shortest=0, longest=CHECKPOINT_LENGTH)}
        zone_rows = [{"camera": camera, "ms": ms, "zone": _name(zone, "zone"), "count": _number(value, zone)}
                     for zone, value in zones.items()]
        with self.engine.begin() as connection:
            count_id = connection.execute(COUNTS.insert().values(**row)).inserted_primary_key[0]
            if zone_rows:
                connection.execute(ZONE_COUNTS.insert(), [dict(zone, count_id=count_id) for zone in zone_rows])

    def history(self, camera: str, start: datetime, end: datetime, every_s: float | None = None) -> list:
        """The counts of ``camera`` in ``[start, end)`` in time order, as rows ``{"time": datetime (UTC),
        "count": number, "zones": {zone: number}}``. With ``every_s`` (seconds), means over buckets of that
        width aligned on 1970-01-01 UTC, ``time`` being a bucket's start (a zone's mean is over the counts
        that have it); a width giving more than ``MAX_ROWS`` buckets raises ``ValueError``. Without it, one
        row per count, unless the range holds more than ``MAX_ROWS``: then means over ``choose_every``."""
        return self.history_page(camera=camera, start=start, end=end, every_s=every_s).rows

    def history_page(self, camera: str, start: datetime, end: datetime, every_s: float | None = None) -> HistoryPage:
        """``history``'s rows, and the bucket width they were averaged over (``HistoryPage``)."""
        start_ms, end_ms = _range_ms(start, end)
        if every_s is None:
            rows = self._counts(camera, start_ms, end_ms)
            if rows is not None:
                return HistoryPage(rows=rows, every_s=None)
            every_s = choose_every(start, end)
        width_ms = _width_ms(every_s)
        buckets = _bucket_count(start_ms, end_ms, width_ms)
        if buckets > MAX_ROWS:
            raise ValueError(f"every={every_s:g} s gives {buckets} buckets from {iso(start)} to {iso(end)}, more "
                             f"than {MAX_ROWS}: choose every of at least {choose_every(start, end)} s")
        return HistoryPage(rows=self._buckets(camera, start_ms, end_ms, width_ms), every_s=every_s)

    def latest(self, camera: str) -> dict | None:
        """The newest count of ``camera`` as a ``history`` row with its ``threshold`` and ``checkpoint``,
        or ``None`` when it has none."""
        query = (sa.select(COUNTS).where(COUNTS.c.camera == camera)
                 .order_by(COUNTS.c.ms.desc(), COUNTS.c.id.desc()).limit(1))
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
            if row is None:
                return None
            zones = connection.execute(sa.select(ZONE_COUNTS.c.zone, ZONE_COUNTS.c.count)
                                       .where(ZONE_COUNTS.c.count_id == row.id).order_by(ZONE_COUNTS.c.zone))
            return {"time": _time(row.ms), "count": _plain(row.count),
                    "zones": {zone: _plain(value) for zone, value in zones},
                    "threshold": row.threshold, "checkpoint": row.checkpoint}

    def cameras(self) -> list:
        """The names of the cameras that have counts, sorted."""
        with self.engine.connect() as connection:
            return sorted(name for (name,) in connection.execute(CAMERAS_SQL))

    def prune(self, keep_days: float, now: datetime | None = None) -> dict:
        """Delete the counts older than ``keep_days`` days before ``now`` (default: the current time) and the
        alerts cleared before then (open alerts stay). Returns ``{"counts": n, "alerts": n}`` deleted."""
        if not isinstance(keep_days, numbers.Real) or not keep_days > 0:
            raise ValueError(f"keep_days must be a number of days above 0, not {keep_days!r}")
        cutoff = _ms(now or datetime.now(timezone.utc)) - round(keep_days * 86_400_000)
        deleted = {"counts": 0, "alerts": 0}
        # Camera by camera, so that each delete is a range of the (camera, ms) indexes.
        for camera in self.cameras():
            with self.engine.begin() as connection:
                connection.execute(ZONE_COUNTS.delete().where(ZONE_COUNTS.c.camera == camera,
                                                              ZONE_COUNTS.c.ms < cutoff))
                deleted["counts"] += connection.execute(COUNTS.delete().where(COUNTS.c.camera == camera,
                                                                              COUNTS.c.ms < cutoff)).rowcount
        with self.engine.begin() as connection:
            deleted["alerts"] = connection.execute(ALERTS.delete().where(ALERTS.c.cleared_ms < cutoff)).rowcount
        return deleted

    def raise_alert(self, camera: str, zone: str | None, above, time: datetime, peak) -> int:
        """Store an alert raised at ``time``: ``camera``'s ``zone`` (``None``: its total) counted more than
        ``above``, ``peak`` at most so far. Returns its id."""
        row = {"camera": _name(camera, "camera"), "zone": None if zone is None else _name(zone, "zone"),
               "above": _number(above, "above"), "raised_ms": _ms(time), "peak": _number(peak, "peak")}
        with self.engine.begin() as connection:
            return connection.execute(ALERTS.insert().values(**row)).inserted_primary_key[0]

    def update_peak(self, alert_id: int, peak) -> bool:
        """Raise open alert ``alert_id``'s peak to ``peak`` if that is higher. Returns whether the alert is
        open (an unknown or cleared one is left as it is)."""
        peak = _number(peak, "peak")
        higher = sa.case((ALERTS.c.peak < peak, peak), else_=ALERTS.c.peak)
        return self._update_open(alert_id, peak=higher)

    def clear_alert(self, alert_id: int, time: datetime) -> bool:
        """Mark open alert ``alert_id`` cleared at ``time``. Returns whether it was open."""
        return self._update_open(alert_id, cleared_ms=_ms(time))

    def alerts(self, camera: str | None = None, open_only: bool = False, limit: int = MAX_ROWS) -> list:
        """The alerts, newest raised first (of ``camera`` only, open ones only, at most ``limit``), as
        ``{"id", "camera", "zone", "above", "raised": datetime, "cleared": datetime or None, "peak"}``."""
        query = sa.select(ALERTS).order_by(ALERTS.c.raised_ms.desc(), ALERTS.c.id.desc())
        if camera is not None:
            query = query.where(ALERTS.c.camera == camera)
        if open_only:
            query = query.where(ALERTS.c.cleared_ms.is_(None))
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(max(0, min(int(limit), MAX_ROWS))))
            return [{"id": row.id, "camera": row.camera, "zone": row.zone, "above": _plain(row.above),
                     "raised": _time(row.raised_ms), "peak": _plain(row.peak),
                     "cleared": None if row.cleared_ms is None else _time(row.cleared_ms)} for row in rows]

    def _update_open(self, alert_id: int, **values) -> bool:
        with self.engine.begin() as connection:
            update = ALERTS.update().where(ALERTS.c.id == alert_id, ALERTS.c.cleared_ms.is_(None)).values(**values)
            return connection.execute(update).rowcount == 1

    def _counts(self, camera: str, start_ms: int, end_ms: int) -> list | None:
        """One row per count in the range, or ``None`` when it holds more than ``MAX_ROWS`` (read no further)."""
        in_range = (COUNTS.c.camera == camera, COUNTS.c.ms >= start_ms, COUNTS.c.ms < end_ms)
        query = (sa.select(COUNTS.c.id, COUNTS.c.ms, COUNTS.c.count).where(*in_range)
                 .order_by(COUNTS.c.ms, COUNTS.c.id).limit(MAX_ROWS + 1))
        zones = (sa.select(ZONE_COUNTS.c.count_id, ZONE_COUNTS.c.zone, ZONE_COUNTS.c.count)
                 .where(ZONE_COUNTS.c.camera == camera, ZONE_COUNTS.c.ms >= start_ms, ZONE_COUNTS.c.ms < end_ms)
                 .order_by(ZONE_COUNTS.c.count_id, ZONE_COUNTS.c.zone))
        # Each query sees what was committed when it began: a count stored between the two has zones but
        # no row here, and is left out (a count and its zones are committed together, so no row lacks its zones).
        with self.engine.connect() as connection:
            counts = connection.execute(query).all()
            if len(counts) > MAX_ROWS:
                return None
            rows = {count_id: {"time": _time(ms), "count": _plain(value), "zones": {}}
                    for count_id, ms, value in counts}
            for count_id, zone, value in connection.execute(zones):
                if count_id in rows:
                    rows[count_id]["zones"][zone] = _plain(value)
        return list(rows.values())

    def _buckets(self, camera: str, start_ms: int, end_ms: int, width_ms: int) -> list:
        """Means per bucket of ``width_ms``, in SQL: memory bounded by the number of buckets (and zones)."""
        totals = _bucket_means(COUNTS, camera, start_ms, end_ms, width_ms, by_zone=False)
        zones = _bucket_means(ZONE_COUNTS, camera, start_ms, end_ms, width_ms, by_zone=True)
        # As in _counts, a count stored between the two queries may be in a zone's mean and not the total's.
        with self.engine.connect() as connection:
            rows = {bucket: {"time": _time(bucket), "count": float(mean), "zones": {}}
                    for bucket, mean in connection.execute(totals)}
            for bucket, zone, mean in connection.execute(zones):
                if bucket in rows:
                    rows[bucket]["zones"][zone] = float(mean)
        return list(rows.values())


def _bucket_means(table: sa.Table, camera: str, start_ms: int, end_ms: int, width_ms: int, by_zone: bool):
    """``SELECT bucket[, zone], AVG(count)`` of ``table``'s rows of ``camera`` in the range. The bucket is
    computed in a subquery: PostgreSQL would not match a GROUP BY expression holding its own parameters."""
    width = sa.literal(width_ms, sa.BigInteger())
    keys = [table.c.zone] if by_zone else []
    rows = (sa.select(((table.c.ms // width) * width).label("bucket"), *keys, table.c.count)
            .where(table.c.camera == camera, table.c.ms >= start_ms, table.c.ms < end_ms).subquery())
    groups = [rows.c.bucket, *([rows.c.zone] if by_zone else [])]
    return sa.select(*groups, sa.func.avg(rows.c.count)).group_by(*groups).order_by(*groups)


def _aware(time, what: str) -> datetime:
    if not isinstance(time, datetime) or time.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not {time!r}")
    return time


def _ms(time: datetime) -> int:
    """Milliseconds since 1970-01-01 UTC (exact integer arithmetic, rounded down)."""
    return (_aware(time, "time") - EPOCH) // ONE_MS


def _time(ms: int) -> datetime:
    return EPOCH + int(ms) * ONE_MS


def _range_ms(start: datetime, end: datetime) -> tuple:
    start_ms, end_ms = _ms(_aware(start, "start")), _ms(_aware(end, "end"))
    if end_ms <= start_ms:
        raise ValueError(f"end ({iso(end)}) must come after start ({iso(start)})")
    return start_ms, end_ms


def _bucket_count(start_ms: int, end_ms: int, width_ms: int) -> int:
    """How many buckets of ``width_ms`` (aligned on 1970) ``[start_ms, end_ms)`` touches."""
    return (end_ms - 1) // width_ms - start_ms // width_ms + 1


def _width_ms(every_s) -> int:
    if isinstance(every_s, bool) or not isinstance(every_s, numbers.Real) or not every_s >= 0.001:
        raise ValueError(f"every must be a number of seconds of at least 0.001, not {every_s!r}")
    return round(every_s * 1000)


def _name(name, what: str, shortest: int = 1, longest: int = NAME_LENGTH) -> str:
    if not isinstance(name, str) or not shortest <= len(name) <= longest:
        raise ValueError(f"a {what} name must be text of {shortest} to {longest} characters, not {name!r}")
    return name


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _plain(value: float):
    """A stored number as it was given: ``int`` when whole (a count of points), else ``float``."""
    return int(value) if float(value).is_integer() else float(value)


def _cell(value) -> str:
    """A number of ``history_csv``: whole ones without a point, others to 4 decimals; ``""`` stays empty."""
    if value == "":
        return ""
    return str(int(value) if float(value).is_integer() else round(value, 4))
