"""Readers for ROaD's corpora in their published layouts: quirks, bad rows, and span round-trips."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import write_jsonl, write_recipe

from road_ds.errors import DataError
from road_ds.features import build_features
from road_ds.readers import read_split
from road_ds.recipe import load_recipe, parse_recipe

CTX = "Paris is the capital of France. It was founded by the Parisii in the third century."


def spec(tmp_path, **d):
    d.setdefault("name", "ds")
    return parse_recipe({"model": {"name_or_path": "m"}, "datasets": [d]}, tmp_path / "r.yaml").datasets[0]


def read(tmp_path, fmt, path, task="extractive_qa", **d):
    return read_split(spec(tmp_path, task=task, format=fmt, files={"train": str(path)}, **d), "train")


def span_rate(tmp_path, tokenizer_dir, fmt, path, **d) -> dict:
    """Build features on a file and return the span round-trip figures from the features' meta."""
    recipe = write_recipe(tmp_path / "rt.yaml", tokenizer_dir, [{"name": "ds", "task": "extractive_qa", "format": fmt,
                                                                  "files": {"train": str(path)}, **d}],
                          max_seq_length=48, doc_stride=16, max_query_length=12)
    return build_features(load_recipe(recipe), "ds", "train").meta


# ---------------------------------------------------------------------------- MRQA


def mrqa_line(cid, context, qas):
    return {"id": cid, "context": context, "context_tokens": [], "qas": qas}


def mrqa_qa(qid, question, text, spans):
    return {"qid": qid, "question": question, "question_tokens": [], "answers": [text],
            "detected_answers": [{"text": text, "char_spans": spans, "token_spans": []}]}


def mrqa_file(tmp_path, lines, name="TriviaQA-web.jsonl.gz"):
    p = tmp_path / name
    body = json.dumps({"header": {"dataset": "TriviaQA", "split": "train"}}) + "\n" + "".join(json.dumps(x) + "\n" for x in lines)
    p.write_bytes(gzip.compress(body.encode()))
    return p


def test_mrqa_gzip_header_and_inclusive_char_spans(tmp_path):
    s = CTX.index("the Parisii")
    p = mrqa_file(tmp_path, [mrqa_line("c1", CTX, [
        mrqa_qa("q1", "Who founded it?", "The Parisii", [[s, s + len("the Parisii") - 1]]),  # case differs: the span's text is kept
        mrqa_qa("q2", "Capital of?", "France", [[CTX.index("France"), CTX.index("France") + 5]]),
    ])])
    rows = read(tmp_path, "mrqa_jsonl", p).table.to_list()
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["answers"] == {"text": ["the Parisii"], "answer_start": [s]}
    assert rows[0]["title"] == "TriviaQA" and rows[1]["answers"]["text"] == ["France"]


def test_mrqa_bad_span_names_file_line_qid_and_field(tmp_path):
    p = mrqa_file(tmp_path, [mrqa_line("c1", CTX, [mrqa_qa("q1", "Capital of?", "France", [[0, 4]])])])
    with pytest.raises(DataError) as e:
        read(tmp_path, "mrqa_jsonl", p)
    msg = str(e.value)
    assert "TriviaQA-web.jsonl.gz" in msg and "row 2 (qid q1)" in msg and "qas[0].detected_answers[0].char_spans[0]" in msg
    assert "'Paris'" in msg
    p = mrqa_file(tmp_path, [mrqa_line("c1", CTX, [mrqa_qa("q1", "Capital of?", "France", [[80, 900]])])])
    with pytest.raises(DataError, match="inside the context"):
        read(tmp_path, "mrqa_jsonl", p)


def test_mrqa_span_labels_round_trip(tmp_path, tiny_tokenizer_dir, cache_dir):
    lines = []
    for n in range(30):
        ctx = f"In year {n} the city of Paris {n} was large. " * 3 + f"The river {n} was built by the king of France."
        s = ctx.index("the king of France")
        lines.append(mrqa_line(f"c{n}", ctx, [mrqa_qa(f"q{n}", f"Who built river {n}?", "the king of France", [[s, s + 17]])]))
    meta = span_rate(tmp_path, tiny_tokenizer_dir, "mrqa_jsonl", mrqa_file(tmp_path, lines))
    assert meta["span_roundtrip"]["answerable"] == 30 and meta["span_roundtrip"]["roundtrip_rate"] >= 0.99


# ---------------------------------------------------------------------------- QuAC


def quac_file(tmp_path, qas, context=CTX + " CANNOTANSWER"):
    p = tmp_path / "train_v0.2.json"
    p.write_text(json.dumps({"data": [{"title": "Paris", "section_title": "History", "background": "A city.",
                                       "paragraphs": [{"id": "p1", "context": context, "qas": qas}]}]}))
    return p


def quac_qa(qid, question, text, start, others=()):
    orig = {"text": text, "answer_start": start}
    return {"id": qid, "question": question, "followup": "y", "yesno": "x", "orig_answer": orig,
            "answers": [orig, *[{"text": t, "answer_start": s} for t, s in others]]}


def test_quac_cannotanswer_and_context(tmp_path):
    no = len(CTX) + 1
    p = quac_file(tmp_path, [
        quac_qa("t0", "What is Paris?", "the capital of France", CTX.index("the capital"), [("capital of France", CTX.index("capital of"))]),
        quac_qa("t1", "Anything else?", "CANNOTANSWER", no, [("the Parisii", CTX.index("the Parisii"))]),
        quac_qa("t2", "Who founded it?", "the Parisii", CTX.index("the Parisii"), [("CANNOTANSWER", no)]),
    ])
    rows = read(tmp_path, "quac_json", p).table.to_list()
    assert all(r["context"] == CTX for r in rows)  # CANNOTANSWER is cut: it cannot be predicted as a span
    assert rows[0]["answers"]["text"] == ["the capital of France", "capital of France"]  # the original answer first
    assert rows[1]["answers"]["text"] == []  # the original answer is CANNOTANSWER: no answer
    assert rows[2]["answers"]["text"] == ["the Parisii"]  # a CANNOTANSWER among the other annotators' is dropped
    assert rows[0]["title"] == "Paris / History" and rows[2]["question"] == "Who founded it?"


def test_quac_history_turns(tmp_path):
    no = len(CTX) + 1
    p = quac_file(tmp_path, [
        quac_qa("t0", "What is Paris?", "the capital of France", CTX.index("the capital")),
        quac_qa("t1", "Anything else?", "CANNOTANSWER", no),
        quac_qa("t2", "Who founded it?", "the Parisii", CTX.index("the Parisii")),
    ])
    rows = read(tmp_path, "quac_json", p, history_turns=2).table.to_list()
    assert rows[0]["question"] == "What is Paris?"
    assert rows[2]["question"] == "Who founded it? | Anything else? | What is Paris? the capital of France"
    with pytest.raises(DataError, match="history_turns") as e:
        spec(tmp_path, task="extractive_qa", format="squad_json", files={"train": "x"}, history_turns=1)
    assert e.value.field == "datasets.0.history_turns"


def test_quac_bad_answer_start_names_the_turn(tmp_path):
    p = quac_file(tmp_path, [quac_qa("t0", "Who founded it?", "the Parisii", 3)])
    with pytest.raises(DataError) as e:
        read(tmp_path, "quac_json", p)
    assert "data[0].paragraphs[0].qas[0] (id t0)" in str(e.value) and e.value.field == "answers[0].answer_start"


def test_quac_span_labels_round_trip(tmp_path, tiny_tokenizer_dir, cache_dir):
    qas = [quac_qa(f"t{n}", f"Who {n}?", "the Parisii", CTX.index("the Parisii")) for n in range(10)]
    qas += [quac_qa("tn", "Why?", "CANNOTANSWER", len(CTX) + 1)]
    meta = span_rate(tmp_path, tiny_tokenizer_dir, "quac_json", quac_file(tmp_path, qas), history_turns=1)
    assert meta["span_roundtrip"]["answerable"] == 10 and meta["span_roundtrip"]["roundtrip_rate"] >= 0.99


# ---------------------------------------------------------------------------- QA-SRL


TOKENS = "The king built the first university in Paris in 1150 .".split()


def qasrl_line(sid, questions, tokens=TOKENS):
    labels = {q: {"questionString": q, "questionSources": ["turk-1"], "answerJudgments": j, "questionSlots": {}} for q, j in questions.items()}
    return {"sentenceId": sid, "sentenceTokens": tokens, "verbEntries": {"2": {"verbIndex": 2, "verbInflectedForms": {}, "questionLabels": labels}}}


def ok(*spans):
    return {"sourceId": "turk-2", "isValid": True, "spans": [list(s) for s in spans]}


def test_qasrl_token_spans_and_invalid_questions(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [qasrl_line("wiki:1:0", {
        "Who built something?": [ok((0, 2)), ok((0, 2)), ok((1, 2))],
        "What did someone build?": [ok((3, 6))],
        "Where did someone build?": [ok((7, 8)), {"sourceId": "turk-3", "isValid": False, "spans": []}],
    })])
    ex = read(tmp_path, "qasrl_jsonl", p)
    rows = ex.table.to_list()
    assert [r["question"] for r in rows] == ["Who built something?", "What did someone build?"]
    assert rows[0]["context"] == " ".join(TOKENS)
    assert rows[0]["answers"]["text"] == ["The king", "king"]  # distinct spans, first judgment first
    assert rows[1]["answers"] == {"text": ["the first university"], "answer_start": [len("The king built ")]}
    assert rows[0]["id"] == "wiki:1:0/2/Who built something?"
    assert ex.skipped == {"QA-SRL question judged invalid": 1}


def test_qasrl_bad_span_names_sentence_and_field(tmp_path):
    p = write_jsonl(tmp_path / "dev.jsonl", [qasrl_line("wiki:1:0", {"Who built something?": [ok((5, 40))]})])
    with pytest.raises(DataError) as e:
        read(tmp_path, "qasrl_jsonl", p)
    assert "row 1 (sentenceId wiki:1:0)" in str(e.value)
    assert e.value.field == "verbEntries.2.questionLabels.Who built something?.answerJudgments[0].spans[0]"


def test_qasrl_span_labels_round_trip_and_skipped_in_meta(tmp_path, tiny_tokenizer_dir, cache_dir):
    lines = [qasrl_line(f"wiki:{n}:0", {"What did someone build?": [ok((3, 6))], "Who built something?": [ok((0, 2))],
                                        "When?": [{"sourceId": "x", "isValid": False, "spans": []}]}) for n in range(10)]
    meta = span_rate(tmp_path, tiny_tokenizer_dir, "qasrl_jsonl", write_jsonl(tmp_path / "train.jsonl", lines))
    assert meta["span_roundtrip"]["answerable"] == 20 and meta["span_roundtrip"]["roundtrip_rate"] >= 0.99
    assert meta["skipped"] == {"QA-SRL question judged invalid": 10}


# ---------------------------------------------------------------------------- QA-ZRE


def test_qazre_templates_answers_and_negatives(tmp_path):
    p = tmp_path / "train.0"
    p.write_text(
        "capital of\tWhat is XXX the capital of?\tParis\tParis is the capital of France .\tFrance\n"
        "founded by\tWho founded XXX?\tParis\tParis was founded by the Parisii .\n"  # a negative: no answer
        "located in\tWhere is XXX?\tParis\tParis lies on the Seine in France .\tthe Seine\tFrance\n"
    )
    rows = read(tmp_path, "qazre_tsv", p).table.to_list()
    assert rows[0]["question"] == "What is Paris the capital of?" and rows[0]["answers"]["text"] == ["France"]
    assert rows[1]["answers"]["text"] == [] and rows[1]["title"] == "founded by"
    sentence = "Paris lies on the Seine in France ."
    assert rows[2]["answers"] == {"text": ["the Seine", "France"], "answer_start": [sentence.index("the Seine"), sentence.index("France")]}
    assert [r["id"] for r in rows] == ["train.0:1", "train.0:2", "train.0:3"]


def test_qazre_bad_rows(tmp_path):
    p = tmp_path / "dev.0"
    p.write_text("capital of\tWhat is XXX?\tParis\tParis is nice .\tRome\n")
    with pytest.raises(DataError) as e:
        read(tmp_path, "qazre_tsv", p)
    assert "dev.0: row 1, field 'answers[0]'" in str(e.value)
    p.write_text("capital of\tWhat is XXX?\tParis\n")
    with pytest.raises(DataError, match="3 fields"):
        read(tmp_path, "qazre_tsv", p)
    p.write_text("capital of\tWhat is it?\tParis\tParis is nice .\n")
    with pytest.raises(DataError, match="no XXX"):
        read(tmp_path, "qazre_tsv", p)


def test_qazre_span_labels_round_trip(tmp_path, tiny_tokenizer_dir, cache_dir):
    p = tmp_path / "train.1"
    p.write_text("".join(f"capital of\tWhat is XXX the capital of?\tcity {n}\tcity {n} is the capital of France .\tFrance\n" for n in range(20)))
    meta = span_rate(tmp_path, tiny_tokenizer_dir, "qazre_tsv", p)
    assert meta["span_roundtrip"]["answerable"] == 20 and meta["span_roundtrip"]["roundtrip_rate"] >= 0.99


# ---------------------------------------------------------------------------- SNLI


def test_snli_jsonl_drops_and_counts_dash_gold(tmp_path):
    rows = [
        {"annotator_labels": ["neutral"], "captionID": "c1", "gold_label": "neutral", "pairID": "p1", "sentence1": "A man.", "sentence2": "A person."},
        {"annotator_labels": ["neutral", "contradiction"], "captionID": "c1", "gold_label": "-", "pairID": "p2", "sentence1": "A man.", "sentence2": "A dog."},
        {"annotator_labels": ["entailment"], "captionID": "c2", "gold_label": "entailment", "pairID": "p3", "sentence1": "A cat.", "sentence2": "An animal."},
    ]
    ex = read(tmp_path, "snli_jsonl", write_jsonl(tmp_path / "snli_1.0_train.jsonl", rows), task="nli")
    assert [(r["id"], r["label"]) for r in ex.table.to_list()] == [("p1", 1), ("p3", 0)]
    assert ex.skipped == {"gold label '-'": 1}
    with pytest.raises(DataError) as e:
        read(tmp_path, "snli_jsonl", write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "gold_label": "maybe"}]), task="nli")
    assert e.value.row == 1 and e.value.field == "gold_label"


# ---------------------------------------------------------------------------- Amazon reviews


REVIEWS = [(5.0, "Great blender."), (1.0, "Broke in a week."), (3.0, "It is fine."), (4.0, "Good value."), (2.0, "Too loud.")]


def amazon_jsonl(tmp_path):
    rows = [{"reviewerID": "A1", "asin": "B1", "overall": stars, "reviewText": text, "summary": "s"} for stars, text in REVIEWS]
    rows.append({"reviewerID": "A2", "asin": "B2", "overall": 4.0, "summary": "no text"})  # the dumps have such rows
    return write_jsonl(tmp_path / "Appliances.json", rows)


def amazon_tsv(tmp_path):
    header = "marketplace\tcustomer_id\treview_id\tproduct_id\tstar_rating\treview_headline\treview_body\n"
    body = "".join(f"US\t1\tR{n}\tP1\t{int(stars)}\th\t{text}\n" for n, (stars, text) in enumerate(REVIEWS))
    p = tmp_path / "amazon_reviews_us_Kitchen_v1_00.tsv"
    p.write_text(header + body)
    return p


@pytest.mark.parametrize("fmt", ["amazon_jsonl", "amazon_tsv"])
def test_amazon_five_way_and_polarity(tmp_path, fmt):
    path = amazon_jsonl(tmp_path) if fmt == "amazon_jsonl" else amazon_tsv(tmp_path)
    five = read(tmp_path, fmt, path, task="classification", head="rating", rating="five_way")
    assert five.spec.label_names == ["1", "2", "3", "4", "5"]
    assert [r["label"] for r in five.table.to_list()] == [4, 0, 2, 3, 1]
    polar = read(tmp_path, fmt, path, task="sentiment", rating="polarity")
    assert [(r["text_a"], r["label"]) for r in polar.table.to_list()] == [("Great blender.", 1), ("Broke in a week.", 0), ("Good value.", 1), ("Too loud.", 0)]
    assert polar.skipped.get("3-star review (rating: polarity)") == 1
    if fmt == "amazon_jsonl":
        assert polar.skipped["review without text"] == 1 and polar.table[0]["id"] == "line1"


def test_amazon_bad_rating_and_recipe_checks(tmp_path):
    p = write_jsonl(tmp_path / "r.json", [{"overall": 6.0, "reviewText": "x"}])
    with pytest.raises(DataError) as e:
        read(tmp_path, "amazon_jsonl", p, task="sentiment", rating="polarity")
    assert e.value.row == 1 and e.value.field == "overall"
    with pytest.raises(DataError, match="rating: five_way") as e:
        spec(tmp_path, task="sentiment", format="amazon_tsv", files={"train": "x"})
    assert e.value.field == "datasets.0.rating"
    with pytest.raises(DataError, match="star-rated") as e:
        spec(tmp_path, task="sentiment", format="jsonl", files={"train": "x"}, rating="polarity")
    with pytest.raises(DataError, match="come from `rating`"):
        spec(tmp_path, task="sentiment", format="amazon_tsv", files={"train": "x"}, rating="polarity", labels=["bad", "good"])
    with pytest.raises(DataError, match="published layout") as e:
        spec(tmp_path, task="extractive_qa", format="mrqa_jsonl", files={"train": "x"}, columns={"question": "q"})
    assert e.value.field == "datasets.0.columns"


def test_amazon_tsv_header_and_field_counts(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("review_id\treview_body\nR1\tfine\n")
    with pytest.raises(DataError, match="lacks star_rating"):
        read(tmp_path, "amazon_tsv", p, task="sentiment", rating="polarity")
    p.write_text("review_id\tstar_rating\treview_body\nR1\t5\n")
    with pytest.raises(DataError) as e:
        read(tmp_path, "amazon_tsv", p, task="sentiment", rating="polarity")
    assert e.value.row == 2


def test_rating_changes_the_feature_fingerprint(tmp_path, tiny_tokenizer_dir, cache_dir):
    path = amazon_tsv(tmp_path)
    fps = []
    for rating, task in (("five_way", "classification"), ("polarity", "sentiment")):
        recipe = write_recipe(tmp_path / f"{rating}.yaml", tiny_tokenizer_dir,
                              [{"name": "amazon", "task": task, "head": "rating", "format": "amazon_tsv", "files": {"train": str(path)}, "rating": rating}],
                              max_seq_length=32)
        ft = build_features(load_recipe(recipe), "amazon", "train")
        fps.append(ft.fingerprint)
        if rating == "polarity":
            assert ft.meta["skipped"] == {"3-star review (rating: polarity)": 1} and ft.meta["examples"] == 4
    assert fps[0] != fps[1]
