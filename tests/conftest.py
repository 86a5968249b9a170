"""Shared test fixtures: a tiny random sentence-transformers bi-encoder, a small synthetic BEIR collection, the
tiny corpus of tests/data/tiny with a hybrid (BM25 + dense) index over it, and a tiny random cross-encoder."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType
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

    from searchkit.models.tiny import tiny_bert_parts

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


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the `searchkit` command line in-process: (exit code, stdout, stderr)."""
    from searchkit.cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
    from searchkit.models.tiny import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("rerank") / "tiny-ce", words=tiny_words)


# ---------------------------------------------------------------------- documents with metadata (updates, filters)
LANGS = ["en", "fr", "de"]


def synthetic_documents(count: int = 30, *, start: int = 0, seed: int = 0) -> list[Any]:
    """``count`` Documents made of the synthetic collection's words (ids ``s<start>``...), with metadata: ``year``
    (a number, 2000-2009) and ``lang`` (en, fr or de), each missing from some documents."""
    import random

    from searchkit.types import Document

    rng = random.Random(seed)
    docs = []
    for i in range(start, start + count):
        metadata: dict[str, Any] = {}
        if rng.random() < 0.9:
            metadata["year"] = 2000 + rng.randrange(10)
        if rng.random() < 0.9:
            metadata["lang"] = rng.choice(LANGS)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 7)))
        docs.append(Document(f"s{i}", f"notes on {words}", title=rng.choice(WORDS), metadata=metadata or None))
    return docs


@pytest.fixture(scope="session")
def tiny_encoder_config(tiny_bi_encoder: Path) -> Any:
    """DenseConfig of the tiny random bi-encoder, fp32 on the CPU: fast and batch-independent dense scores."""
    from searchkit.config import DenseConfig

    return DenseConfig(model=str(tiny_bi_encoder), device="cpu", dtype="fp32", batch_size=16)


@pytest.fixture(scope="session")
def filtered_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_config: Any) -> Any:
    """A BM25 + dense (tiny bi-encoder) Index of 60 synthetic documents with ``year:number`` and ``lang`` filter
    columns, built once a session: read it, never modify it."""
    from searchkit.config import FilterConfig
    from searchkit.index import Index

    return Index.build(
        synthetic_documents(60),
        tmp_path_factory.mktemp("filtered") / "index",
        dense=tiny_encoder_config,
        filters=FilterConfig(["year:number", "lang"]),
    )


# ---------------------------------------------------------------------- a real HTTP server (searchkit serve)
@pytest.fixture
def serve_app() -> Any:
    """Start ASGI apps under a real uvicorn server in a background thread on a free loopback port; returns a
    function ``start(app) -> base URL``. Every server is stopped (requests in flight finish) at teardown."""
    import threading
    import time

    import uvicorn
    from loadgen import free_port

    running: list[tuple[Any, threading.Thread]] = []

    def start(app: Any) -> str:
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(30)


# ---------------------------------------------------------------------- Chinese, through the server (issue 22)
ZH_CATEGORIES = {
    "z1": "医疗",
    "z2": "医疗",
    "z3": "能源",
    "z4": "数码",
    "z5": "数码",
    "z6": "金融",
    "z7": "数码",
    "z8": "能源",
}


@pytest.fixture(scope="session")
def zh_serve_index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny Chinese corpus (tests/data/zh) with a Chinese ``category`` per document (a filter column), BM25 over
    jieba words and over CJK bigrams (fused: hybrid), built once a session: read it, never modify it."""
    from searchkit.config import BM25Config, FilterConfig
    from searchkit.formats import read_corpus
    from searchkit.index import Index

    folder = Path(__file__).parent / "data" / "zh"
    docs = [doc._replace(metadata={"category": ZH_CATEGORIES[doc.doc_id]}) for doc in read_corpus(folder)]
    return Index.build(
        docs,
        tmp_path_factory.mktemp("zh-serve") / "index",
        bm25=[BM25Config(analyzer="zh"), BM25Config(analyzer="cjk-bigram")],
        filters=FilterConfig(["category"]),
    )


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module (the bench folder is no package), registered in sys.modules (its dataclasses look
    their module up). A bench script pins thread counts in os.environ for its own process (NUMBA_NUM_THREADS=1 ...);
    the test process keeps its own environment, or numba refuses to start a second thread pool later (ranx)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = dict(os.environ)
    try:
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


def tiny_dense_train_config(folder: Path, base: Path, corpus: Path, name: str, **changes: Any) -> Any:
    """The bi-encoder trainer's recipe at test size over ``folder/index`` (shared by the dense, LoRA and merge tests):
    output ``folder/name``, ``changes`` replace any field."""
    from searchkit.config import DenseTrainConfig

    return DenseTrainConfig(
        **{
            "output": str(folder / name),
            "corpus": str(corpus),
            "index": str(folder / "index"),
            "base_model": str(base),
            "max_length": 32,
            "dev_max_length": 32,
            "mine_mode": "bm25",
            "mine_depth": 8,
            "skip_top": 1,
            "hard_negatives": 2,
            "batch_size": 4,
            "epochs": 2,
            "lr": 1e-3,
            "dev_queries": 6,
            "dev_depth": 10,
            "precision": "fp32",
            "device": "cpu",
            "seed": 7,
            "log_every": 1,
            **changes,
        }
    )
