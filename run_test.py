"""Count people with a trained checkpoint (or its ONNX export), in your own images and videos or on a
dataset's test split.

    python run_test.py --weight_path weights/Hazy_JHU_best.pth --input photos/ --output_dir out/
    python run_test.py --weight_path weights/Hazy_JHU_best.pth --input street.mp4 --output_dir out/
"""
import argparse
import json
import sys
from pathlib import Path

from torch.utils.data import DataLoader, DistributedSampler

from crowd_datasets import build_dataset, collate_images
from engine import evaluate
from inference import Counter
from inference.inputs import video_source
from inference.outputs import say
from inference.pictures import count_images
from inference.job import CountingOptions
from inference.sinks import OutputFolder
from inference.sinks.predictions import PredictionFiles, write_nwpu_submission
from inference.sinks.video import first_stream_frame
from inference.video import count_video
from inference.visualize import plot_counts
from models.checkpoint import CheckpointError
from models.releases import RELEASED_CHECKPOINTS
from util.distributed import DistributedState, cleanup, init_distributed, resolve_device
from crowd_datasets.metrics import format_summary, summary_json, write_records_csv
from util.script import EXIT_FAILED, EXIT_INTERRUPTED, check_output_dir, configure_malloc, error_line, run_script
from options import (add_counting_arguments, add_data_arguments, add_input_norm_argument, add_runtime_arguments,
                     counter_options, counting_options, dataset_options)
from util.values import at_least, new_parser, positive_float
from util.signals import quiet_loader_worker


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Count people with a trained checkpoint: in your own images (--input) or on a dataset's "
                        "test split (--dataset_file), printing MAE/MSE and localization metrics.")
    add_input_norm_argument(parser, " (default: as stored in the checkpoint)")
    add_counting_arguments(add_runtime_arguments(parser))
    add_data_arguments(parser, "evaluate")
    group = parser.add_argument_group("evaluation")
    group.add_argument("--weight_path", required=True,
                       help="checkpoint to evaluate: one written by train.py, a released Dehaze-P2PNet "
                            "checkpoint, an original P2PNet one (with --input_norm imagenet), or an .onnx "
                            "file from tools/export_onnx.py (run by onnxruntime). A released checkpoint may be "
                            "given by name (" + ", ".join(RELEASED_CHECKPOINTS) + "): downloaded once into the "
                            "cache folder (weights/README.md)")
    group.add_argument("--input", default=None,
                       help="what to count people in: an image, a video file (mp4, avi, mkv, mov, ...), a "
                            "folder of images and videos, a camera index (0) or a stream URL (rtsp://...)")
    group.add_argument("--frame_stride", type=at_least(1), default=1,
                       help="with video input: count every N-th frame (cameras and streams: the newest "
                            "frame, at least N after the last one counted)")
    group.add_argument("--reconnect", action="store_true",
                       help="with a camera or stream: when it drops or stalls (no frame for 10 s), reopen it, "
                            "waiting 1 s and then twice as long after each failed try, up to 60 s, for as long "
                            "as the run goes on (Ctrl-C ends it); without it a lost stream ends the run")
    group.add_argument("--save_frame_points", action="store_true",
                       help="with video input and --output_dir: also write points/<frame>.csv for every "
                            "counted frame")
    group.add_argument("--output_dir", default=None,
                       help="with --input: where to write counts.csv, points/<stem>.csv and vis/<stem>.jpg "
                            "(for a video: counts.csv per frame and vis.mp4; a video in a folder writes "
                            "them to <its name>/; a camera or stream adds its rows to a counts.csv already "
                            "there and writes vis-<UTC start>.mp4); "
                            "with --dataset_file: per-image results (per_image.csv), counts.png, and each "
                            "image's predicted and true points (predictions/<stem>.csv, truth/<stem>.csv) "
                            "(nothing is written when omitted)")
    group.add_argument("--save_restored", action="store_true",
                       help="with --input and a checkpoint that carries the restoration module: also write "
                            "restored/<stem>.jpg, the scene as the model sees it without the weather")
    group.add_argument("--save_points_json", action="store_true",
                       help="with --input pictures and --output_dir: also write points/<stem>.json (the count, "
                            "each zone's, the size and the points, as serve.py's /api/count answers)")
    group = parser.add_argument_group("dataset evaluation (with --dataset_file)")
    group.add_argument("--match_radius", type=positive_float, nargs="+", default=[4.0, 8.0], metavar="PX",
                       help="distances in pixels within which a predicted point matches a true one, for "
                            "precision, recall and F1 (one line each)")
    group.add_argument("--metrics_json", default=None, metavar="FILE",
                       help="also write every metric (mae, mse, nap, f1_s4, ...) to this JSON file")
    group.add_argument("--nwpu_submission", action="store_true",
                       help="with --output_dir: also write nwpu_counting.txt and nwpu_localization.txt, the "
                            "result files NWPU-Crowd's benchmark takes, from the predictions")
    group = parser.add_argument_group("areas of the picture (with --input)")
    group.add_argument("--zones", default=None, metavar="FILE",
                       help="JSON of named polygons in pixels ({\"gate\": [[x, y], [x, y], [x, y], ...], ...}) or a "
                            "LabelMe file (its polygon and rectangle shapes): each zone's count is printed, gets a "
                            "column in counts.csv and is outlined in the pictures")
    group.add_argument("--exclude", default=None, metavar="FILE",
                       help="the same form: points inside any of these polygons are dropped before anything else "
                            "(rooftops, billboards); shaded in the pictures")
    group.add_argument("--save_density", action="store_true",
                       help="with --output_dir: also write density/<stem>.npy (float32, the picture's size, "
                            "summing to its count) and density/<stem>.jpg (the heatmap over the picture); for a "
                            "video heatmap.jpg (where people stood) and counts.png (counts over time)")
    group.add_argument("--density_sigma", type=positive_float, default=None, metavar="S",
                       help="Gaussian sigma of the density maps in pixels (default: adaptive, 0.3 times the "
                            "mean distance to the 3 nearest heads)")
    return parser


def evaluate_dataset(counter: Counter, args, output_dir: Path = None, state: DistributedState = DistributedState()):
    """Evaluate the test split of ``args.dataset_file``; print the metrics, ``mae: … mse: …`` last. With
    ``output_dir`` keep each image's predicted and true points (``inference.sinks.predictions``).
    Under ``torchrun`` each process evaluates its share and the first prints the metrics of all."""
    dataset = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    sampler = DistributedSampler(dataset, num_replicas=state.world_size, rank=state.rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=args.num_workers,
                        collate_fn=collate_images, worker_init_fn=quiet_loader_worker)
    kept = (PredictionFiles(output_dir, CountingOptions()),) if output_dir is not None else ()
    summary = evaluate(counter, loader, sigmas=tuple(args.match_radius), progress=state.is_main, sinks=kept)
    if not state.is_main:
        return 0
    if output_dir is not None:
        write_records_csv(summary["records"], output_dir / "per_image.csv")
        plot_counts(summary["records"], output_dir / "counts.png", title_prefix=f"{args.dataset_file}: ")
        submission = write_nwpu_submission(output_dir) if args.nwpu_submission else []
        say(f"wrote {output_dir / 'per_image.csv'} and {output_dir / 'counts.png'}")
        say("wrote " + ", ".join([*kept[0].written(), *map(str, submission)]))
    if args.metrics_json is not None:
        write_metrics_json(summary, Path(args.metrics_json))
    for line in format_summary(summary):
        say(line)
    return 0


def write_metrics_json(summary: dict, path: Path) -> None:
    """Every metric of ``summary`` as one JSON object at ``path`` (written whole, then moved into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(summary_json(summary), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)


def check_combinations(parser, args, video) -> None:
    """One usage line for flags that do not go together (``video``: the video or stream ``--input`` names)."""
    if video is not None and args.save_restored:
        parser.error("--save_restored writes restored pictures; it does not apply to video input")
    if args.reconnect and not isinstance(video, str):
        parser.error("--reconnect is for a camera or a stream (--input 0, --input rtsp://...); a video file, a "
                     "picture or a dataset ends by itself")
    if video is not None and args.save_points_json:
        parser.error("--save_points_json writes a file per picture; for video input use --save_frame_points")
    if args.dataset_file is not None and (args.zones or args.exclude or args.save_density):
        parser.error("--zones, --exclude and --save_density are for your own pictures (--input); a dataset's "
                     "metrics compare whole pictures")
    if args.dataset_file is not None and args.save_points_json:
        parser.error("--save_points_json is for your own pictures (--input)")
    if args.save_density and not args.output_dir:
        parser.error("--save_density writes density maps: give --output_dir")
    if args.dataset_file is None and (args.metrics_json or args.nwpu_submission):
        parser.error("--metrics_json and --nwpu_submission are for a dataset's test split (--dataset_file)")
    if args.nwpu_submission and not args.output_dir:
        parser.error("--nwpu_submission writes the result files into --output_dir: give it")
    if args.save_points_json and not args.output_dir:
        parser.error("--save_points_json writes points/<stem>.json files: give --output_dir")


def first_stream_frame_of(args, video, options: CountingOptions) -> int:
    """For a camera or stream (``video``, a ``str``) counted into ``--output_dir``: the number its first frame
    gets, after the frames the folder's ``counts.csv`` lists (0 otherwise). ``ValueError`` before any
    work when that file has other columns, or a zone is named ``time``, a stream's column of its own."""
    if not isinstance(video, str):
        return 0
    if "time" in options.zones:
        raise ValueError(f"{args.zones}: the name 'time' is a column of a stream's counts.csv; choose another")
    return first_stream_frame(Path(args.output_dir), options.zones) if args.output_dir else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_malloc()
    if (args.input is None) == (args.dataset_file is None):
        parser.error("give either --input (an image, a video, a folder, a camera or a stream) or --dataset_file "
                     "(a dataset's test split)")
    video = video_source(args.input) if args.input is not None else None
    check_combinations(parser, args, video)
    try:
        if args.output_dir:
            check_output_dir(Path(args.output_dir), OutputFolder.folders() + PredictionFiles.folders)
        options = counting_options(args)
        first_frame = first_stream_frame_of(args, video, options)
        state = init_distributed(resolve_device(args.device))
        counter = Counter.from_checkpoint(args.weight_path, device=state.device, **counter_options(args),
                                          log=None if state.is_main else (lambda message: None))
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
            return count_video(counter, video, options, OutputFolder(output_dir, options).video_sinks(),
                               first_frame=first_frame)
        outputs = OutputFolder(output_dir, options, streaming=not state.distributed)
        return count_images(counter, Path(args.input), options, outputs, state, num_workers=args.num_workers)
    except BrokenPipeError:
        raise  # output piped into a program that stopped reading: run_script ends quietly
    except (OSError, ValueError, KeyError, CheckpointError, RuntimeError) as error:
        say(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("stopped by Ctrl-C; what was counted so far is written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        cleanup()


if __name__ == "__main__":
    run_script(main)
