"""Recipes: every field is checked, with the recipe file and the field path in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from road_ds.errors import DataError
from road_ds.recipe import load_recipe

SENT = {"name": "rt", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"}, "files": {"train": "rt/train.jsonl"}}


def write(tmp_path, recipe):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe) if isinstance(recipe, dict) else recipe)
    return p


def load_err(tmp_path, recipe) -> DataError:
    p = write(tmp_path, recipe)
    with pytest.raises(DataError) as e:
        load_recipe(p)
    assert e.value.path == str(p)
    return e.value


def test_paths_resolve_from_recipe_folder_and_cache_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ROAD_DS_CACHE", "/data/cache")
    p = write(tmp_path, {"model": {"name_or_path": "$ROAD_DS_CACHE/kit/models/minilm-l6"}, "datasets": [SENT]})
    r = load_recipe(p)
    assert r.model.name_or_path == "/data/cache/kit/models/minilm-l6"
    assert r.datasets[0].files["train"] == str(tmp_path / "rt" / "train.jsonl")
    assert r.datasets[0].head_name == "sentiment" and r.datasets[0].label_names == ["negative", "positive"]
    assert r.features.max_seq_length == 384


def test_unknown_field_suggests(tmp_path):
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [{**SENT, "colums": {}}]})
    assert e.field == "datasets.0.colums" and "did you mean 'columns'" in str(e)
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "features": {"max_seq_len": 128}, "datasets": [SENT]})
    assert e.field == "features.max_seq_len" and "max_seq_length" in str(e)


def test_unknown_task_and_format(tmp_path):
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [{**SENT, "task": "ner"}]})
    assert e.field == "datasets.0.task" and "extractive_qa" in str(e)
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [{**SENT, "task": "extractive_qa", "format": "csv"}]})
    assert e.field == "datasets.0.format"


def test_shared_head_needs_the_same_labels(tmp_path):
    other = {**SENT, "name": "yelp", "labels": ["1", "2", "3", "4", "5"]}
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [SENT, other]})
    assert e.field == "datasets.1.head" and "rt" in str(e)
    ok = write(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [SENT, {**other, "head": "stars"}]})
    assert [d.head_name for d in load_recipe(ok).datasets] == ["sentiment", "stars"]


def test_duplicate_names_bad_yaml_and_window_room(tmp_path):
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "datasets": [SENT, SENT]})
    assert e.field == "datasets.1.name"
    e = load_err(tmp_path, "model:\n  name_or_path: m\ndatasets: [\n")
    assert "malformed YAML" in str(e)
    e = load_err(tmp_path, {"model": {"name_or_path": "m"}, "features": {"max_seq_length": 64, "doc_stride": 60},
                                   "datasets": [{**SENT, "task": "extractive_qa", "format": "qa_jsonl"}]})
    assert e.field == "features.doc_stride"


ROAD = Path(__file__).resolve().parents[1] / "recipes" / "road" / "stages"


@pytest.mark.parametrize("name, steps", [("mtl_large", 20000), ("mtl_base", 40000)])
def test_road_mtl_recipes_are_the_papers_stage_one(name, steps):
    r = load_recipe(ROAD / f"{name}.yaml")
    corpora = {d.name.split("-")[0] for d in r.datasets}
    assert corpora == {"triviaqa", "naturalquestions", "quac", "qasrl", "qazre", "mnli", "snli", "amazon", "qqp"}
    assert {d.head_name for d in r.datasets} == {"span", "nli", "sentiment", "rating", "paraphrase"}
    assert {d.name: d.format for d in r.datasets if d.task == "extractive_qa"} == {
        "triviaqa": "mrqa_jsonl", "naturalquestions": "mrqa_jsonl", "quac": "quac_json", "qasrl": "qasrl_jsonl", "qazre": "qazre_tsv"}
    t, m = r.train, r.mtl
    assert (m.passes, t.lr, t.layer_lr_decay, t.warmup_steps, t.max_steps) == (4, 3e-4, 0.75, 500, steps)
    assert t.micro_batch_size * m.passes * 16 == 512  # the paper's batch on 16 ranks (the recipe's comment)
    assert r.kd is None


def test_road_squad2_recipe():
    r = load_recipe(ROAD / "squad2.yaml")
    assert [d.name for d in r.datasets] == ["squad2"] and r.datasets[0].hub_path == "rajpurkar/squad_v2"
    assert (r.kd.combine, r.kd.W, r.kd.teachers) == ("wkd", 0.75, [])  # the plan gives the student its teachers' stores
    assert r.kd_for("squad2") is None  # as written: no KD (the teachers' fine-tuning)
