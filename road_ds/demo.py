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
import sys
import time

from road_ds.runs import REPO, Step, deepspeed_cmd, ensemble_scores, run_steps, table

SEEDS = (0, 1, 2)


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

    steps = [Step(f"teacher{s}", [py, "road_ds/train.py", "--recipe", recipe, "--output-dir", str(out / f"teacher{s}"),
                                  "--set", f"train.seed={s}"], out / f"teacher{s}" / "eval_results.json")
             for s in SEEDS]  # 1. teachers
    stores = [out / "stores" / f"teacher{s}" for s in SEEDS]
    steps += [Step(f"store{s}", [py, "road_ds/precompute.py", recipe, "--teacher", str(out / f"teacher{s}" / "export"), "--out", str(store),
                                 "--split", "train", "--split", "dev", "--top-k", "0"], store / "manifest.json", [f"teacher{s}"])
              for s, store in zip(SEEDS, stores)]  # 2. their stores
    student = ["--set", "model.name_or_path=$ROAD_DS_CACHE/kit/models/minilm-l3", "--set", "model.tokenizer=$ROAD_DS_CACHE/kit/models/minilm-l6"]
    kd = ["--set", "kd.teachers=[" + ",".join(str(s) for s in stores) + "]", "--set", "kd.combine=wkd", "--set", "kd.W=0.75",
          "--set", "kd.alpha=0.5", "--set", "kd.temperature=2.0"]
    for name, extra in (("student-nokd", []), ("student-wkd", kd)):  # 3. students, 2 ranks
        steps.append(Step(name, [*deepspeed_cmd(), "--num_gpus", "2", "road_ds/train.py", "--deepspeed", args.ds_config, "--recipe", recipe,
                                 "--output-dir", str(out / name), *student, *extra], out / name / "eval_results.json",
                          [f"store{s}" for s in SEEDS]))
    run_steps(steps, out / "logs", jobs=1, log=log)

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
