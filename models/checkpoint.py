"""The one checkpoint save/load pair: safe loading, strict key checks, atomic writes."""
import argparse
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from util.signals import signals_deferred

from .network import ModelSettings, PointCounter

# Upstream keys whose tensors never reach an output or a loss (docs/design.md, "Contracts"), and the upstream
# restoration module, whose code was never published.
DEAD_KEY_PREFIXES = ("fpn.P5_2.", "fpn.P3_1.", "fpn.P3_2.", "regression.conv3.", "regression.conv4.",
                     "classification.conv3.", "classification.conv4.", "restormer.")
FORMAT = "dehaze-p2pnet"
# What a checkpoint needs for --resume to continue its run (train.py writes them into latest.pth).
TRAINING_STATE_KEYS = ("optimizer", "lr_scheduler", "epoch", "best", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def read_checkpoint(path) -> dict:
    """Read a checkpoint file without executing anything in it.

    Returns the top-level dict. A bare state dict (tensors at the top level) is wrapped as
    ``{"model": state}``. Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` for a
    file that holds pickled Python objects (refused, never run) or is not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # argparse.Namespace is plain data that DETR-style training scripts store; allowing it
        # lets such checkpoints load while every other object stays refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load, it contains pickled Python objects that could run code "
            f"(torch.load weights_only=True said: {str(error).splitlines()[0]}). Nothing in it was executed. "
            "If you trust the file, re-save only its tensors: torch.save({'model': state_dict}, new_path)."
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a dict with key 'model', got {type(content).__name__}")
    if "model" not in content:
        if content and all(isinstance(value, torch.Tensor) for value in content.values()):
            return {"model": content}
        raise CheckpointError(f"{path}: no 'model' key (keys: {sorted(content)[:8]})")
    return content


def read_training_checkpoint(path) -> dict:
    """A checkpoint that ``--resume`` can continue: one ``train.py`` wrote as ``latest.pth``."""
    content = read_checkpoint(path)
    missing = [key for key in TRAINING_STATE_KEYS if key not in content]
    if missing:
        raise CheckpointError(
            f"--resume {path}: not a training checkpoint (it has no {', '.join(missing)}); --resume continues a run "
            "from the latest.pth that train.py writes. To start a new run from the network of best_mae.pth or of "
            f"released weights, use --init_weights {path}")
    return content


def model_settings(content: dict, input_norm: str = None) -> ModelSettings:
    """Settings stored in a checkpoint this project wrote, or inferred for a foreign one.

    Foreign checkpoints carry no settings: anchors per cell come from the head's output shape, the
    restoration module is left out, and ``input_norm`` defaults to ``"none"`` (Dehaze-P2PNet). An
    explicit ``input_norm`` overrides what is stored.
    """
    if "settings" in content:
        settings = ModelSettings.from_dict(dict(content["settings"]))
    else:
        weight = without_module_prefix(content["model"]).get("classification.output.weight")
        settings = ModelSettings()
        if weight is not None and weight.shape[0] != 2 * settings.row * settings.line:
            side = int(round((weight.shape[0] // 2) ** 0.5))
            if side * side * 2 != weight.shape[0]:
                raise CheckpointError(f"cannot infer anchors per cell from classification.output.weight "
                                      f"{tuple(weight.shape)}; expected 2 * row * line output channels")
            settings = ModelSettings(row=side, line=side)
    if input_norm is not None:
        settings.input_norm = input_norm
        settings.__post_init__()
    return settings


def without_module_prefix(state: dict) -> dict:
    """``state`` with the ``module.`` prefix of a model saved inside DistributedDataParallel removed, when
    every key has it (as upstream's DDP-saved checkpoints do)."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return state


def load_model_state(model: torch.nn.Module, state: dict, source="checkpoint", log=print) -> None:
    """Load ``state`` into ``model`` strictly.

    Known dead upstream keys are dropped with one line saying so; a ``module.`` prefix (a model saved
    inside DistributedDataParallel) is removed; half-precision tensors are cast to the model's dtype.
    Any other missing, unexpected or mis-shaped key raises ``CheckpointError`` naming the keys.
    """
    state = without_module_prefix(state)
    dropped = sorted(key for key in state if key.startswith(DEAD_KEY_PREFIXES))
    if dropped:
        groups = sorted({"restormer" if key.startswith("restormer.") else key.rsplit(".", 1)[0] for key in dropped})
        log(f"{source}: dropped {len(dropped)} unused upstream tensors ({', '.join(groups)})")
    state = {key: value for key, value in state.items() if key not in dropped}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
                         for key in set(state) & set(expected) if state[key].shape != expected[key].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if wrong_shape:
        problems.append(f"wrong shapes (checkpoint != model): {wrong_shape}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(problems))
    converted = {key: value.to(expected[key].dtype) if value.is_floating_point() else value
                 for key, value in state.items()}
    model.load_state_dict(converted, strict=True)


def save_checkpoint(path, model: torch.nn.Module, settings: ModelSettings, **extra) -> None:
    """Write ``{"format", "settings", "model", **extra}`` to ``path`` atomically.

    The file is written to a temporary sibling and renamed over ``path``, so a crash midway leaves any
    previous file at ``path`` intact; temporaries left by a killed writer are removed. Ctrl-C and
    SIGTERM take effect once the file is complete (``signals_deferred``). ``extra`` holds
    plain data and tensors only (optimizer state, epoch, metrics, RNG states) so the file loads with
    ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A process killed midway (SIGKILL, power loss) cannot remove its temporary file; the next write does.
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    content = {"format": FORMAT, "settings": settings.to_dict(), "model": model.state_dict(), **extra}
    with signals_deferred():
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(content, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            if os.path.exists(temporary):
                os.unlink(temporary)
            if isinstance(error, (OSError, RuntimeError)):
                # A full disk surfaces from torch.save as "enforce fail at inline_container.cc … unexpected pos".
                free = shutil.disk_usage(path.parent).free
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise CheckpointError(f"could not write {path} ({reason}); {free / 1e6:.0f} MB are free on its "
                                      f"disk, which may be full; any earlier {path.name} is unchanged") from error
            raise


def build_from_checkpoint(path, input_norm: str = None, log=None):
    """Rebuild the network a checkpoint describes and load its weights strictly.

    ``path`` is a file or a released checkpoint's name (``models.releases``, downloaded on first use).
    Returns ``(model, settings, content)``; the model is on CPU in eval mode.
    """
    from .releases import resolve_checkpoint  # here: releases.py imports this module to read its downloads

    log = log or (lambda message: print(message, file=sys.stderr))
    path = resolve_checkpoint(path, log=log)
    content = read_checkpoint(path)
    settings = model_settings(content, input_norm)
    model = PointCounter(settings)
    load_model_state(model, content["model"], source=str(path), log=log)
    return model.eval(), settings, content


def start_from_checkpoint(path, restoration: bool, network_flags: dict, log=print):
    """A new training run's network, started from the weights of the checkpoint at ``path`` (one
    ``train.py`` wrote, a released one, also by name, or an original P2PNet one): ``--init_weights``.

    Anchors per cell and input normalisation come from the checkpoint; ``network_flags`` (``row``,
    ``line``, ``input_norm`` given on the command line) may set ``input_norm`` (foreign checkpoints
    do not store it) but must agree on the anchors, or ``ValueError`` names the flag. With
    ``restoration`` the module is loaded from the checkpoint when it carries one and starts afresh
    when not; without, a carried module is left out. Returns the model on CPU in training mode.
    """
    from .releases import resolve_checkpoint  # here: releases.py imports this module to read its downloads

    path = resolve_checkpoint(path, log=log)
    content = read_checkpoint(path)
    stored = model_settings(content, network_flags.get("input_norm"))
    for name in ("row", "line"):
        if name in network_flags and network_flags[name] != getattr(stored, name):
            raise ValueError(f"--{name} {network_flags[name]}: --init_weights {path} has {name} "
                             f"{getattr(stored, name)} (its heads are shaped for {stored.row} x {stored.line} "
                             "anchors per cell); drop the flag")
    model = PointCounter(ModelSettings(row=stored.row, line=stored.line, input_norm=stored.input_norm,
                                       restoration=restoration))
    state = without_module_prefix(content["model"])
    carried = {key: value for key, value in state.items() if key.startswith("restoration.")}
    state = {key: value for key, value in state.items() if key not in carried}
    if restoration and carried:
        state.update(carried)
    elif restoration:
        state.update((key, value) for key, value in model.state_dict().items() if key.startswith("restoration."))
        log(f"--init_weights {path}: carries no restoration module; it starts afresh")
    elif carried:
        log(f"--init_weights {path}: its restoration module is left out (restoration off)")
    load_model_state(model, state, source=f"--init_weights {path}", log=log)
    log(f"network: weights from {path}"
        + (f" (epoch {content['epoch']})" if isinstance(content.get("epoch"), int) else "")
        + "; a new run: optimizer, epochs and best MAE start afresh")
    return model.train()
