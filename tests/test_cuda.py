"""On a CUDA machine: training with and without --amp, torchrun with NCCL, and the exact forward pass
against the reference outputs. Every test here skips where PyTorch sees no CUDA device."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from inference import Counter
from models import ModelSettings, PointCounter
from inference.parity import compare_outputs, within_parity
from helpers import REFERENCE, REFERENCE_CHECKPOINT, REAL_SAMPLES, ROOT

# Where a GPU must be tested (REQUIRE_CUDA=1 on a GPU machine), a CUDA that fails to load is a failure,
# not a skip.
CUDA_REQUIRED = os.environ.get("REQUIRE_CUDA", "").strip().lower() in ("1", "true", "yes")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available() and not CUDA_REQUIRED,
                                                   reason="needs a CUDA device (REQUIRE_CUDA=1 makes its absence a "
                                                          "failure)")]


@pytest.fixture(autouse=True)
def cuda_and_a_private_cache(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        pytest.fail(f"REQUIRE_CUDA=1, but PyTorch {torch.__version__} sees no CUDA device "
                    f"(built for CUDA {torch.version.cuda}, {torch.cuda.device_count()} devices)", pytrace=False)
    monkeypatch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path / "cache"))  # not the user's ~/.cache

DEMO_EPOCH = ["--dataset_file", "Demo_Hazy", "--backbone_weights", "none", "--device", "cuda", "--epochs", "1",
              "--eval_freq", "1"]


@pytest.mark.parametrize("amp", [False, True])
def test_one_demo_epoch_on_cuda(tmp_path, amp, capsys):
    output = tmp_path / "run"
    assert train.main(DEMO_EPOCH + ["--output_dir", str(output)] + (["--amp"] if amp else [])) == 0
    expected = str(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if amp else "torch.float32"
    training_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    assert re.search(rf"process\(es\) on cuda(:0)?, {expected.replace('torch.', '')},", training_line), training_line
    content = torch.load(output / "latest.pth", weights_only=True)
    assert content["amp"] is amp
    assert all(torch.isfinite(value).all() for value in content["model"].values() if value.is_floating_point())


def test_one_process_torchrun_with_nccl(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(ROOT / "train.py")] + DEMO_EPOCH + ["--output_dir", str(tmp_path / "run"), "--amp"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                              env=dict(os.environ, TORCH_DISTRIBUTED_DEBUG="INFO"))  # inherits the private cache
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert re.search(r"1 process\(es\) on cuda:0, bfloat16|1 process\(es\) on cuda:0, float16", finished.stdout)
    assert (tmp_path / "run" / "latest.pth").is_file() and (tmp_path / "run" / "best_mae.pth").is_file()


@pytest.mark.reference_fixtures
def test_exact_forward_on_cuda_matches_the_reference_outputs():
    counter = Counter.from_checkpoint(REFERENCE_CHECKPOINT, device="cuda", log=lambda message: None)
    reference = np.load(REFERENCE / "A_IMG_160_reference_outputs.npz")
    outputs = counter.outputs(REAL_SAMPLES / "A_IMG_160.jpg")
    row = compare_outputs(outputs, reference)
    assert within_parity(row), row


def test_exact_mode_on_cuda_stays_small_and_within_parity_on_a_1024_px_tile_window():
    # A 1312 x 1312 window (a 1024-px tile and its margins) gives a 164 x 164 stride-8 map, on which
    # cuDNN's heuristic plan for IEEE fp32 took a 64.8 GB workspace on an H100.
    from inference.torch_network import TorchNetwork

    torch.manual_seed(0)
    model = PointCounter(ModelSettings()).eval()
    images = torch.rand(1, 3, 1312, 1312)
    network = TorchNetwork(model, device="cuda")
    network(images.cuda())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    outputs = network(images.cuda())
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() < 4 * 2**30
    with torch.inference_mode():
        reference = model(images)
    row = compare_outputs({key: value[0] for key, value in outputs.items()},
                          {key: value[0] for key, value in reference.items()})
    assert within_parity(row), row
