"""Attack a ``serve.py`` on 127.0.0.1 as hostile clients would and report, per attack, how fast
``/api/health`` and a small picture are still answered and the server's peak memory.

    python tools/attack_test.py --weight_path Hazy_JHU

Attacks (each bounded, each stops by itself): heavy work within every limit (recounts of 100,000 points
in 4 zigzag zones of 1000 corners, the most a request may give, with a density layer, and a picture
counted at threshold 0), then hundreds of slow and idle sockets (``tools/attacks.SlowClients``). Prints a
Markdown table; the figures are in docs/performance.md."""
import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crowd_datasets.demo import make_scene  # noqa: E402
from tools.attacks import SlowClients, health_latencies, heavy_recount, peak_rss_mb, zigzag  # noqa: E402
from tools.service_client import Service  # noqa: E402

SMALL = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


def heavy_work(service, seconds: float) -> tuple:
    """Health latencies while two heavy recounts and a threshold-0 picture run; and the statuses they got."""
    body = heavy_recount(points=100_000, polygons=4, vertices=1000)
    picture = cv2.imencode(".png", make_scene(np.random.default_rng(2), (1664, 1024)).image)[1].tobytes()
    statuses = []
    calls = [lambda: service.json("POST", "/api/recount", body, {"Content-Type": "application/json"}, 600)[0]] * 2
    calls.append(lambda: service.upload("/api/count", picture, "wide.png", {"threshold": "0"}, timeout=600)[0])
    workers = [threading.Thread(target=lambda call=call: statuses.append(call())) for call in calls]
    for worker in workers:
        worker.start()
    latencies = health_latencies(service, seconds)
    for worker in workers:
        worker.join(600)
    return latencies, statuses


def worst_picture(service) -> tuple:
    """Health latencies while the costliest picture a stranger may send is counted: the most pixels
    --max_megapixels allows (7071 x 7071, 50 MP by default), at threshold 0 (every anchor a point), in 4
    zigzag zones of 1000 corners (the most a request may give); its status and seconds."""
    side = int((service.health()["max_megapixels"] * 1e6) ** 0.5)
    scene = make_scene(np.random.default_rng(4), (1024, 768)).image
    rgb = np.tile(scene, (-(-side // 768), -(-side // 1024), 1))[:side, :side]
    picture = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    zones = json.dumps({f"zone {index}": zigzag(side, side, 1000) for index in range(4)})
    outcome = {}

    def count():
        started = time.monotonic()
        outcome["status"] = service.upload("/api/count", picture, "worst.jpg", {"threshold": "0", "zones": zones},
                                           timeout=3600)[0]
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=count)
    worker.start()
    latencies = []
    while worker.is_alive():
        latencies += health_latencies(service, 5)
    return latencies, outcome


def slow_sockets(service, count: int, seconds: float) -> tuple:
    """Latencies of small pictures counted while ``count`` slow sockets are open; how many the server closed."""
    slow = SlowClients(service.port, count)
    try:
        latencies, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            status = service.upload("/api/count", SMALL, timeout=60)[0]
            latencies.append(time.monotonic() - started if status == 200 else float("inf"))
            time.sleep(0.1)
        return latencies, slow.closed()
    finally:
        slow.stop()


def row(attack: str, latencies: list, pid: int, note: str) -> str:
    return (f"| {attack} | {statistics.median(latencies) * 1000:.0f} | {max(latencies) * 1000:.0f} | "
            f"{peak_rss_mb(pid):.0f} | {note} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weight_path", required=True, help="checkpoint serve.py counts with")
    parser.add_argument("--sockets", type=int, default=300, help="slow sockets opened at once")
    parser.add_argument("--seconds", type=float, default=20, help="how long each attack is measured")
    parser.add_argument("--worst_picture", action="store_true",
                        help="also count the costliest picture a stranger may send (minutes on a CPU)")
    parser.add_argument("serve_args", nargs="*", help="more serve.py flags (after --)")
    args = parser.parse_args()
    service = Service(["--weight_path", args.weight_path, *args.serve_args])
    try:
        print("| attack | median ms | slowest ms | server peak RSS MB | outcome |\n|---|---|---|---|---|")
        print(row("none (/api/health)", health_latencies(service, 3), service.process.pid, "-"))
        latencies, statuses = heavy_work(service, args.seconds)
        print(row("heavy work (/api/health)", latencies, service.process.pid, f"statuses {sorted(statuses)}"))
        if args.worst_picture:
            latencies, outcome = worst_picture(service)
            print(row("the costliest picture (/api/health)", latencies, service.process.pid,
                      f"status {outcome['status']} after {outcome['seconds']:.0f} s"))
        latencies, closed = slow_sockets(service, args.sockets, args.seconds)
        print(row(f"{args.sockets} slow sockets (small picture counted)", latencies, service.process.pid,
                  f"{closed} of {args.sockets} closed by the server within {args.seconds:g} s"))
    finally:
        print(f"server exit code {service.stop()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
