"""The loops: ``train_one_epoch`` and ``evaluate``. They return dicts of numbers."""
import torch
from tqdm import tqdm

from models.inference import forward_padded, select_points
from util.metrics import CountingMetrics


@torch.no_grad()
def evaluate(model, data_loader, threshold: float = 0.5, sigmas=(4, 8), progress: bool = True) -> dict:
    """Count every image of ``data_loader`` (batches from ``util.misc.collate_images``).

    Each image is run alone, zero-padded to a multiple of 128 as upstream evaluates, so results do
    not depend on the loader's batch size. Returns ``CountingMetrics.summary()`` (``images``, ``mae``,
    ``mse`` = root mean squared error, ``game0..3``, precision/recall/F1 per sigma in pixels) plus
    ``records``: one dict per image (``image``, ``gt``, ``pred``, ``abs_err``, ...).
    """
    model.eval()
    metrics = CountingMetrics(sigmas)
    bar = tqdm(total=len(data_loader.dataset), desc="evaluating", unit="img", disable=not progress or None,
               leave=False)
    for images, targets in data_loader:
        for image, target in zip(images, targets):
            points, _ = select_points(forward_padded(model, image), threshold)
            height, width = image.shape[-2:]
            metrics.update(target["image_id"], points.numpy(), target["points"].numpy(), height, width)
            bar.update(1)
    bar.close()
    summary = metrics.summary()
    summary["records"] = metrics.records
    return summary
