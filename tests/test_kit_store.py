"""The teacher store on real features: a MiniLM-L6 teacher, real SQuAD 2.0-style and sentiment text."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_recipe
from test_store import teacher_log_softmax

from road_ds.features import build_features
from road_ds.precompute import main as precompute
from road_ds.recipe import load_recipe
from road_ds.store import TeacherStore, inspect, reconstruct

pytestmark = pytest.mark.kit


@pytest.fixture(scope="module")
def real(kit_dir, tmp_path_factory):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    tmp = tmp_path_factory.mktemp("kitstore")
    l6 = kit_dir / "models" / "minilm-l6"
    doc = json.loads((kit_dir / "squad2" / "dev.json").read_text())
    doc["data"] = doc["data"][:2]
    (tmp / "squad2.json").write_text(json.dumps(doc))
    rows = (kit_dir / "sentiment" / "dev.jsonl").read_text().splitlines()[:200]
    (tmp / "sentiment.jsonl").write_text("\n".join(rows) + "\n")
    recipe = write_recipe(tmp / "r.yaml", l6, [
        {"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"dev": "squad2.json"}, "answer_start": "nearest"},
        {"name": "sentiment", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"}, "files": {"dev": "sentiment.jsonl"}, "max_seq_length": 64},
    ], max_seq_length=192, doc_stride=64, max_query_length=32, cache_dir=str(tmp / "features"))
    teacher = tmp / "teacher"
    torch.manual_seed(0)
    for head, cls, kw in (("span", AutoModelForQuestionAnswering, {}), ("sentiment", AutoModelForSequenceClassification,
                          {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}})):
        cls.from_pretrained(str(l6), **kw).save_pretrained(str(teacher / head))
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (l6 / f).exists():
                shutil.copy(l6 / f, teacher / head / f)
    (teacher / "road_ds_export.json").write_text(json.dumps({"heads": {"span": {"kind": "span", "dir": "span"}, "sentiment": {"kind": "classification", "dir": "sentiment"}}}))
    assert precompute([str(recipe), "--teacher", str(teacher), "--out", str(tmp / "store"), "--split", "dev", "--top-k", "0", "--batch-size", "32"]) == 0
    return tmp, recipe, teacher


def test_full_k_reconstruct_equals_minilm_log_softmax_on_real_features(real):
    tmp, recipe, teacher = real
    r = load_recipe(recipe)
    sq, rt = build_features(r, "squad2", "dev"), build_features(r, "sentiment", "dev")
    store = TeacherStore.open(tmp / "store", [sq, rt])
    rows = np.linspace(0, len(sq) - 1, 8).astype(int)
    g = store.gather("squad2", "dev", np.asarray(sq.table["feature_id"])[rows])
    for i, ref in enumerate(teacher_log_softmax(teacher / "span", sq, rows, "span")):
        n = len(ref["support"])
        support = torch.zeros(192, dtype=torch.bool)
        support[:n] = ref["support"]
        for o in ("start", "end"):
            got = reconstruct(g[f"{o}_logit"][i : i + 1], g[f"{o}_lse"][i : i + 1], g[f"{o}_idx"][i : i + 1], support[None])[0]
            assert torch.allclose(got[support], ref[o][ref["support"]], atol=4e-3)
            assert torch.isinf(got[~support]).all()
    rows = np.arange(0, len(rt), 25)
    g = store.gather("sentiment", "dev", np.asarray(rt.table["feature_id"])[rows])
    for i, ref in enumerate(teacher_log_softmax(teacher / "sentiment", rt, rows, "classification")):
        assert torch.allclose(reconstruct(g["cls_logit"][i], g["cls_lse"][i]), ref["cls"], atol=4e-3)


def test_inspect_reports_real_store(real):
    tmp, _, _ = real
    report = inspect(tmp / "store")
    assert report["problems"] == []
    e = report["entries"]["squad2/dev"]
    assert e["kept_mass"]["start"] == pytest.approx(1.0, abs=1e-3)  # full k keeps all the mass
    assert 0.0 <= e["top1_agreement"]["start"] <= 1.0 and e["rows"] > 100
