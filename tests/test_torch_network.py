"""inference/torch_network.py: BatchNorm folding is exact in fp32, fast mode (bf16/fp16) stays within its
limits of exact mode, and the early layers computed in strips equal the whole map within rounding."""
import pytest
import torch
from torch import nn

from crowd_datasets.image_io import read_rgb, to_tensor
from inference import Counter
from inference.parity import compare_outputs, within_parity
from inference.torch_network import TorchNetwork, fuse_batchnorm
from models import ModelSettings, PointCounter, build_from_checkpoint
from models.precision import autocast_dtype, cpu_has_native_bf16
from helpers import (BF16_UNIT_ROUNDOFF, REAL_SAMPLES, REFERENCE_CHECKPOINT, absolute_conv, fp32_conv_bound,
                     padded_outputs)

pytestmark = pytest.mark.cpu_kernels

# Fast mode's limits, as docs/counting.md states them: logits within 2e-3 of exact mode's, points
# within 0.5 px, counts within 10 %. They are what "slightly" promises, not rounding bounds: a worst-case
# bound through 18 bf16 convolutions is larger than the logits themselves. The reference checkpoint's
# logits are random-weight logits, about 2 % of anchors a hair above 0.5; only anchors whose exact
# person-minus-background margin lies within the logit limit may change class.
LOGIT_LIMIT = 2e-3
POINT_LIMIT_PX = 0.5


def randomise_batchnorm(model: nn.Module, seed: int = 1) -> None:
    """Give every BatchNorm2d non-trivial affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.25)


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    model = PointCounter(ModelSettings(input_norm="imagenet")).eval()
    randomise_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def reference_run():
    model, _, _ = build_from_checkpoint(REFERENCE_CHECKPOINT, log=lambda message: None)
    image = to_tensor(read_rgb(REAL_SAMPLES / "A_IMG_160.jpg"))
    exact = padded_outputs(model, image)
    fast = Counter(model, amp=True).outputs(image)
    fused_fp32 = Counter(model).outputs(image)
    return exact, fast, fused_fp32


def test_fused_model_matches_original_in_fp32(random_model):
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    fused = fuse_batchnorm(random_model)
    assert sum(isinstance(module, nn.Identity) for module in fused.modules()) == 13, "VGG16-BN's 13 conv + BN pairs"
    assert not any(isinstance(module, nn.BatchNorm2d) for module in fused.modules())
    with torch.inference_mode():
        expected = random_model(images)
        actual = fused(images)
    assert expected["pred_logits"].abs().max() > 1e-2, "logits too small to show a folding error"
    assert torch.allclose(actual["pred_logits"], expected["pred_logits"], rtol=0, atol=1e-4)
    assert torch.allclose(actual["pred_points"], expected["pred_points"], rtol=0, atol=1e-3)


def test_fusing_leaves_the_original_untouched():
    torch.manual_seed(3)
    model = PointCounter().train()
    randomise_batchnorm(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    TorchNetwork(model, "cpu")
    assert model.training
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == 13
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert model.backbone.body1[0].weight.is_contiguous()


def test_torch_network_keeps_the_settings_and_restores_in_fast_mode():
    torch.manual_seed(4)
    model = PointCounter(ModelSettings(restoration=True, input_norm="imagenet")).eval()
    fast = TorchNetwork(model, "cpu", amp=True)
    assert fast.settings == model.settings and fast.amp is True
    assert torch.equal(fast.padding_fill, model.padding_fill)
    assert fast.has_restoration
    assert fast.network.backbone.body1[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    image = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(5))
    outputs = Counter(model, amp=True).outputs(image, restore=True)
    assert outputs["pred_logits"].shape == (16 * 16 * 4, 2)
    assert outputs["pred_points"].shape == (16 * 16 * 4, 2)
    assert outputs["pred_restored"].shape == (3, 40, 50)
    assert all(value.dtype == torch.float32 for value in outputs.values())
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()


@pytest.mark.reference_fixtures
def test_fp32_fast_model_keeps_reference_parity(reference_run):
    exact, _, fused_fp32 = reference_run
    # The parity tolerances of exact mode against upstream (docs/design.md, "Parity").
    row = compare_outputs(fused_fp32, exact)
    assert within_parity(row) and row["decisive_anchors"] > 10_000, row


needs_native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="fast mode computes in bf16 only on a CPU "
                                       "with native bf16 (AVX512-BF16 or AMX); this one has none")


@pytest.mark.reference_fixtures
@pytest.mark.skipif(cpu_has_native_bf16(), reason="checks fast mode on CPUs without native bf16; this one has it")
def test_fast_mode_without_native_bf16_is_exact_mode(reference_run):
    _, fast, fused_fp32 = reference_run
    assert autocast_dtype("cpu") == torch.float32
    assert all(torch.equal(fast[key], fused_fp32[key]) for key in fused_fp32)


@pytest.mark.reference_fixtures
@needs_native_bf16
def test_fast_mode_on_reference_checkpoint_is_close_to_exact_mode(reference_run):
    exact, fast, _ = reference_run
    assert fast["pred_logits"].dtype == torch.float32 and fast["pred_points"].dtype == torch.float32
    assert fast["pred_logits"].shape == exact["pred_logits"].shape
    assert not torch.equal(fast["pred_logits"], exact["pred_logits"]), "fast mode did not use reduced precision"
    assert (fast["pred_logits"] - exact["pred_logits"]).abs().max() < LOGIT_LIMIT
    assert (fast["pred_points"] - exact["pred_points"]).abs().max() < POINT_LIMIT_PX

    margin = exact["pred_logits"][:, 1] - exact["pred_logits"][:, 0]
    fast_margin = fast["pred_logits"][:, 1] - fast["pred_logits"][:, 0]
    decisive = margin.abs() > 2 * LOGIT_LIMIT  # each of the two logits may move by the limit
    assert torch.equal((margin > 0)[decisive], (fast_margin > 0)[decisive])

    counter = Counter(PointCounter())
    exact_count = len(counter.select(exact)[0])
    fast_count = len(counter.select(fast)[0])
    assert exact_count > 100
    assert abs(fast_count - exact_count) <= int((~decisive).sum())
    assert abs(fast_count - exact_count) <= 0.1 * exact_count


def test_fast_mode_keeps_the_first_conv_and_the_output_convs_in_fp32():
    # conv1_1's rounding moves every later map: with its weights or pixels in bf16 the demo checkpoint
    # counted 1.2 % more people in fast mode than in exact mode; with both in fp32, the same number.
    torch.manual_seed(0)
    model = PointCounter(ModelSettings()).eval()
    exact, fast = TorchNetwork(model, "cpu"), TorchNetwork(model, "cpu", amp=True)
    dtype = autocast_dtype("cpu")
    first, exact_first = fast.network.backbone.body1[0], exact.network.backbone.body1[0]
    assert first.conv.weight.dtype == torch.float32 and torch.equal(first.conv.weight, exact_first.conv.weight)
    assert fast.network.backbone.body1[3].conv.weight.dtype == dtype
    pixels = torch.randn(1, 3, 40, 56).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        output = first(pixels)
        assert output.dtype == dtype and torch.equal(output, exact_first(pixels).to(dtype))
    for head in ("regression", "classification"):
        weights = (getattr(network.network, head).output.module.conv.weight for network in (fast, exact))
        assert torch.equal(*weights)


def strip_difference_bound(images: torch.Tensor, layers: list, pool) -> torch.Tensor:
    """Largest difference between two computations of ``pool(layers(images))`` whose convolutions sum in
    different orders (strips call oneDNN with other heights and paddings than the whole map), per output.

    Through each ``ConvReLU``: a difference d of the inputs reaches the output as at most |W| * d; the two
    sums differ by the fp32 bound of inputs as large as |a| + d; ReLU is 1-Lipschitz; an output rounded
    to bf16 (round to nearest, so monotone) moves the two values apart by at most one ulp <= 2u|y| more,
    u = 2^-8, and |y| <= (1 + gamma) * sum|w x| <= 1.01 * sum|w x|. A 2x2 max differs by at most the
    largest difference in its window."""
    import torch.nn.functional as F

    values, bound = images.double(), torch.zeros(images.shape, dtype=torch.float64)
    for layer in layers:
        conv = layer.conv
        reach = values.abs() + bound
        bound = F.conv2d(bound, conv.weight.double().abs(), padding=conv.padding) + fp32_conv_bound(reach, conv)
        if torch.bfloat16 in (layer.output_dtype, conv.weight.dtype):
            bound = bound + 2 * BF16_UNIT_ROUNDOFF * 1.01 * absolute_conv(reach, conv)
        values = layer(values.to(images.dtype).contiguous(memory_format=torch.channels_last)).double()
    return F.max_pool2d(bound, 2, 2)


@pytest.mark.parametrize("amp", [False, True], ids=["exact", "fast"])
def test_layers_in_strips_equal_the_whole_map_within_rounding(amp):
    from inference.torch_network import STRIP_ROW_BYTES, stage_layers

    torch.manual_seed(6)
    network = TorchNetwork(PointCounter().eval(), "cpu", amp=amp)
    rows = STRIP_ROW_BYTES // torch.empty((), dtype=network.dtype).element_size()
    conv1_1, conv1_2, pool1, conv2_1, conv2_2 = stage_layers(network.network.backbone.body1)
    height = 3 * rows + 8  # a short last strip
    images = torch.rand(1, 3, height, 96).to(network.dtype).contiguous(memory_format=torch.channels_last)
    calls = []
    hook = conv1_2.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[2]))
    with torch.inference_mode():
        strips = network.in_strips([conv1_1, conv1_2], pool1, images)
        hook.remove()
        # conv1_2 reads one row of context on each inner side; at the map's edges it pads with zeros.
        assert calls == [rows + 1, rows + 2, rows + 2, 8 + 1]
        whole = pool1(conv1_2(conv1_1(images)))
        assert strips.shape == whole.shape == (1, 64, height // 2, 48)
        first_bound = strip_difference_bound(images, [conv1_1, conv1_2], pool1)
        assert ((strips.double() - whole.double()).abs() <= first_bound).all()
        second = network.in_strips([conv2_1, conv2_2], pool1, whole)
        second_whole = pool1(conv2_2(conv2_1(whole)))
        second_bound = strip_difference_bound(whole, [conv2_1, conv2_2], pool1)
        assert ((second.double() - second_whole.double()).abs() <= second_bound).all()
    if network.dtype == torch.float32:
        # In fp32 the bounds are small beside the outputs (a strip reading wrong rows is off by about
        # the outputs' size). In bf16 the worst case of one ulp per layer, spread by |W|, is as large as the
        # outputs: there this test checks the strips' calls and shapes, and fp32 checks their rows.
        assert first_bound.max() <= 1e-3 * whole.abs().max()
        assert second_bound.max() <= 2e-2 * second_whole.abs().max()
