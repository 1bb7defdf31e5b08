"""Load test of serve.py on 127.0.0.1: many clients at once, some sending bad uploads, some leaving mid-way.

    python tools/load_test.py --weight_path weights/Hazy_JHU_best.pth --pictures photos/
    python tools/load_test.py --weight_path W --requests 200 --clients 16 --bad 0.10 --disconnect 0.05

Starts serve.py itself (on a free port), counts the pictures with run_test.py first, then sends
``--requests`` requests from ``--clients`` concurrent clients: good pictures (each answer must equal
run_test.py's count), bad uploads (not a picture, a truncated JPEG, bad zone JSON, a picture over the pixel
limit; each must get its 4xx) and clients that disconnect mid-upload or while waiting. A good request
answered 503 (the queue is full) waits its Retry-After and tries again. It stops by itself
and prints requests answered, answers by kind, the median and 95th-percentile latency of the good ones,
and the server's peak resident memory. Exits 1 when any answer was wrong.
"""
import argparse
import csv
import queue
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter as Tally
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUSY_RETRIES = 10
sys.path.insert(0, str(ROOT))

from crowd_datasets.demo import make_scene  # noqa: E402
from crowd_datasets.image_io import is_image_file  # noqa: E402
from tools.service_client import Service, multipart, png_declaring  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weight_path", required=True, help="checkpoint for serve.py")
    parser.add_argument("--pictures", default=None,
                        help="folder of pictures to send (default: three generated crowd scenes of 640 x 480)")
    parser.add_argument("--requests", type=int, default=200, help="requests in all")
    parser.add_argument("--clients", type=int, default=16, help="clients sending at once")
    parser.add_argument("--bad", type=float, default=0.10, help="share of bad uploads")
    parser.add_argument("--disconnect", type=float, default=0.05, help="share of clients that disconnect mid-way")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    parser.add_argument("--serve_args", default="", help="more serve.py arguments, e.g. '--max_queue 8'")
    return parser


def bad_uploads(picture: bytes) -> dict:
    """kind -> (file bytes, file name, form fields, the status it must get)."""
    with tempfile.TemporaryDirectory() as folder:
        png_declaring(Path(folder) / "huge.png", 10_000, 8_000)
        huge = (Path(folder) / "huge.png").read_bytes()
    return {"not a picture": (b"plain text, not a picture", "notes.txt", {}, 400),
            "truncated JPEG": (picture[:len(picture) // 2], "cut.jpg", {}, 400),
            "bad zone JSON": (picture, "zones.jpg", {"zones": "{gate"}, 400),
            "over the pixel limit": (huge, "huge.png", {}, 413)}


def expected_counts(weight_path: str, folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        finished = subprocess.run([sys.executable, "run_test.py", "--weight_path", weight_path, "--input", str(folder),
                                   "--output_dir", out], cwd=ROOT, capture_output=True, text=True)
        if finished.returncode not in (0, 3):
            raise SystemExit(f"run_test.py failed: {finished.stderr.strip().splitlines()[-1]}")
        with open(Path(out) / "counts.csv", newline="") as file:
            return {row["image"]: int(row["count"]) for row in csv.DictReader(file)}


def disconnect(port: int, body: bytes, content_type: str, mid_upload: bool) -> None:
    """A client that leaves: after half its upload, or after all of it without waiting for the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(f"POST /api/count HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode())
        connection.sendall(body[:len(body) // 2] if mid_upload else body)
        time.sleep(0.05)


def send_picture(service, data: bytes, name: str) -> tuple:
    """``(status, answer, times refused as busy)``: a well-behaved client, which on 503 waits the
    ``Retry-After`` it was given and tries again (at most ``BUSY_RETRIES`` times)."""
    for busy in range(BUSY_RETRIES + 1):
        status, headers, answer = service.upload("/api/count", data, name, timeout=600)
        if status != 503:
            break
        time.sleep(float(headers.get("retry-after", 1)))
    return status, answer, busy


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as generated:
        folder = Path(args.pictures) if args.pictures else Path(generated)
        if not args.pictures:
            scenes = np.random.default_rng(args.seed)
            for index in range(3):
                cv2.imwrite(str(folder / f"scene_{index}.jpg"), make_scene(scenes, (640, 480)).image[:, :, ::-1])
        pictures = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if is_image_file(path)}
        expected = expected_counts(args.weight_path, folder)
    bad = bad_uploads(next(iter(pictures.values())))
    plan = queue.Queue()
    for index in range(args.requests):
        draw = rng.random()
        if draw < args.bad:
            plan.put(("bad", rng.choice(sorted(bad))))
        elif draw < args.bad + args.disconnect:
            plan.put(("disconnect", rng.choice(["mid-upload", "mid-wait"])))
        else:
            plan.put(("good", rng.choice(sorted(pictures))))
    service = Service(["--weight_path", args.weight_path, *args.serve_args.split()])
    results, lock = [], threading.Lock()

    def client():
        while True:
            try:
                kind, what = plan.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            try:
                if kind == "good":
                    status, answer, busy = send_picture(service, pictures[what], what)
                    verdict = "equal" if status == 200 and answer["count"] == expected[what] else f"wrong ({status})"
                    if busy:
                        verdict += f" after {busy} x 503 busy"
                elif kind == "bad":
                    data, name, fields, must = bad[what]
                    status, _, answer = service.upload("/api/count", data, name, fields, timeout=600)
                    verdict = "refused as it must" if status == must else f"wrong ({status})"
                else:
                    body, content_type = multipart(next(iter(pictures.values())), "leaving.jpg", {})
                    disconnect(service.port, body, content_type, what == "mid-upload")
                    status, verdict = None, "left"
            except OSError as error:
                status, verdict = None, f"connection error ({error})"
            with lock:
                results.append((kind, what, status, verdict, time.perf_counter() - started))

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    health = service.health()
    status = Path(f"/proc/{service.process.pid}/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    code = service.stop()
    good = [seconds for kind, _, _, verdict, seconds in results if kind == "good" and verdict == "equal"]
    tally = Tally((kind, what if kind != "good" else "picture", verdict) for kind, what, _, verdict, _ in results)
    print(f"{len(results)} requests from {args.clients} clients in {elapsed:.1f} s; server exit code {code}, "
          f"{health['pictures_counted']} pictures counted on the network")
    for (kind, what, verdict), number in sorted(tally.items()):
        print(f"  {number:4d}  {kind:10s} {what:22s} {verdict}")
    if good:
        print(f"good answers: median {statistics.median(good):.2f} s, 95th percentile "
              f"{np.percentile(good, 95):.2f} s (waiting in the queue included)")
    print(f"server peak resident memory: {peak_kib / 1024:.0f} MiB")
    wrong = [result for result in results if result[3].startswith(("wrong", "connection error"))]
    for kind, what, status, verdict, _ in wrong[:10]:
        print(f"WRONG: {kind} {what}: {verdict}", file=sys.stderr)
    return 1 if wrong or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
