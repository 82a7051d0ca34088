"""Evaluation: every rank scores its share of a split; rank 0 assembles, decodes and scores.

QA features of one example may sit on different ranks, so logits are gathered per feature row
and decoded only once all rows are on rank 0. Every rank runs the same number of forward passes
(short shares are padded), which ZeRO-3's parameter gathering needs.

    road-ds evaluate RECIPE --model EXPORT_DIR|RUN_DIR [--dataset N] [--split dev] --out DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from road_ds.atomic import write_json
from road_ds.batching import collate
from road_ds.dist import pick_device
from road_ds.errors import DataError, run_job
from road_ds.metrics import classification_metrics
from road_ds.qa_decoding import postprocess_qa_predictions
from road_ds.squad_eval import evaluate as squad_evaluate


def _all_gather(obj, world_size: int) -> list:
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def predict(forward, ft, rank: int, world_size: int, batch_size: int, pad_id: int, device) -> dict[str, list] | None:
    """Logits of every feature row of `ft` (rank 0 gets them all, in row order; others None)."""
    n = len(ft)
    share = np.array_split(np.arange(n), world_size)[rank]
    steps = math.ceil(max(1, math.ceil(n / world_size)) / batch_size)
    arrow = ft.table.data.table
    rows_out, logits_out = [], {}
    for b in range(steps):
        rows = share[b * batch_size : (b + 1) * batch_size]
        real = len(rows)
        if real == 0:  # keep in step with the other ranks: a dummy batch, thrown away
            rows = np.array([0])
        batch = collate(arrow, rows, pad_id=pad_id)
        out = forward(ft.spec.head_name, **{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch})
        lens = batch["attention_mask"].sum(-1).tolist()
        for name, z in out.items():
            z = z.float().cpu().numpy()
            logits_out.setdefault(name, []).extend(z[i, : lens[i]] if z.ndim == 2 and ft.spec.task_type.kind == "span" else z[i] for i in range(real))
        rows_out.extend(rows[:real].tolist())
    parts = _all_gather((rows_out, logits_out), world_size)
    if rank != 0:
        return None
    order = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    merged = {name: [x for p in parts for x in p[1].get(name, [])] for name in parts[0][1]}
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return {name: [vals[i] for i in inverse] for name, vals in merged.items()}


def squad_dataset(examples) -> list:
    """The examples as an official-format SQuAD 'data' list, for the official scoring."""
    paragraphs = [{"context": e["context"], "qas": [{"id": e["id"], "answers": [{"text": t} for t in e["answers"]["text"]]}]} for e in examples]
    return [{"title": "", "paragraphs": paragraphs}]


def score(ft, logits: dict[str, list], n_best_size: int = 20, max_answer_length: int = 30) -> tuple[dict, dict | None]:
    """Metrics for one split (QA: the official SQuAD 2.0 keys; classification: accuracy, macro-F1, MCC),
    and for QA the predictions and na-probs to write."""
    if ft.spec.task_type.kind == "span":
        version_2 = any(not a["text"] for a in ft.examples["answers"])
        pred = postprocess_qa_predictions(ft.examples, ft.table, logits["start"], logits["end"], version_2_with_negative=version_2,
                                          n_best_size=n_best_size, max_answer_length=max_answer_length)
        data = squad_dataset(ft.examples)
        res = dict(squad_evaluate(data, pred.predictions, pred.na_probs if version_2 else None))
        files = {"predictions": pred.predictions, "na_probs": pred.na_probs}
        if version_2:
            # the best non-null span of every question scored with the na-probs, which is what the
            # official best_* threshold search is for: where the null score wins everywhere (early
            # in training) the predictions as written are all "" and hide what the span head learned
            span = squad_evaluate(data, pred.best_spans, pred.na_probs)
            res |= {f"span_{k}": span[k] for k in ("HasAns_exact", "HasAns_f1", "best_exact", "best_f1", "best_f1_thresh") if k in span}
            files["span_predictions"] = pred.best_spans
        res["main"] = res["f1"] / 100.0
        return res, files
    preds = np.stack(logits["cls"]).argmax(-1)
    res = classification_metrics(ft.table["label"], preds, num_labels=len(ft.spec.label_names))
    res["main"] = res["accuracy"]
    return res, None


def evaluate_split(forward, ft, rank, world_size, batch_size, pad_id, device, out_dir: Path | None = None, **decode) -> dict | None:
    logits = predict(forward, ft, rank, world_size, batch_size, pad_id, device)
    if rank != 0:
        return None
    res, files = score(ft, logits, **decode)
    if out_dir is not None and files:
        stem = Path(out_dir) / f"{ft.spec.name}-{ft.split}"
        for key, data in files.items():
            write_json(f"{stem}-{key}.json", data)
    return res


def macro(results: dict[str, dict]) -> float:
    """The mean of each dataset's main metric (QA F1 / 100, classification accuracy)."""
    return float(np.mean([r["main"] for r in results.values()])) if results else 0.0


# ---------------------------------------------------------------------------- command


def load_for_eval(model_path: Path):
    """A RoadModel from an export dir, or from a run dir (its final export)."""
    from transformers import AutoConfig, AutoModel

    from road_ds.model import EXPORT_INDEX, HeadSpec, RoadModel, load_export_weights

    path = Path(model_path)
    if not (path / EXPORT_INDEX).exists() and (path / "export" / EXPORT_INDEX).exists():
        path = path / "export"
    if not (path / EXPORT_INDEX).exists():
        raise DataError(model_path, "neither an export dir nor a run dir with an export")
    import json

    index = json.loads((path / EXPORT_INDEX).read_text())["heads"]
    first = path / next(iter(index.values()))["dir"]
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(first)))
    def labels(n, h):
        if h["kind"] != "classification":
            return None
        if h.get("labels"):
            return tuple(h["labels"])
        cfg = AutoConfig.from_pretrained(str(path / h["dir"]))  # an index without labels: the head's own config
        return tuple(cfg.id2label[i] for i in range(cfg.num_labels))

    model = RoadModel(encoder, [HeadSpec(n, h["kind"], labels(n, h)) for n, h in index.items()])
    load_export_weights(model, path, list(index))
    return model.eval()


def main(argv=None) -> int:
    from road_ds.features import build_features, load_tokenizer
    from road_ds.recipe import load_recipe

    p = argparse.ArgumentParser(prog="road-ds evaluate", description="Score an export (or a run's export) on datasets of a recipe.")
    p.add_argument("recipe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field, as in training")
    p.add_argument("--model", required=True, help="an export dir, or a run's output dir")
    p.add_argument("--dataset", action="append")
    p.add_argument("--split", default=None, help="default: each dataset's eval split")
    p.add_argument("--out", required=True, help="metrics.json, and for QA predictions.json / na_probs.json, go here")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    def body():
        recipe = load_recipe(args.recipe, args.set or [])
        tokenizer = load_tokenizer(recipe.model.tokenizer_path)
        device = pick_device()
        model = load_for_eval(Path(args.model)).to(device)
        results = {}
        for d in recipe.datasets:
            if args.dataset and d.name not in args.dataset:
                continue
            split = args.split or d.eval_split
            if split is None:
                continue
            if d.head_name not in model.heads:
                raise DataError(args.model, f"the model has no head '{d.head_name}' for dataset '{d.name}' (it has: {', '.join(model.heads)})")
            ft = build_features(recipe, d.name, split, tokenizer=tokenizer)
            results[f"{d.name}/{split}"] = evaluate_split(model, ft, 0, 1, args.batch_size, tokenizer.pad_token_id or 0, device,
                                                          out_dir=Path(args.out), n_best_size=recipe.train.n_best_size,
                                                          max_answer_length=recipe.train.max_answer_length)
        results["macro"] = macro(results)
        write_json(Path(args.out) / "metrics.json", results)
        for k, v in results.items():
            print(f"{k}: {v if k == 'macro' else {m: round(x, 4) for m, x in v.items() if isinstance(x, float)}}")

    return run_job("road-ds evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
