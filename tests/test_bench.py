"""The benchmark scripts stay runnable: bench/quality.py end to end at tiny scale (the default tier), and the
one-call GPU script rehearsed on the CPU (slow tier: real SciFact data)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


def _load_bench(name: str) -> Any:
    return load_bench(name)


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


# ---------------------------------------------------------------------- bench/quality.py at tiny scale
RECIPE = """
corpus = "missing/{data}"                  # replaced by --data-root (then trimmed by --limit-test-queries)
index = "indexes/base"                     # moved by --index-dir
output = "{output}"
base_model = "all-MiniLM-L6-v2"            # replaced by --model (its fp32 copy)
max_length = 32
mine_mode = "{mine}"
mine_depth = 8
skip_top = 1
epochs = 1
lr = 1e-3
precision = "fp32"
device = "cpu"
dev_queries = 4
dev_depth = 5
"""
RERANKER = (
    'loss = "{loss}"\nweighting = "{weighting}"\nnegatives_per_group = 3\ngroups_per_step = 2\nfit_fusion = false\n'
)
# (fit_fusion = false: bench/quality.py fits it, at the depth the main model's dev chooses)
QUALITY_SUITE = """
[suite]
name = "tiny-quality"
metrics = ["nDCG@10", "RR@10"]

[datasets.base]
source = "missing/{data}"
index = "indexes/base"

[datasets.ft]
source = "missing/{data}"
index = "indexes/ft"
"""
ROW = """
[[conditions]]
name = "{name}"
dataset = "{dataset}"
mode = "hybrid"
dense = {{ {model}device = "cpu", dtype = "fp32", batch_size = 16 }}
k = 5
{rerank}expected = {{ "nDCG@10" = 0.0 }}
"""
FT = 'model = "./dense-encoder", '
RERANK = 'rerank = {{ model = "./reranker-e3", depth = 5, device = "cpu", dtype = "fp32"{mix} }}\n'


def test_quality_command_end_to_end_at_tiny_scale(
    tmp_path: Path, synthetic_beir: Path, tiny_bi_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/quality.py's whole path with every environment override the GPU run uses: an fp16 model upcast, the
    data elsewhere, test queries trimmed, indexes and models moved, --set, two recipes trained and fitted, the
    suite, one ablation trained, fitted at the chosen depth and scored with the shipped rows, the pack; then a
    rerun that trains nothing and reads the figures from the cards."""
    from safetensors.torch import load_file, save_file

    from searchkit.models.cards import read_model_card

    model = tmp_path / "model-fp16"  # what the device kit carries: fp16 weights
    shutil.copytree(tiny_bi_encoder, model)
    tensors = load_file(str(model / "model.safetensors"))
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(model / "model.safetensors")
    )
    data = synthetic_beir.name
    (tmp_path / "dense.toml").write_text(
        'model = "dense"\n' + RECIPE.format(data=data, output="dense-encoder", mine="bm25") + "batch_size = 4\n"
    )
    for name, loss, weighting in (("reranker", "listwise", "none"), ("pointwise-class", "pointwise", "class")):
        extra = RERANKER.format(loss=loss, weighting=weighting) + (
            "positive_weight = 3.0\n" if weighting == "class" else ""
        )
        (tmp_path / f"{name}.toml").write_text(RECIPE.format(data=data, output=name, mine="hybrid") + extra)
    for epoch in ("e2", "e3"):  # continual, in a chain: e2 from the reranker's output, e3 from e2's (shipped)
        recipe = RECIPE.format(data=data, output=f"reranker-{epoch}", mine="hybrid")
        (tmp_path / f"reranker-{epoch}.toml").write_text(recipe + RERANKER.format(loss="listwise", weighting="none"))
    rows = [("hybrid-base", "base", "", None), ("hybrid-ft", "ft", FT, None)]  # (name, dataset, dense, rerank mix)
    rows += [("rerank-alone", "ft", FT, ', interpolation = "none"'), ("rerank-fusion", "ft", FT, "")]
    suite = QUALITY_SUITE.format(data=data) + "".join(
        ROW.format(name=name, dataset=dataset, model=model, rerank="" if mix is None else RERANK.format(mix=mix))
        for name, dataset, model, mix in rows
    )
    (tmp_path / "suite.toml").write_text(suite)
    quality = _load_bench("quality")
    models = tmp_path / "models"  # where --models-dir puts every trained model (the suite's rows follow them)
    common = [
        "--suite", str(tmp_path / "suite.toml"), "--dense-recipe", str(tmp_path / "dense.toml"),
        "--rerank-recipe", str(tmp_path / "reranker.toml"), "--ablation", str(tmp_path / "pointwise-class.toml"),
        "--continue-recipe", str(tmp_path / "reranker-e2.toml"), str(tmp_path / "reranker-e3.toml"),
        "--model", str(model), "--data-root", str(synthetic_beir.parent), "--index-dir", str(tmp_path / "idx"),
        "--limit-test-queries", "1", "--work", str(tmp_path / "work"), "--models-dir", str(models), "--depth", "5",
    ]  # fmt: skip
    quality.main([*common, "--set", "max_steps=2", "--pack", str(tmp_path / "out" / "quality.tar.gz")])
    printed = capsys.readouterr().out
    for line in ("train-dense: ", "train-reranker: ", "train-continued: ", "train-pointwise-class: ", "fusion fitted"):
        assert line in printed, printed
    rows = printed[printed.index("reranked rows of tiny-quality") :]
    for label in (
        "reranker-e3 alone",
        "reranker-e3 + fusion",
        "ablation: pointwise-class alone",
        "ablation: pointwise-class + fusion",
    ):
        assert label in rows, rows
    assert "train s" in rows and "pairs/s" in rows
    assert (tmp_path / "work" / "model-fp16-fp32" / "model.safetensors").is_file()  # the fp32 copy was used
    base = read_model_card(models / "reranker")
    assert base["base_model"]["name"].endswith("model-fp16-fp32") and base["training_config"]["max_steps"] == 2
    assert base["training_config"]["index"] == str(tmp_path / "idx" / "base")
    assert read_model_card(models / "pointwise-class")["fusion"]["depth"] == 5  # the depth the main model chose
    continued = read_model_card(models / "reranker-e3")  # the shipped model: the third epoch, lineage recorded
    assert [entry["name"] for entry in continued["lineage"]][-2:] == [
        str(models / "reranker"),
        str(models / "reranker-e2"),
    ]
    assert continued["fusion"]["depth"] == 5  # the fit ran on the shipped (last continued) model
    (summary_path,) = (tmp_path / "results").glob("tiny-quality-*.timings.json")
    summary = json.loads(summary_path.read_text())
    assert summary["rerank_depth"] == 5
    assert set(summary["training"]) == {"dense", "reranker", "reranker-e2", "reranker-e3", "pointwise-class"}
    assert all(
        figures["trained"] == "now" and figures["pairs_per_second"] > 0 for figures in summary["training"].values()
    )
    assert set(summary["ablations"]["pointwise-class"]) == {
        "ablation-pointwise-class-alone",
        "ablation-pointwise-class-fusion",
    }
    first = json.loads(summary_path.with_name(summary_path.name.replace(".timings", "")).read_text())
    assert first["conditions"][1]["settings"]["dense"]["model"] == str(models / "dense-encoder")
    assert not (tmp_path / "reranker").exists() and not (tmp_path / "dense-encoder").exists()
    ablated = json.loads(next((tmp_path / "results").glob("tiny-quality-*.ablation-pointwise-class.json")).read_text())
    assert [c["queries"]["run"] for c in ablated["conditions"]] == [1, 1]  # the trimmed test split
    assert [c["settings"]["rerank"]["model"] for c in ablated["conditions"]] == [str(models / "pointwise-class")] * 2
    with tarfile.open(tmp_path / "out" / "quality.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"models/reranker/searchkit.json", "models/reranker-e2/searchkit.json"} <= names
    assert "models/pointwise-class/train_log.jsonl" in names
    assert f"results/{summary_path.name}" in names and f"results/{Path(ablated['output'] or 'x').name}" in names

    # a rerun trains nothing (figures from the cards), and an ablation that would overrun the deadline is skipped
    quality.main([*common, "--skip-train", "--no-fit", "--deadline-s", "0.01", "--rerank-set", "batch_size=8"])
    rerun = capsys.readouterr().out
    assert "train-reranker: using" in rerun and "ablation pointwise-class: skipped (deadline" in rerun, rerun
    assert "ablation: pointwise-class + fusion (skipped: deadline)" in rerun
    (second,) = set((tmp_path / "results").glob("tiny-quality-*.timings.json")) - {summary_path}
    summary = json.loads(second.read_text())
    assert summary["training"]["reranker"]["trained"] == "before" and summary["training"]["reranker"]["seconds"] > 0
    assert "skipped" in summary["ablations"]["pointwise-class"]
    result = json.loads(second.with_name(second.name.replace(".timings", "")).read_text())
    assert result["conditions"][-1]["settings"]["rerank"]["batch_size"] == 8  # --rerank-set
