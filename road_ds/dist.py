"""Rank and world from whichever launcher started us: deepspeed, torchrun, or Slurm's srun."""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


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


# DeepSpeed's CPU all-reduce (its shm comm op) maps one segment per rank, /dev/shm/<prefix>_<uid>_<master
# addr>_<master port>_<rank>, of this size, and never unlinks it.
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "deepspeed_allreduce_buffer"
SHM_SEGMENT_BYTES = 69_206_024


def init_deepspeed(cpu: bool, timeout_s: float = 600) -> None:
    """deepspeed.init_distributed, without DeepSpeed's /dev/shm leak on CPU.

    Left alone, every CPU run leaves one all-reduce segment per rank in /dev/shm (RAM) under a name
    keyed by the master port, until /dev/shm is full; then a rank cannot create its segment and its
    peers spin forever waiting to map it. So: refuse to start when /dev/shm cannot hold this node's
    segments, and once every rank has mapped every peer's (init_distributed returns only then; the
    barrier makes it every rank), unlink our own name: the memory stays mapped and is freed when the
    last rank exits, even on a kill.

    `timeout_s` bounds every collective: a rank whose peer is gone (a lost host, a hung process)
    fails after it instead of waiting forever, and the job's requeue takes over."""
    import deepspeed
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    shm = cpu and _shm_in_use()
    if shm:
        _check_shm_room()
    timeout = datetime.timedelta(seconds=timeout_s)
    # DeepSpeed's data-parallel group is a new_group() of all ranks, which takes torch's default
    # timeout (30 min), not the one given to init_distributed: set the default itself
    distributed_c10d.default_pg_timeout = timeout
    if distributed_c10d.default_pg_nccl_timeout is not None:
        distributed_c10d.default_pg_nccl_timeout = timeout
    deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl", timeout=timeout)
    if shm:
        dist.barrier()
        shm_segment(dist.get_rank()).unlink(missing_ok=True)


def shm_segment(rank: int) -> Path:
    """The name DeepSpeed's CPU all-reduce gives `rank`'s segment in this job (MASTER_ADDR/PORT)."""
    env = os.environ
    return SHM_DIR / f"{SHM_PREFIX}_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}_{rank}"


def _shm_in_use() -> bool:
    """DeepSpeed maps the segments only when all ranks share the node, as its launcher's LOCAL_SIZE
    says (srun and torchrun do not set it)."""
    local = os.environ.get("LOCAL_SIZE")
    return SHM_DIR.is_dir() and bool(local) and local == os.environ.get("WORLD_SIZE")


def _check_shm_room() -> None:
    st = os.statvfs(SHM_DIR)
    free, need = st.f_bavail * st.f_frsize, SHM_SEGMENT_BYTES * int(os.environ["LOCAL_SIZE"])
    if free < need:
        stale = list(SHM_DIR.glob(f"{SHM_PREFIX}_*"))
        raise RuntimeError(
            f"{SHM_DIR}: {free / 2**20:.0f} MiB free, DeepSpeed's CPU all-reduce needs {need / 2**20:.0f} MiB for {os.environ['LOCAL_SIZE']} rank(s) "
            f"on this node (without it the ranks hang at start); {len(stale)} {SHM_PREFIX}_* segments left by earlier runs "
            f"hold {sum(f.stat().st_size for f in stale) / 2**20:.0f} MiB: remove those of runs that have ended"
        )


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first(is_main: bool):
    """Rank 0 runs the body first (builds what a shared cache lacks), the others after it, reading
    what it made. Rank 0 reaches the barrier even when its body fails, so no rank waits forever."""
    if not is_main:
        barrier()
    try:
        yield
    finally:
        if is_main:
            barrier()


def rank0_logger(is_main: bool):
    """Progress lines to stderr from rank 0 only."""
    if is_main:
        return lambda m: print(m, file=sys.stderr, flush=True)
    return lambda m: None


def pick_device(local_rank: int = 0):
    """This rank's device: its GPU where there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def all_reduce_sum(x):
    """`x` summed over the ranks, in place (itself alone in a single process)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.all_reduce(x)
    return x
