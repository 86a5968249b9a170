"""Reranker speed and agreement against its peer, on real first-stage candidates.

searchkit's CrossEncoderReranker (``--dtype auto``: bf16 on a CPU with AMX / AVX512-BF16, fp16 on a GPU; token-budget
batches) against sentence-transformers' ``CrossEncoder.predict`` with its default fp32, on the same model folder
and the same (query, document) pairs: the first stage's top ``--depth`` of every SciFact test query. One timed run
each after a warm-up (``--repeats`` for more); the peer's fp32 scores are the reference for agreement: top-10
overlap and identical order per query, the largest score difference, and nDCG@10 of both reranked runs.

    python bench/rerank.py --model training/scifact-reranker --index indexes/scifact --depth 20 \\
        --json eval/results/bench_rerank_cpu.json                      # CPU: the acceptance run (300 queries)
    python bench/rerank.py --queries 10 --depth 5                       # a smoke run (fresh head, BM25 index)

``--model`` defaults to the embedded all-MiniLM-L6-v2 with a fresh one-output head (speed only: the scores mean
nothing). Both sides include tokenization; ``score`` returns numpy, so device work has finished when the clock stops.

The peer runs in a process of its own, called in turn with ours: searchkit tunes its process's allocator
(``searchkit.models.device.tune_cpu_allocator``, process-wide), and the peer's users do not have that.
``--peer-allocator tuned`` gives the peer the same settings, to show how much of the ratio is the allocator.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, markdown_table, paired_times, run_main, top_k_agreement, versions, write_json

from searchkit.config import RerankConfig
from searchkit.evaluate.metrics import evaluate
from searchkit.formats import document_text, read_qrels, read_queries
from searchkit.index import Index
from searchkit.models.cross_encoder import CrossEncoderReranker, load_cross_encoder
from searchkit.models.device import resolve_device, resolve_dtype
from searchkit.ranking.fusion import mix_scores, reranker_only
from searchkit.search import Searcher
from searchkit.types import Hit, sort_hits

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


_PEER: dict[str, Any] = {}


def _load_peer(model: str, pairs: list[tuple[str, str]], device: str, max_length: int, tuned: bool) -> None:
    """In the peer's own process: ``CrossEncoder`` in fp32 as its users load it (and the allocator as theirs,
    unless ``tuned``: then searchkit's :func:`searchkit.models.device.tune_cpu_allocator` first)."""
    import torch
    from sentence_transformers import CrossEncoder

    if tuned:
        from searchkit.models.device import tune_cpu_allocator

        tune_cpu_allocator()
    _PEER["model"] = CrossEncoder(model, device=device, max_length=max_length, model_kwargs={"dtype": torch.float32})
    _PEER["pairs"] = pairs
    _PEER["sync"] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _peer_predict(batch_size: int, limit: int | None = None) -> np.ndarray:
    import torch

    pairs = _PEER["pairs"][:limit]
    options = {"batch_size": batch_size, "activation_fn": torch.nn.Identity(), "show_progress_bar": False}
    scores = np.asarray(_PEER["model"].predict(pairs, **options))
    _PEER["sync"]()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a one-output cross-encoder folder (default: fresh head)")
    parser.add_argument("--data", default=str(DATA / "scifact"), help="BEIR folder with test queries and qrels")
    parser.add_argument("--index", default=None, help="an index of --data (default: BM25, built in a temp dir)")
    parser.add_argument("--queries", type=int, default=300, help="first N test queries")
    parser.add_argument("--depth", type=int, default=20, help="first-stage candidates reranked per query")
    parser.add_argument("--base-model", default="all-MiniLM-L6-v2", help="gets a fresh head when there is no --model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="ours: auto, fp32, fp16, bf16 (the peer runs fp32)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--peer-batch-size", type=int, default=32, help="CrossEncoder.predict's default")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--peer-allocator",
        choices=("stock", "tuned"),
        default="stock",
        help="the peer's process as its users run it (stock), or with searchkit's allocator settings (tuned)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    import torch

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:  # the embedded MiniLM with a seeded fresh head, saved once so both sides load it
            loaded = load_cross_encoder(args.base_model, fresh_head=True, seed=0)
            model = str(Path(tmp) / "fresh-head")
            loaded.model.save_pretrained(model)
            loaded.tokenizer.save_pretrained(model)
        index = Index.open(args.index) if args.index else Index.build(args.data, Path(tmp) / "index")
        queries = read_queries(args.data, split="test")[: args.queries]
        all_qrels = read_qrels(args.data, "test")
        qrels = {q.query_id: all_qrels[q.query_id] for q in queries if q.query_id in all_qrels}
        searcher = Searcher(index)
        stages = searcher.stages([q.text for q in queries], args.depth)
        first = [hits[: args.depth] for hits in stages[searcher.mode]]
        per_query_stages = [{n: stages[n][i] for n in ("bm25", "dense") if n in stages} for i in range(len(first))]
        pair_queries = [q.text for q, hits in zip(queries, first, strict=True) for _ in hits]
        pair_texts = [document_text(doc) for hits in first for doc in index.documents([h.doc_id for h in hits])]

        ours = CrossEncoderReranker(
            model, max_length=args.max_length, device=device, dtype=args.dtype, depth=args.depth, interpolation=None
        )
        pairs = list(zip(pair_queries, pair_texts, strict=True))
        scores: dict[str, np.ndarray] = {}
        # the peer runs in a process of its own (searchkit tunes this one's allocator), called in turn with ours
        peer = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_peer,
            initargs=(model, pairs, device, ours.max_length, args.peer_allocator == "tuned"),
        )

        def run_ours() -> None:
            scores["ours"] = ours.score(pair_queries, pair_texts)

        def run_peer() -> None:
            scores["peer"] = peer.submit(_peer_predict, args.peer_batch_size).result()

        with peer:
            ours.score(pair_queries[:64], pair_texts[:64])  # warm-up both
            peer.submit(_peer_predict, args.peer_batch_size, 64).result()
            sync = torch.cuda.synchronize if device.startswith("cuda") else None
            times = paired_times({"ours": run_ours, "peer": run_peer}, args.repeats, sync)

    runs: dict[str, dict[str, list[Hit]]] = {"ours": {}, "peer": {}}
    for name in runs:
        start = 0
        for query, hits in zip(queries, first, strict=True):
            own = scores[name][start : start + len(hits)]
            start += len(hits)
            runs[name][query.query_id] = sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(hits, own, strict=True))
    # The shipped pipeline: the same logits mixed by the card's learned fusion (what `--rerank MODEL` returns)
    shipped = ours.variant(dataclasses.replace(ours.config, interpolation=RerankConfig.interpolation))
    if not reranker_only(shipped.fusion):
        for name in ("ours", "peer"):
            mixed = mix_scores(first, scores[name], shipped.fusion, per_query_stages)
            runs[f"{name} + fusion"] = {q.query_id: hits for q, hits in zip(queries, mixed, strict=True)}
    ndcg = {name: evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"] for name, run in runs.items()}
    ratios = [p / o for o, p in zip(times["ours"], times["peer"], strict=True)]
    result = {
        "machine": cpu_description(),
        "versions": versions("torch", "transformers", "sentence-transformers"),
        "model": args.model or "all-MiniLM-L6-v2 + fresh head",
        "device": device,
        "dtype_ours": str(resolve_dtype(args.dtype, device)).removeprefix("torch."),
        "dtype_peer": "float32",
        "queries": len(queries),
        "depth": args.depth,
        "pairs": len(pairs),
        "max_length": ours.max_length,
        "ours_pairs_per_s": len(pairs) / float(np.median(times["ours"])),
        "peer_pairs_per_s": len(pairs) / float(np.median(times["peer"])),
        "ratio": float(np.median(ratios)),
        "peer_allocator": args.peer_allocator,
        "batch_tokens": ours.batch_tokens,
        "seconds": times,
        "max_abs_score_diff": float(np.abs(scores["ours"] - scores["peer"]).max()),
        "top10_agreement": top_k_agreement(runs["ours"], runs["peer"], 10),
        "ndcg@10": ndcg,
        "ndcg@10_diff": ndcg["ours"] - ndcg["peer"],
    }
    if "ours + fusion" in runs:
        result["fusion"] = shipped.fusion.weights if shipped.fusion else None
        result["fused_top10_agreement"] = top_k_agreement(runs["ours + fusion"], runs["peer + fusion"], 10)
        result["fused_ndcg@10_diff"] = ndcg["ours + fusion"] - ndcg["peer + fusion"]
    agreement = result["top10_agreement"]
    rows = [
        ("machine", f"{result['machine']['cpu']} ({', '.join(result['machine']['flags'])})"),
        ("pairs (queries x depth)", f"{len(pairs)} ({len(queries)} x {args.depth}), max_length {ours.max_length}"),
        (
            f"searchkit CrossEncoderReranker ({result['dtype_ours']}, {ours.batch_tokens}-token batches) pairs/s",
            f"{result['ours_pairs_per_s']:.1f}",
        ),
        (
            f"sentence-transformers CrossEncoder.predict (fp32, own process, {args.peer_allocator} allocator) pairs/s",
            f"{result['peer_pairs_per_s']:.1f}",
        ),
        ("speedup", f"{result['ratio']:.2f}x"),
        (
            "top-10 mean overlap / identical order vs fp32",
            f"{agreement['mean_overlap']:.4f} / {agreement['identical_order']:.3f}",
        ),
        ("nDCG@10 ours / fp32 peer", f"{ndcg['ours']:.4f} / {ndcg['peer']:.4f} ({result['ndcg@10_diff']:+.4f})"),
        ("largest score difference", f"{result['max_abs_score_diff']:.3g}"),
    ]
    if "fused_top10_agreement" in result:
        fused = result["fused_top10_agreement"]
        rows += [
            (
                "with the card's learned fusion: top-10 overlap / identical order",
                f"{fused['mean_overlap']:.4f} / {fused['identical_order']:.3f}",
            ),
            (
                "with the card's learned fusion: nDCG@10 ours / fp32 peer",
                f"{ndcg['ours + fusion']:.4f} / {ndcg['peer + fusion']:.4f} ({result['fused_ndcg@10_diff']:+.4f})",
            ),
        ]
    print(markdown_table("reranker bench", rows))
    write_json(args.json, result)


if __name__ == "__main__":
    run_main(main)
