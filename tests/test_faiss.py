"""Big-index FAISS: every factory a large corpus needs builds, trains on a sample and searches with recall against
numpy brute force above a stated floor; bad factories and too-small samples are one-line ConfigErrors; memory-mapped
loading returns what an in-memory load returns; another factory reuses the stored embeddings (API and CLI); GPU
placement (one GPU, shards over several) is decided by a pure function and exercised on the CPU with a stand-in
faiss; bench/faiss_big.py runs end to end at a tiny size."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import load_bench

from searchkit.config import DenseConfig
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.faiss_index import (
    FaissPlacement,
    apply_search_params,
    build_faiss_index,
    faiss_placement,
    mmap_supported,
    place_index,
    read_faiss_index,
)
from searchkit.types import ConfigError

faiss = pytest.importorskip("faiss")

REPO = Path(__file__).resolve().parents[1]
N, DIM, QUERIES, K = 3000, 32, 100, 10

# factory -> recall@10 floor against numpy brute force (nprobe 8 of 32 lists, efSearch 64) on N clustered unit
# vectors of DIM dimensions; faiss 1.15 measured (one thread) 1.0, 0.916, 0.916, 0.976, 0.976, 0.956, 0.917, 0.703,
# 0.518, 0.691, 0.325: each floor is about 0.1 under, so a floor fails on a regression, not on noise
FACTORIES = {
    "Flat": 1.0,
    "HNSW32": 0.8,
    "HNSW32,Flat": 0.8,
    "IVF32,Flat": 0.88,
    "IVF32_HNSW32,Flat": 0.88,
    "IVF32,SQ8": 0.85,
    "HNSW32,SQ8": 0.8,
    "IVF32,PQ8": 0.6,  # 8 bytes a vector
    "IVF32,PQ16x4fs": 0.42,  # 4-bit fast-scan codes: 8 bytes a vector
    "OPQ8,IVF32,PQ8": 0.6,
    "OPQ8_16,IVF32,PQ8": 0.22,  # OPQ reducing to 16 dimensions first
}
SEARCH = {"nprobe": 8, "ef_search": 64}


@pytest.fixture(autouse=True)
def one_faiss_thread() -> Any:
    """faiss on one thread: OpenMP's spinning threads make small trainings ~10x slower on busy shared cores."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, dim: int, seed: int, clusters: int = 30) -> np.ndarray:
    """Unit vectors around ``clusters`` Gaussian centres: the shape of real embeddings, at test size."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored fp16 vectors as float32, queries, true top-10 rows by numpy brute force)."""
    x = clustered(N, DIM, 0).astype(np.float16).astype(np.float32)  # what the index stores and searches
    q = clustered(QUERIES, DIM, 1)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :K]
    return x, q, truth


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def ids(n: int) -> list[str]:
    return [f"d{i}" for i in range(n)]


def write_component(folder: Path, x: np.ndarray, factory: str) -> DenseRetriever:
    config = DenseConfig(model="synthetic", faiss_factory=factory, device="cpu", train_sample=N, **SEARCH)
    return DenseRetriever.from_embeddings(x, folder, config, ids(len(x)), model_info={"name": "synthetic"})


# ---------------------------------------------------------------- every factory, end to end


@pytest.mark.parametrize("factory", FACTORIES)
def test_factory_builds_loads_and_finds_the_true_neighbours(
    factory: str, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, q, truth = data
    dense = write_component(tmp_path, x, factory)
    rows = np.array([ranking.rows[:K] for ranking in dense.search_vector_rows(q, K)])
    got = recall(rows, truth)
    assert got >= FACTORIES[factory], f"{factory}: recall@10 {got:.3f} < floor {FACTORIES[factory]}"
    info = json.loads((tmp_path / "faiss.json").read_text(encoding="utf-8"))
    assert info["factory"] == factory and info["ntotal"] == N and info["metric"] == "inner_product"
    assert info["faiss_version"] == faiss.__version__ and info["train_rows"] in (0, N)
    assert dense.verify() == []
    # Flat is exact: the very rows of brute force
    if factory == "Flat":
        np.testing.assert_array_equal(rows, truth)


def test_search_parameters_reach_every_factory(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x = data[0][:1000]
    for factory, check in {
        "IVF16,PQ8": lambda index: faiss.extract_index_ivf(index).nprobe == 5,
        "OPQ8,IVF16,PQ8": lambda index: faiss.extract_index_ivf(index).nprobe == 5,
        "IVF16,PQ8x4fs": lambda index: faiss.extract_index_ivf(index).nprobe == 5,
        "HNSW16": lambda index: faiss.downcast_index(index).hnsw.efSearch == 33,
        "IVF16_HNSW16,Flat": lambda index: (
            faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch == 33
        ),
    }.items():
        index = build_faiss_index(x, factory, train_sample=1000)
        apply_search_params(index, nprobe=5, ef_search=33)
        assert check(index), factory


def test_training_uses_a_seeded_sample_and_skips_polysemous_training(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x = data[0]
    a = build_faiss_index(x, "IVF16,PQ8", train_sample=500, seed=3)
    b = build_faiss_index(x, "IVF16,PQ8", train_sample=500, seed=3)
    assert type(a).__name__ == "IndexIVFPQ" and not a.do_polysemous_training
    np.testing.assert_array_equal(faiss.vector_to_array(a.pq.centroids), faiss.vector_to_array(b.pq.centroids))
    c = build_faiss_index(x, "IVF16,PQ8", train_sample=500, seed=4)
    assert not np.array_equal(faiss.vector_to_array(a.pq.centroids), faiss.vector_to_array(c.pq.centroids))


# ---------------------------------------------------------------- errors: one line, what and how to fix


@pytest.mark.parametrize(
    ("factory", "n", "train_sample", "says"),
    [
        ("NoSuchIndex", 100, 100, "could not parse index string"),
        ("IVF16,PQ7", 100, 100, "PQ{m} needs m to divide the dimension"),
        ("HNSW32,PQ8", 100, 100, "with the L2 metric only"),  # faiss 1.15's HNSW-PQ ignores inner product
        ("IVF256,Flat", 100, 100, "IVF256 needs at least 256; use at most IVF2 for 100 vectors"),
        ("IVF16,PQ8", 200, 100_000, "PQ8x8 needs at least 256; use 'Flat' or 'HNSW32'"),
        ("OPQ8,IVF16,PQ8", 2000, 100, "raise DenseConfig.train_sample (now 100) to 2000"),
    ],
)
def test_bad_factories_and_small_samples_are_one_line_config_errors(
    factory: str, n: int, train_sample: int, says: str
) -> None:
    x = clustered(n, DIM, 5)
    with pytest.raises(ConfigError) as caught:
        build_faiss_index(x, factory, train_sample=train_sample)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_thin_sample_warns_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    x = clustered(2000, DIM, 6)
    with caplog.at_level(logging.WARNING, logger="searchkit.retrieval.dense"):
        build_faiss_index(x, "IVF32,Flat", train_sample=500)
    assert "raise DenseConfig.train_sample to 1248" in caplog.text


# ---------------------------------------------------------------- memory-mapped loading


@pytest.mark.parametrize(
    ("factory", "mapped"),
    [
        ("Flat", True),
        ("HNSW16", True),
        ("IVF16,Flat", True),
        ("IVF16,PQ8", True),
        ("OPQ8,IVF16,PQ8", True),
        ("IVF16_HNSW16,SQ8", True),
        ("IVF16,PQ16x4fs", False),  # faiss cannot map fast-scan lists: read into memory
    ],
)
def test_a_memory_mapped_load_returns_identical_results(
    factory: str, mapped: bool, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, q, _ = data
    dense = write_component(tmp_path, x[:1500], factory)
    path = tmp_path / "index.faiss"
    assert json.loads((tmp_path / "faiss.json").read_text(encoding="utf-8"))["mmap"] is mapped
    assert mmap_supported(read_faiss_index(path, mmap=False)) is mapped
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the file is mapped exactly when the type allows
        assert (str(path.resolve()) in maps.read_text(encoding="utf-8")) is mapped
    private = read_faiss_index(path, mmap=False)
    apply_search_params(private, **SEARCH)
    want_scores, want_rows = private.search(q, K)
    got_scores, got_rows = dense.index.search(q, K)
    np.testing.assert_array_equal(got_rows, want_rows)
    np.testing.assert_array_equal(got_scores, want_scores)
    # and through the retriever, with a filter (an ID selector over the mapped lists)
    allowed = np.zeros(len(dense.docids), dtype=bool)
    allowed[::3] = True
    for ranking in dense.search_vector_rows(q[:10], K, allowed=allowed):
        assert all(row % 3 == 0 for row in ranking.rows)


def test_an_update_of_a_mapped_index_writes_a_new_file(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A mapped index is read-only (faiss aborts on an add); rewrite reads a private copy and appends to it."""
    x = data[0][:1000]
    dense = write_component(tmp_path / "old", x, "IVF16,Flat")
    before = (tmp_path / "old" / "index.faiss").read_bytes()
    new = DenseRetriever.rewrite(dense, tmp_path / "new", np.arange(1000), [], ids(1000))
    assert (tmp_path / "old" / "index.faiss").read_bytes() == before
    assert new.index.ntotal == 1000
    assert [h[0].doc_id for h in new.search_vectors(x[:5], 1)] == ids(5)


def test_an_old_faiss_json_without_the_mmap_key_still_loads(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x = data[0][:500]
    write_component(tmp_path, x, "HNSW16")
    info = json.loads((tmp_path / "faiss.json").read_text(encoding="utf-8"))
    old = {key: info[key] for key in ("factory", "metric", "ntotal", "dim", "train_sample", "seed")}
    (tmp_path / "faiss.json").write_text(json.dumps(old), encoding="utf-8")
    config = DenseConfig(model="synthetic", faiss_factory="HNSW16", device="cpu")
    dense = DenseRetriever.load(tmp_path, config, ids(500))
    assert [h[0].doc_id for h in dense.search_vectors(x[:5], 1)] == ids(5)


# ---------------------------------------------------------------- another factory from the stored embeddings


@pytest.fixture(scope="module")
def big_docs_index(tmp_path_factory: pytest.TempPathFactory, tiny_bi_encoder: Path) -> Any:
    """A dense-only Index of 600 synthetic documents with the tiny bi-encoder (dimension 32), Flat."""
    from conftest import synthetic_documents

    from searchkit.index import Index

    config = DenseConfig(model=str(tiny_bi_encoder), device="cpu", dtype="fp32", batch_size=64)
    return Index.build(synthetic_documents(600), tmp_path_factory.mktemp("faiss") / "index", bm25=None, dense=config)


# recall@10 floors of the stored documents' own vectors as queries (the tiny encoder's 32 dimensions; nprobe 8 of 8)
REUSE_FLOORS = {"IVF8,PQ8": 0.45, "OPQ8,IVF8,PQ8": 0.45, "HNSW32": 0.9, "IVF8_HNSW16,Flat": 0.95, "IVF8,PQ16x4fs": 0.25}


@pytest.mark.parametrize("factory", REUSE_FLOORS)
def test_index_build_and_add_with_each_factory_reuse_the_embeddings(
    factory: str, big_docs_index: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from searchkit.index import Index

    target = tmp_path / "copy"
    shutil.copytree(big_docs_index.path, target)
    index = Index.open(target)
    config = dataclasses.replace(index.components["dense"], faiss_factory=factory, nprobe=8, train_sample=600)
    embeddings = (target / "dense" / "embeddings.npy").read_bytes()
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        updated = index.add(dense=config, overwrite=True)
    assert "reused the stored embeddings" in caplog.text and "encoding" not in caplog.text
    assert (target / "dense" / "embeddings.npy").read_bytes() == embeddings
    assert updated.components["dense"].faiss_factory == factory
    reopened = Index.open(target, verify=True)
    assert reopened.dense is not None
    stored = np.load(target / "dense" / "embeddings.npy").astype(np.float32)
    truth = np.argsort(-(stored[:50] @ stored.T), axis=1, kind="stable")[:, :10]
    rows = np.array([ranking.rows for ranking in reopened.dense.search_vector_rows(stored[:50], 10)])
    assert recall(rows, truth) >= REUSE_FLOORS[factory]
    # a fresh build with the factory gives the same FAISS answers as the reused embeddings
    fresh = Index.build(list(index.documents(index.row_ids)), tmp_path / "fresh", bm25=None, dense=config)
    assert fresh.dense is not None
    assert [h.doc_id for h in fresh.dense.search("notes on apple", 5)] == [
        h.doc_id for h in reopened.dense.search("notes on apple", 5)
    ]


def test_cli_index_add_faiss_reuses_the_embeddings(
    tmp_path: Path, tiny_bi_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import synthetic_documents

    from searchkit.cli.main import main
    from searchkit.index import Index

    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for doc in synthetic_documents(400):
            handle.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    target = tmp_path / "index"
    common = ["--dense", str(tiny_bi_encoder), "--device", "cpu"]
    main(["--no-progress", "index", "build", "--corpus", str(corpus), "-o", str(target), "--no-bm25", *common])
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        main(["--no-progress", "index", "add", str(target), *common, "--faiss", "IVF8,PQ8", "--overwrite"])
    assert "reused the stored embeddings" in caplog.text
    assert Index.open(target, verify=True).components["dense"].faiss_factory == "IVF8,PQ8"


# ---------------------------------------------------------------- GPUs: one, or shards over all


@pytest.mark.parametrize(
    ("device", "gpus", "want"),
    [
        ("cpu", 4, FaissPlacement((), False, "cpu")),
        ("auto", 0, FaissPlacement((), False, "cpu")),
        ("cuda", 0, FaissPlacement((), False, "cpu")),
        ("auto", 1, FaissPlacement((0,), False, "cuda:0")),
        ("cuda", 1, FaissPlacement((0,), False, "cuda:0")),
        ("auto", 8, FaissPlacement(tuple(range(8)), True, "cuda:0-7")),
        ("cuda", 2, FaissPlacement((0, 1), True, "cuda:0-1")),
        ("cuda:1", 2, FaissPlacement((1,), False, "cuda:1")),  # an explicit GPU is never sharded
        ("cuda:0", 1, FaissPlacement((0,), False, "cuda:0")),
    ],
)
def test_faiss_placement(device: str, gpus: int, want: FaissPlacement) -> None:
    assert faiss_placement(device, gpus) == want


class _FakeGpuIndex:
    """Stands in for a GPU index (the name is what searchkit looks at)."""

    def __init__(self, index: Any) -> None:
        self.ntotal, self.d = index.ntotal, index.d


class _FakeClonerOptions:
    shard = False


def test_place_index_shards_over_all_gpus_with_a_stand_in_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The multi-GPU branch of place_index on the CPU: faiss's GPU entry points replaced by recorders."""
    import searchkit.retrieval.faiss_index as dense_module

    calls: list[tuple[str, Any]] = []

    def multiple(resources: list[Any], index: Any, co: Any = None, gpus: list[int] | None = None) -> Any:
        calls.append(("multiple", (len(resources), co.shard, gpus)))
        return type("GpuIndexShards", (_FakeGpuIndex,), {})(index)

    def single(resources: Any, gpu: int, index: Any) -> Any:
        calls.append(("single", gpu))
        return type("GpuIndexFlat", (_FakeGpuIndex,), {})(index)

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", _FakeClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu_multiple_py", multiple, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", single, raising=False)
    monkeypatch.setattr(dense_module, "_GPU_RESOURCES", {})
    index = faiss.IndexFlatIP(8)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 4, raising=False)
    moved, where = place_index(index, "auto")
    assert where == "cuda:0-3" and calls[-1] == ("multiple", (4, True, [0, 1, 2, 3]))
    assert dense_module._on_gpu(moved)
    assert place_index(index, "cuda:2")[1] == "cuda:2" and calls[-1] == ("single", 2)
    assert place_index(index, "cpu") == (index, "cpu")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    assert place_index(index, "cuda")[1] == "cuda:0" and calls[-1] == ("single", 0)


def test_place_index_falls_back_to_the_cpu_when_the_type_cannot_move(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import searchkit.retrieval.faiss_index as dense_module

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("This index type is not implemented on GPU.")

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", _FakeClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu_multiple_py", refuse, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2, raising=False)
    monkeypatch.setattr(dense_module, "_GPU_RESOURCES", {})
    index = faiss.IndexHNSWFlat(8, 16, faiss.METRIC_INNER_PRODUCT)
    with caplog.at_level(logging.WARNING, logger="searchkit.retrieval.dense"):
        assert place_index(index, "auto") == (index, "cpu")
    assert "cannot run on cuda:0-1" in caplog.text and "fell back to CPU" in caplog.text


def _cuda() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs faiss with a CUDA GPU")
@pytest.mark.parametrize("factory", ["Flat", "IVF32,Flat", "IVF32,PQ8"])
def test_gpu_placement_matches_the_cpu(
    factory: str, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """On every GPU faiss sees: one GPU, or shards over all of them (the same answers as the CPU's)."""
    x, q, _ = data
    write_component(tmp_path, x, factory)
    base = DenseConfig(model="synthetic", faiss_factory=factory, train_sample=N, **SEARCH)
    cpu = DenseRetriever.load(tmp_path, dataclasses.replace(base, device="cpu"), ids(N))
    gpu = DenseRetriever.load(tmp_path, dataclasses.replace(base, device="cuda"), ids(N))
    assert gpu.where == faiss_placement("cuda", faiss.get_num_gpus()).where
    a = np.array([r.rows for r in cpu.search_vector_rows(q, K)])
    b = np.array([r.rows for r in gpu.search_vector_rows(q, K)])
    assert recall(b, a) >= (0.99 if factory == "Flat" else 0.9)
    allowed = np.ones(N, dtype=bool)
    allowed[::2] = False  # a filter: served by the CPU copy
    assert all(r % 2 == 1 for ranking in gpu.search_vector_rows(q[:5], K, allowed=allowed) for r in ranking.rows)


# ---------------------------------------------------------------- the benchmark, at a tiny size


def _bench() -> ModuleType:
    return load_bench("faiss_big")


def test_bench_faiss_big_smoke(tmp_path: Path) -> None:
    bench = _bench()
    out, md = tmp_path / "faiss.json", tmp_path / "faiss.md"
    sizes = ["--sizes", "3000", "--dim", "32", "--queries", "50", "--pq-m", "8", "--repeats", "1", "--like", "none"]
    search = ["--nprobe", "4", "16", "--ef-search", "16", "64"]
    bench.main([*sizes, *search, "--json", str(out), "--markdown", str(md), "--workdir", str(tmp_path / "work")])
    result = json.loads(out.read_text(encoding="utf-8"))
    (size,) = result["sizes"]
    factories = {row["factory"] for row in size["indexes"]}
    assert {"Flat", "HNSW32"} <= factories and any("OPQ8" in f for f in factories)
    for row in size["indexes"]:
        assert row["bytes"] > 0 and row["build_and_write_s"] > 0 and row["settings"]
        for setting in row["settings"]:
            assert 0.0 <= setting["recall_at_10"] <= 1.0 and setting["qps"] > 0
        assert row["rss_mb"]["mmap"] is not None and row["rss_mb"]["in_memory"] is not None
    flat = next(row for row in size["indexes"] if row["factory"] == "Flat")
    assert flat["settings"][0]["recall_at_10"] == 1.0
    assert "| Flat |" in md.read_text(encoding="utf-8")
