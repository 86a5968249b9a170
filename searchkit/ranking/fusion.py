"""Fusion arithmetic, one implementation for every caller: RRF and convex fusion of first-stage rankings, min-max
normalisation, and the learned fusion of a reranker's scores with every first-stage score.

First stages (the Searcher's hybrid mode, ``searchkit fuse``): :func:`rrf_rows` (reciprocal-rank fusion,
``sum 1 / (k + rank)``), :func:`convex_rows` (``alpha * dense + (1 - alpha) * sparse`` on per-query min-max
normalised scores) and :func:`sum_rows` (weighted sums, CombSUM, CombMNZ of normalised scores) on ranked arrays,
:func:`rrf_fuse` / :func:`convex_fuse` on Hit lists, :func:`fuse_runs` on whole runs (run files).

After a reranker (:class:`searchkit.config.LearnedFusion`, fitted by :mod:`searchkit.training.fusion`): features,
per query, over the candidates the reranker scored: the reranker's logits, the first-stage score, and the BM25 and
dense scores from those stages' own rankings, each **min-max normalised over the query's candidates** (a candidate a
stage did not return gets 0, below every candidate it did return; a stage the index lacks is all 0). Min-max, not
z-scores, so that the two-stage ``interpolation`` ``a * reranker + (1 - a) * first stage`` that cards store is the
special case ``weights = {"reranker": a, "first_stage": 1 - a}``. :func:`mix_scores` applies a fusion to a
reranker's logits; the Searcher calls it.

>>> rrf_fuse([[Hit("a", 9.0), Hit("b", 1.0)], [Hit("b", 0.9)]], k=60)[0]
Hit(doc_id='b', score=0.03252247488101534)
>>> head = [Hit("a", 3.0), Hit("b", 2.0), Hit("c", 1.0)]
>>> feats = stage_features(head, np.array([0.0, 2.0, 1.0]), {"bm25": [Hit("c", 9.0), Hit("a", 5.0)]})
>>> feats["bm25"].tolist()                       # b was not in BM25's ranking: 0
[0.0, 0.0, 1.0]
>>> fuse(LearnedFusion({"reranker": 0.5, "first_stage": 0.25, "bm25": 0.25}), feats).tolist()
[0.25, 0.625, 0.5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from searchkit.config import LearnedFusion
from searchkit.ranking.arrays import Ranking, sort_ranking, tie_keys
from searchkit.types import ConfigError, DataError, Hit, Run, sort_hits


# ---------------------------------------------------------------------- fusion
def rrf_rows(rankings: Sequence[Ranking], keys: np.ndarray, k: int = 60) -> Ranking:
    """Reciprocal-rank fusion on arrays: ``score(row) = sum over rankings of 1 / (k + rank)``, ranks from 1.

    Each row's contributions are added smallest first, so the fused score (and the tie order, by ``keys`` from
    :func:`searchkit.types.tie_keys`) cannot depend on the order of the rankings.
    """
    parts = [r for r in rankings if len(r.rows)]
    if not parts:
        return Ranking.empty()
    rows = np.concatenate([r.rows for r in parts])
    contributions = np.concatenate([1.0 / (k + np.arange(1, len(r.rows) + 1, dtype=np.float64)) for r in parts])
    order = np.lexsort((contributions, rows))
    unique, inverse = np.unique(rows[order], return_inverse=True)
    # bincount adds in input order: per row, smallest contribution first
    return sort_ranking(unique, np.bincount(inverse, weights=contributions[order]), keys)


def convex_rows(sparse: Ranking, dense: Ranking, keys: np.ndarray, alpha: float = 0.5) -> Ranking:
    """``alpha * dense + (1 - alpha) * sparse`` on per-query min-max-normalized scores (a missing row counts 0)."""
    return sum_rows([sparse, dense], keys, [1.0 - alpha, alpha])


def sum_rows(
    rankings: Sequence[Ranking],
    keys: np.ndarray,
    weights: Sequence[float] | None = None,
    norm: str = "minmax",
    *,
    mnz: bool = False,
) -> Ranking:
    """``sum_i weights[i] * normalize(scores_i)`` over the rankings that hold a row (a missing row counts 0):
    convex fusion with weights, CombSUM with none (all 1); ``mnz`` (CombMNZ) multiplies each row's sum by the number
    of rankings that returned it. Rankings are added in the order given.

    >>> from searchkit.ranking.arrays import tie_keys
    >>> a, b = Ranking(np.array([0, 1]), np.array([3.0, 1.0])), Ranking(np.array([1, 2]), np.array([2.0, 0.0]))
    >>> sum_rows([a, b], tie_keys(["x", "y", "z"]), mnz=True).scores.tolist()   # y: (0 + 1) * 2
    [2.0, 1.0, 0.0]
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ConfigError(f"{len(weights)} weights for {len(rankings)} rankings: give one weight per run")
    parts = [r.rows for r in rankings if len(r.rows)]
    rows = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    total = np.zeros(len(rows), dtype=np.float64)
    count = np.zeros(len(rows), dtype=np.int64)
    for ranking, weight in zip(rankings, weights, strict=True):
        if len(ranking.rows):
            at = np.searchsorted(rows, ranking.rows)
            total[at] += float(weight) * normalize(ranking.scores, norm)
            count[at] += 1
    if mnz:
        total *= count
    return sort_ranking(rows, total, keys)


FUSE_METHODS = ("rrf", "convex", "combsum", "combmnz")
"""What :func:`fuse_runs` combines runs by: reciprocal ranks, a weighted sum, CombSUM and CombMNZ of normalised
scores."""


NORMS = ("minmax", "max", "sum", "zmuv", "none")
"""Per-query score normalisations (:func:`normalize`), ranx's names less the hyphen."""


def normalize(scores: np.ndarray, norm: str = "minmax") -> np.ndarray:
    """One ranking's scores normalised by ``norm``: ``minmax`` (:func:`minmax`), ``max`` (``s / max``), ``sum``
    (``(s - min) / sum(s - min)``), ``zmuv`` (``(s - mean) / std``) or ``none``. The divisors are floored at 1e-9,
    as ranx's are; ``minmax`` maps constant scores to 1.0 (ranx: 0.0).

    >>> normalize(np.array([4.0, 2.0, 2.0]), "sum").tolist(), normalize(np.array([4.0, 2.0]), "max").tolist()
    ([1.0, 0.0, 0.0], [1.0, 0.5])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if norm == "minmax":
        return minmax(scores)
    if norm == "none" or scores.size == 0:
        return scores
    if norm == "max":
        return scores / max(float(scores.max()), 1e-9)
    if norm == "sum":
        low = float(scores.min())
        return (scores - low) / max(float(scores.sum()) - low * len(scores), 1e-9)
    if norm == "zmuv":
        return (scores - float(scores.mean())) / max(float(scores.std()), 1e-9)
    raise ConfigError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}")


def fuse_runs(
    runs: Sequence[Run],
    method: str = "rrf",
    *,
    weights: Sequence[float] | None = None,
    rrf_k: int = 60,
    norm: str = "minmax",
) -> Run:
    """Several runs fused per query with the Searcher's arithmetic (``searchkit fuse``): ``rrf`` (:func:`rrf_rows`,
    ``rrf_k``), ``convex`` (:func:`sum_rows` with ``weights``, by default equal ones summing to 1: two runs with
    ``[1 - alpha, alpha]`` are the Searcher's convex hybrid), ``combsum`` and ``combmnz`` (:func:`sum_rows`), the
    last three on ``norm``-normalised scores. A query missing from a run gets nothing from it; ranks are each run's
    :func:`searchkit.types.sort_hits` order. Queries come in the order they first appear.

    >>> fuse_runs([{"q": [Hit("a", 2.0), Hit("b", 1.0)]}, {"q": [Hit("b", 5.0)]}], "combmnz")
    {'q': [Hit(doc_id='b', score=2.0), Hit(doc_id='a', score=1.0)]}
    """
    if method not in FUSE_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSE_METHODS)}")
    if len(runs) < 2:
        raise ConfigError(f"fusion needs two runs or more, got {len(runs)}")
    if norm not in NORMS:
        raise ConfigError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}")
    if weights is not None and method != "convex":
        raise ConfigError(f"weights apply to convex fusion, not {method}")
    if method == "convex" and weights is None:
        weights = [1.0 / len(runs)] * len(runs)
    if weights is not None and len(weights) != len(runs):
        raise ConfigError(f"{len(weights)} weights for {len(runs)} runs: give one weight per run")
    if rrf_k < 0:
        raise ConfigError(f"rrf_k must be >= 0, got {rrf_k}")
    fused: Run = {}
    for query_id in dict.fromkeys(qid for run in runs for qid in run):
        rankings, ids, keys = _as_rankings([sort_hits(run.get(query_id, [])) for run in runs])
        if method == "rrf":
            ranking = rrf_rows(rankings, keys, rrf_k)
        else:
            ranking = sum_rows(rankings, keys, weights, norm, mnz=method == "combmnz")
        fused[query_id] = ranking.to_hits(ids)
    return fused


def _as_rankings(lists: Sequence[Sequence[Hit]]) -> tuple[list[Ranking], np.ndarray, np.ndarray]:
    """Hit lists as Rankings over a local id table: (rankings, ids, tie keys)."""
    ids = list(dict.fromkeys(hit.doc_id for hits in lists for hit in hits))
    row_of = {doc_id: row for row, doc_id in enumerate(ids)}
    rankings = [
        Ranking(
            np.fromiter((row_of[hit.doc_id] for hit in hits), dtype=np.int64, count=len(hits)),
            np.fromiter((hit.score for hit in hits), dtype=np.float64, count=len(hits)),
        )
        for hits in lists
    ]
    return rankings, np.array(ids, dtype=object), tie_keys(ids)


def rrf_fuse(rankings: Sequence[Sequence[Hit]], k: int = 60) -> list[Hit]:
    """:func:`rrf_rows` on Hit lists. Empty rankings contribute nothing.

    >>> rrf_fuse([[Hit("a", 9.0), Hit("b", 1.0)], [Hit("b", 0.9)]], k=60)[0]
    Hit(doc_id='b', score=0.03252247488101534)
    """
    converted, ids, keys = _as_rankings(rankings)
    return rrf_rows(converted, keys, k).to_hits(ids)


def min_max_normalize(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores mapped to [0, 1] per ranking (:func:`searchkit.ranking.fusion.minmax`); constant scores all map to 1.0.

    >>> min_max_normalize([Hit("a", 3.0), Hit("b", 1.0)])
    {'a': 1.0, 'b': 0.0}
    """
    normalized = minmax(np.array([hit.score for hit in hits], dtype=np.float64)).tolist()
    return {hit.doc_id: value for hit, value in zip(hits, normalized, strict=True)}


def convex_fuse(sparse: Sequence[Hit], dense: Sequence[Hit], alpha: float = 0.5) -> list[Hit]:
    """:func:`convex_rows` on Hit lists.

    >>> convex_fuse([Hit("a", 10.0), Hit("b", 5.0)], [Hit("b", 0.9), Hit("c", 0.1)], alpha=0.5)
    [Hit(doc_id='b', score=0.5), Hit(doc_id='a', score=0.5), Hit(doc_id='c', score=0.0)]
    """
    (sparse_rows, dense_rows), ids, keys = _as_rankings([sparse, dense])
    return convex_rows(sparse_rows, dense_rows, keys, alpha).to_hits(ids)


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1]; constant scores all map to 1.0 (search.py's convention).

    >>> minmax(np.array([3.0, 1.0, 2.0])).tolist()
    [1.0, 0.0, 0.5]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    low, high = float(scores.min()), float(scores.max())
    if high == low:
        return np.ones_like(scores)
    return (scores - low) / (high - low)


def interpolation_model(a: float) -> LearnedFusion:
    """The two-stage mix ``a * reranker + (1 - a) * first stage`` as a fusion model (old cards' ``interpolation``).

    >>> interpolation_model(0.25).weights
    {'reranker': 0.25, 'first_stage': 0.75}
    """
    return LearnedFusion({"reranker": float(a), "first_stage": 1.0 - float(a)})


def reranker_only(model: LearnedFusion | None) -> bool:
    """True when ``model`` leaves the reranker's order alone (no model, or all weight on the reranker)."""
    return model is None or all(w == 0.0 for f, w in model.weights.items() if f != "reranker")


def stage_features(
    head: Sequence[Hit], reranker: np.ndarray, stages: Mapping[str, Sequence[Hit]] | None = None
) -> dict[str, np.ndarray]:
    """One query's normalised features for its reranked candidates ``head`` (see the module docstring).

    ``reranker``: the logits of ``head``'s candidates; ``stages``: the query's first-stage rankings by name
    (``bm25``, ``bm25.<analyzer>``, ``dense``; optional), each a feature of that name.
    """
    reranker = np.asarray(reranker, dtype=np.float64)
    if len(reranker) != len(head):
        raise DataError(f"{len(head)} candidates but {len(reranker)} reranker scores")
    features = {
        "reranker": minmax(reranker),
        "first_stage": minmax(np.array([hit.score for hit in head], dtype=np.float64)),
    }
    for name, ranking in (stages or {}).items():
        scores = {hit.doc_id: hit.score for hit in ranking}
        present = np.array([hit.doc_id in scores for hit in head])
        values = np.zeros(len(head), dtype=np.float64)
        if present.any():
            values[present] = minmax(np.array([scores[hit.doc_id] for hit in head if hit.doc_id in scores]))
        features[name] = values
    return features


def fuse(model: LearnedFusion, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """``sum_f weights[f] * features[f]`` (a feature that is missing counts 0)."""
    size = len(features["reranker"])
    total = np.zeros(size, dtype=np.float64)
    for name, weight in model.weights.items():
        if weight and name in features:
            total += weight * features[name]
    return total


def mix_scores(
    candidates: Sequence[Sequence[Hit]],
    scores: np.ndarray,
    fusion: LearnedFusion | None,
    stages: Sequence[Mapping[str, Sequence[Hit]]] | None = None,
) -> list[list[Hit]]:
    """Each query's ``candidates`` re-scored from the flat reranker logits ``scores`` (in candidate order) with
    ``fusion`` (None, or all weight on the reranker: the logits themselves), sorted by :func:`sort_hits`.

    ``stages[i]``: query i's ``{"bm25": hits, "dense": hits}`` rankings, for the BM25 and dense features.

    >>> mix_scores([[Hit("a", 2.0), Hit("b", 1.0)]], np.array([0.1, 0.9]), None)
    [[Hit(doc_id='b', score=0.9), Hit(doc_id='a', score=0.1)]]
    >>> mix_scores([[Hit("a", 2.0), Hit("b", 1.0)]], np.array([0.1, 0.9]), interpolation_model(0.25))[0][0]
    Hit(doc_id='a', score=0.75)
    """
    total = sum(len(hits) for hits in candidates)
    if len(scores) != total:
        raise DataError(f"{total} candidates but {len(scores)} reranker scores")
    results: list[list[Hit]] = []
    start = 0
    for i, hits in enumerate(candidates):
        own = np.asarray(scores[start : start + len(hits)], dtype=np.float64)
        start += len(hits)
        if fusion is not None and not reranker_only(fusion):
            own = fuse(fusion, stage_features(hits, own, None if stages is None else stages[i]))
        results.append(sort_hits(Hit(hit.doc_id, float(s)) for hit, s in zip(hits, own, strict=True)))
    return results
