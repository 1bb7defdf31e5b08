"""Make a weather dataset from a clean one: every image of ``SRC/train.list`` and ``SRC/test.list`` (the
layout ``tools/prepare_dataset.py`` writes) is degraded with haze or rain and written with its clean
pair and annotation, so that ``train.py --dataset_file Custom --data_root DST --train_list train.list
--test_list test.list`` trains with the restoration module:

    DST/<split>_data/images/<name>          the degraded image
    DST/<split>_data/HR/<name>              the clean image (the restoration module's target)
    DST/<split>_data/ground_truth/<stem>.txt
    DST/<split>.list, DST/weather.csv (each image's parameters), DST/examples.jpg (clean / degraded)

    python tools/synthesize_weather.py --src data/SHA --dst data/SHA_haze --weather haze --severity moderate

Each image's parameters come from ``(--seed, split, name)`` alone, so a run gives the same bytes on
any machine and with any number of workers, and a rerun skips the images already written.
"""
import argparse
import csv
import hashlib
import json
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crowd_datasets.annotations import read_points  # noqa: E402
from crowd_datasets.image_io import ImageReadError, read_rgb, write_rgb  # noqa: E402
from crowd_datasets.layout import samples_from_list  # noqa: E402
from crowd_datasets.weather import SEVERITIES, WEATHER_KINDS, apply_weather, draw_weather  # noqa: E402
from util.script import EXIT_FAILED, error_line, run_script  # noqa: E402


def image_rng(seed: int, split: str, name: str) -> np.random.Generator:
    """The random generator of one image, from the seed and the image's split and name only."""
    digest = hashlib.sha256(f"{split}/{name}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little")]))


def depth_from_heads(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Relative depth ``H x W`` (larger = farther, maximum 1) estimated from the scene itself.

    Heads far away are small and close together: the distance from each head to its nearest
    neighbour is fitted as ``log(spacing) = a + b * y``, and depth is taken inversely proportional to
    the spacing a row's heads would have (perspective: image size ~ 1 / distance). With fewer than 8
    heads, or a fit where spacing does not grow downwards, the usual camera geometry stands in: the
    top of the picture is farthest, depth falling linearly to a third of it at the bottom.
    """
    rows = np.arange(height, dtype=np.float64)
    prior = 1.0 - (2.0 / 3.0) * rows / max(height - 1, 1)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) >= 8:
        spacing = np.maximum(cKDTree(points).query(points, k=2)[0][:, 1], 1.0)
        slope, intercept = np.polyfit(points[:, 1], np.log(spacing), 1)
        if slope > 0:
            # Clamp the extrapolation above and below the heads to a depth range of 1 to 20.
            profile = np.exp(-(intercept + slope * rows))
            prior = np.clip(profile / profile.max(), 0.05, 1.0)
    return np.repeat(prior.astype(np.float32)[:, None], width, axis=1)


def read_depth(depth_dir: Path, stem: str, height: int, width: int) -> np.ndarray:
    """``depth_dir/<stem>.npy`` or an image ``<stem>.png`` (larger = farther), resized to the image."""
    for path in (depth_dir / f"{stem}.npy", depth_dir / f"{stem}.png"):
        if path.is_file():
            depth = np.load(path) if path.suffix == ".npy" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if depth is None or depth.ndim != 2:
                raise ValueError(f"{path}: expected a 2-D depth map")
            return cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    raise FileNotFoundError(f"--depth_dir {depth_dir}: no {stem}.npy or {stem}.png for this image")


def job_list(src: Path, dst: Path) -> list:
    """``(split, sample, output paths)`` for every image of the source lists."""
    jobs = []
    for split in ("train", "val", "test"):
        listing = src / f"{split}.list"
        if not listing.is_file():
            continue
        names = set()
        for sample in samples_from_list(listing, src):
            if sample.image.name in names:
                raise ValueError(f"{listing}: two images are named {sample.image.name}; rename one")
            names.add(sample.image.name)
            folder = dst / f"{split}_data"
            outputs = {"image": folder / "images" / sample.image.name, "clean": folder / "HR" / sample.image.name,
                       "annotation": folder / "ground_truth" / f"{sample.image.stem}.txt"}
            jobs.append((split, sample, outputs))
    if not jobs:
        raise FileNotFoundError(f"--src {src}: no train.list or test.list (write them with tools/prepare_dataset.py)")
    return jobs


def synthesize(job: tuple, weather: str, severity: str, seed: int, depth_dir) -> dict:
    """Degrade one image (unless all its outputs exist); returns its ``weather.csv`` row."""
    split, sample, outputs = job
    clean = read_rgb(sample.image)
    height, width = clean.shape[:2]
    rng = image_rng(seed, split, sample.image.name)
    parameters = draw_weather(weather, rng, height, severity)
    row = {"split": split, "image": sample.image.name, "weather": weather, "severity": severity,
           "depth": "file" if depth_dir else "heads", "parameters": json.dumps(parameters, sort_keys=True)}
    if all(path.is_file() for path in outputs.values()):
        return row
    points = read_points(sample.annotation)
    depth = (read_depth(Path(depth_dir), sample.image.stem, height, width) if depth_dir
             else depth_from_heads(points, height, width))
    degraded = apply_weather(clean.astype(np.float32) / 255, depth, weather, parameters, rng)
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(outputs["annotation"], points, fmt="%.9g")
    shutil.copyfile(sample.image, outputs["clean"])
    # The degraded image last: its presence marks the image as done for a rerun.
    write_rgb(outputs["image"], (degraded * 255).round().astype(np.uint8))
    return row


def contact_sheet(jobs: list, path: Path, count: int = 4, height: int = 180) -> None:
    """``count`` clean (top) / degraded (bottom) pairs side by side, each ``height`` pixels tall."""
    columns = []
    for _, _, outputs in jobs[:count]:
        pair = [read_rgb(outputs[key]) for key in ("clean", "image")]
        width = round(pair[0].shape[1] * height / pair[0].shape[0])
        columns.append(np.concatenate([cv2.resize(image, (width, height)) for image in pair], axis=0))
    write_rgb(path, np.concatenate(columns, axis=1))


def work(arguments):
    job, weather, severity, seed, depth_dir = arguments
    return synthesize(job, weather, severity, seed, depth_dir)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--src", required=True, help="clean dataset folder holding train.list / test.list")
    parser.add_argument("--dst", required=True, help="folder for the weather dataset")
    parser.add_argument("--weather", required=True, choices=WEATHER_KINDS, help="degradation to add")
    parser.add_argument("--severity", default="mixed", choices=list(SEVERITIES["haze"]),
                        help="strength range (crowd_datasets/weather.py SEVERITIES); mixed spans all")
    parser.add_argument("--depth_dir", default=None,
                        help="depth maps <stem>.npy or <stem>.png (larger = farther), as ShanghaiTechRGBD ships; "
                             "default: estimated from the annotated heads and the image geometry")
    parser.add_argument("--seed", type=int, default=0, help="seed of every image's parameters and streaks")
    parser.add_argument("--num_workers", type=int, default=2, help="processes synthesizing images")
    args = parser.parse_args(argv)
    if args.num_workers < 0:
        parser.error(f"--num_workers must be at least 0, got {args.num_workers}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    try:
        if dst.resolve() == src.resolve():
            raise ValueError(f"--dst {dst} is --src; choose another folder")
        if args.depth_dir and not Path(args.depth_dir).is_dir():
            raise FileNotFoundError(f"--depth_dir {args.depth_dir}: no such folder")
        jobs = job_list(src, dst)
        done = sum(all(path.is_file() for path in outputs.values()) for _, _, outputs in jobs)
        tasks = [(job, args.weather, args.severity, args.seed, args.depth_dir) for job in jobs]
        bar = dict(total=len(tasks), desc=f"adding {args.weather}", unit="img", disable=None)
        if args.num_workers > 0 and len(tasks) > 1:
            with Pool(args.num_workers) as pool:
                rows = list(tqdm(pool.imap(work, tasks, chunksize=4), **bar))
        else:
            rows = [work(task) for task in tqdm(tasks, **bar)]
    except (FileNotFoundError, ValueError, ImageReadError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    for split in sorted({split for split, _, _ in jobs}):
        lines = [f"{outputs['image'].relative_to(dst).as_posix()} {outputs['annotation'].relative_to(dst).as_posix()}"
                 for job_split, _, outputs in jobs if job_split == split]
        (dst / f"{split}.list").write_text("\n".join(lines) + "\n")
    with open(dst / "weather.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    contact_sheet(jobs, dst / "examples.jpg")
    print(f"wrote {len(jobs) - done} images with {args.weather} ({args.severity}) into {dst}, {done} already "
          f"there; lists, weather.csv and examples.jpg beside them")
    return 0


if __name__ == "__main__":
    run_script(main)
