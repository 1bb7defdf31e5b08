"""The one command-line definition shared by ``train.py`` and ``run_test.py``."""
import argparse


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _probability(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], got {text}")
    return value


def _add_model_arguments(parser, script):
    group = parser.add_argument_group("model")
    stored = " (default: as stored in the checkpoint)" if script == "test" else ""
    group.add_argument("--input_norm", choices=["none", "imagenet"], default=None,
                       help="input normalisation: 'none' feeds [0,1] pixels (Dehaze-P2PNet); 'imagenet' uses "
                            "ImageNet mean/std, as original P2PNet checkpoints need" + stored)
    if script == "train":
        group.add_argument("--row", type=int, default=None,
                           help="anchor rows per stride-8 cell (default: 2, or as in --init_weights / --resume)")
        group.add_argument("--line", type=int, default=None,
                           help="anchor columns per stride-8 cell (default: 2, or as in --init_weights / --resume)")


def _add_runtime_arguments(parser, script):
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to run: auto picks CUDA when available")
    group.add_argument("--threshold", type=_probability, default=0.5,
                       help="a point counts as a person when its softmax score exceeds this")
    if script == "test":
        group.add_argument("--amp", action="store_true",
                           help="fast mode: bf16 autocast on CPUs that support it, bf16/fp16 on CUDA (several times "
                                "faster; counts may differ slightly from the exact fp32 default)")
    else:
        group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                           help="mixed-precision training: bf16 autocast on CUDA (fp16 with loss scaling on GPUs "
                                "without bf16) and on CPUs with native bf16 (elsewhere fp32, with a notice); "
                                "matching, losses and optimizer state stay fp32. Default: off for a new run, as "
                                "stored in the checkpoint for a resumed one")


def _add_data_arguments(parser, script):
    from crowd_datasets.registry import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--dataset_file", default=None, choices=list(DATASETS), metavar="NAME",
                       help="dataset to " + ("train on" if script == "train" else "evaluate") + ": "
                            + ", ".join(DATASETS))
    group.add_argument("--data_root", default=".",
                       help="folder holding datasets/<Name>/... images and (for upstream's lists) "
                            "crowd_datasets/<Name>/... list and annotation files")
    group.add_argument("--train_list", default=None, help="Custom dataset: training list file, relative to --data_root")
    group.add_argument("--test_list", default=None, help="Custom dataset: test list file, relative to --data_root")
    group.add_argument("--num_workers", type=int, default=2, help="data loading processes")


def _add_training_arguments(parser):
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
    group.add_argument("--epochs", type=int, default=3500, help="number of epochs")
    group.add_argument("--lr_drop", type=int, default=3500, help="divide learning rates by 10 after this many epochs")
    group.add_argument("--clip_max_norm", type=float, default=0.1, help="gradient clipping norm (0: off)")
    group.add_argument("--batch_size", type=int, default=8, help="images per step and process")
    group.add_argument("--num_crops", type=int, default=4, help="random crops per image")
    group.add_argument("--crop_size", type=int, default=None,
                       help="training crop in pixels (default: the dataset's, 96 for Hazy_JHU, else 128)")
    group.add_argument("--backbone_weights", default="imagenet",
                       help="VGG16-BN start: 'imagenet' (torchvision's weights from its local cache, downloaded "
                            "when online), a path to vgg16_bn-6c64b313.pth, or 'none' to train from scratch")
    group.add_argument("--seed", type=int, default=42, help="random seed (model, shuffling, augmentation)")

    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", default=None,
                       help="where latest.pth, best_mae.pth, log.txt and tensorboard logs go "
                            "(default: runs/<dataset_file>)")
    group.add_argument("--eval_freq", type=int, default=5, help="evaluate on the test split every N epochs")
    group.add_argument("--resume", default=None,
                       help="continue a run exactly from its training checkpoint (a latest.pth), or 'auto': from "
                            "<output_dir>/latest.pth when it exists, else start afresh (for job schedulers that "
                            "rerun the same command). The run keeps its data and network; other optimisation or "
                            "loss settings on the command line are used and listed")
    group.add_argument("--init_weights", default=None,
                       help="start a new run from the network weights of a checkpoint (a released one, a "
                            "best_mae.pth or a latest.pth; its optimizer state, epoch and best MAE are not used), "
                            "e.g. to fine-tune on another dataset. Replaces --backbone_weights")
    group.add_argument("--overwrite", action="store_true",
                       help="start a new run in an --output_dir that holds an earlier one, deleting its latest.pth, "
                            "best_mae.pth, log.txt and tensorboard/ (without it, such a folder stops train.py)")
    group.add_argument("--vis_images", type=int, default=2,
                       help="restored test images logged to tensorboard at each evaluation")


def build_parser(script: str) -> argparse.ArgumentParser:
    """Parser for ``script`` in {"train", "test"}; both share the model and runtime options."""
    if script not in ("train", "test"):
        raise ValueError(f"script must be 'train' or 'test', got {script!r}")
    description = {
        "test": "Count people with a trained checkpoint: in your own images (--input) or on a dataset's "
                "test split (--dataset_file), printing MAE/MSE and localization metrics.",
        "train": "Train the point counter, with the image restoration module on datasets that have clean pairs.",
    }[script]
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=_HelpFormatter)
    _add_model_arguments(parser, script)
    _add_runtime_arguments(parser, script)
    _add_data_arguments(parser, script)
    if script == "train":
        _add_training_arguments(parser)
    if script == "test":
        from inference import DEFAULT_MAX_PIXELS, DEFAULT_TILE_SIZE

        group = parser.add_argument_group("evaluation")
        group.add_argument("--weight_path", required=True,
                           help="checkpoint to evaluate: one written by train.py, a released Dehaze-P2PNet "
                                "checkpoint, an original P2PNet one (with --input_norm imagenet), or an .onnx "
                                "file from tools/export_onnx.py (run by onnxruntime)")
        group.add_argument("--input", default=None,
                           help="what to count people in: an image, a video file (mp4, avi, mkv, mov, ...), a "
                                "folder of images and videos, a camera index (0) or a stream URL (rtsp://...)")
        group.add_argument("--frame_stride", type=int, default=1,
                           help="with video input: count every N-th frame (cameras and streams: the newest "
                                "frame, at least N after the last one counted)")
        group.add_argument("--save_frame_points", action="store_true",
                           help="with video input and --output_dir: also write points/<frame>.csv for every "
                                "counted frame")
        group.add_argument("--output_dir", default=None,
                           help="with --input: where to write counts.csv, points/<stem>.csv and vis/<stem>.jpg "
                                "(for a video: counts.csv per frame and vis.mp4; a video in a folder writes "
                                "them to <its name>/); "
                                "with --dataset_file: per-image results (per_image.csv) and counts.png "
                                "(nothing is written when omitted)")
        group.add_argument("--tile_size", type=int, default=DEFAULT_TILE_SIZE,
                           help="pictures larger than this many pixels per side (a multiple of 128) run as "
                                "overlapping tiles, which bounds memory and gives the same points as the whole "
                                "picture; 0 never tiles")
        group.add_argument("--max_megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                           help="with --input: pictures whose file declares more pixels (millions) are skipped "
                                "before decoding, as a tiny file can declare a picture that needs gigabytes")
        group.add_argument("--save_restored", action="store_true",
                           help="with --input and a checkpoint that carries the restoration module: also write "
                                "restored/<stem>.jpg, the scene as the model sees it without the weather")
    return parser


def dataset_options(args, split: str) -> dict:
    """Keyword arguments of ``crowd_datasets.build_dataset`` for ``split`` from parsed arguments (the
    restoration decision, ``use_clean``, is the caller's)."""
    options = {"data_root": args.data_root, "list_path": getattr(args, f"{split}_list")}
    if split == "train":
        options.update(crop_size=args.crop_size, num_crops=args.num_crops, seed=args.seed)
    return options


def network_flags(args) -> dict:
    """The network-shape flags (``row``, ``line``, ``input_norm``) given on the command line."""
    return {name: getattr(args, name) for name in ("row", "line", "input_norm") if getattr(args, name) is not None}


def criterion_options(args) -> dict:
    """Keyword arguments of ``models.build_criterion`` from parsed training arguments."""
    return {name: getattr(args, name) for name in
            ("set_cost_class", "set_cost_point", "eos_coef", "point_loss_coef", "sr_loss_coef", "sr_loss")}
