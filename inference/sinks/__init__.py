"""Output sinks: each file a run writes is one ``Sink`` (``base.py``), chosen here from the
``CountingOptions``. Adding an output is adding a sink class and a line below."""
from pathlib import Path

from ..job import CountingOptions
from .base import CountedFrame, CountedPicture, PictureRow, Sink, VideoStart
from .pictures import CountsTable, DensityMaps, DrawnPictures, PointFiles, RestoredPictures
from .points_json import PointsJson
from .video import DensityChart, DrawnVideo, FramePointFiles, FrameCountsTable

# (sink class, whether the options ask for it), in the order the run's last line names their files.
PICTURE_SINKS = (
    (CountsTable, lambda options: True),
    (PointFiles, lambda options: True),
    (DrawnPictures, lambda options: True),
    (RestoredPictures, lambda options: options.restore),
    (DensityMaps, lambda options: options.density),
    (PointsJson, lambda options: options.points_json),
)
VIDEO_SINKS = (
    (FrameCountsTable, lambda options: True),
    (DrawnVideo, lambda options: True),
    (FramePointFiles, lambda options: options.frame_points),
    (DensityChart, lambda options: options.density),
)


class OutputFolder:
    """Where a run writes (``path``; ``None``: nowhere, no sinks) and the sinks that ``options`` ask for:
    ``picture_sinks()`` for the pictures of a folder, ``video_sinks(stem)`` for a video (into ``path``
    itself, or ``path/<stem>/`` for a video among pictures). ``streaming``: the pictures' ``counts.csv``
    grows row by row (one process) rather than at the end (``torchrun``)."""

    def __init__(self, path: Path, options: CountingOptions, streaming: bool = True):
        self.path, self.options, self.streaming = path, options, streaming

    @staticmethod
    def folders() -> tuple:
        """Every sub-folder any sink may write, for the check of ``--output_dir`` before any work."""
        return tuple(dict.fromkeys(folder for sink, _ in PICTURE_SINKS + VIDEO_SINKS for folder in sink.folders))

    def picture_sinks(self) -> list:
        if self.path is None:
            return []
        return [sink(self.path, self.options, streaming=self.streaming)
                for sink, wanted in PICTURE_SINKS if wanted(self.options)]

    def video_sinks(self, stem: str = None) -> list:
        if self.path is None:
            return []
        folder = self.path / stem if stem is not None else self.path
        return [sink(folder, self.options) for sink, wanted in VIDEO_SINKS if wanted(self.options)]


__all__ = ["CountedFrame", "CountedPicture", "OutputFolder", "PictureRow", "Sink", "VideoStart"]
