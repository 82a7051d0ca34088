"""Feature rows (Arrow) → padded tensors: input ids, token types, attention and span-support masks.

Works straight on the Arrow list columns (offsets + values), so building a batch costs numpy
slicing, not Python lists of lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch


def _ragged(col: pa.ChunkedArray | pa.Array, inner: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(values, row offsets into values) of a list column; `inner` > 1 for list<fixed_size_list<inner>>,
    whose values come back as [n, inner]. `flatten` respects slices; the offsets are rebased to match."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy()
    values = arr.flatten()
    if inner > 1:
        values = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, inner)
    else:
        values = values.to_numpy(zero_copy_only=False)
    return values, offsets - offsets[0]


def _pad(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, width: int, fill, dtype) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        a, b = offsets[r], offsets[r + 1]
        out[i, : b - a] = values[a:b]
    return out


def arrow_column(rows, name: str):
    """The Arrow column behind a ``datasets.Dataset`` without an index mapping, else None."""
    table = getattr(getattr(rows, "data", None), "table", None)
    if table is None or getattr(rows, "_indices", None) is not None or name not in table.column_names:
        return None
    return table.column(name)


def column(rows, name: str) -> list:
    """A column as a list: of a ``datasets.Dataset`` in one Arrow read (datasets 5 reads
    ``ds[name]`` row by row), or of a sequence of dicts."""
    col = arrow_column(rows, name)
    if col is not None:
        return col.to_pylist()
    if hasattr(rows, "column_names"):
        return list(rows[name])
    return [r[name] for r in rows]


def offset_pairs(rows) -> list | None:
    """Each row's `offset_mapping` as an (L, 2) int64 view of the Arrow column, or None where the
    column is not plain pairs (HF's None entries, an index mapping): the caller reads rows then."""
    import pyarrow.compute as pc

    col = arrow_column(rows, "offset_mapping")
    if col is None:
        return None
    arr = col.combine_chunks()
    inner = arr.flatten()
    if arr.null_count or inner.null_count or pc.all(pc.equal(pc.list_value_length(inner), 2)).as_py() is False:
        return None
    pairs, row = _ragged(arr, inner=2)
    return [pairs[row[i]:row[i + 1]] for i in range(len(arr))]


def lengths(table: pa.Table) -> np.ndarray:
    return np.diff(_ragged(table.column("input_ids"))[1])


def collate(table: pa.Table, rows=None, pad_id: int = 0, pad_to_multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad the chosen rows of a feature table slice into a batch.

    Returns input_ids, token_type_ids, attention_mask [B, L]; for span features also `support`
    [B, L] (context tokens and [CLS], the positions a span head may point at) and the gold
    start/end positions; for classification features the gold `label`.
    """
    rows = np.arange(table.num_rows) if rows is None else np.asarray(rows)
    ids, id_off = _ragged(table.column("input_ids"))
    lens = id_off[rows + 1] - id_off[rows]
    width = int(lens.max())
    width = -(-width // pad_to_multiple) * pad_to_multiple
    batch = {
        "input_ids": torch.from_numpy(_pad(ids, id_off, rows, width, pad_id, np.int64)),
        "attention_mask": torch.from_numpy(np.arange(width)[None, :] < lens[:, None]).long(),
    }
    if "token_type_ids" in table.column_names:
        tt, tt_off = _ragged(table.column("token_type_ids"))
        batch["token_type_ids"] = torch.from_numpy(_pad(tt, tt_off, rows, width, 0, np.int64))
    if "offset_mapping" in table.column_names:
        pairs, off = _ragged(table.column("offset_mapping"), inner=2)
        support = _pad(pairs[:, 0] >= 0, off, rows, width, False, bool)
        support[:, 0] = True  # [CLS]: the no-answer position
        batch["support"] = torch.from_numpy(support)
        batch["start_positions"] = torch.from_numpy(table.column("start_positions").to_numpy()[rows].astype(np.int64))
        batch["end_positions"] = torch.from_numpy(table.column("end_positions").to_numpy()[rows].astype(np.int64))
    if "label" in table.column_names:
        batch["label"] = torch.from_numpy(table.column("label").to_numpy()[rows].astype(np.int64))
    batch["feature_id"] = torch.from_numpy(table.column("feature_id").to_numpy()[rows].astype(np.int64))
    return batch
