"""KD cost benchmark: offline targets from teacher stores against no KD and against online KD.

    python bench/kd_bench.py [--out docs/bench_kd.md]                       # CPU: MiniLM-L3 student, L6 teachers
    python bench/kd_bench.py --student electra-base --teacher electra-large  # GPU (bench/gpu.sh)

Every variant builds its student with the trainer's own `road_ds.train.setup` (features, stores
checked, engine with the recipe's param groups and LR schedule, task balance, loader) and runs the
trainer's own step (`road_ds.train.train_step`: the MTL schedule's micro-batches from the
DataLoader, forward, loss, backward, DeepSpeed step) on the same student, data, batch and steps, in
its own process (so peak memory is its own):
  (a) no KD; (b) offline KD, M teachers' targets gathered from stores by the DataLoader workers;
  (c) online KD, M teachers resident in the training process, run forward on every micro-batch.
Variants are interleaved over rounds and the median step time of each is kept. Separate processes
minutes apart still differ by a few percent on a shared machine, so (a) and (b) also run step by
step in one process, and the KD loss is timed alone: the ratio the target is about, without the
drift. Then ZeRO-2/3 on 1 and 2 ranks with (b). Teachers have random weights: speed and memory do
not depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from road_ds.atomic import write_text  # noqa: E402
from road_ds.pipelines.runs import deepspeed_cmd  # noqa: E402
from road_ds.recipe import cache_root  # noqa: E402

PASSES = 4  # micro-batches per optimizer step

# encoders built from a config (no weights needed to measure cost); anything else is a model dir
PRESETS = {
    "electra-base": {"model_type": "electra", "embedding_size": 768, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "max_position_embeddings": 512},
    "electra-large": {"model_type": "electra", "embedding_size": 1024, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "max_position_embeddings": 512},
}


def model_spec(name: str, kit: Path) -> dict:
    tok = str(kit / "models" / "minilm-l6")
    if name in PRESETS:
        return {"config": PRESETS[name], "tokenizer": tok}
    path = kit / "models" / name if (kit / "models" / name).exists() else Path(name)
    return {"name_or_path": str(path), "tokenizer": tok}


def bench_recipe(work: Path, kit: Path, student: str, args) -> dict:
    """The study's three tasks and lengths, on slices of the kit's train splits."""
    n = args.rows
    return {
        "model": model_spec(student, kit),
        "features": {"max_seq_length": 192, "doc_stride": 64, "max_query_length": 48, "cache_dir": str(work / "features")},
        "datasets": [
            {"name": "squad2", "task": "extractive_qa", "format": "squad_json", "files": {"train": str(kit / "squad2" / "train.json")},
             "answer_start": "nearest", "limit": {"train": n}},
            {"name": "qnli", "task": "classification", "head": "qnli", "labels": ["entailment", "not_entailment"], "format": "jsonl",
             "columns": {"text_a": "question", "text_b": "sentence"}, "files": {"train": str(kit / "qnli" / "train.jsonl")},
             "max_seq_length": 128, "limit": {"train": n}},
            {"name": "sentiment", "task": "sentiment", "format": "jsonl", "columns": {"text_a": "text"},
             "files": {"train": str(kit / "sentiment" / "train.jsonl")}, "max_seq_length": 64, "limit": {"train": n}},
        ],
        "train": {"max_steps": args.warmup + args.steps, "micro_batch_size": args.micro_batch, "lr": 1e-4, "num_workers": 1},
        "mtl": {"passes": PASSES, "policy": "proportional"},
    }


# ---------------------------------------------------------------------------- one variant (its own process)


def online_teachers(paths: list[str], device, dtype):
    from road_ds.evaluate import load_for_eval

    return [load_for_eval(Path(p)).to(device=device, dtype=dtype) for p in paths]


@torch.inference_mode()
def online_targets(models, head: str, kind: str, batch: dict, device) -> dict[str, torch.Tensor]:
    """What an online-KD trainer does each micro-batch: every teacher forward, log-softmax over the support."""
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    outs = [m(head, **inputs) for m in models]
    if kind == "span":
        support = batch["support"].to(device)
        return {o: torch.stack([torch.log_softmax(x[o].float().masked_fill(~support, -torch.inf), -1) for x in outs]) for o in ("start", "end")}
    return {"cls": torch.stack([torch.log_softmax(x["cls"].float(), -1) for x in outs])}


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: peak since the last reset), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Start the peak-RSS count afresh (Linux: 5 to clear_refs resets VmHWM); returns the RSS now, in MiB.
    After setup, so the peak then measured is the training's alone: peak RSS over the whole process
    moves by ±4% between identical processes (import and setup transients), too much for a 5% target."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def live_children() -> list[Path]:
    """/proc dirs of this process's live children: the DataLoader workers (the loader is never
    exhausted here, so they are alive until the process ends)."""
    me, out = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                out.append(stat.parent)
        except (OSError, IndexError):  # exited meanwhile
            continue
    return out


def worker_uss_mb() -> float:
    """Private memory (USS: private clean + dirty pages) of the largest worker: what it adds to the
    host beyond the pages it shares with the trainer it was forked from (its peak RSS counts those)."""
    uss = []
    for d in live_children():
        lines = (d / "smaps_rollup").read_text().splitlines()
        uss.append(sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:"))) / 1024)
    return max(uss, default=0.0)


def workers_cpu_s() -> float:
    """CPU seconds the workers' threads have run so far (schedstat: nanoseconds, where stat's user and
    system times count 10 ms ticks)."""
    return sum(int(t.read_text().split()[0]) for d in live_children() for t in d.glob("task/*/schedstat")) / 1e9


def kd_sets(work: Path, teachers: int) -> list[str]:
    """Recipe overrides for WKD from the work dir's first `teachers` stores (none: no KD)."""
    return ["kd.teachers=" + json.dumps([str(work / f"store{i}") for i in range(teachers)]), "kd.combine=wkd"] if teachers else []


def student(work: Path, teachers: int, max_steps: int):
    """The student's recipe (WKD from the first `teachers` stores; none: no KD), tokenizer and train features."""
    from road_ds.features import build_features, load_tokenizer
    from road_ds.recipe import load_recipe

    recipe = load_recipe(work / "student.yaml", [*kd_sets(work, teachers), f"train.max_steps={max_steps}"])
    tok = load_tokenizer(recipe.model.tokenizer_path)
    return recipe, tok, {d.name: build_features(recipe, d.name, "train", tokenizer=tok) for d in recipe.datasets}


def trainer_run(work: Path, result: str, ds_config: str, sets: list[str]):
    """The trainer's own `setup` (road_ds.train.setup: features, stores checked, engine with the recipe's
    param groups and LR schedule, task balance, loader) on work/student.yaml with `sets`; its output dir
    is named after the variant's result file (the same on every rank of a launch, new for each launch)."""
    from road_ds.train import parse_args, setup

    out = work / "runs" / Path(result).stem
    return setup(parse_args(["--recipe", str(work / "student.yaml"), "--output-dir", str(out), "--deepspeed", ds_config,
                             *(x for s in sets for x in ("--set", s))]))


def setup(args):
    """The bench's student through the trainer's own setup; KD from `args.teachers` stores."""
    work = Path(args.work)
    return trainer_run(work, args.result, args.ds_config, [*kd_sets(work, args.teachers), f"train.max_steps={args.warmup + args.steps}"])


def timed_step(engine, balance, it, recipe, tables, step: int, device, teacher_of=lambda item: item.get("teacher")) -> tuple[float, float, int]:
    """The trainer's step, timed: (seconds, seconds waiting for the loader, rows)."""
    from road_ds.train import train_step

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    micros, wait = train_step(engine, it, recipe, tables, step, device, teacher_of, *balance)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, wait, sum(r for *_, r in micros)


def run_variant(args) -> None:
    """(a), (b) or (c) alone in this process: step time, data wait, peak memory."""
    import torch.distributed as dist

    run = setup(args)  # (b): its loader gathers the stores' targets; (a), (c): its recipe has no stores
    engine, recipe, tables, device = run.engine, run.recipe, run.tables, run.device
    balance = (run.balancer, run.probe)
    teacher_of = lambda item: item.get("teacher")  # noqa: E731
    if args.variant == "online":
        dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
        models = online_teachers([str(Path(args.work) / "teacher")] * args.teachers, device, dtype)
        teacher_of = lambda item: online_targets(models, tables[item["dataset"]].spec.head_name,  # noqa: E731
                                                 tables[item["dataset"]].spec.task_type.kind, item["batch"], device)
    times, waits, rows = [], [], 0
    after_setup = reset_peak_rss()  # the online teachers are part of setup: they stay resident, so they count in it
    if device.type == "cuda":
        gpu_after_setup = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    for step in range(recipe.train.max_steps):
        if step == args.warmup:  # the first steps pay for allocation, the loader's start and caches
            workers0 = workers_cpu_s()
        seconds, wait, n = timed_step(engine, balance, run.loader, recipe, tables, step, device, teacher_of)
        if step >= args.warmup:
            times.append(seconds)
            waits.append(wait)
            rows += n * run.world
    if run.rank == 0:
        result = {"step_s": statistics.median(times), "wait_frac": sum(waits) / sum(times), "samples_per_s": rows / sum(times),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_cpu_s": (workers_cpu_s() - workers0) / len(times), "worker_uss_mb": worker_uss_mb(),
                  "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
                  "rss_after_setup_mb": after_setup, "rss_growth_mb": status_mb("VmHWM") - after_setup,
                  "gpu_growth_mb": torch.cuda.max_memory_allocated() / 2**20 - gpu_after_setup if device.type == "cuda" else None}
        Path(args.result).write_text(json.dumps(result))
    dist.barrier()
    run.close()


def run_paired(args) -> None:
    """(a) and (b) at each M step by step in one process, on one engine: a loader per variant over the
    same schedule, each step taken once by every variant, in an order that rotates. Adjacent steps
    see the same machine, so the per-step ratios to (a) carry little of the drift that separate
    processes minutes apart do."""
    from road_ds.loader import schedule_kwargs, train_loader

    run = setup(args)  # its loader is the largest M's
    recipe, tables, rank, world = run.recipe, run.tables, run.rank, run.world
    top = max(args.teachers_list)
    variants = {"a": {}, **{f"M={m}": {n: t[:m] for n, t in run.teachers.items()} for m in args.teachers_list if m != top}}
    its = {v: iter(train_loader(recipe, tables, offline, schedule_kwargs(recipe, tables, world, rank), None, run.tokenizer.pad_token_id or 0))
           for v, offline in variants.items()} | {f"M={top}": run.loader}
    its = {v: its[v] for v in ["a", *(f"M={m}" for m in args.teachers_list)]}
    order = list(its)
    times: dict[str, list[float]] = {v: [] for v in its}
    for step in range(recipe.train.max_steps):
        for v in order[step % len(order):] + order[:step % len(order)]:
            seconds, _, _ = timed_step(run.engine, (run.balancer, run.probe), its[v], recipe, tables, step, run.device)
            if step >= args.warmup:
                times[v].append(seconds)
    result = {v: {"step_s": statistics.median(t), "ratios": sorted(x / a for x, a in zip(t, times["a"]))} for v, t in times.items()}
    Path(args.result).write_text(json.dumps(result))
    run.close()


# ---------------------------------------------------------------------------- the whole benchmark


def prepare(work: Path, kit: Path, args) -> None:
    """The student's recipe, a teacher export (random weights) and its store over the train features,
    copied M times (the gather and reconstruct cost per teacher do not depend on the values)."""
    from road_ds.features import load_tokenizer
    from road_ds.model import build_model
    from road_ds.precompute import build_parser, run
    from road_ds.recipe import parse_recipe

    student = bench_recipe(work, kit, args.student, args)
    (work / "student.yaml").write_text(yaml.safe_dump(student))
    teacher = {**student, "model": model_spec(args.teacher, kit)}
    (work / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    recipe = parse_recipe(teacher, work / "teacher.yaml")
    torch.manual_seed(0)
    build_model(recipe).export(work / "teacher", load_tokenizer(recipe.model.tokenizer_path))
    run(build_parser().parse_args([str(work / "teacher.yaml"), "--teacher", str(work / "teacher"), "--out", str(work / "store0"),
                                   "--split", "train", "--top-k", str(args.top_k), "--dtype", "float16"]))
    for i in range(1, max(args.teachers_list)):
        shutil.copytree(work / "store0", work / f"store{i}")


def precompute_vs_bare(work: Path, device) -> list[dict]:
    """Item 4 on this device: the precompute's per-shard work against a bare forward of the same teacher."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from road_ds.features import build_features, load_tokenizer
    from road_ds.model import EXPORT_INDEX
    from road_ds.recipe import load_recipe

    sys.path.insert(0, str(REPO / "bench"))
    from store_bench import bare_forward, precompute_time

    recipe = load_recipe(work / "teacher.yaml")
    tok = load_tokenizer(recipe.model.tokenizer_path)
    index = json.loads((work / "teacher" / EXPORT_INDEX).read_text())["heads"]
    rows = []
    for name, auto in (("squad2", AutoModelForQuestionAnswering), ("sentiment", AutoModelForSequenceClassification)):
        ft = build_features(recipe, name, "train", tokenizer=tok)
        model = auto.from_pretrained(str(work / "teacher" / index[ft.spec.head_name]["dir"])).to(device).eval()
        bare_forward(model, ft, device)  # warm-up
        bare = min(bare_forward(model, ft, device) for _ in range(2))
        pre = min(precompute_time(model, ft, work / f"thr-{name}-{i}", 8, "float16", device) for i in range(2))
        rows.append({"data": name, "features": len(ft), "bare_s": bare, "precompute_s": pre})
    return rows


def loss_profile(work: Path, args, device) -> list[dict]:
    """Where (b)'s extra trainer time goes, without the noise of whole steps: the loss's forward and
    backward on one micro-batch of each dataset (the student's outputs as leaf tensors), CE alone
    against CE + KD from M teachers' gathered targets, alternated over many repetitions. The model's
    forward and backward are the same in (a) and (b), so this difference is all the compute KD adds."""
    from road_ds.kd import compute_loss
    from road_ds.loader import TrainBatches, schedule_kwargs

    recipe, tok, tables = student(work, max(args.teachers_list), args.warmup + args.steps)
    teachers = {n: recipe.kd_for(n).teachers for n in tables}
    items = {}
    for item in TrainBatches(tables, teachers, schedule_kwargs(recipe, tables, 1, 0), None, recipe.train.max_steps, tok.pad_token_id or 0):
        items.setdefault(item["dataset"], item)
        if len(items) == len(tables):
            break
    rows = []
    for name, item in items.items():
        kind = tables[name].spec.task_type.kind
        batch, targets = item["batch"], item["teacher"]
        out = {o: torch.randn(t.shape[1:], device=device, requires_grad=True) for o, t in targets.items()}  # [B, S] like the student's
        variants = {"CE": None, **{f"M={m}": {o: t[:m] for o, t in targets.items()} for m in args.teachers_list}}
        times: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(args.profile_reps + 5):
            for v, teacher in variants.items():
                t0 = time.perf_counter()
                loss, _ = compute_loss(recipe.kd_for(name), kind, out, batch, teacher, 0, recipe.train.max_steps)
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if rep >= 5:  # warm-up
                    times[v].append(time.perf_counter() - t0)
                for x in out.values():
                    x.grad = None
        rows.append({"data": name, "features": len(tables[name]), "batch": list(next(iter(out.values())).shape),
                     **{v: statistics.median(t) * 1e3 for v, t in times.items()}})
    return rows


def launch(work: Path, variant: str, m: int, ranks: int, ds_config: str, args, steps: int | None = None) -> dict:
    result = work / f"result-{variant}-{m}-{ranks}-{Path(ds_config).stem}.json"
    cmd = [str(REPO / "bench" / "kd_bench.py"), "--variant", variant, "--teachers", str(m), "--work", str(work), "--result", str(result),
           "--ds-config", ds_config, "--steps", str(steps or args.steps), "--warmup", str(args.warmup),
           "--teachers-list", *map(str, args.teachers_list)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if ranks > 1 or args.device_ranks:
        if not torch.cuda.is_available():
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))  # the cores, shared between the ranks
        cmd = [*deepspeed_cmd(), "--num_gpus", str(ranks), "--master_port", str(29600 + ranks), *cmd]
    else:
        cmd = [sys.executable, *cmd]
    r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not result.exists():
        sys.stderr.write(r.stdout[-4000:])
        raise SystemExit(f"bench variant failed: {' '.join(cmd)}")
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/bench_kd.md")
    p.add_argument("--student", default="minilm-l3", help="a kit model name, a model dir, or a preset: " + ", ".join(PRESETS))
    p.add_argument("--teacher", default="minilm-l6")
    p.add_argument("--teachers-list", type=int, nargs="+", default=[1, 3], help="M values for (b) and (c)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--rows", type=int, default=240, help="train rows per task")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per variant (4 micro-batches each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--paired-steps", type=int, default=12, help="timed steps of each variant in the step-by-step pairing of (a) and (b)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of (a), (b), (c)")
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--profile-reps", type=int, default=200, help="repetitions of the loss profile")
    p.add_argument("--no-scaling", action="store_true", help="skip ZeRO-2/3 on 1 and 2 ranks")
    p.add_argument("--device-ranks", action="store_true", help=argparse.SUPPRESS)
    # one variant, in its own process (the benchmark starts these itself)
    p.add_argument("--variant", choices=("nokd", "offline", "online", "paired"))
    p.add_argument("--teachers", type=int, default=0)
    p.add_argument("--work")
    p.add_argument("--result")
    p.add_argument("--ds-config", default=str(REPO / "ds_configs" / "zero2.json"))
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return run_paired(args) if args.variant == "paired" else run_variant(args)

    kit = cache_root() / "kit"
    if not (kit / "kit.json").exists():
        sys.exit(f"no data kit at {kit}: run `road-ds data fetch`")
    gpu = torch.cuda.is_available()
    args.device_ranks = gpu  # on a GPU every variant goes through the launcher (NCCL, one rank per GPU)
    work = Path(tempfile.mkdtemp(prefix="road-ds-kd-bench-"))
    t_all = time.time()
    try:
        prepare(work, kit, args)
        variants = [("nokd", 0)] + [(v, m) for v in ("offline", "online") for m in args.teachers_list]
        runs: dict[tuple, list[dict]] = {}
        for _ in range(args.rounds):
            for v, m in variants:
                runs.setdefault((v, m), []).append(launch(work, v, m, 1, args.ds_config, args))
        paired = launch(work, "paired", max(args.teachers_list), 1, args.ds_config, args, steps=args.paired_steps)
        profile = loss_profile(work, args, torch.device("cuda" if gpu else "cpu"))
        throughput = precompute_vs_bare(work, torch.device("cuda")) if gpu else []
        scaling = []
        if not args.no_scaling and not gpu:
            m = max(args.teachers_list)
            for cfg in ("zero2", "zero3"):
                for ranks in (1, 2):
                    r = launch(work, "offline", m, ranks, str(REPO / "ds_configs" / f"{cfg}.json"), args)
                    scaling.append({"zero": cfg, "ranks": ranks, **r})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_text(args.out, report(args, runs, paired, profile, scaling, throughput, gpu, time.time() - t_all))
    print(Path(args.out).read_text())


def round_ratios(times: list[float], base: list[float]) -> list[float]:
    """Per-round ratios times[i] / base[i], sorted. The two ran back to back in each round, so a slow
    spell of the machine falls on both: the median of these is the ratio, their spread its noise."""
    return sorted(t / b for t, b in zip(times, base, strict=True))


def quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def report(args, runs: dict, paired: dict, profile: list, scaling: list, throughput: list, gpu: bool, seconds: float) -> str:
    import deepspeed

    med = {k: {f: statistics.median(r[f] for r in rs) for f in ("step_s", "wait_frac", "samples_per_s", "worker_cpu_s")}
           | {f: max(r[f] for r in rs) if rs[0][f] is not None else None
              for f in ("peak_rss_mb", "worker_uss_mb", "peak_gpu_mb", "rss_after_setup_mb", "rss_growth_mb", "gpu_growth_mb")}
           for k, rs in runs.items()}
    base = med[("nokd", 0)]
    # step-time ratios paired within a round: their median, and their spread as the noise the ratio carries
    by_round = {k: round_ratios([r["step_s"] for r in rs], [b["step_s"] for b in runs[("nokd", 0)]]) for k, rs in runs.items()}
    mem = "peak_gpu_mb" if gpu else "peak_rss_mb"
    grow = "gpu_growth_mb" if gpu else "rss_growth_mb"
    name = {"nokd": "(a) no KD", "offline": "(b) offline KD, stores", "online": "(c) online KD, resident teachers"}
    device = torch.cuda.get_device_name(0) if gpu else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    lines = [f"# KD cost benchmark ({'GPU' if gpu else 'CPU'})", "",
             f"Machine: {device}; torch {torch.__version__}, deepspeed {deepspeed.__version__}, Python {platform.python_version()}. "
             f"Precision: {'bf16' if gpu else 'fp32'}. Total {seconds / 60:.1f} min.",
             f"Student: {args.student}; teachers: {args.teacher} (random weights). Data: the kit's QA (len 192), QNLI-style pairs (128) "
             f"and sentiment (64), {args.rows} train rows each; MTL passes {PASSES} × micro-batch {args.micro_batch}; ZeRO-2, 1 rank; "
             f"offline stores top-k {args.top_k} float16, 1 DataLoader worker.",
             f"Each variant in its own process: {args.warmup} warm-up + {args.steps} timed optimizer steps; {args.rounds} interleaved rounds; "
             f"medians across rounds (memory: the largest); × (a) of the step time: the median of the ratios paired within a round, "
             f"[lowest–highest round].",
             f"Command: `{'bash bench/gpu.sh' if gpu else 'make bench'}` (`python bench/kd_bench.py " + " ".join(sys.argv[1:]) + "`).", "",
             "## Step time and memory (targets: (b) at M=3 ≤ 1.03 × (a) step time; its training process's memory growth after setup "
             "within 5% of (a)'s)", "",
             f"| variant | M | step s | × (a) [rounds] | samples/s | data wait / step | peak {'GPU' if gpu else 'RSS'} MiB (training process) | × (a) | "
             f"{'GPU' if gpu else 'RSS'} growth after setup MiB | × (a) | worker CPU ms / step | worker private MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (v, m), r in med.items():
        lines.append(f"| {name[v]} | {m or '-'} | {r['step_s']:.3f} | "
                     f"{statistics.median(by_round[v, m]):.3f} [{by_round[v, m][0]:.3f}–{by_round[v, m][-1]:.3f}] | "
                     f"{r['samples_per_s']:.1f} | {100 * r['wait_frac']:.2f}% | {r[mem]:.0f} | {r[mem] / base[mem]:.3f} | "
                     f"{r[grow]:.0f} | {r[grow] / base[grow]:.3f} | {1e3 * r['worker_cpu_s']:.1f} | {r['worker_uss_mb']:.0f} |")
    lines += ["", "Data wait: time the training loop spends in `next()` on the DataLoader, as a fraction of step time (target ≤ 2%). "
              "Worker CPU: CPU time of the DataLoader worker (reading rows, collating, and in (b) gathering and reconstructing the "
              "teachers' targets) per timed step. Worker private memory: its pages not shared with the trainer, after the timed steps. "
              "Growth after setup: the training process's peak resident memory over the steps (its peak count reset once setup is done) "
              "less its resident memory then; the whole-process peak moves by ±4% between identical processes (import and setup "
              "transients), too much for a 5% target. (c)'s teachers are loaded in setup: its peak shows them, its growth does not."]
    ms = [f"M={m}" for m in args.teachers_list]
    lines += ["", "## (b) against (a), step by step in one process", "",
              f"One engine and one loader per variant over the same schedule; every step taken by (a) and by (b) at each M in an order "
              f"that rotates; {args.warmup} warm-up + {args.paired_steps} timed steps each. Adjacent steps see the same machine, so these "
              "ratios carry little of the drift between separate processes. Ratio: the median of the per-step ratios to (a) [quartiles].", "",
              "| variant | step s | × (a) [quartiles] |", "|---|---|---|", f"| (a) no KD | {paired['a']['step_s']:.3f} | 1.000 |"]
    lines += [f"| (b) offline KD, {v} | {paired[v]['step_s']:.3f} | {statistics.median(paired[v]['ratios']):.3f} "
              f"[{quartiles(paired[v]['ratios'])[0]:.3f}–{quartiles(paired[v]['ratios'])[1]:.3f}] |" for v in ms]
    total = sum(r["features"] for r in profile)  # the proportional MTL mix draws datasets by size
    per_step = {v: PASSES * sum(r["features"] / total * (r[v] - r["CE"]) for r in profile) for v in ms}
    top = ms[-1]
    worker = 1e3 * (med[("offline", max(args.teachers_list))]["worker_cpu_s"] - base["worker_cpu_s"])
    lines += ["", "## Where (b)'s extra step time goes: the KD loss, timed alone", "",
              f"The loss's forward + backward on one micro-batch of each dataset (student outputs as leaf tensors), gold CE alone "
              f"against CE + WKD from the stores' targets; medians of {args.profile_reps} alternated repetitions. The model's forward "
              "and backward are the same in (a) and (b), so this is the compute KD adds to the training process.", "",
              "| data | micro-batch [B, S] | CE only ms | " + " | ".join(f"CE + KD, {v} ms" for v in ms) + f" | KD adds, {top} ms |",
              "|---|---|---|" + "---|" * len(ms) + "---|"]
    lines += [f"| {r['data']} | {r['batch']} | {r['CE']:.2f} | " + " | ".join(f"{r[v]:.2f}" for v in ms) + f" | {r[top] - r['CE']:.2f} |"
              for r in profile]
    lines += ["", f"Per optimizer step ({PASSES} micro-batches, datasets drawn in proportion to their features) KD adds "
              + ", ".join(f"{per_step[v]:.1f} ms at {v}" for v in ms)
              + f": {100 * per_step[top] / 1e3 / base['step_s']:.2f}% of (a)'s {base['step_s']:.3f} s step. The DataLoader worker's "
              f"gather and reconstruct add {worker:.1f} CPU ms per step at {top} (main table), "
              f"{100 * worker / 1e3 / base['step_s']:.2f}% of the step" + ("." if gpu else ", on the cores the compute uses here.")]
    if throughput:
        lines += ["", "## Precompute throughput against the bare forward pass of the same teacher (target ≥ 0.90)", "",
                  "| data | features | bare forward s | precompute s | bare / precompute |", "|---|---|---|---|---|"]
        lines += [f"| {r['data']} | {r['features']} | {r['bare_s']:.2f} | {r['precompute_s']:.2f} | {r['bare_s'] / r['precompute_s']:.3f} |"
                  for r in throughput]
    if scaling:
        lines += ["", f"## Scaling: (b) with M={max(args.teachers_list)} on ZeRO-2/3, 1 and 2 ranks on this machine", "",
                  "Same micro-batch per rank, so 2 ranks process twice the rows per step; the cores are shared between ranks.", "",
                  "| ZeRO | ranks | step s | samples/s | data wait / step | peak RSS MiB (rank 0) |", "|---|---|---|---|---|---|"]
        lines += [f"| {s['zero']} | {s['ranks']} | {s['step_s']:.3f} | {s['samples_per_s']:.1f} | {100 * s['wait_frac']:.2f}% | {s['peak_rss_mb']:.0f} |"
                  for s in scaling]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
