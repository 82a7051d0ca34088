"""The io layer: write-then-rename leaves nothing behind on an error, stale temporaries of dead writers
go when the next writer starts, folders publish whole, and a full disk is a named error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from road_ds.atomic import HOST, file_hash, publish_dir, temp_beside, write_bytes
from road_ds.errors import DataError


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name or ".old" in p.name)


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    write_bytes(target, b"old")

    def broken(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_stale_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    target = tmp_path / "shard-00001.arrow"
    stale = tmp_path / f".shard-00001.arrow.tmp-{HOST}-{dead}"
    (tmp_path / f".shard-00001.arrow.tmp-{HOST}-{dead}-dir").mkdir()  # not a pid suffix: not ours to judge
    stale.write_bytes(b"half")
    alive = tmp_path / f".shard-00001.arrow.tmp-{HOST}-{os.getppid()}"  # a writer still running
    alive.write_bytes(b"busy")
    other = tmp_path / f".shard-00001.arrow.tmp-otherhost-{dead}"  # another host's, on a shared file system
    other.write_bytes(b"busy")
    write_bytes(target, b"data")
    assert target.read_bytes() == b"data"
    assert not stale.exists() and alive.exists() and other.exists()
    assert temp_beside(target).name == f".shard-00001.arrow.tmp-{HOST}-{os.getpid()}"


def test_a_folder_publishes_whole_first_finisher_wins_or_replaces(tmp_path):
    final = tmp_path / "fp"
    for content in ("first", "second"):
        tmp = temp_beside(final)
        (tmp / "data").mkdir(parents=True)
        (tmp / "data" / "x").write_text(content)
        (tmp / "meta.json").write_text("{}")
        publish_dir(tmp, final, complete="meta.json")
    assert (final / "data" / "x").read_text() == "first" and leftovers(tmp_path) == []
    tmp = temp_beside(final)
    tmp.mkdir()
    (tmp / "meta.json").write_text('{"v": 2}')
    publish_dir(tmp, final, replace=True)
    assert (final / "meta.json").read_text() == '{"v": 2}' and not (final / "data").exists() and leftovers(tmp_path) == []
    h = file_hash(final)
    (final / "meta.json").write_text('{"v": 3}')
    assert file_hash(final) != h


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_an_error_naming_the_path_and_the_bytes(small_disk):
    target = small_disk / "big.bin"
    with pytest.raises(DataError) as e:
        write_bytes(target, b"x" * (1 << 20))
    assert str(target) in str(e.value) and "1,048,576 bytes needed" in str(e.value) and "no space left" in str(e.value)
    assert not target.exists() and leftovers(small_disk) == []
    write_bytes(target, b"small")  # room again: the rerun writes it
    assert target.read_bytes() == b"small"


def test_a_full_disk_under_a_teacher_shard_is_named_and_leaves_no_temporary(small_disk):
    import pyarrow as pa

    from road_ds.store import write_shard

    schema = pa.schema([("x", pa.float32())])
    path = small_disk / "sq" / "train" / "shard-00000.arrow"
    with pytest.raises(DataError) as e:
        write_shard(path, {"x": np.zeros(200_000, np.float32)}, schema, "none", {})
    assert str(path) in str(e.value) and "no space left" in str(e.value)
    assert not path.exists() and leftovers(path.parent) == []
