"""The `road-ds` command: summaries, oracle predictions into squad-eval, and errors without tracebacks."""

from __future__ import annotations

import json

from conftest import squad_doc, write_recipe

from road_ds.cli import main

CTX = "Paris is the capital of France. It was founded in the third century by the Parisii."
QAS = [
    {"id": "a", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
    {"id": "b", "question": "Who founded it?", "answers": [{"text": "the Parisii", "answer_start": CTX.index("the Parisii")}]},
    {"id": "c", "question": "Who is king?", "answers": [], "is_impossible": True},
]


def recipe(tmp_path, tok):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(squad_doc([{"title": "Paris", "paragraphs": [{"context": CTX, "qas": QAS}]}], "v2.0")))
    return data, write_recipe(tmp_path / "r.yaml", tok, [{"name": "sq", "task": "extractive_qa", "format": "squad_json", "files": {"dev": "dev.json"}}],
                              max_seq_length=32, doc_stride=8, max_query_length=8)


def test_features_summary_cache_and_oracle_into_squad_eval(tmp_path, tiny_tokenizer_dir, cache_dir, capsys):
    data, r = recipe(tmp_path, tiny_tokenizer_dir)
    assert main(["features", str(r), "--json", "--oracle-predictions", str(tmp_path / "out")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["cache"] == "built" and rows[0]["examples"] == 3 and rows[0]["span_roundtrip"].startswith("2/2")
    assert main(["features", str(r), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cache"] == "hit"
    preds = json.loads((tmp_path / "out" / "sq-dev-predictions.json").read_text())
    assert preds == {"a": "Paris", "b": "the Parisii", "c": ""}
    assert main(["squad-eval", str(data), str(tmp_path / "out" / "sq-dev-predictions.json"),
                 "--na-prob-file", str(tmp_path / "out" / "sq-dev-na_probs.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["exact"] == res["f1"] == res["best_f1"] == 100.0 and res["NoAns_total"] == 1


def test_bad_input_is_one_line_not_a_traceback(tmp_path, tiny_tokenizer_dir, cache_dir, capsys):
    data, r = recipe(tmp_path, tiny_tokenizer_dir)
    data.write_text(data.read_text().replace('"answer_start": 0', '"answer_start": 1'))
    assert main(["features", str(r)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dev.json" in err and "qas[0]" in err and "answers[0].answer_start" in err


def test_every_job_shows_its_own_help_and_takes_options_first(tmp_path, capsys):
    import pytest

    from road_ds.cli import JOBS

    for job in JOBS:
        with pytest.raises(SystemExit) as e:
            main([job, "--help"])
        assert e.value.code == 0, job
        assert f"usage: road-ds {job} " in capsys.readouterr().out, job
    # an option-first line reaches the job's own parser: the missing recipe is the error, by name
    assert main(["train", "--recipe", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "cannot read recipe" in err and "unrecognized arguments" not in err
