"""Networks, losses and checkpoints: what training needs (counting with a trained network is in
``inference``). The ``build_*`` functions take explicit values; only the scripts read
arguments (``options`` turns them into those values)."""
from .backbone import imagenet_weights_path
from .checkpoint import build_from_checkpoint, load_model_state, read_checkpoint, save_checkpoint, start_from_checkpoint
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .network import ModelSettings, PointCounter


def build_model(settings: ModelSettings, backbone_weights: str, log=print) -> PointCounter:
    """A new network with ``settings``, its VGG16-BN backbone started from ``backbone_weights``:
    ``"imagenet"`` (torchvision's weights), a path to them, or ``"none"`` (random initialisation)."""
    model = PointCounter(settings)
    path = imagenet_weights_path(backbone_weights)
    if path is not None:
        model.backbone.load_imagenet_weights(path)
        log(f"backbone: ImageNet VGG16-BN weights from {path}")
    else:
        log("backbone: random initialisation (--backbone_weights none)")
    return model


def build_criterion(*, set_cost_class: float, set_cost_point: float, eos_coef: float, point_loss_coef: float,
                    sr_loss_coef: float, sr_loss: str) -> SetCriterion:
    """Hungarian matcher (costs per unit of person score and per pixel) and the weighted losses."""
    matcher = HungarianMatcher(cost_class=set_cost_class, cost_point=set_cost_point)
    return SetCriterion(matcher, eos_coef=eos_coef, point_loss_coef=point_loss_coef, sr_loss_coef=sr_loss_coef,
                        sr_loss=sr_loss)


__all__ = ["HungarianMatcher", "ModelSettings", "PointCounter", "SetCriterion", "build_criterion",
           "build_from_checkpoint", "build_model", "load_model_state", "read_checkpoint", "save_checkpoint",
           "start_from_checkpoint"]


def __getattr__(name: str):
    # ``from models import Counter`` is how code written for the earlier layout (and the design's interface)
    # reaches the prediction path, which now lives in ``inference`` (a package that builds on this one, so
    # this one cannot import it while it loads).
    if name == "Counter":
        from inference import Counter

        return Counter
    raise AttributeError(f"module 'models' has no attribute {name!r}")
