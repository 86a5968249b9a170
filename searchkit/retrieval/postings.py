"""Term-frequency postings and exact BM25 statistics: what lets a BM25 index change without a rebuild.

bm25s precomputes every (term, document) score with the collection's statistics (the number of documents, each
term's document frequency, the average document length), so adding or deleting any document changes every score.
The BM25 component therefore also keeps what its scores are made of: each posting's term frequency, parallel to
bm25s's score arrays (same column order, same rows), and every row's length in analyzed terms (-1 for a deleted
row, which has no postings and is not counted). After an update, :func:`bm25_scores` recomputes the scores from
them with bm25s's own formulas, vectorized, for the new statistics: no document is analyzed again, queries keep
bm25s's precomputed-score speed, and the scores equal a fresh build of the same documents to float32 rounding.
(Why at update time and not at query time: "Design notes" in README.md, with the measurements.)

>>> flat = np.array([0, 1, 0, 2], dtype=np.int32)        # row 0: terms 0, 1, 0; row 1: term 2
>>> postings = from_term_ids(flat, np.array([0, 3, 4]), vocab_size=3)
>>> postings.tf.tolist(), postings.indices.tolist(), postings.indptr.tolist(), postings.doclen.tolist()
([2, 1, 1], [0, 0, 1], [0, 1, 2, 3], [3, 1])
>>> dead = np.array([False, False, True])                  # keep row 1, add both rows again, delete the last
>>> later = postings.rewrite(keep=np.array([1]), dead=dead, new=postings)
>>> later.indices.tolist(), later.tf.tolist(), later.doclen.tolist()
([1, 1, 0], [2, 1, 1], [1, 3, -1])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from searchkit.config import BM25Config

_CHUNK = 1 << 22
"""Postings scored per step (bounded temporaries on big indexes)."""


_NONOCCURRENCE_METHODS = ("bm25l", "bm25+")


class Postings(NamedTuple):
    """Term frequencies in bm25s's CSC layout (a column per term, rows ascending) and every row's length."""

    tf: np.ndarray
    """int32, one per posting: how often the column's term occurs in the row's document."""
    indices: np.ndarray
    """int32 row of each posting."""
    indptr: np.ndarray
    """int64, vocab_size + 1: column t is postings ``indptr[t]:indptr[t + 1]``."""
    doclen: np.ndarray
    """int32, one per row: the document's analyzed terms; -1 for a deleted row (no postings, not counted)."""

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_rows(self) -> int:
        return len(self.doclen)

    def terms(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """The column (term id) of postings ``start:end``."""
        end = len(self.indices) if end is None else end
        return np.searchsorted(self.indptr, np.arange(start, end), side="right") - 1

    def rewrite(self, keep: np.ndarray, dead: np.ndarray, new: Postings) -> Postings:
        """Rows ``keep`` (increasing; renumbered 0, 1, ...), then ``new``'s rows after them; the rows where ``dead``
        (a mask over the result's rows) lose their postings and get length -1.

        ``new`` numbers its terms in this vocabulary, extended by the terms it adds (ids from ``vocab_size`` on).
        """
        keep = np.asarray(keep, dtype=np.int64)
        if len(keep) > 1 and bool(np.any(np.diff(keep) <= 0)):
            raise ValueError("rows to keep must be increasing")
        num_rows = len(keep) + new.num_rows
        if len(dead) != num_rows:
            raise ValueError(f"dead has {len(dead)} rows, the result has {num_rows}")
        renumber = np.full(self.num_rows, -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        rows = np.concatenate([renumber[self.indices], new.indices.astype(np.int64) + len(keep)])
        terms = np.concatenate([self.terms(), new.terms()])
        tf = np.concatenate([self.tf, new.tf])
        alive = rows >= 0
        alive[alive] = ~dead[rows[alive]]
        rows, terms, tf = rows[alive], terms[alive], tf[alive]
        # Both parts are sorted by term with rows ascending, and every new row follows every kept row: a stable sort
        # by term (a merge of two runs) gives the CSC order.
        order = np.argsort(terms, kind="stable")
        vocab_size = max(self.vocab_size, new.vocab_size)
        counts = np.bincount(terms, minlength=vocab_size)
        doclen = np.concatenate([self.doclen[keep], new.doclen]).astype(np.int32)
        doclen[dead] = -1
        return Postings(
            tf[order].astype(np.int32),
            rows[order].astype(np.int32),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            doclen,
        )


def from_term_ids(flat: np.ndarray, offsets: np.ndarray, vocab_size: int) -> Postings:
    """The postings of documents given as their term ids back to back (row i: ``flat[offsets[i]:offsets[i + 1]]``)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    num_rows = len(offsets) - 1
    lengths = np.diff(offsets)
    rows = np.repeat(np.arange(num_rows, dtype=np.int64), lengths)
    unique, counts = np.unique(np.asarray(flat, dtype=np.int64) * max(num_rows, 1) + rows, return_counts=True)
    terms, rows = np.divmod(unique, max(num_rows, 1))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(terms, minlength=vocab_size))]).astype(np.int64)
    return Postings(counts.astype(np.int32), rows.astype(np.int32), indptr, lengths.astype(np.int32))


def statistics(postings: Postings) -> dict[str, Any]:
    """The collection statistics BM25 scores depend on: live documents, their total and average length."""
    lengths = postings.doclen[postings.doclen >= 0]
    num_live, total = len(lengths), int(lengths.sum(dtype=np.int64))
    return {
        "num_docs": postings.num_rows,
        "num_live": num_live,
        "total_len": total,
        "num_tokens": total,
        "avg_doc_len": total / num_live if num_live else 0.0,
        "vocab_size": postings.vocab_size,
        "postings": len(postings.indices),
    }


def bm25_scores(postings: Postings, config: BM25Config) -> tuple[np.ndarray, np.ndarray | None]:
    """bm25s's score of every posting (float32, what ``data.csc.index.npy`` holds) and, for bm25l and bm25+, its
    non-occurrence array, for the statistics of ``postings``' live rows.

    bm25s's formulas (``bm25s.scoring``) are applied to arrays instead of one document at a time; the idf is
    computed once per distinct document frequency.
    """
    from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

    stats = statistics(postings)
    n, avg = stats["num_live"], stats["avg_doc_len"]
    idf_of, tfc = _select_idf_scorer(config.method), _select_tfc_scorer(config.method)
    df = np.diff(postings.indptr)
    distinct = np.unique(df[df > 0])
    idf64 = np.zeros(postings.vocab_size, dtype=np.float64)
    if len(distinct):
        values = np.array([idf_of(int(value), N=n) for value in distinct], dtype=np.float64)
        idf64[df > 0] = values[np.searchsorted(distinct, df[df > 0])]
    idf = idf64.astype(np.float32)  # bm25s keeps the idf in float32, the non-occurrence score from the float64 one
    nonoccurrence = None
    if config.method in _NONOCCURRENCE_METHODS:
        absent = tfc(tf_array=0, l_d=avg, l_avg=avg, k1=config.k1, b=config.b, delta=config.delta)
        nonoccurrence = (idf64 * absent).astype(np.float32)
    data = np.empty(len(postings.indices), dtype=np.float32)
    for start in range(0, len(data), _CHUNK):
        end = min(start + _CHUNK, len(data))
        terms = postings.terms(start, end)
        # l_d as an array makes the length part float64, as bm25s's per-document scalar does
        lengths = postings.doclen[postings.indices[start:end]]
        part = tfc(
            tf_array=postings.tf[start:end].astype(np.float32),
            l_d=lengths,
            l_avg=avg,
            k1=config.k1,
            b=config.b,
            delta=config.delta,
        )
        scores = idf[terms] * part
        if nonoccurrence is not None:
            scores -= nonoccurrence[terms]
        data[start:end] = scores
    return data, nonoccurrence
