"""DeepSpeed JSON configs reconciled with the recipe, which states batch sizes and optimizer once.

A config field may be "auto" or absent (filled from the recipe) or spell out the recipe's own
value; a value that contradicts the recipe is a `DataError` naming the file, the JSON field and
both values, raised before any process group or model is built (DESIGN invariant 5).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from road_ds.errors import DataError

AUTO = "auto"
# Where each value lives in the recipe, for the error messages.
RECIPE_FIELDS = {
    "micro_batch_size": "train.micro_batch_size",
    "passes": "mtl.passes",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "betas": "train.betas",
    "eps": "train.eps",
    "grad_clip": "train.grad_clip",
}
OPTIMIZERS = ("adam", "adamw")  # DeepSpeed's "Adam" is AdamW unless adam_w_mode is false


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"key '{k}' appears twice")
        seen[k] = v
    return seen


def load_ds_json(path: str | Path) -> dict:
    """Strict JSON (DeepSpeed reads hjson; we want one dialect and a line number for mistakes)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DataError(path, f"cannot read DeepSpeed config: {e.strerror}") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})", row=e.lineno) from None
    except ValueError as e:
        raise DataError(path, f"malformed JSON: {e}") from None
    return raw


def _same(value, want) -> bool:
    if isinstance(want, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(want) and all(_same(v, w) for v, w in zip(value, want))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isclose(value, want, rel_tol=1e-9, abs_tol=0.0)


def _fill(where: str, section: dict, key: str, field: str, want, recipe: str) -> None:
    """Set section[key] to `want` if "auto" or absent; refuse any other value that differs."""
    value = section.get(key, AUTO)
    if value == AUTO:
        section[key] = list(want) if isinstance(want, tuple) else want
    elif not _same(value, want):
        shown = list(want) if isinstance(want, tuple) else want
        raise DataError(where, f"{json.dumps(value)} contradicts the recipe's {recipe} = {json.dumps(shown)}; use \"auto\"", field=field)


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _enabled(cfg: dict, kind: str):
    section = cfg.get(kind)
    return section.get("enabled") if isinstance(section, dict) else None


def _leftover_auto(node, prefix: str = ""):
    """The first field still "auto" after resolving (DeepSpeed itself would choke on it)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        field = f"{prefix}.{k}" if prefix else str(k)
        if v == AUTO:
            return field
        found = _leftover_auto(v, field)
        if found:
            return found
    return None


def resolve_ds_config(path: str | Path | dict, *, micro_batch_size: int, passes: int, world_size: int, lr: float,
                      weight_decay: float, betas: tuple[float, float], eps: float, grad_clip: float,
                      bf16: bool | None = None, hidden_size: int | None = None) -> dict:
    """A plain dict for `deepspeed.initialize(config=...)`, with every "auto" filled from the recipe.

    `bf16`: whether "auto" precision means bf16 (the caller knows the device); None asks CUDA.
    `hidden_size`: fills "auto" ZeRO bucket sizes from the model's width (hidden^2, as the Hugging
    Face integration does): a fixed 5e8-element bucket costs seconds per step for a small model.
    """
    if isinstance(path, dict):
        where, cfg = "<DeepSpeed config>", copy.deepcopy(path)
    else:
        where, cfg = str(path), load_ds_json(path)
    if not isinstance(cfg, dict):
        raise DataError(where, "a DeepSpeed config must be a JSON object at the top level")
    if "scheduler" in cfg:
        raise DataError(where, "DeepSpeed LR schedulers are not supported: the trainer owns the schedule, because "
                        "layer-wise LR decay needs per-group rates that DeepSpeed's schedulers overwrite; remove this section",
                        field="scheduler")
    R = RECIPE_FIELDS
    _fill(where, cfg, "train_micro_batch_size_per_gpu", "train_micro_batch_size_per_gpu", micro_batch_size, R["micro_batch_size"])
    _fill(where, cfg, "gradient_accumulation_steps", "gradient_accumulation_steps", passes, R["passes"])
    _fill(where, cfg, "train_batch_size", "train_batch_size", micro_batch_size * passes * world_size,
          f"{R['micro_batch_size']} x {R['passes']} x world size ({micro_batch_size} x {passes} x {world_size})")
    _fill(where, cfg, "gradient_clipping", "gradient_clipping", grad_clip, R["grad_clip"])

    opt = cfg.setdefault("optimizer", {"type": "AdamW"})
    if not isinstance(opt, dict) or str(opt.get("type", "")).lower() not in OPTIMIZERS:
        kind = opt.get("type") if isinstance(opt, dict) else opt
        raise DataError(where, f"optimizer {json.dumps(kind)} is not supported; the recipe's optimizer is AdamW "
                        "(\"type\": \"AdamW\" or \"Adam\")", field="optimizer.type")
    params = opt.setdefault("params", {})
    if not isinstance(params, dict):
        raise DataError(where, f"must be an object, not {json.dumps(params)}", field="optimizer.params")
    for key, want in (("lr", lr), ("weight_decay", weight_decay), ("betas", tuple(betas)), ("eps", eps)):
        _fill(where, params, key, f"optimizer.params.{key}", want, R[key])

    use_bf16 = _cuda_bf16() if bf16 is None else bool(bf16)
    for kind, auto_value in (("bf16", use_bf16 and _enabled(cfg, "fp16") is not True), ("fp16", False)):
        if _enabled(cfg, kind) == AUTO:  # "auto" fp16 stays off: bf16 or fp32, fp16 only when asked for
            cfg[kind]["enabled"] = auto_value
    if _enabled(cfg, "bf16") is True and _enabled(cfg, "fp16") is True:
        raise DataError(where, "bf16 and fp16 are both enabled; enable one", field="fp16.enabled")

    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict) and hidden_size:
        sizes = {"reduce_bucket_size": hidden_size * hidden_size, "allgather_bucket_size": hidden_size * hidden_size,
                 "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
                 "stage3_param_persistence_threshold": 10 * hidden_size}
        for key, value in sizes.items():
            if zero.get(key) == AUTO:
                zero[key] = value
    left = _leftover_auto(cfg)
    if left:
        raise DataError(where, "\"auto\" is only understood for the batch sizes, gradient_clipping, the optimizer "
                        "params, bf16/fp16.enabled and the ZeRO bucket sizes; give a value", field=left)
    return cfg
