"""The one io layer: write-then-rename for files and folders, and the one file hash.

A reader never sees half a file or half a folder: a writer fills a temporary beside the target
(`.NAME.tmp-HOST-PID`), fsyncs it, renames it into place and fsyncs the folder, so the rename itself
survives a crash. On an error the temporary is removed; temporaries left by writers on this host
that died (a killed run) are removed when the next writer of the same name starts. A full disk is a
DataError naming the path and the bytes it needed, and a rerun resumes from what is complete.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from road_ds.errors import DataError

HOST = socket.gethostname()
NEARLY_FULL = 64 << 20  # bytes free below which a write failure without a reason is taken for a full disk


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def temp_beside(path: str | Path) -> Path:
    """The temporary name for `path` (a file or a folder), after removing the stale ones: those of
    dead processes on this host (another host's may still be writing on a shared file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-{HOST}-"
    for old in path.parent.glob(glob.escape(prefix) + "*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(old)
    tmp = path.with_name(f"{prefix}{os.getpid()}")
    _remove(tmp)
    return tmp


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside `directory` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(p: Path) -> None:
    for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def is_disk_full(e: BaseException, path: str | Path | None = None) -> bool:
    """ENOSPC, also as Arrow raises it (without errno, the reason in its text). torch.save gives no
    reason at all ("file write failed", "iostream error", "unexpected pos"): a failed write counts as
    a full disk when `path`'s file system has next to nothing free (checked before cleaning up)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    if isinstance(e, (OSError, RuntimeError)) and "No space left" in str(e):
        return True
    if isinstance(e, (OSError, RuntimeError)) and path is not None:
        try:
            return shutil.disk_usage(Path(path)).free < NEARLY_FULL
        except OSError:
            return False
    return False


def disk_full(path: str | Path, needed: int | None, e: OSError) -> DataError:
    """ENOSPC as a DataError: where, how much was needed and how much is free."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    need = f"{needed:,} bytes needed" if needed is not None else "more space needed"
    left = f", {free:,} free" if free is not None else ""
    return DataError(path, f"no space left on the device ({need}{left}): free some and rerun, it resumes")


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to fill (a file or a folder); on success it replaces `path` whole."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        yield tmp
        _fsync_tree(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        _remove(tmp)
        if is_disk_full(e):
            raise disk_full(path, size, e) from None
        raise


def write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    path = Path(path)
    with atomic_path(path, len(data)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def replace_file(src: str | Path, dst: str | Path) -> None:
    """Move a finished file into place, durably (fsync the file, rename, fsync the folder)."""
    src, dst = Path(src), Path(dst)
    _fsync_tree(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(dst.parent)


def publish_dir(tmp: str | Path, final: str | Path, replace: bool = False, complete: str | None = None) -> None:
    """Rename a finished folder into place: it appears whole or not at all.

    `replace`: a folder already there is moved aside and removed (a new export over the old one).
    Otherwise the first to finish wins: processes sharing a cache may build the same folder at once,
    and a later finisher drops its copy instead of deleting one another process may be reading. A
    folder there without its `complete` marker file is no finished copy and is replaced."""
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    if final.exists() and (replace or (complete is not None and not (final / complete).exists())):
        old = temp_beside(final.with_name(final.name + ".old"))
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if complete is None or not (final / complete).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(final.parent)


@contextlib.contextmanager
def publishing(final: str | Path, replace: bool = False, complete: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder name to fill (not yet made); on success it is published as `final`
    by `publish_dir`'s rules. On an error it is removed, and a full disk is a DataError naming `final`."""
    final = Path(final)
    tmp = temp_beside(final)
    try:
        yield tmp
        publish_dir(tmp, final, replace=replace, complete=complete)
    except BaseException as e:
        full = is_disk_full(e, final.parent)
        _remove(tmp)
        if full:
            raise disk_full(final, None, e) from None
        raise


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """`dst` as a hard link to `src` (no second copy on disk), or a copy where links cannot be made."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: str | Path, dst: str | Path) -> None:
    """`dst` as a copy of the folder `src` made of hard links, published whole (replacing what was there)."""
    with publishing(dst, replace=True) as tmp:
        shutil.copytree(src, tmp, copy_function=link_or_copy)


def file_hash(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\x00")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()
