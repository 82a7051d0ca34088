"""Shared fixtures: a tiny WordPiece tokenizer built offline, and recipe/data writers."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml

WORDS = """the a an of in on at to is was and or for by with from as that this it its be are were has have
who what when where which why how did does do many much year city river king war first new one two three
paris france london england capital population people large small university school built founded""".split()


def write_tiny_tokenizer(path: Path, extra: tuple[str, ...] = ()) -> Path:
    """A BERT-style uncased WordPiece tokenizer that covers any ASCII text (letters fall back to ##x)."""
    path.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + WORDS + list(extra)
    save_wordpiece_tokenizer(path, list(dict.fromkeys(vocab)))
    return path


def save_wordpiece_tokenizer(path: Path, vocab: list[str]) -> None:
    """A BERT-style fast tokenizer from a token list, built with `tokenizers` (no hub, any transformers)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(str(path))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A private $ROAD_DS_CACHE, so tests never touch the user's cache.

    Not monkeypatch.setenv: `datasets.map(num_proc>1)` rebinds `os.environ` to a new object, and
    monkeypatch would then restore the old one, leaking the variable into later tests.
    """
    import os

    d = tmp_path / "cache"
    old = os.environ.get("ROAD_DS_CACHE")
    os.environ["ROAD_DS_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("ROAD_DS_CACHE", None)
    else:
        os.environ["ROAD_DS_CACHE"] = old


def write_recipe(path: Path, model: str, datasets: list[dict], **features) -> Path:
    recipe = {"model": {"name_or_path": str(model)}, "datasets": datasets}
    if features:
        recipe["features"] = features
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def squad_doc(articles: list[dict], version: str = "1.1") -> dict:
    return {"version": version, "data": articles}


@pytest.fixture(scope="session")
def kit_dir() -> Path:
    """The real data kit (`road-ds data fetch`). Skips when absent, unless ROAD_DS_REQUIRE_KIT=1 (make test, CI)."""
    import os

    from road_ds.recipe import cache_root

    kit = cache_root() / "kit"
    if not (kit / "kit.json").exists():
        if os.environ.get("ROAD_DS_REQUIRE_KIT") == "1":
            pytest.fail(f"the real data kit is missing at {kit}: run `road-ds data fetch`")
        pytest.skip(f"real data kit not fetched ({kit}); run `road-ds data fetch`")
    return kit


def write_tiny_teacher(path: Path, tokenizer_dir: Path, kind: str, labels: list[str] | None = None, arch: str = "bert", seed: int = 0) -> Path:
    """A tiny random HF model with a QA or classification head, saved with the tokenizer."""
    import shutil

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertConfig, ElectraConfig

    vocab = len((tokenizer_dir / "vocab.txt").read_text().split())
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    config = ElectraConfig(embedding_size=16, **common) if arch == "electra" else BertConfig(**common)
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {n: i for i, n in enumerate(labels)}
    torch.manual_seed(seed)
    cls = AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification
    model = cls.from_config(config)
    model.save_pretrained(str(path))
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, path / f.name)
    return path


def deepspeed_launcher() -> list[str]:
    """The `deepspeed` launcher of this interpreter's environment (CI does not activate the venv)."""
    import sys

    exe = Path(sys.executable).with_name("deepspeed")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deepspeed.launcher.runner"]
