"""Where the scripts run: the device, the process group ``torchrun`` sets up, and the few collective
helpers the loops need."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but PyTorch sees no CUDA device; use --device cpu or auto")
    return device


@dataclass
class DistributedState:
    """Where this process runs: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedState:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): NCCL on
    CUDA, with one GPU per local rank; gloo on CPU. Without those variables: one process, no group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedState(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        devices = torch.cuda.device_count()
        if local_rank >= devices:
            raise RuntimeError(f"torchrun started local rank {local_rank} but this machine has {devices} CUDA "
                               f"device(s), one per process: use --nproc_per_node {devices} or fewer, or --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedState(rank, world_size, device)


def is_initialized() -> bool:
    """Whether this process is in a process group (``torchrun``): the one test of it."""
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` without a group."""
    if not is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def mean_across_ranks(values: dict) -> dict:
    """Average a dict of scalar tensors over ranks (one all-reduce); unchanged without a group."""
    if not is_initialized():
        return values
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float() for name in names])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(names, stacked))


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP keeps parameters in
    step, but each rank's last forward pass updates its own statistics."""
    if not is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
