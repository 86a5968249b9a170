"""Single-query latency of every search path: p50 / p95 / p99 over real queries, one query per call.

Modes: bm25, dense, hybrid, and hybrid reranked at depth 20 and 100 (the reranker's cost dominates; ``--rerank``
names a trained folder, default: the embedded MiniLM with a fresh head, which costs the same). Each mode gets a
warm-up, then ``--queries`` test queries searched one at a time (``Searcher.search(q, k=10)``), timed with
``perf_counter``. The CPU model and its flags are printed beside the table.

    python bench/latency.py --index indexes/scifact --rerank training/scifact-reranker \\
        --json eval/results/bench_latency_cpu.json                    # CPU (the same command on a GPU machine)
    python bench/latency.py --index indexes/scifact --queries 5 --rerank-queries 2   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, markdown_table, percentiles, run_main, versions, write_json

from searchkit.config import RerankConfig
from searchkit.formats import read_queries
from searchkit.index import Index
from searchkit.models.cross_encoder import load_cross_encoder
from searchkit.search import Searcher

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index with bm25 and dense components")
    parser.add_argument("--data", default=str(DATA / "scifact"), help="BEIR folder whose test queries are searched")
    parser.add_argument("--queries", type=int, default=200, help="queries per first-stage mode")
    parser.add_argument("--rerank-queries", type=int, default=50, help="queries per reranked mode")
    parser.add_argument("--rerank", default=None, help="a trained reranker folder (default: fresh head)")
    parser.add_argument("--base-model", default="all-MiniLM-L6-v2", help="gets a fresh head when there is no --model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    index = Index.open(args.index, device=args.device)
    texts = [q.text for q in read_queries(args.data, split="test")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.rerank
        if model is None:
            loaded = load_cross_encoder(args.base_model, fresh_head=True, seed=0)
            model = str(Path(tmp) / "fresh-head")
            loaded.model.save_pretrained(model)
            loaded.tokenizer.save_pretrained(model)
        modes: dict[str, tuple[Searcher, int]] = {
            name: (Searcher(index, mode=name), args.queries) for name in ("bm25", "dense", "hybrid")
        }
        for depth in (20, 100):
            rerank = RerankConfig(model, depth=depth, device=args.device)
            modes[f"hybrid + rerank top-{depth}"] = (Searcher(index, mode="hybrid", rerank=rerank), args.rerank_queries)
        results = {}
        for name, (searcher, count) in modes.items():
            for text in texts[:3]:  # warm-up: models loaded, caches filled
                searcher.search(text, k=10)
            seconds = []
            for text in texts[:count]:
                start = time.perf_counter()
                searcher.search(text, k=10)
                seconds.append(time.perf_counter() - start)
            results[name] = percentiles(seconds)
            print(f"{name}: {results[name]}", flush=True)
    machine = cpu_description()
    rows = [
        (name, f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f}, p99 {r['p99_ms']:.1f} (n={r['n']})")
        for name, r in results.items()
    ]
    print(f"machine: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['torch_threads']} torch threads")
    print(markdown_table(f"single-query latency, {Path(args.index).name}, k=10", rows))
    write_json(
        args.json,
        {
            "machine": machine,
            "versions": versions("torch", "faiss-cpu", "bm25s"),
            "index": args.index,
            "latency": results,
        },
    )


if __name__ == "__main__":
    run_main(main)
