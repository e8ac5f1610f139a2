"""Data-parallel training with ``torchrun``: the same ``pretrain`` call runs on 1 process or on N.

Launch any script that calls :func:`medmae_nb.train.pretrain` with ``torchrun --nproc_per_node=N script.py``
(``--nnodes`` and a rendezvous endpoint for several machines). ``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`setup` reads them, joins the process group (NCCL on GPUs, gloo on the CPU) and gives each
process its GPU. There is no home-made scheduler: this is PyTorch's own ``DistributedDataParallel``.

References:
    Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "setup"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly 1-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on the process that writes checkpoints, logs and progress bars (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError as err:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer; torchrun sets it for "
                           "you") from err


def setup(device: torch.device | None = None) -> tuple[DistInfo, torch.device | None]:
    """Joins the process group when this process was started by ``torchrun`` with ``WORLD_SIZE > 1``.

    An already initialised group is used as it is. Each process of a CUDA run gets ``cuda:LOCAL_RANK``.

    Args:
        device: the device asked for (None = decide later); a CUDA device is replaced by this process's GPU.

    Returns:
        ``(info, device)``.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        info = DistInfo(rank, world, _env_int("LOCAL_RANK", rank % max(1, torch.cuda.device_count() or 1)),
                        dist.get_backend())
    else:
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return DistInfo(), device
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        info = DistInfo(rank, world, local_rank, backend)
    if info.backend == "nccl":
        device = torch.device("cuda", info.local_rank)
    return info, device


def barrier(info: DistInfo) -> None:
    """Waits for every process (no-op in a 1-process run)."""
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sums a tensor over processes in place and returns it (no-op in a 1-process run)."""
    if info.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
