"""The quality study (`make study`): do ROaD's multi-task step and weighted KD help, on the real data kit?

Reads a plan (recipes/study/runs.yaml): teachers (one per seed), their stores, then student runs
(no KD, KD from one teacher, mean of 3, WKD, annealing, passes 1 vs 4, self-distillation), each for
several seeds. Runs go `--jobs` at a time; a rerun skips every finished run and resumes a killed one.
Writes docs/results.md: mean ± std over seeds, paired differences on shared seeds, wall-clock per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from road_ds.errors import DataError
from road_ds.runs import REPO, Step, ensemble_scores, row_values, run_steps

READING = re.compile(r"<!-- reading -->.*?<!-- /reading -->", re.S)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherPlan(_Strict):
    seeds: list[int] = Field(min_length=1)
    set: dict[str, object] = {}


class RunPlan(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: list[int] = Field(min_length=1)
    teachers: list[int] = []  # teacher seeds whose stores feed KD; empty = no KD
    set: dict[str, object] = {}


class StudyPlan(_Strict):
    recipe: str
    top_k: int = Field(0, ge=0)
    teachers: TeacherPlan
    students: dict[str, object] = {}
    kd: dict[str, object] = {}
    runs: list[RunPlan]
    comparisons: list[tuple[str, str]] = []  # (a, b): a − b on the seeds both have


def load_plan(path: Path) -> StudyPlan:
    try:
        raw = yaml.safe_load(path.read_text())
        plan = StudyPlan.model_validate(raw)
    except (OSError, yaml.YAMLError) as e:
        raise DataError(path, f"cannot read the study plan: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(path, err["msg"], field=".".join(str(p) for p in err["loc"])) from None
    names = [r.name for r in plan.runs]
    for i, r in enumerate(plan.runs):
        if names.count(r.name) > 1:
            raise DataError(path, f"run name '{r.name}' is used twice", field=f"runs.{i}.name")
        bad = [t for t in r.teachers if t not in plan.teachers.seeds]
        if bad:
            raise DataError(path, f"teachers {bad} are not among teachers.seeds {plan.teachers.seeds}", field=f"runs.{i}.teachers")
    for i, pair in enumerate(plan.comparisons):
        for name in pair:
            if name not in names:
                raise DataError(path, f"comparison names an unknown run '{name}'", field=f"comparisons.{i}")
    return plan


def sets(*mappings: dict) -> list[str]:
    """Overrides as `--set key=value` arguments (values as JSON, which the recipe loader reads as YAML)."""
    args = []
    for m in mappings:
        for k, v in m.items():
            args += ["--set", f"{k}={json.dumps(v)}"]
    return args


def plan_steps(plan: StudyPlan, recipe: str, out: Path) -> tuple[list[Step], dict[str, list[str]]]:
    """The study as steps: teachers, stores, students. Also returns each training step's overrides
    (`--set key=value` pairs), by step name."""
    py = sys.executable
    steps, overrides = [], {}
    store = lambda s: out / "stores" / f"teacher-s{s}"  # noqa: E731
    for s in plan.teachers.seeds:
        overrides[f"teacher-s{s}"] = sets(plan.teachers.set, {"train.seed": s})
        steps.append(Step(f"teacher-s{s}", [py, "road_ds/train.py", "--recipe", recipe, "--output-dir", str(out / f"teacher-s{s}"),
                                            *overrides[f"teacher-s{s}"]], out / f"teacher-s{s}" / "eval_results.json"))
    for s in plan.teachers.seeds:
        steps.append(Step(f"store-s{s}", [py, "road_ds/precompute.py", recipe, "--teacher", str(out / f"teacher-s{s}" / "export"),
                                          "--out", str(store(s)), "--split", "train", "--split", "dev", "--top-k", str(plan.top_k)],
                          store(s) / "manifest.json", [f"teacher-s{s}"]))
    for r in plan.runs:
        kd = {**plan.kd, "kd.teachers": [str(store(t)) for t in r.teachers]} if r.teachers else {}
        for seed in r.seeds:
            name = f"{r.name}-s{seed}"
            overrides[name] = sets(plan.students, kd, r.set, {"train.seed": seed})
            steps.append(Step(name, [py, "road_ds/train.py", "--recipe", recipe, "--output-dir", str(out / name), *overrides[name]],
                              out / name / "eval_results.json", [f"store-s{t}" for t in r.teachers]))
    return steps, overrides


def _mean_std(values: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(values, dtype=float)
    return a.mean(0), (a.std(0, ddof=1) if len(a) > 1 else np.full(a.shape[1], np.nan))


def _cell(m: float, s: float) -> str:
    return f"{m:.1f}" if np.isnan(s) else f"{m:.1f} ± {s:.1f}"


def _values(r: dict) -> list[float]:
    return list(row_values(r).values())


def _heads(results: dict[str, dict]) -> list[str]:
    return list(row_values(next(iter(results.values()))))


def summary_table(plan: StudyPlan, results: dict[str, dict], teachers: dict[str, dict]) -> str:
    heads = _heads(results)
    lines = ["| model | seeds | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 2)]
    for name, r in teachers.items():
        lines.append(f"| {name} | 1 | " + " | ".join(f"{v:.1f}" for v in _values(r)) + " |")
    for r in plan.runs:
        m, s = _mean_std([_values(results[f"{r.name}-s{seed}"]) for seed in r.seeds])
        lines.append(f"| {r.name} | {len(r.seeds)} | " + " | ".join(_cell(a, b) for a, b in zip(m, s)) + " |")
    return "\n".join(lines)


def paired_table(plan: StudyPlan, results: dict[str, dict]) -> str:
    """a − b on the seeds both runs have: mean ± std of the per-seed differences, wins, paired t-test."""
    from scipy.stats import ttest_rel

    seeds = {r.name: r.seeds for r in plan.runs}
    heads = _heads(results)
    lines = ["| a − b | seeds | " + " | ".join(heads) + " | a wins (macro) | paired t-test p (macro) |",
             "|" + "---|" * (len(heads) + 4)]
    for a, b in plan.comparisons:
        shared = [s for s in seeds[a] if s in seeds[b]]
        va = np.array([_values(results[f"{a}-s{s}"]) for s in shared])
        vb = np.array([_values(results[f"{b}-s{s}"]) for s in shared])
        m, s = _mean_std(list(va - vb))
        wins = int((va[:, -1] > vb[:, -1]).sum())
        p = ttest_rel(va[:, -1], vb[:, -1]).pvalue if len(shared) > 1 else float("nan")
        lines.append(f"| {a} − {b} | {len(shared)} | " + " | ".join(_cell(x, y) for x, y in zip(m, s)) + f" | {wins}/{len(shared)} | {p:.3f} |")
    return "\n".join(lines)


def wall_table(steps: list[Step], wall: dict[str, float]) -> str:
    lines = ["| step | wall-clock s |", "|---|---|"]
    lines += [f"| {s.name} | {wall[s.name]:.0f} |" if s.name in wall else f"| {s.name} | (not timed: finished by an earlier version) |" for s in steps]
    return "\n".join(lines)


def write_results(path: Path, plan: StudyPlan, plan_path: Path, recipe: str, out: Path, steps, wall, jobs: int) -> str:
    import deepspeed
    import torch
    import transformers

    from road_ds.recipe import load_recipe

    load = lambda name: json.loads((out / name / "eval_results.json").read_text())  # noqa: E731
    results = {f"{r.name}-s{seed}": load(f"{r.name}-s{seed}") for r in plan.runs for seed in r.seeds}
    teachers = {f"teacher-s{s} (MiniLM-L6)": load(f"teacher-s{s}") for s in plan.teachers.seeds}
    teachers["teachers' ensemble (mean log-probs)"] = ensemble_scores(recipe, [out / "stores" / f"teacher-s{s}" for s in plan.teachers.seeds])
    old = path.read_text() if path.exists() else ""
    kept = READING.search(old)
    reading = kept.group(0) if kept else "<!-- reading -->\n(to be written after reading the tables)\n<!-- /reading -->"
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    example = f"{plan.runs[-1].name}-s{plan.runs[-1].seeds[0]}"
    total = sum(wall.get(s.name, 0.0) for s in steps)
    text = f"""# Quality study: ROaD's MTL step and weighted KD on the real data kit

Written by `make study` (`python -m road_ds.study --plan {rel(plan_path)} --out {rel(out)} --jobs {jobs}`); rerun it
to reproduce every number below (finished runs are skipped; delete `{rel(out)}` to start over).
Plan: `{rel(plan_path)}`; recipe: `{rel(recipe)}`. Dev sets (the kit's, disjoint from train by article or by movie):
{", ".join(f"{d.name} ({d.limit.get(d.eval_split, 'all')} examples)" for d in load_recipe(recipe).datasets)}.
Cells are mean ± sample std over seeds (the student's seed: head init, data order, dropout); teachers are fixed.

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, deepspeed {deepspeed.__version__},
transformers {transformers.__version__}; {jobs} runs at a time. Sum of step wall-clock: {total / 60:.0f} min.

## Results (dev)

{summary_table(plan, results, teachers)}

## Paired differences (same student seed, same teachers)

{paired_table(plan, results)}

{reading}

## Commands

Each step is a plain command (logs in `{rel(out)}/logs/`); for example `{example}`:

```
{' '.join(rel(c) if c.startswith(str(REPO)) else c for c in next(s.cmd for s in steps if s.name == example))}
```

## Wall-clock per step

{wall_table(steps, wall)}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="road_ds.study", description=__doc__.split("\n")[0])
    p.add_argument("--plan", default="recipes/study/runs.yaml")
    p.add_argument("--out", default="outputs/study")
    p.add_argument("--results", default="docs/results.md")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU threads are split between them)")
    args = p.parse_args(argv)
    plan_path = (REPO / args.plan).resolve()
    out = (REPO / args.out).resolve()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        plan = load_plan(plan_path)
        recipe = str((plan_path.parent / plan.recipe).resolve())
        steps, overrides = plan_steps(plan, recipe, out)
        from road_ds.features import build_features, load_tokenizer
        from road_ds.recipe import load_recipe

        tokenizers: dict = {}
        for o in overrides.values():  # every run's recipe must be valid before hours are spent, and its features
            r = load_recipe(recipe, o[1::2])  # built once, before runs in parallel would race to build them
            if r.model.tokenizer_path not in tokenizers:
                tokenizers[r.model.tokenizer_path] = load_tokenizer(r.model.tokenizer_path)
            tok = tokenizers[r.model.tokenizer_path]
            for d in r.datasets:
                for split in (d.train_split, d.eval_split):
                    build_features(r, d.name, split, tokenizer=tok, log=log)
    except DataError as e:
        print(f"road_ds.study: error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    wall = run_steps(steps, out / "logs", jobs=args.jobs, log=log)
    text = write_results((REPO / args.results).resolve(), plan, plan_path, recipe, out, steps, wall, args.jobs)
    print(text)
    log(f"study done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
