"""The Hugging Face examples' own QA code, loaded at bench time from where the user has it.

The peer benches run `examples/pytorch/question-answering` of a transformers checkout as it is
(never a copy in this repo):
  load_utils_qa(dir)               utils_qa.py as a module (postprocess_qa_predictions);
  run_qa_feature_functions(dir, …) run_qa.py's prepare_train_features / prepare_validation_features,
                                   which are nested in its main(): their own source, cut out with `ast`
                                   and compiled against the closure names they read (the tokenizer,
                                   pad_on_right, max_seq_length, data_args, the column names).
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

HOW_TO_GET = ("clone https://github.com/huggingface/transformers and pass --hf-examples <clone>/examples/pytorch/question-answering "
              "(the folder holding run_qa.py and utils_qa.py)")
FEATURE_FUNCTIONS = ("prepare_train_features", "prepare_validation_features")
DATA_ARGS = ("doc_stride", "pad_to_max_length", "max_seq_length")  # the data_args fields given to the functions


def _peer_file(directory, name: str) -> Path:
    path = Path(directory).expanduser() / name
    if not path.is_file():
        raise SystemExit(f"no {name} in {Path(directory).expanduser()}: {HOW_TO_GET}")
    return path


def load_utils_qa(directory) -> ModuleType:
    """utils_qa.py from `directory`, imported from its file (under a name of its own, so it shadows nothing)."""
    path = _peer_file(directory, "utils_qa.py")
    spec = importlib.util.spec_from_file_location("hf_examples_utils_qa", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "postprocess_qa_predictions", None)):
        raise SystemExit(f"{path} has no postprocess_qa_predictions: the file changed shape ({HOW_TO_GET})")
    return module


def _free_names(fn: ast.FunctionDef) -> set[str]:
    """Names a nested function reads from its enclosing scope (not its arguments, locals or builtins)."""
    local = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
    local |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a}
    loaded = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else local).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not fn:
            local.add(node.name)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
    return loaded - local - set(dir(builtins))


def _data_args_fields(fn: ast.FunctionDef) -> set[str]:
    return {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "data_args"}


def run_qa_feature_functions(directory, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool = False,
                             question_column: str = "question", context_column: str = "context", answer_column: str = "answers"):
    """(prepare_train_features, prepare_validation_features) of run_qa.py in `directory`, bound to these settings.

    Each is the peer's nested function compiled from its own source lines (line numbers kept, so
    tracebacks and profiles point into run_qa.py) in a namespace that holds exactly the closure
    names it reads; a name or data_args field this does not know stops with the list.
    """
    path = _peer_file(directory, "run_qa.py")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    main = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"), None)
    if main is None:
        raise SystemExit(f"{path} has no top-level main(): the file changed shape, prepare_*_features cannot be found ({HOW_TO_GET})")
    found = {n.name: n for n in main.body if isinstance(n, ast.FunctionDef) and n.name in FEATURE_FUNCTIONS}
    missing = [name for name in FEATURE_FUNCTIONS if name not in found]
    if missing:
        raise SystemExit(f"{path}: main() has no nested {', '.join(missing)}: the file changed shape ({HOW_TO_GET})")
    closure = {
        "tokenizer": tokenizer,
        "pad_on_right": tokenizer.padding_side == "right",  # as run_qa.py computes it
        "max_seq_length": min(max_seq_length, tokenizer.model_max_length),  # likewise
        "data_args": SimpleNamespace(doc_stride=doc_stride, pad_to_max_length=pad_to_max_length, max_seq_length=max_seq_length),
        "question_column_name": question_column,
        "context_column_name": context_column,
        "answer_column_name": answer_column,
    }
    out = []
    for name in FEATURE_FUNCTIONS:
        fn = found[name]
        unknown = sorted(_free_names(fn) - set(closure))
        fields = sorted(_data_args_fields(fn) - set(DATA_ARGS))
        if unknown or fields:
            raise SystemExit(f"{path}: {name} reads names this bench does not provide ({', '.join(unknown + [f'data_args.{f}' for f in fields])}): "
                             "the file changed shape; extend bench/hf_examples.py")
        namespace = {"__name__": "hf_examples_run_qa", "__builtins__": builtins, **closure}
        exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
        out.append(namespace[name])
    return tuple(out)
