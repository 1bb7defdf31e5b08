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
from .outputs import CountsCsv, say, write_picture_outputs
from .video import count_video
from .video_io import is_video_file
from .zones import describe, zones_outside


def count_images(counter: Counter, input_path: Path, output_dir: Path = None, save_restored: bool = False,
                 num_workers: int = 2, state: DistributedState = DistributedState(), frame_stride: int = 1,
                 save_frame_points: bool = False, zones: dict = None, exclusions: dict = None,
                 save_density: bool = False, density_sigma: float = None) -> int:
    """Count people in every image and video under ``input_path``; print a line per image and a summary.
    With ``save_restored`` also write the restoration module's output to ``output_dir/restored/``.
    ``num_workers`` loader processes decode the next pictures while the network counts. Each video is
    counted by ``count_video`` into ``output_dir/<its name>/``. ``exclusions`` and ``zones`` (checked
    polygons, see ``inference.zones``) drop points and count them per zone: a column each in ``counts.csv``,
    outlined in ``vis/``. ``save_density`` also writes each picture's density map (``density/``; videos:
    ``heatmap.jpg`` and ``counts.png``), with Gaussians of ``density_sigma`` pixels or adaptive ones.
    Under ``torchrun`` each process counts every ``world_size``-th file and the first writes
    ``counts.csv`` and the summary for all, as one process would.

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
    # One process writes counts.csv row by row, so an interrupted run keeps what it counted; under torchrun
    # the first process writes every process's rows at the end.
    zones = zones or {}
    warned = set()
    with CountsCsv(output_dir / "counts.csv" if output_dir is not None else None, ["image", "count", *zones],
                   streaming=not state.distributed) as counts_csv:
        for index, rgb, reason in tqdm(loader, desc="counting", unit="file", disable=None if len(mine) > 1 else True):
            path = files[index]
            name = printable(path.name)
            if reason is None and rgb is None:
                videos += 1
                video_dir = output_dir / stems[path] if output_dir is not None else None
                if count_video(counter, path, video_dir, frame_stride, save_frame_points, zones, exclusions,
                               save_density, density_sigma) != 0:
                    skipped.append(index)
                continue
            if reason is not None:
                skipped.append(index)
                say(f"skipped {name}: {reason}", file=sys.stderr)
                continue
            result = counter.predict(rgb, restore=save_restored, zones=zones, exclude=exclusions)
            zone_values = [result["zones"][zone] for zone in zones]
            rows.append((index, name, result["count"], *zone_values))
            for zone in zones_outside(zones, *rgb.shape[:2]):
                if zone not in warned:
                    warned.add(zone)
                    say(f"warning: zone {zone!r} lies wholly outside {name} ({rgb.shape[1]} x {rgb.shape[0]} px) "
                        "and counts 0 there", file=sys.stderr)
            say(f"{name}: {describe(result['count'], result['zones'])}")
            if output_dir is not None:
                write_picture_outputs(output_dir, stems[path], rgb, result, zones, exclusions, save_density,
                                      density_sigma)
            counts_csv.add([name, result["count"], *zone_values])
    gathered = all_gather_objects((rows, skipped, videos))
    rows = sorted(row for part, _, _ in gathered for row in part)
    skipped = [index for _, part, _ in gathered for index in part]
    videos = sum(part for _, _, part in gathered)
    elapsed = time.perf_counter() - started
    if state.is_main:
        if state.distributed:
            counts_csv.write_all([list(row[1:]) for row in rows])
        rate = len(rows) / elapsed if elapsed > 0 else float("inf")
        say(f"counted {len(rows)} images, {sum(row[2] for row in rows)} people in total, "
            + (f"{videos} videos, " if videos else "") + f"{len(skipped)} files skipped, {rate:.2f} images/s")
        if output_dir is not None:
            say(f"wrote {output_dir / 'counts.csv'}, {output_dir / 'points'}/, {output_dir / 'vis'}/")
    # torchrun turns any other exit code of a process into a failure report of its own.
    return EXIT_SKIPPED if skipped and not state.distributed else 0
