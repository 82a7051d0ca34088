"""The demo pipeline (`make demo`): ROaD end to end on the real data kit, on CPU.

1. three MiniLM-L6 teachers (seeds 0, 1, 2), multi-task on QA + QNLI-style pairs + sentiment;
2. their teacher stores (offline precompute, train and dev splits, whole support kept);
3. a MiniLM-L3 student on 2 DeepSpeed ranks, MTL with passes=4: without KD, and with weighted KD;
4. evaluation, export, and one table: each teacher, the teachers' ensemble, both students.
Every stage is skipped when its output is complete, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)


def sh(cmd: list[str], log) -> None:
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-5000:])
        raise SystemExit(f"demo step failed: {' '.join(cmd)}")


def deepspeed_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("deepspeed")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deepspeed.launcher.runner"]


def ensemble_scores(recipe_path: str, stores: list[Path]) -> dict:
    """The teachers' ensemble on the dev splits: the mean of their log-probabilities, decoded and scored."""
    from road_ds.evaluate import macro, score
    from road_ds.features import build_features, load_tokenizer
    from road_ds.batching import collate
    from road_ds.data import teacher_targets
    from road_ds.recipe import load_recipe
    from road_ds.store import TeacherSet

    recipe = load_recipe(recipe_path)
    tok = load_tokenizer(recipe.model.tokenizer_path)
    teachers = TeacherSet.open(stores)
    results = {}
    for d in recipe.datasets:
        ft = build_features(recipe, d.name, d.eval_split, tokenizer=tok)
        logits: dict[str, list] = {}
        arrow = ft.table.data.table
        for a in range(0, len(ft), 64):
            rows = np.arange(a, min(a + 64, len(ft)))
            batch = collate(arrow, rows, pad_id=tok.pad_token_id or 0)
            targets = teacher_targets(teachers, d.name, d.eval_split, d.task_type.kind, batch)
            lens = batch["attention_mask"].sum(-1).tolist()
            for o, logp in targets.items():
                mean = logp.mean(0)  # the average of the teachers' log-probabilities
                mean = mean.masked_fill(~batch["support"], -1e4) if d.task_type.kind == "span" else mean
                logits.setdefault(o, []).extend(mean[i, : lens[i]].numpy() if d.task_type.kind == "span" else mean[i].numpy() for i in range(len(rows)))
        results[d.name], _ = score(ft, logits, n_best_size=recipe.train.n_best_size, max_answer_length=recipe.train.max_answer_length)
    results["macro"] = macro(results)
    return results


def table(rows: dict[str, dict]) -> str:
    head = ["model", "QA F1", "QA EM", "HasAns F1", "NoAns acc", "QNLI acc", "sentiment acc", "macro"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        q = r["squad2"]
        lines.append(f"| {name} | {q['f1']:.1f} | {q['exact']:.1f} | {q.get('HasAns_f1', 0):.1f} | {q.get('NoAns_exact', 0):.1f} | "
                     f"{100 * r['qnli']['accuracy']:.1f} | {100 * r['sentiment']['accuracy']:.1f} | {100 * r['macro']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="road_ds.demo", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="recipes/demo.yaml")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--ds-config", default="ds_configs/zero2.json")
    args = p.parse_args(argv)
    out = (REPO / args.out).resolve()
    recipe = str((REPO / args.recipe).resolve())
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    py = sys.executable

    for seed in SEEDS:  # 1. teachers
        run = out / f"teacher{seed}"
        if not (run / "eval_results.json").exists():
            sh([py, "road_ds/train.py", "--recipe", recipe, "--output-dir", str(run), "--set", f"train.seed={seed}"], log)
    for seed in SEEDS:  # 2. their stores
        store = out / "stores" / f"teacher{seed}"
        if not (store / "manifest.json").exists():
            sh([py, "road_ds/precompute.py", recipe, "--teacher", str(out / f"teacher{seed}" / "export"), "--out", str(store),
                "--split", "train", "--split", "dev", "--top-k", "0"], log)
    stores = [out / "stores" / f"teacher{s}" for s in SEEDS]
    student = ["--set", "model.name_or_path=$ROAD_DS_CACHE/kit/models/minilm-l3", "--set", "model.tokenizer=$ROAD_DS_CACHE/kit/models/minilm-l6"]
    kd = ["--set", "kd.teachers=[" + ",".join(str(s) for s in stores) + "]", "--set", "kd.combine=wkd", "--set", "kd.W=0.75",
          "--set", "kd.alpha=0.5", "--set", "kd.temperature=2.0"]
    for name, extra in (("student-nokd", []), ("student-wkd", kd)):  # 3. students, 2 ranks
        run = out / name
        if not (run / "eval_results.json").exists():
            sh([*deepspeed_cmd(), "--num_gpus", "2", "road_ds/train.py", "--deepspeed", args.ds_config, "--recipe", recipe,
                "--output-dir", str(run), *student, *extra], log)

    rows = {f"teacher {s} (MiniLM-L6)": json.loads((out / f"teacher{s}" / "eval_results.json").read_text()) for s in SEEDS}
    rows["teachers' ensemble (mean)"] = ensemble_scores(recipe, stores)
    rows["student MiniLM-L3, no KD"] = json.loads((out / "student-nokd" / "eval_results.json").read_text())
    rows["student MiniLM-L3, WKD from 3"] = json.loads((out / "student-wkd" / "eval_results.json").read_text())
    text = table(rows)
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(f"\nexports: {out}/<run>/export (plain Hugging Face dirs, one per head); total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
