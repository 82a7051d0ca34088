"""`road-ds export CKPT OUT`: a DeepSpeed checkpoint of a run → one plain Hugging Face dir per head.

CKPT is a run's output dir (its latest checkpoint), its `checkpoints/` dir, or one tag dir in it.
The ZeRO partitions (stage 0-3) are merged on the CPU with DeepSpeed's own zero_to_fp32 logic, so
no GPU and no process group is needed. The dirs load with `AutoModelForQuestionAnswering` /
`AutoModelForSequenceClassification` and transformers alone. The heads share one encoder file
(hard links within the export); `--standalone` gives each head dir its own full weights file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from road_ds.errors import DataError, run_job


def _checkpoint(path: Path) -> tuple[Path, Path, str]:
    """(run dir, checkpoints dir, tag) for any of the three forms of CKPT."""
    path = path.resolve()
    if (path / "checkpoints" / "latest").exists():
        return path, path / "checkpoints", (path / "checkpoints" / "latest").read_text().strip()
    if (path / "latest").exists():
        return path.parent, path, (path / "latest").read_text().strip()
    if path.parent.name == "checkpoints" and path.is_dir():
        return path.parent.parent, path.parent, path.name
    raise DataError(path, "not a run dir, a checkpoints dir or a checkpoint tag dir (no 'latest' file found)")


def load_checkpoint_model(ckpt: str | Path):
    """The RoadModel of a checkpoint, with the recipe the run saved beside it."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from road_ds.model import build_model
    from road_ds.recipe import parse_recipe

    run, ckpt_dir, tag = _checkpoint(Path(ckpt))
    resolved = run / "recipe.resolved.json"
    if not resolved.exists():
        raise DataError(run, "no recipe.resolved.json beside the checkpoint: not a road_ds run dir")
    recipe = parse_recipe(json.loads(resolved.read_text()), resolved)
    model = build_model(recipe)
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(ckpt_dir / tag, f"checkpoint does not fit the recipe's model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval(), recipe, tag


def main(argv=None) -> int:
    from road_ds.features import load_tokenizer

    p = argparse.ArgumentParser(prog="road-ds export", description=__doc__.split("\n")[0])
    p.add_argument("ckpt", help="a run dir, its checkpoints/ dir, or a checkpoint tag dir")
    p.add_argument("out", help="the export dir: one HF model dir per head and road_ds_export.json")
    p.add_argument("--head", action="append", help="only this head (repeatable)")
    p.add_argument("--standalone", action="store_true", help="each head dir with its own single model.safetensors (for shipping), "
                   "instead of one encoder file shared by hard links")
    args = p.parse_args(argv)

    def body():
        model, recipe, tag = load_checkpoint_model(args.ckpt)
        out = model.export(args.out, load_tokenizer(recipe.model.tokenizer_path), heads=args.head, standalone=args.standalone)
        print(f"exported checkpoint {tag}: {', '.join(sorted(p.name for p in Path(out).iterdir() if p.is_dir()))} -> {out}")

    return run_job("road-ds export", body)


if __name__ == "__main__":
    sys.exit(main())
