"""Offline teacher pass: run one teacher over the feature tables and write its top-k logits to a store.

    road-ds precompute RECIPE --teacher DIR --out STORE [--top-k 8] [--dtype float16]
    deepspeed --num_gpus N road_ds/precompute.py RECIPE ...     (or torchrun, or srun)

The teacher is a Hugging Face model dir (`*ForQuestionAnswering` for span datasets,
`*ForSequenceClassification` for classification datasets) or a road_ds export dir (one such dir
per head, named in `road_ds_export.json`). Shards are dealt to ranks round-robin; a rerun keeps
every shard that verifies and recomputes the rest, so a killed job resumes. Rank 0 writes the
manifest last, after every shard of every rank verifies.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: `deepspeed road_ds/precompute.py ...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from road_ds.atomic import file_hash, write_json
from road_ds.batching import collate, lengths
from road_ds.dist import barrier, init_process_group, main_process_first, pick_device, rank0_logger, world_from_env
from road_ds.errors import DataError, run_job
from road_ds.features import build_features, load_tokenizer, tokenizer_hash
from road_ds.model import EXPORT_INDEX
from road_ds.recipe import load_recipe
from road_ds.store import COMPRESSIONS, DTYPES, MANIFEST, OUTPUTS, SCHEMA_VERSION, check_shard, encode_logits, ids_digest, shard_schema, write_ids, write_shard

FP16_MAX = 65504.0


# ---------------------------------------------------------------------------- teacher


def teacher_dir(path: Path, head: str, kind: str) -> Path:
    """The HF dir that serves `head`: the path itself, or its export entry."""
    index = path / EXPORT_INDEX
    if index.exists():
        heads = json.loads(index.read_text())["heads"]
        if head not in heads:
            raise DataError(index, f"the teacher export has no head '{head}' (it has: {', '.join(heads)})")
        return path / heads[head]["dir"]
    return path


def teacher_identity(path: Path) -> str:
    """sha256 over the teacher's config and weight files: what the store was computed with."""
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".pt"))]
    if not files:
        raise DataError(path, "no config.json or weight files: not a model directory")
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path)).encode() + b"\x00" + file_hash(p).encode())
    return h.hexdigest()


def load_teacher(path: Path, kind: str, labels: list[str] | None, device: torch.device, features_tok_hash: str):
    """A teacher model for one head kind, checked against the dataset's labels and tokenizer."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as e:
        raise DataError(path, f"cannot read the teacher's config: {e}") from None
    arch = (config.architectures or ["?"])[0]
    want = "ForQuestionAnswering" if kind == "span" else "ForSequenceClassification"
    if not arch.endswith(want):
        raise DataError(path, f"the teacher is a {arch}; a {kind} head needs a *{want} model", field="architectures")
    if kind == "classification":
        names = [config.id2label[i] for i in range(config.num_labels)]
        generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
        if config.num_labels != len(labels) or (not generic and names != labels):
            raise DataError(path, f"the teacher's labels {names} are not the dataset's {labels}", field="id2label")
    if (path / "tokenizer.json").exists() or (path / "vocab.txt").exists():
        th = tokenizer_hash(load_tokenizer(str(path)))
        if th != features_tok_hash:
            raise DataError(path, "the teacher's tokenizer is not the one the features were built with "
                                  f"({th[:12]} vs {features_tok_hash[:12]}): its logits would be for other tokens")
    cls = AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification
    model = cls.from_pretrained(str(path))
    return model.to(device).eval(), config


# ---------------------------------------------------------------------------- one shard


def _check_finite(x: torch.Tensor, valid: torch.Tensor, rows: np.ndarray, ft, out: str) -> None:
    bad = ~torch.isfinite(x) & valid
    if bad.any():
        i = int(bad.any(-1).nonzero()[0])
        row = int(rows[i])
        raise DataError(
            f"{ft.spec.name}/{ft.split}", f"teacher logit is {x[i][bad[i]][0].item()} (feature_id {ft.table[row]['feature_id']}, "
            f"example {ft.table[row]['example_id']}): the teacher is broken or overflowed; stopping", row=row, field=f"{out}_logit",
        )


@torch.inference_mode()
def compute_shard(model, ft, row_start: int, row_end: int, width: int, dtype: str, batch_size: int, device, pad_id: int) -> dict:
    """Teacher targets for feature rows [row_start, row_end), in row order."""
    kind = ft.spec.task_type.kind
    arrow = ft.table.with_format("arrow")[row_start:row_end]
    n = arrow.num_rows
    order = np.argsort(-lengths(arrow), kind="stable")  # length-sorted batches waste no padding
    cols = {"feature_id": arrow.column("feature_id").to_numpy()}
    for o in OUTPUTS[kind]:
        cols[f"{o}_logit"] = np.zeros((n, width), dtype=np.uint16 if dtype == "bfloat16" else (np.float16 if dtype == "float16" else np.float32))
        cols[f"{o}_lse"] = np.zeros(n, dtype=np.float32)
        if kind == "span":
            cols[f"{o}_idx"] = np.full((n, width), -1, dtype=np.int32)
    if kind == "span":
        cols["support"] = np.zeros(n, dtype=np.int32)
        cols["start_gold"] = arrow.column("start_positions").to_numpy()
        cols["end_gold"] = arrow.column("end_positions").to_numpy()
    else:
        cols["cls_gold"] = arrow.column("label").to_numpy()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for b in range(0, n, batch_size):
        rows = order[b : b + batch_size]
        batch = collate(arrow, rows, pad_id=pad_id)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        with autocast:
            out = model(**inputs)
        if kind == "span":
            support = batch["support"].to(device)
            cols["support"][rows] = support.sum(-1).cpu().numpy()
            for o, logits in (("start", out.start_logits), ("end", out.end_logits)):
                z = logits.float()
                _check_finite(z, support, row_start + rows, ft, o)
                z = z.masked_fill(~support, -torch.inf)
                k = min(width, z.shape[-1])
                top, idx = z.topk(k, dim=-1)
                keep = torch.isfinite(top)
                _store(cols, o, rows, torch.logsumexp(z, -1), top, idx.int().masked_fill(~keep, -1), keep, dtype, row_start, ft)
        else:
            z = out.logits.float()
            _check_finite(z, torch.ones_like(z, dtype=torch.bool), row_start + rows, ft, "cls")
            _store(cols, "cls", rows, torch.logsumexp(z, -1), z, None, None, dtype, row_start, ft)
    return cols


def _store(cols, o, rows, lse, top, idx, keep, dtype, row_start, ft) -> None:
    top = top.cpu()
    if keep is not None:
        top = top.masked_fill(~keep.cpu(), 0.0)
    if dtype == "float16" and top.abs().max() > FP16_MAX:
        i = int((top.abs() > FP16_MAX).any(-1).nonzero()[0])
        raise DataError(f"{ft.spec.name}/{ft.split}", f"teacher logit {top[i].abs().max().item():.4g} overflows float16; use --dtype bfloat16 or float32",
                        row=int(row_start + rows[i]), field=f"{o}_logit")
    k = top.shape[-1]
    cols[f"{o}_logit"][rows, :k] = encode_logits(top, dtype)
    cols[f"{o}_lse"][rows] = lse.cpu().numpy()
    if idx is not None:
        cols[f"{o}_idx"][rows, :k] = idx.cpu().numpy()


# ---------------------------------------------------------------------------- the job


def _plan(tables, rows_per_shard: int) -> list[tuple]:
    """Every (table, shard number, row range) of the store, in one fixed order."""
    plan = []
    for ft in tables:
        for s in range(max(1, math.ceil(len(ft) / rows_per_shard))):
            plan.append((ft, s, s * rows_per_shard, min((s + 1) * rows_per_shard, len(ft))))
    return plan


def _width(ft, top_k: int) -> int:
    if ft.spec.task_type.kind == "classification":
        return len(ft.spec.label_names)  # always whole
    max_len = ft.meta["params"]["max_seq_length"]
    return max_len if top_k <= 0 else min(top_k, max_len)


def run(args) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per shard batch of ranks is enough
    world = world_from_env()
    init_process_group(world)
    device = pick_device(world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    log = rank0_logger(world.is_main)
    recipe = load_recipe(args.recipe, args.set or [])
    names = args.dataset or [d.name for d in recipe.datasets]
    splits = args.split or ["train"]
    tokenizer = load_tokenizer(recipe.model.tokenizer_path)
    out = Path(args.out)
    teacher_path = Path(args.teacher)
    if not teacher_path.exists():
        raise DataError(teacher_path, "teacher directory not found")

    tables = []
    with main_process_first(world.is_main):  # rank 0 builds missing features, then the others read the cache
        for name in names:
            try:
                recipe.dataset(name)
            except KeyError:
                raise DataError(args.recipe, f"no dataset '{name}' in the recipe", field="datasets") from None
            for split in splits:
                tables.append(build_features(recipe, name, split, tokenizer=tokenizer, log=log))

    teachers, identity = {}, {}
    for ft in tables:
        key = (ft.spec.head_name, ft.spec.task_type.kind)
        if key not in teachers:
            d = teacher_dir(teacher_path, *key)
            teachers[key] = load_teacher(d, key[1], ft.spec.label_names, device, ft.meta["tokenizer_hash"])
            identity[key[0]] = {"dir": str(d.resolve()), "sha256": teacher_identity(d), "architecture": teachers[key][1].architectures[0]}

    plan = _plan(tables, args.rows_per_shard)
    done = skipped = 0
    t0 = time.time()
    for i, (ft, s, a, b) in enumerate(plan):
        if i % world.size != world.rank:
            continue
        path, expect = _shard_path(out, ft, s), _expect(ft, a, b, args, identity)
        if check_shard(path, expect) is None:
            skipped += 1
            continue
        model, config = teachers[(ft.spec.head_name, ft.spec.task_type.kind)]
        width = _width(ft, args.top_k)
        cols = compute_shard(model, ft, a, b, width, args.dtype, args.batch_size, device, config.pad_token_id or 0)
        write_shard(path, cols, shard_schema(ft.spec.task_type.kind, width, args.dtype), args.compression, expect)
        done += 1
    print(f"rank {world.rank}: computed {done} shards, kept {skipped} verified shards, {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    barrier()

    if world.is_main:
        _write_manifest(out, tables, plan, args, identity)
        log(f"teacher store complete: {out / MANIFEST}")
    barrier()
    return out


def _shard_path(out: Path, ft, s: int) -> Path:
    return out / ft.spec.name / ft.split / f"shard-{s:05d}.arrow"


def _expect(ft, a: int, b: int, args, identity: dict) -> dict:
    """What a shard's sidecar must say for the shard to be reused (the teacher by content, not path)."""
    return {
        "schema_version": SCHEMA_VERSION, "fingerprint": ft.fingerprint, "teacher_sha256": identity[ft.spec.head_name]["sha256"], "top_k": args.top_k,
        "dtype": args.dtype, "compression": args.compression, "row_start": a, "row_end": b,
    }


def _write_manifest(out: Path, tables, plan, args, identity) -> None:
    entries = {}
    for ft in tables:
        shards = []
        for ft2, s, a, b in plan:
            if ft2 is not ft:
                continue
            path = _shard_path(out, ft, s)
            problem = check_shard(path, _expect(ft, a, b, args, identity))
            if problem:
                raise DataError(path, f"shard not usable after the run: {problem}")
            shards.append(json.loads(path.with_suffix(".json").read_text()))
        ids = np.asarray(ft.table.with_format("numpy")["feature_id"])
        write_ids(out / ft.spec.name / ft.split, ids)
        entries[f"{ft.spec.name}/{ft.split}"] = {
            "dataset": ft.spec.name, "split": ft.split, "dir": f"{ft.spec.name}/{ft.split}",
            "head": ft.spec.head_name, "kind": ft.spec.task_type.kind, "labels": ft.spec.label_names,
            "fingerprint": ft.fingerprint, "tokenizer_hash": ft.meta["tokenizer_hash"], "params": ft.meta["params"],
            "rows": len(ft), "ids_sha256": ids_digest(ids), "rows_per_shard": args.rows_per_shard,
            "width": _width(ft, args.top_k), "shards": shards,
        }
    write_json(out / MANIFEST, {
        "schema_version": SCHEMA_VERSION,
        "teacher": {"path": str(Path(args.teacher).resolve()), "heads": identity},
        "top_k": args.top_k, "dtype": args.dtype, "compression": args.compression,
        "rows_per_shard": args.rows_per_shard, "entries": entries,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="road-ds precompute", description="Run one teacher offline; write its top-k logits to a teacher store.")
    p.add_argument("recipe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field, as in training (the features must be the student's)")
    p.add_argument("--teacher", required=True, help="a HF model dir (*ForQuestionAnswering / *ForSequenceClassification) or a road_ds export dir")
    p.add_argument("--out", required=True, help="the store directory")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: all of the recipe)")
    p.add_argument("--split", action="append", help="splits to cover (repeatable; default: train)")
    p.add_argument("--top-k", type=int, default=8, help="entries kept per span distribution (0 = the whole support); classification keeps all classes")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="storage type of the kept logits (the log-normalizer is float32)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none", help="Arrow IPC buffer compression (none keeps reads zero-copy)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rows-per-shard", type=int, default=2048, help="feature rows per shard (the unit of resume; independent of world size)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher adds it
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_job("road-ds precompute", run, args)


if __name__ == "__main__":
    sys.exit(main())
