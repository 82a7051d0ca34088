"""Submitting and watching Slurm jobs from the tests, on the one-node cluster (commands run here) or on
the multi-host one (commands run on its first host: `prefix` = tests/slurm_nodes.sh exec)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEPENDENCY_NEVER_SATISFIED")


def slurm(*args, prefix: tuple = (), env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *map(str, args)], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)


def sbatch(*args, env: dict, prefix: tuple = ()) -> str:
    r = slurm("sbatch", "--parsable", *args, prefix=prefix, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def state(job: str, prefix: tuple = ()) -> str:
    """A job's state; for an array, the worst of its tasks'. A job whose dependency failed waits
    forever in PENDING: that is a failure too."""
    r = slurm("scontrol", "show", "job", job, prefix=prefix)
    states = [tok.split("=", 1)[1] for tok in r.stdout.split() if tok.startswith("JobState=")]
    if "PENDING" in states and "Reason=DependencyNeverSatisfied" in r.stdout:  # a cancelled job keeps the reason
        return "DEPENDENCY_NEVER_SATISFIED"
    if not states:
        return "GONE"
    return next((s for s in states if s in FAILED_STATES), next((s for s in states if s != "COMPLETED"), "COMPLETED"))


def wait_done(jobs: list[str], logs: Path, timeout: float = 900, prefix: tuple = ()) -> None:
    """Until every job completed; on a failure, its output files' tails in the message, and the jobs
    cancelled (left running, they would compete with the tests that follow)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [state(j, prefix) for j in jobs]
        if all(s in ("COMPLETED", "GONE") for s in states):
            return
        if any(s in FAILED_STATES for s in states):
            break
        time.sleep(2)
    final = [state(j, prefix) for j in jobs]
    slurm("scancel", *jobs, prefix=prefix)
    tails = "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]) for f in sorted(logs.glob("*.out")))
    pytest.fail(f"jobs {jobs}: {final} (timeout {timeout} s)\n{tails}")


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def wait_for_checkpoint(out: Path, job: str, at_least: int, timeout: float = 600, prefix: tuple = ()) -> None:
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest.exists() and int(latest.read_text().strip().split("-")[1]) >= at_least:
            return
        assert state(job, prefix) in ("PENDING", "RUNNING", "CONFIGURING"), state(job, prefix)
        time.sleep(0.2)
    pytest.fail("no checkpoint in time")
