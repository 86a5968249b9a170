"""The benchmark scripts stay runnable: the one-call GPU script rehearsed on the CPU (slow tier: real SciFact data)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/datasets/scifact")
def test_device_script_rehearsal_on_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "device.sh"), "--cpu", "--out", str(tmp_path), "--deadline", "1500"],
        capture_output=True,
        text=True,
        timeout=1600,
    )
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for step in ("index", "dense", "rerank", "latency", "train"):
        assert f"| {step} | ok |" in summary, summary
    for produced in ("bench_dense.json", "bench_rerank.json", "bench_latency.json", "searchkit.json"):
        assert (tmp_path / produced).is_file(), produced
