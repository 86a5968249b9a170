"""Synthetic corpora with a realistic vocabulary, for measuring how searchkit grows with corpus size.

Word frequencies follow a Zipf–Mandelbrot law, ``p(rank) ∝ 1 / (rank + q) ** s`` (Mandelbrot's fit of English:
``s`` ≈ 1.07, ``q`` ≈ 2.7), over a vocabulary whose size grows with the corpus by Heaps' law,
``V = K · tokens ** β`` (English: ``K`` 10–100, ``β`` 0.4–0.6), ``tokens`` being the corpus's expected number of
words. The most frequent ranks are real English function words in their frequency order (the, of, and, ...), so
stopword removal drops about as much as it does on English text; every other rank is a pronounceable pseudo-word
(consonant-vowel syllables, longer for rarer ranks, as in real languages; a few are English words by chance, and
the stemmer conflates a few). Document lengths are lognormal (passages: median 70 words, mean ≈ 80, the size of
an MS MARCO-style passage), queries are short (median 5 words) and drawn from the same word distribution.

A corpus is a pure function of its :class:`CorpusSpec` (seed included): documents come in fixed chunks, each from
its own seeded generator, so generating never holds the corpus in memory, and the same spec always gives the same
bytes. :func:`write_corpus` writes a BEIR folder (``corpus.jsonl`` with ``_id``/``title``/``text``,
``queries.jsonl``, ``synthetic.json`` recording the spec), which :func:`searchkit.formats.read_corpus` and
``Index.build`` read like any other; an existing folder written from the same spec is reused.

>>> import tempfile
>>> spec = CorpusSpec(num_docs=200, seed=7)
>>> folder = write_corpus(spec, tempfile.mkdtemp(), num_queries=5)
>>> from searchkit.formats import read_corpus, read_queries
>>> docs = list(read_corpus(folder))
>>> len(docs), docs[0].doc_id, len(read_queries(folder))
(200, 'd0', 5)
>>> docs == list(SyntheticCorpus(spec).documents())
True
>>> spec.vocab_size  # Heaps' law at the expected 200 · 79 words
3314
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.types import ConfigError, Document, Query

FORMAT = "searchkit-synthetic"


FORMAT_VERSION = 1


SPEC_FILE = "synthetic.json"


CHUNK = 4096
"""Documents drawn per seeded generator: the unit of streaming (part of the format: changing it changes corpora)."""


HEAD_WORDS: list[str] = str.split(
    "the of and to a in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there one all we their been has more if will its would who no so can what about up out into "
    "them some when than only other then also these two may any could our most such over first time very new my after"
)
"""The top ranks: frequent English words (mostly function words) in roughly their frequency order."""


CONSONANTS = "bcdfghjklmnprstvwz"


VOWELS = "aeiou"


_SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]


_DOCS_STREAM, _QUERIES_STREAM, _TITLES_STREAM = 0, 1, 2


def pseudo_word(index: int) -> str:
    """The ``index``-th pseudo-word (0-based): ``index`` in bijective base-90 over consonant-vowel syllables, so
    every index gets a distinct word and the first 90 have one syllable, the next 8,100 two, and so on. A word that
    is one of :data:`HEAD_WORDS` gets a trailing ``q`` (no syllable ends in q, so it stays distinct).

    >>> [pseudo_word(i) for i in (0, 1, 2, 89, 90, 8190)]
    ['ba', 'beq', 'bi', 'zu', 'baba', 'bababa']
    """
    if index < 0:
        raise ValueError(f"pseudo-word index must be >= 0, got {index}")
    base, digits = len(_SYLLABLES), []
    n = index + 1
    while n > 0:
        n, digit = divmod(n - 1, base)
        digits.append(_SYLLABLES[digit])
    word = "".join(reversed(digits))
    return word + "q" if word in _HEAD_SET else word


_HEAD_SET = frozenset(HEAD_WORDS)


def vocabulary(size: int) -> list[str]:
    """The ``size`` most frequent words, rank 1 first: :data:`HEAD_WORDS`, then pseudo-words.

    >>> vocabulary(3), vocabulary(len(HEAD_WORDS) + 2)[-2:]
    (['the', 'of', 'and'], ['ba', 'beq'])
    """
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    head = HEAD_WORDS[:size]
    return head + [pseudo_word(i) for i in range(size - len(head))]


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that decides a synthetic corpus (see the module docstring for the laws and their defaults).

    ``doc_len_median``/``doc_len_sigma``: the lognormal of document lengths in words (clipped to
    ``[min_doc_len, max_doc_len]``); ``query_len_*`` the same for queries; ``title_words``: words of a title (0:
    documents have no title, as MS MARCO passages).
    """

    num_docs: int
    seed: int = 0
    zipf_s: float = 1.07
    zipf_q: float = 2.7
    heaps_k: float = 10.0
    heaps_beta: float = 0.6
    doc_len_median: float = 70.0
    doc_len_sigma: float = 0.5
    min_doc_len: int = 8
    max_doc_len: int = 400
    query_len_median: float = 5.0
    query_len_sigma: float = 0.4
    min_query_len: int = 2
    max_query_len: int = 16
    title_words: int = 0

    def __post_init__(self) -> None:
        if self.num_docs < 1:
            raise ConfigError(f"num_docs must be >= 1, got {self.num_docs}")
        if self.zipf_s <= 0 or self.zipf_q < 0:
            raise ConfigError(f"zipf_s must be > 0 and zipf_q >= 0, got {self.zipf_s} and {self.zipf_q}")
        if self.heaps_k <= 0 or not 0 < self.heaps_beta <= 1:
            raise ConfigError(f"heaps_k must be > 0 and heaps_beta in (0, 1], got {self.heaps_k}, {self.heaps_beta}")
        if not 1 <= self.min_doc_len <= self.max_doc_len or not 1 <= self.min_query_len <= self.max_query_len:
            raise ConfigError("length bounds must satisfy 1 <= min <= max")
        if self.doc_len_median <= 0 or self.query_len_median <= 0 or self.title_words < 0:
            raise ConfigError("median lengths must be > 0 and title_words >= 0")

    @property
    def mean_doc_len(self) -> float:
        """Expected words a document (the lognormal's mean, before clipping)."""
        return self.doc_len_median * math.exp(self.doc_len_sigma**2 / 2)

    @property
    def expected_tokens(self) -> float:
        """Expected words in the whole corpus (texts and titles)."""
        return self.num_docs * (self.mean_doc_len + self.title_words)

    @property
    def vocab_size(self) -> int:
        """Heaps' law at :attr:`expected_tokens`: the number of distinct words the corpus draws from."""
        return max(len(HEAD_WORDS), math.ceil(self.heaps_k * self.expected_tokens**self.heaps_beta))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def zipf_mandelbrot(size: int, s: float, q: float) -> np.ndarray:
    """Probabilities of ranks 1..``size`` under ``p(rank) ∝ 1 / (rank + q) ** s`` (float64, summing to 1).

    >>> p = zipf_mandelbrot(1000, 1.0, 0.0)
    >>> round(float(p[0] / p[9]), 6), round(float(p.sum()), 6)
    (10.0, 1.0)
    """
    weights = (np.arange(1, size + 1, dtype=np.float64) + q) ** -s
    return weights / weights.sum()


class SyntheticCorpus:
    """The documents and queries of one :class:`CorpusSpec`, generated chunk by chunk on demand.

    >>> corpus = SyntheticCorpus(CorpusSpec(num_docs=3, seed=1))
    >>> [doc.doc_id for doc in corpus.documents()]
    ['d0', 'd1', 'd2']
    >>> corpus.queries(2)[0].query_id
    'q0'
    """

    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        self.words = np.array(vocabulary(spec.vocab_size), dtype=object)
        cdf = np.cumsum(zipf_mandelbrot(spec.vocab_size, spec.zipf_s, spec.zipf_q))
        cdf[-1] = 1.0
        self._cdf = cdf

    def __repr__(self) -> str:
        return f"SyntheticCorpus({self.spec})"

    def _rng(self, stream: int, chunk: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, stream, chunk])

    def _lengths(self, rng: np.random.Generator, count: int, median: float, sigma: float, lo: int, hi: int) -> Any:
        lengths = np.rint(rng.lognormal(math.log(median), sigma, size=count))
        return np.clip(lengths, lo, hi).astype(np.int64)

    def _texts(self, rng: np.random.Generator, lengths: np.ndarray) -> list[str]:
        """One text of ``lengths[i]`` words for each i: words drawn independently from the Zipf–Mandelbrot law."""
        ranks = np.searchsorted(self._cdf, rng.random(int(lengths.sum())), side="right")
        words: list[str] = self.words[np.minimum(ranks, len(self._cdf) - 1)].tolist()
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]]
        return [" ".join(words[start:end]) for start, end in zip(starts, ends, strict=True)]

    def chunk(self, index: int) -> list[Document]:
        """Documents ``index * CHUNK`` up to the next chunk (or the corpus's end)."""
        spec = self.spec
        first = index * CHUNK
        count = min(CHUNK, spec.num_docs - first)
        if count <= 0:
            return []
        rng = self._rng(_DOCS_STREAM, index)
        lengths = self._lengths(rng, count, spec.doc_len_median, spec.doc_len_sigma, spec.min_doc_len, spec.max_doc_len)
        texts = self._texts(rng, lengths)
        if spec.title_words:
            titles = self._texts(self._rng(_TITLES_STREAM, index), np.full(count, spec.title_words, dtype=np.int64))
        else:
            titles = [""] * count
        return [
            Document(f"d{first + i}", text, title) for i, (text, title) in enumerate(zip(texts, titles, strict=True))
        ]

    def documents(self) -> Iterator[Document]:
        """Every document, in order (ids ``d0``, ``d1``, ...), one chunk in memory at a time."""
        for index in range(-(-self.spec.num_docs // CHUNK)):
            yield from self.chunk(index)

    def queries(self, count: int) -> list[Query]:
        """``count`` queries (ids ``q0``, ``q1``, ...): short texts from the documents' word distribution; the
        first ``n`` of them are the same for any ``count`` >= ``n``."""
        spec, queries = self.spec, list[Query]()
        for index in range(-(-count // CHUNK)):
            first = index * CHUNK
            rng = self._rng(_QUERIES_STREAM, index)
            # a whole chunk each time, so that fewer queries are a prefix of more
            lengths = self._lengths(
                rng, CHUNK, spec.query_len_median, spec.query_len_sigma, spec.min_query_len, spec.max_query_len
            )
            texts = self._texts(rng, lengths)[: count - first]
            queries.extend(Query(f"q{first + i}", text) for i, text in enumerate(texts))
        return queries


def _spec_record(spec: CorpusSpec, num_queries: int) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": spec.to_json(), "num_queries": num_queries}


def _write_lines(path: Path, records: Iterable[dict[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_corpus(spec: CorpusSpec, folder: str | Path, *, num_queries: int = 1000, reuse: bool = True) -> Path:
    """Write ``spec``'s corpus as a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``synthetic.json``); return it.

    Streams: one chunk of documents in memory at a time. With ``reuse``, a folder whose ``synthetic.json`` records
    the same spec and query count is returned as it is (``synthetic.json`` is written last, so a folder whose
    writing was interrupted is written again).
    """
    folder = Path(folder)
    record = _spec_record(spec, num_queries)
    marker = folder / SPEC_FILE
    if reuse and marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == record:
                return folder
        except ValueError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    corpus = SyntheticCorpus(spec)
    _write_lines(
        folder / "corpus.jsonl",
        ({"_id": doc.doc_id, "title": doc.title, "text": doc.text} for doc in corpus.documents()),
    )
    _write_lines(folder / "queries.jsonl", ({"_id": q.query_id, "text": q.text} for q in corpus.queries(num_queries)))
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, marker)
    return folder


# ---------------------------------------------------------------------- measuring the laws on a sample
def rank_frequency_slope(counts: Sequence[int] | np.ndarray, q: float = 0.0, *, min_count: int = 20) -> float:
    """The slope of log(frequency) against log(rank + ``q``) over the words seen at least ``min_count`` times,
    ranks ordered by count (about ``-s`` for a Zipf–Mandelbrot sample; the count floor keeps out the noisy tail).

    >>> counts = [round(1e6 / r) for r in range(1, 2000)]
    >>> round(rank_frequency_slope(counts), 3)
    -1.0
    """
    ordered = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    ordered = ordered[ordered >= min_count]
    if len(ordered) < 3:
        raise ValueError(f"fewer than 3 words seen at least {min_count} times: sample more")
    ranks = np.arange(1, len(ordered) + 1, dtype=np.float64)
    slope, _ = np.polyfit(np.log(ranks + q), np.log(ordered), 1)
    return float(slope)


def heaps_curve(texts: Iterable[str], points: int = 8) -> list[tuple[int, int]]:
    """(words read, distinct words seen) at ``points`` log-spaced places through ``texts`` (whitespace words).

    >>> heaps_curve(["a b", "a c", "d"], points=2)
    [(1, 1), (5, 4)]
    """
    words = [word for text in texts for word in text.split()]
    if not words:
        return []
    marks = sorted({round(float(x)) for x in np.geomspace(1, len(words), points)})
    seen: set[str] = set()
    curve, position = [], 0
    for mark in marks:
        seen.update(words[position:mark])
        position = mark
        curve.append((mark, len(seen)))
    return curve


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """The slope of log(value) against log(size) (least squares): ``value ∝ size ** slope``.

    >>> round(growth_exponent([1e5, 3e5, 1e6], [2.0, 6.0, 20.0]), 3)
    1.0
    """
    if len(sizes) != len(values) or len(sizes) < 2:
        raise ValueError("need at least two (size, value) pairs")
    slope, _ = np.polyfit(np.log(np.asarray(sizes, dtype=np.float64)), np.log(np.asarray(values, np.float64)), 1)
    return float(slope)
