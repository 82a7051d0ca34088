"""Readers: files in the formats people have → examples with canonical fields.

Span (QA) examples: id, title, question, context, answers{text, answer_start}.
Classification examples: id, text_a, text_b, label (index into the dataset's label names).
Every row is checked here, so that bad input stops with its file, row and field before any
tokenizer or model sees it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import datasets
import pyarrow as pa

from road_ds import corpora
from road_ds.errors import DataError
from road_ds.recipe import DatasetSpec
from road_ds.tasks import CLASSIFICATION_FIELDS, FORMATS, SPAN_FIELDS

SPAN_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "question": datasets.Value("string"),
        "context": datasets.Value("string"),
        "answers": {"text": datasets.Sequence(datasets.Value("string")), "answer_start": datasets.Sequence(datasets.Value("int32"))},
    }
)
CLASSIFICATION_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "text_a": datasets.Value("string"),
        "text_b": datasets.Value("string"),
        "label": datasets.Value("int32"),
    }
)


@dataclass
class Examples:
    """One split of one dataset, read and checked."""

    spec: DatasetSpec
    split: str
    table: datasets.Dataset
    sources: list[str]  # files (or a hub fingerprint) the table came from, for the feature fingerprint
    moved_answers: int = 0  # answers relocated under `answer_start: nearest`
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # rows dropped on purpose, by reason (SNLI's '-', ...)


def read_split(spec: DatasetSpec, split: str) -> Examples:
    """Read and check one split of a dataset declared in a recipe.

    A `limit` for the split stops reading after that many examples: rows past it are neither
    parsed nor checked, so a quick run on the first N of a large file costs N rows.
    """
    try:
        files = spec.split_files(split)
    except KeyError:
        raise DataError(None, f"dataset '{spec.name}' has no split '{split}' (it has: {', '.join(spec.files)})", field="files") from None
    kind = spec.task_type.kind
    rows: list[dict] = []
    seen: dict[str, str] = {}
    moved = 0
    sources = []
    skipped: Counter = Counter()
    fmt = FORMATS[spec.format]
    limit = spec.limit.get(split)
    for f in files:
        if limit is not None and len(rows) >= limit:
            break
        records, source = _records(spec, split, f, skipped)
        sources.append(source)
        file_name = Path(f).name
        for where, rec in records:
            if limit is not None and len(rows) >= limit:
                break
            if fmt.drop_labels and str(rec.get(_column(spec, "label"))) in fmt.drop_labels:
                skipped[f"gold label {rec.get(_column(spec, 'label'))!r}"] += 1
                continue
            if kind == "span":
                ex, m = _span_example(spec, f, where, rec, len(rows))
                moved += m
            else:
                ex = _classification_example(spec, f, where, rec, len(rows))
            if ex["id"] in seen:
                first_file, first_row = seen[ex["id"]]
                raise DataError(f, f"duplicate example id '{ex['id']}' (first seen at {first_file} row {first_row})", row=where, field="id")
            seen[ex["id"]] = (file_name, where)
            rows.append(ex)
    if not rows:
        raise DataError(files[0], f"no examples in split '{split}' of dataset '{spec.name}'")
    features = SPAN_FEATURES if kind == "span" else CLASSIFICATION_FEATURES
    # straight to Arrow: from_list would encode every row through `features` again, in Python
    table = datasets.Dataset(pa.Table.from_pylist(rows, schema=features.arrow_schema), info=datasets.DatasetInfo(features=features))
    return Examples(spec, split, table, sources, moved, dict(sorted(skipped.items())))


# ---------------------------------------------------------------------------- raw records


def _records(spec: DatasetSpec, split: str, f: str, skipped: Counter) -> tuple[Iterator[tuple[object, dict]], str]:
    """(row, record) pairs of one file, and the source identity used for the fingerprint."""
    fmt = spec.format
    if fmt == "hub":
        if not spec.hub_path:
            raise DataError(None, f"dataset '{spec.name}' has format 'hub' but no hub_path", field="hub_path")
        try:  # needs the network: accepted where it is allowed, never needed by tests
            ds = datasets.load_dataset(spec.hub_path, spec.hub_config, split=f)
        except Exception as e:
            raise DataError(spec.hub_path, f"cannot load hub dataset split '{f}': {e}") from None
        return ((i + 1, r) for i, r in enumerate(ds)), f"hub:{spec.hub_path}:{spec.hub_config}:{f}:{ds._fingerprint}"
    path = Path(f)
    if not path.exists():
        raise DataError(path, f"file not found (dataset '{spec.name}', split '{split}')")
    if fmt in corpora.LAYOUTS:
        return corpora.LAYOUTS[fmt](path, spec, skipped), str(path)
    if fmt in ("qa_jsonl", "jsonl", "snli_jsonl"):
        return corpora.jsonl_lines(path), str(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise DataError(path, f"not a readable Parquet file: {e}") from None
        return ((i + 1, r) for i, r in enumerate(table.to_pylist())), str(path)
    if fmt == "hf_disk":
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise DataError(path, f"not a datasets.save_to_disk folder: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(path, f"has no split '{split}' (it has: {', '.join(ds)})")
            ds = ds[split]
        return ((i + 1, r) for i, r in enumerate(ds)), str(path)
    return corpora.delimited_rows(path, FORMATS[fmt].delimiter, FORMATS[fmt].quoting), str(path)


# ---------------------------------------------------------------------------- canonical rows


def _column(spec: DatasetSpec, name: str) -> str:
    return spec.columns.get(name) or FORMATS[spec.format].columns.get(name) or name


def _get(spec, path, where, rec, name, required=True):
    col = _column(spec, name)
    if col not in rec:
        if not required:
            return None
        mapped = f" (mapped from '{name}')" if col != name else ""
        raise DataError(path, f"missing column{mapped}; the row has: {', '.join(map(str, rec))}", row=where, field=col)
    return rec[col]


def _text(spec, path, where, rec, name, required=True) -> str | None:
    value = _get(spec, path, where, rec, name, required)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, f"must be a non-empty string, got {value!r:.60}", row=where, field=_column(spec, name))
    return value


def _example_id(spec, path, where, rec, index) -> str:
    declared = "id" in spec.columns or "id" in FORMATS[spec.format].columns
    value = _get(spec, path, where, rec, "id", required=declared)
    if value is None or value == "":
        return str(index)  # position in the split: stable for a fixed file
    return str(value)


def _classification_example(spec: DatasetSpec, path, where, rec: dict, index: int) -> dict:
    pair = spec.task_type.pair
    text_a = _text(spec, path, where, rec, "text_a")
    text_b = _text(spec, path, where, rec, "text_b", required=bool(pair))
    if pair is False and text_b is not None:
        text_b = None
    raw = _get(spec, path, where, rec, "label")
    key = str(raw)
    label_map = spec.label_map or FORMATS[spec.format].label_map
    name = label_map.get(key, key)
    names = spec.label_names
    if name not in names:
        raise DataError(path, f"label {raw!r} is not in the label set {names}", row=where, field=_column(spec, "label"))
    return {"id": _example_id(spec, path, where, rec, index), "text_a": text_a, "text_b": text_b, "label": names.index(name)}


def _answers(path, where, value, field):
    """Accept HF style {text: [...], answer_start: [...]} and SQuAD style [{text, answer_start}, ...]."""
    if value is None:
        return [], []
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(path, "answers needs equal-length lists 'text' and 'answer_start'", row=where, field=field)
        return list(texts), list(starts)
    if isinstance(value, list):
        texts, starts = [], []
        for n, a in enumerate(value):
            if not isinstance(a, dict) or "text" not in a or "answer_start" not in a:
                raise DataError(path, "each answer needs 'text' and 'answer_start'", row=where, field=f"{field}[{n}]")
            texts.append(a["text"])
            starts.append(a["answer_start"])
        return texts, starts
    raise DataError(path, f"answers must be a list or a {{text, answer_start}} object, got {type(value).__name__}", row=where, field=field)


def _span_example(spec: DatasetSpec, path, where, rec: dict, index: int) -> tuple[dict, int]:
    question = _text(spec, path, where, rec, "question")
    context = _text(spec, path, where, rec, "context")
    field = _column(spec, "answers")
    texts, starts = _answers(path, where, _get(spec, path, where, rec, "answers"), field)
    moved = 0
    for n, (text, start) in enumerate(zip(texts, starts)):
        f = f"{field}[{n}]"
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, f"answer text must be a non-empty string, got {text!r}", row=where, field=f"{f}.text")
        if isinstance(start, bool) or not isinstance(start, int):
            raise DataError(path, f"answer_start must be an integer, got {start!r}", row=where, field=f"{f}.answer_start")
        if context[start : start + len(text)] == text:
            continue
        found = _nearest(context, text, start) if spec.answer_start == "nearest" else -1
        if found < 0:
            hint = "" if spec.answer_start == "nearest" else " (set `answer_start: nearest` on the dataset to move such answers to where their text occurs)"
            raise DataError(
                path,
                f"answer_start {start} does not match the context: the answer is {text!r:.60} but the context there reads "
                f"{context[start:start + len(text)]!r:.60}{hint}",
                row=where, field=f"{f}.answer_start",
            )
        starts[n] = found
        moved += 1
    title = rec.get(_column(spec, "title")) if isinstance(rec.get(_column(spec, "title")), str) else ""
    ex = {
        "id": _example_id(spec, path, where, rec, index),
        "title": title or "",
        "question": question,
        "context": context,
        "answers": {"text": texts, "answer_start": starts},
    }
    return ex, moved


def _nearest(context: str, text: str, start: int) -> int:
    """The occurrence of `text` in `context` closest to `start`, or -1."""
    best, pos = -1, context.find(text)
    while pos >= 0:
        if best < 0 or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


assert set(SPAN_FEATURES) == set(SPAN_FIELDS) and set(CLASSIFICATION_FEATURES) == set(CLASSIFICATION_FIELDS)
