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
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[k]) for row in cells)) for k, header in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
