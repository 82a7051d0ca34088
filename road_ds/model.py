"""The multi-task model: one shared Hugging Face encoder and one head per task type.

Each head is the head of the matching Hugging Face task model (`AutoModelForQuestionAnswering`,
`AutoModelForSequenceClassification`) for the encoder's architecture, with the task model's own
encoder replaced by the shared one. So the head's forward is exactly transformers' code, and an
export is a plain `save_pretrained` directory that gives the same logits without road_ds.
The shared encoder is registered once (under `encoder`), so ZeRO-3 sees every parameter once.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from road_ds.errors import DataError

EXPORT_INDEX = "road_ds_export.json"


@dataclass(frozen=True)
class HeadSpec:
    name: str
    kind: str  # "span" or "classification"
    labels: tuple[str, ...] | None = None


def _task_class(kind: str):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    return AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification


def _head_config(config, spec: HeadSpec):
    cfg = copy.deepcopy(config)
    if spec.kind == "classification":
        cfg.num_labels = len(spec.labels)
        cfg.id2label = dict(enumerate(spec.labels))
        cfg.label2id = {n: i for i, n in enumerate(spec.labels)}
    return cfg


class TaskHead(nn.Module):
    """The head of a HF task model; its forward runs the HF task model on the shared encoder."""

    def __init__(self, config, spec: HeadSpec, encoder: nn.Module):
        super().__init__()
        cfg = _head_config(config, spec)
        small = copy.deepcopy(cfg)  # the task model's own encoder is thrown away: build it tiny
        small.num_hidden_layers, small.vocab_size, small.max_position_embeddings, small.type_vocab_size = 0, 1, 1, 1
        small.pad_token_id = 0
        task = _task_class(spec.kind).from_config(small)
        del task._modules[task.base_model_prefix]
        task.config = cfg
        self.spec = spec
        self.task = task
        self.bind(encoder)

    def bind(self, encoder: nn.Module) -> None:
        # a plain attribute, not a submodule: the encoder's parameters belong to RoadModel.encoder
        object.__setattr__(self.task, self.task.base_model_prefix, encoder)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        out = self.task(**kw)
        if self.spec.kind == "span":
            return {"start": out.start_logits, "end": out.end_logits}
        return {"cls": out.logits}


class RoadModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: list[HeadSpec]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({h.name: TaskHead(encoder.config, h, encoder) for h in heads})

    @property
    def config(self):
        return self.encoder.config

    def forward(self, head: str, input_ids, attention_mask, token_type_ids=None) -> dict[str, torch.Tensor]:
        return self.heads[head](input_ids, attention_mask, token_type_ids)

    def head_specs(self) -> list[HeadSpec]:
        return [h.spec for h in self.heads.values()]

    # ------------------------------------------------------------------ export

    def task_model(self, name: str, enc_state: dict | None = None):
        """Head `name` as its own Hugging Face task model (encoder weights copied in), for saving."""
        head = self.heads[name]
        if enc_state is None:
            enc_state = {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}
        full = _task_class(head.spec.kind).from_config(head.task.config)
        base = getattr(full, full.base_model_prefix)
        missing, unexpected = base.load_state_dict(enc_state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith("pooler.")]  # QA models have no pooler
        if missing or unexpected:
            raise RuntimeError(f"encoder weights do not fit {type(full).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        full.load_state_dict({k: v.detach().cpu() for k, v in head.task.state_dict().items()}, strict=False)
        return full

    def export(self, out: str | Path, tokenizer=None, heads: list[str] | None = None, standalone: bool = False) -> Path:
        """One `from_pretrained` dir per head (+ tokenizer) and an index naming them.

        The heads share the encoder, so its weights are written once, as the `encoder.safetensors`
        shard of each head dir's sharded safetensors index, hard-linked between the dirs (a copy
        where the file system has no hard links); each dir still loads alone and gives the same
        logits. `standalone`: each dir gets its own single `model.safetensors` instead (for shipping)."""
        from road_ds.atomic import write_json

        out = Path(out)
        index = {"heads": {}}
        enc_state = {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}
        shared: dict[str, Path] = {}  # the encoder shard written so far, by the task models' encoder prefix
        for name, head in self.heads.items():
            if heads and name not in heads:
                continue
            full = self.task_model(name, enc_state)
            if standalone:
                full.save_pretrained(str(out / name))
            else:
                _save_sharing_encoder(full, enc_state, out / name, shared)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(out / name))
            index["heads"][name] = {"kind": head.spec.kind, "labels": list(head.spec.labels) if head.spec.labels else None, "dir": name}
        write_json(out / EXPORT_INDEX, index)
        return out


ENCODER_SHARD, HEAD_SHARD, SHARD_INDEX = "encoder.safetensors", "head.safetensors", "model.safetensors.index.json"


def _save_sharing_encoder(full, enc_state: dict, d: Path, shared: dict[str, Path]) -> None:
    """`full.save_pretrained(d)` as two shards: the encoder (without the pooler, which only some task
    models have), linked to the one already written for another head, and this head's own weights."""
    from safetensors.torch import save_file

    from road_ds.atomic import link_or_copy, write_json

    prefix = full.base_model_prefix + "."
    state = full.state_dict()
    enc_keys = [prefix + k for k in enc_state if not k.startswith("pooler.")]
    if any(k not in state for k in enc_keys):
        raise RuntimeError(f"{type(full).__name__} does not hold the encoder under '{prefix}'")
    shared_keys = set(enc_keys)
    own = {k: v for k, v in state.items() if k not in shared_keys}
    full.save_pretrained(str(d), state_dict=dict(own))  # config and the head's weights (it empties the dict it is given)
    (d / "model.safetensors").rename(d / HEAD_SHARD)
    if prefix in shared:
        link_or_copy(shared[prefix], d / ENCODER_SHARD)
    else:
        save_file({k: state[k].contiguous() for k in enc_keys}, str(d / ENCODER_SHARD), metadata={"format": "pt"})
        shared[prefix] = d / ENCODER_SHARD
    weight_map = {k: ENCODER_SHARD for k in enc_keys} | {k: HEAD_SHARD for k in own}
    write_json(d / SHARD_INDEX, {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())}, "weight_map": weight_map})


# ---------------------------------------------------------------------------- building


def _layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer blocks (BERT/ELECTRA/RoBERTa: encoder.layer)."""
    for path in ("encoder.layer", "layer", "layers", "transformer.layer"):
        obj = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise DataError(None, f"cannot find the transformer layers of a {type(encoder).__name__}")


def build_encoder(spec, seed: int = 0) -> nn.Module:
    """A pretrained encoder, the first N layers of one, or a fresh one from a config (tests)."""
    from transformers import AutoConfig, AutoModel

    if spec.config:
        cfg = dict(spec.config)
        model_type = cfg.pop("model_type", "bert")
        torch.manual_seed(seed)
        return AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))
    try:
        encoder = AutoModel.from_pretrained(spec.name_or_path)
    except Exception as e:
        raise DataError(spec.name_or_path, f"cannot load the encoder: {e}") from None
    if spec.init_layers:
        layers = _layers(encoder)
        if spec.init_layers > len(layers):
            raise DataError(spec.name_or_path, f"init_layers {spec.init_layers} but the model has {len(layers)} layers", field="model.init_layers")
        del layers[spec.init_layers :]
        encoder.config.num_hidden_layers = spec.init_layers
    return encoder


def reinit_pooler(encoder: nn.Module) -> None:
    """The encoder's pooler drawn afresh, as transformers initialises a missing weight."""
    pooler = getattr(encoder, "pooler", None)
    if pooler is None:
        raise DataError(None, f"a {type(encoder).__name__} has no pooler to draw afresh", field="model.reinit_pooler")
    std = getattr(encoder.config, "initializer_range", 0.02)
    for m in pooler.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)


def load_export_weights(model: RoadModel, path: str | Path, heads: list[str] | None) -> list[str]:
    """Take the encoder (and the named heads) from an export dir: the fine-tuning stage after MTL."""
    path = Path(path)
    index_file = path / EXPORT_INDEX
    if not index_file.exists():
        raise DataError(path, f"not a road_ds export (no {EXPORT_INDEX})", field="model.init_from")
    index = json.loads(index_file.read_text())["heads"]
    names = list(heads) if heads is not None else [h for h in model.heads if h in index]
    for name in names:
        if name not in index:
            raise DataError(index_file, f"has no head '{name}' (it has: {', '.join(index)})", field="model.init_heads")
        if name not in model.heads or index[name]["kind"] != model.heads[name].spec.kind:
            raise DataError(index_file, f"head '{name}' ({index[name]['kind']}) has no matching head in this recipe", field="model.init_heads")
    def load(n):
        return _task_class(index[n]["kind"]).from_pretrained(str(path / index[n]["dir"]))

    sources = {n: load(n) for n in names}
    # every head dir of an export holds the same encoder, but QA models drop the pooler (which
    # BERT's classification heads use): take the encoder from a classification dir when there is one
    enc_from = next((n for n in [*names, *index] if index[n]["kind"] == "classification"), (names or list(index))[0])
    src = sources[enc_from] if enc_from in sources else load(enc_from)
    missing, _ = model.encoder.load_state_dict(getattr(src, src.base_model_prefix).state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    if missing:
        raise DataError(path, f"encoder weights missing from the export: {missing[:3]}", field="model.init_from")
    for name in names:
        m = sources[name]
        model.heads[name].task.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith(m.base_model_prefix + ".")})
    return names


def recipe_heads(recipe) -> list[HeadSpec]:
    """One head per head name of the recipe's datasets, in order of first use."""
    heads: dict[str, HeadSpec] = {}
    for d in recipe.datasets:
        heads.setdefault(d.head_name, HeadSpec(d.head_name, d.task_type.kind, tuple(d.label_names) if d.label_names else None))
    return list(heads.values())


def build_model(recipe, heads: list[HeadSpec] | None = None) -> RoadModel:
    spec = recipe.model
    encoder = build_encoder(spec, seed=recipe.train.seed)
    if spec.reinit_pooler:
        reinit_pooler(encoder)
    model = RoadModel(encoder, heads if heads is not None else recipe_heads(recipe))
    if spec.init_from:
        load_export_weights(model, spec.init_from, spec.init_heads)
    return model


def param_groups(model: RoadModel, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases and norms; layer-wise LR decay from the top layer down."""
    n_layers = len(_layers(model.encoder))
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder."):
            sub = name[len("encoder.") :]
            if "embeddings" in sub:
                depth = 0
            elif ".layer." in f".{sub}":
                after = f".{sub}".split(".layer.", 1)[1]
                depth = int(after.split(".")[0]) + 1
            else:  # pooler and anything above the last block
                depth = n_layers + 1
        else:
            depth = n_layers + 1  # heads
        scale = layer_decay ** (n_layers + 1 - depth)
        no_decay = p.ndim == 1 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")
        key = (scale, no_decay)
        g = groups.setdefault(key, {"params": [], "lr": lr * scale, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale})
        g["params"].append(p)
    return list(groups.values())
