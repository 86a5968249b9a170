"""Living indexes (searchkit.index.update, searchkit.retrieval.postings): every sequence of adds, replacements,
deletions and compactions gives the results of a fresh build of the final documents (the oracle), BM25 to the bit;
failures leave
the index as it was; the CLI's `index update` / `index compact`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY, WORDS, synthetic_documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchkit.config import BM25_METHODS, BM25Config, FilterConfig, TokensConfig, UpdateConfig
from searchkit.formats import read_corpus
from searchkit.index import Index
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.search import Searcher
from searchkit.types import ConfigError, DataError, Document

QUERIES = [f"about {word}" for word in WORDS[::3]] + ["notes on apple and banana", "zephyr"]
FILTERS = ["year>=2005", "lang in en,de", "lang!=fr"]


def _final(index: Index) -> list[Document]:
    """The live documents of ``index`` in row order: what a fresh build is given."""
    return list(index.iter_documents())


def _fresh(index: Index, folder: Path, **configs: Any) -> Index:
    """The oracle: a fresh build of ``index``'s live documents with its own configs."""
    built = {name: config for name, config in index.components.items()}
    return Index.build(_final(index), folder, **{**built, **configs})


def assert_same_results(updated: Index, fresh: Index, modes: tuple[str, ...] = ("bm25", "dense")) -> None:
    """BM25 hits identical (ids, order, scores to the bit); dense scores within fp16 storage rounding; also
    filtered, when the indexes have filters."""
    assert updated.docids == fresh.docids
    filters: list[Any] = [None] + (FILTERS if "filters" in fresh.manifest["components"] else [])
    k = fresh.num_docs
    for mode in modes:
        for spec in filters:
            got = Searcher(updated, mode=mode).search_batch(QUERIES, k, filter=spec)
            want = Searcher(fresh, mode=mode).search_batch(QUERIES, k, filter=spec)
            for ours, oracle in zip(got, want, strict=True):
                if mode == "bm25":
                    assert ours == oracle, (mode, spec)
                else:
                    assert {hit.doc_id for hit in ours} == {hit.doc_id for hit in oracle}, (mode, spec)
                    scores = {hit.doc_id: hit.score for hit in oracle}
                    assert all(abs(hit.score - scores[hit.doc_id]) < 2e-3 for hit in ours), (mode, spec)


# ---------------------------------------------------------------------- BM25 statistics
@pytest.mark.parametrize("method", BM25_METHODS)
def test_rewritten_bm25_scores_equal_a_fresh_build_to_the_bit(method: str, tmp_path: Path) -> None:
    docs = list(read_corpus(TINY))
    config = BM25Config(method=method)
    built = BM25Retriever.build(docs, tmp_path / "built", config)
    added = [Document("d9", "Solar wind and tidal electricity for cats"), Document("d2", "A new text for d2")]
    dead = np.zeros(len(docs) + len(added), dtype=bool)
    dead[[1, 4]] = True  # d2 (replaced) and d5 (deleted)
    ids = [doc.doc_id for doc in docs] + [doc.doc_id for doc in added]
    rewritten = BM25Retriever.rewrite(built, tmp_path / "rewritten", np.arange(len(docs)), dead, added, ids)
    final = [doc for row, doc in enumerate(docs) if not dead[row]] + added
    fresh = BM25Retriever.build(final, tmp_path / "fresh", config)
    queries = ["cats chasing mice", "solar electricity", "new text", "wind", "leading zeros"]
    assert rewritten.search_batch(queries, 20) == fresh.search_batch(queries, 20)
    assert rewritten.verify() == [] and rewritten.deleted_rows().tolist() == [1, 4]
    assert rewritten.stats["num_live"] == len(final) and rewritten.stats["num_docs"] == len(ids)
    # a fresh build's own scores are what the stored term frequencies give, to the bit
    from searchkit.retrieval.postings import bm25_scores

    assert np.array_equal(bm25_scores(fresh.postings(), config)[0], np.asarray(fresh._data))


def test_verify_finds_scores_that_disagree_with_their_term_frequencies(tmp_path: Path) -> None:
    built = BM25Retriever.build(read_corpus(TINY), tmp_path / "bm25")
    data = np.load(tmp_path / "bm25" / "data.csc.index.npy")
    data[3] *= 1.01
    np.save(tmp_path / "bm25" / "data.csc.index.npy", data)
    reloaded = BM25Retriever.load(tmp_path / "bm25", built.config, built.docids)
    assert "the scores do not match the term frequencies and statistics" in reloaded.verify()


# ---------------------------------------------------------------------- the property: updates == a fresh build
STEPS = st.lists(
    st.tuples(
        st.sets(st.integers(0, 19), max_size=4),  # ids s<i> to add (an existing one is replaced)
        st.sets(st.integers(0, 19), max_size=3),  # ids to delete (those not in the index are skipped)
        st.integers(0, 1000),  # seed of the added texts
        st.sampled_from([0.0, 0.3, 1.0]),  # UpdateConfig.compact_ratio: always, sometimes, never
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_any_sequence_of_updates_equals_a_fresh_build(
    steps: list[tuple[set[int], set[int], int, float]],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_encoder_config: Any,
) -> None:
    root = tmp_path_factory.mktemp("property")
    index = Index.build(
        synthetic_documents(10),
        root / "index",
        dense=tiny_encoder_config,
        filters=FilterConfig(["year:number", "lang"]),
    )
    generation = 1
    for adds, deletes, seed, ratio in steps:
        added = [synthetic_documents(1, start=i, seed=seed + i)[0] for i in sorted(adds)]
        live = set(index.docids)
        deleted = [f"s{i}" for i in sorted(deletes) if f"s{i}" in live]
        if len(live - set(deleted)) + len(added) == 0:
            continue
        index = index.update(add=added, delete=deleted, config=UpdateConfig(compact_ratio=ratio))
        generation += bool(added or deleted)
        assert index.generation == generation
    index.verify()
    assert_same_results(index, _fresh(index, root / "fresh"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, method=st.sampled_from(BM25_METHODS))
def test_any_sequence_of_bm25_updates_equals_a_fresh_build(
    steps: list[tuple[set[int], set[int], int, float]], method: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("bm25-property")
    index = Index.build(synthetic_documents(10), root / "index", bm25=BM25Config(method=method))
    for adds, deletes, seed, ratio in steps:
        added = [synthetic_documents(1, start=i, seed=seed + i)[0] for i in sorted(adds)]
        deleted = [f"s{i}" for i in sorted(deletes) if f"s{i}" in set(index.docids)]
        if index.num_docs - len(deleted) + len(added) > 0:
            index = index.update(add=added, delete=deleted, config=UpdateConfig(compact_ratio=ratio))
    assert_same_results(index, _fresh(index, root / "fresh"), modes=("bm25",))


# ---------------------------------------------------------------------- semantics
@pytest.fixture
def hybrid(tmp_path: Path, tiny_encoder_config: Any) -> Index:
    """A fresh BM25 + dense + filters + tokens index of 20 synthetic documents (each test may modify it)."""
    return Index.build(
        synthetic_documents(20),
        tmp_path / "index",
        dense=tiny_encoder_config,
        tokens=TokensConfig(model=tiny_encoder_config.model, max_length=32),
        filters=FilterConfig(["year:number", "lang"]),
    )


def test_replace_delete_and_the_index_api(hybrid: Index) -> None:
    assert hybrid.generation == 1 and hybrid.manifest["num_rows"] == 20
    new = Document("s3", "notes on zephyr", title="replaced", metadata={"year": 2042, "lang": "en"})
    updated = hybrid.update(add=[new, Document("x1", "notes on apple")], delete=["s5"])
    assert updated.generation == 2 and hybrid.generation == 1  # the old object still serves its generation
    assert updated.num_docs == 20 and updated.num_rows == 22 and updated.deleted_rows.tolist() == [3, 5]
    assert updated.document("s3") == new and updated.row("s3") == 20
    with pytest.raises(KeyError, match="s5"):
        updated.row("s5")
    assert "s5" not in updated.docids and updated.docids[-2:] == ["s3", "x1"]
    assert [doc.doc_id for doc in updated.iter_documents()] == updated.docids
    assert updated.manifest["last_update"] == {"added": 1, "replaced": 1, "deleted": 1, "compacted": False}
    for mode in ("bm25", "dense", "hybrid", "cascade"):
        for hits in Searcher(updated, mode=mode).search_batch(QUERIES, 22):
            assert {hit.doc_id for hit in hits} <= set(updated.docids), mode  # no tombstone ever comes back
            assert len({hit.doc_id for hit in hits}) == len(hits), mode
    assert updated.allowed_rows("year>2040").tolist() == [row == 20 for row in range(22)]
    tokens = updated.tokens
    assert tokens is not None and tokens.rows([20]) == Index.open(updated.path).tokens.rows([20])  # type: ignore[union-attr]
    updated.verify()


def test_compaction_equals_a_fresh_build(hybrid: Index, tmp_path: Path) -> None:
    updated = hybrid.update(add=synthetic_documents(3, start=2, seed=9), delete=["s7", "s8"], compact=False)
    assert len(updated.deleted_rows) == 5
    compacted = updated.compact()
    assert compacted.generation == 3 and compacted.num_rows == compacted.num_docs == 18
    assert not (compacted.path / "deleted.npy").exists()
    assert compacted.compact() is compacted  # nothing left to compact: no new generation
    fresh = _fresh(compacted, tmp_path / "fresh")
    assert_same_results(compacted, fresh, modes=("bm25", "dense", "hybrid"))
    files = json.loads((compacted.path / "manifest.json").read_text())["files"]
    oracle = json.loads((fresh.path / "manifest.json").read_text())["files"]
    for same in ("docids.txt", "docs.jsonl", "docs.offsets.npy", "filters/0.npy", "filters/1.npy", "tokens/ids.npy"):
        assert files[same] == oracle[same], same
    compacted.verify()


def test_updates_compact_by_themselves_past_the_ratio(hybrid: Index) -> None:
    kept = hybrid.delete_documents(["s1", "s2", "s3", "s4"])  # 4 of 20: under a quarter
    assert len(kept.deleted_rows) == 4 and not kept.manifest["last_update"]["compacted"]
    compacted = kept.delete_documents(["s5", "s6"])  # 6 of 20: past it
    assert len(compacted.deleted_rows) == 0 and compacted.num_rows == 14
    assert compacted.manifest["last_update"] == {"added": 0, "replaced": 0, "deleted": 2, "compacted": True}
    never = compacted.delete_documents(["s7", "s8", "s9", "s10"], config=UpdateConfig(compact_ratio=1.0))
    assert len(never.deleted_rows) == 4


def test_deletions_alone_link_every_unchanged_file(hybrid: Index) -> None:
    """A deletion rewrites the BM25 arrays and writes deleted.npy; every other file is the old one, hard-linked."""
    before = {relpath: (hybrid.path / relpath).stat().st_ino for relpath in hybrid.manifest["files"]}
    updated = hybrid.delete_documents(["s2"])
    rewritten = {
        relpath
        for relpath in updated.manifest["files"]
        if before.get(relpath) != (updated.path / relpath).stat().st_ino
    }
    assert rewritten == {"deleted.npy"} | {relpath for relpath in before if relpath.startswith("bm25/")}
    assert all(
        updated.manifest["files"][relpath] == hybrid.manifest["files"][relpath]
        for relpath in before
        if relpath not in rewritten
    )


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"delete": ["nope"]}, DataError, "not documents of"),
        ({"delete": [f"s{i}" for i in range(20)]}, DataError, "every document"),
        ({"add": [Document("a", "x"), Document("a", "y")]}, DataError, "duplicate document id"),
        ({"add": [Document("a b", "x")]}, DataError, "whitespace"),
        ({"add": ["not a document"]}, DataError, "expected a searchkit Document"),
        ({"add": [Document("a", "x", metadata={"year": "soon"})]}, DataError, "not a number"),
        ({"add": [Document("a", "x", metadata={"year": float("nan")})]}, DataError, "JSON cannot hold"),
        ({"add": [Document("a", "x", metadata={"when": object()})]}, DataError, "JSON cannot hold"),
    ],
)
def test_a_failed_update_leaves_the_index_unchanged(
    hybrid: Index, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    before = (hybrid.path / "manifest.json").read_bytes()
    with pytest.raises(error, match=match):
        hybrid.update(**change)
    assert (hybrid.path / "manifest.json").read_bytes() == before
    assert sorted(path.name for path in hybrid.path.parent.iterdir()) == ["index"]
    Index.open(hybrid.path, verify=True)


def test_an_update_of_a_stale_index_is_refused(hybrid: Index) -> None:
    hybrid.delete_documents(["s1"])
    with pytest.raises(ConfigError, match="changed since it was opened"):
        hybrid.delete_documents(["s2"])


def test_adding_a_bm25_component_to_an_index_with_tombstones(hybrid: Index, tmp_path: Path) -> None:
    updated = hybrid.update(add=[Document("s1", "notes on zephyr")], delete=["s2"])
    rebuilt = updated.add(bm25=BM25Config(k1=1.2), overwrite=True)
    assert_same_results(rebuilt, _fresh(rebuilt, tmp_path / "fresh", bm25=BM25Config(k1=1.2)), modes=("bm25",))
    rebuilt.verify()


def test_an_index_built_before_term_frequencies_were_stored(tmp_path: Path) -> None:
    from searchkit.index.manifest import write_manifest

    index = Index.build(TINY, tmp_path / "old")
    for name in ("tf.csc.index.npy", "doclen.index.npy"):
        (index.path / "bm25" / name).unlink()
    manifest = json.loads((index.path / "manifest.json").read_text())
    write_manifest(index.path, manifest)
    old = Index.open(index.path, verify=True)
    updated = old.update(add=[Document("d9", "Cats and solar panels")], delete=["d1"])
    assert (updated.path / "bm25" / "tf.csc.index.npy").exists()
    assert_same_results(updated, _fresh(updated, tmp_path / "fresh"), modes=("bm25",))


def test_an_update_from_a_corpus_file_reads_it_as_the_build_did(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("docno\theadline\tbody\tyear\na\tSolar\tsolar panels\t2019\nb\tWind\twind power\t2021\n")
    index = Index.build(
        corpus,
        tmp_path / "index",
        id_field="docno",
        title_field="headline",
        text_field="body",
        filters=FilterConfig(["year:number"]),
    )
    assert index.manifest["fields"]["metadata"] == ["year"]
    more = tmp_path / "more.tsv"
    more.write_text("docno\theadline\tbody\tyear\nc\tTide\ttidal power\t2024\n")
    updated = index.add_documents(more)
    assert updated.document("c") == Document("c", "tidal power", "Tide", {"year": "2024"})
    assert Searcher(updated).search("power", 5, filter="year>2020") == Searcher(updated).search("power", 5)[:2]


# ---------------------------------------------------------------------- command line
def _run(*args: str | Path) -> Any:
    from click.testing import CliRunner

    from searchkit.cli.main import cli

    return CliRunner().invoke(cli, [str(arg) for arg in args])


def test_cli_update_compact_and_filters(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "a1", "text": "solar panels make electricity", "metadata": {"year": 2019, "lang": "en"}},
        {"_id": "a2", "text": "wind turbines make electricity", "metadata": {"year": 2021, "lang": "fr"}},
        {"_id": "a3", "text": "cats chase mice", "metadata": {"year": 2023}},
        {"_id": "a4", "text": "tides make electricity too", "metadata": {"year": 2024, "lang": "en"}},
    ]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    target = tmp_path / "index"
    built = _run(
        "index", "build", "--corpus", corpus, "-o", target, "--filterable", "year:number", "--filterable", "lang"
    )
    assert built.exit_code == 0, built.output
    add = tmp_path / "add.jsonl"
    add.write_text(
        json.dumps({"_id": "a2", "text": "offshore wind makes electricity", "metadata": {"year": 2025}}) + "\n"
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("a3\n")
    updated = _run("index", "update", target, "--add", add, "--delete", ids, "--no-compact", "--json")
    assert updated.exit_code == 0, updated.output
    summary = json.loads(updated.output)
    assert summary | {"seconds": 0} == {
        "path": str(target),
        "generation": 2,
        "num_docs": 3,
        "tombstones": 2,
        "added": 0,
        "replaced": 1,
        "deleted": 1,
        "compacted": False,
        "seconds": 0,
    }
    found = _run("search", target, "electricity", "--filter", "year>=2020", "--json")
    assert [hit["doc_id"] for hit in json.loads(found.output)] == ["a4", "a2"]
    run = tmp_path / "run.trec"
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\telectricity\n")
    ran = _run("run", target, queries, "-o", run, "--filter", "lang=en")
    assert ran.exit_code == 0, ran.output
    assert [line.split()[2] for line in run.read_text().splitlines()] == ["a4", "a1"]
    compacted = _run("index", "compact", target)
    assert compacted.exit_code == 0 and "2 tombstones dropped" in compacted.output
    assert _run("index", "verify", target).exit_code == 0


def test_cli_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from searchkit.cli.main import main

    target = tmp_path / "index"
    Index.build(TINY, target)
    ids = tmp_path / "ids.txt"
    ids.write_text("d1\nnot-there\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("d1\nd 2\n")
    for argv, message in (
        (["index", "update", target, "--delete", ids], f"{ids}: 1 of the ids to delete are not documents"),
        (["index", "update", target, "--delete", bad], f"{bad}:2: document id 'd 2' contains whitespace"),
        (["index", "update", target, "--add", tmp_path / "no.jsonl"], "no.jsonl: no such file"),
        (["index", "update", target], "needs --add CORPUS and/or --delete IDS_FILE"),
        (["search", target, "cats", "--filter", "year>1"], "has no filterable fields"),
    ):
        with pytest.raises(SystemExit) as stop:
            main([str(arg) for arg in argv])
        err = capsys.readouterr().err
        assert stop.value.code == 1 and err.count("\n") == 1 and message in err, err
    assert Index.open(target, verify=True).generation == 1


# ---------------------------------------------------------------------- real data (slow)
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


@pytest.mark.slow
def test_scifact_delete_a_tenth_and_readd_them_edited_equals_a_rebuild(tmp_path: Path) -> None:
    """BM25 on SciFact: 10% of the documents deleted, then re-added with edits; every query's top 100 equals a
    rebuild of the same documents, scores to the bit (the timings, and dense: bench/update.py)."""
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} not found")
    import random

    from searchkit.formats import read_queries

    index = Index.build(SCIFACT, tmp_path / "index")
    victims = random.Random(0).sample(index.docids, index.num_docs // 10)
    edited = [doc._replace(text=doc.text + " (edited) revised findings") for doc in index.documents(victims)]
    index = index.delete_documents(victims).add_documents(edited)
    assert index.num_docs == 5183 and len(index.deleted_rows) == len(victims) == 518
    fresh = _fresh(index, tmp_path / "fresh")
    queries = [query.text for query in read_queries(SCIFACT)]
    ours, oracle = Searcher(index, mode="bm25"), Searcher(fresh, mode="bm25")
    assert ours.search_batch(queries, 100) == oracle.search_batch(queries, 100)
    index.verify()


# ---------------------------------------------------------------------- dense passages
def test_updates_of_a_passage_index_equal_a_fresh_build(tmp_path: Path, tiny_encoder_config: Any) -> None:
    from dataclasses import replace

    from searchkit.config import PassageConfig

    dense = replace(tiny_encoder_config, passages=PassageConfig(tokens=3, stride=2))
    index = Index.build(synthetic_documents(20), tmp_path / "index", dense=dense)
    saved = json.loads((index.path / "manifest.json").read_text())["components"]["dense"]
    assert saved["config"]["passages"] == {"tokens": 3, "stride": 2, "aggregate": "max"}
    assert saved["num_passages"] == index.dense.num_vectors > index.num_docs
    reopened = Index.open(index.path)  # the manifest round trip: the same config, passages and all
    assert reopened.components["dense"] == dense and reopened.dense.passage_offsets is not None
    added = synthetic_documents(4, start=18, seed=5)  # s18, s19 replaced; s20, s21 new
    updated = index.update(add=added, delete=["s3", "s7"], compact=False)
    assert len(updated.deleted_rows) == 4
    updated.verify()
    assert_same_results(updated, _fresh(updated, tmp_path / "fresh"), modes=("dense", "hybrid"))
    compacted = updated.compact()
    assert compacted.dense.num_vectors == int(np.diff(compacted.dense.passage_offsets).sum())
    compacted.verify()
    fresh = _fresh(compacted, tmp_path / "fresh-compacted")
    assert_same_results(compacted, fresh, modes=("dense", "hybrid"))
    np.testing.assert_array_equal(
        np.load(compacted.path / "dense" / "passages.npy"), np.load(fresh.path / "dense" / "passages.npy")
    )
