"""Pipelines of runs (the demo, the study): steps as subprocesses, a few at a time, skipped once done.

A step is finished when its marker file exists (a run's `eval_results.json`, a store's `manifest.json`),
so a killed pipeline reruns only what is missing; the trainer and the precompute resume inside a step.
A runner stopped by SIGTERM or Ctrl-C passes SIGTERM to its steps (the trainer checkpoints on it) and
waits for them, so no step outlives it to race the rerun's copy of itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from road_ds.atomic import write_json

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Step:
    name: str
    cmd: list[str]
    done: Path  # exists once the step has finished
    after: list[str] = field(default_factory=list)  # names of the steps it needs


def deepspeed_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("deepspeed")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deepspeed.launcher.runner"]


def _last_progress(log_file: Path) -> str:
    """The last line (or progress-bar frame) a step wrote to its log: what it is doing now."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    frames = [f.strip() for f in tail.replace("\r", "\n").split("\n") if f.strip()]
    return frames[-1][:160] if frames else ""


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _stop(running: dict, partial: dict, partial_file: Path, log) -> None:
    """Tell every running step to stop, wait for it (a trainer saves a checkpoint first), and keep the
    time each had run, which the rerun that finishes it adds to its wall-clock."""
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, (proc, t0, _) in running.items():
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        partial[name] = round(partial.get(name, 0.0) + time.time() - t0, 1)
        log(f"[{time.strftime('%H:%M:%S')}] stopped {name} after {time.time() - t0:.0f} s (exit {proc.returncode}); a rerun resumes it")
    if running:
        write_json(partial_file, partial)


def run_steps(steps: list[Step], logs: Path, jobs: int = 1, log=print, progress_every: float = 30.0) -> dict[str, float]:
    """Run the unfinished steps, `jobs` at a time, each after the steps it needs; CPU threads are split
    between them. Every `progress_every` seconds a line per running step says where it is (stage k of
    n, its elapsed time, the last line of its log), so a long step is never silent. Returns each
    step's wall-clock seconds (also kept in `logs/wall_s.json`; a step stopped and resumed counts both)."""
    logs.mkdir(parents=True, exist_ok=True)
    wall_file, partial_file = logs / "wall_s.json", logs / "partial_s.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    partial = json.loads(partial_file.read_text()) if partial_file.exists() else {}
    names = {s.name for s in steps}
    for s in steps:
        missing = [a for a in s.after if a not in names]
        if missing:
            raise ValueError(f"step {s.name} needs unknown steps {missing}")
    pending = [s for s in steps if not s.done.exists()]
    finished = {s.name for s in steps if s.done.exists()}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if jobs > 1:  # share the cores instead of oversubscribing them
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env |= {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    running: dict[str, tuple[subprocess.Popen, float, Step]] = {}
    failed: list[str] = []
    number = {s.name: i + 1 for i, s in enumerate(steps)}
    stage = lambda s: f"stage {number[s.name]}/{len(steps)} {s.name}"  # noqa: E731
    t_start = t_said = time.time()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        while pending or running:
            ready = [s for s in pending if all(a in finished for a in s.after)]
            while ready and len(running) < jobs and not failed:
                s = ready.pop(0)
                pending.remove(s)
                log(f"[{time.strftime('%H:%M:%S')}] start {stage(s)}: {' '.join(s.cmd)}")
                with open(logs / f"{s.name}.log", "a") as fh:
                    running[s.name] = (subprocess.Popen(s.cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT), time.time(), s)
            if not running:
                if failed or pending:
                    break
                continue
            time.sleep(0.5)
            if time.time() - t_said >= progress_every:
                t_said = time.time()
                for name, (_, t0, s) in running.items():
                    log(f"[{time.strftime('%H:%M:%S')}] {stage(s)}: {t_said - t0:.0f} s (total {t_said - t_start:.0f} s) | {_last_progress(logs / f'{name}.log')}")
            for name, (proc, t0, s) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode != 0 or not s.done.exists():
                    failed.append(name)
                    log(f"step {name} failed (exit {proc.returncode}); its log: {logs / (name + '.log')}")
                    continue
                finished.add(name)
                wall[name] = round(partial.pop(name, 0.0) + time.time() - t0, 1)
                write_json(wall_file, wall)
                write_json(partial_file, partial)
                log(f"[{time.strftime('%H:%M:%S')}] done {stage(s)} in {wall[name]:.0f} s (total {time.time() - t_start:.0f} s)")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(running, partial, partial_file, log)
    if failed:
        tail = (logs / f"{failed[0]}.log").read_text()[-4000:]
        sys.stderr.write(tail)
        raise SystemExit(f"failed: {', '.join(failed)} (logs in {logs}); rerun to resume")
    if pending:
        raise SystemExit(f"steps that could not start: {[s.name for s in pending]}")
    return wall


def ensemble_scores(recipe_path: str, stores: list[Path], overrides: list[str] = ()) -> dict:
    """The teachers' ensemble on the dev splits: the mean of their log-probabilities, decoded and scored.
    `overrides` are the `--set` values the stores were made with (their features)."""
    from road_ds.batching import collate
    from road_ds.evaluate import macro, score
    from road_ds.features import build_features, load_tokenizer
    from road_ds.loader import teacher_targets
    from road_ds.recipe import load_recipe
    from road_ds.store import TeacherSet

    recipe = load_recipe(recipe_path, list(overrides))
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


def row_values(r: dict) -> dict[str, float]:
    """One run's eval results as table columns (percent): per QA set F1, EM, HasAns F1, NoAns accuracy
    (the predictions as written) and, for SQuAD 2.0, the best F1 of its best non-null spans over the
    na-prob threshold; per classification set accuracy; then the macro average."""
    cols = {}
    for name, v in r.items():
        if not isinstance(v, dict):
            continue
        if "f1" in v:
            cols |= {f"{name} F1": v["f1"], f"{name} EM": v["exact"], f"{name} HasAns F1": v.get("HasAns_f1", 0.0),
                     f"{name} NoAns acc": v.get("NoAns_exact", 0.0)}
            if "span_best_f1" in v:  # best non-null spans at the best na-prob threshold (SQuAD 2.0's best_f1)
                cols[f"{name} best F1"] = v["span_best_f1"]
        else:
            cols[f"{name} acc"] = 100 * v["accuracy"]
    cols["macro"] = 100 * r["macro"]
    return cols


def all_null(results: dict) -> dict[str, float]:
    """F1 of answering "no answer" everywhere, per QA dev set of one run's results (the unanswerable share)."""
    return {n: 100.0 * r["NoAns_total"] / r["total"] for n, r in results.items() if isinstance(r, dict) and r.get("NoAns_total") is not None}


def table(rows: dict[str, dict]) -> str:
    """A markdown table of runs' eval results; a run without a column's dataset shows "–" there."""
    values = {name: row_values(r) for name, r in rows.items()}
    heads = list(dict.fromkeys(h for v in values.values() for h in v if h != "macro")) + ["macro"]
    lines = ["| model | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 1)]
    for name, v in values.items():
        lines.append(f"| {name} | " + " | ".join(f"{v[h]:.1f}" if h in v else "–" for h in heads) + " |")
    return "\n".join(lines)
