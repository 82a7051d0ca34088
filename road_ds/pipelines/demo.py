"""The demo pipeline (`make demo`): ROaD end to end on the real data kit, on CPU.

1. the multi-task step: MiniLM-L6 on QA (squad2, with unanswerable questions) + QNLI-style pairs +
   sentiment, one run (ROaD's second pre-training step, shared by the teachers to fit a 2-core budget);
2. three teachers (seeds 0, 1, 2), each fine-tuned from that MTL export on the same tasks;
3. their teacher stores (offline precompute, the student's train slices and the dev sets, whole support);
4. a MiniLM-L3 student on 2 DeepSpeed ranks, MTL with passes=4: without KD, and with weighted KD;
5. one table: each teacher, the teachers' ensemble, both students, and the all-null QA baseline.
Every stage is skipped when its output is complete, so a rerun resumes; a line per running stage
every 30 s says where it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from road_ds.pipelines.runs import REPO, Step, deepspeed_cmd, ensemble_scores, run_steps, table

SEEDS = (0, 1, 2)
# the teachers' fine-tuning from the MTL export: short, each with its own seed (data order, dropout)
TEACHER = ["train.max_steps=20", "train.warmup_steps=2", "train.lr=1.0e-4"]
# the student: MiniLM-L3 (its own pooler is trained), 2 ranks x 4 rows per micro-batch (the teachers'
# 8 rows), on slices of the training sets it sees for several epochs; the dev sets are the teachers'
STUDENT_DATA = ["datasets.squad2.limit={train: 800, dev: 300}", "datasets.qnli.limit={train: 800, dev: 500}",
                "datasets.sentiment.limit={train: 800, dev: 500}"]
STUDENT = ["model.name_or_path=$ROAD_DS_CACHE/kit/models/minilm-l3", "model.tokenizer=$ROAD_DS_CACHE/kit/models/minilm-l6",
           "model.reinit_pooler=false", "train.micro_batch_size=4", "train.max_steps=80", "train.lr=2.0e-4", *STUDENT_DATA]
KD = ["kd.combine=wkd", "kd.W=0.75", "kd.alpha=0.5", "kd.temperature=2.0"]


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="road_ds.pipelines.demo", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="recipes/demo.yaml")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--ds-config", default="ds_configs/zero2.json")
    args = p.parse_args(argv)
    out = (REPO / args.out).resolve()
    recipe = str((REPO / args.recipe).resolve())
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    py = sys.executable

    train = lambda name, extra: [py, "road_ds/train.py", "--recipe", recipe, "--output-dir", str(out / name), *sets(extra)]  # noqa: E731
    steps = [Step("mtl", train("mtl", []), out / "mtl" / "eval_results.json")]  # 1. the MTL step
    steps += [Step(f"teacher{s}", train(f"teacher{s}", [f"model.init_from={out / 'mtl' / 'export'}", f"train.seed={s}", *TEACHER]),
                   out / f"teacher{s}" / "eval_results.json", ["mtl"]) for s in SEEDS]  # 2. teachers
    stores = [out / "stores" / f"teacher{s}" for s in SEEDS]
    steps += [Step(f"store{s}", [py, "road_ds/precompute.py", recipe, *sets(STUDENT_DATA), "--teacher", str(out / f"teacher{s}" / "export"),
                                 "--out", str(store), "--split", "train", "--split", "dev", "--top-k", "0"], store / "manifest.json", [f"teacher{s}"])
              for s, store in zip(SEEDS, stores)]  # 3. their stores, on the student's features
    kd = [f"kd.teachers=[{','.join(str(s) for s in stores)}]", *KD]
    for name, extra in (("student-nokd", STUDENT), ("student-wkd", STUDENT + kd)):  # 4. students, 2 ranks
        steps.append(Step(name, [*deepspeed_cmd(), "--num_gpus", "2", "road_ds/train.py", "--deepspeed", args.ds_config, "--recipe", recipe,
                                 "--output-dir", str(out / name), *sets(extra)], out / name / "eval_results.json", [f"store{s}" for s in SEEDS]))
    run_steps(steps, out / "logs", jobs=1, log=log)

    rows = {"MTL step (MiniLM-L6)": json.loads((out / "mtl" / "eval_results.json").read_text())}
    rows |= {f"teacher {s} (MiniLM-L6)": json.loads((out / f"teacher{s}" / "eval_results.json").read_text()) for s in SEEDS}
    rows["teachers' ensemble (mean)"] = ensemble_scores(recipe, stores)
    rows["student MiniLM-L3, no KD"] = json.loads((out / "student-nokd" / "eval_results.json").read_text())
    rows["student MiniLM-L3, WKD from 3"] = json.loads((out / "student-wkd" / "eval_results.json").read_text())
    text = table(rows)
    null = {n: 100.0 * r["NoAns_total"] / r["total"] for n, r in rows["teacher 0 (MiniLM-L6)"].items() if isinstance(r, dict) and "NoAns_total" in r}
    text += "\n\nall-null baseline (\"no answer\" everywhere): " + ", ".join(f"{n} F1 {v:.1f}" for n, v in null.items())
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(f"\nexports: {out}/<run>/export (plain Hugging Face dirs, one per head); total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
