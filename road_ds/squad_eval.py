"""SQuAD 2.0 scoring that gives the same numbers as the official ``evaluate-v2.0.py``.

Reimplemented rather than vendored so that the cases where the official script dies
with a bare ``KeyError`` (a question without a prediction, a question missing from the
na-prob file) and malformed JSON become a :class:`DataError` naming the file and the
question ids. Keys, key order and values of the result match the official output.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys

from road_ds.atomic import write_text
from road_ds.errors import DataError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str):
    """Token F1; int 1/0 when either side is empty (no-answer agrees or not), as upstream."""
    gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        return int(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def make_qid_to_has_ans(dataset: list) -> dict:
    return {qa["id"]: bool(qa["answers"]) for article in dataset
            for p in article["paragraphs"] for qa in p["qas"]}


def get_raw_scores(dataset: list, preds: dict) -> tuple[dict, dict]:
    """Per-question exact / F1, max over gold answers; questions without a prediction are skipped."""
    exact_scores, f1_scores = {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                gold = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
                if qid not in preds:
                    continue
                a_pred = preds[qid]
                exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold)
                f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold)
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores: dict, na_probs: dict, qid_to_has_ans: dict,
                           na_prob_thresh: float) -> dict:
    return {qid: float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s
            for qid, s in scores.items()}


def make_eval_dict(exact_scores: dict, f1_scores: dict, qid_list=None) -> collections.OrderedDict:
    if not qid_list:
        total = len(exact_scores)
        exact, f1 = sum(exact_scores.values()), sum(f1_scores.values())
    else:
        total = len(qid_list)
        exact = sum(exact_scores[k] for k in qid_list)
        f1 = sum(f1_scores[k] for k in qid_list)
    return collections.OrderedDict(
        [("exact", 100.0 * exact / total), ("f1", 100.0 * f1 / total), ("total", total)])


def merge_eval(main_eval: dict, new_eval: dict, prefix: str) -> None:
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def find_best_thresh(preds: dict, scores: dict, na_probs: dict, qid_to_has_ans: dict):
    """Sweep the threshold upwards over the sorted na-probs; start from "abstain on all"."""
    cur_score = best_score = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            cur_score += scores[qid]
        elif preds[qid]:
            cur_score -= 1
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans) -> None:
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def _missing(qids, have, path, what: str) -> None:
    missing = [q for q in qids if q not in have]
    if missing:
        shown = ", ".join(repr(q) for q in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(path, f"{what} for {len(missing)} question(s): {shown}")


def evaluate(dataset: list, preds: dict, na_probs: dict | None = None,
             na_prob_thresh: float = 1.0, *, pred_file=None,
             na_prob_file=None) -> collections.OrderedDict:
    """Score ``preds`` (qid -> text) against the SQuAD ``data`` list; best_* keys only with na_probs.

    ``pred_file`` / ``na_prob_file`` only name the sources in error messages.
    """
    qid_to_has_ans = make_qid_to_has_ans(dataset)
    if not qid_to_has_ans:
        raise DataError(None, "the dataset has no questions")
    _missing(qid_to_has_ans, preds, pred_file or "predictions", "no prediction")
    has_na_file = na_probs is not None
    if has_na_file:
        _missing(qid_to_has_ans, na_probs, na_prob_file or "na_probs", "no no-answer probability")
    else:
        na_probs = {k: 0.0 for k in preds}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(dataset, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if has_na_file:
        find_all_best_thresh(out, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return out


def load_json(path):
    """Read a JSON file; unreadable or malformed files become a DataError with line/column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read file: {e}") from e


def _load_mapping(path, what: str) -> dict:
    obj = load_json(path)
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object mapping question id to {what}")
    return obj


def main(argv=None) -> int:
    """``squad-eval DATA.json PRED.json``: prints the same JSON as the official script."""
    parser = argparse.ArgumentParser(prog="road-ds squad-eval",
                                     description="SQuAD 2.0 evaluation (official metrics).")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file.")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions.")
    parser.add_argument("--out-file", "-o", metavar="eval.json",
                        help="Write accuracy metrics to file (default is stdout).")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json",
                        help="Model estimates of probability of no answer.")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help='Predict "" if no-answer probability exceeds this (default = 1.0).')
    args = parser.parse_args(argv)
    try:
        data = load_json(args.data_file)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise DataError(args.data_file, "expected a SQuAD JSON object with a 'data' list")
        preds = _load_mapping(args.pred_file, "answer text")
        na_probs = _load_mapping(args.na_prob_file, "probability") if args.na_prob_file else None
        out = evaluate(data["data"], preds, na_probs, args.na_prob_thresh,
                       pred_file=args.pred_file, na_prob_file=args.na_prob_file)
    except DataError as e:
        print(f"squad-eval: {e}", file=sys.stderr)
        return 1
    if args.out_file:
        write_text(args.out_file, json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
