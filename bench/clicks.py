"""Learning from simulated clicks on SciFact: naive clicks vs propensity-weighted clicks vs the qrels.

There are no real users here, so clicks come from a known click model (:mod:`searchkit.training.simulate`: the
position-based model, examination ``[0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06] ** eta``, click
given examination 1.0 for a relevant document, 0.1 for a non-relevant one). SciFact train queries are run through
the pipeline (BM25, reranked by the start model when ``--start-queries`` trains one), the top ``--depth`` is shown
in each of N sessions (``--explore`` of them with a random adjacent pair swapped), and the impressions and clicks
go into a feedback log. From the same start model the script trains

- (a) ``naive``: the log's export with ``naive`` (every click weighs 1),
- (b) ``weighted``: the export weighted ``1 / p(rank)`` with propensities estimated from the log's swaps
  (the prior below ``--min-swaps``; the card records which),
- (c) ``qrels``: the same train queries' judgments, with BM25 negatives,

all through the library's own paths (``searchkit.training.feedback`` via a recipe's ``feedback_log`` and
``feedback_until``, so the first N sessions of one log give the curve over N), and scores each on SciFact test
queries (the reranker alone over BM25's top ``--eval-depth``, nDCG@10).

    # the CPU cut-down run (eval/results/clicks_cpu.md)
    flock /tmp/searchkit-heavy.lock python bench/clicks.py --train-queries 150 --test-queries 150 \\
        --sessions 3000 --eta 1,2 --json eval/results/clicks_cpu.json --markdown eval/results/clicks_cpu.md
    # the issue's full curve (GPU)
    python bench/clicks.py --train-queries 0 --test-queries 0 --sessions 1000,10000,50000 --start-queries 200 \\
        --epochs 2 --max-length 256 --negatives-per-group 7 --device cuda --json eval/results/clicks_gpu.json

``--train-queries 0`` / ``--test-queries 0``: all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchtools import cpu_description, run_main, versions, write_json

from searchkit.config import TrainConfig
from searchkit.evaluate.metrics import evaluate
from searchkit.formats import FeedbackLog, document_text, read_qrels, read_queries
from searchkit.index import Index
from searchkit.models.cross_encoder import CrossEncoderReranker, load_cross_encoder
from searchkit.search import Searcher
from searchkit.training.cross_encoder import train
from searchkit.training.simulate import ClickModel, simulate_clicks
from searchkit.types import Hit, Query, Run, sort_hits

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="SciFact (BEIR folder: train and test qrels).")
    parser.add_argument("--index", type=Path, default=None, help="BM25 index of --data (default: OUT/index, built).")
    parser.add_argument("--out", type=Path, default=Path("/tmp/searchkit-clicks"), help="Work folder (replaced).")
    parser.add_argument("--base-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--train-queries", type=int, default=150, help="Click (and qrels) train queries; 0: all.")
    parser.add_argument("--start-queries", type=int, default=0, help="Train the start model on this many other "
                        "train queries' qrels first (0: the base model with a fresh head is the start).")  # fmt: skip
    parser.add_argument("--test-queries", type=int, default=150, help="SciFact test queries scored; 0: all 300.")
    parser.add_argument("--sessions", default="3000", help="Comma-separated session counts N (the curve).")
    parser.add_argument("--eta", default="1,2", help="Comma-separated position-bias exponents.")
    parser.add_argument("--explore", type=float, default=0.05, help="Share of sessions with a random adjacent swap.")
    parser.add_argument("--min-swaps", type=int, default=100, help="Swaps a rank needs to be estimated.")
    parser.add_argument("--clip", type=float, default=10.0)
    parser.add_argument("--depth", type=int, default=10, help="Results shown per session.")
    parser.add_argument("--candidates", type=int, default=20, help="BM25 candidates the start model reranks.")
    parser.add_argument("--eval-depth", type=int, default=10, help="BM25 candidates reranked on test.")
    parser.add_argument("--mine-depth", type=int, default=10, help="BM25 negatives depth for the qrels model.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--negatives-per-group", type=int, default=3)
    parser.add_argument("--groups-per-step", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    return parser.parse_args(argv)


def _write_judgments(folder: Path, queries: list[Query], qrels: dict[str, dict[str, int]]) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    query_file, qrels_file = folder / "queries.jsonl", folder / "qrels.tsv"
    query_file.write_text("".join(json.dumps({"_id": q.query_id, "text": q.text}) + "\n" for q in queries))
    rows = [f"{q.query_id}\t{doc}\t{grade}\n" for q in queries for doc, grade in sorted(qrels[q.query_id].items())]
    qrels_file.write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return str(query_file), str(qrels_file)


def _rerank(model: Path, queries: list[Query], candidates: dict[str, list[Hit]], index: Any, args: Any) -> Run:
    """The reranker's own scores (no interpolation) over each query's candidates."""
    reranker = CrossEncoderReranker(model, max_length=args.max_length, device=args.device, interpolation=None)
    flat_queries, flat_texts, spans = [], [], []
    for query in queries:
        hits = candidates[query.query_id]
        texts = [document_text(doc) for doc in index.documents([h.doc_id for h in hits])]
        flat_queries += [query.text] * len(hits)
        flat_texts += texts
        spans.append(len(hits))
    scores = reranker.score(flat_queries, flat_texts)
    run: Run = {}
    start = 0
    for query, size in zip(queries, spans, strict=True):
        hits = candidates[query.query_id]
        own = scores[start : start + size]
        start += size
        run[query.query_id] = sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(hits, own, strict=True))
    return run


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-load bars are noise here
    began = time.perf_counter()
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index_path = args.index or out / "index"
    index = Index.open(index_path) if index_path.exists() else Index.build(args.data, index_path)
    searcher = Searcher(index, mode="bm25")

    train_qrels, test_qrels = read_qrels(args.data, "train"), read_qrels(args.data, "test")
    train_all = [q for q in read_queries(args.data) if any(g > 0 for g in train_qrels.get(q.query_id, {}).values())]
    test_all = [q for q in read_queries(args.data) if any(g > 0 for g in test_qrels.get(q.query_id, {}).values())]
    rng = np.random.default_rng(args.seed)
    shuffled = [train_all[i] for i in rng.permutation(len(train_all))]
    start_queries = shuffled[: args.start_queries]
    click_queries = shuffled[args.start_queries :][: args.train_queries or None]
    test_queries = [test_all[i] for i in np.sort(rng.permutation(len(test_all))[: args.test_queries or None])]

    common: dict[str, Any] = {
        "index": str(index_path), "base_model": args.base_model, "max_length": args.max_length,
        "negatives_per_group": args.negatives_per_group, "groups_per_step": args.groups_per_step,
        "epochs": args.epochs, "lr": args.lr, "precision": args.precision, "device": args.device,
        "seed": args.seed, "dev_queries": 0, "fit_fusion": False, "mine_mode": "bm25", "mine_depth": args.mine_depth,
    }  # fmt: skip
    models = out / "models"
    if start_queries:
        files = _write_judgments(out / "data" / "start", start_queries, train_qrels)
        start_cfg = TrainConfig(output=str(models / "start"), queries=files[0], qrels=files[1], **common)
        start_model = train(start_cfg).output
        common["init_from"] = str(start_model)
    else:  # the base model with the fresh head training would give it (same seed)
        import torch

        loaded = load_cross_encoder(args.base_model, dtype=torch.float32, fresh_head=True, seed=args.seed)
        start_model = models / "start"
        loaded.model.save_pretrained(start_model)
        loaded.tokenizer.save_pretrained(start_model)

    test_candidates = dict(
        zip(
            [q.query_id for q in test_queries],
            searcher.search_batch([q.text for q in test_queries], args.eval_depth),
            strict=True,
        )
    )
    result: dict[str, Any] = {
        "machine": cpu_description(),
        "versions": versions("torch", "transformers"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "queries": {"start": len(start_queries), "train": len(click_queries), "test": len(test_queries)},
        "test": {},
        "runs": [],
    }

    def score(name: str, run: Run) -> float:
        value = evaluate(run, test_qrels, ["nDCG@10"], query_ids=[q.query_id for q in test_queries])
        result["test"][name] = round(value.aggregate["nDCG@10"], 4)
        write_json(args.json, result)
        print(f"{name:<28} test nDCG@10 {result['test'][name]:.4f}  ({time.perf_counter() - began:.0f} s)", flush=True)
        return float(value.aggregate["nDCG@10"])

    score("bm25", test_candidates)
    score("start", _rerank(start_model, test_queries, test_candidates, index, args))

    # what the served pipeline shows for the click queries
    first = searcher.search_batch([q.text for q in click_queries], args.candidates if start_queries else args.depth)
    shown_runs = dict(zip([q.query_id for q in click_queries], first, strict=True))
    if start_queries:
        shown_runs = _rerank(start_model, click_queries, shown_runs, index, args)
    rankings = {q.text: [h.doc_id for h in shown_runs[q.query_id][: args.depth]] for q in click_queries}
    relevant = {q.text: {d for d, g in train_qrels[q.query_id].items() if g > 0} for q in click_queries}
    shown_recall = np.mean(
        [len(set(rankings[q.text]) & relevant[q.text]) / len(relevant[q.text]) for q in click_queries]
    )
    result["shown_recall"] = round(float(shown_recall), 4)

    files = _write_judgments(out / "data" / "clicks", click_queries, train_qrels)
    qrels_cfg = TrainConfig(output=str(models / "qrels"), queries=files[0], qrels=files[1], **common)
    qrels_model = train(qrels_cfg).output
    score("qrels", _rerank(qrels_model, test_queries, test_candidates, index, args))

    sessions = [int(n) for n in args.sessions.split(",")]
    for eta in [float(e) for e in args.eta.split(",")]:
        log_path = out / "logs" / f"eta{eta:g}.sqlite"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with FeedbackLog(log_path) as log:
            counts = simulate_clicks(
                log, rankings, relevant, max(sessions), ClickModel(eta=eta), explore=args.explore, seed=args.seed
            )
        for n in sessions:
            row: dict[str, Any] = {"eta": eta, "sessions": n, "simulated": dataclasses.asdict(counts)}
            for kind in ("naive", "weighted"):
                name = f"{kind}-eta{eta:g}-n{n}"
                cfg = TrainConfig(
                    output=str(models / name),
                    feedback_log=str(log_path),
                    feedback_until=float(n),
                    feedback_naive=kind == "naive",
                    feedback_clip=args.clip,
                    feedback_min_swaps=args.min_swaps,
                    weighting="column",
                    **common,
                )
                model = train(cfg).output
                card = json.loads((model / "searchkit.json").read_text())
                row[kind] = score(name, _rerank(model, test_queries, test_candidates, index, args))
                row[f"{kind}_data"] = {
                    "counts": card["training_data"]["counts"],
                    "propensities": card["training_data"]["propensities"],
                }
            result["runs"].append(row)
            write_json(args.json, result)
    result["seconds"] = round(time.perf_counter() - began, 1)
    write_json(args.json, result)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(_markdown(result), encoding="utf-8")
    return 0


def _markdown(result: dict[str, Any]) -> str:
    test, settings = result["test"], result["settings"]
    lines = [
        "# Learning from simulated clicks (SciFact)",
        "",
        "Command: `" + " ".join(["python", *sys.argv]) + "`",
        "",
        f"Machine: {result['machine'].get('cpu')}; {result['seconds'] / 60:.1f} min. Queries: "
        f"{result['queries']['train']} train (clicks and qrels), {result['queries']['test']} test, "
        f"{result['queries']['start']} for the start model. Shown: top {settings['depth']}, recall of the relevant "
        f"{result['shown_recall']:.3f}; explore {settings['explore']}; clip {settings['clip']}.",
        "",
        f"Test nDCG@10 (reranker alone over BM25's top {settings['eval_depth']}): BM25 {test['bm25']:.4f}, "
        f"start model {test['start']:.4f}, qrels-trained {test['qrels']:.4f}.",
        "",
        "| eta | sessions | clicks | naive | weighted | weighted - naive | propensities (p(r)/p(1), source) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["runs"]:
        props = row["weighted_data"]["propensities"]
        shown = ", ".join(f"{v:.2f}" for v in props["values"])
        estimated = sum(s == "estimated" for s in props["source"][1:])
        lines.append(
            f"| {row['eta']:g} | {row['sessions']} | {row['weighted_data']['counts']['clicks']} | {row['naive']:.4f} | "
            f"{row['weighted']:.4f} | {row['weighted'] - row['naive']:+.4f} | {shown} ({estimated} of "
            f"{len(props['source']) - 1} links estimated) |"
        )
    lines.append("")
    for eta in dict.fromkeys(row["eta"] for row in result["runs"]):
        rows = [row for row in result["runs"] if row["eta"] == eta]
        matched = [row["sessions"] for row in rows if row["weighted"] >= test["qrels"]]
        naive = [row["sessions"] for row in rows if row["naive"] >= test["qrels"]]
        lines.append(
            f"- eta {eta:g}: weighted clicks match the qrels-trained model from "
            f"{f'{matched[0]} sessions' if matched else 'none of the session counts run'}; naive clicks from "
            f"{f'{naive[0]} sessions' if naive else 'none of them'}. Weighted vs the start model: "
            + ", ".join(f"{row['weighted'] - test['start']:+.4f} at {row['sessions']}" for row in rows)
            + "."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_main(main)
