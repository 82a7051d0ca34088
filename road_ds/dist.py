"""Rank and world from whichever launcher started us: deepspeed, torchrun, or Slurm's srun."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """torchrun and the deepspeed launcher set RANK/WORLD_SIZE/LOCAL_RANK; srun sets SLURM_PROCID/..."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World(0, 1, 0)


def _slurm_master() -> str:
    """The first host of the Slurm allocation (what every rank agrees on without talking)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodes:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodes.split(",")[0].split("[")[0]


def export_env() -> World:
    """Set the torch.distributed variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from
    whichever launcher ran us, so that `env://` initialisation works the same under deepspeed,
    torchrun, srun, or a plain `python` (one rank)."""
    world = world_from_env()
    env = os.environ
    env.setdefault("RANK", str(world.rank))
    env.setdefault("WORLD_SIZE", str(world.size))
    env.setdefault("LOCAL_RANK", str(world.local_rank))
    if world.size > 1 or "SLURM_JOB_ID" in env:
        env.setdefault("MASTER_ADDR", _slurm_master())
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000))
    else:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    return world


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(world: World, backend: str = "gloo") -> None:
    """Join the process group (once) when there is more than one rank."""
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", _slurm_master())
    os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
