"""What an output sink is: something that is told about each counted picture or frame and writes (or keeps)
what it needs of it. The counting loops (``inference.pictures``, ``inference.video``) know no file
formats; each output is one sink class."""
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ..job import CountResult


@dataclass(frozen=True)
class CountedPicture:
    """A counted picture: its printable ``name``, the ``stem`` its files are named after, its pixels
    (``rgb``, ``H x W x 3`` uint8) and its ``result``."""

    name: str
    stem: str
    rgb: np.ndarray
    result: CountResult


@dataclass(frozen=True)
class CountedFrame:
    """A counted frame of a video: its ``index`` (its number in the source, after those of earlier runs
    when a stream's rows continue them), ``time_s`` (seconds from the start), its pixels (``rgb``,
    ``H x W x 3`` uint8), its ``result`` and, for a camera or stream, ``arrived``: the UTC time it arrived."""

    index: int
    time_s: float
    rgb: np.ndarray
    result: CountResult
    arrived: datetime = None


@dataclass(frozen=True)
class VideoStart:
    """What video sinks learn when the source is open: its printable ``name``, the rate at which counted
    frames follow each other (``fps``, frames per second, already divided by the frame stride), whether it
    is a camera or stream (``live``: its runs may continue in one folder) and when it was opened
    (``started``, UTC)."""

    name: str
    fps: float
    live: bool = False
    started: datetime = None


@dataclass(frozen=True)
class PictureRow:
    """A picture's line of ``counts.csv``: its ``name``, ``count`` and each zone's count (``zones``)."""

    name: str
    count: int
    zones: dict


class Sink:
    """An output written into ``folder``. The loops call ``start`` once (videos: with a ``VideoStart``;
    pictures: with ``None``), ``add`` for each counted picture or frame, ``finish`` once in the main process
    with every process's ``PictureRow`` in file order (pictures only; under ``torchrun`` the processes
    count different pictures), and ``close`` at the end, also after an error or Ctrl-C.

    ``folders``: the sub-folders of the output folder it writes into (checked before any work);
    ``written()``: the paths the run's last line names. ``streaming``: one process counts everything, so a
    sink may write each result as it comes; under ``torchrun`` only ``finish`` sees them all."""

    folders: tuple = ()

    def __init__(self, folder: Path, options, streaming: bool = True):
        self.folder, self.options, self.streaming = folder, options, streaming

    def start(self, source) -> None:
        pass

    def add(self, counted) -> None:
        pass

    def finish(self, rows: list) -> None:
        pass

    def close(self) -> None:
        pass

    def written(self) -> list:
        return []
