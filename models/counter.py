"""``Counter``: count people in one image from Python, on the same code path as ``run_test.py``."""
from pathlib import Path

import numpy as np
import torch

from crowd_datasets.image_io import read_rgb, to_tensor

from .checkpoint import build_from_checkpoint
from .inference import forward_padded, select_points
from .inference_model import prepare_inference


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but PyTorch sees no CUDA device; use --device cpu or auto")
    return device


# Image files declaring more pixels are refused before decoding (an 8000 x 6000 photo is 48 MP).
DEFAULT_MAX_PIXELS = 50_000_000


class Counter:
    """A loaded network plus its pre- and post-processing.

    ``counter(image)`` takes a file path or an ``H x W x 3`` uint8 RGB array and returns
    ``{"points": float32 [N, 2] (x, y) pixels, "scores": float32 [N], "count": int}``.
    The network runs with BatchNorm folded and channels-last memory; ``amp=True`` adds bf16/fp16
    autocast (fast mode, see ``models.inference_model``). Image files whose header declares more than
    ``max_pixels`` pixels are refused before decoding (``ImageReadError``).
    """

    def __init__(self, model, settings, device="cpu", threshold: float = 0.5, amp: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.device = resolve_device(device)
        self.model = prepare_inference(model, self.device, amp=amp)
        self.settings = settings
        self.threshold = threshold
        self.max_pixels = max_pixels

    @classmethod
    def from_checkpoint(cls, path, device="auto", threshold: float = 0.5, input_norm: str = None, amp: bool = False,
                        log=None, max_pixels: int = DEFAULT_MAX_PIXELS):
        """Load a checkpoint written by this project or in the upstream layout (strictly).

        ``input_norm`` overrides the stored setting; original P2PNet checkpoints need ``"imagenet"``.
        """
        model, settings, _ = build_from_checkpoint(path, input_norm=input_norm, log=log)
        return cls(model, settings, device=device, threshold=threshold, amp=amp, max_pixels=max_pixels)

    @property
    def has_restoration(self) -> bool:
        return self.model.restoration is not None

    def image_tensor(self, image) -> torch.Tensor:
        """Path or uint8 RGB array -> float32 ``[3, H, W]`` in [0, 1]."""
        if isinstance(image, (str, Path)):
            image = read_rgb(image, self.max_pixels)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected an image path or an H x W x 3 uint8 RGB array, got {type(image).__name__}")
        return to_tensor(image)

    def predict(self, image, restore: bool = False) -> dict:
        """Like ``__call__``; with ``restore`` also ``"restored"``: the restoration module's view of the
        scene as ``H x W x 3`` uint8 RGB (needs a checkpoint that carries the module)."""
        if restore and not self.has_restoration:
            raise ValueError("this checkpoint has no restoration module; it cannot write restored images")
        outputs = forward_padded(self.model, self.image_tensor(image), restore=restore)
        points, scores = select_points(outputs, self.threshold)
        result = {"points": points.numpy(), "scores": scores.numpy(), "count": int(points.shape[0])}
        if restore:
            restored = outputs["pred_restored"].float().clamp(0, 1).mul(255).round().byte()
            result["restored"] = restored.permute(1, 2, 0).cpu().numpy()
        return result

    def __call__(self, image) -> dict:
        return self.predict(image)
