"""LoRA vs full fine-tuning of the reranker on SciFact, cut down to a shared 2-core CPU (issue 21 item 5).

    flock /tmp/searchkit-heavy.lock python eval/results/lora_scifact_cpu_run.py /tmp/lora-scifact

Builds a BM25 index of SciFact (if missing), trains the embedded all-MiniLM-L6-v2 + fresh head twice with the same
data, seed and schedule (full fine-tuning, then adapter = "lora"), and scores both on the first TEST_QUERIES SciFact
test queries: BM25 top DEPTH reranked, the reranker alone and as shipped (the card's fusion fitted on dev).
Writes eval/results/lora_scifact_cpu.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from searchkit.config import RerankConfig, TrainConfig  # noqa: E402
from searchkit.evaluate.metrics import evaluate  # noqa: E402
from searchkit.formats import read_qrels, read_queries  # noqa: E402
from searchkit.index import Index  # noqa: E402
from searchkit.models.cross_encoder import CrossEncoderReranker  # noqa: E402
from searchkit.search import Searcher  # noqa: E402
from searchkit.training.cross_encoder import train  # noqa: E402

SCIFACT = Path("/work/shared/datasets/scifact")
SMOKE = bool(os.environ.get("SMOKE"))  # SMOKE=1: a minute-long check of the script itself (nothing written)
LIMIT_QUERIES = 40 if SMOKE else 130  # 30 dev + 100 train queries of the train split
DEV_QUERIES = 30
DEPTH = 10
TEST_QUERIES = 10 if SMOKE else 100
METRICS = ["nDCG@10", "RR@10"]


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    index_path = work / "index"
    if not index_path.is_dir():
        Index.build(SCIFACT, index_path)
    common = {
        "corpus": str(SCIFACT),
        "split": "train",
        "index": str(index_path),
        "base_model": "all-MiniLM-L6-v2",
        "max_length": 192,
        "mine_mode": "bm25",
        "mine_depth": 30,
        "negatives_per_group": 7,
        "groups_per_step": 4,
        "epochs": 1,
        "precision": "bf16",
        "device": "cpu",
        "seed": 42,
        "dev_queries": DEV_QUERIES,
        "dev_mode": "bm25",
        "dev_depth": DEPTH,
        "limit_queries": LIMIT_QUERIES,
        "eval_batch_size": 32,
        "overwrite": True,
        **({"max_steps": 2} if SMOKE else {}),
    }
    runs = {
        "full": TrainConfig(output=str(work / "full"), lr=1e-4, **common),
        "lora": TrainConfig(
            output=str(work / "lora"), lr=1e-3, adapter="lora", lora_rank=8, lora_alpha=16.0, lora_dropout=0.1, **common
        ),
    }
    queries = read_queries(SCIFACT, split="test")[:TEST_QUERIES]
    qrels = read_qrels(SCIFACT, "test")
    ids = [q.query_id for q in queries]
    index = Index.open(index_path)
    first = Searcher(index, mode="bm25").search_batch([q.text for q in queries], DEPTH)
    report: dict[str, object] = {
        "settings": {**common, "lr": {name: cfg.lr for name, cfg in runs.items()}, "test_queries": TEST_QUERIES},
        "bm25": evaluate(dict(zip(ids, first, strict=True)), qrels, METRICS, query_ids=ids).aggregate,
    }
    for name, cfg in runs.items():
        started = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - started
        card = json.loads((Path(cfg.output) / "searchkit.json").read_text())
        size = sum(p.stat().st_size for p in Path(cfg.output).iterdir() if p.is_file() and p.suffix == ".safetensors")
        entry: dict[str, object] = {
            "train_seconds": round(seconds, 1),
            "train_pairs_per_second": card["train_pairs_per_second"],
            "best_epoch": result.best_epoch,
            "dev": card["dev"],
            "weights_bytes": size,
            "trainable_parameters": (card.get("adapter") or {}).get("trainable_parameters"),
        }
        alone = CrossEncoderReranker.from_config(
            RerankConfig(cfg.output, device="cpu", dtype="bf16", depth=DEPTH, interpolation=None)
        )
        alone.remember_scores()  # each pair scored once for both rankings
        shipped = alone.variant(dataclasses.replace(alone.config, interpolation="auto"))
        for variant, reranker in (("alone", alone), ("shipped", shipped)):
            tick = time.perf_counter()
            hits = Searcher(index, mode="bm25", rerank=reranker).search_batch([q.text for q in queries], 10)
            entry[variant] = evaluate(dict(zip(ids, hits, strict=True)), qrels, METRICS, query_ids=ids).aggregate
            entry[f"{variant}_seconds"] = round(time.perf_counter() - tick, 1)
        entry["shipped_fusion"] = card.get("fusion", {}).get("weights") if card.get("fusion") else None
        report[name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "dev"}), flush=True)
    if SMOKE:
        return
    out = ROOT / "eval" / "results" / "lora_scifact_cpu.json"
    out.write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lora-scifact"))
