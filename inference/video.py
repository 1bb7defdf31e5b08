"""Counting a video file, a camera or a stream frame by frame (``run_test.py --input`` with a video)."""
import sys
from datetime import datetime, timezone

from tqdm import tqdm

from util.script import EXIT_SKIPPED

from .counter import Counter
from .inputs import source_name
from .job import CountingOptions
from .outputs import say
from .sinks import CountedFrame, VideoStart
from .video_io import FALLBACK_FPS, VideoError, VideoSource
from .zones import describe, zones_outside


def count_video(counter: Counter, source, options: CountingOptions, sinks: list, *, first_frame: int = 0) -> int:
    """Count people in every ``options.frame_stride``-th frame of a video file (``Path``), a camera index or
    a stream URL (``str``) as ``options`` say; print a line per frame and a summary, and hand each counted
    frame to the ``sinks`` (``inference.sinks``; they write frame by frame, so Ctrl-C keeps what was
    counted). Ctrl-C ends a camera or stream normally; for a file it is raised again once everything is
    written. With ``options.reconnect`` a lost camera or stream is reopened (``VideoSource``), with a line
    on stderr when it is lost and one when it is back, so the run only ends by Ctrl-C. ``first_frame``: the
    number given to the source's first frame (a stream whose rows continue those of an earlier run).
    Returns 0, or ``EXIT_SKIPPED`` when the source cannot be opened, refuses a frame midway, or the file
    ends before the frame count it declares.
    """
    name = source_name(source)
    try:
        video = VideoSource(source, options.frame_stride, counter.max_pixels, reconnect=options.reconnect,
                            report=lambda line: say(f"{name}: {line}", file=sys.stderr))
    except VideoError as error:
        say(f"skipped {name}: {error.reason}", file=sys.stderr)
        return EXIT_SKIPPED
    counts, last, refused = [], None, False
    try:
        start = VideoStart(name=name, fps=(video.fps or FALLBACK_FPS) / options.frame_stride, live=video.live,
                           started=datetime.now(timezone.utc))
        for sink in sinks:
            sink.start(start)
        for counted in counted_frames(counter, video, options, name, first_frame):
            counts.append(counted.result.count)
            last = counted.index
            for sink in sinks:
                sink.add(counted)
    except KeyboardInterrupt:
        if not video.live:
            raise
        say(f"{name}: stopped by Ctrl-C" + (f" after frame {last}" if counts else ""))
    except VideoError as error:
        say(f"skipped the rest of {name}: {error.reason}", file=sys.stderr)
        refused = True
    finally:
        video.close()
        for sink in sinks:
            sink.close()
    say_summary(name, video, options.frame_stride, counts, sinks)
    if refused:
        return EXIT_SKIPPED
    if video.ended_early:
        say(f"{name}: the video ended after {video.frames_read} of the {video.frame_count} frames its file "
            "declares (a truncated file?)", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def counted_frames(counter: Counter, video: VideoSource, options: CountingOptions, name: str, first_frame: int):
    """Count each frame of ``video``, print its line and yield it as a ``CountedFrame`` numbered from
    ``first_frame``; warn once of zones that lie wholly outside the frames."""
    total = -(-video.frame_count // options.frame_stride) if video.frame_count else None
    for number, frame in enumerate(tqdm(video.frames(), total=total, desc=name, unit="frame", disable=None)):
        result = counter.predict(frame.rgb, options)
        if number == 0:
            for zone in zones_outside(options.zones, *frame.rgb.shape[:2]):
                say(f"warning: zone {zone!r} lies wholly outside {name}'s frames ({frame.rgb.shape[1]} x "
                    f"{frame.rgb.shape[0]} px) and counts 0 there", file=sys.stderr)
        index = first_frame + frame.index
        say(f"frame {index} ({frame.time_s:.2f} s): {describe(result.count, result.zones)}")
        yield CountedFrame(index=index, time_s=frame.time_s, rgb=frame.rgb, result=result, arrived=frame.arrived)


def say_summary(name: str, video: VideoSource, frame_stride: int, counts: list, sinks: list) -> None:
    """A video's last lines: frames counted, people per frame on average and at most, what was written."""
    mean = f", {sum(counts) / len(counts):.1f} people per frame on average, {max(counts)} at most" if counts else ""
    every = "every frame" if frame_stride == 1 else f"1 frame in {frame_stride}"
    if video.live:
        apart = f", {frame_stride} or more apart" if frame_stride > 1 else ""
        times = "once" if video.reconnects == 1 else f"{video.reconnects} times"
        back = f"; lost and back {times}" if video.reconnects else ""
        every = f"the newest whenever the network was free{apart}; {video.frames_read} read{back}"
    say(f"{name}: counted {len(counts)} frames ({every}){mean}")
    written = [path for sink in sinks for path in sink.written()]
    if written:
        say("wrote " + ", ".join(written))
