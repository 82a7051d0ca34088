"""``fetch``: build (or verify) the kit, one fetch per cache at a time: each build step whose outputs
do not match kit.json is rebuilt from its archives through a staging dir, and kit.json is
written last. ``main``: the ``road-ds data fetch|path`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from road_ds.atomic import write_bytes
from road_ds.kit.archives import _Context
from road_ds.kit.manifest import _group_ok, _manifest, _read_manifest
from road_ds.kit.models import _build_minilm_l3, _build_minilm_l6
from road_ds.kit.paths import _check_outside_repo, _resolve_cache, kit_dir, kit_paths
from road_ds.kit.sentiment import _build_sentiment
from road_ds.kit.sources import CACHE_ENV, GROUP_ARCHIVES, GROUP_ORDER, GROUP_OUTPUTS, MANIFEST, KitError, Log
from road_ds.kit.squad import _build_squad
from road_ds.kit.stage import _Stage


@contextlib.contextmanager
def _locked(cache: Path, log: Log):
    """One fetch per cache at a time (several ranks or jobs may start one together)."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(cache / ".fetch.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another fetch to finish with {cache}")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


BUILDERS: dict[str, Callable[[_Context, _Stage], dict]] = {
    "squad": _build_squad,
    "sentiment": _build_sentiment,
    "minilm-l6": _build_minilm_l6,
    "minilm-l3": _build_minilm_l3,
}


def fetch(cache_dir=None, force: bool = False, log: Log | None = print) -> dict[str, Path]:
    """Build (or verify) the kit; return :func:`kit_paths`.

    A kit whose files all match ``kit.json`` is left alone unless ``force`` is set, which rebuilds
    every output from the (re-verified) archives; outputs that come out identical keep their files.
    """
    log = log or (lambda _msg: None)
    cache = _resolve_cache(cache_dir)
    _check_outside_repo(cache)
    kit = cache / "kit"
    t0 = time.time()
    with _locked(cache, log):
        manifest, why = (None, "--force") if force else _read_manifest(kit)
        stale = [g for g in GROUP_ORDER if not _group_ok(kit, manifest, g)]
        if not stale:
            log(f"kit at {kit} is complete and verified ({time.time() - t0:.2f} s)")
            return kit_paths(cache)
        if manifest is None:
            log(f"rebuilding every output ({why}); files that come out identical are kept")
        log(f"building {', '.join(stale)} into {kit}")
        kit.mkdir(parents=True, exist_ok=True)
        for leftover in kit.glob(".staging-*"):  # from a fetch that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        ctx = _Context(cache, kit, log)
        results: dict[str, dict] = {}
        files: dict[str, dict] = {}
        for g in GROUP_ORDER:
            if g not in stale:
                entry = manifest["groups"][g]  # type: ignore[index]
                results[g] = {"files": entry["files"], "counts": entry.get("counts", {}),
                              "info": entry.get("info", {})}
                files.update({rel: {k: v for k, v in manifest["files"][rel].items()  # type: ignore[index]
                                    if k in ("sha256", "bytes")} for rel in entry["files"]})
                continue
            tg = time.time()
            for key in GROUP_ARCHIVES[g]:
                ctx.archive(key)
            stage = _Stage(kit, g)
            try:
                built = BUILDERS[g](ctx, stage)
                missing = set(GROUP_OUTPUTS[g]) - set(stage.files)
                if missing:
                    raise KitError(f"step {g} did not produce {sorted(missing)}")
                done = stage.commit()
            finally:
                stage.cleanup()
            results[g] = {"files": sorted(done), **built}
            files.update(done)
            counts = ", ".join(f"{k} {v:,}" for k, v in built["counts"].items())
            log(f"  {g}: done in {time.time() - tg:.1f} s{(' (' + counts + ')') if counts else ''}")
        data = (json.dumps(_manifest(results, files), indent=1, ensure_ascii=False) + "\n").encode()
        with contextlib.suppress(OSError):
            if (kit / MANIFEST).read_bytes() == data:
                data = b""  # unchanged
        if data:
            write_bytes(kit / MANIFEST, data, mode=0o644)  # the kit is shared read-only data
        log(f"kit ready at {kit} ({time.time() - t0:.1f} s)")
    return kit_paths(cache)


def main(argv=None) -> int:
    """``data fetch [--cache-dir D] [--force]`` | ``data path [--cache-dir D]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["data"]:
        args = args[1:]
    parser = argparse.ArgumentParser(prog="road-ds data",
                                     description="Fetch or locate the real data kit.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download, verify and build the kit (idempotent)")
    p_fetch.add_argument("--cache-dir", default=None,
                         help=f"cache root (default: ${CACHE_ENV} or ~/.cache/road_ds)")
    p_fetch.add_argument("--force", action="store_true",
                         help="rebuild every output even if the kit verifies")
    p_path = sub.add_parser("path", help="print the kit directory")
    p_path.add_argument("--cache-dir", default=None)
    ns = parser.parse_args(args)
    if ns.command == "path":
        print(kit_dir(ns.cache_dir))
        return 0
    try:
        fetch(ns.cache_dir, force=ns.force, log=lambda msg: print(msg, flush=True))
    except KitError as exc:
        print(f"road-ds data fetch: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
