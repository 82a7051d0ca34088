"""The sbatch scripts across separate hosts (tests/slurm_nodes.sh: network namespaces on one bridge,
one slurmd each; CI starts it): a precompute array spread over both hosts gives the stores of a
one-host run byte for byte; a student job with one rank per host (gloo over the link) has the losses
of the same job with both ranks on one host, on ZeRO-2 and ZeRO-3; killing one host's ranks mid-run
requeues the job, which resumes on both hosts to the uninterrupted final loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_tiny_tokenizer
from slurm_jobs import REPO, losses, sbatch, slurm, wait_done, wait_for_checkpoint
from test_train import _data, _recipe, write_teacher_export

pytestmark = pytest.mark.slurm
NODES = ("bash", str(REPO / "tests" / "slurm_nodes.sh"))
HEAD = (*NODES, "exec")  # commands on the first host, where slurmctld runs
HOSTS = ("rds-n1", "rds-n2")


@pytest.fixture(scope="module")
def hosts():
    r = slurm("sinfo", "-h", "-N", "-o", "%N %t", prefix=HEAD)
    up = {line.split()[0] for line in r.stdout.splitlines() if line.split()[-1] in ("idle", "mix", "alloc")} if r.returncode == 0 else set()
    if not set(HOSTS) <= up:
        if os.environ.get("ROAD_DS_REQUIRE_SLURM") == "1":
            pytest.fail(f"no two-host Slurm cluster (up: {sorted(up)}): run `bash tests/slurm_nodes.sh start --nodes 2` (as root)")
        pytest.skip("no two-host Slurm cluster (bash tests/slurm_nodes.sh start --nodes 2)")


@pytest.fixture(scope="module")
def work(hosts, tmp_path_factory):
    """Two tiny teachers' stores twice: by an array whose tasks run on different hosts, and by the
    same array on the first host alone."""
    d = tmp_path_factory.mktemp("nodes")
    tok = write_tiny_tokenizer(d / "tok")
    _data(d)
    for seed in (0, 1):
        write_teacher_export(d / f"t{seed}" / "export", tok, seed)
    (d / "teachers.yaml").write_text(yaml.safe_dump(_recipe(d, tok, None)))
    (d / "student.yaml").write_text(yaml.safe_dump(_recipe(d, tok, [d / "stores" / "t0", d / "stores" / "t1"])))
    env = {"PYTHON": sys.executable, "ROAD_DS_CACHE": str(d / "cache"), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "rds0"}  # the hosts' link (what a cluster sets to its fabric's interface)
    pre = {**env, "TEACHERS": f"{d}/t0/export {d}/t1/export", "RECIPE": str(d / "teachers.yaml")}
    # two CPUs a task, two a host: the tasks start together, one on each host
    spread = sbatch("--array=0-1", "--ntasks-per-node=1", "--cpus-per-task=2", f"--output={d}/spread-%A_%a.out",
                    "slurm/precompute_logits.sh", env={**pre, "STORES": str(d / "stores")}, prefix=HEAD)
    wait_done([spread], d, prefix=HEAD)
    one = sbatch("--array=0-1", f"--nodelist={HOSTS[0]}", "--ntasks-per-node=1", "--cpus-per-task=1", f"--output={d}/one-%A_%a.out",
                 "slurm/precompute_logits.sh", env={**pre, "STORES": str(d / "stores-one-host")}, prefix=HEAD)
    wait_done([one], d, prefix=HEAD)
    return d, env, spread


def _store_files(store: Path) -> dict[str, bytes]:
    """Every file of a store; the manifest without its creation time."""
    files = {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest = json.loads((store / "manifest.json").read_text())
    manifest.pop("created")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def test_a_precompute_array_over_two_hosts_writes_the_one_host_stores_byte_for_byte(work):
    d, _, spread = work
    placed = {}
    for task in (0, 1):
        line = next(x for x in (d / f"spread-{spread}_{task}.out").read_text().splitlines() if x.startswith(f"task {task}:"))
        placed[task] = line.split(" on ")[1].split()[0]
    assert sorted(placed.values()) == list(HOSTS), placed
    for t in ("t0", "t1"):
        got, ref = _store_files(d / "stores" / t), _store_files(d / "stores-one-host" / t)
        assert sorted(got) == sorted(ref) and any(k.endswith(".arrow") for k in got)
        assert [k for k in got if got[k] != ref[k]] == []


def _student(d: Path, env: dict, out: str, *placement: str, ds_config: str = "ds_configs/zero2.json") -> str:
    return sbatch(*placement, "--cpus-per-task=1", f"--output={d}/{out}-%j.out", "slurm/train_road.sh",
                  env={**env, "RECIPE": str(d / "student.yaml"), "OUT": str(d / out), "DS_CONFIG": ds_config}, prefix=HEAD)


def _uninterrupted(d: Path, env: dict) -> dict[int, float]:
    """The losses of the ZeRO-2 student with one rank per host (run here unless a test already did)."""
    out = d / "across-zero2"
    if not (out / "eval_results.json").exists():
        wait_done([_student(d, env, "across-zero2", "--nodes=2", "--ntasks-per-node=1")], d, prefix=HEAD)
    return losses(out)


def _hosts_line(log: str) -> str:
    return next(x for x in log.splitlines() if "ranks on hosts:" in x)


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_one_rank_per_host_trains_as_two_ranks_on_one_host(work, zero):
    d, env, _ = work
    cfg = f"ds_configs/{zero}.json"
    across = _student(d, env, f"across-{zero}", "--nodes=2", "--ntasks-per-node=1", ds_config=cfg)
    wait_done([across], d, prefix=HEAD)
    one = _student(d, env, f"one-host-{zero}", "--nodes=1", f"--nodelist={HOSTS[0]}", "--ntasks-per-node=2", ds_config=cfg)
    wait_done([one], d, prefix=HEAD)
    assert _hosts_line((d / f"across-{zero}-{across}.out").read_text()).endswith(f"ranks on hosts: 0 {HOSTS[0]}, 1 {HOSTS[1]}")
    assert _hosts_line((d / f"one-host-{zero}-{one}.out").read_text()).endswith(f"ranks on hosts: 0 {HOSTS[0]}, 1 {HOSTS[0]}")
    got, ref = losses(d / f"across-{zero}"), losses(d / f"one-host-{zero}")
    assert sorted(got) == sorted(ref) == list(range(1, 17))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=1e-6), (s, got[s], ref[s])


def _ranks_on(host: str, out: Path) -> list[int]:
    """The training processes of run `out` inside `host`'s namespace."""
    pids = subprocess.run(["ip", "netns", "pids", host], capture_output=True, text=True).stdout.split()
    ranks = []
    for p in pids:
        try:
            argv = Path(f"/proc/{p}/cmdline").read_text(errors="ignore").split("\0")
        except OSError:
            continue
        if "python" in Path(argv[0]).name and any(a.endswith("train.py") for a in argv) and str(out) in argv:
            ranks.append(int(p))
    return ranks


def test_killing_one_hosts_ranks_requeues_and_resumes_on_both_hosts(work):
    d, env, _ = work
    out = d / "killed"
    job = _student(d, env, "killed", "--nodes=2", "--ntasks-per-node=1")
    wait_for_checkpoint(out, job, 4, prefix=HEAD)
    ranks = _ranks_on(HOSTS[1], out)
    assert ranks, f"no rank of {out} on {HOSTS[1]}"
    for p in ranks:
        os.kill(p, signal.SIGKILL)
    wait_done([job], d, prefix=HEAD)
    log = (d / f"killed-{job}.out").read_text()
    assert "requeueing job" in log and "resumed from" in log, log[-3000:]
    placements = [x.split("ranks on hosts: ")[1] for x in log.splitlines() if "ranks on hosts:" in x]
    assert placements == [f"0 {HOSTS[0]}, 1 {HOSTS[1]}"] * 2, placements  # the run and its requeue, both across the hosts
    got, ref = losses(out), _uninterrupted(d, env)
    assert sorted(got) == list(range(1, 17))
    assert got[16] == pytest.approx(ref[16], abs=1e-6, rel=1e-6)
