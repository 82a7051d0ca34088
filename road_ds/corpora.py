"""Readers for published corpus layouts (ROaD's datasets): one file → canonical records.

Each layout reader yields (row, record) with the canonical fields already in place (span: id, title,
question, context, answers [{text, answer_start}]; classification: id, text_a, text_b and the label
*name*), checks what its layout promises (MRQA's char spans and QA-SRL's token spans against their
text), and counts in `skipped` what it drops on purpose (QA-SRL questions judged invalid, Amazon's
3-star reviews under `rating: polarity`), so a run says how many rows it did not use and why.
readers.py then checks every record as it checks any other format's.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from road_ds.errors import DataError

CANNOTANSWER = "CANNOTANSWER"  # QuAC's no-answer token, appended to every context
RATING_LABELS = {"five_way": ("1", "2", "3", "4", "5"), "polarity": ("negative", "positive")}

Records = Iterator[tuple[object, dict]]


def open_text(path: Path):
    """A text file, gzip-compressed or not (MRQA and QA-SRL ship as .jsonl.gz)."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8", newline="")


def delimited_rows(path: Path, delimiter: str, quoting: bool = False, required: tuple[str, ...] = ()) -> Records:
    """(line number, {column: value}) for each non-blank row of a delimited file with a header row;
    a header without a `required` column, or a row whose field count differs from the header's, is an error."""
    csv.field_size_limit(sys.maxsize)
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise DataError(path, "empty file: no header row", row=1)
        missing = sorted(set(required) - set(header))
        if missing:
            raise DataError(path, f"the header lacks {', '.join(missing)}", row=1, field=missing[0])
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise DataError(path, f"{len(values)} fields where the header has {len(header)}", row=reader.line_num)
            yield reader.line_num, dict(zip(header, values))


def jsonl_lines(path: Path) -> Records:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", row=n) from None
            if not isinstance(rec, dict):
                raise DataError(path, "each line must be a JSON object", row=n)
            yield n, rec


def json_document(path: Path) -> dict:
    """A whole-file JSON document with a top-level 'data' list (SQuAD, QuAC)."""
    try:
        with open_text(path) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})", row=e.lineno) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(path, "the top level needs a 'data' list", field="data")
    return doc


def _list(path, value, row, field) -> list:
    if not isinstance(value, list):
        raise DataError(path, f"missing or not a list (got {type(value).__name__})", row=row, field=field)
    return value


def _int_pair(span) -> bool:
    """A [start, end] pair of integers (MRQA char spans, QA-SRL token spans)."""
    return isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in span)


def _fold(text: str) -> str:
    """Case, Unicode form and white space folded: how MRQA's detected answers match their spans."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


# ---------------------------------------------------------------------------- QA layouts


def squad_records(path: Path, spec, skipped: Counter) -> Records:
    """Official SQuAD v1.1 / v2.0 JSON (`is_impossible` → no answer)."""
    for i, article in enumerate(json_document(path)["data"]):
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = _list(path, article.get("paragraphs") if isinstance(article, dict) else None, f"data[{i}]", "paragraphs")
        for j, para in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict) or "context" not in para:
                raise DataError(path, "missing", row=where, field="context")
            for k, qa in enumerate(_list(path, para.get("qas"), where, "qas")):
                if not isinstance(qa, dict):
                    raise DataError(path, "a question must be an object", row=f"{where}.qas[{k}]")
                answers = [] if qa.get("is_impossible") else qa.get("answers")
                rec = {"id": qa.get("id"), "title": title, "question": qa.get("question"), "context": para["context"], "answers": answers}
                yield f"{where}.qas[{k}] (id {qa.get('id')})", rec


def mrqa_records(path: Path, spec, skipped: Counter) -> Records:
    """MRQA 2019 shared-task JSONL: a header line, then one context per line with its `qas`.

    Every `detected_answers[].char_spans` entry ([start, end], end inclusive) must lie in the context
    and read the answer's text (up to case and white space); the span's own text becomes the answer,
    so the span labels are exact. MRQA has no unanswerable questions.
    """
    source = ""
    for n, rec in jsonl_lines(path):
        if "header" in rec:
            source = str((rec["header"] or {}).get("dataset", "")) if isinstance(rec["header"], dict) else ""
            continue
        context = rec.get("context")
        if not isinstance(context, str) or not context.strip():
            raise DataError(path, f"must be a non-empty string, got {context!r:.60}", row=n, field="context")
        for k, qa in enumerate(_list(path, rec.get("qas"), n, "qas")):
            if not isinstance(qa, dict):
                raise DataError(path, "a question must be an object", row=n, field=f"qas[{k}]")
            qid = qa.get("qid")
            where = f"{n} (qid {qid})"
            answers = []
            for a, det in enumerate(_list(path, qa.get("detected_answers"), where, f"qas[{k}].detected_answers")):
                field = f"qas[{k}].detected_answers[{a}]"
                text = det.get("text") if isinstance(det, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise DataError(path, f"answer text must be a non-empty string, got {text!r:.60}", row=where, field=f"{field}.text")
                for s, span in enumerate(_list(path, det.get("char_spans"), where, f"{field}.char_spans")):
                    f = f"{field}.char_spans[{s}]"
                    if not _int_pair(span) or not 0 <= span[0] <= span[1] < len(context):
                        raise DataError(path, f"{span!r:.40} is not a [start, end] pair inside the context ({len(context)} characters)", row=where, field=f)
                    piece = context[span[0] : span[1] + 1]
                    if _fold(piece) != _fold(text):
                        raise DataError(path, f"the context reads {piece!r:.60} at {span}, the answer is {text!r:.60}", row=where, field=f)
                    answers.append({"text": piece, "answer_start": span[0]})
            yield where, {"id": qid, "title": source, "question": qa.get("question"), "context": context, "answers": answers}


def quac_records(path: Path, spec, skipped: Counter) -> Records:
    """QuAC's official JSON: each dialogue turn a question over the section text.

    The trailing `CANNOTANSWER` is cut from the context, and a turn whose original answer is
    CANNOTANSWER has no answer ([CLS]); the original answer comes first, then the other annotators'
    (dev), CANNOTANSWER ones dropped. `history_turns: N` puts the dialogue's previous N turns after the
    question, most recent first, as "question answer" joined by " | " (max_query_length then cuts the
    oldest first); 0, the default, reads each question alone.
    """
    for i, dialog in enumerate(json_document(path)["data"]):
        title = dialog.get("title", "") if isinstance(dialog, dict) else ""
        section = dialog.get("section_title") if isinstance(dialog, dict) else None
        title = f"{title} / {section}" if section else title
        paragraphs = _list(path, dialog.get("paragraphs") if isinstance(dialog, dict) else None, f"data[{i}]", "paragraphs")
        for j, para in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{j}]"
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str):
                raise DataError(path, "missing", row=where, field="context")
            if context.rstrip().endswith(CANNOTANSWER):  # cut from the stripped text: white space may follow the token
                context = context.rstrip()[: -len(CANNOTANSWER)].rstrip()
            history: list[str] = []
            for k, qa in enumerate(_list(path, para.get("qas"), where, "qas")):
                here = f"{where}.qas[{k}] (id {qa.get('id') if isinstance(qa, dict) else None})"
                if not isinstance(qa, dict):
                    raise DataError(path, "a question must be an object", row=here)
                listed = _list(path, qa.get("answers", []), here, "answers")
                orig = qa.get("orig_answer") or (listed[0] if listed else None)
                if not isinstance(orig, dict) or not isinstance(orig.get("text"), str):
                    raise DataError(path, "needs an answer object with 'text' and 'answer_start'", row=here, field="orig_answer")
                answers = []
                if orig["text"] != CANNOTANSWER:
                    for a in [orig, *listed]:
                        if isinstance(a, dict) and a.get("text") != CANNOTANSWER and a not in answers:
                            answers.append(a)
                question = qa.get("question")
                turns = history[::-1][: spec.history_turns]
                shown = " | ".join([question] + turns) if turns and isinstance(question, str) else question
                yield here, {"id": qa.get("id"), "title": title, "question": shown, "context": context, "answers": answers}
                if isinstance(question, str):
                    history.append(f"{question} {'' if orig['text'] == CANNOTANSWER else orig['text']}".strip())


def qasrl_records(path: Path, spec, skipped: Counter) -> Records:
    """QA-SRL Bank 2.0 JSONL: per sentence, per verb, questions with annotators' answer judgments.

    The context is the sentence's tokens joined by spaces; answers are the distinct token spans
    ([start, end), end exclusive) of the valid judgments, first judgment first. A question some
    annotator judged invalid is skipped and counted (QA-SRL 2.0's filter for its evaluation).
    """
    for n, rec in jsonl_lines(path):
        sid = rec.get("sentenceId")
        tokens = _list(path, rec.get("sentenceTokens"), f"{n} (sentenceId {sid})", "sentenceTokens")
        if not tokens or not all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in tokens):
            raise DataError(path, "needs non-empty tokens without white space", row=f"{n} (sentenceId {sid})", field="sentenceTokens")
        starts, pos = [], 0
        for t in tokens:
            starts.append(pos)
            pos += len(t) + 1
        context = " ".join(tokens)
        verbs = rec.get("verbEntries")
        if not isinstance(verbs, dict):
            raise DataError(path, "missing or not an object", row=f"{n} (sentenceId {sid})", field="verbEntries")
        for v, entry in verbs.items():
            labels = entry.get("questionLabels") if isinstance(entry, dict) else None
            if not isinstance(labels, dict):
                raise DataError(path, "missing or not an object", row=f"{n} (sentenceId {sid})", field=f"verbEntries.{v}.questionLabels")
            for q, label in labels.items():
                field = f"verbEntries.{v}.questionLabels.{q}"
                where = f"{n} (sentenceId {sid})"
                judgments = _list(path, label.get("answerJudgments") if isinstance(label, dict) else None, where, f"{field}.answerJudgments")
                if not judgments or not all(isinstance(j, dict) and j.get("isValid") is True for j in judgments):
                    skipped["QA-SRL question judged invalid"] += 1
                    continue
                answers, seen = [], set()
                for a, judgment in enumerate(judgments):
                    for s, span in enumerate(_list(path, judgment.get("spans"), where, f"{field}.answerJudgments[{a}].spans")):
                        if not _int_pair(span) or not 0 <= span[0] < span[1] <= len(tokens):
                            raise DataError(path, f"{span!r:.40} is not a token span [start, end) of the sentence's {len(tokens)} tokens",
                                            row=where, field=f"{field}.answerJudgments[{a}].spans[{s}]")
                        if tuple(span) not in seen:
                            seen.add(tuple(span))
                            answers.append({"text": " ".join(tokens[span[0] : span[1]]), "answer_start": starts[span[0]]})
                question = label.get("questionString", q)
                yield where, {"id": f"{sid}/{entry.get('verbIndex', v)}/{question}", "title": str(sid).split(":")[0],
                              "question": question, "context": context, "answers": answers}


def qazre_records(path: Path, spec, skipped: Counter) -> Records:
    """QA-ZRE (Levy et al., 2017) TSV without a header: relation, question template with XXX, entity,
    sentence, then the answers (none: no answer). Each answer is placed at its first occurrence in the
    sentence; one that does not occur is an error."""
    csv.field_size_limit(sys.maxsize)
    with open_text(path) as fh:
        for n, values in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not values or values == [""]:
                continue
            if len(values) < 4:
                raise DataError(path, f"{len(values)} fields: needs relation, question template, entity, sentence[, answers]", row=n)
            relation, template, entity, sentence, *answers = values
            if "XXX" not in template:
                raise DataError(path, f"the question template has no XXX for the entity: {template!r:.60}", row=n, field="question template")
            found = []
            for a, text in enumerate(t for t in answers if t.strip()):
                start = sentence.find(text)
                if start < 0:
                    raise DataError(path, f"answer {text!r:.60} does not occur in the sentence", row=n, field=f"answers[{a}]")
                found.append({"text": text, "answer_start": start})
            yield n, {"id": f"{Path(path).name}:{n}", "title": relation, "question": template.replace("XXX", entity),
                      "context": sentence, "answers": found}


# ---------------------------------------------------------------------------- Amazon reviews


def _rating(path, where, value, field, rating: str, skipped: Counter) -> str | None:
    """A 1-5 star rating → its label name under `rating` (five_way: "1".."5"; polarity: 1-2 negative,
    4-5 positive, 3 skipped and counted)."""
    try:
        stars = float(value)
    except (TypeError, ValueError):
        stars = None
    if stars is None or stars != int(stars) or not 1 <= stars <= 5:
        raise DataError(path, f"a star rating must be 1-5, got {value!r:.20}", row=where, field=field)
    stars = int(stars)
    if rating == "five_way":
        return str(stars)
    if stars == 3:
        skipped["3-star review (rating: polarity)"] += 1
        return None
    return "negative" if stars < 3 else "positive"


def amazon_jsonl_records(path: Path, spec, skipped: Counter) -> Records:
    """Amazon reviews as JSON lines (McAuley et al.'s 2014 / 2018 dumps): `reviewText`, `overall`;
    ids are line numbers (those dumps repeat reviews). A review without text is skipped and counted."""
    for n, rec in jsonl_lines(path):
        text = rec.get("reviewText")
        if text is None or (isinstance(text, str) and not text.strip()):
            skipped["review without text"] += 1
            continue
        label = _rating(path, n, rec.get("overall"), "overall", spec.rating, skipped)
        if label is not None:
            yield n, {"id": f"line{n}", "text_a": text, "text_b": None, "label": label}


def amazon_tsv_records(path: Path, spec, skipped: Counter) -> Records:
    """The Amazon Customer Reviews dataset's TSV (header row; `review_id`, `star_rating`, `review_body`)."""
    for n, rec in delimited_rows(path, "\t", required=("review_id", "star_rating", "review_body")):
        if not rec["review_body"].strip():
            skipped["review without text"] += 1
            continue
        label = _rating(path, n, rec["star_rating"], "star_rating", spec.rating, skipped)
        if label is not None:
            yield n, {"id": rec["review_id"], "text_a": rec["review_body"], "text_b": None, "label": label}


# A layout's reader, by format name (tasks.FORMATS marks these formats `fixed`: their columns are theirs).
LAYOUTS: dict[str, Callable[[Path, object, Counter], Records]] = {
    "squad_json": squad_records,
    "mrqa_jsonl": mrqa_records,
    "quac_json": quac_records,
    "qasrl_jsonl": qasrl_records,
    "qazre_tsv": qazre_records,
    "amazon_jsonl": amazon_jsonl_records,
    "amazon_tsv": amazon_tsv_records,
}
