"""Probe (issue 8, dev only): does the shipped reranker, trained at 256 tokens, rank better when it reads more of
each SciFact document at inference? Scores the 100 dev queries' hybrid top-50 at 256, 384 and 512 tokens and fits
the learned fusion at each (never writes the shipped card: a copy of the folder is changed).

    python eval/results/rerank_max_length_probe.py      # ~4 min on 2 cores; figures in quality_cpu.md
"""

import shutil
import tempfile
import time
from pathlib import Path

from searchkit.training.fusion import fit_fusion
from searchkit.models.cards import read_reranker_card, write_reranker_card

SHIPPED = Path("training/scifact-reranker-epoch3")

with tempfile.TemporaryDirectory() as work:
    folder = Path(work) / SHIPPED.name
    shutil.copytree(SHIPPED, folder)
    for length in (256, 384, 512):
        card = read_reranker_card(folder)
        card["max_length"] = length  # what RerankConfig(max_length=None) reads at inference
        write_reranker_card(folder, card)
        began = time.perf_counter()
        model, report = fit_fusion(folder, "indexes/scifact-ft", depth=50, mode="hybrid", write=False, dtype="bf16")
        print(
            f"max_length {length}: dev nDCG@10 alone {report['alone']['reranker']:.4f}, fused {report['fused']:.4f}, "
            f"weights {model.weights} ({time.perf_counter() - began:.0f} s)",
            flush=True,
        )
