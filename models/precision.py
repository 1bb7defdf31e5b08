"""Numerical precision of the network's arithmetic: which reduced-precision dtype a device computes
fast in (bf16 where the hardware has it; training's ``--amp`` and inference's fast mode), and full-fp32
convolutions on CUDA for exact mode."""
import contextlib
import functools
from pathlib import Path

import torch

# CPU feature flags (``/proc/cpuinfo``) that mean bf16 matrix products run in hardware: x86
# AVX512-BF16 and AMX, ARM's bf16 extension. Without them oneDNN emulates bf16 and gains nothing.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (then bf16 autocast is ~2x fp32 speed).

    Needs oneDNN with bf16 support (which an ``ONEDNN_MAX_CPU_ISA`` cap below AVX512 takes away); where
    ``/proc/cpuinfo`` exists (Linux) its flags must also name a native bf16 instruction set, because
    oneDNN reports bf16 support on AVX512 CPUs that only emulate it. Elsewhere oneDNN's answer is taken
    as is. Cached: fast mode asks on every forward.
    """
    if not onednn_computes(torch.bfloat16):
        return False
    flags = cpu_flags()
    return not flags or any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


@functools.lru_cache(maxsize=None)
def cpu_info() -> dict:
    """The first processor's fields of ``/proc/cpuinfo`` (lower-case keys; empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_flags() -> frozenset:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``) from :func:`cpu_info`."""
    info = cpu_info()
    return frozenset((info.get("flags") or info.get("features") or "").split())


@functools.lru_cache(maxsize=None)
def onednn_computes(dtype: torch.dtype) -> bool:
    """Whether this CPU's oneDNN can run convolutions in ``dtype`` at all (natively or emulated): fp32
    always; bf16 needs AVX512 (BW, VL, DQ), AVX-NE-CONVERT or AMX, fp16 AVX512-FP16 or AMX-FP16, as
    oneDNN reads them under any ``ONEDNN_MAX_CPU_ISA`` cap. Elsewhere its reduced-precision paths raise."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return check is not None and bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        return False


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


@contextlib.contextmanager
def ieee_fp32_convolutions():
    """Full-fp32 (IEEE) convolutions on CUDA inside the block, computed by PyTorch's own
    convolutions (im2col and cuBLAS matrix products) rather than cuDNN; the previous settings are
    restored afterwards.

    Why: PyTorch lets cuDNN use TF32 by default (a 10-bit mantissa; cuBLAS too where a user allows
    it), which moves exact mode's points beyond the parity tolerance. With TF32 off, cuDNN's
    heuristics pick poor plans for some map sizes (huge workspaces, a fraction of the GPU's speed), and
    its search (``cudnn.benchmark``) costs seconds per new size; PyTorch's own convolutions were at
    least as fast in little memory (H100 figures: docs/performance.md, "Why the code is as it is").
    """
    cudnn, conv, matmul = torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cuda.matmul
    previous = cudnn.enabled, conv.fp32_precision, matmul.fp32_precision
    cudnn.enabled, conv.fp32_precision, matmul.fp32_precision = False, "ieee", "ieee"
    try:
        yield
    finally:
        cudnn.enabled, conv.fp32_precision, matmul.fp32_precision = previous
