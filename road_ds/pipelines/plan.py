"""Pipeline plans (`road-ds pipeline check|run|submit PLAN`): ROaD's stages as one declared, checked plan.

A plan is a YAML list of stages, each a job (train, precompute, evaluate, export) over a recipe with
overrides. Stages name the earlier stages they use: `init_from` (a train stage whose export this run
starts from), `kd` (a precompute stage whose stores are this run's teachers), `teachers` (the train
stage a precompute runs) and `model` (what evaluate / export read); `after:` adds plain ordering.
A stage with `seeds` fans out, one run per seed (`train.seed`); stages that use it follow its seeds.
Outputs are named by stage under the plan's `out`: OUT/<stage>[-s<seed>], a store OUT/<stage>/<teacher run>.

`check` validates every stage before any compute (recipes with their overrides, references, that a
KD stage's stores are made on the features it reads, the inputs it can reach); `run` runs the plan
here (finished stages skipped, a killed one resumes: the jobs resume by themselves); `submit` sends
it to Slurm as jobs chained with --dependency=afterok (a fanned-out stage as one array); `report`
prints the dev results of its finished jobs as one table.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from road_ds.atomic import write_json
from road_ds.errors import DataError, run_job
from road_ds.pipelines.runs import REPO, Step, deepspeed_cmd, run_steps
from road_ds.recipe import _looks_local, load_recipe

NAME = r"^[A-Za-z0-9_.-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageSpec(_Strict):
    name: str = Field(pattern=NAME)
    run: Literal["train", "precompute", "evaluate", "export"]
    recipe: str | None = None  # relative to the plan; export needs none
    set: dict[str, object] = {}  # recipe overrides, as `--set key=value`
    after: list[str] = []
    seeds: list[int] = []  # train: one run per seed
    init_from: str | None = None  # train: a train stage (same seed when both fan out)
    kd: str | None = None  # train: a precompute stage; its stores become kd.teachers
    kd_seeds: list[int] = []  # train: only the stores of these teacher seeds (default: every one)
    teachers: str | None = None  # precompute: the train stage whose exports it runs
    splits: list[str] = Field(["train"], min_length=1)  # precompute
    top_k: int = Field(8, ge=0)  # precompute: 0 keeps the whole support
    model: str | None = None  # evaluate / export: a train stage
    ranks: int = Field(1, ge=1)  # train / precompute: processes (deepspeed locally, srun tasks on Slurm)


class StudySpec(_Strict):
    """What `report --results` writes for a study (docs/results.md, .json, .png): every train stage
    but the teachers and their MTL step is a variant, with mean ± std over its seeds."""

    teachers: str  # a train stage: its runs are the teachers, each held to teacher_floors
    pretrain: str | None = None  # a train stage: the teachers' shared MTL step (its dev curve leads theirs)
    ensemble: str | None = None  # a precompute stage with the dev splits: the teachers' ensemble row
    comparisons: list[tuple[str, str]] = []  # (a, b): a − b on the seeds both have, paired
    teacher_floors: dict[str, float] = {}  # results column (e.g. "squad2 HasAns F1") -> each teacher's floor
    kd_gain: list[tuple[str, str]] = []  # comparisons whose macro gain must exceed twice its paired std
    budget_min: float = 120.0  # the plan's elapsed wall-clock on this machine


class PlanSpec(_Strict):
    out: str = "outputs/plan"  # relative to the directory the plan is run from
    ds_config: str = "ds_configs/zero2.json"
    sbatch: list[str] = []  # extra sbatch options for every job (partition, account, time)
    stages: list[StageSpec] = Field(min_length=1)
    study: StudySpec | None = None


@dataclass
class Instance:
    """One job of a stage: a seed's run, one teacher's store, one evaluation."""

    stage: StageSpec
    name: str  # OUT/<name> is its output
    out: Path
    seed: int | None = None
    sets: list[str] = field(default_factory=list)  # the stage's overrides plus what the plan wires in
    teacher: Path | None = None  # precompute: the export it runs
    model: Path | None = None  # evaluate / export: the run it reads
    reads: list[Path] = field(default_factory=list)  # the outputs of the other jobs it reads (what it waits for)

    @property
    def done(self) -> Path:
        return self.out / {"train": "eval_results.json", "precompute": "manifest.json", "evaluate": "metrics.json",
                           "export": "road_ds_export.json"}[self.stage.run]


@dataclass
class Plan:
    path: Path
    spec: PlanSpec
    out: Path
    instances: dict[str, list[Instance]]  # stage name -> its jobs, in plan order

    def recipe(self, stage: StageSpec) -> str:
        return str((self.path.parent / stage.recipe).resolve())


def set_args(d: dict) -> list[str]:
    """`set:` as --set arguments (values as YAML flow text, which the recipe loader parses back)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in d.items()]


def load_plan(path: str | Path, out: str | None = None) -> Plan:
    """Parse a plan and wire its stages into jobs; a bad field or reference names the stage and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise DataError(path, f"cannot read plan: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"malformed YAML: {getattr(e, 'problem', e)}") from None
    try:
        spec = PlanSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = list(err["loc"])
        if loc[:1] == ["stages"] and len(loc) > 1 and isinstance(raw, dict) and isinstance(loc[1], int):
            loc[1] = (raw["stages"][loc[1]] or {}).get("name", loc[1]) if isinstance(raw["stages"][loc[1]], dict) else loc[1]
        raise DataError(path, "unknown field" if err["type"] == "extra_forbidden" else err["msg"], field=".".join(map(str, loc))) from None
    plan = Plan(path, spec, Path(out or spec.out).resolve(), {})
    for st in spec.stages:
        where = f"stages.{st.name}"
        if st.name in plan.instances:
            raise DataError(path, "a stage of this name comes earlier", field=f"{where}.name")
        for ref, kinds in (("init_from", ("train",)), ("kd", ("precompute",)), ("teachers", ("train",)), ("model", ("train",))):
            target = getattr(st, ref)
            if target is None:
                continue
            if target not in plan.instances:
                raise DataError(path, f"'{target}' is no earlier stage (earlier: {', '.join(plan.instances) or 'none'})", field=f"{where}.{ref}")
            if stage_spec(spec, target).run not in kinds:
                raise DataError(path, f"'{target}' is a {stage_spec(spec, target).run} stage; {ref} needs a {' or '.join(kinds)} stage", field=f"{where}.{ref}")
        for a in st.after:
            if a not in plan.instances:
                raise DataError(path, f"'{a}' is no earlier stage", field=f"{where}.after")
        allowed = {"train": {"recipe", "seeds", "init_from", "kd", "kd_seeds", "ranks"}, "precompute": {"recipe", "teachers", "splits", "top_k", "ranks"},
                   "evaluate": {"recipe", "model"}, "export": {"model"}}[st.run]
        for f in ("seeds", "init_from", "kd", "kd_seeds", "teachers", "model", "recipe"):
            if getattr(st, f) and f not in allowed:
                raise DataError(path, f"a {st.run} stage has no `{f}`", field=f"{where}.{f}")
        need = {"train": ["recipe"], "precompute": ["recipe", "teachers"], "evaluate": ["recipe", "model"], "export": ["model"]}[st.run]
        for f in need:
            if not getattr(st, f):
                raise DataError(path, f"a {st.run} stage needs `{f}`", field=f"{where}.{f}")
        if st.kd_seeds:
            if not st.kd:
                raise DataError(path, "kd_seeds picks stores of the `kd` stage: name one", field=f"{where}.kd_seeds")
            have = [i.seed for i in plan.instances[st.kd]]
            if [s for s in st.kd_seeds if s not in have]:
                raise DataError(path, f"stage '{st.kd}' has stores of teacher seeds {have}, not {st.kd_seeds}", field=f"{where}.kd_seeds")
        plan.instances[st.name] = _instances(plan, st)
    if spec.study is not None:
        _check_study(plan)
    return plan


def _check_study(plan: Plan) -> None:
    """The study's references: its teachers and MTL step are train stages, its ensemble a precompute stage,
    its comparisons name variants, its KD-gain targets are comparisons."""
    study, where = plan.spec.study, "study"
    for ref, kind in (("teachers", "train"), ("pretrain", "train"), ("ensemble", "precompute")):
        name = getattr(study, ref)
        if name is not None and (name not in plan.instances or stage_spec(plan.spec, name).run != kind):
            raise DataError(plan.path, f"'{name}' is no {kind} stage of this plan", field=f"{where}.{ref}")
    names = set(variants(plan))
    for i, pair in enumerate(study.comparisons):
        for name in pair:
            if name not in names:
                raise DataError(plan.path, f"'{name}' is no variant (train stages but the teachers and their MTL step: "
                                f"{', '.join(variants(plan))})", field=f"{where}.comparisons.{i}")
    for i, pair in enumerate(study.kd_gain):
        if tuple(pair) not in [tuple(c) for c in study.comparisons]:
            raise DataError(plan.path, f"{list(pair)} is not among the comparisons", field=f"{where}.kd_gain.{i}")


def variants(plan: Plan) -> dict[str, dict[int, str]]:
    """A study's variants (its train stages but the teachers and their MTL step): per seed its run's name
    (a stage without seeds has one run, seed 0)."""
    skip = {plan.spec.study.teachers, plan.spec.study.pretrain} if plan.spec.study else set()
    return {st.name: {(i.seed if i.seed is not None else 0): i.name for i in plan.instances[st.name]}
            for st in plan.spec.stages if st.run == "train" and st.name not in skip}


def stage_spec(spec: PlanSpec, name: str) -> StageSpec:
    """The stage of that name (the plan's load has checked that every reference names one)."""
    return next(s for s in spec.stages if s.name == name)


def _instances(plan: Plan, st: StageSpec) -> list[Instance]:
    out = plan.out
    if st.run == "precompute":
        return [Instance(st, f"{st.name}/{t.name}", out / st.name / t.name, t.seed, set_args(st.set), teacher=t.out / "export", reads=[t.out])
                for t in plan.instances[st.teachers]]
    if st.run in ("evaluate", "export"):
        return [Instance(st, f"{st.name}/{m.name}", out / st.name / m.name, m.seed, set_args(st.set), model=m.out, reads=[m.out])
                for m in plan.instances[st.model]]
    insts = []
    for seed in st.seeds or [None]:
        init, stores = _train_inputs(plan, st, seed)
        insts.append(Instance(st, _run_name(st, seed), out / _run_name(st, seed), seed, _train_sets(st, seed, init, stores),
                              reads=[*([init] if init else []), *stores]))
    return insts


def _run_name(st: StageSpec, seed) -> str:
    return st.name if seed is None else f"{st.name}-s{seed}"


def train_sets(plan: Plan, st: StageSpec, seed) -> list[str]:
    """A train run's overrides: the stage's, then its seed, the export it starts from and its teachers.
    `seed` may be the text "{seed}", which slurm/train_road.sh replaces per array task."""
    return _train_sets(st, seed, *_train_inputs(plan, st, seed))


def _train_sets(st: StageSpec, seed, init: Path | None, stores: list[Path]) -> list[str]:
    sets = set_args(st.set) + ([f"train.seed={seed}"] if seed is not None else [])
    if init:
        sets.append(f"model.init_from={init / 'export'}")
    if st.kd:
        sets.append(f"kd.teachers={json.dumps([str(s) for s in stores])}")
    return sets


def _train_inputs(plan: Plan, st: StageSpec, seed) -> tuple[Path | None, list[Path]]:
    """The run a train run starts from (`init_from`: the one of its seed, or the stage's only one) and
    the stores it distils from (`kd`, those of `kd_seeds` if given)."""
    init = None
    if st.init_from:
        src = stage_spec(plan.spec, st.init_from)
        if src.seeds and not (st.seeds or len(src.seeds) == 1):
            raise DataError(plan.path, f"'{src.name}' has runs for seeds {src.seeds}: give this stage seeds to pair them", field=f"stages.{st.name}.init_from")
        if src.seeds and st.seeds and not isinstance(seed, str) and seed not in src.seeds:
            raise DataError(plan.path, f"'{src.name}' has no run for seed {seed} (its seeds: {src.seeds})", field=f"stages.{st.name}.init_from")
        paired = seed if src.seeds and st.seeds else (src.seeds[0] if src.seeds else None)
        init = plan.out / _run_name(src, paired)
    stores = [s.out for s in plan.instances[st.kd] if not st.kd_seeds or s.seed in st.kd_seeds] if st.kd else []
    return init, stores


def needs(plan: Plan, st: StageSpec) -> list[str]:
    """The stages a stage waits for: its references and its `after`."""
    refs = [st.init_from, st.kd, st.teachers, st.model, *st.after]
    return list(dict.fromkeys(r for r in refs if r))


# ---------------------------------------------------------------------------- check


def stage_recipe(plan: Plan, st: StageSpec):
    """A stage's recipe with its first job's overrides (its jobs differ only in seed, export and stores)."""
    try:
        return load_recipe(plan.recipe(st), plan.instances[st.name][0].sets)
    except DataError as e:
        raise DataError(plan.path, f"its recipe does not load: {e}", field=f"stages.{st.name}.recipe") from None


def ensemble_dev_missing(plan: Plan, st: StageSpec) -> list[str]:
    """The datasets of a precompute stage whose dev split it does not store (no ensemble row without them)."""
    return [d.name for d in stage_recipe(plan, st).datasets if d.eval_split not in st.splits]


def check(plan: Plan) -> list[str]:
    """Validate every stage before any compute; returns the inputs it could not reach (and why)."""
    from road_ds.features import fingerprint_key

    unreachable: dict[str, list[str]] = {}  # input -> the stages that need it
    recipes = {}
    for st in plan.spec.stages:
        if not st.recipe:
            continue
        recipes[st.name] = r = stage_recipe(plan, st)
        missing = []
        for i in dict.fromkeys((r.model.name_or_path, r.model.tokenizer_path)):
            if i and not _looks_local(i):
                missing.append(f"model '{i}' is a hub id (needs the network at the first load)")
            elif i and not Path(i).exists():
                missing.append(f"{i}: not found")
        for d in r.datasets:
            if d.format == "hub":
                missing.append(f"dataset '{d.hub_path}' is on the hub (needs the network)")
                continue
            missing += [f"{f}: not found (dataset {d.name}, {split})" for split in d.files for f in d.split_files(split) if not Path(f).exists()]
        for m in missing:
            unreachable.setdefault(m, []).append(st.name)
    for st in plan.spec.stages:  # a KD stage reads its stores on the very features they were made on
        if st.run != "train" or not st.kd:
            continue
        student, store_stage = recipes[st.name], stage_spec(plan.spec, st.kd)
        made = recipes[st.kd]
        for d in student.datasets:
            if not student.kd_for(d.name) or d.train_split is None:
                continue
            if d.name not in {x.name for x in made.datasets}:
                raise DataError(plan.path, f"dataset '{d.name}' has KD but stage '{st.kd}' makes no stores for it", field=f"stages.{st.name}.kd")
            if d.train_split not in store_stage.splits:
                raise DataError(plan.path, f"stage '{st.kd}' covers splits {store_stage.splits}, not '{d.train_split}' of dataset '{d.name}'",
                                field=f"stages.{st.name}.kd")
            keys = [fingerprint_key(x.dataset(d.name), d.train_split, x.model.tokenizer_path, x.dataset(d.name).feature_params(x.features),
                                    x.dataset(d.name).split_files(d.train_split)) for x in (student, made)]
            if keys[0] != keys[1]:
                diff = [f"{k}: {keys[0].get(k)} here, {keys[1].get(k)} in '{st.kd}'" for k in sorted(set(keys[0]) | set(keys[1])) if keys[0].get(k) != keys[1].get(k)]
                raise DataError(plan.path, f"dataset '{d.name}' ({d.train_split}) reads other features than stage '{st.kd}' made its stores on: "
                                + "; ".join(diff), field=f"stages.{st.name}.kd")
    return [f"{m} (stages {', '.join(names)})" for m, names in unreachable.items()]


# ---------------------------------------------------------------------------- run here


def command(plan: Plan, inst: Instance) -> list[str]:
    """The job's command line on this machine (the Slurm jobs run the same programs)."""
    py, st = sys.executable, inst.stage
    sets = [a for s in inst.sets for a in ("--set", s)]
    if st.run == "train":
        head = [*deepspeed_cmd(), "--num_gpus", str(st.ranks), "road_ds/train.py", "--deepspeed", str(Path(plan.spec.ds_config).resolve())] \
            if st.ranks > 1 else [py, "road_ds/train.py"]
        return [*head, "--recipe", plan.recipe(st), "--output-dir", str(inst.out), *sets]
    if st.run == "precompute":
        head = [*deepspeed_cmd(), "--num_gpus", str(st.ranks), "road_ds/precompute.py"] if st.ranks > 1 else [py, "road_ds/precompute.py"]
        splits = [a for s in st.splits for a in ("--split", s)]
        return [*head, plan.recipe(st), *sets, "--teacher", str(inst.teacher), "--out", str(inst.out), "--top-k", str(st.top_k), *splits]
    if st.run == "evaluate":
        return [py, "road_ds/evaluate.py", plan.recipe(st), *sets, "--model", str(inst.model / "export"), "--out", str(inst.out)]
    return [py, "road_ds/export.py", str(inst.model), str(inst.out), "--standalone"]


def build_features_first(plan: Plan, log) -> None:
    """Every stage's features, built once before stages run side by side and would each build them."""
    from road_ds.features import build_features, load_tokenizer

    tokenizers: dict = {}
    for st in plan.spec.stages:
        if not st.recipe:
            continue
        r = stage_recipe(plan, st)
        if r.model.tokenizer_path not in tokenizers:
            tokenizers[r.model.tokenizer_path] = load_tokenizer(r.model.tokenizer_path)
        for d in r.datasets:
            for split in dict.fromkeys(x for x in (d.train_split, d.eval_split) if x):
                build_features(r, d.name, split, tokenizer=tokenizers[r.model.tokenizer_path], log=log)


def run(plan: Plan, jobs: int, log) -> None:
    """Run the unfinished jobs here; the plan's elapsed time is summed over invocations (logs/elapsed_s.json),
    so a resumed plan reports its whole time."""
    t0 = time.time()
    todo = steps(plan)
    if not any(not s.done.exists() for s in todo):
        return
    if jobs > 1:
        build_features_first(plan, log)
    elapsed_file = plan.out / "logs" / "elapsed_s.json"
    before = json.loads(elapsed_file.read_text())["elapsed_s"] if elapsed_file.exists() else 0.0
    try:
        run_steps(todo, plan.out / "logs", jobs=jobs, log=log)
    finally:
        write_json(elapsed_file, {"elapsed_s": round(before + time.time() - t0, 1), "jobs": jobs})


def _waits_for(plan: Plan, inst: Instance) -> list[str]:
    """The jobs one job needs: of a referenced stage only those it reads (its seed's export, its own
    teacher, the stores it distils from), so a store starts once its teacher is done; of `after`, all."""
    st = inst.stage
    refs = [r for r in (st.init_from, st.kd, st.teachers, st.model) if r]
    return [i.name for n in needs(plan, st) for i in plan.instances[n] if n not in refs or i.out in inst.reads]


def steps(plan: Plan) -> list[Step]:
    return [Step(i.name.replace("/", "."), command(plan, i), i.done, [a.replace("/", ".") for a in _waits_for(plan, i)])
            for st in plan.spec.stages for i in plan.instances[st.name]]


# ---------------------------------------------------------------------------- Slurm


def submit(plan: Plan, sbatch: str = "sbatch", log=print) -> dict[str, str]:
    """Submit the unfinished stages, each after the stages it needs (--dependency=afterok); returns the job ids.

    train and precompute go through slurm/train_road.sh and slurm/precompute_logits.sh (requeue on
    preemption, resume); a fanned-out stage is one array whose task i runs seed i of the stage's list."""
    prefix = f"road-{plan.path.stem}-{hashlib.sha256(str(plan.out).encode()).hexdigest()[:6]}-"
    _clear_stale(plan, prefix, log)
    jobs: dict[str, str] = {}
    for st in plan.spec.stages:
        todo = [k for k, i in enumerate(plan.instances[st.name]) if not i.done.exists()]
        if not todo:
            log(f"stage {st.name}: finished, skipped")
            continue
        insts = plan.instances[st.name]
        dep = [jobs[n] for n in needs(plan, st) if n in jobs]
        array = st.run in ("train", "precompute")
        args = [sbatch, "--parsable", f"--job-name={prefix}{st.name}", f"--output={plan.out}/logs/{st.name}-{'%A_%a' if array else '%j'}.out", *plan.spec.sbatch]
        args += [f"--dependency=afterok:{':'.join(dep)}"] if dep else []
        env = {**os.environ, "PYTHON": sys.executable, "SETS": "\n".join(set_args(st.set))}
        if st.run == "train":
            args += [f"--ntasks-per-node={st.ranks}", f"--array={','.join(map(str, todo))}"]
            seed = "{seed}" if st.seeds else None
            env |= {"RECIPE": plan.recipe(st), "OUT": str(plan.out / _run_name(st, seed)), "SEEDS": " ".join(map(str, st.seeds)),
                    "DS_CONFIG": str(Path(plan.spec.ds_config).resolve()), "SETS": "\n".join(train_sets(plan, st, seed))}
            script = [str(REPO / "slurm" / "train_road.sh")]
        elif st.run == "precompute":
            args += [f"--ntasks-per-node={st.ranks}", f"--array={','.join(map(str, todo))}"]
            env |= {"RECIPE": plan.recipe(st), "TEACHERS": " ".join(str(i.teacher) for i in insts), "STORES": str(plan.out / st.name),
                    "TOP_K": str(st.top_k), "SPLITS": " ".join(st.splits)}
            script = [str(REPO / "slurm" / "precompute_logits.sh")]
        else:
            script = ["--wrap", " && ".join(shlex.join(command(plan, insts[k])) for k in todo)]
        (plan.out / "logs").mkdir(parents=True, exist_ok=True)
        r = subprocess.run([*args, *script], cwd=REPO, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise DataError(plan.path, f"sbatch refused stage '{st.name}': {r.stderr.strip()}", field=f"stages.{st.name}")
        jobs[st.name] = r.stdout.strip().split(";")[0]
        log(f"stage {st.name}: job {jobs[st.name]}" + (f" (array {','.join(map(str, todo))})" if array else "")
            + (f", after {', '.join(dep)}" if dep else ""))
    return jobs


def _clear_stale(plan: Plan, prefix: str, log) -> None:
    """A resubmit replaces what an earlier submit left queued (stages waiting on a job that failed or
    was cancelled wait forever); a stage still running is not touched: the resubmit stops instead."""
    r = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i %j %T"], capture_output=True, text=True)
    if r.returncode != 0:
        raise DataError(plan.path, f"squeue failed: {r.stderr.strip()}")
    mine = [line.split() for line in r.stdout.splitlines() if len(line.split()) == 3 and line.split()[1].startswith(prefix)]
    running = [f"{name[len(prefix):]} (job {job})" for job, name, state in mine if state not in ("PENDING", "REQUEUED", "REQUEUE_HOLD")]
    if running:
        raise DataError(plan.path, f"stages of this plan are still running: {', '.join(running)}; wait for them or scancel them, then resubmit")
    stale = sorted({job.split("_")[0] for job, _, _ in mine})
    if stale:
        subprocess.run(["scancel", *stale], check=True)
        log(f"cancelled the jobs an earlier submit left pending: {', '.join(stale)}")


# ---------------------------------------------------------------------------- report


def report(plan: Plan) -> str:
    """The dev results of every train and evaluate job, as one table (percent), in plan order, with the
    teachers' ensemble of each precompute stage that stored the dev sets (the mean of its teachers'
    log-probabilities) and the all-null QA baseline; the jobs not finished yet are listed under it."""
    from road_ds.pipelines.runs import all_null, ensemble_scores, table

    rows, missing = {}, []
    for st in plan.spec.stages:
        insts = plan.instances[st.name]
        if st.run == "precompute" and len(insts) > 1:
            if ensemble_dev_missing(plan, st):
                continue
            if all(i.done.exists() for i in insts):
                rows[f"{st.name}: teachers' ensemble"] = ensemble_scores(plan.recipe(st), [i.out for i in insts], set_args(st.set))
            else:
                missing.append(f"{st.name} (ensemble)")
        if st.run not in ("train", "evaluate"):
            continue
        for inst in insts:
            if not inst.done.exists():
                missing.append(inst.name)
                continue
            results = json.loads(inst.done.read_text())  # evaluate names its sets dataset/split: the eval split, as training's
            rows[inst.name] = {k.split("/")[0]: v for k, v in results.items()}
    text = table(rows) if rows else "no job has finished yet"
    null = next((all_null(r) for r in rows.values() if all_null(r)), {})
    if null:
        text += "\n\nall-null baseline (\"no answer\" everywhere): " + ", ".join(f"{n} F1 {v:.1f}" for n, v in null.items())
    return text + (f"\n\nnot finished: {', '.join(missing)}" if missing else "")


# ---------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="road-ds pipeline", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name, text in (("check", "validate every stage before any compute"), ("run", "run the plan on this machine (finished stages are skipped)"),
                       ("submit", "submit the plan to Slurm as jobs chained with --dependency=afterok"),
                       ("report", "the dev results of the plan's finished train and evaluate jobs, as a markdown table")):
        a = sub.add_parser(name, help=text)
        a.add_argument("plan")
        a.add_argument("--out", help="the plan's output dir (default: its `out`)")
        if name == "check":
            a.add_argument("--dry-run", action="store_true", help="list the inputs it cannot reach (hub ids, files not yet there) instead of failing")
        if name == "run":
            a.add_argument("--jobs", type=int, default=1, help="stages at a time (the CPU threads are split between them)")
        if name == "report":
            a.add_argument("--results", metavar="MD", help="a plan with a `study:` block: write its report here (and .json, .png beside it)")
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    def body():
        plan = load_plan(args.plan, args.out)
        if args.action == "report" and args.results:
            from road_ds.pipelines.study import write_results

            print(write_results(plan, Path(args.results).resolve()))
            return
        if args.action == "report":
            print(report(plan))
            return
        unreachable = check(plan)
        for u in unreachable:
            log(f"not reachable: {u}")
        if unreachable and not getattr(args, "dry_run", False):
            raise DataError(plan.path, f"{len(unreachable)} inputs cannot be reached (listed above; `check --dry-run` lists them without failing)")
        n = sum(len(v) for v in plan.instances.values())
        if args.action == "check":
            print(f"{plan.path}: {len(plan.spec.stages)} stages, {n} jobs: ok" + (f" ({len(unreachable)} inputs not reachable here)" if unreachable else ""))
        elif args.action == "run":
            run(plan, args.jobs, log)
            print(f"{plan.path}: {n} jobs finished under {plan.out}")
        else:
            for stage, job in submit(plan, log=log).items():
                print(f"{stage} {job}")

    return run_job("road-ds pipeline", body)


if __name__ == "__main__":
    sys.exit(main())
