"""Recipes: one YAML file that declares the model, the feature parameters and the datasets.

Every field is checked before any work starts: an unknown or misspelt field, a wrong type or
an inconsistent dataset is a `DataError` that names the recipe file and the field path.
Paths may use environment variables; `$ROAD_DS_CACHE` defaults to `~/.cache/road_ds`, and
relative paths are taken from the recipe file's folder.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from road_ds.corpora import RATING_LABELS
from road_ds.errors import DataError
from road_ds.tasks import FORMATS, TASK_TYPES

DEFAULT_CACHE = "~/.cache/road_ds"


def cache_root() -> Path:
    """The cache folder for features, the data kit and downloads (`$ROAD_DS_CACHE`)."""
    return Path(os.path.expanduser(os.environ.get("ROAD_DS_CACHE", "").strip() or DEFAULT_CACHE))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name_or_path: str | None = None  # a pretrained encoder (local HF dir, or a hub id where allowed)
    config: dict | None = None  # or a fresh encoder from a config: {model_type: bert, hidden_size: ...}
    tokenizer: str | None = None  # defaults to name_or_path
    init_layers: int | None = Field(None, ge=1)  # a student from the first N layers of name_or_path
    init_from: str | None = None  # an export dir of another run (the fine-tuning stage after MTL)
    init_heads: list[str] | None = None  # which heads to take from init_from (default: all that match)
    # draw the pooler (BERT's dense + tanh over [CLS], which its classification heads read) afresh: a
    # sentence-embedding checkpoint trained with mean pooling leaves it untrained and near zero
    # (all-MiniLM-L6-v2: weight std 0.009), and a head reading it then starts with constant inputs
    reinit_pooler: bool = False

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.name_or_path


class KDSpec(_Strict):
    """Distillation from precomputed teacher stores (docs/design.md, "Knowledge distillation")."""

    teachers: list[str] = []  # teacher store dirs; empty = no KD
    combine: Literal["mean", "wkd", "anneal"] = "wkd"
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the gold cross-entropy
    temperature: float = Field(1.0, gt=0.0)
    W: float = Field(0.75, ge=0.0, le=1.0)  # wkd: the weight of an incorrect teacher
    t2: bool = True  # scale the KD term by T^2


class TrainSpec(_Strict):
    seed: int = 0
    max_steps: int = Field(100, ge=1)  # optimizer steps
    micro_batch_size: int = Field(8, ge=1)  # per rank and micro-step
    lr: float = Field(3e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-6, gt=0.0)
    warmup_steps: int = Field(0, ge=0)  # linear warm-up, then linear decay to 0 at max_steps
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # ROaD used 0.75 on Large
    grad_clip: float = Field(1.0, ge=0.0)
    eval_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    save_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=0)  # the latest N; 0: the latest while running, none once the run is exported
    num_workers: int = Field(1, ge=0)  # DataLoader workers that build batches and gather teacher targets
    eval_batch_size: int = Field(32, ge=1)
    n_best_size: int = Field(20, ge=1)
    max_answer_length: int = Field(30, ge=1)
    # seconds a rank waits on its peers in one collective before the run fails (a lost host or a hung
    # rank); DeepSpeed's own default
    collective_timeout_s: int = Field(600, ge=1)


class MTLSpec(_Strict):
    """ROaD Algorithm 1: each optimizer step averages `passes` micro-batches, each from one dataset."""

    passes: int = Field(1, ge=1)
    policy: Literal["uniform", "proportional", "temperature"] = "proportional"  # by examples (QA: questions, not windows)
    temperature: float = Field(2.0, gt=0.0)
    # each task's loss scaled so the gradient it gives the shared encoder's parameters has the same
    # running size as the others' (road_ds/balance.py); `none` sums the losses as they are
    balance: Literal["grad_norm", "none"] = "grad_norm"
    balance_decay: float = Field(0.9, ge=0.0, lt=1.0)  # the running mean's decay, per micro-batch of a task


class FeatureParams(_Strict):
    max_seq_length: int = Field(384, ge=16)
    doc_stride: int = Field(128, ge=0)  # tokens shared by consecutive windows (HF semantics)
    max_query_length: int = Field(64, ge=1)
    num_proc: int = Field(1, ge=1)
    cache_dir: str | None = None  # default: $ROAD_DS_CACHE/features


class DatasetSpec(_Strict):
    """A dataset: where its files are, how to read them, which task type and head it feeds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: str
    head: str | None = None  # defaults to the task type's head
    format: str
    files: dict[str, str | list[str]]  # split -> file(s); for `hub`, split -> hub split name
    columns: dict[str, str] = {}  # canonical field -> column in the file
    labels: list[str] | None = None
    label_map: dict[str, str] = {}  # raw value in the file -> label name
    hub_path: str | None = None  # format `hub`: the dataset name on the hub (needs the network)
    hub_config: str | None = None
    # SQuAD files in the wild carry a few answer_start values that are off by one or two;
    # `nearest` moves each such answer to the nearest place its text occurs (and counts it).
    answer_start: Literal["strict", "nearest"] = "strict"
    max_seq_length: int | None = Field(None, ge=16)  # this dataset's own length; default features.max_seq_length
    limit: dict[str, int] = {}  # split -> use only the first N examples (quick runs on a slice)
    loss_weight: float = Field(1.0, gt=0.0)  # a static factor on this dataset's loss, on top of mtl.balance
    # train split: only the first N examples keep their gold labels; the rest are a transfer set,
    # learnt from the teachers' targets alone (gold -100), so it needs KD
    labeled: int | None = Field(None, ge=0)
    rating: Literal["five_way", "polarity"] | None = None  # star-rated formats (amazon_*): the labels it reads
    history_turns: int = Field(0, ge=0)  # quac_json: the previous dialogue turns put after each question
    train_split: str | None = None  # default: "train" when the files have it (else evaluation only)
    eval_split: str | None = None  # default: "dev" or "validation" when the files have it
    kd: KDSpec | None = None  # default: the recipe's top-level kd

    @field_validator("task")
    @classmethod
    def _known_task(cls, v):
        if v not in TASK_TYPES:
            raise ValueError(f"unknown task type '{v}'; known: {', '.join(sorted(TASK_TYPES))}")
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        if v not in FORMATS:
            raise ValueError(f"unknown format '{v}'; known: {', '.join(sorted(FORMATS))}")
        return v

    @property
    def task_type(self):
        return TASK_TYPES[self.task]

    @property
    def head_name(self) -> str:
        return self.head or self.task_type.default_head

    @property
    def label_names(self) -> list[str] | None:
        if self.task_type.kind == "span":
            return None
        if self.rating:
            return list(RATING_LABELS[self.rating])
        return list(self.labels or FORMATS[self.format].labels or self.task_type.default_labels or [])

    def feature_params(self, params: FeatureParams) -> FeatureParams:
        """The recipe's feature parameters with this dataset's own overrides applied."""
        return params.model_copy(update={"max_seq_length": self.max_seq_length}) if self.max_seq_length else params

    def split_files(self, split: str) -> list[str]:
        if split not in self.files:
            raise KeyError(split)
        v = self.files[split]
        return [v] if isinstance(v, str) else list(v)


class Recipe(_Strict):
    model: ModelSpec
    features: FeatureParams = FeatureParams()
    datasets: list[DatasetSpec]
    train: TrainSpec = TrainSpec()
    mtl: MTLSpec = MTLSpec()
    kd: KDSpec | None = None  # applies to every dataset without its own `kd`

    def kd_for(self, name: str) -> KDSpec | None:
        d = self.dataset(name)
        kd = d.kd if d.kd is not None else self.kd
        return kd if kd is not None and kd.teachers else None

    def dataset(self, name: str) -> DatasetSpec:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)


def _expand(path: str, base: Path) -> str:
    root = str(cache_root())  # $ROAD_DS_CACHE has a default even when the variable is unset
    p = path.replace("${ROAD_DS_CACHE}", root).replace("$ROAD_DS_CACHE", root)
    p = os.path.expanduser(os.path.expandvars(p))
    if "://" in p or os.path.isabs(p):
        return p
    return str((base / p).resolve())


def _suggest(loc: tuple, raw: dict) -> str:
    """'did you mean' for an unknown field, from the allowed names at that place."""
    name = str(loc[-1])
    target = Recipe
    for part in loc[:-1]:
        if isinstance(part, int) or target is None:
            continue
        field = target.model_fields.get(part)
        ann = field.annotation if field else None
        inner = getattr(ann, "__args__", None)
        target = inner[0] if inner else ann
        if not (isinstance(target, type) and issubclass(target, BaseModel)):
            target = None
    if target is None:
        return ""
    close = difflib.get_close_matches(name, list(target.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_recipe(raw: dict, path: str | Path = "<recipe>") -> Recipe:
    """Validate a recipe dict; paths are resolved against the recipe's folder."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise DataError(path, "a recipe must be a YAML mapping at the top level")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _suggest(err["loc"], raw)
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise DataError(path, msg + more, field=loc) from None
    base = path.parent if path.name != "<recipe>" else Path.cwd()
    datasets = []
    seen: dict[str, int] = {}
    heads: dict[str, DatasetSpec] = {}
    for i, d in enumerate(recipe.datasets):
        where = f"datasets.{i}"
        if d.name in seen:
            raise DataError(path, f"dataset name '{d.name}' is used twice (also datasets.{seen[d.name]})", field=f"{where}.name")
        seen[d.name] = i
        fmt = FORMATS[d.format]
        if d.task_type.kind not in fmt.kinds:
            raise DataError(path, f"format '{d.format}' cannot hold a {d.task_type.kind} task ('{d.task}')", field=f"{where}.format")
        if fmt.fixed and d.columns:
            raise DataError(path, f"format '{d.format}' reads its published layout: `columns` does not apply", field=f"{where}.columns")
        if fmt.rated and d.rating is None:
            raise DataError(path, f"format '{d.format}' holds star ratings: say `rating: five_way` or `rating: polarity`", field=f"{where}.rating")
        if not fmt.rated and d.rating is not None:
            raise DataError(path, f"`rating` applies to star-rated formats (amazon_jsonl, amazon_tsv), not '{d.format}'", field=f"{where}.rating")
        if fmt.rated and d.labels is not None:
            raise DataError(path, f"the labels of format '{d.format}' come from `rating` ({d.rating}: {d.label_names})", field=f"{where}.labels")
        if d.history_turns and d.format != "quac_json":
            raise DataError(path, f"`history_turns` applies to QuAC dialogues (format quac_json), not '{d.format}'", field=f"{where}.history_turns")
        if d.task_type.kind == "classification" and not d.label_names:
            raise DataError(path, f"task '{d.task}' needs a list of label names", field=f"{where}.labels")
        if d.task_type.kind == "classification" and len(set(d.label_names)) != len(d.label_names):
            raise DataError(path, "label names repeat", field=f"{where}.labels")
        if not d.files:
            raise DataError(path, "no files given", field=f"{where}.files")
        other = heads.get(d.head_name)
        if other is not None:
            if other.task_type.kind != d.task_type.kind or other.label_names != d.label_names:
                raise DataError(
                    path,
                    f"head '{d.head_name}' is shared with dataset '{other.name}' but the tasks differ "
                    f"({other.task}, labels {other.label_names} vs {d.task}, labels {d.label_names}); "
                    "give this dataset its own head",
                    field=f"{where}.head",
                )
        heads.setdefault(d.head_name, d)
        kd = d.kd if d.kd is not None else recipe.kd
        if d.labeled is not None and (kd is None or not kd.teachers):
            raise DataError(path, "a transfer set (examples past `labeled` have no gold) needs teachers: set kd.teachers", field=f"{where}.labeled")
        if d.format != "hub":
            files = {s: ([_expand(f, base) for f in v] if isinstance(v, list) else _expand(v, base)) for s, v in d.files.items()}
            d = d.model_copy(update={"files": files})
        datasets.append(d)
    m = recipe.model
    if not m.name_or_path and not m.config:
        raise DataError(path, "give a pretrained encoder (name_or_path) or a config to build one", field="model")
    if not m.tokenizer_path:
        raise DataError(path, "a model built from a config needs a tokenizer", field="model.tokenizer")
    local = lambda v: _expand(v, base) if v and _looks_local(v) else v  # noqa: E731
    model = m.model_copy(update={"name_or_path": local(m.name_or_path), "tokenizer": local(m.tokenizer),
                                 "init_from": _expand(m.init_from, base) if m.init_from else None})
    teachers = lambda kd: kd.model_copy(update={"teachers": [_expand(t, base) for t in kd.teachers]}) if kd else kd  # noqa: E731
    datasets = [d.model_copy(update={"kd": teachers(d.kd)}) for d in datasets]
    for i, d in enumerate(datasets):
        for field, split in (("train_split", d.train_split), ("eval_split", d.eval_split)):
            if split is not None and split not in d.files:
                raise DataError(path, f"split '{split}' is not among the files ({', '.join(d.files)})", field=f"datasets.{i}.{field}")
        datasets[i] = d.model_copy(update={
            "train_split": d.train_split or ("train" if "train" in d.files else None),
            "eval_split": d.eval_split or next((s for s in ("dev", "validation") if s in d.files), None),
        })
    feats = recipe.features
    for d in datasets:
        p = d.feature_params(feats)
        if d.task_type.kind == "span" and p.doc_stride >= p.max_seq_length - p.max_query_length - 3:
            raise DataError(path, f"doc_stride {p.doc_stride} leaves no room for a new window with max_seq_length "
                            f"{p.max_seq_length} and max_query_length {p.max_query_length} (dataset '{d.name}')", field="features.doc_stride")
    if feats.cache_dir:
        feats = feats.model_copy(update={"cache_dir": _expand(feats.cache_dir, base)})
    return recipe.model_copy(update={"datasets": datasets, "model": model, "features": feats, "kd": teachers(recipe.kd)})


def _looks_local(name: str) -> bool:
    """A hub model id looks like `org/name`; anything with a variable, ~, ./ or an existing path is local."""
    return name.startswith(("$", "~", ".", "/")) or os.path.exists(name)


def apply_overrides(raw: dict, sets: list[str], path) -> dict:
    """`--set train.lr=1e-4`, `--set datasets.squad.kd.alpha=0.3` (a dataset by name or index)."""
    raw = copy.deepcopy(raw)
    for item in sets:
        if "=" not in item:
            raise DataError(path, f"--set needs key=value, got '{item}'")
        key, value = item.split("=", 1)
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                idx = next((j for j, d in enumerate(node) if isinstance(d, dict) and d.get("name") == part), None)
                if idx is None and part.isdigit():
                    idx = int(part)
                if idx is None or idx >= len(node):
                    raise DataError(path, f"--set {key}: no list item '{part}'", field=".".join(parts[: i + 1]))
                node = node[idx]
            else:
                node = node.setdefault(part, {})
                if node is None:
                    node = {}
        if not isinstance(node, dict):
            raise DataError(path, f"--set {key}: '{parts[-2]}' is not a mapping", field=key)
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_recipe(path: str | Path, overrides: list[str] | tuple = ()) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read recipe: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        row = mark.line + 1 if mark else None
        raise DataError(path, f"malformed YAML: {getattr(e, 'problem', e)}", row=row) from None
    if overrides:
        raw = apply_overrides(raw or {}, list(overrides), path)
    return parse_recipe(raw, path)
