"""Big-index FAISS on the CPU: recall@10 against exact search, build time, size on disk, RSS after loading
(memory-mapped or read into memory) and queries/s, for the FAISS types a large corpus needs, at 100k and 1M vectors.

Every index is built, tuned and read the way an index build does it: ``searchkit.retrieval.faiss_index.rebuild_index``
over an fp16 ``embeddings.npy`` (which calls ``build_faiss_index``: inner product, trained on a seeded sample of
``--train-sample`` rows, as ``DenseConfig.train_sample``), ``apply_search_params`` for nprobe / efSearch, and
``read_faiss_index`` for the loads whose RSS is measured. The oracle is exact inner product by numpy over the same
fp16-rounded vectors (so Flat's recall is 1 up to exact ties).

Data: unit vectors from a Gaussian mixture (``--clusters`` centres, default N/100) whose mean and covariance are
fitted to real all-MiniLM-L6-v2 embeddings (``--like``: the ``embeddings.npy`` of the indexes under ``indexes/``,
about 20k passages of SciFact, Vaswani, CISI, Cranfield and Medline) and split into between-centre and within-centre
parts by k-means on them: the same spectrum as real sentence embeddings, 10-100x more vectors than we can encode
here. Queries are fresh draws around the same centres. ``--like none`` draws an isotropic mixture instead. How
alike the synthetic and the real vectors are is printed: the mean cosine of each vector's nearest neighbour in a
sample of the real set's size, for both.

Each index type is searched at a couple of settings (nprobe for IVF, efSearch for HNSW), all ``--queries`` queries in
one batch (faiss spreads them over the cores), queries/s the median of ``--repeats`` passes after a warm-up. RSS is
measured in a fresh process per load (anonymous + file-backed resident MB over the process before the read, after the
read and after one pass of the queries): a memory-mapped index (Flat, HNSW, IVF, IVF-PQ, OPQ: see
``searchkit.retrieval.faiss_index.MMAP_TYPES``) costs almost no anonymous memory and its file pages are shared by every
process that maps the file (the page cache, not the process, holds them).

Usage (from the repository root; the real run takes the machine's heavy-work lock)::

    flock /tmp/heavy.lock python bench/faiss_big.py --sizes 100k 1M \
        --json eval/results/faiss_big_cpu.json --markdown eval/results/faiss_big_cpu.md
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchtools import cpu_description, markdown_table, run_main, versions, write_json  # noqa: E402

from searchkit.config import DenseConfig  # noqa: E402
from searchkit.retrieval.faiss_index import apply_search_params, faiss_parts, rebuild_index  # noqa: E402

K = 10
CHUNK = 65_536
LIKE_DEFAULT = "indexes/*-base/dense/embeddings.npy,indexes/scifact/dense/embeddings.npy"


def parse_size(text: str) -> int:
    """``100k`` -> 100000, ``1M`` -> 1000000, ``2500`` -> 2500."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text.strip()[-1:].lower(), 1)
    return int(float(text.strip()[:-1] if scale != 1 else text) * scale)


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1_000}k" if n >= 1_000 and n % 1_000 == 0 else str(n)


# ---------------------------------------------------------------- data


class Mixture:
    """A Gaussian mixture of unit vectors: centres ~ N(mean, between), vectors ~ centre + N(0, within), normalised."""

    def __init__(self, mean: np.ndarray, between: np.ndarray, within: np.ndarray, source: str) -> None:
        self.mean, self.source = mean.astype(np.float64), source
        self.between, self.within = _sqrt_psd(between), _sqrt_psd(within)

    @classmethod
    def isotropic(cls, dim: int) -> Mixture:
        eye = np.eye(dim) / dim
        return cls(np.zeros(dim), eye, 0.5 * eye, "isotropic Gaussian mixture (within-centre variance 1/2 of between)")

    @classmethod
    def fitted(cls, real: np.ndarray, source: str, seed: int = 0) -> Mixture:
        """Mean and covariance of ``real``, split into between / within parts by k-means (64 centres), the within
        part then shrunk (its variance moved between centres, the total kept) until the vectors' nearest-neighbour
        cosine, at ``real``'s size and N / 100 centres, is the real one's: real embeddings are locally tighter than
        64 Gaussian blobs."""
        import faiss

        x = np.ascontiguousarray(real, dtype=np.float32)
        kmeans = faiss.Kmeans(x.shape[1], min(64, max(2, len(x) // 100)), niter=20, seed=seed, verbose=False)
        kmeans.train(x)
        _, assign = kmeans.index.search(x, 1)
        within = np.cov((x - kmeans.centroids[assign[:, 0]]).T.astype(np.float64))
        total = np.cov(x.T.astype(np.float64))
        target, best = nn_cosine(x), None
        for shrink in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2):
            model = cls(x.mean(axis=0), total - shrink * within, shrink * within, source)
            sample = model.draw(model.centres(max(10, len(x) // 100), seed + 1), len(x), seed + 2)
            gap = abs(nn_cosine(sample) - target)
            if best is None or gap < best[0]:
                best = (gap, model, shrink)
        assert best is not None
        best[1].source = f"{source}, within-centre covariance x{best[2]}"
        return best[1]

    def centres(self, count: int, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((count, len(self.mean)))
        return self.mean + z @ self.between.T

    def draw(self, centres: np.ndarray, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = centres[rng.integers(0, len(centres), count)] + rng.standard_normal((count, len(self.mean))) @ self.within.T
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0, None))


def load_like(spec: str, dim: int) -> tuple[np.ndarray | None, str]:
    """The real embeddings named by ``spec`` (comma-separated globs), as float32 rows of ``dim``; None for 'none'."""
    if spec == "none":
        return None, "none"
    paths = sorted({path for pattern in spec.split(",") for path in glob.glob(str(REPO / pattern))})
    arrays = [np.load(path, mmap_mode="r") for path in paths]
    arrays = [array for array in arrays if array.ndim == 2 and array.shape[1] == dim]
    if not arrays:
        return None, "none found"
    real = np.concatenate([np.asarray(array, dtype=np.float32) for array in arrays])
    names = ", ".join(Path(path).parts[-3] for path in paths)
    return real / np.linalg.norm(real, axis=1, keepdims=True), f"{len(real)} vectors of {names}"


def nn_cosine(x: np.ndarray, probes: int = 500, seed: int = 0) -> float:
    """Mean cosine of the nearest other vector, over ``probes`` vectors of ``x``."""
    rows = np.random.default_rng(seed).choice(len(x), size=min(probes, len(x)), replace=False)
    scores = x[rows] @ x.T
    scores[np.arange(len(rows)), rows] = -np.inf
    return float(scores.max(axis=1).mean())


def write_vectors(path: Path, mixture: Mixture, centres: np.ndarray, n: int, seed: int) -> None:
    """``n`` mixture vectors as the fp16 embeddings.npy an index stores, written in chunks."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, len(mixture.mean)))
    for number, start in enumerate(range(0, n, CHUNK)):
        out[start : start + CHUNK] = mixture.draw(centres, min(CHUNK, n - start), seed + 1 + number)
    out.flush()
    del out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top ``k`` inner products (numpy, in chunks of stored fp16 rows), best first."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), CHUNK):
        block = np.asarray(vectors[start : start + CHUNK], dtype=np.float32)
        scores = queries @ block.T
        top = np.argpartition(-scores, min(k, len(block) - 1), axis=1)[:, :k]
        scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_rows = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)
    return best_rows


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


# ---------------------------------------------------------------- measuring


RSS_CHILD = r"""
import json, sys
import faiss  # loaded before the first measure: its library is not the index's memory
import numpy as np
sys.path.insert(0, sys.argv[1])
from searchkit.retrieval.faiss_index import apply_search_params, read_faiss_index

def rss():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out

queries = np.load(sys.argv[3])
before = rss()
index = read_faiss_index(sys.argv[2], mmap=sys.argv[4] == "mmap")
loaded = rss()
apply_search_params(index, nprobe=int(sys.argv[5]), ef_search=int(sys.argv[6]))
_, rows = index.search(queries, 10)
searched = rss()
np.save(sys.argv[7], rows)
delta = lambda now: {key: round(now[key] - before[key], 1) for key in before}
print(json.dumps({"load": delta(loaded), "search": delta(searched)}))
"""


def rss_of_load(path: Path, queries_path: Path, mode: str, nprobe: int, ef_search: int) -> dict[str, Any]:
    """RSS (MB: anonymous, file-backed) a fresh process gains reading ``path`` and searching the queries once."""
    rows_path = path.with_name(f"rows-{mode}.npy")
    args = [str(REPO), str(path), str(queries_path), mode, str(nprobe), str(ef_search), str(rows_path)]
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows"] = np.load(rows_path)
    return result


def settings_for(index: Any, nprobes: list[int], ef_searches: list[int]) -> list[dict[str, int]]:
    """The search settings worth measuring for ``index``: nprobe (IVF), efSearch (HNSW), or the one exact search."""
    import faiss

    default = DenseConfig()
    if faiss.try_extract_index_ivf(index) is not None:
        return [{"nprobe": value, "ef_search": default.ef_search} for value in nprobes]
    if isinstance(faiss_parts(index)[0], faiss.IndexHNSW):
        return [{"nprobe": default.nprobe, "ef_search": value} for value in ef_searches]
    return [{"nprobe": default.nprobe, "ef_search": default.ef_search}]


def setting_label(index: Any, setting: dict[str, int]) -> str:
    import faiss

    if faiss.try_extract_index_ivf(index) is not None:
        return f"nprobe={setting['nprobe']}"
    if isinstance(faiss_parts(index)[0], faiss.IndexHNSW):
        return f"efSearch={setting['ef_search']}"
    return "exact"


def bench_factory(
    factory: str, folder: Path, embeddings: Path, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    folder.mkdir(parents=True)
    (folder / "embeddings.npy").hardlink_to(embeddings)
    print(f"  {factory}: building", flush=True)
    started = time.perf_counter()
    index = rebuild_index(folder, factory, train_sample=args.train_sample, seed=args.seed)
    total = time.perf_counter() - started
    info = json.loads((folder / "faiss.json").read_text(encoding="utf-8"))
    row: dict[str, Any] = {
        "factory": factory,
        "build_and_write_s": round(total, 3),
        "train_rows": info["train_rows"],
        "bytes": (folder / "index.faiss").stat().st_size,
        "faiss_json": info,
        "settings": [],
    }
    for setting in settings_for(index, args.nprobe, args.ef_search):
        apply_search_params(index, **setting)
        index.search(queries[:10], K)  # warm-up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _, rows = index.search(queries, K)
            seconds.append(time.perf_counter() - start)
        measured = {
            "setting": setting_label(index, setting),
            **setting,
            "recall_at_10": round(recall_at(rows, truth), 4),
            "qps": round(len(queries) / statistics.median(seconds), 1),
            "seconds": [round(s, 4) for s in seconds],
        }
        row["settings"].append(measured)
        print(f"  {factory} {measured['setting']}: recall@10 {measured['recall_at_10']}, {measured['qps']} q/s")
    del index
    first = row["settings"][0]
    queries_path = folder / "queries.npy"
    np.save(queries_path, queries)
    loads = {mode: rss_of_load(folder / "index.faiss", queries_path, mode, first["nprobe"], first["ef_search"])
             for mode in ("in_memory", "mmap")}  # fmt: skip
    same = all("rows" in load for load in loads.values()) and np.array_equal(
        loads["mmap"]["rows"], loads["in_memory"]["rows"]
    )
    row["rss_mb"] = {mode: {k: v for k, v in load.items() if k != "rows"} for mode, load in loads.items()}
    row["mmap_mapped"] = bool(info.get("mmap"))
    row["mmap_identical_results"] = bool(same)
    if not args.keep:
        shutil.rmtree(folder)
    return row


def default_factories(n: int, pq_m: int) -> list[str]:
    """Flat, HNSW32, and IVF with about 4 sqrt(n) lists (a power of two): Flat, PQ, fast-scan PQ, OPQ + PQ."""
    lists = 2 ** round(math.log2(4 * math.sqrt(n)))
    return [
        "Flat",
        "HNSW32",
        f"IVF{lists},Flat",
        f"IVF{lists},PQ{pq_m}",
        f"IVF{lists},PQ{2 * pq_m}x4fs",
        f"OPQ{pq_m},IVF{lists},PQ{pq_m}",
    ]


def bench_size(n: int, mixture: Mixture, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print(f"{size_label(n)} vectors of {args.dim}: generating", flush=True)
    clusters = args.clusters or max(10, n // 100)
    centres = mixture.centres(clusters, args.seed)
    embeddings = work / f"embeddings-{n}.npy"
    write_vectors(embeddings, mixture, centres, n, args.seed)
    queries = mixture.draw(centres, args.queries, args.seed + 10_000)
    vectors = np.load(embeddings, mmap_mode="r")
    started = time.perf_counter()
    truth = exact_top_k(vectors, queries, K)
    oracle_s = time.perf_counter() - started
    rows = []
    for factory in args.factories or default_factories(n, args.pq_m):
        rows.append(bench_factory(factory, work / f"{n}-{factory.replace(',', '_')}", embeddings, queries, truth, args))
    embeddings.unlink()
    return {"n": n, "label": size_label(n), "clusters": clusters, "oracle_numpy_s": round(oracle_s, 2), "indexes": rows}


def calibrate(real: np.ndarray, mixture: Mixture, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Recall@10 of each default factory on the real embeddings and on as many synthetic ones (held-out vectors
    as queries), at each setting: how far the synthetic data's difficulty is from real embeddings'."""
    n = len(real) - args.queries
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(real))
    sets = {"real": (real[order[args.queries :]], real[order[: args.queries]])}
    centres = mixture.centres(max(10, n // 100), args.seed + 1)
    sets["synthetic"] = (mixture.draw(centres, n, args.seed + 2), mixture.draw(centres, args.queries, args.seed + 3))
    rows: dict[str, dict[str, Any]] = {}
    for name, (docs, queries) in sets.items():
        stored = docs.astype(np.float16)
        truth = exact_top_k(stored, queries, K)
        for factory in default_factories(n, args.pq_m)[1:]:
            folder = work / f"calibrate-{name}-{factory.replace(',', '_')}"
            folder.mkdir(parents=True)
            np.save(folder / "embeddings.npy", stored)
            index = rebuild_index(folder, factory, train_sample=args.train_sample, seed=args.seed)
            for setting in settings_for(index, args.nprobe, args.ef_search):
                apply_search_params(index, **setting)
                _, found = index.search(queries, K)
                key = f"{factory} {setting_label(index, setting)}"
                rows.setdefault(key, {"factory": factory, "setting": setting_label(index, setting)})
                rows[key][name] = round(recall_at(found, truth), 4)
            shutil.rmtree(folder)
        print(f"  calibration on {name} data done", flush=True)
    return list(rows.values())


# ---------------------------------------------------------------- report


def table(size: dict[str, Any]) -> str:
    head = (
        "| factory | search | recall@10 | q/s | build s (train+add) | size MB | mapped | RSS after load, MB: in "
        "memory / mmap | RSS after the queries, MB: in memory / mmap |"
    )
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]

    def rss(row: dict[str, Any], when: str) -> str:
        out = []
        for mode in ("in_memory", "mmap"):
            load = row["rss_mb"][mode]
            if "error" in load:
                out.append("error")
            else:
                anon, file = load[when]["RssAnon"], load[when]["RssFile"]
                out.append(f"{anon + file:,.0f} ({anon:,.0f} anon)")
        return " / ".join(out)

    for row in size["indexes"]:
        for number, setting in enumerate(row["settings"]):
            cells = [setting["setting"], f"{setting['recall_at_10']:.3f}", f"{setting['qps']:,.0f}"]
            if number == 0:
                mapped = "no" if not row["mmap_mapped"] else "yes" if row["mmap_identical_results"] else "DIFFERS"
                built = [f"{row['build_and_write_s']:,.1f}", f"{row['bytes'] / 1e6:,.1f}", mapped, rss(row, "load")]
                built.append(rss(row, "search"))
                lines.append("| " + " | ".join([row["factory"], *cells, *built]) + " |")
            else:
                lines.append("| " + " | ".join(["", *cells, "", "", "", "", ""]) + " |")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    machine = result["machine"]
    parts = [
        "# Big-index FAISS on the CPU: recall@10 against exact search",
        "",
        f"Command: `{result['command']}`",
        "",
        markdown_table(
            "setting",
            [
                ("machine", f"{machine['cpu']}, {machine['cores']} cores, load average {machine['load_average_1min']}"),
                ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items())),
                ("data", result["data"]["description"]),
                ("nearest-neighbour cosine, real / synthetic", result["data"]["nn_cosine"]),
                ("dimension, queries, k", f"{result['dim']}, {result['queries']}, {K}"),
                ("train sample", f"{result['train_sample']} rows (DenseConfig.train_sample), seed {result['seed']}"),
                ("faiss threads", str(result["threads"])),
            ],
        ),
    ]
    if result.get("calibration"):
        parts += [
            "",
            "## Synthetic vs real: recall@10 of the same factories on the real embeddings and on as many synthetic",
            "",
            "| factory | search | real | synthetic |",
            "| --- | --- | ---: | ---: |",
            *(
                f"| {r['factory']} | {r['setting']} | {r['real']:.3f} | {r['synthetic']:.3f} |"
                for r in result["calibration"]
            ),
        ]
    for size in result["sizes"]:
        parts += ["", f"## {size['label']} vectors ({size['clusters']} mixture centres)", "", table(size)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100k", "1M"])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--pq-m", type=int, default=48, help="PQ sub-quantizers (bytes a vector at 8 bits)")
    parser.add_argument("--factories", nargs="*", help="FAISS factories (default: see default_factories)")
    parser.add_argument("--nprobe", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--ef-search", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--train-sample", type=int, default=DenseConfig().train_sample)
    parser.add_argument("--clusters", type=int, default=0, help="mixture centres (default: N / 100)")
    parser.add_argument("--like", default=LIKE_DEFAULT, help="real embeddings.npy globs to fit, or 'none'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (default: faiss's, the cores)")
    parser.add_argument("--no-calibrate", action="store_true", help="skip the real-vs-synthetic recall comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where indexes are built (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    real, found = load_like(args.like, args.dim)
    if real is None:
        mixture = Mixture.isotropic(args.dim)
    else:
        mixture = Mixture.fitted(real, f"fitted to {found}", seed=args.seed)
    description = f"unit vectors of a Gaussian mixture, {mixture.source}"
    if real is not None:
        sample = mixture.draw(mixture.centres(max(10, len(real) // 100), args.seed + 1), len(real), args.seed + 2)
        similarity = f"{nn_cosine(real):.3f} / {nn_cosine(sample):.3f} (among {len(real)} vectors)"
    else:
        similarity = "no real embeddings given"
    result: dict[str, Any] = {
        "machine": cpu_description(),
        "versions": versions("faiss-cpu", "numpy"),
        "data": {"description": description, "nn_cosine": similarity, "like": args.like},
        "dim": args.dim,
        "queries": args.queries,
        "train_sample": args.train_sample,
        "seed": args.seed,
        "threads": faiss.omp_get_max_threads(),
        "calibration": [],
        "sizes": [],
    }
    work = args.workdir or Path(tempfile.mkdtemp(prefix="faiss-big-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if real is not None and not args.no_calibrate:
            print(f"calibration: {len(real)} real vectors against as many synthetic ones", flush=True)
            result["calibration"] = calibrate(real, mixture, args, work)
        for text in args.sizes:
            result["sizes"].append(bench_size(parse_size(text), mixture, args, work))
            write_json(args.json, result)  # after every size: a long run keeps what it measured
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_1min_end"] = cpu_description()["load_average_1min"]
    write_json(args.json, result)
    text = report({"command": " ".join(["python", *sys.argv]), **result})
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    run_main(main)
