"""Timing, FLOP counting and printing shared by the sections of ``tools/benchmark.py``."""
import random
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def timed(fn, device: torch.device) -> float:
    """Seconds one call of ``fn()`` takes, with the device's queued work included."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(functions: dict, device: torch.device, runs: int, warmup: int, streak: int = 2) -> dict:
    """Median seconds per call of each of ``functions`` (name -> callable) in steady state: ``runs``
    rounds after ``warmup`` untimed ones; in each round every function runs ``streak`` times in a row
    and the calls after its first are timed, in an order shuffled anew each round (the same orders on
    every call of this function).

    Rounds interleave the functions, so that a drift in the machine's speed touches all of them alike.
    The untimed first call of a streak pays for the caches and heap that the previous function left
    (the weights of a network no longer in cache, maps paged in afresh): fast mode took 74 ms right
    after the upstream-equivalent network and 83 ms right after exact mode, and about 75 ms on each of
    a folder's pictures. Images per second are a throughput over many pictures; timing only first
    calls would charge every picture for another network having run before it."""
    for fn in list(functions.values()) * warmup:
        fn()
    names = list(functions)
    times = {name: [] for name in names}
    orders = random.Random(0)
    for _ in range(runs):
        orders.shuffle(names)
        for name in names:
            functions[name]()
            times[name].extend(timed(functions[name], device) for _ in range(streak - 1))
    return {name: statistics.median(values) for name, values in times.items()}


def page_faults(fn) -> int:
    """Minor page faults of one call of ``fn()``: pages of fresh memory the kernel had to map and zero,
    which cost time that no layer's profile shows (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:
        return 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def count_flops(fn) -> int:
    """Floating-point operations (2 per multiply-add) of the matrix products and convolutions ``fn()`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def print_table(title: str, headers: list, rows: list) -> None:
    """A Markdown table with its title in bold, its columns padded so that it reads in a terminal too
    (``tools/benchmark.py --markdown`` copies it into a page as it is)."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(3, len(header), *(len(row[k]) for row in cells)) for k, header in enumerate(headers)]
    print(f"\n**{title}**\n")
    for row in [headers, ["-" * width for width in widths]] + cells:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def cpu_model() -> str:
    """The CPU's model name as ``/proc/cpuinfo`` gives it (Linux), else what ``platform`` knows."""
    import platform

    from models.precision import cpu_info

    return cpu_info().get("model name") or platform.processor() or platform.machine()


def isa_level() -> str:
    """The instruction sets PyTorch's and oneDNN's kernels use here: ATen's dispatch level, whether
    oneDNN runs bf16 natively (AVX512-BF16 or AMX) and whether the CPU has AMX, plus any emulation cap."""
    import os

    from models.precision import cpu_has_native_bf16, cpu_flags

    flags = cpu_flags()
    parts = [f"ATen {torch.backends.cpu.get_cpu_capability()}",
             "native bf16" if cpu_has_native_bf16() else "no native bf16",
             "AMX" if "amx_bf16" in flags else "no AMX"]
    caps = [f"{name}={os.environ[name]}" for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
            if name in os.environ]
    return ", ".join(parts + caps)


def conv_peak(dtype: torch.dtype, device: torch.device, runs: int = 5) -> float:
    """This machine's convolution peak in ``dtype``, GFLOP/s: the best of three wide 3x3 convolutions of
    the network's shapes (256 -> 256 channels on 96 x 128, 512 -> 512 on 48 x 64 and 24 x 32, channels-last,
    as oneDNN or cuDNN runs them directly), each the median of ``runs`` calls after two untimed ones.
    What a direct-convolution implementation can reach here; Winograd can exceed it."""
    best = 0.0
    for channels, height, width in ((256, 96, 128), (512, 48, 64), (512, 24, 32)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device, dtype, memory_format=torch.channels_last)
        x = torch.randn(1, channels, height, width, device=device, dtype=dtype).contiguous(
            memory_format=torch.channels_last)
        flops = 2 * channels * channels * 9 * height * width
        with torch.inference_mode():
            for _ in range(2):
                conv(x)
            seconds = statistics.median(timed(lambda: conv(x), device) for _ in range(runs))
        best = max(best, flops / seconds / 1e9)
    return best


def machine_header(device: torch.device) -> dict:
    """Print what the figures below were measured on (the CPU or GPU, ISA level, cores, torch, the fp32
    and reduced-precision conv peaks) and return the peaks, GFLOP/s by dtype."""
    import os
    import platform

    from models.precision import autocast_dtype

    reduced = autocast_dtype(device)
    peaks = {torch.float32: conv_peak(torch.float32, device)}
    if reduced != torch.float32:
        peaks[reduced] = conv_peak(reduced, device)
    if device.type == "cuda":
        name = f"GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        name = f"CPU {cpu_model()} ({isa_level()})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    peak_text = ", ".join(f"{str(dtype).replace('torch.', '')} {value:.0f}" for dtype, value in peaks.items())
    ratio = f" ({peaks[reduced] / peaks[torch.float32]:.1f}x fp32)" if reduced in peaks and len(peaks) > 1 else ""
    print(f"machine: {name}; {cores} cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"python {platform.python_version()}\nconvolution peaks (GFLOP/s, direct 3x3): {peak_text}{ratio}")
    return peaks
