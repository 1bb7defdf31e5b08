"""Hash everything the counting path writes and answers, so that a refactor can show it changed nothing a
user sees: pictures in exact and fast mode, restored pictures, a video with its frame points, a dataset
evaluation, a run with zones, exclusions and density maps, and serve.py's answers for three pictures and
a video. Everything runs on data and checkpoints made here from fixed seeds.

    python tools/snapshot.py --save before.json      # on the code before the change
    python tools/snapshot.py --compare before.json   # after it: names each output whose hash changed

Hashes hold on one machine and one set of library versions (kernels differ between CPUs); compare
snapshots made on the same machine.
"""
import argparse
import contextlib
import hashlib
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_test  # noqa: E402
from crowd_datasets.demo import generate_split, make_scene  # noqa: E402
from crowd_datasets.image_io import write_rgb  # noqa: E402
from inference.video_io import VideoWriter  # noqa: E402
from models import ModelSettings, PointCounter, save_checkpoint  # noqa: E402
from tools.service_client import Service  # noqa: E402

ZONES = {"left": [[0, 0], [120, 0], [120, 192], [0, 192]], "=formula": [[100, 20], [250, 30], [180, 180]]}
EXCLUDE = {"roof": [[0, 0], [256, 0], [256, 30], [0, 30]]}
# Timings and the server's own choices (a job's id) differ from run to run; they are left out of hashes.
VARYING_KEYS = ("milliseconds", "id")
SPEED = re.compile(r"[\d.]+ (images|frames)/s")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_hashes(folder: Path) -> dict:
    """Relative path -> hash of every file under ``folder``."""
    return {str(path.relative_to(folder)): sha256(path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file()}


def checkpoint(path: Path, restoration: bool = False) -> Path:
    """Random weights whose person scores spread around 0.5 (counts neither 0 nor everything)."""
    torch.manual_seed(3)
    model = PointCounter(ModelSettings(restoration=restoration)).eval()
    with torch.no_grad():
        model.classification.output.weight.mul_(30)
    save_checkpoint(path, model, model.settings)
    return path


def make_inputs(work: Path) -> dict:
    """Pictures (two JPEGs and a PNG with alpha named .jpg), a clip, zone files and a small dataset."""
    rng = np.random.default_rng(11)
    pictures = work / "pictures"
    for index, size in enumerate([(256, 192), (320, 240), (200, 150)]):
        rgb = make_scene(rng, size).image
        name = "alpha_png.jpg" if index == 2 else f"scene_{index}.jpg"
        if index == 2:
            pictures.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(pictures / name), np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 200, np.uint8)]))
        else:
            write_rgb(pictures / name, rgb)
    clip = work / "clip.mp4"
    writer = VideoWriter(clip, 8.0)
    for _ in range(6):
        writer.write(make_scene(rng, (256, 192)).image)
    writer.close()
    (work / "zones.json").write_text(json.dumps(ZONES))
    (work / "exclude.json").write_text(json.dumps(EXCLUDE))
    generate_split(work / "dataset" / "test_data", 4, "haze", seed=5)
    (work / "dataset" / "test.list").write_text("".join(
        f"test_data/images/IMG_{n}.jpg test_data/images/IMG_{n}.txt\n" for n in range(1, 5)))
    return {"pictures": pictures, "clip": clip}


def run_test_hashes(work: Path, name: str, arguments: list) -> dict:
    """Hashes of what ``run_test.py arguments --output_dir <work>/<name>`` writes, and of its printed lines."""
    out = work / name
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = run_test.main([*arguments, "--output_dir", str(out)])
    # Printed paths name the temporary folder, and speeds vary; the rest of the lines is what users read.
    lines = SPEED.sub("<speed>", printed.getvalue().replace(str(work), "<work>"))
    return {"exit code": str(code), "printed": sha256(lines.encode()), **(folder_hashes(out) if out.exists() else {})}


def script_cases(work: Path, inputs: dict, model: Path, restoring: Path) -> dict:
    base = ["--weight_path", str(model)]
    zones = ["--zones", str(work / "zones.json"), "--exclude", str(work / "exclude.json"), "--save_density"]
    dataset = ["--dataset_file", "Custom", "--data_root", str(work / "dataset"), "--test_list", "test.list",
               "--num_workers", "0"]
    return {
        "pictures, exact": run_test_hashes(work, "exact", [*base, "--input", str(inputs["pictures"])]),
        "pictures, fast": run_test_hashes(work, "fast", [*base, "--input", str(inputs["pictures"]), "--amp"]),
        "pictures, restored": run_test_hashes(work, "restored", ["--weight_path", str(restoring), "--input",
                                                                 str(inputs["pictures"]), "--save_restored"]),
        "video, frame points": run_test_hashes(work, "video", [*base, "--input", str(inputs["clip"]),
                                                               "--save_frame_points", "--frame_stride", "2"]),
        "zones, exclusions, density": run_test_hashes(work, "zones", [*base, "--input", str(inputs["pictures"]),
                                                                      *zones]),
        "video, zones, density": run_test_hashes(work, "video_zones", [*base, "--input", str(inputs["clip"]),
                                                                       *zones]),
        "dataset evaluation": run_test_hashes(work, "dataset", [*base, *dataset]),
    }


def steady(answer) -> bytes:
    """An API answer without the keys that vary from run to run, as canonical JSON."""
    if isinstance(answer, dict):
        answer = {key: value for key, value in answer.items() if key not in VARYING_KEYS}
    return json.dumps(answer, sort_keys=True).encode()


def api_cases(inputs: dict, model: Path, restoring: Path) -> dict:
    hashes = {}
    service = Service(["--weight_path", str(restoring)])
    try:
        for path in sorted(inputs["pictures"].iterdir()):
            fields = {"zones": json.dumps(ZONES), "exclude": json.dumps(EXCLUDE), "threshold": "0.3",
                      "restore": "true"}
            status, _, answer = service.upload("/api/count", path.read_bytes(), path.name, fields)
            hashes[f"/api/count {path.name}"] = f"{status} {sha256(steady(answer))}"
            body = json.dumps({"points": answer["points"], "threshold": 0.6, "zones": ZONES, "density": True,
                               "width": answer["width"], "height": answer["height"]}).encode()
            status, _, recounted = service.json("POST", "/api/recount", body, {"Content-Type": "application/json"})
            hashes[f"/api/recount {path.name}"] = f"{status} {sha256(steady(recounted))}"
        status, _, job = service.upload("/api/videos", inputs["clip"].read_bytes(), "clip.mp4",
                                        {"zones": json.dumps(ZONES), "frame_stride": "2"})
        deadline = time.monotonic() + 300
        while job["state"] in ("waiting", "counting") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = service.json("GET", f"/api/videos/{job['id']}")[2]
        hashes["/api/videos clip.mp4"] = f"{status} {sha256(steady(job))}"
        hashes["/api/videos counts.csv"] = sha256(service.request("GET", f"/api/videos/{job['id']}/counts.csv")[2])
    finally:
        service.stop()
    return {"serve.py answers": hashes}


def snapshot() -> dict:
    with tempfile.TemporaryDirectory(prefix="snapshot-") as folder:
        work = Path(folder)
        inputs = make_inputs(work)
        model, restoring = checkpoint(work / "model.pth"), checkpoint(work / "restoring.pth", restoration=True)
        return {**script_cases(work, inputs, model, restoring), **api_cases(inputs, model, restoring)}


def differences(before: dict, after: dict) -> list:
    """``case: output`` of every hash that differs, appeared or disappeared."""
    changed = []
    for case in sorted(set(before) | set(after)):
        old, new = before.get(case, {}), after.get(case, {})
        changed += [f"{case}: {output}" for output in sorted(set(old) | set(new)) if old.get(output) != new.get(output)]
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write the snapshot (JSON) here")
    action.add_argument("--compare", type=Path, help="compare with this earlier snapshot")
    args = parser.parse_args()
    taken = snapshot()
    count = sum(len(hashes) for hashes in taken.values())
    if args.save:
        args.save.write_text(json.dumps(taken, indent=1, sort_keys=True) + "\n")
        print(f"wrote {count} hashes of {len(taken)} cases to {args.save}")
        return 0
    changed = differences(json.loads(args.compare.read_text()), taken)
    for line in changed:
        print(f"changed: {line}")
    print(f"{count} hashes of {len(taken)} cases: " + (f"{len(changed)} changed" if changed else "all identical"))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
