"""bench/scale.py: the growth-table benchmark runs end to end at tiny sizes and reads its own results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_bench

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "scale.py"


def _module() -> ModuleType:
    return load_bench("scale")


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "scale.json"
    md = tmp_path / "scale.md"
    command = [sys.executable, str(SCRIPT), "--smoke", "--cache-dir", str(tmp_path / "cache")]
    command += ["--json", str(out), "--markdown", str(md), *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Growth exponents" in md.read_text(encoding="utf-8")
    return json.loads(out.read_text(encoding="utf-8"))


def test_parse_and_label_sizes() -> None:
    scale = _module()
    assert [scale.parse_size(text) for text in ("100k", "1M", "2500", "0.5M")] == [100_000, 1_000_000, 2500, 500_000]
    assert [scale.size_label(n) for n in (100_000, 1_000_000, 2500)] == ["100k", "1M", "2500"]


def test_smoke_bm25_growth_table(tmp_path: Path) -> None:
    result = _run(tmp_path, "--dense-sizes")  # no dense: the BM25 side in seconds
    rows = result["sizes"]
    assert [row["docs"] for row in rows] == sorted(row["docs"] for row in rows) and len(rows) >= 2
    for row in rows:
        assert row["same_index"] == {"same_vocabulary": True, "same_postings": True, "same_scores": True}
        assert row["top10_agreement"]["same_scores"] == 1.0
        for engine in ("ours", "bm25s"):
            measured = row[engine]
            assert measured["build_s"] > 0 and measured["qps"] > 0 and measured["index_bytes"] > 0
            assert measured["peak_rss_mb"] >= measured["imports_rss_mb"] > 0
        assert {"docstore", "bm25: bm25s scores", "bm25: save"} <= set(row["ours"]["phases"])
        assert "dense" not in row
    exponents = result["exponents"]
    assert exponents["postings"] == pytest.approx(1.0, abs=0.15)  # postings grow with the corpus
    assert 0.4 < exponents["vocabulary (analyzed terms)"] < 0.9  # Heaps' law, after analysis
    assert exponents["dense build s"] is None
    assert set(result["verdict"]["exponents"]) == {"build s", "peak RSS", "peak RSS over imports"}
    assert result["environment"]["cpu"]["cpu"]
    assert result["command"].startswith("python bench/scale.py --smoke")


@pytest.mark.slow
def test_smoke_with_dense(tmp_path: Path) -> None:
    result = _run(tmp_path)  # --smoke builds dense at the smallest size with a tiny random bi-encoder
    dense = result["sizes"][0]["dense"]
    assert dense["build_s"] > 0 and dense["component_bytes"] > 0
    assert "dense: encode" in dense["phases"]
