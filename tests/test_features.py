"""Features: span labels, windows, feature ids, fingerprints and the cache."""

from __future__ import annotations

import json

import pytest
from conftest import squad_doc, write_jsonl, write_recipe, write_tiny_tokenizer

from road_ds.features import build_features, feature_id, load_tokenizer
from road_ds.recipe import load_recipe

# Long enough for several windows at max_seq_length 40.
CTX = (
    "Paris is the capital of France. The city has a population of two million people. "
    "It was founded in the third century by a tribe called the Parisii. The river Seine runs through it. "
    "The university was founded in the year 1150 and is one of the first in the world."
)
QAS = [
    {"id": "capital", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]},
    {"id": "tribe", "question": "Who founded the city?", "answers": [{"text": "the Parisii", "answer_start": CTX.index("the Parisii")}]},
    {"id": "year", "question": "When was the university founded?", "answers": [{"text": "1150", "answer_start": CTX.index("1150")}]},
    {"id": "none", "question": "Who is the king of France?", "answers": [], "is_impossible": True},
]


@pytest.fixture
def qa_recipe(tmp_path, tiny_tokenizer_dir, cache_dir):
    (tmp_path / "squad.json").write_text(json.dumps(squad_doc([{"title": "Paris", "paragraphs": [{"context": CTX, "qas": QAS}]}], "v2.0")))
    return write_recipe(
        tmp_path / "qa.yaml",
        tiny_tokenizer_dir,
        [{"name": "sq", "task": "extractive_qa", "format": "squad_json", "files": {"train": "squad.json"}}],
        max_seq_length=40, doc_stride=12, max_query_length=8,
    )


def test_span_windows_and_labels(qa_recipe, tiny_tokenizer_dir):
    ft = build_features(load_recipe(qa_recipe), "sq", "train")
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    rows = ft.table.to_list()
    examples = {e["id"]: e for e in ft.examples.to_list()}
    by_ex = {}
    for r in rows:
        by_ex.setdefault(r["example_id"], []).append(r)
        assert len(r["input_ids"]) <= 40 and r["input_ids"][0] == tok.cls_token_id
        # offsets exist exactly for context tokens (token type 1 before the final [SEP])
        ctx_positions = [i for i, o in enumerate(r["offset_mapping"]) if o != [-1, -1]]
        assert ctx_positions and all(r["token_type_ids"][i] == 1 for i in ctx_positions)
        assert r["input_ids"][ctx_positions[-1] + 1] == tok.sep_token_id
    assert all(len(v) > 2 for v in by_ex.values())  # the context needs several windows
    assert [r["window"] for r in by_ex["year"]] == list(range(len(by_ex["year"])))
    for eid, feats in by_ex.items():
        ex = examples[eid]
        hits = [r for r in feats if (r["start_positions"], r["end_positions"]) != (0, 0)]
        if not ex["answers"]["text"]:
            assert not hits
            continue
        # the answer lies in some windows and points at [CLS] in the others
        assert hits and len(hits) < len(feats)
        for r in hits:
            s, e = r["start_positions"], r["end_positions"]
            assert CTX[r["offset_mapping"][s][0] : r["offset_mapping"][e][1]] == ex["answers"]["text"][0]
    assert ft.meta["span_roundtrip"] == {"examples": 4, "answerable": 3, "roundtrip_ok": 3, "roundtrip_rate": 1.0}


@pytest.mark.parametrize("words", [30, 80])  # 80: longer than the window itself, so it cannot be encoded uncut
def test_max_query_length_truncates_the_question(tmp_path, tiny_tokenizer_dir, cache_dir, words):
    long_q = "who " * words + "founded it?"
    rows = [{"id": "x", "question": long_q, "context": CTX, "answers": {"text": ["Paris"], "answer_start": [0]}},
            {"id": "y", "question": "who founded it?", "context": CTX, "answers": {"text": ["Paris"], "answer_start": [0]}}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = write_recipe(tmp_path / "r.yaml", tiny_tokenizer_dir, [{"name": "q", "task": "extractive_qa", "format": "qa_jsonl", "files": {"train": "q.jsonl"}}],
                     max_seq_length=64, doc_stride=16, max_query_length=10)
    ft = build_features(load_recipe(r), "q", "train")
    first = {row["example_id"]: row for row in reversed(ft.table.to_list())}
    assert first["x"]["token_type_ids"].index(1) == 1 + 10 + 1  # [CLS] + 10 question tokens + [SEP]
    assert first["y"]["token_type_ids"].index(1) < 1 + 10 + 1  # a short question is not cut
    assert ft.meta["span_roundtrip"]["roundtrip_ok"] == 2


def test_feature_ids_are_stable_and_distinct():
    a = feature_id("squad", "train", "q1", 0)
    assert a == feature_id("squad", "train", "q1", 0)
    others = {feature_id("squad", "train", "q1", 1), feature_id("squad", "dev", "q1", 0), feature_id("other", "train", "q1", 0), feature_id("squad", "train", "q2", 0)}
    assert a not in others and len(others) == 4 and all(0 <= x < 2**63 for x in others | {a})


def test_tokenizer_hash_ignores_what_the_last_call_left_behind(tiny_tokenizer_dir):
    from road_ds.features import tokenizer_hash

    tok = load_tokenizer(str(tiny_tokenizer_dir))
    before = tokenizer_hash(tok)
    tok(["who is the king"], ["the king of france"], truncation="only_second", max_length=12, stride=2, return_overflowing_tokens=True)
    assert tokenizer_hash(tok) == before == tokenizer_hash(load_tokenizer(str(tiny_tokenizer_dir)))


def test_cache_hit_and_every_kind_of_miss(qa_recipe, tmp_path, tiny_tokenizer_dir):
    recipe = load_recipe(qa_recipe)
    first = build_features(recipe, "sq", "train")
    again = build_features(recipe, "sq", "train")
    assert not first.cache_hit and again.cache_hit and again.fingerprint == first.fingerprint
    assert again.table["feature_id"] == first.table["feature_id"]

    text = qa_recipe.read_text()
    qa_recipe.write_text(text.replace("doc_stride: 12", "doc_stride: 10"))
    params = build_features(load_recipe(qa_recipe), "sq", "train")
    assert not params.cache_hit and params.fingerprint != first.fingerprint

    qa_recipe.write_text(text)
    src = tmp_path / "squad.json"
    src.write_text(src.read_text().replace("two million", "six million"))
    source = build_features(load_recipe(qa_recipe), "sq", "train")
    assert not source.cache_hit and source.fingerprint not in {first.fingerprint, params.fingerprint}

    other_tok = write_tiny_tokenizer(tmp_path / "tok2", extra=("seine",))
    qa_recipe.write_text(text.replace(str(tiny_tokenizer_dir), str(other_tok)))
    tokenizer = build_features(load_recipe(qa_recipe), "sq", "train")
    assert not tokenizer.cache_hit and tokenizer.fingerprint not in {first.fingerprint, params.fingerprint, source.fingerprint}


def test_half_written_cache_is_not_a_hit(qa_recipe):
    recipe = load_recipe(qa_recipe)
    ft = build_features(recipe, "sq", "train")
    (ft.path / "meta.json").unlink()  # as if killed before the folder was complete
    again = build_features(recipe, "sq", "train")
    assert not again.cache_hit and (again.path / "meta.json").exists()


def test_a_build_that_finishes_second_keeps_the_first_ones_folder(qa_recipe, monkeypatch):
    """Two processes building the same features (the tasks of a precompute array job): the one that
    finishes second must not delete the folder the first is already reading."""
    import road_ds.features as features

    recipe = load_recipe(qa_recipe)
    real_convert, first = features.convert, {}

    def convert_while_another_process_finishes(*args, **kwargs):
        if not first:  # the other process builds, publishes and starts reading while we convert
            monkeypatch.setattr(features, "convert", real_convert)
            first["ft"] = build_features(recipe, "sq", "train")
            first["inode"] = (first["ft"].path / "examples").stat().st_ino
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(features, "convert", convert_while_another_process_finishes)
    second = build_features(recipe, "sq", "train")
    assert second.path == first["ft"].path and (second.path / "examples").stat().st_ino == first["inode"]
    assert [p.name for p in second.path.parent.iterdir()] == [second.path.name]  # no temporary folder left behind
    assert first["ft"].examples[0]["id"] and second.table["feature_id"] == first["ft"].table["feature_id"]

    forced = build_features(recipe, "sq", "train", force=True)  # an explicit rebuild does replace it
    assert (forced.path / "examples").stat().st_ino != first["inode"]
    assert [p.name for p in forced.path.parent.iterdir()] == [forced.path.name]


def test_classification_pairs_and_multiprocess_equal(tmp_path, tiny_tokenizer_dir, cache_dir):
    rows = [{"id": f"r{i}", "q": f"who was king in year {i}?", "s": "the king of france " * (1 + i % 7), "y": "yes" if i % 3 else "no"} for i in range(2400)]
    rows[0]["s"] = "paris"
    write_jsonl(tmp_path / "p.jsonl", rows)
    ds = {"name": "p", "task": "classification", "head": "yn", "labels": ["no", "yes"], "format": "jsonl",
          "columns": {"text_a": "q", "text_b": "s", "label": "y"}, "files": {"train": "p.jsonl"}}
    one = build_features(load_recipe(write_recipe(tmp_path / "a.yaml", tiny_tokenizer_dir, [ds], max_seq_length=24, num_proc=1)), "p", "train")
    two = build_features(load_recipe(write_recipe(tmp_path / "b.yaml", tiny_tokenizer_dir, [ds], max_seq_length=24, num_proc=2)), "p", "train", force=True)
    assert one.fingerprint == two.fingerprint  # num_proc does not change the rows
    assert one.table.to_list() == two.table.to_list()
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    r0 = one.table[0]
    assert tok.decode(r0["input_ids"]) == "[CLS] who was king in year 0? [SEP] paris [SEP]"
    assert r0["token_type_ids"][-2:] == [1, 1] and r0["label"] == 0
    assert max(len(x) for x in one.table["input_ids"]) == 24
    assert one.table["label"][:3] == [0, 1, 1]


def test_a_full_disk_under_the_feature_cache_is_named_and_leaves_no_temporary(tmp_path, tiny_tokenizer_dir, cache_dir):
    """A features build on a 256 KiB file system: a DataError naming the feature folder, nothing half
    written left in the cache; with room again the same build completes."""
    import os
    import subprocess

    from road_ds.errors import DataError

    rows = [{"id": f"r{i}", "t": f"the king of france was here in year {i} " * 2, "y": "yes" if i % 3 else "no"} for i in range(4000)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    ds = {"name": "p", "task": "classification", "head": "yn", "labels": ["no", "yes"], "format": "jsonl",
          "columns": {"text_a": "t", "label": "y"}, "files": {"train": "p.jsonl"}}
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        recipe = load_recipe(write_recipe(tmp_path / "a.yaml", tiny_tokenizer_dir, [ds], max_seq_length=32, cache_dir=str(disk)))
        with pytest.raises(DataError) as e:
            build_features(recipe, "p", "train")
        assert "no space left" in str(e.value) and str(disk / "p") in str(e.value)
        assert [p for p in disk.rglob("*") if p.is_file()] == []  # no half folder, no temporary
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        ft = build_features(recipe, "p", "train")
        assert len(ft) == 4000 and not ft.cache_hit
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
