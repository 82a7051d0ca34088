"""Features: checked examples → token windows with labels, ids and a fingerprint, cached as Arrow.

Each feature row carries a stable `feature_id` (from dataset, split, example id and window), so
teacher stores are joined by id and never by position. Each table carries a fingerprint of
(source file hashes, tokenizer, conversion parameters); the cache is keyed by it, so the same
inputs are a cache hit and any change is a miss.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from road_ds.atomic import file_hash, publishing
from road_ds.batching import column, offset_pairs
from road_ds.errors import DataError
from road_ds.readers import read_split
from road_ds.recipe import DatasetSpec, FeatureParams, Recipe, cache_root

FEATURE_SCHEMA_VERSION = 1
NO_OFFSET = [-1, -1]  # offset of a token outside the context ([CLS], question, [SEP], padding)

SPAN_COLUMNS = datasets.Features(
    {
        "feature_id": datasets.Value("int64"),
        "example_id": datasets.Value("string"),
        "window": datasets.Value("int32"),
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "token_type_ids": datasets.Sequence(datasets.Value("int8")),
        "offset_mapping": datasets.Sequence(datasets.Sequence(datasets.Value("int32"), length=2)),
        "start_positions": datasets.Value("int32"),
        "end_positions": datasets.Value("int32"),
    }
)
CLASSIFICATION_COLUMNS = datasets.Features(
    {
        "feature_id": datasets.Value("int64"),
        "example_id": datasets.Value("string"),
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "token_type_ids": datasets.Sequence(datasets.Value("int8")),
        "label": datasets.Value("int32"),
    }
)


@dataclass
class FeatureTable:
    """The features of one split of one dataset, with the examples they came from."""

    spec: DatasetSpec
    split: str
    fingerprint: str
    table: datasets.Dataset  # memory-mapped Arrow
    examples: datasets.Dataset
    path: Path
    meta: dict
    cache_hit: bool = False

    def __len__(self) -> int:
        return len(self.table)


def feature_id(dataset: str, split: str, example_id: str, window: int) -> int:
    """A stable int64 (non-negative) for one window of one example."""
    key = f"{dataset}\x00{split}\x00{example_id}\x00{window}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def tokenizer_hash(tokenizer) -> str:
    """What the tokenizer does (vocab, normalizer, special tokens), not where it was loaded from."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)  # set by the last call (max_length, stride): state, not identity
    state.pop("padding", None)
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(state, sort_keys=True).encode())
    h.update(json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}).encode())
    h.update(str(tokenizer.padding_side).encode())
    return h.hexdigest()


def _source_ids(spec: DatasetSpec, split: str) -> list[str]:
    if spec.format == "hub":
        return [f"hub:{spec.hub_path}:{spec.hub_config}:{f}" for f in spec.split_files(split)]
    out = []
    for f in spec.split_files(split):
        if not Path(f).exists():
            raise DataError(f, f"file not found (dataset '{spec.name}', split '{split}')")
        out.append(file_hash(f))
    return out


def fingerprint_key(spec: DatasetSpec, split: str, tokenizer_id: str, params: FeatureParams, sources: list[str]) -> dict:
    """What decides the feature rows; nothing that does not (num_proc, cache_dir). `pipeline check`
    compares these keys (with file paths and the tokenizer's path) before any file is read."""
    key = {
        "schema": FEATURE_SCHEMA_VERSION,
        "dataset": spec.model_dump(include={"name", "task", "format", "columns", "labels", "label_map", "answer_start", "hub_path", "hub_config"}),
        "label_names": spec.label_names,
        "split": split,
        "sources": sources,
        "tokenizer": tokenizer_id,
        "params": params.model_dump(include={"max_seq_length", "doc_stride", "max_query_length"})
        if spec.task_type.kind == "span"
        else {"max_seq_length": params.max_seq_length},
    }
    if split in spec.limit:
        key["limit"] = spec.limit[split]
    for name in ("rating", "history_turns"):  # only when set: the fingerprints of other datasets stay as they were
        if getattr(spec, name):
            key[name] = getattr(spec, name)
    return key


def fingerprint(spec: DatasetSpec, split: str, tok_hash: str, params: FeatureParams) -> str:
    """The cache key of one split's features: its files' content and the tokenizer's vocabulary and rules."""
    key = fingerprint_key(spec, split, tok_hash, params, _source_ids(spec, split))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise DataError(path, f"cannot load a tokenizer: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise DataError(path, "needs a fast (Rust) tokenizer: span decoding uses its offset mapping")
    if tok.padding_side != "right":
        raise DataError(path, "the tokenizer pads on the left; road_ds expects question first, context second, padding on the right")
    return tok


# ---------------------------------------------------------------------------- conversion


def _truncate_questions(questions: list[str], tokenizer, max_query_length: int) -> list[str]:
    """Cut each question to at most `max_query_length` tokens, at a token boundary."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(questions, enc["offset_mapping"]):
        out.append(q[: offs[max_query_length - 1][1]] if len(offs) > max_query_length else q)
    return out


def _span_batch(batch, tokenizer, params: FeatureParams, name: str, split: str):
    questions = _truncate_questions([q.lstrip() for q in batch["question"]], tokenizer, params.max_query_length)
    enc = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=params.max_seq_length,
        stride=params.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    sample_map = enc["overflow_to_sample_mapping"]
    out = {k: [] for k in SPAN_COLUMNS}
    windows: dict[int, int] = {}
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = sample_map[i]
        window = windows.get(ex, 0)
        windows[ex] = window + 1
        ids = enc["input_ids"][i]
        if ids[0] != tokenizer.cls_token_id:
            raise DataError(tokenizer.name_or_path, "the tokenizer does not put its [CLS] token first; the no-answer position must be index 0")
        seq = enc.sequence_ids(i)
        in_ctx = np.fromiter((s == 1 for s in seq), dtype=bool, count=len(seq))
        ctx = np.where(in_ctx[:, None], np.asarray(offsets, dtype=np.int64).reshape(-1, 2), NO_OFFSET).tolist()
        start = end = 0  # [CLS]: no answer, or the answer is not inside this window
        answers = batch["answers"][ex]
        if answers["text"]:
            text = answers["text"][0]
            start_char = answers["answer_start"][0] + (len(text) - len(text.lstrip()))
            end_char = start_char + len(text.strip())
            first = seq.index(1)
            last = len(seq) - 1 - seq[::-1].index(1)
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                s = first
                while s <= last and offsets[s][0] <= start_char:
                    s += 1
                e = last
                while e >= first and offsets[e][1] >= end_char:
                    e -= 1
                start, end = s - 1, e + 1
        eid = batch["id"][ex]
        out["feature_id"].append(feature_id(name, split, eid, window))
        out["example_id"].append(eid)
        out["window"].append(window)
        out["input_ids"].append(ids)
        out["token_type_ids"].append(enc["token_type_ids"][i])
        out["offset_mapping"].append(ctx)
        out["start_positions"].append(start)
        out["end_positions"].append(end)
    return out


def _classification_batch(batch, tokenizer, params: FeatureParams, name: str, split: str):
    a, b = batch["text_a"], batch["text_b"]
    kw = dict(truncation=True, max_length=params.max_seq_length, return_token_type_ids=True)
    if all(x is None for x in b):
        enc = tokenizer(a, **kw)
    elif all(x is not None for x in b):
        enc = tokenizer(a, b, **kw)
    else:  # a task that mixes single texts and pairs
        parts = [tokenizer(x, y, **kw) if y is not None else tokenizer(x, **kw) for x, y in zip(a, b)]
        enc = {k: [p[k] for p in parts] for k in ("input_ids", "token_type_ids")}
    return {
        "feature_id": [feature_id(name, split, eid, 0) for eid in batch["id"]],
        "example_id": list(batch["id"]),
        "input_ids": enc["input_ids"],
        "token_type_ids": enc["token_type_ids"],
        "label": list(batch["label"]),
    }


def convert(examples: datasets.Dataset, spec: DatasetSpec, split: str, tokenizer, params: FeatureParams) -> datasets.Dataset:
    """Tokenize a split into feature rows (batched, multi-process for large splits)."""
    span = spec.task_type.kind == "span"
    fn = _span_batch if span else _classification_batch
    num_proc = params.num_proc if params.num_proc > 1 and len(examples) >= 2000 else None
    table = examples.map(
        fn,
        batched=True,
        batch_size=500,
        num_proc=num_proc,
        remove_columns=examples.column_names,
        features=SPAN_COLUMNS if span else CLASSIFICATION_COLUMNS,
        fn_kwargs=dict(tokenizer=tokenizer, params=params, name=spec.name, split=split),
        load_from_cache_file=False,
        desc=f"features {spec.name}/{split}",
    )
    ids = np.asarray(table.with_format("numpy")["feature_id"])
    if len(np.unique(ids)) != len(ids):
        raise DataError(spec.name, f"feature_id collision in split '{split}': two windows hash to one id")
    return table


def span_stats(table: datasets.Dataset, examples: datasets.Dataset) -> dict:
    """Round-trip the gold span labels through the offsets back to the answer text.

    An answerable example passes when some window's (start, end) decodes to its first gold answer
    (without surrounding white space). Misses are listed, not hidden.
    """
    pairs = offset_pairs(table)
    offsets = pairs if pairs is not None else column(table, "offset_mapping")
    starts, ends = column(table, "start_positions"), column(table, "end_positions")
    by_example: dict[str, list[int]] = {}
    for f, eid in enumerate(column(table, "example_id")):
        by_example.setdefault(eid, []).append(f)
    answerable, ok, misses = 0, 0, []
    for eid, answers, context in zip(column(examples, "id"), column(examples, "answers"), column(examples, "context")):
        if not answers["text"]:
            continue
        answerable += 1
        gold = answers["text"][0].strip()
        decoded = None
        for f in by_example.get(eid, []):
            s, e = starts[f], ends[f]
            if s == 0 and e == 0:
                continue
            decoded = context[int(offsets[f][s][0]) : int(offsets[f][e][1])]
            if decoded == gold:
                break
        if decoded == gold:
            ok += 1
        else:
            misses.append({"id": eid, "gold": gold, "decoded": decoded})
    return {
        "examples": len(examples),
        "answerable": answerable,
        "roundtrip_ok": ok,
        "roundtrip_rate": ok / answerable if answerable else 1.0,
        "misses": misses,
    }


def gold_span_logits(table: datasets.Dataset, peak: float = 10.0) -> tuple[list, list]:
    """Start/end logits that put all weight on each feature's gold labels ([CLS] when no answer).

    Decoded and scored like a model's output, they give the ceiling that tokenization, windows
    and span decoding leave for a perfect model (the "oracle" row of a results table).
    """
    starts, ends = [], []
    for row in table.select_columns(["input_ids", "start_positions", "end_positions"]):
        s = np.zeros(len(row["input_ids"]), dtype=np.float32)
        e = np.zeros_like(s)
        s[row["start_positions"]] = peak
        e[row["end_positions"]] = peak
        starts.append(s)
        ends.append(e)
    return starts, ends


# ---------------------------------------------------------------------------- cache


def feature_cache_dir(params: FeatureParams) -> Path:
    return Path(params.cache_dir) if params.cache_dir else cache_root() / "features"


def build_features(recipe: Recipe, name: str, split: str, tokenizer=None, force: bool = False, log=None) -> FeatureTable:
    """The features of one split: from the cache when the fingerprint matches, else built and cached."""
    try:
        spec = recipe.dataset(name)
    except KeyError:
        raise DataError(None, f"no dataset '{name}' in the recipe (it has: {', '.join(d.name for d in recipe.datasets)})") from None
    tokenizer = tokenizer or load_tokenizer(recipe.model.tokenizer_path)
    params = spec.feature_params(recipe.features)
    fp = fingerprint(spec, split, tokenizer_hash(tokenizer), params)
    final = feature_cache_dir(params) / spec.name / split / fp
    if (final / "meta.json").exists() and not force:
        return _load(spec, split, fp, final, hit=True)
    t0 = time.time()
    examples = read_split(spec, split)
    table = convert(examples.table, spec, split, tokenizer, params)
    meta = {
        "fingerprint": fp,
        "schema": FEATURE_SCHEMA_VERSION,
        "dataset": spec.name,
        "task": spec.task,
        "head": spec.head_name,
        "kind": spec.task_type.kind,
        "labels": spec.label_names,
        "split": split,
        "sources": examples.sources,
        "tokenizer": recipe.model.tokenizer_path,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "params": params.model_dump(exclude={"num_proc", "cache_dir"}),
        "examples": len(examples.table),
        "features": len(table),
        "moved_answers": examples.moved_answers,
        "skipped": examples.skipped,
        "seconds": round(time.time() - t0, 2),
    }
    if spec.task_type.kind == "span":
        stats = span_stats(table, examples.table)
        meta["span_roundtrip"] = {k: v for k, v in stats.items() if k != "misses"}
        meta["span_misses"] = stats["misses"]
    # a folder that appears whole or not at all; builds sharing the cache (an array job's tasks, the
    # ranks of a node) may race: the first to finish wins and the others drop their copy
    with publishing(final, replace=force, complete="meta.json") as tmp:
        table.save_to_disk(str(tmp / "features"))
        examples.table.save_to_disk(str(tmp / "examples"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if log:
        dropped = "".join(f"; skipped {n} ({why})" for why, n in examples.skipped.items())
        log(f"built {spec.name}/{split}: {meta['examples']} examples -> {meta['features']} features in {meta['seconds']} s{dropped}")
    return _load(spec, split, fp, final, hit=False)


def _load(spec, split, fp, path: Path, hit: bool) -> FeatureTable:
    meta = json.loads((path / "meta.json").read_text())
    return FeatureTable(
        spec=spec,
        split=split,
        fingerprint=fp,
        table=datasets.load_from_disk(str(path / "features")),
        examples=datasets.load_from_disk(str(path / "examples")),
        path=path,
        meta=meta,
        cache_hit=hit,
    )
