"""The peer bench's loader of the Hugging Face examples' QA code: the nested feature functions of a
run_qa.py are compiled from their own source with the closure names they read, and a file of
another shape stops with a message saying what is missing and how to get the real one."""

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
