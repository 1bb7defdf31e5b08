"""Counting the pictures (and videos) of a folder or one picture (``run_test.py --input``), one process
or several under ``torchrun``."""
import sys
import time
from pathlib import Path

from torch.utils.data import DataLoader
from tqdm import tqdm

from crowd_datasets.image_io import is_image_file, printable
from util.distributed import DistributedState, all_gather_objects
from util.script import EXIT_SKIPPED
from util.signals import quiet_loader_worker

from .counter import Counter
from .inputs import PictureFiles, as_read, list_inputs, output_stems
from .job import CountingOptions
from .outputs import say
from .sinks import CountedPicture, OutputFolder, PictureRow
from .video import count_video
from .video_io import is_video_file
from .zones import describe, zones_outside


def count_images(counter: Counter, input_path: Path, options: CountingOptions, outputs: OutputFolder,
                 state: DistributedState = DistributedState(), num_workers: int = 2) -> int:
    """Count people in every image and video under ``input_path`` as ``options`` say; print a line per
    image and a summary, and hand each counted picture to the sinks of ``outputs`` (each video is counted
    by ``count_video`` into ``outputs``' folder ``<its name>/``). ``num_workers`` loader processes decode
    the next pictures while the network counts. Under ``torchrun`` each process counts every
    ``world_size``-th file and the first finishes the outputs and prints the summary for all, as one
    process would.

    Returns the process exit code: 0, or ``EXIT_SKIPPED`` when some file was not a readable image or
    video (not under torchrun, which reports any exit code but 0 as a failed run).
    """
    files = list_inputs(input_path)
    stems = output_stems([f for f in files if is_image_file(f) or is_video_file(f)])
    mine = list(range(state.rank, len(files), state.world_size))
    loader = DataLoader(PictureFiles(files, mine, counter.max_pixels), batch_size=None, collate_fn=as_read,
                        num_workers=num_workers if len(mine) > 1 else 0, worker_init_fn=quiet_loader_worker)
    rows, skipped, videos = [], [], 0
    started = time.perf_counter()
    sinks = outputs.picture_sinks()
    warned = set()
    try:
        for index, rgb, reason in tqdm(loader, desc="counting", unit="file", disable=None if len(mine) > 1 else True):
            path = files[index]
            name = printable(path.name)
            if reason is None and rgb is None:
                videos += 1
                if count_video(counter, path, options, outputs.video_sinks(stems[path])) != 0:
                    skipped.append(index)
                continue
            if reason is not None:
                skipped.append(index)
                say(f"skipped {name}: {reason}", file=sys.stderr)
                continue
            result = counter.predict(rgb, options)
            rows.append((index, PictureRow(name=name, count=result.count, zones=result.zones)))
            warn_of_zones_outside(options.zones, rgb, name, warned)
            say(f"{name}: {describe(result.count, result.zones)}")
            counted = CountedPicture(name=name, stem=stems[path], rgb=rgb, result=result)
            for sink in sinks:
                sink.add(counted)
        gathered = all_gather_objects((rows, skipped, videos))
        rows = [row for _, row in sorted((row for part, _, _ in gathered for row in part), key=lambda row: row[0])]
        if state.is_main:
            for sink in sinks:
                sink.finish(rows)
    finally:
        for sink in sinks:
            sink.close()
    skipped = [index for _, part, _ in gathered for index in part]
    videos = sum(part for _, _, part in gathered)
    if state.is_main:
        say_summary(rows, len(skipped), videos, time.perf_counter() - started, sinks)
    # torchrun turns any other exit code of a process into a failure report of its own.
    return EXIT_SKIPPED if skipped and not state.distributed else 0


def warn_of_zones_outside(zones: dict, rgb, name: str, warned: set) -> None:
    """Warn once per zone that lies wholly outside a picture (it counts 0 there: wrong coordinates?)."""
    for zone in zones_outside(zones, *rgb.shape[:2]):
        if zone not in warned:
            warned.add(zone)
            say(f"warning: zone {zone!r} lies wholly outside {name} ({rgb.shape[1]} x {rgb.shape[0]} px) "
                "and counts 0 there", file=sys.stderr)


def say_summary(rows: list, skipped: int, videos: int, elapsed: float, sinks: list) -> None:
    """The run's last lines: how many pictures, people, videos and skipped files, the speed, what was written."""
    rate = len(rows) / elapsed if elapsed > 0 else float("inf")
    say(f"counted {len(rows)} images, {sum(row.count for row in rows)} people in total, "
        + (f"{videos} videos, " if videos else "") + f"{skipped} files skipped, {rate:.2f} images/s")
    written = [path for sink in sinks for path in sink.written()]
    if written:
        say("wrote " + ", ".join(written))
