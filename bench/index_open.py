"""How long opening a built index takes (and verifying it), each in a fresh process so nothing is cached in Python.

    python bench/index_open.py indexes/scifact --repeats 5 --json eval/results/bench_index_open.json

Prints the median of ``--repeats`` runs of: ``Index.open`` + loading the BM25 component (memory-mapped arrays) +
one BM25 query, and ``Index.open(verify=True)`` (every checksum). The OS page cache is warm after the first run,
as it is for a user who opens an index they just built.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = """
import time, sys
start = time.perf_counter()
from searchkit.index import Index
index = Index.open(sys.argv[1], verify=sys.argv[2] == "1")
if index.bm25 is not None:
    index.bm25.search("protein folding", 10)
print(time.perf_counter() - start)
"""


def timed_open(path: Path, verify: bool) -> float:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), "1" if verify else "0"], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    opens = [timed_open(args.index, False) for _ in range(args.repeats)]
    verifies = [timed_open(args.index, True) for _ in range(args.repeats)]
    result = {
        "index": str(args.index),
        "repeats": args.repeats,
        "open_plus_first_bm25_query_s": {"median": statistics.median(opens), "all": opens},
        "open_verify_s": {"median": statistics.median(verifies), "all": verifies},
    }
    print(f"{'measure':<34} {'median s':>9}")
    print(f"{'open + first BM25 query':<34} {result['open_plus_first_bm25_query_s']['median']:>9.3f}")
    print(f"{'open with verify=True':<34} {result['open_verify_s']['median']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    from benchtools import run_main

    run_main(main)
