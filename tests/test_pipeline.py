"""Pipeline plans: `check` refuses bad wiring by stage and field before any compute; a tiny plan (tiny
random models) runs end to end with `pipeline run`, skips what is finished and resumes a killed stage
to the same final metrics; and on the test Slurm cluster with `pipeline submit`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import squad_doc, write_tiny_tokenizer
from test_train import CTX, _data, _recipe

from road_ds.errors import DataError
from road_ds.pipelines.plan import check, load_plan, main

REPO = Path(__file__).resolve().parent.parent

STAGES = [
    {"name": "mtl", "run": "train", "recipe": "base.yaml", "set": {"train.max_steps": 8}},
    {"name": "teacher", "run": "train", "recipe": "base.yaml", "seeds": [0, 1], "init_from": "mtl", "set": {"train.max_steps": 8}},
    {"name": "store", "run": "precompute", "recipe": "base.yaml", "teachers": "teacher", "splits": ["train", "dev"], "top_k": 0},
    {"name": "student", "run": "train", "recipe": "base.yaml", "kd": "store", "set": {"kd.combine": "wkd", "kd.alpha": 0.5, "kd.temperature": 2.0}},
    {"name": "dev", "run": "evaluate", "recipe": "base.yaml", "model": "student"},
    {"name": "release", "run": "export", "model": "student"},
]


def world(d: Path) -> Path:
    """Data, a tokenizer and the tiny recipe every stage uses (with the stage's overrides)."""
    tok = write_tiny_tokenizer(d / "tok")
    _data(d)
    # a SQuAD 2.0 dev set: four of its twelve questions unanswerable, so the report has an all-null baseline
    qas = [{"id": f"q{i}", "question": f"what is the capital {i}?", "answers": [{"text": "Paris", "answer_start": 0}]} for i in range(8)]
    qas += [{"id": f"n{i}", "question": f"who won the cup {i}?", "answers": [], "is_impossible": True} for i in range(4)]
    (d / "squad_dev.json").write_text(json.dumps(squad_doc([{"title": "P", "paragraphs": [{"context": CTX, "qas": qas}]}], "v2.0")))
    (d / "base.yaml").write_text(yaml.safe_dump(_recipe(d, tok, None)))
    return d


def write_plan(d: Path, stages=STAGES, name="plan.yaml", **top) -> Path:
    p = d / name
    p.write_text(yaml.safe_dump({"out": str(d / "out"), "ds_config": str(REPO / "ds_configs" / "zero2.json"), "stages": stages, **top}, sort_keys=False))
    return p


def with_stage(name: str, **change) -> list[dict]:
    return [{**s, **change} if s["name"] == name else s for s in STAGES]


def refused(path: Path) -> DataError:
    with pytest.raises(DataError) as e:
        check(load_plan(path))
    return e.value


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


# ---------------------------------------------------------------------------- check


def test_check_wires_seeds_init_from_and_stores(tmp_path):
    world(tmp_path)
    plan = load_plan(write_plan(tmp_path))
    assert check(plan) == []
    out = tmp_path / "out"
    assert [i.name for i in plan.instances["teacher"]] == ["teacher-s0", "teacher-s1"]
    assert "train.seed=1" in plan.instances["teacher"][1].sets and f"model.init_from={out / 'mtl' / 'export'}" in plan.instances["teacher"][1].sets
    assert [i.out for i in plan.instances["store"]] == [out / "store" / "teacher-s0", out / "store" / "teacher-s1"]
    assert plan.instances["store"][1].teacher == out / "teacher-s1" / "export"
    assert f"kd.teachers={json.dumps([str(out / 'store' / 'teacher-s0'), str(out / 'store' / 'teacher-s1')])}" in plan.instances["student"][0].sets


def test_check_refuses_stores_made_on_other_features(tmp_path):
    world(tmp_path)
    e = refused(write_plan(tmp_path, with_stage("store", set={"datasets.rt.limit": {"train": 20}})))
    assert e.field == "stages.student.kd" and "dataset 'rt'" in str(e) and "limit" in str(e)
    e = refused(write_plan(tmp_path, with_stage("store", set={"features.max_seq_length": 48})))
    assert e.field == "stages.student.kd" and "max_seq_length" in str(e)
    e = refused(write_plan(tmp_path, with_stage("store", splits=["dev"])))
    assert e.field == "stages.student.kd" and "'train'" in str(e)


@pytest.mark.parametrize("change, field, text", [
    ({"init_from": "student"}, "stages.teacher.init_from", "no earlier stage"),  # a later stage
    ({"init_from": "nosuch"}, "stages.teacher.init_from", "no earlier stage"),
    ({"init_from": "mtl", "kd": "mtl"}, "stages.teacher.kd", "needs a precompute stage"),
    ({"bogus": 1}, "stages.teacher.bogus", "unknown field"),
    ({"teachers": "mtl"}, "stages.teacher.teachers", "has no `teachers`"),
])
def test_check_refuses_bad_references_by_stage_and_field(tmp_path, change, field, text):
    world(tmp_path)
    with pytest.raises(DataError) as e:
        load_plan(write_plan(tmp_path, with_stage("teacher", **change)))
    assert e.value.field == field and text in str(e.value)


def test_check_refuses_unpaired_seeds_and_a_bad_recipe(tmp_path):
    world(tmp_path)
    stages = STAGES[:2] + [{"name": "second", "run": "train", "recipe": "base.yaml", "init_from": "teacher"}]
    with pytest.raises(DataError, match="give this stage seeds") as e:
        load_plan(write_plan(tmp_path, stages))
    assert e.value.field == "stages.second.init_from"
    stages[2]["seeds"] = [5]
    with pytest.raises(DataError, match="no run for seed 5"):
        load_plan(write_plan(tmp_path, stages))
    e = refused(write_plan(tmp_path, with_stage("mtl", set={"train.lrr": 1e-3})))
    assert e.field == "stages.mtl.recipe" and "did you mean 'lr'" in str(e)


@pytest.mark.parametrize("plan", ["electra_large", "electra_base"])
def test_road_plans_pass_check_in_dry_run(plan, capsys):
    path = REPO / "recipes" / "road" / f"{plan}.yaml"
    assert main(["check", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "8 stages, 16 jobs: ok" in out
    assert f"not reachable: model 'google/electra-{plan.split('_')[1]}-discriminator' is a hub id" in err
    assert "dataset 'rajpurkar/squad_v2' is on the hub" in err
    assert main(["check", str(path)]) == 2  # without --dry-run an input it cannot reach is an error


def test_the_kit_plan_passes_check(kit_dir, capsys):
    """recipes/road/kit.yaml (docs/pipeline.md): every stage's recipe, the stores on the features the
    students read, every input on this machine."""
    assert main(["check", str(REPO / "recipes" / "road" / "kit.yaml")]) == 0
    assert "6 stages, 10 jobs: ok" in capsys.readouterr().out


def test_report_before_anything_ran_lists_every_job_as_not_finished(tmp_path, capsys):
    assert main(["report", str(write_plan(world(tmp_path)))]) == 0
    assert capsys.readouterr().out.strip() == "no job has finished yet\n\nnot finished: mtl, teacher-s0, teacher-s1, store (ensemble), student, dev/student"


def test_the_study_plan_passes_check(kit_dir, capsys):
    """recipes/study/plan.yaml (`make study`): every KD student reads the features its stores hold."""
    assert main(["check", str(REPO / "recipes" / "study" / "plan.yaml")]) == 0
    assert "14 stages, 28 jobs: ok" in capsys.readouterr().out


def test_the_demo_plan_passes_check(capsys):
    """recipes/road/demo.yaml (`make demo`): the students read the features their teachers' stores hold."""
    assert main(["check", str(REPO / "recipes" / "road" / "demo.yaml")]) == 0
    assert "5 stages, 9 jobs: ok" in capsys.readouterr().out


# ---------------------------------------------------------------------------- run here


def run_plan(plan: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "road_ds.cli", "pipeline", "run", str(plan)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    d = world(tmp_path_factory.mktemp("plan"))
    plan = write_plan(d)
    proc = run_plan(plan)
    log = proc.communicate(timeout=1500)[0]
    assert proc.returncode == 0, log[-4000:]
    return d, plan, log


def test_plan_runs_end_to_end(ran, capsys):
    from road_ds.store import inspect

    d, plan, log = ran
    out = d / "out"
    for run in ("mtl", "teacher-s0", "teacher-s1", "student"):
        assert (out / run / "eval_results.json").exists()
    for t in ("teacher-s0", "teacher-s1"):
        assert inspect(out / "store" / t)["problems"] == []
    metrics = [json.loads(x) for x in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("kd/") and v > 0 for m in metrics for k, v in m.items())  # the student distilled
    assert json.loads((out / "dev" / "student" / "metrics.json").read_text())["macro"] >= 0
    assert (out / "release" / "student" / "road_ds_export.json").exists()
    # report: one row per train and evaluate job, the student's the trainer's own eval, the export's through
    # evaluate alike; the teachers' ensemble from the stores' dev sets; the all-null QA baseline
    assert main(["report", str(plan)]) == 0
    text = capsys.readouterr().out.strip()
    lines = [x for x in text.splitlines() if x.startswith("|")]
    assert lines[0].startswith("| model | sq F1 | sq EM | sq HasAns F1 | sq NoAns acc |") and lines[0].endswith("| rt acc | pairs acc | macro |")
    assert [x.split(" | ")[0] for x in lines[2:]] == ["| mtl", "| teacher-s0", "| teacher-s1", "| store: teachers' ensemble", "| student", "| dev/student"]
    macro = 100 * json.loads((out / "student" / "eval_results.json").read_text())["macro"]
    assert lines[6].endswith(f"| {macro:.1f} |")
    assert lines[7].split(" | ")[1:] == lines[6].split(" | ")[1:]
    sq = json.loads((out / "mtl" / "eval_results.json").read_text())["sq"]
    assert sq["NoAns_total"] == 4 and text.endswith('all-null baseline ("no answer" everywhere): sq F1 33.3')
    # the ensemble of one teacher twice is that teacher: its stored dev log-probabilities decode to its own eval
    from road_ds.pipelines.runs import ensemble_scores

    alone = ensemble_scores(str(d / "base.yaml"), [out / "store" / "teacher-s0"] * 2)
    own = json.loads((out / "teacher-s0" / "eval_results.json").read_text())
    assert alone["sq"]["f1"] == pytest.approx(own["sq"]["f1"], abs=1.0) and alone["macro"] == pytest.approx(own["macro"], abs=0.01)
    again = run_plan(plan)
    text = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and " start " not in text, text[-2000:]  # every stage finished: nothing runs


def test_a_study_block_reports_the_plan_as_results_md_json_and_png(ran):
    """`report --results` (what `make study` writes): the teachers with their MTL step and ensemble, every
    other train stage a variant, the targets, the plan's elapsed time; the reading survives a rerun."""
    d, _, _ = ran
    out = d / "out"
    study = write_plan(d, name="study.yaml", study={"teachers": "teacher", "pretrain": "mtl", "ensemble": "store",
                                                    "teacher_floors": {"sq F1": 0.0, "rt acc": 101.0}})
    md = d / "docs" / "results.md"
    assert main(["report", str(study), "--results", str(md)]) == 0
    data = json.loads(md.with_suffix(".json").read_text())
    assert list(data["teachers"]) == ["mtl", "teacher-s0", "teacher-s1", "teachers' ensemble"]
    assert list(data["runs"]) == ["student"]  # the evaluate and export stages are no variants
    macro = 100 * json.loads((out / "student" / "eval_results.json").read_text())["macro"]
    assert data["runs"]["student"]["macro"]["seeds"] == {"0": pytest.approx(macro)}
    goals = {g["name"]: g["met"] for g in data["targets"]}
    assert goals["teacher-s1 sq F1 >= floor"] is True and goals["teacher-s1 rt acc >= floor"] is False
    assert data["elapsed_min"] > 0 and data["jobs"] == 1 and "student" in data["wall_s"]
    text = md.read_text()
    assert "| student | 1 |" in text and f"road-ds pipeline run {os.path.relpath(study, REPO)} --jobs 1" in text
    assert md.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md.write_text(text.replace("(to be written after reading the tables)", "KD helps here."))
    assert main(["report", str(study), "--results", str(md)]) == 0
    assert "KD helps here." in md.read_text()


def test_report_results_needs_a_study_block(ran, capsys):
    d, plan, _ = ran
    assert main(["report", str(plan), "--results", str(d / "r.md")]) == 2
    assert "study" in capsys.readouterr().err and not (d / "r.md").exists()


def test_killed_stage_resumes_to_the_same_final_metrics(ran):
    import shutil

    d, plan, _ = ran
    out = d / "out"
    ref_losses, ref_eval = losses(out / "student"), json.loads((out / "student" / "eval_results.json").read_text())
    for p in (out / "student", out / "dev", out / "release"):
        shutil.rmtree(p)
    proc = run_plan(plan, start_new_session=True)
    latest = out / "student" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not (latest.exists() and int(latest.read_text().split("-")[1]) >= 4):
        assert proc.poll() is None and time.time() < deadline, "the student never checkpointed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the stage's trainer at once
    proc.wait()
    assert not (out / "student" / "eval_results.json").exists()
    again = run_plan(plan)
    text = again.communicate(timeout=900)[0]
    assert again.returncode == 0, text[-3000:]
    assert "resumed from" in (out / "logs" / "student.log").read_text()
    got = losses(out / "student")
    assert sorted(got) == sorted(ref_losses)
    assert got[max(got)] == pytest.approx(ref_losses[max(got)], abs=1e-6, rel=1e-6)
    scores = lambda r: {k: v for k, v in r.items() if not k.startswith("peak_rss")}  # noqa: E731  (memory differs run to run)
    assert _close(scores(json.loads((out / "student" / "eval_results.json").read_text())), scores(ref_eval))


def _close(a, b, tol=1e-6) -> bool:
    """Nested results equal up to `tol` on the numbers."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tol
    return a == b


# ---------------------------------------------------------------------------- Slurm


@pytest.mark.slurm
def test_plan_on_slurm_chains_jobs_and_a_resubmit_resumes(tmp_path):
    from test_slurm import _cluster_up, state, wait_done

    if not _cluster_up():
        if os.environ.get("ROAD_DS_REQUIRE_SLURM") == "1":
            pytest.fail("no Slurm cluster: run `bash tests/slurm_cluster.sh start` (as root)")
        pytest.skip("no Slurm cluster (bash tests/slurm_cluster.sh start)")
    d = world(tmp_path)
    stages = [s for s in STAGES if s["name"] != "mtl"]
    stages = [{k: v for k, v in s.items() if k != "init_from"} for s in stages]
    stages = [{**s, "ranks": 2} if s["name"] == "student" else s for s in stages]
    plan = write_plan(d, stages, sbatch=["--cpus-per-task=1"])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def submit() -> dict[str, str]:
        r = subprocess.run([sys.executable, "-m", "road_ds.cli", "pipeline", "submit", str(plan)], cwd=REPO, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        return dict(line.split() for line in r.stdout.splitlines())

    jobs = submit()
    assert list(jobs) == ["teacher", "store", "student", "dev", "release"]
    detail = subprocess.run(["scontrol", "show", "job", jobs["store"]], capture_output=True, text=True).stdout
    dep = next(t for t in detail.split() if t.startswith("Dependency="))
    assert dep == "Dependency=(null)" or f"afterok:{jobs['teacher']}" in dep  # (null) once the teachers are done
    wait_done(list(jobs.values()), d / "out" / "logs", timeout=1500)
    out = d / "out"
    ref = losses(out / "student")
    assert (out / "dev" / "student" / "metrics.json").exists() and (out / "release" / "student" / "road_ds_export.json").exists()

    import shutil

    for p in (out / "student", out / "dev", out / "release"):
        shutil.rmtree(p)
    jobs = submit()
    assert list(jobs) == ["student", "dev", "release"]  # the finished stages are skipped
    latest = out / "student" / "checkpoints" / "latest"
    deadline = time.time() + 900
    while not (latest.exists() and int(latest.read_text().split("-")[1]) >= 4):
        assert time.time() < deadline and state(jobs["student"]) in ("PENDING", "RUNNING", "CONFIGURING"), state(jobs["student"])
        time.sleep(0.2)
    # the stage's job killed mid-run (batch shell and ranks; Slurm takes a KILL as a cancel, so the job
    # is not requeued): the stages after it wait on a dependency that can never be met
    subprocess.run(["scancel", "--signal=KILL", "--full", jobs["student"]], check=True)
    deadline = time.time() + 120
    while state(jobs["student"]) in ("RUNNING", "CONFIGURING", "COMPLETING"):
        assert time.time() < deadline, state(jobs["student"])
        time.sleep(0.5)
    assert state(jobs["dev"]) in ("PENDING", "DEPENDENCY_NEVER_SATISFIED")
    again = submit()  # cancels this plan's pending jobs, skips the finished stages, resumes the student
    assert list(again) == ["student", "dev", "release"]
    assert state(jobs["dev"]) in ("CANCELLED", "GONE")
    wait_done(list(again.values()), out / "logs", timeout=900)
    got = losses(out / "student")
    assert sorted(got) == sorted(ref)
    assert got[max(got)] == pytest.approx(ref[max(ref)], abs=1e-6, rel=1e-6)
