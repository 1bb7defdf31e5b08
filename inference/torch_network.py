"""The network as inference runs it: BatchNorm folded into the convolutions, each ReLU applied by the
convolution before it, channels-last memory, the first two backbone stages computed block by block,
and in fast mode (``amp``) weights and activations in bf16 or fp16.

Exact mode (the default, ``amp=False``) stays in fp32: folding, fused ReLUs and blocks only change
the order of summation, and the wide layers' Winograd convolutions on the CPU (``inference.winograd``)
are as close to the float64 result as direct ones, so outputs stay within the parity tolerances of
the upstream network (see ``tools/parity.py``); on CUDA the convolutions run in IEEE fp32, without
TF32 and without cuDNN (``models.precision.ieee_fp32_convolutions``). Fast mode computes in
``models.precision.autocast_dtype(device)``: bf16 on CPUs with native bf16 and recent GPUs, fp16 on older
GPUs, fp32 elsewhere; the first convolution (on the pixels) and the heads' output convolutions
(``FullPrecision``) stay fp32.
"""
import contextlib
import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.network import PointCounter
from models.precision import autocast_dtype, ieee_fp32_convolutions

from .backend import NetworkBackend
from .kernels import ConvReLU, MaxPool2x2
from .tiling import core_slices, plan_tiles
from .winograd import WinogradConvReLU, is_wide_conv3x3

# Stages 1 and 2 (strides 2 and 4) hold most of the activation memory of a forward pass: the two
# 64-channel full-resolution convs alone need 512 bytes per input pixel. They and the max-pool that
# follows them run on blocks of at most EARLY_BLOCK pixels per side, and only the pooled stride-8 map
# (64 bytes per input pixel) is put together. Each block's window adds EARLY_HALO pixels on inner
# sides: the pooled map's receptive field is 44 px (a stride-8 cell reads 18 px beyond its edge),
# rounded up to the stride-8 grid that keeps the three max-pools aligned with the whole image's.
EARLY_BLOCK = 512
EARLY_HALO = 24
EARLY_ALIGN = 16
# On the CPU, stage 1 (conv1_1, conv1_2, the first max-pool; then, unless the restoration module needs
# stage 1 whole, conv2_1, conv2_2 and the second max-pool) runs on strips of STRIP_ROW_BYTES // (bytes
# per value) rows (32 in fp32, 64 in bf16). A strip's maps are small enough for glibc to serve and reuse
# from its heap, where whole maps were fresh memory maps that the kernel zeroes and faults in on every
# picture. A strip's convs take their neighbours' rows as context instead of zero padding
# (``ConvReLU(pad_rows=False)``), so that only the first conv of each run computes 2 rows twice. With
# strips, bf16 blocks can be as large as fp32 ones. Figures: docs/performance.md, "Why the code is as it is".
STRIP_ROW_BYTES = 128


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``Conv2d`` directly followed by a ``BatchNorm2d``
    (inside an ``nn.Sequential``, as in the VGG16-BN backbone) folded into one ``Conv2d``.

    The folded conv computes ``bn(conv(x))`` with the BatchNorm running statistics, so fp32 outputs
    match the original to rounding (about 1e-6 on logits); the BatchNorm layers become
    ``nn.Identity``. ``model`` itself is not changed. The copy must not be trained.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
    return fused


def fuse_relu(network: nn.Module) -> None:
    """Replace, in place, the backbone's ``Conv2d, Identity (folded BatchNorm), ReLU`` runs and the
    heads' ``conv1``/``conv2`` and their ReLU by ``ConvReLU``, and its 2x2 max-pools by ``MaxPool2x2``;
    the FPN's convs become ``ConvReLU`` without ReLU (for the reordered weights)."""
    for module in network.backbone.modules():
        if isinstance(module, nn.Sequential):
            for index, layer in enumerate(module):
                if isinstance(layer, nn.MaxPool2d) and layer.kernel_size == layer.stride == 2 and not layer.padding:
                    module[index] = MaxPool2x2()
            for index in range(len(module) - 2):
                conv, folded, relu = module[index], module[index + 1], module[index + 2]
                if isinstance(conv, nn.Conv2d) and isinstance(folded, nn.Identity) and isinstance(relu, nn.ReLU):
                    module[index], module[index + 2] = ConvReLU(conv, relu=True), nn.Identity()
    for head in (network.regression, network.classification):
        head.conv1, head.conv2 = ConvReLU(head.conv1, relu=True), ConvReLU(head.conv2, relu=True)
        head.activation = nn.Identity()
    for name in ("P5_1", "P4_1", "P4_2"):
        setattr(network.fpn, name, ConvReLU(getattr(network.fpn, name), relu=False))


def use_winograd(network: nn.Module) -> None:
    """Replace, in place, every ``ConvReLU`` of ``network`` whose conv ``is_wide_conv3x3`` accepts by a
    ``WinogradConvReLU`` (fp32 on the CPU, faster on those layers)."""
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvReLU) and child.output_dtype is None and is_wide_conv3x3(child.conv):
                setattr(parent, name, WinogradConvReLU(child.conv, child.relu))


def stage_layers(stage: nn.Sequential) -> list:
    """The layers of a backbone stage after ``fuse_relu``, without its ``nn.Identity`` placeholders."""
    return [layer for layer in stage if not isinstance(layer, nn.Identity)]


class FullPrecision(nn.Module):
    """Run ``module`` in fp32 even inside autocast; float ``[B, C, h, w]`` in, float32 out.

    Used for the heads' ``output`` convs, because the regression output is multiplied by 100: any
    rounding there is magnified into pixels. The two convs are a small part of the work, so fp32 there
    costs little (docs/performance.md, "Why the code is as it is").
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features.float())


class TorchNetwork(nn.Module, NetworkBackend):
    """The PyTorch backend (``inference.backend.NetworkBackend``): the inference-only form of a
    ``PointCounter`` (which is not changed), on ``device``, in fast mode with ``amp``.

    ``forward(images [1, 3, H, W] float pixels in [0, 1], H and W multiples of 16, restore=False)``
    returns the ``PointCounter``'s outputs as float32: ``pred_logits [1, A, 2]``, ``pred_points [1, A,
    2]`` ``(x, y)`` pixels of ``images``, and with ``restore`` ``pred_restored [1, 3, H, W]``.
    """

    def __init__(self, model: PointCounter, device="cpu", amp: bool = False):
        super().__init__()
        device = torch.device(device)
        network = fuse_batchnorm(model)
        fuse_relu(network)
        self.dtype = autocast_dtype(device) if amp else torch.float32
        reduced = self.dtype != torch.float32
        heads = (network.regression, network.classification)
        # These convs keep their fp32 weights in fast mode (taken before the network is cast).
        outputs = [copy.deepcopy(head.output) for head in heads]
        first = copy.deepcopy(network.backbone.body1[0]) if reduced else None
        network = network.to(device=device, dtype=self.dtype, memory_format=torch.channels_last)
        for head, output in zip(heads, outputs):
            head.output = FullPrecision(ConvReLU(output.to(device, memory_format=torch.channels_last), relu=False))
        if reduced:
            # conv1_1 reads the fp32 pixels with fp32 weights; its output is cast for the rest of the
            # network. Its rounding moves every later map, enough to change counts, while fp32 there costs
            # little of fast mode's time (docs/performance.md, "Why the code is as it is").
            first.output_dtype = self.dtype
            network.backbone.body1[0] = first.to(device, memory_format=torch.channels_last)
        elif device.type == "cpu":
            use_winograd(network)
        # Pixels are normalised in fp32 (a bf16 ImageNet mean is off by up to 2e-3).
        network.input_mean, network.input_std = (buffer.to(device) for buffer in (model.input_mean, model.input_std))
        self.network = network
        self.placement = device
        self.fast = amp
        self.register_buffer("fill", model.padding_fill.detach().to(device).clone(), persistent=False)

    @property
    def settings(self):
        return self.network.settings

    @property
    def device(self) -> torch.device:
        return self.placement

    @property
    def amp(self) -> bool:
        return self.fast

    @property
    def padding_fill(self) -> torch.Tensor:
        return self.fill

    @property
    def has_restoration(self) -> bool:
        return self.network.restoration is not None

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("TorchNetwork is for inference only (its BatchNorm is folded into the "
                               "convolutions); train the original PointCounter instead")
        return super().train(False)

    def precision(self, device: torch.device):
        """The context the forward pass runs in: IEEE fp32 convolutions for exact mode on CUDA."""
        if device.type == "cuda" and self.dtype == torch.float32:
            return ieee_fp32_convolutions()
        return contextlib.nullcontext()

    def in_strips(self, layers: list, pool: MaxPool2x2, maps: torch.Tensor) -> torch.Tensor:
        """``pool(layers(maps))`` for ``layers``, one or two 3x3 ``ConvReLU`` s, on ``maps [1, C, h, w]``
        (``h`` even), computed on strips of rows on the CPU (see ``STRIP_ROW_BYTES``): ``[1, C', h / 2,
        w / 2]``, the result on the whole of ``maps`` up to the order its sums are added in. (Strips are an
        even number of rows, so that the last one holds at least the 2 rows of context the strip before it
        reads.)"""
        height, width = maps.shape[-2:]
        rows = STRIP_ROW_BYTES // self.dtype.itemsize  # the rows of the maps the convs write
        context = len(layers)  # rows each conv reads beyond its output, on either side
        if maps.device.type != "cpu" or height <= rows + 2 * context:
            for layer in layers:
                maps = layer(maps)
            return pool(maps)
        pooled = torch.empty((1, layers[-1].conv.out_channels, height // 2, width // 2), dtype=self.dtype,
                             device=maps.device, memory_format=torch.channels_last)
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            part = maps[:, :, max(top - context, 0):min(bottom + context, height)]
            for layer in layers:
                # Inside the map the rows around a strip are its context; at the map's top or bottom edge
                # the conv pads with zeros there, and its row at the strip's other side, padded too, is dropped.
                if top == 0 or bottom == height:
                    part = layer(part)[:, :, (top != 0):part.shape[2] - (bottom != height)]
                else:
                    part = layer(part, pad_rows=False)
            pool(part, out=pooled[:, :, top // 2:bottom // 2])
        return pooled

    def early_stages(self, images: torch.Tensor, restore: bool) -> list:
        """Backbone stages 1 and 2 of ``images`` and stage 2 max-pooled (the start of stage 3), computed
        on blocks (see ``EARLY_BLOCK``) and put together as the whole image would give them:
        ``[stage1, stage2, pooled]``, the first two only with ``restore`` (else ``None``)."""
        backbone = self.network.backbone
        height, width = images.shape[-2:]
        tiles = plan_tiles(height, width, EARLY_BLOCK, EARLY_HALO, EARLY_ALIGN)
        conv1_1, conv1_2, pool1, conv2_1, conv2_2 = stage_layers(backbone.body1)
        maps = [None, None, None]
        for tile in tiles:
            top, bottom, left, right = tile.window
            pixels = self.network.normalise(images[:, :, top:bottom, left:right])
            pooled = self.in_strips([conv1_1, conv1_2], pool1, pixels)
            if restore:
                stage1 = conv2_2(conv2_1(pooled))
                pooled = backbone.body2[0](stage1)
            else:
                stage1, pooled = None, self.in_strips([conv2_1, conv2_2], backbone.body2[0], pooled)
            stage2 = backbone.body2[1:](pooled)
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
                in_window, in_whole = core_slices(tile, stride)
                maps[index][(..., *in_whole)] = part[(..., *in_window)]
        return maps

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, restore: bool = False) -> dict:
        images = images.contiguous(memory_format=torch.channels_last)
        with self.precision(images.device):
            stage1, stage2, stage3 = self.early_stages(images, restore)
            for layer in self.network.backbone.body3[1:]:
                stage3 = layer(stage3)
            outputs = self.network.decode(stage3, self.network.backbone.body4(stage3))
            if restore:
                outputs["pred_restored"] = self.network.restoration([stage1, stage2, stage3], images.shape[-2:])
        return {key: value.float() for key, value in outputs.items()}
