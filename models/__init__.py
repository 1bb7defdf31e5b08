"""Networks, losses and checkpoints. ``build_model(args)`` is the one place that reads arguments."""
from .checkpoint import build_from_checkpoint, load_model_state, read_checkpoint, save_checkpoint
from .counter import Counter, resolve_device
from .network import ModelSettings, PointCounter


def settings_from_args(args) -> ModelSettings:
    """Model settings from parsed command-line arguments."""
    return ModelSettings(row=args.row, line=args.line, input_norm=args.input_norm or "none",
                         restoration=bool(getattr(args, "restoration", False)))


def build_model(args) -> PointCounter:
    """A freshly initialised network as the arguments describe it."""
    return PointCounter(settings_from_args(args))


__all__ = ["Counter", "ModelSettings", "PointCounter", "build_model", "build_from_checkpoint",
           "load_model_state", "read_checkpoint", "resolve_device", "save_checkpoint", "settings_from_args"]
