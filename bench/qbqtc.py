"""QBQTC (Chinese web search): every BM25 analyzer, BM25 settings chosen on dev, their fusion, and bm25s as the peer.

Dev is carved from QBQTC train (a seeded 1,000 of the train queries with a title graded >= 1; never test): for each
analyzer (``en``, ``cjk-bigram``, ``cjk-unigram-bigram``, ``zh``) the BM25 ``k1``/``b`` grid is scored on dev by
nDCG@10, the best kept; then the RRF fusion of the analyzers' best settings is scored on dev too. Test (the 1,875
queries of ``qrels/test.tsv``) is read once, for the chosen settings only. The peer, bm25s, indexes the same terms
(the analyzer's own, for each document) with the same settings: its nDCG@10 and its scores must equal ours.
Also measured: analysis speed (documents/s, the whole corpus, median of 3) per analyzer, jieba against rjieba for the
``zh`` analyzer (speed and test nDCG@10 with the same BM25 settings), and query latency (median, p99) per condition.

Usage (from the repository root)::

    python bench/qbqtc.py --json eval/results/qbqtc_cpu.json --markdown eval/results/qbqtc_cpu.md
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchtools import cpu_description, markdown_table, percentiles, run_main, versions, write_json  # noqa: E402

from searchkit.config import ANALYZERS, BM25Config, FusionConfig  # noqa: E402
from searchkit.evaluate.metrics import evaluate  # noqa: E402
from searchkit.evaluate.runs import run_queries  # noqa: E402
from searchkit.formats import document_text, read_corpus, read_qrels, read_queries  # noqa: E402
from searchkit.index import Index  # noqa: E402
from searchkit.search import Searcher  # noqa: E402
from searchkit.text.analyzers import Analyzer  # noqa: E402
from searchkit.training.data import split_dev  # noqa: E402
from searchkit.types import Hit, Query  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "qbqtc"
METRICS = ["nDCG@10", "RR@10", "R@100"]
GRID_K1 = (0.3, 0.45, 0.6, 0.9, 1.2, 1.5)
GRID_B = (0.3, 0.5, 0.75, 0.9)


def _ndcg(run: dict[str, Any], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    return {m: round(float(v), 4) for m, v in evaluate(run, qrels, METRICS).aggregate.items()}


def _build(folder: Path, configs: list[BM25Config]) -> Index:
    return Index.build(DATA, folder, bm25=configs, overwrite=True)


def _timed_run(searcher: Searcher, queries: list[Query]) -> tuple[dict[str, Any], dict[str, float]]:
    seconds = []
    run: dict[str, Any] = {}
    for query in queries:
        start = time.perf_counter()
        run[query.query_id] = searcher.search(query.text, 100)
        seconds.append(time.perf_counter() - start)
    return run, percentiles(seconds)


def _analysis_speed(analyzer: Analyzer, texts: list[str], repeats: int = 3) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            analyzer.terms(text)
        rates.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates)


def _bm25s_peer(index: Index, config: BM25Config, queries: list[Query], qrels: dict[str, Any]) -> dict[str, Any]:
    """bm25s over the very terms our analyzer makes (each document's and each query's), same k1/b/method."""
    import bm25s

    analyzer = Analyzer.from_config(config)
    docs = list(index.iter_documents())
    model = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    model.index([analyzer.terms(document_text(doc)) for doc in docs], show_progress=False)
    ids = np.array([doc.doc_id for doc in docs], dtype=object)
    ours = index.component("bm25")
    run: dict[str, Any] = {}
    max_diff = 0.0
    for query in queries:
        terms = analyzer.terms(query.text)
        if not terms or not any(term in model.vocab_dict for term in terms):
            run[query.query_id] = []
            continue
        scores = model.get_scores(terms)
        top = np.argsort(-scores, kind="stable")[:100]

        run[query.query_id] = [Hit(str(ids[row]), float(scores[row])) for row in top if scores[row] > 0]
        for hit in ours.search(query.text, 10):
            max_diff = max(max_diff, abs(hit.score - float(scores[list(ids).index(hit.doc_id)])))
    return {"metrics": _ndcg(run, qrels), "max_score_diff_top10": max_diff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--dev-queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the indexes (default: a temp folder).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="qbqtc-bench-"))

    train_qrels = read_qrels(DATA, "train")
    usable = [q for q in read_queries(DATA, split="train") if any(g > 0 for g in train_qrels[q.query_id].values())]
    _, dev = split_dev(usable, args.dev_queries, seed=42)
    dev_qrels = {q.query_id: train_qrels[q.query_id] for q in dev}
    test = read_queries(DATA, split="test")
    test_qrels = read_qrels(DATA, "test")
    texts = [document_text(doc) for doc in read_corpus(DATA)]

    chosen: dict[str, BM25Config] = {}
    rows: list[dict[str, Any]] = []
    for analyzer in ANALYZERS:
        best: tuple[float, BM25Config] | None = None
        for k1, b in itertools.product(GRID_K1, GRID_B):
            config = BM25Config(analyzer=analyzer, k1=k1, b=b)
            index = _build(work / f"{analyzer}-grid", [config])
            score = _ndcg(run_queries(Searcher(index, mode="bm25"), dev, k=100), dev_qrels)["nDCG@10"]
            if best is None or score > best[0]:
                best = (score, config)
        assert best is not None
        chosen[analyzer] = best[1]
        index = _build(work / analyzer, [best[1]])
        run, latency = _timed_run(Searcher(index, mode="bm25"), test)
        speed = _analysis_speed(Analyzer.from_config(best[1]), texts)
        peer = _bm25s_peer(index, best[1], test, test_qrels)
        rows.append(
            {
                "condition": analyzer,
                "k1": best[1].k1,
                "b": best[1].b,
                "dev_nDCG@10": best[0],
                "test": _ndcg(run, test_qrels),
                "bm25s_test": peer["metrics"],
                "bm25s_max_score_diff_top10": peer["max_score_diff_top10"],
                "analysis_docs_per_s": round(speed),
                "latency_ms": latency,
            }
        )
        print(rows[-1], flush=True)

    # fusion of analyzers (RRF over each one's dev-chosen settings), chosen on dev among the pairs and all four
    cjk = [name for name in ANALYZERS if name != "en"]
    candidates = [list(pair) for pair in itertools.combinations(cjk, 2)] + [cjk]
    fused: list[dict[str, Any]] = []
    for names in candidates:
        index = _build(work / ("fused-" + "+".join(names)), [chosen[name] for name in names])
        searcher = Searcher(index, mode="hybrid", fusion=FusionConfig(method="rrf"))
        dev_score = _ndcg(run_queries(searcher, dev, k=100), dev_qrels)["nDCG@10"]
        fused.append({"analyzers": names, "dev_nDCG@10": dev_score, "index": index})
        print(names, dev_score, flush=True)
    best_fused = max(fused, key=lambda row: row["dev_nDCG@10"])
    run, latency = _timed_run(Searcher(best_fused["index"], mode="hybrid"), test)
    rows.append(
        {
            "condition": "rrf(" + " + ".join(best_fused["analyzers"]) + ")",
            "dev_nDCG@10": best_fused["dev_nDCG@10"],
            "test": _ndcg(run, test_qrels),
            "latency_ms": latency,
            "fusions_on_dev": {"+".join(row["analyzers"]): row["dev_nDCG@10"] for row in fused},
        }
    )

    # jieba against rjieba for the zh analyzer: the same BM25 settings, the segmenter swapped
    segmenters: dict[str, Any] = {}
    try:
        import jieba
        import rjieba

        jieba.setLogLevel(60)
        zh = chosen["zh"]
        for name, cut in (("rjieba", rjieba.cut_for_search), ("jieba", jieba.lcut_for_search)):
            analyzer = Analyzer.from_config(zh)
            analyzer._cut = cut  # the measurement swaps the segmenter of one analyzer object, nothing else
            cut("预热")  # jieba loads its dictionary on first use
            speed = _analysis_speed(analyzer, texts)
            import bm25s

            model = bm25s.BM25(k1=zh.k1, b=zh.b)
            docs = list(read_corpus(DATA))
            model.index([analyzer.terms(document_text(doc)) for doc in docs], show_progress=False)
            ids = [doc.doc_id for doc in docs]

            run = {}
            for query in test:
                terms = [t for t in analyzer.terms(query.text) if t in model.vocab_dict]
                if not terms:
                    run[query.query_id] = []
                    continue
                scores = model.get_scores(terms)
                top = np.argsort(-scores, kind="stable")[:100]
                run[query.query_id] = [Hit(ids[row], float(scores[row])) for row in top if scores[row] > 0]
            segmenters[name] = {"analysis_docs_per_s": round(speed), "test": _ndcg(run, test_qrels)}
            print(name, segmenters[name], flush=True)
    except ImportError as err:
        segmenters = {"skipped": str(err)}

    result = {
        "machine": cpu_description(),
        "versions": versions("bm25s", "rjieba", "jieba", "opencc"),
        "dev": {"queries": len(dev), "seed": 42, "from": "qrels/train.tsv, queries with a title graded >= 1"},
        "test_queries": len(test),
        "grid": {"k1": GRID_K1, "b": GRID_B},
        "rows": rows,
        "segmenters": segmenters,
    }
    write_json(args.json, result)
    if args.markdown:
        lines = [
            "# QBQTC: BM25 analyzers, settings chosen on dev, fusion, bm25s over the same terms",
            "",
            f"Command: `python bench/qbqtc.py --json {args.json} --markdown {args.markdown}`",
            "",
            f"Dev: {len(dev)} train queries (seeded, graded >= 1); test: {len(test)} queries, read once per row.",
            "",
            "| condition | k1 | b | dev nDCG@10 | test nDCG@10 | test RR@10 | test R@100 | bm25s test nDCG@10 "
            "| analysis docs/s | query p50 / p99 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            lat = row["latency_ms"]
            peer = row.get("bm25s_test", {}).get("nDCG@10", "")
            lines.append(
                f"| {row['condition']} | {row.get('k1', '')} | {row.get('b', '')} | {row['dev_nDCG@10']:.4f} | "
                f"{row['test']['nDCG@10']:.4f} | {row['test']['RR@10']:.4f} | {row['test']['R@100']:.4f} | {peer} | "
                f"{row.get('analysis_docs_per_s', '')} | {lat['p50_ms']} / {lat['p99_ms']} |"
            )
        lines += [
            "",
            markdown_table("segmenter (zh analyzer, same BM25)", [(k, str(v)) for k, v in segmenters.items()]),
        ]
        lines += ["", f"Machine: {result['machine']}", f"Versions: {result['versions']}", ""]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    run_main(main)
