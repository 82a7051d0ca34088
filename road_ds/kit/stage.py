"""One build step's files: written under a staging dir, then renamed into the kit together."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from road_ds.atomic import file_hash, replace_file


class _Stage:
    """Files of one build step, written under a staging dir and renamed into the kit together."""

    def __init__(self, kit: Path, group: str):
        kit.mkdir(parents=True, exist_ok=True)
        self.kit = kit
        self.dir = Path(tempfile.mkdtemp(prefix=f".staging-{group}-", dir=kit))
        self.files: dict[str, Path] = {}

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files[rel] = p
        return p

    def write(self, rel: str, data: bytes) -> None:
        self.path(rel).write_bytes(data)

    def commit(self) -> dict[str, dict]:
        done = {}
        for rel in sorted(self.files):
            src = self.files[rel]
            digest, size = file_hash(src), src.stat().st_size
            target = self.kit / rel
            if target.is_file() and target.stat().st_size == size and file_hash(target) == digest:
                src.unlink()  # same content: keep the file (and its mtime) that is there
            else:
                replace_file(src, target)
            done[rel] = {"sha256": digest, "bytes": size}
        return done

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
