"""The network as inference runs it: BatchNorm folded into the convolutions, channels-last memory, the
first two backbone stages computed block by block, and in fast mode (``amp``) autocast.

Exact mode (the default, ``amp=False``) stays in fp32: folding, channels-last and blocks only change
the order of summation, so outputs stay within the parity tolerances of the upstream network (see
``tools/parity.py``); on CUDA cuDNN is kept from TF32 (``precision.ieee_fp32_convolutions``). Fast
mode computes in bf16 (CPUs with native bf16, recent GPUs) or fp16 (older GPUs), with the heads'
output convolutions in fp32 (``FullPrecision``).
"""
import contextlib
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .network import PointCounter
from .precision import autocast_context, ieee_fp32_convolutions
from .tiling import plan_tiles

# Stages 1 and 2 (strides 2 and 4) hold most of the activation memory of a forward pass: the two
# 64-channel full-resolution convs alone need 512 bytes per input pixel. They and the max-pool that
# follows them run on blocks of at most EARLY_BLOCK pixels per side, and only the pooled stride-8 map
# (64 bytes per input pixel) is put together. Each block's window adds EARLY_HALO pixels on inner
# sides: the pooled map's receptive field is 44 px (a stride-8 cell reads 18 px beyond its edge),
# rounded up to the stride-8 grid that keeps the three max-pools aligned with the whole image's.
EARLY_BLOCK = 512
EARLY_HALO = 24
EARLY_ALIGN = 16


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``Conv2d`` directly followed by a ``BatchNorm2d``
    (inside an ``nn.Sequential``, as in the VGG16-BN backbone) folded into one ``Conv2d``.

    The folded conv computes ``bn(conv(x))`` with the BatchNorm running statistics, so fp32 outputs
    match the original to rounding (about 1e-6 on logits); the BatchNorm layers become
    ``nn.Identity``. ``model`` itself is not changed. The copy must not be trained.
    """
    fused = copy.deepcopy(model).eval()
    pairs = 0
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
                pairs += 1
    fused.fused_batchnorm_pairs = pairs
    return fused


class FullPrecision(nn.Module):
    """Run ``module`` in fp32 even inside autocast; float ``[B, C, h, w]`` in, float32 out.

    Used for the heads' ``output`` convs, because the regression output is multiplied by 100: any
    rounding there is magnified into pixels. Measured with CPU bf16 on A_IMG_160 (reference checkpoint
    with its output convs scaled x30, so that offsets reach 118 px): the largest point error is 0.99 px
    with these convs in bf16 and 0.84 px in fp32; with the reference's own offsets (up to 4 px) both
    stay under 0.04 px. The two convs are ~0.2 % of the FLOPs; keeping them in fp32 costs ~1 %.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return self.module(features.float())


class InferenceNetwork(nn.Module):
    """Inference-only form of a ``PointCounter`` (which is not changed), on ``device``.

    ``forward(images [1, 3, H, W] float pixels in [0, 1], H and W multiples of 16, restore=False)``
    returns the ``PointCounter``'s outputs as float32: ``pred_logits [1, A, 2]``, ``pred_points [1, A,
    2]`` ``(x, y)`` pixels of ``images``, and with ``restore`` ``pred_restored [1, 3, H, W]``.
    Attributes: ``settings`` (the ``ModelSettings``), ``amp`` (fast mode), ``padding_fill`` (``[3]``,
    the pixel value that normalises to zero, for padding) and ``has_restoration``.
    """

    def __init__(self, model: PointCounter, device="cpu", amp: bool = False):
        super().__init__()
        network = fuse_batchnorm(model)
        for head in (network.regression, network.classification):
            head.output = FullPrecision(head.output)
        self.network = network.to(device=torch.device(device), memory_format=torch.channels_last)
        self.settings = network.settings
        self.amp = amp
        self.has_restoration = network.restoration is not None
        self.register_buffer("padding_fill", self.network.padding_fill.clone(), persistent=False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("InferenceNetwork is for inference only (its BatchNorm is folded into the "
                               "convolutions); train the original PointCounter instead")
        return super().train(False)

    def precision(self, device: torch.device):
        """The context the forward pass runs in: autocast in fast mode, else plain (IEEE) fp32."""
        if self.amp:
            return autocast_context(device)
        return ieee_fp32_convolutions() if device.type == "cuda" else contextlib.nullcontext()

    def early_stages(self, images: torch.Tensor, restore: bool) -> list:
        """Backbone stages 1 and 2 of ``images`` and stage 2 max-pooled (the start of stage 3), computed
        on blocks (see ``EARLY_BLOCK``) and put together as the whole image would give them:
        ``[stage1, stage2, pooled]``, the first two only with ``restore`` (else ``None``)."""
        backbone = self.network.backbone
        height, width = images.shape[-2:]
        tiles = plan_tiles(height, width, EARLY_BLOCK, EARLY_HALO, EARLY_ALIGN)
        maps = [None, None, None]
        for tile in tiles:
            top, bottom, left, right = tile.window
            stage1 = backbone.body1(self.network.normalise(images[:, :, top:bottom, left:right]))
            stage2 = backbone.body2(stage1)
            pooled = backbone.body3[0](stage2)
            for index, (part, stride) in enumerate(((stage1, 2), (stage2, 4), (pooled, 8))):
                if index < 2 and not restore:
                    continue
                if len(tiles) == 1:
                    maps[index] = part
                    continue
                if maps[index] is None:
                    maps[index] = torch.empty((1, part.shape[1], height // stride, width // stride), dtype=part.dtype,
                                              device=part.device, memory_format=torch.channels_last)
                core_top, core_bottom, core_left, core_right = (edge // stride for edge in tile.core)
                maps[index][:, :, core_top:core_bottom, core_left:core_right] = part[
                    :, :, core_top - top // stride:core_bottom - top // stride,
                    core_left - left // stride:core_right - left // stride]
        return maps

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, restore: bool = False) -> dict:
        if restore and not self.has_restoration:
            raise ValueError("this checkpoint has no restoration module; it cannot restore images")
        images = images.contiguous(memory_format=torch.channels_last)
        with self.precision(images.device):
            stage1, stage2, stage3 = self.early_stages(images, restore)
            for layer in self.network.backbone.body3[1:]:
                stage3 = layer(stage3)
            outputs = self.network.decode(stage3, self.network.backbone.body4(stage3))
            if restore:
                outputs["pred_restored"] = self.network.restoration([stage1, stage2, stage3], images.shape[-2:])
        return {key: value.float() for key, value in outputs.items()}
