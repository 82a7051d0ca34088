"""The peer bench's loader of the Hugging Face examples' QA code: the nested feature functions of a
run_qa.py are compiled from their own source with the closure names they read, and a file of
another shape stops with a message saying what is missing and how to get the real one. Its report:
step ratios from paired rounds, and a missed learning target explained."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from hf_examples import load_utils_qa, run_qa_feature_functions  # noqa: E402

RUN_QA = '''
import transformers

def main():
    tokenizer = None
    pad_on_right = tokenizer.padding_side == "right"

    def prepare_train_features(examples):
        return {"q": [tokenizer.tag + examples[question_column_name][0]], "stride": [data_args.doc_stride], "right": [pad_on_right],
                "len": [max_seq_length]}

    def prepare_validation_features(examples):
        return {"c": [examples[context_column_name][0]], "pad": [data_args.pad_to_max_length]}
'''


def test_the_nested_feature_functions_run_with_their_closure(tmp_path):
    (tmp_path / "run_qa.py").write_text(RUN_QA)
    tok = SimpleNamespace(tag="T:", padding_side="left", model_max_length=128)
    train, val = run_qa_feature_functions(tmp_path, tok, max_seq_length=192, doc_stride=64)
    assert train({"question": ["why"]}) == {"q": ["T:why"], "stride": [64], "right": [False], "len": [128]}
    assert val({"context": ["ctx"]}) == {"c": ["ctx"], "pad": [False]}


def test_a_run_qa_of_another_shape_or_none_stops_with_the_reason(tmp_path):
    tok = SimpleNamespace(tag="", padding_side="right", model_max_length=512)
    with pytest.raises(SystemExit, match="no run_qa.py in .*clone https://github.com/huggingface/transformers"):
        run_qa_feature_functions(tmp_path, tok, 192, 64)
    with pytest.raises(SystemExit, match="no utils_qa.py"):
        load_utils_qa(tmp_path)
    (tmp_path / "run_qa.py").write_text(RUN_QA.replace("def prepare_validation_features", "def other"))
    with pytest.raises(SystemExit, match="no nested prepare_validation_features"):
        run_qa_feature_functions(tmp_path, tok, 192, 64)
    (tmp_path / "run_qa.py").write_text(RUN_QA.replace("data_args.doc_stride", "data_args.new_field + secret"))
    with pytest.raises(SystemExit, match=r"secret, data_args.new_field"):
        run_qa_feature_functions(tmp_path, tok, 192, 64)


def _step_row(trainer, backend, rounds, ranks=1):
    step = sorted(rounds)[len(rounds) // 2]
    return {"trainer": trainer, "backend": backend, "ranks": ranks, "step_s": step, "samples_per_s": 16 / step, "peak_rss_mb": 1000.0,
            "rss_growth_mb": 500.0, "round_step_s": rounds}


def test_step_ratios_pair_the_rounds_and_the_learning_rows_are_judged_each_against_its_goal():
    from peer_bench import report, train_targets

    # round 1: road_ds 1.8 s against 2.4 s; round 2 (the machine slower for both): 3.0 against 3.3. Unpaired medians of
    # different rounds could say anything; each round's ratio says road_ds is faster: 2.4/1.8 = 1.333, 3.3/3.0 = 1.1
    ours, hf = _step_row("road_ds", "deepspeed-zero2", [1.8, 3.0]), _step_row("hf", "torch (1 process)", [2.4, 3.3])
    learning = {"updates": 100, "rows_per_update": 16, "lr": 3e-4, "dev_examples": 1000, "road_ds": {"f1": 40.0, "exact": 30.0},
                "hf_matched": {"f1": 41.5, "exact": 31.0}, "hf": {"f1": 15.0, "exact": 9.0}}
    train = {"train": [ours, hf], "learning": learning}

    def learn_targets():
        return {t["name"].split(",")[0].split(" dev F1")[0]: t for t in train_targets(train) if t["name"].startswith("learning")}

    targets = train_targets(train)
    step = next(t for t in targets if "samples/s" in t["name"])
    assert step["value"] == pytest.approx((2.4 / 1.8 + 3.3 / 3.0) / 2, abs=1e-3) and step["met"] and "2 paired rounds" in step["name"]
    matched, own = learn_targets().values()
    assert (matched["value"], matched["met"], own["value"], own["met"]) == (1.5, True, 25.0, True)
    md = report({"targets": targets, "machine": "x", "versions": {}, "commands": {"make": "make bench-peer", "train": "t", "qa": None},
                 "minutes": {"total": 1.0}, "train": train, "qa": {}})
    assert "1.800 / 3.000" in md and "the Trainer as its users run it 15.0 / 9.0" in md and "The matched Trainer row is the check" in md
    # the matched Trainer 2.5 ahead, and road_ds 3 behind the Trainer as its users run it: both missed
    learning["hf_matched"]["f1"], learning["hf"]["f1"] = 42.5, 43.0
    matched, own = learn_targets().values()
    assert (matched["value"], matched["met"], own["value"], own["met"]) == (2.5, False, -3.0, False)
    # both within 2 of road_ds, but below the floor: too early in training to compare
    learning.update(road_ds={"f1": 12.0, "exact": 5.0}, hf_matched={"f1": 13.0, "exact": 6.0}, hf={"f1": 11.0, "exact": 5.0})
    assert [t["met"] for t in learn_targets().values()] == [False, False]
    # a learning row that failed is a missed target that says why
    learning["hf_matched"] = {"error": "RuntimeError: boom"}
    matched = next(iter(learn_targets().values()))
    assert matched["value"] == "error: RuntimeError: boom" and not matched["met"]
