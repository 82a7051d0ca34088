"""N-best answer-span decoding from start/end logits of windowed (strided) QA features.

Same selection rules as Hugging Face ``utils_qa.postprocess_qa_predictions``, so scores
are comparable with published runs, plus a monotone no-answer probability that the
official SQuAD 2.0 script's best-threshold search can use. Candidate grids are built with
numpy per feature instead of Python double loops, so large dev sets decode quickly.
One deliberate difference: when no span is valid the reference answers the literal text
"empty"; here the answer is "" (no answer) with na-prob 1.0.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from road_ds.batching import column, offset_pairs
from road_ds.errors import DataError


@dataclass
class QAPredictions:
    predictions: dict = field(default_factory=dict)  # qid -> answer text ("" = no answer)
    na_probs: dict = field(default_factory=dict)     # qid -> sigmoid(null - best span score)
    nbest: dict = field(default_factory=dict)        # qid -> [{text, start_logit, end_logit, score, probability}]
    score_diffs: dict = field(default_factory=dict)  # v2 only: qid -> null score - best span score
    best_spans: dict = field(default_factory=dict)   # qid -> best non-null text (for threshold search)


def _offsets(mapping) -> np.ndarray:
    """(L, 2) int array; ``None`` (HF convention) and [-1, -1] both mean 'not context'."""
    try:
        arr = np.asarray(mapping, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        arr = np.array([(-1, -1) if o is None else tuple(o)[:2] for o in mapping],
                       dtype=np.int64).reshape(-1, 2)
    return arr


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _feature_candidates(start, end, offsets, n_best_size, max_answer_length):
    """Valid (start, end) pairs among the top-n indexes, in the reference's loop order."""
    s_idx = np.argsort(start)[-1:-n_best_size - 1:-1]
    e_idx = np.argsort(end)[-1:-n_best_size - 1:-1]
    in_ctx = offsets[:, 0] >= 0
    length = e_idx[None, :] - s_idx[:, None] + 1
    ok = in_ctx[s_idx][:, None] & in_ctx[e_idx][None, :] & (length >= 1) & (length <= max_answer_length)
    si, ei = np.nonzero(ok)  # row-major: start rank, then end rank
    s, e = s_idx[si], e_idx[ei]
    return s, e, start[s], end[e]


def postprocess_qa_predictions(examples, features, start_logits, end_logits, *,
                               version_2_with_negative: bool = False, n_best_size: int = 20,
                               max_answer_length: int = 30,
                               null_score_diff_threshold: float = 0.0) -> QAPredictions:
    """Pick the answer span for every example over all of its features.

    ``start_logits`` / ``end_logits``: one 1-D array per feature, or a padded 2-D array;
    positions past a feature's ``offset_mapping`` are padding and never considered.
    An example with no valid span (or no feature) gets "" and na-prob 1.0.
    """
    example_ids = [str(i) for i in column(examples, "id")]
    contexts = column(examples, "context")
    feat_example_ids = column(features, "example_id")
    offset_maps = offset_pairs(features)
    if offset_maps is None:
        offset_maps = column(features, "offset_mapping")
    if len(start_logits) != len(offset_maps) or len(end_logits) != len(offset_maps):
        raise ValueError(f"got {len(start_logits)} start / {len(end_logits)} end logit rows "
                         f"for {len(offset_maps)} features")
    index = {qid: i for i, qid in enumerate(example_ids)}
    features_per_example = collections.defaultdict(list)
    for f, ex_id in enumerate(feat_example_ids):
        if str(ex_id) not in index:
            raise DataError("features", f"unknown example id {ex_id!r}", row=f, field="example_id")
        features_per_example[index[str(ex_id)]].append(f)

    out = QAPredictions()
    for ex, qid in enumerate(example_ids):
        parts, null = [], None  # parts: per-feature (score, start_logit, end_logit, char_s, char_e)
        for f in features_per_example[ex]:
            offsets = _offsets(offset_maps[f])
            n = len(offsets)
            start = np.asarray(start_logits[f])[:n]
            end = np.asarray(end_logits[f])[:n]
            if len(start) < n or len(end) < n:
                raise DataError("features", f"{len(start)}/{len(end)} logits for {n} tokens",
                                row=f, field="offset_mapping")
            if null is None or null[0] > start[0] + end[0]:
                null = (float(start[0] + end[0]), float(start[0]), float(end[0]))
            s, e, sl, el = _feature_candidates(start, end, offsets, n_best_size, max_answer_length)
            parts.append(np.stack([sl + el, sl, el, offsets[s, 0], offsets[e, 1]]).astype(np.float64))

        cand = np.concatenate(parts, axis=1) if parts else np.zeros((5, 0))
        order = np.argsort(-cand[0], kind="stable")  # same tie order as the reference's sorted()
        top = [(cand[0, i], cand[1, i], cand[2, i], contexts[ex][int(cand[3, i]):int(cand[4, i])])
               for i in order[:n_best_size]]
        null_pos = -1
        if version_2_with_negative and null is not None:
            # after every equal-scoring span (it is appended last, then stably sorted), and
            # kept in the n-best even when n_best_size spans beat it, like the reference
            null_pos = sum(1 for c in top if c[0] >= null[0])
            top.insert(null_pos, (*null, ""))
            if null_pos < n_best_size < len(top):
                top.pop()

        best = next((c for i, c in enumerate(top) if c[3] and i != null_pos), None)
        if best is None:  # no usable span at all: abstain
            out.predictions[qid], out.na_probs[qid], out.best_spans[qid] = "", 1.0, ""
            if version_2_with_negative:
                out.score_diffs[qid] = math.inf
        elif version_2_with_negative:
            diff = null[0] - best[0]
            out.score_diffs[qid], out.na_probs[qid], out.best_spans[qid] = diff, _sigmoid(diff), best[3]
            out.predictions[qid] = "" if diff > null_score_diff_threshold else best[3]
        else:
            out.predictions[qid] = out.best_spans[qid] = top[0][3]
            out.na_probs[qid] = 0.0

        scores = np.array([c[0] for c in top], dtype=np.float64)
        probs = np.exp(scores - scores.max()) if top else scores
        probs = probs / probs.sum() if top else probs  # softmax over the n-best, as the reference
        out.nbest[qid] = [{"text": c[3], "start_logit": float(c[1]), "end_logit": float(c[2]),
                           "score": float(c[0]), "probability": float(p)}
                          for c, p in zip(top, probs)]
    return out
