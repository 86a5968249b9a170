"""bench/clicks.py end to end at tiny scale: simulated clicks -> the export -> naive, weighted and qrels models, each
scored on test, the table written (the SciFact run itself: eval/results/clicks_cpu.md)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import load_bench

from searchkit.models.tiny import make_tiny_cross_encoder

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny"


def _load_bench() -> Any:
    return load_bench("clicks")


@pytest.mark.slow
def test_clicks_bench_at_tiny_scale(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    shutil.copytree(TINY, data)
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")  # the same judgments, train and test
    text = "".join((TINY / name).read_text() for name in ("corpus.jsonl", "queries.jsonl"))
    make_tiny_cross_encoder(tmp_path / "base", words=sorted(set(re.findall(r"[a-z]+", text.lower()))))
    args = [
        "--data", str(data), "--out", str(tmp_path / "work"), "--base-model", str(tmp_path / "base"),
        "--train-queries", "0", "--test-queries", "0", "--sessions", "100,300", "--eta", "1,2", "--depth", "6",
        "--eval-depth", "6", "--mine-depth", "6", "--negatives-per-group", "2", "--max-length", "48",
        "--min-swaps", "5", "--explore", "0.3", "--json", str(tmp_path / "r.json"),
        "--markdown", str(tmp_path / "r.md"),
    ]  # fmt: skip
    assert _load_bench().main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["test"]) >= {"bm25", "start", "qrels", "naive-eta1-n100", "weighted-eta2-n300"}
    assert [(row["eta"], row["sessions"]) for row in result["runs"]] == [(1, 100), (1, 300), (2, 100), (2, 300)]
    heavy = result["runs"][-1]
    assert heavy["weighted_data"]["propensities"]["source"][1] == "estimated"  # 5 swaps were enough
    assert heavy["naive_data"]["propensities"] is None
    assert heavy["weighted_data"]["counts"]["impressions"] == 300 and result["runs"][2]["simulated"]["sessions"] == 300
    table = (tmp_path / "r.md").read_text()
    assert "| 2 | 300 |" in table and "weighted - naive" in table
