"""road_ds's QA features and decoding against the Hugging Face examples' own code.

    python bench/peer_qa.py --hf-examples <transformers clone>/examples/pytorch/question-answering --out RESULT.json [--questions N] [--reps R]

The peer is run_qa.py's prepare_train_features / prepare_validation_features (through datasets.map,
as run_qa.py applies them) and utils_qa.postprocess_qa_predictions, loaded from `--hf-examples` at
bench time (bench/hf_examples.py); no copy lives in this repo. Both sides get the real data kit's
SQuAD v1.1 files, the kit's MiniLM tokenizer and the same parameters.

  features  cold, from the JSON file to feature rows: road_ds.features.build_features (private
            cache folder, force=True: read, check, convert, round-trip stats, write the Arrow cache)
            against json → datasets.Dataset (flattened as the hub's squad builder does) → map. Best of
            --reps fresh runs each, interleaved. Then every feature compared: input_ids,
            token_type_ids, span labels (train), context offsets and example ids (dev).
  decoding  on the dev features, with seeded random logits (timed, best of --reps) and gold-like
            logits (road_ds.features.gold_span_logits), SQuAD 1.1 (v1) and with null answers (v2):
            road_ds.qa_decoding.postprocess_qa_predictions against utils_qa's; predictions per
            question compared, and for v2 the null-score differences (utils_qa writes them only to
            <output_dir>/null_odds.json: one untimed run per case with a temp dir).
Where road_ds is slower (features < 1.0x, decoding < 2x its peer) the road_ds call is profiled.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # utils_qa's per-example progress bar: noise on stderr, not work

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
from hf_examples import load_utils_qa, run_qa_feature_functions  # noqa: E402

from road_ds.atomic import write_json  # noqa: E402
from road_ds.features import NO_OFFSET, build_features, gold_span_logits, load_tokenizer  # noqa: E402
from road_ds.qa_decoding import postprocess_qa_predictions  # noqa: E402
from road_ds.recipe import cache_root, parse_recipe  # noqa: E402

NAME = "squad"
N_BEST, MAX_ANSWER = 20, 30
FIRST = 10  # differences listed in full
FEATURE_TARGET, DECODING_TARGET = 1.0, 2.0  # road_ds / peer speed below which the road_ds call is profiled
NULL_TOL = 1e-4  # null-score diffs: float32 logits summed in another order differ in the last bits


def log(msg: str) -> None:
    print(f"[peer_qa {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- inputs


def squad_columns(path: Path, limit: int | None) -> dict:
    """A SQuAD v1.1 file flattened to run_qa.py's columns, as the hub's `squad` builder does it."""
    cols = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    for article in doc["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                cols["id"].append(qa["id"])
                cols["title"].append(article.get("title", ""))
                cols["context"].append(para["context"])
                cols["question"].append(qa["question"])
                cols["answers"].append({"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]})
    return {k: v[:limit] for k, v in cols.items()} if limit else cols


def recipe_for(kit: Path, files: dict, limits: dict, params: dict, cache_dir: Path):
    raw = {
        "model": {"name_or_path": str(kit / "models" / "minilm-l6")},
        "features": {**params, "cache_dir": str(cache_dir)},
        # strict answer_start stops on the kit's few answers whose start does not match their text
        "datasets": [{"name": NAME, "task": "extractive_qa", "format": "squad_json", "files": files, "answer_start": "nearest", "limit": limits}],
    }
    return parse_recipe(raw)


# ---------------------------------------------------------------------------- features


def road_features(recipe, split: str, tokenizer):
    return build_features(recipe, NAME, split, tokenizer=tokenizer, force=True)


def hf_features(path: Path, limit: int | None, fn):
    """The peer's way from the same file: flattened examples, then run_qa.py's function through datasets.map."""
    t0 = time.perf_counter()
    examples = datasets.Dataset.from_dict(squad_columns(path, limit))
    t1 = time.perf_counter()
    feats = examples.map(fn, batched=True, remove_columns=examples.column_names)
    return examples, feats, t1 - t0, time.perf_counter() - t1


def rates(seconds: float, examples: int, features: int, **extra) -> dict:
    return {"seconds": round(seconds, 4), "examples_per_s": round(examples / seconds, 1), "features_per_s": round(features / seconds, 1),
            "features": features, **extra}


def _norm_offsets(offsets) -> list:
    return [list(NO_OFFSET) if o is None else [int(o[0]), int(o[1])] for o in offsets]


def _first_mismatch(a, b) -> dict:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"position": n, "lengths": [len(a), len(b)], "road_ds": a[n] if n < len(a) else None, "hf": b[n] if n < len(b) else None}


def label_cause(ex: dict) -> str:
    """Why road_ds's span label may differ from run_qa.py's, from the example (the library's documented choices)."""
    raw, used = ex["raw_answers"], ex["answers"]
    if not raw["text"]:
        return "no answer"
    if raw["answer_start"][0] != used["answer_start"][0]:
        return "answer_start moved (road_ds answer_start: nearest; run_qa.py uses the file's start)"
    if raw["text"][0] != raw["text"][0].strip():
        return "answer text has surrounding white space (road_ds labels the stripped answer)"
    return "unexplained"


def compare_features(split: str, road, hf_examples, hf_feats, cls_id: int) -> dict:
    """Every feature of one split, field by field, after the two conventions are normalised."""
    diffs: list[dict] = []
    rt = road.table
    cols = set(hf_feats.column_names)
    r_eids = list(rt["example_id"])
    r_windows = list(rt["window"])
    by_id = {e["id"]: e for e in road.examples}
    for e in hf_examples:
        if e["id"] in by_id:
            by_id[e["id"]]["raw_answers"] = e["answers"]
    if len(rt) != len(hf_feats):
        diffs.append({"field": "features", "road_ds": len(rt), "hf": len(hf_feats)})
    n = min(len(rt), len(hf_feats))
    pairs = [("input_ids", "input_ids"), ("token_type_ids", "token_type_ids")]
    if "example_id" in cols:
        pairs.append(("example_id", "example_id"))
    r = {a: list(rt[a]) for a, _ in pairs}
    h = {b: list(hf_feats[b]) for _, b in pairs}
    for i in range(n):
        for a, b in pairs:
            if r[a][i] != h[b][i]:
                diffs.append({"example_id": r_eids[i], "window": r_windows[i], "field": a,
                              **(_first_mismatch(r[a][i], h[b][i]) if isinstance(r[a][i], list) else {"road_ds": r[a][i], "hf": h[b][i]})})
    checked = [a for a, _ in pairs]
    if "offset_mapping" in cols:  # validation features: None outside the context, road_ds [-1, -1]
        checked.append("offset_mapping (context tokens)")
        r_off, h_off = list(rt["offset_mapping"]), list(hf_feats["offset_mapping"])
        for i in range(n):
            ho = _norm_offsets(h_off[i])
            if r_off[i] != ho:
                diffs.append({"example_id": r_eids[i], "window": r_windows[i], "field": "offset_mapping", **_first_mismatch(r_off[i], ho)})
    if "start_positions" in cols:  # train features: run_qa.py labels a missing answer (cls_index, cls_index), road_ds (0, 0)
        checked.append("start/end positions")
        ids = h["input_ids"]
        r_s, r_e = list(rt["start_positions"]), list(rt["end_positions"])
        h_s, h_e = list(hf_feats["start_positions"]), list(hf_feats["end_positions"])
        for i in range(n):
            cls = ids[i].index(cls_id) if cls_id in ids[i] else 0
            hs, he = (0, 0) if (h_s[i], h_e[i]) == (cls, cls) else (h_s[i], h_e[i])
            rs, re_ = r_s[i], r_e[i]
            if (rs, re_) != (hs, he):
                ex = by_id.get(r_eids[i], {})
                diffs.append({"example_id": r_eids[i], "window": r_windows[i], "field": "start/end positions", "road_ds": [rs, re_], "hf": [hs, he],
                              "answer": (ex.get("raw_answers") or {}).get("text", [None])[:1], "cause": label_cause(ex) if ex else "unexplained"})
    attention = None
    if "attention_mask" in cols:  # road_ds keeps no mask: its rows are unpadded, so every position is real
        checked.append("attention_mask (road_ds has none: all ones)")
        attention = all(all(v == 1 for v in m) for m in hf_feats["attention_mask"])
        if not attention:
            diffs.append({"field": "attention_mask", "road_ds": "none (all ones)", "hf": "has zeros"})
    by_field, by_cause = {}, {}
    for d in diffs:
        by_field[d["field"]] = by_field.get(d["field"], 0) + 1
        if "cause" in d:
            by_cause[d["cause"]] = by_cause.get(d["cause"], 0) + 1
    log(f"features {split}: {n} features compared, {len(diffs)} differences {by_field or ''}")
    return {"identical": not diffs, "checked": checked, "hf_attention_all_ones": attention,
            "differences": {"count": len(diffs), "by_field": by_field, "by_cause": by_cause, "first": diffs[:FIRST]}}


def bench_features(args, kit: Path, tokenizer, fns: dict, params: dict, work: Path) -> tuple[dict, dict]:
    """Both splits: timed interleaved reps, then the identity check on the last rep's rows."""
    out, kept = {}, {}
    for split, limit, fn in (("train", args.questions, fns["train"]), ("dev", args.dev_questions or None, fns["dev"])):
        path = kit / "squad" / f"{split}.json"
        limits = {split: limit} if limit else {}
        best_r = best_h = None
        for rep in range(args.reps):
            recipe = recipe_for(kit, {split: str(path)}, limits, params, work / f"features-{split}-{rep}")
            t0 = time.perf_counter()
            road = road_features(recipe, split, tokenizer)
            r_s = time.perf_counter() - t0
            hf_ex, hf_ft, load_s, map_s = hf_features(path, limit, fn)
            h_s = load_s + map_s
            log(f"features {split} rep {rep + 1}/{args.reps}: road_ds {r_s:.2f} s, run_qa.py {h_s:.2f} s (map {map_s:.2f} s), "
                f"{len(road.table)} / {len(hf_ft)} features")
            if best_r is None or r_s < best_r[0]:
                best_r = (r_s, road.meta.get("seconds"))
            if best_h is None or h_s < best_h[0]:
                best_h = (h_s, load_s, map_s)
        n_ex = len(road.examples)
        res = {"road_ds": rates(best_r[0], n_ex, len(road.table), build_seconds_without_cache_write=best_r[1]),
               "hf": rates(best_h[0], len(hf_ex), len(hf_ft), load_seconds=round(best_h[1], 4), map_seconds=round(best_h[2], 4),
                           map_examples_per_s=round(len(hf_ex) / best_h[2], 1)),
               "examples": n_ex, "moved_answers_whole_file": road.meta.get("moved_answers", 0)}  # read_split checks every row, then keeps the first N
        res.update(compare_features(split, road, hf_ex, hf_ft, tokenizer.cls_token_id))
        ratio = res["road_ds"]["examples_per_s"] / res["hf"]["examples_per_s"]
        res["road_ds_over_hf"] = round(ratio, 3)
        if ratio < FEATURE_TARGET:
            recipe = recipe_for(kit, {split: str(path)}, limits, params, work / f"features-{split}-profile")
            res["profile"] = profile(road_features, recipe, split, tokenizer)
        out[split] = res
        kept[split] = (road, hf_ex, hf_ft)
    return out, kept


# ---------------------------------------------------------------------------- decoding


def random_logits(table, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    lengths = [len(x) for x in table["input_ids"]]
    return [rng.standard_normal(n).astype(np.float32) for n in lengths], [rng.standard_normal(n).astype(np.float32) for n in lengths]


def hf_decode(utils_qa, examples, features, starts, ends, v2: bool, output_dir=None):
    return utils_qa.postprocess_qa_predictions(examples, features, (starts, ends), version_2_with_negative=v2, n_best_size=N_BEST,
                                               max_answer_length=MAX_ANSWER, null_score_diff_threshold=0.0, output_dir=output_dir)


def road_decode(examples, features, starts, ends, v2: bool):
    return postprocess_qa_predictions(examples, features, starts, ends, version_2_with_negative=v2, n_best_size=N_BEST,
                                      max_answer_length=MAX_ANSWER, null_score_diff_threshold=0.0)


def _hf_predictions(result) -> dict:
    return result[0] if isinstance(result, tuple) else result  # utils_qa returns the dict (older copies: (dict, scores))


def compare_decoding(road, hf: dict, hf_null: dict | None, kind: str) -> dict:
    """Per question: the answer text, and for v2 the null-score difference; road_ds's "" for no valid span is counted apart."""
    diffs, empty, null_bad, null_max, null_n = [], 0, 0, 0.0, 0
    for qid, r in road.predictions.items():
        h = _hf_predictions(hf).get(qid)
        no_span = not any(c["text"] for c in road.nbest[qid])
        if no_span and r == "" and h in ("empty", ""):
            empty += 1  # documented: the peer answers the literal "empty" (or, v2, its null) where no span is valid
            continue
        if r != h:
            diffs.append({"logits": kind, "id": qid, "field": "prediction", "road_ds": r, "hf": h})
        if hf_null is not None:
            rd, hd = road.score_diffs.get(qid), hf_null.get(qid)
            null_n += 1
            err = abs(rd - hd) if rd is not None and hd is not None and math.isfinite(rd) else math.inf
            null_max = max(null_max, err)
            if err > NULL_TOL * max(1.0, abs(hd or 0.0)):
                null_bad += 1
                diffs.append({"logits": kind, "id": qid, "field": "null score diff", "road_ds": rd, "hf": hd})
    out = {"questions": len(road.predictions), "differences": len(diffs), "prediction_differences": sum(d["field"] == "prediction" for d in diffs),
           "empty_vs_blank": empty, "first": diffs[:FIRST]}
    if hf_null is not None:
        out["null_scores"] = {"compared": null_n, "mismatches": null_bad, "max_abs_diff": null_max, "tolerance": f"{NULL_TOL} relative"}
    return out


def bench_decoding(args, utils_qa, road_dev, hf_examples, hf_features, work: Path) -> dict:
    examples, table = road_dev.examples, road_dev.table
    peer_features = hf_features
    same = len(hf_features) == len(table) and list(hf_features["example_id"]) == list(table["example_id"])
    if not same:  # the features differ: give the peer road_ds's rows in its own convention, so both decode the same windows
        peer_features = datasets.Dataset.from_dict({"example_id": list(table["example_id"]),
                                                    "offset_mapping": [[None if o == NO_OFFSET else o for o in offs] for offs in table["offset_mapping"]]})
    logits = {"random": random_logits(table, args.seed), "gold": gold_span_logits(table)}
    out = {}
    for version, v2 in (("v1", False), ("v2", True)):
        starts, ends = logits["random"]
        best_r = best_h = math.inf
        for rep in range(args.reps):
            t0 = time.perf_counter()
            road = road_decode(examples, table, starts, ends, v2)
            t1 = time.perf_counter()
            hf = hf_decode(utils_qa, hf_examples, peer_features, starts, ends, v2)
            t2 = time.perf_counter()
            best_r, best_h = min(best_r, t1 - t0), min(best_h, t2 - t1)
            log(f"decoding {version} rep {rep + 1}/{args.reps}: road_ds {t1 - t0:.3f} s, utils_qa {t2 - t1:.3f} s")
        n = len(examples)
        res = {"road_ds": {"seconds": round(best_r, 4), "examples_per_s": round(n / best_r, 1)},
               "hf": {"seconds": round(best_h, 4), "examples_per_s": round(n / best_h, 1)},
               "examples": n, "features": len(table), "peer_features": "run_qa.py's validation features" if same else "road_ds's rows, offsets as None"}
        per_kind = {}
        for kind, (s, e) in logits.items():
            road = road_decode(examples, table, s, e, v2)
            hf_null = None
            if v2:  # utils_qa keeps the null-score diffs to itself unless it writes them
                with tempfile.TemporaryDirectory(dir=work) as tmp:
                    hf = hf_decode(utils_qa, hf_examples, peer_features, s, e, v2, output_dir=tmp)
                    hf_null = json.loads((Path(tmp) / "null_odds.json").read_text())
            else:
                hf = hf_decode(utils_qa, hf_examples, peer_features, s, e, v2)
            per_kind[kind] = compare_decoding(road, hf, hf_null, kind)
        first = [d for k in per_kind.values() for d in k["first"]][:FIRST]
        res["identical_predictions"] = all(k["prediction_differences"] == 0 for k in per_kind.values())
        res["differences"] = {"count": sum(k["differences"] for k in per_kind.values()), "first": first}
        res["empty_vs_blank"] = sum(k["empty_vs_blank"] for k in per_kind.values())
        if v2:
            res["identical_null_scores"] = all(k["null_scores"]["mismatches"] == 0 for k in per_kind.values())
        res["logits"] = per_kind
        res["road_ds_over_hf"] = round(res["road_ds"]["examples_per_s"] / res["hf"]["examples_per_s"], 3)
        if res["road_ds_over_hf"] < DECODING_TARGET:
            res["profile"] = profile(road_decode, examples, table, starts, ends, v2)
        log(f"decoding {version}: road_ds {res['road_ds']['examples_per_s']:.0f} ex/s, utils_qa {res['hf']['examples_per_s']:.0f} ex/s, "
            f"{res['differences']['count']} differences, {res['empty_vs_blank']} empty-vs-blank")
        out[version] = res
    return out


# ---------------------------------------------------------------------------- profile


def profile(fn, *args, top: int = 10) -> list[str]:
    """The road_ds call under cProfile: its top functions by cumulative time."""
    prof = cProfile.Profile()
    prof.runcall(fn, *args)
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
    out = []
    for (path, line, func), (_cc, nc, tt, ct, _callers) in rows[:top]:
        where = path
        for root in (str(REPO) + "/", "site-packages/"):
            where = where.split(root, 1)[-1]
        out.append(f"{ct:8.3f} s cum {tt:8.3f} s own {nc:>8} calls  {where}:{line}({func})")
    return out


# ---------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hf-examples", default=os.environ.get("HF_EXAMPLES"),
                   help="the transformers examples' question-answering dir (run_qa.py, utils_qa.py), e.g. <clone>/examples/pytorch/question-answering")
    p.add_argument("--out", required=True, help="the result JSON")
    p.add_argument("--questions", type=int, default=2000, help="train questions (the first N of the kit's train.json)")
    p.add_argument("--dev-questions", type=int, default=0, help="dev questions (0: the kit's whole dev set)")
    p.add_argument("--reps", type=int, default=3, help="fresh runs of each side; the best is kept")
    p.add_argument("--seed", type=int, default=0, help="random logits")
    p.add_argument("--max-seq-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    args = p.parse_args(argv)
    if not args.hf_examples:
        raise SystemExit("peer_qa needs --hf-examples (or $HF_EXAMPLES): clone https://github.com/huggingface/transformers and pass "
                         "--hf-examples <clone>/examples/pytorch/question-answering")
    t_all = time.time()
    datasets.disable_progress_bars()
    kit = cache_root() / "kit"
    for f in ("train.json", "dev.json"):
        if not (kit / "squad" / f).exists():
            raise SystemExit(f"no {kit / 'squad' / f}: fetch the data kit first (road-ds data fetch)")
    utils_qa = load_utils_qa(args.hf_examples)
    tokenizer = load_tokenizer(str(kit / "models" / "minilm-l6"))
    train_fn, dev_fn = run_qa_feature_functions(args.hf_examples, tokenizer, args.max_seq_length, args.doc_stride, pad_to_max_length=False)
    # run_qa.py never cuts questions; road_ds cuts them at max_query_length, whose largest value the recipe
    # allows is max_seq_length - doc_stride - 4 (room for a new window): longer questions are counted below
    max_query = args.max_seq_length - args.doc_stride - 4
    params = {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride, "max_query_length": max_query}
    longest = {}
    for split in ("train", "dev"):
        qs = squad_columns(kit / "squad" / f"{split}.json", args.questions if split == "train" else args.dev_questions or None)["question"]
        lengths = [len(x) for x in tokenizer([q.lstrip() for q in qs], add_special_tokens=False)["input_ids"]]
        longest[split] = {"longest_question_tokens": max(lengths), "questions_over_max_query_length": sum(n > max_query for n in lengths)}
    log(f"params {params}; questions {longest}; peer code from {args.hf_examples}")
    with tempfile.TemporaryDirectory(prefix="road-ds-peer-qa-") as tmp:
        work = Path(tmp)
        splits, kept = bench_features(args, kit, tokenizer, {"train": train_fn, "dev": dev_fn}, params, work)
        road_dev, hf_dev_ex, hf_dev_ft = kept["dev"]
        decoding = bench_decoding(args, utils_qa, road_dev, hf_dev_ex, hf_dev_ft, work)
    import tokenizers
    import transformers

    result = {
        "features": {"examples": {s: v["examples"] for s, v in splits.items()},
                     "params": {**params, "pad_to_max_length": False, "tokenizer": "kit/models/minilm-l6", "reps": args.reps, "questions": longest,
                                "timed": "cold, file to feature rows; road_ds: build_features(force=True, fresh cache_dir); "
                                         "hf: json -> datasets.Dataset -> map(prepare_*_features, batched=True, remove_columns)"},
                     "splits": splits},
        "decoding": decoding,
        "decoding_params": {"n_best_size": N_BEST, "max_answer_length": MAX_ANSWER, "null_score_diff_threshold": 0.0, "seed": args.seed,
                            "timed": "random logits, the decoding call alone (utils_qa with output_dir=None)"},
        "versions": {"transformers": transformers.__version__, "datasets": datasets.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__},
        "hf_examples": str(Path(args.hf_examples).expanduser().resolve()),
        "seconds": round(time.time() - t_all, 1),
    }
    write_json(args.out, result)
    log(f"wrote {args.out} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
