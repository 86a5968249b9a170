"""One command for the quality table of issue 8: train what is missing, fit the fusion on dev, evaluate on test.

Steps (each timed; a finished model is reused unless --retrain):
  1. the bi-encoder of training/scifact-dense.toml (sentence-transformers MNRL, dev-guarded)
  2. the cross-encoder of training/scifact.toml (weighted listwise CE, hybrid-mined negatives)
  3. the index the pipeline ships on (BM25 + the fine-tuned encoder), via the suite's first condition
  4. the learned fusion of every stage, refitted on the 100 dev queries over that index at the rerank depth
  5. eval/scifact-quality.toml on the SciFact TEST split (the test qrels are read only here)
Then the suite's table, and the wall time of every step, are printed and written beside the suite's results.

    python bench/quality.py                          # all of it (CPU: see eval/results/quality_cpu.md)
    python bench/quality.py --check                  # and fail when a row leaves its pinned tolerance
    python bench/quality.py --suite eval/classic-quality.toml --skip-train --no-fit   # out of domain
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from searchkit.benchtools import cpu_description, write_json
from searchkit.config import load_dense_train_recipe, load_train_recipe
from searchkit.fusion import fit_fusion
from searchkit.models import MODEL_CARD
from searchkit.suite import load_suite, run_suite
from searchkit.train import train
from searchkit.train_dense import train_dense

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense-recipe", default=str(ROOT / "training" / "scifact-dense.toml"))
    parser.add_argument("--rerank-recipe", default=str(ROOT / "training" / "scifact.toml"))
    parser.add_argument("--suite", default=str(ROOT / "eval" / "scifact-quality.toml"))
    parser.add_argument("--fit-index", default=str(ROOT / "indexes" / "scifact-ft"), help="fusion is fitted here")
    parser.add_argument("--depth", type=int, default=20, help="rerank depth the fusion is fitted at")
    parser.add_argument("--retrain", action="store_true", help="train even when a finished model exists")
    parser.add_argument("--skip-train", action="store_true", help="never train (the models must exist)")
    parser.add_argument("--no-fit", action="store_true", help="keep the fusion the card already has")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row leaves its tolerance")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    seconds: dict[str, float] = {}
    dense_cfg = load_dense_train_recipe(args.dense_recipe)
    rerank_cfg = load_train_recipe(args.rerank_recipe)
    for name, cfg, run in (("train-dense", dense_cfg, train_dense), ("train-reranker", rerank_cfg, train)):
        done = (Path(cfg.output) / MODEL_CARD).is_file()
        if args.skip_train or (done and not args.retrain):
            print(f"{name}: using {cfg.output}" + ("" if done else " (MISSING)"), flush=True)
            continue
        started = time.perf_counter()
        run(dataclasses.replace(cfg, overwrite=True), show_progress=args.progress)  # type: ignore[operator]
        seconds[name] = time.perf_counter() - started
        print(f"{name}: {seconds[name]:.0f} s", flush=True)

    suite = load_suite(args.suite)
    if not args.no_fit:
        started = time.perf_counter()  # the suite's first condition on the fit index builds (or reuses) it
        first = next(c.name for c in suite.conditions if str(c.index) == str(Path(args.fit_index).resolve()))
        run_suite(suite, check=False, only=[first], write=False, show_progress=args.progress)
        seconds["index"] = time.perf_counter() - started
        started = time.perf_counter()
        model, _ = fit_fusion(rerank_cfg.output, args.fit_index, depth=args.depth, mode="hybrid")
        seconds["fit-fusion"] = time.perf_counter() - started
        print(f"fusion fitted on dev ({seconds['fit-fusion']:.0f} s): {model.weights}", flush=True)
    started = time.perf_counter()
    result = run_suite(suite, check=args.check, show_progress=args.progress)
    seconds["evaluate"] = time.perf_counter() - started
    print(result.format())
    print("wall time (s): " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    if result.output:
        write_json(Path(result.output).with_suffix(".timings.json"), {"seconds": seconds, "machine": cpu_description()})
    if args.check and not result.passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
