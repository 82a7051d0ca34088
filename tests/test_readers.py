"""Readers: every format gives the same canonical examples, and bad input names file, row and field."""

from __future__ import annotations

import json

import datasets
import pytest
from conftest import squad_doc, write_jsonl

from road_ds.errors import DataError
from road_ds.readers import read_split
from road_ds.recipe import parse_recipe

CTX = "Paris is the capital of France. It was founded by the Parisii."


def spec(tmp_path, **d):
    d.setdefault("name", "ds")
    return parse_recipe({"model": {"name_or_path": "m"}, "datasets": [d]}, tmp_path / "r.yaml").datasets[0]


def squad_file(tmp_path, qas, context=CTX, version="1.1"):
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(squad_doc([{"title": "Paris", "paragraphs": [{"context": context, "qas": qas}]}], version)))
    return p


def test_squad_v1_and_v2(tmp_path):
    p = squad_file(
        tmp_path,
        [
            {"id": "a", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris", "answer_start": 0}]},
            {"id": "b", "question": "Who?", "answers": [], "is_impossible": True, "plausible_answers": [{"text": "x", "answer_start": 99}]},
        ],
        version="v2.0",
    )
    ex = read_split(spec(tmp_path, task="extractive_qa", format="squad_json", files={"dev": str(p)}), "dev")
    rows = ex.table.to_list()
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["answers"] == {"text": ["Paris", "Paris"], "answer_start": [0, 0]}
    assert rows[1]["answers"] == {"text": [], "answer_start": []}
    assert rows[0]["title"] == "Paris" and rows[0]["context"] == CTX


def test_qa_jsonl_hf_style(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", [{"id": "x", "question": "Who?", "context": CTX, "answers": {"text": ["the Parisii"], "answer_start": [CTX.index("the Parisii")]}}])
    ex = read_split(spec(tmp_path, task="extractive_qa", format="qa_jsonl", files={"train": str(p)}), "train")
    assert ex.table[0]["answers"]["text"] == ["the Parisii"]


def test_glue_tsv_layouts(tmp_path):
    mnli = tmp_path / "mnli.tsv"
    mnli.write_text(
        "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
        '0\t1\t1e\tfiction\tA man "sleeps".\tSomeone rests.\tentailment\tentailment\n'
        "1\t2\t2n\tfiction\tA dog runs.\tA cat sleeps.\tcontradiction\tcontradiction\n"
    )
    ex = read_split(spec(tmp_path, task="nli", format="glue_mnli", files={"train": str(mnli)}), "train")
    assert ex.table["label"] == [0, 2] and ex.table["id"] == ["1e", "2n"]
    assert ex.table[0]["text_a"] == 'A man "sleeps".'  # GLUE TSVs are unquoted: quotes are text
    qqp = tmp_path / "qqp.tsv"
    qqp.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tHow old?\tWhat age?\t1\n8\t3\t4\tWhy?\tWhere?\t0\n")
    ex = read_split(spec(tmp_path, task="paraphrase", format="glue_qqp", files={"train": str(qqp)}), "train")
    assert ex.table["label"] == [1, 0]
    sst = tmp_path / "sst.tsv"
    sst.write_text("sentence\tlabel\ngreat film \t1\ndull \t0\n")
    ex = read_split(spec(tmp_path, task="sentiment", format="glue_sst2", files={"train": str(sst)}), "train")
    assert ex.table["label"] == [1, 0] and ex.table["text_b"] == [None, None] and ex.table["id"] == ["0", "1"]


def test_column_map_jsonl_csv_parquet_and_disk_agree(tmp_path):
    rows = [{"q": "Is it?", "s": "It is.", "y": "yes", "uid": "r1"}, {"q": "Is it not?", "s": "It is, too.", "y": "no", "uid": "r2"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    with open(tmp_path / "d.csv", "w") as fh:
        fh.write("uid,q,s,y\n" + "".join(f'{r["uid"]},"{r["q"]}","{r["s"]}",{r["y"]}\n' for r in rows))
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "disk"))
    common = dict(task="classification", head="yn", labels=["no", "yes"], columns={"id": "uid", "text_a": "q", "text_b": "s", "label": "y"})
    tables = [
        read_split(spec(tmp_path, format=fmt, files={"train": str(tmp_path / f)}, **common), "train").table.to_list()
        for fmt, f in [("jsonl", "d.jsonl"), ("csv", "d.csv"), ("parquet", "d.parquet"), ("hf_disk", "disk")]
    ]
    assert all(t == tables[0] for t in tables)
    assert tables[0][0] == {"id": "r1", "text_a": "Is it?", "text_b": "It is.", "label": 1}


def test_answer_start_nearest_moves_and_counts(tmp_path):
    p = squad_file(tmp_path, [{"id": "a", "question": "Who?", "answers": [{"text": " the Parisii", "answer_start": CTX.index(" the Parisii") - 1}]}])
    with pytest.raises(DataError, match="answer_start: nearest"):
        read_split(spec(tmp_path, task="extractive_qa", format="squad_json", files={"dev": str(p)}), "dev")
    ex = read_split(spec(tmp_path, task="extractive_qa", format="squad_json", files={"dev": str(p)}, answer_start="nearest"), "dev")
    assert ex.moved_answers == 1 and ex.table[0]["answers"]["answer_start"] == [CTX.index(" the Parisii")]


# ---------------------------------------------------------------------------- bad input


def err(tmp_path, file_spec, split="train") -> DataError:
    with pytest.raises(DataError) as e:
        read_split(spec(tmp_path, **file_spec), split)
    return e.value


def test_malformed_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"data": [\n {"title": "x",\n "paragraphs": [}\n]}')
    e = err(tmp_path, dict(task="extractive_qa", format="squad_json", files={"train": str(p)}))
    assert e.path == str(p) and e.row == 3 and "malformed JSON" in str(e)
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok", "label": "positive"}\n{"text": "broken", "label": \n')
    e = err(tmp_path, dict(task="sentiment", format="jsonl", columns={"text_a": "text"}, files={"train": str(p)}))
    assert e.path == str(p) and e.row == 2 and "malformed JSON" in str(e)


def test_missing_column(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"sentence": "fine", "label": "positive"}])
    e = err(tmp_path, dict(task="sentiment", format="jsonl", columns={"text_a": "text"}, files={"train": str(p)}))
    assert e.row == 1 and e.field == "text" and "missing column" in str(e) and "sentence" in str(e)
    p = tmp_path / "m.tsv"
    p.write_text("sentence1\tsentence2\tgold_label\na\tb\tneutral\n")
    e = err(tmp_path, dict(task="nli", format="glue_mnli", files={"train": str(p)}))
    assert e.field == "pairID" and e.row == 2


def test_label_outside_label_set(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "neutral"}])
    e = err(tmp_path, dict(task="sentiment", format="jsonl", columns={"text_a": "text"}, files={"train": str(p)}))
    assert (e.path, e.row, e.field) == (str(p), 2, "label") and "'neutral'" in str(e) and "positive" in str(e)


def test_answer_start_mismatch(tmp_path):
    p = squad_file(tmp_path, [{"id": "q7", "question": "Capital?", "answers": [{"text": "France", "answer_start": 3}]}])
    e = err(tmp_path, dict(task="extractive_qa", format="squad_json", files={"train": str(p)}))
    assert e.field == "answers[0].answer_start" and "q7" in str(e.row) and "data[0].paragraphs[0].qas[0]" in str(e.row)
    assert "'France'" in str(e)


def test_empty_context(tmp_path):
    p = squad_file(tmp_path, [{"id": "q1", "question": "Capital?", "answers": []}], context="   ")
    e = err(tmp_path, dict(task="extractive_qa", format="squad_json", files={"train": str(p)}))
    assert e.field == "context" and "non-empty" in str(e)


def test_duplicate_ids_and_wrong_field_counts(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "a", "label": "positive"}, {"id": 1, "text": "b", "label": "negative"}])
    e = err(tmp_path, dict(task="sentiment", format="jsonl", columns={"text_a": "text"}, files={"train": str(p)}))
    assert e.row == 2 and e.field == "id" and "duplicate" in str(e)
    p = tmp_path / "s.tsv"
    p.write_text("sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    e = err(tmp_path, dict(task="sentiment", format="glue_sst2", files={"train": str(p)}))
    assert e.row == 3 and "3 fields" in str(e)


def test_missing_file_and_split(tmp_path):
    e = err(tmp_path, dict(task="sentiment", format="jsonl", files={"train": str(tmp_path / "nope.jsonl")}))
    assert "file not found" in str(e) and "nope.jsonl" in str(e)
    e = err(tmp_path, dict(task="sentiment", format="jsonl", files={"train": str(tmp_path / "nope.jsonl")}), split="dev")
    assert "no split 'dev'" in str(e)


def test_limit_reads_only_the_first_n(tmp_path):
    """A split's limit stops the reader: rows past it (here a bad label) are never parsed, across files."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine", "label": "positive"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "bad", "label": "negative"}, {"text": "meh", "label": "neutral"}])
    d = dict(task="sentiment", format="jsonl", columns={"text_a": "text"}, files={"train": [str(a), str(b)]})
    ex = read_split(spec(tmp_path, **d, limit={"train": 2}), "train")
    assert ex.table["text_a"] == ["fine", "bad"]
    e = err(tmp_path, d)
    assert (e.path, e.row, e.field) == (str(b), 2, "label")
