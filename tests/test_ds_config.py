"""DeepSpeed configs: "auto" filled from the recipe, contradictions named, schedulers refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from road_ds.ds_config import resolve_ds_config
from road_ds.errors import DataError

CONFIGS = Path(__file__).resolve().parent.parent / "ds_configs"
RECIPE = dict(micro_batch_size=8, passes=4, world_size=2, lr=3e-4, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6, grad_clip=1.0)


def write(tmp_path: Path, cfg: dict | str, name: str = "ds.json") -> Path:
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
    return p


def test_auto_and_absent_fields_are_filled(tmp_path):
    p = write(tmp_path, {"train_batch_size": "auto", "optimizer": {"type": "AdamW", "params": {"lr": "auto", "torch_adam": True}},
                         "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 2}})
    cfg = resolve_ds_config(p, **RECIPE, bf16=False)
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 64
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["optimizer"]["params"] == {"lr": 3e-4, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-6, "torch_adam": True}
    assert cfg["bf16"] == {"enabled": False}
    assert resolve_ds_config(p, **RECIPE, bf16=True)["bf16"] == {"enabled": True}
    json.dumps(cfg)  # a plain dict


def test_absent_optimizer_is_adamw_from_the_recipe():
    cfg = resolve_ds_config({"zero_optimization": {"stage": 3}}, **RECIPE, bf16=False)
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["lr"] == 3e-4
    assert "bf16" not in cfg and "fp16" not in cfg


def test_explicit_values_equal_to_the_recipe_are_accepted(tmp_path):
    cfg = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4, "train_batch_size": 64, "gradient_clipping": 1,
           "optimizer": {"type": "Adam", "params": {"lr": 0.0003, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-6}}}
    out = resolve_ds_config(write(tmp_path, cfg), **RECIPE, bf16=False)
    assert out["gradient_clipping"] == 1 and out["optimizer"]["params"]["lr"] == 0.0003


@pytest.mark.parametrize(
    "cfg, field, value, recipe",
    [
        ({"gradient_accumulation_steps": 8}, "gradient_accumulation_steps", "8", "mtl.passes = 4"),
        ({"train_micro_batch_size_per_gpu": 16}, "train_micro_batch_size_per_gpu", "16", "train.micro_batch_size = 8"),
        ({"train_batch_size": 32}, "train_batch_size", "32", "(8 x 4 x 2) = 64"),
        ({"gradient_clipping": 0.5}, "gradient_clipping", "0.5", "train.grad_clip = 1.0"),
        ({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}, "optimizer.params.lr", "0.001", "train.lr = 0.0003"),
        ({"optimizer": {"type": "AdamW", "params": {"weight_decay": 0}}}, "optimizer.params.weight_decay", "0", "train.weight_decay = 0.01"),
        ({"optimizer": {"type": "AdamW", "params": {"betas": [0.9, 0.999]}}}, "optimizer.params.betas", "[0.9, 0.999]", "train.betas = [0.9, 0.98]"),
        ({"optimizer": {"type": "AdamW", "params": {"eps": 1e-8}}}, "optimizer.params.eps", "1e-08", "train.eps = 1e-06"),
        ({"gradient_accumulation_steps": "4"}, "gradient_accumulation_steps", '"4"', "mtl.passes = 4"),
        ({"gradient_accumulation_steps": True}, "gradient_accumulation_steps", "true", "mtl.passes = 4"),
    ],
)
def test_contradictions_name_file_field_and_both_values(tmp_path, cfg, field, value, recipe):
    p = write(tmp_path, cfg, "zero2.json")
    with pytest.raises(DataError) as e:
        resolve_ds_config(p, **RECIPE, bf16=False)
    msg = str(e.value)
    assert msg.startswith(f"{p}: field '{field}': {value} contradicts the recipe's"), msg
    assert recipe in msg and 'use "auto"' in msg
    assert e.value.field == field and e.value.path == str(p)


def test_message_reads_as_documented(tmp_path):
    p = write(tmp_path, {"gradient_accumulation_steps": 8})
    with pytest.raises(DataError, match=r"ds\.json: field 'gradient_accumulation_steps': 8 contradicts the recipe's mtl\.passes = 4; use \"auto\""):
        resolve_ds_config(p, **RECIPE, bf16=False)


def test_scheduler_is_refused(tmp_path):
    p = write(tmp_path, {"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}})
    with pytest.raises(DataError, match="field 'scheduler'.*layer-wise LR decay"):
        resolve_ds_config(p, **RECIPE, bf16=False)


def test_other_optimizers_and_leftover_auto_are_refused():
    with pytest.raises(DataError, match="field 'optimizer.type'.*\"Lamb\""):
        resolve_ds_config({"optimizer": {"type": "Lamb"}}, **RECIPE, bf16=False)
    with pytest.raises(DataError, match="field 'zero_optimization.reduce_bucket_size'.*auto"):
        resolve_ds_config({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}, **RECIPE, bf16=False)


def test_precision(tmp_path):
    both = {"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}
    assert resolve_ds_config(both, **RECIPE, bf16=True)["fp16"] == {"enabled": False}
    assert resolve_ds_config(both, **RECIPE, bf16=True)["bf16"] == {"enabled": True}
    fp16 = {"bf16": {"enabled": "auto"}, "fp16": {"enabled": True}}
    assert resolve_ds_config(fp16, **RECIPE, bf16=True)["bf16"] == {"enabled": False}  # an explicit fp16 wins
    with pytest.raises(DataError, match="both enabled"):
        resolve_ds_config({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, **RECIPE, bf16=True)


def test_input_dict_is_not_modified():
    raw = {"train_batch_size": "auto", "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
    resolve_ds_config(raw, **RECIPE, bf16=False)
    assert raw == {"train_batch_size": "auto", "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}


def test_malformed_json_names_the_line(tmp_path):
    p = write(tmp_path, '{\n  "train_batch_size": "auto",\n  "gradient_clipping": 1.0\n  "bf16": {}\n}\n')
    with pytest.raises(DataError, match=r"row 4: malformed JSON: Expecting ',' delimiter \(line 4, column 3\)") as e:
        resolve_ds_config(p, **RECIPE, bf16=False)
    assert e.value.row == 4 and e.value.path == str(p)
    with pytest.raises(DataError, match="appears twice"):
        resolve_ds_config(write(tmp_path, '{"steps_per_print": 1, "steps_per_print": 2}'), **RECIPE, bf16=False)
    with pytest.raises(DataError, match="JSON object"):
        resolve_ds_config(write(tmp_path, "[1, 2]"), **RECIPE, bf16=False)
    with pytest.raises(DataError, match="cannot read"):
        resolve_ds_config(tmp_path / "missing.json", **RECIPE, bf16=False)


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json", "zero2_offload.json"])
def test_shipped_configs_resolve_and_pass_deepspeed_validation(name):
    from deepspeed.runtime.config import DeepSpeedConfig

    one_rank = {**RECIPE, "world_size": 1}  # DeepSpeedConfig without a process group assumes 1 rank
    cfg = resolve_ds_config(CONFIGS / name, **one_rank, bf16=False, hidden_size=64)
    zero = cfg["zero_optimization"]
    assert zero["reduce_bucket_size"] == 64 * 64  # "auto" buckets follow the model's width
    assert zero.get("stage3_param_persistence_threshold", 640) == 640
    ds = DeepSpeedConfig(cfg)
    assert ds.train_batch_size == 32 and ds.gradient_accumulation_steps == 4 and ds.train_micro_batch_size_per_gpu == 8
    assert ds.gradient_clipping == 1.0 and ds.optimizer_name == "adamw" and not ds.bfloat16_config.enabled
    assert ds.optimizer_params["lr"] == 3e-4 and ds.scheduler_name is None
    stage = 3 if "zero3" in name else 2
    assert ds.zero_optimization_stage == stage
    assert DeepSpeedConfig(resolve_ds_config(CONFIGS / name, **one_rank, bf16=True, hidden_size=64)).bfloat16_config.enabled
    with pytest.raises(DataError, match="reduce_bucket_size"):  # without the width, "auto" buckets cannot be filled
        resolve_ds_config(CONFIGS / name, **one_rank, bf16=False)
