"""One-to-one assignment of predicted points to ground-truth head points (Hungarian matching)."""
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn.utils.rnn import pad_sequence


def check_prediction_shapes(outputs: Dict[str, torch.Tensor], num_targets: int) -> Tuple[int, int]:
    """Validate ``pred_logits`` / ``pred_points`` against the number of target dicts.

    Returns ``(batch_size, num_anchors)``. Raises KeyError for a missing key and ValueError for a
    shape that is not ``[B, A, 2]`` or a batch size that differs from ``num_targets``.
    """
    for key in ("pred_logits", "pred_points"):
        if key not in outputs:
            raise KeyError(f"model outputs lack '{key}' (have: {sorted(outputs)})")
        if outputs[key].dim() != 3 or outputs[key].shape[-1] != 2:
            raise ValueError(f"outputs['{key}'] must have shape [B, A, 2], got {tuple(outputs[key].shape)}")
    logits_shape, points_shape = outputs["pred_logits"].shape, outputs["pred_points"].shape
    if logits_shape != points_shape:
        raise ValueError(
            f"outputs['pred_logits'] {tuple(logits_shape)} and outputs['pred_points'] "
            f"{tuple(points_shape)} must have the same [B, A, 2] shape"
        )
    if logits_shape[0] != num_targets:
        raise ValueError(f"batch has {logits_shape[0]} predictions but {num_targets} target dicts")
    return logits_shape[0], logits_shape[1]


def target_points(target: Dict[str, torch.Tensor], index: int) -> torch.Tensor:
    """Return ``target['points']`` (float ``[N, 2]``, ``(x, y)`` pixels) after checking its shape."""
    if "points" not in target:
        raise KeyError(f"targets[{index}] lacks 'points' (have: {sorted(target)})")
    points = target["points"]
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"targets[{index}]['points'] must have shape [N, 2], got {tuple(points.shape)}")
    return points


class HungarianMatcher(nn.Module):
    """Match each ground-truth point to one anchor prediction, image by image.

    The cost of giving ground truth ``g`` to prediction ``p`` is
    ``cost_point * ||p - g||_2 - cost_class * softmax(logits_p)[person]`` (distances in pixels);
    the assignment minimising the summed cost is found with ``scipy.optimize.linear_sum_assignment``.
    The costs of a batch are computed on the outputs' device at once; the images are then solved on
    the CPU side by side in up to ``torch.get_num_threads()`` threads.

    Args:
        cost_class: weight of the person probability in the cost (unitless).
        cost_point: weight of the Euclidean distance in the cost (per pixel).
    """

    def __init__(self, cost_class: float = 1.0, cost_point: float = 0.05):
        super().__init__()
        if cost_class == 0 and cost_point == 0:
            raise ValueError("HungarianMatcher needs cost_class or cost_point to be nonzero")
        self.cost_class = cost_class
        self.cost_point = cost_point

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Assign predictions to ground truth.

        Args:
            outputs: ``pred_logits`` float ``[B, A, 2]`` (column 1 = person) and ``pred_points``
                float ``[B, A, 2]`` as ``(x, y)`` pixels.
            targets: B dicts, each with ``points`` float ``[N_b, 2]`` as ``(x, y)`` pixels.

        Returns:
            B pairs ``(pred_idx, gt_idx)`` of int64 CPU tensors of length ``min(A, N_b)``, in the
            order ``linear_sum_assignment`` returns them (pred_idx ascending); empty for ``N_b == 0``.
        """
        check_prediction_shapes(outputs, len(targets))
        costs = self.cost_matrices(outputs, [target_points(target, b) for b, target in enumerate(targets)])
        with ThreadPoolExecutor(max(1, min(len(costs), torch.get_num_threads()))) as pool:
            return list(pool.map(assignment, costs))

    def cost_matrices(self, outputs: Dict[str, torch.Tensor], points: Sequence[torch.Tensor]) -> List[np.ndarray]:
        """The B cost matrices, float32 ``[A, N_b]``, computed in one batch on the outputs' device and
        copied to the host at once: one synchronisation per batch, not one per image."""
        # The cost only ranks candidates, but in float32 exactly as upstream so that near-ties
        # resolve the same way and the matching reproduces the reference.
        person_prob = outputs["pred_logits"].float().softmax(-1)[..., 1]
        pred_points = outputs["pred_points"].float()
        sizes = [len(p) for p in points]
        if max(sizes, default=0) == 0:
            return [np.empty((pred_points.shape[1], 0), dtype=np.float32) for _ in sizes]
        gt_points = pad_sequence([p.to(device=pred_points.device, dtype=torch.float32) for p in points],
                                 batch_first=True)
        cost = self.cost_point * torch.cdist(pred_points, gt_points, p=2) - self.cost_class * person_prob.unsqueeze(2)
        cost = cost.cpu().numpy()
        return [cost[b, :, :size] for b, size in enumerate(sizes)]


def assignment(cost: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(row indices, column indices)`` int64 of the minimum-cost assignment of ``cost [A, N]``.

    SciPy releases the GIL while it solves, so threads solve the images of a batch side by side."""
    if cost.shape[1] == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone()
    rows, columns = linear_sum_assignment(cost)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(columns, dtype=torch.int64)
