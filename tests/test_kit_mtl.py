"""QA and classification learn together: a short MTL run on the real kit (MiniLM-L6, squad2 with
unanswerable questions + QNLI-style pairs + Rotten Tomatoes sentiment, the mix in which QA's gradient
used to own the shared encoder) moves the span and sentiment heads off chance.

Measured on this very run (2 CPU cores, about 4 minutes, deterministic: CI's machine gave the same
numbers), on the kit's SQuAD source (the official SQuAD 1.1 dev set, made SQuAD-2.0-style):
- with `mtl.balance: grad_norm` (the default): sentiment 0.702, squad2 F1 32.3 (it has learned "no
  answer"; the untrained model scores 4.2), QA training loss 4.50 -> 2.89, QNLI 0.506;
- with `mtl.balance: none` (the trainer before it): sentiment 0.476, a constant prediction (its
  [CLS] cosine climbs to 0.85 where the balanced run's ends at 0.77), QNLI 0.530;
- the best non-null span's HasAns F1 moves only from 6.16 (untrained) to 6.49 (6.55 unbalanced) in 40
  updates: QA's spans need more updates than this test can afford (the demo's teachers reach HasAns F1
  29-34), so it is not asserted.
QNLI is not asserted: 40 updates are too few for it with or without QA (58.0 without QA in the
earlier study); the demo trains it to 78+.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.kit
REPO = Path(__file__).resolve().parent.parent
SENTIMENT_FLOOR = 0.65
SQUAD2_F1_FLOOR = 25.0


def test_qa_and_classification_learn_together_on_the_shared_encoder(kit_dir, tmp_path):
    def jsonl(name, columns, limit, length):
        return {"format": "jsonl", "columns": columns, "max_seq_length": length, "limit": limit,
                "files": {s: str(kit_dir / name / f"{s}.jsonl") for s in ("train", "dev")}}

    recipe = {
        "model": {"name_or_path": str(kit_dir / "models" / "minilm-l6")},
        "features": {"max_seq_length": 160, "doc_stride": 64, "max_query_length": 48, "cache_dir": str(tmp_path / "features")},
        "datasets": [
            {"name": "squad2", "task": "extractive_qa", "format": "squad_json", "answer_start": "nearest",
             "files": {"train": str(kit_dir / "squad2" / "train.json"), "dev": str(kit_dir / "squad2" / "dev.json")},
             "limit": {"train": 3000, "dev": 300}},
            {"name": "qnli", "task": "classification", "head": "qnli", "labels": ["entailment", "not_entailment"],
             **jsonl("qnli", {"text_a": "question", "text_b": "sentence"}, {"train": 4000, "dev": 500}, 128)},
            {"name": "sentiment", "task": "sentiment", **jsonl("sentiment", {"text_a": "text"}, {"train": 4000, "dev": 500}, 64)},
        ],
        "train": {"max_steps": 40, "micro_batch_size": 16, "lr": 2.0e-4, "warmup_steps": 4, "log_every": 5, "save_every": 1000,
                  "eval_batch_size": 64, "keep_checkpoints": 0},
        "mtl": {"passes": 4, "policy": "proportional"},
    }
    path = tmp_path / "mtl.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "road_ds/train.py", "--recipe", str(path), "--output-dir", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "eval_results.json").read_text())
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if "loss/squad2" in r]
    # the balance and the collapse diagnostic are logged; QA's weight is the smallest
    assert len(train) == 8 and all(0.0 < r["cls_cos/sentiment"] <= 1.0 for r in train)
    assert all(r["weight/squad2"] < min(r["weight/qnli"], r["weight/sentiment"]) for r in train[1:]), train[-1]
    assert res["sentiment"]["accuracy"] >= SENTIMENT_FLOOR, (res["sentiment"], train[-1])
    assert res["squad2"]["f1"] >= SQUAD2_F1_FLOOR, res["squad2"]
    assert train[-1]["loss/squad2"] < 0.75 * train[0]["loss/squad2"]
    assert not (out / "checkpoints").exists()  # keep_checkpoints 0: nothing left once the run is exported
    assert (out / "best" / "road_ds_export.json").stat().st_ino == (out / "export" / "road_ds_export.json").stat().st_ino
