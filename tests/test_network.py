"""The network: anchor layout and order, output shapes, device hygiene, upstream parity."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models import ModelSettings, PointCounter
from models.anchors import anchor_points
from helpers import padded_outputs


@pytest.mark.parametrize("row,line", [(2, 2), (3, 3), (1, 2), (2, 4)])
def test_anchor_points_follow_the_formula_and_order(row, line):
    grid_h, grid_w, stride = 3, 5, 8
    anchors = anchor_points(grid_h, grid_w, stride, row, line)
    expected = []
    for i in range(grid_h):
        for j in range(grid_w):
            for r in range(1, row + 1):
                for c in range(1, line + 1):
                    expected.append(((j + 0.5) * stride + (c - 0.5) * stride / line - stride / 2,
                                     (i + 0.5) * stride + (r - 0.5) * stride / row - stride / 2))
    assert anchors.dtype == torch.float32
    assert anchors.shape == (grid_h * grid_w * row * line, 2)
    np.testing.assert_array_equal(anchors.numpy(), np.array(expected, dtype=np.float32))


def test_heads_emit_outputs_in_anchor_order():
    torch.manual_seed(0)
    model = PointCounter(ModelSettings()).eval()
    with torch.no_grad():
        for head in (model.regression, model.classification):
            head.output.weight.zero_()
            head.output.bias.zero_()
        # Person logit of anchor k within its cell = k; its x offset = k / 100 px (times 100 in the net).
        model.classification.output.bias[1::2] = torch.arange(4.0)
        model.regression.output.bias[0::2] = torch.arange(4.0) / 100
        outputs = model(torch.rand(1, 3, 32, 48))
    anchors = anchor_points(4, 6)
    within_cell = torch.arange(4.0).repeat(4 * 6)
    assert outputs["pred_logits"].shape == (1, 4 * 6 * 4, 2)
    torch.testing.assert_close(outputs["pred_logits"][0, :, 1], within_cell)
    torch.testing.assert_close(outputs["pred_points"][0, :, 0], anchors[:, 0] + within_cell, atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs["pred_points"][0, :, 1], anchors[:, 1], atol=1e-5, rtol=0)


def test_output_shapes_and_dtypes():
    model = PointCounter(ModelSettings(row=3, line=3)).eval()
    with torch.no_grad():
        outputs = model(torch.rand(2, 3, 64, 96))
    assert set(outputs) == {"pred_logits", "pred_points"}
    assert outputs["pred_logits"].shape == (2, 8 * 12 * 9, 2)
    assert outputs["pred_points"].dtype == torch.float32


def test_input_not_multiple_of_16_is_rejected_with_sizes():
    model = PointCounter().eval()
    with pytest.raises(ValueError, match="100x64"):
        model(torch.rand(1, 3, 100, 64))


class DeviceRecorder(TorchDispatchMode):
    """Records the device of every tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in torch.utils._pytree.tree_leaves(result):
            if isinstance(value, torch.Tensor):
                self.devices.add(value.device.type)
        return result


def test_model_on_cpu_creates_nothing_on_another_device():
    model = PointCounter(ModelSettings(input_norm="imagenet")).eval()
    image = torch.rand(3, 40, 56)
    recorder = DeviceRecorder()
    # A tensor made without an explicit device would land on "meta" here and break the forward pass.
    with torch.device("meta"), recorder:
        outputs = padded_outputs(model, image)
    assert recorder.devices == {"cpu"}
    assert outputs["pred_points"].device.type == "cpu"
    assert outputs["pred_points"].shape == (16 * 16 * 4, 2)
