"""Process-group plumbing for torchrun: who am I, which device, and small collective helpers.

``torchrun --nproc_per_node=N tools/train.py ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_distributed` reads them and starts NCCL on GPUs or gloo on CPUs. Without them
everything degrades to a single process.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks the local rank's GPU when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device, timeout_minutes: int = 30) -> DistInfo:
    """Join the torchrun process group if the environment describes one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (a copy; the input is unchanged)."""
    if not info.enabled:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / info.world_size


def all_ranks_agree(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True only if ``flag`` is true on every rank (one tiny all-reduce)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: torch.nn.Module, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """``module`` in DistributedDataParallel under torchrun (gradients all-reduced in backward),
    else ``module`` itself."""
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
