"""Learned fusion: features by hand, coordinate ascent finds the signal, fitting reads dev qrels only (never test),
a fitted folder's card is used by the Searcher automatically."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from searchkit.config import LearnedFusion, RerankConfig
from searchkit.ranking.fusion import fuse, interpolation_model, minmax, reranker_only, stage_features
from searchkit.training.fusion import _with_weight, fit_fusion, fit_weights
from searchkit.types import ConfigError, DataError, Hit

TINY = Path(__file__).parent / "data" / "tiny"


def test_minmax_by_hand() -> None:
    assert minmax(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]  # constant scores: all 1, as the Searcher does
    assert minmax(np.array([])).tolist() == []
    assert minmax(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]


def test_features_by_hand() -> None:
    head = [Hit("a", 0.9), Hit("b", 0.5), Hit("c", 0.1)]
    stages = {"bm25": [Hit("c", 12.0), Hit("a", 4.0), Hit("x", 2.0)], "dense": [Hit("b", 0.7)]}
    feats = stage_features(head, np.array([1.0, 3.0, 2.0]), stages)
    assert feats["reranker"].tolist() == [0.0, 1.0, 0.5]
    assert feats["first_stage"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert feats["bm25"].tolist() == [0.0, 0.0, 1.0]  # a: 4 is the lowest of the head's BM25 scores; b missing
    assert feats["dense"].tolist() == [0.0, 1.0, 0.0]  # one present score: constant -> 1; others missing -> 0
    assert "dense" not in stage_features(head, np.zeros(3), {"bm25": []})
    with pytest.raises(DataError, match="3 candidates but 2"):
        stage_features(head, np.zeros(2))


def test_fuse_and_the_interpolation_special_case() -> None:
    feats = {"reranker": np.array([0.0, 1.0]), "first_stage": np.array([1.0, 0.0])}
    assert fuse(interpolation_model(0.25), feats).tolist() == [0.75, 0.25]
    assert fuse(LearnedFusion({"reranker": 0.5, "bm25": 0.5}), feats).tolist() == [0.0, 0.5]  # bm25 missing: 0
    assert (
        reranker_only(None) and reranker_only(interpolation_model(1.0)) and not reranker_only(interpolation_model(0.5))
    )
    with pytest.raises(ConfigError, match="sum to 1"):
        LearnedFusion({"reranker": 0.5})
    with pytest.raises(ConfigError, match="unknown features"):
        LearnedFusion({"colour": 1.0})


def test_with_weight_keeps_the_sum() -> None:
    names = ["reranker", "first_stage", "bm25"]
    assert _with_weight({"reranker": 0.5, "first_stage": 0.5}, names, "bm25", 0.2) == {
        "bm25": 0.2,
        "reranker": 0.4,
        "first_stage": 0.4,
    }
    assert _with_weight({"reranker": 1.0}, names, "reranker", 0.5) == {
        "reranker": 0.5,
        "first_stage": 0.25,
        "bm25": 0.25,
    }


def _synthetic(n: int = 12, seed: int = 0) -> tuple[list[list[Hit]], list[dict[str, np.ndarray]], list[str], dict]:
    """Queries of 6 candidates with one relevant document: BM25 finds it, the reranker and first stage do not."""
    rng = np.random.default_rng(seed)
    heads, feats, ids, qrels = [], [], [], {}
    for q in range(n):
        docs = [f"q{q}d{i}" for i in range(6)]
        relevant = int(rng.integers(6))
        bm25 = rng.random(6) * 0.5
        bm25[relevant] = 1.0
        head = [Hit(d, float(6 - i)) for i, d in enumerate(docs)]
        features = stage_features(
            head, rng.random(6), {"bm25": [Hit(d, float(s)) for d, s in zip(docs, bm25, strict=True)]}
        )
        heads.append(head)
        feats.append(features)
        ids.append(f"q{q}")
        qrels[f"q{q}"] = {docs[relevant]: 1}
    return heads, feats, ids, qrels


def test_coordinate_ascent_finds_the_stage_that_carries_the_signal() -> None:
    heads, feats, ids, qrels = _synthetic()
    model, report = fit_weights(heads, feats, ids, qrels)
    assert report["fused"] == pytest.approx(1.0)  # BM25 ranks every relevant document first
    assert report["fused"] >= report["interpolation"]["score"] >= report["alone"]["reranker"]
    assert model.weights["bm25"] > 0.5 and abs(sum(model.weights.values()) - 1) < 1e-9
    assert report["alone"]["bm25"] == pytest.approx(1.0) and report["alone"]["first_stage"] < 1.0


class _DevOnlyQrels(Mapping[str, dict[str, int]]):
    """Qrels that fail the test if anything but a dev query is looked up or the whole mapping is read."""

    def __init__(self, qrels: Mapping[str, dict[str, int]], dev: set[str]) -> None:
        self.qrels, self.dev = dict(qrels), dev

    def __getitem__(self, key: str) -> dict[str, int]:
        if key not in self.dev:
            raise AssertionError(f"fusion fitting read the judgments of non-dev query {key!r}")
        return self.qrels[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("fusion fitting iterated over every judged query")

    def __len__(self) -> int:
        raise AssertionError("fusion fitting looked at every judged query")


def test_fit_weights_reads_only_the_dev_queries_judgments() -> None:
    heads, feats, ids, qrels = _synthetic()
    test_qrels = {"t1": {"x": 1}, "t2": {"y": 2}}
    guarded = _DevOnlyQrels({**qrels, **test_qrels}, set(ids))
    model, _ = fit_weights(heads, feats, ids, guarded)
    other, _ = fit_weights(heads, feats, ids, {**qrels, "t1": {"z": 1}, "t3": {"w": 1}})
    assert model == other  # other test judgments: the same weights


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny cross-encoder with a card like `searchkit train` writes (training data: the tiny test split) and its
    dev queries, plus a BM25 index of the tiny corpus."""
    from searchkit.index import Index
    from searchkit.models.cards import write_reranker_card
    from searchkit.models.tiny import make_tiny_cross_encoder

    root = tmp_path_factory.mktemp("fusion")
    folder = make_tiny_cross_encoder(root / "reranker", words=["cats", "mice", "solar", "wind", "electricity"])
    write_reranker_card(folder, {"interpolation": 0.5, "training_config": {"corpus": str(TINY), "split": "test"}})
    (folder / "data").mkdir()
    (folder / "data" / "dev_queries.txt").write_text("q1\nq2\n", encoding="utf-8")
    Index.build(TINY, root / "index")
    return folder, root / "index"


def test_fit_fusion_on_a_trained_folder_writes_the_card_and_the_searcher_uses_it(
    trained_folder: tuple[Path, Path],
) -> None:
    from searchkit.formats import read_qrels, read_queries
    from searchkit.index import Index
    from searchkit.models.cards import read_model_card
    from searchkit.search import Searcher

    folder, index_dir = trained_folder
    qrels = read_qrels(TINY, "test")
    queries = read_queries(TINY)
    guarded = _DevOnlyQrels(qrels, {"q1", "q2"})  # every non-dev judgment stands for the test split
    kwargs = {"queries": queries, "depth": 4, "device": "cpu", "dtype": "fp32"}
    model, report = fit_fusion(folder, index_dir, qrels=guarded, write=False, **kwargs)
    changed = {**qrels, "q3": {"d1": 1, "d2": 1}, "q4": {"d9": 2}}
    again, _ = fit_fusion(folder, index_dir, qrels=changed, **kwargs)  # writes the card
    assert again == model and report["queries"] == 2 and model.depth == 4 and model.mode == "bm25"
    card = read_model_card(folder, "reranker")
    assert LearnedFusion(**card["fusion"]) == model and card["interpolation"] == 0.5  # the old weight is kept
    searcher = Searcher(Index.open(index_dir), rerank=RerankConfig(str(folder), depth=4, device="cpu", dtype="fp32"))
    assert searcher.reranker.fusion == model  # type: ignore[union-attr]
    assert searcher.rerank_depth == 4
    assert len(searcher.search("solar electricity", k=3)) == 3
    # the defaults come from the folder: data/dev_queries.txt and the card's training split
    default, _ = fit_fusion(folder, index_dir, depth=4, device="cpu", dtype="fp32", write=False)
    assert default == model


def test_fit_fusion_needs_a_trained_folder(tmp_path: Path, trained_folder: tuple[Path, Path]) -> None:
    from searchkit.models.tiny import make_tiny_cross_encoder

    bare = make_tiny_cross_encoder(tmp_path / "bare")
    with pytest.raises(ConfigError, match=r"no searchkit\.json"):
        fit_fusion(bare, trained_folder[1], device="cpu")
    with pytest.raises(DataError, match="no text"):
        fit_fusion(trained_folder[0], trained_folder[1], dev_ids=["nope"], device="cpu", write=False)


def test_fit_fusion_over_several_depths_keeps_the_smallest_within_the_tolerance(
    trained_folder: tuple[Path, Path],
) -> None:
    from searchkit.formats import read_qrels, read_queries

    folder, index_dir = trained_folder
    kwargs = {"queries": read_queries(TINY), "qrels": read_qrels(TINY, "test"), "device": "cpu", "dtype": "fp32"}
    model, report = fit_fusion(folder, index_dir, depth=[4, 2], write=False, **kwargs)
    rows = report["depths"]
    assert set(rows) == {"2", "4"} and report["depth_tolerance"] == 0.002
    best = max(row["fused"] for row in rows.values())
    assert model.depth == min(int(d) for d, row in rows.items() if row["fused"] >= best - 0.002)
    assert rows["2"]["first_stage_recall"] <= rows["4"]["first_stage_recall"]  # a deeper cut holds more
    # each depth's row is what a fit at that depth alone gives
    alone, alone_report = fit_fusion(folder, index_dir, depth=2, write=False, **kwargs)
    assert rows["2"]["fused"] == alone_report["fused"] and rows["2"]["weights"] == alone.weights
    # with no tolerance the best depth wins; ties go to the shallower one
    strict, _ = fit_fusion(folder, index_dir, depth=[2, 4], depth_tolerance=0.0, write=False, **kwargs)
    assert strict.depth == min(int(d) for d, row in rows.items() if row["fused"] == best)
    with pytest.raises(ConfigError, match="depths must be > 0"):
        fit_fusion(folder, index_dir, depth=[0, 3], write=False, **kwargs)


def test_the_rerank_depth_defaults_to_the_depth_the_cards_fusion_was_fitted_at(
    tmp_path: Path, trained_folder: tuple[Path, Path]
) -> None:
    from searchkit.config import config_to_dict
    from searchkit.index import Index
    from searchkit.models.cards import write_reranker_card
    from searchkit.models.cross_encoder import CrossEncoderReranker
    from searchkit.models.tiny import make_tiny_cross_encoder
    from searchkit.search import Searcher

    folder = make_tiny_cross_encoder(tmp_path / "reranker", words=["cats", "solar"])
    fusion = LearnedFusion({"reranker": 0.5, "bm25": 0.5}, depth=3, mode="bm25")
    write_reranker_card(folder, {"fusion": config_to_dict(fusion)})
    index = Index.open(trained_folder[1])
    fitted = Searcher(index, rerank=RerankConfig(str(folder), device="cpu", dtype="fp32"))
    assert fitted.rerank_depth == 3 and fitted.reranker.depth == 3  # type: ignore[union-attr]
    chosen = Searcher(index, rerank=RerankConfig(str(folder), depth=5, device="cpu", dtype="fp32"))
    assert chosen.rerank_depth == 5  # an explicit depth wins (and logs that the fusion was fitted at 3)
    unfused = CrossEncoderReranker(folder, device="cpu", dtype="fp32", fusion=None, interpolation=None)
    assert unfused.depth == 100  # no learned fusion in use: the default depth
    variant = unfused.variant(RerankConfig(str(folder), device="cpu", dtype="fp32"))
    assert variant.depth == 3 and variant.fusion == fusion
    first = Searcher(index).search("solar cats", k=5)
    hits = fitted.search("solar cats", k=5)  # the first stage's top 3 re-scored, the rest kept below them
    assert {h.doc_id for h in hits[:3]} == {h.doc_id for h in first[:3]} and hits[3:] == first[3:]
