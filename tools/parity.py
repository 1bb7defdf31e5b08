"""Compare this project's network with the upstream outputs stored in the reference fixtures.

Runs the reference checkpoint on each reference image through the same code path as ``run_test.py``
(``Counter.outputs``: decoding, padding, tiling, exact mode) and prints, per image, the largest logit
and point deviation and whether every decisive anchor (reference person score farther than
``inference.parity.DECISIVE_BAND`` from the threshold) is classified the same. The last line says PASS or FAIL.

    python tools/parity.py [--reference DIR] [--images DIR]   # default: reference/ and real_samples/ of
                                                              # $DEHAZE_P2PNET_FIXTURES or ../shared
    python tools/parity.py --reference DIR --images DIR   # fixtures made by tools/make_reference.py
    python tools/parity.py --weight_path reference.onnx   # the reference checkpoint exported to ONNX
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference import Counter  # noqa: E402
from inference.parity import (FIXTURES_HINT, LOGIT_TOLERANCE, POINT_TOLERANCE_PX, compare_outputs,  # noqa: E402
                              fixtures_dir, within_parity)
from util.script import EXIT_FAILED  # noqa: E402


def image_path(image_dir: Path, name: str) -> Path:
    """The reference image ``name``: ``name.jpg`` as in the shared fixtures, else the file ``name.*`` (pictures
    that tools/make_reference.py was given keep their own suffix)."""
    jpg = image_dir / f"{name}.jpg"
    return jpg if jpg.exists() else next((path for path in sorted(image_dir.iterdir()) if path.stem == name), jpg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reference", default=str(fixtures_dir() / "reference"),
                        help="folder with upstream_format_checkpoint.pth and *_reference_outputs.npz")
    parser.add_argument("--images", default=str(fixtures_dir() / "real_samples"),
                        help="folder with the reference images")
    parser.add_argument("--weight_path", default=None,
                        help="the reference checkpoint in another form, e.g. exported by tools/export_onnx.py "
                             "(default: upstream_format_checkpoint.pth in --reference)")
    parser.add_argument("--device", default="cpu", help="device to run on")
    args = parser.parse_args(argv)
    reference_dir, image_dir = Path(args.reference), Path(args.images)
    weight_path = args.weight_path or reference_dir / "upstream_format_checkpoint.pth"
    needed = [reference_dir / "reference_counts.json", Path(weight_path), image_dir]
    missing = next((path for path in needed if not path.exists()), None)
    if missing is not None:
        print(f"error: the reference fixtures are missing ({missing} not found); {FIXTURES_HINT}, or give --reference "
              "and --images", file=sys.stderr)
        return EXIT_FAILED
    counter = Counter.from_checkpoint(weight_path, device=args.device,
                                      log=lambda message: None)
    counts = json.loads((reference_dir / "reference_counts.json").read_text())
    ok = True
    for name in sorted(counts):
        reference = np.load(reference_dir / f"{name}_reference_outputs.npz")
        image = image_path(image_dir, name)
        row = compare_outputs(counter.outputs(image), reference, counter.threshold)
        ok &= within_parity(row)
        print(f"{image.name}: {row['anchors']} anchors, max |logit diff| {row['max_logit_diff']:.2e}, "
              f"max |point diff| {row['max_point_diff']:.2e} px, decisive anchors {row['decisive_anchors']} "
              f"({row['decisive_disagreements']} disagree), count {row['count']} vs upstream "
              f"{counts[name]['pred_count_at_0.5']} ({row['anchors_in_band']} anchors within the band)")
    print(f"parity: {'PASS' if ok else 'FAIL'} (logits <= {LOGIT_TOLERANCE:g}, points <= {POINT_TOLERANCE_PX:g} px, "
          "decisive anchors identical)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
