"""``NetworkBackend``: what ``Counter`` runs, declared by both backends and enough for ``Counter``."""
import pytest
import torch

from inference import Counter, NetworkBackend, OnnxNetwork, TorchNetwork
from models import ModelSettings


class FixedScores(NetworkBackend):
    """A backend of a few lines: every anchor at its cell's centre, a person where ``person`` says."""

    amp = False
    has_restoration = False

    def __init__(self, person):
        self.person = person

    @property
    def settings(self):
        return ModelSettings(row=1, line=1)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def padding_fill(self):
        return torch.zeros(3)

    def __call__(self, images, restore=False):
        height, width = (side // 8 for side in images.shape[-2:])
        ys, xs = torch.meshgrid(torch.arange(height) * 8 + 4.0, torch.arange(width) * 8 + 4.0, indexing="ij")
        points = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2)
        logits = torch.zeros(1, height * width, 2)
        logits[0, :, 1] = self.person(points[0]).float() * 2 - 1
        return {"pred_logits": logits, "pred_points": points}


def test_both_backends_declare_the_interface():
    assert NetworkBackend in TorchNetwork.__mro__ and NetworkBackend in OnnxNetwork.__mro__


def test_a_backend_missing_part_of_the_interface_cannot_be_built():
    class NoDevice(FixedScores):
        device = NetworkBackend.device

    with pytest.raises(TypeError, match="abstract.*device"):
        NoDevice(lambda points: points[:, 0] > 0)


def test_counter_runs_any_backend_and_refuses_what_is_none():
    # A 200 x 300 picture is padded to 256 x 384: 32 x 48 cells, 12 columns of them with centres at x < 100
    # (points are not cut to the picture, as upstream).
    left = Counter(FixedScores(lambda points: points[:, 0] < 100), tile_size=0).predict(torch.rand(3, 200, 300))
    assert left["count"] == 32 * 12 and (left["points"][:, 0] < 100).all()
    # In 2 x 3 tiles every cell is taken once, from the tile whose core holds it.
    everyone = FixedScores(lambda points: points[:, 0] >= 0)
    tiled = Counter(everyone, tile_size=128).predict(torch.rand(3, 200, 300))
    assert tiled["count"] == 32 * 48
    assert sorted(map(tuple, tiled["points"].tolist())) == [(4.0 + 8 * x, 4.0 + 8 * y) for x in range(48)
                                                            for y in range(32)]
    with pytest.raises(ValueError, match="fast mode .* runs in fp32"):
        Counter(FixedScores(lambda points: points[:, 0] < 100), amp=True)
    with pytest.raises(TypeError, match="expected a PointCounter or a NetworkBackend, got str"):
        Counter("weights.pth")


def test_restoring_with_a_network_without_the_module_is_one_clear_error():
    counter = Counter(FixedScores(lambda points: points[:, 0] >= 0))
    with pytest.raises(ValueError, match="no restoration module, so it cannot restore images: that needs a .pth"):
        counter.predict(torch.rand(3, 64, 64), restore=True)
