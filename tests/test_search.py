"""Searcher modes, k handling, explain, and the fusion functions (hand-computed values and properties)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchkit.config import DEFAULT_RERANK_DEPTH, DenseConfig, FusionConfig, LearnedFusion, RerankConfig
from searchkit.index import Index
from searchkit.ranking.fusion import convex_fuse, min_max_normalize, mix_scores, rrf_fuse
from searchkit.search import Searcher
from searchkit.types import ConfigError, Hit, sort_hits

TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(TINY, tmp_path_factory.mktemp("search") / "bm25")


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(TINY, tmp_path_factory.mktemp("search") / "hybrid", dense=DenseConfig(batch_size=4))


# ---------------------------------------------------------------------- fusion, by hand
def test_rrf_hand_computed() -> None:
    first = [Hit("a", 9.0), Hit("b", 5.0)]
    second = [Hit("b", 0.8), Hit("c", 0.7)]
    fused = rrf_fuse([first, second], k=60)
    expected = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62}
    assert [hit.doc_id for hit in fused] == ["b", "a", "c"]
    assert {hit.doc_id: hit.score for hit in fused} == pytest.approx(expected)


def test_convex_hand_computed_and_constant_scores() -> None:
    sparse = [Hit("a", 10.0), Hit("b", 6.0), Hit("c", 2.0)]  # normalized a=1, b=0.5, c=0
    dense = [Hit("c", 0.9), Hit("d", 0.9)]  # constant scores: both 1.0
    fused = {hit.doc_id: hit.score for hit in convex_fuse(sparse, dense, alpha=0.25)}
    assert fused == pytest.approx({"a": 0.75, "b": 0.375, "c": 0.25, "d": 0.25})
    assert min_max_normalize([]) == {}
    assert convex_fuse([], [], 0.5) == []


def test_fusion_survives_empty_lists() -> None:
    ranking = [Hit("x", 3.0), Hit("y", 1.0)]
    assert [hit.doc_id for hit in rrf_fuse([ranking, []])] == ["x", "y"]
    assert [hit.doc_id for hit in convex_fuse([], ranking, 0.5)] == ["x", "y"]


rankings = st.lists(
    st.lists(st.sampled_from([f"d{i}" for i in range(12)]), unique=True, max_size=12), min_size=1, max_size=4
)


def _as_hits(ids: Sequence[str]) -> list[Hit]:
    return [Hit(doc_id, float(len(ids) - rank)) for rank, doc_id in enumerate(ids)]


@given(rankings)
def test_rrf_properties(lists: list[list[str]]) -> None:
    fused = rrf_fuse([_as_hits(ids) for ids in lists])
    union = {doc_id for ids in lists for doc_id in ids}
    assert {hit.doc_id for hit in fused} == union  # nothing invented, nothing lost
    assert fused == sort_hits(fused)  # ordered by score, ties by doc_id desc
    for hit in fused:  # each ranking adds at most 1/(k+1)
        assert 0 < hit.score <= len(lists) / 61 + 1e-12


@given(rankings)
def test_rrf_is_order_independent(lists: list[list[str]]) -> None:
    assert rrf_fuse([_as_hits(ids) for ids in lists]) == rrf_fuse([_as_hits(ids) for ids in reversed(lists)])


@given(st.lists(st.sampled_from([f"d{i}" for i in range(8)]), unique=True, min_size=1), st.integers(0, 100))
def test_rrf_of_one_ranking_keeps_its_order(ids: list[str], k: int) -> None:
    assert [hit.doc_id for hit in rrf_fuse([_as_hits(ids)], k=k)] == ids


@given(rankings, st.floats(0, 1))
def test_convex_scores_stay_in_unit_interval(lists: list[list[str]], alpha: float) -> None:
    first = _as_hits(lists[0])
    second = _as_hits(lists[-1])
    fused = convex_fuse(first, second, alpha)
    assert all(-1e-12 <= hit.score <= 1 + 1e-12 for hit in fused)
    assert {hit.doc_id for hit in fused} == set(lists[0]) | set(lists[-1])


# ---------------------------------------------------------------------- searcher (BM25 only)
def test_bm25_mode_and_single_interface(bm25_index: Index) -> None:
    searcher = Searcher(bm25_index)
    assert searcher.mode == "bm25"
    batch = searcher.search_batch(["cats chasing mice", "solar electricity"], k=3)
    assert batch[0] == searcher.search("cats chasing mice", k=3)
    assert batch[0][0].doc_id == "d1"
    assert batch[1][0].doc_id in {"d3", "d8"}
    assert batch[0] == bm25_index.bm25.search("cats chasing mice", 3)  # type: ignore[union-attr]


def test_k_rules(bm25_index: Index) -> None:
    searcher = Searcher(bm25_index)
    assert len(searcher.search("electricity", k=1000)) == 3  # every matching document, no error
    assert searcher.search("the of and", k=10) == []
    assert searcher.search("", k=10) == []
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="positive integer"):
            searcher.search("cats", k=bad)


def test_modes_need_their_components(bm25_index: Index) -> None:
    with pytest.raises(ConfigError, match="needs two first stages"):
        Searcher(bm25_index, mode="hybrid")
    with pytest.raises(ConfigError, match="needs the dense component"):
        Searcher(bm25_index, mode="dense")
    with pytest.raises(ConfigError, match="unknown search mode"):
        Searcher(bm25_index, mode="fancy")


def test_explain_bm25(bm25_index: Index) -> None:
    explained = Searcher(bm25_index).explain("cats chasing mice", k=2)
    assert explained[0].doc_id == "d1"
    assert explained[0].stages["bm25"].rank == 1


class _ReverseReranker:
    """A stand-in reranker (the Searcher, not a reranker, is under test): reverses the candidates it is given."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth  # the Searcher reads the rerank depth from its reranker
        self.seen_texts: list[list[str]] = []

    def rerank_batch(
        self, queries: Sequence[str], candidates: Sequence[Sequence[Hit]], texts: Sequence[Sequence[str]]
    ) -> list[list[Hit]]:
        self.seen_texts.extend(list(group) for group in texts)
        return [[Hit(hit.doc_id, float(i)) for i, hit in enumerate(hits)][::-1] for hits in candidates]


def test_reranker_only_sees_its_depth(bm25_index: Index) -> None:
    plain = Searcher(bm25_index).search("electricity solar wind", k=3)
    reranker = _ReverseReranker()
    reranked = Searcher(bm25_index, rerank=reranker).search("electricity solar wind", k=3)
    assert [hit.doc_id for hit in reranked] == [plain[1].doc_id, plain[0].doc_id, plain[2].doc_id]
    assert len(reranker.seen_texts[0]) == 2
    assert (
        reranker.seen_texts[0][0]
        == bm25_index.document(plain[0].doc_id).title + " " + bm25_index.document(plain[0].doc_id).text
    )


# ---------------------------------------------------------------------- hybrid and cascade (embedded model)
def test_hybrid_is_rrf_of_both_stages(hybrid_index: Index) -> None:
    searcher = Searcher(hybrid_index, fusion=FusionConfig(depth=8))
    assert searcher.mode == "hybrid"
    query = "solar electricity"
    sparse = hybrid_index.bm25.search(query, 8)  # type: ignore[union-attr]
    dense = hybrid_index.dense.search(query, 8)  # type: ignore[union-attr]
    assert searcher.search(query, k=5) == rrf_fuse([sparse, dense], 60)[:5]
    convex = Searcher(hybrid_index, fusion=FusionConfig(method="convex", alpha=0.3, depth=8))
    assert convex.search(query, 5) == convex_fuse(sparse, dense, 0.3)[:5]


def test_cascade_rescores_bm25_candidates(hybrid_index: Index) -> None:
    searcher = Searcher(hybrid_index, mode="cascade", fusion=FusionConfig(depth=8))
    query = "electricity"
    candidates = {hit.doc_id for hit in hybrid_index.bm25.search(query, 8)}  # type: ignore[union-attr]
    hits = searcher.search(query, k=10)
    assert {hit.doc_id for hit in hits} == candidates
    dense_scores = {hit.doc_id: hit.score for hit in hybrid_index.dense.search(query, 8)}  # type: ignore[union-attr]
    for hit in hits:
        assert hit.score == pytest.approx(dense_scores[hit.doc_id], abs=1e-5)


def test_explain_hybrid_lists_every_stage(hybrid_index: Index) -> None:
    explained = Searcher(hybrid_index).explain("mice", k=3)
    assert [(hit.doc_id, hit.score) for hit in explained] == list(Searcher(hybrid_index).search("mice", k=3))
    assert set(explained[0].stages) == {"bm25", "dense", "hybrid"}
    assert explained[0].stages["hybrid"].rank == 1


def test_hits_below_the_rerank_depth_score_below_the_reranked_ones(bm25_index: Index) -> None:
    query = "electricity solar wind"
    plain = Searcher(bm25_index).search(query, k=5)
    reranked = Searcher(bm25_index, rerank=_ReverseReranker()).search(query, k=5)
    # the stand-in scores its two candidates 1.0 and 0.0: every deeper hit must sort below them, in BM25 order
    assert reranked == sort_hits(reranked)
    assert [hit.doc_id for hit in reranked[2:]] == [hit.doc_id for hit in plain[2:]]
    assert max(hit.score for hit in reranked[2:]) < min(hit.score for hit in reranked[:2])


def test_explain_with_a_reranker_matches_search_and_shows_the_rerank_stage(bm25_index: Index) -> None:
    searcher = Searcher(bm25_index, rerank=_ReverseReranker())
    query = "electricity solar wind"
    explained = searcher.explain(query, k=3)
    assert [(hit.doc_id, hit.score) for hit in explained] == list(searcher.search(query, k=3))
    assert explained[0].stages["rerank"].rank == 1 and explained[0].stages["bm25"].rank == 2


def test_rerank_depth_has_one_default(bm25_index: Index) -> None:
    class NoDepth:
        rerank_batch = _ReverseReranker.rerank_batch

    assert Searcher(bm25_index, rerank=NoDepth()).rerank_depth == DEFAULT_RERANK_DEPTH == 100
    assert Searcher(bm25_index, rerank=_ReverseReranker(depth=3)).rerank_depth == 3
    with pytest.raises(ConfigError, match="positive"):
        Searcher(bm25_index, rerank=_ReverseReranker(depth=0))


class _FusedReverse(_ReverseReranker):
    """A stand-in whose card says: half its own scores, half BM25's; mixing them is the Searcher's job."""

    fusion = LearnedFusion({"reranker": 0.5, "bm25": 0.5})


def test_the_searcher_mixes_a_rerankers_scores_with_every_stage_by_its_fusion(hybrid_index: Index) -> None:
    reranker = _FusedReverse(depth=3)
    searcher = Searcher(hybrid_index, fusion=FusionConfig(depth=8), rerank=reranker)
    queries = ["solar electricity", "mice"]
    got = searcher.search_batch(queries, k=3)
    stages = searcher.stages(queries, 8)
    assert set(stages) == {"bm25", "dense", "hybrid"}
    assert stages["bm25"][1] == hybrid_index.bm25.search("mice", 8)  # type: ignore[union-attr]
    heads = [hits[:3] for hits in stages["hybrid"]]
    own = _ReverseReranker(depth=3).rerank_batch(queries, heads, [[""] * len(head) for head in heads])
    logits = np.array(
        [{h.doc_id: h.score for h in new}[hit.doc_id] for new, head in zip(own, heads, strict=True) for hit in head]
    )
    per_query = [{"bm25": stages["bm25"][i], "dense": stages["dense"][i]} for i in range(len(queries))]
    assert got == mix_scores(heads, logits, reranker.fusion, per_query)
    assert got != own  # the fusion moved something: BM25's scores count


def test_searcher_builds_the_reranker_of_a_rerank_config(bm25_index: Index, tmp_path: Path) -> None:
    from searchkit.models.cross_encoder import CrossEncoderReranker
    from searchkit.models.tiny import make_tiny_cross_encoder

    folder = make_tiny_cross_encoder(tmp_path / "ce")
    searcher = Searcher(bm25_index, rerank=RerankConfig(str(folder), depth=3, device="cpu", dtype="fp32"))
    assert isinstance(searcher.reranker, CrossEncoderReranker) and searcher.rerank_depth == 3
    hits = searcher.search("electricity solar wind", k=5)
    plain = Searcher(bm25_index).search("electricity solar wind", k=5)
    assert {h.doc_id for h in hits[:3]} == {h.doc_id for h in plain[:3]}
    assert [h.doc_id for h in hits[3:]] == [h.doc_id for h in plain[3:]]
