"""Probe: peak memory and time of searchkit.postings.from_term_ids against a chunked term-frequency pass that
reuses bm25s's CSC layout, on the real term ids of a synthetic corpus (the step that sets BM25 build peak RSS)."""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from array import array
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, "/work/main")
from searchkit.text.analyzers import Analyzer  # noqa: E402
from searchkit.config import BM25Config  # noqa: E402
from searchkit.retrieval.postings import from_term_ids  # noqa: E402


def term_frequencies(
    flat: np.ndarray, offsets: np.ndarray, indptr: np.ndarray, indices: np.ndarray, chunk_tokens: int = 1 << 22
) -> np.ndarray:
    """int32 term frequency of every posting of the CSC layout ``indptr``/``indices`` (bm25s's: a column per term,
    rows ascending) of documents given as term ids back to back; rows are processed ``chunk_tokens`` tokens at a
    time, so the only array as long as the postings is the result. Raises when the layout does not match."""
    offsets = np.asarray(offsets, dtype=np.int64)
    num_rows = len(offsets) - 1
    tf = np.empty(len(indices), dtype=np.int32)
    fill = np.array(indptr[:-1], dtype=np.int64)  # next free slot of each column
    row = 0
    while row < num_rows:
        end = int(np.searchsorted(offsets, offsets[row] + chunk_tokens, side="right")) - 1
        end = min(max(end, row + 1), num_rows)
        lengths = np.diff(offsets[row : end + 1])
        rows = np.repeat(np.arange(row, end, dtype=np.int64), lengths)
        keys, counts = np.unique(
            np.asarray(flat[offsets[row] : offsets[end]], dtype=np.int64) * num_rows + rows, return_counts=True
        )
        terms, rows = np.divmod(keys, num_rows)  # sorted by term, then row
        if len(terms) == 0:  # only empty documents
            row = end
            continue
        first = np.flatnonzero(np.concatenate([[True], terms[1:] != terms[:-1]]))
        sizes = np.diff(np.concatenate([first, [len(terms)]]))
        dest = fill[terms] + (np.arange(len(terms)) - np.repeat(first, sizes))
        if not np.array_equal(indices[dest], rows):
            raise RuntimeError("the score arrays are not laid out as expected")
        tf[dest] = counts
        fill[terms[first]] += sizes
        row = end
    if not np.array_equal(fill, indptr[1:]):
        raise RuntimeError("the score arrays are not laid out as expected")
    return tf


def main() -> None:
    corpus = Path(sys.argv[1])
    analyzer = Analyzer.from_config(BM25Config())
    flat, offsets, word_ids, vocab = array("i"), array("q", [0]), {}, {}
    start = time.perf_counter()
    with (corpus / "corpus.jsonl").open(encoding="utf-8") as handle:
        while lines := list(islice(handle, 512)):
            texts = [json.loads(line)["text"] for line in lines]
            offsets.extend(analyzer.add_ids(texts, word_ids, vocab, flat))
    print(f"analyzed in {time.perf_counter() - start:.1f}s: {len(offsets) - 1} docs, {len(flat)} tokens")
    term_ids = np.frombuffer(flat, dtype=np.intc)
    offs = np.frombuffer(offsets, dtype=np.int64)

    tracemalloc.start()
    start = time.perf_counter()
    postings = from_term_ids(term_ids, offs, len(vocab))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    print(
        f"from_term_ids: {seconds:.2f}s, peak {peak / 2**20:.0f} MiB allocated during the call "
        f"({len(postings.tf)} postings; its result: {sum(a.nbytes for a in postings) / 2**20:.0f} MiB)"
    )
    tracemalloc.stop()

    tracemalloc.start()
    start = time.perf_counter()
    tf = term_frequencies(term_ids, offs, postings.indptr, postings.indices)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    print(
        f"chunked term_frequencies: {seconds:.2f}s, peak {peak / 2**20:.0f} MiB allocated during the call "
        f"(result {tf.nbytes / 2**20:.0f} MiB); equal: {np.array_equal(tf, postings.tf)}"
    )


if __name__ == "__main__":
    main()
