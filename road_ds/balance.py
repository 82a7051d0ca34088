"""Task balance in the MTL mix: each task's loss is scaled so that the gradient it gives the shared
encoder's parameters has the same running size as every other task's.

Why: a span loss sends a gradient into every token of the encoder's output, a classification loss
into [CLS] alone, so the gradients they give the shared encoder differ by one to two orders of
magnitude (measured on MiniLM-L6 with squad2, sentiment and QNLI: 5.2-6.9 against 0.77-0.97 and
0.19-0.25). They barely conflict (cosine about 0), but once AdamW normalises per coordinate and the
global clip scales the sum, the largest task owns every update: the encoder's [CLS] collapses into
the span head's directions and the classifiers stay at chance. A static per-task weight fixes one
mix at one scale; this rule (GradNorm's target, equal gradient norms on the shared parameters,
reached in closed form instead of by a learned weight) needs no tuning:

    weight_i = G / n_i,   n_i = running mean (EMA) of ||dL_i / d theta_enc||,   G = geometric mean of the n_i

where L_i is a task's unweighted micro-batch loss and theta_enc the shared encoder's parameters. A
constant factor (loss scale, gradient accumulation, world size) cancels, a run with a single task
gets weight 1 exactly, and the weights are the same on every rank (the norms are averaged over
ranks before they enter the running mean), so an update is the gradient of one weighted sum of
losses. The norms are read by gradient hooks on the encoder's parameters, before DeepSpeed
accumulates or partitions anything, at the cost of one pass over the gradient per micro-batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TaskBalancer:
    """Per-task loss weights from running gradient norms at the encoder output (see module doc)."""

    def __init__(self, method: str = "grad_norm", decay: float = 0.9):
        if method not in ("grad_norm", "none"):
            raise ValueError(f"unknown balance method '{method}' (known: grad_norm, none)")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"balance decay must be in [0, 1), not {decay}")
        self.method, self.decay = method, float(decay)
        self.norms: dict[str, float] = {}  # task -> running ||dL/dH|| of its unweighted loss

    def weight(self, task: str) -> float:
        """The factor for `task`'s next loss: 1 for a task not seen yet (its first backward measures it)."""
        if self.method == "none" or task not in self.norms:
            return 1.0
        logs = [math.log(n) for n in self.norms.values()]
        return math.exp(sum(logs) / len(logs)) / self.norms[task]

    def observe(self, task: str, grad_norm: float, weight: float) -> None:
        """The encoder-output gradient norm of a loss that was scaled by `weight`."""
        if self.method == "none" or not weight > 0 or not math.isfinite(grad_norm) or grad_norm <= 0:
            return
        n = grad_norm / weight
        old = self.norms.get(task)
        self.norms[task] = n if old is None else self.decay * old + (1.0 - self.decay) * n

    def state_dict(self) -> dict:
        return {"method": self.method, "decay": self.decay, "norms": dict(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        self.norms = {k: float(v) for k, v in state.get("norms", {}).items()}


class EncoderProbe:
    """Watches the shared encoder during training: the norm of each micro-batch's gradient on its
    parameters (for the balancer), and how alike the [CLS] states of the micro-batch are (the
    collapse diagnostic: mean pairwise cosine; near 1, every input maps to the same [CLS])."""

    def __init__(self, encoder: nn.Module):
        self.grad_sq: torch.Tensor | None = None
        self.cls_cos: float | None = None
        self._handles = [encoder.register_forward_hook(self._forward)]
        self._handles += [p.register_hook(self._grad) for p in encoder.parameters() if p.requires_grad]

    def reset(self) -> None:
        self.grad_sq, self.cls_cos = None, None

    def _forward(self, module, args, output):
        h = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
        if torch.is_grad_enabled() and isinstance(h, torch.Tensor) and h.requires_grad:
            self.cls_cos = cls_cosine(h[:, 0])

    def _grad(self, grad: torch.Tensor) -> None:
        sq = torch.linalg.vector_norm(grad.detach(), dtype=torch.float32).square()
        self.grad_sq = sq if self.grad_sq is None else self.grad_sq + sq

    def grad_norm(self) -> float | None:
        """This micro-batch's ||dL/d theta_enc||, averaged over ranks (every rank calls it, in the same order)."""
        import torch.distributed as dist

        n = torch.zeros(2, dtype=torch.float64)
        if self.grad_sq is not None:
            n[0], n[1] = float(self.grad_sq.sqrt()), 1.0
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(n)
        return float(n[0] / n[1]) if n[1] > 0 else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def cls_cosine(cls: torch.Tensor) -> float | None:
    """Mean cosine between the [CLS] states of different rows of a batch (None for one row)."""
    x = cls.detach().float()
    if x.shape[0] < 2:
        return None
    x = torch.nn.functional.normalize(x, dim=-1)
    sim = x @ x.T
    n = x.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
