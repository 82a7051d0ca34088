"""The ROaD trainer: a multi-task student on DeepSpeed ZeRO, with KD targets streamed from teacher stores.

    deepspeed road_ds/train.py --deepspeed ds_configs/zero2.json --recipe R.yaml --output-dir runs/x
    torchrun --nproc_per_node N road_ds/train.py ...   |   srun python road_ds/train.py ...   |   road-ds train ...

`setup(args)` builds a `Run` (features, teacher stores checked, engine, resumed position, loader);
`fit(run)` is the loop. One optimizer step takes `mtl.passes` micro-batches (DeepSpeed's gradient
accumulation), each from one dataset picked by the schedule, the same on every rank (a pure
function of seed and step). A restart with the same output dir resumes from the latest complete
checkpoint, exactly. The same trainer trains teachers: a recipe without `kd`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

if __package__ in (None, ""):  # run as a script: `deepspeed road_ds/train.py ...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from road_ds import checkpoint
from road_ds.atomic import link_tree, publishing, write_json
from road_ds.dist import all_reduce_sum
from road_ds.errors import DataError, run_job
from road_ds.recipe import Recipe, load_recipe
from road_ds.schedule import BatchSplit
from road_ds.train_log import Logger, StepStats

COLLAPSED = 0.9  # mean [CLS] cosine within a batch above which a classification head is warned of a collapsed encoder


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


def _hidden_size(recipe: Recipe) -> int | None:
    """The encoder's width, for DeepSpeed's "auto" bucket sizes (read from config.json, no weights)."""
    if recipe.model.config:
        return recipe.model.config.get("hidden_size")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(recipe.model.name_or_path).hidden_size
    except Exception:
        return None


def lr_lambda(warmup: int, total: int):
    """The LR multiplier of optimizer step `step` (from 0): a linear warm-up whose first step already
    moves (1/warmup), then a linear decay to 0 at `total`."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def engine_config(recipe: Recipe, path: str, split: BatchSplit, cpu: bool, universal: bool = False) -> dict:
    """The DeepSpeed config with its "auto" fields from the recipe (a contradiction is an error), and
    the CPU adjustments. `split`: the micro-batch and accumulation DeepSpeed sees (the recipe's,
    unless a resume on another world size split each rank's rows into chunks); `universal`: the
    checkpoint to resume was saved under another world size, so ZeRO loads its universal form."""
    from road_ds.ds_config import resolve_ds_config

    T = recipe.train
    bf16 = (not cpu) and torch.cuda.is_bf16_supported()
    ds_config = resolve_ds_config(path, micro_batch_size=split.chunk, passes=recipe.mtl.passes * split.chunks, world_size=split.world, lr=T.lr,
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
    if universal and zero.get("stage", 0) > 0:  # without ZeRO every rank holds the whole state: nothing to re-partition
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return ds_config


def batch_split(recipe: Recipe, saved: checkpoint.SavedWorld | None, world: int, ckpt_dir: Path) -> BatchSplit:
    """This run's rows per rank: the recipe's micro_batch_size for a fresh run; on resume, the
    checkpoint's rows per scheduled micro-batch shared by this world, in chunks of at most
    micro_batch_size (DeepSpeed accumulates them), so every step reads the rows it would have."""
    mb = recipe.train.micro_batch_size
    rows = mb * world if saved is None else saved.rows or mb * saved.world
    try:
        return BatchSplit.fit(rows, world, mb)
    except ValueError:
        raise DataError(ckpt_dir / saved.tag, f"its micro-batches hold {rows} rows (saved on {saved.world} ranks), which "
                        f"{world} ranks cannot share evenly: resume on a world size that divides {rows}") from None


def task_balance(recipe: Recipe, engine):
    """The MTL task balance (`mtl.balance`) and the probe on the engine's shared encoder that feeds it."""
    from road_ds.balance import EncoderProbe, TaskBalancer

    return TaskBalancer(recipe.mtl.balance, recipe.mtl.balance_decay), EncoderProbe(engine.module.encoder)


def train_step(engine, it, recipe: Recipe, tables: dict, step: int, device, teacher_of=lambda item: item.get("teacher"),
               balancer=None, probe=None, chunks: int = 1) -> tuple[list, float]:
    """One optimizer step: `mtl.passes` micro-batches from the loader, each forward, loss, backward
    (DeepSpeed steps at the last), each as `chunks` pieces. Returns (dataset, loss, parts, rows)
    per piece and the seconds spent waiting for the loader. `teacher_of` gives a micro-batch's
    teacher targets: the ones the loader gathered from the stores (online-KD baselines pass their
    own). With a `balancer` and the `probe` on the encoder, each loss is scaled by its task's
    balance weight (and the dataset's static `loss_weight`) before backward; parts then carry the
    weight, the unweighted loss's gradient norm on the encoder and the [CLS] cosine of the piece.
    The balancer sees one norm per micro-batch, the mean over its pieces and ranks, each piece's
    norm as if unchunked: a rank's rows split into chunks give the norms the ranks that saved them
    did."""
    from road_ds.kd import compute_loss

    micros, wait = [], 0.0
    for micro in range(recipe.mtl.passes):
        weight, norms = None, []
        for chunk in range(chunks):
            t0 = time.perf_counter()
            item = next(it)
            wait += time.perf_counter() - t0
            if "error" in item:  # bad input met by a DataLoader worker (e.g. a damaged teacher shard)
                raise item["error"]
            assert (item["step"], item["micro"], item["chunk"]) == (step, micro, chunk), "the data order left the schedule"
            name = item["dataset"]
            ft = tables[name]
            batch = item["batch"]
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            if probe is not None:
                probe.reset()
            outputs = engine(ft.spec.head_name, **inputs)
            loss, parts = compute_loss(recipe.kd_for(name), ft.spec.task_type.kind, outputs, batch, teacher_of(item), step, recipe.train.max_steps)
            if weight is None:  # one weight for the whole micro-batch
                weight = (balancer.weight(name) if balancer is not None else 1.0) * ft.spec.loss_weight
            engine.backward(loss * weight if weight != 1.0 else loss)
            engine.step()
            parts = {k: float(v) for k, v in parts.items()}
            if probe is not None:
                norm = probe.grad_norm()
                if norm is not None:  # DeepSpeed divides each piece's loss by the accumulation count: undo the chunks' share
                    norm *= chunks
                    norms.append(norm)
                parts |= {"weight": weight, "enc_grad": norm / weight if norm is not None else float("nan"),
                          "cls_cos": probe.cls_cos if probe.cls_cos is not None else float("nan")}
            micros.append((name, loss.item(), parts, len(batch["input_ids"])))
        if norms and balancer is not None:
            balancer.observe(name, sum(norms) / len(norms), weight)
    return micros, wait


@dataclass
class Run:
    """One training run on this rank: what `setup` built and `fit` advances."""

    args: argparse.Namespace
    recipe: Recipe
    out: Path
    engine: Any
    tokenizer: Any
    tables: dict  # dataset name -> FeatureTable of its train split
    eval_tables: dict  # dataset name -> FeatureTable of its dev split
    teachers: dict  # dataset name -> teacher store dirs
    teacher_ids: dict  # the stores' manifest hashes, which a resume must match
    position: Any  # the MTL sampler's position (this process's copy, for checkpoints)
    logger: Logger
    log: Callable[[str], None]
    device: torch.device
    rank: int
    world: int
    split: BatchSplit  # rows per scheduled micro-batch, per rank, and the chunks DeepSpeed accumulates
    balancer: Any
    probe: Any
    stop: StopFlag
    stats: StepStats
    step: int = 0
    best: float = -1.0  # the best dev macro so far (its model is in best/)
    loader: Any = None  # the DataLoader's iterator
    warned: set = field(default_factory=set)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def close(self) -> None:
        """Shut the loader's workers down and close the logs: on every way out of the run."""
        from road_ds.loader import end_workers

        end_workers(self.loader)
        self.logger.close()


def build_features_for(recipe: Recipe, recipe_path, tokenizer, is_main: bool, log) -> tuple[dict, dict]:
    """Train and dev features of every dataset: rank 0 builds what the cache lacks, then everyone reads it."""
    from road_ds.dist import main_process_first
    from road_ds.features import build_features

    tables, eval_tables = {}, {}
    with main_process_first(is_main):
        for d in recipe.datasets:
            if d.train_split:
                tables[d.name] = build_features(recipe, d.name, d.train_split, tokenizer=tokenizer, log=log)
            if d.eval_split:
                eval_tables[d.name] = build_features(recipe, d.name, d.eval_split, tokenizer=tokenizer, log=log)
    if not tables:
        raise DataError(recipe_path, "no dataset has a train split", field="datasets")
    return tables, eval_tables


def open_teachers(recipe: Recipe, tables: dict) -> dict[str, list[str]]:
    """Each KD dataset's teacher stores, every one checked against the features before any compute is spent."""
    from road_ds.store import TeacherStore

    teachers = {}
    for name, ft in tables.items():
        kd = recipe.kd_for(name)
        if kd:
            for p in kd.teachers:
                TeacherStore.open(p, [ft])
            teachers[name] = kd.teachers
    return teachers


def build_engine(recipe: Recipe, ds_config: dict):
    """The student (seeded), its AdamW groups and the warm-up + linear-decay schedule, on DeepSpeed."""
    import deepspeed

    from road_ds.model import build_model, param_groups

    T = recipe.train
    checkpoint.set_seed(T.seed)
    model = build_model(recipe)
    groups = param_groups(model, T.lr, T.weight_decay, T.layer_lr_decay)
    scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(T.warmup_steps, T.max_steps))  # noqa: E731
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config, lr_scheduler=scheduler)
    return engine


def setup(args) -> Run:
    """Everything before the first step, in the order that fails fastest: the DeepSpeed config, the
    features, the teacher stores, the engine, the resumed position, and the loader (started last)."""
    import datasets
    import torch.distributed as dist
    from transformers.utils import logging as hf_logging

    from road_ds.dist import export_env, init_deepspeed, main_process_first, pick_device, rank0_logger
    from road_ds.features import load_tokenizer
    from road_ds.loader import schedule_kwargs, train_loader
    from road_ds.schedule import MTLSampler

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    recipe = load_recipe(args.recipe, args.set or [])
    out, cpu = Path(args.output_dir), not torch.cuda.is_available()
    ckpt_dir, world = out / "checkpoints", export_env().size
    saved = checkpoint.saved_world(ckpt_dir)  # a resume on another world size keeps the rows and converts the checkpoint
    split = batch_split(recipe, saved, world, ckpt_dir)
    regrid = saved is not None and saved.world != world
    ds_config = engine_config(recipe, args.deepspeed_config, split, cpu, universal=regrid)  # a contradiction stops us before any work
    convert = ds_config.get("checkpoint", {}).get("load_universal", False)
    init_deepspeed(cpu, recipe.train.collective_timeout_s)
    rank, world = dist.get_rank(), dist.get_world_size()
    device, stop, log = pick_device(int(os.environ.get("LOCAL_RANK", 0))), StopFlag(), rank0_logger(rank == 0)
    if world > 1:  # where each rank runs: a multi-node job's placement, in its log
        hosts = [None] * world
        dist.all_gather_object(hosts, socket.gethostname())
        log("ranks on hosts: " + ", ".join(f"{r} {h}" for r, h in enumerate(hosts)))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.resolved.json", recipe.model_dump(mode="json"))
        write_json(out / "ds_config.resolved.json", ds_config)
    tokenizer = load_tokenizer(recipe.model.tokenizer_path)
    tables, eval_tables = build_features_for(recipe, args.recipe, tokenizer, rank == 0, log)
    teachers = open_teachers(recipe, tables)
    engine = build_engine(recipe, ds_config)
    balancer, probe = task_balance(recipe, engine)
    teacher_ids = checkpoint.store_ids(teachers)
    universal = None
    if convert:
        with main_process_first(rank == 0):
            if rank == 0:
                checkpoint.to_universal(ckpt_dir, saved.tag, log)
        universal = ckpt_dir / checkpoint.UNIVERSAL / saved.tag
    resumed = checkpoint.resume(engine, ckpt_dir, recipe, teacher_ids, rank, force=args.force_resume, universal=universal)
    start = resumed.step if resumed else 0
    sampler_kwargs = schedule_kwargs(recipe, tables, world, rank, per_rank=split.per_rank)
    run = Run(args, recipe, out, engine, tokenizer, tables, eval_tables, teachers, teacher_ids, MTLSampler(**sampler_kwargs),
              Logger(out, rank == 0, recipe.train.max_steps, start), log, device, rank, world, split, balancer, probe, stop,
              StepStats(tables, world), step=start, best=resumed.best if resumed else -1.0)
    if resumed:
        run.position.load_state_dict(resumed.sampler)
        balancer.load_state_dict(resumed.balance)
        run.logger.truncate_after(start)
        log(f"resumed from {resumed.path} at step {start}")
        if regrid:
            log(regrid_note(saved, split, recipe.train.micro_batch_size, convert))
    try:
        run.loader = iter(train_loader(recipe, tables, teachers, sampler_kwargs, resumed.sampler if resumed else None, tokenizer.pad_token_id or 0,
                                       split.chunks))
        # after the loader drew its worker seeds, as the uninterrupted run had
        if resumed and resumed.rng is not None:
            checkpoint.set_rng_state(resumed.rng)
        elif resumed:  # a rank the saving run did not have: a stream of its own, the same on every such resume
            checkpoint.set_seed(checkpoint.seed_for(recipe.train.seed, start, rank))
    except BaseException:
        run.close()
        raise
    return run


def regrid_note(saved: checkpoint.SavedWorld, split: BatchSplit, micro_batch_size: int, converted: bool) -> str:
    """The log line that says what a resume on another world size changed."""
    def ranks(a: int, b: int) -> str:
        return f"rank {a}" if a == b else f"ranks {a}-{b}"

    rows = f"{split.per_rank} rows per rank" + (f" as {split.chunks} accumulated chunks of {split.chunk}" if split.chunks > 1 else "")
    kept = min(split.world, saved.world)
    rng = f"{ranks(0, kept - 1)} keep{'s' if kept == 1 else ''} the saved RNG"
    if split.world > saved.world:
        rng += f", {ranks(saved.world, split.world - 1)} start{'s' if split.world - saved.world == 1 else ''} from a seed of (seed, step, rank)"
    optimizer = "re-partitioned from DeepSpeed's universal checkpoint" if converted else "whole on every rank (no ZeRO)"
    return (f"world size {saved.world} -> {split.world}: each micro-batch keeps its {split.rows} rows ({rows}; recipe micro_batch_size "
            f"{micro_batch_size}), so every step reads the same rows; the optimizer state was {optimizer}; {rng}; "
            "dropout draws differ from the uninterrupted run's")


def fit(run: Run) -> dict:
    """The loop: a step, its log line, a dev eval, a checkpoint; a stop signal checkpoints and ends
    the run for a requeue. At the end: the final eval and the export."""
    T = run.recipe.train
    run.engine.train()
    while run.step < T.max_steps:
        run.position.next_step()
        t0 = time.perf_counter()
        micros, wait = train_step(run.engine, run.loader, run.recipe, run.tables, run.step, run.device, balancer=run.balancer, probe=run.probe,
                                  chunks=run.split.chunks)
        run.stats.add(micros, wait, time.perf_counter() - t0)
        run.step += 1
        if run.step % T.log_every == 0 or run.step == T.max_steps:
            log_line(run)
        if T.eval_every and run.step % T.eval_every == 0 and run.step < T.max_steps:
            _, m = evaluate(run)
            if m > run.best:
                run.best = m
                export(run, run.out / "best")
        stopped = all_reduce_sum(torch.tensor([1.0 if run.stop.raised else 0.0])).item() > 0
        if run.step % T.save_every == 0 or stopped or run.step == T.max_steps:
            save(run)
        if stopped:
            run.log(f"stopped by a signal at step {run.step}: checkpoint saved, exiting for a requeue")
            return {"stopped": True, "step": run.step}
    return finish(run)


def log_line(run: Run) -> None:
    """The metrics since the last line, over all ranks; a warning when a classifier's [CLS] states collapse."""
    lr = run.engine.get_lr()
    vals = {"lr": lr[0] if lr else 0.0} | run.stats.values()
    for n in run.stats.names:
        cos = vals.get(f"cls_cos/{n}")
        if cos is not None and cos > COLLAPSED and n not in run.warned and run.tables[n].spec.task_type.kind == "classification":
            run.warned.add(n)
            run.log(f"warning: step {run.step}: the [CLS] states of {n}'s batches are nearly one vector (mean cosine {cos:.2f}); "
                    "its head cannot tell inputs apart. Another task's gradient may own the encoder: see mtl.balance")
    run.logger.log(run.step, vals)
    run.logger.progress(run.step, loss=f"{vals['loss']:.4f}", sps=f"{vals['samples_per_s']:.1f}")


def evaluate(run: Run) -> tuple[dict, float]:
    """Every dev split on the current weights, logged by rank 0. Returns the results (rank 0; {} on
    the others) and the macro (every rank)."""
    from road_ds.evaluate import evaluate_split, macro

    T = run.recipe.train
    run.engine.eval()
    results = {}
    for name, ft in run.eval_tables.items():
        r = evaluate_split(lambda head, **kw: run.engine(head, **kw), ft, run.rank, run.world, T.eval_batch_size, run.tokenizer.pad_token_id or 0,
                           run.device, out_dir=run.out / "predictions", n_best_size=T.n_best_size, max_answer_length=T.max_answer_length)
        if run.rank == 0:
            results[name] = r
    run.engine.train()
    m = macro(results) if run.rank == 0 else 0.0
    run.logger.log(run.step, {f"eval/{n}/{k}": v for n, r in results.items() for k, v in r.items() if isinstance(v, float)} | {"eval/macro": m})
    return results, float(all_reduce_sum(torch.tensor([m], dtype=torch.float64)))


def save(run: Run) -> None:
    """A checkpoint of this step on every rank; once all have written theirs, rank 0 points `latest`
    at it (no rank goes on before that: a stopped run exits with it published) and prunes."""
    import torch.distributed as dist

    client = {"step": run.step, "sampler": run.position.state_dict(), "recipe_sha": checkpoint.recipe_hash(run.recipe),
              "teachers": run.teacher_ids, "best": run.best, "balance": run.balancer.state_dict()}
    checkpoint.save(run.engine, run.ckpt_dir, run.step, run.rank, client, run.world, run.split.rows)
    dist.barrier()  # every rank's files are complete
    if run.rank == 0:
        checkpoint.publish(run.ckpt_dir, run.step)
    dist.barrier()
    if run.rank == 0:
        checkpoint.prune(run.ckpt_dir, run.recipe.train.keep_checkpoints)


def export(run: Run, to: Path) -> None:
    """A plain HF dir per head (ZeRO-3's partitions gathered first), published whole by rank 0."""
    import torch.distributed as dist
    from deepspeed.runtime.zero import GatheredParameters

    engine = run.engine
    with GatheredParameters(list(engine.module.parameters()), modifier_rank=None, enabled=engine.zero_optimization_stage() == 3):
        if run.rank == 0:
            with publishing(to, replace=True) as tmp:
                engine.module.export(tmp, run.tokenizer)
    dist.barrier()


def finish(run: Run) -> dict:
    """The final dev eval (eval_results.json), the export, and `best/` as its hard links when it is the best."""
    import resource
    import shutil

    import torch.distributed as dist

    results, m = evaluate(run)
    final = {}
    if run.rank == 0:
        final = {n: {k: v for k, v in r.items() if isinstance(v, (int, float))} for n, r in results.items()} | {"macro": m}
        # peak resident memory of this (training) process and of its largest finished child (the
        # DataLoader workers; forked, so the pages they share with this process count too), in MiB
        final["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        final["peak_rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        write_json(run.out / "eval_results.json", final)
        run.log(json.dumps(final))
    export(run, run.out / "export")
    if run.rank == 0:
        if m > run.best:  # the final model is the best: `best/` is `export/` again, as hard links (no second copy on disk)
            run.best = m
            link_tree(run.out / "export", run.out / "best")
        if run.recipe.train.keep_checkpoints == 0:  # finished and exported: nothing left to resume
            shutil.rmtree(run.ckpt_dir, ignore_errors=True)
    dist.barrier()
    return {"stopped": False, "step": run.step, "eval": final}


def train(args) -> dict:
    run = setup(args)
    try:
        return fit(run)
    finally:
        run.close()


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


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if isinstance(args.deepspeed, str):
        args.deepspeed_config = args.deepspeed
    if not args.deepspeed_config:
        args.deepspeed_config = str(Path(__file__).resolve().parent.parent / "ds_configs" / "zero2.json")
    return args


def main(argv=None) -> int:
    return run_job("road-ds train", train, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
