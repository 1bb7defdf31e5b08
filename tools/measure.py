"""Timing, FLOP counting and printing shared by the sections of ``tools/benchmark.py``."""
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


def interleaved_medians(functions: dict, device: torch.device, runs: int, warmup: int) -> dict:
    """Median seconds of each of ``functions`` (name -> callable), run in turn ``runs`` times after
    ``warmup`` untimed rounds, so that a drift in the machine's speed touches all of them alike."""
    for fn in list(functions.values()) * warmup:
        fn()
    times = {name: [] for name in functions}
    for _ in range(runs):
        for name, fn in functions.items():
            times[name].append(timed(fn, device))
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
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[k]) for row in cells)) for k, header in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
