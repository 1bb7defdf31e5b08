"""models/precision.py: exact mode's IEEE fp32 convolutions on CUDA, only inside their block."""
import pytest
import torch

from models.precision import ieee_fp32_convolutions


def test_exact_mode_keeps_convolutions_from_tf32_only_inside_its_block_and_restores_the_settings():
    settings = (torch.backends.cudnn, "enabled"), (torch.backends.cudnn.conv, "fp32_precision"), (
        torch.backends.cuda.matmul, "fp32_precision")
    before = [getattr(owner, name) for owner, name in settings]
    with pytest.raises(KeyError):
        with ieee_fp32_convolutions():
            # cuDNN off (its heuristics' plans for IEEE fp32, see the docstring), cuBLAS in IEEE fp32
            assert [getattr(owner, name) for owner, name in settings] == [False, "ieee", "ieee"]
            raise KeyError("an error inside the block")
    assert [getattr(owner, name) for owner, name in settings] == before
