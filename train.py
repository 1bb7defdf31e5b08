"""Train the point counter (with the image restoration module where clean pairs exist).

    python train.py --dataset_file Hazy_SHTA --data_root /data/dehaze --output_dir runs/shta
    torchrun --nproc_per_node 8 train.py --dataset_file Hazy_SHTA --data_root /data/dehaze --output_dir runs/shta
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from crowd_datasets import EpochSampler, build_dataset, collate_crops, collate_images, count_clean_pairs, find_samples
from engine import NonFiniteLossError, evaluate, train_one_epoch
from inference import Counter
from models import ModelSettings, PointCounter, build_criterion, build_model, save_checkpoint, start_from_checkpoint
from models.checkpoint import CheckpointError, load_model_state, model_settings, read_training_checkpoint
from models.releases import RELEASED_CHECKPOINTS, resolve_checkpoint
from models.precision import autocast_dtype
from util.distributed import broadcast_buffers, cleanup, init_distributed, resolve_device
from crowd_datasets.metrics import format_summary
from util.script import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, error_line, run_script
from util.signals import Terminated, quiet_loader_worker, signals_deferred, stop_on_sigterm
from options import (add_data_arguments, add_input_norm_argument, add_runtime_arguments, criterion_options,
                     dataset_options, network_flags)
from util.values import at_least, crop_size, new_parser
from util.training_run import check_resumable, clear_run_files, decide_restoration, is_own_folder, resolve_resume


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


def apply_optimisation_settings(optimizer, lr_scheduler, args) -> None:
    """After a resumed run's optimizer and scheduler are loaded: use this command's ``--lr``,
    ``--lr_backbone``, ``--weight_decay`` and ``--lr_drop`` from the current epoch on, with the learning
    rates the schedule gives at this epoch."""
    lr_scheduler.step_size = args.lr_drop
    lr_scheduler.base_lrs = [args.lr, args.lr_backbone]
    drops = lr_scheduler.last_epoch // args.lr_drop
    for group, base in zip(optimizer.param_groups, lr_scheduler.base_lrs):
        group.update(initial_lr=base, weight_decay=args.weight_decay, lr=base * lr_scheduler.gamma ** drops)


def make_loaders(args, state, dataset_train, dataset_test):
    """Shuffling through a seeded ``DistributedSampler`` on one process too, so that a resumed run
    sees exactly the batches an uninterrupted one would; ``EpochSampler`` hands the epoch to the
    loader workers with every index, so each epoch draws new crops. Returns ``(epoch sampler,
    training loader, test loader)``; call ``set_epoch`` on the first before each epoch."""
    sampler_train = EpochSampler(DistributedSampler(dataset_train, num_replicas=state.world_size, rank=state.rank,
                                                    shuffle=True, seed=args.seed))
    sampler_test = DistributedSampler(dataset_test, num_replicas=state.world_size, rank=state.rank, shuffle=False)
    batches = BatchSampler(sampler_train, args.batch_size, drop_last=False)
    loader_train = DataLoader(dataset_train, batch_sampler=batches, collate_fn=collate_crops,
                              num_workers=args.num_workers, pin_memory=state.device.type == "cuda",
                              persistent_workers=args.num_workers > 0, worker_init_fn=quiet_loader_worker)
    loader_test = DataLoader(dataset_test, batch_size=1, sampler=sampler_test, collate_fn=collate_images,
                             num_workers=args.num_workers, worker_init_fn=quiet_loader_worker)
    return sampler_train, loader_train, loader_test


def log_restored(writer, counter, dataset_test, count: int, epoch: int) -> None:
    """The restoration module's view of the first ``count`` test images, for tensorboard."""
    for index in range(min(count, len(dataset_test))):
        image, target = dataset_test[index]
        restored = counter.outputs(image, restore=True)["pred_restored"].clamp(0, 1).cpu()
        writer.add_images(f"restored/{target['image_id']}", torch.stack([image, restored]), epoch)


def training_precision(amp: bool, device: torch.device, log) -> tuple:
    """``(autocast dtype, GradScaler)`` for training on ``device``. ``amp``: bf16 on CUDA (fp16 where the
    GPU lacks bf16) and on CPUs with native bf16; fp32 elsewhere, with a line saying so. The loss
    scaler is enabled for fp16 only (elsewhere it passes everything through)."""
    dtype = autocast_dtype(device) if amp else torch.float32
    if amp and dtype == torch.float32:
        log("--amp: this CPU has no native bf16 instructions, where bf16 would be slower than fp32; training in fp32")
    return dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Train the point counter, with the image restoration module on datasets that have clean "
                        "pairs.")
    group = add_input_norm_argument(parser, "")
    group.add_argument("--row", type=at_least(1), default=None,
                       help="anchor rows per stride-8 cell (default: 2, or as in --init_weights / --resume)")
    group.add_argument("--line", type=at_least(1), default=None,
                       help="anchor columns per stride-8 cell (default: 2, or as in --init_weights / --resume)")
    group = add_runtime_arguments(parser)
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed-precision training: bf16 autocast on CUDA (fp16 with loss scaling on GPUs "
                            "without bf16) and on CPUs with native bf16 (elsewhere fp32, with a notice); "
                            "matching, losses and optimizer state stay fp32. Default: off for a new run, as "
                            "stored in the checkpoint for a resumed one")
    add_data_arguments(parser, "train on")
    group = parser.add_argument_group("restoration module")
    group.add_argument("--restoration", action=argparse.BooleanOptionalAction, default=None,
                       help="train with the train-only image restoration module, which needs a clean HR/ pair for "
                            "every training image. Default: on when every training image has one, else off (with a "
                            "line saying so); a resumed run keeps the checkpoint's setting")
    group.add_argument("--sr_loss_coef", type=float, default=10.0, help="weight of the restoration loss")
    group.add_argument("--sr_loss", choices=["mse", "l1"], default="mse", help="restoration loss")

    group = parser.add_argument_group("matching and losses")
    group.add_argument("--set_cost_class", type=float, default=1.0, help="matching cost of the person score")
    group.add_argument("--set_cost_point", type=float, default=0.05, help="matching cost per pixel of distance")
    group.add_argument("--point_loss_coef", type=float, default=0.0002, help="weight of the point loss")
    group.add_argument("--eos_coef", type=float, default=0.5, help="cross-entropy weight of the background class")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--lr", type=float, default=1e-4, help="learning rate of the FPN, heads and restoration")
    group.add_argument("--lr_backbone", type=float, default=1e-5, help="learning rate of the VGG16-BN backbone")
    group.add_argument("--weight_decay", type=float, default=1e-4, help="Adam weight decay")
    group.add_argument("--epochs", type=at_least(1), default=3500, help="number of epochs")
    group.add_argument("--lr_drop", type=at_least(1), default=3500,
                       help="divide learning rates by 10 after this many epochs")
    group.add_argument("--clip_max_norm", type=float, default=0.1, help="gradient clipping norm (0: off)")
    group.add_argument("--batch_size", type=at_least(1), default=8, help="images per step and process")
    group.add_argument("--num_crops", type=at_least(1), default=4, help="random crops per image")
    group.add_argument("--crop_size", type=crop_size, default=None,
                       help="training crop in pixels (default: the dataset's, 96 for Hazy_JHU, else 128)")
    group.add_argument("--backbone_weights", default="imagenet",
                       help="VGG16-BN start: 'imagenet' (torchvision's weights from its local cache, downloaded "
                            "when online), a path to vgg16_bn-6c64b313.pth, or 'none' to train from scratch")
    group.add_argument("--seed", type=at_least(0), default=42, help="random seed (model, shuffling, augmentation)")

    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", default=None,
                       help="where latest.pth, best_mae.pth, log.txt and tensorboard logs go "
                            "(default: runs/<dataset_file>)")
    group.add_argument("--eval_freq", type=at_least(1), default=5, help="evaluate on the test split every N epochs")
    group.add_argument("--resume", default=None,
                       help="continue a run exactly from its training checkpoint (a latest.pth), or 'auto': from "
                            "<output_dir>/latest.pth when it exists, else start afresh (for job schedulers that "
                            "rerun the same command). The run keeps its data and network; other optimisation or "
                            "loss settings on the command line are used and listed")
    group.add_argument("--init_weights", default=None,
                       help="start a new run from the network weights of a checkpoint (a released one, a "
                            "best_mae.pth or a latest.pth; its optimizer state, epoch and best MAE are not used), "
                            "e.g. to fine-tune on another dataset. A released checkpoint may be given by name ("
                            + ", ".join(RELEASED_CHECKPOINTS) + "): downloaded once into the cache folder. "
                            "Replaces --backbone_weights")
    group.add_argument("--overwrite", action="store_true",
                       help="start a new run in an --output_dir that holds an earlier one, deleting its latest.pth, "
                            "best_mae.pth, log.txt and tensorboard/ (without it, such a folder stops train.py)")
    group.add_argument("--vis_images", type=int, default=2,
                       help="restored test images logged to tensorboard at each evaluation")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset_file is None:
        parser.error("--dataset_file is required")
    if args.resume and args.init_weights:
        parser.error("--resume continues a run and --init_weights starts a new one from a checkpoint's network; "
                     "give one of them")
    output_dir = Path(args.output_dir or f"runs/{args.dataset_file}")
    try:
        # Before anything else, on every process: a run that would replace another's files never starts.
        resume = resolve_resume(args.resume, output_dir, args.overwrite)
        state = init_distributed(resolve_device(args.device))
    except (ValueError, RuntimeError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    say = print if state.is_main else (lambda *a, **k: None)
    stop_on_sigterm()
    progress = {}  # "epoch": the epoch running, "saved": the epoch latest.pth holds; for the message on a stop
    try:
        return train(args, state, output_dir, resume, say, progress)
    except (NonFiniteLossError, FileNotFoundError, ValueError, CheckpointError, RuntimeError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        if isinstance(error, NonFiniteLossError):
            print(f"training stopped; the last good checkpoint is {output_dir / 'latest.pth'}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as stop:
        where = f"in epoch {progress['epoch']}" if "epoch" in progress else "before the first epoch"
        kept = (f"{output_dir / 'latest.pth'} holds epoch {progress['saved']}" if "saved" in progress
                else "no epoch was saved")
        if state.is_main:
            print(f"\n{'stopped by SIGTERM' if isinstance(stop, Terminated) else 'interrupted'} {where}; {kept}: "
                  "continue with the same command and --resume auto", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    finally:
        cleanup()


def train(args, state, output_dir: Path, resume_path, say, progress: dict) -> int:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    # A released checkpoint's name is resolved (downloaded) before the data are read: a failed download stops at once.
    init_weights = resolve_checkpoint(args.init_weights, log=say) if args.init_weights else None
    resume = read_training_checkpoint(resume_path) if resume_path is not None else None
    resumed_settings = model_settings(resume) if resume is not None else None
    changed = []
    if resume is not None:
        changed = check_resumable(resume_path, dict(resume.get("args", {})), vars(args), network_flags(args),
                                  resumed_settings)
    train_samples = find_samples(args.dataset_file, "train", args.data_root, args.train_list)
    restoration, line = decide_restoration(args.restoration, count_clean_pairs(train_samples), len(train_samples),
                                           resumed_settings and resumed_settings.restoration)
    say(line)
    dataset_train = build_dataset(args.dataset_file, "train", samples=train_samples, use_clean=restoration,
                                  **dataset_options(args, "train"))
    dataset_test = build_dataset(args.dataset_file, "test", **dataset_options(args, "test"))
    if resume is not None:
        model = PointCounter(resumed_settings)
        load_model_state(model, resume["model"], source=str(resume_path), log=say)
    elif init_weights is not None:
        model = start_from_checkpoint(init_weights, restoration, network_flags(args), log=say)
    else:
        model = build_model(ModelSettings(**network_flags(args), restoration=restoration), args.backbone_weights,
                            log=say)
    settings = model.settings
    stored_amp = bool(resume is not None and resume.get("amp", False))
    amp = stored_amp if args.amp is None else args.amp
    if resume is not None and amp != stored_amp:
        say(f"--{'' if amp else 'no-'}amp: the resumed run changes precision here, so it no longer matches an "
            "uninterrupted run bit for bit")
    dtype, scaler = training_precision(amp, state.device, say)
    # Channels-last: oneDNN and cuDNN convolutions run faster on it (fp32 and bf16 alike).
    model.to(state.device, memory_format=torch.channels_last)
    criterion = build_criterion(**criterion_options(args)).to(state.device)
    model_without_ddp = model
    if state.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[state.device.index] if state.device.type == "cuda" else None)
    optimizer, lr_scheduler = build_optimizer(model_without_ddp, args)
    start_epoch, best = 0, {"mae": float("inf"), "mse": float("inf"), "epoch": -1}
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        lr_scheduler.load_state_dict(resume["lr_scheduler"])
        if resume.get("scaler"):  # empty when the run that wrote it did not scale (not fp16)
            scaler.load_state_dict(resume["scaler"])
        start_epoch, best = resume["epoch"] + 1, dict(resume["best"])
        set_rng_state(resume["rng"])
        say(f"resumed from {resume_path} at epoch {start_epoch}")
        if changed:
            apply_optimisation_settings(optimizer, lr_scheduler, args)
            say("settings that differ from the resumed run, used from here on (so it no longer matches an "
                "uninterrupted run): " + ", ".join(changed))
        if is_own_folder(resume_path, output_dir):
            progress["saved"] = resume["epoch"]
        else:
            say(f"resumed into {output_dir}, not the run's own folder: the best MAE is tracked afresh here, so "
                f"that best_mae.pth is written here (the run's best so far was {best['mae']:.4f} at epoch "
                f"{best['epoch']}, in {resume_path.parent / 'best_mae.pth'})")
            best = {"mae": float("inf"), "mse": float("inf"), "epoch": -1}
    sampler_train, loader_train, loader_test = make_loaders(args, state, dataset_train, dataset_test)

    writer = None
    if state.is_main:
        from torch.utils.tensorboard import SummaryWriter

        if not is_own_folder(resume_path, output_dir):
            clear_run_files(output_dir)  # resolve_resume let it through: the folder is new or --overwrite
        output_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(output_dir / "tensorboard"))
        if resume is None:
            (output_dir / "log.txt").write_text("")
    say(f"training {args.dataset_file}: {len(dataset_train)} images x {args.num_crops} crops, "
        f"{len(dataset_test)} test images, {state.world_size} process(es) on {state.device}, "
        f"{str(dtype).replace('torch.', '')}, restoration {'on' if settings.restoration else 'off'}, "
        f"epochs {start_epoch}..{args.epochs - 1}")
    for epoch in range(start_epoch, args.epochs):
        progress["epoch"] = epoch
        started = time.perf_counter()
        sampler_train.set_epoch(epoch)
        stats = train_one_epoch(model, criterion, loader_train, optimizer, state.device, epoch,
                                args.clip_max_norm, progress=state.is_main, dtype=dtype, scaler=scaler)
        lr_scheduler.step()
        log = {"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()},
               "lr": optimizer.param_groups[0]["lr"], "lr_backbone": optimizer.param_groups[1]["lr"],
               "seconds": round(time.perf_counter() - started, 2)}
        if (epoch + 1) % args.eval_freq == 0 or epoch + 1 == args.epochs:
            # Every rank evaluates rank 0's network: DDP keeps the parameters in step, not the BatchNorm statistics.
            broadcast_buffers(model_without_ddp)
            counter = Counter(model_without_ddp, device=state.device, threshold=args.threshold)
            summary = evaluate(counter, loader_test, progress=state.is_main)
            log.update({f"test_{k}": v for k, v in summary.items() if k != "records"})
            if summary["mae"] < best["mae"]:
                best = {"mae": summary["mae"], "mse": summary["mse"], "epoch": epoch}
                if state.is_main:
                    save_checkpoint(output_dir / "best_mae.pth", model_without_ddp, settings, epoch=epoch,
                                    best=best, args=vars(args))
            say(f"epoch {epoch}: " + "; ".join(format_summary(summary)[-3:])
                + f" (best mae {best['mae']:.4f} at epoch {best['epoch']})")
            if writer is not None and settings.restoration and args.vis_images:
                log_restored(writer, counter, dataset_test, args.vis_images, epoch)
        if state.is_main:
            with signals_deferred():  # a stop after the write reports it as saved
                save_checkpoint(output_dir / "latest.pth", model_without_ddp, settings,
                                optimizer=optimizer.state_dict(), lr_scheduler=lr_scheduler.state_dict(), epoch=epoch,
                                best=best, rng=rng_state(), amp=amp, scaler=scaler.state_dict(), args=vars(args))
                progress["saved"] = epoch
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
    run_script(main)
