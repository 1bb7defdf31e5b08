"""The command line the scripts share: argument groups and the argparse types that need the domain (the
others are ``util.values``'), so that a bad value is one usage line naming its flag. Each script builds its
own parser from them (``train.build_parser``, ``run_test.build_parser``, ``serve.build_parser``) and turns
the parsed arguments into the explicit values the builders take (``dataset_options``, ``criterion_options``,
``network_flags``, ``counter_options``, ``counting_options``)."""
import argparse

from crowd_datasets.decoding_limit import MAX_DECODED_PIXELS
from crowd_datasets.registry import ALIASES, DATASETS, canonical_name
from inference import DEFAULT_MAX_PIXELS, DEFAULT_TILE_SIZE, check_tile_size
from inference.job import CountingOptions
from inference.zones import read_polygons
from util.values import at_least, positive_float, probability


def megapixels(text: str) -> float:
    """An argparse type: a positive number of megapixels, at most ``MAX_DECODED_PIXELS`` / 1e6 (268.4), the most
    OpenCV is let decode here (``crowd_datasets.decoding_limit``): a larger limit could never be reached."""
    value = positive_float(text)
    if value > MAX_DECODED_PIXELS / 1e6:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DECODED_PIXELS / 1e6} (the most megapixels OpenCV "
                                         f"decodes here), got {text}")
    return value


def tile_size(text: str) -> int:
    """An argparse type: 0 or a positive multiple of ``inference.PAD_MULTIPLE`` (``check_tile_size``)."""
    try:
        return check_tile_size(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("tile_size ")) from None


def add_input_norm_argument(parser, default_help: str) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--input_norm", choices=["none", "imagenet"], default=None,
                       help="input normalisation: 'none' feeds [0,1] pixels (Dehaze-P2PNet); 'imagenet' uses "
                            "ImageNet mean/std, as original P2PNet checkpoints need" + default_help)
    return group


def add_runtime_arguments(parser):
    """``--device`` and ``--threshold``; returns the group, where each script adds its own ``--amp``."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to run: auto picks CUDA when available")
    group.add_argument("--threshold", type=probability, default=0.5,
                       help="a point counts as a person when its softmax score exceeds this")
    return group


def add_counting_arguments(group) -> None:
    """``--amp``, ``--tile_size`` and ``--max_megapixels``: how ``run_test.py`` and ``serve.py`` count pictures;
    added to ``group`` (the runtime group of ``add_runtime_arguments``)."""
    group.add_argument("--amp", action="store_true",
                       help="fast mode: bf16 autocast on CPUs that support it, bf16/fp16 on CUDA (several times "
                            "faster; counts may differ slightly from the exact fp32 default)")
    group.add_argument("--tile_size", type=tile_size, default=DEFAULT_TILE_SIZE,
                       help="pictures larger than this many pixels per side (a multiple of 128) run as "
                            "overlapping tiles, which bounds memory and gives the same points as the whole "
                            "picture; 0 never tiles")
    group.add_argument("--max_megapixels", type=megapixels, default=DEFAULT_MAX_PIXELS / 1e6,
                       help="pictures whose file declares more pixels (millions, at most "
                            f"{MAX_DECODED_PIXELS / 1e6}) are refused before decoding, as a tiny file can declare "
                            "a picture that needs gigabytes")


def counter_options(args) -> dict:
    """Keyword arguments of ``inference.Counter.from_checkpoint`` from the runtime and counting flags."""
    return {"threshold": args.threshold, "input_norm": args.input_norm, "amp": args.amp,
            "max_pixels": int(args.max_megapixels * 1e6), "tile_size": args.tile_size}


def add_data_arguments(parser, purpose: str):
    """The dataset flags; ``purpose`` completes "dataset to ..." in the help."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset_file", default=None, type=canonical_name, choices=list(DATASETS), metavar="NAME",
                       help=f"dataset to {purpose}: " + ", ".join(DATASETS) + " (also "
                            + ", ".join(f"{alias} for {name}" for alias, name in ALIASES.items())
                            + ", as the released checkpoints spell them)")
    group.add_argument("--data_root", default=".",
                       help="folder holding datasets/<Name>/... images and (for upstream's lists) "
                            "crowd_datasets/<Name>/... list and annotation files")
    group.add_argument("--train_list", default=None, help="Custom dataset: training list file, relative to --data_root")
    group.add_argument("--test_list", default=None, help="Custom dataset: test list file, relative to --data_root")
    group.add_argument("--num_workers", type=at_least(0), default=2, help="data loading processes")
    return group


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


def counting_options(args) -> CountingOptions:
    """The ``inference.CountingOptions`` that ``run_test.py``'s flags describe, with the ``--zones`` and
    ``--exclude`` files read and checked (``ValueError`` or ``OSError`` naming the file)."""
    return CountingOptions(threshold=args.threshold, zones=read_polygons(args.zones) if args.zones else {},
                           exclusions=read_polygons(args.exclude) if args.exclude else {},
                           restore=args.save_restored, density=args.save_density, density_sigma=args.density_sigma,
                           frame_stride=args.frame_stride, frame_points=args.save_frame_points,
                           points_json=args.save_points_json, reconnect=args.reconnect)
