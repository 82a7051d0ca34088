"""The multi-task schedule (ROaD Algorithm 1) as counters, after Megatron-LM's samplers.

Which dataset a micro-step draws from is a pure function of (seed, step, micro), so every rank
agrees without talking (DESIGN invariant 3) and ZeRO collectives stay in lock-step. Where a
dataset is in its data is a consumed-samples counter over an endless, seeded sequence of
epoch permutations, so resuming costs O(1) and never replays batches, and the data does not
depend on the world size as long as the global batch stays the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

POLICIES = ("uniform", "proportional", "temperature")
_SCHEDULE, _PERMUTATION = 0, 1  # domain tags, so the two uses of one seed never share a stream


def _name_key(name: str) -> int:
    """A stable 63-bit key for a dataset name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


class TaskSchedule:
    """Which dataset each micro-batch of each optimizer step draws from.

    `sizes` are what the policies weigh: examples, not feature rows, so a QA set's long contexts
    (several windows per question) do not raise its share of the updates."""

    def __init__(self, sizes: dict[str, int], policy: str = "proportional", temperature: float = 2.0, seed: int = 0):
        if not sizes:
            raise ValueError("a task schedule needs at least one dataset")
        bad = {n: s for n, s in sizes.items() if int(s) <= 0}
        if bad:
            raise ValueError(f"datasets without rows cannot be scheduled: {bad}")
        if policy not in POLICIES:
            raise ValueError(f"unknown sampling policy '{policy}'; known: {', '.join(POLICIES)}")
        if policy == "temperature" and not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self.names = sorted(sizes)  # canonical order: the caller's dict order must not matter
        self.sizes = {n: int(sizes[n]) for n in self.names}
        self.policy, self.temperature, self.seed = policy, float(temperature), int(seed)
        size = np.array([self.sizes[n] for n in self.names], dtype=np.float64)
        weight = {"uniform": np.ones_like(size), "proportional": size, "temperature": size ** (1.0 / self.temperature)}[policy]
        self._p = weight / weight.sum()
        self._cdf = np.cumsum(self._p)

    def probabilities(self) -> dict[str, float]:
        return {n: float(p) for n, p in zip(self.names, self._p)}

    def dataset_for(self, step: int, micro: int) -> str:
        """Pure in (seed, step, micro): the same answer on every rank, process and call order."""
        u = np.random.default_rng([self.seed, _SCHEDULE, int(step), int(micro)]).random()
        i = int(np.searchsorted(self._cdf, u * self._cdf[-1], side="right"))
        return self.names[min(i, len(self.names) - 1)]


@dataclass(frozen=True)
class BatchSplit:
    """How a scheduled micro-batch of `rows` rows (all ranks together) is fed: `per_rank` rows on
    each of `world` ranks, as `chunks` accumulated micro-batches of `chunk` rows. A run keeps its
    `rows` for life, so a resume on another world size reads the same rows at every step."""

    rows: int
    world: int
    chunks: int

    @property
    def per_rank(self) -> int:
        return self.rows // self.world

    @property
    def chunk(self) -> int:
        return self.per_rank // self.chunks

    @classmethod
    def fit(cls, rows: int, world: int, cap: int) -> BatchSplit:
        """The fewest equal chunks of at most `cap` rows (the recipe's micro_batch_size) per rank."""
        if rows <= 0 or world <= 0 or cap <= 0:
            raise ValueError(f"rows ({rows}), world ({world}) and cap ({cap}) must be positive")
        if rows % world:
            raise ValueError(f"{rows} rows per micro-batch do not split evenly over {world} ranks")
        per = rows // world
        chunks = next(k for k in range(-(-per // cap), per + 1) if per % k == 0)
        return cls(rows, world, chunks)


class DatasetCursor:
    """One dataset's position: samples consumed from an endless sequence of seeded epochs."""

    def __init__(self, size: int, seed: int, name: str, consumed: int = 0):
        if int(size) <= 0:
            raise ValueError(f"dataset '{name}' has no rows")
        self.size, self.seed, self.name = int(size), int(seed), name
        self.consumed = int(consumed)
        self._key = _name_key(name)
        self._perms: dict[int, np.ndarray] = {}  # the last epochs used; a batch spans at most a few

    @property
    def epoch(self) -> int:
        return self.consumed // self.size

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s row order: seeded by (seed, name, epoch) alone, never by world size."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed, _PERMUTATION, self._key, int(epoch)])
            perm = rng.permutation(self.size).astype(np.int64)
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def indices(self, start: int, count: int) -> np.ndarray:
        """Rows at global positions [start, start + count), across epoch boundaries."""
        out = np.empty(count, dtype=np.int64)
        done = 0
        while done < count:
            epoch, offset = divmod(start + done, self.size)
            n = min(count - done, self.size - offset)
            out[done:done + n] = self.permutation(epoch)[offset:offset + n]
            done += n
        return out

    def take(self, global_batch: int, rank: int, world: int) -> np.ndarray:
        """This rank's share of the next global batch; every rank advances by the whole batch."""
        if global_batch <= 0 or global_batch % world:
            raise ValueError(f"global batch {global_batch} does not split evenly over {world} ranks")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        micro = global_batch // world
        rows = self.indices(self.consumed + rank * micro, micro)
        self.consumed += global_batch
        return rows

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])


class MTLSampler:
    """`passes` (dataset, rows) pairs per optimizer step for one rank: the schedule plus cursors."""

    def __init__(self, sizes: dict[str, int], micro_batch_size: int, passes: int, world: int, rank: int,
                 policy: str = "proportional", temperature: float = 2.0, seed: int = 0, task_sizes: dict[str, int] | None = None):
        """`sizes`: rows per dataset (what the cursors walk); `task_sizes`: what the policy weighs
        (examples per dataset; default `sizes`)."""
        if micro_batch_size <= 0 or passes <= 0:
            raise ValueError(f"micro_batch_size ({micro_batch_size}) and passes ({passes}) must be positive")
        if task_sizes is not None and set(task_sizes) != set(sizes):
            raise ValueError(f"task_sizes name other datasets ({sorted(task_sizes)}) than sizes ({sorted(sizes)})")
        self.schedule = TaskSchedule(task_sizes or sizes, policy, temperature, seed)
        self.micro_batch_size, self.passes, self.world, self.rank = micro_batch_size, passes, world, rank
        self.cursors = {n: DatasetCursor(int(sizes[n]), seed, n) for n in self.schedule.names}
        self.step = 0

    def peek(self, step: int) -> list[str]:
        """The dataset names of step `step`'s micro-batches (no cursor moves)."""
        return [self.schedule.dataset_for(step, m) for m in range(self.passes)]

    def next_step(self) -> list[tuple[str, np.ndarray]]:
        out = []
        for name in self.peek(self.step):
            out.append((name, self.cursors[name].take(self.micro_batch_size * self.world, self.rank, self.world)))
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"step": self.step, "consumed": {n: c.consumed for n, c in self.cursors.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Datasets absent from the state start at 0; unknown ones mean the wrong checkpoint."""
        unknown = sorted(set(state["consumed"]) - set(self.cursors))
        if unknown:
            raise ValueError(f"sampler state names datasets this run does not have: {', '.join(unknown)}")
        self.step = int(state["step"])
        for n, c in self.cursors.items():
            c.consumed = int(state["consumed"].get(n, 0))
