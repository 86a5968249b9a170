"""Load test of `searchkit serve`: concurrent clients on loopback against BM25 and hybrid, beside a bare Searcher loop.

For each mode, first the baseline: one thread calling ``Searcher.search(query, k)`` and reading the same document
fields, in this process, for ``--duration`` seconds. Then a real server (``searchkit serve INDEX --mode MODE`` in a
child process on a free port) driven by ``--clients`` concurrent clients (an asyncio loop, one keep-alive
connection each) for the same time, posting the
split's queries round robin to ``/search``; ``--reload-during N`` also POSTs ``/admin/reload`` N times mid-run.
Reported: throughput, p50/p95/p99, errors (non-200 answers), dropped (no answer), the server's peak RSS, and the
server's throughput as a share of the bare loop's. The CPU and its load average are written beside the numbers.

With ``--mixed bm25=50 hybrid=150``, one server answers groups of clients of several modes at once instead,
meanwhile ``--slow-clients`` connections (half trickling their headers, half their bodies, a byte every
``--slow-every`` seconds, connecting again when closed) try to hold connections open. Three phases: one BM25
client on the idle server, the BM25 clients alone, then every group with the slow clients. Reported per group:
throughput, p50/p95/p99, errors, dropped; per slow kind: connections, how they ended, how long the server held
them; and BM25's p99 under the mixed load over its p99 alone (the issue's target: at most 5x).

    python bench/serve.py --index indexes/scifact --reload-during 5 \\
        --json eval/results/serve_cpu.json --markdown eval/results/serve_cpu.md     # 60 s a side, 2 modes
    python bench/serve.py --index indexes/scifact --duration 5                     # rehearsal
    python bench/serve.py --index indexes/medline --data eval/data/medline --mixed bm25=50 hybrid=150 \\
        --slow-clients 20 --duration 45 --torch-threads 1 \\
        --json eval/results/serve_cpu.json --markdown eval/results/serve_cpu.md     # mixed, slow clients

With ``--feedback on`` the server logs every impression to a feedback log (``--feedback-log`` in a temporary
folder) with ``--explore`` 5% of answers swapped (``--explore``); ``--feedback both`` compares, per mode, the
server without and with it, in ``--rounds`` alternating rounds (off, on, off, on, ...: drift of a shared CPU hits
both sides alike), and reports each side's q/s and p99 (the median over rounds) and on / off:

    python bench/serve.py --index /tmp/scifact-bm25 --modes bm25 --feedback both --rounds 3 --duration 20 \
        --markdown eval/results/serve_feedback_cpu.md

The markdown file gets a dated section appended; the JSON file keeps what it held and gets the mixed run under
``--json-key`` (``"mixed"``; a per-mode run replaces the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, markdown_table, run_main, versions, write_json
from loadgen import SLOW_KINDS, bare_loop, drive, drive_mixed, peak_rss_mb, start_server

from searchkit.formats import FeedbackLog, read_queries
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.types import ConfigError

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
    parser.add_argument(
        "--mixed",
        nargs="+",
        default=None,
        metavar="MODE=CLIENTS",
        help="one server, groups of clients of several modes at once, e.g. bm25=50 hybrid=150",
    )
    parser.add_argument("--slow-clients", type=int, default=0, help="with --mixed: slow connections meanwhile")
    parser.add_argument("--slow-every", type=float, default=0.5, help="seconds between a slow client's bytes")
    parser.add_argument("--idle-duration", type=float, default=10.0, help="with --mixed: seconds of 1 BM25 client")
    parser.add_argument(
        "--feedback",
        choices=["off", "on", "both"],
        default="off",
        help="the server logs impressions (--feedback-log, a temporary file) with --explore; both: compare",
    )
    parser.add_argument("--explore", type=float, default=0.05, help="with --feedback: share of answers swapped")
    parser.add_argument("--rounds", type=int, default=3, help="with --feedback both: alternating rounds")
    parser.add_argument("--note", default="", help="a line written under the markdown section's heading")
    parser.add_argument("--json", default=None)
    parser.add_argument("--json-key", default="mixed", help="with --mixed: the key of the JSON file it is written to")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()

    queries = [query.text for query in read_queries(args.data, split=args.split)]
    server_env: dict[str, str] = {}
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
        server_env = {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    if args.mixed:
        mixed(args, queries, server_env)
        return
    if args.feedback == "both":
        compare_feedback(args, queries, server_env)
        return
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
        log_folder = tempfile.TemporaryDirectory(prefix="searchkit-feedback-")
        if args.feedback == "on":
            server_args += feedback_args(Path(log_folder.name), args.explore)
        with log_folder, start_server(args.index, server_args, token=token, env=server_env) as server:
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
        append_section(args.markdown, f"{table}\n\n{load_note}", args.note)
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


def mixed(args: argparse.Namespace, queries: list[str], server_env: dict[str, str]) -> None:
    """The --mixed run: BM25 on an idle server, BM25's clients alone, then every group with the slow clients."""
    groups: dict[str, int] = {}
    for spec in args.mixed:
        mode, _, count = spec.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"--mixed takes MODE=CLIENTS, e.g. bm25=50; got {spec!r}")
        groups[mode] = int(count)
    if "bm25" not in groups:
        raise ConfigError("--mixed needs a bm25 group (its p99 alone and mixed is the point)")
    bodies = {
        mode: [{"query": q, "k": args.k, "mode": mode, "fields": args.fields} for q in queries] for mode in groups
    }
    half = args.slow_clients // 2
    slow = {SLOW_KINDS[0]: args.slow_clients - half, SLOW_KINDS[1]: half} if args.slow_clients else {}
    token = secrets.token_urlsafe(16)
    machine_before = cpu_description()
    server_args = ["--mode", "hybrid" if "hybrid" in groups else "bm25", *args.server_args.split()]
    phases: dict[str, Any] = {}
    with start_server(args.index, server_args, token=token, env=server_env) as server:
        for mode in groups:  # warm-up: models loaded, tables built, every lane started
            asyncio.run(drive(server.url, bodies[mode][:8], clients=4, duration=2.0, token=token))
        idle = asyncio.run(drive(server.url, bodies["bm25"], clients=1, duration=args.idle_duration, token=token))
        phases["bm25_idle"] = {"clients": 1, **idle.summary()}
        print(f"bm25, 1 client, idle server: {phases['bm25_idle']}", flush=True)
        alone = asyncio.run(
            drive(server.url, bodies["bm25"], clients=groups["bm25"], duration=args.duration, token=token)
        )
        phases["bm25_alone"] = {"clients": groups["bm25"], **alone.summary()}
        print(f"bm25, {groups['bm25']} clients alone: {phases['bm25_alone']}", flush=True)
        loads, slowed = asyncio.run(
            drive_mixed(
                server.url,
                {mode: (bodies[mode], count) for mode, count in groups.items()},
                duration=args.duration,
                token=token,
                slow_clients=slow,
                slow_every=args.slow_every,
            )
        )
        phases["mixed"] = {mode: {"clients": groups[mode], **load.summary()} for mode, load in loads.items()}
        phases["slow_clients"] = {kind: {"clients": slow[kind], **result.summary()} for kind, result in slowed.items()}
        phases["server_peak_rss_mb"] = peak_rss_mb(server.pid)
        print(f"mixed: {phases['mixed']}\nslow clients: {phases['slow_clients']}", flush=True)
    loaded, unloaded, idle_p99 = (
        phases["mixed"]["bm25"].get("p99_ms"),
        phases["bm25_alone"].get("p99_ms"),
        phases["bm25_idle"].get("p99_ms"),
    )
    ratio = round(loaded / unloaded, 2) if loaded and unloaded else None
    phases["bm25_p99_mixed_over_alone"] = ratio
    phases["bm25_p99_mixed_over_idle"] = round(loaded / idle_p99, 2) if loaded and idle_p99 else None

    machine = cpu_description()
    total = sum(groups.values())
    rows = [
        ("bm25: 1 client, idle server", line(phases["bm25_idle"])),
        (f"bm25: {groups['bm25']} clients alone", failures(phases["bm25_alone"])),
    ]
    for mode, result in phases["mixed"].items():
        rows.append((f"mixed ({total} clients): {mode}, {result['clients']} clients", failures(result)))
    for kind, result in phases["slow_clients"].items():
        ended = ", ".join(f"{how} {count}" for how, count in result["ended"].items())
        rows.append(
            (
                f"slow clients trickling {kind} ({result['clients']}, a byte every {args.slow_every:g} s)",
                f"{result['connections']} connections: {ended}; held {result['median_held_s']} s median, "
                f"{result['longest_held_s']} s longest",
            )
        )
    verdict = "within" if ratio is not None and ratio <= 5 else "over"
    rows.append(
        (
            "bm25 p99, mixed / alone (target <= 5x)",
            f"{ratio}x ({loaded} ms / {unloaded} ms): {verdict} the target; "
            f"{phases['bm25_p99_mixed_over_idle']}x the idle server's {idle_p99} ms",
        )
    )
    threads = "" if args.torch_threads is None else f", {args.torch_threads} torch thread(s)"
    title = (
        f"searchkit serve, mixed load, {Path(args.index).name}, k={args.k}, fields {args.fields}, "
        f"{args.duration:.0f} s a phase{threads}"
    )
    table = markdown_table(title, rows)
    load_note = (
        f"CPU: {machine['cpu']}, {machine['cores']} cores, shared with other jobs (and with the load generator, in "
        f"the same machine); load average {machine_before['load_average_1min']:.2f} before, "
        f"{machine['load_average_1min']:.2f} after; server peak RSS {phases['server_peak_rss_mb']} MB"
    )
    print(table)
    print(load_note)
    if args.markdown:
        append_section(args.markdown, f"{table}\n\n{load_note}", args.note)
    if args.json:
        existing: dict[str, Any] = {}
        if Path(args.json).exists():
            existing = json.loads(Path(args.json).read_text(encoding="utf-8"))
        existing[args.json_key] = {
            "command": shlex.join(["python", *sys.argv]),
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine,
            "load_average_before": machine_before["load_average_1min"],
            "versions": versions("fastapi", "uvicorn", "httptools", "bm25s", "torch", "faiss-cpu"),
            "index": args.index,
            "groups": groups,
            "slow_clients": slow,
            "slow_every_s": args.slow_every,
            "duration_s": args.duration,
            "k": args.k,
            "fields": args.fields,
            "torch_threads": args.torch_threads,
            "note": args.note,
            "results": phases,
        }
        Path(args.json).write_text(json.dumps(existing, indent=2, default=str) + "\n", encoding="utf-8")


def feedback_args(folder: Path, explore: float) -> list[str]:
    return ["--feedback-log", str(folder / "feedback.sqlite"), "--explore", str(explore)]


def compare_feedback(args: argparse.Namespace, queries: list[str], server_env: dict[str, str]) -> None:
    """The --feedback both run: per mode, the server without and with the feedback log, in alternating rounds."""
    token = secrets.token_urlsafe(16)
    machine_before = cpu_description()
    sides: dict[str, dict[str, list[dict[str, Any]]]] = {}
    logged: dict[str, int] = {}
    for mode in args.modes:
        bodies = [{"query": text, "k": args.k, "mode": mode, "fields": args.fields} for text in queries]
        sides[mode] = {"off": [], "on": []}
        for round_number in range(args.rounds):
            for side in ("off", "on"):
                with tempfile.TemporaryDirectory(prefix="searchkit-feedback-") as folder:
                    server_args = ["--mode", mode, *args.server_args.split()]
                    if side == "on":
                        server_args += feedback_args(Path(folder), args.explore)
                    with start_server(args.index, server_args, token=token, env=server_env) as server:
                        asyncio.run(drive(server.url, bodies[:8], clients=4, duration=2.0, token=token))  # warm-up
                        load = asyncio.run(
                            drive(server.url, bodies, clients=args.clients, duration=args.duration, token=token)
                        )
                    if side == "on":
                        with FeedbackLog(Path(folder) / "feedback.sqlite", readonly=True) as log:
                            stats = log.stats(1)
                        logged[mode] = logged.get(mode, 0) + stats.impressions
                result = load.summary()
                sides[mode][side].append(result)
                print(f"{mode} round {round_number + 1} feedback {side}: {line(result)}", flush=True)
    machine = cpu_description()
    rows = []
    summary: dict[str, Any] = {}
    for mode, results in sides.items():
        medians = {side: _medians(runs) for side, runs in results.items()}
        off, on = medians["off"], medians["on"]
        qps_ratio = on["throughput_per_s"] / off["throughput_per_s"] if off["throughput_per_s"] else None
        p99_ratio = on["p99_ms"] / off["p99_ms"] if off["p99_ms"] else None
        summary[mode] = {"off": off, "on": on, "qps_on_over_off": qps_ratio, "p99_on_over_off": p99_ratio}
        rounds = {
            side: ", ".join(f"{r['throughput_per_s']} q/s p99 {r.get('p99_ms')}" for r in runs)
            for side, runs in results.items()
        }
        rows.append(
            (
                f"{mode}: feedback off (rounds: {rounds['off']})",
                f"{off['throughput_per_s']} q/s, p99 {off['p99_ms']} ms",
            )
        )
        rows.append(
            (
                f"{mode}: feedback on, explore {args.explore:g} (rounds: {rounds['on']})",
                f"{on['throughput_per_s']} q/s, p99 {on['p99_ms']} ms",
            )
        )
        rows.append(
            (
                f"{mode}: on / off (target: q/s >= 0.90, p99 <= 1.10)",
                f"q/s {qps_ratio:.3f}, p99 {p99_ratio:.3f}; {logged.get(mode, 0)} impressions logged",
            )
        )
    title = (
        f"searchkit serve with and without the feedback log, {Path(args.index).name}, {args.clients} clients, "
        f"k={args.k}, fields {args.fields}, {args.duration:.0f} s a round, {args.rounds} rounds a side (medians)"
    )
    table = markdown_table(title, rows)
    load_note = (
        f"CPU: {machine['cpu']}, {machine['cores']} cores, shared with other jobs (and with the load generator); "
        f"load average {machine_before['load_average_1min']:.2f} before, {machine['load_average_1min']:.2f} after"
    )
    print(table)
    print(load_note)
    if args.markdown:
        append_section(args.markdown, f"{table}\n\n{load_note}", args.note)
    if args.json:
        payload = {"command": shlex.join(["python", *sys.argv]), "machine": machine, "sides": sides, "summary": summary}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(name: str) -> float | None:
        values = sorted(run[name] for run in runs if run.get(name) is not None)
        return values[len(values) // 2] if values else None

    return {
        "throughput_per_s": median("throughput_per_s"),
        "p99_ms": median("p99_ms"),
        "errors": sum(run["errors"] for run in runs),
        "dropped": sum(run["dropped"] for run in runs),
    }


def append_section(path: str, text: str, note: str = "") -> None:
    """Append a dated section with the command, ``note`` and ``text`` to the markdown file ``path`` (what it held
    stays)."""
    command = shlex.join(["python", "bench/serve.py", *sys.argv[1:]])
    target = Path(path)
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    noted = f"{note}\n\n" if note else ""
    section = f"## {time.strftime('%Y-%m-%d %H:%M')}\n\n`{command}`\n\n{noted}{text}\n"
    target.write_text(f"{before.rstrip()}\n\n{section}" if before.strip() else section, encoding="utf-8")


def failures(result: dict[str, Any]) -> str:
    return f"{line(result)}, errors {result['errors']}, dropped {result['dropped']}"


def line(result: dict[str, object]) -> str:
    return (
        f"{result['throughput_per_s']} q/s, p50 {result.get('p50_ms')} ms, p95 {result.get('p95_ms')}, "
        f"p99 {result.get('p99_ms')}"
    )


if __name__ == "__main__":
    run_main(main)
