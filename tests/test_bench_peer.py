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


def test_step_ratios_pair_the_rounds_and_a_missed_learning_target_is_explained():
    from peer_bench import report, train_targets

    # round 1: road_ds 1.8 s against 2.4 s; round 2 (the machine slower for both): 3.0 against 3.3. Unpaired medians of
    # different rounds could say anything; each round's ratio says road_ds is faster: 2.4/1.8 = 1.333, 3.3/3.0 = 1.1
    ours, hf = _step_row("road_ds", "deepspeed-zero2", [1.8, 3.0]), _step_row("hf", "torch (1 process)", [2.4, 3.3])
    learning = {"updates": 100, "rows_per_update": 16, "lr": 3e-4, "dev_examples": 1000, "road_ds": {"f1": 40.0, "exact": 30.0},
                "hf": {"f1": 15.0, "exact": 9.0}, "hf_support_ce": {"f1": 41.0, "exact": 31.0}}
    train = {"train": [ours, hf], "learning": learning}
    targets = train_targets(train)
    step = next(t for t in targets if "samples/s" in t["name"])
    assert step["value"] == pytest.approx((2.4 / 1.8 + 3.3 / 3.0) / 2, abs=1e-3) and step["met"] and "2 paired rounds" in step["name"]
    learn = next(t for t in targets if t["name"].startswith("learning"))
    assert learn["value"] == 25.0 and not learn["met"]
    md = report({"targets": targets, "machine": "x", "versions": {}, "commands": {"make": "make bench-peer", "train": "t", "qa": None},
                 "minutes": {"total": 1.0}, "train": train, "qa": {}})
    assert "1.800 / 3.000" in md and "HF Trainer on road_ds's span loss (diagnostic) 41.0 / 31.0" in md
    assert "Why the learning rows differ" in md and "Here: 41.0 F1 against road_ds's 40.0" in md
    del learning["hf_support_ce"]
    md = report({"targets": targets, "machine": "x", "versions": {}, "commands": {"make": "make bench-peer", "train": "t", "qa": None},
                 "minutes": {"total": 1.0}, "train": train, "qa": {}})
    assert "--learn-support-ce --out learn.json" in md and "Here:" not in md
