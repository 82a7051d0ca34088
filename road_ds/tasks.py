"""The registry of task types and input formats.

A task *type* decides the head kind and the default head name: every dataset of one type
shares that head (ROaD: one span head for all reading-comprehension sets, one NLI head, ...).
A *format* decides how files are read and which columns it brings by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskType:
    name: str
    kind: str  # "span" (extractive QA) or "classification"
    default_head: str
    pair: bool | None = None  # True: needs text_b; False: single text; None: either
    default_labels: tuple[str, ...] | None = None


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in [
        # SQuAD 1.1 / 2.0: start and end over the tokens; no answer is [CLS] (index 0).
        TaskType("extractive_qa", "span", "span"),
        TaskType("nli", "classification", "nli", pair=True, default_labels=("entailment", "neutral", "contradiction")),
        TaskType("paraphrase", "classification", "paraphrase", pair=True, default_labels=("not_duplicate", "duplicate")),
        TaskType("sentiment", "classification", "sentiment", pair=False, default_labels=("negative", "positive")),
        # Any other label set, one text or a pair; give it its own head name in the recipe.
        TaskType("classification", "classification", "classification"),
    ]
}

# Canonical fields a reader produces, per head kind.
SPAN_FIELDS = ("id", "title", "question", "context", "answers")
CLASSIFICATION_FIELDS = ("id", "text_a", "text_b", "label")


@dataclass(frozen=True)
class Format:
    name: str
    kinds: tuple[str, ...]
    columns: dict = field(default_factory=dict)  # canonical field -> column, preset
    labels: tuple[str, ...] | None = None
    label_map: dict = field(default_factory=dict)
    delimiter: str | None = None  # for csv/tsv-like formats
    quoting: bool = True  # GLUE TSVs are unquoted
    fixed: bool = False  # a published layout read by road_ds/corpora.py: its columns are its own
    rated: bool = False  # star ratings: the recipe's `rating` (five_way | polarity) decides the labels
    drop_labels: tuple[str, ...] = ()  # gold labels that mean "no label" (SNLI's '-'): dropped and counted


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("squad_json", ("span",)),
        # ROaD's reading-comprehension sets, each in its published layout (road_ds/corpora.py)
        Format("mrqa_jsonl", ("span",), fixed=True),  # TriviaQA, NaturalQuestions, NewsQA, SearchQA, HotpotQA, SQuAD
        Format("quac_json", ("span",), fixed=True),
        Format("qasrl_jsonl", ("span",), fixed=True),
        Format("qazre_tsv", ("span",), fixed=True),
        Format("qa_jsonl", ("span",)),
        Format("jsonl", ("span", "classification")),
        Format("csv", ("classification",), delimiter=","),
        Format("tsv", ("classification",), delimiter="\t"),
        Format("parquet", ("span", "classification")),
        Format("hf_disk", ("span", "classification")),
        Format("hub", ("span", "classification")),
        Format(
            "glue_mnli", ("classification",), delimiter="\t", quoting=False,
            columns={"id": "pairID", "text_a": "sentence1", "text_b": "sentence2", "label": "gold_label"},
            labels=("entailment", "neutral", "contradiction"),
        ),
        Format(
            "glue_qqp", ("classification",), delimiter="\t", quoting=False,
            columns={"id": "id", "text_a": "question1", "text_b": "question2", "label": "is_duplicate"},
            labels=("not_duplicate", "duplicate"), label_map={"0": "not_duplicate", "1": "duplicate"},
        ),
        Format(
            "glue_sst2", ("classification",), delimiter="\t", quoting=False,
            columns={"text_a": "sentence", "label": "label"},
            labels=("negative", "positive"), label_map={"0": "negative", "1": "positive"},
        ),
        Format(  # SNLI 1.0 and MultiNLI 1.0 as published (.jsonl): gold '-' means the annotators did not agree
            "snli_jsonl", ("classification",),
            columns={"id": "pairID", "text_a": "sentence1", "text_b": "sentence2", "label": "gold_label"},
            labels=("entailment", "neutral", "contradiction"), drop_labels=("-",),
        ),
        Format("amazon_jsonl", ("classification",), fixed=True, rated=True),
        Format("amazon_tsv", ("classification",), fixed=True, rated=True),
    ]
}
