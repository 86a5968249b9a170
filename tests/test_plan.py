"""searchkit.index.plan and `searchkit index plan`: the plan against real builds of the tiny fixtures, sampling and
extrapolation, FAISS sizes against real indexes, the free-disk refusal and --force, the CLI's table and JSON, and bad
input as one line. The SciFact acceptance (disk and peak RAM within 25% of a measured build) is in the slow tier."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, synthetic_documents

from searchkit.config import BM25Config, DenseConfig, FilterConfig, TokensConfig
from searchkit.index import Index
from searchkit.index.plan import BuildPlan, check_free_disk, faiss_size, plan_build, suggest_factories
from searchkit.types import ConfigError, DataError

TINY = Path(__file__).parent / "data" / "tiny"
FORMATS = Path(__file__).parent / "data" / "formats"
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size if path.exists() else 0


def actual_disk(folder: Path) -> dict[str, int]:
    """A built index's bytes grouped as BuildPlan.disk groups them."""
    groups = {
        "docstore": _size(folder / "docs.jsonl") + _size(folder / "docs.offsets.npy"),
        "docids": _size(folder / "docids.txt"),
        "bm25": _size(folder / "bm25"),
        "tokens": _size(folder / "tokens"),
        "dense_embeddings": _size(folder / "dense" / "embeddings.npy"),
        "dense_faiss": _size(folder / "dense" / "index.faiss"),
        "dense_passages": _size(folder / "dense" / "passages.npy"),
        "filters": _size(folder / "filters"),
        "manifest": sum(_size(folder / name) for name in ("manifest.json", "dense/faiss.json", "dense/model.json")),
    }
    return {name: size for name, size in groups.items() if size}


def assert_disk_close(plan: BuildPlan, folder: Path) -> None:
    """Exact for what the plan counts byte by byte; the JSON side files within a few hundred bytes."""
    actual = actual_disk(folder)
    assert set(plan.disk) == set(actual)
    for name in ("docstore", "docids", "dense_embeddings", "dense_faiss", "dense_passages"):
        if name in actual:
            assert plan.disk[name] == actual[name], name
    for name in ("bm25", "tokens", "filters", "manifest"):
        if name in actual:
            assert abs(plan.disk[name] - actual[name]) <= max(600, 0.1 * actual[name]), (name, plan.disk, actual)
    assert abs(plan.disk_total - sum(actual.values())) <= 0.05 * sum(actual.values())


# ---------------------------------------------------------------------- the plan against real builds
def test_plan_matches_a_tiny_hybrid_build(tmp_path: Path, tiny_encoder_config: DenseConfig) -> None:
    tokens = TokensConfig(model=tiny_encoder_config.model, max_length=16)
    plan = plan_build(TINY, dense=tiny_encoder_config, tokens=tokens)
    built = Index.build(TINY, tmp_path / "tiny", dense=tiny_encoder_config, tokens=tokens)
    assert plan.num_docs == built.num_docs == 8 and plan.count == "counted" and not plan.extrapolated
    assert plan.components == ("bm25", "tokens", "dense")
    assert_disk_close(plan, built.path)
    assert plan.temporary_disk >= plan.disk["dense_embeddings"] - 128  # the fp16 shards sit beside it
    assert set(plan.ram) == {"store", "bm25", "tokens", "dense encode", "dense faiss"}
    encode = plan.encode
    assert encode["sample_docs"] == 8 and encode["docs_per_s"] > 0 and encode["seconds"] > 0
    assert [option.factory for option in plan.faiss] == suggest_factories(8, plan.dense["dim"])


def test_plan_of_a_passage_build_counts_its_passages(tmp_path: Path, tiny_encoder_config: DenseConfig) -> None:
    from dataclasses import replace

    from searchkit.config import PassageConfig

    dense = replace(tiny_encoder_config, passages=PassageConfig(tokens=4, stride=2))
    plan = plan_build(TINY, dense=dense, measure=False)
    built = Index.build(TINY, tmp_path / "tiny", dense=dense)
    assert round(plan.stats["passages"] * built.num_docs) == built.dense.num_vectors > built.num_docs
    assert_disk_close(plan, built.path)  # embeddings, FAISS and passages.npy to the byte


def test_plan_of_documents_with_filters(tmp_path: Path) -> None:
    docs = synthetic_documents(60)
    filters = FilterConfig(["year:number", "lang"])
    plan = plan_build(docs, filters=filters, bm25=BM25Config(method="bm25+"))
    built = Index.build(docs, tmp_path / "filtered", filters=filters, bm25=BM25Config(method="bm25+"))
    assert plan.num_docs == 60 and plan.corpus == "list of documents"
    assert_disk_close(plan, built.path)


def test_sample_counts_lines_and_marks_extrapolation(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for doc in synthetic_documents(200):
            handle.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    full = plan_build(corpus, measure=False)
    sampled = plan_build(corpus, sample=50, measure=False)
    assert (sampled.num_docs, sampled.count, sampled.sampled_docs, sampled.extrapolated) == (200, "lines", 50, True)
    assert "extrapolated" in sampled.summary() and "extrapolated" in sampled.table()
    assert abs(sampled.disk["docstore"] - full.disk["docstore"]) < 0.05 * full.disk["docstore"]
    scaled = plan_build(corpus, sample=50, scale_to=1_000_000, measure=False)
    assert (scaled.num_docs, scaled.count) == (1_000_000, "target")
    assert scaled.disk["docids"] == pytest.approx(sampled.disk["docids"] * 5000, rel=1e-6)
    assert scaled.ram["bm25"] > 5 * sampled.ram["bm25"]  # grows with the corpus


def test_a_tsv_header_is_not_a_document() -> None:
    documents = len(list(__import__("searchkit.formats").formats.read_corpus(FORMATS / "corpus_header.tsv")))
    plan = plan_build(FORMATS / "corpus_header.tsv", sample=1, measure=False)
    assert plan.num_docs == documents and plan.count == "lines"


def test_heaps_law_extrapolates_the_vocabulary(tmp_path: Path) -> None:
    import random

    rng = random.Random(0)  # heavy-tailed word frequencies: the vocabulary keeps growing, more and more slowly
    corpus = tmp_path / "zipf.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for row in range(2000):
            words = " ".join(f"w{int(rng.paretovariate(0.8))}x" for _ in range(20))
            handle.write(json.dumps({"_id": f"z{row}", "text": words}) + "\n")
    measured = plan_build(corpus, sample=500, measure=False)
    scaled = plan_build(corpus, sample=500, scale_to=50_000, measure=False)
    assert 0.3 <= scaled.stats["heaps_beta"] < 1
    assert measured.stats["vocab"] < scaled.stats["vocab"] < measured.stats["vocab"] * 100  # sublinear growth


# ---------------------------------------------------------------------- FAISS sizes
@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF4,Flat", "IVF4,PQ4"])
def test_faiss_size_predicts_a_real_index(factory: str) -> None:
    import faiss
    import numpy as np

    from searchkit.retrieval.faiss_index import build_faiss_index

    dim, n = 16, 3000
    vectors = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    real = int(faiss.serialize_index(build_faiss_index(vectors, factory, train_sample=n)).nbytes)
    predicted = faiss_size(factory, dim).bytes(n)
    assert abs(predicted - real) <= 0.02 * real + 64, (predicted, real)


def test_faiss_size_extrapolates_the_list_count() -> None:
    small, large = faiss_size("IVF16,Flat", 32), faiss_size("IVF4096,Flat", 32)
    assert large.per_list == pytest.approx(small.per_list) and large.per_list >= 32 * 4
    assert large.bytes(0) - small.bytes(0) == pytest.approx((4096 - 16) * small.per_list, rel=1e-6)
    with pytest.raises(ConfigError, match="invalid FAISS factory"):
        faiss_size("NoSuchIndex", 8)


# ---------------------------------------------------------------------- free disk: refusal and --force
def fake_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("searchkit.index.plan.shutil.disk_usage", lambda path: usage._replace(free=free))


def test_build_refuses_when_the_plan_exceeds_free_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_disk(monkeypatch, 2000)
    target = tmp_path / "full"
    with pytest.raises(ConfigError) as refused:
        Index.build(TINY, target)
    message = str(refused.value)
    assert "\n" not in message and "--force" in message and "1.95 KiB free" in message and "KiB of disk" in message
    assert not target.exists() and not (tmp_path / ".full.building").exists()
    with caplog.at_level(logging.WARNING, logger="searchkit.index.plan"):
        assert Index.build(TINY, target, force=True).num_docs == 8
    assert "building anyway" in caplog.text


def test_build_logs_its_plan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="searchkit.index.plan"):
        Index.build(TINY, tmp_path / "logged")
    assert "build plan: 8 docs (counted), disk" in caplog.text and "peak RAM" in caplog.text


def test_build_of_a_one_pass_iterator_is_not_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_disk(monkeypatch, 10)  # nothing to check against: the documents cannot be read twice
    assert Index.build(iter(synthetic_documents(5)), tmp_path / "stream").num_docs == 5


def test_build_goes_on_when_the_corpus_cannot_be_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("searchkit.index.plan.QUICK_SAMPLE", 3)  # a sample shorter than the corpus: the rest is counted
    monkeypatch.setattr("searchkit.index.plan.count_documents", lambda corpus, first_line: None)  # e.g. an irds id
    with caplog.at_level(logging.INFO, logger="searchkit.index.plan"):
        assert Index.build(TINY, tmp_path / "uncounted").num_docs == 8
    assert "build plan: skipped" in caplog.text and "scale_to" in caplog.text


def test_check_free_disk_names_the_sizes(tmp_path: Path) -> None:
    plan = plan_build(TINY, measure=False)
    check_free_disk(plan, tmp_path / "x", free=plan.disk_peak)
    with pytest.raises(ConfigError, match=r"needs about .* but .* has only 10 B free.*--force"):
        check_free_disk(plan, tmp_path / "x", free=10)


def test_cli_build_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_disk(monkeypatch, 100)
    args = ["--no-progress", "index", "build", "--corpus", str(TINY), "-o", str(tmp_path / "i")]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and err.startswith("error: ") and "--force" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli([*args, "--force"], capsys)
    assert code == 0 and "8 documents" in out


# ---------------------------------------------------------------------- the CLI
def test_cli_plan_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["index", "plan", "--corpus", str(TINY), "--no-measure"], capsys)
    assert code == 0 and f"plan for {TINY}" in out and "8 (counted, every document read)" in out
    assert "doc store (docs.jsonl + offsets)" in out and "peak RAM" in out and "free where it goes" in out
    code, out, _ = run_cli(["index", "plan", "--corpus", str(TINY), "--no-measure", "--json"], capsys)
    payload = json.loads(out)
    assert payload["num_docs"] == 8 and payload["disk_total"] == sum(payload["disk"].values())
    assert payload["free_disk"] > 0 and payload["peak_ram"] == max(payload["ram"].values())


def test_cli_plan_dense_with_measured_encoding(
    tiny_encoder_config: DenseConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["index", "plan", "--corpus", str(TINY), "--dense", tiny_encoder_config.model, "--device", "cpu"]
    code, out, _ = run_cli([*args, "--faiss", "HNSW16"], capsys)
    assert code == 0 and "docs/s" in out and "tokens/s" in out
    assert "FAISS factories" in out and "HNSW16" in out and "IVF1,Flat" in out and "dense/index.faiss" in out
    code, out, _ = run_cli([*args, "--scale-to", "8800000", "--no-measure", "--json"], capsys)
    payload = json.loads(out)
    assert payload["extrapolated"] and payload["count"] == "target" and payload["num_docs"] == 8_800_000
    assert payload["disk"]["dense_embeddings"] == 128 + 8_800_000 * payload["dense"]["dim"] * 2


def test_cli_plan_from_a_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'corpus = "{TINY}"\noutput = "tiny"\n[bm25]\nk1 = 1.2\n', encoding="utf-8")
    code, out, _ = run_cli(["index", "plan", str(recipe), "--no-measure", "--json"], capsys)
    assert code == 0 and json.loads(out)["output"] == str(tmp_path / "tiny")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--corpus", "/no/such/corpus.jsonl"], "no such file or directory"),
        (["--corpus", str(TINY), "--sample", "0"], "sample must be > 0"),
        (["--corpus", str(TINY), "--faiss", "IVF4,Flat"], "--faiss and --device need --dense"),
        ([], "needs RECIPE.toml or --corpus"),
        (["/no/such/recipe.toml"], "recipe not found"),
    ],
)
def test_cli_plan_bad_input_is_one_line(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["index", "plan", *args], capsys)
    assert code == 1 and err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_plan_rejects_a_bad_corpus_line(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        plan_build(corpus, measure=False)


# ---------------------------------------------------------------------- acceptance (slow): SciFact
def _measured_build(args: list[str]) -> tuple[int, int]:
    """Peak RSS (bytes) of a `searchkit index build` subprocess and the index's size."""
    proc = subprocess.Popen([sys.executable, "-m", "searchkit", "--no-progress", "index", "build", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0
    target = Path(args[args.index("-o") + 1])
    return usage.ru_maxrss * 1024, _size(target)


@pytest.mark.slow
def test_scifact_plan_within_25_percent_of_a_measured_build(tmp_path: Path) -> None:
    assert SCIFACT.is_dir(), "needs ../shared/datasets/scifact"
    dense: Any = DenseConfig()
    plan = plan_build(SCIFACT, dense=dense)
    peak, size = _measured_build(["--corpus", str(SCIFACT), "-o", str(tmp_path / "scifact"), "--dense", dense.model])
    assert abs(plan.disk_total / size - 1) <= 0.25 and abs(plan.peak_ram / peak - 1) <= 0.25, (plan.summary(), peak)
