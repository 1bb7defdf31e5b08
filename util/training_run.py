"""What a training run may do with its folder and with the checkpoint it starts from: the run-folder
rules, the resume rules and the one restoration decision. ``train.py`` wires them; each raises
``ValueError`` (or ``RunFolderError``) with a one-line message for a user's mistake."""
import shutil
from pathlib import Path

from util.script import check_output_dir

# The files a run writes into --output_dir; a folder holding any of them holds a run.
RUN_FILES = ("latest.pth", "best_mae.pth", "log.txt", "tensorboard")
# Settings of the data a run trains and is evaluated on: a resumed run keeps them.
DATA_SETTINGS = ("dataset_file", "train_list", "test_list")
# Settings a resumed run takes from the command line although they change what it computes: any that
# differ from the saved run are listed, because the run then no longer matches an uninterrupted one.
TRAINING_SETTINGS = ("lr", "lr_backbone", "weight_decay", "lr_drop", "clip_max_norm", "batch_size", "num_crops",
                     "crop_size", "seed", "set_cost_class", "set_cost_point", "point_loss_coef", "eos_coef",
                     "sr_loss_coef", "sr_loss")
NETWORK_FLAGS = ("row", "line", "input_norm")


class RunFolderError(ValueError):
    """``--output_dir`` cannot take this run; the message says why and what to do instead."""


def resolve_resume(resume, output_dir: Path, overwrite: bool):
    """The checkpoint to continue from (``None``: a new run), after checking that the run cannot
    replace the files of another one in ``output_dir``.

    ``resume`` is ``None``, a path, or ``"auto"`` (``output_dir/latest.pth`` when it exists, else a new
    run; a folder whose run never finished an epoch, without checkpoints, may then be reused).
    A new run into a folder holding a run needs ``overwrite``, and so does continuing a run from a
    checkpoint outside ``output_dir`` into such a folder. Raises ``RunFolderError``, or ``ValueError``
    for a folder that cannot be written (see ``util.script.check_output_dir``).
    """
    check_output_dir(output_dir, ("tensorboard",))
    present = [name for name in RUN_FILES if (output_dir / name).exists()]
    if resume == "auto":
        if (output_dir / "latest.pth").is_file():
            return output_dir / "latest.pth"
        resume = None
        present = [name for name in present if name.endswith(".pth")]
    resume = Path(resume) if resume else None
    if present and not is_own_folder(resume, output_dir) and not overwrite:
        raise RunFolderError(
            f"--output_dir {output_dir} already holds a run ({', '.join(present)}); nothing was changed. Continue it "
            f"with --resume auto (or --resume {output_dir / 'latest.pth'}), choose a new --output_dir, or pass "
            "--overwrite to delete those files and start afresh")
    return resume


def is_own_folder(checkpoint, output_dir: Path) -> bool:
    """Whether ``checkpoint`` (a path or ``None``) lies in ``output_dir``: the run continues in its own folder."""
    return checkpoint is not None and Path(checkpoint).resolve().parent == output_dir.resolve()


def clear_run_files(output_dir: Path) -> None:
    """Delete what an earlier run wrote into ``output_dir`` (``--overwrite``)."""
    for name in RUN_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_resumable(path: Path, saved: dict, current: dict, network_flags: dict, settings) -> list:
    """Check that a run saved with settings ``saved`` (its ``args``) can continue with ``current`` (this
    command's); return the ``TRAINING_SETTINGS`` that differ, as ``["--lr 0.001 (was 0.0001)", …]``.

    A resumed run keeps its data and its network: another dataset or list, or a ``network_flags``
    value (``--row``, ``--line``, ``--input_norm`` given on this command line) other than the
    checkpoint's ``settings`` (a ``models.ModelSettings``), raises ``ValueError`` naming the flag and
    the way to start a new run instead.
    """
    for name in DATA_SETTINGS:
        if name in saved and saved[name] != current[name]:
            raise ValueError(f"--resume {path}: that run trains with --{name} {saved[name]}, not {current[name]}; "
                             f"a resumed run keeps its data. To train on other data from its network, start a new "
                             f"run with --init_weights {path}")
    for name, value in network_flags.items():
        if getattr(settings, name) != value:
            raise ValueError(f"--{name} {value}: the resumed network has {name} {getattr(settings, name)} and a "
                             "resumed run keeps its network; drop the flag")
    return [f"--{name} {current[name]} (was {saved[name]})" for name in TRAINING_SETTINGS
            if name in saved and saved[name] != current[name]]


def decide_restoration(requested, clean_pairs: int, images: int, resumed=None) -> tuple:
    """Whether the restoration module trains, decided once: ``(on, line to print)``.

    ``requested`` is the flag (``True``, ``False`` or ``None`` for automatic), ``clean_pairs`` of
    ``images`` training images have a clean pair, ``resumed`` is the resumed checkpoint's setting
    (``None`` for a new run). The module needs a clean pair for every image. A resumed run keeps the
    checkpoint's setting. Raises ``ValueError`` for a flag or a dataset that contradicts it.
    """
    pairs = f"{clean_pairs} of {images} training images have a clean HR/ pair"
    if resumed is not None:
        if requested is not None and requested != resumed:
            raise ValueError(f"--{'' if requested else 'no-'}restoration: the resumed checkpoint was trained "
                             f"{'with' if resumed else 'without'} the restoration module and a resumed run keeps "
                             "that; drop the flag")
        if resumed and clean_pairs < images:
            raise ValueError(f"the resumed checkpoint trains the restoration module, which needs a clean pair for "
                             f"every training image, but only {pairs}")
        return resumed, f"restoration module {'on' if resumed else 'off'} (as in the resumed checkpoint)"
    if requested is False:
        return False, "restoration module off (--no-restoration)"
    if images and clean_pairs == images:
        return True, f"restoration module on: {pairs}"
    if requested:
        raise ValueError(f"--restoration needs a clean pair (HR/<name> beside images/) for every training image, "
                         f"but only {pairs}")
    return False, f"restoration module off: {pairs} (it needs all)"
