"""Checkpoint bookkeeping without an engine: what `latest` names, what prune keeps, and what a
checkpoint says about the world that saved it."""

from __future__ import annotations

import json
from pathlib import Path

from road_ds import checkpoint


def _tags(d: Path, *steps: int) -> None:
    for s in steps:
        (d / checkpoint.tag(s)).mkdir(parents=True)
        (d / checkpoint.tag(s) / "rng-rank00000.pt").write_bytes(b"")


def test_prune_keeps_the_newest_up_to_latest_and_drops_a_save_that_never_finished(tmp_path):
    _tags(tmp_path, 4, 8, 12, 16)
    (tmp_path / checkpoint.UNIVERSAL / "step-00000004").mkdir(parents=True)
    checkpoint.publish(tmp_path, 12)  # step 16 was being written when the run was killed
    assert (tmp_path / "latest").read_text() == "step-00000012"
    checkpoint.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000008", "step-00000012"]
    checkpoint.prune(tmp_path, keep=0)  # at least the one `latest` names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000012"]


def test_saved_world_reads_world_json_or_counts_the_ranks_of_an_older_checkpoint(tmp_path):
    assert checkpoint.saved_world(tmp_path) is None
    _tags(tmp_path, 4)
    (tmp_path / "step-00000004" / "rng-rank00001.pt").write_bytes(b"")
    checkpoint.publish(tmp_path, 4)
    assert checkpoint.saved_world(tmp_path) == checkpoint.SavedWorld("step-00000004", 2, None)
    (tmp_path / "step-00000004" / checkpoint.WORLD_FILE).write_text(json.dumps({"world_size": 2, "rows_per_micro_batch": 16}))
    assert checkpoint.saved_world(tmp_path) == checkpoint.SavedWorld("step-00000004", 2, 16)
    checkpoint.publish(tmp_path, 8)  # a tag dir that is gone: no layout, the load reports it
    assert checkpoint.saved_world(tmp_path) is None
