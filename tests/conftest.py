"""Shared test fixtures: a tiny random sentence-transformers bi-encoder, a small synthetic BEIR collection, the
tiny corpus of tests/data/tiny with a hybrid (BM25 + dense) index over it, and a tiny random cross-encoder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

# A small synthetic collection: every document names two of these words, every query asks about one.
WORDS = [
    "apple", "banana", "cherry", "delta", "echo", "falcon", "granite", "harbor", "igloo", "jungle",
    "kettle", "lantern", "meadow", "nectar", "orbit", "pepper", "quartz", "river", "saddle", "tundra",
    "umbrella", "violet", "walnut", "xenon", "yonder", "zephyr", "anchor", "basil", "canyon", "dune",
]  # fmt: skip


def make_tiny_sentence_transformer(folder: str | Path, *, words: list[str], seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT bi-encoder (mean pooling, normalised) to ``folder``.

    For tests of the plumbing: its embeddings mean nothing until trained.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    from searchkit.rerank import tiny_bert_parts

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models

    folder = Path(folder)
    raw = folder.parent / f"{folder.name}-bert"
    tokenizer, config = tiny_bert_parts(raw, words)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = models.Pooling(dim(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    model.save(str(folder), create_model_card=False)
    return folder


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random sentence-transformers model folder whose vocabulary holds the synthetic collection's words."""
    folder = tmp_path_factory.mktemp("bi-encoder") / "model"
    return make_tiny_sentence_transformer(folder, words=[*WORDS, "about", "notes", "on", "and", "the"])


@pytest.fixture(scope="session")
def synthetic_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR folder: 30 documents, 30 queries with train qrels (query i: document i, and i + 1 for every
    fifth query: several positives), plus a test split that training must never read."""
    return write_synthetic_beir(tmp_path_factory.mktemp("synthetic-beir"))


def write_synthetic_beir(folder: Path) -> Path:
    """Write the synthetic BEIR collection (see ``synthetic_beir``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(WORDS)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for i, word in enumerate(WORDS):
            record = {"_id": f"d{i}", "title": word, "text": f"notes on {word} and {WORDS[(i + 7) % n]}"}
            handle.write(json.dumps(record) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for i, word in enumerate(WORDS):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"about {word}"}) + "\n")
        handle.write(json.dumps({"_id": "t0", "text": "about the test"}) + "\n")
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"]
    for i in range(n):
        lines.append(f"q{i}\td{i}\t1")
        if i % 5 == 0:
            lines.append(f"q{i}\td{(i + 1) % n}\t1")
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt0\td0\t1\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------- the tiny corpus (tests/data/tiny)
TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="session")
def tiny_words() -> list[str]:
    """Every lower-case word of the tiny corpus and its queries (the vocabulary of the tiny cross-encoder)."""
    text = (TINY / "corpus.jsonl").read_text(encoding="utf-8") + (TINY / "queries.jsonl").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


@pytest.fixture(scope="session")
def tiny_dense_config() -> Any:
    """DenseConfig of the embedded all-MiniLM-L6-v2 on the CPU in batches of 4 (what test_dense/test_index use)."""
    from searchkit.config import DenseConfig

    return DenseConfig(device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def tiny_hybrid_index(tmp_path_factory: pytest.TempPathFactory, tiny_dense_config: Any) -> Any:
    """A BM25 + dense Index of the tiny corpus, built once a session: read it, never modify it."""
    from searchkit.index import Index

    return Index.build(TINY, tmp_path_factory.mktemp("hybrid") / "tiny", dense=tiny_dense_config)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory, tiny_words: list[str]) -> Path:
    """Folder of a randomly initialised 2-layer BERT cross-encoder that knows the tiny corpus's words."""
    from searchkit.rerank import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("rerank") / "tiny-ce", words=tiny_words)
