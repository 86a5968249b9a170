"""BM25Retriever: oracle scores (rank-bm25), analyzer, round trips, edge cases, tie order, verification."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
import rank_bm25
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchkit.config import BM25_METHODS, BM25Config
from searchkit.retrieval.bm25 import SETTINGS_FILE, BM25Retriever
from searchkit.types import ConfigError, DataError, Document, IndexFormatError, sort_hits

TINY = Path(__file__).parent / "data" / "tiny"
DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"

# Lowercase words of two or more letters: our analyzer (no stemmer, no stopwords) and str.split agree on them.
ORACLE_DOCS = [
    "the cat sat on the mat",
    "the dog chased the cat around the garden the dog barked",
    "solar panels turn sunlight into electricity",
    "wind turbines turn moving air into electricity and the grid stores it",
    "the cat and the dog",
    "batteries store electricity",
    "mice eat seeds",
    "the the the cat cat",
]
ORACLE_QUERIES = ["cat", "the dog", "electricity turn", "cat cat mice", "garden wind air grid", "the"]
PLAIN = {"stemmer": None, "stopwords": None}


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def tiny_docs() -> list[Document]:
    return [Document(r["_id"], r["text"], r.get("title", "")) for r in _read_jsonl(TINY / "corpus.jsonl")]


def tiny_queries() -> dict[str, str]:
    return {r["_id"]: r["text"] for r in _read_jsonl(TINY / "queries.jsonl")}


def build(docs: list[Document], folder: Path, **config: object) -> BM25Retriever:
    return BM25Retriever.build(docs, folder, BM25Config(**config), [doc.doc_id for doc in docs])  # type: ignore[arg-type]


def _docs(texts: list[str]) -> list[Document]:
    return [Document(f"d{i}", text) for i, text in enumerate(texts)]


class _Oracle(rank_bm25.BM25):
    """rank-bm25's corpus statistics (doc_freqs, doc_len, avgdl) scored with each BM25 variant's formula."""

    def __init__(self, corpus: list[list[str]], method: str, k1: float, b: float, delta: float) -> None:
        self.method, self.k1, self.b, self.delta = method, k1, b, delta
        super().__init__(corpus)

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n = self.corpus_size
        formulas = {
            "lucene": lambda df: math.log(1 + (n - df + 0.5) / (df + 0.5)),
            "robertson": lambda df: math.log(max(1.0, (n - df + 0.5) / (df + 0.5))),
            "atire": lambda df: math.log(n / df),
            "bm25l": lambda df: math.log((n + 1) / (df + 0.5)),
            "bm25+": lambda df: math.log((n + 1) / df),
        }
        self.idf = {word: formulas[self.method](df) for word, df in nd.items()}

    def get_scores(self, query: list[str]) -> np.ndarray:
        k1, b, delta = self.k1, self.b, self.delta
        norm = 1 - b + b * np.array(self.doc_len) / self.avgdl
        score = np.zeros(self.corpus_size)
        for term in query:
            if term not in self.idf:
                continue
            tf = np.array([doc.get(term, 0) for doc in self.doc_freqs], dtype=float)
            if self.method in ("lucene", "robertson"):
                tfc = tf / (tf + k1 * norm)
            elif self.method == "atire":
                tfc = tf * (k1 + 1) / (tf + k1 * norm)
            elif self.method == "bm25l":
                c = tf / norm
                tfc = (k1 + 1) * (c + delta) / (k1 + c + delta)
            else:
                tfc = (k1 + 1) * tf / (k1 * norm + tf) + delta
            score += self.idf[term] * tfc
        return score


def _assert_matches(retriever: BM25Retriever, oracle: rank_bm25.BM25, corpus: list[list[str]]) -> None:
    for query in ORACLE_QUERIES:
        terms = query.split()
        expected = oracle.get_scores(terms)
        sharing = [row for row, doc in enumerate(corpus) if set(terms) & set(doc)]
        hits = retriever.search(query, k=100)
        got = {hit.doc_id: hit.score for hit in hits}
        wanted = {f"d{row}": expected[row] for row in sharing if _positive_term_score(oracle, terms, row)}
        assert got.keys() == wanted.keys(), query
        for doc_id, score in wanted.items():
            assert got[doc_id] == pytest.approx(score, rel=1e-5, abs=1e-5), (query, doc_id)
        assert hits == sort_hits(hits)


def _positive_term_score(oracle: rank_bm25.BM25, terms: list[str], row: int) -> bool:
    """A document is a result when one of the query terms it contains has a positive idf (Lucene's rule)."""
    return any(oracle.idf.get(term, 0) > 0 for term in terms if term in oracle.doc_freqs[row])


# ---------------------------------------------------------------------- oracle scores
def test_bm25plus_equals_rank_bm25_bm25plus(tmp_path: Path) -> None:
    """rank_bm25.BM25Plus is bm25s's "bm25+" exactly: idf log((N+1)/df), tf part delta + (k1+1)tf/(k1 L + tf).

    Its scores include the non-occurrence part (idf * delta) of query terms a document lacks, which bm25s
    keeps in a separate array and we add back: the scores must agree, not just the ranking.
    """
    corpus = [text.split() for text in ORACLE_DOCS]
    for k1, b, delta in [(1.5, 0.75, 1.0), (1.2, 0.4, 0.5), (0.9, 1.0, 0.25)]:
        retriever = build(_docs(ORACLE_DOCS), tmp_path / f"{k1}-{b}", method="bm25+", k1=k1, b=b, delta=delta, **PLAIN)
        oracle = rank_bm25.BM25Plus(corpus, k1=k1, b=b, delta=delta)
        _assert_matches(retriever, oracle, corpus)


@pytest.mark.parametrize("method", BM25_METHODS)
def test_every_method_equals_its_formula_on_rank_bm25_statistics(tmp_path: Path, method: str) -> None:
    corpus = [text.split() for text in ORACLE_DOCS]
    retriever = build(_docs(ORACLE_DOCS), tmp_path, method=method, k1=1.2, b=0.75, delta=0.5, **PLAIN)
    _assert_matches(retriever, _Oracle(corpus, method, k1=1.2, b=0.75, delta=0.5), corpus)


def test_term_in_most_documents_has_no_weight_under_robertson(tmp_path: Path) -> None:
    """ "the" is in 5 of 8 documents: Robertson's idf is clamped to 0, so it alone matches nothing."""
    retriever = build(_docs(ORACLE_DOCS), tmp_path, method="robertson", **PLAIN)
    assert retriever.search("the", k=10) == []
    assert [hit.doc_id for hit in retriever.search("the mice", k=10)] == ["d6"]


@pytest.mark.parametrize("method", BM25_METHODS)
def test_scores_equal_raw_bm25s(tmp_path: Path, method: str) -> None:
    import bm25s
    import Stemmer

    docs = tiny_docs()
    texts = [f"{doc.title} {doc.text}" if doc.title else doc.text for doc in docs]
    stemmer = Stemmer.Stemmer("english")
    raw = bm25s.BM25(method=method)
    raw.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    ours = build(docs, tmp_path, method=method)
    for query in tiny_queries().values():
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False)
        rows, scores = raw.retrieve(tokens, k=len(docs), show_progress=False)
        raw_scores = {docs[row].doc_id: float(score) for row, score in zip(rows[0], scores[0], strict=True)}
        for hit in ours.search(query, k=len(docs)):
            assert hit.score == pytest.approx(raw_scores[hit.doc_id], rel=1e-6)


# ---------------------------------------------------------------------- analyzer
def test_analyze_shows_stemming_and_stopwords(tmp_path: Path) -> None:
    stemmed = build(tiny_docs(), tmp_path / "en")
    assert stemmed.analyze("The cats are Chasing MICE!") == ["cat", "chase", "mice"]
    assert stemmed.analyze("the of and") == []
    assert stemmed.analyze("") == []
    plain = build(tiny_docs(), tmp_path / "plain", **PLAIN)
    assert plain.analyze("The cats are Chasing MICE! a") == ["the", "cats", "are", "chasing", "mice"]


def test_analyzer_settings_are_saved_and_win_over_the_callers_config(tmp_path: Path) -> None:
    build(tiny_docs(), tmp_path, stemmer="english", stopwords="en")
    saved = json.loads((tmp_path / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert saved["analyzer"]["stemmer"] == "english" and saved["analyzer"]["stopwords"] == "en"
    assert {"the", "of", "and"} <= set(saved["analyzer"]["stopword_list"])
    docids = [doc.doc_id for doc in tiny_docs()]
    loaded = BM25Retriever.load(tmp_path, BM25Config(stemmer=None, stopwords=None), docids)
    # The folder's analyzer is used: queries are stemmed like the documents were.
    assert loaded.analyze("chasing the cats") == ["chase", "cat"]
    assert [hit.doc_id for hit in loaded.search("chasing", k=3)] == ["d1"]
    assert any("expected" in problem for problem in loaded.verify())


def test_query_stemming_matches_document_forms(tmp_path: Path) -> None:
    retriever = build(_docs(["the runner was running", "a quiet day"]), tmp_path)
    assert [hit.doc_id for hit in retriever.search("runs", k=5)] == ["d0"]


def test_document_analysis_equals_bm25s_tokenizer(tmp_path: Path) -> None:
    """Documents and queries go through one analyzer, and it is bm25s's Tokenizer term for term, id for id."""
    import Stemmer
    from bm25s.tokenization import Tokenizer

    docs = tiny_docs()
    texts = [f"{doc.title} {doc.text}" if doc.title else doc.text for doc in docs]
    retriever = build(docs, tmp_path)
    tokenizer = Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")
    ids = tokenizer.tokenize(texts, show_progress=False, allow_empty=False)
    assert tokenizer.decode(ids) == [retriever.analyze(text) for text in texts]
    vocab = json.loads((tmp_path / "vocab.index.json").read_text(encoding="utf-8"))
    assert vocab == tokenizer.get_vocab_dict()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="abcXYZ é1_ .,-'\n", max_size=40), min_size=1, max_size=6))
def test_analyzer_equals_bm25s_tokenizer_on_any_text(tmp_path: Path, texts: list[str]) -> None:
    import Stemmer
    from bm25s.tokenization import Tokenizer

    retriever = build(_docs(texts), tmp_path)
    tokenizer = Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")
    ids = tokenizer.tokenize(texts, show_progress=False, allow_empty=False)
    assert tokenizer.decode(ids) == [retriever.analyze(text) for text in texts]


def test_unknown_stemmer_or_stopword_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stemmer language 'klingon'"):
        build(tiny_docs(), tmp_path / "a", stemmer="klingon")
    with pytest.raises(ConfigError, match="stopwords 'klingon'"):
        build(tiny_docs(), tmp_path / "b", stopwords="klingon")


# ---------------------------------------------------------------------- search behaviour
def test_tiny_fixture_rankings(tmp_path: Path) -> None:
    retriever = build(tiny_docs(), tmp_path)
    queries = tiny_queries()
    results = retriever.search_batch(list(queries.values()), k=10)
    best = {qid: hits[0].doc_id if hits else None for qid, hits in zip(queries, results, strict=True)}
    assert best == {"q1": "d1", "q2": "d3", "q3": None, "q4": "007", "q5": "d4"}
    assert retriever.search(queries["q2"], k=10) == results[1]
    for hits in results:
        assert all(hit.score > 0 and isinstance(hit.doc_id, str) for hit in hits)


def test_stopword_empty_and_unknown_queries_return_nothing(tmp_path: Path) -> None:
    retriever = build(tiny_docs(), tmp_path)
    assert retriever.search_batch(["the of and", "", "   ", "zyzzyva qwxz", "!!"], k=5) == [
        [],
        [],
        [],
        [],
        [],
    ]
    assert retriever.search_batch([], k=5) == []


def test_k_larger_than_the_corpus_returns_every_matching_document(tmp_path: Path) -> None:
    retriever = build(tiny_docs(), tmp_path)
    hits = retriever.search("electricity solar wind", k=1000)
    assert sorted(hit.doc_id for hit in hits) == ["d3", "d4", "d8"]
    assert hits == sort_hits(hits)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_is_a_config_error(tmp_path: Path, k: object) -> None:
    retriever = build(tiny_docs(), tmp_path)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        retriever.search("cats", k=k)  # type: ignore[arg-type]


def test_a_single_string_is_not_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use search"):
        build(tiny_docs(), tmp_path).search_batch("cats", k=3)


def test_ties_are_ordered_by_doc_id_descending_also_at_the_cut(tmp_path: Path) -> None:
    docs = [Document(doc_id, "red apple") for doc_id in ["b2", "a1", "c3", "ab"]] + [Document("z9", "green pear")]
    retriever = build(docs, tmp_path, **PLAIN)
    assert [hit.doc_id for hit in retriever.search("apple", k=10)] == ["c3", "b2", "ab", "a1"]
    assert [hit.doc_id for hit in retriever.search("apple", k=2)] == ["c3", "b2"]
    assert [hit.doc_id for hit in retriever.search("apple", k=1)] == ["c3"]
    # A higher score still comes first whatever its id.
    docs.append(Document("a0", "red apple apple"))
    retriever = build(docs, tmp_path / "more", **PLAIN)
    assert [hit.doc_id for hit in retriever.search("apple", k=3)] == ["a0", "c3", "b2"]


def test_empty_documents_are_rows_that_never_match(tmp_path: Path) -> None:
    docs = [Document("e1", ""), Document("full", "solar power"), Document("e2", "", title="the")]
    retriever = build(docs, tmp_path)
    assert retriever.num_docs == 3
    assert [hit.doc_id for hit in retriever.search("solar", k=3)] == ["full"]
    nothing = build([Document("e1", ""), Document("e2", "of the")], tmp_path / "none")
    assert nothing.search("solar", k=3) == [] and nothing.verify() == []


@pytest.mark.parametrize("method", BM25_METHODS)
def test_each_method_builds_loads_and_searches(tmp_path: Path, method: str) -> None:
    docs = tiny_docs()
    built = build(docs, tmp_path, method=method)
    loaded = BM25Retriever.load(tmp_path, BM25Config(method=method), [doc.doc_id for doc in docs])
    hits = loaded.search("solar electricity", k=3)
    assert hits[0].doc_id == "d3" and hits == built.search("solar electricity", k=3)
    assert loaded.verify() == []
    assert method in repr(loaded)


# ---------------------------------------------------------------------- build, save, load
def test_round_trip_gives_identical_results(tmp_path: Path) -> None:
    docs = tiny_docs()
    queries = [*tiny_queries().values(), "cats mice garden", "document ids"]
    built = build(docs, tmp_path, k1=0.9, b=0.4)
    loaded = BM25Retriever.load(tmp_path, BM25Config(k1=0.9, b=0.4), [doc.doc_id for doc in docs])
    assert loaded.search_batch(queries, k=8) == built.search_batch(queries, k=8)
    assert loaded.config == built.config and loaded.vocab_size == built.vocab_size
    assert BM25Retriever.load(tmp_path).config == BM25Config(k1=0.9, b=0.4)  # config read from the folder


def test_folder_is_json_and_npy_only_and_readable_by_bm25s(tmp_path: Path) -> None:
    import bm25s

    build(tiny_docs(), tmp_path, method="bm25+")
    assert {path.suffix for path in tmp_path.iterdir()} == {".json", ".npy"}
    for path in tmp_path.glob("*.npy"):
        np.load(path, allow_pickle=False)
    raw = bm25s.BM25.load(tmp_path, mmap=True)
    assert raw.method == "bm25+" and raw.scores["num_docs"] == 8


def test_streamed_chunks_build_the_same_index(tmp_path: Path) -> None:
    docs = tiny_docs()
    ids = [doc.doc_id for doc in docs]
    BM25Retriever.build(iter(docs), tmp_path / "one", BM25Config(), ids)
    BM25Retriever.build((doc for doc in docs), tmp_path / "many", BM25Config(), ids, chunk_size=3)
    for path in (tmp_path / "one").iterdir():
        assert path.read_bytes() == (tmp_path / "many" / path.name).read_bytes(), path.name


def test_docids_default_to_the_documents_ids(tmp_path: Path) -> None:
    retriever = BM25Retriever.build(tiny_docs(), tmp_path)
    assert retriever.search("leading zeros", k=1)[0].doc_id == "007"


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no documents"):
        BM25Retriever.build([], tmp_path / "a", BM25Config(), [])
    with pytest.raises(DataError, match="8 documents but 2 doc ids"):
        BM25Retriever.build(tiny_docs(), tmp_path / "b", BM25Config(), ["d1", "d2"])
    with pytest.raises(IndexFormatError, match="not a searchkit BM25 folder"):
        BM25Retriever.load(tmp_path / "c")


def test_verify_reports_a_wrong_docids_length(tmp_path: Path) -> None:
    docs = tiny_docs()
    build(docs, tmp_path)
    sound = BM25Retriever.load(tmp_path, BM25Config(), [doc.doc_id for doc in docs])
    assert sound.verify() == []
    short = BM25Retriever.load(tmp_path, BM25Config(), [doc.doc_id for doc in docs][:-1])
    assert any("8 documents but there are 7 doc ids" in problem for problem in short.verify())
    with pytest.raises(IndexFormatError, match="7 doc ids"):
        short.search("cats", k=3)


def test_verify_reports_damaged_arrays(tmp_path: Path) -> None:
    docs = tiny_docs()
    build(docs, tmp_path)
    indices = np.load(tmp_path / "indices.csc.index.npy")
    indices[0] = 99
    np.save(tmp_path / "indices.csc.index.npy", indices)
    params = json.loads((tmp_path / "params.index.json").read_text())
    params["k1"] = 2.0
    (tmp_path / "params.index.json").write_text(json.dumps(params))
    problems = BM25Retriever.load(tmp_path, BM25Config(), [doc.doc_id for doc in docs]).verify()
    assert any("outside" in problem for problem in problems)
    assert any("k1=2.0" in problem for problem in problems)


def test_logs_variant_and_parameters_and_stays_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="searchkit.retrieval.bm25"):
        build(tiny_docs(), tmp_path, method="bm25l", k1=1.2, b=0.5, delta=0.7)
        BM25Retriever.load(tmp_path)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("building BM25 bm25l k1=1.2 b=0.5 delta=0.7 stemmer=english") for m in messages)
    assert any(m.startswith("loaded BM25 bm25l k1=1.2 b=0.5 delta=0.7") for m in messages)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # no progress bars unless show_progress


def test_show_progress_draws_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tiny_docs()
    BM25Retriever.build(docs, tmp_path, BM25Config(), [doc.doc_id for doc in docs], show_progress=True)
    assert "BM25 analyzing" in capsys.readouterr().err


# ---------------------------------------------------------------------- property: brute force agrees
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(st.sampled_from(["aa", "bb", "cc", "dd", "ee"]), max_size=6), min_size=1, max_size=9),
    st.lists(st.sampled_from(["aa", "bb", "cc", "zz"]), max_size=3),
    st.integers(min_value=1, max_value=10),
)
def test_results_are_the_brute_force_top_k(tmp_path: Path, words: list[list[str]], query: list[str], k: int) -> None:
    retriever = build(_docs([" ".join(doc) for doc in words]), tmp_path, method="bm25+", **PLAIN)
    hits = retriever.search(" ".join(query), k=k)
    matching = [row for row, doc in enumerate(words) if set(doc) & set(query)]
    if not matching:
        assert hits == []
        return
    expected = rank_bm25.BM25Plus(words, k1=1.5, b=0.75, delta=0.5).get_scores(query)
    assert len(hits) == min(k, len(matching))
    assert hits == sort_hits(hits)
    returned = {int(hit.doc_id[1:]) for hit in hits}
    assert returned <= set(matching)
    for hit in hits:
        assert hit.score == pytest.approx(expected[int(hit.doc_id[1:])], rel=1e-5)
    left_out = [expected[row] for row in matching if row not in returned]
    assert not left_out or min(hit.score for hit in hits) >= max(left_out) - 1e-5


# ---------------------------------------------------------------------- SciFact (slow)
@pytest.mark.slow
def test_scifact_loads_fast_and_matches_raw_bm25s(tmp_path: Path) -> None:
    import bm25s
    import Stemmer

    root = DATASETS / "scifact"
    if not root.is_dir():
        pytest.skip("../shared/datasets/scifact is not available")
    docs = [Document(r["_id"], r["text"], r.get("title", "")) for r in _read_jsonl(root / "corpus.jsonl")]
    queries = [r["text"] for r in _read_jsonl(root / "queries.jsonl")]
    ids = [doc.doc_id for doc in docs]
    BM25Retriever.build(iter(docs), tmp_path, BM25Config(), ids)
    start = time.perf_counter()
    ours = BM25Retriever.load(tmp_path, BM25Config(), ids)
    assert time.perf_counter() - start < 0.5
    stemmer = Stemmer.Stemmer("english")
    texts = [f"{doc.title} {doc.text}" if doc.title else doc.text for doc in docs]
    raw = bm25s.BM25()
    raw.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    rows, scores = raw.retrieve(tokens, k=10, show_progress=False)
    for hits, raw_rows, raw_scores in zip(ours.search_batch(queries, k=10), rows, scores, strict=True):
        assert [hit.score for hit in hits] == pytest.approx([float(s) for s in raw_scores if s > 0], rel=1e-6)
        assert {hit.doc_id for hit in hits[:-1]} <= {ids[row] for row in raw_rows}
