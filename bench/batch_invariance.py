"""What "same query, same answer" costs: queries encoded alone vs in mixed batches, reranker pairs batched per query
vs mixed across queries, each measured for exactness (a query alone vs in batches) and speed, in fp32 and bf16.

Medline's 30 queries plus 70 pseudo-queries (the first 4-40 words of Medline documents, seeded), the embedded
all-MiniLM-L6-v2 as encoder and, as cross-encoder, the same weights with a fresh one-output head (seeded: the
scores mean nothing, the arithmetic is the reranker's). Mixed batching is the code path searchkit used before issue
19 (``Encoder.encode(alone=False)``, ``CrossEncoderReranker.score_encoded(groups=None)``), kept for documents.

Usage::

    python bench/batch_invariance.py --dtypes fp32 bf16 --json eval/results/batch_invariance_cpu.json \
        --markdown eval/results/batch_invariance_cpu.md
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchtools import cpu_description, run_main, versions, write_json  # noqa: E402

from searchkit.config import BM25Config  # noqa: E402
from searchkit.formats import document_text, read_corpus, read_queries  # noqa: E402
from searchkit.index import Index  # noqa: E402
from searchkit.models.cross_encoder import CrossEncoderReranker, load_cross_encoder, query_groups  # noqa: E402
from searchkit.models.encoder import Encoder  # noqa: E402
from searchkit.models.loading import resolve_model  # noqa: E402

DATA = REPO / "eval" / "data" / "medline"


def _queries(docs: list[str]) -> list[str]:
    rng = random.Random(19)
    queries = [query.text for query in read_queries(DATA)]
    for text in rng.sample(docs, 70):
        words = text.split()
        queries.append(" ".join(words[: rng.randint(4, 40)]))
    return queries


def _differ(alone: np.ndarray, batched: np.ndarray) -> dict[str, Any]:
    rows = np.any(alone != batched, axis=1) if alone.ndim == 2 else alone != batched
    return {"differ": int(np.count_nonzero(rows)), "max_diff": float(np.abs(alone - batched).max())}


def _encoder(dtype: str, queries: list[str]) -> dict[str, Any]:
    encoder = Encoder("all-MiniLM-L6-v2", device="cpu", dtype=dtype)
    alone = encoder.encode(queries, alone=True)
    result: dict[str, Any] = {}
    for name, kwargs in (("alone (searchkit)", {"alone": True}), ("mixed batches (before)", {"alone": False})):
        order = list(range(len(queries)))
        random.Random(1).shuffle(order)  # once: every query lands in exactly one group of strangers
        start = time.perf_counter()
        vectors = np.full_like(alone, np.nan)
        for group_start in range(0, len(order), 32):  # groups of 32 queries, as a server batch or a run batch
            group = order[group_start : group_start + 32]
            vectors[group] = encoder.encode([queries[i] for i in group], **kwargs)
        seconds = time.perf_counter() - start
        result[name] = {"queries_per_s": round(len(queries) / seconds, 1), **_differ(alone, vectors)}
    return result


def _reranker(dtype: str, queries: list[str], index: Index, depth: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp()) / "ce"
    loaded = load_cross_encoder(resolve_model("all-MiniLM-L6-v2"), fresh_head=True, seed=0)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    reranker = CrossEncoderReranker(folder, device="cpu", dtype=dtype, max_length=256)
    assert index.bm25 is not None
    flat_q: list[str] = []
    flat_t: list[str] = []
    for query, hits in zip(queries, index.bm25.search_batch(queries, depth), strict=True):
        docs = index.documents([hit.doc_id for hit in hits])
        flat_q.extend([query] * len(docs))
        flat_t.extend(document_text(doc) for doc in docs)
    pairs = reranker.encoder.encode(flat_q, flat_t)
    groups = query_groups(flat_q)
    alone = np.concatenate(
        [reranker.score_encoded(_subset(pairs, np.flatnonzero(groups == g)), groups=[0] * int(np.sum(groups == g)))
         for g in range(int(groups.max()) + 1)]
    )  # fmt: skip
    result: dict[str, Any] = {}
    for name, grouped in (("per query, <= 8 rows (searchkit)", True), ("mixed across queries (before)", False)):
        start = time.perf_counter()
        scores = reranker.score_encoded(pairs, groups=groups if grouped else None)
        seconds = time.perf_counter() - start
        result[name] = {"pairs_per_s": round(len(flat_q) / seconds, 1), **_differ(alone, scores)}
    return result


def _subset(pairs: Any, rows: np.ndarray) -> Any:
    return type(pairs)(
        [pairs.input_ids[i] for i in rows],
        None if pairs.token_type_ids is None else [pairs.token_type_ids[i] for i in rows],
        0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    docs = [document_text(doc) for doc in read_corpus(DATA)]
    queries = _queries(docs)
    index = Index.build(DATA, Path(tempfile.mkdtemp()) / "medline", bm25=BM25Config())
    rows: dict[str, Any] = {}
    for dtype in args.dtypes:
        rows[dtype] = {"encoder": _encoder(dtype, queries), "reranker": _reranker(dtype, queries, index, args.depth)}
        print(dtype, rows[dtype], flush=True)
    result = {"machine": cpu_description(), "versions": versions("torch", "transformers"), "queries": len(queries),
              "rerank_depth": args.depth, "rows": rows}  # fmt: skip
    write_json(args.json, result)
    if args.markdown:
        lines = ["# Same query, same answer: what it costs", "", f"Command: `python {' '.join(sys.argv)}`", "",
                 f"{len(queries)} queries (Medline's 30 + 70 document openings); machine: {result['machine']}", "",
                 "| dtype | stage | batching | queries/s or pairs/s | differing from alone | max diff |",
                 "| --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        for dtype, stages in rows.items():
            for stage, variants in stages.items():
                for name, row in variants.items():
                    rate = row.get("queries_per_s", row.get("pairs_per_s"))
                    lines.append(f"| {dtype} | {stage} | {name} | {rate} | {row['differ']} | {row['max_diff']:.2e} |")
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    run_main(main)
