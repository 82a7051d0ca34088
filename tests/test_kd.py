"""KD math against plain references: teacher combination (mean, ROaD weighted KD), BAM annealing,
temperature and T^2, top-k reconstruction feeding the loss, support masking, edge cases."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from road_ds.kd import anneal_lambda, combine_teachers, kd_loss, wkd_weights
from road_ds.store import reconstruct

INF = math.inf


@contextmanager
def no_nan_anywhere():
    """Anomaly mode: raises on a NaN produced by any backward step, even one masked out later."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
        with torch.autograd.detect_anomaly():
            yield


# ---------------------------------------------------------------------------- plain references


def ref_log_softmax(row, mask, T=1.0):
    """log-softmax of row/T over entries with mask true and a finite value; -inf elsewhere."""
    vals = [row[j] / T for j in range(len(row)) if mask[j] and row[j] != -INF]
    m = max(vals)
    lse = m + math.log(sum(math.exp(v - m) for v in vals))
    return [row[j] / T - lse if mask[j] and row[j] != -INF else -INF for j in range(len(row))]


def ref_loss(student, gold, target, support=None, alpha=0.5, T=1.0, t2=True, method="mean", lam=None):
    """The student loss written out example by example."""
    student, gold = student.tolist(), gold.tolist()
    target = None if target is None else target.tolist()
    support = [[True] * len(student[0])] * len(student) if support is None else support.tolist()
    ces, kds = [], []
    for b in range(len(student)):
        if gold[b] != -100:
            ces.append(-ref_log_softmax(student[b], support[b])[gold[b]])
        if target is None:
            continue
        logq = ref_log_softmax(student[b], support[b], T)
        logp = ref_log_softmax(target[b], support[b], T)
        p = [math.exp(v) for v in logp]
        if method == "anneal":
            # no gold to mix in: the teacher distribution alone
            mix = p if gold[b] == -100 else [lam * (j == gold[b]) + (1 - lam) * p[j] for j in range(len(p))]
            kds.append(-sum(mix[j] * logq[j] for j in range(len(p)) if support[b][j]))
        else:
            kds.append(sum(p[j] * (logp[j] - logq[j]) for j in range(len(p)) if p[j] > 0))
    ce = sum(ces) / len(ces) if ces else 0.0
    if target is None:
        return ce
    kd = (T * T if t2 else 1.0) * sum(kds) / len(kds)
    return kd if method == "anneal" else alpha * ce + (1 - alpha) * kd


def span_batch(seed=0, B=4, L=9):
    """Student logits, a support with different widths per example (index 0 = [CLS] always valid)."""
    g = torch.Generator().manual_seed(seed)
    widths = [L, 5, 3, 7][:B]
    support = torch.zeros(B, L, dtype=torch.bool)
    for b, w in enumerate(widths):
        support[b, :w] = True
    student = torch.randn(B, L, generator=g) * 2
    teachers = torch.randn(3, B, L, generator=g) * 2
    logp = torch.where(support, torch.log_softmax(teachers.masked_fill(~support, -INF), -1), torch.tensor(-INF))
    gold = torch.tensor([2, 0, 1, 6][:B])
    return student, gold, logp, support


# ---------------------------------------------------------------------------- combination


def test_mean_averages_teacher_logits_and_keeps_support():
    _, gold, logp, support = span_batch()
    out = combine_teachers(logp, gold, "mean")
    M, B, S = logp.shape
    for b in range(B):
        for j in range(S):
            if support[b, j]:
                want = sum(float(logp[i, b, j]) for i in range(M)) / M
                assert float(out[b, j]) == pytest.approx(want, rel=1e-6, abs=1e-6)
            else:
                assert float(out[b, j]) == -INF
    assert not out.isnan().any()
    # log-probs vs raw logits: same softmax (they differ by a per-example constant)
    raw = logp + torch.randn(3, B, 1)
    out_raw = combine_teachers(raw, gold, "mean")
    assert torch.allclose(torch.softmax(out_raw, -1), torch.softmax(out, -1), atol=1e-6)


def _teachers_with_argmax(argmax: list[list[int]], S: int = 4) -> torch.Tensor:
    """[M, B, S] log-probs where teacher i's argmax on example b is argmax[i][b]; last column invalid."""
    M, B = len(argmax), len(argmax[0])
    g = torch.Generator().manual_seed(1)
    z = torch.randn(M, B, S, generator=g)
    for i in range(M):
        for b in range(B):
            z[i, b, argmax[i][b]] = 5.0 + i
    z[..., -1] = -INF
    return torch.log_softmax(z, -1)


def test_wkd_weights_three_teachers():
    # gold = 1 everywhere; example 0: all correct, 1: two, 2: one, 3: none, 4: only teacher 2
    argmax = [[1, 1, 1, 0, 0],
              [1, 1, 0, 2, 0],
              [1, 0, 2, 0, 1]]
    logp = _teachers_with_argmax(argmax)
    gold = torch.ones(5, dtype=torch.long)
    w = wkd_weights(logp, gold, 0.75)
    want = [[1.0, 1.0, 1.0], [1.125, 1.125, 0.75], [1.5, 0.75, 0.75], [1.0, 1.0, 1.0], [0.75, 0.75, 1.5]]
    assert w.shape == (3, 5)
    assert torch.allclose(w.T, torch.tensor(want), atol=1e-7)
    # weights always sum to M
    assert torch.allclose(w.sum(0), torch.full((5,), 3.0))
    # an ignored gold matches no teacher: plain mean
    assert torch.equal(wkd_weights(logp, torch.full((5,), -100), 0.75), torch.ones(3, 5))


def test_wkd_combination_matches_weighted_sum():
    argmax = [[1, 1, 1, 0, 0], [1, 1, 0, 2, 0], [1, 0, 2, 0, 1]]
    logp = _teachers_with_argmax(argmax)
    gold = torch.ones(5, dtype=torch.long)
    weights = [[1.0, 1.0, 1.0], [1.125, 1.125, 0.75], [1.5, 0.75, 0.75], [1.0, 1.0, 1.0], [0.75, 0.75, 1.5]]
    out = combine_teachers(logp, gold, "wkd", W=0.75)
    for b in range(5):
        for j in range(4):
            if j == 3:
                assert float(out[b, j]) == -INF
                continue
            want = sum(weights[b][i] * float(logp[i, b, j]) for i in range(3)) / 3
            assert float(out[b, j]) == pytest.approx(want, rel=1e-6, abs=1e-6)
    # no teacher correct: exactly the plain mean
    assert torch.allclose(out[3], combine_teachers(logp, gold, "mean")[3])
    assert not out.isnan().any()


def test_wkd_zero_weight_never_multiplies_infinity():
    # W = 0 drops incorrect teachers; 0 * -inf must not turn into NaN
    logp = _teachers_with_argmax([[1, 0], [0, 0], [1, 1]])
    gold = torch.tensor([1, 1])
    out = combine_teachers(logp, gold, "wkd", W=0.0)
    assert not out.isnan().any()
    assert (out[:, 3] == -INF).all()
    # example 0: teachers 0 and 2 correct, each weighted 3/2, teacher 1 dropped
    want = (1.5 * logp[0, 0] + 1.5 * logp[2, 0]) / 3
    assert torch.allclose(out[0], want)


def test_unknown_method_and_bad_w():
    _, gold, logp, _ = span_batch()
    with pytest.raises(ValueError, match="unknown KD method"):
        combine_teachers(logp, gold, "median")
    with pytest.raises(ValueError, match="W"):
        wkd_weights(logp, gold, 1.5)


# ---------------------------------------------------------------------------- annealing


def test_anneal_schedule():
    assert anneal_lambda(0, 1000) == 0.0
    assert anneal_lambda(500, 1000) == 0.5
    assert anneal_lambda(1000, 1000) == 1.0
    assert anneal_lambda(250, 1000) == 0.25
    assert anneal_lambda(5000, 1000) == 1.0
    assert anneal_lambda(-3, 1000) == 0.0
    with pytest.raises(ValueError):
        anneal_lambda(0, 0)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("T,t2", [(1.0, True), (2.0, True), (2.0, False)])
def test_anneal_loss_matches_reference(lam, T, t2):
    student, gold, logp, support = span_batch(seed=2)
    target = combine_teachers(logp, gold, "anneal")
    loss, parts = kd_loss(student, gold, target, support=support, temperature=T, t2=t2, method="anneal", lam=lam, alpha=0.9)
    want = ref_loss(student, gold, target, support, T=T, t2=t2, method="anneal", lam=lam)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert float(parts["kd"]) == pytest.approx(want, rel=1e-5)


def test_anneal_at_lambda_one_is_cross_entropy():
    student, gold, logp, support = span_batch(seed=3)
    target = combine_teachers(logp, gold, "mean")
    loss, _ = kd_loss(student, gold, target, support=support, method="anneal", lam=1.0)
    ce, _ = kd_loss(student, gold, None, support=support)
    assert loss.item() == pytest.approx(float(ce), rel=1e-6)


def test_anneal_needs_lambda():
    student, gold, logp, support = span_batch()
    with pytest.raises(ValueError, match="lam"):
        kd_loss(student, gold, logp.mean(0), support=support, method="anneal")


# ---------------------------------------------------------------------------- KD loss


@pytest.mark.parametrize("method", ["mean", "wkd"])
@pytest.mark.parametrize("alpha,T,t2", [(0.5, 1.0, True), (0.2, 3.0, True), (0.2, 3.0, False), (0.0, 5.0, True)])
def test_kd_loss_matches_reference(method, alpha, T, t2):
    student, gold, logp, support = span_batch(seed=4)
    target = combine_teachers(logp, gold, method)
    loss, parts = kd_loss(student, gold, target, support=support, alpha=alpha, temperature=T, t2=t2, method=method)
    want = ref_loss(student, gold, target, support, alpha=alpha, T=T, t2=t2)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert float(alpha * parts["ce"] + (1 - alpha) * parts["kd"]) == pytest.approx(want, rel=1e-5)


def test_classification_without_support():
    g = torch.Generator().manual_seed(5)
    student = torch.randn(6, 3, generator=g)
    logp = torch.log_softmax(torch.randn(3, 6, 3, generator=g) * 3, -1)
    gold = torch.tensor([0, 1, 2, 2, 1, 0])
    target = combine_teachers(logp, gold, "wkd")
    loss, _ = kd_loss(student, gold, target, alpha=0.3, temperature=2.0)
    assert loss.item() == pytest.approx(ref_loss(student, gold, target, alpha=0.3, T=2.0), rel=1e-5)


def _kd_grad_norm(T, t2):
    g = torch.Generator().manual_seed(6)
    student = (torch.randn(8, 10, generator=g) * 2).requires_grad_()
    target = torch.randn(8, 10, generator=g) * 2
    loss, _ = kd_loss(student, torch.zeros(8, dtype=torch.long), target, alpha=0.0, temperature=T, t2=t2)
    loss.backward()
    return float(student.grad.norm())


def test_t2_keeps_kd_gradient_scale_for_large_temperature():
    with_t2 = [_kd_grad_norm(T, True) for T in (10.0, 20.0, 40.0)]
    without = [_kd_grad_norm(T, False) for T in (10.0, 20.0, 40.0)]
    # with T^2 the gradient tends to a constant; without it, it falls like 1/T^2
    assert with_t2[1] / with_t2[0] == pytest.approx(1.0, abs=0.02)
    assert with_t2[2] / with_t2[1] == pytest.approx(1.0, abs=0.01)
    assert without[1] / without[0] == pytest.approx(0.25, rel=0.03)
    assert without[2] / without[1] == pytest.approx(0.25, rel=0.02)
    # the two differ exactly by T^2
    assert with_t2[0] == pytest.approx(100.0 * without[0], rel=1e-5)


def test_temperature_flattens_both_sides():
    student, gold, logp, support = span_batch(seed=7)
    target = combine_teachers(logp, gold, "mean")
    l1, p1 = kd_loss(student, gold, target, support=support, temperature=1.0, t2=False)
    l4, p4 = kd_loss(student, gold, target, support=support, temperature=4.0, t2=False)
    # CE is always at T = 1; the KL between flatter distributions is smaller
    assert float(p1["ce"]) == pytest.approx(float(p4["ce"]))
    assert float(p4["kd"]) < float(p1["kd"])


def test_alpha_one_is_exactly_cross_entropy():
    g = torch.Generator().manual_seed(8)
    student = torch.randn(5, 4, generator=g)
    gold = torch.tensor([0, 3, 1, 2, 3])
    target = torch.randn(5, 4, generator=g)
    loss, parts = kd_loss(student, gold, target, alpha=1.0, temperature=3.0)
    assert torch.equal(loss, parts["ce"])
    assert loss.item() == pytest.approx(float(F.cross_entropy(student, gold)), rel=1e-6)
    # with a support, CE over the valid positions only
    s2, gold2, logp2, support2 = span_batch(seed=8)
    loss2, _ = kd_loss(s2, gold2, logp2.mean(0), support=support2, alpha=1.0)
    assert loss2.item() == pytest.approx(ref_loss(s2, gold2, None, support2), rel=1e-6)


def test_no_target_is_plain_cross_entropy():
    student, gold, _, support = span_batch(seed=9)
    loss, parts = kd_loss(student, gold, None, support=support, alpha=0.1, method="wkd")
    assert loss.item() == pytest.approx(ref_loss(student, gold, None, support), rel=1e-6)
    assert float(parts["kd"]) == 0.0


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_kl_zero_when_student_equals_target(T):
    student, gold, logp, support = span_batch(seed=10)
    target = combine_teachers(logp, gold, "mean")
    # the same logits up to a per-example shift, with garbage outside the support on the student side
    s = torch.where(support, target + 3.0, torch.full_like(target, 123.0)).requires_grad_()
    loss, parts = kd_loss(s, gold, target, support=support, alpha=0.0, temperature=T)
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert s.grad.abs().max() < 1e-6
    # and not zero for a different student (the check can fail)
    s2 = (s.detach() + torch.randn_like(s)).requires_grad_()
    loss2, _ = kd_loss(s2, gold, target, support=support, alpha=0.0, temperature=T)
    loss2.backward()
    assert loss2.item() > 1e-3 and s2.grad.abs().max() > 1e-3


# ---------------------------------------------------------------------------- top-k reconstruction


def _topk_store_rows(full_logits, support, k):
    """What the precompute stores per teacher row: top-k idx (-1 = empty), logits, lse over the support."""
    M, B, L = full_logits.shape
    idx = torch.full((M, B, k), -1, dtype=torch.long)
    kept = torch.zeros(M, B, k)
    lse = torch.zeros(M, B)
    for i in range(M):
        for b in range(B):
            valid = [j for j in range(L) if support[b, j]]
            order = sorted(valid, key=lambda j: -float(full_logits[i, b, j]))[:k]
            for slot, j in enumerate(order):
                idx[i, b, slot] = j
                kept[i, b, slot] = full_logits[i, b, j]
            lse[i, b] = math.log(sum(math.exp(float(full_logits[i, b, j])) for j in valid))
    return idx, kept, lse


def _dense_by_hand(full_logits, support, k):
    """Kept entries exact (z - lse); the rest of the mass spread evenly over the other valid entries."""
    M, B, L = full_logits.shape
    out = torch.full((M, B, L), -INF, dtype=torch.float64)
    for i in range(M):
        for b in range(B):
            valid = [j for j in range(L) if support[b, j]]
            z = {j: float(full_logits[i, b, j]) for j in valid}
            lse = math.log(sum(math.exp(v) for v in z.values()))
            top = sorted(valid, key=lambda j: -z[j])[:k]
            rest = [j for j in valid if j not in top]
            kept_mass = sum(math.exp(z[j] - lse) for j in top)
            for j in top:
                out[i, b, j] = z[j] - lse
            for j in rest:
                out[i, b, j] = math.log((1 - kept_mass) / len(rest))
    return out.float()


@pytest.mark.parametrize("method", ["mean", "wkd", "anneal"])
def test_topk_reconstruction_feeds_the_loss(method):
    g = torch.Generator().manual_seed(11)
    B, L, k = 4, 9, 3
    support = torch.zeros(B, L, dtype=torch.bool)
    for b, w in enumerate([9, 6, 2, 4]):  # example 2 has fewer valid positions than k
        support[b, :w] = True
    full = torch.randn(3, B, L, generator=g) * 2
    student = torch.randn(B, L, generator=g)
    gold = torch.tensor([0, 4, 1, 2])
    idx, kept, lse = _topk_store_rows(full, support, k)
    rec = reconstruct(kept, lse, idx, support.expand(3, B, L))
    hand = _dense_by_hand(full, support, k)
    assert torch.allclose(rec, hand, atol=1e-5)
    assert torch.equal(rec.isinf(), hand.isinf())
    kwargs = dict(support=support, alpha=0.4, temperature=2.0, method=method, lam=0.25 if method == "anneal" else None)
    loss_rec, _ = kd_loss(student, gold, combine_teachers(rec, gold, method), **kwargs)
    target_hand = combine_teachers(hand, gold, method)
    loss_hand, _ = kd_loss(student, gold, target_hand, **kwargs)
    assert loss_rec.item() == pytest.approx(loss_hand.item(), rel=1e-5)
    want = ref_loss(student, gold, target_hand, support, alpha=0.4, T=2.0, method=method, lam=kwargs["lam"])
    assert loss_rec.item() == pytest.approx(want, rel=1e-5)
    # top-k is an approximation: the loss differs from the one on the teachers' full distributions
    exact = torch.where(support, torch.log_softmax(full.masked_fill(~support, -INF), -1), torch.tensor(-INF))
    loss_exact, _ = kd_loss(student, gold, combine_teachers(exact, gold, method), **kwargs)
    assert loss_exact.item() != pytest.approx(loss_rec.item(), rel=1e-4)


def test_topk_holding_all_mass_leaves_no_nan():
    # a top-k that holds (numerically) all the mass gives -inf inside the support
    support = torch.ones(2, 5, dtype=torch.bool)
    logit = torch.tensor([[[50.0, 0.0], [10.0, 9.0]]])  # [1, 2, k]
    idx = torch.tensor([[[1, 3], [0, 2]]])
    lse = torch.logsumexp(torch.tensor([[[50.0, 0.0, -60.0, -60.0, -60.0], [10.0, 9.0, 0.0, 0.0, 0.0]]]), -1)
    rec = reconstruct(logit, lse, idx, support.expand(1, 2, 5))
    student = torch.randn(2, 5, requires_grad=True)
    gold = torch.tensor([1, 0])
    for method in ("mean", "wkd", "anneal"):
        target = combine_teachers(rec, gold, method)
        with no_nan_anywhere():
            loss, _ = kd_loss(student, gold, target, support=support, temperature=2.0, method=method, lam=0.5)
            loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
        student.grad = None


# ---------------------------------------------------------------------------- masking, ignore, errors


@pytest.mark.parametrize("method", ["mean", "wkd", "anneal"])
def test_outside_support_changes_nothing(method):
    student, gold, logp, support = span_batch(seed=12)
    gold = gold.clone()
    gold[1] = -100  # and an unlabeled example
    target = combine_teachers(logp, gold, method)
    kw = dict(support=support, alpha=0.3, temperature=2.0, method=method, lam=0.4)

    s1 = student.clone().requires_grad_()
    loss1, _ = kd_loss(s1, gold, target, **kw)
    loss1.backward()

    outside = ~support
    s2 = torch.where(outside, torch.tensor(1e4), student)
    s2[2, 5], s2[3, 8] = INF, math.nan  # inf and NaN outside the support (widths 3 and 7)
    s2.requires_grad_()
    t2_ = torch.where(outside, torch.randn_like(target) * 50, target)
    t2_[2, 6] = math.nan
    with no_nan_anywhere():
        loss2, _ = kd_loss(s2, gold, t2_, **kw)
        loss2.backward()

    assert torch.isfinite(loss1) and torch.isfinite(loss2)
    assert loss1.item() == pytest.approx(loss2.item(), rel=1e-6)
    assert torch.isfinite(s1.grad).all() and torch.isfinite(s2.grad).all()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)
    assert (s1.grad[outside] == 0).all() and (s2.grad[outside] == 0).all()
    # the mask matters: the same logits without it give another loss (the check can fail)
    loss_nomask, _ = kd_loss(student, gold, torch.where(outside, torch.zeros_like(target), target), alpha=0.3, temperature=2.0, method=method, lam=0.4)
    assert loss_nomask.item() != pytest.approx(loss1.item(), rel=1e-3)


def test_ignored_gold_and_batch_mean():
    g = torch.Generator().manual_seed(13)
    student = torch.randn(5, 4, generator=g, requires_grad=True)
    gold = torch.tensor([1, -100, 3, -100, 0])
    loss, parts = kd_loss(student, gold, None)
    # the mean is over the labeled examples only, like torch's ignore_index
    assert loss.item() == pytest.approx(F.cross_entropy(student, gold, ignore_index=-100).item(), rel=1e-6)
    # KD still uses every example: a target on the unlabeled ones changes the loss
    target = torch.randn(5, 4, generator=g)
    lk, _ = kd_loss(student, gold, target, alpha=0.5)
    assert lk.item() == pytest.approx(ref_loss(student, gold, target, alpha=0.5), rel=1e-5)
    # nothing labeled: CE 0, the loss is finite and still has a (zero) gradient
    none, parts = kd_loss(student, torch.full((5,), -100), None)
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert torch.isfinite(student.grad).all()


def test_anneal_unlabeled_example_uses_teacher_alone():
    student, gold, logp, support = span_batch(seed=16)
    gold = torch.tensor([2, -100, 1, -100])
    target = combine_teachers(logp, gold, "anneal")
    loss, _ = kd_loss(student, gold, target, support=support, method="anneal", lam=0.7, temperature=1.5)
    assert loss.item() == pytest.approx(ref_loss(student, gold, target, support, T=1.5, method="anneal", lam=0.7), rel=1e-5)


def test_row_without_finite_target_is_not_distilled():
    # example 1 has a support and a gold label but no usable teacher target: CE only
    student, gold, logp, support = span_batch(seed=17)
    target = combine_teachers(logp, gold, "mean")
    target[1] = -INF
    s = student.clone().requires_grad_()
    with no_nan_anywhere():
        loss, parts = kd_loss(s, gold, target, support=support, alpha=0.5, temperature=2.0)
        loss.backward()
    keep = torch.tensor([0, 2, 3])
    _, parts_kd = kd_loss(student[keep], gold[keep], target[keep], support=support[keep], temperature=2.0)
    _, parts_ce = kd_loss(student, gold, None, support=support)
    assert parts["kd"].item() == pytest.approx(parts_kd["kd"].item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(parts_ce["ce"].item(), rel=1e-6)
    assert torch.isfinite(s.grad).all()


def test_empty_support_row_is_left_out():
    student, gold, logp, support = span_batch(seed=14)
    target = combine_teachers(logp, gold, "mean")
    support_pad = torch.cat([support, torch.zeros(1, support.shape[1], dtype=torch.bool)])
    student_pad = torch.cat([student, torch.randn(1, student.shape[1])]).requires_grad_()
    target_pad = torch.cat([target, torch.full((1, target.shape[1]), -INF)])
    gold_pad = torch.cat([gold, torch.tensor([-100])])
    for method in ("mean", "anneal"):
        with no_nan_anywhere():
            loss_pad, _ = kd_loss(student_pad, gold_pad, target_pad, support=support_pad, temperature=2.0, method=method, lam=0.5)
            loss_pad.backward()
        loss, _ = kd_loss(student, gold, target, support=support, temperature=2.0, method=method, lam=0.5)
        assert loss_pad.item() == pytest.approx(loss.item(), rel=1e-6)
        assert torch.isfinite(student_pad.grad).all() and (student_pad.grad[-1] == 0).all()
        student_pad.grad = None


def test_bad_gold_is_refused():
    student, gold, logp, support = span_batch()
    target = logp.mean(0)
    bad = gold.clone()
    bad[2] = 5  # example 2 has only 3 valid positions
    with pytest.raises(ValueError, match="outside its valid support"):
        kd_loss(student, bad, target, support=support)
    with pytest.raises(ValueError, match="outside"):
        kd_loss(student, torch.tensor([0, 0, 0, -1]), target, support=support)
    with pytest.raises(ValueError, match="outside"):
        kd_loss(student, torch.tensor([0, 0, 0, 9]), target, support=support)
    with pytest.raises(ValueError, match="unknown KD method"):
        kd_loss(student, gold, target, support=support, method="median")


def test_half_precision_student():
    student, gold, logp, support = span_batch(seed=15)
    target = combine_teachers(logp, gold, "wkd")
    s = student.to(torch.bfloat16).requires_grad_()
    loss, _ = kd_loss(s, gold, target, support=support, temperature=2.0)
    loss.backward()
    assert loss.dtype == torch.float32 and s.grad.dtype == torch.bfloat16
    want = ref_loss(s.detach().float(), gold, target, support, T=2.0)
    assert loss.item() == pytest.approx(want, rel=1e-5)
