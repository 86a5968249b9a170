"""Benchmark searchkit's BM25Retriever against raw bm25s and rank-bm25 (single-threaded CPU).

For each dataset every engine sees the same tokens: the corpus is analyzed once by bm25s's tokenizer
(English stemmer + stopwords), rank-bm25 gets those token strings, and the script checks that searchkit's
analyzer produces exactly the same ones. Then it measures

* query throughput (queries/s, median of ``--repeats``), top-10:
  ours ``BM25Retriever.search_batch(query strings)`` on the loaded (memory-mapped) index, query analysis
  and Hit objects included; raw bm25s ``bm25s.tokenize(queries)`` + ``retrieve(k=10)``, its tokenization
  included too; rank-bm25 ``BM25Okapi.get_scores`` + top-k on pre-tokenized queries, over a subset of
  ``--rank-bm25-queries`` queries because it is slow (per-query rate);
* index build time and peak RSS, each build in a fresh subprocess (corpus read from disk, tokenized, indexed,
  saved), median time of ``--build-repeats``;
* agreement: share of queries whose top-10 documents (score > 0) are the same for ours and raw bm25s.

Usage (from the repository root)::

    python bench/bm25.py --datasets scifact vaswani --repeats 5 \
        --json eval/results/bench_bm25.json --markdown eval/results/bench_bm25.md
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("DISABLE_TQDM", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

K = 10
STOPWORDS = "en"
STEMMER = "english"


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _text(record: dict[str, Any]) -> str:
    title, text = record.get("title") or "", record.get("text") or ""
    return f"{title} {text}" if title and text else title or text


def _rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's peak at fork, even across exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------- child: one build, fresh process
def _child_build(engine: str, dataset: Path, out: Path) -> None:
    import bm25s
    import Stemmer

    from searchkit.config import BM25Config
    from searchkit.retrieval.bm25 import BM25Retriever
    from searchkit.types import Document

    baseline = _rss_mb()
    start = time.perf_counter()
    if engine == "ours":
        docs = (Document(r["_id"], r.get("text") or "", r.get("title") or "") for r in _jsonl(dataset / "corpus.jsonl"))
        BM25Retriever.build(docs, out, BM25Config(stemmer=STEMMER, stopwords=STOPWORDS))
    else:
        texts = [_text(record) for record in _jsonl(dataset / "corpus.jsonl")]
        tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=Stemmer.Stemmer(STEMMER), show_progress=False)
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        model.save(out, show_progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline}))


def _measure_builds(dataset: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Each engine's build in a fresh subprocess, ``repeats`` times, engines alternating."""
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "bm25s": []}
    for _ in range(repeats):
        for engine, engine_runs in runs.items():
            with tempfile.TemporaryDirectory() as out:
                command = [sys.executable, __file__, "--child-build", engine, str(dataset), out]
                done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy())
                engine_runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        engine: {
            "build_s": statistics.median(run["seconds"] for run in engine_runs),
            "build_s_runs": [round(run["seconds"], 4) for run in engine_runs],
            "peak_rss_mb": max(run["peak_rss_mb"] for run in engine_runs),
            "imports_rss_mb": max(run["baseline_rss_mb"] for run in engine_runs),
            "peak_rss_over_imports_mb": max(run["peak_rss_mb"] - run["baseline_rss_mb"] for run in engine_runs),
        }
        for engine, engine_runs in runs.items()
    }


# ---------------------------------------------------------------------- query throughput
def _rates(engines: dict[str, tuple[Callable[[], Any], int]], repeats: int) -> dict[str, list[float]]:
    """Queries/s of each engine's run, ``repeats`` times, engines interleaved so load changes hit all alike."""
    for fn, _ in engines.values():
        fn()  # warm-up: page cache, stemmer cache
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, (fn, count) in engines.items():
            start = time.perf_counter()
            fn()
            rates[name].append(count / (time.perf_counter() - start))
    return rates


def bench_dataset(
    root: Path, name: str, repeats: int, build_repeats: int, rank_queries: int, min_queries: int
) -> dict[str, Any]:
    import bm25s
    import numpy as np
    import rank_bm25
    import Stemmer

    from searchkit.config import BM25Config
    from searchkit.retrieval.bm25 import BM25Retriever
    from searchkit.types import Document

    dataset = root / name
    records = list(_jsonl(dataset / "corpus.jsonl"))
    docids = [str(r["_id"]) for r in records]
    texts = [_text(r) for r in records]
    queries = [q["text"] for q in _jsonl(dataset / "queries.jsonl")]
    # Throughput over at least `min_queries` (the query list repeated): 93 queries alone time too briefly.
    timed = queries * -(-min_queries // len(queries))
    stemmer = Stemmer.Stemmer(STEMMER)
    print(f"[{name}] {len(texts)} docs, {len(queries)} queries", file=sys.stderr)

    # One tokenization for every engine.
    corpus_tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stemmer, show_progress=False)
    token_strings = bm25s.tokenization.convert_tokenized_to_string_list(corpus_tokens)

    with tempfile.TemporaryDirectory() as folder:
        config = BM25Config(stemmer=STEMMER, stopwords=STOPWORDS)
        docs = (Document(r["_id"], r.get("text") or "", r.get("title") or "") for r in records)
        BM25Retriever.build(docs, folder, config, docids)
        loads = []
        for _ in range(repeats):
            start = time.perf_counter()
            ours = BM25Retriever.load(folder, config, docids)
            loads.append(time.perf_counter() - start)
        same_tokens = all(ours.analyze(text) == tokens for text, tokens in zip(texts, token_strings, strict=True))
        if not same_tokens:
            raise SystemExit(f"[{name}] searchkit's analyzer and bm25s's tokenizer disagree: not a fair comparison")

        raw = bm25s.BM25()
        raw.index(corpus_tokens, show_progress=False)

        def run_raw() -> Any:
            query_tokens = bm25s.tokenize(timed, stopwords=STOPWORDS, stemmer=stemmer, show_progress=False)
            return raw.retrieve(query_tokens, k=K, show_progress=False, n_threads=0)

        rates = _rates(
            {"ours": (lambda: ours.search_batch(timed, k=K), len(timed)), "bm25s": (run_raw, len(timed))}, repeats
        )

        okapi = rank_bm25.BM25Okapi(token_strings)
        subset = bm25s.tokenize(queries[:rank_queries], stopwords=STOPWORDS, stemmer=stemmer, show_progress=False)
        subset_strings = bm25s.tokenization.convert_tokenized_to_string_list(subset)

        def run_rank() -> None:
            for tokens in subset_strings:
                scores = okapi.get_scores(tokens)
                top = np.argpartition(scores, -K)[-K:]
                top[np.argsort(-scores[top])]

        rates |= _rates({"rank_bm25": (run_rank, len(subset_strings))}, max(1, min(repeats, 3)))

        ours_hits = ours.search_batch(timed, k=K)[: len(queries)]
        raw_rows, raw_scores = run_raw()
        same = same_scores = 0
        for hits, rows, scores in zip(ours_hits, raw_rows[: len(queries)], raw_scores, strict=False):
            raw_ids = {docids[row] for row, score in zip(rows, scores, strict=True) if score > 0}
            same += {hit.doc_id for hit in hits} == raw_ids
            # Equal score lists: any difference in the sets is a tie at the 10th place.
            ours_scores, positive = [hit.score for hit in hits], [float(s) for s in scores if s > 0]
            same_scores += len(ours_scores) == len(positive) and np.allclose(ours_scores, positive, rtol=1e-6)

    qps = {name: statistics.median(runs) for name, runs in rates.items()}
    builds = _measure_builds(dataset, build_repeats)
    return {
        "docs": len(texts),
        "queries": len(queries),
        "timed_queries": len(timed),
        "rank_bm25_queries": len(subset_strings),
        "identical_tokens": same_tokens,
        "qps": qps,
        "qps_runs": {name: [round(rate, 1) for rate in runs] for name, runs in rates.items()},
        "ratio_ours_over_bm25s": qps["ours"] / qps["bm25s"],
        "ratio_ours_over_rank_bm25": qps["ours"] / qps["rank_bm25"],
        "top10_same_set_as_bm25s": same / len(queries),
        "top10_same_scores_as_bm25s": same_scores / len(queries),
        "load_s": statistics.median(loads),
        "build": builds,
    }


_NOTES = """\
Throughput runs over the dataset's queries repeated to at least `--min-queries`.
ours: `BM25Retriever.search_batch(query strings, k=10)` on the loaded, memory-mapped index (query analysis
and Hit objects included). bm25s: `bm25s.tokenize(queries)` + `retrieve(k=10, n_threads=0)` (its
tokenization included). rank-bm25: `BM25Okapi.get_scores` + top-k over the first {rank} pre-tokenized
queries. Builds: a fresh subprocess each, corpus read from disk, tokenized, indexed and saved; peak RSS is
that process's VmHWM (interpreter and imports included). 'same top-10': share of queries whose top-10
sets (score > 0) are identical in ours and bm25s; in parentheses, whose top-10 score lists are: a set that
differs with equal scores is a tie at the 10th place, which bm25s breaks arbitrarily and searchkit by larger
doc id (trec_eval's order). All engines index the same tokens (checked).
"""


def _markdown(results: dict[str, Any], command: str) -> str:
    env = results["environment"]
    header = [
        "dataset",
        "docs",
        "queries (timed)",
        "ours q/s",
        "bm25s q/s",
        "rank-bm25 q/s",
        "ours/bm25s",
        "ours/rank-bm25",
        "same top-10 (scores)",
        "load s",
        "build s ours / bm25s",
        "peak RSS MB ours / bm25s (over imports)",
    ]
    lines = [
        "# BM25 benchmark: searchkit vs bm25s vs rank-bm25",
        "",
        "```",
        command,
        "```",
        "",
        f"Single-threaded (OMP/MKL/OpenBLAS/numba threads = 1), top-{K}, "
        f"median of {results['repeats']} repeats (builds: {results['build_repeats']}). "
        f"Python {env['python']}, numpy {env['numpy']}, bm25s {env['bm25s']} "
        f"(numba installed: {env['numba']}), rank-bm25 {env['rank_bm25']}, "
        f"{env['cpus']} CPUs ({env['machine']}), shared: 1-minute load average "
        f"{env['loadavg_start'][0]:.1f} at the start, {env['loadavg_end'][0]:.1f} at the end.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for name, row in results["datasets"].items():
        qps, build = row["qps"], row["build"]
        cells = [
            name,
            str(row["docs"]),
            f"{row['queries']} ({row['timed_queries']})",
            f"{qps['ours']:.0f}",
            f"{qps['bm25s']:.0f}",
            f"{qps['rank_bm25']:.1f}",
            f"{row['ratio_ours_over_bm25s']:.2f}x",
            f"{row['ratio_ours_over_rank_bm25']:.0f}x",
            f"{row['top10_same_set_as_bm25s']:.1%} ({row['top10_same_scores_as_bm25s']:.1%})",
            f"{row['load_s']:.3f}",
            f"{build['ours']['build_s']:.2f} / {build['bm25s']['build_s']:.2f}",
            f"{build['ours']['peak_rss_mb']:.0f} / {build['bm25s']['peak_rss_mb']:.0f} "
            f"(+{build['ours']['peak_rss_over_imports_mb']:.0f} / +{build['bm25s']['peak_rss_over_imports_mb']:.0f})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _NOTES.format(rank=results["rank_bm25_queries"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-build":
        _child_build(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["scifact", "vaswani"])
    parser.add_argument("--data-root", type=Path, default=REPO / ".." / "shared" / "datasets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--build-repeats", type=int, default=3)
    parser.add_argument("--rank-bm25-queries", type=int, default=50)
    parser.add_argument("--min-queries", type=int, default=1000, help="repeat the query list up to this many")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    args = parser.parse_args(argv)

    from importlib.util import find_spec

    import numpy as np

    has_numba = find_spec("numba") is not None
    command = "python bench/bm25.py " + " ".join(shlex.quote(arg) for arg in argv)
    results: dict[str, Any] = {
        "command": command,
        "k": K,
        "repeats": args.repeats,
        "build_repeats": args.build_repeats,
        "rank_bm25_queries": args.rank_bm25_queries,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "bm25s": version("bm25s"),
            "rank_bm25": version("rank-bm25"),
            "pystemmer": version("PyStemmer"),
            "numba": has_numba,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "loadavg_start": os.getloadavg(),
        },
        "datasets": {},
    }
    for name in args.datasets:
        results["datasets"][name] = bench_dataset(
            args.data_root.resolve(),
            name,
            args.repeats,
            args.build_repeats,
            args.rank_bm25_queries,
            args.min_queries,
        )
    results["environment"]["loadavg_end"] = os.getloadavg()
    table = _markdown(results, command)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    from benchtools import run_main

    run_main(main)
