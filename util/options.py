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
        group.add_argument("--row", type=int, default=2, help="anchor rows per stride-8 cell")
        group.add_argument("--line", type=int, default=2, help="anchor columns per stride-8 cell")


def _add_runtime_arguments(parser):
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to run: auto picks CUDA when available")
    group.add_argument("--threshold", type=_probability, default=0.5,
                       help="a point counts as a person when its softmax score exceeds this")


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
    _add_runtime_arguments(parser)
    _add_data_arguments(parser, script)
    if script == "test":
        group = parser.add_argument_group("evaluation")
        group.add_argument("--weight_path", required=True,
                           help="checkpoint to evaluate: one written by train.py, a released Dehaze-P2PNet "
                                "checkpoint or an original P2PNet one (with --input_norm imagenet)")
        group.add_argument("--input", default=None,
                           help="an image file or a folder of images to count people in")
        group.add_argument("--output_dir", default=None,
                           help="with --input: where to write counts.csv, points/<stem>.csv and vis/<stem>.jpg; "
                                "with --dataset_file: per-image results (per_image.csv) and counts.png "
                                "(nothing is written when omitted)")
    return parser
