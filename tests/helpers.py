"""Shared test fixtures' building blocks: paths to ../shared and tiny random checkpoints."""
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
REAL_SAMPLES = SHARED / "real_samples"
REFERENCE_CHECKPOINT = REFERENCE / "upstream_format_checkpoint.pth"


def padded_outputs(model, image):
    """A ``PointCounter``'s outputs for one ``[3, H, W]`` image padded to multiples of 128 as upstream
    evaluates (the plain reference the inference path is compared with): ``[A, 2]`` tensors."""
    height, width = image.shape[-2:]
    padded = model.padding_fill.view(3, 1, 1).expand(3, -(-height // 128) * 128, -(-width // 128) * 128).clone()
    padded[:, :height, :width] = image
    with torch.inference_mode():
        outputs = model(padded.unsqueeze(0))
    return {key: value[0] for key, value in outputs.items()}


def random_checkpoint(path, settings=None, seed=0):
    """Save a randomly initialised network with this project's checkpoint format; returns the model."""
    from models import ModelSettings, PointCounter, save_checkpoint

    torch.manual_seed(seed)
    settings = settings or ModelSettings()
    model = PointCounter(settings).eval()
    save_checkpoint(path, model, settings)
    return model


def tiny_dataset(root, num_train=4, num_test=3, size=(72, 64), seed=0):
    """A ``Custom`` dataset under ``root``: ``train.list``/``test.list``, images with bright blobs at
    the head points, clean pairs in ``HR/``. Returns the command-line arguments that select it."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", num_train), ("test", num_test)):
        lines = []
        for index in range(count):
            folder = root / f"{split}_data"
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "HR").mkdir(exist_ok=True)
            clean = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
            points = rng.uniform(4, [width - 4, height - 4], size=(int(rng.integers(0, 6)), 2))
            for x, y in points:
                cv2.circle(clean, (int(x), int(y)), 3, (255, 255, 255), -1)
            hazy = (0.6 * clean + 0.4 * 200).astype(np.uint8)
            cv2.imwrite(str(folder / "images" / f"IMG_{index}.png"), hazy)
            cv2.imwrite(str(folder / "HR" / f"IMG_{index}.png"), clean)
            np.savetxt(folder / "images" / f"IMG_{index}.txt", points, fmt="%.2f")
            lines.append(f"{split}_data/images/IMG_{index}.png {split}_data/images/IMG_{index}.txt")
        (root / f"{split}.list").write_text("\n".join(lines) + "\n")
    return ["--dataset_file", "Custom", "--data_root", str(root), "--train_list", "train.list",
            "--test_list", "test.list"]
