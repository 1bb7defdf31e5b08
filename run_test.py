"""Count people with a trained checkpoint (or its ONNX export), in your own images and videos or on a
dataset's test split.

    python run_test.py --weight_path weights/Hazy_JHU_best.pth --input photos/ --output_dir out/
    python run_test.py --weight_path weights/Hazy_JHU_best.pth --input street.mp4 --output_dir out/
"""
import csv
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from crowd_datasets import build_dataset
from crowd_datasets.image_io import ImageReadError, is_image_file, printable, read_rgb
from engine import evaluate
from inference import Counter
from inference import check_tile_size
from models.checkpoint import CheckpointError
from util.metrics import format_summary, plot_counts, write_records_csv
from util.distributed import DistributedState, all_gather_objects, cleanup, init_distributed, resolve_device
from util.misc import EXIT_INTERRUPTED, check_output_dir, collate_images, configure_malloc, error_line, run_script
from util.options import build_parser, dataset_options
from util.video import FALLBACK_FPS, VideoError, VideoSource, VideoWriter, is_live_source, is_video_file
from util.visualize import draw_label, draw_points, write_rgb

EXIT_SKIPPED = 3


def say(line: str, file=None) -> None:
    """Print ``line`` above any progress bar in a single write, flushed: processes that share a terminal or a
    pipe (under ``torchrun`` every process prints the pictures it counts) then never mix their lines."""
    file = sys.stdout if file is None else file
    tqdm.write(line + "\n", file=file, end="")
    file.flush()


def list_inputs(path: Path) -> list:
    """An image or video file, or the non-hidden entries of a folder (sorted by name; sub-folders and broken
    links too, so that they are reported as skipped rather than passed over)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith("."))
    raise FileNotFoundError(f"--input {path}: no such file or folder (expected an image, a video, a folder of "
                            "them, a camera index or a stream URL)")


def output_stems(files: list) -> dict:
    """File -> output name, unique among ``files``: the stem; files sharing a stem (``a.jpg``,
    ``a.png``) keep their suffix in it (``a_jpg``), and a name still taken (by ``a_jpg.png``) gets a
    counter (``a_jpg_2``), so that no picture's outputs overwrite another's."""
    stems = [f.stem for f in files]
    names, used = {}, set()
    for f in files:
        name = f.stem if stems.count(f.stem) == 1 else f"{f.stem}_{f.suffix.lstrip('.')}"
        candidate, number = name, 2
        while candidate in used:
            candidate, number = f"{name}_{number}", number + 1
        used.add(candidate)
        names[f] = candidate
    return names


def skip_reason(path: Path):
    """Why ``path`` from ``--input`` is not counted, or ``None`` for an image or video file."""
    if path.is_dir():
        return "a folder (sub-folders are not searched)"
    if not path.exists():
        return "a broken link" if path.is_symlink() else "no such file"
    if not is_image_file(path) and not is_video_file(path):
        return f"not an image or video file (suffix {path.suffix or 'none'})"
    return None


class PictureFiles(Dataset):
    """Files of ``--input`` (those at ``indices`` of ``files``), decoded in the loader's workers while
    the network runs: item ``i`` is ``(indices[i], H x W x 3 uint8 RGB array or None, None or why the
    file is skipped)``; a video file is ``(indices[i], None, None)``, left to ``count_video``."""

    def __init__(self, files: list, indices: list, max_pixels: int):
        self.files, self.indices, self.max_pixels = files, indices, max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple:
        index = self.indices[position]
        path = self.files[index]
        reason = skip_reason(path)
        if reason is not None or is_video_file(path):
            return index, None, reason
        try:
            return index, read_rgb(path, self.max_pixels), None
        except ImageReadError as error:
            return index, None, error.reason


def as_read(item):
    """The loader's collate function: items pass through unchanged (arrays stay arrays)."""
    return item


def count_images(counter: Counter, input_path: Path, output_dir: Path = None, save_restored: bool = False,
                 num_workers: int = 2, state: DistributedState = DistributedState(), frame_stride: int = 1,
                 save_frame_points: bool = False) -> int:
    """Count people in every image and video under ``input_path``; print a line per image and a summary.
    With ``save_restored`` also write the restoration module's output to ``output_dir/restored/``.
    ``num_workers`` loader processes decode the next pictures while the network counts. Each video is
    counted by ``count_video`` into ``output_dir/<its name>/``. Under ``torchrun`` each process counts
    every ``world_size``-th file and the first writes ``counts.csv`` and the summary for all, as one
    process would.

    Returns the process exit code: 0, or ``EXIT_SKIPPED`` when some file was not a readable image or
    video (not under torchrun, which reports any exit code but 0 as a failed run).
    """
    files = list_inputs(input_path)
    stems = output_stems([f for f in files if is_image_file(f) or is_video_file(f)])
    mine = list(range(state.rank, len(files), state.world_size))
    loader = DataLoader(PictureFiles(files, mine, counter.max_pixels), batch_size=None, collate_fn=as_read,
                        num_workers=num_workers if len(mine) > 1 else 0)
    rows, skipped, videos = [], [], 0
    # One process writes counts.csv row by row, so an interrupted run keeps what it counted.
    counts_file = open(output_dir / "counts.csv", "w", newline="") if output_dir and not state.distributed else None
    counts_csv = csv.writer(counts_file) if counts_file is not None else None
    if counts_csv is not None:
        counts_csv.writerow(["image", "count"])
    started = time.perf_counter()
    try:
        for index, rgb, reason in tqdm(loader, desc="counting", unit="file", disable=None if len(mine) > 1 else True):
            path = files[index]
            name = printable(path.name)
            if reason is None and rgb is None:
                videos += 1
                video_dir = output_dir / stems[path] if output_dir is not None else None
                if count_video(counter, path, video_dir, frame_stride, save_frame_points) != 0:
                    skipped.append(index)
                continue
            if reason is not None:
                skipped.append(index)
                say(f"skipped {name}: {reason}", file=sys.stderr)
                continue
            result = counter.predict(rgb, restore=save_restored)
            rows.append((index, name, result["count"]))
            say(f"{name}: {result['count']}")
            if output_dir is not None:
                stem = stems[path]
                write_points_csv(output_dir / "points" / f"{stem}.csv", result["points"], result["scores"])
                write_rgb(output_dir / "vis" / f"{stem}.jpg", draw_points(rgb, result["points"]))
                if save_restored:
                    write_rgb(output_dir / "restored" / f"{stem}.jpg", result["restored"])
            if counts_csv is not None:
                counts_csv.writerow([name, result["count"]])
                counts_file.flush()
    finally:
        if counts_file is not None:
            counts_file.close()
    gathered = all_gather_objects((rows, skipped, videos))
    rows = sorted(row for part, _, _ in gathered for row in part)
    skipped = [index for _, part, _ in gathered for index in part]
    videos = sum(part for _, _, part in gathered)
    elapsed = time.perf_counter() - started
    if state.is_main:
        if output_dir is not None and state.distributed:
            with open(output_dir / "counts.csv", "w", newline="") as file:
                csv.writer(file).writerows([["image", "count"]] + [[name, count] for _, name, count in rows])
        rate = len(rows) / elapsed if elapsed > 0 else float("inf")
        say(f"counted {len(rows)} images, {sum(count for _, _, count in rows)} people in total, "
            + (f"{videos} videos, " if videos else "") + f"{len(skipped)} files skipped, {rate:.2f} images/s")
        if output_dir is not None:
            say(f"wrote {output_dir / 'counts.csv'}, {output_dir / 'points'}/, {output_dir / 'vis'}/")
    # torchrun turns any other exit code of a process into a failure report of its own.
    return EXIT_SKIPPED if skipped and not state.distributed else 0


def video_source(text: str):
    """``--input`` as a video: a camera index or stream URL (``str``), a video file (``Path``), or
    ``None`` for a picture or a folder. A file or folder of that name comes before a camera or URL."""
    path = Path(text)
    if is_live_source(text) and not path.exists():
        return text
    return path if is_video_file(path) and not path.is_dir() else None


def source_name(source) -> str:
    """How a video source is named in printouts: a file's name, ``camera N``, or a URL without the
    user name and password it may carry."""
    if isinstance(source, Path):
        return printable(source.name)
    return f"camera {source}" if source.isdigit() else re.sub(r"//[^/@]*@", "//", source)


def count_video(counter: Counter, source, output_dir: Path = None, frame_stride: int = 1,
                save_frame_points: bool = False) -> int:
    """Count people in every ``frame_stride``-th frame of a video file (``Path``), a camera index or a
    stream URL (``str``); print a line per frame and a summary.

    With ``output_dir``: ``counts.csv`` (``frame,time_s,count``), ``vis.mp4`` (the counted frames with
    their points and count drawn, at the source's frame rate divided by ``frame_stride``) and with
    ``save_frame_points`` ``points/<frame>.csv``, all written frame by frame: Ctrl-C keeps what was
    counted. Ctrl-C ends a camera or stream normally; for a file it is raised again once everything is
    written. Returns 0, or ``EXIT_SKIPPED`` when the source cannot be opened or the file ends before
    the frame count it declares.
    """
    name = source_name(source)
    try:
        video = VideoSource(source, frame_stride, counter.max_pixels)
    except VideoError as error:
        say(f"skipped {name}: {error.reason}", file=sys.stderr)
        return EXIT_SKIPPED
    counts, counts_file, writer, last = [], None, None, None
    try:
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            counts_file = open(output_dir / "counts.csv", "w", newline="")
            counts_csv = csv.writer(counts_file)
            counts_csv.writerow(["frame", "time_s", "count"])
            writer = VideoWriter(output_dir / "vis.mp4", (video.fps or FALLBACK_FPS) / frame_stride)
        total = -(-video.frame_count // frame_stride) if video.frame_count else None
        for index, time_s, rgb in tqdm(video, total=total, desc=name, unit="frame", disable=None):
            result = counter.predict(rgb)
            counts.append(result["count"])
            last = index
            say(f"frame {index} ({time_s:.2f} s): {result['count']}")
            if output_dir is None:
                continue
            counts_csv.writerow([index, f"{time_s:.3f}", result["count"]])
            counts_file.flush()
            writer.write(draw_label(draw_points(rgb, result["points"]), f"frame {index}: {result['count']} people"))
            if save_frame_points:
                write_points_csv(output_dir / "points" / f"{index:06d}.csv", result["points"], result["scores"])
    except KeyboardInterrupt:
        if not video.live:
            raise
        say(f"{name}: stopped by Ctrl-C" + (f" after frame {last}" if counts else ""))
    finally:
        video.close()
        if writer is not None:
            writer.close()
        if counts_file is not None:
            counts_file.close()
    mean = f", {sum(counts) / len(counts):.1f} people per frame on average, {max(counts)} at most" if counts else ""
    every = "every frame" if frame_stride == 1 else f"1 frame in {frame_stride}"
    if video.live:
        apart = f", {frame_stride} or more apart" if frame_stride > 1 else ""
        every = f"the newest whenever the network was free{apart}; {video.frames_read} read"
    say(f"{name}: counted {len(counts)} frames ({every}){mean}")
    if output_dir is not None:
        say(f"wrote {output_dir / 'counts.csv'}, {output_dir / 'vis.mp4'}"
            + (f", {output_dir / 'points'}/" if save_frame_points else ""))
    if video.ended_early:
        say(f"{name}: the video ended after {video.frames_read} of the {video.frame_count} frames its file "
                   "declares (a truncated file?)", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def write_points_csv(path: Path, points, scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["x", "y", "score"])
        writer.writerows((f"{x:.4f}", f"{y:.4f}", f"{s:.6f}") for (x, y), s in zip(points.tolist(), scores.tolist()))


def evaluate_dataset(counter: Counter, args, output_dir: Path = None, state: DistributedState = DistributedState()):
    """Evaluate the test split of ``args.dataset_file``; print the metrics, ``mae: … mse: …`` last.
    Under ``torchrun`` each process evaluates its share and the first prints the metrics of all."""
    dataset = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    sampler = DistributedSampler(dataset, num_replicas=state.world_size, rank=state.rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=args.num_workers,
                        collate_fn=collate_images)
    summary = evaluate(counter, loader, progress=state.is_main)
    if not state.is_main:
        return 0
    if output_dir is not None:
        write_records_csv(summary["records"], output_dir / "per_image.csv")
        plot_counts(summary["records"], output_dir / "counts.png", title_prefix=f"{args.dataset_file}: ")
        say(f"wrote {output_dir / 'per_image.csv'} and {output_dir / 'counts.png'}")
    for line in format_summary(summary):
        say(line)
    return 0


def main(argv=None) -> int:
    parser = build_parser("test")
    args = parser.parse_args(argv)
    configure_malloc()
    if args.max_megapixels <= 0:
        parser.error(f"--max_megapixels must be positive, got {args.max_megapixels}")
    try:
        check_tile_size(args.tile_size)
    except ValueError as error:
        parser.error(f"--{error}")
    if args.frame_stride < 1:
        parser.error(f"--frame_stride must be at least 1, got {args.frame_stride}")
    if (args.input is None) == (args.dataset_file is None):
        parser.error("give either --input (an image, a video, a folder, a camera or a stream) or --dataset_file "
                     "(a dataset's test split)")
    video = video_source(args.input) if args.input is not None else None
    if video is not None and args.save_restored:
        parser.error("--save_restored writes restored pictures; it does not apply to video input")
    try:
        if args.output_dir:
            check_output_dir(Path(args.output_dir), ("points", "vis", "restored"))
        state = init_distributed(resolve_device(args.device))
        counter = Counter.from_checkpoint(args.weight_path, device=state.device, threshold=args.threshold,
                                          input_norm=args.input_norm, amp=args.amp,
                                          log=None if state.is_main else (lambda message: None),
                                          max_pixels=int(args.max_megapixels * 1e6), tile_size=args.tile_size)
        output_dir = Path(args.output_dir) if args.output_dir else None
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        if args.dataset_file is not None:
            return evaluate_dataset(counter, args, output_dir, state)
        if args.save_restored and (output_dir is None or not counter.has_restoration):
            parser.error("--save_restored needs --output_dir and a checkpoint trained with the restoration module "
                         f"({args.weight_path} has {'it' if counter.has_restoration else 'none'})")
        if video is not None:
            if state.distributed:
                raise ValueError(f"--input {args.input}: a single video is counted by one process; run it without "
                                 "torchrun (folders of pictures and videos are split across processes)")
            if isinstance(video, Path) and not video.is_file():
                raise FileNotFoundError(f"--input {video}: no such file")
            return count_video(counter, video, output_dir, args.frame_stride, args.save_frame_points)
        return count_images(counter, Path(args.input), output_dir, args.save_restored, args.num_workers, state,
                            args.frame_stride, args.save_frame_points)
    except BrokenPipeError:
        raise  # output piped into a program that stopped reading: run_script ends quietly
    except (OSError, ValueError, KeyError, CheckpointError, RuntimeError) as error:
        say(f"error: {error_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("stopped by Ctrl-C; what was counted so far is written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        cleanup()


if __name__ == "__main__":
    run_script(main)
