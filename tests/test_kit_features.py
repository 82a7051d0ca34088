"""Features and metrics on the real data kit, with the real MiniLM tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from road_ds.features import build_features, load_tokenizer
from road_ds.recipe import load_recipe

pytestmark = pytest.mark.kit
RECIPE = "recipes/kit.yaml"


@pytest.fixture(scope="module")
def recipe(kit_dir, tmp_path_factory):
    r = load_recipe(RECIPE)
    # a private feature cache: this test builds from scratch and never touches the user's cache
    return r.model_copy(update={"features": r.features.model_copy(update={"cache_dir": str(tmp_path_factory.mktemp("features"))})})


@pytest.fixture(scope="module")
def tokenizer(recipe):
    return load_tokenizer(recipe.model.tokenizer_path)


@pytest.mark.parametrize("name", ["squad", "squad2"])
def test_real_squad_span_labels_round_trip(recipe, tokenizer, name):
    total_ok = total = 0
    for split in ("train", "dev"):
        ft = build_features(recipe, name, split, tokenizer=tokenizer)
        rt = ft.meta["span_roundtrip"]
        total_ok += rt["roundtrip_ok"]
        total += rt["answerable"]
        assert len(ft.meta["span_misses"]) == rt["answerable"] - rt["roundtrip_ok"]  # every miss is listed
        ids = ft.table["feature_id"]
        assert len(set(ids)) == len(ids)
        if name == "squad2":
            assert rt["examples"] > rt["answerable"]  # unanswerable questions are there, pointing at [CLS]
    assert total > 5000 and total_ok / total >= 0.99, f"{total_ok}/{total}"


@pytest.mark.parametrize("name,labels", [("qnli", 2), ("sentiment", 2)])
def test_real_classification_features_build(recipe, tokenizer, name, labels):
    ft = build_features(recipe, name, "dev", tokenizer=tokenizer)
    assert len(ft) == ft.meta["examples"] > 100
    assert set(ft.table["label"]) == set(range(labels))
    assert max(len(x) for x in ft.table["input_ids"]) <= ft.spec.feature_params(recipe.features).max_seq_length
    row = ft.table[0]
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    ex = ft.examples[0]
    assert text.split()[0] == tokenizer.decode(tokenizer(ex["text_a"])["input_ids"], skip_special_tokens=True).split()[0]


def test_oracle_predictions_score_near_100_with_the_official_semantics(recipe, kit_dir, tmp_path):
    """features -> gold logits -> n-best decoding -> squad-eval, on real SQuAD 2.0-style dev data."""
    cfg = tmp_path / "kit.yaml"
    cfg.write_text(open(RECIPE).read().replace("num_proc: 2", f"num_proc: 2\n  cache_dir: {recipe.features.cache_dir}"))
    subprocess.run([sys.executable, "-m", "road_ds.cli", "features", str(cfg), "--dataset", "squad2", "--split", "dev",
                    "--oracle-predictions", str(tmp_path)], check=True)
    out = subprocess.run([sys.executable, "-m", "road_ds.cli", "squad-eval", str(kit_dir / "squad2" / "dev.json"),
                          str(tmp_path / "squad2-dev-predictions.json"), "--na-prob-file", str(tmp_path / "squad2-dev-na_probs.json")],
                         check=True, capture_output=True, text=True)
    res = json.loads(out.stdout)
    assert res["NoAns_exact"] == 100.0 and res["HasAns_exact"] > 97.0 and res["f1"] > 98.5
    assert res["total"] == res["HasAns_total"] + res["NoAns_total"]


@pytest.mark.parametrize("name", ["squad", "squad2"])
def test_squad_eval_equals_the_official_logic_on_real_dev(kit_dir, name):
    import importlib.util
    import random
    from pathlib import Path

    from road_ds.squad_eval import evaluate

    spec = importlib.util.spec_from_file_location("official", Path(__file__).parent / "reference" / "squad_v2_official.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    data = json.loads((kit_dir / name / "dev.json").read_text())["data"]
    rng = random.Random(7)
    preds, na = {}, {}
    for article in data:
        for p in article["paragraphs"]:
            words = p["context"].split()
            for qa in p["qas"]:
                pick = rng.random()
                if pick < 0.4 and qa["answers"]:
                    preds[qa["id"]] = rng.choice(qa["answers"])["text"]  # right
                elif pick < 0.6:
                    preds[qa["id"]] = ""  # abstain
                else:
                    i = rng.randrange(len(words))
                    preds[qa["id"]] = " ".join(words[i : i + rng.randint(1, 6)])  # some overlap, often wrong
                na[qa["id"]] = rng.random()
    for na_probs in (None, na):
        ours, ref = evaluate(data, preds, na_probs), official.official_eval(data, preds, na_probs)
        assert list(ours) == list(ref)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-9), k
