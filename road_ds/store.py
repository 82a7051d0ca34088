"""The teacher store: one teacher's top-k logits per feature, as Arrow IPC shards plus a manifest.

Layout: `STORE/manifest.json` and `STORE/<dataset>/<split>/shard-NNNNN.arrow` (+ `.json` sidecar).
Shard s of a split holds feature rows [s*R, (s+1)*R) of the feature table, in table order, so the
shard plan depends only on the table and R, never on the world size. A sidecar records a shard's
sha256 and is written after the shard is renamed into place; the manifest is written last.

Per head output (span: `start` and `end`; classification: `cls`) a row stores the top-k indices
(`<out>_idx`, -1 where the support has fewer than k entries), their logits (`<out>_logit`) and the
log-sum-exp of the teacher's logits over the whole valid support (`<out>_lse`). Classification rows
keep all C logits and no indices. Training gathers rows by `feature_id`, never by position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from road_ds.atomic import atomic_path, file_hash, write_json
from road_ds.errors import DataError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IDS_FILE = "feature_ids.npy"  # per dataset/split: the feature ids in row order, for gather
OUTPUTS = {"span": ("start", "end"), "classification": ("cls",)}
DTYPES = {"float16": pa.float16(), "bfloat16": pa.uint16(), "float32": pa.float32()}  # bf16 kept as raw bits
COMPRESSIONS = ("none", "lz4", "zstd")


def shard_schema(kind: str, width: int, dtype: str) -> pa.Schema:
    """`width` is k for span heads and the number of classes for classification heads."""
    fields = [pa.field("feature_id", pa.int64())]
    for out in OUTPUTS[kind]:
        if kind == "span":
            fields.append(pa.field(f"{out}_idx", pa.list_(pa.int32(), width)))
        fields += [pa.field(f"{out}_logit", pa.list_(DTYPES[dtype], width)), pa.field(f"{out}_lse", pa.float32())]
    if kind == "span":
        fields += [pa.field("support", pa.int32()), pa.field("start_gold", pa.int32()), pa.field("end_gold", pa.int32())]
    else:
        fields.append(pa.field("cls_gold", pa.int32()))
    return pa.schema(fields)


def encode_logits(x: torch.Tensor, dtype: str) -> np.ndarray:
    """float32 tensor → the stored numpy dtype (bf16 as its uint16 bits)."""
    if dtype == "bfloat16":
        return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return x.to(torch.float16 if dtype == "float16" else torch.float32).numpy()


def decode_logits(a: np.ndarray, dtype: str) -> torch.Tensor:
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(np.require(a, requirements="W")).float()  # a read-only mmap view is copied


def ids_digest(ids: np.ndarray) -> str:
    """Identity of a feature table's rows: sha256 of its feature_id column in table order."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def write_shard(path: Path, columns: dict, schema: pa.Schema, compression: str, meta: dict) -> dict:
    """Write one shard (one record batch) to a temporary name, rename it, then its sidecar."""
    arrays = []
    for field in schema:
        v = columns[field.name]
        if pa.types.is_fixed_size_list(field.type):
            flat = pa.array(np.ascontiguousarray(v).reshape(-1), type=field.type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            arrays.append(pa.array(np.asarray(v), type=field.type))
    batch = pa.record_batch(arrays, schema=schema)
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    with atomic_path(path, batch.nbytes) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        writer.write_batch(batch)
    info = {**meta, "file": path.name, "rows": batch.num_rows, "bytes": path.stat().st_size, "sha256": file_hash(path)}
    write_json(sidecar(path), info)
    return info


def write_ids(directory: Path, ids: np.ndarray) -> None:
    import io

    from road_ds.atomic import write_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(ids, dtype=np.int64))
    write_bytes(directory / IDS_FILE, buf.getvalue())


def sidecar(shard: Path) -> Path:
    return shard.with_suffix(".json")


def verify_file(path: Path, info: dict) -> str | None:
    """Size and sha256 against what was recorded when the shard was written."""
    if not path.exists():
        return "missing"
    if path.stat().st_size != info.get("bytes"):
        return f"size {path.stat().st_size} bytes, {info.get('bytes')} recorded (truncated?)"
    if file_hash(path) != info.get("sha256"):
        return "sha256 does not match the recorded one (damaged)"
    return None


def check_shard(path: Path, expect: dict) -> str | None:
    """Why the shard cannot be used (missing, half-written, damaged, other teacher...), or None."""
    side = sidecar(path)
    if not path.exists():
        return "missing"
    if not side.exists():
        return "no sidecar (the writer stopped before finishing it)"
    try:
        info = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable sidecar"
    for key, want in expect.items():
        if info.get(key) != want:
            return f"{key} is {info.get(key)!r}, expected {want!r}"
    return verify_file(path, info)


# ---------------------------------------------------------------------------- reading


@dataclass
class _Entry:
    """One dataset/split of a store: its shards, memory-mapped on first use."""

    root: Path
    info: dict
    kind: str
    dtype: str
    _index: tuple | None = None
    _tables: dict | None = None

    def table(self, s: int) -> pa.Table:
        if self._tables is None:
            self._tables = {}
        if s not in self._tables:
            shard = self.info["shards"][s]
            path = self.root / self.info["dir"] / shard["file"]
            problem = verify_file(path, shard)
            if problem:
                raise DataError(path, f"damaged teacher shard: {problem}; rerun the precompute to recompute it")
            try:
                with pa.memory_map(str(path)) as source:
                    t = pa.ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid) as e:
                raise DataError(path, f"unreadable teacher shard: {e}") from None
            if t.num_rows != shard["rows"]:
                raise DataError(path, f"{t.num_rows} rows, the manifest says {shard['rows']}")
            self._tables[s] = {name: _column_view(t.column(name)) for name in t.column_names}
        return self._tables[s]

    def index(self):
        """Sorted feature ids and their row numbers, from the entry's id file (no shard is read)."""
        if self._index is None:
            path = self.root / self.info["dir"] / IDS_FILE
            try:
                ids = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(path, f"unreadable feature id index: {e}") from None
            if len(ids) != self.info["rows"] or ids_digest(ids) != self.info["ids_sha256"]:
                raise DataError(path, "the feature id index does not match the manifest (damaged)")
            order = np.argsort(ids, kind="stable")
            self._index = (np.asarray(ids)[order], order)
        return self._index


def _column_view(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks)
    if pa.types.is_fixed_size_list(arr.type):
        return arr.values.to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)
    return arr.to_numpy(zero_copy_only=False)


class TeacherStore:
    """One teacher's store, opened and checked against the feature tables it will be joined with."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._entries = {
            key: _Entry(self.path, e, e["kind"], manifest["dtype"]) for key, e in manifest["entries"].items()
        }

    @classmethod
    def open(cls, path: str | Path, features=None) -> "TeacherStore":
        """Open a store; with `features` (FeatureTables) refuse any whose fingerprint, ids or head differ."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.exists():
            raise DataError(path, "not a teacher store (no manifest.json; was the precompute finished?)")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise DataError(mpath, f"malformed manifest: {e.msg}", row=e.lineno) from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise DataError(mpath, f"store schema {manifest.get('schema_version')} is not the supported {SCHEMA_VERSION}")
        store = cls(path, manifest)
        for ft in features or []:
            store.check(ft)
        return store

    def key(self, dataset: str, split: str) -> str:
        return f"{dataset}/{split}"

    def entry(self, dataset: str, split: str) -> dict:
        key = self.key(dataset, split)
        if key not in self.manifest["entries"]:
            raise DataError(self.path, f"has no teacher targets for {key} (it has: {', '.join(self.manifest['entries'])})")
        return self.manifest["entries"][key]

    def check(self, ft) -> None:
        """The store must have been computed on exactly these features, for this head."""
        e = self.entry(ft.spec.name, ft.split)
        where = f"{ft.spec.name}/{ft.split}"
        if e["fingerprint"] != ft.fingerprint:
            raise DataError(
                self.path,
                f"teacher targets for {where} were computed on features {e['fingerprint']} "
                f"(tokenizer {e.get('tokenizer_hash', '?')[:12]}, params {e.get('params')}) but training uses features "
                f"{ft.fingerprint} (tokenizer {ft.meta['tokenizer_hash'][:12]}, params {ft.meta['params']}); "
                "rerun the precompute on these features",
            )
        ids = np.asarray(ft.table.with_format("numpy")["feature_id"])
        if e["rows"] != len(ids) or e["ids_sha256"] != ids_digest(ids):
            raise DataError(self.path, f"teacher rows for {where} ({e['rows']}) are not the feature rows ({len(ids)}) of {ft.path}")
        if e["head"] != ft.spec.head_name or e["kind"] != ft.spec.task_type.kind or e.get("labels") != ft.spec.label_names:
            raise DataError(
                self.path,
                f"teacher head for {where} is '{e['head']}' ({e['kind']}, labels {e.get('labels')}); the recipe has "
                f"'{ft.spec.head_name}' ({ft.spec.task_type.kind}, labels {ft.spec.label_names})",
            )

    def gather(self, dataset: str, split: str, feature_ids) -> dict[str, torch.Tensor]:
        """The stored targets of a batch, by feature id: `<out>_logit` [B, k] (float32), `<out>_lse` [B],
        `<out>_idx` [B, k] for span heads. O(batch) reads from memory-mapped shards."""
        self.entry(dataset, split)
        ent = self._entries[self.key(dataset, split)]
        q = np.asarray(feature_ids, dtype=np.int64)
        sorted_ids, order = ent.index()
        pos = np.searchsorted(sorted_ids, q)
        pos = np.minimum(pos, len(sorted_ids) - 1)
        bad = sorted_ids[pos] != q
        if bad.any():
            raise DataError(self.path, f"no teacher row for feature_id {int(q[bad][0])} of {dataset}/{split} ({int(bad.sum())} missing in this batch)")
        rows = order[pos]
        per = ent.info["rows_per_shard"]
        shard, local = rows // per, rows % per
        out: dict[str, np.ndarray] = {}
        for s in np.unique(shard):
            sel = shard == s
            cols = ent.table(int(s))
            for name, col in cols.items():
                if name == "feature_id":
                    continue
                if name not in out:
                    out[name] = np.empty((len(q),) + col.shape[1:], dtype=col.dtype)
                out[name][sel] = col[local[sel]]
        result = {}
        for name, a in out.items():
            if name.endswith("_logit"):
                result[name] = decode_logits(a, ent.dtype)
            else:
                result[name] = torch.from_numpy(a)
        return result

    def __getstate__(self):  # DataLoader workers reopen the memory maps themselves
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state):
        self.__init__(state["path"], state["manifest"])


class TeacherSet:
    """Several teachers opened together; targets come out stacked as [teachers, batch, ...]."""

    def __init__(self, stores: list[TeacherStore]):
        self.stores = stores

    @classmethod
    def open(cls, paths, features=None) -> "TeacherSet":
        return cls([TeacherStore.open(p, features) for p in paths])

    def gather(self, dataset: str, split: str, feature_ids) -> dict[str, torch.Tensor]:
        parts = [s.gather(dataset, split, feature_ids) for s in self.stores]
        return {k: torch.stack([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------------------- reconstruction


def reconstruct(logit: torch.Tensor, lse: torch.Tensor, idx: torch.Tensor | None = None, support: torch.Tensor | None = None) -> torch.Tensor:
    """Dense teacher log-probabilities over the support, from stored top-k.

    `logit` [..., k], `lse` [...], `idx` [..., k] (-1 = empty slot; None for classification, where
    all C logits are stored), `support` [..., L] bool mask of valid positions. Kept entries are exact
    (z_i - lse); the remaining mass 1 - sum(kept) is spread evenly over the valid entries not kept.
    Positions outside the support get -inf.
    """
    if idx is None:
        return logit - lse.unsqueeze(-1)
    kept = idx >= 0
    logp_kept = torch.where(kept, logit - lse.unsqueeze(-1), torch.full_like(logit, -torch.inf))
    n_rest = support.sum(-1) - kept.sum(-1)
    # log(1 - sum p_kept) in log space; a top-k that holds (numerically) all the mass leaves none
    log_kept = torch.logsumexp(logp_kept, dim=-1).clamp(max=0.0)
    log_rest = torch.log(-torch.expm1(log_kept))
    fill = torch.where(n_rest > 0, log_rest - torch.log(n_rest.clamp(min=1).to(logit.dtype)), torch.full_like(log_rest, -torch.inf))
    out = torch.where(support, fill.unsqueeze(-1), torch.full((), -torch.inf, dtype=logit.dtype, device=logit.device))
    # empty slots scatter into a spare last column, dropped after
    length = support.shape[-1]
    spare = torch.cat([out, torch.zeros_like(out[..., :1])], dim=-1)
    spare.scatter_(-1, torch.where(kept, idx, length).long(), logp_kept)
    return spare[..., :length]


# ---------------------------------------------------------------------------- inspection


def inspect(path: str | Path) -> dict:
    """Summary of a store, each head's top-1 agreement with gold, kept mass, and every checksum."""
    store = TeacherStore.open(path)
    m = store.manifest
    report = {"path": str(store.path), "teacher": m["teacher"], "top_k": m["top_k"], "dtype": m["dtype"],
              "compression": m["compression"], "entries": {}, "problems": []}
    for key, e in m["entries"].items():
        ent = store._entries[key]
        agree: dict[str, list] = {}
        kept_mass: dict[str, list] = {}
        nbytes = 0
        for s, shard in enumerate(e["shards"]):
            file = store.path / e["dir"] / shard["file"]
            nbytes += shard["bytes"]
            problem = verify_file(file, shard)
            if problem:
                report["problems"].append(f"{file}: {problem}")
                continue
            cols = ent.table(s)
            for out in OUTPUTS[e["kind"]]:
                logit = decode_logits(cols[f"{out}_logit"], m["dtype"])
                lse = torch.tensor(cols[f"{out}_lse"])
                gold = torch.tensor(cols[f"{out}_gold"].astype(np.int64))
                if e["kind"] == "span":
                    idx = torch.tensor(cols[f"{out}_idx"].astype(np.int64))
                    top1 = idx[:, 0]
                    logp = torch.where(idx >= 0, logit - lse[:, None], torch.full_like(logit, -torch.inf))
                    kept_mass.setdefault(out, []).append(torch.logsumexp(logp, -1).exp())
                else:
                    top1 = logit.argmax(-1)
                agree.setdefault(out, []).append((top1 == gold).float())
        report["entries"][key] = {
            "head": e["head"], "kind": e["kind"], "rows": e["rows"], "shards": len(e["shards"]), "bytes": nbytes,
            "bytes_per_row": round(nbytes / max(1, e["rows"]), 1),
            "top1_agreement": {o: round(float(torch.cat(v).mean()), 4) for o, v in agree.items()},
            "kept_mass": {o: round(float(torch.cat(v).mean()), 4) for o, v in kept_mass.items()},
        }
    return report
