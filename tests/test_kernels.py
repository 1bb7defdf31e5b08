"""inference/kernels.py: ConvReLU and MaxPool2x2 compute what the layers they replace compute."""
import copy

import pytest
import torch
from torch import nn

from helpers import bf16_conv_bound, fp32_conv_bound

pytestmark = pytest.mark.cpu_kernels


def test_fused_conv_relu_and_pooling_compute_what_the_layers_they_replace_compute():
    from inference.kernels import ConvReLU, MaxPool2x2

    generator = torch.Generator().manual_seed(6)
    with torch.inference_mode():
        for in_channels, size in ((3, (40, 56)), (32, (24, 16))):
            conv = nn.Conv2d(in_channels, 16, 3, padding=1)
            x = torch.randn(1, in_channels, *size, generator=generator).contiguous(memory_format=torch.channels_last)
            # ConvReLU and PyTorch's conv are different oneDNN kernels (which ones depends on the CPU), so
            # they may sum in different orders: equal within the fp32 rounding bound of a 3x3 conv.
            expected = conv(x)
            bound = fp32_conv_bound(x, conv)
            fused = ConvReLU(conv, relu=True)(x)
            assert fused.shape == expected.shape and (fused >= 0).all()
            assert ((fused.double() - expected.relu().double()).abs() <= bound).all()
            assert ((ConvReLU(conv, relu=False)(x).double() - expected.double()).abs() <= bound).all()
            assert (expected < -bound).any(), "some outputs must be negative for the fused ReLU to show"
            # bf16 runs in oneDNN where the CPU has bf16 kernels, else as PyTorch's conv; pads 3 channels to 8
            reduced = ConvReLU(copy.deepcopy(conv).to(torch.bfloat16), relu=True)(x.to(torch.bfloat16))
            assert reduced.dtype == torch.bfloat16 and reduced.shape == (1, 16, *size)
            assert ((reduced.double() - expected.relu().double()).abs() <= bf16_conv_bound(x, conv)).all()
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(2, 8, 12, 20, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
            assert torch.equal(MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2, 2))
            # Pooled into rows 1..6 of a larger map: the rows around them stay as they were.
            larger = torch.full((2, 8, 8, 10), -7.0, dtype=dtype).contiguous(memory_format=torch.channels_last)
            assert MaxPool2x2()(x, out=larger[:, :, 1:7]).data_ptr() == larger[:, :, 1:7].data_ptr()
            assert torch.equal(larger[:, :, 1:7], torch.nn.functional.max_pool2d(x, 2, 2))
            assert (larger[:, :, 0] == -7).all() and (larger[:, :, 7] == -7).all()
        odd = torch.randn(1, 4, 7, 9, generator=generator)
        assert torch.equal(MaxPool2x2()(odd), torch.nn.functional.max_pool2d(odd, 2, 2))
        into = torch.zeros(1, 4, 3, 4)
        MaxPool2x2()(odd, out=into)
        assert torch.equal(into, torch.nn.functional.max_pool2d(odd, 2, 2))
