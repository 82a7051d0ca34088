"""Where the kit lives: the cache root, the kit dir and the path of each of its files."""

from __future__ import annotations

from pathlib import Path

from road_ds.kit.sources import CACHE_ENV, MANIFEST, KitError
from road_ds.recipe import cache_root


def cache_dir() -> Path:
    """``$ROAD_DS_CACHE`` if set and not empty, else ``~/.cache/road_ds`` (one rule, in recipe.py)."""
    return cache_root()


def _resolve_cache(cache) -> Path:
    return (Path(cache).expanduser() if cache is not None else cache_dir()).absolute()


def kit_dir(cache=None) -> Path:
    return _resolve_cache(cache) / "kit"


def kit_paths(cache=None) -> dict[str, Path]:
    """Where the kit's files are (whether or not they have been fetched yet)."""
    kit = kit_dir(cache)
    paths = {"kit": kit, "manifest": kit / MANIFEST, "downloads": kit.parent / "downloads"}
    for name, ext in (("squad", "json"), ("squad2", "json"), ("qnli", "jsonl"), ("sentiment", "jsonl")):
        for split in ("train", "dev"):
            paths[f"{name}_{split}"] = kit / name / f"{split}.{ext}"
    paths["minilm_l6"] = kit / "models" / "minilm-l6"
    paths["minilm_l3"] = kit / "models" / "minilm-l3"
    return paths


def _check_outside_repo(cache: Path) -> None:
    """The kit's data (other people's, under their licences) must not end up in this repository's working tree."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return
    try:
        cache.resolve().relative_to(repo.resolve())
    except ValueError:
        return
    raise KitError(
        f"cache dir {cache} is inside the repository {repo}; the kit holds third-party data that "
        f"must stay out of git. Use a cache outside the repository (--cache-dir or ${CACHE_ENV})."
    )
