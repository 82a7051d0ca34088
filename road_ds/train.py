"""The ROaD trainer: a multi-task student on DeepSpeed ZeRO, with KD targets streamed from teacher stores.

    deepspeed road_ds/train.py --deepspeed ds_configs/zero2.json --recipe R.yaml --output-dir runs/x
    torchrun --nproc_per_node N road_ds/train.py ...   |   srun python road_ds/train.py ...   |   road-ds train ...

One optimizer step takes `mtl.passes` micro-batches (DeepSpeed's gradient accumulation), each
from one dataset picked by the schedule, the same on every rank (a pure function of seed and
step). A restart with the same output dir resumes from the latest complete checkpoint, exactly.
The same trainer trains teachers: a recipe without `kd`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: `deepspeed road_ds/train.py ...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from road_ds.atomic import disk_full, is_disk_full, publish_dir, temp_beside, write_bytes, write_json, write_text
from road_ds.errors import DataError, run_job
from road_ds.recipe import Recipe, load_recipe

COLLAPSED = 0.9  # mean [CLS] cosine within a batch above which a classification head is warned of a collapsed encoder
VOLATILE = {"max_steps", "eval_every", "save_every", "log_every", "num_workers", "keep_checkpoints", "eval_batch_size"}


def recipe_hash(recipe: Recipe) -> str:
    """What a resumed run must share with the run that saved: all but the bookkeeping knobs."""
    d = recipe.model_dump(mode="json")
    d["train"] = {k: v for k, v in d["train"].items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


class StopFlag:
    """SIGTERM / SIGUSR1 (Slurm's warning before the end) / SIGINT ask for a checkpoint at the next
    step; a second SIGTERM or SIGINT while that checkpoint is pending ends the run at once. Slurm's
    SIGUSR1 then SIGTERM is still one checkpoint, and so is one SIGTERM delivered twice within a
    second (by slurmstepd and by srun forwarding it)."""

    AGAIN_AFTER_S = 1.0

    def __init__(self):
        self.raised = False
        self.first_end: float | None = None  # when the first SIGTERM/SIGINT came
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, frame):
        self.raised = True
        if signum == signal.SIGUSR1:
            return
        now = time.monotonic()
        if self.first_end is None:
            self.first_end = now
        elif now - self.first_end >= self.AGAIN_AFTER_S:
            raise SystemExit(128 + signum)


_LOADERS: list = []  # the run's DataLoader iterators, shut down by main() however the run ends


def end_workers() -> None:
    """Shut down the DataLoader workers on every exit path. They ignore SIGTERM (the training process
    handles it), so a run ended by an exception would otherwise wait forever at exit, joining a worker
    blocked on its queue; the iterator's own shutdown tells them to stop and joins them."""
    while _LOADERS:
        it = _LOADERS.pop()
        shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only
        if shutdown is not None:
            shutdown()


def _hidden_size(recipe: Recipe) -> int | None:
    """The encoder's width, for DeepSpeed's "auto" bucket sizes (read from config.json, no weights)."""
    if recipe.model.config:
        return recipe.model.config.get("hidden_size")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(recipe.model.name_or_path).hidden_size
    except Exception:
        return None


def link_tree(src: Path, dst: Path) -> None:
    """`dst` as a copy of the folder `src` made of hard links, put in place whole (written aside, then renamed)."""
    tmp = temp_beside(dst)
    try:
        shutil.copytree(src, tmp, copy_function=os.link)
    except OSError:  # a file system without hard links: a plain copy
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    publish_dir(tmp, dst, replace=True)


def _worker_init(_: int) -> None:
    """DataLoader workers leave SIGTERM/SIGUSR1/SIGINT to the training process, which checkpoints and then ends them."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


class Logger:
    """Rank 0 only: a JSONL file, TensorBoard scalars, and a progress bar."""

    def __init__(self, out: Path, enabled: bool, total: int, start: int):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.path = out / "metrics.jsonl"
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start if start else None)
        self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """On resume, drop what the killed run logged past its last checkpoint."""
        if self.enabled and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            write_text(self.path, "".join(k + "\n" for k in keep))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": step, **values}) + "\n")
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)

    def progress(self, n: int, **postfix) -> None:
        if self.enabled:
            self.bar.update(n)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
            self.bar.close()


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.all_reduce(x)
    return x


def compute_loss(recipe: Recipe, name: str, kind: str, out: dict, batch: dict, teacher: dict | None, step: int) -> tuple[torch.Tensor, dict]:
    """Gold CE plus KD per output (span: start and end, averaged), as the dataset's KD spec says."""
    from road_ds.kd import anneal_lambda, combine_teachers, kd_loss

    kd = recipe.kd_for(name)
    outputs = ("start", "end") if kind == "span" else ("cls",)
    total, parts = 0.0, {"ce": 0.0, "kd": 0.0}
    for o in outputs:
        z = out[o].float()
        gold = batch["start_positions" if o == "start" else "end_positions" if o == "end" else "label"].to(z.device)
        support = batch["support"].to(z.device) if kind == "span" else None
        if kd is None or teacher is None:
            loss, p = kd_loss(z, gold, None, support=support)
        else:
            t = teacher[o].to(z.device)
            method = "mean" if kd.combine == "anneal" else kd.combine
            target = combine_teachers(t, gold, method, W=kd.W)
            lam = anneal_lambda(step, recipe.train.max_steps) if kd.combine == "anneal" else None
            loss, p = kd_loss(z, gold, target, support=support, alpha=kd.alpha, temperature=kd.temperature, t2=kd.t2, method=kd.combine, lam=lam)
        total = total + loss / len(outputs)
        for k in parts:
            parts[k] += float(p.get(k, 0.0)) / len(outputs)
    return total, parts


def schedule_kwargs(recipe: Recipe, tables: dict, world: int, rank: int) -> dict:
    """The MTL sampler's arguments: which dataset and rows each micro-batch of each step takes."""
    T, mtl = recipe.train, recipe.mtl
    return dict(sizes={n: len(ft) for n, ft in tables.items()}, task_sizes={n: len(ft.examples) for n, ft in tables.items()},
                micro_batch_size=T.micro_batch_size, passes=mtl.passes, world=world, rank=rank, policy=mtl.policy,
                temperature=mtl.temperature, seed=T.seed)


def train_loader(recipe: Recipe, tables: dict, teachers: dict, sampler_kwargs: dict, state: dict | None, pad_id: int):
    """Micro-batches in schedule order from `state` on; DataLoader workers gather the teacher targets."""
    from road_ds.data import TrainBatches

    batches = TrainBatches(tables, teachers, sampler_kwargs, state, recipe.train.max_steps, pad_id)
    workers = recipe.train.num_workers
    return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=False,
                                       prefetch_factor=4 if workers else None, worker_init_fn=_worker_init)


def engine_config(recipe: Recipe, path: str, world_size: int, cpu: bool) -> dict:
    """The DeepSpeed config with its "auto" fields from the recipe (a contradiction is an error), and
    the CPU adjustments."""
    from road_ds.ds_config import resolve_ds_config

    T = recipe.train
    bf16 = (not cpu) and torch.cuda.is_bf16_supported()
    ds_config = resolve_ds_config(path, micro_batch_size=T.micro_batch_size, passes=recipe.mtl.passes, world_size=world_size, lr=T.lr,
                                  weight_decay=T.weight_decay, betas=tuple(T.betas), eps=T.eps, grad_clip=T.grad_clip, bf16=bf16,
                                  hidden_size=_hidden_size(recipe))
    zero = ds_config.get("zero_optimization", {})
    opt_params = ds_config.get("optimizer", {}).get("params", {})
    if cpu and not zero.get("offload_optimizer") and "torch_adam" not in opt_params:
        opt_params["torch_adam"] = True  # DeepSpeed's CPU Adam op costs minutes to compile and buys nothing here
    if cpu and zero.get("overlap_comm"):
        # the CPU has no communication streams to overlap with; and with it on, a ZeRO-2 resume on
        # gloo drifts from the uninterrupted run (measured ~1e-3 in the loss), with it off it is exact
        zero["overlap_comm"] = False
    return ds_config


def task_balance(recipe: Recipe, engine):
    """The MTL task balance (`mtl.balance`) and the probe on the engine's shared encoder that feeds it."""
    from road_ds.balance import EncoderProbe, TaskBalancer

    return TaskBalancer(recipe.mtl.balance, recipe.mtl.balance_decay), EncoderProbe(engine.module.encoder)


def train_step(engine, it, recipe: Recipe, tables: dict, step: int, device, teacher_of=lambda item: item.get("teacher"),
               balancer=None, probe=None) -> tuple[list, float]:
    """One optimizer step: `mtl.passes` micro-batches from the loader, each forward, loss, backward
    (DeepSpeed steps at the last). Returns (dataset, loss, parts, rows) per micro-batch and the
    seconds spent waiting for the loader. `teacher_of` gives a micro-batch's teacher targets: the
    ones the loader gathered from the stores (online-KD baselines pass their own). With a
    `balancer` and the `probe` on the encoder, each loss is scaled by its task's balance weight
    (and the dataset's static `loss_weight`) before backward; parts then carry the weight, the
    unweighted loss's gradient norm on the encoder and the [CLS] cosine of the micro-batch."""
    micros, wait = [], 0.0
    for micro in range(recipe.mtl.passes):
        t0 = time.perf_counter()
        item = next(it)
        wait += time.perf_counter() - t0
        if "error" in item:  # bad input met by a DataLoader worker (e.g. a damaged teacher shard)
            raise item["error"]
        assert item["step"] == step and item["micro"] == micro, "the data order left the schedule"
        name = item["dataset"]
        ft = tables[name]
        batch = item["batch"]
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if probe is not None:
            probe.reset()
        outputs = engine(ft.spec.head_name, **inputs)
        loss, parts = compute_loss(recipe, name, ft.spec.task_type.kind, outputs, batch, teacher_of(item), step)
        weight = (balancer.weight(name) if balancer is not None else 1.0) * ft.spec.loss_weight
        engine.backward(loss * weight if weight != 1.0 else loss)
        engine.step()
        parts = {k: float(v) for k, v in parts.items()}
        if probe is not None:
            norm = probe.grad_norm()
            if norm is not None and balancer is not None:
                balancer.observe(name, norm, weight)
            parts |= {"weight": weight, "enc_grad": norm / weight if norm is not None else float("nan"),
                      "cls_cos": probe.cls_cos if probe.cls_cos is not None else float("nan")}
        micros.append((name, loss.item(), parts, len(batch["input_ids"])))
    return micros, wait


def run(args) -> dict:
    import datasets
    import deepspeed
    from transformers.utils import logging as hf_logging

    from road_ds.evaluate import evaluate_split, macro
    from road_ds.features import build_features, load_tokenizer
    from road_ds.model import build_model, param_groups
    from road_ds.store import TeacherStore

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    recipe = load_recipe(args.recipe, args.set or [])
    out = Path(args.output_dir)
    cpu = not torch.cuda.is_available()
    T = recipe.train

    # the DeepSpeed config first: a contradiction with the recipe stops us before any work
    from road_ds.dist import export_env, init_deepspeed, main_process_first, pick_device, rank0_logger

    ds_config = engine_config(recipe, args.deepspeed_config, export_env().size, cpu)
    init_deepspeed(cpu)
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(local_rank)
    stop = StopFlag()
    log = rank0_logger(rank == 0)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.resolved.json", recipe.model_dump(mode="json"))
        write_json(out / "ds_config.resolved.json", ds_config)

    # features: rank 0 builds what the cache lacks, then everyone reads it
    tokenizer = load_tokenizer(recipe.model.tokenizer_path)
    train_tables, eval_tables = {}, {}
    with main_process_first(rank == 0):
        for d in recipe.datasets:
            if d.train_split:
                train_tables[d.name] = build_features(recipe, d.name, d.train_split, tokenizer=tokenizer, log=log)
            if d.eval_split:
                eval_tables[d.name] = build_features(recipe, d.name, d.eval_split, tokenizer=tokenizer, log=log)
    if not train_tables:
        raise DataError(args.recipe, "no dataset has a train split", field="datasets")

    # teachers: every store is checked against the features before any compute is spent
    teachers, teacher_ids = {}, {}
    for name, ft in train_tables.items():
        kd = recipe.kd_for(name)
        if kd:
            for p in kd.teachers:
                TeacherStore.open(p, [ft])
            teachers[name] = kd.teachers
            teacher_ids[name] = [hashlib.sha256((Path(p) / "manifest.json").read_bytes()).hexdigest() for p in kd.teachers]

    _set_seed(T.seed)
    model = build_model(recipe)
    groups = param_groups(model, T.lr, T.weight_decay, T.layer_lr_decay)
    scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(T.warmup_steps, T.max_steps))  # noqa: E731
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config, lr_scheduler=scheduler)
    balancer, probe = task_balance(recipe, engine)

    # resume: the latest complete checkpoint of this output dir
    ckpt_dir = out / "checkpoints"
    sampler_kwargs = schedule_kwargs(recipe, train_tables, world, rank)
    state, step = None, 0
    best = -1.0
    rng = None
    if (ckpt_dir / "latest").exists():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is None:
            raise DataError(ckpt_dir, "the latest checkpoint could not be loaded")
        for key, now, what in (("recipe_sha", recipe_hash(recipe), "recipe"), ("teachers", teacher_ids, "teacher stores")):
            if client.get(key) != now and not args.force_resume:
                raise DataError(ckpt_dir, f"the checkpoint was made with another {what}; use a new --output-dir, or --force-resume")
        state, step, best = client["sampler"], client["step"], client.get("best", -1.0)
        balancer.load_state_dict(client.get("balance", {}))
        rng_file = ckpt_dir / f"step-{step:08d}" / f"rng-rank{rank:05d}.pt"
        rng = torch.load(rng_file, weights_only=False) if rng_file.exists() else None  # absent: another world size
        log(f"resumed from {path} at step {step}")

    logger = Logger(out, rank == 0, T.max_steps, step)
    if step:
        logger.truncate_after(step)
    it = iter(train_loader(recipe, train_tables, teachers, sampler_kwargs, state, tokenizer.pad_token_id or 0))
    _LOADERS.append(it)
    if rng is not None:
        _set_rng_state(rng)  # after the loader drew its worker seeds, as the uninterrupted run had

    from road_ds.schedule import MTLSampler

    position = MTLSampler(**sampler_kwargs)  # the main process's copy of the position, for checkpoints
    if state:
        position.load_state_dict(state)
    names = sorted(train_tables)
    cols = ("loss", "ce", "kd", "weight", "enc_grad", "cls_cos")  # per dataset since the last log: sums and counts
    acc, cnt = torch.zeros(len(names), len(cols), dtype=torch.float64), torch.zeros(len(names), len(cols), dtype=torch.float64)
    warned: set[str] = set()
    t_log, samples, waited, stepped = time.time(), 0, 0.0, 0.0
    results = {}

    def evaluate_all() -> dict:
        engine.eval()
        res = {}
        for name, ft in eval_tables.items():
            r = evaluate_split(lambda head, **kw: engine(head, **kw), ft, rank, world, T.eval_batch_size, tokenizer.pad_token_id or 0, device,
                               out_dir=out / "predictions", n_best_size=T.n_best_size, max_answer_length=T.max_answer_length)
            if rank == 0:
                res[name] = r
        engine.train()
        return res

    def save(step: int) -> None:
        rng = _rng_state()
        tag = f"step-{step:08d}"
        # each rank's own RNG (dropout draws differ between ranks), written before DeepSpeed's files:
        # `latest` moves to this tag only after everything in it is complete
        buf = io.BytesIO()
        torch.save(rng, buf)
        write_bytes(ckpt_dir / tag / f"rng-rank{rank:05d}.pt", buf.getvalue())
        client = {"step": step, "sampler": position.state_dict(), "recipe_sha": recipe_hash(recipe), "teachers": teacher_ids, "best": best,
                  "balance": balancer.state_dict()}
        try:
            engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            if is_disk_full(e):
                shutil.rmtree(ckpt_dir / tag, ignore_errors=True)  # `latest` still names the last complete tag
                raise disk_full(ckpt_dir / tag, None, e) from None
            raise
        _set_rng_state(rng)  # saving may draw random numbers; go on exactly as a resumed run will
        dist.barrier()
        if rank == 0:
            tags = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
            for old in tags[: -max(1, T.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)

    def export(to: Path) -> None:
        """A plain HF dir per head; written aside and renamed, so a reader never sees half of it."""
        from deepspeed.runtime.zero import GatheredParameters

        with GatheredParameters(list(engine.module.parameters()), modifier_rank=None, enabled=engine.zero_optimization_stage() == 3):
            if rank == 0:
                tmp = temp_beside(to)
                try:
                    engine.module.export(tmp, tokenizer)
                except OSError as e:
                    shutil.rmtree(tmp, ignore_errors=True)
                    if is_disk_full(e):
                        raise disk_full(to, None, e) from None
                    raise
                publish_dir(tmp, to, replace=True)
        dist.barrier()

    engine.train()
    while step < T.max_steps:
        position.next_step()
        t_step = time.perf_counter()
        micros, wait = train_step(engine, it, recipe, train_tables, step, device, balancer=balancer, probe=probe)
        for name, loss, parts, rows in micros:
            v = torch.tensor([loss, *(parts.get(c, float("nan")) for c in cols[1:])], dtype=torch.float64)
            ok = torch.isfinite(v)
            acc[names.index(name)] += torch.where(ok, v, 0.0)
            cnt[names.index(name)] += ok
            samples += rows * world
        waited += wait
        stepped += time.perf_counter() - t_step
        step += 1
        if step % T.log_every == 0 or step == T.max_steps:
            tot, num = _all_reduce_sum(acc.clone()), _all_reduce_sum(cnt.clone())
            vals = {"lr": engine.get_lr()[0] if engine.get_lr() else 0.0}
            vals["loss"] = tot[:, 0].sum().item() / max(1.0, num[:, 0].sum().item())
            for j, n in enumerate(names):
                for c, k in enumerate(cols):
                    if num[j, c] > 0:
                        vals[f"{k}/{n}"] = tot[j, c].item() / num[j, c].item()
                cos = vals.get(f"cls_cos/{n}")
                if cos is not None and cos > COLLAPSED and n not in warned and train_tables[n].spec.task_type.kind == "classification":
                    warned.add(n)
                    log(f"warning: step {step}: the [CLS] states of {n}'s batches are nearly one vector (mean cosine {cos:.2f}); "
                        "its head cannot tell inputs apart. Another task's gradient may own the encoder: see mtl.balance")
            dt = time.time() - t_log
            vals["samples_per_s"] = samples / max(dt, 1e-9)
            vals["data_wait_frac"] = waited / max(stepped, 1e-9)  # of the step time, spent waiting for the DataLoader
            logger.log(step, vals)
            logger.progress(T.log_every if step % T.log_every == 0 else step % T.log_every, loss=f"{vals['loss']:.4f}", sps=f"{vals['samples_per_s']:.1f}")
            acc.zero_()
            cnt.zero_()
            t_log, samples, waited, stepped = time.time(), 0, 0.0, 0.0
        if T.eval_every and step % T.eval_every == 0 and step < T.max_steps:
            results = evaluate_all()
            if rank == 0:
                m = macro(results)
                logger.log(step, {f"eval/{n}/{k}": v for n, r in results.items() for k, v in r.items() if isinstance(v, float)} | {"eval/macro": m})
            m = torch.tensor([macro(results) if rank == 0 else 0.0], dtype=torch.float64)
            m = float(_all_reduce_sum(m))
            if m > best:
                best = m
                export(out / "best")
        flag = _all_reduce_sum(torch.tensor([1.0 if stop.raised else 0.0])).item() > 0
        if step % T.save_every == 0 or flag or step == T.max_steps:
            save(step)
        if flag:
            log(f"stopped by a signal at step {step}: checkpoint saved, exiting for a requeue")
            logger.close()
            return {"stopped": True, "step": step}

    results = evaluate_all()
    final = {}
    if rank == 0:
        final = {n: {k: v for k, v in r.items() if isinstance(v, (int, float))} for n, r in results.items()}
        final["macro"] = macro(results)
        import resource

        # peak resident memory of this (training) process and of its largest finished child (the
        # DataLoader workers; forked, so the pages they share with this process count too), in MiB
        final["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        final["peak_rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        logger.log(step, {f"eval/{n}/{k}": v for n, r in results.items() for k, v in r.items() if isinstance(v, float)} | {"eval/macro": final["macro"]})
        write_json(out / "eval_results.json", final)
        log(json.dumps(final))
    m = float(_all_reduce_sum(torch.tensor([final.get("macro", 0.0)], dtype=torch.float64)))
    export(out / "export")
    if rank == 0:
        if m > best:  # the final model is the best: `best/` is `export/` again, as hard links (no second copy on disk)
            best = m
            link_tree(out / "export", out / "best")
        if T.keep_checkpoints == 0:  # finished and exported: nothing left to resume
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    dist.barrier()
    logger.close()
    return {"stopped": False, "step": step, "eval": final}


def build_parser() -> argparse.ArgumentParser:
    import deepspeed

    p = argparse.ArgumentParser(prog="road-ds train", description="Train a multi-task student (or a teacher) with ROaD MTL and weighted KD on DeepSpeed.",
                                conflict_handler="resolve")
    p.add_argument("--recipe", required=True)
    p.add_argument("--output-dir", required=True, help="everything the run writes goes here; a rerun with the same dir resumes")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. train.lr=1e-4 or datasets.squad.kd.alpha=0.3")
    p.add_argument("--force-resume", action="store_true", help="resume even if the recipe or the teachers changed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)), help=argparse.SUPPRESS)
    p = deepspeed.add_config_arguments(p)
    # `--deepspeed ds_configs/zero2.json` (the common form) names the config; plain `--deepspeed` still works
    p.add_argument("--deepspeed", nargs="?", const=True, default=False, metavar="DS_CONFIG.json",
                   help="the DeepSpeed JSON config (default ds_configs/zero2.json)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(args.deepspeed, str):
        args.deepspeed_config = args.deepspeed
    if not args.deepspeed_config:
        args.deepspeed_config = str(Path(__file__).resolve().parent.parent / "ds_configs" / "zero2.json")
    try:
        return run_job("road-ds train", run, args)
    finally:
        end_workers()


if __name__ == "__main__":
    sys.exit(main())
