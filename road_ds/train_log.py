"""What a training run logs, on rank 0: metrics.jsonl, TensorBoard scalars and the progress bar,
and the per-dataset sums behind each log line (reduced over the ranks when the line is written)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from road_ds.atomic import disk_full, is_disk_full, write_text
from road_ds.dist import all_reduce_sum

COLS = ("loss", "ce", "kd", "weight", "enc_grad", "cls_cos")  # per dataset and micro-batch


class Logger:
    """Rank 0 only: a JSONL file, TensorBoard scalars, and a progress bar."""

    def __init__(self, out: Path, enabled: bool, total: int, start: int):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.path = out / "metrics.jsonl"
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start if start else None)
        self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """On resume, drop what the killed run logged past its last checkpoint."""
        if self.enabled and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            write_text(self.path, "".join(k + "\n" for k in keep))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"step": step, **values}) + "\n")
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(self.path, None, e) from None
            raise
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)

    def progress(self, step: int, **postfix) -> None:
        """The bar at `step` (a resumed run's first line moves it from the resumed step, not by log_every)."""
        if self.enabled:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
            self.bar.close()


class StepStats:
    """Sums and counts per dataset of each micro-batch's loss and parts (NaN parts not counted),
    rows and loader wait, since the last log line."""

    def __init__(self, names, world: int):
        self.names, self.world = sorted(names), world
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.names), len(COLS), dtype=torch.float64)
        self.counts = torch.zeros_like(self.sums)
        self.started, self.samples, self.waited, self.stepped = time.time(), 0, 0.0, 0.0

    def add(self, micros: list, wait: float, seconds: float) -> None:
        """One optimizer step: its micro-batches as `train_step` returns them, the loader wait and the step's seconds."""
        for name, loss, parts, rows in micros:
            v = torch.tensor([loss, *(parts.get(c, float("nan")) for c in COLS[1:])], dtype=torch.float64)
            ok = torch.isfinite(v)
            self.sums[self.names.index(name)] += torch.where(ok, v, 0.0)
            self.counts[self.names.index(name)] += ok
            self.samples += rows * self.world
        self.waited += wait
        self.stepped += seconds

    def values(self) -> dict:
        """The means over all ranks (collective: every rank calls it), throughput and data wait; then starts afresh."""
        tot, num = all_reduce_sum(self.sums.clone()), all_reduce_sum(self.counts.clone())
        vals = {"loss": tot[:, 0].sum().item() / max(1.0, num[:, 0].sum().item())}
        for j, n in enumerate(self.names):
            for c, k in enumerate(COLS):
                if num[j, c] > 0:
                    vals[f"{k}/{n}"] = tot[j, c].item() / num[j, c].item()
        vals["samples_per_s"] = self.samples / max(time.time() - self.started, 1e-9)
        vals["data_wait_frac"] = self.waited / max(self.stepped, 1e-9)  # of the step time, spent waiting for the DataLoader
        self.reset()
        return vals
