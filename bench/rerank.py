"""Reranker speed against its peer: CrossEncoderReranker.score vs sentence_transformers.CrossEncoder.predict on
the same model folder, dtype, batch size and (query, document) pairs: the BM25 top-k of SciFact test queries.
Prints a table with the pairs/s ratio and the largest score difference; --json writes the numbers.

    python bench/rerank.py --pairs 256 --json eval/results/bench_rerank_cpu.json                  # CPU, small
    python bench/rerank.py --model .device/model --data-root .device/datasets --pairs 20000 --json $OUT/gpu.json

--model: a one-output cross-encoder folder; a folder without one (a base encoder such as the embedded
all-MiniLM-L6-v2, the default) gets a fresh one-output head saved to a temp folder (speed only: the scores mean
nothing, but both sides load the same folder). Timings are medians of --repeats runs after a warm-up, the two
sides interleaved; ``score`` returns numpy, so GPU work has finished when the clock stops. Our time includes
tokenization, as CrossEncoder.predict's does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from searchkit.formats import document_text, read_queries
from searchkit.index import Index
from searchkit.rerank import CrossEncoderReranker, resolve_device, resolve_dtype


def paired_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run interleaved (order flipped every repeat)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        for name in list(fns) if repeat % 2 == 0 else list(reversed(fns)):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def one_output_model(model: str, workdir: Path) -> tuple[str, bool]:
    """``model`` if it is a one-output classifier, else a copy with a fresh one-output head (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from searchkit.models import resolve_model

    resolved = resolve_model(model)
    if AutoConfig.from_pretrained(resolved).num_labels == 1:
        return resolved, False
    torch.manual_seed(0)
    head = AutoModelForSequenceClassification.from_pretrained(resolved, num_labels=1, dtype=torch.float32)
    folder = workdir / "one-output"
    head.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolved).save_pretrained(folder)
    return str(folder), True


def scifact_pairs(args: argparse.Namespace, workdir: Path) -> tuple[list[str], list[str]]:
    """BM25 top-k of the test queries, in query order, until ``--pairs`` pairs."""
    source = Path(args.data_root) / args.dataset
    index_path = Path(args.index) if args.index else workdir / "index"
    index = Index.open(index_path) if index_path.exists() else Index.build(source, index_path)
    queries = read_queries(source, split="test")
    texts_of = index.bm25.search_batch([q.text for q in queries], args.k)  # type: ignore[union-attr]
    pairs: list[tuple[str, str]] = []
    for query, hits in zip(queries, texts_of, strict=True):
        docs = index.documents([hit.doc_id for hit in hits])
        pairs.extend((query.text, document_text(doc)) for doc in docs)
        if len(pairs) >= args.pairs:
            break
    pairs = pairs[: args.pairs]
    return [q for q, _ in pairs], [t for _, t in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or name (default: embedded)")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--index", default=None, help="a BM25 index of the dataset (default: built in a temp dir)")
    parser.add_argument("--pairs", type=int, default=2000, help="number of (query, document) pairs")
    parser.add_argument("-k", "--k", type=int, default=100, help="BM25 depth per query")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    load_start = os.getloadavg()[0]
    device = resolve_device(args.device)
    batch_size = args.batch_size or (256 if device.startswith("cuda") else 32)
    torch_dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, fresh_head = one_output_model(args.model, workdir)
        queries, texts = scifact_pairs(args, workdir)
        ours = CrossEncoderReranker(
            model, max_length=args.max_length, batch_size=batch_size, device=device, dtype=args.dtype
        )
        peer = CrossEncoder(model, device=device, max_length=args.max_length, model_kwargs={"dtype": torch_dtype})
        identity = torch.nn.Identity()
        pairs = list(zip(queries, texts, strict=True))

        def theirs() -> np.ndarray:
            return peer.predict(pairs, batch_size=batch_size, activation_fn=identity, show_progress_bar=False)

        warm = slice(0, 2 * batch_size)
        ours.score(queries[warm], texts[warm])
        peer.predict(pairs[warm], batch_size=batch_size, activation_fn=identity, show_progress_bar=False)
        timed = paired_medians(
            {
                "ours": lambda: ours.score(queries, texts),
                "theirs": theirs,
                "tokenize": lambda: ours.encoder.encode(queries, texts),
            },
            args.repeats,
        )
        a, b = ours.score(queries, texts), theirs()
        encoded = ours.encoder.encode(queries, texts)
    result = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "model": args.model,
        "fresh_head": fresh_head,
        "pairs": len(pairs),
        "batch_size": batch_size,
        "max_length": ours.max_length,
        "mean_tokens": float(np.mean([len(ids) for ids in encoded.input_ids])),
        "truncated_pairs": encoded.truncated,
        "ours_pairs_per_s": len(pairs) / timed["ours"],
        "crossencoder_predict_pairs_per_s": len(pairs) / timed["theirs"],
        "ratio": timed["theirs"] / timed["ours"],
        "tokenize_share": timed["tokenize"] / timed["ours"],
        "max_abs_score_diff": float(np.abs(a - b).max()),
        "repeats": args.repeats,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"reranker speed, {result['pairs']} scifact BM25 pairs ({result['mean_tokens']:.0f} tokens on average, ")
    print(f"max_length {result['max_length']}), {result['device']}, {result['dtype']}, batch {batch_size}")
    print(f"  {'searchkit CrossEncoderReranker.score':40s} {result['ours_pairs_per_s']:10.1f} pairs/s")
    print(f"  {'sentence-transformers CrossEncoder.predict':40s} {result['crossencoder_predict_pairs_per_s']:10.1f}")
    print(f"  ratio (ours / peer): {result['ratio']:.2f}x   tokenization share of ours: {result['tokenize_share']:.1%}")
    print(f"  largest score difference: {result['max_abs_score_diff']:.2e}")
    load = result["load_average_1min"]
    print(
        f"  1-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end ({load['cpus']} CPUs)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
