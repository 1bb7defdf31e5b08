"""Train the point counter (with the image restoration module where clean pairs exist).

    python train.py --dataset_file Hazy_SHTA --data_root /data/dehaze --output_dir runs/shta
    torchrun --nproc_per_node 8 train.py --dataset_file Hazy_SHTA --data_root /data/dehaze --output_dir runs/shta
"""
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from crowd_datasets import build_dataset
from engine import NonFiniteLossError, evaluate, train_one_epoch
from models import build_criterion, build_model, read_checkpoint, resolve_device, save_checkpoint
from models.checkpoint import CheckpointError, load_model_state, model_settings
from models.inference import forward_padded
from models.network import PointCounter
from util.distributed import cleanup, init_distributed
from util.metrics import format_summary
from util.misc import collate_crops, collate_images
from util.options import build_parser


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def build_optimizer(model, args):
    """Adam with P2PNet's two learning rates: ``lr_backbone`` for VGG16-BN, ``lr`` for the rest."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    optimizer = torch.optim.Adam([{"params": rest, "lr": args.lr}, {"params": backbone, "lr": args.lr_backbone}],
                                 lr=args.lr, weight_decay=args.weight_decay)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)


def make_loaders(args, state, dataset_train, dataset_test):
    """Shuffling through a seeded ``DistributedSampler`` on one process too, so that a resumed run
    sees exactly the batches an uninterrupted one would."""
    sampler_train = DistributedSampler(dataset_train, num_replicas=state.world_size, rank=state.rank,
                                       shuffle=True, seed=args.seed)
    sampler_test = DistributedSampler(dataset_test, num_replicas=state.world_size, rank=state.rank, shuffle=False)
    loader_train = DataLoader(dataset_train, batch_sampler=BatchSampler(sampler_train, args.batch_size, drop_last=False),
                              collate_fn=collate_crops, num_workers=args.num_workers,
                              pin_memory=state.device.type == "cuda", persistent_workers=args.num_workers > 0)
    loader_test = DataLoader(dataset_test, batch_size=1, sampler=sampler_test, collate_fn=collate_images,
                             num_workers=args.num_workers)
    return sampler_train, loader_train, loader_test


def log_restored(writer, model, dataset_test, count: int, epoch: int) -> None:
    """The restoration module's view of the first ``count`` test images, for tensorboard."""
    for index in range(min(count, len(dataset_test))):
        image, target = dataset_test[index]
        restored = forward_padded(model, image, restore=True)["pred_restored"].float().clamp(0, 1).cpu()
        writer.add_images(f"restored/{target['image_id']}", torch.stack([image, restored]), epoch)


def main(argv=None) -> int:
    parser = build_parser("train")
    args = parser.parse_args(argv)
    if args.dataset_file is None:
        parser.error("--dataset_file is required")
    for name in ("epochs", "eval_freq", "batch_size", "num_crops", "lr_drop"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.crop_size is not None and (args.crop_size < 16 or args.crop_size % 16):
        parser.error(f"--crop_size must be a positive multiple of 16 (the network's stride), got {args.crop_size}")
    state = init_distributed(resolve_device(args.device))
    say = print if state.is_main else (lambda *a, **k: None)
    output_dir = Path(args.output_dir or f"runs/{args.dataset_file}")
    try:
        return train(args, state, output_dir, say)
    except (NonFiniteLossError, FileNotFoundError, ValueError, CheckpointError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, NonFiniteLossError):
            print(f"training stopped; the last good checkpoint is {output_dir / 'latest.pth'}", file=sys.stderr)
        return 1
    finally:
        cleanup()


def train(args, state, output_dir: Path, say) -> int:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    dataset_train, dataset_test = build_dataset(args, "train"), build_dataset(args, "test")
    if args.restoration and not dataset_train.has_clean_pairs:
        say(f"restoration module off: {dataset_train.clean_pairs} of {len(dataset_train)} {args.dataset_file} "
            "training images have a clean HR/ pair (it needs all)")
        args.restoration = dataset_train.use_clean = False
    resume = read_checkpoint(args.resume) if args.resume else None
    if resume is not None:
        settings = model_settings(resume)
        model = PointCounter(settings)
        load_model_state(model, resume["model"], source=args.resume, log=say)
        dataset_train.use_clean = settings.restoration
    else:
        model = build_model(args, log=say)
    settings = model.settings
    model.to(state.device)
    criterion = build_criterion(args).to(state.device)
    model_without_ddp = model
    if state.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[state.device.index] if state.device.type == "cuda" else None)
    optimizer, lr_scheduler = build_optimizer(model_without_ddp, args)
    start_epoch, best = 0, {"mae": float("inf"), "mse": float("inf"), "epoch": -1}
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        lr_scheduler.load_state_dict(resume["lr_scheduler"])
        start_epoch, best = resume["epoch"] + 1, dict(resume["best"])
        set_rng_state(resume["rng"])
        say(f"resumed from {args.resume} at epoch {start_epoch}")
    sampler_train, loader_train, loader_test = make_loaders(args, state, dataset_train, dataset_test)

    writer = None
    if state.is_main:
        from torch.utils.tensorboard import SummaryWriter

        output_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(output_dir / "tensorboard"))
        if resume is None:
            (output_dir / "log.txt").write_text("")
    say(f"training {args.dataset_file}: {len(dataset_train)} images x {args.num_crops} crops, "
        f"{len(dataset_test)} test images, {state.world_size} process(es) on {state.device}, "
        f"restoration {'on' if settings.restoration else 'off'}, epochs {start_epoch}..{args.epochs - 1}")
    for epoch in range(start_epoch, args.epochs):
        started = time.perf_counter()
        sampler_train.set_epoch(epoch)
        dataset_train.set_epoch(epoch)
        stats = train_one_epoch(model, criterion, loader_train, optimizer, state.device, epoch,
                                args.clip_max_norm, progress=state.is_main)
        lr_scheduler.step()
        log = {"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()},
               "lr": optimizer.param_groups[0]["lr"], "lr_backbone": optimizer.param_groups[1]["lr"],
               "seconds": round(time.perf_counter() - started, 2)}
        if (epoch + 1) % args.eval_freq == 0 or epoch + 1 == args.epochs:
            summary = evaluate(model_without_ddp, loader_test, args.threshold, progress=state.is_main)
            log.update({f"test_{k}": v for k, v in summary.items() if k != "records"})
            if summary["mae"] < best["mae"]:
                best = {"mae": summary["mae"], "mse": summary["mse"], "epoch": epoch}
                if state.is_main:
                    save_checkpoint(output_dir / "best_mae.pth", model_without_ddp, settings, epoch=epoch,
                                    best=best, args=vars(args))
            say(f"epoch {epoch}: " + "; ".join(format_summary(summary)[-3:])
                + f" (best mae {best['mae']:.4f} at epoch {best['epoch']})")
            if writer is not None and settings.restoration and args.vis_images:
                log_restored(writer, model_without_ddp, dataset_test, args.vis_images, epoch)
        if state.is_main:
            save_checkpoint(output_dir / "latest.pth", model_without_ddp, settings, optimizer=optimizer.state_dict(),
                            lr_scheduler=lr_scheduler.state_dict(), epoch=epoch, best=best, rng=rng_state(),
                            args=vars(args))
            for name, value in log.items():
                if name != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(name.replace("_", "/", 1), value, epoch)
            with open(output_dir / "log.txt", "a") as file:
                file.write(json.dumps(log) + "\n")
        say(f"epoch {epoch}: loss {stats['loss']:.4f} ({log['seconds']} s)")
    if writer is not None:
        writer.close()
    say(f"done: best mae {best['mae']:.4f} mse {best['mse']:.4f} at epoch {best['epoch']}; "
        f"checkpoints in {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
