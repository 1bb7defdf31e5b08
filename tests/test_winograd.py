"""Winograd F(2x2, 3x3) convolutions: exact mode's wide layers on the CPU."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inference.winograd as winograd
from models import PointCounter
from inference.torch_network import TorchNetwork
from models.precision import autocast_dtype
from inference.winograd import WinogradConvReLU

pytestmark = pytest.mark.cpu_kernels


# F(2x2, 3x3) in magnitudes: |B^T| (input), |G| (weights), |A^T| (output) transforms.
ABS_INPUT_TRANSFORM = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=torch.float64)
ABS_WEIGHT_TRANSFORM = torch.tensor(winograd.WEIGHT_TRANSFORM, dtype=torch.float64).abs()
ABS_OUTPUT_TRANSFORM = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.float64)


def winograd_error_bound(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Largest error of fp32 Winograd F(2x2, 3x3) against the exact convolution, per output ``[1, O, h, w]``.

    Every value the algorithm computes is a signed sum of the terms of the same sum taken in magnitudes,
    M = |A^T| (sum over channels of (|G| |g| |G^T|) * (|B^T| |d| |B|)) |A| + |b|, each term reached through
    at most C + 13 roundings with unit roundoff u = 2^-24 (weights transformed in float64 and rounded once;
    4-term input transforms in two passes of 2; C products summed; 3-term output transforms in two passes;
    the bias). So |error| <= gamma(C + 13) * M (Higham's bound for sums, applied term by term)."""
    channels = x.shape[1]
    height, width = x.shape[-2:]
    padded = F.pad(x.double().abs(), (1, 1 + width % 2, 1, 1 + height % 2))  # 4x4 tiles at stride 2
    tiles = F.unfold(padded, 4, stride=2).view(channels, 4, 4, -1)
    inputs = torch.einsum("ak,cklt,bl->cabt", ABS_INPUT_TRANSFORM, tiles, ABS_INPUT_TRANSFORM)
    weights = torch.einsum("ak,ockl,bl->ocab", ABS_WEIGHT_TRANSFORM, conv.weight.double().abs(), ABS_WEIGHT_TRANSFORM)
    products = torch.einsum("ocab,cabt->oabt", weights, inputs)
    outputs = torch.einsum("ia,oabt,jb->oijt", ABS_OUTPUT_TRANSFORM, products, ABS_OUTPUT_TRANSFORM)
    rows, columns = (height + 1) // 2, (width + 1) // 2
    magnitude = outputs.reshape(-1, 2, 2, rows, columns).permute(0, 3, 1, 4, 2).reshape(-1, 2 * rows, 2 * columns)
    magnitude = magnitude[:, :height, :width] + conv.bias.double().abs().view(-1, 1, 1)
    u = 2.0 ** -24
    return (channels + 13) * u / (1 - (channels + 13) * u) * magnitude.unsqueeze(0)


@pytest.mark.parametrize("in_channels, out_channels, height, width", [
    (256, 256, 12, 16), (256, 320, 7, 9), (256, 256, 1, 1), (320, 256, 2, 3)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("chunk_bytes", [1, winograd.CHUNK_BYTES], ids=["one-block-row-chunks", "default-chunks"])
def test_winograd_convolution_equals_the_float64_convolution(monkeypatch, in_channels, out_channels, height, width,
                                                            relu, chunk_bytes):
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    generator = torch.Generator().manual_seed(height * width)
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    x = torch.randn(1, in_channels, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = WinogradConvReLU(conv, relu=relu)(x)
        exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        exact = exact.relu() if relu else exact
    assert y.dtype == torch.float32 and y.shape == exact.shape
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert ((y.double() - exact).abs() <= winograd_error_bound(x, conv)).all()
    if relu:
        assert (y >= 0).all()


def test_winograd_refuses_narrow_or_strided_convs_and_wrong_inputs():
    with pytest.raises(ValueError, match="at least 256 input and output channels"):
        WinogradConvReLU(nn.Conv2d(128, 256, 3, padding=1), relu=True)
    with pytest.raises(ValueError, match="stride-1"):
        WinogradConvReLU(nn.Conv2d(256, 256, 3, padding=1, stride=2), relu=True)
    layer = WinogradConvReLU(nn.Conv2d(256, 256, 3, padding=1), relu=True)
    with pytest.raises(ValueError, match=r"expects \[1, 256, h, w\], got \(2, 256, 4, 4\)"):
        layer(torch.zeros(2, 256, 4, 4))


def test_exact_mode_on_the_cpu_runs_every_wide_3x3_conv_as_winograd_and_fast_mode_none():
    torch.manual_seed(0)
    model = PointCounter().eval()

    def winograd_layers(amp):
        network = TorchNetwork(model, "cpu", amp=amp)
        return sorted(name for name, module in network.named_modules() if isinstance(module, WinogradConvReLU))

    # conv3_2, conv3_3, conv4_1 .. conv5_3, the FPN's P4_2 and the heads' hidden convs have 256 or 512
    # channels on both sides; conv1_x, conv2_x (64 and 128 channels) and conv3_1 (128 -> 256) stay direct.
    assert winograd_layers(amp=False) == sorted(
        [f"network.backbone.body2.{i}" for i in (4, 7)] + [f"network.backbone.body3.{i}" for i in (1, 4, 7)]
        + [f"network.backbone.body4.{i}" for i in (1, 4, 7)] + ["network.fpn.P4_2"]
        + [f"network.{head}.{conv}" for head in ("regression", "classification") for conv in ("conv1", "conv2")])
    # Fast mode computes in bf16 where the CPU has native bf16 (no Winograd: it is an fp32 method);
    # elsewhere it is exact mode, Winograd included.
    fast_dtype = autocast_dtype("cpu")
    assert winograd_layers(amp=True) == ([] if fast_dtype == torch.bfloat16 else winograd_layers(amp=False))
