import math

import numpy as np
import pytest

from road_ds.errors import DataError
from road_ds.qa_decoding import postprocess_qa_predictions as decode

# word:  0     1    2     3     4       5    6   7     8    9
CTX = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
WORDS = CTX.split(" ")
WORD_OFFSETS = [[s, s + len(w)] for s, w in zip(
    np.cumsum([0] + [len(w) + 1 for w in WORDS[:-1]]).tolist(), WORDS)]
Q = 2  # question tokens; a feature is [CLS] q q [SEP] words... [SEP], so word i is token 4 + i - first


def feature(first, last, example_id="e1"):
    off = [[-1, -1]] * (2 + Q) + [WORD_OFFSETS[i] for i in range(first, last + 1)] + [[-1, -1]]
    return {"example_id": example_id, "offset_mapping": off}


def logits(n, **at):
    """Zeros with the given values: at={'t6': 5.0} sets token 6."""
    x = np.zeros(n, dtype=np.float32)
    for k, v in at.items():
        x[int(k[1:])] = v
    return x


EX = [{"id": "e1", "context": CTX}]
FULL = feature(0, 9)  # 15 tokens, word i at token 4 + i


def test_best_span_in_a_single_window():
    out = decode(EX, [FULL], [logits(15, t6=5)], [logits(15, t7=4)])
    assert out.predictions == {"e1": "gamma delta"}
    assert out.na_probs == {"e1": 0.0}
    top = out.nbest["e1"][0]
    assert (top["text"], top["start_logit"], top["end_logit"], top["score"]) == ("gamma delta", 5, 4, 9)
    assert sum(p["probability"] for p in out.nbest["e1"]) == pytest.approx(1.0)
    scores = [p["score"] for p in out.nbest["e1"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 20


def test_question_cls_and_special_tokens_are_masked():
    # question tokens 1, 2 and [CLS] carry the biggest logits but are not context
    start = logits(15, t0=20, t1=10, t2=10, t14=10, t6=3)
    end = logits(15, t0=20, t1=10, t2=10, t14=10, t6=3)
    out = decode(EX, [FULL], [start], [end])
    assert out.predictions["e1"] == "gamma"
    assert all(p["text"] for p in out.nbest["e1"])


def test_end_before_start_is_skipped():
    # (start zeta, end gamma) would score 12 but ends before it starts;
    # valid: beta..gamma = 2 + 6 = 8 beats zeta..eta = 6 + 1 = 7
    out = decode(EX, [FULL], [logits(15, t9=6, t5=2)], [logits(15, t6=6, t10=1)])
    assert out.predictions["e1"] == "beta gamma"
    assert out.nbest["e1"][0]["score"] == 8


def test_max_answer_length_cuts_long_spans():
    start, end = logits(15, t4=5), logits(15, t12=5, t5=2)
    # alpha..iota is 9 tokens: allowed at 9, cut at 3 -> alpha beta (5 + 2)
    assert decode(EX, [FULL], [start], [end], max_answer_length=9).predictions["e1"] == \
        "alpha beta gamma delta epsilon zeta eta theta iota"
    out = decode(EX, [FULL], [start], [end], max_answer_length=3)
    assert out.predictions["e1"] == "alpha beta"
    assert max(len(p["text"].split()) for p in out.nbest["e1"]) <= 3


def test_best_span_in_second_window():
    a, b = feature(0, 5), feature(4, 9)  # 11 tokens each, overlap on words 4, 5
    starts = [logits(11, t5=4), logits(11, t7=5)]  # A: beta; B: theta (word 7 = token 4 + 3)
    ends = [logits(11, t6=4), logits(11, t8=5)]    # A: gamma; B: iota
    out = decode(EX, [a, b], starts, ends)
    assert out.predictions["e1"] == "theta iota"
    assert {"text": "beta gamma", "score": 8.0} in [
        {"text": p["text"], "score": p["score"]} for p in out.nbest["e1"]]


def test_answer_in_window_overlap_and_no_cross_window_spans():
    a, b = feature(0, 5), feature(4, 9)
    # "epsilon zeta" is in both windows: A scores it 3 + 3, B scores it 4 + 4
    out = decode(EX, [a, b], [logits(11, t8=3), logits(11, t4=4)],
                 [logits(11, t9=3), logits(11, t5=4)])
    assert out.predictions["e1"] == "epsilon zeta"
    hits = [p["score"] for p in out.nbest["e1"] if p["text"] == "epsilon zeta"]
    assert hits[:2] == [8.0, 6.0]
    # strong start only in A (alpha), strong end only in B (kappa): never joined across features
    out = decode(EX, [a, b], [logits(11, t4=9), logits(11, t4=1)],
                 [logits(11, t4=1), logits(11, t9=8)])
    assert out.predictions["e1"] == "alpha"  # 9 + 1 in A; B's best is epsilon..kappa = 1 + 8
    texts = [p["text"] for p in out.nbest["e1"]]
    assert not any(t.startswith("alpha") and t.endswith("kappa") for t in texts)


def test_null_answer_with_threshold():
    start, end = logits(15, t0=3, t6=2.5), logits(15, t0=3, t7=2.5)
    # null 3 + 3 = 6, best span gamma delta 2.5 + 2.5 = 5: diff 1
    out = decode(EX, [FULL], [start], [end], version_2_with_negative=True)
    assert out.predictions["e1"] == ""
    assert out.score_diffs["e1"] == pytest.approx(1.0)
    assert out.na_probs["e1"] == pytest.approx(1 / (1 + math.exp(-1)))
    assert out.best_spans["e1"] == "gamma delta"
    assert (out.nbest["e1"][0]["text"], out.nbest["e1"][0]["score"]) == ("", 6.0)
    out = decode(EX, [FULL], [start], [end], version_2_with_negative=True,
                 null_score_diff_threshold=1.5)
    assert out.predictions["e1"] == "gamma delta"
    # v1 ignores the null score entirely
    assert decode(EX, [FULL], [start], [end]).predictions["e1"] == "gamma delta"


def test_null_is_the_minimum_over_windows():
    a, b = feature(0, 5), feature(4, 9)
    # null A = 6, null B = 2 -> null 2; best span beta gamma (A) = 5 -> diff -3 -> answered
    out = decode(EX, [a, b], [logits(11, t0=3, t5=2.5), logits(11, t0=1)],
                 [logits(11, t0=3, t6=2.5), logits(11, t0=1)], version_2_with_negative=True)
    assert out.predictions["e1"] == "beta gamma"
    assert out.score_diffs["e1"] == pytest.approx(-3.0)
    assert out.na_probs["e1"] == pytest.approx(1 / (1 + math.exp(3)))
    null = [p for p in out.nbest["e1"] if p["text"] == ""]
    assert len(null) == 1 and null[0]["start_logit"] == 1 and null[0]["end_logit"] == 1


def test_null_kept_in_nbest_when_spans_beat_it():
    # top-2 starts {gamma 3, delta 2} x top-2 ends {delta 3, epsilon 2}: gamma..delta 6,
    # gamma..epsilon 5, delta 5 (tie: loop order keeps gamma..epsilon first), delta..epsilon 4;
    # the null (-10) is outside the top 2 but still appended
    out = decode(EX, [FULL], [logits(15, t0=-5, t6=3, t7=2)], [logits(15, t0=-5, t7=3, t8=2)],
                 version_2_with_negative=True, n_best_size=2)
    assert [(p["text"], p["score"]) for p in out.nbest["e1"]] == [
        ("gamma delta", 6.0), ("gamma delta epsilon", 5.0), ("", -10.0)]
    assert out.predictions["e1"] == "gamma delta" and out.score_diffs["e1"] == -16.0


def test_no_valid_span_abstains():
    # with n_best_size=1 the only start / end candidates are question tokens
    start, end = logits(15, t1=9, t0=1), logits(15, t2=9, t0=1)
    v1 = decode(EX, [FULL], [start], [end], n_best_size=1)
    assert (v1.predictions, v1.na_probs, v1.nbest) == ({"e1": ""}, {"e1": 1.0}, {"e1": []})
    v2 = decode(EX, [FULL], [start], [end], n_best_size=1, version_2_with_negative=True)
    assert v2.predictions == {"e1": ""} and v2.na_probs == {"e1": 1.0}
    assert [p["text"] for p in v2.nbest["e1"]] == [""] and v2.score_diffs["e1"] == math.inf
    # an example without any feature
    out = decode(EX + [{"id": "e2", "context": "x"}], [FULL], [start], [end])
    assert out.predictions["e2"] == "" and out.nbest["e2"] == []


def _random_case(rng, n_examples=30):
    examples, features, starts, ends = [], [], [], []
    for e in range(n_examples):
        words = [f"w{e}_{i}" for i in range(rng.integers(3, 40))]
        ctx = " ".join(words)
        starts_at = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
        offs = [[s, s + len(w)] for s, w in zip(starts_at, words)]
        examples.append({"id": f"e{e}", "context": ctx})
        first = 0
        while True:  # windows of up to 12 words, stride 8
            last = min(first + 11, len(words) - 1)
            q = int(rng.integers(1, 4))
            off = [[-1, -1]] * (q + 2) + offs[first:last + 1] + [[-1, -1]]
            features.append({"example_id": f"e{e}", "offset_mapping": off})
            starts.append(rng.normal(size=len(off)).astype(np.float32))
            ends.append(rng.normal(size=len(off)).astype(np.float32))
            if last == len(words) - 1:
                break
            first += 8
    return examples, features, starts, ends


def _naive(examples, features, starts, ends, v2, n_best, max_len, thresh):
    """Plain double loop over the described rules, to check the vectorised code against."""
    preds, diffs = {}, {}
    for ex in examples:
        cands, null = [], None
        for f, feat in enumerate(features):
            if feat["example_id"] != ex["id"]:
                continue
            s, e, off = starts[f], ends[f], feat["offset_mapping"]
            if null is None or null > s[0] + e[0]:
                null = float(s[0] + e[0])
            for i in np.argsort(s)[::-1][:n_best]:
                for j in np.argsort(e)[::-1][:n_best]:
                    if off[i][0] < 0 or off[j][0] < 0 or j < i or j - i + 1 > max_len:
                        continue
                    cands.append((float(s[i] + e[j]), ex["context"][off[i][0]:off[j][1]]))
        if not cands:  # abstain
            preds[ex["id"]] = ""
            if v2:
                diffs[ex["id"]] = math.inf
            continue
        best = max(cands)
        if v2:
            diffs[ex["id"]] = null - best[0]
            preds[ex["id"]] = "" if null - best[0] > thresh else best[1]
        else:
            preds[ex["id"]] = best[1]
    return preds, diffs


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_loops_on_random_logits(seed):
    rng = np.random.default_rng(seed)
    examples, features, starts, ends = _random_case(rng)
    v2 = bool(seed % 2)
    kw = dict(n_best_size=[20, 5, 3][seed % 3], max_answer_length=[30, 4, 2][seed % 3])
    out = decode(examples, features, starts, ends, version_2_with_negative=v2,
                 null_score_diff_threshold=0.3, **kw)
    preds, diffs = _naive(examples, features, starts, ends, v2, kw["n_best_size"],
                          kw["max_answer_length"], 0.3)
    assert out.predictions == preds
    for k, d in diffs.items():
        assert out.score_diffs[k] == pytest.approx(d, abs=1e-6)
        assert out.na_probs[k] == pytest.approx(1 / (1 + math.exp(-d)), abs=1e-6)


def test_padded_2d_equals_list_and_dataset_equals_dicts():
    import datasets

    examples, features, starts, ends = _random_case(np.random.default_rng(7))
    width = max(len(s) for s in starts) + 3
    pad_s = np.full((len(starts), width), 50.0, dtype=np.float32)  # huge pads must be ignored
    pad_e = np.full((len(ends), width), 50.0, dtype=np.float32)
    for i, (s, e) in enumerate(zip(starts, ends)):
        pad_s[i, :len(s)], pad_e[i, :len(e)] = s, e
    for v2 in (False, True):
        ref = decode(examples, features, starts, ends, version_2_with_negative=v2)
        assert decode(examples, features, pad_s, pad_e, version_2_with_negative=v2) == ref
        ds = decode(datasets.Dataset.from_list(examples), datasets.Dataset.from_list(features),
                    starts, ends, version_2_with_negative=v2)
        assert ds == ref
        # HF's layout (None outside the context) and an index-mapped dataset take the row path: the same answers
        hf = [{**f, "offset_mapping": [None if o[0] < 0 else o for o in f["offset_mapping"]]} for f in features]
        assert decode(examples, datasets.Dataset.from_list(hf), starts, ends, version_2_with_negative=v2) == ref
        mapped = datasets.Dataset.from_list(features[::-1]).select(range(len(features) - 1, -1, -1))
        assert decode(examples, mapped, starts, ends, version_2_with_negative=v2) == ref


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 start / 1 end logit rows for 1 features"):
        decode(EX, [FULL], [logits(15)] * 2, [logits(15)])
    with pytest.raises(DataError, match="row 0, field 'example_id': unknown example id 'zz'"):
        decode(EX, [feature(0, 9, "zz")], [logits(15)], [logits(15)])
    with pytest.raises(DataError, match="14/15 logits for 15 tokens"):
        decode(EX, [FULL], [logits(14)], [logits(15)])
