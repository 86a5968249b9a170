"""The tokens component: ids equal the tokenizer's own, manifest records, open/verify checks, reuse on add, the
reranker and the dense encoder scoring stored tokens exactly as texts, and the fallback to texts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from searchkit.config import DenseConfig, TokensConfig, load_index_recipe
from searchkit.formats import document_text
from searchkit.index import Index
from searchkit.models.cross_encoder import CrossEncoderReranker, PairEncoder
from searchkit.models.encoder import get_encoder
from searchkit.models.loading import model_identity
from searchkit.models.tokenizers import load_tokenizer, tokenizer_fingerprint
from searchkit.retrieval.dense import encode_shards, usable_tokens
from searchkit.retrieval.tokens import DocumentTokens
from searchkit.search import Searcher
from searchkit.types import ConfigError, Document, IndexFormatError, SearchkitError

TINY = Path(__file__).parent / "data" / "tiny"
QUERIES = ["cats chasing mice", "solar electricity", "wind energy storage", "leading zeros document"]


@pytest.fixture(scope="module")
def ce_index(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder: Path) -> Index:
    """BM25 + tokens of the tiny cross-encoder's tokenizer, cut at 12 tokens a document."""
    folder = tmp_path_factory.mktemp("tokens") / "ce"
    return Index.build(TINY, folder, tokens=TokensConfig(model=str(tiny_cross_encoder), max_length=12))


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder: Path) -> CrossEncoderReranker:
    # max_length 16: most tiny documents are longer than the 16 - 3 document tokens a pair can hold
    return CrossEncoderReranker(tiny_cross_encoder, max_length=16, device="cpu", dtype="fp32", interpolation=None)


# ---------------------------------------------------------------------- the component
def test_stored_ids_are_the_tokenizers_own_cut_to_max_length(ce_index: Index, tiny_cross_encoder: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_cross_encoder))
    stored = ce_index.tokens
    assert stored is not None
    texts = [document_text(doc) for doc in ce_index.iter_documents()]
    full = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    assert stored.rows(range(ce_index.num_docs)) == [ids[:12] for ids in full]
    assert any(len(ids) > 12 for ids in full) and any(len(ids) < 12 for ids in full)  # both cases are covered
    assert stored.ids.dtype == np.int32 and stored.offsets.dtype == np.int64


def test_manifest_records_tokenizer_name_fingerprint_and_max_length(ce_index: Index, tiny_cross_encoder: Path) -> None:
    entry = ce_index.manifest["components"]["tokens"]
    assert entry["config"] == {"model": str(tiny_cross_encoder), "max_length": 12}
    assert entry["fingerprint"] == tokenizer_fingerprint(load_tokenizer(str(tiny_cross_encoder)))
    assert {"tokens/ids.npy", "tokens/offsets.npy", "tokens/tokenizer.json"} <= set(ce_index.manifest["files"])
    assert list(ce_index.manifest["components"]) == ["bm25", "tokens"]
    Index.open(ce_index.path, verify=True)


def test_fingerprint_ignores_the_tokenizers_call_state_but_not_its_vocabulary(tiny_cross_encoder: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_cross_encoder))
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a b c"] * 2, truncation=True, max_length=3, padding=True)  # changes the backend's settings
    assert tokenizer_fingerprint(tokenizer) == before
    assert tokenizer_fingerprint(load_tokenizer("all-MiniLM-L6-v2")) != before
    assert tokenizer_fingerprint(object()) is None


def test_tokens_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_length"):
        TokensConfig(max_length=0)
    with pytest.raises(ConfigError, match="model"):
        TokensConfig(model="")


def test_an_index_needs_a_retriever_besides_tokens(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to build"):
        Index.build(TINY, tmp_path / "x", bm25=None, tokens=TokensConfig())


@pytest.mark.parametrize(
    ("name", "damage", "where"),
    [
        ("ids.npy", lambda a: a[:-1], "open"),
        ("offsets.npy", lambda a: a[::-1].copy(), "open"),
        ("ids.npy", lambda a: a + 10**6, "verify"),
    ],
)
def test_rewritten_arrays_are_refused(ce_index: Index, tmp_path: Path, name: str, damage: object, where: str) -> None:
    """Arrays replaced by other valid .npy files with a re-signed manifest: the component's own checks find them."""
    from searchkit.index.manifest import write_manifest

    folder = tmp_path / "case"
    shutil.copytree(ce_index.path, folder)
    path = folder / "tokens" / name
    np.save(path, damage(np.load(path)), allow_pickle=False)  # type: ignore[operator]
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, manifest)
    if where == "open":
        with pytest.raises(IndexFormatError, match="tokens"):
            Index.open(folder)
    else:
        Index.open(folder)
        with pytest.raises(IndexFormatError, match="outside the vocabulary"):
            Index.open(folder, verify=True)


def test_a_fingerprint_the_files_disagree_with_is_refused(ce_index: Index, tmp_path: Path) -> None:
    from searchkit.index.manifest import write_manifest

    folder = tmp_path / "case"
    shutil.copytree(ce_index.path, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["components"]["tokens"]["fingerprint"] = "0" * 64
    write_manifest(folder, manifest)
    with pytest.raises(IndexFormatError, match="fingerprint"):
        Index.open(folder)


def test_add_tokens_then_cut_them_shorter_without_the_corpus(
    tmp_path: Path, tiny_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = Index.build(TINY, tmp_path / "idx")
    model = str(tiny_cross_encoder)
    index = index.add(tokens=TokensConfig(model=model, max_length=12))
    long_rows = index.component("tokens").rows(range(index.num_docs))
    with pytest.raises(ConfigError, match="already has a tokens component"):
        index.add(tokens=TokensConfig(model=model, max_length=5))
    (index.path / "docs.jsonl").chmod(0o000)  # the cut reads the stored ids, never the documents
    try:
        with caplog.at_level(logging.INFO, logger="searchkit.retrieval.tokens"):
            index = index.add(tokens=TokensConfig(model=model, max_length=5), overwrite=True)
    finally:
        (index.path / "docs.jsonl").chmod(0o644)
    assert "cut the stored tokens" in caplog.text
    assert index.component("tokens").rows(range(index.num_docs)) == [ids[:5] for ids in long_rows]
    assert index.manifest["components"]["tokens"]["config"]["max_length"] == 5
    Index.open(index.path, verify=True)


def test_index_recipe_tokens_table(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('corpus = "c"\noutput = "o"\n[tokens]\nmax_length = 64\n', encoding="utf-8")
    assert load_index_recipe(recipe).tokens == TokensConfig(max_length=64)
    recipe.write_text('corpus = "c"\noutput = "o"\ntokens = true\n', encoding="utf-8")
    assert load_index_recipe(recipe).tokens == TokensConfig()
    recipe.write_text('corpus = "c"\noutput = "o"\n', encoding="utf-8")
    assert load_index_recipe(recipe).tokens is None
    recipe.write_text('corpus = "c"\noutput = "o"\n[tokens]\nlength = 64\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown TokensConfig setting 'length'"):
        load_index_recipe(recipe)


# ---------------------------------------------------------------------- reranking from stored tokens
def _pairs(index: Index) -> tuple[list[str], list[list[int]], list[str]]:
    rows = list(range(index.num_docs))
    queries = [QUERIES[row % len(QUERIES)] for row in rows]
    stored = index.component("tokens")
    texts = [document_text(doc) for doc in index.documents([index.docids[row] for row in rows])]
    return queries, stored.rows(rows), texts


def test_scores_of_stored_tokens_equal_scores_of_texts(ce_index: Index, reranker: CrossEncoderReranker) -> None:
    queries, ids, texts = _pairs(ce_index)
    assert reranker.max_document_tokens == 13 > 12  # stored rows are shorter than a pair allows: must fall back
    assert ce_index.component("tokens").mismatch(reranker.tokenizer_fingerprint, 13) is not None
    short = CrossEncoderReranker(reranker.name, max_length=15, device="cpu", dtype="fp32", interpolation=None)
    assert short.max_document_tokens == 12
    assert ce_index.component("tokens").mismatch(short.tokenizer_fingerprint, 12) is None
    np.testing.assert_array_equal(short.score_tokens(queries, ids), short.score(queries, texts))
    short.remember_scores()
    np.testing.assert_array_equal(short.score_tokens(queries, ids), short.score(queries, texts))


def test_pair_encoder_joins_stored_tokens_as_it_encodes_texts(ce_index: Index, tiny_cross_encoder: Path) -> None:
    encoder = PairEncoder(load_tokenizer(str(tiny_cross_encoder)), max_length=15)
    queries, ids, texts = _pairs(ce_index)
    assert encoder.encode_tokens(queries, ids) == encoder.encode(queries, texts)


def _searchers(index: Index, model: Path, max_length: int) -> tuple[Searcher, Searcher]:
    def make() -> CrossEncoderReranker:
        return CrossEncoderReranker(model, max_length=max_length, device="cpu", dtype="fp32", depth=5)

    plain = Index.build(TINY, index.path.parent / f"plain-{max_length}", overwrite=True)
    return Searcher(index, rerank=make()), Searcher(plain, rerank=make())


def test_searcher_reranks_stored_tokens_without_reading_or_tokenizing_documents(
    ce_index: Index, tiny_cross_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(ce_index.path, folder)
    with_tokens, from_texts = _searchers(Index.open(folder), tiny_cross_encoder, 15)
    expected = from_texts.search_batch(QUERIES, k=8)
    seen: list[str] = []
    assert with_tokens.reranker is not None
    encoder = with_tokens.reranker.encoder  # type: ignore[attr-defined]
    original = encoder.tokenize
    encoder.tokenize = lambda texts: seen.extend(texts) or original(texts)
    (folder / "docs.jsonl").write_bytes(b"")  # the open index's doc store is now unreadable
    with caplog.at_level(logging.INFO, logger="searchkit.search"):
        assert with_tokens.search_batch(QUERIES, k=8) == expected
    assert "scoring the index's stored document tokens" in caplog.text
    assert sorted(set(seen)) == sorted(QUERIES)  # only queries were tokenized
    with pytest.raises(SearchkitError):  # proof that the documents could not have been read
        with_tokens.index.documents([with_tokens.index.docids[0]])


def test_a_reranker_with_another_tokenizer_falls_back_to_texts(
    tmp_path: Path, tiny_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = Index.build(TINY, tmp_path / "minilm", tokens=TokensConfig())  # all-MiniLM-L6-v2's tokenizer
    with_tokens, from_texts = _searchers(index, tiny_cross_encoder, 15)
    with caplog.at_level(logging.INFO, logger="searchkit.search"):
        assert with_tokens.search_batch(QUERIES, k=8) == from_texts.search_batch(QUERIES, k=8)
        with_tokens.search_batch(QUERIES, k=8)
    assert caplog.text.count("another tokenizer") == 1  # logged once


def test_stored_tokens_shorter_than_the_reranker_reads_fall_back_to_texts(
    ce_index: Index, tiny_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with_tokens, from_texts = _searchers(ce_index, tiny_cross_encoder, 32)
    with caplog.at_level(logging.INFO, logger="searchkit.search"):
        assert with_tokens.search_batch(QUERIES, k=8) == from_texts.search_batch(QUERIES, k=8)
    assert "stores at most 12" in caplog.text


# ---------------------------------------------------------------------- dense encoding from stored tokens
def test_dense_encoding_of_stored_tokens_equals_the_text_path(tmp_path: Path, tiny_bi_encoder: Path) -> None:
    config = DenseConfig(model=str(tiny_bi_encoder), max_length=10, device="cpu", dtype="fp32", shard_size=3)
    index = Index.build(TINY, tmp_path / "idx", tokens=TokensConfig(model=str(tiny_bi_encoder), max_length=32))
    stored = usable_tokens(index.tokens, config)
    assert stored is not None
    encoder = get_encoder(config)
    texts = [document_text(doc) for doc in index.iter_documents()]
    assert any(len(ids) > 10 for ids in encoder.tokenizer(texts)["input_ids"])  # documents longer than max_length
    direct = encoder.with_special_tokens(stored.rows(range(index.num_docs)))
    assert direct == encoder.tokenize(texts)
    from_tokens = encoder.embed_tokens(direct)
    np.testing.assert_allclose(from_tokens, encoder.encode(texts), atol=1e-5, rtol=0)
    identity = model_identity(config.model)
    docs = list(index.iter_documents())
    shards = [
        encode_shards(docs, tmp_path / f"s{i}", config, index.docids, identity, False, t)
        for i, t in enumerate([None, stored])
    ]
    for text_shard, token_shard in zip(*shards, strict=True):
        np.testing.assert_array_equal(np.load(text_shard), np.load(token_shard))


def test_index_add_dense_encodes_stored_tokens(
    tmp_path: Path, tiny_bi_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = DenseConfig(model=str(tiny_bi_encoder), max_length=10, device="cpu", dtype="fp32")
    plain = Index.build(TINY, tmp_path / "plain", dense=config)
    index = Index.build(TINY, tmp_path / "idx", tokens=TokensConfig(model=str(tiny_bi_encoder), max_length=16))
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.dense"):
        index = index.add(dense=config)
    assert "encoding the index's stored document tokens" in caplog.text
    assert plain.dense is not None and index.dense is not None
    np.testing.assert_allclose(
        np.asarray(index.dense.embeddings, np.float32), np.asarray(plain.dense.embeddings, np.float32), atol=1e-3
    )
    caplog.clear()
    with caplog.at_level(
        logging.INFO, logger="searchkit.retrieval.dense"
    ):  # a prefix is not in the stored tokens: texts
        index.add(dense=DenseConfig(model=str(tiny_bi_encoder), doc_prefix="passage: ", device="cpu"), overwrite=True)
    assert "doc_prefix" in caplog.text


def test_documents_do_not_need_to_match_the_stream_when_tokens_are_used(tmp_path: Path, tiny_bi_encoder: Path) -> None:
    """With stored tokens the documents are not read at all (an empty stream is fine)."""
    config = DenseConfig(model=str(tiny_bi_encoder), max_length=10, device="cpu", dtype="fp32")
    index = Index.build(TINY, tmp_path / "idx", tokens=TokensConfig(model=str(tiny_bi_encoder), max_length=16))
    stored = usable_tokens(index.tokens, config)
    empty: list[Document] = []
    paths = encode_shards(empty, tmp_path / "s", config, index.docids, model_identity(config.model), False, stored)
    assert sum(len(np.load(path)) for path in paths) == index.num_docs


def test_component_class_is_registered() -> None:
    from searchkit.index.components import COMPONENTS

    assert list(COMPONENTS) == ["bm25", "tokens", "dense", "filters"]
    assert COMPONENTS["tokens"].retriever_class is DocumentTokens


# ---------------------------------------------------------------------- command line
def test_cli_index_build_and_add_tokens(
    tmp_path: Path, tiny_cross_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from searchkit.cli.main import main

    def run(*args: str) -> int:
        try:
            main(["--no-progress", *args])
        except SystemExit as stop:
            return int(stop.code or 0)
        return 0

    target = tmp_path / "cli"
    model = str(tiny_cross_encoder)
    assert (
        run("index", "build", "--corpus", str(TINY), "-o", str(target), "--tokens", model, "--tokens-max-length", "8")
        == 0
    )
    entry = Index.open(target).manifest["components"]["tokens"]
    assert entry["config"] == {"model": model, "max_length": 8}
    assert run("index", "add", str(target), "--tokens", "--overwrite") == 0  # no MODEL: the default model's tokenizer
    entry = Index.open(target, verify=True).manifest["components"]["tokens"]
    assert entry["config"] == {"model": "all-MiniLM-L6-v2", "max_length": 512}
    assert entry["fingerprint"] == tokenizer_fingerprint(load_tokenizer("all-MiniLM-L6-v2"))
    assert "components now bm25, tokens" in capsys.readouterr().out
    assert run("index", "add", str(target), "--tokens-max-length", "8") == 1
    assert "--tokens-max-length needs --tokens" in capsys.readouterr().err
