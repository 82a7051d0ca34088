"""road_ds against what users would pick instead: the Hugging Face Trainer and the examples' QA code.

    make bench-peer     # = python bench/peer_bench.py --hf-examples $HF_EXAMPLES --out docs/bench_peer.md

Runs the two halves, each the peers' own code as their users run it (never a copy in this repo):
  bench/peer_train.py  training step (1 and 2 ranks), learning (dev F1 after the same updates),
                       distillation (road_ds's offline stores against a Trainer subclass with resident
                       teachers), teacher logits (the precompute against Trainer.predict);
  bench/peer_qa.py     features (road_ds against run_qa.py's prepare_*_features through datasets.map)
                       and QA decoding (road_ds.qa_decoding against utils_qa.postprocess_qa_predictions),
                       loaded from `--hf-examples`, a transformers checkout's examples/pytorch/question-answering.
Writes docs/bench_peer.md and docs/bench_peer.json (the same figures, with a top-level "targets" list).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from kd_bench import round_ratios  # noqa: E402

from road_ds.atomic import write_json, write_text  # noqa: E402

LEARNERS = [("road_ds", "road_ds"), ("hf_matched", "the Trainer matched to road_ds (its span loss, schedule, start and rows)"),
            ("hf", "the Trainer as its users run it")]
LEARN_FLOOR_F1 = 20.0  # dev F1 above this (all-null is 0 on SQuAD 1.1) before F1s are compared


LEARNING_ROWS = ("The matched Trainer row is the check that road_ds's QA fit learns what plain transformers learns: the Trainer "
                 "given road_ds's span loss (cross-entropy over the positions an answer can take, the context and [CLS]), its warm-up "
                 "and decay, its seeded starting model and its rows in its order, every encoder without dropout; what is left to differ "
                 "is rounding (ZeRO-2's flat fp32 buffers against plain torch). The Trainer as its users run it (`--learn-peers "
                 "own-loss`) takes transformers' QA loss, a cross-entropy over every position of the padded row (question, [SEP] and "
                 "padding included): a harder objective that learns more slowly at the same updates; road_ds is not to fall behind it.")


def run_half(script: str, args: list[str], out: Path) -> tuple[dict, str, float]:
    """One half in its own process: (its JSON, its command line, seconds)."""
    cmd = [sys.executable, str(REPO / "bench" / script), *args, "--out", str(out)]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0 or not out.exists():
        raise SystemExit(f"bench half failed (exit {r.returncode}): {' '.join(cmd)}")
    return json.loads(out.read_text()), " ".join(["python", f"bench/{script}", *args]), time.time() - t0


def target(name: str, value, goal, met: bool) -> dict:
    return {"name": name, "value": value, "target": goal, "met": bool(met)}


def _row(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def paired_ratio(ours: dict, hf: dict) -> float:
    """road_ds / HF samples/s (both sides' steps hold the same rows): HF's step time over road_ds's,
    the median of the rounds' ratios."""
    return statistics.median(round_ratios(hf.get("round_step_s", [hf["step_s"]]), ours.get("round_step_s", [ours["step_s"]])))


def memory(ours: dict, hf: dict) -> tuple[str, str]:
    """The memory figure to compare: the GPU's peak where both ran on one, else the process's peak RSS."""
    return ("peak_gpu_mb", "peak GPU memory") if "peak_gpu_mb" in ours and "peak_gpu_mb" in hf else ("peak_rss_mb", "peak RSS")


def train_targets(t: dict) -> list[dict]:
    """Training step at 1 and 2 ranks, learning, distillation at M = 3, teacher logits."""
    out = []
    for ranks in (1, 2):
        ours = _row(t.get("train", []), trainer="road_ds", ranks=ranks)
        for hf in (r for r in t.get("train", []) if r["trainer"] == "hf" and r["ranks"] == ranks):  # on DeepSpeed ZeRO-2, and without it
            if not ours:
                continue
            what = f"training step, {ranks} rank(s), HF Trainer on {hf['backend']}"
            ratio = paired_ratio(ours, hf)
            out.append(target(f"{what}: road_ds / HF samples/s (median of {len(ours.get('round_step_s', [0]))} paired rounds)",
                              round(ratio, 3), ">= 1.0", ratio >= 1.0))
            mem, label = memory(ours, hf)
            out.append(target(f"{what}: road_ds / HF {label}", round(ours[mem] / hf[mem], 3), "<= 1.05", ours[mem] <= 1.05 * hf[mem]))
    out += learning_targets(t.get("learning", {}))
    ours, hf = _row(t.get("distill", []), trainer="road_ds offline", M=3), _row(t.get("distill", []), trainer="hf online", M=3)
    if ours and hf:
        out.append(target("distillation M=3: road_ds offline / HF online samples/s", round(ours["samples_per_s"] / hf["samples_per_s"], 3), ">= 1.8",
                          ours["samples_per_s"] >= 1.8 * hf["samples_per_s"]))
        mem, label = memory(ours, hf)
        out.append(target(f"distillation M=3: road_ds offline / HF online {label}", round(ours[mem] / hf[mem], 3), "< 1.0", ours[mem] < hf[mem]))
    pred = t.get("predict", {})
    if "road_ds" in pred and "hf" in pred:
        ours, hf = pred["road_ds"], pred["hf"]
        out.append(target("teacher logits: precompute / Trainer.predict rows/s", round(ours["rows_per_s"] / hf["rows_per_s"], 3), ">= 1.0",
                          ours["rows_per_s"] >= hf["rows_per_s"]))
        out.append(target("teacher logits: Trainer.predict / precompute bytes per feature (k=8)", round(hf["bytes_per_feature"] / ours["bytes_per_feature"], 1),
                          ">= 10", hf["bytes_per_feature"] >= 10 * ours["bytes_per_feature"]))
    return out


def learning_targets(learn: dict) -> list[dict]:
    """road_ds's dev F1 within 2 of the matched Trainer's (both above the floor), and not 2 below the
    Trainer's as its users run it; a row that failed is a missed target with its error."""
    out, ours, n = [], learn.get("road_ds"), learn.get("updates")
    for key in ("hf_matched", "hf"):
        if ours is None or key not in learn:
            continue
        matched, theirs = key == "hf_matched", learn[key]
        name = (f"learning: |road_ds - the Trainer matched to road_ds| dev F1 after {n} updates (both >= {LEARN_FLOOR_F1})" if matched
                else f"learning: road_ds - the Trainer as its users run it, dev F1 after {n} updates (road_ds >= {LEARN_FLOOR_F1})")
        goal = "<= 2.0" if matched else ">= -2.0"
        if "f1" not in ours or "f1" not in theirs:
            out.append(target(name, f"error: {ours.get('error') or theirs.get('error')}", goal, False))
            continue
        gap = ours["f1"] - theirs["f1"]
        met = abs(gap) <= 2.0 and min(ours["f1"], theirs["f1"]) >= LEARN_FLOOR_F1 if matched else gap >= -2.0 and ours["f1"] >= LEARN_FLOOR_F1
        out.append(target(name, round(abs(gap) if matched else gap, 2), goal, met))
    return out


def qa_targets(q: dict) -> list[dict]:
    """Features (rows/s, identical) and decoding (examples/s, identical predictions)."""
    out = []
    for split, s in q.get("features", {}).get("splits", {}).items():
        ratio = s["road_ds"]["examples_per_s"] / s["hf"]["examples_per_s"]
        out.append(target(f"features ({split}): road_ds / run_qa.py examples/s", round(ratio, 3), ">= 1.0", ratio >= 1.0))
        out.append(target(f"features ({split}): differences from run_qa.py", s["differences"]["count"], 0, s["identical"]))
    for version, d in q.get("decoding", {}).items():
        ratio = d["road_ds"]["examples_per_s"] / d["hf"]["examples_per_s"]
        out.append(target(f"decoding ({version}): road_ds / utils_qa examples/s", round(ratio, 3), ">= 2.0", ratio >= 2.0))
        same = d["identical_predictions"] and d.get("identical_null_scores", True)
        out.append(target(f"decoding ({version}): differences from utils_qa", d["differences"]["count"], 0, same))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/bench_peer.md")
    p.add_argument("--hf-examples", default=os.environ.get("HF_EXAMPLES"),
                   help="the transformers examples' question-answering dir (run_qa.py, utils_qa.py), e.g. <transformers clone>/examples/pytorch/question-answering")
    p.add_argument("--skip-qa", action="store_true", help="only the Trainer half (no examples dir at hand)")
    p.add_argument("--train-args", default="", help="passed on to bench/peer_train.py, e.g. bench/gpu.sh's sizes and parts")
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json beside it (no runs)")
    args = p.parse_args()
    if args.report_only:
        result = json.loads(Path(args.out).with_suffix(".json").read_text())
        result["versions"].pop("machine", None)
        write_text(args.out, report(result))
        return
    if not args.skip_qa and not (args.hf_examples and (Path(args.hf_examples) / "utils_qa.py").exists()):
        sys.exit("bench-peer needs the transformers examples' question-answering dir: git clone https://github.com/huggingface/transformers, "
                 "then HF_EXAMPLES=<clone>/examples/pytorch/question-answering make bench-peer (or --skip-qa for the Trainer half alone)")
    t_all = time.time()
    with tempfile.TemporaryDirectory(prefix="road-ds-peer-") as work:
        train, train_cmd, train_s = run_half("peer_train.py", shlex.split(args.train_args), Path(work) / "train.json")
        qa, qa_cmd, qa_s = run_half("peer_qa.py", ["--hf-examples", args.hf_examples], Path(work) / "qa.json") if not args.skip_qa else ({}, None, 0.0)
    import deepspeed
    import torch
    import transformers

    result = {
        "targets": train_targets(train) + qa_targets(qa),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": {k: v for k, v in {"python": platform.python_version(), "torch": torch.__version__, "deepspeed": deepspeed.__version__,
                                       "transformers": transformers.__version__, **train.get("versions", {}), **qa.get("versions", {})}.items()
                     if k != "machine"},
        "commands": {"make": "make bench-peer", "train": train_cmd, "qa": qa_cmd},
        "minutes": {"total": round((time.time() - t_all) / 60, 1), "train": round(train_s / 60, 1), "qa": round(qa_s / 60, 1)},
        "train": train, "qa": qa,
    }
    write_json(Path(args.out).with_suffix(".json"), result)
    write_text(args.out, report(result))
    print(Path(args.out).read_text())


def _fmt(v) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else str(v)


def report(r: dict) -> str:
    """docs/bench_peer.md: the targets, then each item's table."""
    lines = ["# road_ds against the Hugging Face Trainer and the examples' QA code", "",
             f"Machine: {r['machine']}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + f". Total {r['minutes']['total']} min.",
             f"Command: `{r['commands']['make']}` (`{r['commands']['train']}`" + (f"; `{r['commands']['qa']}`" if r["commands"]["qa"] else "") + ").", "",
             "## Targets", "", "| target | value | goal | met |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {_fmt(t['value'])} | {t['target']} | {'yes' if t['met'] else '**no**'} |" for t in r["targets"]]
    t = r["train"]
    if t.get("settings"):
        lines += ["", "<details><summary>Settings (both sides)</summary>", ""]
        lines += [f"- {k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in t["settings"].items()]
        lines += ["", "</details>"]
    gpu = all("peak_gpu_mb" in x for x in t.get("train", []) + t.get("distill", [])) and bool(t.get("train") or t.get("distill"))
    if t.get("train"):
        lines += ["", "## 1. Training step, single-task QA", "",
                  "| trainer | backend | ranks | step s (median of rounds) | each round's step s | samples/s | peak RSS MiB | RSS growth after setup MiB |"
                  + (" peak GPU MiB |" if gpu else ""), "|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
        lines += [f"| {x['trainer']} | {x.get('backend', '')} | {x['ranks']} | {x['step_s']:.3f} | "
                  f"{' / '.join(f'{v:.3f}' for v in x.get('round_step_s', [x['step_s']]))} | {x['samples_per_s']:.1f} | {x['peak_rss_mb']:.0f} | "
                  f"{x.get('rss_growth_mb', float('nan')):.0f} |" + (f" {x['peak_gpu_mb']:.0f} |" if gpu else "") for x in t["train"]]
    learn = t.get("learning", {})
    if "road_ds" in learn:
        ran = [(who, learn[k]) for k, who in LEARNERS if k in learn]
        lines += ["", f"Learning: dev F1 / EM on {learn.get('dev_examples', '?')} questions after {learn.get('updates')} updates of "
                  f"{learn.get('rows_per_update')} rows at lr {learn.get('lr', '?')} from the same pretrained encoder: "
                  + "; ".join(f"{who} {r['f1']:.1f} / {r['exact']:.1f}" if "f1" in r else f"{who}: {r.get('error')}" for who, r in ran)
                  + " (all-null 0: SQuAD 1.1 has no unanswerable questions).", "", LEARNING_ROWS]
    if t.get("distill"):
        lines += ["", "## 2. Distillation step", "", "| trainer | M | step s | samples/s | peak RSS MiB |" + (" peak GPU MiB |" if gpu else ""),
                  "|---|---|---|---|---|" + ("---|" if gpu else "")]
        lines += [f"| {x['trainer']} | {x['M']} | {x['step_s']:.3f} | {x['samples_per_s']:.1f} | {x['peak_rss_mb']:.0f} |"
                  + (f" {x['peak_gpu_mb']:.0f} |" if gpu else "") for x in t["distill"]]
    if t.get("predict"):
        lines += ["", "## 5. Teacher logits", "", "| way | seconds | rows/s | bytes per feature |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['seconds']:.1f} | {v['rows_per_s']:.1f} | {v['bytes_per_feature']:.0f} |" for k, v in t["predict"].items()]
    q = r["qa"]
    for split, s in q.get("features", {}).get("splits", {}).items():
        if split == next(iter(q["features"]["splits"])):
            lines += ["", "## 3. Features", "", "| split | code | seconds | examples/s | features/s | features | differences |", "|---|---|---|---|---|---|---|"]
        for who in ("road_ds", "hf"):
            x = s[who]
            lines.append(f"| {split} | {'road_ds' if who == 'road_ds' else 'run_qa.py'} | {x['seconds']:.2f} | {x['examples_per_s']:.0f} | "
                         f"{x['features_per_s']:.0f} | {x['features']} | {s['differences']['count'] if who == 'hf' else ''} |")
    if q.get("decoding"):
        lines += ["", "## 4. QA decoding", "", "| version | code | seconds | examples/s | differences |", "|---|---|---|---|---|"]
        for version, d in q["decoding"].items():
            for who in ("road_ds", "hf"):
                x = d[who]
                lines.append(f"| {version} | {'road_ds' if who == 'road_ds' else 'utils_qa'} | {x['seconds']:.3f} | {x['examples_per_s']:.0f} | "
                             f"{d['differences']['count'] if who == 'hf' else ''} |")
    missed = [x for x in r["targets"] if not x["met"]]
    if missed:
        lines += ["", "## Targets missed", ""] + [f"- {x['name']}: {_fmt(x['value'])} (goal {x['target']})" for x in missed]
        for where, item in [(f"features ({k})", v) for k, v in q.get("features", {}).get("splits", {}).items()] + \
                           [(f"decoding ({k})", v) for k, v in q.get("decoding", {}).items()]:
            if item.get("profile") and any(x["name"].startswith(where) and not x["met"] for x in missed):
                lines += ["", f"Where road_ds's time goes, {where} (cProfile, by cumulative time; the profiler about doubles the times):", "", "```",
                          *item["profile"], "```"]
    skipped = {k: v["skipped"] for k, v in t.items() if isinstance(v, dict) and "skipped" in v}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
