"""The files written for a video, a camera or a stream (``run_test.py --input street.mp4 --output_dir D``):
``counts.csv`` and ``vis.mp4`` frame by frame, ``points/<frame>.csv`` with ``--save_frame_points``, and
``heatmap.jpg`` and ``counts.png`` at the end with ``--save_density``.

A video file's run writes them anew. The runs of a camera or stream may follow each other into one folder:
their rows are appended to its ``counts.csv`` (with a ``time`` column, the UTC time each frame arrived),
their frames are numbered on from the last row, so ``points/<frame>.csv`` never replace earlier ones, and
each run's video and charts are named by its UTC start (``vis-20261207T234005Z.mp4``)."""
from pathlib import Path

import numpy as np

from crowd_datasets.image_io import write_rgb

from ..density import density_map
from ..job import FrameCount
from ..outputs import CountsCsv, appendable, csv_row, last_row, video_header, video_row, write_points_csv
from ..video_io import VideoWriter
from ..visualize import draw_density, draw_label, draw_points, draw_zones, plot_counts_over_time
from .base import CountedFrame, Sink, VideoStart

COUNTS_CSV = "counts.csv"


def first_stream_frame(folder: Path, zones: dict) -> int:
    """The number a camera's or stream's run into ``folder`` gives its first frame: one after the last frame
    its ``counts.csv`` lists, 0 when there is none. ``ValueError`` naming the file and the columns that
    differ when that file was written with other zones (or for a video file), before anything is counted."""
    path = folder / COUNTS_CSV
    if not appendable(path, csv_row(video_header(zones, live=True))):
        return 0
    cells = last_row(path)
    return int(cells[0]) + 1 if cells and cells[0].isdigit() else 0


def run_path(folder: Path, stem: str, suffix: str, video: VideoStart) -> Path:
    """Where a run writes ``<stem><suffix>``: there for a video file (each run rewrites it); for a camera or
    stream ``<stem>-<UTC start><suffix>`` (``vis-20261207T234005Z.mp4``), with ``-2``, ``-3``, ... when a
    run started in the same second took that name, so that no run's file replaces another's."""
    if not video.live:
        return folder / f"{stem}{suffix}"
    base = f"{stem}-{video.started:%Y%m%dT%H%M%SZ}"
    path, number = folder / f"{base}{suffix}", 1
    while path.exists():
        number += 1
        path = folder / f"{base}-{number}{suffix}"
    return path


class FrameCountsTable(Sink):
    """``counts.csv``: ``frame,time_s,count`` (a camera or stream: ``frame,time_s,time,count``) and a column per
    zone, a row per counted frame, each written as it is counted (Ctrl-C keeps them). A camera's or
    stream's rows are appended to a ``counts.csv`` with the same columns."""

    table = None

    def start(self, video: VideoStart) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.table = CountsCsv(self.folder / COUNTS_CSV, video_header(self.options.zones, live=video.live),
                               append=video.live)

    def add(self, counted: CountedFrame) -> None:
        row = FrameCount.of(counted.index, counted.time_s, counted.result)
        self.table.add(video_row(row, arrived=counted.arrived))

    def close(self) -> None:
        if self.table is not None:
            self.table.close()

    def written(self) -> list:
        return [str(self.folder / COUNTS_CSV)]


class DrawnVideo(Sink):
    """``vis.mp4`` (a camera or stream: ``vis-<UTC start>.mp4``, ``run_path``): the counted frames with their
    points, zones and count drawn, at the rate they were counted."""

    writer = None

    def start(self, video: VideoStart) -> None:
        self.writer = VideoWriter(run_path(self.folder, "vis", ".mp4", video), video.fps)

    def add(self, counted: CountedFrame) -> None:
        result = counted.result
        picture = draw_zones(draw_points(counted.rgb, result.points), self.options.zones, result.zones,
                             self.options.exclusions)
        self.writer.write(draw_label(picture, f"frame {counted.index}: {result.count} people"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def written(self) -> list:
        return [str(self.writer.path)] if self.writer is not None else []


class FramePointFiles(Sink):
    """``points/<frame>.csv`` (six digits): ``x,y,score`` per counted person of each counted frame."""

    folders = ("points",)

    def add(self, counted: CountedFrame) -> None:
        write_points_csv(self.folder / "points" / f"{counted.index:06d}.csv", counted.result.points,
                         counted.result.scores)

    def written(self) -> list:
        return [f"{self.folder / 'points'}/"]


class DensityChart(Sink):
    """At the end (also on Ctrl-C): ``heatmap.jpg``, where people stood (the mean density map of the counted
    frames over the last one), and ``counts.png``, the count and each zone's over time (a camera or stream:
    ``heatmap-<UTC start>.jpg`` and ``counts-<UTC start>.png``, ``run_path``)."""

    def __init__(self, folder, options, streaming: bool = True):
        super().__init__(folder, options, streaming)
        self.name, self.density, self.frame, self.times, self.counts = "", None, None, [], []
        self.zones = {zone: [] for zone in options.zones}
        self.paths = (folder / "heatmap.jpg", folder / "counts.png")

    def start(self, video: VideoStart) -> None:
        self.name = video.name
        self.paths = (run_path(self.folder, "heatmap", ".jpg", video), run_path(self.folder, "counts", ".png", video))

    def add(self, counted: CountedFrame) -> None:
        result = counted.result
        density = density_map(result.points, result.height, result.width,
                              self.options.density_sigma).astype(np.float64)
        self.density = density if self.density is None else self.density + density
        self.frame = counted.rgb
        self.times.append(counted.time_s)
        self.counts.append(result.count)
        for zone, values in self.zones.items():
            values.append(result.zones[zone])

    def close(self) -> None:
        if self.frame is None:
            return
        frames = len(self.times)
        heatmap, chart = self.paths
        write_rgb(heatmap, draw_density(self.frame, self.density / frames,
                                        f"people per pixel, mean of {frames} frames"))
        plot_counts_over_time(self.times, self.counts, self.zones, chart, title=self.name)

    def written(self) -> list:
        return [str(path) for path in self.paths] if self.frame is not None else []
