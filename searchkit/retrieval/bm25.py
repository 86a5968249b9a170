"""BM25 retrieval on the bm25s engine: a visible analyzer, a streamed build, memory-mapped search.

The analyzer is a named choice (:mod:`searchkit.text.analyzers`: ``en`` is bm25s's Tokenizer steps with its term
ids; ``cjk-bigram``, ``cjk-unigram-bigram`` and ``zh`` read Chinese). Its settings, the stopword list itself and the
vocabulary are saved as JSON next to bm25s's arrays, so a query always goes through the analyzer its index was built
with (a query analyzed ahead of time by another analyzer is refused); :meth:`BM25Retriever.analyze` shows what it
makes of any text.

Files in a component folder (bm25s's own names, so ``bm25s.BM25.load(folder, mmap=True)`` reads it too)::

    data.csc.index.npy, indices.csc.index.npy, indptr.csc.index.npy   scores, one CSC column a term
    nonoccurrence_array.index.npy     bm25l and bm25+ only: the score of a term a document lacks
    vocab.index.json                  analyzed term -> column
    params.index.json                 bm25s's parameters (method, k1, b, delta, num_docs)
    tf.csc.index.npy                  int32 term frequency of every posting (parallel to data.csc.index.npy)
    doclen.index.npy                  int32 analyzed length of every row; -1: a deleted row (no postings)
    searchkit.json                    BM25Config, analyzer settings (stopword list included), statistics

Documents are tokenized in chunks and only their term ids are kept (4 bytes a token) until the arrays exist.
A query adds up its terms' columns; only documents sharing a term with it are results (score > 0, as in
Lucene), ordered by :func:`~searchkit.types.sort_hits`. A tie at the k-th place goes the same way (larger
doc id first), so results never depend on partition order. ``allowed`` (a mask over rows: a metadata filter)
is applied before the top k is taken, so k results come back whenever k allowed documents match.

The term frequencies and lengths let :meth:`BM25Retriever.rewrite` add, drop and renumber rows without analyzing
any kept document again, with scores recomputed for the new statistics (:mod:`searchkit.retrieval.postings`). An index
written before they were stored gets them on its first update (every document analyzed once).

>>> import tempfile
>>> docs = [Document("a", "Solar panels make electricity"), Document("b", "Wind turbines", title="Wind")]
>>> bm25 = BM25Retriever.build(docs, tempfile.mkdtemp())
>>> bm25.analyze("The winds of change")
['wind', 'chang']
>>> [hit.doc_id for hit in bm25.search("wind power", k=10)]
['b']
"""

from __future__ import annotations

import json
import logging
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import BM25Config, config_from_dict, config_to_dict
from searchkit.formats import document_text
from searchkit.ranking.arrays import DocIdTable, Ranking, sort_ranking
from searchkit.retrieval.postings import Postings, bm25_scores, from_term_ids, statistics
from searchkit.text.analyzers import AnalyzedText, Analyzer
from searchkit.types import (
    ConfigError,
    DataError,
    Document,
    Hit,
    IndexFormatError,
    check_k,
)

logger = logging.getLogger(__name__)


SETTINGS_FILE = "searchkit.json"


FORMAT_VERSION = 1


TF_FILE = "tf.csc.index.npy"


DOCLEN_FILE = "doclen.index.npy"


_PARAMS = "params.index.json"


_SCORE_RTOL = 1e-5
"""verify: how far a stored score may be from the one its term frequency and the statistics give (float32)."""


_NONOCCURRENCE_METHODS = ("bm25l", "bm25+")


class _TermIdView(Sequence[list[int]]):
    """Documents' term ids as one int32 array plus offsets, which bm25s iterates like a list of lists."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = flat
        self.offsets: list[int] = offsets.tolist()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        return self.flat[self.offsets[row] : self.offsets[row + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        flat, offsets = self.flat, self.offsets
        for row in range(len(offsets) - 1):
            yield flat[offsets[row] : offsets[row + 1]].tolist()


def describe(config: BM25Config) -> str:
    """One line naming the BM25 variant, its parameters and the analyzer (logged on every build and load)."""
    delta = f" delta={config.delta}" if config.method in _NONOCCURRENCE_METHODS else ""
    short = "" if config.min_token_length == 2 else f" min_token_length={config.min_token_length}"
    return (
        f"BM25 {config.method} k1={config.k1} b={config.b}{delta} stemmer={config.stemmer} stopwords={config.stopwords}"
        f" analyzer={config.analyzer}{short}"
    )


def _shape_problem(model: Any) -> str:
    """What is structurally wrong with loaded bm25s arrays (O(1): lengths and end points only), or ''."""
    scores, vocab = model.scores, model.vocab_dict
    data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
    if any(array.ndim != 1 for array in (data, indices, indptr)):
        return "the arrays are not one-dimensional"
    if len(indptr) != len(vocab) + 1:
        return f"indptr has {len(indptr)} entries for {len(vocab)} terms"
    if len(indices) != len(data) or int(indptr[0]) != 0 or int(indptr[-1]) != len(data):
        return "indptr does not describe the data and indices arrays"
    if int(scores["num_docs"]) < 1:
        return f"num_docs is {scores['num_docs']}"
    return ""


def _load_postings(folder: Path, num_postings: int, num_docs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The memory-mapped term frequencies and row lengths (None when the component predates them), shape-checked."""
    tf_path, doclen_path = folder / TF_FILE, folder / DOCLEN_FILE
    if not tf_path.exists() and not doclen_path.exists():
        return None
    try:
        tf = np.load(tf_path, mmap_mode="r", allow_pickle=False)
        doclen = np.load(doclen_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{folder}: damaged BM25 term frequencies ({err}); rebuild the index") from None
    if tf.shape != (num_postings,) or doclen.shape != (num_docs,) or tf.dtype != np.int32 or doclen.dtype != np.int32:
        raise IndexFormatError(
            f"{folder}: {TF_FILE} {tf.dtype}{tf.shape} and {DOCLEN_FILE} {doclen.dtype}{doclen.shape} do not match "
            f"{num_postings} postings and {num_docs} rows; rebuild the index"
        )
    return np.asarray(tf), np.asarray(doclen)


class BM25Retriever:
    """Lexical retrieval over one component folder: bm25s's score arrays, memory-mapped.

    Make one with :meth:`build` or :meth:`load`; ``config`` is what the arrays were built with.
    """

    component = "bm25"

    def __init__(
        self,
        model: Any,
        analyzer: Analyzer,
        config: BM25Config,
        docids: Sequence[str],
        folder: Path,
        stats: dict[str, Any],
        expected_config: BM25Config | None = None,
        postings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.config = config
        self.docids = docids
        self.folder = folder
        self.stats = stats
        self._expected_config = expected_config if expected_config is not None else config
        self._doc_table: DocIdTable | None = None
        self._analyzer = analyzer
        self._vocab: dict[str, int] = model.vocab_dict
        scores = model.scores
        # Plain ndarray views of the memory maps: slicing an np.memmap runs a Python-level subclass hook.
        self._data = np.asarray(scores["data"])
        self._indices = np.asarray(scores["indices"])
        self._indptr = np.asarray(scores["indptr"])
        self.num_docs = int(scores["num_docs"])
        nonoccurrence = model.nonoccurrence_array
        self._nonoccurrence = None if nonoccurrence is None else np.asarray(nonoccurrence)
        # term frequencies and row lengths (None: a component written before they were stored)
        self._tf: np.ndarray | None = postings[0] if postings is not None else None
        self._doclen: np.ndarray | None = postings[1] if postings is not None else None

    def __repr__(self) -> str:
        return f"BM25Retriever({describe(self.config)}, {self.num_docs} docs, {self.vocab_size} terms)"

    @property
    def vocab_size(self) -> int:
        """Number of distinct analyzed terms in the index."""
        return len(self._vocab)

    # ------------------------------------------------------------------ build / load
    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        folder: str | Path,
        config: BM25Config | None = None,
        docids: Sequence[str] | None = None,
        show_progress: bool = False,
        *,
        chunk_size: int = 512,
    ) -> BM25Retriever:
        """Analyze ``docs`` (streamed, ``chunk_size`` at a time), build the arrays, save them in ``folder``.

        Row i scores the i-th document; ``docids`` names the rows (the documents' own ids when None).
        """
        from bm25s import BM25
        from bm25s import __version__ as bm25s_version

        config = config if config is not None else BM25Config()
        if chunk_size <= 0:
            raise ConfigError(f"chunk_size must be > 0, got {chunk_size}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        analyzer = Analyzer.from_config(config)
        logger.info("building %s", describe(config))

        flat = array("i")  # every document's term ids, back to back
        offsets = array("q", [0])
        word_ids: dict[str, int] = {}
        vocab: dict[str, int] = {}
        own_ids: list[str] = []
        stream = iter(docs)
        progress = None
        if show_progress:
            total = len(docids) if docids is not None else None
            progress = tqdm(total=total, desc="BM25 analyzing", unit="doc", dynamic_ncols=True)
        while chunk := list(islice(stream, chunk_size)):
            if docids is None:
                own_ids.extend(str(doc.doc_id) for doc in chunk)
            offsets.extend(analyzer.add_ids([document_text(doc) for doc in chunk], word_ids, vocab, flat))
            if progress is not None:
                progress.update(len(chunk))
        if progress is not None:
            progress.close()
        del word_ids

        num_docs = len(offsets) - 1
        names = list(docids) if docids is not None else own_ids
        if num_docs == 0:
            raise DataError("cannot build a BM25 index over no documents")
        if len(names) != num_docs:
            raise DataError(f"BM25 build got {num_docs} documents but {len(names)} doc ids")
        if not vocab:
            logger.warning("BM25: no document has an indexable term; every search will return nothing")
        term_ids = np.frombuffer(flat, dtype=np.intc)
        model = BM25(k1=config.k1, b=config.b, delta=config.delta, method=config.method, backend="numpy")
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 average length when every document is empty
            model.scores = model.build_index_from_ids(
                unique_token_ids=list(range(len(vocab))),
                corpus_token_ids=_TermIdView(term_ids, np.frombuffer(offsets, dtype=np.int64)),
                show_progress=show_progress,
            )
        model.vocab_dict = vocab
        postings = from_term_ids(term_ids, np.frombuffer(offsets, dtype=np.int64), len(vocab))
        if not (
            np.array_equal(postings.indptr, model.scores["indptr"])
            and np.array_equal(postings.indices, model.scores["indices"])
        ):  # bm25s's CSC has a column per term, rows ascending: the term frequencies must line up with it
            raise RuntimeError(f"bm25s {bm25s_version} laid out its score arrays in an unexpected order")
        stats = cls._save(folder, model, postings, config, analyzer)
        logger.info(
            "built %s over %d docs: %d terms, %d postings, average length %.1f terms",
            describe(config),
            num_docs,
            stats["vocab_size"],
            stats["postings"],
            stats["avg_doc_len"],
        )
        return cls(model, analyzer, config, names, folder, stats, postings=(postings.tf, postings.doclen))

    @staticmethod
    def _save(folder: Path, model: Any, postings: Postings, config: BM25Config, analyzer: Analyzer) -> dict[str, Any]:
        """Write bm25s's files (``model.save``), the term frequencies and lengths, and searchkit.json; the stats."""
        from bm25s import __version__ as bm25s_version

        model.save(folder, show_progress=False)
        np.save(folder / TF_FILE, postings.tf, allow_pickle=False)
        np.save(folder / DOCLEN_FILE, postings.doclen, allow_pickle=False)
        stats = statistics(postings)
        settings = {
            "format_version": FORMAT_VERSION,
            "config": config_to_dict(config),
            "analyzer": analyzer.to_json(),
            "stats": stats,
            "bm25s_version": bm25s_version,
        }
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        return stats

    @classmethod
    def rewrite(
        cls,
        source: BM25Retriever,
        folder: str | Path,
        keep: np.ndarray,
        dead: np.ndarray,
        new_docs: Sequence[Document],
        docids: Sequence[str],
        every_document: Callable[[], Iterable[Document]] | None = None,
    ) -> BM25Retriever:
        """Write at ``folder`` the component of ``source``'s rows ``keep`` followed by ``new_docs``, where the rows
        marked in ``dead`` (a mask over the result's rows) are deleted; every score recomputed for the new statistics.

        Only ``new_docs`` are analyzed; ``every_document`` (the source's documents in row order) is read only when
        ``source`` was written before term frequencies were stored. ``docids`` names the result's rows.
        """
        from bm25s import BM25

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = source.config
        postings = source.postings(every_document)
        vocab = dict(source._vocab)
        flat = array("i")
        offsets = [0]
        word_ids: dict[str, int] = {}
        for start in range(0, len(new_docs), 512):
            chunk = [document_text(doc) for doc in new_docs[start : start + 512]]
            offsets.extend(source._analyzer.add_ids(chunk, word_ids, vocab, flat))
        added = from_term_ids(np.frombuffer(flat, dtype=np.intc), np.asarray(offsets, dtype=np.int64), len(vocab))
        updated = postings.rewrite(keep, dead, added)
        data, nonoccurrence = bm25_scores(updated, config)
        model = BM25(k1=config.k1, b=config.b, delta=config.delta, method=config.method, backend="numpy")
        model.scores = {"data": data, "indices": updated.indices, "indptr": updated.indptr, "num_docs": len(docids)}
        model.vocab_dict = vocab
        model.nonoccurrence_array = nonoccurrence
        stats = cls._save(folder, model, updated, config, source._analyzer)
        logger.info(
            "rewrote %s: %d rows (%d live), %d added, %d terms, %d postings",
            describe(config),
            stats["num_docs"],
            stats["num_live"],
            len(new_docs),
            stats["vocab_size"],
            stats["postings"],
        )
        return cls(model, source._analyzer, config, docids, folder, stats, postings=(updated.tf, updated.doclen))

    def postings(self, every_document: Callable[[], Iterable[Document]] | None = None) -> Postings:
        """The term frequencies and row lengths behind the scores (see :mod:`searchkit.retrieval.postings`).

        A component written before they were stored analyzes ``every_document`` (its documents in row order) once.
        """
        if self._tf is not None and self._doclen is not None:
            return Postings(np.asarray(self._tf), self._indices, self._indptr, np.asarray(self._doclen))
        if every_document is None:
            raise IndexFormatError(f"{self.folder}: no stored term frequencies, and no documents to count them from")
        logger.info(
            "%s: counting the term frequencies of every document once (index built before they were stored)",
            self.folder,
        )
        flat = array("i")
        offsets = [0]
        vocab = dict(self._vocab)
        word_ids: dict[str, int] = {}

        stream = iter(every_document())
        while chunk := list(islice(stream, 512)):
            offsets.extend(self._analyzer.add_ids([document_text(doc) for doc in chunk], word_ids, vocab, flat))
        if len(vocab) != self.vocab_size or len(offsets) - 1 != self.num_docs:
            raise IndexFormatError(f"{self.folder}: the documents do not match the BM25 arrays; rebuild the index")
        return from_term_ids(np.frombuffer(flat, dtype=np.intc), np.asarray(offsets, dtype=np.int64), len(vocab))

    def deleted_rows(self) -> np.ndarray:
        """Rows the component holds as deleted (length -1: no postings, not counted in the statistics)."""
        if self._doclen is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.asarray(self._doclen) < 0)

    @classmethod
    def load(
        cls, folder: str | Path, config: BM25Config | None = None, docids: Sequence[str] | None = None
    ) -> BM25Retriever:
        """Open a folder written by :meth:`build`; the arrays are memory-mapped (fast, little RAM).

        ``config`` is what the caller expects (the saved one when None) and ``docids`` names the rows
        (``"0"``, ``"1"``, ... when None). Disagreements are logged here and listed by :meth:`verify`.
        """
        from bm25s import BM25

        folder = Path(folder)
        settings_path = folder / SETTINGS_FILE
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexFormatError(f"{folder}: not a searchkit BM25 folder (no {SETTINGS_FILE})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFormatError(f"{settings_path}: corrupt ({err}); rebuild the index") from None
        if not isinstance(settings.get("format_version"), int) or settings["format_version"] > FORMAT_VERSION:
            raise IndexFormatError(
                f"{settings_path}: BM25 format {settings.get('format_version')!r} is not one this searchkit "
                f"reads (up to {FORMAT_VERSION}); upgrade searchkit or rebuild the index"
            )
        saved = config_from_dict(BM25Config, settings["config"])
        if config is not None and config != saved:
            logger.warning("%s was built with %s, not %s", folder, describe(saved), describe(config))
        analyzer = Analyzer.from_json(settings["analyzer"])
        try:
            model = BM25.load(folder, mmap=True, load_vocab=True, show_progress=False)
        except (OSError, ValueError, KeyError) as err:
            raise IndexFormatError(f"{folder}: damaged BM25 arrays ({err}); rebuild the index") from None
        num_docs = int(model.scores["num_docs"])
        shape_problem = _shape_problem(model)
        if shape_problem:  # cheap checks on open (lengths, ends); verify() scans the values
            raise IndexFormatError(f"{folder}: damaged BM25 arrays ({shape_problem}); rebuild the index")
        postings = _load_postings(folder, len(model.scores["data"]), num_docs)
        if docids is None:
            docids = [str(row) for row in range(num_docs)]
        elif len(docids) != num_docs:
            logger.warning("%s scores %d documents but %d doc ids were given", folder, num_docs, len(docids))
        logger.info("loaded %s (%d docs, %d terms) from %s", describe(saved), num_docs, len(model.vocab_dict), folder)
        stats = settings.get("stats", {})
        return cls(model, analyzer, saved, docids, folder, stats, expected_config=config, postings=postings)

    def verify(self) -> list[str]:
        """What is wrong with this component's files and their agreement with the doc ids (empty: sound)."""
        problems: list[str] = []
        if len(self.docids) != self.num_docs:
            problems.append(f"the arrays score {self.num_docs} documents but there are {len(self.docids)} doc ids")
        if self._expected_config != self.config:
            problems.append(f"built with {describe(self.config)}, expected {describe(self._expected_config)}")
        try:
            params = json.loads((self.folder / _PARAMS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            params = {}
            problems.append(f"cannot read {_PARAMS} ({err})")
        for key in ("method", "k1", "b", "delta", "num_docs"):
            expected = self.num_docs if key == "num_docs" else getattr(self.config, key)
            if params.get(key) != expected:
                problems.append(f"{_PARAMS} has {key}={params.get(key)!r}, expected {expected!r}")
        indptr, indices, data = self._indptr, self._indices, self._data
        if len(indptr) != self.vocab_size + 1:
            problems.append(f"indptr has {len(indptr)} entries for {self.vocab_size} terms")
        elif sorted(self._vocab.values()) != list(range(self.vocab_size)):
            problems.append(f"the vocabulary's term ids are not 0..{self.vocab_size - 1}")
        if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != len(data) or len(indices) != len(data):
            problems.append("indptr does not describe the data and indices arrays")
        elif np.any(np.diff(indptr) < 0):
            problems.append("indptr decreases")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.num_docs):
            problems.append(f"document rows outside 0..{self.num_docs - 1}")
        if not np.all(np.isfinite(data)):
            problems.append("non-finite scores")
        if self.config.method in _NONOCCURRENCE_METHODS and (
            self._nonoccurrence is None or len(self._nonoccurrence) != self.vocab_size
        ):
            problems.append("the non-occurrence array is missing or has the wrong length")
        if not problems and self._tf is not None:
            problems.extend(self._postings_problems())
        return problems

    def _postings_problems(self) -> list[str]:
        """The stored term frequencies against the scores: the statistics, and every score recomputed from them."""
        postings = self.postings()
        if len(postings.tf) and int(postings.tf.min()) < 1:
            return [f"{TF_FILE} holds term frequencies below 1"]
        if len(postings.doclen) and int(postings.doclen.min()) < -1:
            return [f"{DOCLEN_FILE} holds negative lengths"]
        if len(postings.indices) and bool((postings.doclen[postings.indices] < 0).any()):
            return [f"deleted rows ({DOCLEN_FILE} -1) still have postings"]
        stats = statistics(postings)
        for key in ("num_live", "total_len"):
            if key in self.stats and self.stats[key] != stats[key]:
                return [f"{SETTINGS_FILE} says {key}={self.stats[key]}, the term frequencies give {stats[key]}"]
        expected, nonoccurrence = bm25_scores(postings, self.config)
        if not np.allclose(self._data, expected, rtol=_SCORE_RTOL, atol=1e-6):
            return ["the scores do not match the term frequencies and statistics"]
        if nonoccurrence is not None and (
            self._nonoccurrence is None or not np.allclose(self._nonoccurrence, nonoccurrence, rtol=_SCORE_RTOL)
        ):
            return ["the non-occurrence array does not match the statistics"]
        return []

    # ------------------------------------------------------------------ analysis and search
    def analyze(self, text: str) -> list[str]:
        """The terms the analyzer makes of ``text``: lowercased, split, stopwords dropped, stemmed.

        Queries and documents both go through it; a query term no document contains is ignored.
        """
        return self._analyzer.terms(text)

    @property
    def analyzer(self) -> Analyzer:
        """The analyzer this component was built with (every query goes through it)."""
        return self._analyzer

    def unknown_terms(self, text: str) -> list[str]:
        """The analyzed terms of ``text`` that no indexed document contains (ignored when searching)."""
        vocab, indptr = self._vocab, self._indptr
        return [
            term for term in self.analyze(text) if term not in vocab or indptr[vocab[term]] == indptr[vocab[term] + 1]
        ]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The best ``k`` documents for one query; the same as ``search_batch([query], k)[0]``."""
        return self.search_batch([query], k)[0]

    def search_batch(
        self, queries: Sequence[str | AnalyzedText], k: int = 10, *, allowed: np.ndarray | None = None
    ) -> list[list[Hit]]:
        """The best ``k`` documents for each query, best first: only documents sharing a term with it (and, with
        ``allowed``, a bool mask over rows, only rows it allows)."""
        ids = self._table.ids
        return [ranking.to_hits(ids) for ranking in self.search_rows(queries, k, allowed=allowed)]

    def search_rows(
        self, queries: Sequence[str | AnalyzedText], k: int = 10, *, allowed: np.ndarray | None = None
    ) -> list[Ranking]:
        """:meth:`search_batch` as arrays (row numbers and scores, best first): what fusion works on.

        A query is a text (analyzed here, by the index's own analyzer) or an :class:`AnalyzedText` made by that same
        analyzer (its fingerprint); one analyzed by any other analyzer is refused.
        """
        if isinstance(queries, str):
            raise ConfigError("search_batch takes a sequence of queries; use search() for one query")
        check_k(k)
        if len(self.docids) != self.num_docs:
            raise IndexFormatError(
                f"{self.folder}: the BM25 arrays score {self.num_docs} documents but there are "
                f"{len(self.docids)} doc ids; rebuild the index"
            )
        if allowed is not None and allowed.shape != (self.num_docs,):
            raise ConfigError(f"allowed must be a bool mask over the {self.num_docs} rows, got shape {allowed.shape}")
        k = min(int(k), self.num_docs)
        vocab = self._vocab
        return [
            self._search_ids(
                [term for term in map(vocab.get, self._query_terms(query)) if term is not None], k, allowed
            )
            for query in queries
        ]

    def _query_terms(self, query: str | AnalyzedText) -> Sequence[str]:
        if isinstance(query, AnalyzedText):
            if query.analyzer != self._analyzer.fingerprint:
                raise ConfigError(
                    f"{self.folder}: a query analyzed by another analyzer (fingerprint {query.analyzer[:12]}); this "
                    f"component's is {self._analyzer.kind} ({self._analyzer.fingerprint[:12]}): pass the query's text"
                )
            return query.terms
        return self._analyzer.terms(query)

    @property
    def _table(self) -> DocIdTable:
        if self._doc_table is None:
            self._doc_table = DocIdTable(self.docids)
        return self._doc_table

    def _search_ids(self, term_ids: list[int], k: int, allowed: np.ndarray | None = None) -> Ranking:
        if not term_ids:
            return Ranking.empty()
        data, indices, indptr = self._data, self._indices, self._indptr
        spans = list(zip(indptr[term_ids].tolist(), indptr[np.add(term_ids, 1)].tolist(), strict=True))
        scores = np.zeros(self.num_docs, dtype=np.float32)
        # One unbuffered add over all the query's postings, in term order: each document gets the same float32
        # additions in the same order as a loop of `scores[column rows] += column scores` would give it, without a
        # fancy-indexed update per term (what made queries slower than bm25s's).
        np.add.at(
            scores,
            np.concatenate([indices[start:end] for start, end in spans]),
            np.concatenate([data[start:end] for start, end in spans]),
        )
        matched = scores > 0
        if allowed is not None:
            matched &= allowed
        rows = np.flatnonzero(matched)
        if len(rows) == 0:
            return Ranking.empty()
        values = scores[rows]
        if self._nonoccurrence is not None:
            # bm25l and bm25+ store (term score - non-occurrence score); every document gets the latter back.
            values += self._nonoccurrence[term_ids].sum(dtype=np.float32)
        if len(rows) > k:
            top = self._top_k(rows, values, k)
            rows, values = rows[top], values[top]
        return sort_ranking(rows, values, self._table.keys)

    def _top_k(self, rows: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
        """Positions of the k best values; a tie at the k-th value goes to larger doc ids (sort_hits)."""
        top = np.argpartition(values, len(values) - k)[-k:]
        threshold = values[top].min()
        if np.count_nonzero(values >= threshold) == k:  # no tie across the cut (the usual case)
            return top
        above = np.flatnonzero(values > threshold)
        tied = np.flatnonzero(values == threshold)
        keep = tied[np.argsort(-self._table.keys[rows[tied]], kind="stable")[: k - len(above)]]
        return np.concatenate([above, keep])
