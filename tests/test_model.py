"""RoadModel: export round trip, shared encoder, export loading, student init, optimizer groups."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from road_ds.errors import DataError
from road_ds.model import EXPORT_INDEX, HeadSpec, RoadModel, build_encoder, load_export_weights, param_groups

VOCAB = 120
SPAN = HeadSpec("qa", "span")
CLS2 = HeadSpec("nli2", "classification", ("no", "yes"))
CLS3 = HeadSpec("nli3", "classification", ("entail", "neutral", "contra"))
HEADS = [SPAN, CLS2, CLS3]


def tiny_config(model_type: str, layers: int = 2) -> dict:
    return dict(model_type=model_type, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64)


def spec(config=None, name_or_path=None, init_layers=None):
    return SimpleNamespace(config=config, name_or_path=name_or_path, init_layers=init_layers)


def make_model(model_type: str = "bert", seed: int = 0, heads=HEADS) -> RoadModel:
    model = RoadModel(build_encoder(spec(tiny_config(model_type)), seed=seed), list(heads))
    torch.manual_seed(seed + 1000)  # heads get seed-dependent weights too
    for h in model.heads.values():
        for p in h.task.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def batch(seed: int = 0, n: int = 3, length: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 8:] = 0  # some padding
    types = torch.zeros(n, length, dtype=torch.long)
    types[:, 6:] = 1
    return ids, mask, types


def road_logits(model: RoadModel, head: str, b) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(head, *b)
    return [out["start"], out["end"]] if "start" in out else [out["cls"]]


def hf_logits(hf_model, b) -> list[torch.Tensor]:
    ids, mask, types = b
    with torch.no_grad():
        out = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("model_type", ["bert", "electra"])
def test_export_round_trip_with_transformers_alone(model_type, tmp_path, tiny_tokenizer_dir):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from road_ds.features import load_tokenizer

    model = make_model(model_type)
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    out = model.export(tmp_path / "export", tokenizer=tok)

    index = json.loads((out / EXPORT_INDEX).read_text())["heads"]
    assert index == {
        "qa": {"kind": "span", "labels": None, "dir": "qa"},
        "nli2": {"kind": "classification", "labels": ["no", "yes"], "dir": "nli2"},
        "nli3": {"kind": "classification", "labels": ["entail", "neutral", "contra"], "dir": "nli3"},
    }
    b = batch()
    qa = AutoModelForQuestionAnswering.from_pretrained(str(out / "qa")).eval()
    assert_same(hf_logits(qa, b), road_logits(model, "qa", b))
    for h in (CLS2, CLS3):
        hf = AutoModelForSequenceClassification.from_pretrained(str(out / h.name)).eval()
        assert hf.config.model_type == model_type
        assert hf.config.num_labels == len(h.labels)
        assert hf.config.id2label == dict(enumerate(h.labels))
        assert hf.config.label2id == {n: i for i, n in enumerate(h.labels)}
        got = hf_logits(hf, b)
        assert got[0].shape == (3, len(h.labels))
        assert_same(got, road_logits(model, h.name, b))
    # the two classification heads really are different heads (not a copy of one)
    assert not torch.equal(road_logits(model, "nli2", b)[0], road_logits(model, "nli3", b)[0][:, :2])
    for name in ("qa", "nli2", "nli3"):
        saved = load_tokenizer(str(out / name))
        assert saved.get_vocab() == tok.get_vocab()
        assert saved("paris is the capital")["input_ids"] == tok("paris is the capital")["input_ids"]


def test_export_holds_one_encoder_linked_into_every_head_dir(tmp_path):
    """The encoder's weights are on disk once (hard links between the head dirs), each head dir
    still loads alone with the same logits, and a head dir copied elsewhere is whole."""
    import shutil

    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    model = make_model("bert")
    out = model.export(tmp_path / "export")
    shards = [out / h / "encoder.safetensors" for h in ("qa", "nli2", "nli3")]
    assert len({p.stat().st_ino for p in shards}) == 1 and shards[0].stat().st_nlink == 3
    enc_bytes = shards[0].stat().st_size
    assert all((out / h / "head.safetensors").stat().st_size < enc_bytes / 5 for h in ("qa", "nli2", "nli3"))
    assert not any((out / h / "model.safetensors").exists() for h in ("qa", "nli2", "nli3"))
    moved = tmp_path / "moved"
    shutil.copytree(out / "nli2", moved)  # a head dir alone, its links now plain files
    shutil.rmtree(out)
    b = batch()
    assert_same(hf_logits(AutoModelForSequenceClassification.from_pretrained(str(moved)).eval(), b), road_logits(model, "nli2", b))

    # --standalone: each head dir its own single weights file, the same logits
    out = model.export(tmp_path / "standalone", standalone=True)
    assert not (out / "qa" / "encoder.safetensors").exists() and (out / "qa" / "model.safetensors").exists()
    assert_same(hf_logits(AutoModelForQuestionAnswering.from_pretrained(str(out / "qa")).eval(), b), road_logits(model, "qa", b))


def test_export_without_tokenizer_and_selected_heads(tmp_path):
    model = make_model("bert")
    out = model.export(tmp_path / "export", heads=["nli3"])
    index = json.loads((out / EXPORT_INDEX).read_text())["heads"]
    assert list(index) == ["nli3"]
    assert not (out / "qa").exists() and not (out / "nli2").exists()
    assert (out / "nli3" / "config.json").exists()
    assert not (out / "nli3" / "tokenizer.json").exists()


# ------------------------------------------------------------------------------ shared encoder


def test_encoder_parameters_registered_once():
    model = make_model("bert")
    enc = {id(p) for p in model.encoder.parameters()}
    head_only = [p for h in model.heads.values() for p in h.task.parameters()]
    assert head_only and not any(id(p) in enc for p in head_only)
    params = list(model.parameters())
    assert len({id(p) for p in params}) == len(params)
    assert len(params) == len(enc) + len(head_only)
    assert sum(p.numel() for p in params) == sum(p.numel() for p in model.encoder.parameters()) + sum(p.numel() for p in head_only)
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert sum(n.startswith("encoder.") for n in names) == len(enc)
    assert all(n.startswith("encoder.") or n.startswith("heads.") for n in names)
    # no head holds the encoder in its state_dict either (a checkpoint stores it once)
    sd = model.state_dict()
    assert not any(".bert." in k or k.startswith("heads.") and "embeddings" in k for k in sd)
    for h in model.heads.values():
        assert getattr(h.task, h.task.base_model_prefix) is model.encoder


def test_gradient_step_through_qa_moves_the_encoder_seen_by_classification():
    model = make_model("bert")
    b = batch()
    before_cls = road_logits(model, "nli2", b)[0]
    word_emb = model.encoder.embeddings.word_embeddings.weight
    before_w = word_emb.detach().clone()
    cls_head = model.heads["nli2"].task
    before_cls_head = {k: v.clone() for k, v in cls_head.state_dict().items()}

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model("qa", *b)
    (out["start"].logsumexp(-1).sum() + out["end"].logsumexp(-1).sum()).backward()
    assert word_emb.grad is not None and word_emb.grad.abs().sum() > 0
    assert all(p.grad is None for p in cls_head.parameters())  # only the encoder and the QA head learn
    opt.step()
    model.eval()

    assert not torch.equal(word_emb, before_w)
    seen = model.heads["nli2"].task.bert.embeddings.word_embeddings.weight
    assert seen is word_emb
    assert all(torch.equal(v, before_cls_head[k]) for k, v in cls_head.state_dict().items())
    assert not torch.allclose(road_logits(model, "nli2", b)[0], before_cls)


# ------------------------------------------------------------------------------ load_export_weights


@pytest.mark.parametrize("model_type", ["bert", "electra"])
@pytest.mark.parametrize("order", [HEADS, [CLS2, CLS3, SPAN]], ids=["span_first", "cls_first"])
def test_load_export_all_heads_reproduces_logits(model_type, order, tmp_path):
    src = make_model(model_type, seed=0, heads=order)
    out = src.export(tmp_path / "export")
    fresh = make_model(model_type, seed=7, heads=order)
    b = batch(1)
    assert not torch.allclose(road_logits(fresh, "qa", b)[0], road_logits(src, "qa", b)[0])
    taken = load_export_weights(fresh, out, None)
    assert sorted(taken) == ["nli2", "nli3", "qa"]
    fresh.eval()
    for h in order:
        assert_same(road_logits(fresh, h.name, b), road_logits(src, h.name, b))


def test_load_export_named_heads_keeps_own_init_for_the_others(tmp_path):
    src = make_model("bert", seed=0)
    out = src.export(tmp_path / "export")
    fresh = make_model("bert", seed=7)
    own_nli3 = {k: v.clone() for k, v in fresh.heads["nli3"].task.state_dict().items()}
    own_qa = {k: v.clone() for k, v in fresh.heads["qa"].task.state_dict().items()}

    assert load_export_weights(fresh, out, ["nli2"]) == ["nli2"]
    b = batch(2)
    assert_same(road_logits(fresh, "nli2", b), road_logits(src, "nli2", b))
    # the encoder came from the export, the other heads kept their own weights
    for k, v in fresh.encoder.state_dict().items():
        assert torch.equal(v, src.encoder.state_dict()[k]), k
    for k, v in fresh.heads["nli3"].task.state_dict().items():
        assert torch.equal(v, own_nli3[k])
        assert not torch.equal(v, src.heads["nli3"].task.state_dict()[k])
    for k, v in fresh.heads["qa"].task.state_dict().items():
        assert torch.equal(v, own_qa[k])
    assert not torch.allclose(road_logits(fresh, "nli3", b)[0], road_logits(src, "nli3", b)[0])


def test_load_export_only_span_head(tmp_path):
    src = make_model("bert", seed=0)
    out = src.export(tmp_path / "export")
    fresh = make_model("bert", seed=7)
    assert load_export_weights(fresh, out, ["qa"]) == ["qa"]
    b = batch(3)
    assert_same(road_logits(fresh, "qa", b), road_logits(src, "qa", b))
    # the whole encoder comes from the export, BERT's pooler too (a QA dir has none)
    for k, v in fresh.encoder.state_dict().items():
        assert torch.equal(v, src.encoder.state_dict()[k]), k


def test_load_export_missing_head_raises(tmp_path):
    src = make_model("bert", seed=0, heads=[SPAN, CLS2])
    out = src.export(tmp_path / "export")
    fresh = make_model("bert", seed=7)
    with pytest.raises(DataError, match="nli3") as e:
        load_export_weights(fresh, out, ["qa", "nli3"])
    assert e.value.field == "model.init_heads"
    # a head in the export with another kind in this model is refused too
    other = make_model("bert", seed=7, heads=[HeadSpec("nli2", "span")])
    with pytest.raises(DataError, match="nli2"):
        load_export_weights(other, out, ["nli2"])
    with pytest.raises(DataError, match=EXPORT_INDEX):
        load_export_weights(fresh, tmp_path, None)


# ------------------------------------------------------------------------------ build_encoder


def test_build_encoder_from_config_is_seeded():
    a = build_encoder(spec(tiny_config("bert")), seed=3)
    b = build_encoder(spec(tiny_config("bert")), seed=3)
    c = build_encoder(spec(tiny_config("bert")), seed=4)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 32
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_build_encoder_init_layers_takes_the_first_layers(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = tiny_config("bert", layers=4)
    cfg.pop("model_type")
    big = BertModel(BertConfig(**cfg))
    big.save_pretrained(str(tmp_path / "big"))

    student = build_encoder(spec(name_or_path=str(tmp_path / "big"), init_layers=2))
    assert len(student.encoder.layer) == 2
    assert student.config.num_hidden_layers == 2
    src = big.state_dict()
    got = student.state_dict()
    for k, v in got.items():
        assert torch.equal(v, src[k]), k
    assert not any(k.startswith("encoder.layer.2.") or k.startswith("encoder.layer.3.") for k in got)
    assert any(k.startswith("encoder.layer.1.") for k in got)
    # and it runs, and builds a model whose export keeps 2 layers
    model = RoadModel(student, [SPAN]).eval()
    out = model.export(tmp_path / "export")
    assert json.loads((out / "qa" / "config.json").read_text())["num_hidden_layers"] == 2

    with pytest.raises(DataError, match="init_layers 5") as e:
        build_encoder(spec(name_or_path=str(tmp_path / "big"), init_layers=5))
    assert e.value.field == "model.init_layers"
    with pytest.raises(DataError, match="cannot load the encoder"):
        build_encoder(spec(name_or_path=str(tmp_path / "nowhere"), init_layers=2))


# ------------------------------------------------------------------------------ param_groups


@pytest.mark.parametrize("model_type", ["bert", "electra"])
def test_param_groups_decay_and_layer_lr(model_type):
    model = make_model(model_type)
    model.encoder.embeddings.position_embeddings.weight.requires_grad_(False)
    lr, wd, L = 1e-3, 0.01, 2
    groups = param_groups(model, lr, wd, 0.5)

    owner = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in owner, "a parameter in two groups"
            owner[id(p)] = g
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(owner) == len(trainable)
    assert id(model.encoder.embeddings.position_embeddings.weight) not in owner

    for name, p in trainable:
        g = owner[id(p)]
        no_decay = name.endswith(".bias") or "LayerNorm" in name
        assert g["weight_decay"] == (0.0 if no_decay else wd), name
        if name.startswith("encoder.embeddings"):
            want = lr * 0.5 ** (L + 1)
        elif name.startswith("encoder.encoder.layer."):
            i = int(name.split(".")[3])
            want = lr * 0.5 ** (L - i)
        else:
            assert name.startswith("encoder.pooler.") or name.startswith("heads."), name
            want = lr
        assert g["lr"] == pytest.approx(want), name

    names = dict(trainable)
    assert "encoder.encoder.layer.0.attention.self.query.weight" in names
    if model_type == "bert":
        assert owner[id(names["encoder.pooler.dense.weight"])]["lr"] == lr
    # groups are uniform: one lr and one weight decay each
    assert len({(g["lr"], g["weight_decay"]) for g in groups}) == len(groups)


def test_param_groups_no_layer_decay():
    model = make_model("bert")
    groups = param_groups(model, 2e-5, 0.1, 1.0)
    assert {g["lr"] for g in groups} == {2e-5}
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]


def test_reinit_pooler_draws_only_the_pooler_afresh():
    from transformers import BertConfig, BertModel

    from road_ds.model import reinit_pooler

    cfg = tiny_config("bert")
    cfg.pop("model_type")
    enc = build_encoder(spec(tiny_config("bert")), seed=0)
    with torch.no_grad():
        enc.pooler.dense.weight.mul_(0.01)  # a near-zero pooler, as in a mean-pooling sentence encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    torch.manual_seed(1)
    reinit_pooler(enc)
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("pooler."))
    assert abs(after["pooler.dense.weight"].std().item() - enc.config.initializer_range) < 0.005
    assert torch.count_nonzero(after["pooler.dense.bias"]) == 0
    with pytest.raises(DataError, match="no pooler"):
        reinit_pooler(BertModel(BertConfig(**cfg), add_pooling_layer=False))
