"""road_ds against the Hugging Face Trainer on the same QA fine-tune, each run as its users run it.

    python bench/peer_train.py --out RESULT.json [--steps N] [--learn-steps N] [--ranks 1 2] [--work DIR]
    python bench/peer_train.py --out RESULT.json --student electra-base --teacher electra-large --parts train distill --ranks 1  # GPU

Single-task extractive QA on the kit's SQuAD v1.1 slice, MiniLM-L6 (or the sizes named), max length 192,
stride 64, fp32 (bf16 on a CUDA GPU); the same micro-batch, gradient accumulation, AdamW (lr, weight decay, betas, eps), warm-up +
linear decay, gradient clipping and seed on both sides. Every variant runs in its own process (so
its peak memory is its own); this process prepares the work dir and collects their JSON.

  train:   road_ds: the trainer's own `setup` and `train_step` (ZeRO-2; 2 ranks: the deepspeed launcher);
           HF: `Trainer.train()` on the same feature rows on DeepSpeed ZeRO-2 (--hf-plain: also without it, one
           process or DDP over gloo); every side on one AdamW (`same_adamw`).
  learning: road_ds's full `fit` (its eval_results.json) against `Trainer.train()`, both scored by
           road_ds.evaluate.evaluate_split on the same dev features (the HF model wrapped as the forward callable):
           the Trainer matched to road_ds (its span loss, schedule, seeded start and row order; every encoder
           without dropout), and (--learn-peers own-loss) as its users run it.
  distill: road_ds offline KD from M stores against the usual online-KD `Trainer` subclass with M resident teachers.
  predict: road_ds's precompute (top-k 8, float16) against `Trainer.predict` + `np.save` of float32 logits.
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
sys.path.insert(0, str(REPO / "bench"))

from kd_bench import PRESETS, kd_sets, model_spec, status_mb, timed_step, trainer_run  # noqa: E402

from road_ds.pipelines.runs import deepspeed_cmd  # noqa: E402
from road_ds.recipe import cache_root  # noqa: E402

DATASET = "squad"
KD_TEMPERATURE, KD_ALPHA = 2.0, 0.5
ZERO2 = REPO / "ds_configs" / "zero2.json"
PARTS = ("predict", "train", "distill", "learning")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu() -> dict:
    """The CUDA memory peak (the figure that matters on a GPU); nothing on CPU."""
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if torch.cuda.is_available() else {}


def hf_qa_model(spec, path: str | None = None):
    """transformers' QA model as its users make it: from a model dir, or (a size preset) from its config."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    if path is None and spec.config:
        cfg = dict(spec.config)
        return AutoModelForQuestionAnswering.from_config(AutoConfig.for_model(cfg.pop("model_type", "bert"), **cfg))
    return AutoModelForQuestionAnswering.from_pretrained(path or spec.name_or_path)


LEARN = "learn.yaml"  # the learning rows' recipe: more train questions, the dev slice they are scored on, no dropout


def without_dropout(spec: dict, work: Path) -> dict:
    """The model spec with every dropout probability 0 (in its config, or in a copy of its pretrained
    dir's config.json beside links to the rest): the learning rows' forward is then the same function
    on every side, so the matched row compares the trainers, not dropout's random draws."""
    def zero(cfg: dict) -> dict:
        return {k: 0.0 if "dropout" in k and isinstance(v, float) else v for k, v in cfg.items()}

    if spec.get("config"):
        return {**spec, "config": zero({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **spec["config"]})}
    src, dst = Path(spec["name_or_path"]), work / "encoder-without-dropout"
    dst.mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.name != "config.json" and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())
    (dst / "config.json").write_text(json.dumps(zero(json.loads((src / "config.json").read_text())), indent=1))
    return {**spec, "name_or_path": str(dst)}


def student_recipe(work: Path, kit: Path, args, train_rows: int, dev_rows: int | None = None, learning: bool = False) -> dict:
    """The bench's QA student; the speed, distillation and logits rows read `train_rows` questions, learning its own."""
    spec = model_spec(args.student, kit)
    return {
        "model": without_dropout(spec, work) if learning else spec,
        "features": {"max_seq_length": 192, "doc_stride": 64, "max_query_length": 48, "cache_dir": str(work / "features")},
        "datasets": [{"name": DATASET, "task": "extractive_qa", "format": "squad_json",
                      "files": {"train": str(kit / "squad" / "train.json"), "dev": str(kit / "squad" / "dev.json")},
                      "answer_start": "nearest", "limit": {"train": train_rows, **({"dev": dev_rows} if dev_rows else {})}}],
        "train": {"micro_batch_size": args.micro_batch, "lr": args.lr, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-6,
                  "warmup_steps": args.learn_steps // 10, "grad_clip": 1.0, "seed": 0, "num_workers": 1, "log_every": 10,
                  "save_every": 100000, "keep_checkpoints": 0, "eval_every": 0, "eval_batch_size": 64},
        "mtl": {"passes": args.accum},
    }


def load(work: Path, split: str = "train", recipe: str = "student.yaml"):
    """The recipe, tokenizer and one split's features (from the cache `prepare` filled)."""
    from road_ds.features import build_features, load_tokenizer
    from road_ds.recipe import load_recipe

    recipe = load_recipe(work / recipe)
    tok = load_tokenizer(recipe.model.tokenizer_path)
    return recipe, tok, build_features(recipe, DATASET, split, tokenizer=tok)


def hf_dataset(ft, labels: bool = True):
    """road_ds's feature rows as the `datasets.Dataset` an HF user feeds the Trainer."""
    cols = ["input_ids", "token_type_ids"] + (["start_positions", "end_positions"] if labels else [])
    ds = ft.table.select_columns(cols)
    return ds.map(lambda b: {"attention_mask": [[1] * len(x) for x in b["input_ids"]]}, batched=True)


def export_dir(export: Path) -> Path:
    """The `from_pretrained` dir of a road_ds export's (one) head."""
    from road_ds.model import EXPORT_INDEX

    index = json.loads((export / EXPORT_INDEX).read_text())["heads"]
    return export / next(iter(index.values()))["dir"]


# ---------------------------------------------------------------------------- road_ds variants (their own processes)


def same_adamw() -> dict:
    """The optimizer params that give every side one AdamW: on CPU torch's fused one (the Trainer's own
    default; DeepSpeed builds it from `torch_adam` + `fused`, where road_ds's CPU default, `torch_adam`
    alone, gives the per-op one); on a GPU DeepSpeed's fused Adam and the Trainer's default, as shipped."""
    return {} if torch.cuda.is_available() else {"torch_adam": True, "fused": True}


def road_ds_config(work: Path) -> Path:
    """ds_configs/zero2.json with `same_adamw`: the config road_ds's rows train with."""
    cfg = json.loads(ZERO2.read_text())
    cfg["optimizer"]["params"].update(same_adamw())
    path = work / "zero2.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def road_setup(args, sets: list[str]):
    return trainer_run(Path(args.work), args.result, str(Path(args.work) / "zero2.json"), [*sets, f"train.max_steps={args.warmup + args.steps}"])


def road_train(args) -> None:
    """The trainer's own step, timed (kd_bench's way); with --teachers M: offline KD from M stores."""
    import torch.distributed as dist

    m = args.teachers
    sets = [*kd_sets(Path(args.work), m), f"kd.temperature={KD_TEMPERATURE}", f"kd.alpha={KD_ALPHA}"] if m else []
    run = road_setup(args, sets)
    rss0 = status_mb("VmRSS")
    times = []
    for step in range(run.recipe.train.max_steps):
        seconds, _, _ = timed_step(run.engine, (run.balancer, run.probe), run.loader, run.recipe, run.tables, step, run.device)
        if step >= args.warmup:
            times.append(seconds)
    if run.rank == 0:
        step_s = statistics.median(times)
        rows = args.micro_batch * args.accum * run.world
        Path(args.result).write_text(json.dumps({"step_s": step_s, "samples_per_s": rows / step_s, "peak_rss_mb": peak_rss_mb(),
                                                 "rss_growth_mb": peak_rss_mb() - rss0, "steps": times, **peak_gpu()}))
    dist.barrier()
    run.close()


def road_predict(args) -> None:
    """road_ds's offline teacher pass over the train features: the store on disk per feature."""
    from road_ds.precompute import main as precompute

    work = Path(args.work)
    _, _, ft = load(work)
    t0 = time.perf_counter()
    rc = precompute([str(work / "student.yaml"), "--teacher", str(work / "teacher"), "--out", str(work / "store0"),
                     "--split", "train", "--top-k", "8", "--dtype", "float16"])
    seconds = time.perf_counter() - t0
    assert rc == 0, f"precompute failed: {rc}"
    size = sum(p.stat().st_size for p in (work / "store0").rglob("*") if p.is_file())
    Path(args.result).write_text(json.dumps({"seconds": seconds, "features": len(ft), "rows_per_s": len(ft) / seconds,
                                             "bytes_per_feature": size / len(ft), "store_bytes": size, "peak_rss_mb": peak_rss_mb()}))


# ---------------------------------------------------------------------------- HF variants (their own processes)


def training_args(args, out: Path, max_steps: int, warmup: int, deepspeed: dict | None, **extra):
    from transformers import TrainingArguments

    kw = {"deepspeed": deepspeed} if deepspeed else {}
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.accum,
        learning_rate=args.lr, weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-6, max_grad_norm=1.0,
        lr_scheduler_type="linear", warmup_steps=warmup, max_steps=max_steps, seed=0, logging_steps=10, save_strategy="no",
        report_to=[], dataloader_num_workers=1, use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(), per_device_eval_batch_size=64,
        disable_tqdm=True, ddp_backend="gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", 1)) > 1 else None, **kw, **extra)


def hf_ds_config() -> dict:
    """ZeRO-2 as an HF user writes it for the Trainer: the batch and optimizer fields left to "auto"."""
    return {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto",
                                                                                   **same_adamw()}},
            "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": "auto", "warmup_num_steps": "auto",
                                                             "total_num_steps": "auto"}},
            "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True, "reduce_scatter": True}}


def step_timer(rows: int, warmup: int):
    """A TrainerCallback timing each optimizer step end to end (on_step_end to on_step_end: the batch
    fetch, forward, backward, optimizer and scheduler, as road_ds's timed step), and RSS once set up."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.rss0, self.last, self.times, self.inner, self.t_begin = None, None, [], [], None

        def on_train_begin(self, *a, **kw):
            self.rss0 = status_mb("VmRSS")
            self.last = time.perf_counter()

        def on_step_begin(self, *a, **kw):
            self.t_begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if state.global_step > warmup:
                self.times.append(now - self.last)
                self.inner.append(now - self.t_begin)
            self.last = now

        def result(self) -> dict:
            step_s = statistics.median(self.times)
            return {"step_s": step_s, "step_s_begin_to_end": statistics.median(self.inner), "samples_per_s": rows / step_s,
                    "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": peak_rss_mb() - self.rss0, "steps": self.times, **peak_gpu()}

    return StepTimer()


def kd_trainer_class():
    """The usual online-distillation Trainer subclass: M resident teachers forward (no grad) every
    step, KL at temperature T on the start/end distributions added to the student's CE."""
    import torch.nn.functional as F
    from transformers import Trainer

    class DistillTrainer(Trainer):
        def __init__(self, *a, teachers=(), temperature=KD_TEMPERATURE, alpha=KD_ALPHA, **kw):
            super().__init__(*a, **kw)
            dtype = torch.bfloat16 if self.args.bf16 else torch.float32
            self.teachers = [t.to(device=self.args.device, dtype=dtype) for t in teachers]
            self.temperature, self.alpha = temperature, alpha

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            x = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.no_grad():
                touts = [t(**x) for t in self.teachers]
            pad = inputs["attention_mask"] == 0
            T, kd = self.temperature, 0.0
            for name in ("start_logits", "end_logits"):
                s = getattr(out, name).masked_fill(pad, -1e4)
                p = torch.stack([torch.softmax(getattr(o, name).masked_fill(pad, -1e4) / T, -1) for o in touts]).mean(0)
                kd = kd + F.kl_div(torch.log_softmax(s / T, -1), p, reduction="batchmean") * T * T / 2
            loss = self.alpha * out.loss + (1 - self.alpha) * kd
            return (loss, out) if return_outputs else loss

    return DistillTrainer


def matched_trainer_class(sep_id: int):
    """The Trainer with road_ds's span loss in place of the model's (start/end CE over the support:
    context tokens and [CLS]) and road_ds's warm-up + linear decay (its first update at lr/warmup,
    where transformers' linear schedule starts at 0): the matched learning row's objective and steps."""
    import torch.nn.functional as F
    from transformers import Trainer

    from road_ds.train import lr_lambda

    class MatchedTrainer(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                warmup = self.args.get_warmup_steps(num_training_steps)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, lr_lambda(warmup, num_training_steps))
            return self.lr_scheduler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            gold = {k: inputs[k] for k in ("start_positions", "end_positions")}
            out = model(**{k: v for k, v in inputs.items() if k not in gold})
            ids = inputs["input_ids"]
            support = (inputs["token_type_ids"] == 1) & (inputs["attention_mask"] == 1) & (ids != sep_id)
            support[:, 0] = True  # [CLS]: the no-answer position, as road_ds.batching.collate
            loss = sum(F.cross_entropy(getattr(out, f"{side}_logits").masked_fill(~support, -torch.inf), gold[f"{side}_positions"])
                       for side in ("start", "end")) / 2
            return (loss, out) if return_outputs else loss

    return MatchedTrainer


def road_order(work: Path, steps: int) -> list[int]:
    """The feature rows road_ds's fit of the learning recipe takes in `steps` updates, in its order
    (its MTL sampler with the recipe's seed, on one rank)."""
    from road_ds.loader import schedule_kwargs
    from road_ds.schedule import MTLSampler

    recipe, _, ft = load(work, recipe=LEARN)
    sampler = MTLSampler(**schedule_kwargs(recipe, {DATASET: ft}, 1, 0))
    return [int(i) for _ in range(steps) for _, rows in sampler.next_step() for i in rows]


def hf_trainer(args, max_steps: int, warmup: int, deepspeed: dict | None, callbacks=(), teachers: int = 0, matched: bool = False,
               recipe_name: str = "student.yaml"):
    """The Trainer on the bench's features. `matched`: on road_ds's span loss, from road_ds's seeded
    start (the learning recipe's model as its fit builds it) and fed road_ds's rows in road_ds's order."""
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    work = Path(args.work)
    recipe, tok, ft = load(work, recipe=recipe_name)
    set_seed(0)
    model = hf_qa_model(recipe.model, str(export_dir(work / "learn-start")) if matched else None)
    kw, cls, data, order = {}, Trainer, hf_dataset(ft), {}
    if teachers:
        kw, cls = {"teachers": [hf_qa_model(recipe.model, str(export_dir(work / "teacher"))).eval() for _ in range(teachers)]}, kd_trainer_class()
    elif matched:
        cls, data, order = matched_trainer_class(tok.sep_token_id), data.select(road_order(work, max_steps)), {"train_sampling_strategy": "sequential"}
    targs = training_args(args, work / "hf-runs" / Path(args.result).stem, max_steps, warmup, deepspeed, **order)
    trainer = cls(model=model, args=targs, train_dataset=data, data_collator=DataCollatorWithPadding(tok), callbacks=list(callbacks), **kw)
    return trainer, recipe, tok


def hf_train(args) -> None:
    world = int(os.environ.get("WORLD_SIZE", 1))
    timer = step_timer(args.micro_batch * args.accum * world, args.warmup)
    trainer, *_ = hf_trainer(args, args.warmup + args.steps, args.learn_steps // 10, hf_ds_config() if args.hf_deepspeed else None, [timer], teachers=args.teachers)
    trainer.train()
    if trainer.args.process_index == 0:
        ran = {"deepspeed_enabled": trainer.is_deepspeed_enabled, "world_size": trainer.args.world_size, "wrapped": type(trainer.model_wrapped).__name__,
               "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__}
        Path(args.result).write_text(json.dumps(timer.result() | ran))


def hf_learn(args) -> None:
    """Trainer.train() for --learn-steps, then road_ds's own scoring of the HF model's logits on the dev features."""
    from road_ds.evaluate import evaluate_split

    trainer, recipe, tok = hf_trainer(args, args.learn_steps, args.learn_steps // 10, None, matched=args.hf_matched, recipe_name=LEARN)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.model.eval()
    _, _, dev = load(Path(args.work), "dev", LEARN)

    def forward(head, **kw):
        o = model(**kw)
        return {"start": o.start_logits, "end": o.end_logits}

    r = evaluate_split(forward, dev, 0, 1, 64, tok.pad_token_id or 0, torch.device("cpu"), n_best_size=recipe.train.n_best_size,
                       max_answer_length=recipe.train.max_answer_length)
    Path(args.result).write_text(json.dumps({"f1": r["f1"], "exact": r["exact"], "train_s": seconds}))


def hf_predict(args) -> None:
    """Teacher logits the way a Trainer user dumps them: Trainer.predict, start+end logits as float32 .npy."""
    import numpy as np
    from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, Trainer

    work = Path(args.work)
    _, tok, ft = load(work)
    ds = hf_dataset(ft, labels=False)
    t0 = time.perf_counter()
    model = AutoModelForQuestionAnswering.from_pretrained(str(export_dir(work / "teacher")))  # fp32 weights; on a GPU the Trainer's
    # bf16 runs them under autocast, as road_ds's precompute does
    trainer = Trainer(model=model, args=training_args(args, work / "hf-predict", 1, 0, None), data_collator=DataCollatorWithPadding(tok))
    start, end = trainer.predict(ds).predictions
    out = work / "hf-logits"
    out.mkdir(exist_ok=True)
    np.save(out / "start_logits.npy", start.astype(np.float32))
    np.save(out / "end_logits.npy", end.astype(np.float32))
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.iterdir())
    Path(args.result).write_text(json.dumps({"seconds": seconds, "features": len(ft), "rows_per_s": len(ft) / seconds,
                                             "bytes_per_feature": size / len(ft), "bytes": size, "shape": list(start.shape),
                                             "peak_rss_mb": peak_rss_mb()}))


# the Trainer's learning rows: (result key, hf-learn's flags)
LEARN_PEERS = {"matched": ("hf_matched", ("--hf-matched",)), "own-loss": ("hf", ())}
VARIANTS = {"road-train": road_train, "road-predict": road_predict, "hf-train": hf_train, "hf-learn": hf_learn, "hf-predict": hf_predict}


# ---------------------------------------------------------------------------- the whole benchmark


def prepare(work: Path, kit: Path, args) -> None:
    """The recipes, the features (train and dev, cached), a teacher export (an untrained QA head), and
    the learning recipe's model as road_ds's fit starts it (seeded, then built), for the matched Trainer."""
    from road_ds.checkpoint import set_seed
    from road_ds.model import build_model
    from road_ds.recipe import parse_recipe

    recipe_dict = student_recipe(work, kit, args, args.train_rows)
    (work / "student.yaml").write_text(yaml.safe_dump(recipe_dict))
    (work / LEARN).write_text(yaml.safe_dump(student_recipe(work, kit, args, args.learn_rows, args.dev_rows, learning=True)))
    _, tok, _ = load(work)
    learn, _, _ = load(work, recipe=LEARN)
    load(work, "dev", LEARN)
    road_ds_config(work)
    set_seed(learn.train.seed)  # as road_ds/train.py's setup, right before it builds the model
    build_model(learn).export(work / "learn-start", tok)
    torch.manual_seed(1)  # the teacher's encoder, a fresh QA head: a teacher for speed and memory, not for what it knows
    teacher = {**recipe_dict, "model": model_spec(args.teacher, kit)}
    build_model(parse_recipe(teacher, work / "student.yaml")).export(work / "teacher", tok)


class Bench:
    def __init__(self, work: Path, args):
        self.work, self.args, self.commands, self.logs = work, args, [], {}

    def launch(self, variant: str, ranks: int = 1, launcher: str = "python", extra: tuple = (), tag: str = "") -> dict:
        """One variant in its own process(es); its rank 0's JSON, or {"error": the output's tail}."""
        a = self.args
        result = self.work / f"result-{variant}-{ranks}{tag}.json"
        cmd = [str(REPO / "bench" / "peer_train.py"), "--variant", variant, "--work", str(self.work), "--result", str(result),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--learn-steps", str(a.learn_steps), "--micro-batch", str(a.micro_batch),
               "--accum", str(a.accum), "--lr", str(a.lr), "--student", a.student, "--teacher", a.teacher,
               "--train-rows", str(a.train_rows), "--learn-rows", str(a.learn_rows), "--dev-rows", str(a.dev_rows), *extra]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}  # the cores, shared between the ranks
        if launcher == "deepspeed":
            cmd = [*deepspeed_cmd(), "--num_gpus", str(ranks), "--master_port", str(29650 + ranks), *cmd]
        elif launcher == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(29670 + ranks), *cmd]
        else:
            cmd = [sys.executable, *cmd]
        self.commands.append(" ".join(cmd))
        t0 = time.time()
        r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(f"[peer_train] {variant} ranks={ranks} {tag} rc={r.returncode} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if r.returncode != 0 or not result.exists():
            return {"error": first_error(r.stdout), "rc": r.returncode}
        return json.loads(result.read_text())


def first_error(log: str) -> str:
    """The exception line(s) of a failed variant's output (its last Traceback's last line)."""
    lines = [x for x in log.splitlines() if x.strip()]
    errs = [x.strip() for x in lines if ("Error" in x or "error" in x) and not x.lstrip().startswith("File ")]
    return (errs[-1] if errs else "\n".join(lines[-3:]))[-1500:]


def versions() -> dict:
    import accelerate
    import datasets
    import deepspeed
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__, "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores"}


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "steps"}


def paired_row(trainer: str, backend: str, ranks: int, rows: int, rounds: list[dict]) -> dict:
    """One variant over its rounds (`rows` a step): the median step, the highest peak; each round's step kept for the paired ratios."""
    step_s = statistics.median(r["step_s"] for r in rounds)
    return {"trainer": trainer, "backend": backend, "ranks": ranks, **strip(rounds[0]), "step_s": step_s, "samples_per_s": rows / step_s,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds), "rss_growth_mb": statistics.median(r["rss_growth_mb"] for r in rounds),
            "round_step_s": [r["step_s"] for r in rounds]}


def run_all(args) -> dict:
    kit = cache_root() / "kit"
    if not (kit / "squad" / "train.json").exists():
        sys.exit(f"no data kit at {kit}: run `road-ds data fetch`")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="road-ds-peer-train-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    t_all = time.time()
    b = Bench(work, args)
    out: dict = {"train": [], "distill": []}
    try:
        prepare(work, kit, args)
        _, _, ft = load(work)
        _, _, learn_ft = load(work, recipe=LEARN)
        _, _, dev = load(work, "dev", LEARN)
        parts = set(args.parts)
        # item 5 first: its store is the offline KD's
        if parts & {"predict", "distill"}:
            out["predict"] = {"road_ds": b.launch("road-predict"), "hf": b.launch("hf-predict")}
            for i in range(1, max(args.teachers_list)):
                shutil.copytree(work / "store0", work / f"store{i}")
        # item 1: step time and memory, in paired rounds (each round runs every variant once, the order reversed
        # every other round, so a slow spell of the machine falls on both sides); the Trainer on DeepSpeed ZeRO-2,
        # and with --hf-plain also without it (one process; DDP over gloo)
        failed: dict = {}  # (ranks, trainer, backend) -> the error of its first failed launch; not run again
        for ranks in args.ranks if "train" in parts else ():
            variants = [("road_ds", "deepspeed-zero2", "road-train", "deepspeed" if ranks > 1 else "python", ()),
                        ("hf", "deepspeed-zero2", "hf-train", "deepspeed", ("--hf-deepspeed",))]
            if args.hf_plain:
                variants.append(("hf", "ddp-gloo" if ranks > 1 else "torch (1 process)", "hf-train", "torchrun" if ranks > 1 else "python", ()))
            rounds: dict = {}
            for k in range(args.rounds):
                for trainer, backend, variant, launcher, extra in variants if k % 2 == 0 else variants[::-1]:
                    if (ranks, trainer, backend) in failed:
                        continue
                    r = b.launch(variant, ranks, launcher, extra, tag=f"-{backend.split()[0]}-r{k}")
                    if "error" in r or (extra and not r.get("deepspeed_enabled")):
                        failed[(ranks, trainer, backend)] = r.get("error", "the Trainer ran without DeepSpeed")
                        continue
                    rounds.setdefault((trainer, backend), []).append(r)
            for (trainer, backend), rs in rounds.items():
                if len(rs) == args.rounds:
                    out["train"].append(paired_row(trainer, backend, ranks, args.micro_batch * args.accum * ranks, rs))
        out["errors"] = {f"{t} on {b_}, {r} rank(s)": e for (r, t, b_), e in failed.items()}
        out["hf_backend"] = sorted({r["backend"] for r in out["train"] if r["trainer"] == "hf"})
        # item 2: distillation at 1 rank, the Trainer on DeepSpeed when it ran there (as road_ds), else plain
        hf_ds = (1, "hf", "deepspeed-zero2") not in failed
        for m in args.teachers_list if "distill" in parts else ():
            r = b.launch("road-train", 1, extra=("--teachers", str(m)), tag=f"-kd{m}")
            out["distill"].append({"trainer": "road_ds offline", "M": m, "backend": "deepspeed-zero2", **strip(r)})
            h = b.launch("hf-train", 1, "deepspeed" if hf_ds else "python", ("--teachers", str(m), *(("--hf-deepspeed",) if hf_ds else ())), tag=f"-kd{m}")
            out["distill"].append({"trainer": "hf online", "M": m, "backend": "deepspeed-zero2" if hf_ds else "torch (1 process)", **strip(h)})
        # learning
        learn: dict = {"updates": args.learn_steps, "rows_per_update": args.micro_batch * args.accum, "lr": args.lr, "dev_examples": len(dev.examples)}
        if args.learn_steps and "learning" in parts:
            run_dir = work / "learn-road"
            cmd = [sys.executable, str(REPO / "road_ds" / "train.py"), "--recipe", str(work / LEARN), "--output-dir", str(run_dir),
                   "--deepspeed", str(work / "zero2.json"), "--set", f"train.max_steps={args.learn_steps}", "--set", "train.eval_every=0"]
            b.commands.append(" ".join(cmd))
            t0 = time.time()
            r = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(os.cpu_count() or 1)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            res = run_dir / "eval_results.json"
            if r.returncode == 0 and res.exists():
                e = json.loads(res.read_text())[DATASET]
                learn["road_ds"] = {"f1": e["f1"], "exact": e["exact"], "wall_s": time.time() - t0}
            else:
                learn["road_ds"] = {"error": first_error(r.stdout)}
            for peer in args.learn_peers:
                key, extra = LEARN_PEERS[peer]
                learn[key] = b.launch("hf-learn", extra=extra, tag=f"-{peer}")
        else:
            learn["skipped"] = "--learn-steps 0" if not args.learn_steps else "not in --parts"
        out["learning"] = learn
        out["settings"] = {
            "task": "extractive QA, SQuAD v1.1 (kit slice; no unanswerable questions: all-null F1 is 0)", "model": args.student,
            "teachers": args.teacher, "max_seq_length": 192, "doc_stride": 64, "max_query_length": 48,
            "precision": "bf16" if torch.cuda.is_available() else "fp32",
            "train_examples": args.train_rows, "train_features": len(ft), "learning_train_examples": args.learn_rows,
            "learning_train_features": len(learn_ft), "dev_examples": len(dev.examples), "dev_features": len(dev),
            "micro_batch": args.micro_batch, "gradient_accumulation": args.accum, "lr": args.lr, "weight_decay": 0.01, "betas": [0.9, 0.999],
            "eps": 1e-6, "grad_clip": 1.0, "schedule": "linear warm-up + linear decay to 0", "warmup_steps": args.learn_steps // 10, "seed": 0,
            "warmup_steps_untimed": args.warmup, "timed_steps": args.steps, "dataloader_workers": 1,
            "omp_threads_per_rank": {str(r): max(1, (os.cpu_count() or 1) // r) for r in args.ranks},
            "road_ds": "road_ds.train.setup + train_step (ZeRO-2: ds_configs/zero2.json with same_adamw's optimizer params); learning: road_ds/train.py fit",
            "optimizer": ("AdamW: torch's fused one on every side (the Trainer's default; torch_adam + fused in both DeepSpeed configs)" if same_adamw()
                          else "AdamW: DeepSpeed's fused Adam in both DeepSpeed runs, torch's fused AdamW in the Trainer without DeepSpeed"),
            "hf": "transformers.Trainer, AutoModelForQuestionAnswering, DataCollatorWithPadding (dynamic padding, as road_ds's collate)",
            "hf_features": "the SAME feature rows road_ds built (its feature cache via road_ds.features.build_features), as a datasets.Dataset "
                           "with input_ids/attention_mask/token_type_ids/start_positions/end_positions",
            "scoring": "both sides: road_ds.evaluate.evaluate_split on the same dev features (HF model wrapped as the forward callable)",
            "step_time": "median of per-optimizer-step seconds after the untimed warm-up steps; road_ds: kd_bench.timed_step around "
                         "train_step; HF: on_step_end to on_step_end (includes the batch fetch; step_s_begin_to_end excludes it)",
            "samples_per_s": "micro × accumulation × ranks / step_s",
            "hf_deepspeed_config": hf_ds_config(),
            "memory": "peak RSS (ru_maxrss) of the training process (rank 0); growth: peak minus VmRSS after setup (HF: at on_train_begin)",
            "kd": {"temperature": KD_TEMPERATURE, "alpha": KD_ALPHA, "teachers": "MiniLM-L6 shape, random weights (speed and memory only)",
                   "road_ds": "offline: stores from road_ds.precompute (top-k 8, float16), copied M times; kd.combine wkd",
                   "hf": "online: Trainer subclass, M resident teachers forward under no_grad each micro-batch, KL(T) on start/end"},
            "predict": {"road_ds": "road_ds/precompute.py main --top-k 8 --dtype float16 over the train features (store bytes on disk)",
                        "hf": "Trainer.predict (eval batch 64) + np.save of start and end logits, float32 (bytes on disk)",
                        "timing": "from loading the teacher to the files written"},
            "learning": "every side's encoder with dropout 0 (the pretrained config's dropout probabilities zeroed), so a forward "
                        "is the same function on every side",
            "learning_peers": {"hf_matched": "the Trainer (plain torch, 1 process) with road_ds's span loss (a compute_loss override: CE over "
                                             "context + [CLS]) and warm-up + linear decay (road_ds.train.lr_lambda), started from road_ds's "
                                             "seeded model (the learning recipe built after set_seed(seed), as road_ds's fit does, exported) "
                                             "and fed road_ds's rows in its sampler's order (train_sampling_strategy=sequential); left to "
                                             "differ: ZeRO-2's flat fp32 buffers against plain torch's tensors (rounding)",
                               "hf": "the Trainer as its users run it: AutoModelForQuestionAnswering's own loss (CE over every position "
                                     "of the padded row), its linear schedule, its RandomSampler, its own head init"},
            "differences (speed rows; the Trainer's own-loss learning row)": ["road_ds's span CE is over the support (context + [CLS]); HF's over every position of the padded row",
                            "road_ds's warm-up is (step+1)/warmup, HF's step/warmup", "the data order: road_ds's MTL sampler vs the Trainer's RandomSampler",
                            "road_ds on DeepSpeed ZeRO-2; HF: see hf_backend"]}
    finally:
        out["commands"] = b.commands
        out["versions"] = versions()
        out["wall_s"] = time.time() - t_all
        if not args.keep_work and not args.work_given:
            shutil.rmtree(work, ignore_errors=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="the result JSON")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per speed variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before them")
    p.add_argument("--rounds", type=int, default=2, help="paired rounds of the training-step variants (each runs once a round)")
    p.add_argument("--learn-steps", type=int, default=100, help="optimizer steps of each learning row (0: skip)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (distill runs predict: its stores)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hf-plain", action="store_true", help="training step: also the Trainer without DeepSpeed (one process; DDP over gloo at 2 ranks)")
    p.add_argument("--teachers-list", type=int, nargs="+", default=[1, 3])
    p.add_argument("--student", default="minilm-l6", help="a kit model name, a model dir, or a size preset: " + ", ".join(PRESETS))
    p.add_argument("--teacher", help="the distillation rows' teachers (default: the student's model)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--learn-peers", nargs="*", choices=sorted(LEARN_PEERS), default=["matched"],
                   help="the Trainer's learning rows: matched (road_ds's span loss, schedule, seeded start and row order; the default) "
                        "and own-loss (its model's own loss, as its users run it)")
    p.add_argument("--train-rows", type=int, default=1000, help="train questions of the speed, distillation and logits rows")
    p.add_argument("--learn-rows", type=int, default=2000, help="train questions of the learning rows (they see micro × accum × learn-steps features)")
    p.add_argument("--dev-rows", type=int, default=500, help="dev questions the learning rows are scored on (0: the kit's whole dev set)")
    p.add_argument("--work", help="work dir (default: a temp dir, removed at the end)")
    p.add_argument("--keep-work", action="store_true")
    # one variant, in its own process (the benchmark starts these itself)
    p.add_argument("--variant", choices=sorted(VARIANTS))
    p.add_argument("--result")
    p.add_argument("--teachers", type=int, default=0)
    p.add_argument("--hf-deepspeed", action="store_true")
    p.add_argument("--hf-matched", action="store_true")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.teacher = args.teacher or args.student
    if args.variant:
        VARIANTS[args.variant](args)
        return 0
    if not args.out:
        sys.exit("--out RESULT.json is required")
    args.work_given = bool(args.work)
    out = run_all(args)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
