"""The loops: ``train_one_epoch`` and ``evaluate``. They return dicts of numbers."""
import math
from collections import defaultdict

import torch
from tqdm import tqdm

from util.distributed import all_gather_objects, mean_across_ranks
from crowd_datasets.metrics import CountingMetrics
from inference.sinks.predictions import EvaluatedPicture


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the epoch and step."""


def _to_device(target: dict, device) -> dict:
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in target.items()}


def compute_losses(model, criterion, images: torch.Tensor, targets: list, dtype=torch.float32) -> dict:
    """The criterion's unweighted losses for one batch: the forward pass under autocast to ``dtype``
    (``torch.float32``: none), then matching and losses in fp32 on the outputs cast back to fp32.

    ``images [B, 3, H, W]`` on the model's device; ``targets`` as ``util.script.collate_crops`` gives them.
    """
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
        outputs = model(images)
    return criterion({name: value.float() for name, value in outputs.items()}, targets)


def train_one_epoch(model, criterion, data_loader, optimizer, device, epoch: int, clip_max_norm: float = 0.1,
                    progress: bool = True, dtype=torch.float32, scaler=None) -> dict:
    """One pass over ``data_loader`` (batches from ``util.script.collate_crops``).

    The forward pass runs under autocast to ``dtype`` (``torch.float32``: none) with channels-last
    images; ``scaler`` (a ``torch.amp.GradScaler``, enabled for fp16; default: a disabled one) scales
    the loss. Returns the epoch means of the weighted total ``loss`` and of every unweighted loss the
    criterion returned, averaged over processes. Raises ``NonFiniteLossError`` before the update of a
    step whose loss is not finite, so the weights stay as they were after the last good step.
    """
    if scaler is None:
        scaler = torch.amp.GradScaler(torch.device(device).type, enabled=False)
    model.train()
    criterion.train()
    sums, steps = defaultdict(float), 0
    bar = tqdm(data_loader, desc=f"epoch {epoch}", unit="step", disable=not progress or None, leave=False)
    for step, (images, targets) in enumerate(bar):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = [_to_device(target, device) for target in targets]
        losses = compute_losses(model, criterion, images, targets, dtype)
        total = criterion.total(losses)
        # One all-reduce per step: every rank logs the same numbers and stops together on a bad loss.
        reduced = {name: value.item() for name, value in mean_across_ranks({**losses, "loss": total}).items()}
        if not math.isfinite(reduced["loss"]):
            raise NonFiniteLossError(f"loss is {reduced['loss']} at epoch {epoch}, step {step} "
                                     f"({', '.join(f'{k} {v:.4g}' for k, v in sorted(reduced.items()))})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        scaler.step(optimizer)
        scaler.update()
        for name, value in reduced.items():
            sums[name] += value
        steps += 1
        bar.set_postfix(loss=f"{reduced['loss']:.4f}")
    if steps == 0:
        raise ValueError("the training loader yielded no batches; is the training split empty?")
    return {name: value / steps for name, value in sums.items()}


def evaluate(counter, data_loader, sigmas=(4, 8), progress: bool = True, sinks: tuple = ()) -> dict:
    """Count every image of ``data_loader`` (batches from ``util.script.collate_images``) with ``counter``
    (a ``models.Counter``: padding, tiling and threshold as for one's own pictures), and hand each to the
    ``sinks`` (``inference.sinks``, as an ``EvaluatedPicture``).

    Each image is run alone, so results do not depend on the loader's batch size. Under
    torch.distributed each rank counts its share and the records are gathered, so every rank returns
    the single-process numbers (the caller builds every rank's counter from the same weights). Returns
    ``CountingMetrics.summary()`` (``images``, ``mae``, ``mse`` = root mean squared error, ``game0..3``,
    precision/recall/F1 per sigma in pixels, P2PNet's ``nap``) plus ``records``: one dict per image.
    """
    metrics = CountingMetrics(sigmas)
    bar = tqdm(total=len(data_loader.sampler), desc="evaluating", unit="img", disable=not progress or None,
               leave=False)
    for images, targets in data_loader:
        for image, target in zip(images, targets):
            result = counter.predict(image)
            truth = target["points"].numpy()
            metrics.update(target["image_id"], result.points, truth, result.height, result.width,
                           pred_scores=result.scores)
            for sink in sinks:
                sink.add(EvaluatedPicture(stem=target["image_id"], result=result, truth=truth))
            bar.update(1)
    bar.close()
    gathered = all_gather_objects(metrics.records)
    if len(gathered) > 1:
        metrics = CountingMetrics(sigmas)
        for records in gathered:
            metrics.merge(records)
    summary = metrics.summary()
    summary["records"] = sorted(metrics.records, key=lambda record: record["image"])
    return summary
