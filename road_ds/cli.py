"""The `road-ds` command: one subcommand per job; each delegates to the module that does it."""

from __future__ import annotations

import argparse
import json
import sys

from road_ds.errors import DataError


def _log(msg: str) -> None:
    """Progress goes to stderr, so stdout stays the command's result (a table or JSON)."""
    print(msg, file=sys.stderr, flush=True)


def _features(args) -> int:
    from road_ds.features import build_features, load_tokenizer
    from road_ds.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    tokenizer = load_tokenizer(recipe.model.tokenizer_path)
    names = args.dataset or [d.name for d in recipe.datasets]
    rows = []
    for name in names:
        spec = recipe.dataset(name) if name in {d.name for d in recipe.datasets} else None
        if spec is None:
            raise DataError(args.recipe, f"no dataset '{name}' (the recipe has: {', '.join(d.name for d in recipe.datasets)})", field="datasets")
        for split in args.split or list(spec.files):
            ft = build_features(recipe, name, split, tokenizer=tokenizer, force=args.force, log=_log)
            rt = ft.meta.get("span_roundtrip")
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "task": spec.task,
                    "head": spec.head_name,
                    "examples": ft.meta["examples"],
                    "features": ft.meta["features"],
                    "fingerprint": ft.fingerprint,
                    "cache": "hit" if ft.cache_hit else "built",
                    "span_roundtrip": f"{rt['roundtrip_ok']}/{rt['answerable']} ({100 * rt['roundtrip_rate']:.2f}%)" if rt else "",
                    "path": str(ft.path),
                }
            )
            if rt and args.show_misses:
                for m in ft.meta["span_misses"]:
                    print(f"  miss {name}/{split} {m['id']}: gold {m['gold']!r} decoded {m['decoded']!r}")
            if rt and args.oracle_predictions:
                _write_oracle(ft, args.oracle_predictions)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        cols = ["dataset", "split", "task", "head", "examples", "features", "cache", "span_roundtrip", "fingerprint"]
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols))
        for r in rows:
            print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


def _write_oracle(ft, out_dir) -> None:
    """Decode the gold span labels like model logits; write SQuAD-format predictions and na-probs."""
    from pathlib import Path

    from road_ds.atomic import write_json
    from road_ds.features import gold_span_logits
    from road_ds.qa_decoding import postprocess_qa_predictions

    starts, ends = gold_span_logits(ft.table)
    version_2 = any(not a["text"] for a in ft.examples["answers"])
    pred = postprocess_qa_predictions(ft.examples, ft.table, starts, ends, version_2_with_negative=version_2)
    stem = Path(out_dir) / f"{ft.spec.name}-{ft.split}"
    write_json(f"{stem}-predictions.json", pred.predictions)
    write_json(f"{stem}-na_probs.json", pred.na_probs)
    _log(f"oracle predictions: {stem}-predictions.json, {stem}-na_probs.json")


# Jobs with a parser of their own: `road-ds X ARGS...` hands ARGS to X's main untouched, so
# `road-ds X --help` shows X's options and option-first lines (`road-ds train --recipe R`) parse.
JOBS = {
    "data": ("road_ds.kit", "the real data kit: `road-ds data fetch` downloads and prepares it"),
    "precompute": ("road_ds.precompute", "offline teacher pass: top-k teacher logits into a teacher store"),
    "train": ("road_ds.train", "train a multi-task student (or a teacher) on DeepSpeed: road-ds train --recipe R --output-dir D"),
    "evaluate": ("road_ds.evaluate", "score an export or a run on a recipe's datasets; writes metrics and SQuAD-format predictions"),
    "export": ("road_ds.export", "a run (or checkpoint) to plain Hugging Face model dirs, one per head"),
    "squad-eval": ("road_ds.squad_eval", "official SQuAD 2.0 scoring: DATA.json PRED.json [--na-prob-file NA.json]"),
    "pipeline": ("road_ds.pipelines.plan", "a plan of stages (train, precompute, evaluate, export): `road-ds pipeline check|run|submit|report PLAN`"),
}


def _run_job(name: str, argv: list[str]) -> int:
    import importlib

    return importlib.import_module(JOBS[name][0]).main(argv)


def _store_inspect(args) -> int:
    from road_ds.store import inspect

    report = inspect(args.path)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        t = report["teacher"]
        print(f"store {report['path']}: teacher {t['path']}, top-k {report['top_k']}, {report['dtype']}, compression {report['compression']}")
        for head, ident in t["heads"].items():
            print(f"  head {head}: {ident['architecture']} sha256 {ident['sha256'][:16]}")
        for key, e in report["entries"].items():
            mass = f", kept mass {e['kept_mass']}" if e["kept_mass"] else ""
            print(f"  {key} [{e['head']}, {e['kind']}]: {e['rows']} rows in {e['shards']} shards, {e['bytes_per_row']} bytes/row, "
                  f"top-1 agreement with gold {e['top1_agreement']}{mass}")
    for p in report["problems"]:
        print(f"DAMAGED {p}", file=sys.stderr)
    print(f"checksums: {'all shards verify' if not report['problems'] else str(len(report['problems'])) + ' damaged shard(s)'}",
          file=sys.stderr if report["problems"] else sys.stdout)
    return 1 if report["problems"] else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="road-ds", description="ROaD training on DeepSpeed: data, features, teachers, students, metrics.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("features", help="build (or find in the cache) the feature tables of a recipe")
    f.add_argument("recipe")
    f.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    f.add_argument("--split", action="append", help="only this split (repeatable)")
    f.add_argument("--force", action="store_true", help="rebuild even when the cache has them")
    f.add_argument("--show-misses", action="store_true", help="list QA answers whose span labels do not round-trip")
    f.add_argument("--json", action="store_true", help="print the summary as JSON")
    f.add_argument("--oracle-predictions", metavar="DIR",
                   help="QA: decode the gold span labels as if they were model logits and write SQuAD-format "
                        "predictions and na-probs to DIR (the ceiling that windows and tokenization leave)")
    f.set_defaults(func=_features)

    for name, (_, text) in JOBS.items():  # listed in `road-ds --help`; main() hands their arguments over
        sub.add_parser(name, help=text, add_help=False)

    st = sub.add_parser("store", help="teacher stores: `road-ds store inspect PATH`")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    si = st_sub.add_parser("inspect", help="manifest summary, teacher accuracy, kept mass; verifies every checksum")
    si.add_argument("path")
    si.add_argument("--json", action="store_true")
    si.set_defaults(func=_store_inspect)

    return p


def main(argv=None) -> int:
    import datasets

    datasets.disable_progress_bars()  # each job prints its own one-line summaries
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    try:
        if command in JOBS:
            return _run_job(command, argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except DataError as e:
        print(f"road-ds {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
