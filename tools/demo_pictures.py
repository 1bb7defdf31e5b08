"""The pictures of ``assets/demo``: draw them with the demo datasets' procedural generator and write
how many people each holds to ``assets/demo_counts.csv`` (``image,true_count``), or compare a
``counts.csv`` that ``run_test.py --input assets/demo`` wrote with those true counts.

    python tools/demo_pictures.py make                               # rewrites assets/demo/*.jpg and the CSV
    python tools/demo_pictures.py compare runs/demo_weather/counted/counts.csv

The pictures are not in the demo datasets' splits (their seeds are other numbers) and depend only on
the seeds below: ``make`` writes the same pixels every time.
"""
import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crowd_datasets.demo import make_degraded_scene  # noqa: E402
from util.script import EXIT_FAILED  # noqa: E402

# file name -> (weather, seed); 256 x 192 pixels each, the size of the demo datasets' pictures. The seeds
# are the first three from 7000 on whose scenes hold 60 to 160 people (a crowd, neither sparse nor packed).
PICTURES = {"hazy_square.jpg": ("haze", 7001), "hazy_street.jpg": ("haze", 7006), "rainy_plaza.jpg": ("rain", 7009)}
SIZE = (256, 192)
TRUE_COUNTS = ROOT / "assets" / "demo_counts.csv"


def make(output_dir: Path, counts_path: Path) -> int:
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (weather, seed) in PICTURES.items():
        scene, degraded = make_degraded_scene(np.random.SeedSequence(seed), weather, SIZE)
        if not cv2.imwrite(str(output_dir / name), cv2.cvtColor(degraded, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92]):
            print(f"error: could not write {output_dir / name}", file=sys.stderr)
            return EXIT_FAILED
        rows.append((name, len(scene.points)))
        print(f"{name}: {weather}, {len(scene.points)} people")
    with open(counts_path, "w", newline="") as file:
        csv.writer(file).writerows([("image", "true_count"), *rows])
    return 0


def read_counts(path: Path, column: str) -> dict:
    try:
        with open(path, newline="") as file:
            return {row["image"]: int(row[column]) for row in csv.DictReader(file)}
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: expected a CSV with columns image,{column} ({error})") from error


def compare(counted_path: Path, counts_path: Path) -> int:
    """Print each picture's count against its true count; 0 when every picture was counted."""
    try:
        truth, counted = read_counts(counts_path, "true_count"), read_counts(counted_path, "count")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    for name, true_count in truth.items():
        if name in counted:
            error = counted[name] - true_count
            share = 100 * error / true_count
            print(f"{name}: counted {counted[name]}, drawn {true_count} ({error:+d}, {share:+.0f} %)")
        else:
            print(f"{name}: not in {counted_path}")
    return 0 if set(truth) <= set(counted) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_parser = commands.add_parser("make", help="draw the pictures and write their true counts")
    make_parser.add_argument("--output_dir", default=str(ROOT / "assets" / "demo"), help="where the pictures go")
    make_parser.add_argument("--counts", default=str(TRUE_COUNTS), help="the true counts' CSV")
    compare_parser = commands.add_parser("compare", help="a counts.csv against the true counts")
    compare_parser.add_argument("counted", help="counts.csv written by run_test.py --input assets/demo")
    compare_parser.add_argument("--counts", default=str(TRUE_COUNTS), help="the true counts' CSV")
    args = parser.parse_args(argv)
    if args.command == "make":
        return make(Path(args.output_dir), Path(args.counts))
    return compare(Path(args.counted), Path(args.counts))


if __name__ == "__main__":
    sys.exit(main())
