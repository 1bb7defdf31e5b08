"""Evaluation-time forward pass shared by ``run_test.py``, ``engine.evaluate`` and ``Counter``."""
import torch
import torch.nn.functional as F

from .network import EVAL_PAD_MULTIPLE


def pad_image(image: torch.Tensor, fill: torch.Tensor, multiple: int = EVAL_PAD_MULTIPLE) -> torch.Tensor:
    """Pad ``[3, H, W]`` at the bottom and right up to multiples of ``multiple`` with the per-channel
    ``fill`` ``[3]``; returns ``[1, 3, H', W']``."""
    height, width = image.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    batch = image.unsqueeze(0)
    if not pad_h and not pad_w:
        return batch
    padded = fill.to(image).view(1, 3, 1, 1).expand(1, 3, height + pad_h, width + pad_w).clone()
    padded[:, :, :height, :width] = batch
    return padded


@torch.inference_mode()
def forward_padded(model, image: torch.Tensor, restore: bool = False) -> dict:
    """Run ``model`` on one ``[3, H, W]`` image in [0, 1], padded as upstream evaluates.

    The image is moved to the model's device. Returns the model's outputs for the padded input,
    batch dimension removed: ``pred_logits [A, 2]``, ``pred_points [A, 2]`` and, with ``restore``,
    ``pred_restored [3, H, W]`` cropped back to the image.
    """
    parameter = next(model.parameters())
    image = image.to(parameter.device, non_blocking=True)
    height, width = image.shape[-2:]
    outputs = model(pad_image(image, model.padding_fill), restore=restore)
    result = {"pred_logits": outputs["pred_logits"][0], "pred_points": outputs["pred_points"][0]}
    if "pred_restored" in outputs:
        result["pred_restored"] = outputs["pred_restored"][0, :, :height, :width]
    return result


def select_points(outputs: dict, threshold: float = 0.5):
    """Anchors whose softmax person score exceeds ``threshold``.

    Returns ``(points [N, 2], scores [N])`` float32 CPU tensors, ``(x, y)`` pixels of the input image,
    not clipped to the image (as upstream).
    """
    scores = F.softmax(outputs["pred_logits"].float(), dim=-1)[:, 1]
    keep = scores > threshold
    return outputs["pred_points"][keep].float().cpu(), scores[keep].cpu()
