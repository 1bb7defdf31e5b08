"""The inference sections of ``tools/benchmark.py``: one image in each mode against what upstream
computes, and a folder of pictures counted as ``run_test.py --input`` counts it."""
import contextlib
import io
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crowd_datasets.image_io import read_rgb
from measure import count_flops, interleaved_medians, page_faults, print_table, timed, verdict
from inference import Counter
from inference.tiling import padded_size
from models import PointCounter, build_from_checkpoint
from models.backbone import STAGE_CHANNELS
from models.precision import autocast_dtype, ieee_fp32_convolutions
from inference.parity import compare_outputs, within_parity

# docs/design.md ("Goals"), per machine: exact mode at least 1.5x upstream's eager fp32 network on the same image and
# 10 % faster than a direct convolution at this machine's fp32 conv peak could be; fast mode at least
# 90 % of what its reduced-precision conv peak allows.
EXACT_MIN_SPEEDUP, EXACT_MIN_PEAK_SHARE, FAST_MIN_PEAK_SHARE = 1.5, 1.1, 0.9


class UpstreamEquivalent(nn.Module):
    """What the upstream network computes at inference, for timing: ``counter``'s layers plus the
    FPN branches upstream computes although no output reads them.

    Upstream's FPN also runs ``P5_2`` (3x3 on the stride-16 lateral), ``P3_1`` (1x1 on stage 2, stride
    4) added to the x2-upsampled ``P5_1 + P4_1`` sum, and ``P3_2`` (3x3 on that stride-4 map). Its
    heads define ``conv3``/``conv4`` but never call them, so they are not computed here either.
    Input ``[B, 3, H, W]`` in [0, 1]; outputs as ``PointCounter``.
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

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> dict:
        counter, fpn = self.counter, self.counter.fpn
        stages = counter.backbone(counter.normalise(images))
        lateral5 = fpn.P5_1(stages[3])
        self.P5_2(lateral5)
        merged4 = fpn.P4_1(stages[2]) + F.interpolate(lateral5, scale_factor=2, mode="nearest")
        self.P3_2(self.P3_1(stages[1]) + F.interpolate(merged4, scale_factor=2, mode="nearest"))
        return counter.heads(fpn.P4_2(merged4))


def load_network(weight_path) -> tuple:
    """``(PointCounter in eval mode, upstream state dict or {})``: the checkpoint's, or random weights."""
    if weight_path and Path(weight_path).is_file():
        model, _, content = build_from_checkpoint(weight_path, log=lambda message: None)
        return model, content["model"]
    if weight_path:
        print(f"note: {weight_path} not found, using random weights")
    torch.manual_seed(0)
    return PointCounter().eval(), {}


def bench_inference(args, device: torch.device) -> None:
    network, state = load_network(args.weight_path)
    image = read_rgb(args.image)
    exact, fast = Counter(network, device=device), Counter(network, device=device, amp=True)
    padded_height, padded_width = padded_size(*image.shape[:2])
    padded = exact.window(image, (0, padded_height, 0, padded_width))
    network = network.to(device)
    upstream = UpstreamEquivalent(network).eval()
    torch.manual_seed(1)
    dead_loaded = upstream.load_dead_branches(state)
    upstream = upstream.to(device)

    def whole_image(model):
        with torch.inference_mode():
            return {key: value[0] for key, value in model(padded).items()}

    dtype = str(autocast_dtype(device)).replace("torch.", "")
    modes = {"(a) upstream-equivalent fp32": lambda: whole_image(upstream),
             "(b) exact mode fp32 (default)": lambda: exact.outputs(image),
             f"(c) fast mode {dtype} (--amp)": lambda: fast.outputs(image),
             "(d) PointCounter fp32 (training)": lambda: whole_image(network)}
    seconds = interleaved_medians(modes, device, args.runs, args.warmup)
    names = list(modes)
    outputs, faults = {}, {}
    for name, fn in modes.items():  # faults in steady state, as timed: a call right after one of the same mode
        outputs[name] = fn()
        faults[name] = page_faults(fn)
    if device.type == "cuda":
        # Timed as upstream runs on a GPU, with PyTorch's default TF32 convolutions, which move its points
        # by ~2e-3 px; the outputs the other modes are compared with are its full-fp32 ones.
        with ieee_fp32_convolutions():
            outputs[names[0]] = modes[names[0]]()
    # Fused convolutions are oneDNN calls that the FLOP counter does not see: (b) and (c) do (d)'s work.
    flops = {names[0]: count_flops(modes[names[0]])}
    flops.update(dict.fromkeys(names[1:], count_flops(modes[names[3]])))
    # Each mode's speed as a share of what this machine's conv peak in its precision allows for its FLOPs
    # (exact mode's Winograd convolutions do fewer multiplications, so it can exceed 100 %).
    reduced_dtype = autocast_dtype(device)
    peaks = [args.peaks[torch.float32], args.peaks[torch.float32], args.peaks.get(reduced_dtype, args.peaks[
        torch.float32]), args.peaks[torch.float32]]
    rows = []
    for name, peak in zip(names, peaks):
        row = compare_outputs(outputs[name], outputs[names[0]])
        rows.append([name, f"{1000 * seconds[name]:.1f}", f"{1 / seconds[name]:.2f}",
                     f"{seconds[names[0]] / seconds[name]:.2f}x", f"{flops[name] / 1e9:.1f}",
                     f"{flops[name] / 1e9 / seconds[name]:.0f}",
                     f"{100 * flops[name] / 1e9 / seconds[name] / peak:.0f} %",
                     faults[name], row["count"],
                     f"{row['count'] - row['reference_count']:+d}", f"{row['max_logit_diff']:.1e}",
                     f"{row['max_point_diff']:.1e}"])
    print_table(f"inference: {Path(args.image).name} padded to {tuple(padded.shape[-2:])}, steady-state median of "
                f"{args.runs} rounds in turn after {args.warmup} warm-up, weights {args.weight_path or 'random'}"
                f"{'' if dead_loaded else ' (dead branches random)'}",
                ["mode", "ms/image", "images/s", "speed-up vs (a)", "GFLOP", "GFLOP/s", "of peak", "page faults",
                 "count", "count - (a)",
                 "max |logit - (a)|", "max |point - (a)| px"], rows)
    exact_speedup = seconds[names[0]] / seconds[names[1]]
    exact_share, fast_share = (flops[name] / 1e9 / seconds[name] / peak for name, peak in zip(names[1:3], peaks[1:3]))
    exact_parity = within_parity(compare_outputs(outputs[names[1]], outputs[names[0]]))
    print(f"exact mode >= {EXACT_MIN_SPEEDUP}x upstream: {exact_speedup:.2f}x "
          f"{verdict(exact_speedup >= EXACT_MIN_SPEEDUP)}; "
          f">= {EXACT_MIN_PEAK_SHARE:.0%} of what the fp32 conv peak allows: {exact_share:.0%} "
          f"{verdict(exact_share >= EXACT_MIN_PEAK_SHARE)}")
    print(f"fast mode >= {FAST_MIN_PEAK_SHARE:.0%} of what the {str(reduced_dtype).replace('torch.', '')} conv peak "
          f"allows: {fast_share:.0%} {verdict(fast_share >= FAST_MIN_PEAK_SHARE)} "
          f"({seconds[names[0]] / seconds[names[2]]:.2f}x upstream)")
    print(f"(b) within the parity tolerances of (a): {verdict(exact_parity)}; dead upstream branches: "
          f"{100 * (1 - flops[names[3]] / flops[names[0]]):.1f} % of upstream's FLOPs")
    if device.type == "cuda":
        print("on CUDA, (a) and (d) are timed with PyTorch's default TF32 convolutions; (a)'s outputs in the "
              "table are computed in full fp32")


def write_folder(folder: Path, sources: list, count: int, size: tuple) -> None:
    """``count`` JPEGs of ``size`` (width, height): crops of the ``sources`` pictures, resized and flipped."""
    rng = np.random.default_rng(0)
    pictures = [cv2.imread(str(path)) for path in sources]
    for index in range(count):
        picture = pictures[index % len(pictures)]
        height, width = picture.shape[:2]
        top, left = (int(rng.integers(0, side // 4 + 1)) for side in (height, width))
        crop = cv2.resize(picture[top:, left:], size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"picture_{index:03d}.jpg"), crop[:, ::-1] if index % 2 else crop)


def bench_folder(args, device: torch.device) -> None:
    from inference.job import CountingOptions
    from inference.pictures import count_images
    from inference.sinks import OutputFolder

    network, _ = load_network(args.weight_path)
    sources = [Path(args.image)] + sorted(Path(args.image).parent.glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), sources, args.folder_images, (1024, 768))
        for amp in (False, True):
            counter = Counter(network, device=device, amp=amp)
            for workers in (0, 2):
                with contextlib.redirect_stdout(io.StringIO()):
                    seconds = timed(lambda: count_images(counter, Path(folder), CountingOptions(),
                                                         OutputFolder(None, CountingOptions()), num_workers=workers),
                                    device)
                rows.append(["fast" if amp else "exact", workers, f"{args.folder_images / seconds:.2f}",
                             f"{1000 * seconds / args.folder_images:.0f}"])
    print_table(f"folder: {args.folder_images} JPEGs of 1024x768 counted as run_test.py --input counts them "
                "(decoding in loader workers while the network runs)",
                ["mode", "--num_workers", "images/s", "ms/image"], rows)


def bench_onnx(args, device: torch.device) -> None:
    """images/s of the checkpoint exported to ONNX and run by onnxruntime, against exact and fast mode,
    on the ``--image`` resized to 512x384 and 1024x768."""
    from inference.onnx_network import OnnxNetwork, export_onnx

    network, _ = load_network(args.weight_path)
    picture = read_rgb(args.image)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(network, Path(folder) / "model.onnx")
        counters = {"exact mode fp32": Counter(network, device=device),
                    f"fast mode {str(autocast_dtype(device)).replace('torch.', '')}": Counter(network, device=device,
                                                                                             amp=True),
                    "onnxruntime fp32": Counter(OnnxNetwork(path, device))}
        for size in ((512, 384), (1024, 768)):
            image = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            modes = {name: (lambda counter=counter: counter.outputs(image)) for name, counter in counters.items()}
            seconds = interleaved_medians(modes, device, args.runs, args.warmup)
            exact = modes["exact mode fp32"]()
            for name, run in modes.items():
                row = compare_outputs(run(), exact)
                rows.append([f"{size[0]}x{size[1]}", name, f"{1000 * seconds[name]:.1f}", f"{1 / seconds[name]:.2f}",
                             f"{seconds['exact mode fp32'] / seconds[name]:.2f}x", row["count"],
                             f"{row['max_logit_diff']:.1e}", f"{row['max_point_diff']:.1e}"])
    print_table(f"onnx: the checkpoint exported by tools/export_onnx.py, run by onnxruntime through Counter, "
                f"steady-state median of {args.runs} rounds in turn after {args.warmup} warm-up",
                ["input", "mode", "ms/image", "images/s", "vs exact", "count", "max |logit - exact|",
                 "max |point - exact| px"], rows)


# docs/design.md ("Goals"): zones and exclusions add under 5 % to a 1920x1080 picture's time.
ZONES_MAX_SHARE = 0.05


def regular_polygon(centre: tuple, radius: float, vertices: int, wobble: float, rng) -> list:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radii = radius * (1 + wobble * rng.uniform(-1, 1, vertices))
    return [[centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)] for a, r in zip(angles, radii)]


def bench_zones(args, device: torch.device) -> None:
    """What zones and exclusions add to counting a 1920x1080 picture (exact mode): 5 zones and 1 exclusion
    of 50 vertices each, on 5,000 points, against the picture's whole ``Counter.predict``."""
    from inference.zones import check_polygons, outside_all, zone_counts

    network, _ = load_network(args.weight_path)
    counter = Counter(network, device=device)
    picture = cv2.resize(read_rgb(args.image), (1920, 1080), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    zones = check_polygons({f"zone{k}": regular_polygon((300 + 330 * k, 540), 260, 50, 0.3, rng) for k in range(5)},
                           "zones")
    exclusions = check_polygons({"roof": regular_polygon((960, 120), 400, 50, 0.2, rng)}, "exclude")
    points = rng.uniform((0, 0), (1920, 1080), size=(5000, 2))

    def areas():
        kept = points[outside_all(points, exclusions)]
        return zone_counts(kept, zones)

    seconds = interleaved_medians({"predict": lambda: counter.predict(picture), "zones": areas}, device,
                                  args.runs, args.warmup)
    share = seconds["zones"] / seconds["predict"]
    print_table(f"zones: 1920x1080 picture, exact mode; 5 zones and 1 exclusion of 50 vertices, 5,000 points; "
                f"median of {args.runs}", ["step", "ms"],
                [["Counter.predict (the whole picture)", f"{1000 * seconds['predict']:.1f}"],
                 ["exclusion + 5 zone counts", f"{1000 * seconds['zones']:.2f}"]])
    print(f"zones add <= {ZONES_MAX_SHARE:.0%} to the picture's time: {share:.2%} {verdict(share <= ZONES_MAX_SHARE)}")
