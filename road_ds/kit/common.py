"""What the build steps share: hashes and seeded generators that make the splits deterministic,
connected components (rows that go to the same split), and JSON(L) bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Iterable


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _seeded(label: str) -> random.Random:
    return random.Random(int(hashlib.sha256(label.encode("utf-8")).hexdigest()[:16], 16))


def _first_n_by_hash(keys: Iterable[str], fraction: float) -> set[str]:
    order = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    n = max(1, round(fraction * len(order)))
    return set(order[:n])


class _UnionFind:
    """Connected components over hashable keys; `find(x)` is the component's smallest key."""

    def __init__(self):
        self.parent: dict = {}

    def __call__(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        a, b = self(a), self(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
