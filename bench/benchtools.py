"""What every benchmark script in ``bench/`` shares: interleaved timing against a peer, the machine it ran on.

Benchmarks compare searchkit with the tool a user would otherwise reach for, measured in the same run: both sides
interleaved (the order flipped every repeat) so that load from other processes falls on both alike, speedups as
the median of per-repeat ratios, and the CPU model, its bf16/AVX flags and the load average written beside them.

>>> times = paired_times({"a": lambda: None, "b": lambda: None}, repeats=3)
>>> sorted(times), len(times["a"])
(['a', 'b'], 3)
>>> speedup({"ours": [1.0, 2.0], "peer": [3.0, 4.0]}, "ours", "peer", count=10)["ratio"]
2.5
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from searchkit.types import SearchkitError

# CPU flags that decide which kernels torch and faiss can use (bf16 matrix units, AVX levels)
CPU_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx2", "fma")


def run_main(main: Callable[[], Any]) -> NoReturn:
    """Run a bench script's ``main`` and exit with its return code; a searchkit error (a bad recipe, suite or data
    file) ends the script with its one line, as the CLI does, rather than a traceback."""

    try:
        code = main()
    except SearchkitError as error:
        raise SystemExit(f"error: {error}") from None
    raise SystemExit(code)


def paired_times(
    fns: Mapping[str, Callable[[], Any]], repeats: int, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds of each function per repeat, run interleaved (order flipped every repeat); ``sync`` runs before
    and after each call (``torch.cuda.synchronize`` on a GPU) so that the clock covers the device work."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        names = list(fns) if repeat % 2 == 0 else list(reversed(list(fns)))
        for name in names:
            if sync is not None:
                sync()
            start = time.perf_counter()
            fns[name]()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def speedup(times: Mapping[str, list[float]], ours: str, peer: str, count: int) -> dict[str, Any]:
    """Throughputs (``count`` items per median time) and the speedup as the median of per-repeat ratios."""
    ratios = [b / a for a, b in zip(times[ours], times[peer], strict=True)]
    return {
        "ours_per_s": count / statistics.median(times[ours]),
        "peer_per_s": count / statistics.median(times[peer]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "seconds": {ours: list(times[ours]), peer: list(times[peer])},
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 (milliseconds) of latencies given in seconds, by nearest rank.

    >>> percentiles([0.001 * i for i in range(1, 101)])
    {'p50_ms': 50.0, 'p95_ms': 95.0, 'p99_ms': 99.0, 'mean_ms': 50.5, 'n': 100}
    """
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        return round(ordered[max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))] * 1000, 3)

    return {
        "p50_ms": rank(50),
        "p95_ms": rank(95),
        "p99_ms": rank(99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "n": len(ordered),
    }


def top_k_agreement(a: Mapping[str, list[Any]], b: Mapping[str, list[Any]], k: int = 10) -> dict[str, float]:
    """How alike two runs' top ``k`` are (hits with a ``doc_id``): mean overlap@k and the share of queries whose top
    ``k`` is the same list in the same order.

    >>> from searchkit.types import Hit
    >>> top_k_agreement({"q": [Hit("a", 2.0), Hit("b", 1.0)]}, {"q": [Hit("b", 2.0), Hit("a", 1.0)]}, k=2)
    {'mean_overlap': 1.0, 'identical_order': 0.0, 'queries': 1}
    """
    overlaps, identical = [], []
    for query_id, hits in a.items():
        top_a = [hit.doc_id for hit in hits[:k]]
        top_b = [hit.doc_id for hit in b.get(query_id, [])[:k]]
        overlaps.append(len(set(top_a) & set(top_b)) / max(1, min(k, len(top_a))))
        identical.append(float(top_a == top_b))
    count = max(1, len(overlaps))
    return {"mean_overlap": sum(overlaps) / count, "identical_order": sum(identical) / count, "queries": len(overlaps)}


def cpu_description() -> dict[str, Any]:
    """The CPU's model name, the flags of :data:`CPU_FLAGS` it has, its core count and the torch thread count."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    threads = None
    if "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    return {
        "cpu": model,
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (and Python)."""

    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_json(path: str | Path | None, result: Mapping[str, Any]) -> None:
    """Write a benchmark's result (with the command that produced it) as JSON, when a path is given."""
    if path is None:
        return
    payload = {"command": " ".join(["python", *sys.argv]), **result}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def markdown_table(title: str, rows: list[tuple[str, str]]) -> str:
    """A two-column markdown table.

    >>> print(markdown_table("bench", [("speed", "2x")]))
    | bench | value |
    | --- | --- |
    | speed | 2x |
    """
    lines = [f"| {title} | value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)
