"""Chinese end to end (issue 22): models that cannot read the text say so (the embedded English MiniLM on Chinese is
refused at build and training, logged once at search), and a tiny Chinese-vocabulary BERT runs the whole pipeline:
an index with the zh analyzer and a dense component, reranking, training."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_sentence_transformer

from searchkit.config import BM25Config, DenseConfig, RerankConfig, TrainConfig
from searchkit.index import Index
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.models.tokenizers import load_tokenizer, unknown_share
from searchkit.search import Searcher
from searchkit.training.cross_encoder import train
from searchkit.types import ConfigError

ZH = Path(__file__).resolve().parent / "data" / "zh"
ROOT = Path(__file__).resolve().parents[1]


def _chinese_characters() -> list[str]:
    text = (ZH / "corpus.jsonl").read_text(encoding="utf-8") + (ZH / "queries.jsonl").read_text(encoding="utf-8")
    return sorted({char for char in text if "\u4e00" <= char <= "\u9fff"})


@pytest.fixture(scope="module")
def zh_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny bi-encoder and a tiny cross-encoder whose vocabularies hold every Han character of the fixture."""
    folder = tmp_path_factory.mktemp("zh-models")
    chars = _chinese_characters()
    return {
        "bi": make_tiny_sentence_transformer(folder / "bi", words=chars),
        "ce": make_tiny_cross_encoder(folder / "ce", words=chars),
    }


def test_the_embedded_model_reads_english_but_not_chinese() -> None:
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    texts = [json.loads(line)["text"] for line in (ZH / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    assert unknown_share(tokenizer, ["solar panels turn sunlight into power"]) == 0.0
    assert unknown_share(tokenizer, texts) > 0.5


def test_a_dense_build_with_a_model_that_cannot_read_the_corpus_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Index.build(ZH, tmp_path / "idx", bm25=BM25Config(analyzer="zh"), dense=DenseConfig(device="cpu"))
    message = str(caught.value)
    assert "\n" not in message and "dense model 'all-MiniLM-L6-v2' cannot read this corpus" in message
    assert "% of the tokens of 8 sampled texts are unknown" in message and "multilingual or Chinese" in message
    assert not (tmp_path / "idx").exists() and list(tmp_path.iterdir()) == []
    done = subprocess.run(
        [sys.executable, "-m", "searchkit", "index", "build", "--corpus", ZH, "-o", tmp_path / "cli", "--dense",
         "all-MiniLM-L6-v2", "--analyzer", "zh"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "cannot read this corpus" in done.stderr
    permitted = Index.build(ZH, tmp_path / "anyway", dense=DenseConfig(device="cpu", max_unknown=1.0))
    assert permitted.dense is not None  # max_unknown raised: the user's call


def test_searches_the_model_cannot_read_are_logged_once(
    tiny_hybrid_index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    searcher = Searcher(tiny_hybrid_index, mode="dense")
    with caplog.at_level(logging.WARNING, logger="searchkit.retrieval.dense"):
        searcher.search_batch(["癌症治疗的儿童", "太阳能电池"], 3)
        searcher.search_batch(["小孩感冒咳嗽"], 3)
    warnings = [record for record in caplog.records if "cannot read the queries" in record.getMessage()]
    assert len(warnings) == 1


def test_a_chinese_vocabulary_runs_the_whole_pipeline(zh_models: dict[str, Path], tmp_path: Path) -> None:
    dense = DenseConfig(model=str(zh_models["bi"]), device="cpu", dtype="fp32", batch_size=4, max_length=64)
    index = Index.build(ZH, tmp_path / "zh", bm25=[BM25Config(analyzer="zh"), BM25Config(analyzer="cjk-bigram")],
                        dense=dense)  # fmt: skip
    assert list(index.manifest["components"]) == ["bm25", "bm25.cjk-bigram", "dense"]
    hybrid = Searcher(index)
    assert hybrid.mode == "hybrid" and hybrid.fused == ["bm25", "bm25.cjk-bigram", "dense"]
    assert len(hybrid.search("癌症治疗 儿童", 5)) == 5
    reranked = Searcher(index, rerank=RerankConfig(str(zh_models["ce"]), device="cpu", dtype="fp32", depth=5))
    assert {hit.doc_id for hit in reranked.search("小孩咳嗽", 5)} == {
        hit.doc_id for hit in hybrid.search("小孩咳嗽", 5)
    }
    result = train(
        TrainConfig(
            output=str(tmp_path / "reranker"), corpus=str(ZH), split="test", index=str(index.path),
            base_model=str(zh_models["ce"]), max_length=48, mine_depth=6, random_negatives=2, negatives_per_group=3,
            groups_per_step=2, epochs=1, lr=3e-3, dev_queries=2, dev_depth=6, device="cpu", fit_fusion=False,
        )
    )  # fmt: skip
    assert (result.output / "searchkit.json").is_file()


def test_training_a_model_that_cannot_read_the_data_is_refused(tmp_path: Path) -> None:
    index = Index.build(ZH, tmp_path / "zh", bm25=BM25Config(analyzer="zh"))
    config = TrainConfig(
        output=str(tmp_path / "reranker"), corpus=str(ZH), split="test", index=str(index.path),
        base_model="all-MiniLM-L6-v2", max_length=48, mine_depth=6, random_negatives=2, negatives_per_group=3,
        dev_queries=2, device="cpu",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="model 'all-MiniLM-L6-v2' cannot read the training data"):
        train(config)
