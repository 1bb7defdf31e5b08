"""The pieces that counting's outputs share: lines on the console (``say``), ``counts.csv`` made safe for
spreadsheets (row by row, or all rows at once under ``torchrun``) and ``x,y,score`` points files. The
outputs themselves are the sinks of ``inference.sinks``."""
import csv
import re
import sys
from pathlib import Path

from tqdm import tqdm


from .job import FrameCount

# A spreadsheet runs a cell that begins with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ... except a number written as text, such as a time "-0.040", which stays a number there.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)


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
    process's rows, by the first process. Use it as a context manager, which closes the file."""

    def __init__(self, path: Path, header: list, streaming: bool = True):
        self.path, self.header = path, csv_row(header)
        self.file = open(path, "w", newline="") if path is not None and streaming else None
        self.writer = csv.writer(self.file) if self.file is not None else None
        if self.writer is not None:
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


def video_header(zones: dict) -> list:
    """The columns of a video's ``counts.csv``: ``frame,time_s,count`` and a column per zone (``csv_text``:
    ``serve.py`` writes these rows itself)."""
    return ["frame", "time_s", "count", *map(csv_text, zones)]


def video_row(frame: FrameCount) -> list:
    """A counted frame's row of ``counts.csv`` (``video_header``; its zones in the header's order)."""
    return [frame.frame, f"{frame.time_s:.3f}", frame.count, *frame.zones.values()]


def write_points_csv(path: Path, points, scores) -> None:
    """``x,y,score`` rows of ``points [N, 2]`` (pixels) and ``scores [N]``, at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["x", "y", "score"])
        writer.writerows((f"{x:.4f}", f"{y:.4f}", f"{s:.6f}") for (x, y), s in zip(points.tolist(), scores.tolist()))
