"""Process group set-up, for one process or several started by torchrun (the device is picked in run/session.py).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we then join a process group (NCCL for CUDA tensors, gloo for CPU
tensors, so several processes run with train.device=cpu too, also on a machine without a GPU), each rank reads
its own shard of the data,
and the trainer averages gradients across ranks. One process needs none of this.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owner: bool = False  # this call joined the process group, so its teardown leaves it (`hba-fast compare` joins
    # once and runs every (arm, seed) inside, each run's setup finding the group already there)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owner = not torch.distributed.is_initialized()
    if owner:
        # The device is picked later (train.device may be cpu on a GPU machine): a backend for each device type.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank, world, local_rank, owner)


def broadcast_parameters(module: torch.nn.Module, dist: Dist) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if dist.world == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(t.data, src=0)


def teardown(dist: Dist) -> None:
    if dist.world > 1 and dist.owner and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
