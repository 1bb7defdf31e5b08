import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.restoration import RestorationModule

STAGE_CHANNELS = (128, 256, 512)
STAGE_STRIDES = (2, 4, 8)
# Forward cost of the counter without the IRM (VGG16-BN to stride 16 + FPN + heads) on 384×512,
# in FLOP counted like FlopCounterMode (2 per multiply-add).
COUNTER_FORWARD_FLOPS_384X512 = 139.6e9


def stage_features(height, width, batch=1, seed=0, requires_grad=False):
    """Random stage 1-3 features for a ``height × width`` input (sizes rounded up like padded pooling)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(
            batch,
            channels,
            math.ceil(height / stride),
            math.ceil(width / stride),
            generator=generator,
            requires_grad=requires_grad,
        )
        for channels, stride in zip(STAGE_CHANNELS, STAGE_STRIDES)
    ]


@pytest.mark.parametrize("size", [(96, 128), (128, 128), (64, 40), (50, 66)])
def test_output_is_a_full_resolution_image_in_unit_range(size):
    torch.manual_seed(0)
    restoration = RestorationModule()
    restored = restoration(stage_features(*size, batch=2), size)
    assert restored.shape == (2, 3, *size)
    assert restored.dtype == torch.float32
    assert restored.min() >= 0 and restored.max() <= 1
    assert restored.std() > 0


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_is_the_one_the_docs_give():
    # docs/training.md: "145 k parameters"; docs/design.md's budget is 2 M. A change of the module must update the docs.
    assert parameter_count(RestorationModule()) == 145_475


def test_forward_flops_are_the_two_percent_the_docs_give():
    restoration = RestorationModule()
    features = stage_features(384, 512)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        restoration(features, (384, 512))
    flops = counter.get_total_flops()
    # docs/training.md: "about 2 % extra compute" (docs/design.md's budget is 15 %); the module is 2.2 % of the counter
    assert 0.015 * COUNTER_FORWARD_FLOPS_384X512 <= flops <= 0.025 * COUNTER_FORWARD_FLOPS_384X512


def test_gradients_reach_every_feature_map():
    torch.manual_seed(0)
    restoration = RestorationModule()
    features = stage_features(32, 48, batch=2, requires_grad=True)
    restoration(features, (32, 48)).mean().backward()
    for stage, feature in enumerate(features, start=1):
        assert feature.grad is not None, f"stage {stage}"
        assert feature.grad.abs().sum() > 0, f"stage {stage}"


def test_adam_steps_reduce_the_restoration_error():
    torch.manual_seed(0)
    restoration = RestorationModule()
    features = stage_features(32, 32, batch=2, seed=1)
    # A smooth scene (ramps and a flat channel), the kind of content a decoder of features can fit.
    ramp = torch.linspace(0.0, 1.0, 32)
    scene = torch.stack([ramp.expand(32, 32), ramp[:, None].expand(32, 32), torch.full((32, 32), 0.2)])
    target = torch.stack([scene, scene.flip(-1)])
    optimizer = torch.optim.Adam(restoration.parameters(), lr=1e-3)
    errors = []
    for _ in range(30):
        loss = F.mse_loss(restoration(features, (32, 32)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(loss.item())
    assert errors[-1] < 0.5 * errors[0], errors


def test_wrong_features_are_rejected_with_the_stage_named():
    restoration = RestorationModule()
    features = stage_features(32, 32)
    with pytest.raises(ValueError, match="stages 1, 2, 3"):
        restoration(features[:2], (32, 32))
    features[1] = torch.randn(1, 128, 8, 8)
    with pytest.raises(ValueError, match=r"features\[1\] \(stage 2\).*256"):
        restoration(features, (32, 32))


def test_widths_are_configurable():
    narrow = RestorationModule(width=(32, 16, 8))
    default = RestorationModule()
    assert parameter_count(narrow) < parameter_count(default)
    assert narrow(stage_features(32, 32), (32, 32)).shape == (1, 3, 32, 32)
