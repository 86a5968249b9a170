"""Which CPU inference variant wins for the reranker: dtype, attention kernel, batching rule, torch.compile.

Every variant is the same CrossEncoderReranker (same model, same SciFact BM25 pairs) with one setting changed;
pairs/s from interleaved repeats (median), and the largest score difference against the fp32 / SDPA / fixed
batch-32 reference. What wins is what `dtype="auto"` and the `batch_tokens` default ship.

    python bench/rerank_variants.py --index indexes/scifact --pairs 256 --json eval/results/rerank_variants_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, markdown_table, paired_times, run_main, versions, write_json

from searchkit.formats import document_text, read_queries
from searchkit.index import Index
from searchkit.models.cross_encoder import CrossEncoderReranker, load_cross_encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a BM25 index of --data")
    parser.add_argument("--data", default=str(DATA / "scifact"))
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow first call)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    index = Index.open(args.index)
    queries = [q.text for q in read_queries(args.data, split="test")]
    pair_q: list[str] = []
    pair_t: list[str] = []
    for query, hits in zip(queries, index.component("bm25").search_batch(queries, 10), strict=True):
        for doc in index.documents([h.doc_id for h in hits]):
            pair_q.append(query)
            pair_t.append(document_text(doc))
    pair_q, pair_t = pair_q[: args.pairs], pair_t[: args.pairs]

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_cross_encoder("all-MiniLM-L6-v2", fresh_head=True, seed=0)
        folder = str(Path(tmp) / "fresh-head")
        loaded.model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)

        def make(dtype: str, tokens: int, rows: int, attention: str = "sdpa", compiled: bool = False) -> Any:
            reranker = CrossEncoderReranker(
                folder, max_length=args.max_length, batch_size=rows, device="cpu", dtype=dtype, batch_tokens=tokens
            )
            reranker.model.set_attn_implementation(attention)
            if compiled:
                reranker.model = torch.compile(reranker.model, dynamic=True)
            return reranker

        # (dtype, batch_tokens, max rows, attention, compile); 10**9 tokens = fixed batches of `rows`
        variants: dict[str, Any] = {
            "fp32 sdpa batch 32 (reference)": make("fp32", 10**9, 32),
            "fp32 eager batch 32": make("fp32", 10**9, 32, "eager"),
            "fp32 sdpa 8192 tokens": make("fp32", 8192, 256),
            "bf16 sdpa batch 32": make("bf16", 10**9, 32),
            "bf16 eager batch 32": make("bf16", 10**9, 32, "eager"),
            "bf16 sdpa 4096 tokens": make("bf16", 4096, 256),
            "bf16 sdpa 8192 tokens": make("bf16", 8192, 256),
            "bf16 sdpa 16384 tokens": make("bf16", 16384, 256),
        }
        if args.compile:
            variants["bf16 sdpa 8192 tokens + torch.compile"] = make("bf16", 8192, 256, compiled=True)
        scores: dict[str, np.ndarray] = {}

        def runner(name: str) -> Callable[[], None]:
            def run() -> None:
                scores[name] = variants[name].score(pair_q, pair_t)

            return run

        for name in variants:  # warm-up (and compile)
            variants[name].score(pair_q[:32], pair_t[:32])
        times = paired_times({name: runner(name) for name in variants}, args.repeats)
    reference = scores["fp32 sdpa batch 32 (reference)"]
    base_time = float(np.median(times["fp32 sdpa batch 32 (reference)"]))
    result = {
        name: {
            "pairs_per_s": len(pair_q) / float(np.median(seconds)),
            "speedup_vs_reference": base_time / float(np.median(seconds)),
            "max_abs_diff_vs_reference": float(np.abs(scores[name] - reference).max()),
            "seconds": seconds,
        }
        for name, seconds in times.items()
    }
    machine = cpu_description()
    print(f"machine: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['torch_threads']} torch threads")
    rows = [
        (
            name,
            f"{r['pairs_per_s']:.1f} pairs/s, {r['speedup_vs_reference']:.2f}x, "
            f"diff {r['max_abs_diff_vs_reference']:.2g}",
        )
        for name, r in result.items()
    ]
    print(markdown_table(f"reranker variants, {len(pair_q)} SciFact pairs, max_length {args.max_length}", rows))
    write_json(args.json, {"machine": machine, "versions": versions("torch", "transformers"), "variants": result})


if __name__ == "__main__":
    run_main(main)
