"""The files written for a video, a camera or a stream (``run_test.py --input street.mp4 --output_dir D``):
``counts.csv`` and ``vis.mp4`` frame by frame, ``points/<frame>.csv`` with ``--save_frame_points``, and
``heatmap.jpg`` and ``counts.png`` at the end with ``--save_density``."""
import numpy as np

from crowd_datasets.image_io import write_rgb

from ..density import density_map
from ..job import FrameCount
from ..outputs import CountsCsv, video_header, video_row, write_points_csv
from ..video_io import VideoWriter
from ..visualize import draw_density, draw_label, draw_points, draw_zones, plot_counts_over_time
from .base import CountedFrame, Sink, VideoStart


class FrameCountsTable(Sink):
    """``counts.csv``: ``frame,time_s,count`` and a column per zone, a row per counted frame, each written as
    it is counted (Ctrl-C keeps them)."""

    table = None

    def start(self, video: VideoStart) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.table = CountsCsv(self.folder / "counts.csv", video_header(self.options.zones))

    def add(self, counted: CountedFrame) -> None:
        self.table.add(video_row(FrameCount.of(counted.index, counted.time_s, counted.result)))

    def close(self) -> None:
        if self.table is not None:
            self.table.close()

    def written(self) -> list:
        return [str(self.folder / "counts.csv")]


class DrawnVideo(Sink):
    """``vis.mp4``: the counted frames with their points, zones and count drawn, at the rate they were
    counted."""

    writer = None

    def start(self, video: VideoStart) -> None:
        self.writer = VideoWriter(self.folder / "vis.mp4", video.fps)

    def add(self, counted: CountedFrame) -> None:
        result = counted.result
        picture = draw_zones(draw_points(counted.rgb, result.points), self.options.zones, result.zones,
                             self.options.exclusions)
        self.writer.write(draw_label(picture, f"frame {counted.index}: {result.count} people"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def written(self) -> list:
        return [str(self.folder / "vis.mp4")]


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
    frames over the last one), and ``counts.png``, the count and each zone's over time."""

    def __init__(self, folder, options, streaming: bool = True):
        super().__init__(folder, options, streaming)
        self.name, self.density, self.frame, self.times, self.counts = "", None, None, [], []
        self.zones = {zone: [] for zone in options.zones}

    def start(self, video: VideoStart) -> None:
        self.name = video.name

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
        write_rgb(self.folder / "heatmap.jpg", draw_density(self.frame, self.density / frames,
                                                             f"people per pixel, mean of {frames} frames"))
        plot_counts_over_time(self.times, self.counts, self.zones, self.folder / "counts.png", title=self.name)

    def written(self) -> list:
        if self.frame is None:
            return []
        return [str(self.folder / "heatmap.jpg"), str(self.folder / "counts.png")]
