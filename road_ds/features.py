"""Features: checked examples → token windows with labels, ids and a fingerprint, cached as Arrow.

Each feature row carries a stable `feature_id` (from dataset, split, example id and window), so
teacher stores are joined by id and never by position. Each table carries a fingerprint of
(source file hashes, tokenizer, conversion parameters); the cache is keyed by it, so the same
inputs are a cache hit and any change is a miss.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def _backend(tokenizer, truncation: dict | None):
    """The fast tokenizer's Rust backend set to exactly this truncation and no padding. Encoding
    through it directly skips transformers' copy of every encoding into Python dicts (a quarter
    of the feature build); transformers re-sets both on its own next call."""
    bt = tokenizer.backend_tokenizer
    if bt.padding is not None:
        bt.no_padding()
    if truncation is None:
        if bt.truncation is not None:
            bt.no_truncation()
    elif bt.truncation is None or any(bt.truncation.get(k) != v for k, v in truncation.items()):
        bt.enable_truncation(**truncation)
    split_special = getattr(tokenizer, "split_special_tokens", False)
    if hasattr(bt, "encode_special_tokens") and bt.encode_special_tokens != split_special:
        bt.encode_special_tokens = split_special
    return bt


def _truncate_questions(questions: list[str], tokenizer, max_query_length: int) -> list[str]:
    """Cut each question to at most `max_query_length` tokens, at a token boundary."""
    encs = _backend(tokenizer, None).encode_batch(questions, add_special_tokens=False)
    return [q[: e.offsets[max_query_length - 1][1]] if len(e) > max_query_length else q for q, e in zip(questions, encs)]


def _windows(questions: list[str], contexts: list[str], tokenizer, params: FeatureParams) -> list[tuple[int, int, object]]:
    """Every window of every (question, context) pair, as the tokenizer's `only_second` truncation
    with stride makes them (what `tokenizer(..., return_overflowing_tokens=True)` returns), as
    (example index, window number, encoding)."""
    truncation = {"max_length": params.max_seq_length, "stride": params.doc_stride, "strategy": "only_second",
                  "direction": getattr(tokenizer, "truncation_side", "right")}
    encs = _backend(tokenizer, truncation).encode_batch(list(zip(questions, contexts)), add_special_tokens=True)
    return [(k, w, e) for k, enc in enumerate(encs) for w, e in enumerate((enc, *enc.overflowing))]


def _list_array(rows: list, dtype) -> pa.ListArray:
    """Python lists of ints as one Arrow list column, in one pass (no per-row conversion)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(offsets, values)


def _span_label(offsets: list, first: int, last: int, answers: dict) -> tuple[int, int]:
    """(start, end) token of the first gold answer inside this window's context (tokens first..last),
    else (0, 0): [CLS]."""
    if not answers["text"]:
        return 0, 0
    text = answers["text"][0]
    start_char = answers["answer_start"][0] + (len(text) - len(text.lstrip()))
    end_char = start_char + len(text.strip())
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    s = first
    while s <= last and offsets[s][0] <= start_char:
        s += 1
    e = last
    while e >= first and offsets[e][1] >= end_char:
        e -= 1
    return s - 1, e + 1


def _question_windows(batch, tokenizer, params: FeatureParams) -> list[tuple[int, int, object]]:
    """The windows of a batch, questions cut at `max_query_length` tokens. The pair encoding counts
    each question's tokens (`only_second` never cuts the question), so the questions are tokenized
    on their own only in a batch that has one too long (or too long to encode beside any context)."""
    questions = [q.lstrip() for q in batch["question"]]
    try:
        windows = _windows(questions, batch["context"], tokenizer, params)
        if all(e.sequence_ids.count(0) <= params.max_query_length for _, w, e in windows if w == 0):
            return windows
    except Exception:  # the tokenizer's "sequence to truncate too short": a question that fills the window
        pass
    questions = _truncate_questions(questions, tokenizer, params.max_query_length)
    return _windows(questions, batch["context"], tokenizer, params)


def _span_batch(batch, tokenizer, params: FeatureParams, name: str, split: str) -> pa.Table:
    """One batch of QA examples as token windows, returned as an Arrow table: the columns are built
    from flat arrays, so no row goes through Python-to-Arrow conversion one list at a time."""
    windows = _question_windows(batch, tokenizer, params)
    ids = [e.ids for _, _, e in windows]
    if any(row[0] != tokenizer.cls_token_id for row in ids):
        raise DataError(tokenizer.name_or_path, "the tokenizer does not put its [CLS] token first; the no-answer position must be index 0")
    all_offsets = [e.offsets for _, _, e in windows]
    example_ids, window_of, starts, ends, ctx_first, ctx_last = [], [], [], [], [], []
    for i, (ex, window, enc) in enumerate(windows):
        seq = enc.sequence_ids
        if 1 not in seq:
            raise DataError(name, f"example '{batch['id'][ex]}' of split '{split}': its context has no tokens", field="context")
        first, last = seq.index(1), len(seq) - 1 - seq[::-1].index(1)  # the context: one run of sequence 1
        s, e = _span_label(all_offsets[i], first, last, batch["answers"][ex])
        example_ids.append(batch["id"][ex])
        window_of.append(window)
        starts.append(s)
        ends.append(e)
        ctx_first.append(first)
        ctx_last.append(last)
    input_ids = _list_array(ids, np.int32)
    # offsets of tokens outside the context ([CLS], question, [SEP]) become NO_OFFSET
    bounds = input_ids.offsets.to_numpy()
    rows = np.repeat(np.arange(len(ids)), np.diff(bounds))  # the window of each token
    pos = np.arange(bounds[-1]) - bounds[:-1][rows]  # its position in the window
    outside = (pos < np.asarray(ctx_first)[rows]) | (pos > np.asarray(ctx_last)[rows])
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(all_offsets)), dtype=np.int32, count=2 * len(pos)).reshape(-1, 2)
    flat[outside] = NO_OFFSET
    offset_mapping = pa.ListArray.from_arrays(input_ids.offsets, pa.FixedSizeListArray.from_arrays(flat.reshape(-1), 2))
    columns = {
        "feature_id": pa.array([feature_id(name, split, eid, w) for eid, w in zip(example_ids, window_of)], pa.int64()),
        "example_id": pa.array(example_ids, pa.string()),
        "window": pa.array(window_of, pa.int32()),
        "input_ids": input_ids,
        "token_type_ids": _list_array([e.type_ids for _, _, e in windows], np.int8),
        "offset_mapping": offset_mapping,
        "start_positions": pa.array(starts, pa.int32()),
        "end_positions": pa.array(ends, pa.int32()),
    }
    return pa.Table.from_pydict(columns, schema=SPAN_COLUMNS.arrow_schema)


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


@contextmanager
def _gc_paused():
    """The cyclic garbage collector off while the tokenizer's output is copied into millions of small
    lists and tuples (freed by reference count, no cycles): each collection it would trigger walks every
    object of a process that has torch and transformers loaded, a tenth of the build."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def convert(examples: datasets.Dataset, spec: DatasetSpec, split: str, tokenizer, params: FeatureParams, fingerprint: str) -> datasets.Dataset:
    """Tokenize a split into feature rows (batched, multi-process for large splits). `fingerprint`
    names the map's output (the features' own): without it datasets pickles the tokenizer to hash it."""
    span = spec.task_type.kind == "span"
    fn = _span_batch if span else _classification_batch
    num_proc = params.num_proc if params.num_proc > 1 and len(examples) >= 2000 else None
    with _gc_paused():
        table = examples.map(
            fn,
            batched=True,
            batch_size=500,
            num_proc=num_proc,
            remove_columns=examples.column_names,
            features=SPAN_COLUMNS if span else CLASSIFICATION_COLUMNS,
            fn_kwargs=dict(tokenizer=tokenizer, params=params, name=spec.name, split=split),
            load_from_cache_file=False,
            new_fingerprint=fingerprint,
            desc=f"features {spec.name}/{split}",
        )
    if len(table) and pc.count_distinct(table.data.column("feature_id")).as_py() != len(table):
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
    tok_hash = tokenizer_hash(tokenizer)
    fp = fingerprint(spec, split, tok_hash, params)
    final = feature_cache_dir(params) / spec.name / split / fp
    if (final / "meta.json").exists() and not force:
        return _load(spec, split, fp, final, hit=True)
    t0 = time.time()
    examples = read_split(spec, split)
    table = convert(examples.table, spec, split, tokenizer, params, fingerprint=fp)
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
        "tokenizer_hash": tok_hash,
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
