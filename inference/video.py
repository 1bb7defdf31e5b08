"""Counting a video file, a camera or a stream frame by frame (``run_test.py --input`` with a video)."""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from crowd_datasets.image_io import write_rgb
from util.script import EXIT_SKIPPED

from .counter import Counter
from .density import density_map
from .inputs import source_name
from .outputs import CountsCsv, say, video_header, video_row, write_points_csv
from .video_io import FALLBACK_FPS, VideoError, VideoSource, VideoWriter
from .visualize import draw_density, draw_label, draw_points, draw_zones, plot_counts_over_time
from .zones import describe, zones_outside


def count_video(counter: Counter, source, output_dir: Path = None, frame_stride: int = 1,
                save_frame_points: bool = False, zones: dict = None, exclusions: dict = None,
                save_density: bool = False, density_sigma: float = None) -> int:
    """Count people in every ``frame_stride``-th frame of a video file (``Path``), a camera index or a
    stream URL (``str``); print a line per frame and a summary.

    With ``output_dir``: ``counts.csv`` (``frame,time_s,count``), ``vis.mp4`` (the counted frames with
    their points and count drawn, at the source's frame rate divided by ``frame_stride``) and with
    ``save_frame_points`` ``points/<frame>.csv``, all written frame by frame: Ctrl-C keeps what was
    counted. ``exclusions`` and ``zones`` (checked polygons, ``inference.zones``) drop points and count
    them per zone: a column each in ``counts.csv``, outlined in ``vis.mp4``. ``save_density`` writes
    ``heatmap.jpg`` (where people stood: the mean density map of the counted frames, ``density_sigma``
    pixels or adaptive, over the last frame) and ``counts.png`` (the count and each zone's over time), at
    the end and on Ctrl-C. Ctrl-C ends a camera or stream normally; for a file it is raised again once everything is
    written. Returns 0, or ``EXIT_SKIPPED`` when the source cannot be opened or the file ends before
    the frame count it declares.
    """
    name = source_name(source)
    try:
        video = VideoSource(source, frame_stride, counter.max_pixels)
    except VideoError as error:
        say(f"skipped {name}: {error.reason}", file=sys.stderr)
        return EXIT_SKIPPED
    counts, counts_csv, writer, last, refused = [], None, None, None, False
    chart = {"times": [], "zones": {}, "density": None, "frame": None}
    try:
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        zones = zones or {}
        counts_csv = CountsCsv(output_dir / "counts.csv" if output_dir is not None else None, video_header(zones))
        if output_dir is not None:
            writer = VideoWriter(output_dir / "vis.mp4", (video.fps or FALLBACK_FPS) / frame_stride)
        total = -(-video.frame_count // frame_stride) if video.frame_count else None
        for index, time_s, rgb in tqdm(video, total=total, desc=name, unit="frame", disable=None):
            result = counter.predict(rgb, zones=zones, exclude=exclusions)
            if not counts:
                for zone in zones_outside(zones, *rgb.shape[:2]):
                    say(f"warning: zone {zone!r} lies wholly outside {name}'s frames ({rgb.shape[1]} x "
                        f"{rgb.shape[0]} px) and counts 0 there", file=sys.stderr)
            counts.append(result["count"])
            last = index
            say(f"frame {index} ({time_s:.2f} s): {describe(result['count'], result['zones'])}")
            if output_dir is None:
                continue
            counts_csv.add(video_row(index, time_s, result, zones))
            picture = draw_zones(draw_points(rgb, result["points"]), zones, result["zones"], exclusions)
            writer.write(draw_label(picture, f"frame {index}: {result['count']} people"))
            if save_frame_points:
                write_points_csv(output_dir / "points" / f"{index:06d}.csv", result["points"], result["scores"])
            if save_density:
                density = density_map(result["points"], *rgb.shape[:2], density_sigma).astype(np.float64)
                chart["density"] = density if chart["density"] is None else chart["density"] + density
                chart["frame"] = rgb
                chart["times"].append(time_s)
                for zone in zones:
                    chart["zones"].setdefault(zone, []).append(result["zones"][zone])
    except KeyboardInterrupt:
        if not video.live:
            raise
        say(f"{name}: stopped by Ctrl-C" + (f" after frame {last}" if counts else ""))
    except VideoError as error:
        say(f"skipped the rest of {name}: {error.reason}", file=sys.stderr)
        refused = True
    finally:
        video.close()
        if writer is not None:
            writer.close()
        if counts_csv is not None:
            counts_csv.close()
        if chart["frame"] is not None:
            frames = len(chart["times"])
            write_rgb(output_dir / "heatmap.jpg", draw_density(chart["frame"], chart["density"] / frames,
                                                               f"people per pixel, mean of {frames} frames"))
            plot_counts_over_time(chart["times"], counts[-frames:], chart["zones"], output_dir / "counts.png",
                                  title=name)
    mean = f", {sum(counts) / len(counts):.1f} people per frame on average, {max(counts)} at most" if counts else ""
    every = "every frame" if frame_stride == 1 else f"1 frame in {frame_stride}"
    if video.live:
        apart = f", {frame_stride} or more apart" if frame_stride > 1 else ""
        every = f"the newest whenever the network was free{apart}; {video.frames_read} read"
    say(f"{name}: counted {len(counts)} frames ({every}){mean}")
    if output_dir is not None:
        say(f"wrote {output_dir / 'counts.csv'}, {output_dir / 'vis.mp4'}"
            + (f", {output_dir / 'points'}/" if save_frame_points else "")
            + (f", {output_dir / 'heatmap.jpg'}, {output_dir / 'counts.png'}" if chart["frame"] is not None else ""))
    if refused:
        return EXIT_SKIPPED
    if video.ended_early:
        say(f"{name}: the video ended after {video.frames_read} of the {video.frame_count} frames its file "
            "declares (a truncated file?)", file=sys.stderr)
        return EXIT_SKIPPED
    return 0
