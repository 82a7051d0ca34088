"""The teacher store: precompute, gather by feature id, reconstruct, resume, damage, refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import deepspeed_launcher, squad_doc, write_jsonl, write_recipe, write_tiny_teacher, write_tiny_tokenizer

from road_ds.errors import DataError
from road_ds.features import build_features
from road_ds.precompute import main as precompute
from road_ds.recipe import load_recipe
from road_ds.store import TeacherSet, TeacherStore, inspect, reconstruct

REPO = Path(__file__).resolve().parent.parent
CTX = "Paris is the capital of France. The city has a population of two million people. It was founded by the Parisii. "


def make_data(tmp_path: Path, n_questions: int = 40, n_reviews: int = 60):
    qas = [{"id": f"q{i}", "question": f"what is the capital {i}?", "answers": [{"text": "Paris", "answer_start": 0}]} for i in range(n_questions)]
    qas += [{"id": f"n{i}", "question": f"who is the king {i}?", "answers": [], "is_impossible": True} for i in range(n_questions // 4)]
    (tmp_path / "squad.json").write_text(json.dumps(squad_doc([{"title": "Paris", "paragraphs": [{"context": CTX * (1 + 0), "qas": qas}]}], "v2.0")))
    write_jsonl(tmp_path / "rt.jsonl", [{"text": f"the film {i} was " + ("great" if i % 2 else "dull") * (1 + i % 5), "label": "positive" if i % 2 else "negative"} for i in range(n_reviews)])


def make_recipe(tmp_path: Path, tok: Path, name: str = "r.yaml", **features) -> Path:
    features = {"max_seq_length": 40, "doc_stride": 12, "max_query_length": 12, **features}
    return write_recipe(tmp_path / name, tok, [
        {"name": "sq", "task": "extractive_qa", "format": "squad_json", "files": {"train": "squad.json"}},
        {"name": "rt", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"}, "files": {"train": "rt.jsonl"}},
    ], **features)


def make_export(path: Path, tok: Path, seed: int = 0, arch: str = "electra") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_tiny_teacher(path / "span", tok, "span", arch=arch, seed=seed)
    write_tiny_teacher(path / "sentiment", tok, "classification", ["negative", "positive"], arch=arch, seed=seed + 1)
    (path / "road_ds_export.json").write_text(json.dumps({"heads": {"span": {"kind": "span", "dir": "span"}, "sentiment": {"kind": "classification", "dir": "sentiment"}}}))
    return path


@pytest.fixture
def setup(tmp_path, tiny_tokenizer_dir, cache_dir):
    make_data(tmp_path)
    return tmp_path, make_recipe(tmp_path, tiny_tokenizer_dir), make_export(tmp_path / "teacher", tiny_tokenizer_dir)


def tables(recipe_path):
    r = load_recipe(recipe_path)
    return [build_features(r, "sq", "train"), build_features(r, "rt", "train")]


def teacher_log_softmax(model_dir: Path, ft, rows, kind):
    """The teacher's own log-softmax over each feature's support, one unpadded feature at a time."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    cls = AutoModelForQuestionAnswering if kind == "span" else AutoModelForSequenceClassification
    model = cls.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            row = ft.table[int(r)]
            res = model(input_ids=torch.tensor([row["input_ids"]]), token_type_ids=torch.tensor([row["token_type_ids"]]))
            if kind == "span":
                support = torch.tensor([o != [-1, -1] for o in row["offset_mapping"]])
                support[0] = True
                out.append({o: torch.log_softmax(z[0].masked_fill(~support, -torch.inf), -1) for o, z in (("start", res.start_logits), ("end", res.end_logits))} | {"support": support})
            else:
                out.append({"cls": torch.log_softmax(res.logits[0], -1)})
    return out


# ---------------------------------------------------------------------------- reconstruction math


def test_reconstruct_exact_with_full_k_and_mass_preserving_with_small_k():
    torch.manual_seed(0)
    z = torch.randn(6, 20) * 3
    support = torch.rand(6, 20) > 0.3
    support[:, 0] = True
    zm = z.masked_fill(~support, -torch.inf)
    lse = torch.logsumexp(zm, -1)
    want = torch.log_softmax(zm, -1)
    for k in (20, 5, 1):
        top, idx = zm.topk(k, -1)
        idx = idx.masked_fill(~torch.isfinite(top), -1)
        got = reconstruct(top.masked_fill(idx < 0, 0.0), lse, idx, support)
        assert torch.equal(torch.isinf(got), ~support)  # -inf exactly outside the support
        assert torch.allclose(got.exp().sum(-1), torch.ones(6), atol=1e-5)  # a distribution
        kept = torch.zeros_like(support).scatter(-1, idx.clamp(min=0), idx >= 0)
        assert torch.allclose(got[kept], want[kept], atol=1e-6)  # kept entries exact
        if k == 20:
            assert torch.allclose(got[support], want[support], atol=1e-6)
        else:  # the rest is spread evenly over the valid entries not kept
            rest = support & ~kept
            for i in range(6):
                vals = got[i][rest[i]]
                assert torch.allclose(vals, vals[0].expand_as(vals))
                assert torch.allclose(torch.logsumexp(vals, 0), torch.log1p(-want[i][kept[i]].exp().sum()), atol=1e-5)
    c = torch.randn(4, 3)
    assert torch.allclose(reconstruct(c, torch.logsumexp(c, -1)), torch.log_softmax(c, -1), atol=1e-6)


# ---------------------------------------------------------------------------- precompute + gather


def test_full_k_reconstruct_equals_teacher_log_softmax(setup):
    tmp, recipe, teacher = setup
    assert precompute([str(recipe), "--teacher", str(teacher), "--out", str(tmp / "store"), "--top-k", "0", "--rows-per-shard", "16"]) == 0
    sq, rt = tables(recipe)
    store = TeacherStore.open(tmp / "store", [sq, rt])
    rows = np.array([0, 5, 17, len(sq) - 1])
    ids = np.asarray(sq.table["feature_id"])[rows]
    g = store.gather("sq", "train", ids[::-1].copy())  # any order: rows come back in the asked order
    ref = teacher_log_softmax(teacher / "span", sq, rows[::-1], "span")
    for i, r in enumerate(ref):
        support = torch.zeros(40, dtype=torch.bool)
        support[: len(r["support"])] = r["support"]
        assert int(g["support"][i]) == int(r["support"].sum())
        for o in ("start", "end"):
            got = reconstruct(g[f"{o}_logit"][i : i + 1], g[f"{o}_lse"][i : i + 1], g[f"{o}_idx"][i : i + 1], support[None])[0]
            want = torch.full((40,), -torch.inf)
            want[: len(r[o])] = r[o]
            assert torch.equal(torch.isinf(got), torch.isinf(want))
            assert torch.allclose(got[support], want[support], atol=4e-3)  # float16 storage
    rows = np.array([0, 3, len(rt) - 1])
    g = store.gather("rt", "train", np.asarray(rt.table["feature_id"])[rows])
    for i, r in enumerate(teacher_log_softmax(teacher / "sentiment", rt, rows, "classification")):
        assert torch.allclose(reconstruct(g["cls_logit"][i], g["cls_lse"][i]), r["cls"], atol=4e-3)
    assert g["cls_gold"].tolist() == [rt.table[int(r)]["label"] for r in rows]


def test_several_teachers_stack_and_missing_rows_are_named(setup, tiny_tokenizer_dir):
    tmp, recipe, teacher = setup
    other = make_export(tmp / "teacher2", tiny_tokenizer_dir, seed=5)
    for t, out in ((teacher, "s1"), (other, "s2")):
        assert precompute([str(recipe), "--teacher", str(t), "--out", str(tmp / out), "--top-k", "4"]) == 0
    sq, rt = tables(recipe)
    teachers = TeacherSet.open([tmp / "s1", tmp / "s2"], [sq, rt])
    ids = np.asarray(sq.table["feature_id"])[:3]
    g = teachers.gather("sq", "train", ids)
    assert g["start_logit"].shape == (2, 3, 4) and g["start_lse"].shape == (2, 3)
    assert not torch.equal(g["start_logit"][0], g["start_logit"][1])
    with pytest.raises(DataError, match="no teacher row for feature_id 12345"):
        teachers.gather("sq", "train", np.array([12345]))


def test_store_for_other_features_is_refused(setup, tmp_path, tiny_tokenizer_dir):
    tmp, recipe, teacher = setup
    assert precompute([str(recipe), "--teacher", str(teacher), "--out", str(tmp / "store"), "--dataset", "sq"]) == 0
    # another max length
    other = make_recipe(tmp, tiny_tokenizer_dir, "r2.yaml", max_seq_length=48)
    ft = build_features(load_recipe(other), "sq", "train")
    with pytest.raises(DataError) as e:
        TeacherStore.open(tmp / "store", [ft])
    assert "computed on features" in str(e.value) and ft.fingerprint in str(e.value) and "max_seq_length" in str(e.value)
    # another tokenizer
    tok2 = write_tiny_tokenizer(tmp / "tok2", extra=("seine",))
    ft = build_features(load_recipe(make_recipe(tmp, tok2, "r3.yaml")), "sq", "train")
    with pytest.raises(DataError, match="computed on features"):
        TeacherStore.open(tmp / "store", [ft])
    # another source file
    src = tmp / "squad.json"
    src.write_text(src.read_text().replace("two million", "six million"))
    ft = build_features(load_recipe(recipe), "sq", "train")
    with pytest.raises(DataError, match="computed on features"):
        TeacherStore.open(tmp / "store", [ft])
    # a dataset the store does not have
    rt = build_features(load_recipe(recipe), "rt", "train")
    with pytest.raises(DataError, match="has no teacher targets for rt/train"):
        TeacherStore.open(tmp / "store", [rt])


def test_nan_teacher_stops_with_the_offending_row(setup, tiny_tokenizer_dir, capsys):
    tmp, recipe, teacher = setup
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(str(teacher / "sentiment"))
    with torch.no_grad():
        m.classifier.out_proj.bias[1] = float("nan")
    m.save_pretrained(str(teacher / "sentiment"))
    assert precompute([str(recipe), "--teacher", str(teacher), "--out", str(tmp / "store"), "--dataset", "rt"]) == 2
    err = capsys.readouterr().err
    assert "rt/train" in err and "row " in err and "cls_logit" in err and "nan" in err and "feature_id" in err
    assert not (tmp / "store" / "manifest.json").exists()


def test_wrong_teacher_head_or_labels_is_an_error(setup, tiny_tokenizer_dir, capsys):
    tmp, recipe, teacher = setup
    assert precompute([str(recipe), "--teacher", str(teacher / "span"), "--out", str(tmp / "s"), "--dataset", "rt"]) == 2
    assert "ForSequenceClassification" in capsys.readouterr().err
    write_tiny_teacher(tmp / "three", tiny_tokenizer_dir, "classification", ["a", "b", "c"])
    assert precompute([str(recipe), "--teacher", str(tmp / "three"), "--out", str(tmp / "s"), "--dataset", "rt"]) == 2
    assert "not the dataset's ['negative', 'positive']" in capsys.readouterr().err


# ---------------------------------------------------------------------------- resume, damage, ranks


def store_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("shard-*.arrow"))}


def manifest_entries(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())["entries"]


def cli(*args, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "road_ds.precompute", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def big_setup(tmp_path, tiny_tokenizer_dir, cache_dir):
    """Enough rows and a wide enough teacher that a run takes seconds: room to kill it mid-way."""
    make_data(tmp_path, n_questions=400, n_reviews=10)
    recipe = make_recipe(tmp_path, tiny_tokenizer_dir)
    from transformers import AutoModelForQuestionAnswering, BertConfig

    vocab = len((tiny_tokenizer_dir / "vocab.txt").read_text().split())
    torch.manual_seed(0)
    teacher = tmp_path / "wide"
    AutoModelForQuestionAnswering.from_config(BertConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                                                         intermediate_size=1024, max_position_embeddings=64)).save_pretrained(str(teacher))
    return tmp_path, recipe, teacher


def test_sigkill_resume_damage_and_recompute(big_setup):
    tmp, recipe, teacher = big_setup
    args = [recipe, "--teacher", teacher, "--out", None, "--dataset", "sq", "--top-k", "8", "--rows-per-shard", "16", "--batch-size", "8"]
    ref = tmp / "ref"
    p = cli(*[a if a is not None else ref for a in args])
    assert p.wait(300) == 0, p.stderr.read()
    n_shards = len(store_files(ref))
    assert n_shards >= 20

    killed = tmp / "killed"
    p = cli(*[a if a is not None else killed for a in args])
    deadline = time.time() + 120
    while len(list(killed.rglob("shard-*.json"))) < 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(list(killed.rglob("shard-*.json")))
    assert 3 <= done < n_shards and not (killed / "manifest.json").exists(), f"killed after {done}/{n_shards} shards"

    p = cli(*[a if a is not None else killed for a in args])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert f"kept {done} verified shards" in err or f"kept {done - 1} verified shards" in err
    assert store_files(killed) == store_files(ref)
    assert manifest_entries(killed) == manifest_entries(ref)

    # damage: truncate one shard, flip one bit in another
    shards = sorted(killed.rglob("shard-*.arrow"))
    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])
    data = bytearray(shards[5].read_bytes())
    data[len(data) // 2] ^= 0x01
    shards[5].write_bytes(bytes(data))
    report = inspect(killed)
    assert len(report["problems"]) == 2
    assert shards[2].name in report["problems"][0] + report["problems"][1] and shards[5].name in " ".join(report["problems"])
    r = subprocess.run([sys.executable, "-m", "road_ds.cli", "store", "inspect", str(killed)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and shards[5].name in r.stderr and "2 damaged" in r.stderr
    ft = build_features(load_recipe(recipe), "sq", "train")
    store = TeacherStore.open(killed, [ft])
    ids = np.asarray(ft.table["feature_id"])
    with pytest.raises(DataError, match=f"{shards[2].name}: damaged teacher shard: size"):
        store.gather("sq", "train", ids[32:33])  # a row of the truncated shard
    with pytest.raises(DataError, match=f"{shards[5].name}: damaged teacher shard: sha256"):
        store.gather("sq", "train", ids[80:81])  # a row of the bit-flipped shard
    p = cli(*[a if a is not None else killed for a in args])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and f"computed 2 shards, kept {n_shards - 2}" in err, err
    assert store_files(killed) == store_files(ref)
    assert inspect(killed)["problems"] == []


@pytest.mark.slow
def test_two_deepspeed_ranks_equal_one_rank(setup):
    tmp, recipe, teacher = setup
    one = tmp / "one"
    assert precompute([str(recipe), "--teacher", str(teacher), "--out", str(one), "--top-k", "4", "--rows-per-shard", "8"]) == 0
    two = tmp / "two"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([*deepspeed_launcher(), "--num_gpus", "2", "--master_port", "29517", "road_ds/precompute.py", str(recipe), "--teacher", str(teacher),
                        "--out", str(two), "--top-k", "4", "--rows-per-shard", "8"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rank 1: computed" in r.stdout + r.stderr
    assert store_files(two) == store_files(one)
    assert manifest_entries(two) == manifest_entries(one)
    sq, rt = tables(recipe)
    for ft in (sq, rt):
        ids = np.asarray(ft.table["feature_id"])
        a = TeacherStore.open(one, [ft]).gather(ft.spec.name, "train", ids)
        b = TeacherStore.open(two, [ft]).gather(ft.spec.name, "train", ids)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_precompute_set_makes_the_store_on_the_overridden_features(setup):
    """`--set` as in training: a student that trains on a slice gets a store made on that slice."""
    tmp, recipe, teacher = setup
    assert precompute([str(recipe), "--set", "datasets.rt.limit={train: 5}", "--dataset", "rt", "--teacher", str(teacher), "--out", str(tmp / "s5")]) == 0
    sliced = build_features(load_recipe(recipe, ["datasets.rt.limit={train: 5}"]), "rt", "train")
    assert len(sliced) == 5
    TeacherStore.open(tmp / "s5", [sliced])  # made on the sliced features ...
    with pytest.raises(DataError, match="computed on features .* but training uses features"):
        TeacherStore.open(tmp / "s5", [tables(recipe)[1]])  # ... and refused for the whole set
