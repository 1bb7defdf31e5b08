"""The pieces that counting's outputs share: lines on the console (``say``), ``counts.csv`` made safe for
spreadsheets (row by row, or all rows at once under ``torchrun``) and ``x,y,score`` points files. The
outputs themselves are the sinks of ``inference.sinks``."""
import csv
import os
import re
import sys
from datetime import datetime
from pathlib import Path

from tqdm import tqdm


from .job import FrameCount

# A spreadsheet runs a cell that begins with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ... except a number written as text, such as a time "-0.040", which stays a number there.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)
# The last line of a counts.csv is looked for in this many bytes at its end (a row is far shorter).
TAIL_BYTES = 64 << 10


def say(line: str, file=None) -> None:
    """Print ``line`` above any progress bar in a single write, flushed: processes that share a terminal or a
    pipe (under ``torchrun`` every process prints the pictures it counts) then never mix their lines."""
    file = sys.stdout if file is None else file
    tqdm.write(line + "\n", file=file, end="")
    file.flush()


def csv_text(value):
    """``value`` as a cell of ``counts.csv``: text that a spreadsheet would run as a formula (a zone or file
    name such as ``=HYPERLINK(...)`` or ``+cmd.jpg``) behind a single quote, which keeps it text there;
    other text and numbers as they are. Applied twice, it quotes once."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_row(row) -> list:
    """``row`` with its text cells made safe for spreadsheets (``csv_text``)."""
    return [csv_text(value) for value in row]


class CountsCsv:
    """``counts.csv`` at ``path`` (``None``: nothing is written): ``header``, then a row per picture or frame,
    every text cell (names of zones and pictures) through ``csv_text``.

    ``streaming``: each row is written and flushed as it comes, so that an interrupted run keeps what it
    counted. Otherwise (processes of ``torchrun``) nothing is written until ``write_all`` is given every
    process's rows, by the first process. ``append`` (streaming only): rows go after those of a file
    already at ``path`` with the same header (``ValueError`` for another header, ``appendable``); without
    it the file is written anew. Use it as a context manager, which closes the file."""

    def __init__(self, path: Path, header: list, streaming: bool = True, append: bool = False):
        self.path, self.header = path, csv_row(header)
        appending = append and path is not None and streaming and appendable(path, self.header)
        self.file = open(path, "a" if appending else "w", newline="") if path is not None and streaming else None
        self.writer = csv.writer(self.file) if self.file is not None else None
        if self.writer is not None and not appending:
            self.writer.writerow(self.header)

    def add(self, row: list) -> None:
        if self.writer is not None:
            self.writer.writerow(csv_row(row))
            self.file.flush()

    def write_all(self, rows: list) -> None:
        if self.path is not None:
            with open(self.path, "w", newline="") as file:
                csv.writer(file).writerows([self.header] + [csv_row(row) for row in rows])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def appendable(path: Path, header: list) -> bool:
    """Whether ``path`` holds a CSV whose first row is ``header`` (as written, after ``csv_row``), so that
    rows may be appended to it: ``False`` when it is missing or empty, ``ValueError`` naming the file and
    the columns that differ when its header is another."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        with open(path, newline="") as file:
            found = next(csv.reader(file), [])
    except (UnicodeDecodeError, csv.Error):
        raise ValueError(f"{path} is not a CSV file this run can add rows to: count into another folder") from None
    if found == header:
        return True
    raise ValueError(f"{path} has other columns than this run writes ({column_difference(found, header)}): "
                     "count into another folder, or with the zones that file was counted with")


def column_difference(there: list, here: list) -> str:
    """How the columns ``there`` (a file's) differ from ``here`` (this run's), for an error line."""
    only_there, only_here = [c for c in there if c not in here], [c for c in here if c not in there]
    parts = []
    if only_there:
        parts.append(f"{', '.join(only_there)} only there")
    if only_here:
        parts.append(f"{', '.join(only_here)} only in this run")
    return "; ".join(parts) or "the same columns in another order"


def last_row(path: Path) -> list:
    """The cells of the last non-empty line of the CSV at ``path``, read from its end (``TAIL_BYTES``) so
    that a file grown over months costs no more than a new one; ``[]`` for an empty file."""
    with open(path, "rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - TAIL_BYTES))
        lines = [line for line in file.read().decode("utf-8", errors="replace").splitlines() if line.strip()]
    return next(csv.reader(lines[-1:]), [])


def utc_text(moment: datetime) -> str:
    """A UTC time in ISO 8601 to the millisecond, ``2026-12-07T23:40:05.123Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def video_header(zones: dict, live: bool = False) -> list:
    """The columns of a video's ``counts.csv``: ``frame,time_s,count`` and a column per zone (``csv_text``:
    ``serve.py`` writes these rows itself). ``live`` (a camera or stream): ``time``, each frame's UTC
    time of arrival, follows ``time_s``, so that the zones stay the columns after ``count``."""
    times = ["time_s", "time"] if live else ["time_s"]
    return ["frame", *times, "count", *map(csv_text, zones)]


def video_row(frame: FrameCount, arrived: datetime = None) -> list:
    """A counted frame's row of ``counts.csv`` (``video_header``; its zones in the header's order), with
    ``arrived`` (UTC) as ``time`` when given."""
    time = [utc_text(arrived)] if arrived is not None else []
    return [frame.frame, f"{frame.time_s:.3f}", *time, frame.count, *frame.zones.values()]


def write_points_csv(path: Path, points, scores) -> None:
    """``x,y,score`` rows of ``points [N, 2]`` (pixels) and ``scores [N]``, at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["x", "y", "score"])
        writer.writerows((f"{x:.4f}", f"{y:.4f}", f"{s:.6f}") for (x, y), s in zip(points.tolist(), scores.tolist()))
