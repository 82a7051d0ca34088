"""VitaminC fact verification (BIG-bench's task file) as (evidence, claim, label) rows, split so
that no evidence and no claim is in both train and dev.
"""

from __future__ import annotations

import json

from road_ds.kit.archives import _Context
from road_ds.kit.common import _hash_unit, _jsonl, _sha256_bytes, _UnionFind
from road_ds.kit.sources import VITAMINC_MEMBER, KitError
from road_ds.kit.stage import _Stage

VITAMINC_DEV_FRACTION = 0.10  # of the evidence/claim groups

_VITC_LABELS = {"True": "SUPPORTS", "False": "REFUTES", "Neither": "NOT ENOUGH INFO"}
_CLAIM_SEP = "\nClaim: "


def _vitaminc_rows(raw: bytes) -> list[dict]:
    task = json.loads(raw)
    rows = []
    for i, ex in enumerate(task.get("examples", [])):
        text, scores = ex.get("input"), ex.get("target_scores")
        if not isinstance(text, str) or text.count(_CLAIM_SEP) != 1:
            raise KitError(f"{VITAMINC_MEMBER}: example {i}: input is not 'evidence\\nClaim: claim'")
        if not isinstance(scores, dict) or set(scores) != set(_VITC_LABELS):
            raise KitError(f"{VITAMINC_MEMBER}: example {i}: target_scores {scores!r}")
        best = [k for k, v in scores.items() if v == 1]
        if len(best) != 1 or sum(scores.values()) != 1:
            raise KitError(f"{VITAMINC_MEMBER}: example {i}: not exactly one target: {scores!r}")
        evidence, claim = text.split(_CLAIM_SEP)
        rows.append({"id": f"vitaminc-{i:05d}", "evidence": evidence, "claim": claim,
                     "label": _VITC_LABELS[best[0]]})
    return rows


def _vitaminc_dev_groups(rows: list[dict]) -> tuple[list[bool], int]:
    """Dev flags: rows are grouped by shared evidence OR shared claim (connected components)."""
    find = _UnionFind()
    for r in rows:
        find.union(("e", r["evidence"]), ("c", r["claim"]))
    # a component's key: the smallest sha256 of its evidence texts, hashed once more to be uniform
    key: dict = {}
    for r in rows:
        root = find(("e", r["evidence"]))
        h = _sha256_bytes(r["evidence"].encode("utf-8"))
        key[root] = min(key.get(root, h), h)
    dev_roots = {root for root, h in key.items() if _hash_unit(h) < VITAMINC_DEV_FRACTION}
    return [find(("e", r["evidence"])) in dev_roots for r in rows], len(key)


def _build_vitaminc(ctx: _Context, stage: _Stage) -> dict:
    raw = ctx.bigbench_members([VITAMINC_MEMBER])[VITAMINC_MEMBER]
    rows = _vitaminc_rows(raw)
    flags, n_groups = _vitaminc_dev_groups(rows)
    train = [r for r, d in zip(rows, flags) if not d]
    dev = [r for r, d in zip(rows, flags) if d]
    stage.write("vitaminc/train.jsonl", _jsonl(train))
    stage.write("vitaminc/dev.jsonl", _jsonl(dev))
    labels = {s: {lab: sum(r["label"] == lab for r in part) for lab in _VITC_LABELS.values()}
              for s, part in (("train", train), ("dev", dev))}
    return {
        "counts": {"vitaminc/train.jsonl": len(train), "vitaminc/dev.jsonl": len(dev)},
        "info": {
            "member_sha256": _sha256_bytes(raw),
            "labels": labels,
            "groups": n_groups,
            "split": (f"rows linked by an identical evidence or an identical claim form a group "
                      f"({n_groups} groups); a group is dev when its hash falls in the first "
                      f"{VITAMINC_DEV_FRACTION:.0%}: no evidence and no claim is in both splits"),
            "evidence_format": "'Page title: evidence sentence' exactly as in the task input",
            "replacement_chars": sum("\ufffd" in r["evidence"] + r["claim"] for r in rows),
        },
    }
