"""inference/backend.py: ``NetworkBackend``, declared by both backends; a backend missing part of it cannot be
built."""
import pytest

from inference import NetworkBackend, OnnxNetwork, TorchNetwork
from helpers import FixedScores


def test_both_backends_declare_the_interface():
    assert NetworkBackend in TorchNetwork.__mro__ and NetworkBackend in OnnxNetwork.__mro__


def test_a_backend_missing_part_of_the_interface_cannot_be_built():
    class NoDevice(FixedScores):
        device = NetworkBackend.device

    with pytest.raises(TypeError, match="abstract.*device"):
        NoDevice(lambda points: points[:, 0] > 0)
