"""Networks, losses and checkpoints. The ``build_*`` functions are the only code here that reads arguments."""
from .checkpoint import build_from_checkpoint, load_model_state, read_checkpoint, save_checkpoint
from .counter import Counter, resolve_device
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .network import ModelSettings, PointCounter


def settings_from_args(args) -> ModelSettings:
    """Model settings from parsed command-line arguments."""
    return ModelSettings(row=args.row, line=args.line, input_norm=args.input_norm or "none",
                         restoration=bool(getattr(args, "restoration", False)))


def build_model(args, log=print) -> PointCounter:
    """A new network as the arguments describe it, its backbone loaded from ``--backbone_weights``."""
    from .backbone import imagenet_weights_path

    model = PointCounter(settings_from_args(args))
    path = imagenet_weights_path(getattr(args, "backbone_weights", "none"))
    if path is not None:
        model.backbone.load_imagenet_weights(path)
        log(f"backbone: ImageNet VGG16-BN weights from {path}")
    else:
        log("backbone: random initialisation (--backbone_weights none)")
    return model


def build_criterion(args) -> SetCriterion:
    """Hungarian matcher and weighted losses as the arguments describe them."""
    matcher = HungarianMatcher(cost_class=args.set_cost_class, cost_point=args.set_cost_point)
    return SetCriterion(matcher, eos_coef=args.eos_coef, point_loss_coef=args.point_loss_coef,
                        sr_loss_coef=args.sr_loss_coef, sr_loss=args.sr_loss)


__all__ = ["Counter", "HungarianMatcher", "ModelSettings", "PointCounter", "SetCriterion", "build_criterion",
           "build_from_checkpoint", "build_model", "load_model_state", "read_checkpoint", "resolve_device",
           "save_checkpoint", "settings_from_args"]
