"""Training losses of the point counter and the restoration module, with their weights."""
from itertools import accumulate
from typing import Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.matcher import HungarianMatcher, check_prediction_shapes, target_points
from util.distributed import is_initialized

RESTORATION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def distributed_mean_count(count: int, device: torch.device) -> float:
    """Number of ground-truth points per process, averaged over all processes (at least 1).

    Without an initialised process group this is ``max(count, 1)``. Averaging makes every process
    divide by the same number, so that summing gradients across processes gives the loss of the
    whole global batch.
    """
    if not is_initialized():
        return max(float(count), 1.0)
    total = torch.tensor(float(count), dtype=torch.float32, device=device)
    dist.all_reduce(total)
    return max(total.item() / dist.get_world_size(), 1.0)


class SetCriterion(nn.Module):
    """Matching-based losses of the counter plus the optional restoration loss.

    ``forward`` returns unweighted losses (scalar float32 tensors):

    - ``loss_ce``: cross entropy over all ``A`` anchors of every image, matched anchors labelled
      person (1), all others background (0), class weights ``[eos_coef, 1]`` (weighted mean).
    - ``loss_points``: squared error in pixels² of matched points, summed over x, y and all matches,
      divided by the number of ground-truth points in the batch (at least 1; averaged over processes
      under torch.distributed).
    - ``loss_sr``: error between ``pred_restored`` and the clean images, only when the outputs hold
      ``pred_restored`` and every target holds ``clean``.

    ``weight_dict`` maps every loss name ``forward`` can return to its weight; ``total`` applies it.

    Args:
        matcher: assigns predictions to ground truth, e.g. ``HungarianMatcher``.
        eos_coef: cross-entropy weight of the background class.
        point_loss_coef: weight of ``loss_points`` in the total.
        sr_loss_coef: weight of ``loss_sr`` in the total.
        sr_loss: ``"mse"`` or ``"l1"``, the restoration error.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        eos_coef: float = 0.5,
        point_loss_coef: float = 0.0002,
        sr_loss_coef: float = 10.0,
        sr_loss: str = "mse",
    ):
        super().__init__()
        if sr_loss not in RESTORATION_LOSSES:
            raise ValueError(f"sr_loss must be one of {sorted(RESTORATION_LOSSES)}, got {sr_loss!r}")
        if eos_coef <= 0:
            raise ValueError(f"eos_coef must be positive, got {eos_coef}")
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.sr_loss = sr_loss
        self.weight_dict = {"loss_ce": 1.0, "loss_points": point_loss_coef, "loss_sr": sr_loss_coef}

    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """Compute the unweighted losses.

        Args:
            outputs: ``pred_logits`` float ``[B, A, 2]``, ``pred_points`` float ``[B, A, 2]``
                (``(x, y)`` pixels) and optionally ``pred_restored`` float ``[B, 3, H, W]`` in [0, 1].
            targets: B dicts with ``points`` float32 ``[N_b, 2]`` (``(x, y)`` pixels) and optionally
                ``clean`` float ``[3, H, W]`` in [0, 1].

        Returns:
            dict with ``loss_ce``, ``loss_points`` and, when applicable, ``loss_sr``.
        """
        if len(targets) == 0:
            raise ValueError("SetCriterion needs a batch of at least one target dict, got none")
        check_prediction_shapes(outputs, len(targets))
        indices = self.matcher(outputs, targets)
        logits = outputs["pred_logits"]
        device = logits.device
        points = [target_points(target, b) for b, target in enumerate(targets)]
        batch_idx, pred_idx, gt_idx = self.matched_index(indices, [len(p) for p in points], device)

        classes = torch.zeros(logits.shape[:2], dtype=torch.int64, device=device)
        classes[batch_idx, pred_idx] = 1
        class_weight = torch.tensor([self.eos_coef, 1.0], dtype=torch.float32, device=device)
        losses = {"loss_ce": F.cross_entropy(logits.float().transpose(1, 2), classes, weight=class_weight)}

        matched_gt_points = torch.cat([p.to(device=device, dtype=torch.float32) for p in points])[gt_idx]
        matched_pred_points = outputs["pred_points"][batch_idx, pred_idx].float()
        num_points = distributed_mean_count(sum(len(p) for p in points), device)
        squared_error = F.mse_loss(matched_pred_points, matched_gt_points, reduction="sum")
        losses["loss_points"] = squared_error / num_points

        if "pred_restored" in outputs and all("clean" in t for t in targets):
            losses["loss_sr"] = self.restoration_loss(outputs["pred_restored"], targets)
        return losses

    @staticmethod
    def matched_index(
        indices: List[Tuple[torch.Tensor, torch.Tensor]], sizes: Sequence[int], device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flatten per-image matches into int64 tensors on ``device``: the batch and anchor index of
        each matched prediction, and the index of its ground-truth point among all images' points
        concatenated (image ``b`` holds ``sizes[b]`` of them). One copy to the device for all three."""
        offsets = [0, *accumulate(sizes[:-1])]
        flat = torch.stack([
            torch.cat([torch.full_like(pred, b) for b, (pred, _) in enumerate(indices)]),
            torch.cat([pred for pred, _ in indices]),
            torch.cat([gt + offset for (_, gt), offset in zip(indices, offsets)]),
        ]).to(device)
        return flat[0], flat[1], flat[2]

    def restoration_loss(self, restored: torch.Tensor, targets: Sequence[Dict[str, torch.Tensor]]) -> torch.Tensor:
        """Mean error between ``restored`` ``[B, 3, H, W]`` and the stacked ``clean`` targets."""
        for b, target in enumerate(targets):
            if target["clean"].shape != restored.shape[1:]:
                raise ValueError(
                    f"outputs['pred_restored'] has shape {tuple(restored.shape)} but targets[{b}]['clean'] "
                    f"has shape {tuple(target['clean'].shape)}; expected [3, H, W] = "
                    f"{tuple(restored.shape[1:])}"
                )
        clean = torch.stack([t["clean"] for t in targets]).to(device=restored.device, dtype=torch.float32)
        return RESTORATION_LOSSES[self.sr_loss](restored.float(), clean)

    def total(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of ``losses``; KeyError if a loss has no entry in ``weight_dict``."""
        unweighted = sorted(name for name in losses if name not in self.weight_dict)
        if unweighted:
            raise KeyError(f"losses {unweighted} have no weight in weight_dict (known: {sorted(self.weight_dict)})")
        if not losses:
            raise ValueError("total() needs at least one loss")
        return sum(self.weight_dict[name] * value for name, value in losses.items())
