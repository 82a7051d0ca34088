import importlib.util
import json
import random
from pathlib import Path

import pytest

from road_ds.errors import DataError
from road_ds.squad_eval import compute_f1, evaluate, load_json, main, normalize_answer

_spec = importlib.util.spec_from_file_location(
    "squad_v2_official", Path(__file__).parent / "reference" / "squad_v2_official.py")
official = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(official)

CONTEXT = "The Eiffel Tower is in Paris, France. It was built in 1889 by Gustave Eiffel."


def _qa(qid, *answers):
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


DATA = [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [
    _qa("q1", "Paris", "Paris, France"),
    _qa("q2", "1889"),
    _qa("q3", "Gustave Eiffel", "Eiffel"),
    _qa("q4", "France"),
    _qa("q5"),
    _qa("q6"),
    _qa("q7", "The", "a tower"),
    _qa("q8", "in Paris in France"),
]}]}]

PREDS = {
    "q1": "the Paris!",     # -> "paris": exact 1, f1 1
    "q2": "in 1889",        # [in, 1889] vs [1889]: P=1/2 R=1 -> f1 2/3, exact 0
    "q3": "Alexandre Gustave Eiffel",  # vs "gustave eiffel": P=2/3 R=1 -> 4/5; vs "eiffel": 1/2
    "q4": "",               # answerable, empty prediction: exact 0, f1 0
    "q5": "",               # unanswerable, abstains: exact 1, f1 1
    "q6": "Paris",          # unanswerable, answers: exact 0, f1 0
    "q7": "Tower.",         # gold "The" normalizes to "" and is dropped; "tower" == "tower": 1, 1
    "q8": "in in in",       # gold [in, paris, in, france]; common in x2: P=2/3 R=1/2 -> f1 4/7
    "not_in_data": "x",     # extra predictions are ignored
}

NA_PROBS = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.9, "q5": 0.8, "q6": 0.7, "q7": 0.2,
            "q8": 0.4, "not_in_data": 0.05}

KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total"]
BEST = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def _assert_same(got, expected):
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-9, rel=0), k
        if k.endswith("total"):
            assert type(got[k]) is int, k


def test_normalization_and_f1_pieces():
    assert normalize_answer("  The  Paris!, an Apple ") == "paris apple"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert compute_f1("", "") == 1 and compute_f1("x", "") == 0 and compute_f1("a", "b") == 0
    assert compute_f1("Gustave Eiffel", "Alexandre Gustave Eiffel") == pytest.approx(0.8)


def test_hand_built_without_na_probs():
    # exact: q1, q5, q7 -> 3 of 8; HasAns {q1,q2,q3,q4,q7,q8}: q1, q7; NoAns {q5,q6}: q5
    # f1 per q: 1, 2/3, 4/5, 0, 1, 0, 1, 4/7
    has_f1 = 1 + 2 / 3 + 4 / 5 + 0 + 1 + 4 / 7
    expected = dict(zip(KEYS, [100 * 3 / 8, 100 * (has_f1 + 1) / 8, 8,
                               100 * 2 / 6, 100 * has_f1 / 6, 6,
                               100 * 1 / 2, 100 * 1 / 2, 2]))
    _assert_same(evaluate(DATA, PREDS), expected)
    _assert_same(evaluate(DATA, PREDS), official.official_eval(DATA, PREDS))


def test_hand_built_with_na_probs_and_threshold():
    # thresh 0.5 -> abstain on q2 (0.6), q4 (0.9), q5 (0.8), q6 (0.7):
    # answerable q2, q4 score 0.0; unanswerable q5, q6 score 1.0.
    # exact: q1 q5 q6 q7 = 4/8; f1: 1, 0, 4/5, 0, 1, 1, 1, 4/7
    #
    # best threshold sweep over raw scores, na-prob ascending (not_in_data is skipped),
    # starting at 2 (= #NoAns, i.e. abstain on everything):
    #   exact: q1 +1=3 (0.1), q7 +1=4 (0.2), q3 +0, q8 +0, q2 +0, q6 -1 (answered a NoAns),
    #          q5 +0, q4 +0  -> best 4/8 at 0.2
    #   f1:    q1 3 (0.1), q7 4 (0.2), q3 4.8 (0.3), q8 4.8+4/7 (0.4), q2 +2/3 (0.6),
    #          then q6 -1, q5 0, q4 0 -> best (4.8 + 4/7 + 2/3)/8 at 0.6
    has_f1 = 1 + 0 + 4 / 5 + 0 + 1 + 4 / 7
    expected = dict(zip(KEYS + BEST, [
        100 * 4 / 8, 100 * (has_f1 + 2) / 8, 8,
        100 * 2 / 6, 100 * has_f1 / 6, 6,
        100.0, 100.0, 2,
        100 * 4 / 8, 0.2, 100 * (4.8 + 4 / 7 + 2 / 3) / 8, 0.6]))
    got = evaluate(DATA, PREDS, NA_PROBS, na_prob_thresh=0.5)
    _assert_same(got, expected)
    _assert_same(got, official.official_eval(DATA, PREDS, NA_PROBS, 0.5))


def test_na_probs_default_threshold_keeps_raw_scores():
    # thresh 1.0: no probability exceeds it, so the main numbers are the raw ones
    with_na = evaluate(DATA, PREDS, NA_PROBS)
    without = evaluate(DATA, PREDS)
    assert list(with_na) == KEYS + BEST
    for k in KEYS:
        assert with_na[k] == without[k]
    assert with_na["best_exact_thresh"] == 0.2 and with_na["best_f1_thresh"] == 0.6


def test_best_thresh_stays_zero_when_abstaining_everywhere_is_best():
    data = [{"paragraphs": [{"context": CONTEXT, "qas": [_qa("q4", "France"), _qa("q6")]}]}]
    preds = {"q4": "", "q6": "Paris"}
    # raw: both 0. Sweep from 1 (#NoAns): q4 +0 -> 1, q6 -1 -> 0; never above 1 -> thresh 0.0
    expected = dict(zip(KEYS + BEST, [0.0, 0.0, 2, 0.0, 0.0, 1, 0.0, 0.0, 1,
                                      50.0, 0.0, 50.0, 0.0]))
    _assert_same(evaluate(data, preds, {"q4": 0.5, "q6": 0.5}), expected)


def test_missing_prediction_is_a_data_error_naming_file_and_ids():
    preds = {k: v for k, v in PREDS.items() if k not in ("q2", "q6")}
    with pytest.raises(KeyError):  # what the official script does
        official.official_eval(DATA, preds)
    with pytest.raises(DataError) as e:
        evaluate(DATA, preds, pred_file="pred.json")
    assert str(e.value).startswith("pred.json: ")
    assert "2 question(s)" in str(e.value) and "'q2', 'q6'" in str(e.value)

    many = [{"paragraphs": [{"context": "c", "qas": [_qa(f"m{i}") for i in range(8)]}]}]
    with pytest.raises(DataError, match=r"8 question\(s\): 'm0', 'm1', 'm2', 'm3', 'm4', \.\.\."):
        evaluate(many, {})


def test_missing_na_prob_is_a_data_error():
    na = {k: v for k, v in NA_PROBS.items() if k != "q7"}
    with pytest.raises(KeyError):
        official.official_eval(DATA, PREDS, na)
    with pytest.raises(DataError, match=r"^na\.json: no no-answer probability for 1 question\(s\): 'q7'$"):
        evaluate(DATA, PREDS, na, na_prob_file="na.json")


def test_malformed_json_names_file_line_and_column(tmp_path):
    bad = tmp_path / "pred.json"
    bad.write_text('{\n  "q1": "Paris",\n  "q2" "1889"\n}\n')
    with pytest.raises(DataError, match=r"pred\.json: malformed JSON at line 3, column 8"):
        load_json(bad)


# ---- randomized comparison against the official logic ----------------------------------

WORDS = ["the", "The", "a", "An", "tower", "Paris,", "France.", "1889", "built", "by", "in",
         "(Eiffel)", "Gustave", "it's", "café", "—", "x-y", "theater", "an", "!", "of", "of"]


def _random_case(rng: random.Random):
    data, preds, na_probs = [], {}, {}
    qn = 0
    for _ in range(rng.randint(1, 4)):
        paragraphs = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 25))]
            context = " ".join(words)
            qas = []
            for _ in range(rng.randint(1, 6)):
                qid = f"q{qn}"
                qn += 1
                answers = []
                if rng.random() < 0.7:  # answerable
                    for _ in range(rng.randint(1, 3)):
                        i = rng.randrange(len(words))
                        text = " ".join(words[i:i + rng.randint(1, 4)])
                        answers.append({"text": text, "answer_start": context.find(text)})
                qas.append({"id": qid, "question": "?", "answers": answers})
                r = rng.random()
                if r < 0.2:
                    preds[qid] = ""
                elif r < 0.35 and answers:
                    preds[qid] = rng.choice(answers)["text"]
                elif r < 0.45:  # arbitrary character span
                    a = rng.randrange(len(context))
                    preds[qid] = context[a:a + rng.randint(0, 20)]
                else:
                    i = rng.randrange(len(words))
                    preds[qid] = " ".join(words[i:i + rng.randint(1, 6)])
                p = rng.random()
                na_probs[qid] = round(p, 1) if rng.random() < 0.5 else p  # ties included
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": "t", "paragraphs": paragraphs})
    return data, preds, na_probs


@pytest.mark.parametrize("seed", range(40))
def test_randomized_against_official(seed):
    rng = random.Random(seed)
    data, preds, na_probs = _random_case(rng)
    thresh = rng.choice([1.0, 0.5, 0.0, rng.random()])
    for na in (None, na_probs):
        got = evaluate(data, preds, na, thresh)
        ref = official.official_eval(data, preds, na, thresh)
        assert list(got) == list(ref)
        for k in ref:
            assert got[k] == pytest.approx(ref[k], abs=1e-9, rel=0), k
        assert json.dumps(got, indent=2) == json.dumps(ref, indent=2)


# ---- CLI --------------------------------------------------------------------------------

def _write(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"version": "v2.0", "data": DATA}))
    (tmp_path / "pred.json").write_text(json.dumps(PREDS))
    (tmp_path / "na.json").write_text(json.dumps(NA_PROBS))
    return [str(tmp_path / "data.json"), str(tmp_path / "pred.json")]


def test_cli_prints_official_json(tmp_path, capsys):
    args = _write(tmp_path)
    assert main(args + ["--na-prob-file", str(tmp_path / "na.json"), "--na-prob-thresh", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(official.official_eval(DATA, PREDS, NA_PROBS, 0.5), indent=2) + "\n"
    assert list(json.loads(out)) == KEYS + BEST

    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == official.official_eval(DATA, PREDS)


def test_cli_out_file_and_errors(tmp_path, capsys):
    args = _write(tmp_path)
    out_file = tmp_path / "eval.json"
    assert main(args + ["-o", str(out_file)]) == 0
    assert capsys.readouterr().out == ""
    assert out_file.read_text() == json.dumps(official.official_eval(DATA, PREDS))

    (tmp_path / "pred.json").write_text("{\"q1\": }")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "pred.json: malformed JSON at line 1, column 8" in err
