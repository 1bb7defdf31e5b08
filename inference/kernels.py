"""The CPU kernels the PyTorch backend's layers run: a convolution with its ReLU as one oneDNN call
(``ConvReLU``) and a 2x2 max-pool over channels-last views (``MaxPool2x2``). Winograd convolutions for
the wide layers are in ``inference.winograd``."""
import torch
import torch.nn.functional as F
from torch import nn

from models.precision import onednn_computes


class ConvReLU(nn.Module):
    """A stride-1 ``Conv2d``, optionally followed by ReLU, as one oneDNN call on the CPU.

    The ReLU is applied while the convolution writes its output (a separate ReLU reads and writes the
    whole map once more), and the weights are reordered into oneDNN's blocked layout once, not on every
    call. On other devices, without oneDNN, or in a dtype this CPU's oneDNN cannot compute in (bf16
    below AVX512), it runs ``conv`` and ``relu``. Float ``[B, C, h, w]`` in and out, in the weights' dtype,
    or with ``output_dtype`` the result cast to that dtype.
    """

    # oneDNN's bf16 kernels are slow for 3 input channels: pixels and weights are padded by zero channels
    # to 8 (docs/performance.md, "Why the code is as it is").
    MIN_REDUCED_PRECISION_CHANNELS = 8

    def __init__(self, conv: nn.Conv2d, relu: bool, output_dtype: torch.dtype = None):
        super().__init__()
        if conv.stride != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"ConvReLU takes stride-1, ungrouped, zero-padded convolutions, got {conv}")
        self.conv = conv
        self.relu = relu
        self.output_dtype = output_dtype
        self.packed = None  # (dtype, input channels, oneDNN weight), made on the first CPU call

    def forward(self, x: torch.Tensor, pad_rows: bool = True) -> torch.Tensor:
        """``pad_rows=False``: no zero padding above and below, so ``h`` input rows give ``h - 2``
        output rows (for a 3x3 conv), the rows that do not read beyond ``x``: how a strip of a larger
        map is computed from its neighbours' rows."""
        y = self.convolve(x, pad_rows)
        return y if self.output_dtype is None else y.to(self.output_dtype)

    def convolve(self, x: torch.Tensor, pad_rows: bool) -> torch.Tensor:
        conv = self.conv
        padding = list(conv.padding) if pad_rows else [0, conv.padding[1]]
        if x.device.type != "cpu" or not (torch.backends.mkldnn.enabled and onednn_computes(conv.weight.dtype)):
            y = F.conv2d(x, conv.weight, conv.bias, padding=padding, dilation=conv.dilation)
            return torch.relu_(y) if self.relu else y
        # The weights are reordered once, with the conv's own padding; calls without row padding use them too
        # (oneDNN's weight layout does not depend on the padding; the rows come out bit-identical).
        geometry = (padding, [1, 1], list(conv.dilation), 1)
        channels = x.shape[1]
        if conv.weight.dtype != torch.float32 and channels < self.MIN_REDUCED_PRECISION_CHANNELS:
            channels = self.MIN_REDUCED_PRECISION_CHANNELS
            padded = x.new_zeros((x.shape[0], channels, *x.shape[2:])).contiguous(memory_format=torch.channels_last)
            padded[:, :x.shape[1]] = x
            x = padded
        if self.packed is None or self.packed[:2] != (conv.weight.dtype, channels):
            weight = conv.weight.new_zeros((conv.out_channels, channels, *conv.kernel_size))
            weight[:, :conv.in_channels] = conv.weight
            weight = torch.ops.mkldnn._reorder_convolution_weight(weight, list(conv.padding), *geometry[1:],
                                                                  list(x.shape))
            self.packed = (conv.weight.dtype, channels, weight)
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed[2], conv.bias, *geometry,
                                                       "relu" if self.relu else "none", [], "")


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2, 2)`` for channels-last maps of even size, as two elementwise maxima over
    views (faster than PyTorch's pooling, which also computes indices); the same values.

    ``forward(x [B, C, h, w], out=None)``: with ``out`` (``[B, C, h / 2, w / 2]``, e.g. rows of a larger
    map) the result is written there and ``out`` is returned, which saves a copy of every strip."""

    def forward(self, x: torch.Tensor, out: torch.Tensor = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if height % 2 or width % 2 or not x.is_contiguous(memory_format=torch.channels_last):
            pooled = F.max_pool2d(x, 2, 2)
            return pooled if out is None else out.copy_(pooled)
        rows = x.permute(0, 2, 3, 1).reshape(batch, height // 2, 2, width // 2, 2 * channels)
        pairs = torch.maximum(rows[:, :, 0], rows[:, :, 1]).view(batch, height // 2, width // 2, 2, channels)
        if out is None:
            return torch.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1]).permute(0, 3, 1, 2)
        torch.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1], out=out.permute(0, 2, 3, 1))
        return out
