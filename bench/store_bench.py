"""Teacher-store benchmark on the real data kit: store size, KD fidelity against k, precompute
throughput, gather latency and throughput, and how the store grows with teachers and rows.

    python bench/store_bench.py [--out docs/bench_store.md] [--qa-articles 4] [--sentiment-rows 2000]

Sizes and speeds use MiniLM-L6 from the kit with freshly initialised QA / sentiment heads (they do
not depend on what the heads learned); fidelity uses a MiniLM-L6 QA teacher fine-tuned here by the
trainer, whose distributions are peaked as a real teacher's are. One process (plus that short
training run), so ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
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
from road_ds.store import OUTPUTS, TeacherSet, TeacherStore, decode_logits, encode_logits, reconstruct, shard_schema, write_shard  # noqa: E402

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


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CPU = torch.device("cpu")


@torch.inference_mode()
def bare_forward(model, ft, device=CPU) -> float:
    """The same length-sorted batches, collate + forward only (bf16 autocast on a GPU, as the
    precompute): the limit precompute is held to."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    _sync(device)
    t0 = time.perf_counter()
    for a in range(0, len(ft), ROWS_PER_SHARD):
        arrow = ft.table.with_format("arrow")[a : a + ROWS_PER_SHARD]
        order = np.argsort(-lengths(arrow), kind="stable")
        for b in range(0, len(order), BATCH):
            batch = collate(arrow, order[b : b + BATCH])
            with autocast:
                model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")})
    _sync(device)
    return time.perf_counter() - t0


def precompute_time(model, ft, out: Path, top_k: int, dtype: str, device=CPU) -> float:
    """compute_shard + write_shard over the same rows: what the precompute job does per shard."""
    kind = ft.spec.task_type.kind
    width = 2 if kind == "classification" else (256 if top_k == 0 else top_k)
    _sync(device)
    t0 = time.perf_counter()
    for s, a in enumerate(range(0, len(ft), ROWS_PER_SHARD)):
        b = min(a + ROWS_PER_SHARD, len(ft))
        cols = compute_shard(model, ft, a, b, width, dtype, BATCH, device, 0)
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


GATHER_ROUNDS, GATHERS_PER_ROUND = 10, 50


def warm_gathers(stores: dict, split: str, ids: np.ndarray, rng) -> dict[object, list[float]]:
    """Seconds per gather of a random batch from each store, once every shard has been touched (mapped
    and verified). The stores take turns, GATHERS_PER_ROUND gathers each, so a slow spell of a shared
    machine falls on all of them alike instead of on whichever was measured then."""
    for store in stores.values():
        store.gather("squad2", split, ids)
    times: dict[object, list[float]] = {k: [] for k in stores}
    for _ in range(GATHER_ROUNDS):
        for k, store in stores.items():
            for _ in range(GATHERS_PER_ROUND):
                q = rng.choice(ids, BATCH, replace=False)
                t0 = time.perf_counter()
                store.gather("squad2", split, q)
                times[k].append(time.perf_counter() - t0)
    return times


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
    stores, first = {}, {}
    for comp in ("none", "lz4", "zstd"):
        store_dir = tmp / f"gather-{comp}"
        run(build_parser().parse_args([str(recipe_yaml), "--teacher", str(teacher), "--out", str(store_dir), "--split", "dev",
                                       "--top-k", "8", "--compression", comp, "--rows-per-shard", "256"]))
        stores[comp] = TeacherStore.open(store_dir, [ft])
        t0 = time.perf_counter()
        stores[comp].gather("squad2", "dev", ids[:BATCH])
        first[comp] = time.perf_counter() - t0
    warm = warm_gathers(stores, "dev", ids, rng)
    for comp in stores:
        out.append({"compression": comp, "first_ms": first[comp] * 1e3, "warm_ms_median": statistics.median(warm[comp]) * 1e3,
                    "warm_ms_p95": float(np.percentile(warm[comp], 95)) * 1e3})
    return out


def trained_qa_teacher(tmp: Path, kit: Path, steps: int):
    """MiniLM-L6 fine-tuned on the kit's SQuAD-2.0-style train split by the trainer itself (a few minutes)."""
    import yaml
    from transformers import AutoModelForQuestionAnswering

    recipe = tmp / "qa_teacher.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(kit / "models" / "minilm-l6")},
        "features": {"max_seq_length": 256, "doc_stride": 96, "max_query_length": 48, "cache_dir": str(tmp / "features")},
        "datasets": [{"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"train": str(kit / "squad2" / "train.json")},
                      "answer_start": "nearest", "limit": {"train": steps * 16}}],
        "train": {"max_steps": steps, "micro_batch_size": 16, "lr": 1.5e-4, "warmup_steps": max(1, steps // 10), "save_every": steps},
    }))
    run = tmp / "qa_teacher"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "road_ds" / "train.py"), "--recipe", str(recipe),
                        "--output-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(r.stdout[-3000:])
    return AutoModelForQuestionAnswering.from_pretrained(str(run / "export" / "span")).eval(), time.perf_counter() - t0


def _best_spans(logp_start: torch.Tensor, logp_end: torch.Tensor, max_len: int = 30) -> torch.Tensor:
    """(start, end) maximising log p(start) + log p(end), start <= end < start + max_len, per row."""
    n, L = logp_start.shape
    band = torch.ones(L, L, dtype=torch.bool).triu().tril(max_len - 1)
    best = []
    for a in range(0, n, 64):
        s = logp_start[a : a + 64, :, None] + logp_end[a : a + 64, None, :]
        best.append(s.masked_fill(~band, -torch.inf).flatten(1).argmax(-1))
    return torch.cat(best)


def fidelity(model, ft) -> list[dict]:
    """KL(full ‖ top-k reconstruction) and agreement of argmax / best span, per k, from one full fp32 pass."""
    full = compute_shard(model, ft, 0, len(ft), 256, "float32", BATCH, torch.device("cpu"), 0)
    n, L = len(ft), 256
    rows = []
    for k in (1, 2, 4, 8, 16, 32, 64):
        kl, argmax, mass = [], [], []
        best = {}
        for which, kk in (("full", L), ("k", k)):
            logps = []
            for o in OUTPUTS["span"]:
                idx = torch.from_numpy(full[f"{o}_idx"]).long()
                support = torch.zeros(n, L, dtype=torch.bool).scatter_(1, idx.clamp(min=0), idx >= 0)
                z = torch.from_numpy(full[f"{o}_logit"][:, :kk].copy())
                z = z if which == "full" else decode_logits(encode_logits(z, "float16"), "float16").float()  # stored as float16
                logps.append(reconstruct(z, torch.from_numpy(full[f"{o}_lse"]), idx[:, :kk].int(), support))
            best[which] = (logps, _best_spans(*logps))
        for (p, q) in zip(best["full"][0], best["k"][0]):
            pk = p.exp()
            kl.append(torch.where(pk > 0, pk * (p - q.clamp(min=-30.0)), torch.zeros_like(p)).sum(-1))  # q = 0 where the kept mass rounds to 1
            argmax.append((p.argmax(-1) == q.argmax(-1)).float())
            mass.append(pk.sort(-1, descending=True).values[:, :k].sum(-1))
        rows.append({"k": k, "kl_mean": float(torch.cat(kl).mean()), "kl_p99": float(torch.cat(kl).quantile(0.99)),
                     "argmax": float(torch.cat(argmax).mean()), "span": float((best["full"][1] == best["k"][1]).float().mean()),
                     "mass": float(torch.cat(mass).mean())})
    return rows


def read_throughput(store_dir: Path, ft, n_batches: int = 200) -> dict:
    """Gather of random batches against plain reads of the same shard bytes (page cache warm, and cold)."""
    store = TeacherStore.open(store_dir, [ft])
    ids = np.asarray(ft.table["feature_id"])
    shards = sorted(store_dir.rglob("*.arrow"))
    nbytes = sum(p.stat().st_size for p in shards)
    per_feature = nbytes / len(ids)
    store.gather("squad2", "dev", ids)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        store.gather("squad2", "dev", rng.choice(ids, BATCH, replace=False))
    gather_s = time.perf_counter() - t0
    def read_all(cold: bool) -> float:
        t = 0.0
        for p in shards:
            with open(p, "rb") as fh:
                if cold:
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # drop this file's pages from the page cache
                t0 = time.perf_counter()
                fh.read()
                t += time.perf_counter() - t0
        return t
    warm = min(read_all(False) for _ in range(3))
    cold = read_all(True)
    return {"gather_features_per_s": n_batches * BATCH / gather_s, "gather_mb_per_s": n_batches * BATCH * per_feature / gather_s / 2**20,
            "read_warm_mb_per_s": nbytes / warm / 2**20, "read_cold_mb_per_s": nbytes / cold / 2**20, "bytes": nbytes}


def growth(tmp: Path, kit: Path, base_rows: int) -> list[dict]:
    """Store bytes and gather latency against rows (1x, 4x, 16x of the QA train split) and teachers (1, 3, 6).
    The teacher is a tiny random BERT: the store's shape, not the teacher, sets these costs."""
    import yaml
    from transformers import AutoModelForQuestionAnswering, BertConfig

    from road_ds.precompute import build_parser, run

    teacher = tmp / "tiny-teacher"
    torch.manual_seed(0)
    AutoModelForQuestionAnswering.from_config(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(str(teacher))
    for f in (kit / "models" / "minilm-l6").iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, teacher / f.name)
    out, rng = [], np.random.default_rng(0)
    for mult in (1, 4, 16):
        recipe = tmp / f"growth-{mult}.yaml"
        recipe.write_text(yaml.safe_dump({
            "model": {"name_or_path": str(kit / "models" / "minilm-l6")},
            "features": {"max_seq_length": 256, "doc_stride": 96, "max_query_length": 48, "cache_dir": str(tmp / "features")},
            "datasets": [{"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"train": str(kit / "squad2" / "train.json")},
                          "answer_start": "nearest", "limit": {"train": base_rows * mult}}]}))
        store_dir = tmp / f"growth-{mult}"
        run(build_parser().parse_args([str(recipe), "--teacher", str(teacher), "--out", str(store_dir), "--split", "train", "--top-k", "8"]))
        from road_ds.recipe import load_recipe

        ft = build_features(load_recipe(recipe), "squad2", "train")
        ids = np.asarray(ft.table["feature_id"])
        copies = [store_dir] + [tmp / f"growth-{mult}-copy{i}" for i in range(1, 6)]
        for c in copies[1:]:
            shutil.copytree(store_dir, c)
        lat = warm_gathers({m: TeacherSet.open(copies[:m], [ft]) for m in (1, 3, 6)}, "train", ids, rng)
        for m in (1, 3, 6):
            size = sum(p.stat().st_size for c in copies[:m] for p in c.rglob("*") if p.is_file())
            out.append({"rows": f"{mult}x", "questions": base_rows * mult, "features": len(ids), "teachers": m, "mb": size / 2**20,
                        "gather_ms": statistics.median(lat[m]) * 1e3})
        for c in copies[1:]:
            shutil.rmtree(c)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/bench_store.md")
    p.add_argument("--qa-articles", type=int, default=4)
    p.add_argument("--sentiment-rows", type=int, default=2000)
    p.add_argument("--teacher-steps", type=int, default=40, help="fine-tuning steps (x 16 questions) of the fidelity teacher")
    p.add_argument("--growth-rows", type=int, default=800, help="QA train questions at 1x of the growth table")
    args = p.parse_args()
    kit = cache_root() / "kit"
    if not (kit / "kit.json").exists():
        sys.exit(f"no data kit at {kit}: run `road-ds data fetch`")
    torch.set_num_threads(os.cpu_count() or 1)
    t_all = time.time()
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
        reads = read_throughput(tmp / "gather-none", qa)
        grow = growth(tmp, kit, args.growth_rows)
        trained, train_s = trained_qa_teacher(tmp, kit, args.teacher_steps)
        fid = fidelity(trained, qa)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = ["# Teacher store benchmark", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}; Python {platform.python_version()}, "
             f"torch {torch.__version__}, pyarrow {pyarrow.__version__}. Teacher: MiniLM-L6 (22.7M params) with fresh heads, fp32 on CPU. "
             f"Total {(time.time() - t_all) / 60:.1f} min.",
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
              f"Warm: {GATHER_ROUNDS * GATHERS_PER_ROUND} random batches per store, the three stores taking turns.", "",
              "| compression | first gather ms (map + verify + decompress) | warm median ms | warm p95 ms |", "|---|---|---|---|"]
    lines += [f"| {r['compression']} | {r['first_ms']:.1f} | {r['warm_ms_median']:.3f} | {r['warm_ms_p95']:.3f} |" for r in gathers]
    lines += ["", "## Gather throughput against reading the same bytes (QA, k=8 float16, uncompressed store)", "",
              f"Gather: {BATCH} random feature ids per call, a warm store (what a DataLoader worker does). Read: the shard files read whole "
              f"with `read()`, {reads['bytes'] / 2**20:.2f} MiB.", "",
              "| gather features/s | gather MiB/s (stored bytes) | read MiB/s, page cache warm | read MiB/s, cold (pages dropped) |", "|---|---|---|---|",
              f"| {reads['gather_features_per_s']:.0f} | {reads['gather_mb_per_s']:.1f} | {reads['read_warm_mb_per_s']:.0f} | {reads['read_cold_mb_per_s']:.0f} |",
              "", f"## KD fidelity against k (QA, real teacher outputs: MiniLM-L6 fine-tuned for {args.teacher_steps} steps here, {train_s:.0f} s)", "",
              "KL(full ‖ top-k reconstruction) in nats per distribution (start and end), kept logits stored as float16; the rest of the "
              "mass is spread evenly over the support. Agreement: the reconstructed argmax, and the best span (start ≤ end < start + 30) "
              "decoded from the reconstruction, against the full distribution's.", "",
              "| k | kept mass | KL mean | KL p99 | argmax agreement | best-span agreement |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['k']} | {r['mass']:.4f} | {r['kl_mean']:.4f} | {r['kl_p99']:.4f} | {100 * r['argmax']:.2f}% | {100 * r['span']:.2f}% |" for r in fid]
    lines += ["", "## Growth with dataset size and teachers (QA, k=8 float16)", "",
              f"Rows: the first {args.growth_rows}, {4 * args.growth_rows} and {16 * args.growth_rows} questions of the kit's SQuAD-2.0-style train "
              f"split. Gather: median of {GATHER_ROUNDS * GATHERS_PER_ROUND} random batches of {BATCH} ids from M stores, the three M taking turns.", "",
              "| rows | questions | features | teachers | store MiB | gather ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['rows']} | {r['questions']} | {r['features']} | {r['teachers']} | {r['mb']:.2f} | {r['gather_ms']:.3f} |" for r in grow]
    text = "\n".join(lines) + "\n"
    write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
