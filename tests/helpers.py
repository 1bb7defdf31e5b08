"""Shared test fixtures' building blocks: paths to ../shared and tiny random checkpoints."""
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
REAL_SAMPLES = SHARED / "real_samples"
REFERENCE_CHECKPOINT = REFERENCE / "upstream_format_checkpoint.pth"


def random_checkpoint(path, settings=None, seed=0):
    """Save a randomly initialised network with this project's checkpoint format; returns the model."""
    from models import ModelSettings, PointCounter, save_checkpoint

    torch.manual_seed(seed)
    settings = settings or ModelSettings()
    model = PointCounter(settings).eval()
    save_checkpoint(path, model, settings)
    return model
