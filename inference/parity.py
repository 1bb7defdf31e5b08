"""What "computes what the original code computes" means (docs/design.md, "Parity"), defined once for
``tools/parity.py``, ``tools/benchmark.py`` and the tests: logits within ``LOGIT_TOLERANCE``, points
within ``POINT_TOLERANCE_PX`` pixels, and every decisive anchor (reference person score farther than
``DECISIVE_BAND`` from the threshold) classified the same. Also where the reference fixtures are
(``fixtures_dir``)."""
import os
from pathlib import Path

import torch

LOGIT_TOLERANCE = 1e-4
POINT_TOLERANCE_PX = 1e-3
DECISIVE_BAND = 1e-4
FIXTURES_ENV_VAR = "DEHAZE_P2PNET_FIXTURES"
FIXTURES_HINT = (f"they are not part of the repository (see docs/testing.md): put the folder holding reference/ and "
                 f"real_samples/ beside the clone as ../shared, or point {FIXTURES_ENV_VAR} at it")


def fixtures_dir() -> Path:
    """The folder holding the reference fixtures' ``reference/`` and ``real_samples/``:
    ``$DEHAZE_P2PNET_FIXTURES`` if set, else ``shared/`` beside this clone (where the maintainers keep it)."""
    configured = os.environ.get(FIXTURES_ENV_VAR)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"


def compare_outputs(outputs: dict, reference: dict, threshold: float = 0.5, band: float = DECISIVE_BAND) -> dict:
    """Deviations of ``outputs`` from ``reference``, both ``{"pred_logits": [A, 2], "pred_points": [A, 2]}``
    (tensors or arrays, any device): largest logit and point differences, decisive anchors and how many
    of them are classified differently, both counts at ``threshold`` and the anchors within ``band``."""
    logits, points, ref_logits, ref_points = (torch.as_tensor(value).float().cpu() for value in (
        outputs["pred_logits"], outputs["pred_points"], reference["pred_logits"], reference["pred_points"]))
    if logits.shape != ref_logits.shape:
        raise ValueError(f"{tuple(logits.shape)} anchors against {tuple(ref_logits.shape)} in the reference")
    scores, ref_scores = (torch.softmax(value, -1)[:, 1] for value in (logits, ref_logits))
    decisive = (ref_scores - threshold).abs() > band
    return {
        "anchors": int(logits.shape[0]),
        "max_logit_diff": float((logits - ref_logits).abs().max()),
        "max_point_diff": float((points - ref_points).abs().max()),
        "decisive_anchors": int(decisive.sum()),
        "decisive_disagreements": int(((scores > threshold) != (ref_scores > threshold))[decisive].sum()),
        "count": int((scores > threshold).sum()),
        "reference_count": int((ref_scores > threshold).sum()),
        "anchors_in_band": int((~decisive).sum()),
    }


def within_parity(row: dict) -> bool:
    """Whether a ``compare_outputs`` row meets the parity tolerances."""
    return (row["max_logit_diff"] <= LOGIT_TOLERANCE and row["max_point_diff"] <= POINT_TOLERANCE_PX
            and row["decisive_disagreements"] == 0
            and abs(row["count"] - row["reference_count"]) <= row["anchors_in_band"])
