"""VGG16-BN backbone split into the four stages that P2PNet reads."""
from pathlib import Path

import torch
from torch import nn

# Slices of torchvision's ``vgg16_bn().features``: each stage ends just before a max-pool, so the
# stages have strides 2, 4, 8 and 16.
STAGE_SLICES = ((0, 13), (13, 23), (23, 33), (33, 43))
STAGE_CHANNELS = (128, 256, 512, 512)
STAGE_STRIDES = (2, 4, 8, 16)
# VGG16's convolution widths, "M" a 2x2 max-pool: the layout of torchvision's ``vgg16_bn().features``
# (built here, so that inference does not import torchvision, which holds much memory).
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
IMAGENET_WEIGHTS_FILE = "vgg16_bn-6c64b313.pth"


def imagenet_weights_path(spec: str) -> Path:
    """The ImageNet VGG16-BN file that ``--backbone_weights`` names, or ``None`` for ``"none"``.

    ``"imagenet"`` takes torchvision's copy from its cache (``$TORCH_HOME/hub/checkpoints``) and downloads
    it there when missing; a failed download stops with a message saying how to provide the file.
    """
    if spec == "none":
        return None
    if spec != "imagenet":
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--backbone_weights {spec}: no such file (expected {IMAGENET_WEIGHTS_FILE}, "
                                    f"from {IMAGENET_WEIGHTS_URL})")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_WEIGHTS_FILE
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(IMAGENET_WEIGHTS_URL, str(cached), progress=True)
    except Exception as error:
        raise RuntimeError(
            f"the ImageNet VGG16-BN weights are not in torchvision's cache ({cached}) and could not be downloaded "
            f"({type(error).__name__}: {error}). Download {IMAGENET_WEIGHTS_URL} on a connected machine and pass "
            "--backbone_weights PATH (or copy it to the cache path above), or pass --backbone_weights none to "
            "train from scratch on purpose (expect much worse counts).") from None
    return cached


class VGG16BNBackbone(nn.Module):
    """VGG16 with batch normalisation, as four sequential stages ``body1`` .. ``body4``.

    Input: ``[B, 3, H, W]`` normalised images. Output: a list of four feature maps
    ``[B, 128, H/2, W/2]``, ``[B, 256, H/4, W/4]``, ``[B, 512, H/8, W/8]``, ``[B, 512, H/16, W/16]``
    (sizes floored by each max-pool).
    """

    def __init__(self):
        super().__init__()
        # Only the convolutional layers: torchvision's full vgg16_bn would also build (and initialise)
        # a 120 M-parameter classifier that is thrown away.
        features, channels = [], 3
        for width in VGG16_LAYOUT:
            if width == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            conv = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            features += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        # Re-numbering each stage from 0 gives the upstream state-dict keys (``body2.1.weight``).
        for index, (start, stop) in enumerate(STAGE_SLICES, start=1):
            setattr(self, f"body{index}", nn.Sequential(*features[start:stop]))

    def forward(self, images: torch.Tensor) -> list:
        stages = []
        features = images
        for body in (self.body1, self.body2, self.body3, self.body4):
            features = body(features)
            stages.append(features)
        return stages

    def load_imagenet_weights(self, path) -> None:
        """Load torchvision ``vgg16_bn`` ImageNet weights (``features.*`` keys) from a local file.

        ``path`` is a ``.pth`` state dict as torchvision distributes it (``vgg16_bn-6c64b313.pth``).
        Classifier keys are ignored; every ``features.*`` tensor the stages need must be present.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights not found: {path} (expected torchvision's vgg16_bn .pth file)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        renamed = {}
        for index, (start, stop) in enumerate(STAGE_SLICES, start=1):
            for key, value in state.items():
                if not key.startswith("features."):
                    continue
                layer, _, rest = key[len("features."):].partition(".")
                if layer.isdigit() and start <= int(layer) < stop:
                    value = value.float() if value.is_floating_point() else value
                    renamed[f"body{index}.{int(layer) - start}.{rest}"] = value
        expected = set(self.state_dict())
        missing = sorted(expected - set(renamed))
        if missing:
            raise KeyError(f"{path} is not a vgg16_bn state dict: missing {len(missing)} keys, e.g. {missing[:4]}")
        self.load_state_dict(renamed, strict=True)
