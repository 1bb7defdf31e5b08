"""The point counter: VGG16-BN backbone, the live part of the FPN, regression and classification heads."""
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import anchor_points
from .backbone import STAGE_CHANNELS, VGG16BNBackbone
from .restoration import RestorationModule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS = ("none", "imagenet")
FEATURE_STRIDE = 8


def normalisation(input_norm: str) -> tuple:
    """``(mean, std)``, three floats each, that the network applies to [0, 1] pixels for ``input_norm``."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
    return (IMAGENET_MEAN, IMAGENET_STD) if input_norm == "imagenet" else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass
class ModelSettings:
    """Everything needed to rebuild a network; stored in every checkpoint this project writes.

    ``row`` x ``line`` anchors per stride-8 cell; ``input_norm`` is ``"none"`` (pixels in [0, 1], as
    Dehaze-P2PNet) or ``"imagenet"`` (mean/std, as the original P2PNet); ``restoration`` attaches the
    train-only image restoration module.
    """

    row: int = 2
    line: int = 2
    input_norm: str = "none"
    restoration: bool = False

    def __post_init__(self):
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.row < 1 or self.line < 1:
            raise ValueError(f"row and line must be >= 1, got row={self.row} line={self.line}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown model settings {unknown}; known: {sorted(known)}")
        return cls(**values)


class FeaturePyramid(nn.Module):
    """Top-down fusion of stages 3 and 4 into one 256-channel stride-8 map.

    ``P5_1`` (1x1 on stage 4) is upsampled x2 (nearest) and added to ``P4_1`` (1x1 on stage 3), then
    ``P4_2`` (3x3) smooths the sum. Upstream's other branches never reach an output and are not built.
    """

    def __init__(self, stage3_channels: int, stage4_channels: int, channels: int = 256):
        super().__init__()
        self.P5_1 = nn.Conv2d(stage4_channels, channels, kernel_size=1)
        self.P4_1 = nn.Conv2d(stage3_channels, channels, kernel_size=1)
        self.P4_2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, stage3: torch.Tensor, stage4: torch.Tensor) -> torch.Tensor:
        top_down = F.interpolate(self.P5_1(stage4), scale_factor=2, mode="nearest")
        return self.P4_2(self.P4_1(stage3) + top_down)


class PointHead(nn.Module):
    """Two 3x3 conv + ReLU, then a 3x3 ``output`` conv with ``anchors_per_cell * 2`` channels.

    Input ``[B, C, h, w]``; output ``[B, h * w * anchors_per_cell, 2]`` in anchor order (cell-major,
    then anchor within cell). Used for both the point offsets and the (background, person) logits.
    """

    def __init__(self, in_channels: int, anchors_per_cell: int, channels: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.output = nn.Conv2d(channels, anchors_per_cell * 2, kernel_size=3, padding=1)
        # A module, not F.relu, so that inference can fold it into the convolutions before it.
        self.activation = nn.ReLU(inplace=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.conv2(self.activation(self.conv1(features))))
        out = self.output(hidden).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, 2)


class PointCounter(nn.Module):
    """P2PNet-style point counter, optionally with the train-only restoration module.

    Input: ``[B, 3, H, W]`` float images with pixels in [0, 1]; H and W multiples of 16. The network
    normalises them itself according to ``settings.input_norm``.
    Output dict: ``pred_logits [B, A, 2]`` (index 1 = person), ``pred_points [B, A, 2]`` ``(x, y)`` in
    input pixels, with ``A = (H/8) * (W/8) * row * line``; plus ``pred_restored [B, 3, H, W]`` in [0, 1]
    when the restoration module exists and the model is training or ``restore=True`` is passed.
    """

    def __init__(self, settings: ModelSettings = None):
        super().__init__()
        self.settings = settings or ModelSettings()
        anchors_per_cell = self.settings.row * self.settings.line
        self.backbone = VGG16BNBackbone()
        self.fpn = FeaturePyramid(STAGE_CHANNELS[2], STAGE_CHANNELS[3])
        self.regression = PointHead(256, anchors_per_cell)
        self.classification = PointHead(256, anchors_per_cell)
        self.restoration = None
        if self.settings.restoration:
            self.restoration = RestorationModule(stage_channels=STAGE_CHANNELS[:3])
        mean, std = normalisation(self.settings.input_norm)
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def padding_fill(self) -> torch.Tensor:
        """Per-channel value ``[3]`` to pad [0, 1] images with so that padding is exactly zero after
        normalisation, as upstream pads its already-normalised tensors with zeros."""
        return self.input_mean.view(3)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` pixels in [0, 1] -> the backbone's input (``settings.input_norm``)."""
        if self.settings.input_norm == "none":
            return images
        return (images - self.input_mean) / self.input_std

    def decode(self, stage3: torch.Tensor, stage4: torch.Tensor) -> dict:
        """FPN and heads on the stride-8 and stride-16 backbone stages: ``pred_logits [B, A, 2]`` and
        ``pred_points [B, A, 2]`` (``x, y`` pixels of the input whose stages these are)."""
        return self.heads(self.fpn(stage3, stage4))

    def heads(self, features: torch.Tensor) -> dict:
        """The point and score heads on the FPN's stride-8 ``features [B, 256, h, w]``: the outputs of
        ``decode``, with anchors at the centres of the stride-8 cells' sub-grid."""
        offsets = self.regression(features) * 100
        logits = self.classification(features)
        anchors = anchor_points(features.shape[-2], features.shape[-1], FEATURE_STRIDE,
                                self.settings.row, self.settings.line, device=features.device)
        return {"pred_logits": logits, "pred_points": offsets + anchors}

    def forward(self, images: torch.Tensor, restore: bool = False) -> dict:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % 16 or width % 16:
            raise ValueError(f"image height and width must be multiples of 16, got {height}x{width}; "
                             "pad them first (see inference.Counter)")
        stages = self.backbone(self.normalise(images))
        outputs = self.decode(stages[2], stages[3])
        if self.restoration is not None and (self.training or restore):
            outputs["pred_restored"] = self.restoration(stages[:3], (height, width))
        return outputs
