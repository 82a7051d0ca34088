"""Knowledge-distillation math: multi-teacher targets and the student loss. Pure torch, no I/O.

Shapes: M teachers, B examples, S support width. A span head's S is the token positions of the
feature and a bool `support` [B, S] marks the valid ones; a classification head's S is its C
classes (support all valid, pass None). Teacher inputs are dense log-probabilities from
`road_ds.store.reconstruct`, -inf outside the support. `gold` [B] indexes S (span heads: gold
start or gold end, no-answer = 0 = [CLS]); -100 marks an example without a gold label.

Positions outside the support take no part in any softmax, and every -inf is kept out of
products (0 * -inf is NaN), so neither the loss nor its gradient can become NaN because of them.
"""

from __future__ import annotations

import torch

IGNORE = -100
METHODS = ("mean", "wkd", "anneal")


# ---------------------------------------------------------------------------- teacher targets


def wkd_weights(teacher_logp: torch.Tensor, gold: torch.Tensor, W: float = 0.75) -> torch.Tensor:
    """ROaD Algorithm 2 weights [M, B]: down-weight teachers whose argmax misses gold.

    Incorrect teachers get W, correct ones (M - n_w*W)/n_c, so the weights always sum to M and the
    combined target stays on the scale of a plain mean. With no correct teacher (the paper divides
    by zero there) every weight is 1, i.e. the plain mean. An ignored gold (-100) matches no
    teacher, so such examples also get the plain mean.
    """
    M = teacher_logp.shape[0]
    if not 0.0 <= W <= 1.0:
        raise ValueError(f"WKD weight W must be in [0, 1] (incorrect teachers count at most as much as correct ones), got {W}")
    correct = teacher_logp.argmax(-1) == gold.to(teacher_logp.device).unsqueeze(0)  # [M, B]
    n_c = correct.sum(0)
    n_w = M - n_c
    w_correct = (M - n_w.to(teacher_logp.dtype) * W) / n_c.clamp(min=1).to(teacher_logp.dtype)
    w = torch.where(correct, w_correct.unsqueeze(0), torch.full_like(w_correct, W).unsqueeze(0))
    return torch.where(n_c.unsqueeze(0) > 0, w, torch.ones_like(w))


def combine_teachers(teacher_logp: torch.Tensor, gold: torch.Tensor, method: str, W: float = 0.75) -> torch.Tensor:
    """Target logits [B, S] from M teachers' log-probabilities [M, B, S].

    `mean` averages logits (ROaD's plain multi-teacher KD; Hinton). Log-probabilities are logits
    shifted by a per-example constant, and the weights sum to M, so averaging them gives the same
    softmax. `wkd` is ROaD's weighted average (1/M) * sum_i w_i z_i with `wkd_weights`. `anneal`
    (BAM) mixes gold into the loss, not here, so its teacher part is the `mean` target.
    -inf (outside the support) stays -inf; a zero weight drops that teacher's term instead of
    multiplying -inf by 0.
    """
    if teacher_logp.dim() != 3:
        raise ValueError(f"teacher_logp must be [teachers, batch, support], got shape {tuple(teacher_logp.shape)}")
    teacher_logp = teacher_logp.detach()
    if method in ("mean", "anneal"):
        return teacher_logp.mean(0)
    if method == "wkd":
        w = wkd_weights(teacher_logp, gold, W).unsqueeze(-1)  # [M, B, 1]
        terms = torch.where(w > 0, w * teacher_logp, torch.zeros((), dtype=teacher_logp.dtype, device=teacher_logp.device))
        return terms.sum(0) / teacher_logp.shape[0]
    raise ValueError(f"unknown KD method {method!r} (expected one of {', '.join(METHODS)})")


def anneal_lambda(step: int, total_steps: int) -> float:
    """BAM teacher annealing: weight of gold in the target, linear from 0 (pure teacher) at the first
    step to 1 (pure gold) at the end, clamped outside [0, total_steps]."""
    if total_steps <= 0:
        raise ValueError(f"teacher annealing needs total_steps > 0, got {total_steps}")
    return min(1.0, max(0.0, step / total_steps))


# ---------------------------------------------------------------------------- student loss


def _masked_log_softmax(logits: torch.Tensor, support: torch.Tensor, T: float) -> torch.Tensor:
    """log-softmax over the support only; 0 (not -inf) outside it, so later products stay finite.
    Masking with `where` also cuts the gradient to the excluded positions."""
    neg_inf = torch.full((), -torch.inf, dtype=logits.dtype, device=logits.device)
    logp = torch.log_softmax(torch.where(support, logits / T, neg_inf), dim=-1)
    return torch.where(support, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))


def _check_args(student_logits, target_logits, alpha: float, temperature: float, method: str, lam: float | None) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be [batch, support], got shape {tuple(student_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if method not in METHODS:
        raise ValueError(f"unknown KD method {method!r} (expected one of {', '.join(METHODS)})")
    if method == "anneal" and target_logits is not None and (lam is None or not 0.0 <= lam <= 1.0):
        raise ValueError(f"teacher annealing needs lam in [0, 1] (see anneal_lambda), got {lam}")


def _checked_gold(gold: torch.Tensor, support: torch.Tensor, row_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(which rows have a gold label, gold as [B, 1] indices with -100 mapped to 0); a gold outside
    its support is an error (one host sync), since it would silently train on nothing."""
    S = support.shape[1]
    labeled = (gold != IGNORE) & row_ok
    safe_gold = torch.where(gold == IGNORE, torch.zeros_like(gold), gold)
    bad = (gold != IGNORE) & ((gold < 0) | (gold >= S))
    bad = bad | (labeled & ~support.gather(1, safe_gold.clamp(0, S - 1).unsqueeze(1)).squeeze(1))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"gold label {int(gold[i])} of example {i} is outside its valid support (width {S}); use -100 to ignore an example")
    return labeled, safe_gold.clamp(0, S - 1).unsqueeze(1)


def _annealed_ce(p: torch.Tensor, logq: torch.Tensor, safe_gold: torch.Tensor, labeled: torch.Tensor, lam: float) -> torch.Tensor:
    """BAM's per-row soft cross-entropy against lam * onehot(gold) + (1 - lam) * p (p alone without gold)."""
    onehot = torch.zeros_like(p).scatter_(1, safe_gold, 1.0)
    mix = torch.where(labeled.unsqueeze(1), lam * onehot + (1.0 - lam) * p, p)
    return -(mix * logq).sum(-1)


def kd_loss(
    student_logits: torch.Tensor,
    gold: torch.Tensor,
    target_logits: torch.Tensor | None,
    *,
    support: torch.Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
    t2: bool = True,
    method: str = "mean",
    lam: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """Student loss of one head output, averaged over the batch, and its parts for logging.

    - `target_logits` None: cross-entropy on gold (a teacher is a student without KD).
    - `mean` / `wkd`: alpha * CE(student, gold) + (1 - alpha) * T^2 * KL(p_target(T) || p_student(T)).
      CE is at T = 1. T^2 (Hinton) keeps the KD gradient, which shrinks like 1/T^2 for large T,
      on the same scale as CE whatever T is; `t2=False` drops it.
    - `anneal` (BAM): soft cross-entropy of the student at T against
      lam * onehot(gold) + (1 - lam) * softmax(target / T); alpha is unused (lam is the mix).
      With `t2` it is also multiplied by T^2, so the teacher part has the same gradient scale as
      the `mean`/`wkd` KD term at any T (at T = 1, BAM's setting, the factor is 1). An example
      without gold (-100) has nothing to mix in and uses the teacher distribution alone.

    Means: CE over examples with a gold label; KD over examples with a non-empty support and a
    finite target. Gold -100 is ignored by CE only, so unlabeled examples are still distilled.
    Student and target are computed in float32; the target gets no gradient (teachers are fixed).
    Parts: `ce` = mean CE at T = 1 (for monitoring, also under `anneal`), `kd` = the distillation
    term as it enters the loss before any alpha weighting (T^2 included); detached tensors.
    """
    _check_args(student_logits, target_logits, alpha, temperature, method, lam)
    B, S = student_logits.shape
    device = student_logits.device
    s = student_logits.float()
    gold = gold.to(device=device, dtype=torch.long)
    if support is None:
        support = torch.ones(B, S, dtype=torch.bool, device=device)
    support = support.to(device=device, dtype=torch.bool)
    if support.shape != (B, S):
        raise ValueError(f"support has shape {tuple(support.shape)}, the student logits {(B, S)}")

    # A row with an empty support (padding) has no distribution at all: give it a dummy one
    # (position 0) so no NaN reaches the backward, and leave the row out of every mean.
    row_ok = support.any(-1)
    support = support | ((~row_ok).unsqueeze(-1) & (torch.arange(S, device=device) == 0))

    labeled, safe_gold = _checked_gold(gold, support, row_ok)

    def batch_mean(per_example: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # sum / count over selected rows; with none selected this is 0 and still tied to the student graph
        return torch.where(rows, per_example, torch.zeros_like(per_example)).sum() / rows.sum().clamp(min=1)

    logq1 = _masked_log_softmax(s, support, 1.0)
    ce_rows = -logq1.gather(1, safe_gold).squeeze(1)
    ce = batch_mean(ce_rows, labeled)

    if target_logits is None:
        return ce, {"ce": ce.detach(), "kd": torch.zeros((), device=device)}

    T = float(temperature)
    scale = T * T if t2 else 1.0
    t = target_logits.detach().to(device=device, dtype=torch.float32)
    if t.shape != (B, S):
        raise ValueError(f"target_logits has shape {tuple(t.shape)}, the student logits {(B, S)}")
    # The target may be -inf inside the support too (a top-k that held all the mass): p = 0 there.
    t_ok = torch.isfinite(t) & support
    kd_rows_ok = row_ok & t_ok.any(-1)
    # (a row with no finite target gets NaN inside its softmax only; it is masked to 0 and, the
    # target having no gradient, cannot reach the backward)
    logp = _masked_log_softmax(torch.where(t_ok, t, torch.zeros_like(t)), t_ok, T)
    p = torch.where(t_ok, logp.exp(), torch.zeros_like(logp))
    logq = _masked_log_softmax(s, support, T)

    if method == "anneal":
        kd = scale * batch_mean(_annealed_ce(p, logq, safe_gold, labeled, lam), kd_rows_ok)
        return kd, {"ce": ce.detach(), "kd": kd.detach()}

    # KL(p || q) = sum p (log p - log q); where p = 0 both log-probs are finite (0 outside the
    # masks), so those terms are exactly 0 (0 log 0 = 0), never 0 * -inf
    kl_rows = (p * (logp - logq)).sum(-1)
    kd = scale * batch_mean(kl_rows, kd_rows_ok)
    loss = alpha * ce + (1.0 - alpha) * kd
    return loss, {"ce": ce.detach(), "kd": kd.detach()}


# ---------------------------------------------------------------------------- one micro-batch's loss


def compute_loss(kd, kind: str, out: dict, batch: dict, teacher: dict | None, step: int, max_steps: int) -> tuple[torch.Tensor, dict]:
    """Gold CE plus KD per head output (span: start and end, averaged), as the dataset's KD spec
    `kd` says (None: gold CE only, a teacher's loss). `teacher`: the dense teacher log-probabilities
    per output, [M, B, S]. Returns the loss and its float parts `ce` and `kd` for logging."""
    outputs = ("start", "end") if kind == "span" else ("cls",)
    total, parts = 0.0, {"ce": 0.0, "kd": 0.0}
    for o in outputs:
        z = out[o].float()
        gold = batch["start_positions" if o == "start" else "end_positions" if o == "end" else "label"].to(z.device)
        support = batch["support"].to(z.device) if kind == "span" else None
        if kd is None or teacher is None:
            loss, p = kd_loss(z, gold, None, support=support)
        else:
            target = combine_teachers(teacher[o].to(z.device), gold, "mean" if kd.combine == "anneal" else kd.combine, W=kd.W)
            lam = anneal_lambda(step, max_steps) if kd.combine == "anneal" else None
            loss, p = kd_loss(z, gold, target, support=support, alpha=kd.alpha, temperature=kd.temperature, t2=kd.t2, method=kd.combine, lam=lam)
        total = total + loss / len(outputs)
        for k in parts:
            parts[k] += float(p.get(k, 0.0)) / len(outputs)
    return total, parts
