"""run_test.py under ``torchrun --nproc_per_node 2``: folders and test splits are split across processes,
which print and write what one process does."""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import run_test
from util.script import EXIT_SKIPPED
from helpers import ROOT, counting_checkpoint, tiny_dataset


@pytest.fixture(autouse=True)
def one_thread():
    """The torchrun processes run with OMP_NUM_THREADS=1, and their text files are compared with one
    process's exactly: the single process runs with one thread too, so that the same kernels with the same
    partition of the work compute both sides (other thread counts may sum in other orders)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchrun_run_test(args: list) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "run_test.py")] + args
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))


def without_rate(text: str) -> list:
    return [re.sub(r", [0-9.]+ images/s", "", line) for line in text.splitlines() if not line.startswith("wrote")]


@pytest.mark.slow
def test_two_processes_write_the_counts_and_summary_of_one(tmp_path, capsys):
    counting_checkpoint(tmp_path / "model.pth")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for index, size in enumerate([(60, 90), (130, 70), (48, 64), (100, 140), (64, 64)]):
        cv2.imwrite(str(pictures / f"p{index}.png"), rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
    (pictures / "notes.txt").write_text("not a picture")
    common = ["--weight_path", str(tmp_path / "model.pth"), "--input", str(pictures), "--device", "cpu"]
    assert run_test.main(common + ["--output_dir", str(tmp_path / "one")]) == EXIT_SKIPPED
    one = capsys.readouterr().out
    two = torchrun_run_test(common + ["--output_dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]  # torchrun reports any other code as a failure
    counts = (tmp_path / "one" / "counts.csv").read_text()
    assert (tmp_path / "two" / "counts.csv").read_text() == counts
    assert len(counts.splitlines()) == 6 and int(counts.splitlines()[1].split(",")[1]) > 0
    for name in sorted(os.listdir(tmp_path / "one" / "points")):
        assert (tmp_path / "two" / "points" / name).read_text() == (tmp_path / "one" / "points" / name).read_text()
    summary = [line for line in without_rate(two.stdout) if line.startswith("counted")]
    assert summary == [line for line in without_rate(one) if line.startswith("counted")]
    assert summary[0].startswith("counted 5 images,") and summary[0].endswith("1 files skipped")
    assert sorted(line for line in two.stdout.splitlines() if line.startswith("p")) == sorted(
        line for line in one.splitlines() if line.startswith("p"))


@pytest.mark.slow
def test_two_processes_print_the_metrics_of_one(tmp_path, capsys):
    counting_checkpoint(tmp_path / "model.pth")
    data = tiny_dataset(tmp_path / "data", num_train=1, num_test=5, size=(96, 80))
    args = data[:4] + data[6:] + ["--weight_path", str(tmp_path / "model.pth"), "--device", "cpu"]
    assert run_test.main(args) == 0
    one = capsys.readouterr().out
    two = torchrun_run_test(args)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.splitlines()[-1] == one.splitlines()[-1]
    assert two.stdout.splitlines()[-1].startswith("mae: ")
    assert without_rate(two.stdout) == without_rate(one)
