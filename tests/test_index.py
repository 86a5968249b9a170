"""Index bundle: build/open round trip, atomicity, refusal rules, verification, adding components."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchkit.config import BM25Config
from searchkit.index import Index
from searchkit.index.build import reusable_embeddings
from searchkit.index.layout import FORMAT_VERSION
from searchkit.types import ConfigError, DataError, Document, IndexFormatError

TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(TINY, tmp_path_factory.mktemp("idx") / "tiny")


def test_manifest_describes_the_build(built: Index) -> None:
    manifest = json.loads((built.path / "manifest.json").read_text())
    assert manifest["format"] == "searchkit-index"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["num_docs"] == 8
    assert manifest["components"]["bm25"]["config"] == {
        "method": "lucene",
        "k1": 1.5,
        "b": 0.75,
        "delta": 0.5,
        "stemmer": "english",
        "stopwords": "en",
        "analyzer": "en",
        "min_token_length": 2,
    }
    assert manifest["source"]["path"].endswith("tiny")
    assert len(manifest["source"]["sha256"]) == 64
    assert {"docids.txt", "docs.jsonl", "docs.offsets.npy"} <= set(manifest["files"])
    assert any(name.startswith("bm25/") for name in manifest["files"])


def test_doc_store_round_trip(built: Index) -> None:
    assert built.docids == ["d1", "d2", "d3", "d4", "d5", "d6", "007", "d8"]
    assert built.document("007") == Document(
        "007", "Document ids are strings: this one keeps its leading zeros.", "Leading zeros"
    )
    assert built.document("d6").text == ""
    assert [doc.doc_id for doc in built.documents(["d8", "d1"])] == ["d8", "d1"]
    assert [doc.doc_id for doc in built.iter_documents()] == built.docids
    with pytest.raises(KeyError, match="nope"):
        built.document("nope")


def test_open_rebuilds_configs_and_no_temp_left(built: Index) -> None:
    reopened = Index.open(built.path)
    assert reopened.components == {"bm25": BM25Config()}
    assert reopened.fingerprint() == built.fingerprint()
    assert not any(path.name.startswith(".") for path in built.path.parent.iterdir())


def test_refuses_existing_target_unless_overwrite(built: Index, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        Index.build(TINY, built.path)
    target = tmp_path / "again"
    Index.build(TINY, target)
    rebuilt = Index.build(TINY, target, bm25=BM25Config(k1=1.2), overwrite=True)
    assert rebuilt.components["bm25"].k1 == 1.2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["again"]


def _docs_then_fail() -> Iterator[Document]:
    yield Document("a", "alpha")
    yield Document("b", "beta")
    raise DataError("bad record", path="corpus.jsonl", line=3)


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"corpus.jsonl:3"):
        Index.build(_docs_then_fail(), tmp_path / "broken")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_index(built: Index, tmp_path: Path) -> None:
    target = tmp_path / "kept"
    Index.build(TINY, target)
    before = (target / "manifest.json").read_bytes()
    with pytest.raises(DataError):
        Index.build(_docs_then_fail(), target, overwrite=True)
    assert (target / "manifest.json").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]


def test_malformed_corpus_file_names_file_and_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl:2"):
        Index.build(corpus, tmp_path / "idx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_duplicate_ids_are_listed(tmp_path: Path) -> None:
    docs = [Document("x", "one"), Document("y", "two"), Document("x", "three"), Document("y", "four")]
    with pytest.raises(DataError, match=r"2 duplicate document ids \(2 distinct\), e.g. x, y"):
        Index.build(docs, tmp_path / "dups")
    assert list(tmp_path.iterdir()) == []


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no documents"):
        Index.build([], tmp_path / "empty")


def test_nothing_to_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to build"):
        Index.build(TINY, tmp_path / "none", bm25=None)


def test_newer_format_is_refused_with_fix(built: Index, tmp_path: Path) -> None:
    target = tmp_path / "future"
    Index.build(TINY, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="upgrade with `pip install -U searchkit`"):
        Index.open(target)


def test_open_rejects_non_index(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="no such index folder"):
        Index.open(tmp_path / "missing")
    with pytest.raises(IndexFormatError, match="not a searchkit index"):
        Index.open(tmp_path)


def test_unknown_config_key_in_manifest_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "odd"
    Index.build(TINY, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["components"]["bm25"]["config"]["k3"] = 1
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="unknown BM25Config setting 'k3'"):
        Index.open(target).bm25  # noqa: B018 - loading the component is the point


@pytest.mark.parametrize("victim", ["docs.jsonl", "docids.txt", "bm25"])
def test_verify_detects_a_flipped_byte(tmp_path: Path, victim: str) -> None:
    target = tmp_path / "flip"
    Index.build(TINY, target)
    Index.open(target, verify=True)
    path = target / victim
    if path.is_dir():
        path = max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.open(target, verify=True)


def test_verify_detects_missing_and_extra_files(tmp_path: Path) -> None:
    target = tmp_path / "files"
    Index.build(TINY, target)
    (target / "stray.bin").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match=r"stray\.bin is not listed in the manifest"):  # refused on open
        Index.open(target)
    (target / "stray.bin").unlink()
    (target / "docids.txt").unlink()
    with pytest.raises(IndexFormatError):
        Index.open(target)


def test_offsets_are_memory_mapped(built: Index) -> None:
    assert isinstance(built.store.offsets, np.memmap)


def test_add_replaces_a_component_without_touching_the_doc_store(tmp_path: Path) -> None:
    target = tmp_path / "add"
    index = Index.build(TINY, target)
    store_before = (target / "docs.jsonl").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already has a bm25 component"):
        index.add(bm25=BM25Config(k1=0.9))
    updated = index.add(bm25=BM25Config(k1=0.9), overwrite=True)
    assert updated.components["bm25"].k1 == 0.9
    assert (target / "docs.jsonl").stat().st_mtime_ns == store_before
    Index.open(target, verify=True)
    assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == []


def test_missing_component_message(built: Index) -> None:
    with pytest.raises(ConfigError, match="has no dense component"):
        built.component("dense")
    assert built.dense is None


def _docs_then_interrupt() -> Iterator[Document]:
    yield Document("a", "alpha")
    raise KeyboardInterrupt


def test_interrupted_build_keeps_its_temp_folder_for_resume(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        Index.build(_docs_then_interrupt(), tmp_path / "resumable")
    assert [path.name for path in tmp_path.iterdir()] == [".resumable.building"]
    Index.build(TINY, tmp_path / "resumable")  # other inputs: the stale partial build is discarded, not reused
    assert [path.name for path in tmp_path.iterdir()] == ["resumable"]


def test_open_overrides_the_dense_device(tmp_path: Path) -> None:
    from searchkit.config import DenseConfig

    target = tmp_path / "dense"
    Index.build(TINY, target, bm25=None, dense=DenseConfig(device="cpu", batch_size=4))
    index = Index.open(target, device="auto")
    assert index.dense is not None and index.dense.config.device == "auto"
    assert Index.open(target).components["dense"].device == "cpu"


def test_changing_the_faiss_type_reuses_the_embeddings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from searchkit.config import DenseConfig

    target = tmp_path / "refaiss"
    index = Index.build(TINY, target, dense=DenseConfig(device="cpu", batch_size=4))
    before = (target / "dense" / "embeddings.npy").read_bytes()
    with caplog.at_level("INFO", logger="searchkit.retrieval.dense"):
        updated = index.add(dense=DenseConfig(device="cpu", batch_size=4, faiss_factory="HNSW8"), overwrite=True)
    assert "reused the stored embeddings" in caplog.text
    assert "encoding" not in caplog.text
    assert (target / "dense" / "embeddings.npy").read_bytes() == before
    assert updated.components["dense"].faiss_factory == "HNSW8"
    assert updated.dense is not None and updated.dense.search("solar electricity", 2)[0].doc_id in {"d3", "d8"}
    Index.open(target, verify=True)


def test_a_build_with_tokens_encodes_dense_from_them(
    tiny_hybrid_index: Index, tiny_dense_config: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens are built before dense, which then encodes them (the embedded model's tokenizer is theirs)."""
    from searchkit.config import TokensConfig

    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        index = Index.build(TINY, tmp_path / "t", dense=tiny_dense_config, tokens=TokensConfig())
    assert "encoding the index's stored document tokens" in caplog.text
    assert list(index.manifest["components"]) == ["bm25", "tokens", "dense"]
    assert index.dense is not None and tiny_hybrid_index.dense is not None
    np.testing.assert_allclose(
        np.asarray(index.dense.embeddings, np.float32),
        np.asarray(tiny_hybrid_index.dense.embeddings, np.float32),
        atol=1e-3,
    )


def test_a_model_retrained_in_place_is_re_encoded(tmp_path: Path, tiny_words: list[str]) -> None:
    """Same folder name, other weights: the stored embeddings are not reused (the weights' sha256 decides)."""
    from conftest import make_tiny_sentence_transformer

    from searchkit.config import DenseConfig

    folder = make_tiny_sentence_transformer(tmp_path / "encoder", words=tiny_words, seed=0)
    config = DenseConfig(model=str(folder), device="cpu", dtype="fp32")
    index = Index.build(TINY, tmp_path / "idx", dense=config)
    before = np.load(tmp_path / "idx" / "dense" / "embeddings.npy")
    assert reusable_embeddings(index, DenseConfig(model=str(folder), device="cpu", dtype="fp32", faiss_factory="HNSW8"))
    make_tiny_sentence_transformer(folder, words=tiny_words, seed=1)  # retrained into the same folder
    assert not reusable_embeddings(index, config)
    updated = index.add(dense=config, overwrite=True)
    assert not np.array_equal(np.load(updated.path / "dense" / "embeddings.npy"), before)
