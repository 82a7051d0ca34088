"""Training checkpoints: save, resume, prune, and the RNG state that makes a resume exact.

A checkpoint is DeepSpeed's tag dir `checkpoints/step-NNNNNNNN` (its model and optimizer
partitions) plus one `rng-rankNNNNN.pt` per rank. `latest` is ours, not DeepSpeed's (which rank 0
rewrites in place as soon as its own files are done, while other ranks may still be writing
theirs): rank 0 replaces it atomically once every rank's files are complete, so it always names a
whole checkpoint, and a tag past it is a save that never finished. The
client state carries what the trainer needs beyond the engine: the step, the sampler's position
(resume from counters, no replay), the best dev macro so far, the task balance, and the recipe and
teacher-store hashes a resume must match. `world.json` (rank 0's) says how many ranks saved and how
many rows one scheduled micro-batch holds over all of them: a resume on another world size keeps
those rows, and loads the optimizer state through DeepSpeed's universal checkpoint, which
re-partitions it. See docs/design.md, "Checkpoints".
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from road_ds.atomic import disk_full, is_disk_full, publishing, write_bytes, write_json, write_text
from road_ds.errors import DataError
from road_ds.recipe import Recipe

# train fields a resumed run may change: bookkeeping, not what is learned
VOLATILE = {"max_steps", "eval_every", "save_every", "log_every", "num_workers", "keep_checkpoints", "eval_batch_size",
            "collective_timeout_s"}


def recipe_hash(recipe: Recipe) -> str:
    """What a resumed run must share with the run that saved: all but the bookkeeping knobs."""
    d = recipe.model_dump(mode="json")
    d["train"] = {k: v for k, v in d["train"].items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def store_ids(teachers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each teacher store by the hash of its manifest: a resume must distil from the same stores."""
    return {name: [hashlib.sha256((Path(p) / "manifest.json").read_bytes()).hexdigest() for p in paths] for name, paths in teachers.items()}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def seed_for(seed: int, step: int, rank: int) -> int:
    """A rank's RNG seed where no saved state exists for it (a resume on more ranks than saved)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def tag(step: int) -> str:
    return f"step-{step:08d}"


WORLD_FILE = "world.json"


@dataclass
class SavedWorld:
    """The latest checkpoint's layout: its tag, how many ranks saved it, and the rows of one
    scheduled micro-batch over all of them (None in a checkpoint from before world.json)."""

    tag: str
    world: int
    rows: int | None


def saved_world(ckpt_dir: Path) -> SavedWorld | None:
    """What the latest checkpoint was saved under, read before any engine exists (None: no checkpoint)."""
    latest = ckpt_dir / "latest"
    if not latest.exists():
        return None
    t = latest.read_text().strip()
    f = ckpt_dir / t / WORLD_FILE
    if f.exists():
        d = json.loads(f.read_text())
        return SavedWorld(t, int(d["world_size"]), int(d["rows_per_micro_batch"]))
    ranks = len(list((ckpt_dir / t).glob("rng-rank*.pt")))
    return SavedWorld(t, ranks, None) if ranks else None  # no tag dir: the load says so


UNIVERSAL = "universal"  # checkpoints/universal/<tag>: a checkpoint converted for another world size


def to_universal(ckpt_dir: Path, t: str, log) -> Path:
    """DeepSpeed's universal checkpoint of tag `t` (every parameter's weights and Adam moments
    whole, for any partitioning), made by DeepSpeed's own converter into a temporary dir that is
    published whole: a conversion killed half way leaves nothing that looks complete."""
    final = ckpt_dir / UNIVERSAL / t
    shutil.rmtree(ckpt_dir / UNIVERSAL, ignore_errors=True)  # an earlier conversion, or a killed one's litter
    final.parent.mkdir(parents=True)
    log(f"converting checkpoint {t} to DeepSpeed's universal format (another world size)")
    with publishing(final) as tmp:
        cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt_dir / t),
               "--output_folder", str(tmp), "--inject_missing_state", "--num_extract_workers", "1", "--num_merge_workers", "1"]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise DataError(ckpt_dir / t, "DeepSpeed's universal checkpoint conversion failed:\n" + done.stdout[-3000:])
    return final


@dataclass
class Resumed:
    """What the latest checkpoint gives back beyond the engine's own state."""

    path: str
    step: int
    sampler: dict
    best: float
    balance: dict
    rng: dict | None  # this rank's saved RNG; None for a rank the saving run did not have


def resume(engine, ckpt_dir: Path, recipe: Recipe, teacher_ids: dict, rank: int, force: bool = False,
           universal: Path | None = None) -> Resumed | None:
    """Load the latest complete checkpoint of `ckpt_dir` into the engine (None: there is none), or
    its `universal` conversion (the engine configured with checkpoint.load_universal) when the
    world size changed. A checkpoint made with another recipe or other teacher stores is refused
    unless `force`."""
    if not (ckpt_dir / "latest").exists():
        return None
    if universal is not None:
        path, client = engine.load_checkpoint(str(universal.parent), tag=universal.name)
    else:
        path, client = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        raise DataError(ckpt_dir, "the latest checkpoint could not be loaded")
    for key, now, what in (("recipe_sha", recipe_hash(recipe), "recipe"), ("teachers", teacher_ids, "teacher stores")):
        if client.get(key) != now and not force:
            raise DataError(ckpt_dir, f"the checkpoint was made with another {what}; use a new --output-dir, or --force-resume")
    step = client["step"]
    rng_file = ckpt_dir / tag(step) / f"rng-rank{rank:05d}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.exists() else None
    return Resumed(path, step, client["sampler"], client.get("best", -1.0), client.get("balance", {}), rng)


def save(engine, ckpt_dir: Path, step: int, rank: int, client: dict, world: int, rows: int) -> None:
    """Checkpoint `step` on every rank (`world` of them, `rows` rows per scheduled micro-batch over
    all); then go on with the RNG exactly as a resumed run will."""
    state = rng_state()
    t = tag(step)
    # each rank's own RNG (dropout draws differ between ranks) and rank 0's world.json; `latest`
    # moves to this tag later (`publish`), once every rank's files are complete
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        write_bytes(ckpt_dir / t / f"rng-rank{rank:05d}.pt", buf.getvalue())
        if rank == 0:
            write_json(ckpt_dir / t / WORLD_FILE, {"world_size": world, "rows_per_micro_batch": rows})
        engine.save_checkpoint(str(ckpt_dir), tag=t, client_state=client, save_latest=False)
    except BaseException as e:
        full = not isinstance(e, DataError) and is_disk_full(e, ckpt_dir)  # before the space is freed again
        shutil.rmtree(ckpt_dir / t, ignore_errors=True)  # no half checkpoint: `latest` still names the last complete tag
        if full:
            raise disk_full(ckpt_dir / t, None, e) from None
        raise
    set_rng_state(state)  # saving may draw random numbers


def publish(ckpt_dir: Path, step: int) -> None:
    """Point `latest` at `step` (rank 0, once every rank has saved it): one atomic rename."""
    write_text(ckpt_dir / "latest", tag(step))


def prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints up to the one `latest` names (at least that one); drop any
    tag past it (a save that never finished) and the universal conversion (a newer checkpoint exists)."""
    latest = (ckpt_dir / "latest").read_text().strip()
    tags = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    whole = [p for p in tags if p.name <= latest]
    for old in whole[: -max(1, keep)] + [p for p in tags if p.name > latest]:
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(ckpt_dir / UNIVERSAL, ignore_errors=True)
