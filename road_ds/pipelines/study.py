"""The quality study (`make study`): do ROaD's multi-task step and weighted KD help, on the real data kit?

Reads a plan (recipes/study/runs.yaml): a shared MTL step, teachers fine-tuned from it (one per seed),
their stores on named training slices, then student runs (no KD, KD from one teacher, mean of 3, WKD,
annealing, a transfer set, self-distillation, the two ROaD stages against one), each for its seeds.
Runs go `--jobs` at a time; a rerun skips every finished run and resumes a killed one. Writes
docs/results.md (mean ± std over seeds, paired differences on shared seeds, the plan's targets,
wall-clock per run), docs/results.json (the same numbers) and docs/results.png (the figure).
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

from road_ds.atomic import write_json
from road_ds.errors import DataError
from road_ds.pipelines.runs import REPO, Step, ensemble_scores, row_values, run_steps

READING = re.compile(r"<!-- reading -->.*?<!-- /reading -->", re.S)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherPlan(_Strict):
    seeds: list[int] = Field(min_length=1)
    set: dict[str, object] = {}


class PretrainPlan(_Strict):
    """One MTL step the teachers start from (`model.init_from` its export)."""

    set: dict[str, object] = {}


class StorePlan(_Strict):
    """A training slice: the teachers' stores are made on it and the runs that name it train on it."""

    splits: list[str] = Field(["train", "dev"], min_length=1)
    recipe: str | None = None  # the recipe its rows come from (relative to the plan); default the plan's
    set: dict[str, object] = {}


class RunPlan(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: list[int] = Field(min_length=1)
    teachers: list[int] = []  # teacher seeds whose stores feed KD; empty = no KD
    store: str | None = "main"  # the slice (and stores) it trains on; None = its recipe as written
    recipe: str | None = None  # another recipe (relative to the plan); default the plan's
    init_from: str | None = None  # a run whose export (same seed) this one starts from, or `mtl` (the pretrain step)
    set: dict[str, object] = {}


class TargetPlan(_Strict):
    """The thresholds docs/results.json reports as met or not."""

    teacher_floors: dict[str, float] = {}  # results column (e.g. "squad2 HasAns F1") -> each teacher's floor
    kd_gain: list[tuple[str, str]] = []  # (a, b): a − b on the macro must exceed twice its paired std
    budget_min: float = 120.0


class StudyPlan(_Strict):
    recipe: str
    top_k: int = Field(0, ge=0)
    pretrain: PretrainPlan | None = None
    teachers: TeacherPlan
    stores: dict[str, StorePlan] = {"main": StorePlan()}
    students: dict[str, object] = {}
    kd: dict[str, object] = {}
    runs: list[RunPlan]
    comparisons: list[tuple[str, str]] = []  # (a, b): a − b on the seeds both have
    targets: TargetPlan = TargetPlan()


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
        if r.store is not None and r.store not in plan.stores:
            raise DataError(path, f"unknown store '{r.store}' (the plan has {', '.join(plan.stores)})", field=f"runs.{i}.store")
        if r.teachers and r.store is None:
            raise DataError(path, "a run with teachers reads their stores: name one", field=f"runs.{i}.store")
        if r.teachers and (r.recipe or plan.recipe) != (plan.stores[r.store].recipe or plan.recipe):
            raise DataError(path, f"store '{r.store}' is made on {plan.stores[r.store].recipe or plan.recipe}, the run trains on "
                            f"{r.recipe or plan.recipe}: a run reads stores made on its own features", field=f"runs.{i}.recipe")
        if r.init_from is not None and not (r.init_from == "mtl" and plan.pretrain is not None):
            src = next((o for o in plan.runs if o.name == r.init_from), None)
            if src is None or src is r or not set(r.seeds) <= set(src.seeds):
                raise DataError(path, f"init_from must name the pretrain step (mtl) or another run with seeds {r.seeds}", field=f"runs.{i}.init_from")
    for i, pair in enumerate(plan.comparisons):
        for name in pair:
            if name not in names:
                raise DataError(path, f"comparison names an unknown run '{name}'", field=f"comparisons.{i}")
    for i, pair in enumerate(plan.targets.kd_gain):
        if tuple(pair) not in [tuple(c) for c in plan.comparisons]:
            raise DataError(path, f"{list(pair)} is not among the comparisons", field=f"targets.kd_gain.{i}")
    return plan


def sets(*mappings: dict) -> list[str]:
    """Overrides as `--set key=value` arguments (values as JSON, which the recipe loader reads as YAML)."""
    args = []
    for m in mappings:
        for k, v in m.items():
            args += ["--set", f"{k}={json.dumps(v)}"]
    return args


def recipe_path(plan_dir: Path, name: str | None, default: str) -> str:
    """A run's or a store's recipe: its own (relative to the plan) or the plan's."""
    return str((plan_dir / name).resolve()) if name else default


def store_dir(out: Path, store: str, seed: int) -> Path:
    return out / "stores" / (f"teacher-s{seed}" if store == "main" else f"{store}/teacher-s{seed}")


def store_step(store: str, seed: int) -> str:
    return f"store-s{seed}" if store == "main" else f"store-{store}-s{seed}"


def plan_steps(plan: StudyPlan, recipe: str, out: Path, plan_dir: Path | None = None) -> tuple[list[Step], dict[str, list[str]], dict[str, str]]:
    """The study as steps: the shared MTL step, teachers, stores, students. Also returns each training
    step's overrides (`--set key=value` pairs) and recipe, by step name."""
    py = sys.executable
    plan_dir = plan_dir or Path(recipe).parent
    steps, overrides, recipes = [], {}, {}

    def train(name: str, rec: str, sets_: list[str], after: list[str]):
        overrides[name], recipes[name] = sets_, rec
        steps.append(Step(name, [py, "road_ds/train.py", "--recipe", rec, "--output-dir", str(out / name), *sets_],
                          out / name / "eval_results.json", after))

    first = {}
    if plan.pretrain is not None:
        train("mtl", recipe, sets(plan.pretrain.set), [])
        first = {"model.init_from": str(out / "mtl" / "export")}
    for s in plan.teachers.seeds:
        train(f"teacher-s{s}", recipe, sets(first, plan.teachers.set, {"train.seed": s}), ["mtl"] if first else [])
    used = {(r.store, t) for r in plan.runs for t in r.teachers} | {("main", s) for s in plan.teachers.seeds if "main" in plan.stores}
    for name, st in plan.stores.items():
        for s in plan.teachers.seeds:
            if (name, s) not in used:
                continue
            d = store_dir(out, name, s)
            steps.append(Step(store_step(name, s), [py, "road_ds/precompute.py", recipe_path(plan_dir, st.recipe, recipe), *sets(st.set), "--teacher", str(out / f"teacher-s{s}" / "export"),
                                                    "--out", str(d), *[a for sp in st.splits for a in ("--split", sp)], "--top-k", str(plan.top_k)],
                              d / "manifest.json", [f"teacher-s{s}"]))
    for r in plan.runs:
        rec = recipe_path(plan_dir, r.recipe, recipe)
        data = plan.stores[r.store].set if r.store is not None else {}
        kd = {**plan.kd, "kd.teachers": [str(store_dir(out, r.store, t)) for t in r.teachers]} if r.teachers else {}
        for seed in r.seeds:
            src = None if r.init_from is None else "mtl" if r.init_from == "mtl" else f"{r.init_from}-s{seed}"
            init = {"model.init_from": str(out / src / "export")} if src else {}
            after = [store_step(r.store, t) for t in r.teachers] + ([src] if src else [])
            train(f"{r.name}-s{seed}", rec, sets(plan.students, data, kd, init, r.set, {"train.seed": seed}), after)
    return steps, overrides, recipes


def _mean_std(values: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(values, dtype=float)
    return a.mean(0), (a.std(0, ddof=1) if len(a) > 1 else np.full(a.shape[1], np.nan))


def _cell(m: float, s: float) -> str:
    return f"{m:.1f}" if np.isnan(s) else f"{m:.1f} ± {s:.1f}"


def _heads(rows: list[dict]) -> list[str]:
    """Every column any of the rows has, in order of first appearance, the macro last."""
    heads = list(dict.fromkeys(k for r in rows for k in row_values(r) if k != "macro"))
    return heads + ["macro"]


def _matrix(rows: list[dict], heads: list[str]) -> np.ndarray:
    return np.array([[row_values(r).get(h, np.nan) for h in heads] for r in rows], dtype=float)


def summarize(plan: StudyPlan, results: dict[str, dict]) -> dict[str, dict]:
    """Per run: each column's mean, sample std and per-seed values."""
    out = {}
    for r in plan.runs:
        rows = [results[f"{r.name}-s{seed}"] for seed in r.seeds]
        heads = _heads(rows)
        v = _matrix(rows, heads)
        m, sd = _mean_std(list(v))
        out[r.name] = {h: {"mean": float(m[j]), "std": None if np.isnan(sd[j]) else float(sd[j]), "seeds": dict(zip(r.seeds, map(float, v[:, j])))}
                       for j, h in enumerate(heads)}
    return out


def paired(plan: StudyPlan, results: dict[str, dict]) -> list[dict]:
    """a − b on the seeds both runs have: per column the mean and std of the per-seed differences,
    and on the macro the wins of a and a paired t-test."""
    from scipy.stats import ttest_rel

    seeds = {r.name: r.seeds for r in plan.runs}
    out = []
    for a, b in plan.comparisons:
        shared = [s for s in seeds[a] if s in seeds[b]]
        ra, rb = [results[f"{a}-s{s}"] for s in shared], [results[f"{b}-s{s}"] for s in shared]
        heads = [h for h in _heads(ra) if h in _heads(rb)]
        va, vb = _matrix(ra, heads), _matrix(rb, heads)
        m, sd = _mean_std(list(va - vb))
        p = float(ttest_rel(va[:, -1], vb[:, -1]).pvalue) if len(shared) > 1 else None
        out.append({"a": a, "b": b, "seeds": shared, "wins": int((va[:, -1] > vb[:, -1]).sum()), "p": p,
                    "diff": {h: {"mean": float(m[j]), "std": None if np.isnan(sd[j]) else float(sd[j])} for j, h in enumerate(heads)}})
    return out


def summary_table(plan: StudyPlan, results: dict[str, dict], teachers: dict[str, dict]) -> str:
    summary = summarize(plan, results)
    heads = _heads(list(teachers.values()) + list(results.values()))
    lines = ["| model | seeds | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 2)]
    for name, r in teachers.items():
        v = row_values(r)
        lines.append(f"| {name} | 1 | " + " | ".join(f"{v[h]:.1f}" if h in v else "–" for h in heads) + " |")
    for r in plan.runs:
        c = summary[r.name]
        cells = [_cell(c[h]["mean"], np.nan if c[h]["std"] is None else c[h]["std"]) if h in c else "–" for h in heads]
        lines.append(f"| {r.name} | {len(r.seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(plan: StudyPlan, results: dict[str, dict]) -> str:
    rows = paired(plan, results)
    heads = _heads(list(results.values()))
    lines = ["| a − b | seeds | " + " | ".join(heads) + " | a wins (macro) | paired t-test p (macro) |",
             "|" + "---|" * (len(heads) + 4)]
    for c in rows:
        d = c["diff"]
        cells = [_cell(d[h]["mean"], np.nan if d[h]["std"] is None else d[h]["std"]) if h in d else "–" for h in heads]
        p = "nan" if c["p"] is None else f"{c['p']:.3f}"
        lines.append(f"| {c['a']} − {c['b']} | {len(c['seeds'])} | " + " | ".join(cells) + f" | {c['wins']}/{len(c['seeds'])} | {p} |")
    return "\n".join(lines)


def targets(plan: StudyPlan, teachers: dict[str, dict], pairs: list[dict], elapsed_min: float) -> list[dict]:
    """Every threshold the plan sets, as {name, value, target, met}."""
    out = []
    for s in plan.teachers.seeds:
        v = row_values(teachers[f"teacher-s{s}"])
        for col, floor in plan.targets.teacher_floors.items():
            out.append({"name": f"teacher-s{s} {col} >= floor", "value": round(v[col], 2), "target": floor, "met": bool(v[col] >= floor)})
    for a, b in plan.targets.kd_gain:
        c = next(c for c in pairs if (c["a"], c["b"]) == (a, b))
        gain, sd = c["diff"]["macro"]["mean"], c["diff"]["macro"]["std"] or 0.0
        out.append({"name": f"{a} − {b} macro > 2 x paired std ({len(c['seeds'])} seeds)", "value": round(gain, 2), "target": round(2 * sd, 2),
                    "met": bool(len(c["seeds"]) > 1 and gain > 2 * sd)})
    out.append({"name": "study elapsed wall-clock (min) <= budget", "value": round(elapsed_min, 1), "target": plan.targets.budget_min,
                "met": bool(elapsed_min <= plan.targets.budget_min)})
    return out


def curves(out: Path, plan: StudyPlan) -> dict[str, dict[str, list]]:
    """The teachers' dev curves: eval/<dataset>/<main metric> by update, the shared MTL step's updates first."""
    def read(run: str, offset: int) -> dict[str, list]:
        f = out / run / "metrics.jsonl"
        got: dict[str, list] = {}
        for line in (f.read_text().splitlines() if f.exists() else []):
            rec = json.loads(line)
            for k, v in rec.items():
                if k.startswith("eval/") and k.endswith(("/f1", "/accuracy", "/span_HasAns_f1")):
                    got.setdefault(k[5:], []).append((rec["step"] + offset, v))
        return got

    base = read("mtl", 0) if plan.pretrain is not None else {}
    shift = max((x for pts in base.values() for x, _ in pts), default=0)
    return {f"teacher-s{s}": {k: base.get(k, []) + pts for k, pts in read(f"teacher-s{s}", shift).items()} for s in plan.teachers.seeds}


def figure(path: Path, plan: StudyPlan, summary: dict, teachers: dict[str, dict], curve: dict) -> None:
    """Dev metric per variant (each seed a dot, the mean a bar), and the teachers' dev curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [h for h in _heads(list(teachers.values())) if h.endswith((" F1", " acc", "macro")) and "HasAns" not in h and "best" not in h]
    tasks = sorted({k for c in curve.values() for k in c})
    fig, axes = plt.subplots(2, max(len(cols), len(tasks)), figsize=(4 * max(len(cols), len(tasks)), 8.5), squeeze=False)
    names = list(teachers) + [r.name for r in plan.runs]
    for ax, col in zip(axes[0], cols):
        for y, name in enumerate(names):
            if name in teachers:
                v = row_values(teachers[name]).get(col)
                if v is not None:
                    ax.plot([v], [y], "D", color="tab:gray")
            elif col in summary[name]:
                c = summary[name][col]
                ax.barh(y, c["mean"], color="tab:blue", alpha=0.25)
                ax.plot(list(c["seeds"].values()), [y] * len(c["seeds"]), "o", color="tab:blue", ms=4)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"dev {col}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax, task in zip(axes[1], tasks):
        for t, c in curve.items():
            if task in c:
                xs, ys = zip(*c[task])
                ys = [100 * y if task.endswith("accuracy") else y for y in ys]
                ax.plot(xs, ys, "o-", ms=3, label=t)
        ax.set_title(f"teachers' dev {task}", fontsize=9)
        ax.set_xlabel("update (shared MTL step, then each teacher's own)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes[0][len(cols):]) + list(axes[1][len(tasks):]):
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def wall_table(steps: list[Step], wall: dict[str, float]) -> str:
    lines = ["| step | wall-clock s |", "|---|---|"]
    lines += [f"| {s.name} | {wall[s.name]:.0f} |" if s.name in wall else f"| {s.name} | (not timed by the runner) |" for s in steps]
    return "\n".join(lines)


def _machine() -> str:
    """The processor, its cores and the versions of torch, deepspeed and transformers."""
    import deepspeed
    import torch
    import transformers

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")


def _study_results(plan: StudyPlan, recipe: str, out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every student run's eval results by step name, and the teachers' (the MTL step first, the
    teachers' ensemble last)."""
    load = lambda name: json.loads((out / name / "eval_results.json").read_text())  # noqa: E731
    results = {f"{r.name}-s{seed}": load(f"{r.name}-s{seed}") for r in plan.runs for seed in r.seeds}
    teachers = {f"teacher-s{s}": load(f"teacher-s{s}") for s in plan.teachers.seeds}
    if plan.pretrain is not None:
        teachers = {"mtl": load("mtl")} | teachers
    teachers["teachers' ensemble"] = ensemble_scores(recipe, [store_dir(out, "main", s) for s in plan.teachers.seeds])
    return results, teachers


def _kept_reading(path: Path) -> str:
    """The reading between the markers of the results.md there is, or a placeholder."""
    old = path.read_text() if path.exists() else ""
    kept = READING.search(old)
    return kept.group(0) if kept else "<!-- reading -->\n(to be written after reading the tables)\n<!-- /reading -->"


def _example_commands(steps: list[Step], rel) -> str:
    """The commands of a few steps (the MTL step, a teacher, a store, a student), repo paths relative."""
    show = lambda name: " ".join(rel(c) if c.startswith(str(REPO)) else c for c in next(s.cmd for s in steps if s.name == name))  # noqa: E731
    examples = [s.name for s in steps if s.name in ("mtl", "teacher-s0", "store-s0", "l3-wkd-s0")]
    return "\n".join(show(n) for n in examples)


def write_results(path: Path, plan: StudyPlan, plan_path: Path, recipe: str, out: Path, steps, wall, jobs: int, elapsed_s: float) -> str:
    """docs/results.md (tables; the reading between its markers is kept across reruns), results.json
    (the same numbers and the targets) and results.png beside it."""
    from road_ds.recipe import load_recipe

    machine = _machine()
    results, teachers = _study_results(plan, recipe, out)
    summary, pairs = summarize(plan, results), paired(plan, results)
    goals = targets(plan, teachers, pairs, elapsed_s / 60)
    curve = curves(out, plan)
    figure(path.with_suffix(".png"), plan, summary, teachers, curve)
    reading = _kept_reading(path)
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    cmd = f"python -m road_ds.pipelines.study --plan {rel(plan_path)} --out {rel(out)} --results {rel(path)} --jobs {jobs}"
    total = sum(wall.get(s.name, 0.0) for s in steps)
    met = "\n".join(f"| {g['name']} | {g['value']} | {g['target']} | {'yes' if g['met'] else '**no**'} |" for g in goals)
    text = f"""# Quality study: ROaD's MTL step and weighted KD on the real data kit

Written by `make study` (`{cmd}`); rerun it to reproduce every number below (finished runs are skipped,
a killed run resumes; delete `{rel(out)}` to start over). The same numbers are in
`{rel(path.with_suffix('.json'))}`, the figure is `{rel(path.with_suffix('.png'))}`.
Plan: `{rel(plan_path)}`; recipe: `{rel(recipe)}`. Dev sets (the kit's, disjoint from train by article or by movie):
{", ".join(f"{d.name} ({d.limit.get(d.eval_split, 'all')} examples)" for d in load_recipe(recipe).datasets)}.
Cells are mean ± sample std over seeds (the run's seed: head init, data order, dropout); teachers are fixed.
QA columns: F1, EM, HasAns F1 and NoAns accuracy of the predictions as written; "best F1" is SQuAD 2.0's
best_f1 over the na-prob threshold, scored on each question's best non-null span.

Machine: {machine}; {jobs} runs at a time. Elapsed: {elapsed_s / 60:.0f} min (sum of step wall-clock {total / 60:.0f} min).

## Targets

| target | value | threshold | met |
|---|---|---|---|
{met}

## Results (dev)

{summary_table(plan, results, teachers)}

## Paired differences (same seed, same teachers)

{paired_table(plan, results)}

![dev metric per variant; teachers' dev curves]({path.with_suffix('.png').name})

{reading}

## Commands

Each step is a plain command (logs in `{rel(out)}/logs/`); for example:

```
{_example_commands(steps, rel)}
```

## Wall-clock per step

{wall_table(steps, wall)}
"""
    data = {"command": cmd, "plan": rel(plan_path), "recipe": rel(recipe), "machine": machine, "jobs": jobs,
            "elapsed_min": round(elapsed_s / 60, 1), "targets": goals,
            "teachers": {n: row_values(r) for n, r in teachers.items()}, "runs": summary, "paired": pairs,
            "teacher_curves": curve, "wall_s": wall}
    write_json(path.with_suffix(".json"), data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="road_ds.pipelines.study", description=__doc__.split("\n")[0])
    p.add_argument("--plan", default="recipes/study/runs.yaml")
    p.add_argument("--out", default="outputs/study")
    p.add_argument("--results", default="docs/results.md")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU threads are split between them)")
    args = p.parse_args(argv)
    plan_path = (REPO / args.plan).resolve()
    out = (REPO / args.out).resolve()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    try:
        plan = load_plan(plan_path)
        recipe = str((plan_path.parent / plan.recipe).resolve())
        steps, overrides, recipes = plan_steps(plan, recipe, out, plan_path.parent)
        from road_ds.features import build_features, load_tokenizer
        from road_ds.recipe import load_recipe

        tokenizers: dict = {}
        # every run's recipe must be valid before hours are spent, and its features built once, before
        # runs in parallel would race to build them (the stores' slices too)
        checks = [(recipes[n], o[1::2]) for n, o in overrides.items()]
        checks += [(recipe_path(plan_path.parent, st.recipe, recipe), sets(st.set)[1::2]) for st in plan.stores.values()]
        for path, o in checks:
            r = load_recipe(path, o)
            if r.model.tokenizer_path not in tokenizers:
                tokenizers[r.model.tokenizer_path] = load_tokenizer(r.model.tokenizer_path)
            tok = tokenizers[r.model.tokenizer_path]
            for d in r.datasets:
                for split in (d.train_split, d.eval_split):
                    build_features(r, d.name, split, tokenizer=tok, log=log)
    except DataError as e:
        print(f"road_ds.pipelines.study: error: {e}", file=sys.stderr)
        return 2
    elapsed_file = out / "logs" / "elapsed_s.json"  # summed over invocations, so a resumed study reports its whole time
    before = json.loads(elapsed_file.read_text())["elapsed_s"] if elapsed_file.exists() else 0.0
    pending = any(not s.done.exists() for s in steps)
    try:
        wall = run_steps(steps, out / "logs", jobs=args.jobs, log=log)
    finally:
        if pending:
            write_json(elapsed_file, {"elapsed_s": before + time.time() - t0})
    elapsed = before + (time.time() - t0 if pending else 0.0)
    text = write_results((REPO / args.results).resolve(), plan, plan_path, recipe, out, steps, wall, args.jobs, elapsed)
    print(text)
    log(f"study done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
