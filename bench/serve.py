"""Load test of `searchkit serve`: concurrent clients on loopback against BM25 and hybrid, beside a bare Searcher loop.

For each mode, first the baseline: one thread calling ``Searcher.search(query, k)`` and reading the same document
fields, in this process, for ``--duration`` seconds. Then a real server (``searchkit serve INDEX --mode MODE`` in a
child process on a free port) driven by ``--clients`` concurrent clients (an asyncio loop, one keep-alive
connection each) for the same time, posting the
split's queries round robin to ``/search``; ``--reload-during N`` also POSTs ``/admin/reload`` N times mid-run.
Reported: throughput, p50/p95/p99, errors (non-200 answers), dropped (no answer), the server's peak RSS, and the
server's throughput as a share of the bare loop's. The CPU and its load average are written beside the numbers.

    python bench/serve.py --index indexes/scifact --reload-during 5 \\
        --json eval/results/serve_cpu.json --markdown eval/results/serve_cpu.md     # 60 s a side, 2 modes
    python bench/serve.py --index indexes/scifact --duration 5                     # rehearsal
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, markdown_table, run_main, versions, write_json
from loadgen import bare_loop, drive, peak_rss_mb, start_server

from searchkit.experiments.suite_file import select_queries
from searchkit.index import Index
from searchkit.search import Searcher

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="indexes/scifact", help="index folder (bm25 + dense for hybrid)")
    parser.add_argument("--data", default=str(DATA / "scifact"), help="BEIR folder whose queries are sent")
    parser.add_argument("--split", default="test", help="qrels split whose queries are sent")
    parser.add_argument("--modes", nargs="+", default=["bm25", "hybrid"])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per side and mode")
    parser.add_argument("--requests", type=int, default=None, help="stop after this many requests (per side)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--fields", nargs="*", default=["title"], help="document fields returned with each hit")
    parser.add_argument("--reload-during", type=int, default=0, metavar="N", help="reload the index N times")
    parser.add_argument("--server-args", default="", help="more `searchkit serve` options, e.g. '--max-batch 64'")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads on both sides (default: torch's own; 1 avoids OpenMP thrashing on a shared CPU)",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()

    queries = [query.text for query in select_queries(args.data, args.split)]
    server_env: dict[str, str] = {}
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
        server_env = {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    machine_before = cpu_description()
    index = Index.open(args.index)
    token = secrets.token_urlsafe(16)
    results: dict[str, dict[str, object]] = {}
    for mode in args.modes:
        searcher = Searcher(index, mode=mode)
        for text in queries[:3]:  # warm-up: models loaded, tables built
            searcher.search(text, args.k)
        bare = bare_loop(
            searcher, queries, k=args.k, fields=args.fields, duration=args.duration, max_requests=args.requests
        ).summary()
        print(f"{mode} bare Searcher loop: {bare}", flush=True)
        bodies = [{"query": text, "k": args.k, "mode": mode, "fields": args.fields} for text in queries]
        server_args = ["--mode", mode, *args.server_args.split()]
        with start_server(args.index, server_args, token=token, env=server_env) as server:
            asyncio.run(drive(server.url, bodies[:8], clients=4, duration=2.0, token=token))  # warm-up
            load = asyncio.run(
                drive(
                    server.url,
                    bodies,
                    clients=args.clients,
                    duration=args.duration,
                    max_requests=args.requests,
                    token=token,
                    reloads=args.reload_during,
                )
            )
            served = {**load.summary(), "server_peak_rss_mb": peak_rss_mb(server.pid)}
        served["share_of_bare"] = round(served["throughput_per_s"] / bare["throughput_per_s"], 3)
        print(f"{mode} server, {args.clients} clients: {served}", flush=True)
        results[mode] = {"bare": bare, "server": served}

    machine = cpu_description()
    rows = []
    for mode, result in results.items():
        bare, served = result["bare"], result["server"]
        assert isinstance(bare, dict) and isinstance(served, dict)
        rows.append((f"{mode}: bare Searcher loop", line(bare)))
        reloads = f", reloads {served['reloads']}" if served.get("reloads") else ""
        rows.append(
            (
                f"{mode}: server, {args.clients} clients",
                f"{line(served)}, errors {served['errors']}, dropped {served['dropped']}, "
                f"peak RSS {served['server_peak_rss_mb']} MB, {served['share_of_bare']:.0%} of bare{reloads}",
            )
        )
    threads = "" if args.torch_threads is None else f", {args.torch_threads} torch thread(s)"
    title = (
        f"searchkit serve, {Path(args.index).name}, k={args.k}, fields {args.fields}, {args.duration:.0f} s a side"
        f"{threads}"
    )
    table = markdown_table(title, rows)
    load_note = (
        f"CPU: {machine['cpu']}, {machine['cores']} cores; load average {machine_before['load_average_1min']:.2f} "
        f"before, {machine['load_average_1min']:.2f} after (above 0 means another process shared the CPU)"
    )
    print(table)
    print(load_note)
    if args.markdown:
        command = "python bench/serve.py " + " ".join(sys.argv[1:])
        Path(args.markdown).write_text(f"`{command}`\n\n{table}\n\n{load_note}\n", encoding="utf-8")
    write_json(
        args.json,
        {
            "machine": machine,
            "load_average_before": machine_before["load_average_1min"],
            "versions": versions("fastapi", "uvicorn", "httpx", "bm25s", "torch", "faiss-cpu"),
            "index": args.index,
            "clients": args.clients,
            "duration_s": args.duration,
            "k": args.k,
            "fields": args.fields,
            "torch_threads": args.torch_threads,
            "results": results,
        },
    )


def line(result: dict[str, object]) -> str:
    return (
        f"{result['throughput_per_s']} q/s, p50 {result.get('p50_ms')} ms, p95 {result.get('p95_ms')}, "
        f"p99 {result.get('p99_ms')}"
    )


if __name__ == "__main__":
    run_main(main)
