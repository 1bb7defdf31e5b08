"""Shared test fixtures' building blocks: paths to the reference fixtures and tiny random checkpoints.
A test that reads the reference fixtures carries ``@pytest.mark.reference_fixtures`` (see conftest.py)."""
from pathlib import Path

import numpy as np
import cv2
import torch

from inference import NetworkBackend
from inference.parity import fixtures_dir
from models import ModelSettings


ROOT = Path(__file__).resolve().parents[1]
SHARED = fixtures_dir()
REFERENCE = SHARED / "reference"
REAL_SAMPLES = SHARED / "real_samples"
REFERENCE_CHECKPOINT = REFERENCE / "upstream_format_checkpoint.pth"


# train.py arguments for a small and quick run that keeps the default --num_workers (2).
SMALL_RUN = ["--backbone_weights", "none", "--crop_size", "64", "--batch_size", "2", "--num_crops", "2",
             "--device", "cpu", "--lr", "1e-4", "--lr_backbone", "1e-4"]


def padded_outputs(model, image):
    """A ``PointCounter``'s outputs for one ``[3, H, W]`` image padded to multiples of ``PAD_MULTIPLE`` as
    upstream evaluates (the plain reference the inference path is compared with): ``[A, 2]`` tensors."""
    from inference.tiling import padded_size

    height, width = image.shape[-2:]
    padded = model.padding_fill.view(3, 1, 1).expand(3, *padded_size(height, width)).clone()
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


def counting_checkpoint(path) -> None:
    """Random weights whose person scores spread around 0.5, so that counts are neither 0 nor everything
    and differ from picture to picture."""
    from models import ModelSettings, PointCounter, save_checkpoint

    torch.manual_seed(3)
    model = PointCounter(ModelSettings()).eval()
    with torch.no_grad():
        model.classification.output.weight.mul_(30)
    save_checkpoint(path, model, model.settings)


def trained_looking_model(restoration=False):
    """Random weights with non-trivial BatchNorm statistics, scaled so that plenty of anchors score
    above 0.5 and comparisons are not between near-empty outputs."""
    from models import ModelSettings, PointCounter

    torch.manual_seed(7)
    model = PointCounter(ModelSettings(input_norm="imagenet", restoration=restoration)).eval()
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
        model.classification.output.weight.mul_(30)
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


# Rounding bounds for comparing convolutions computed by different kernels. A dot product of n terms
# summed in floating point with unit roundoff u, in any order, is within gamma(n, u) * sum(|w * x|) of
# the exact one (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., eq. 3.5).
FP32_UNIT_ROUNDOFF = 2.0 ** -24
BF16_UNIT_ROUNDOFF = 2.0 ** -8  # 8 significant bits


def gamma(n: int, unit_roundoff: float) -> float:
    return n * unit_roundoff / (1 - n * unit_roundoff)


def absolute_conv(x: torch.Tensor, conv) -> torch.Tensor:
    """``sum(|w * x|) + |b|`` of every output of ``conv`` (a stride-1 ``nn.Conv2d``) on ``x``, in float64:
    the magnitude that the rounding bounds of a convolution's outputs scale with."""
    import torch.nn.functional as F

    bias = conv.bias.double().abs() if conv.bias is not None else None
    return F.conv2d(x.double().abs(), conv.weight.double().abs(), bias, padding=conv.padding)


def fp32_conv_bound(x: torch.Tensor, conv) -> torch.Tensor:
    """Largest difference between two fp32 computations of ``conv(x)`` that sum in different orders
    (different kernels, blockings or fused post-ops): each is within gamma(K + 1) * sum|w x| of the exact
    value, K = in_channels * kh * kw products plus the bias. ReLU is 1-Lipschitz, so the bound holds after it."""
    terms = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + 1
    return 2 * gamma(terms, FP32_UNIT_ROUNDOFF) * absolute_conv(x, conv)


def bf16_conv_bound(x: torch.Tensor, conv) -> torch.Tensor:
    """Largest difference between ``conv(x)`` computed with bf16 inputs and weights (fp32 sums, bf16
    output) and in fp32: each product is off by at most (1 + u)^2 - 1 = 2u + u^2 (both factors rounded,
    u = 2^-8), both sums by the fp32 bound, and the output's rounding adds u * |y| <= u * sum|w x|."""
    u = BF16_UNIT_ROUNDOFF
    return (3 * u + u * u) * absolute_conv(x, conv) + fp32_conv_bound(x, conv)


class FixedScores(NetworkBackend):
    """A backend of a few lines: every anchor at its cell's centre, a person where ``person`` says."""

    amp = False
    has_restoration = False

    def __init__(self, person):
        self.person = person

    @property
    def settings(self):
        return ModelSettings(row=1, line=1)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def padding_fill(self):
        return torch.zeros(3)

    def __call__(self, images, restore=False):
        height, width = (side // 8 for side in images.shape[-2:])
        ys, xs = torch.meshgrid(torch.arange(height) * 8 + 4.0, torch.arange(width) * 8 + 4.0, indexing="ij")
        points = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2)
        logits = torch.zeros(1, height * width, 2)
        logits[0, :, 1] = self.person(points[0]).float() * 2 - 1
        return {"pred_logits": logits, "pred_points": points}


def write_image(path, height=40, width=60, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb)


def upstream_root(tmp_path, folder="Hazy_JHU", split="test", annotations=None):
    """``datasets/<folder>/<split>_data/images`` + ``crowd_datasets/<folder>/<split>.list`` and
    annotations, as upstream ships them (no HR/ folder)."""
    annotations = annotations or {"IMG_1": "10 20\n30 5\n", "IMG_2": ""}
    lines = []
    for stem, text in annotations.items():
        write_image(tmp_path / "datasets" / folder / f"{split}_data" / "images" / f"{stem}.jpg")
        annotation = tmp_path / "crowd_datasets" / folder / f"{split}_data" / f"{stem}.txt"
        annotation.parent.mkdir(parents=True, exist_ok=True)
        annotation.write_text(text)
        image = f"datasets/{folder}/{split}_data/images/{stem}.jpg"
        lines.append(f"{image} crowd_datasets/{folder}/{split}_data/{stem}.txt")
    (tmp_path / "crowd_datasets" / folder / f"{split}.list").write_text("\n".join(lines) + "\n")
    return tmp_path
