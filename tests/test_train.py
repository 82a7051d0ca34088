"""The trainer end to end on CPU: 2 DeepSpeed ranks, ZeRO-2 and ZeRO-3, a span task and two
classification tasks sharing the encoder, KD from two teacher stores; SIGKILL and exact resume;
the export against `road-ds evaluate`; errors before any compute."""

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
from conftest import deepspeed_launcher, squad_doc, write_jsonl, write_tiny_teacher

from road_ds.dist import SHM_DIR, SHM_PREFIX
from road_ds.errors import DataError
from road_ds.precompute import main as precompute

REPO = Path(__file__).resolve().parent.parent
DROPOUT = 0.1
CTX = "Paris is the capital of France. The city has a population of two million people. It was founded by the Parisii."


def write_teacher_export(export: Path, tok: Path, seed: int) -> Path:
    """Tiny random teachers for the three heads of `_recipe`, as an export dir (what precompute reads)."""
    write_tiny_teacher(export / "span", tok, "span", seed=seed)
    write_tiny_teacher(export / "sentiment", tok, "classification", ["negative", "positive"], seed=seed + 10)
    write_tiny_teacher(export / "pair", tok, "classification", ["entailment", "not_entailment"], seed=seed + 20)
    heads = {h: {"kind": "span" if h == "span" else "classification", "dir": h} for h in ("span", "sentiment", "pair")}
    (export / "road_ds_export.json").write_text(json.dumps({"heads": heads}))
    return export


def _data(d: Path) -> None:
    qas = [{"id": f"q{i}", "question": f"what is the capital {i}?", "answers": [{"text": "Paris", "answer_start": 0}]} for i in range(48)]
    qas += [{"id": f"t{i}", "question": f"who founded it {i}?", "answers": [{"text": "the Parisii", "answer_start": CTX.index("the Parisii")}]} for i in range(48)]
    (d / "squad.json").write_text(json.dumps(squad_doc([{"title": "P", "paragraphs": [{"context": CTX, "qas": qas}]}])))
    (d / "squad_dev.json").write_text(json.dumps(squad_doc([{"title": "P", "paragraphs": [{"context": CTX, "qas": qas[:8] + qas[48:56]}]}])))
    write_jsonl(d / "rt.jsonl", [{"text": ("great film " if i % 2 else "dull film ") + str(i), "label": "positive" if i % 2 else "negative"} for i in range(96)])
    write_jsonl(d / "pairs.jsonl", [{"a": f"the king {i}", "b": ("the king" if i % 2 else "a city") + f" {i}", "label": "entailment" if i % 2 else "not_entailment"} for i in range(96)])


def _recipe(d: Path, tok: Path, teachers: list[Path] | None, **train) -> dict:
    vocab = len((tok / "vocab.txt").read_text().split())
    r = {
        "model": {"config": {"model_type": "bert", "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": DROPOUT, "attention_probs_dropout_prob": DROPOUT}, "tokenizer": str(tok)},
        "features": {"max_seq_length": 40, "doc_stride": 12, "max_query_length": 12, "cache_dir": str(d / "features")},
        "datasets": [
            {"name": "sq", "task": "extractive_qa", "format": "squad_json", "files": {"train": "squad.json", "dev": "squad_dev.json"}},
            {"name": "rt", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"}, "files": {"train": "rt.jsonl", "dev": "rt.jsonl"}},
            {"name": "pairs", "task": "classification", "head": "pair", "labels": ["entailment", "not_entailment"], "format": "jsonl",
             "columns": {"text_a": "a", "text_b": "b"}, "files": {"train": "pairs.jsonl", "dev": "pairs.jsonl"}},
        ],
        "train": {"max_steps": 16, "micro_batch_size": 4, "lr": 2e-3, "warmup_steps": 2, "log_every": 1, "save_every": 4, "num_workers": 1, **train},
        "mtl": {"passes": 4, "policy": "uniform"},
    }
    if teachers:
        r["kd"] = {"teachers": [str(t) for t in teachers], "combine": "wkd", "alpha": 0.5, "temperature": 2.0}
    return r


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, two teacher stores (tiny random teachers) and DeepSpeed configs for CPU."""
    from conftest import write_tiny_tokenizer

    d = tmp_path_factory.mktemp("train")
    tok = write_tiny_tokenizer(d / "tok")
    _data(d)
    stores = []
    for seed in (0, 1):
        export = write_teacher_export(d / f"teacher{seed}", tok, seed)
        (d / "teacher_recipe.yaml").write_text(yaml.safe_dump(_recipe(d, tok, None)))
        assert precompute([str(d / "teacher_recipe.yaml"), "--teacher", str(export), "--out", str(d / f"store{seed}"), "--top-k", "4"]) == 0
        stores.append(d / f"store{seed}")
    for stage in (2, 3):
        cfg = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())
        cfg["optimizer"]["params"]["torch_adam"] = True  # no C++ op to compile for a CPU test
        (d / f"zero{stage}.json").write_text(json.dumps(cfg))
    (d / "kd.yaml").write_text(yaml.safe_dump(_recipe(d, tok, stores)))
    return d, tok, stores


def launch(d: Path, out: Path, stage: int, port=None, *extra, recipe: str = "kd.yaml", ranks: int = 2):
    from road_ds.dist import _free_port

    port = _free_port()  # a fixed port can still be in TIME_WAIT from the previous launch
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [*deepspeed_launcher(), "--num_gpus", str(ranks), "--master_port", str(port), str(REPO / "road_ds" / "train.py"),
           "--deepspeed", str(d / f"zero{stage}.json"), "--recipe", str(d / recipe), "--output-dir", str(out), *extra]
    return subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def losses(out: Path, key: str = "loss") -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r[key] for r in rows if key in r}


def output(p, timeout=600) -> str:
    """The run's output. A run still going after `timeout` fails the test, killed with its ranks (its
    own session): left running, it would hold CPU and memory through every test after it."""
    try:
        return p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"still running after {timeout} s, killed:\n{p.communicate()[0][-4000:]}")


def finish(p, timeout=600) -> str:
    text = output(p, timeout)
    assert p.returncode == 0, text[-4000:]
    return text


def kill_at(p, out: Path, step: int) -> tuple[int, str]:
    """SIGKILL the run (launcher and ranks) once its latest checkpoint is at `step` or later, before
    it finishes: (the step saved, its output)."""
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if latest.exists() and latest.read_text().strip() >= f"step-{step:08d}":
            break
        time.sleep(0.05)
    if p.poll() is not None:
        pytest.fail("the run ended before it could be killed:\n" + p.communicate()[0][-3000:])
    os.killpg(p.pid, signal.SIGKILL)
    text = p.communicate()[0]
    assert not (out / "eval_results.json").exists(), "the run finished before it could be killed"
    saved = int(latest.read_text().strip().split("-")[1])
    assert step <= saved < 16
    return saved, text


@pytest.mark.slow
@pytest.mark.parametrize("stage,port", [(2, 29611), (3, 29621)])
def test_two_ranks_kd_loss_decreases_and_resume_after_sigkill_is_exact(world, stage, port):
    d, tok, stores = world
    segments_before = set(SHM_DIR.glob(f"{SHM_PREFIX}_*"))
    sets = ()
    ref = d / f"ref{stage}"
    finish(launch(d, ref, stage, port, *sets))
    full = losses(ref)
    assert sorted(full) == list(range(1, 17))
    qa = list(losses(ref, "loss/sq").values())  # steps mix datasets: compare a dataset with itself
    assert len(qa) >= 8 and sum(qa[-3:]) / 3 < 0.9 * sum(qa[:3]) / 3, qa
    metrics = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("kd/") and v > 0 for m in metrics for k, v in m.items())  # the KD term is in the loss
    # the task balance reads the encoder's gradients on both ZeRO stages: weights move off 1, apart per task
    last = {k: v for m in metrics for k, v in m.items()}  # each dataset's last logged values
    weights = {k: v for k, v in last.items() if k.startswith("weight/")}
    assert len(weights) == 3 and len(set(weights.values())) == 3 and all(w > 0 and w != 1.0 for w in weights.values()), weights
    assert all(0 < last[f"enc_grad/{n}"] and -1 <= last[f"cls_cos/{n}"] <= 1 for n in ("sq", "rt", "pairs")), last
    assert json.loads((ref / "eval_results.json").read_text())["macro"] >= 0
    assert (ref / "export" / "road_ds_export.json").exists()

    killed = d / f"killed{stage}"
    saved, _ = kill_at(launch(d, killed, stage, port + 1, *sets), killed, 8)
    text = finish(launch(d, killed, stage, port + 2, *sets))
    assert "resumed from" in text and f"at step {saved}" in text
    resumed = losses(killed)
    assert sorted(resumed) == list(range(1, 17))
    for s in range(1, saved + 2):  # up to the checkpoint, and the first step after the resume: exact
        assert resumed[s] == pytest.approx(full[s], abs=1e-6, rel=1e-6), (s, resumed[s], full[s])
    # ZeRO-2: exact to the end. ZeRO-3 (DeepSpeed 0.19.8): a fresh engine rounds its first steps differently from a
    # warmed-up one (an uninterrupted ZeRO-3 run parts from ZeRO-0/2 by ~1e-5 too), so after a resume the
    # losses drift by ~5e-4 relative although the restored state compares equal: bounded here, not hidden.
    tol = 1e-6 if stage == 2 else 3e-3
    for s in range(saved + 2, 17):
        assert resumed[s] == pytest.approx(full[s], abs=tol, rel=tol), (s, resumed[s], full[s])
    # DeepSpeed's CPU all-reduce segments (~66 MiB of RAM per rank and run) are gone, the killed run's too
    left = set(SHM_DIR.glob(f"{SHM_PREFIX}_*")) - segments_before
    assert left == set(), sorted(f.name for f in left)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_resume_on_another_world_size_keeps_the_rows_and_the_losses(world, stage):
    """2 ranks, killed; resumed on 1 rank (each micro-batch's 8 rows as 2 accumulated chunks of the
    recipe's 4), killed; resumed on 2 ranks to the end. Every step's loss is the uninterrupted
    2-rank run's within a bound: the rows, balance weights and optimizer state carry over (the
    optimizer state re-partitioned through DeepSpeed's universal checkpoint). Dropout is off: its
    draws cannot be matched across world sizes."""
    d, tok, stores = world
    r = _recipe(d, tok, stores)
    r["model"]["config"] |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (d / "nodrop.yaml").write_text(yaml.safe_dump(r))
    ref = d / f"regrid-ref{stage}"
    finish(launch(d, ref, stage, recipe="nodrop.yaml"))
    full = losses(ref)

    run = d / f"regrid{stage}"
    first, _ = kill_at(launch(d, run, stage, recipe="nodrop.yaml"), run, 4)
    second, text = kill_at(launch(d, run, stage, recipe="nodrop.yaml", ranks=1), run, first + 4)
    shown = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("world size 2 -> 1: "))
    assert f"at step {first}" in text and shown in text.splitlines(), text[-3000:]  # the README shows this run's line
    saved = json.loads((run / "checkpoints" / f"step-{second:08d}" / "world.json").read_text())
    assert saved == {"world_size": 1, "rows_per_micro_batch": 8}
    text = finish(launch(d, run, stage, recipe="nodrop.yaml", ranks=2))
    assert f"at step {second}" in text and "world size 1 -> 2: each micro-batch keeps its 8 rows (4 rows per rank;" in text, text[-3000:]
    assert "rank 0 keeps the saved RNG, rank 1 starts from a seed of (seed, step, rank)" in text
    assert not (run / "checkpoints" / "universal").exists()  # the conversion goes once a newer checkpoint exists
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, 17))
    # measured (DeepSpeed 0.19.8, CPU, fp32; the largest relative difference of the 16 losses): ZeRO-2 3.9e-8, ZeRO-3
    # 1.7e-3, where a resume on the same world size drifts by about 5e-4 too (see the SIGKILL test above)
    tol = 1e-6 if stage == 2 else 5e-3
    for s in range(1, 17):
        assert resumed[s] == pytest.approx(full[s], abs=tol, rel=tol), (s, resumed[s], full[s], {k: (resumed[k], full[k]) for k in full})
    assert json.loads((run / "eval_results.json").read_text())["macro"] == pytest.approx(json.loads((ref / "eval_results.json").read_text())["macro"], abs=0.05)


def test_a_world_size_that_cannot_share_the_rows_is_refused_before_any_work(tmp_path):
    from road_ds import checkpoint
    from road_ds.recipe import Recipe
    from road_ds.train import batch_split

    r = Recipe.model_validate({"model": {"name_or_path": "x"}, "datasets": [{"name": "s", "task": "sentiment", "format": "jsonl",
                               "files": {"train": "t.jsonl"}}], "train": {"micro_batch_size": 4}})
    assert batch_split(r, None, 3, tmp_path).rows == 12
    saved = checkpoint.SavedWorld("step-00000008", 2, 8)
    assert (batch_split(r, saved, 1, tmp_path).chunks, batch_split(r, saved, 4, tmp_path).per_rank) == (2, 2)
    with pytest.raises(DataError, match=r"step-00000008: its micro-batches hold 8 rows \(saved on 2 ranks\), which 3 ranks cannot share evenly"):
        batch_split(r, saved, 3, tmp_path)


@pytest.mark.slow
def test_export_scores_the_same_through_evaluate(world):
    """`road-ds evaluate` on the run's export (transformers models) reproduces the trainer's own eval."""
    d, tok, stores = world
    ref = d / "ref2"
    if not (ref / "eval_results.json").exists():
        finish(launch(d, ref, 2, 29631))
    r = subprocess.run([sys.executable, "-m", "road_ds.cli", "evaluate", str(d / "kd.yaml"), "--model", str(ref), "--out", str(d / "eval")],
                       capture_output=True, text=True, cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = json.loads((d / "eval" / "metrics.json").read_text())
    trainer = json.loads((ref / "eval_results.json").read_text())
    for name in ("sq", "rt", "pairs"):
        key = f"{name}/{'dev'}"
        for metric in ("f1", "exact") if name == "sq" else ("accuracy", "macro_f1"):
            assert ours[key][metric] == pytest.approx(trainer[name][metric], abs=1e-9), (name, metric)
    preds = json.loads((d / "eval" / "sq-dev-predictions.json").read_text())
    assert len(preds) == 16


def test_errors_before_any_compute(world, tmp_path, capsys):
    d, tok, stores = world
    from road_ds.train import main

    cfg = json.loads((d / "zero2.json").read_text())
    cfg["gradient_accumulation_steps"] = 8
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    assert main(["--deepspeed", str(tmp_path / "bad.json"), "--recipe", str(d / "kd.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "gradient_accumulation_steps" in err and "mtl.passes" in err
    r = yaml.safe_load((d / "kd.yaml").read_text())
    r["train"]["learning_rate"] = 1e-3
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(r))
    assert main(["--deepspeed", str(d / "zero2.json"), "--recipe", str(tmp_path / "typo.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml" in err and "train.learning_rate" in err
    assert not (tmp_path / "o").exists()  # nothing was started


@pytest.mark.slow
def test_store_for_other_features_stops_training_with_both_fingerprints(world, tmp_path):
    d, tok, stores = world
    r = yaml.safe_load((d / "kd.yaml").read_text())
    r["features"]["max_seq_length"] = 48  # other features than the stores were made on
    (d / "other.yaml").write_text(yaml.safe_dump(r))
    p = launch(d, tmp_path / "o", 2, 29641, recipe="other.yaml", ranks=1)
    text = output(p, 300)
    assert p.returncode != 0
    assert "computed on features" in text and "store0" in text and "Traceback" not in text.split("computed on features")[0][-2000:]
    assert not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.slow
def test_export_from_checkpoint_gives_the_trainers_logits(world, tmp_path):
    """`road-ds export` of the last ZeRO checkpoint: transformers alone reproduce the trained model's logits."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from road_ds.export import load_checkpoint_model

    d, tok, stores = world
    ref = d / "ref3"  # ZeRO-3: partitions merged on the CPU
    if not (ref / "eval_results.json").exists():
        finish(launch(d, ref, 3, 29651))
    r = subprocess.run([sys.executable, "-m", "road_ds.cli", "export", str(ref), str(tmp_path / "exp")], capture_output=True, text=True, cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    model, recipe, tag = load_checkpoint_model(ref)
    assert tag == "step-00000016"
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (3, 20), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    tt = torch.zeros_like(ids)
    tt[:, 10:] = 1
    with torch.no_grad():
        for head, cls in (("span", AutoModelForQuestionAnswering), ("sentiment", AutoModelForSequenceClassification), ("pair", AutoModelForSequenceClassification)):
            ours = model(head, ids, mask, tt)
            for export_dir in (tmp_path / "exp", ref / "export"):  # `road-ds export`, and the trainer's own export
                hf = cls.from_pretrained(str(export_dir / head)).eval()
                out = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
                if head == "span":
                    assert torch.allclose(out.start_logits, ours["start"], atol=1e-6) and torch.allclose(out.end_logits, ours["end"], atol=1e-6)
                else:
                    assert torch.allclose(out.logits, ours["cls"], atol=1e-6)
    assert AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "exp" / "pair")).config.id2label == {0: "entailment", 1: "not_entailment"}


@pytest.mark.slow
def test_resume_with_another_recipe_or_teachers_is_refused(world):
    d, tok, stores = world
    ref = d / "ref2"
    if not (ref / "eval_results.json").exists():
        finish(launch(d, ref, 2, None))
    for extra, what in ((("--set", "kd.alpha=0.3"), "recipe"), (("--set", f"kd.teachers=[{stores[0]}]"), "recipe")):
        p = launch(d, ref, 2, None, *extra)
        text = output(p, 300)
        assert p.returncode != 0 and f"made with another {what}" in text and "--force-resume" in text


def test_evaluate_refuses_a_model_without_the_datasets_head(world, tmp_path, capsys):
    import shutil

    from road_ds.evaluate import main as evaluate

    d, tok, stores = world
    export = tmp_path / "export"
    shutil.copytree(d / "teacher0", export)
    index = json.loads((export / "road_ds_export.json").read_text())
    del index["heads"]["pair"]
    (export / "road_ds_export.json").write_text(json.dumps(index))
    assert evaluate([str(d / "kd.yaml"), "--model", str(export), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "no head 'pair'" in err and "pairs" in err


def test_a_dev_shm_too_full_for_the_ranks_is_refused_with_the_stale_segments(tmp_path, monkeypatch):
    """Without room for its all-reduce segment a CPU rank hangs its peers at start: refuse instead."""
    from road_ds import dist

    for name in ("29500_0", "29500_1"):
        (tmp_path / f"{SHM_PREFIX}_0_127.0.0.1_{name}").write_bytes(b"x" * 1000)
    monkeypatch.setattr(dist, "SHM_DIR", tmp_path)
    monkeypatch.setenv("LOCAL_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    st = os.statvfs(tmp_path)
    monkeypatch.setattr(dist, "SHM_SEGMENT_BYTES", st.f_bavail * st.f_frsize // 2 + 1)
    assert dist._shm_in_use()
    with pytest.raises(RuntimeError, match=rf"{tmp_path}: .* for 2 rank\(s\).* 2 {SHM_PREFIX}_\* segments"):
        dist._check_shm_room()
    monkeypatch.setattr(dist, "SHM_SEGMENT_BYTES", 1000)
    dist._check_shm_room()


@pytest.mark.slow
def test_a_damaged_shard_mid_run_ends_the_run_with_one_line_and_no_process_left(world, tmp_path):
    """A DataLoader worker meets a damaged teacher shard: the run exits non-zero within seconds, the
    error names the shard on one line (no worker traceback), and no worker is left waiting."""
    import shutil

    d, tok, stores = world
    bad = tmp_path / "store0"
    shutil.copytree(stores[0], bad)
    shards = sorted(bad.rglob("*.arrow"))
    victim = shards[len(shards) // 2]
    victim.write_bytes(victim.read_bytes()[:-64] + b"\0" * 64)
    r = yaml.safe_load((d / "kd.yaml").read_text())
    r["kd"]["teachers"] = [str(bad), str(stores[1])]
    r["train"]["num_workers"] = 2
    (d / "damaged.yaml").write_text(yaml.safe_dump(r))
    t0 = time.time()
    p = launch(d, tmp_path / "run", 2, None, recipe="damaged.yaml", ranks=1)
    text = output(p, 120)
    assert p.returncode != 0 and time.time() - t0 < 90, text[-3000:]
    lines = [line for line in text.splitlines() if "damaged teacher shard" in line]
    assert lines and str(bad) in lines[0] and "error:" in lines[0], text[-3000:]
    assert "Original Traceback" not in text and "Caught DataError" not in text
    with pytest.raises(ProcessLookupError):  # the launcher, the rank and its workers are all gone
        os.killpg(p.pid, 0)



def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_ends_the_run_named_and_the_rerun_resumes(world, tmp_path):
    """The checkpoints on a file system with room for one: the second save meets a full disk. The run
    exits 2 within seconds with one line naming the checkpoint, leaves no half checkpoint, temporary
    or process, and `latest` names the first; with room again the rerun resumes from it and finishes."""
    d, tok, stores = world
    r = yaml.safe_load((d / "kd.yaml").read_text())
    r["train"]["max_steps"] = 12
    (d / "full.yaml").write_text(yaml.safe_dump(r))
    ref = tmp_path / "ref"
    finish(launch(d, ref, 2, None, "--set", "train.max_steps=4", recipe="full.yaml", ranks=1))
    one = sum(f.stat().st_size for f in (ref / "checkpoints" / "step-00000004").rglob("*") if f.is_file())
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    _mount_tmpfs(ckpt, one * 3 // 2)
    try:
        t0 = time.time()
        p = launch(d, out, 2, None, recipe="full.yaml", ranks=1)
        text = output(p, 180)
        assert p.returncode == 2 and time.time() - t0 < 120, text[-3000:]
        lines = [line for line in text.splitlines() if "no space left" in line]
        assert lines and str(ckpt / "step-00000008") in lines[0] and "error:" in lines[0], text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        with pytest.raises(ProcessLookupError):
            os.killpg(p.pid, 0)
        assert (ckpt / "latest").read_text().strip() == "step-00000004"
        assert sorted(x.name for x in ckpt.glob("step-*")) == ["step-00000004"]  # no half checkpoint
        assert not [x for x in out.rglob("*") if ".tmp-" in x.name]
        subprocess.run(["mount", "-o", f"remount,size={16 * one}", str(ckpt)], check=True)
        text = finish(launch(d, out, 2, None, recipe="full.yaml", ranks=1))
        assert "resumed from" in text and "at step 4" in text, text[-3000:]
        assert (out / "eval_results.json").exists() and sorted(losses(out)) == list(range(1, 13))
    finally:
        subprocess.run(["umount", "-l", str(ckpt)], check=False)


def test_a_second_sigterm_while_the_checkpoint_is_pending_ends_the_run_at_once():
    from road_ds.train import StopFlag

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        stop = StopFlag()
        stop.AGAIN_AFTER_S = 0.2
        os.kill(os.getpid(), signal.SIGTERM)  # the first asks for a checkpoint at the next step
        os.kill(os.getpid(), signal.SIGTERM)  # the same one delivered twice at once (slurmstepd, and srun forwarding it)
        assert stop.raised
        time.sleep(0.3)
        with pytest.raises(SystemExit) as e:  # a second, later, before that checkpoint: ends the run
            os.kill(os.getpid(), signal.SIGINT)
        assert e.value.code == 128 + signal.SIGINT
        stop = StopFlag()
        stop.AGAIN_AFTER_S = 0.2
        os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's warning, then its SIGTERM: still the one checkpoint
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.raised
        time.sleep(0.3)
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
def test_a_transfer_set_keeps_gold_only_on_its_labeled_examples(world):
    """Examples past `labeled` reach the loss with gold -100 (KD only); the others keep theirs."""
    import numpy as np

    from road_ds.features import build_features, load_tokenizer
    from road_ds.loader import TrainBatches, schedule_kwargs
    from road_ds.recipe import load_recipe

    d, tok, _ = world
    recipe = load_recipe(d / "kd.yaml", ["datasets.sq.labeled=5", "datasets.rt.labeled=10"])
    tokenizer = load_tokenizer(str(tok))
    tables = {n: build_features(recipe, n, "train", tokenizer=tokenizer) for n in ("sq", "rt", "pairs")}
    index = {n: {e: i for i, e in enumerate(ft.examples["id"])} for n, ft in tables.items()}
    gold = {"sq": "start_positions", "rt": "label", "pairs": "label"}
    seen = {n: [0, 0] for n in tables}  # rows with gold, rows without
    for item in TrainBatches(tables, {}, schedule_kwargs(recipe, tables, 1, 0), None, 12, 0):
        n, batch = item["dataset"], item["batch"]
        table = tables[n].table
        row_of = {f: r for r, f in enumerate(table["feature_id"])}
        for fid, g in zip(batch["feature_id"].tolist(), batch[gold[n]].tolist()):
            r = row_of[fid]
            past = index[n][table[r]["example_id"]] >= {"sq": 5, "rt": 10}.get(n, np.inf)
            assert (g == -100) == past, (n, r, g)
            assert past or g == table[r][gold[n]]
            seen[n][past] += 1
    assert all(a > 0 and b > 0 for a, b in (seen["sq"], seen["rt"])) and seen["pairs"][1] == 0, seen


def test_a_transfer_set_without_teachers_is_refused(world):
    from road_ds.recipe import load_recipe

    d, _, _ = world
    with pytest.raises(DataError, match=r"datasets\.1\.labeled.*needs teachers|needs teachers.*datasets\.1\.labeled"):
        load_recipe(d / "teacher_recipe.yaml", ["datasets.rt.labeled=10"])
