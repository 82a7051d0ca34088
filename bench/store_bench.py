"""Teacher-store benchmark on the real data kit: store size, precompute throughput, gather latency.

    python bench/store_bench.py [--out docs/bench_store.md] [--qa-articles 4] [--sentiment-rows 2000]

The teacher is MiniLM-L6 from the kit with freshly initialised QA / sentiment heads: sizes and
speeds do not depend on what the heads have learned. One process, one run, so ratios hold on a
noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from road_ds.atomic import write_text  # noqa: E402
from road_ds.batching import collate, lengths  # noqa: E402
from road_ds.features import build_features  # noqa: E402
from road_ds.precompute import compute_shard  # noqa: E402
from road_ds.recipe import cache_root, parse_recipe  # noqa: E402
from road_ds.store import OUTPUTS, TeacherStore, encode_logits, shard_schema, write_shard  # noqa: E402

BATCH = 32
ROWS_PER_SHARD = 1024


def make_inputs(tmp: Path, kit: Path, qa_articles: int, sentiment_rows: int):
    doc = json.loads((kit / "squad2" / "dev.json").read_text())
    doc["data"] = doc["data"][:qa_articles]
    (tmp / "squad2.json").write_text(json.dumps(doc))
    lines = (kit / "sentiment" / "train.jsonl").read_text().splitlines()[:sentiment_rows]
    (tmp / "sentiment.jsonl").write_text("\n".join(lines) + "\n")
    recipe = parse_recipe({
        "model": {"name_or_path": str(kit / "models" / "minilm-l6")},
        "features": {"max_seq_length": 256, "doc_stride": 96, "max_query_length": 48, "cache_dir": str(tmp / "features")},
        "datasets": [
            {"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"dev": str(tmp / "squad2.json")}, "answer_start": "nearest"},
            {"name": "sentiment", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"}, "files": {"dev": str(tmp / "sentiment.jsonl")}, "max_seq_length": 64},
        ],
    }, tmp / "bench.yaml")
    return build_features(recipe, "squad2", "dev"), build_features(recipe, "sentiment", "dev")


def teachers(kit: Path):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    l6 = str(kit / "models" / "minilm-l6")
    torch.manual_seed(0)
    span = AutoModelForQuestionAnswering.from_pretrained(l6).eval()
    cls = AutoModelForSequenceClassification.from_pretrained(l6, num_labels=2).eval()
    return span, cls


@torch.inference_mode()
def bare_forward(model, ft) -> float:
    """The same length-sorted batches, collate + forward only: the limit precompute is held to."""
    t0 = time.perf_counter()
    for a in range(0, len(ft), ROWS_PER_SHARD):
        arrow = ft.table.with_format("arrow")[a : a + ROWS_PER_SHARD]
        order = np.argsort(-lengths(arrow), kind="stable")
        for b in range(0, len(order), BATCH):
            batch = collate(arrow, order[b : b + BATCH])
            model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    return time.perf_counter() - t0


def precompute_time(model, ft, out: Path, top_k: int, dtype: str) -> float:
    """compute_shard + write_shard over the same rows: what the precompute job does per shard."""
    kind = ft.spec.task_type.kind
    width = 2 if kind == "classification" else (256 if top_k == 0 else top_k)
    t0 = time.perf_counter()
    for s, a in enumerate(range(0, len(ft), ROWS_PER_SHARD)):
        b = min(a + ROWS_PER_SHARD, len(ft))
        cols = compute_shard(model, ft, a, b, width, dtype, BATCH, torch.device("cpu"), 0)
        write_shard(out / f"shard-{s:05d}.arrow", cols, shard_schema(kind, width, dtype), "none", {})
    return time.perf_counter() - t0


def store_sizes(model, ft, tmp: Path) -> list[dict]:
    """Bytes per feature for each k x dtype x compression, from one full-k pass of the teacher."""
    kind = ft.spec.task_type.kind
    full = compute_shard(model, ft, 0, len(ft), 256 if kind == "span" else 2, "float32", BATCH, torch.device("cpu"), 0)
    rows = []
    ks = [1, 8, 32, 0] if kind == "span" else [2]
    for k in ks:
        for dtype in ("float16", "float32"):
            for comp in ("none", "lz4", "zstd"):
                cols = {n: v for n, v in full.items()}
                width = 256 if k == 0 else k
                for o in OUTPUTS[kind]:
                    z = torch.from_numpy(full[f"{o}_logit"][:, :width].copy())
                    cols[f"{o}_logit"] = encode_logits(z, dtype)
                    if kind == "span":
                        cols[f"{o}_idx"] = full[f"{o}_idx"][:, :width]
                d = tmp / f"size-{kind}-{k}-{dtype}-{comp}"
                shutil.rmtree(d, ignore_errors=True)
                nbytes = 0
                for s, a in enumerate(range(0, len(ft), ROWS_PER_SHARD)):
                    part = {n: v[a : a + ROWS_PER_SHARD] for n, v in cols.items()}
                    nbytes += write_shard(d / f"shard-{s:05d}.arrow", part, shard_schema(kind, width, dtype), comp, {})["bytes"]
                rows.append({"k": "full" if k == 0 else k, "dtype": dtype, "compression": comp, "bytes_per_feature": nbytes / len(ft)})
    dense = (2 if kind == "span" else 1) * (256 if kind == "span" else 2) * 4
    for r in rows:
        r["vs_full_fp32_logits"] = r["bytes_per_feature"] / dense
    return rows


def gather_latency(model, ft, tmp: Path) -> list[dict]:
    """ms per gather of a random batch, first touch (maps, verifies, decompresses) and warm."""
    from road_ds.precompute import build_parser, run

    out = []
    recipe_yaml = tmp / "bench.yaml"
    import yaml

    recipe_yaml.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(cache_root() / "kit" / "models" / "minilm-l6")},
        "features": {"max_seq_length": 256, "doc_stride": 96, "max_query_length": 48, "cache_dir": str(tmp / "features")},
        "datasets": [{"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"dev": str(tmp / "squad2.json")}, "answer_start": "nearest"}],
    }))
    teacher = tmp / "teacher"
    if not teacher.exists():
        model.save_pretrained(str(teacher))
    rng = np.random.default_rng(0)
    ids = np.asarray(ft.table["feature_id"])
    for comp in ("none", "lz4", "zstd"):
        store_dir = tmp / f"gather-{comp}"
        run(build_parser().parse_args([str(recipe_yaml), "--teacher", str(teacher), "--out", str(store_dir), "--split", "dev",
                                       "--top-k", "8", "--compression", comp, "--rows-per-shard", "256"]))
        store = TeacherStore.open(store_dir, [ft])
        t0 = time.perf_counter()
        store.gather("squad2", "dev", ids[:BATCH])
        first = time.perf_counter() - t0
        store.gather("squad2", "dev", ids)  # touch every shard once
        warm = []
        for _ in range(200):
            q = rng.choice(ids, BATCH, replace=False)
            t0 = time.perf_counter()
            store.gather("squad2", "dev", q)
            warm.append(time.perf_counter() - t0)
        out.append({"compression": comp, "first_ms": first * 1e3, "warm_ms_median": statistics.median(warm) * 1e3,
                    "warm_ms_p95": float(np.percentile(warm, 95)) * 1e3})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/bench_store.md")
    p.add_argument("--qa-articles", type=int, default=4)
    p.add_argument("--sentiment-rows", type=int, default=2000)
    args = p.parse_args()
    kit = cache_root() / "kit"
    if not (kit / "kit.json").exists():
        sys.exit(f"no data kit at {kit}: run `road-ds data fetch`")
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="road-ds-bench-"))
    try:
        qa, sent = make_inputs(tmp, kit, args.qa_articles, args.sentiment_rows)
        span, cls = teachers(kit)
        thr = []
        for name, model, ft in (("QA (span, k=8)", span, qa), ("sentiment (2 classes)", cls, sent)):
            bare_forward(model, ft)  # warm-up
            bare = min(bare_forward(model, ft) for _ in range(2))
            pre = min(precompute_time(model, ft, tmp / f"thr-{i}", 8, "float16") for i in range(2))
            thr.append({"data": name, "features": len(ft), "bare_s": bare, "precompute_s": pre, "ratio": bare / pre,
                        "features_per_s": len(ft) / pre})
        sizes = {"QA": store_sizes(span, qa, tmp), "sentiment": store_sizes(cls, sent, tmp)}
        gathers = gather_latency(span, qa, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = ["# Teacher store benchmark", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}; Python {platform.python_version()}, "
             f"torch {torch.__version__}, pyarrow {pyarrow.__version__}. Teacher: MiniLM-L6 (22.7M params) with fresh heads, fp32 on CPU.",
             f"Data: the kit's SQuAD-2.0-style dev, first {args.qa_articles} articles ({len(qa)} features, max_seq_length 256); "
             f"sentiment train, first {args.sentiment_rows} rows ({len(sent)} features, max_seq_length 64). Batch {BATCH}, {ROWS_PER_SHARD} rows per shard.",
             "Command: `make bench` (`python bench/store_bench.py`).", "",
             "## Precompute throughput against the bare forward pass (target ratio >= 0.90)", "",
             "| data | features | bare forward s | precompute s | bare / precompute | features/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['data']} | {r['features']} | {r['bare_s']:.2f} | {r['precompute_s']:.2f} | {r['ratio']:.3f} | {r['features_per_s']:.0f} |" for r in thr]
    for name, rows in sizes.items():
        lines += ["", f"## Store bytes per feature per teacher: {name}", "",
                  "| k | dtype | compression | bytes/feature | vs full fp32 logits |", "|---|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['dtype']} | {r['compression']} | {r['bytes_per_feature']:.1f} | {r['vs_full_fp32_logits']:.3f} |" for r in rows]
    lines += ["", "Full fp32 logits: QA 2 x 256 x 4 = 2048 bytes, sentiment 2 x 4 = 8 bytes per feature. Rows also carry "
              "feature_id, the float32 log-normalizers, gold labels and (QA) the support size.", "",
              f"## Gather latency, QA, k=8 float16, batch {BATCH} random feature ids", "",
              "| compression | first gather ms (map + verify + decompress) | warm median ms | warm p95 ms |", "|---|---|---|---|"]
    lines += [f"| {r['compression']} | {r['first_ms']:.1f} | {r['warm_ms_median']:.3f} | {r['warm_ms_p95']:.3f} |" for r in gathers]
    text = "\n".join(lines) + "\n"
    write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
