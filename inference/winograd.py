"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for exact mode on the CPU.

Each 2x2 block of output pixels is computed from the 4x4 window of input around it as
``A^T [(G g G^T) * (B^T d B)] A``: the 16 products per channel pair replace direct convolution's 36,
so the matrix products (16 of ``[pixels / 4, C_in] x [C_in, C_out]``) do 2.25x fewer multiply-adds
than a direct 3x3 convolution. The transforms of the input and of the products cost memory traffic
instead, which only pays off for wide layers; ``WIDE_CHANNELS`` draws that line where it was measured
(docs/performance.md, "Why the code is as it is").

The results are not the direct convolution's bit for bit, but at least as close to the exact (float64)
result, as the weights are transformed in float64 and each output sums 4 x 4 products of transformed
values.
"""
import torch
from torch import nn

# Convolutions whose input and output both have at least this many channels run as Winograd.
WIDE_CHANNELS = 256
# Rows of 2x2 blocks are transformed and multiplied in chunks whose transformed input takes about this
# many bytes: small enough to stay in cache and in glibc's heap (no fresh pages per call), large enough
# for efficient matrix products.
CHUNK_BYTES = 4 << 20
# G of F(2x2, 3x3): the weights' transform.
WEIGHT_TRANSFORM = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def is_wide_conv3x3(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a stride-1, zero-padded 3x3 convolution wide enough for ``WinogradConvReLU``."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and min(conv.in_channels, conv.out_channels) >= WIDE_CHANNELS)


class WinogradConvReLU(nn.Module):
    """``relu(conv(x))`` (or ``conv(x)`` with ``relu=False``) for a 3x3 conv ``is_wide_conv3x3`` accepts,
    by F(2x2, 3x3) in fp32, for inference (it writes into its buffers, which autograd cannot follow).
    Input float32 ``[1, C_in, h, w]`` (any ``h``, ``w``, any memory layout), output float32
    ``[1, C_out, h, w]`` channels-last. Only the transformed weights ``[16, C_in, C_out]`` and the bias
    are kept."""

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        if not is_wide_conv3x3(conv):
            raise ValueError(f"WinogradConvReLU takes 3x3, stride-1, zero-padded convolutions with at least "
                             f"{WIDE_CHANNELS} input and output channels, got {conv}")
        transform = torch.tensor(WEIGHT_TRANSFORM, dtype=torch.float64)
        transformed = conv.weight.new_empty((4, 4, conv.in_channels, conv.out_channels))
        # In float64, a few output channels at a time: whole-layer float64 temporaries stayed in the
        # process's heap and raised a large picture's peak memory.
        for first in range(0, conv.out_channels, 32):
            weight = conv.weight.detach()[first:first + 32].to(torch.float64)
            transformed[..., first:first + 32] = torch.einsum("ak,oikl,bl->abio", transform, weight, transform)
        self.register_buffer("transformed_weight", transformed.reshape(16, conv.in_channels, conv.out_channels))
        bias = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        self.register_buffer("bias", bias)
        self.relu = relu

    @property
    def out_channels(self) -> int:
        return self.transformed_weight.shape[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if batch != 1 or channels != self.transformed_weight.shape[1]:
            raise ValueError(f"WinogradConvReLU expects [1, {self.transformed_weight.shape[1]}, h, w], "
                             f"got {tuple(x.shape)}")
        # Odd sizes are computed one row or column larger (it reads zero padding only) and cut back.
        rows, columns = (height + 1) // 2, (width + 1) // 2
        out = torch.empty((1, self.out_channels, 2 * rows, 2 * columns), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        source, target = x.permute(0, 2, 3, 1)[0], out.permute(0, 2, 3, 1)[0]
        chunk = max(1, min(rows, CHUNK_BYTES // (16 * columns * max(channels, self.out_channels) * x.element_size())))
        buffers = Buffers(chunk, columns, channels, self.out_channels, x)
        for first in range(0, rows, chunk):
            count = min(chunk, rows - first)
            transformed = buffers.transform_input(source, first, count)
            products = buffers.products[:, :count * columns]
            torch.bmm(transformed.reshape(16, count * columns, channels), self.transformed_weight, out=products)
            # Position (1, 1) of the 4x4 products enters each of the 4 outputs once, with weight +1.
            products[5] += self.bias
            block = target[2 * first:2 * (first + count)]
            buffers.transform_output(products.view(4, 4, count, columns, self.out_channels), block)
            if self.relu:
                block.clamp_(min=0)
        if (2 * rows, 2 * columns) != (height, width):
            out = out[:, :, :height, :width].contiguous(memory_format=torch.channels_last)
        return out


class Buffers:
    """The working memory of one ``WinogradConvReLU`` call, for chunks of ``chunk`` block rows of
    ``columns`` 2x2 blocks each, reused from chunk to chunk."""

    def __init__(self, chunk: int, columns: int, channels: int, out_channels: int, like: torch.Tensor):
        # The input window of the chunk with its one-pixel zero border; its border columns (and for an odd
        # width the column after the last) stay zero, as only the columns inside are written.
        self.window = like.new_zeros((2 * chunk + 2, 2 * columns + 2, channels))
        self.rows = like.new_empty((4, chunk, 2 * columns + 2, channels))
        self.transformed = like.new_empty((4, 4, chunk, columns, channels))
        self.products = like.new_empty((16, chunk * columns, out_channels))
        self.sums = like.new_empty((2, 4, chunk, columns, out_channels))

    def transform_input(self, source: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """``B^T d B`` of the 4x4 windows of block rows ``first .. first + count`` of ``source [h, w, C]``:
        ``[4, 4, count, columns, C]``."""
        height, width = source.shape[:2]
        top, bottom = 2 * first - 1, 2 * (first + count) + 1  # source rows the windows read, with padding
        window = self.window[:2 * count + 2]
        inside_top, inside_bottom = max(top, 0), min(bottom, height)
        window[:inside_top - top].zero_()
        window[inside_bottom - top:].zero_()
        window[inside_top - top:inside_bottom - top, 1:width + 1].copy_(source[inside_top:inside_bottom])
        rows = self.rows[:, :count]
        separable_input_transform(window[0::2], window[1::2], rows, axis=0)
        transformed = self.transformed[:, :, :count]
        separable_input_transform(rows[:, :, 0::2], rows[:, :, 1::2], transformed.transpose(0, 1), axis=2)
        return transformed

    def transform_output(self, products: torch.Tensor, block: torch.Tensor) -> None:
        """``A^T m A`` of ``products [4, 4, count, columns, C_out]`` written into ``block [2 count, 2
        columns, C_out]``, the output rows of the chunk."""
        count, columns, channels = products.shape[2:]
        sums = self.sums[:, :, :count]
        separable_output_transform(products, sums)
        pixels = block.view(count, 2, columns, 2, channels).permute(3, 1, 0, 2, 4)
        separable_output_transform(sums.transpose(0, 1), pixels)


def separable_input_transform(even: torch.Tensor, odd: torch.Tensor, out: torch.Tensor, axis: int) -> None:
    """One axis of ``B^T d B``. Window ``i`` along ``axis`` is lines ``2i .. 2i + 3`` of a map, given as
    its even and its odd lines (``n + 1`` each); ``out[0..3]`` gets the 4 transformed lines of the ``n``
    windows: ``d0 - d2``, ``d1 + d2``, ``d2 - d1``, ``d1 - d3``."""
    e0, e1 = even.narrow(axis, 0, out.shape[axis + 1]), even.narrow(axis, 1, out.shape[axis + 1])
    o0, o1 = odd.narrow(axis, 0, out.shape[axis + 1]), odd.narrow(axis, 1, out.shape[axis + 1])
    torch.sub(e0, e1, out=out[0])
    torch.add(o0, e1, out=out[1])
    torch.sub(e1, o0, out=out[2])
    torch.sub(o0, o1, out=out[3])


def separable_output_transform(values: torch.Tensor, out: torch.Tensor) -> None:
    """One axis of ``A^T m A``: ``out[0] = v0 + v1 + v2``, ``out[1] = v1 - v2 - v3`` of ``values[0..3]``."""
    torch.add(values[0], values[1], out=out[0]).add_(values[2])
    torch.sub(values[1], values[2], out=out[1]).sub_(values[3])
