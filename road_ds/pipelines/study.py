"""A study's report (`road-ds pipeline report PLAN --results docs/results.md`): do ROaD's multi-task step
and weighted KD help, on the real data kit?

The study is a pipeline plan (recipes/study/plan.yaml) with a `study:` block: its teachers (and their
shared MTL step), its variants (every other train stage, each over its seeds) and the comparisons and
targets to report. `road-ds pipeline run` trains it like any plan; this writes docs/results.md (mean ±
std over seeds, paired differences on shared seeds, the targets, wall-clock per job; the reading between
its markers is kept across reruns), docs/results.json (the same numbers) and docs/results.png (the figure).
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import numpy as np

from road_ds.atomic import write_json
from road_ds.errors import DataError
from road_ds.pipelines.plan import Plan, ensemble_dev_missing, set_args, stage_recipe, stage_spec, steps, variants
from road_ds.pipelines.runs import REPO, Step, ensemble_scores, row_values

READING = re.compile(r"<!-- reading -->.*?<!-- /reading -->", re.S)


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


def summarize(plan: Plan, results: dict[str, dict]) -> dict[str, dict]:
    """Per variant: each column's mean, sample std and per-seed values."""
    out = {}
    for name, runs in variants(plan).items():
        rows = [results[run] for run in runs.values()]
        heads = _heads(rows)
        v = _matrix(rows, heads)
        m, sd = _mean_std(list(v))
        out[name] = {h: {"mean": float(m[j]), "std": None if np.isnan(sd[j]) else float(sd[j]), "seeds": dict(zip(runs, map(float, v[:, j])))}
                     for j, h in enumerate(heads)}
    return out


def paired(plan: Plan, results: dict[str, dict]) -> list[dict]:
    """a − b on the seeds both variants have: per column the mean and std of the per-seed differences,
    and on the macro the wins of a and a paired t-test."""
    from scipy.stats import ttest_rel

    runs = variants(plan)
    out = []
    for a, b in plan.spec.study.comparisons:
        shared = [s for s in runs[a] if s in runs[b]]
        ra, rb = [results[runs[a][s]] for s in shared], [results[runs[b][s]] for s in shared]
        heads = [h for h in _heads(ra) if h in _heads(rb)]
        va, vb = _matrix(ra, heads), _matrix(rb, heads)
        m, sd = _mean_std(list(va - vb))
        p = float(ttest_rel(va[:, -1], vb[:, -1]).pvalue) if len(shared) > 1 else None
        out.append({"a": a, "b": b, "seeds": shared, "wins": int((va[:, -1] > vb[:, -1]).sum()), "p": p,
                    "diff": {h: {"mean": float(m[j]), "std": None if np.isnan(sd[j]) else float(sd[j])} for j, h in enumerate(heads)}})
    return out


def summary_table(plan: Plan, results: dict[str, dict], teachers: dict[str, dict]) -> str:
    summary = summarize(plan, results)
    heads = _heads(list(teachers.values()) + list(results.values()))
    lines = ["| model | seeds | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 2)]
    for name, r in teachers.items():
        v = row_values(r)
        lines.append(f"| {name} | 1 | " + " | ".join(f"{v[h]:.1f}" if h in v else "–" for h in heads) + " |")
    for name, runs in variants(plan).items():
        c = summary[name]
        cells = [_cell(c[h]["mean"], np.nan if c[h]["std"] is None else c[h]["std"]) if h in c else "–" for h in heads]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(plan: Plan, results: dict[str, dict]) -> str:
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


def targets(plan: Plan, teachers: dict[str, dict], pairs: list[dict], elapsed_min: float) -> list[dict]:
    """Every threshold the study sets, as {name, value, target, met}."""
    study, out = plan.spec.study, []
    for inst in plan.instances[study.teachers]:
        v = row_values(teachers[inst.name])
        for col, floor in study.teacher_floors.items():
            out.append({"name": f"{inst.name} {col} >= floor", "value": round(v[col], 2), "target": floor, "met": bool(v[col] >= floor)})
    for a, b in study.kd_gain:
        c = next(c for c in pairs if (c["a"], c["b"]) == (a, b))
        gain, sd = c["diff"]["macro"]["mean"], c["diff"]["macro"]["std"] or 0.0
        out.append({"name": f"{a} − {b} macro > 2 x paired std ({len(c['seeds'])} seeds)", "value": round(gain, 2), "target": round(2 * sd, 2),
                    "met": bool(len(c["seeds"]) > 1 and gain > 2 * sd)})
    out.append({"name": "study elapsed wall-clock (min) <= budget", "value": round(elapsed_min, 1), "target": study.budget_min,
                "met": bool(elapsed_min <= study.budget_min)})
    return out


def curves(plan: Plan) -> dict[str, dict[str, list]]:
    """The teachers' dev curves: eval/<dataset>/<main metric> by update, the shared MTL step's updates first."""
    def read(run: Path, offset: int) -> dict[str, list]:
        f = run / "metrics.jsonl"
        got: dict[str, list] = {}
        for line in (f.read_text().splitlines() if f.exists() else []):
            rec = json.loads(line)
            for k, v in rec.items():
                if k.startswith("eval/") and k.endswith(("/f1", "/accuracy", "/span_HasAns_f1")):
                    got.setdefault(k[5:], []).append((rec["step"] + offset, v))
        return got

    study = plan.spec.study
    base = read(plan.instances[study.pretrain][0].out, 0) if study.pretrain else {}
    shift = max((x for pts in base.values() for x, _ in pts), default=0)
    return {t.name: {k: base.get(k, []) + pts for k, pts in read(t.out, shift).items()} for t in plan.instances[study.teachers]}


def figure(path: Path, names: list[str], summary: dict, teachers: dict[str, dict], curve: dict) -> None:
    """Dev metric per variant (each seed a dot, the mean a bar), and the teachers' dev curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [h for h in _heads(list(teachers.values())) if h.endswith((" F1", " acc", "macro")) and "HasAns" not in h and "best" not in h]
    tasks = sorted({k for c in curve.values() for k in c})
    fig, axes = plt.subplots(2, max(len(cols), len(tasks)), figsize=(4 * max(len(cols), len(tasks)), 8.5), squeeze=False)
    names = list(teachers) + names
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


def wall_table(todo: list[Step], wall: dict[str, float]) -> str:
    lines = ["| step | wall-clock s |", "|---|---|"]
    lines += [f"| {s.name} | {wall[s.name]:.0f} |" if s.name in wall else f"| {s.name} | (not timed by the runner) |" for s in todo]
    return "\n".join(lines)


def _machine() -> str:
    """The processor, its cores and the versions of torch, deepspeed and transformers."""
    import deepspeed
    import torch
    import transformers

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")


def study_results(plan: Plan) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every variant run's eval results by run name, and the teachers' (their MTL step first, their
    ensemble last); a job not finished yet is an error naming it."""
    study = plan.spec.study
    jobs = [i for st in plan.spec.stages if st.run == "train" for i in plan.instances[st.name]]
    missing = [i.name for i in jobs if not i.done.exists()]
    if missing:
        raise DataError(plan.path, f"not finished yet: {', '.join(missing)} (run the plan first: road-ds pipeline run {plan.path})")
    load = {i.name: json.loads(i.done.read_text()) for i in jobs}
    results = {run: load[run] for runs in variants(plan).values() for run in runs.values()}
    teachers = {i.name: load[i.name] for i in ([*plan.instances[study.pretrain]] if study.pretrain else []) + plan.instances[study.teachers]}
    if study.ensemble:
        st = stage_spec(plan.spec, study.ensemble)
        undone = ensemble_dev_missing(plan, st)
        if undone:
            raise DataError(plan.path, f"stage '{st.name}' stores no dev split of {', '.join(undone)} (its splits: {st.splits})", field="study.ensemble")
        teachers["teachers' ensemble"] = ensemble_scores(plan.recipe(st), [i.out for i in plan.instances[st.name]], set_args(st.set))
    return results, teachers


def _kept_reading(path: Path) -> str:
    """The reading between the markers of the results.md there is, or a placeholder."""
    old = path.read_text() if path.exists() else ""
    kept = READING.search(old)
    return kept.group(0) if kept else "<!-- reading -->\n(to be written after reading the tables)\n<!-- /reading -->"


def _example_commands(todo: list[Step]) -> str:
    """The commands of a few jobs (the MTL step, a teacher, a store, a KD student), repo paths relative,
    also inside an argument (a KD run's store list)."""
    show = lambda s: " ".join(c.replace(f"{REPO}{os.sep}", "") for c in s.cmd)  # noqa: E731
    picked, kinds = [], set()
    for s in todo:
        kind = "precompute" if "precompute.py" in " ".join(s.cmd) else "kd" if "kd.teachers=" in " ".join(s.cmd) else "train"
        if kind not in kinds or (kind == "train" and len(picked) < 2):
            kinds.add(kind)
            picked.append(show(s))
    return "\n".join(picked)


def write_results(plan: Plan, path: Path) -> str:
    """docs/results.md (tables; the reading between its markers is kept across reruns), results.json
    (the same numbers and the targets) and results.png beside it."""
    if plan.spec.study is None:
        raise DataError(plan.path, "the plan has no `study:` block: nothing to write (plain `report` prints its table)", field="study")
    machine = _machine()
    results, teachers = study_results(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    logs = plan.out / "logs"
    wall = json.loads((logs / "wall_s.json").read_text()) if (logs / "wall_s.json").exists() else {}
    ran = json.loads((logs / "elapsed_s.json").read_text()) if (logs / "elapsed_s.json").exists() else {}
    elapsed_s, jobs = ran.get("elapsed_s", 0.0), ran.get("jobs", 1)
    summary, pairs = summarize(plan, results), paired(plan, results)
    goals = targets(plan, teachers, pairs, elapsed_s / 60)
    curve = curves(plan)
    figure(path.with_suffix(".png"), list(variants(plan)), summary, teachers, curve)
    reading = _kept_reading(path)
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    cmd = f"road-ds pipeline run {rel(plan.path)} --jobs {jobs} && road-ds pipeline report {rel(plan.path)} --results {rel(path)}"
    todo = steps(plan)
    total = sum(wall.get(s.name, 0.0) for s in todo)
    met = "\n".join(f"| {g['name']} | {g['value']} | {g['target']} | {'yes' if g['met'] else '**no**'} |" for g in goals)
    study = stage_spec(plan.spec, plan.spec.study.teachers)
    dev = stage_recipe(plan, study).datasets
    text = f"""# Quality study: ROaD's MTL step and weighted KD on the real data kit

Written by `make study` (`{cmd}`); rerun it to reproduce every number below (finished jobs are skipped,
a killed job resumes; delete `{rel(plan.out)}` to start over). The same numbers are in
`{rel(path.with_suffix('.json'))}`, the figure is `{rel(path.with_suffix('.png'))}`.
Plan: `{rel(plan.path)}`. Dev sets (the kit's, disjoint from train by article or by movie):
{", ".join(f"{d.name} ({d.limit.get(d.eval_split, 'all')} examples)" for d in dev)}.
Cells are mean ± sample std over seeds (the run's seed: head init, data order, dropout); teachers are fixed.
QA columns: F1, EM, HasAns F1 and NoAns accuracy of the predictions as written; "best F1" is SQuAD 2.0's
best_f1 over the na-prob threshold, scored on each question's best non-null span.

Machine: {machine}; {jobs} job{'s' if jobs > 1 else ''} at a time. Elapsed: {elapsed_s / 60:.0f} min (sum of job wall-clock {total / 60:.0f} min).

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

Each job is a plain command (logs in `{rel(plan.out)}/logs/`); for example:

```
{_example_commands(todo)}
```

## Wall-clock per job

{wall_table(todo, wall)}
"""
    data = {"command": cmd, "plan": rel(plan.path), "machine": machine, "jobs": jobs, "elapsed_min": round(elapsed_s / 60, 1), "targets": goals,
            "teachers": {n: row_values(r) for n, r in teachers.items()}, "runs": summary, "paired": pairs,
            "teacher_curves": curve, "wall_s": wall}
    write_json(path.with_suffix(".json"), data)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text
