"""The sbatch scripts across separate hosts (tests/slurm_nodes.sh: network namespaces on one bridge,
one slurmd each; CI starts it): a precompute array spread over both hosts gives the stores of a
one-host run byte for byte; a student job with one rank per host (gloo over the link) has the losses
of the same job with both ranks on one host, on ZeRO-2 and ZeRO-3; faults (a host's ranks killed, the
time-limit signal, a host's link cut) end in a requeue that resumes to the uninterrupted losses, and a
run stopped on two hosts resumes on one with the same losses; the deepspeed launcher's hostfile route says it needs ssh, and on one host trains as srun does."""

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
from conftest import write_tiny_tokenizer
from slurm_jobs import REPO, losses, sbatch, slurm, state, wait_done, wait_for_checkpoint
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


def _student(d: Path, env: dict, out: str, *placement: str, ds_config: str = "ds_configs/zero2.json", sets: str = "") -> str:
    return sbatch(*placement, "--cpus-per-task=1", f"--output={d}/{out}-%j.out", "slurm/train_road.sh",
                  env={**env, "RECIPE": str(d / "student.yaml"), "OUT": str(d / out), "DS_CONFIG": ds_config, "SETS": sets}, prefix=HEAD)


def _uninterrupted(d: Path, env: dict) -> dict[int, float]:
    """The losses of the ZeRO-2 student with one rank per host (run here unless a test already did)."""
    out = d / "across-zero2"
    if not (out / "eval_results.json").exists():
        wait_done([_student(d, env, "across-zero2", "--nodes=2", "--ntasks-per-node=1")], d, prefix=HEAD)
    return losses(out)


def _one_host(d: Path, env: dict) -> dict[int, float]:
    """The losses of the ZeRO-2 student with both ranks on the first host, started by srun."""
    out = d / "one-host-zero2"
    if not (out / "eval_results.json").exists():
        wait_done([_student(d, env, "one-host-zero2", "--nodes=1", f"--nodelist={HOSTS[0]}", "--ntasks-per-node=2")], d, prefix=HEAD)
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


def test_the_time_limit_signal_to_a_two_host_job_checkpoints_once_on_every_rank_and_resumes(work):
    """What --signal=USR1@300 sends before the limit, to both hosts' ranks: they agree on one step,
    each writes its own part of that one checkpoint, and the requeued job has every loss of the
    uninterrupted run."""
    d, env, _ = work
    out = d / "preempted"
    job = _student(d, env, "preempted", "--nodes=2", "--ntasks-per-node=1", sets="train.keep_checkpoints=100")
    wait_for_checkpoint(out, job, 4, prefix=HEAD)
    assert slurm("scancel", "--signal=USR1", job, prefix=HEAD).returncode == 0
    wait_done([job], d, prefix=HEAD)
    log = (d / f"preempted-{job}.out").read_text()
    stops = [int(x.split("stopped by a signal at step ")[1].split(":")[0]) for x in log.splitlines() if "stopped by a signal at step" in x]
    assert len(stops) == 1 and "requeueing job" in log and f"at step {stops[0]}" in log.split("resumed from")[1], log[-3000:]
    files = sorted(p.name for p in (out / "checkpoints" / f"step-{stops[0]:08d}").iterdir())
    assert files == ["mp_rank_00_model_states.pt", "rng-rank00000.pt", "rng-rank00001.pt", "world.json",
                     "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"], files
    ref, got = _uninterrupted(d, env), losses(out)
    assert sorted(got) == list(range(1, 17))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=1e-6), (s, got[s], ref[s])


def test_a_two_host_run_stopped_resumes_on_one_host_with_the_rows_of_every_step(work):
    """A requeue may get fewer hosts: the two-host job, cancelled after a checkpoint, is submitted
    again on one host with one rank. It converts the checkpoint (DeepSpeed's universal format, on the
    shared path), feeds each micro-batch's 8 rows as two chunks of 4 and ends with every loss of the
    uninterrupted two-host run (dropout off: its draws are per rank)."""
    d, env, _ = work
    nodrop = "model.config.hidden_dropout_prob=0.0\nmodel.config.attention_probs_dropout_prob=0.0"
    wait_done([_student(d, env, "nodrop", "--nodes=2", "--ntasks-per-node=1", sets=nodrop)], d, prefix=HEAD)
    out = d / "fewer-hosts"
    job = _student(d, env, "fewer-hosts", "--nodes=2", "--ntasks-per-node=1", sets=nodrop)
    wait_for_checkpoint(out, job, 4, prefix=HEAD)
    assert slurm("scancel", job, prefix=HEAD).returncode == 0
    deadline = time.time() + 120
    while state(job, HEAD) not in ("CANCELLED", "GONE") and time.time() < deadline:
        time.sleep(1)
    assert not (out / "eval_results.json").exists(), "the run finished before it was cancelled"
    saved = json.loads((out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip() / "world.json").read_text())
    assert saved == {"world_size": 2, "rows_per_micro_batch": 8}
    again = _student(d, env, "fewer-hosts", "--nodes=1", f"--nodelist={HOSTS[1]}", "--ntasks-per-node=1", sets=nodrop)
    wait_done([again], d, prefix=HEAD)
    log = (d / f"fewer-hosts-{again}.out").read_text()
    assert "resumed from" in log and "world size 2 -> 1: each micro-batch keeps its 8 rows (8 rows per rank as 2 accumulated chunks of 4" in log, log[-3000:]
    ref, got = losses(d / "nodrop"), losses(out)
    assert sorted(got) == sorted(ref) == list(range(1, 17))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=1e-6), (s, got[s], ref[s])


def _link(host: int, up: bool) -> None:
    subprocess.run(["ip", "-n", "rds-hub", "link", "set", f"port{host}", "up" if up else "down"], check=True)


def test_a_host_cut_off_mid_run_ends_its_ranks_within_the_collective_timeout_and_the_job_resumes(work):
    """The second host's link goes down mid-run: Slurm marks the host down and requeues the job, the
    rank left alone there gives up after train.collective_timeout_s (no controller can reach it), the
    job waits for two hosts, and once the link is back it resumes and ends at the uninterrupted loss."""
    d, env, _ = work
    out = d / "cut"
    timeout_s = 30
    job = _student(d, env, "cut", "--nodes=2", "--ntasks-per-node=1", sets=f"train.collective_timeout_s={timeout_s}")
    wait_for_checkpoint(out, job, 4, prefix=HEAD)
    _link(2, up=False)
    try:
        cut = time.time()
        while _ranks_on(HOSTS[1], out) and time.time() < cut + timeout_s + 60:
            time.sleep(1)
        alone = time.time() - cut
        assert not _ranks_on(HOSTS[1], out), f"the cut-off rank still runs {alone:.0f} s after the cut"  # torch's default: 30 min
        deadline = time.time() + 120
        shown = slurm("scontrol", "show", "job", job, prefix=HEAD).stdout
        while not ("Restarts=1" in shown and "JobState=PENDING" in shown) and time.time() < deadline:
            time.sleep(2)  # a requeue passes through COMPLETING (until the cut-off host is marked down) before PENDING
            shown = slurm("scontrol", "show", "job", job, prefix=HEAD).stdout
        assert "Restarts=1" in shown and "JobState=PENDING" in shown, shown
    finally:
        _link(2, up=True)
    slurm("scontrol", "update", f"nodename={HOSTS[1]}", "state=resume", prefix=HEAD)  # what an operator does once the host is back
    wait_done([job], d, prefix=HEAD)
    log = (d / f"cut-{job}.out").read_text()
    assert "resumed from" in log, log[-3000:]
    ref, got = _uninterrupted(d, env), losses(out)
    assert sorted(got) == list(range(1, 17))
    assert got[16] == pytest.approx(ref[16], abs=1e-6, rel=1e-6)


def _launch(d: Path, env: dict, out: str, *placement: str) -> str:
    return sbatch(*placement, "--cpus-per-task=1", f"--output={d}/{out}-%j.out", "slurm/deepspeed_launch.sh", prefix=HEAD,
                  env={**env, "RECIPE": str(d / "student.yaml"), "OUT": str(d / out), "DEEPSPEED": str(Path(sys.executable).parent / "deepspeed")})


def test_the_deepspeed_launcher_over_two_hosts_needs_ssh_and_says_so_before_starting(work):
    """No sshd on the test hosts: the hostfile is made from the allocation, and the job ends at once
    naming the host it cannot reach and the srun route, with no rank started."""
    d, env, _ = work
    job = _launch(d, env, "ds-hosts", "--nodes=2", "--ntasks-per-node=1")
    deadline = time.time() + 120
    while time.time() < deadline and slurm("scontrol", "show", "job", job, prefix=HEAD).stdout.count("JobState=PENDING") + \
            slurm("scontrol", "show", "job", job, prefix=HEAD).stdout.count("JobState=RUNNING"):
        time.sleep(1)
    shown = slurm("scontrol", "show", "job", job, prefix=HEAD).stdout
    assert "JobState=FAILED" in shown and "ExitCode=2:0" in shown, shown
    assert (d / "ds-hosts" / "hostfile").read_text() == f"{HOSTS[0]} slots=1\n{HOSTS[1]} slots=1\n"
    log = (d / f"ds-hosts-{job}.out").read_text()
    assert f"needs passwordless ssh from {HOSTS[0]} to every host: {HOSTS[0]} is not reachable" in log and "slurm/train_road.sh" in log, log
    assert not (d / "ds-hosts" / "metrics.jsonl").exists()


def test_the_deepspeed_launcher_on_one_host_trains_as_srun_does(work):
    d, env, _ = work
    job = _launch(d, env, "ds-one-host", "--nodes=1", f"--nodelist={HOSTS[0]}", "--ntasks-per-node=2")
    wait_done([job], d, prefix=HEAD)
    got, ref = losses(d / "ds-one-host"), _one_host(d, env)
    assert sorted(got) == sorted(ref) == list(range(1, 17))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=1e-6), (s, got[s], ref[s])
