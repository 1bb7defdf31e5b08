"""The training sections of ``tools/benchmark.py``: the restoration module's cost, the data loader's
rate against a training step, and a training step in fp32 and with ``--amp``."""
import statistics
import time

import torch
from torch.utils.data import DataLoader

from crowd_datasets import build_dataset
from engine import compute_losses
from measure import count_flops, print_table, timed, verdict
from models import HungarianMatcher, ModelSettings, PointCounter, SetCriterion
from models.precision import autocast_dtype
from crowd_datasets import collate_crops

# The restoration module's budget (docs/design.md, "Contracts") and the training goals ("Goals").
IRM_MAX_PARAMETERS = 2_000_000
IRM_MAX_EXTRA_TRAINING_FLOPS = 0.15
# --amp step against the fp32 step: on a CPU 85 % of its bf16 / fp32 conv-peak ratio, on a GPU 2x.
AMP_MIN_SHARE_OF_PEAK_RATIO_CPU, AMP_MIN_TRAINING_SPEEDUP_CUDA = 0.85, 2.0


def training_flops(settings: ModelSettings, crops: torch.Tensor) -> int:
    """FLOPs of a forward and backward pass of a freshly built network in training mode on ``crops``."""
    torch.manual_seed(0)
    model = PointCounter(settings).train().to(crops.device)

    def step():
        outputs = model(crops)
        sum(value.float().sum() for value in outputs.values()).backward()

    return count_flops(step)


def bench_irm(args, device: torch.device) -> None:
    crops = torch.rand(args.irm_crops, 3, args.crop_size, args.crop_size,
                       generator=torch.Generator().manual_seed(0)).to(device)
    with_irm = PointCounter(ModelSettings(restoration=True))
    irm_parameters = sum(p.numel() for p in with_irm.restoration.parameters())
    counter_parameters = sum(p.numel() for p in with_irm.parameters()) - irm_parameters
    without_flops = training_flops(ModelSettings(restoration=False), crops)
    with_flops = training_flops(ModelSettings(restoration=True), crops)
    extra = with_flops / without_flops - 1
    rows = [
        ["IRM parameters", f"{irm_parameters / 1e6:.3f} M", f"<= {IRM_MAX_PARAMETERS / 1e6:.0f} M",
         verdict(irm_parameters <= IRM_MAX_PARAMETERS)],
        ["counter parameters", f"{counter_parameters / 1e6:.2f} M", "", ""],
        ["training GFLOP, counter", f"{without_flops / 1e9:.1f}", "", ""],
        ["training GFLOP, counter + IRM", f"{with_flops / 1e9:.1f}", "", ""],
        ["extra training FLOPs", f"{100 * extra:.2f} %", f"<= {100 * IRM_MAX_EXTRA_TRAINING_FLOPS:.0f} %",
         verdict(extra <= IRM_MAX_EXTRA_TRAINING_FLOPS)],
    ]
    print_table(f"irm: forward + backward on {args.irm_crops} crops of {args.crop_size}x{args.crop_size}",
                ["quantity", "value", "bound", "verdict"], rows)


def training_dataset(args):
    return build_dataset(args.dataset, "train", data_root=args.data_root, cache_dir=args.cache_dir,
                         num_crops=args.num_crops, crop_size=args.crop_size, use_clean=True, seed=0)


class TrainingStep:
    """One optimisation step of the counter with the restoration module, as ``train.py`` runs it
    (channels-last, autocast to ``dtype``, real losses), in two timed parts: ``compute`` (forward,
    losses, backward), whose cost depends on the batch, and ``update`` (Adam), a fixed cost."""

    def __init__(self, device: torch.device, dtype=torch.float32):
        torch.manual_seed(0)
        self.device, self.dtype = device, dtype
        self.model = PointCounter(ModelSettings(restoration=True)).train().to(device, memory_format=torch.channels_last)
        self.criterion = SetCriterion(HungarianMatcher())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-5, weight_decay=1e-4)

    def compute(self, images: torch.Tensor, targets: list) -> None:
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        targets = [{key: value.to(self.device) if torch.is_tensor(value) else value for key, value in target.items()}
                   for target in targets]
        self.optimizer.zero_grad(set_to_none=True)
        self.criterion.total(compute_losses(self.model, self.criterion, images, targets, self.dtype)).backward()

    def update(self) -> None:
        self.optimizer.step()

    def median_seconds(self, images: torch.Tensor, targets: list, runs: int) -> tuple:
        """Median ``(compute, update)`` seconds over ``runs`` steps after one untimed step."""
        self.compute(images, targets)
        self.update()
        compute, update = [], []
        for _ in range(runs):
            compute.append(timed(lambda: self.compute(images, targets), self.device))
            update.append(timed(self.update, self.device))
        return statistics.median(compute), statistics.median(update)


def loader_rate(dataset, batch_size: int, num_crops: int, num_workers: int, batches: int) -> float:
    """Images per second the DataLoader delivers once running (its first batch, which includes the
    workers' start, is not counted). Passes over the dataset repeat until ``batches`` are read."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        collate_fn=collate_crops, drop_last=True)
    images, start, read = 0, None, 0
    while read < batches + 1:
        for crops, _ in loader:
            read += 1
            if start is None:
                start = time.perf_counter()
            else:
                images += crops.shape[0] // num_crops
            if read == batches + 1:
                break
    return images / (time.perf_counter() - start)


def bench_loader(args, device: torch.device) -> None:
    dataset = training_dataset(args)
    if len(dataset) < args.batch_size:
        raise ValueError(f"--batch_size {args.batch_size} exceeds the {len(dataset)} training images of {args.dataset}")
    rows = []
    for workers in (0, 2):
        rate = loader_rate(dataset, args.batch_size, args.num_crops, workers, args.loader_batches)
        rows.append([f"DataLoader, num_workers={workers}", f"{rate:.1f}", f"{rate * args.num_crops:.1f}"])
    images, targets = collate_crops([dataset[index] for index in range(args.batch_size)])
    step = TrainingStep(device, autocast_dtype(device))
    seconds = sum(step.median_seconds(images, targets, args.train_runs))
    consumed = args.batch_size / seconds
    rows.append([f"--amp training step on {device.type} ({1000 * seconds:.0f} ms)", f"{consumed:.1f}",
                 f"{consumed * args.num_crops:.1f}"])
    print_table(f"loader: {args.dataset}, {len(dataset)} images, batch {args.batch_size} images x "
                f"{args.num_crops} crops of {images.shape[-1]}, {args.loader_batches} batches",
                ["pipeline", "images/s", "crops/s"], rows)
    slowest = min(float(row[1]) for row in rows[:2])
    print(f"loader (slowest setting) / training step consumption: {slowest / consumed:.1f}x. "
          "The goal (>= 2x) is for a GPU training step; on a CPU the step is far slower than any GPU.")


def bench_training(args, device: torch.device) -> None:
    dataset = training_dataset(args)
    amp_dtype = autocast_dtype(device)
    steps = {"fp32": TrainingStep(device), "amp": TrainingStep(device, amp_dtype)}
    rows, first, speedups = [], None, []
    for images_per_batch in (1, 2, 8):
        images, targets = collate_crops([dataset[index % len(dataset)] for index in range(images_per_batch)])
        (fp32, update), (amp, _) = (step.median_seconds(images, targets, args.train_runs) for step in steps.values())
        crops = images.shape[0]
        first = first or (crops, amp)
        speedups.append((fp32 + update) / (amp + update))
        rows.append([f"{images_per_batch} x {args.num_crops}", crops, f"{1000 * fp32:.0f}", f"{1000 * amp:.0f}",
                     f"{1000 * update:.0f}", f"{speedups[-1]:.2f}x", f"{1000 * amp / crops:.1f}",
                     f"{(amp / crops) / (first[1] / first[0]):.2f}x"])
    print_table(f"training: one step with the restoration module and the real losses, median of {args.train_runs}; "
                f"amp = {str(amp_dtype).replace('torch.', '')} autocast (train.py --amp)",
                ["images x crops", "crops", "fp32 fwd+loss+bwd ms", "amp fwd+loss+bwd ms", "Adam ms",
                 "step speed-up amp", "amp ms/crop", "amp ms/crop vs first"], rows)
    if device.type == "cuda":
        goal = AMP_MIN_TRAINING_SPEEDUP_CUDA
    else:
        goal = round(AMP_MIN_SHARE_OF_PEAK_RATIO_CPU * args.peaks.get(amp_dtype, args.peaks[torch.float32])
                     / args.peaks[torch.float32], 2)
    print(f"--amp step >= {goal}x fp32 at {rows[-1][1]} crops: {speedups[-1]:.2f}x "
          f"{verdict(speedups[-1] >= goal)}; ms/crop vs first 1.00 = exactly linear in crops")
