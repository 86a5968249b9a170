"""Dense retrieval speed against its peers: our encoder vs SentenceTransformer.encode, DenseRetriever search
vs raw faiss, and (with a GPU) CPU-vs-GPU top-10 agreement. Prints a table; --json writes the numbers.

    python bench/dense.py --limit 500 --nvec 50000 --json eval/results/bench_dense_cpu.json   # CPU, small
    python bench/dense.py --model .device/model --data-root .device/datasets --json $OUT/gpu.json

Timings are the median of --repeats runs after a warm-up; GPU regions end in a synchronizing copy to the host
(numpy results), so wall-clock timing is exact. Both sides of a comparison use the same model object, dtype
(fp16 on GPU, fp32 on CPU), batch size, vectors and queries.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, paired_times, run_main, speedup, versions

from searchkit.config import DenseConfig
from searchkit.formats import document_text, read_corpus, read_queries
from searchkit.models.device import resolve_device
from searchkit.models.encoder import Encoder
from searchkit.retrieval.dense import DenseRetriever


def bench_encode(args: argparse.Namespace, device: str, texts: list[str], sync: Callable[[], None]) -> dict:
    """Our Encoder (``--dtype``, default auto: bf16 on AMX / AVX512-BF16 CPUs, fp16 on GPU; token-budget batches)
    against ``SentenceTransformer.encode`` with its defaults (fp32, batch 32) on the same model and texts."""
    from sentence_transformers import SentenceTransformer

    from searchkit.models.loading import resolve_model

    encoder = Encoder(args.model, device=device, max_length=args.max_length, dtype=args.dtype)
    st = SentenceTransformer(resolve_model(args.model), device=device)  # the peer as a user would load it
    st.max_seq_length = args.max_length

    def theirs() -> np.ndarray:
        return st.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    warm = texts[:64]
    encoder.encode(warm)  # warm-up both paths
    theirs_warm = st.encode(warm, batch_size=32, show_progress_bar=False)
    del theirs_warm
    times = paired_times({"ours": lambda: encoder.encode(texts), "peer": theirs}, args.repeats, sync)
    a, b = encoder.encode(texts), theirs()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    lengths = [len(ids) for ids in encoder.tokenize(texts)]
    return {
        "docs": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "dtype_ours": encoder.dtype,
        "dtype_peer": "float32",
        "batch_tokens": encoder.batch_tokens,
        **speedup(times, "ours", "peer", len(texts)),
        "min_cosine_vs_st": float(cosine.min()),
    }


def bench_faiss(args: argparse.Namespace, device: str, folder: Path, sync: Callable[[], None]) -> dict:
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.nvec, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float16)
    q = rng.standard_normal((args.nq, args.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(args.nvec)]
    config = DenseConfig(model="synthetic", device=device)
    start = time.perf_counter()
    ours = DenseRetriever.from_embeddings(x, folder, config, ids, model_info={"name": "synthetic"})
    build_s = time.perf_counter() - start
    raw = faiss.IndexFlatIP(args.dim)
    raw.add(x.astype(np.float32))
    if ours.where != "cpu":
        raw = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, raw)
    ours.search_vectors(q[:100], args.k)
    raw.search(q[:100], args.k)
    times = paired_times(
        {"ours": lambda: ours.search_vector_rows(q, args.k), "peer": lambda: raw.search(q, args.k)},
        args.repeats,
        sync,
    )
    check = q[:200]
    _, raw_rows = raw.search(check, 10)
    same = sum(
        [h.doc_id for h in hits] == [ids[r] for r in rows]
        for hits, rows in zip(ours.search_vectors(check, 10), raw_rows, strict=True)
    )
    return {
        "nvec": args.nvec,
        "dim": args.dim,
        "queries": args.nq,
        "k": args.k,
        "on": ours.where,
        "build_s": build_s,
        **speedup(times, "ours", "peer", args.nq),
        "top10_same_as_raw": same / len(check),
    }


def bench_parity(args: argparse.Namespace, texts_ids: list[str], texts: list[str], queries: list[str]) -> dict:
    """CPU vs GPU top-10 on one index: synthetic vectors (FAISS only) and the corpus (encoder + FAISS)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gpu_encoder = Encoder(args.model, device="cuda", max_length=args.max_length, batch_size=args.batch_size)
        emb = gpu_encoder.encode(texts)
        folder = Path(tmp) / "corpus"
        DenseRetriever.from_embeddings(emb, folder, DenseConfig(model=args.model), texts_ids)
        runs = {}
        for device in ("cpu", "cuda"):
            retriever = DenseRetriever.load(folder, DenseConfig(model=args.model, device=device), texts_ids)
            runs[device] = retriever.search_batch(queries, 10)
        pairs = list(zip(runs["cpu"], runs["cuda"], strict=True))
        out["corpus_queries"] = len(queries)
        out["corpus_top10_identical"] = sum([h.doc_id for h in a] == [h.doc_id for h in b] for a, b in pairs) / len(
            pairs
        )
        out["corpus_mean_overlap_at_10"] = float(
            np.mean([len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10 for a, b in pairs])
        )
        rng = np.random.default_rng(1)
        x = rng.standard_normal((min(args.nvec, 200_000), args.dim), dtype=np.float32)
        q = rng.standard_normal((1000, args.dim), dtype=np.float32)
        ids = [str(i) for i in range(len(x))]
        DenseRetriever.from_embeddings(x, Path(tmp) / "syn", DenseConfig(model="s"), ids, model_info={"name": "s"})
        cpu = DenseRetriever.load(Path(tmp) / "syn", DenseConfig(model="s", device="cpu"), ids)
        gpu = DenseRetriever.load(Path(tmp) / "syn", DenseConfig(model="s", device="cuda"), ids)
        same = [
            [h.doc_id for h in a] == [h.doc_id for h in b]
            for a, b in zip(cpu.search_vectors(q, 10), gpu.search_vectors(q, 10), strict=True)
        ]
        out["synthetic_top10_identical"] = sum(same) / len(same)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or folder (default: embedded)")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="ours: auto (bf16 on AMX CPUs, fp16 on GPU), fp32, bf16")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nvec", type=int, default=None, help="default: 1,000,000 on GPU, 100,000 on CPU")
    parser.add_argument("--nq", type=int, default=None, help="default: 10,000 on GPU, 1,000 on CPU")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("-k", "--k", type=int, default=100)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    import faiss
    import torch

    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    args.batch_size = args.batch_size or (256 if gpu else 64)
    args.nvec = args.nvec or (1_000_000 if gpu else 100_000)
    args.nq = args.nq or (10_000 if gpu else 1_000)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    source = Path(args.data_root) / args.dataset
    docs = []
    for doc in read_corpus(source):
        if args.limit is not None and len(docs) >= args.limit:
            break
        docs.append(doc)
    texts = [document_text(doc) for doc in docs]
    queries = [q.text for q in read_queries(source, split="test")][:300]

    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "env": {
            "device": device,
            "gpu_name": torch.cuda.get_device_name(0) if gpu else None,
            "machine": cpu_description(),
            "versions": versions("torch", "faiss-cpu", "faiss-gpu", "sentence-transformers", "transformers"),
            "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
            "model": args.model,
            "dataset": args.dataset,
        },
    }
    print(f"encoding {len(texts)} {args.dataset} docs on {device} (batch {args.batch_size}) ...", flush=True)
    results["encode"] = bench_encode(args, device, texts, sync)
    print(f"FAISS: {args.nvec} x {args.dim} vectors, {args.nq} queries, k={args.k} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results["faiss"] = bench_faiss(args, device, Path(tmp), sync)
    if gpu:
        print("CPU vs GPU top-10 ...", flush=True)
        results["parity"] = bench_parity(args, [d.doc_id for d in docs], texts, queries)

    enc, fs = results["encode"], results["faiss"]
    rows = [
        ("encode docs/s: ours", f"{enc['ours_per_s']:,.1f}"),
        ("encode docs/s: SentenceTransformer.encode (fp32, batch 32)", f"{enc['peer_per_s']:,.1f}"),
        (
            "encode speedup ours vs ST (min..max)",
            f"{enc['ratio']:.2f}x ({enc['ratio_min']:.2f}..{enc['ratio_max']:.2f})",
        ),
        ("encode dtype ours / peer", f"{enc['dtype_ours']} / {enc['dtype_peer']}"),
        ("encode: min cosine ours vs ST", f"{enc['min_cosine_vs_st']:.6f}"),
        (f"search q/s: DenseRetriever ({fs['on']})", f"{fs['ours_per_s']:,.0f}"),
        (f"search q/s: raw faiss ({fs['on']})", f"{fs['peer_per_s']:,.0f}"),
        ("search speed ours vs raw (min..max)", f"{fs['ratio']:.2f}x ({fs['ratio_min']:.2f}..{fs['ratio_max']:.2f})"),
        ("search top-10 identical to raw", f"{fs['top10_same_as_raw']:.1%}"),
    ]
    if "parity" in results:
        par = results["parity"]
        rows += [
            ("CPU vs GPU top-10 identical: synthetic", f"{par['synthetic_top10_identical']:.1%}"),
            ("CPU vs GPU top-10 identical: corpus queries", f"{par['corpus_top10_identical']:.1%}"),
            ("CPU vs GPU mean overlap@10: corpus queries", f"{par['corpus_mean_overlap_at_10']:.3f}"),
        ]
    print()
    machine = results["env"]["machine"]
    print(f"machine: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['torch_threads']} torch threads")
    print(f"| dense bench ({device}, {len(texts)} docs, {enc['mean_tokens']:.0f} tokens mean) | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_main(main)
