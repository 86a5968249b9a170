"""Living indexes on SciFact: update cost against a full rebuild, equality with the rebuild, BM25 speed after updates,
filtered query latency, and the two BM25 designs measured side by side.

Steps (one run, CPU): build BM25 + dense (+ a ``bucket`` number column, ``crc32(doc id) % 100``, to filter on) over
SciFact; replace 100 documents with edited copies (timed); delete 10% of the documents, then re-add them edited
(timed, as two updates); build the final document set from scratch (the oracle, timed); then

* equality: every SciFact query's BM25 top 100 against the rebuild's (ids, order, scores to the bit), and dense
  (max score difference, identical top 10): dense vectors of re-added documents were encoded in other batches than
  the rebuild's, which bf16 encoding does not make bit-identical (``--dtype fp32`` does);
* BM25 query throughput on the updated index (tombstones in place) against raw bm25s indexing the same final
  documents, its own tokenization included, as ``bench/bm25.py`` measures it (single thread, interleaved repeats);
* the two BM25 designs: (A, searchkit's) scores recomputed at update time, queries on precomputed scores, against
  (B) Lucene-style segments whose term frequencies are scored at query time with the global statistics; the update
  cost of each for the same 100 documents and their query throughput, B's scores checked equal to A's;
* single-query latency of bm25, dense and hybrid searches filtered to 1%, 10% and 50% of the documents.

    python bench/update.py --json eval/results/update_cpu.json --markdown eval/results/update_cpu.md
    python bench/update.py --no-dense --repeats 2       # BM25 only (a minute)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import (
    cpu_description,
    markdown_table,
    paired_times,
    percentiles,
    speedup,
    top_k_agreement,
    versions,
    write_json,
)

from searchkit.config import DenseConfig, FilterConfig
from searchkit.formats import document_text, read_corpus, read_queries
from searchkit.index import Index
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.postings import Postings, from_term_ids
from searchkit.retrieval.postings import statistics as collection_stats
from searchkit.search import Searcher
from searchkit.types import Document

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
K = 10
SELECTIVITY = (1, 10, 50)


def _documents(folder: Path) -> list[Document]:
    """SciFact with a ``bucket`` (0-99, from the id's crc32) in every document's metadata: filters of known size."""
    return [
        doc._replace(metadata={**(doc.metadata or {}), "bucket": zlib.crc32(doc.doc_id.encode()) % 100})
        for doc in read_corpus(folder)
    ]


def _edited(docs: list[Document]) -> list[Document]:
    return [doc._replace(text=doc.text + " (edited) Revised findings were reported in a later study.") for doc in docs]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


# ---------------------------------------------------------------------- design B: query-time scoring over segments
class QueryTimeBM25:
    """Design B, for measurement only: segments of term frequencies (the base, then one a batch of added documents)
    and global statistics kept at update time; every query scores its postings with bm25s's formulas.

    Built from design A's stored term frequencies, so both score the same documents with the same statistics.
    """

    def __init__(self, retriever: BM25Retriever) -> None:
        self.retriever = retriever
        self.config = retriever.config
        self.segments: list[tuple[int, Postings]] = [(0, retriever.postings())]
        self._refresh()

    def _refresh(self) -> None:
        """Global statistics over the live rows of every segment (what an update of design B maintains)."""
        from bm25s.scoring import _select_idf_scorer

        vocab = max(p.vocab_size for _, p in self.segments)
        df = np.zeros(vocab, dtype=np.int64)
        lengths = []
        for _, postings in self.segments:
            df[: postings.vocab_size] += np.diff(postings.indptr)
            lengths.append(postings.doclen[postings.doclen >= 0])
        live = np.concatenate(lengths)
        self.num_live, self.avg = len(live), float(live.sum()) / len(live)
        idf_of = _select_idf_scorer(self.config.method)
        self.idf = np.array([idf_of(int(d), N=self.num_live) if d else 0.0 for d in df], dtype=np.float32)
        self.num_rows = self.segments[-1][0] + self.segments[-1][1].num_rows

    def add_segment(self, docs: list[Document], folder: Path) -> None:
        """Design B's update: analyze the new documents, write their segment; no existing score changes."""
        from array import array

        vocab = dict(self.retriever._vocab)
        flat = array("i")
        offsets = [0, *self.retriever._analyzer.add_ids([document_text(d) for d in docs], {}, vocab, flat)]
        segment = from_term_ids(np.frombuffer(flat, dtype=np.intc), np.asarray(offsets), len(vocab))
        folder.mkdir(parents=True, exist_ok=True)
        for name, array_ in segment._asdict().items():
            np.save(folder / f"{name}.npy", array_, allow_pickle=False)
        self.segments.append((self.num_rows, segment))
        self._refresh()

    def search_batch(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """Every query's postings gathered from every segment, scored in one vectorized pass, top k selected as
        design A selects them: B at its best."""
        from bm25s.scoring import _select_tfc_scorer

        tfc = _select_tfc_scorer(self.config.method)
        vocab, terms_of = self.retriever._vocab, self.retriever._analyzer.terms
        lengths = np.concatenate([seg.doclen for _, seg in self.segments])
        config = self.config
        results = []
        for query in queries:
            term_ids = [t for t in map(vocab.get, terms_of(query)) if t is not None]
            spans = [
                (first, seg, int(seg.indptr[t]), int(seg.indptr[t + 1]), t)
                for first, seg in self.segments
                for t in term_ids
                if t < seg.vocab_size
            ]
            if not spans:
                results.append([])
                continue
            rows = np.concatenate([seg.indices[a:b] + first for first, seg, a, b, _ in spans])
            tf = np.concatenate([seg.tf[a:b] for _, seg, a, b, _ in spans]).astype(np.float32)
            idf = np.repeat(self.idf[[t for *_, t in spans]], [b - a for _, _, a, b, _ in spans])
            part = tfc(tf_array=tf, l_d=lengths[rows], l_avg=self.avg, k1=config.k1, b=config.b, delta=config.delta)
            scores = np.zeros(self.num_rows, dtype=np.float32)
            np.add.at(scores, rows, idf * part)
            hit = np.flatnonzero(scores > 0)
            top = hit[np.argpartition(scores[hit], max(0, len(hit) - k))[-k:]] if len(hit) > k else hit
            top = top[np.argsort(-scores[top], kind="stable")]
            results.append([(int(row), float(scores[row])) for row in top])
        return results


def compare_designs(index: Index, edited: list[Document], timed: list[str], repeats: int, work: Path) -> dict[str, Any]:
    """Update cost for ``edited`` and query throughput of designs A (searchkit) and B (query-time segments)."""
    bm25 = index.bm25
    assert bm25 is not None
    rows = index.num_rows
    dead = np.zeros(rows + len(edited), dtype=bool)
    dead[[index.row(doc.doc_id) for doc in edited]] = True
    ids = [*index.row_ids, *(doc.doc_id for doc in edited)]
    a_costs, b_costs = [], []
    for repeat in range(repeats):
        _, seconds = _timed(
            lambda r=repeat: BM25Retriever.rewrite(bm25, work / f"a{r}", np.arange(rows), dead, edited, ids)
        )
        a_costs.append(seconds)
        design_b = QueryTimeBM25(bm25)
        _, seconds = _timed(lambda r=repeat, b=design_b: b.add_segment(edited, work / f"b{r}"))
        b_costs.append(seconds)
    design_a = BM25Retriever.rewrite(bm25, work / "a", np.arange(rows), dead, edited, ids)
    # B with the same deletions as A (the replaced rows' old versions), so both rank the same documents
    base = design_b.segments[0][1]
    doclen = base.doclen.copy()
    doclen[[index.row(doc.doc_id) for doc in edited]] = -1
    keep = doclen[base.indices] >= 0
    counts = np.bincount(base.terms()[keep], minlength=base.vocab_size)
    design_b.segments[0] = (
        0,
        Postings(base.tf[keep], base.indices[keep], np.concatenate([[0], np.cumsum(counts)]), doclen),
    )
    design_b._refresh()
    check = timed[:200]
    ours = [[(int(r), float(s)) for r, s in zip(x.rows, x.scores, strict=True)] for x in design_a.search_rows(check, K)]
    theirs = design_b.search_batch(check, K)
    same = sum(
        [r for r, _ in a] == [r for r, _ in b] or np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-5)
        for a, b in zip(ours, theirs, strict=True)
    )
    times = paired_times(
        {"A": lambda: design_a.search_batch(timed, K), "B": lambda: design_b.search_batch(timed, K)}, repeats
    )
    return {
        "documents_updated": len(edited),
        "postings": collection_stats(design_a.postings())["postings"],
        "A_update_s": statistics.median(a_costs),
        "B_update_s": statistics.median(b_costs),
        "A_qps": len(timed) / statistics.median(times["A"]),
        "B_qps": len(timed) / statistics.median(times["B"]),
        "B_over_A_query_time": statistics.median(times["B"]) / statistics.median(times["A"]),
        "same_top10_scores": same / len(check),
    }


# ---------------------------------------------------------------------- the run
def bm25_throughput(index: Index, timed: list[str], repeats: int) -> dict[str, Any]:
    """Ours on the updated index against raw bm25s indexing the same (live) documents, tokenization included."""
    import bm25s
    import Stemmer

    bm25 = index.bm25
    assert bm25 is not None
    config = bm25.config
    stemmer = Stemmer.Stemmer(config.stemmer) if config.stemmer else None
    texts = [document_text(doc) for doc in index.iter_documents()]
    raw = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    raw.index(
        bm25s.tokenize(texts, stopwords=config.stopwords, stemmer=stemmer, show_progress=False), show_progress=False
    )

    def run_raw() -> Any:
        tokens = bm25s.tokenize(timed, stopwords=config.stopwords, stemmer=stemmer, show_progress=False)
        return raw.retrieve(tokens, k=K, show_progress=False, n_threads=0)

    for fn in (run_raw, lambda: bm25.search_batch(timed, K)):
        fn()  # warm-up
    times = paired_times({"ours": lambda: bm25.search_batch(timed, K), "bm25s": run_raw}, repeats)
    result = speedup(times, "ours", "bm25s", len(timed))
    result.pop("seconds")
    return result


def filtered_latency(index: Index, queries: list[str], modes: list[str]) -> dict[str, Any]:
    """Single-query latency (k=10) of each mode unfiltered and filtered to 1%, 10% and 50% of the documents; for
    dense also without the query encoder (vectors encoded beforehand: the filter mask and the FAISS search alone,
    which the encoder's time on a busy CPU would hide)."""
    out: dict[str, Any] = {}
    if index.dense is not None:
        vectors = index.dense.encode_queries(queries)
        for selectivity in (None, *SELECTIVITY):
            spec = None if selectivity is None else f"bucket<{selectivity}"
            seconds = []
            for vector in vectors:
                start = time.perf_counter()
                index.dense.search_vector_rows(vector[None, :], K, allowed=index.allowed_rows(spec))
                seconds.append(time.perf_counter() - start)
            key = "unfiltered" if selectivity is None else f"{selectivity}%"
            out.setdefault("dense (FAISS only)", {})[key] = percentiles(seconds)
    for mode in modes:
        searcher = Searcher(index, mode=mode)
        searcher.search(queries[0], K)  # warm-up (the encoder loads)
        for selectivity in (None, *SELECTIVITY):
            spec = None if selectivity is None else f"bucket<{selectivity}"
            matching = index.num_docs if spec is None else int(np.count_nonzero(index.allowed_rows(spec)))
            seconds, short = [], 0
            for query in queries:
                start = time.perf_counter()
                hits = searcher.search(query, K, filter=spec)
                seconds.append(time.perf_counter() - start)
                short += len(hits) < K
            key = "unfiltered" if selectivity is None else f"{selectivity}%"
            out.setdefault(mode, {})[key] = {**percentiles(seconds), "documents": matching, "queries_under_k": short}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--dense", default="all-MiniLM-L6-v2", help="dense model (the update encodes with it)")
    parser.add_argument("--no-dense", action="store_true", help="BM25 only")
    parser.add_argument("--dtype", default="auto", help="dense dtype: auto (bf16 on AMX CPUs) or fp32 (bit-exact)")
    parser.add_argument("--edits", type=int, default=100, help="documents replaced in the timed small update")
    parser.add_argument("--fraction", type=float, default=0.1, help="share deleted, then re-added edited")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-queries", type=int, default=1000, help="throughput: the queries repeated to this many")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    docs = _documents(args.data)
    queries = [query.text for query in read_queries(args.data)]
    timed = queries * -(-args.min_queries // len(queries))
    dense = None if args.no_dense else DenseConfig(model=args.dense, dtype=args.dtype)
    filters = FilterConfig(["bucket:number"])
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    result: dict[str, Any] = {"machine": cpu_description(), "versions": versions("bm25s", "faiss-cpu", "torch")}
    try:
        index, result["full_build_s"] = _timed(lambda: Index.build(docs, work / "index", dense=dense, filters=filters))
        small = _edited(rng.sample(docs, args.edits))
        index, result["update_edits_s"] = _timed(lambda: index.add_documents(small))
        victims = rng.sample(index.docids, int(len(docs) * args.fraction))
        readded = _edited(index.documents(victims))
        index, result["delete_fraction_s"] = _timed(lambda: index.delete_documents(victims))
        index, result["readd_fraction_s"] = _timed(lambda: index.add_documents(readded))
        final = list(index.iter_documents())
        fresh, result["rebuild_final_s"] = _timed(
            lambda: Index.build(final, work / "fresh", dense=dense, filters=filters)
        )
        result["documents"] = {
            "corpus": len(docs),
            "edits": len(small),
            "deleted_readded": len(victims),
            "live": index.num_docs,
            "tombstones": len(index.deleted_rows),
            "rows": index.num_rows,
        }
        by_id = {query.query_id: query.text for query in read_queries(args.data)}
        equality: dict[str, Any] = {}
        for mode in ("bm25",) + (() if dense is None else ("dense", "hybrid")):
            ours = Searcher(index, mode=mode).search_batch(list(by_id.values()), 100)
            oracle = Searcher(fresh, mode=mode).search_batch(list(by_id.values()), 100)
            diffs = [
                abs(a.score - b.score)
                for x, y in zip(ours, oracle, strict=True)
                for a, b in zip(x, y, strict=False)
                if a.doc_id == b.doc_id
            ]
            equality[mode] = {
                "identical_top100_lists": sum(x == y for x, y in zip(ours, oracle, strict=True)) / len(ours),
                "max_abs_score_diff_same_rank": max(diffs, default=0.0),
                **top_k_agreement(dict(zip(by_id, ours, strict=True)), dict(zip(by_id, oracle, strict=True)), K),
            }
        result["equality"] = equality
        result["index_verify_s"] = _timed(index.verify)[1]
        result["bm25_throughput"] = bm25_throughput(index, timed, args.repeats)
        result["designs"] = compare_designs(
            index, _edited(index.documents(rng.sample(index.docids, args.edits))), timed, args.repeats, work / "designs"
        )
        modes = ["bm25"] + ([] if dense is None else ["dense", "hybrid"])
        result["filtered_latency"] = filtered_latency(index, queries[: args.latency_queries], modes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = _markdown(result, " ".join(["python", "bench/update.py", *(argv if argv is not None else sys.argv[1:])]))
    print(table)
    write_json(args.json, result)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    return 0


def _markdown(result: dict[str, Any], command: str) -> str:
    docs, eq, designs, speed = result["documents"], result["equality"], result["designs"], result["bm25_throughput"]
    machine = result["machine"]
    rows = [
        ("full build (BM25 + dense + filter column)", f"{result['full_build_s']:.1f} s ({docs['corpus']} documents)"),
        (f"update: replace {docs['edits']} documents", f"{result['update_edits_s']:.2f} s"),
        (f"update: delete {docs['deleted_readded']} (10%)", f"{result['delete_fraction_s']:.2f} s"),
        ("update: re-add them edited", f"{result['readd_fraction_s']:.2f} s"),
        ("rebuild of the final documents", f"{result['rebuild_final_s']:.1f} s"),
        ("after the updates", f"{docs['live']} documents, {docs['tombstones']} tombstones in {docs['rows']} rows"),
    ]
    for mode, row in eq.items():
        rows.append(
            (
                f"{mode}: equal to the rebuild",
                f"identical top-100 lists {row['identical_top100_lists']:.1%}, max |score "
                f"diff| {row['max_abs_score_diff_same_rank']:.2g}, identical top-10 {row['identical_order']:.1%}",
            )
        )
    rows.append(
        (
            "BM25 q/s after updates: ours / bm25s",
            f"{speed['ours_per_s']:.0f} / {speed['peer_per_s']:.0f} = "
            f"{speed['ratio']:.2f}x (repeats {speed['ratio_min']:.2f}-{speed['ratio_max']:.2f})",
        )
    )
    rows.append(
        (
            f"design A (scores at update time): update {designs['documents_updated']} docs / q/s",
            f"{designs['A_update_s'] * 1000:.0f} ms / {designs['A_qps']:.0f}",
        )
    )
    rows.append(
        (
            f"design B (scores at query time): update {designs['documents_updated']} docs / q/s",
            f"{designs['B_update_s'] * 1000:.0f} ms / {designs['B_qps']:.0f} (B/A query time "
            f"{designs['B_over_A_query_time']:.2f}x; same top-10 {designs['same_top10_scores']:.0%})",
        )
    )
    for mode, levels in result["filtered_latency"].items():
        cells = [f"{name} p50 {row['p50_ms']:.2f} ms (p95 {row['p95_ms']:.2f})" for name, row in levels.items()]
        rows.append((f"{mode} single-query latency, k={K}", "; ".join(cells)))
    head = [
        "# Living indexes on SciFact (bench/update.py)",
        "",
        f"`{command}`",
        "",
        f"{machine['cpu']} ({', '.join(machine['flags'])}), {machine['cores']} cores, load average "
        f"{machine['load_average_1min']:.1f} at the start (above 0: other processes shared the CPU).",
        "",
    ]
    return "\n".join(head) + markdown_table("SciFact", rows)


if __name__ == "__main__":
    from benchtools import run_main

    run_main(main)
