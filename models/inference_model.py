"""The network as ``run_test.py`` and ``Counter`` run it: BatchNorm folded into the convolutions,
channels-last memory and, in fast mode (``--amp``), autocast.

Exact mode (the default, ``amp=False``) stays in fp32: folding and channels-last only change the
order of summation, so outputs stay within the parity tolerances of the upstream network (measured
on the reference checkpoint, CPU: logits 1e-7, points 6e-5 px) while skipping the BatchNorm passes.
On CUDA it also keeps cuDNN from using TF32 (see :func:`ieee_fp32_convolutions`).
Fast mode computes in bf16 (CPUs with native bf16, any recent GPU) or fp16 (older GPUs). Measured on
a 384x512 input on 2 CPU cores with AMX bf16: unfused ``PointCounter`` 522 ms, exact mode 379 ms, fast
mode 86 ms (logits within 3e-4, points within 0.03 px on the reference checkpoint).
``prepare_inference(model, device, amp)`` returns an ``InferenceModel`` that stands in for the
``PointCounter`` in ``models.inference.forward_padded``.
"""
import contextlib
import copy
import functools
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# CPU feature flags (``/proc/cpuinfo``) that mean bf16 matrix products run in hardware: x86
# AVX512-BF16 and AMX, ARM's bf16 extension. Without them oneDNN emulates bf16 and gains nothing.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``Conv2d`` directly followed by a ``BatchNorm2d``
    (inside an ``nn.Sequential``, as in the VGG16-BN backbone) folded into one ``Conv2d``.

    The folded conv computes ``bn(conv(x))`` with the BatchNorm running statistics, so fp32 outputs
    match the original to rounding (about 1e-6 on logits); the BatchNorm layers become
    ``nn.Identity``. ``model`` itself is not changed. The copy must not be trained: BatchNorm no
    longer exists in it.
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


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (then bf16 autocast is ~2x fp32 speed).

    Needs oneDNN with bf16 support; where ``/proc/cpuinfo`` exists (Linux) its flags must also name
    a native bf16 instruction set, because oneDNN reports bf16 support on AVX512 CPUs that only
    emulate it. Elsewhere oneDNN's answer is taken as is. Cached: fast mode asks on every forward.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True
    flags = set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return not flags or any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def autocast_dtype(device) -> torch.dtype:
    """The reduced-precision dtype fast mode computes in on ``device``, or ``torch.float32`` (no autocast).

    CUDA: bf16 where the GPU supports it (same speed as fp16 on tensor cores, no overflow risk), else
    fp16. CPU: bf16 when :func:`cpu_has_native_bf16`, else fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def autocast_context(device):
    """Context manager for fast-mode forward passes on ``device`` (``torch.device`` or string):
    ``torch.autocast`` with :func:`autocast_dtype`, or a no-op context where that is fp32."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def ieee_fp32_convolutions():
    """cuDNN convolutions in full fp32 inside the block. PyTorch lets them use TF32 by default (a
    10-bit mantissa), which would move exact mode's logits on a GPU far beyond the 1e-4 parity
    tolerance; the previous setting is restored afterwards."""
    conv = torch.backends.cudnn.conv
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous


class FullPrecision(nn.Module):
    """Run ``module`` in fp32 even inside autocast; float ``[B, C, h, w]`` in, float32 out.

    Used for the heads' ``output`` convs, because the regression output is multiplied by 100: any
    rounding there is magnified into pixels. Measured with CPU bf16 on A_IMG_160 (reference checkpoint
    with its output convs scaled x30, so that offsets reach 118 px, more than a trained model's): the
    largest point error is 0.99 px with these convs in bf16 and 0.84 px in fp32 (mean 0.18 -> 0.16
    px); with the reference's own offsets (up to 4 px) both stay under 0.04 px. The rest of the error
    is the bf16 rounding of the features themselves (~0.7 % of the offset), which only fp32 features
    would remove. The two convs are ~0.2 % of the FLOPs; keeping them in fp32 costs ~1 % of the time.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return self.module(features.float())


class InferenceModel(nn.Module):
    """Inference-only stand-in for a ``PointCounter``: fused BatchNorm, channels-last and, with
    ``amp``, autocast (:func:`autocast_context`).

    ``forward(images [B, 3, H, W] float in [0, 1], restore=False)`` returns the same dict as
    ``PointCounter`` (``pred_logits [B, A, 2]``, ``pred_points [B, A, 2]`` ``(x, y)`` pixels, and
    ``pred_restored [B, 3, H, W]`` with ``restore``), every tensor float32. ``padding_fill``,
    ``settings`` and ``restoration`` are the wrapped network's, so ``forward_padded`` works
    unchanged. Build it with :func:`prepare_inference`. It cannot be put in training mode.
    """

    def __init__(self, fused_model: nn.Module, amp: bool = True):
        super().__init__()
        self.network = fused_model
        self.settings = fused_model.settings
        self.amp = amp

    @property
    def padding_fill(self) -> torch.Tensor:
        return self.network.padding_fill

    @property
    def restoration(self):
        return self.network.restoration

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("InferenceModel is for inference only (its BatchNorm is folded into the "
                               "convolutions); train the original PointCounter instead")
        return super().train(False)

    def forward(self, images: torch.Tensor, restore: bool = False) -> dict:
        images = images.contiguous(memory_format=torch.channels_last)
        if self.amp:
            context = autocast_context(images.device)
        else:
            context = ieee_fp32_convolutions() if images.device.type == "cuda" else contextlib.nullcontext()
        with context:
            outputs = self.network(images, restore=restore)
        return {key: value.float() for key, value in outputs.items()}


def prepare_inference(model: nn.Module, device="cpu", amp: bool = True) -> InferenceModel:
    """Fast-mode copy of a ``PointCounter`` on ``device``: BatchNorm fused, weights channels-last,
    the heads' ``output`` convs kept in fp32 (see :class:`FullPrecision`), wrapped in a
    :class:`InferenceModel`. ``model`` itself is not changed.

    ``amp=False`` keeps everything in fp32: only the summation order changes, so outputs stay within
    the parity tolerances of exact mode (measured on the reference checkpoint, CPU: logits 1e-7,
    points 6e-5 px) while running ~1.35x faster than ``PointCounter`` on CPU.
    """
    fused = fuse_batchnorm(model)
    for head in (fused.regression, fused.classification):
        head.output = FullPrecision(head.output)
    fused = fused.to(device=torch.device(device), memory_format=torch.channels_last)
    return InferenceModel(fused, amp=amp).eval()
