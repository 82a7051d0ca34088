"""The real sbatch scripts on a one-node Slurm cluster (tests/slurm_cluster.sh; CI starts it):
precompute of 2 teachers as an array, a 2-rank student with KD after it, preemption by signal and an
abrupt kill, each followed by a requeue that resumes; a plain scancel, not requeued, then a resubmit that
resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_tiny_tokenizer
from slurm_jobs import losses, sbatch, state, wait_done, wait_for_checkpoint
from test_train import _data, _recipe, write_teacher_export

pytestmark = pytest.mark.slurm


def _cluster_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mix", "alloc"))


@pytest.fixture(scope="module")
def cluster():
    if not _cluster_up():
        if os.environ.get("ROAD_DS_REQUIRE_SLURM") == "1":
            pytest.fail("no Slurm cluster: run `bash tests/slurm_cluster.sh start` (as root)")
        pytest.skip("no Slurm cluster (bash tests/slurm_cluster.sh start)")


@pytest.fixture(scope="module")
def pipeline(cluster, tmp_path_factory):
    """Two teachers' stores by a precompute array job, then the 2-rank student job that depends on it."""
    d = tmp_path_factory.mktemp("slurm")
    tok = write_tiny_tokenizer(d / "tok")
    _data(d)
    for seed in (0, 1):
        write_teacher_export(d / f"t{seed}" / "export", tok, seed)
    (d / "teachers.yaml").write_text(yaml.safe_dump(_recipe(d, tok, None)))
    stores = [d / "stores" / "t0", d / "stores" / "t1"]
    (d / "student.yaml").write_text(yaml.safe_dump(_recipe(d, tok, stores)))
    env = {"PYTHON": sys.executable, "ROAD_DS_CACHE": str(d / "cache"), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    array = sbatch("--array=0-1", "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={d}/pre-%A_%a.out", "slurm/precompute_logits.sh",
                   env={**env, "TEACHERS": f"{d}/t0/export {d}/t1/export", "RECIPE": str(d / "teachers.yaml"), "STORES": str(d / "stores")})
    student = sbatch(f"--dependency=afterok:{array}", "--ntasks-per-node=2", "--cpus-per-task=1", f"--output={d}/student-%j.out",
                     "slurm/train_road.sh", env={**env, "RECIPE": str(d / "student.yaml"), "OUT": str(d / "run")})
    wait_done([array, student], d)
    return d, env


def test_precompute_array_then_student_with_kd(pipeline):
    from transformers import AutoModelForQuestionAnswering

    from road_ds.store import inspect

    d, env = pipeline
    for t in ("t0", "t1"):
        report = inspect(d / "stores" / t)
        assert report["problems"] == [] and set(report["entries"]) == {"sq/train", "rt/train", "pairs/train"}
    run = d / "run"
    assert sorted(losses(run)) == list(range(1, 17))
    assert json.loads((run / "ds_config.resolved.json").read_text())["train_batch_size"] == 4 * 4 * 2  # 2 ranks
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("kd/") and v > 0 for m in metrics for k, v in m.items())
    assert json.loads((run / "eval_results.json").read_text())["macro"] >= 0
    AutoModelForQuestionAnswering.from_pretrained(str(run / "export" / "span"))


def _submit_student(d: Path, env: dict, out: Path) -> str:
    return sbatch("--ntasks-per-node=2", "--cpus-per-task=1", f"--output={d}/{out.name}-%j.out", "slurm/train_road.sh",
                  env={**env, "RECIPE": str(d / "student.yaml"), "OUT": str(out)})


def test_preemption_signal_checkpoints_requeues_and_ends_with_the_same_loss(pipeline):
    d, env = pipeline
    out = d / "preempted"
    job = _submit_student(d, env, out)
    wait_for_checkpoint(out, job, 4)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)  # what --signal=USR1@300 sends before the time limit
    wait_done([job], d)
    log = (d / f"preempted-{job}.out").read_text()
    assert "stopped by a signal" in log and "requeueing job" in log and "resumed from" in log, log[-3000:]
    ref, got = losses(d / "run"), losses(out)
    assert sorted(got) == list(range(1, 17))
    for s in range(1, 17):
        assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=1e-6), (s, got[s], ref[s])


def test_abrupt_kill_loses_at_most_the_steps_since_the_checkpoint(pipeline):
    d, env = pipeline
    out = d / "killed"
    job = _submit_student(d, env, out)
    wait_for_checkpoint(out, job, 4)
    pids = subprocess.run(["pgrep", "-f", "--", f"--output-dir {out}"], capture_output=True, text=True).stdout.split()
    ranks = []
    for p in pids:  # the python ranks themselves, not srun or the batch shell
        argv = Path(f"/proc/{p}/cmdline").read_text(errors="ignore").split("\0")
        if "python" in Path(argv[0]).name and any(a.endswith("train.py") for a in argv):
            ranks.append(p)
    assert len(ranks) >= 2, f"rank processes not found among {pids}"
    for p in ranks:
        os.kill(int(p), signal.SIGKILL)
    wait_done([job], d)
    log = (d / f"killed-{job}.out").read_text()
    assert "requeueing job" in log and "resumed from" in log, log[-3000:]
    ref, got = losses(d / "run"), losses(out)
    assert sorted(got) == list(range(1, 17))
    assert got[16] == pytest.approx(ref[16], abs=1e-6, rel=1e-6)


def test_scancel_is_not_requeued_and_a_resubmit_resumes(pipeline):
    """A plain scancel is the user's "stop": the ranks checkpoint, the job ends CANCELLED without a
    requeue, and submitting again with the same output dir resumes to the uninterrupted run's loss."""
    d, env = pipeline
    out = d / "cancelled"
    job = _submit_student(d, env, out)
    wait_for_checkpoint(out, job, 4)
    subprocess.run(["scancel", job], check=True)
    deadline = time.time() + 120
    while state(job) not in ("CANCELLED", "GONE") and time.time() < deadline:
        time.sleep(1)
    time.sleep(3)  # a requeue would show within the batch shell's last seconds
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "JobState=CANCELLED" in shown and "Restarts=0" in shown, shown
    log = (d / f"cancelled-{job}.out").read_text()
    assert "not requeued" in log and "requeueing job" not in log, log[-3000:]
    assert not (out / "eval_results.json").exists()
    again = _submit_student(d, env, out)
    wait_done([again], d)
    log = (d / f"cancelled-{again}.out").read_text()
    assert "resumed from" in log, log[-3000:]
    ref, got = losses(d / "run"), losses(out)
    assert sorted(got) == list(range(1, 17))
    assert got[16] == pytest.approx(ref[16], abs=1e-6, rel=1e-6)
