"""synthetic: seeded Zipf–Mandelbrot corpora with a Heaps'-law vocabulary, streamed to BEIR folders."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from synthetic import (
    CHUNK,
    HEAD_WORDS,
    CorpusSpec,
    SyntheticCorpus,
    growth_exponent,
    heaps_curve,
    pseudo_word,
    rank_frequency_slope,
    vocabulary,
    write_corpus,
    zipf_mandelbrot,
)

from searchkit.config import BM25Config
from searchkit.formats import read_corpus, read_queries
from searchkit.index import Index
from searchkit.types import ConfigError, Document


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _word_counts(spec: CorpusSpec) -> Counter[str]:
    return Counter(word for doc in SyntheticCorpus(spec).documents() for word in doc.text.split())


# ---------------------------------------------------------------------- determinism
def test_same_spec_same_corpus_other_seed_other_corpus() -> None:
    spec = CorpusSpec(num_docs=300, seed=3)
    first = list(SyntheticCorpus(spec).documents())
    assert first == list(SyntheticCorpus(spec).documents())
    assert SyntheticCorpus(spec).queries(50) == SyntheticCorpus(spec).queries(50)
    other = list(SyntheticCorpus(CorpusSpec(num_docs=300, seed=4)).documents())
    assert [doc.text for doc in other] != [doc.text for doc in first]


def test_written_files_are_byte_identical_and_reused(tmp_path: Path) -> None:
    spec = CorpusSpec(num_docs=250, seed=1)
    a = write_corpus(spec, tmp_path / "a", num_queries=20)
    b = write_corpus(spec, tmp_path / "b", num_queries=20)
    for name in ("corpus.jsonl", "queries.jsonl"):
        assert _sha(a / name) == _sha(b / name)
    before = (a / "corpus.jsonl").stat().st_mtime_ns
    assert write_corpus(spec, a, num_queries=20) == a  # same spec: reused, not rewritten
    assert (a / "corpus.jsonl").stat().st_mtime_ns == before
    write_corpus(CorpusSpec(num_docs=260, seed=1), a, num_queries=20)  # another spec: rewritten
    assert sum(1 for _ in read_corpus(a)) == 260


def test_interrupted_folder_is_written_again(tmp_path: Path) -> None:
    spec = CorpusSpec(num_docs=50)
    folder = write_corpus(spec, tmp_path / "c", num_queries=5)
    (folder / "synthetic.json").unlink()  # written last: its absence means an unfinished folder
    (folder / "corpus.jsonl").write_text("", encoding="utf-8")
    write_corpus(spec, folder, num_queries=5)
    assert sum(1 for _ in read_corpus(folder)) == 50


def test_documents_span_chunks_with_consecutive_ids() -> None:
    corpus = SyntheticCorpus(CorpusSpec(num_docs=CHUNK + 7, doc_len_median=5, min_doc_len=2))
    docs = list(corpus.documents())
    assert [doc.doc_id for doc in docs] == [f"d{i}" for i in range(CHUNK + 7)]
    assert corpus.chunk(1) == docs[CHUNK:]
    assert corpus.chunk(2) == []


def test_queries_are_short_and_span_chunks() -> None:
    spec = CorpusSpec(num_docs=100)
    queries = SyntheticCorpus(spec).queries(CHUNK + 3)
    assert [q.query_id for q in queries[-2:]] == [f"q{CHUNK + 1}", f"q{CHUNK + 2}"]
    lengths = np.array([len(q.text.split()) for q in queries])
    assert lengths.min() >= spec.min_query_len and lengths.max() <= spec.max_query_len
    assert 4 <= np.median(lengths) <= 6
    assert SyntheticCorpus(spec).queries(10) == queries[:10]  # a prefix: fewer queries, same first ones


# ---------------------------------------------------------------------- the laws
def test_document_lengths_follow_the_spec() -> None:
    spec = CorpusSpec(num_docs=5000, seed=2)
    lengths = np.array([len(doc.text.split()) for doc in SyntheticCorpus(spec).documents()])
    assert lengths.min() >= spec.min_doc_len and lengths.max() <= spec.max_doc_len
    assert abs(np.median(lengths) - spec.doc_len_median) <= 2
    assert abs(lengths.mean() - spec.mean_doc_len) / spec.mean_doc_len < 0.03
    # lognormal: the log of the lengths has the spec's spread
    assert abs(np.log(lengths).std() - spec.doc_len_sigma) < 0.03


@pytest.mark.parametrize("s", [1.07, 1.3])
def test_rank_frequency_slope_is_the_zipf_exponent(s: float) -> None:
    spec = CorpusSpec(num_docs=4000, seed=5, zipf_s=s)
    counts = _word_counts(spec)
    slope = rank_frequency_slope(list(counts.values()), q=spec.zipf_q, min_count=30)
    assert slope == pytest.approx(-s, abs=0.06)
    # the head is English's function words in order: "the" is the commonest word
    assert counts.most_common(1)[0][0] == "the"


def test_vocabulary_grows_by_heaps_law() -> None:
    small, large = CorpusSpec(num_docs=1000, seed=6), CorpusSpec(num_docs=8000, seed=6)
    # the vocabulary drawn from is K · tokens^β ...
    assert small.vocab_size == pytest.approx(small.heaps_k * small.expected_tokens**small.heaps_beta, abs=1)
    assert growth_exponent([small.expected_tokens, large.expected_tokens], [small.vocab_size, large.vocab_size]) == (
        pytest.approx(small.heaps_beta, abs=1e-3)
    )
    # ... and the distinct words actually seen grow about as fast, across corpora and within one
    seen = [len(_word_counts(spec)) for spec in (small, large)]
    tokens = [sum(_word_counts(spec).values()) for spec in (small, large)]
    assert growth_exponent(tokens, seen) == pytest.approx(small.heaps_beta, abs=0.1)
    curve = [point for point in heaps_curve(doc.text for doc in SyntheticCorpus(large).documents()) if point[0] > 1000]
    assert growth_exponent(*zip(*curve, strict=True)) == pytest.approx(large.heaps_beta, abs=0.1)


def test_zipf_mandelbrot_probabilities() -> None:
    p = zipf_mandelbrot(500, 1.07, 2.7)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(np.diff(p) < 0)
    assert p[0] / p[9] == pytest.approx(((10 + 2.7) / (1 + 2.7)) ** 1.07)


def test_rank_frequency_slope_needs_enough_words() -> None:
    with pytest.raises(ValueError, match="sample more"):
        rank_frequency_slope([100, 5, 1], min_count=20)


# ---------------------------------------------------------------------- words
def test_vocabulary_words_are_distinct_tokens() -> None:
    words = vocabulary(20_000)
    assert len(set(words)) == len(words)
    assert words[: len(HEAD_WORDS)] == HEAD_WORDS
    pattern = re.compile(r"[a-z]{2,}")
    assert all(pattern.fullmatch(word) for word in words[len(HEAD_WORDS) :])
    lengths = [len(pseudo_word(i)) for i in (0, 100, 10_000)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # rarer ranks, longer words
    with pytest.raises(ValueError):
        pseudo_word(-1)


def test_bad_specs_are_config_errors() -> None:
    for bad in ({"num_docs": 0}, {"num_docs": 5, "heaps_beta": 1.5}, {"num_docs": 5, "min_doc_len": 0}):
        with pytest.raises(ConfigError):
            CorpusSpec(**bad)


# ---------------------------------------------------------------------- searchkit reads it
def test_folder_is_a_beir_corpus_searchkit_indexes(tmp_path: Path) -> None:
    spec = CorpusSpec(num_docs=120, seed=9, title_words=3)
    folder = write_corpus(spec, tmp_path / "beir", num_queries=15)
    docs = list(read_corpus(folder))
    assert docs == list(SyntheticCorpus(spec).documents())
    assert all(isinstance(doc, Document) and len(doc.title.split()) == 3 for doc in docs)
    queries = read_queries(folder)
    assert queries == SyntheticCorpus(spec).queries(15)
    index = Index.build(folder, tmp_path / "index", bm25=BM25Config(), dense=None)
    assert index.num_docs == 120
    bm25 = index.bm25
    assert bm25 is not None
    results = bm25.search_batch([q.text for q in queries], k=5)
    assert sum(1 for hits in results if hits) >= 10  # most queries share a word with some document
