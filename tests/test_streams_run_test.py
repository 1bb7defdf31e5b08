"""``run_test.py`` on a real MJPEG stream served on 127.0.0.1 (``tests/streams.py``): each counted frame's
wall-clock time in ``counts.csv``, ``--reconnect`` across the stream stopped and started again, Ctrl-C
(SIGINT) ending the run normally with ``counts.csv`` whole, a second run into the same folder adding its
rows, and the mistakes that are one line. Small frames keep each count short; every wait is bounded."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import run_test
from helpers import ROOT
from streams import MjpegServer, scene_jpegs

FPS = 10.0
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ZONES = '{"left": [[0, 0], [80, 0], [80, 120], [0, 120]]}'
# Seconds a child may take to load PyTorch and the checkpoint and count its first frames on a busy machine.
START_S = 40.0


class Run:
    """``run_test.py args`` in a child process; its output lines are collected as they come, so that the
    pipes never fill up, and ``wait_for`` polls a condition on them or on the files it writes."""

    def __init__(self, args: list):
        self.lines, self.lock = [], threading.Lock()
        self.process = subprocess.Popen([sys.executable, "run_test.py", *args], cwd=ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.readers = [threading.Thread(target=self.collect, args=(pipe,), daemon=True)
                        for pipe in (self.process.stdout, self.process.stderr)]
        for reader in self.readers:
            reader.start()

    def collect(self, pipe) -> None:
        for line in pipe:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def wait_for(self, condition, what: str, timeout_s: float) -> None:
        """Until ``condition()`` holds; fails naming ``what`` and the output so far after ``timeout_s``
        seconds, or when the child ended."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                pytest.fail(f"{what}: not within {timeout_s:g} s (exit code {self.process.poll()}); output:\n"
                            f"{self.output()[-3000:]}", pytrace=False)
            time.sleep(0.1)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the child; its exit code once it ended (it is killed after 30 s)."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self.readers:
            reader.join(timeout=5)
        return code


def rows_of(folder) -> list:
    path = folder / "counts.csv"
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def arrival(row: dict) -> datetime:
    return datetime.strptime(row["time"], TIME_FORMAT).replace(tzinfo=timezone.utc)


def check_whole(folder) -> None:
    """``counts.csv`` has one header, every line ends and has the header's number of cells."""
    text = (folder / "counts.csv").read_text()
    assert text.endswith("\n") and text.count("frame,time_s,time,count,left") == 1
    with open(folder / "counts.csv", newline="") as file:
        widths = {len(cells) for cells in csv.reader(file)}
    assert widths == {5}


@pytest.fixture(scope="module")
def stream():
    """An MJPEG server of four small demo scenes at ``FPS`` frames per second on 127.0.0.1."""
    with MjpegServer(scene_jpegs(4, size=(160, 120)), fps=FPS, lifetime_s=110) as server:
        yield server


@pytest.fixture(scope="module")
def counted(stream, counting_model, tmp_path_factory):
    """A run with ``--reconnect`` whose stream is stopped for 3 s and started again, then ended by SIGINT:
    ``(its folder, its arguments, its exit code, its output, when the stream stopped and started, UTC)``."""
    folder = tmp_path_factory.mktemp("streams")
    (folder / "zones.json").write_text(ZONES)
    out = folder / "out"
    args = ["--weight_path", str(counting_model), "--input", stream.url, "--output_dir", str(out), "--device",
            "cpu", "--zones", str(folder / "zones.json")]
    run = Run(args + ["--reconnect"])
    run.wait_for(lambda: len(rows_of(out)) >= 2, "two rows counted", START_S)
    stream.stop()
    stopped = datetime.now(timezone.utc)
    run.wait_for(lambda: ": lost (" in run.output(), "the line saying the stream is lost", 15)
    time.sleep(3)
    started = datetime.now(timezone.utc)
    stream.start()
    run.wait_for(lambda: ": back after " in run.output(), "the line saying the stream is back", 15)
    run.wait_for(lambda: sum(arrival(row) > started for row in rows_of(out)) >= 2, "two rows after", 15)
    code = run.interrupt()
    return out, args, code, run.output(), stopped, started


def test_a_lost_stream_is_reconnected_and_its_rows_carry_their_arrival_times(counted, stream):
    out, _, code, output, stopped, started = counted
    assert code == 0, output[-3000:]
    assert output.count(": lost (the stream ended or broke off); reconnecting, first in 1 s") == 1, output
    assert output.count(": back after ") == 1 and "stopped by Ctrl-C after frame" in output
    assert "; lost and back once)" in output and "Traceback" not in output
    check_whole(out)
    rows = rows_of(out)
    times, frames = [arrival(row) for row in rows], [int(row["frame"]) for row in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert any(moment < stopped for moment in times) and sum(moment > started for moment in times) >= 2
    # Frames already on their way when the server stopped may still arrive for a moment.
    assert not any(stopped + timedelta(seconds=1) < moment < started for moment in times)
    assert len(list(out.glob("vis-*.mp4"))) == 1


def test_a_second_run_into_the_same_folder_adds_its_rows(counted):
    out, args, _, _, _, _ = counted
    before = rows_of(out)
    run = Run(args)
    run.wait_for(lambda: len(rows_of(out)) >= len(before) + 2, "two more rows", START_S)
    assert run.interrupt() == 0, run.output()[-3000:]
    check_whole(out)
    rows = rows_of(out)
    assert rows[:len(before)] == before
    assert int(rows[len(before)]["frame"]) == int(before[-1]["frame"]) + 1
    times = [arrival(row) for row in rows]
    assert times == sorted(times)
    assert len(list(out.glob("vis-*.mp4"))) == 2


def test_other_zones_for_the_same_folder_are_one_line_before_counting(counted, tmp_path, capsys):
    out, args, _, _, _, _ = counted
    before = (out / "counts.csv").read_bytes()
    (tmp_path / "zones.json").write_text('{"gate": [[0, 0], [50, 0], [50, 50]]}')
    zones = args.index("--zones") + 1
    other = [*args[:zones], str(tmp_path / "zones.json"), *args[zones + 1:]]
    assert run_test.main(other) == 1
    printed = capsys.readouterr()
    assert printed.err.strip() == (f"error: {out / 'counts.csv'} has other columns than this run writes (left only "
                                   "there; gate only in this run): count into another folder, or with the zones "
                                   "that file was counted with")
    assert printed.out == "" and (out / "counts.csv").read_bytes() == before


def test_reconnect_is_for_cameras_and_streams_and_time_is_a_streams_column(counting_model, tmp_path, capsys):
    base = ["--weight_path", str(counting_model), "--input"]
    with pytest.raises(SystemExit) as stop:
        run_test.main([*base, str(tmp_path / "clip.mp4"), "--reconnect"])
    assert stop.value.code == 2 and "--reconnect is for a camera or a stream" in capsys.readouterr().err
    (tmp_path / "zones.json").write_text('{"time": [[0, 0], [50, 0], [50, 50]]}')
    assert run_test.main([*base, "http://127.0.0.1:9/none", "--zones", str(tmp_path / "zones.json")]) == 1
    assert "the name 'time' is a column of a stream's counts.csv" in capsys.readouterr().err
