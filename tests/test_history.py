"""The history store of watched cameras (``watching/history.py``) on real databases: SQLite files in a
temporary folder and a throw-away PostgreSQL server (``tests/postgres.py``; skips without Debian's
binaries, fails so under CI). The store's tests run on both; writers are real processes, one of them
killed with SIGKILL while writing."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from postgres import postgres_url  # noqa: F401  (a module-scoped fixture, asked for by name below)
from watching import history
from watching.database import COUNTS, METADATA
from watching.history import choose_every, history_csv, iso, open_history

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
T0 = datetime(2026, 12, 7, 23, 40, tzinfo=timezone.utc)
# A process that opens the store, says "ready", waits for the file ``go`` (if named), then stores ``limit``
# counts of ``camera`` one second apart (shifted by ``offset_ms``), printing each index once committed.
WRITER = r"""
import os, sys, time
from datetime import datetime, timedelta, timezone
sys.path.insert(0, sys.argv[1])
from watching.history import open_history
where, camera, offset_ms, limit, go = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
store = open_history(where)
print("ready", flush=True)
deadline = time.monotonic() + 30
while go and not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
start = datetime(2026, 12, 7, 23, 40, tzinfo=timezone.utc) + timedelta(milliseconds=offset_ms)
for i in range(limit):
    store.record(camera=camera, time=start + timedelta(seconds=i), count=i, zones={"a": i, "b": 2 * i},
                 threshold=0.5, checkpoint="writer.pth")
    print(i, flush=True)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """Where a store lives: an SQLite file in ``tmp_path``, or the module's PostgreSQL database, emptied after
    the test (tables dropped here: the store itself never drops one)."""
    if request.param == "sqlite":
        yield tmp_path / "history.db"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text("SET lock_timeout = '10s'"))  # a store left open fails the drop, not hangs
        METADATA.drop_all(connection)
    engine.dispose()


@pytest.fixture
def store(where):
    with open_history(where) as opened:
        yield opened


def record(store, seconds: float, count, zones=None, camera: str = "gate") -> None:
    store.record(camera=camera, time=T0 + timedelta(seconds=seconds), count=count, zones=zones or {},
                 threshold=0.5, checkpoint="best_mae.pth")


def start_writer(where, camera: str, limit: int, go: Path | str = "", offset_ms: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(where), camera, str(offset_ms),
                             str(limit), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(writer: subprocess.Popen) -> None:
    assert writer.stdout.readline() == "ready\n", writer.communicate(timeout=30)[1]


def open_unprivileged(path: Path) -> str:
    """What opening ``path`` says (an error's message, or "opened") in a child process that is user ``nobody``
    when we are root (root may write anywhere)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        message = "opened"
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            open_history(path).close()
        except BaseException as error:  # noqa: BLE001 (told to the parent)
            message = str(error)
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)
    return message


def test_counts_survive_closing_and_reopening(where):
    with open_history(where) as store:
        record(store, 0, 3, {"left": 1, "right": 2})
        record(store, 5, 4.5, {"left": 4.5})
        alert = store.raise_alert(camera="gate", zone=None, above=3, time=T0, peak=4.5)
    with open_history(where) as store:  # opening again creates nothing anew and drops nothing
        rows = store.history("gate", start=T0, end=T0 + timedelta(hours=1))
        assert rows == [{"time": T0, "count": 3, "zones": {"left": 1, "right": 2}},
                        {"time": T0 + timedelta(seconds=5), "count": 4.5, "zones": {"left": 4.5}}]
        assert type(rows[0]["count"]) is int and rows[0]["time"].tzinfo == timezone.utc
        assert [row["id"] for row in store.alerts()] == [alert]


def test_rows_latest_and_cameras(store):
    record(store, 10, 2, {"z": 1})
    record(store, 0, 1, {"z": 0})
    record(store, 20, 3, {"z": 2})
    record(store, 0.123, 7, camera="hall")
    rows = store.history("gate", start=T0, end=T0 + timedelta(seconds=20))  # the end is left out
    assert [(row["time"], row["count"]) for row in rows] == [(T0, 1), (T0 + timedelta(seconds=10), 2)]
    latest = store.latest("gate")
    assert latest == {"time": T0 + timedelta(seconds=20), "count": 3, "zones": {"z": 2}, "threshold": 0.5,
                      "checkpoint": "best_mae.pth"}
    assert store.latest("hall")["time"] == T0 + timedelta(milliseconds=123)
    assert store.latest("nowhere") is None
    assert store.cameras() == ["gate", "hall"]


def test_bucket_means_equal_a_hand_computation(store):
    # Buckets of 60 s start on whole minutes (T0 is 23:40:00). Zone "b" is absent from the count at 10 s.
    record(store, 0, 2, {"a": 1, "b": 1})
    record(store, 10, 4, {"a": 3})
    record(store, 59.999, 9, {"a": 6, "b": 3})
    record(store, 60, 10, {"a": 10, "b": 0})
    record(store, 185, 1, {"b": 1})
    rows = store.history("gate", start=T0, end=T0 + timedelta(minutes=10), every_s=60)
    assert rows == [
        {"time": T0, "count": (2 + 4 + 9) / 3, "zones": {"a": (1 + 3 + 6) / 3, "b": (1 + 3) / 2}},
        {"time": T0 + timedelta(minutes=1), "count": 10.0, "zones": {"a": 10.0, "b": 0.0}},
        {"time": T0 + timedelta(minutes=3), "count": 1.0, "zones": {"b": 1.0}},
    ]
    # A range starting inside a bucket averages only what lies in the range.
    late = store.history("gate", start=T0 + timedelta(seconds=5), end=T0 + timedelta(seconds=61), every_s=60)
    assert [(row["time"], row["count"]) for row in late] == [(T0, 6.5), (T0 + timedelta(minutes=1), 10.0)]


def test_prune_deletes_old_counts_and_cleared_alerts(store):
    now = T0 + timedelta(days=10)
    record(store, 0, 1, {"z": 1})  # 10 days old
    record(store, 86_400 * 9 + 1, 2, {"z": 2})  # a little less than one day old
    old_cleared = store.raise_alert(camera="gate", zone="z", above=1, time=T0, peak=1)
    store.clear_alert(old_cleared, time=T0 + timedelta(minutes=1))
    old_open = store.raise_alert(camera="gate", zone="z", above=1, time=T0, peak=1)
    assert store.prune(keep_days=1, now=now) == {"counts": 1, "alerts": 1}
    rows = store.history("gate", start=T0, end=now)
    assert [(row["count"], row["zones"]) for row in rows] == [(2, {"z": 2})]
    assert [alert["id"] for alert in store.alerts()] == [old_open]
    with store.engine.connect() as connection:  # no zone row is left without its count
        assert connection.execute(sa.text("SELECT COUNT(*) FROM watch_zone_counts")).scalar() == 1
    with pytest.raises(ValueError, match="keep_days"):
        store.prune(keep_days=0)


def test_alert_lifecycle(store):
    first = store.raise_alert(camera="gate", zone="left", above=10, time=T0, peak=11)
    second = store.raise_alert(camera="hall", zone=None, above=50, time=T0 + timedelta(seconds=5), peak=51)
    assert store.update_peak(first, peak=15) and store.update_peak(first, peak=12)  # a lower one leaves 15
    assert [alert["id"] for alert in store.alerts()] == [second, first]  # newest first
    assert store.clear_alert(first, time=T0 + timedelta(seconds=30))
    assert not store.clear_alert(first, time=T0 + timedelta(seconds=40))  # cleared once
    assert not store.update_peak(first, peak=99) and not store.update_peak(12345, peak=1)
    assert store.alerts(camera="gate") == [{"id": first, "camera": "gate", "zone": "left", "above": 10,
                                            "raised": T0, "cleared": T0 + timedelta(seconds=30), "peak": 15}]
    assert [(alert["id"], alert["zone"]) for alert in store.alerts(open_only=True)] == [(second, None)]
    assert store.alerts(limit=1)[0]["id"] == second


def test_queries_are_bounded(store, monkeypatch):
    monkeypatch.setattr(history, "MAX_ROWS", 20)
    for second in range(30):
        record(store, second, second, {"z": 2 * second})
    end = T0 + timedelta(seconds=30)
    assert len(store.history("gate", start=T0, end=T0 + timedelta(seconds=20))) == 20  # at the cap: rows
    page = store.history_page("gate", start=T0, end=end)  # over it: buckets of a width chosen here
    assert page.every_s == choose_every(T0, end) == 2
    assert [row["count"] for row in page.rows] == [second + 0.5 for second in range(0, 30, 2)]
    assert page.rows[-1]["zones"] == {"z": 57.0}
    with pytest.raises(ValueError, match=r"^every=1 s gives 30 buckets .* more than 20: choose every of at "
                                         r"least 2 s"):
        store.history("gate", start=T0, end=end, every_s=1)


def test_a_year_of_counts_is_never_read_whole(store):
    year = T0 + timedelta(days=365)
    assert choose_every(T0, year) == 3600  # at most 10,000 buckets
    with pytest.raises(ValueError, match="every=5 s"):
        store.history("gate", start=T0, end=year, every_s=5)
    # 12,000 counts 5 s apart, stored at once: more than a query returns, so it averages buckets in SQL.
    rows = [{"camera": "gate", "ms": (T0 - history.EPOCH) // history.ONE_MS + 5000 * index, "count": index,
             "threshold": 0.5, "checkpoint": ""} for index in range(12_000)]
    with store.engine.begin() as connection:
        connection.execute(COUNTS.insert(), rows)
    page = store.history_page("gate", start=T0, end=T0 + timedelta(seconds=60_000))
    assert page.every_s == 10 and len(page.rows) == 6000
    assert page.rows[0]["count"] == 0.5 and page.rows[-1]["count"] == 11_998.5


def test_csv_keeps_zone_names_from_running_as_formulas():
    rows = [{"time": T0 + timedelta(milliseconds=5), "count": 3, "zones": {"=cmd": 1, "gate": 2}},
            {"time": T0 + timedelta(minutes=1), "count": 2.25, "zones": {"gate": 0.5}}]
    assert history_csv(rows, zones=["=cmd", "gate"]) == ("time,count,'=cmd,gate\n"
                                                         "2026-12-07T23:40:00.005Z,3,1,2\n"
                                                         "2026-12-07T23:41:00.000Z,2.25,,0.5\n")


def test_times_are_aware_utc():
    paris = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 12, 8, 0, 40, 5, 123_999, tzinfo=paris)) == "2026-12-07T23:40:05.123Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        iso(datetime(2026, 12, 7))


def test_bad_values_are_refused(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record(camera="gate", time=datetime(2026, 12, 7), count=1, zones={}, threshold=0.5, checkpoint="")
    with pytest.raises(ValueError, match="finite number"):
        record(store, 0, float("nan"))
    with pytest.raises(ValueError, match="camera name"):
        record(store, 0, 1, camera="")
    with pytest.raises(ValueError, match="end .* must come after start"):
        store.history("gate", start=T0, end=T0)
    assert store.cameras() == []


def test_files_that_cannot_be_opened(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database")
    for path, reason in [(tmp_path / "missing" / "h.db", "its folder .* does not exist"),
                         (tmp_path / "notes.txt" / "h.db", "its folder .* is not a folder"),
                         (tmp_path, "is a folder"),
                         (tmp_path / "notes.txt", r"cannot open it \(file is not a database\)")]:
        with pytest.raises(OSError, match=f"^history database {path}: {reason}") as raised:
            open_history(path)
        assert "\n" not in str(raised.value)
    assert (tmp_path / "notes.txt").read_text() == "not a database"  # nothing truncated


def test_a_folder_that_is_not_writable():
    folder = Path(tempfile.mkdtemp(prefix="history-"))  # not under tmp_path, which nobody cannot reach
    try:
        folder.chmod(0o755 if os.geteuid() == 0 else 0o555)
        message = open_unprivileged(folder / "history.db")
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder)
    assert message == f"history database {folder}/history.db: its folder {folder} is not writable"


def test_urls_that_cannot_be_opened():
    with pytest.raises(OSError) as raised:
        open_history("postgresql://watch:s3cret@127.0.0.1:1/history")  # nothing listens on port 1
    message = str(raised.value)
    assert message.startswith("history database postgresql://watch:***@127.0.0.1:1/history: cannot open it (")
    assert "s3cret" not in message and "\n" not in message
    with pytest.raises(ValueError, match=r"^history database mysql://watch:\*\*\*@db/history: give a file path"):
        open_history("mysql://watch:s3cret@db/history")


def test_sqlite_is_set_for_crashes_and_threads(tmp_path):
    with open_history(tmp_path / "history.db") as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_sigkill_while_writing_keeps_every_committed_count(tmp_path):
    path = tmp_path / "history.db"
    writer = start_writer(path, camera="gate", limit=1_000_000)
    wait_ready(writer)
    committed = [int(writer.stdout.readline()) for _ in range(200)]
    writer.send_signal(signal.SIGKILL)
    committed += [int(line) for line in writer.communicate(timeout=30)[0].split()]
    assert writer.returncode == -signal.SIGKILL
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with open_history(path) as store:
        rows = store.history("gate", start=T0, end=T0 + timedelta(days=1))
        # Every printed count is there; at most the one being committed when killed is there unprinted.
        assert [row["count"] for row in rows][:len(committed)] == committed
        assert len(rows) - len(committed) in (0, 1)
        assert all(row["zones"] == {"a": row["count"], "b": 2 * row["count"]} for row in rows)
        record(store, 86_000, 1)  # and it is written on after the crash


def test_two_processes_write_at_once(where, tmp_path):
    go = tmp_path / "go"
    # Both open the store at once (on a new database both create its tables), then write at once.
    writers = [start_writer(where, camera="gate", limit=150, go=go, offset_ms=offset) for offset in (0, 500)]
    for writer in writers:
        wait_ready(writer)
    go.touch()
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert out.split() == [str(index) for index in range(150)]
    with open_history(where) as store:
        rows = store.history("gate", start=T0, end=T0 + timedelta(hours=1))
    assert [row["time"] for row in rows] == [T0 + timedelta(milliseconds=500 * index) for index in range(300)]
    assert [row["count"] for row in rows] == [index // 2 for index in range(300)]
    assert all(row["zones"] == {"a": row["count"], "b": 2 * row["count"]} for row in rows)


def test_threads_share_a_store(store):
    failures = []

    def write(camera: str) -> None:
        try:
            for second in range(40):
                record(store, second, second, {"z": second}, camera=camera)
                store.history(camera, start=T0, end=T0 + timedelta(minutes=1), every_s=10)
        except Exception as error:  # noqa: BLE001 (told to the test's thread below)
            failures.append(error)

    threads = [threading.Thread(target=write, args=(f"camera {index}",)) for index in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures and time.monotonic() - started < 60
    assert store.cameras() == [f"camera {index}" for index in range(4)]
    assert all(len(store.history(f"camera {index}", start=T0, end=T0 + timedelta(minutes=1))) == 40
               for index in range(4))
