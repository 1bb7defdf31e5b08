"""util/distributed.py: devices and the process group torchrun describes."""
import pytest
import torch


def test_more_processes_than_gpus_is_a_one_line_error_naming_the_flag(monkeypatch):
    # torchrun --nproc_per_node 2 on a machine with one GPU: rank 1 would ask for cuda:1.
    from util.distributed import init_distributed

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError) as caught:
        init_distributed(torch.device("cuda"))
    message = str(caught.value)
    assert "\n" not in message and "local rank 1" in message and "--nproc_per_node 1" in message
