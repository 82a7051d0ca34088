"""The training loader: the MTL schedule's micro-batches, collated, with their teacher targets.

An IterableDataset for DataLoader workers: worker w of W yields micro-batches m ≡ w (mod W) of
the one global sequence, and the DataLoader's round-robin keeps that order. A rank's share of a
scheduled micro-batch is yielded as `chunks` equal pieces (more than one only after a resume on
fewer ranks, where the share outgrows the recipe's micro_batch_size: see schedule.BatchSplit).
Teacher targets are gathered by `feature_id` here, in the workers, and reconstructed to dense
teacher log-probabilities over each feature's support; the training process never opens a
teacher model.
"""

from __future__ import annotations

import signal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset, get_worker_info

from road_ds.batching import collate
from road_ds.errors import DataError
from road_ds.schedule import MTLSampler
from road_ds.store import OUTPUTS, TeacherSet, reconstruct


def teacher_targets(teachers: TeacherSet, dataset: str, split: str, kind: str, batch: dict) -> dict[str, torch.Tensor]:
    """Dense teacher log-probs per output, [teachers, batch, support width]."""
    g = teachers.gather(dataset, split, batch["feature_id"].numpy())
    out = {}
    for o in OUTPUTS[kind]:
        if kind == "span":
            m = g[f"{o}_logit"].shape[0]
            support = batch["support"].unsqueeze(0).expand(m, -1, -1)
            out[o] = reconstruct(g[f"{o}_logit"], g[f"{o}_lse"], g[f"{o}_idx"], support)
        else:
            out[o] = reconstruct(g[f"{o}_logit"], g[f"{o}_lse"])
    return out


GOLD = ("label", "start_positions", "end_positions")


def transfer_rows(ft) -> np.ndarray | None:
    """Which feature rows belong to the transfer set (examples past the dataset's `labeled`), or None."""
    n = ft.spec.labeled
    if n is None:
        return None
    kept = pa.array(ft.examples["id"][:n])
    return ~pc.is_in(ft.table.data.table.column("example_id"), value_set=kept).to_numpy()


def drop_gold(batch: dict, unlabeled: np.ndarray) -> dict:
    """Gold -100 on the rows without labels: cross-entropy skips them, KD still distils them."""
    mask = torch.from_numpy(unlabeled)
    for k in GOLD:
        if k in batch:
            batch[k] = batch[k].masked_fill(mask, -100)
    return batch


class TrainBatches(IterableDataset):
    """Every micro-batch from the sampler's saved position to `max_steps`, in schedule order."""

    def __init__(self, tables: dict, teachers: dict[str, list[str]], sampler_kwargs: dict, sampler_state: dict | None, max_steps: int, pad_id: int,
                 chunks: int = 1):
        self.tables = tables  # dataset name -> FeatureTable of its train split
        self.teachers = teachers  # dataset name -> teacher store dirs
        self.sampler_kwargs = sampler_kwargs
        self.sampler_state = sampler_state
        self.max_steps = max_steps
        self.pad_id = pad_id
        self.chunks = chunks
        self.transfer = {name: m for name, ft in tables.items() if (m := transfer_rows(ft)) is not None}

    def __iter__(self):
        try:
            yield from self._batches()
        except DataError as e:  # handed over as an item: the trainer raises it as itself, one line, no worker traceback
            yield {"error": e}

    def _batches(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        sampler = MTLSampler(**self.sampler_kwargs)
        if self.sampler_state:
            sampler.load_state_dict(self.sampler_state)
        stores = {name: TeacherSet.open(paths) for name, paths in self.teachers.items()}  # opened per worker
        arrow = {name: ft.table.data.table for name, ft in self.tables.items()}
        m = 0
        while sampler.step < self.max_steps:
            step = sampler.step
            for micro, (name, share) in enumerate(sampler.next_step()):
                for chunk, rows in enumerate(np.split(share, self.chunks)):
                    if m % nw == wid:
                        ft = self.tables[name]
                        batch = collate(arrow[name], rows, pad_id=self.pad_id)
                        if name in self.transfer:
                            batch = drop_gold(batch, self.transfer[name][rows])
                        item = {"step": step, "micro": micro, "chunk": chunk, "dataset": name, "batch": batch}
                        if name in stores:
                            item["teacher"] = teacher_targets(stores[name], name, ft.split, ft.spec.task_type.kind, batch)
                        yield item
                    m += 1


def schedule_kwargs(recipe, tables: dict, world: int, rank: int, per_rank: int | None = None) -> dict:
    """The MTL sampler's arguments: which dataset and rows each micro-batch of each step takes
    (`per_rank` rows of each on this rank; default the recipe's micro_batch_size)."""
    T, mtl = recipe.train, recipe.mtl
    return dict(sizes={n: len(ft) for n, ft in tables.items()}, task_sizes={n: len(ft.examples) for n, ft in tables.items()},
                micro_batch_size=per_rank or T.micro_batch_size, passes=mtl.passes, world=world, rank=rank, policy=mtl.policy,
                temperature=mtl.temperature, seed=T.seed)


def _worker_init(_: int) -> None:
    """DataLoader workers leave SIGTERM/SIGUSR1/SIGINT to the training process, which checkpoints and then ends them."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def train_loader(recipe, tables: dict, teachers: dict, sampler_kwargs: dict, state: dict | None, pad_id: int,
                 chunks: int = 1) -> torch.utils.data.DataLoader:
    """Micro-batches in schedule order from `state` on; DataLoader workers gather the teacher targets."""
    batches = TrainBatches(tables, teachers, sampler_kwargs, state, recipe.train.max_steps, pad_id, chunks)
    workers = recipe.train.num_workers
    return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=False,
                                       prefetch_factor=4 if workers else None, worker_init_fn=_worker_init)


def end_workers(it) -> None:
    """Shut a loader iterator's workers down. They ignore SIGTERM (the training process handles it),
    so a run ended by an exception would otherwise wait forever at exit, joining a worker blocked on
    its queue; the iterator's own shutdown tells them to stop and joins them."""
    shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()
