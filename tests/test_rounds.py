"""Training in rounds (searchkit.training.rounds) with a tiny random BERT on the synthetic collection: two rounds
run, round 2 mines over round 1's model and fusion with a decayed learning rate, a round without a dev gain is
dropped and ends the loop, and the card records every round."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import WORDS

from searchkit.config import RerankConfig, TrainConfig
from searchkit.formats import read_qrels, read_queries, sha256_file
from searchkit.index import Index
from searchkit.models.cards import read_reranker_card
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.search import Searcher
from searchkit.training.cross_encoder import TrainResult
from searchkit.training.data import mine_negatives
from searchkit.training.rounds import train_rounds
from searchkit.types import ConfigError


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rounds")
    make_tiny_cross_encoder(folder / "base", words=[*WORDS, "about", "notes", "on", "and", "the"])
    return folder


def _config(workspace: Path, corpus: Path, name: str, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        output=str(workspace / name),
        corpus=str(corpus),
        split="train",
        index=str(workspace / "index"),
        base_model=str(workspace / "base"),
        max_length=32,
        mine_mode="bm25",
        mine_depth=8,
        negatives_per_group=3,
        groups_per_step=4,
        epochs=1,
        lr=3e-3,
        dev_queries=6,
        dev_depth=8,
        log_every=1,
        device="cpu",
        seed=3,
        rounds=2,
        lr_decay=0.5,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def two_rounds(workspace: Path, synthetic_beir: Path) -> TrainResult:
    return train_rounds(_config(workspace, synthetic_beir, "two"))


def _logged_lrs(folder: Path) -> list[float]:
    lines = (folder / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [record["lr"] for record in map(json.loads, lines) if record.get("event") == "step"]


def _negatives(folder: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (folder / "data" / "train_pairs.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["label"] == 0:
            found.setdefault(record["query_id"], []).append(record["doc"])
    return found


def test_two_rounds_run_and_the_card_records_them(two_rounds: TrainResult, workspace: Path) -> None:
    out = workspace / "two"
    first, second = out / "rounds" / "round-1", out / "rounds" / "round-2"
    cards = [read_reranker_card(first), read_reranker_card(second)]
    assert all(cards)
    history = read_reranker_card(out)["rounds"]["history"]
    assert [entry["round"] for entry in history] == [1, 2] == [entry["round"] for entry in two_rounds.rounds or []]
    for entry, card in zip(history, cards, strict=True):  # the dev score as shipped: the fitted fusion's
        assert entry["dev"] == pytest.approx(card["fusion"]["fitted"]["fused"])
    assert history[0]["kept"] is True
    assert history[1]["kept"] is (history[1]["dev"] > history[0]["dev"])
    kept = second if history[1]["kept"] else first
    assert sha256_file(out / "model.safetensors") == sha256_file(kept / "model.safetensors")
    assert read_reranker_card(out)["rounds"]["kept"] == (2 if history[1]["kept"] else 1)
    # round 2 continues from round 1, mines over it, with half the learning rate
    config = cards[1]["training_config"]
    assert config["init_from"] == config["mine_model"] == str(first)
    assert config["lr"] == pytest.approx(cards[0]["training_config"]["lr"] * 0.5)
    assert max(_logged_lrs(second)) <= 0.5 * max(_logged_lrs(first)) + 1e-12
    assert max(_logged_lrs(second)) > 0


def test_round_two_mines_over_the_pipeline_of_round_one(
    two_rounds: TrainResult, workspace: Path, synthetic_beir: Path
) -> None:
    first = workspace / "two" / "rounds" / "round-1"
    qrels = read_qrels(synthetic_beir, "train")
    mined = _negatives(workspace / "two" / "rounds" / "round-2")
    queries = [q for q in read_queries(synthetic_beir, split="train") if q.query_id in mined]
    # the pipeline round 1's model is served over: the BM25 top 8 reranked by it and mixed by its card's fusion
    searcher = Searcher(
        Index.open(workspace / "index"), mode="bm25", rerank=RerankConfig(str(first), depth=8, device="cpu")
    )
    served = searcher.search_batch([q.text for q in queries], 8)
    for query, hits in zip(queries, served, strict=True):
        assert mined[query.query_id] == mine_negatives(hits, set(qrels[query.query_id]), depth=8)


def test_a_round_without_dev_gain_is_dropped_and_stops(workspace: Path, synthetic_beir: Path) -> None:
    # round 2's learning rate is ~1e-12: its model is round 1's, so its dev score cannot rise
    result = train_rounds(_config(workspace, synthetic_beir, "stall", rounds=3, lr_decay=1e-9))
    out = workspace / "stall"
    history = read_reranker_card(out)["rounds"]["history"]
    assert [(entry["round"], entry["kept"]) for entry in history] == [(1, True), (2, False)]
    assert history[1]["dev"] == pytest.approx(history[0]["dev"])
    assert not (out / "rounds" / "round-3").exists()  # the loop stopped at the first round without a gain
    assert sha256_file(out / "model.safetensors") == sha256_file(out / "rounds" / "round-1" / "model.safetensors")
    assert result.output == out and result.rounds == history
    with pytest.raises(ConfigError, match="already holds a trained model"):
        train_rounds(_config(workspace, synthetic_beir, "stall", rounds=3))


def test_one_round_is_a_plain_training_run(workspace: Path, synthetic_beir: Path) -> None:
    result = train_rounds(_config(workspace, synthetic_beir, "one", rounds=1))
    assert result.rounds is None and not (workspace / "one" / "rounds").exists()
    assert "rounds" not in read_reranker_card(workspace / "one")


def test_rounds_need_dev_queries(workspace: Path, synthetic_beir: Path) -> None:
    with pytest.raises(ConfigError, match="dev_queries > 0"):
        train_rounds(_config(workspace, synthetic_beir, "nodev", dev_queries=0))
