"""Compare this project's network with the upstream outputs stored in ``../shared/reference``.

Runs the reference checkpoint on each reference image through the same code path as ``run_test.py``
(``Counter.outputs``: decoding, padding, tiling, exact mode) and prints, per image, the largest logit
and point deviation and whether every decisive anchor (reference person score farther than ``--band``
from the threshold) is classified the same. The last line says PASS or FAIL.

    python tools/parity.py [--reference ../shared/reference] [--images ../shared/real_samples]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import Counter  # noqa: E402

LOGIT_TOLERANCE = 1e-4
POINT_TOLERANCE = 1e-3


def compare(counter: Counter, image_path: Path, reference: dict, band: float = 1e-4) -> dict:
    """Deviations of ``counter``'s raw outputs on ``image_path`` from one ``*_reference_outputs.npz``."""
    outputs = counter.outputs(image_path)
    logits = outputs["pred_logits"].float().cpu()
    points = outputs["pred_points"].float().cpu()
    ref_logits = torch.from_numpy(reference["pred_logits"])
    ref_points = torch.from_numpy(reference["pred_points"])
    if logits.shape != ref_logits.shape:
        raise ValueError(f"{image_path.name}: {tuple(logits.shape)} anchors, reference has {tuple(ref_logits.shape)}")
    threshold = counter.threshold
    scores = torch.softmax(logits, -1)[:, 1]
    ref_scores = torch.softmax(ref_logits, -1)[:, 1]
    decisive = (ref_scores - threshold).abs() > band
    return {
        "image": image_path.name,
        "anchors": int(logits.shape[0]),
        "max_logit_diff": float((logits - ref_logits).abs().max()),
        "max_point_diff": float((points - ref_points).abs().max()),
        "decisive_anchors": int(decisive.sum()),
        "decisive_disagreements": int(((scores > threshold) != (ref_scores > threshold))[decisive].sum()),
        "count": int((scores > threshold).sum()),
        "reference_count": int((ref_scores > threshold).sum()),
        "anchors_in_band": int((~decisive).sum()),
    }


def passes(row: dict) -> bool:
    return (row["max_logit_diff"] <= LOGIT_TOLERANCE and row["max_point_diff"] <= POINT_TOLERANCE
            and row["decisive_disagreements"] == 0
            and abs(row["count"] - row["reference_count"]) <= row["anchors_in_band"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"),
                        help="folder with upstream_format_checkpoint.pth and *_reference_outputs.npz")
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "real_samples"),
                        help="folder with the reference images")
    parser.add_argument("--device", default="cpu", help="device to run on")
    args = parser.parse_args(argv)
    reference_dir, image_dir = Path(args.reference), Path(args.images)
    counter = Counter.from_checkpoint(reference_dir / "upstream_format_checkpoint.pth", device=args.device,
                                      log=lambda message: None)
    counts = json.loads((reference_dir / "reference_counts.json").read_text())
    ok = True
    for name in sorted(counts):
        row = compare(counter, image_dir / f"{name}.jpg", np.load(reference_dir / f"{name}_reference_outputs.npz"))
        ok &= passes(row)
        print(f"{row['image']}: {row['anchors']} anchors, max |logit diff| {row['max_logit_diff']:.2e}, "
              f"max |point diff| {row['max_point_diff']:.2e} px, decisive anchors {row['decisive_anchors']} "
              f"({row['decisive_disagreements']} disagree), count {row['count']} vs upstream "
              f"{counts[name]['pred_count_at_0.5']} ({row['anchors_in_band']} anchors within the band)")
    print(f"parity: {'PASS' if ok else 'FAIL'} (logits <= {LOGIT_TOLERANCE:g}, points <= {POINT_TOLERANCE:g} px, "
          "decisive anchors identical)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
