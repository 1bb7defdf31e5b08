"""Measure the numbers of DESIGN.md §5: inference speed and FLOPs, restoration module cost, data
loading rate and training step cost. Prints one table per section, then the machine.

    python tools/benchmark.py                                  # everything, a few minutes on 2 CPU cores
    python tools/benchmark.py --only inference --image photo.jpg --runs 9

Sections (``--only``, comma separated):

- ``inference``: images/s of (a) an eager fp32 network computing what upstream computes (dead FPN
  branches included), (b) exact mode as ``run_test.py`` runs it, (c) fast mode (``--amp``) and (d) the
  plain ``PointCounter``, on the same padded image, runs interleaved; FLOPs, counts, deviations from (a).
- ``irm``: the restoration module's parameters and its share of the training FLOPs.
- ``loader``: samples/s of the training data pipeline against the samples/s a training step uses.
- ``training``: one training step in fp32 and with ``--amp`` for 1, 2 and 8 images x ``--num_crops`` crops.
Timings are medians; nothing here is used by the tests.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crowd_datasets import build_dataset  # noqa: E402
from crowd_datasets.image_io import read_rgb, to_tensor  # noqa: E402
from models import (HungarianMatcher, ModelSettings, PointCounter, SetCriterion, build_from_checkpoint,  # noqa: E402
                    resolve_device)
from models.anchors import anchor_points  # noqa: E402
from models.backbone import STAGE_CHANNELS  # noqa: E402
from models.inference_model import autocast_dtype, cpu_has_native_bf16, prepare_inference  # noqa: E402
from models.inference import forward_padded, pad_image, select_points  # noqa: E402
from models.network import FEATURE_STRIDE  # noqa: E402
from engine import compute_losses  # noqa: E402
from util.misc import collate_crops  # noqa: E402

SECTIONS = ("inference", "irm", "loader", "training")
SHARED = ROOT.parent / "shared"
# DESIGN.md §3 and §5.
IRM_MAX_PARAMETERS = 2_000_000
IRM_MAX_EXTRA_TRAINING_FLOPS = 0.15
EXACT_MIN_SPEEDUP, FAST_MIN_SPEEDUP = 1.1, 2.0
PARITY_LOGITS, PARITY_POINTS_PX = 1e-4, 1e-3
AMP_MIN_TRAINING_SPEEDUP = 2.5


def timed(fn, device: torch.device) -> float:
    """Seconds one call of ``fn()`` takes, with the device's queued work included."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def count_flops(fn) -> int:
    """Floating-point operations (2 per multiply-add) of the matrix products and convolutions ``fn()`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def print_table(title: str, headers: list, rows: list) -> None:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[k]) for row in cells)) for k, header in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


class UpstreamEquivalent(nn.Module):
    """What the upstream network computes at inference, for timing: ``counter``'s layers plus the
    FPN branches upstream computes although no output reads them.

    Upstream's FPN also runs ``P5_2`` (3x3 on the stride-16 lateral), ``P3_1`` (1x1 on stage 2, stride
    4) added to the x2-upsampled ``P5_1 + P4_1`` sum, and ``P3_2`` (3x3 on that stride-4 map). Its
    heads define ``conv3``/``conv4`` but never call them, so they are not computed here either.
    Input ``[B, 3, H, W]`` in [0, 1]; output ``pred_logits``/``pred_points`` ``[B, A, 2]`` as
    ``PointCounter``.
    """

    def __init__(self, counter: PointCounter, channels: int = 256):
        super().__init__()
        self.counter = counter
        self.P5_2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.P3_1 = nn.Conv2d(STAGE_CHANNELS[1], channels, kernel_size=1)
        self.P3_2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def load_dead_branches(self, state: dict) -> bool:
        """Copy ``fpn.P5_2/P3_1/P3_2`` tensors from an upstream state dict; False when it has none."""
        names = [f"{name}.{kind}" for name in ("P5_2", "P3_1", "P3_2") for kind in ("weight", "bias")]
        if any(f"fpn.{name}" not in state for name in names):
            return False
        with torch.no_grad():
            for name in names:
                self.get_parameter(name).copy_(state[f"fpn.{name}"].float())
        return True

    def forward(self, images: torch.Tensor) -> dict:
        counter, fpn = self.counter, self.counter.fpn
        normalised = images
        if counter.settings.input_norm != "none":
            normalised = (images - counter.input_mean) / counter.input_std
        stages = counter.backbone(normalised)
        lateral5 = fpn.P5_1(stages[3])
        self.P5_2(lateral5)
        merged4 = fpn.P4_1(stages[2]) + F.interpolate(lateral5, scale_factor=2, mode="nearest")
        features = fpn.P4_2(merged4)
        self.P3_2(self.P3_1(stages[1]) + F.interpolate(merged4, scale_factor=2, mode="nearest"))
        offsets = counter.regression(features) * 100
        logits = counter.classification(features)
        anchors = anchor_points(features.shape[-2], features.shape[-1], FEATURE_STRIDE,
                                counter.settings.row, counter.settings.line, device=images.device)
        return {"pred_logits": logits, "pred_points": offsets + anchors}


def load_counter(weight_path) -> tuple:
    """``(PointCounter in eval mode, upstream state dict or {})``: the checkpoint's, or random weights."""
    if weight_path and Path(weight_path).is_file():
        model, _, content = build_from_checkpoint(weight_path, log=lambda message: None)
        return model, content["model"]
    if weight_path:
        print(f"note: {weight_path} not found, using random weights", file=sys.stderr)
    torch.manual_seed(0)
    return PointCounter().eval(), {}


def bench_inference(args, device: torch.device) -> None:
    counter, state = load_counter(args.weight_path)
    image = to_tensor(read_rgb(args.image))
    counter = counter.to(device)
    upstream = UpstreamEquivalent(counter).eval()
    torch.manual_seed(1)
    dead_loaded = upstream.load_dead_branches(state)
    upstream = upstream.to(device)
    fast = prepare_inference(counter, device)
    fused_fp32 = prepare_inference(counter, device, amp=False)
    padded_size = tuple(pad_image(image, counter.padding_fill.cpu()).shape[-2:])

    @torch.no_grad()
    def run_upstream():
        outputs = upstream(pad_image(image.to(device), counter.padding_fill))
        return {key: value[0] for key, value in outputs.items()}

    fast_name = f"(c) fast mode {str(autocast_dtype(device)).replace('torch.', '')} (--amp)"
    modes = {
        "(a) upstream-equivalent fp32": run_upstream,
        "(b) exact mode fp32 (default)": lambda: forward_padded(fused_fp32, image),
        fast_name: lambda: forward_padded(fast, image),
        "(d) PointCounter fp32 (training)": lambda: forward_padded(counter, image),
    }
    for fn in list(modes.values()) * args.warmup:
        fn()
    times = {name: [] for name in modes}
    for _ in range(args.runs):
        for name, fn in modes.items():
            times[name].append(timed(fn, device))
    with torch.no_grad():
        flops = {name: count_flops(fn) for name, fn in modes.items()}
    outputs = {name: fn() for name, fn in modes.items()}
    counts = {name: len(select_points(output)[0]) for name, output in outputs.items()}
    seconds = {name: statistics.median(values) for name, values in times.items()}
    names = list(modes)
    reference_seconds, reference = seconds[names[0]], outputs[names[0]]
    errors = {name: (float((output["pred_logits"].float() - reference["pred_logits"]).abs().max()),
                     float((output["pred_points"].float() - reference["pred_points"]).abs().max()))
              for name, output in outputs.items()}
    rows = []
    for name in names:
        logit_error, point_error = errors[name]
        rows.append([name, f"{1000 * seconds[name]:.1f}", f"{1 / seconds[name]:.2f}",
                     f"{reference_seconds / seconds[name]:.2f}x", f"{flops[name] / 1e9:.1f}",
                     f"{flops[name] / 1e9 / seconds[name]:.0f}", counts[name],
                     f"{counts[name] - counts[names[0]]:+d}", f"{logit_error:.1e}", f"{point_error:.1e}"])
    print_table(f"inference: {Path(args.image).name} padded to {padded_size}, median of {args.runs} "
                f"interleaved runs after {args.warmup} warm-up, weights {args.weight_path or 'random'}"
                f"{'' if dead_loaded else ' (dead branches random)'}",
                ["mode", "ms/image", "images/s", "speed-up vs (a)", "GFLOP", "GFLOP/s", "count",
                 "count - (a)", "max |logit - (a)|", "max |point - (a)| px"], rows)
    exact_speedup, fast_speedup = (reference_seconds / seconds[name] for name in names[1:3])
    print(f"exact mode >= {EXACT_MIN_SPEEDUP}x upstream: {exact_speedup:.2f}x "
          f"{verdict(exact_speedup >= EXACT_MIN_SPEEDUP)}; fast mode >= {FAST_MIN_SPEEDUP}x upstream: "
          f"{fast_speedup:.2f}x {verdict(fast_speedup >= FAST_MIN_SPEEDUP)}")
    print(f"dead upstream branches: {100 * (1 - flops[names[1]] / flops[names[0]]):.1f} % of upstream's FLOPs. "
          "The 1 % count goal of fast mode is for trained checkpoints: the reference checkpoint's random weights "
          "put many anchors within ~1e-3 of the threshold, where bf16 rounding flips them.")
    exact_ok = errors[names[1]][0] <= PARITY_LOGITS and errors[names[1]][1] <= PARITY_POINTS_PX
    print(f"(b) within the parity tolerances of (a) ({PARITY_LOGITS:g} logits, {PARITY_POINTS_PX:g} px): "
          f"{verdict(exact_ok)}")


def training_flops(settings: ModelSettings, crops: torch.Tensor) -> int:
    """FLOPs of a forward and backward pass of a freshly built network in training mode on ``crops``."""
    torch.manual_seed(0)
    model = PointCounter(settings).train().to(crops.device)

    def step():
        outputs = model(crops)
        sum(value.float().sum() for value in outputs.values()).backward()

    return count_flops(step)


def bench_irm(args, device: torch.device) -> None:
    crops = torch.rand(args.irm_crops, 3, args.crop_size, args.crop_size,
                       generator=torch.Generator().manual_seed(0)).to(device)
    with_irm = PointCounter(ModelSettings(restoration=True))
    irm_parameters = sum(p.numel() for p in with_irm.restoration.parameters())
    counter_parameters = sum(p.numel() for p in with_irm.parameters()) - irm_parameters
    without_flops = training_flops(ModelSettings(restoration=False), crops)
    with_flops = training_flops(ModelSettings(restoration=True), crops)
    extra = with_flops / without_flops - 1
    rows = [
        ["IRM parameters", f"{irm_parameters / 1e6:.3f} M", f"<= {IRM_MAX_PARAMETERS / 1e6:.0f} M",
         verdict(irm_parameters <= IRM_MAX_PARAMETERS)],
        ["counter parameters", f"{counter_parameters / 1e6:.2f} M", "", ""],
        ["training GFLOP, counter", f"{without_flops / 1e9:.1f}", "", ""],
        ["training GFLOP, counter + IRM", f"{with_flops / 1e9:.1f}", "", ""],
        ["extra training FLOPs", f"{100 * extra:.2f} %", f"<= {100 * IRM_MAX_EXTRA_TRAINING_FLOPS:.0f} %",
         verdict(extra <= IRM_MAX_EXTRA_TRAINING_FLOPS)],
    ]
    print_table(f"irm: forward + backward on {args.irm_crops} crops of {args.crop_size}x{args.crop_size}",
                ["quantity", "value", "bound", "verdict"], rows)


def training_dataset(args):
    return build_dataset(args.dataset, "train", data_root=args.data_root, cache_dir=args.cache_dir,
                         num_crops=args.num_crops, crop_size=args.crop_size, use_clean=True, seed=0)


class TrainingStep:
    """One optimisation step of the counter with the restoration module, as ``train.py`` runs it
    (channels-last, autocast to ``dtype``, real losses), in two timed parts: ``compute`` (forward,
    losses, backward), whose cost depends on the batch, and ``update`` (Adam), a fixed cost."""

    def __init__(self, device: torch.device, dtype=torch.float32):
        torch.manual_seed(0)
        self.device, self.dtype = device, dtype
        self.model = PointCounter(ModelSettings(restoration=True)).train().to(device, memory_format=torch.channels_last)
        self.criterion = SetCriterion(HungarianMatcher())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-5, weight_decay=1e-4)

    def compute(self, images: torch.Tensor, targets: list) -> None:
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        targets = [{key: value.to(self.device) if torch.is_tensor(value) else value for key, value in target.items()}
                   for target in targets]
        self.optimizer.zero_grad(set_to_none=True)
        self.criterion.total(compute_losses(self.model, self.criterion, images, targets, self.dtype)).backward()

    def update(self) -> None:
        self.optimizer.step()

    def median_seconds(self, images: torch.Tensor, targets: list, runs: int) -> tuple:
        """Median ``(compute, update)`` seconds over ``runs`` steps after one untimed step."""
        self.compute(images, targets)
        self.update()
        compute, update = [], []
        for _ in range(runs):
            compute.append(timed(lambda: self.compute(images, targets), self.device))
            update.append(timed(self.update, self.device))
        return statistics.median(compute), statistics.median(update)


def loader_rate(dataset, batch_size: int, num_crops: int, num_workers: int, batches: int) -> float:
    """Images per second the DataLoader delivers once running (its first batch, which includes the
    workers' start, is not counted). Passes over the dataset repeat until ``batches`` are read."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        collate_fn=collate_crops, drop_last=True)
    images, start, read = 0, None, 0
    while read < batches + 1:
        for crops, _ in loader:
            read += 1
            if start is None:
                start = time.perf_counter()
            else:
                images += crops.shape[0] // num_crops
            if read == batches + 1:
                break
    return images / (time.perf_counter() - start)


def bench_loader(args, device: torch.device) -> None:
    dataset = training_dataset(args)
    if len(dataset) < args.batch_size:
        raise ValueError(f"--batch_size {args.batch_size} exceeds the {len(dataset)} training images of {args.dataset}")
    rows = []
    for workers in (0, 2):
        rate = loader_rate(dataset, args.batch_size, args.num_crops, workers, args.loader_batches)
        rows.append([f"DataLoader, num_workers={workers}", f"{rate:.1f}", f"{rate * args.num_crops:.1f}"])
    images, targets = collate_crops([dataset[index] for index in range(args.batch_size)])
    step = TrainingStep(device, autocast_dtype(device))
    seconds = sum(step.median_seconds(images, targets, args.train_runs))
    consumed = args.batch_size / seconds
    rows.append([f"--amp training step on {device.type} ({1000 * seconds:.0f} ms)", f"{consumed:.1f}",
                 f"{consumed * args.num_crops:.1f}"])
    print_table(f"loader: {args.dataset}, {len(dataset)} images, batch {args.batch_size} images x "
                f"{args.num_crops} crops of {images.shape[-1]}, {args.loader_batches} batches",
                ["pipeline", "images/s", "crops/s"], rows)
    slowest = min(float(row[1]) for row in rows[:2])
    print(f"loader (slowest setting) / training step consumption: {slowest / consumed:.1f}x. "
          "The goal (>= 2x) is for a GPU training step; on a CPU the step is far slower than any GPU.")


def bench_training(args, device: torch.device) -> None:
    dataset = training_dataset(args)
    amp_dtype = autocast_dtype(device)
    steps = {"fp32": TrainingStep(device), "amp": TrainingStep(device, amp_dtype)}
    rows, first, speedups = [], None, []
    for images_per_batch in (1, 2, 8):
        images, targets = collate_crops([dataset[index % len(dataset)] for index in range(images_per_batch)])
        (fp32, update), (amp, _) = (step.median_seconds(images, targets, args.train_runs) for step in steps.values())
        crops = images.shape[0]
        first = first or (crops, amp)
        speedups.append((fp32 + update) / (amp + update))
        rows.append([f"{images_per_batch} x {args.num_crops}", crops, f"{1000 * fp32:.0f}", f"{1000 * amp:.0f}",
                     f"{1000 * update:.0f}", f"{speedups[-1]:.2f}x", f"{1000 * amp / crops:.1f}",
                     f"{(amp / crops) / (first[1] / first[0]):.2f}x"])
    print_table(f"training: one step with the restoration module and the real losses, median of {args.train_runs}; "
                f"amp = {str(amp_dtype).replace('torch.', '')} autocast (train.py --amp)",
                ["images x crops", "crops", "fp32 fwd+loss+bwd ms", "amp fwd+loss+bwd ms", "Adam ms",
                 "step speed-up amp", "amp ms/crop", "amp ms/crop vs first"], rows)
    print(f"--amp step >= {AMP_MIN_TRAINING_SPEEDUP}x fp32 at {rows[-1][1]} crops: {speedups[-1]:.2f}x "
          f"{verdict(speedups[-1] >= AMP_MIN_TRAINING_SPEEDUP)}; ms/crop vs first 1.00 = exactly linear in crops")


def print_machine(device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"\nmachine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"device {device} ({name}), native CPU bf16: {cpu_has_native_bf16()}, "
          f"fast-mode dtype: {str(autocast_dtype(device)).replace('torch.', '')}, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} (timings are only comparable on an otherwise idle machine)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, from {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device to measure")
    parser.add_argument("--weight_path", default=str(SHARED / "reference" / "upstream_format_checkpoint.pth"),
                        help="checkpoint for the inference section (random weights if the file is missing)")
    parser.add_argument("--image", default=str(SHARED / "real_samples" / "A_IMG_160.jpg"),
                        help="image for the inference section")
    parser.add_argument("--runs", type=int, default=5, help="timed inference runs per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs per mode first")
    parser.add_argument("--dataset", default="Demo_Hazy", help="training dataset for loader and training")
    parser.add_argument("--data_root", default=".", help="--data_root of that dataset")
    parser.add_argument("--cache_dir", default=None, help="where demo datasets are generated")
    parser.add_argument("--batch_size", type=int, default=2, help="images per batch in the loader section")
    parser.add_argument("--num_crops", type=int, default=4, help="crops per image")
    parser.add_argument("--crop_size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--loader_batches", type=int, default=16, help="batches timed per loader setting")
    parser.add_argument("--train_runs", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--irm_crops", type=int, default=8, help="crops for the IRM FLOP count")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--only: unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    for name in ("runs", "train_runs", "loader_batches", "batch_size", "num_crops", "irm_crops"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.crop_size < 16 or args.crop_size % 16:
        parser.error(f"--crop_size must be a positive multiple of 16, got {args.crop_size}")
    if "inference" in sections and not Path(args.image).is_file():
        parser.error(f"--image {args.image}: no such file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    sections = {"inference": bench_inference, "irm": bench_irm, "loader": bench_loader, "training": bench_training}
    for name in args.sections:
        start = time.perf_counter()
        sections[name](args, device)
        print(f"({name} took {time.perf_counter() - start:.0f} s)")
    print_machine(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
