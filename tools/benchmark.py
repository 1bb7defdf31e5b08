"""Measure the numbers of docs/design.md ("Goals"): inference speed and FLOPs, folder throughput, restoration
module cost, data loading rate and training step cost. Prints one table per section, then the machine.

    python tools/benchmark.py                                  # everything, several minutes on 2 CPU cores
    python tools/benchmark.py --only inference --image photo.jpg --runs 9
    python tools/benchmark.py --markdown docs/performance.md   # also appends the report there, dated

Sections (``--only``, comma separated):

- ``inference``: images/s of (a) an eager fp32 network computing what upstream computes (dead FPN
  branches included), (b) exact mode as ``run_test.py`` runs it, (c) fast mode (``--amp``) and (d) the
  plain ``PointCounter``, on the same padded image, in steady state (each timed call the second of
  two in a row) and interleaved in a new order each round; FLOPs, page faults (of a call made as the
  timed ones are), counts, deviations from (a).
- ``folder``: images/s of ``run_test.py --input`` on a folder of 1024x768 JPEGs, exact and fast mode,
  with the pictures decoded in the main process and in 2 loader workers.
- ``onnx``: images/s of the checkpoint exported to ONNX and run by onnxruntime against exact and fast
  mode, at 512x384 and 1024x768.
- ``zones``: what 5 zones and 1 exclusion of 50 vertices on 5,000 points add to a 1920x1080 picture.
- ``irm``: the restoration module's parameters and its share of the training FLOPs.
- ``loader``: samples/s of the training data pipeline against the samples/s a training step uses.
- ``training``: one training step in fp32 and with ``--amp`` for 1, 2 and 8 images x ``--num_crops`` crops.
Timings are medians; nothing here is used by the tests.
"""
import argparse
import contextlib
import datetime
import io
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark_inference import bench_folder, bench_inference, bench_onnx, bench_zones  # noqa: E402
from benchmark_training import bench_irm, bench_loader, bench_training  # noqa: E402
from models.precision import autocast_dtype  # noqa: E402
from util.distributed import resolve_device  # noqa: E402
from measure import machine_header  # noqa: E402
from util.script import configure_malloc  # noqa: E402
from inference.parity import fixtures_dir  # noqa: E402

SECTIONS = {"inference": bench_inference, "folder": bench_folder, "onnx": bench_onnx, "zones": bench_zones,
            "irm": bench_irm, "loader": bench_loader, "training": bench_training}
SHARED = fixtures_dir()
DEFAULT_IMAGE = next(path for path in (SHARED / "real_samples" / "A_IMG_160.jpg", ROOT / "assets" / "demo" /
                                       "hazy_street.jpg") if path.is_file() or path.parent.name == "demo")


def print_machine(device: torch.device, malloc: str) -> None:
    print(f"\nmalloc settings: {malloc}; fast-mode dtype: {str(autocast_dtype(device)).replace('torch.', '')}; "
          f"load average {os.getloadavg()[0]:.1f} (timings are only comparable on an otherwise idle machine)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, from {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device to measure")
    parser.add_argument("--weight_path", default=str(SHARED / "reference" / "upstream_format_checkpoint.pth"),
                        help="checkpoint for the inference sections (random weights if the file is missing)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE),
                        help="image for the inference section; the folder section crops it and its siblings "
                             "(default: the reference fixtures' A_IMG_160.jpg, else a picture of assets/demo)")
    parser.add_argument("--runs", type=int, default=5, help="timed inference runs per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs per mode first")
    parser.add_argument("--folder_images", type=int, default=64, help="pictures in the folder section")
    parser.add_argument("--malloc", default="default", choices=["default", "run_test"],
                        help="glibc malloc settings of this process: default (glibc's own, whose map threshold "
                             "follows the sizes freed, as upstream's scripts run) or run_test (the fixed thresholds "
                             "run_test.py sets, util.script.configure_malloc), which spare the upstream-equivalent "
                             "network most of its page faults")
    parser.add_argument("--dataset", default="Demo_Hazy", help="training dataset for loader and training")
    parser.add_argument("--data_root", default=".", help="--data_root of that dataset")
    parser.add_argument("--cache_dir", default=None, help="where demo datasets are generated")
    parser.add_argument("--batch_size", type=int, default=2, help="images per batch in the loader section")
    parser.add_argument("--num_crops", type=int, default=4, help="crops per image")
    parser.add_argument("--crop_size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--loader_batches", type=int, default=16, help="batches timed per loader setting")
    parser.add_argument("--train_runs", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--irm_crops", type=int, default=8, help="crops for the IRM FLOP count")
    parser.add_argument("--markdown", default=None,
                        help="also append the report to this Markdown file (e.g. docs/performance.md), under a "
                             "heading with the machine and the date")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--only: unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    for name in ("runs", "train_runs", "loader_batches", "batch_size", "num_crops", "irm_crops", "folder_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.crop_size < 16 or args.crop_size % 16:
        parser.error(f"--crop_size must be a positive multiple of 16, got {args.crop_size}")
    if {"inference", "folder", "onnx", "zones"} & set(sections) and not Path(args.image).is_file():
        parser.error(f"--image {args.image}: no such file")
    return args


class Tee(io.TextIOBase):
    """Writes to ``stream`` and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def as_markdown(report: str) -> str:
    """The printed report as a section of a Markdown page: a heading with the machine and today's date (UTC),
    the tables as they are, every other line an item of a list."""
    lines = report.strip().splitlines()
    machine = lines[0].removeprefix("machine: ").split(";")[0]
    body = []
    for line in lines:
        if body and body[-1].startswith("|") and not line.startswith("|"):
            body.append("")  # a table ends at a blank line
        body.append(line if not line or line.startswith(("|", "**")) else f"- {line}")
    return f"\n## {machine}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}\n\n" + "\n".join(body) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.malloc == "run_test":
        configure_malloc()
    device = resolve_device(args.device)
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        args.peaks = machine_header(device)
        for name in args.sections:
            start = time.perf_counter()
            SECTIONS[name](args, device)
            print(f"({name} took {time.perf_counter() - start:.0f} s)")
        print_machine(device, args.malloc)
    if args.markdown:
        with open(args.markdown, "a") as file:
            file.write(as_markdown(tee.copy.getvalue()))
        print(f"appended the report to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
