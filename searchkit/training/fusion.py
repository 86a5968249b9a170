"""Fitting the learned fusion of every stage (:class:`searchkit.config.LearnedFusion`; its features and arithmetic
are :mod:`searchkit.ranking.fusion`'s) on dev queries, and choosing the rerank depth with it.

Weights (>= 0, summing to 1) are fitted by **coordinate ascent on the dev metric** (nDCG@10 by ir-measures through
:func:`searchkit.evaluate.metrics.evaluate`): start from the best two-stage interpolation on a grid, then, one feature
at a time, try every grid value for its weight (the others rescaled to keep the sum 1) and keep a change only when the
dev metric rises; stop when a pass changes nothing. The result can therefore never score below the best interpolation
(nor the reranker alone, nor the first stage alone) on dev. Fitting reads the qrels of the dev queries only: dev queries
are held out of the reranker's training split, and the test split is never opened.

:func:`fit_fusion` fits an existing trained reranker folder without retraining and writes the card's ``fusion``.

>>> choose_depth({20: 0.7592, 30: 0.7697, 50: 0.7708})
30
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchkit.config import FUSION_FEATURES, FusionConfig, LearnedFusion, RerankConfig, config_to_dict
from searchkit.evaluate.metrics import canonical_metric, evaluate
from searchkit.formats import document_text, read_qrels, read_queries
from searchkit.index import Index
from searchkit.models.cards import read_model_card, write_model_card
from searchkit.models.cross_encoder import CrossEncoderReranker
from searchkit.ranking.fusion import fuse, interpolation_model, stage_features
from searchkit.search import Searcher
from searchkit.types import ConfigError, DataError, Hit, Qrels, Query, sort_hits

if TYPE_CHECKING:
    from searchkit.index import Index


logger = logging.getLogger(__name__)


DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


INTERPOLATION_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


DEPTH_TOLERANCE = 0.002
"""Dev-metric margin within which a shallower rerank depth is preferred to a deeper one (it costs fewer pairs)."""


def fit_weights(
    heads: Sequence[Sequence[Hit]],
    features: Sequence[Mapping[str, np.ndarray]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    metric: str = "nDCG@10",
    grid: Sequence[float] = DEFAULT_GRID,
    interpolation_grid: Sequence[float] = INTERPOLATION_GRID,
    max_passes: int = 5,
) -> tuple[LearnedFusion, dict[str, Any]]:
    """Fit fusion weights by coordinate ascent on ``metric`` over the queries ``query_ids`` (dev only).

    ``heads[i]`` are query ``query_ids[i]``'s candidates and ``features[i]`` their :func:`stage_features`. Only
    ``qrels[query_id]`` of those queries is read. Returns the model and a report: the dev metric of each feature
    alone, of the best interpolation (``a``) and of the fitted fusion, and the passes run.
    """

    if not (len(heads) == len(features) == len(query_ids)) or not heads:
        raise DataError(f"fit needs one candidate list and features per dev query, got {len(query_ids)} queries")
    metric = canonical_metric(metric)
    dev_qrels: Qrels = {qid: dict(qrels[qid]) for qid in query_ids}
    present = set().union(*(feats.keys() for feats in features))
    names = [f for f in FUSION_FEATURES if f in present] + sorted(present - set(FUSION_FEATURES))
    cache: dict[tuple[tuple[str, float], ...], float] = {}

    def score(weights: Mapping[str, float]) -> float:
        key = tuple(sorted((f, round(w, 9)) for f, w in weights.items() if w))
        if key not in cache:
            model = LearnedFusion(dict(weights))
            run = {
                qid: sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(head, fuse(model, feats), strict=True))
                for qid, head, feats in zip(query_ids, heads, features, strict=True)
            }
            cache[key] = float(evaluate(run, dev_qrels, [metric], log_problems=not cache).aggregate[metric])
        return cache[key]

    alone = {name: score({name: 1.0}) for name in names}
    a_grid = sorted({0.0, 1.0, *interpolation_grid}, reverse=True)
    by_a = {a: score(interpolation_model(a).weights) for a in a_grid}
    best_a = max(a_grid, key=lambda a: by_a[a])  # max keeps the first of ties: the largest reranker weight
    weights = dict(interpolation_model(best_a).weights)
    best = by_a[best_a]
    passes, improved = 0, True
    while improved and passes < max_passes:
        passes += 1
        improved = False
        for name in names:
            for value in grid:
                trial = _with_weight(weights, names, name, float(value))
                got = score(trial)
                if got > best + 1e-12:
                    best, weights, improved = got, trial, True
    weights = {f: round(w, 6) for f, w in weights.items() if w > 0}
    weights[max(weights, key=lambda f: weights[f])] += 1.0 - sum(weights.values())  # exact sum after rounding
    report = {
        "metric": metric,
        "queries": len(query_ids),
        "alone": alone,
        "interpolation": {"a": best_a, "score": by_a[best_a]},
        "fused": best,
        "passes": passes,
        "evaluations": len(cache),
    }
    logger.info(
        "fusion fitted on %d dev queries: %s %.4f (interpolation a=%s: %.4f; reranker alone %.4f); weights %s",
        len(query_ids),
        metric,
        best,
        best_a,
        by_a[best_a],
        alone.get("reranker", float("nan")),
        weights,
    )
    return LearnedFusion(weights), report


def _with_weight(weights: Mapping[str, float], names: Sequence[str], name: str, value: float) -> dict[str, float]:
    """``weights`` with ``weights[name] = value``, the other features rescaled so the weights sum to 1."""
    others = {f: weights.get(f, 0.0) for f in names if f != name}
    rest = sum(others.values())
    if rest > 0:
        scaled = {f: w * (1.0 - value) / rest for f, w in others.items()}
    else:
        scaled = {f: (1.0 - value) / len(others) for f in others} if others else {}
    return {f: w for f, w in {name: value, **scaled}.items() if w > 0} or {name: 1.0}


def fit_fusion(
    reranker: str | Path,
    index: Index | str | Path,
    *,
    dev_ids: Sequence[str] | None = None,
    queries: Sequence[Query] | None = None,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    depth: int | Sequence[int] | None = None,
    mode: str = "auto",
    metric: str = "nDCG@10",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    depth_tolerance: float = DEPTH_TOLERANCE,
    write: bool = True,
    show_progress: bool = False,
) -> tuple[LearnedFusion, dict[str, Any]]:
    """Fit the learned fusion of a trained reranker folder on its dev queries and (``write``) store it in its card.

    Defaults come from the folder: ``dev_ids`` from ``data/dev_queries.txt`` (the queries its training held out),
    ``queries`` and ``qrels`` from the card's training data (``training_config``: its corpus/queries/qrels and
    ``split``, never the test split). ``depth`` (default: 100) should be the rerank depth the model
    will be used at; ``mode`` the Searcher's first stage. Returns the model and the fit report.

    Several depths (``depth=(20, 30, 50)``) choose the rerank depth on dev by recall against cost: the fusion is
    fitted at each (every pair scored once, shared by the depths), and the **smallest depth whose fused dev score
    is within** ``depth_tolerance`` **of the best** is kept, since each extra candidate costs a model call per
    query. The report's ``depths`` holds, per depth, the first stage's dev recall at that depth, the reranker's
    dev score alone, the fused score and the weights.
    """

    folder = Path(reranker)
    card = read_model_card(folder, "reranker")
    if not card:
        raise ConfigError(f"{folder} has no searchkit.json: fit_fusion needs a `searchkit train` output folder")
    training = card.get("training_config") or {}
    if dev_ids is None:
        dev_ids = read_dev_ids(folder)
    if qrels is None or queries is None:
        split = str(training.get("split", "train"))
        source = training.get("qrels") or training.get("corpus")
        query_source = training.get("queries") or training.get("corpus")
        if not source or not query_source:
            raise ConfigError(f"{folder}: the card names no training qrels/queries; pass queries= and qrels=")
        qrels = read_qrels(str(source), split) if qrels is None else qrels
        if queries is None:
            queries = read_queries(str(query_source), split=split if Path(str(query_source)).is_dir() else None)
    by_id = {query.query_id: query for query in queries}
    missing = [qid for qid in dev_ids if qid not in by_id]
    if missing:
        raise DataError(f"{len(missing)} dev queries have no text, e.g. {', '.join(missing[:5])}")
    dev_queries = [by_id[qid] for qid in dev_ids]
    opened = index if isinstance(index, Index) else Index.open(index)
    settings = RerankConfig(str(folder), batch_size=batch_size, device=device, dtype=dtype, fusion=None)
    wanted = [depth or settings.resolved_depth(None)] if not isinstance(depth, Sequence) else depth
    depths = sorted({int(d) for d in wanted})
    if not depths or depths[0] <= 0:
        raise ConfigError(f"rerank depths must be > 0, got {depth!r}")
    searcher = Searcher(opened, mode=mode, fusion=FusionConfig())
    scorer = CrossEncoderReranker.from_config(settings)
    scorer.remember_scores()  # the deepest fit scores every pair; the shallower ones reuse them
    ids = [q.query_id for q in dev_queries]
    fits: dict[int, tuple[LearnedFusion, dict[str, Any]]] = {}
    for each in reversed(depths):
        heads, features = dev_features(searcher, scorer, dev_queries, each, show_progress=show_progress)
        fits[each] = fit_weights(heads, features, ids, qrels, metric=metric)
        fits[each][1]["first_stage_recall"] = first_stage_recall(heads, ids, qrels)
    chosen = choose_depth({d: report["fused"] for d, (_, report) in fits.items()}, depth_tolerance)
    model, report = fits[chosen]
    if len(depths) > 1:
        report = {
            **report,
            "depth_tolerance": depth_tolerance,
            "depths": {str(d): _depth_row(*fits[d]) for d in depths},
        }
        logger.info("rerank depth %d chosen on dev from %s (within %.4f of the best)", chosen, depths, depth_tolerance)
    model = LearnedFusion(model.weights, depth=chosen, mode=searcher.mode, fitted=report)
    if write:
        write_model_card(folder, "reranker", {**card, "fusion": config_to_dict(model)})
        logger.info("fusion written to %s", folder / "searchkit.json")
    return model, report


def choose_depth(fused: Mapping[int, float], tolerance: float = DEPTH_TOLERANCE) -> int:
    """The smallest rerank depth whose dev score is within ``tolerance`` of the best one (cost grows with depth).

    >>> choose_depth({20: 0.7592, 30: 0.7697, 50: 0.7708})
    30
    >>> choose_depth({20: 0.70, 50: 0.75}, tolerance=0.0)
    50
    """
    if not fused:
        raise ConfigError("no rerank depth to choose from")
    best = max(fused.values())
    return min(d for d, value in fused.items() if value >= best - tolerance)


def first_stage_recall(
    heads: Sequence[Sequence[Hit]], query_ids: Sequence[str], qrels: Mapping[str, Mapping[str, int]]
) -> float:
    """Mean share of each query's relevant documents that its candidates ``heads`` hold (the rerank depth's
    ceiling), by ir-measures' R@depth over the candidates."""

    depth = max((len(head) for head in heads), default=0)
    if depth == 0:
        return 0.0
    run = {qid: list(head) for qid, head in zip(query_ids, heads, strict=True)}
    dev_qrels: Qrels = {qid: dict(qrels[qid]) for qid in query_ids}
    return float(evaluate(run, dev_qrels, [f"R@{depth}"]).aggregate[f"R@{depth}"])


def _depth_row(model: LearnedFusion, report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "first_stage_recall": report["first_stage_recall"],
        "reranker_alone": report["alone"].get("reranker"),
        "fused": report["fused"],
        "weights": model.weights,
    }


def dev_features(
    searcher: Any,
    reranker: Any,
    queries: Sequence[Query],
    depth: int,
    *,
    show_progress: bool = False,
) -> tuple[list[list[Hit]], list[dict[str, np.ndarray]]]:
    """The top ``depth`` of ``searcher``'s first stage for each query and their features, scored by ``reranker``."""
    texts = [query.text for query in queries]
    stages = searcher.stages(texts, depth)
    heads = [hits[:depth] for hits in stages[searcher.mode]]
    docs = {
        doc.doc_id: doc
        for doc in searcher.index.documents(list(dict.fromkeys(h.doc_id for head in heads for h in head)))
    }

    flat_queries = [text for text, head in zip(texts, heads, strict=True) for _ in head]
    flat_texts = [document_text(docs[h.doc_id]) for head in heads for h in head]
    scores = reranker.score(flat_queries, flat_texts, show_progress=show_progress)
    per_query = searcher.per_query_stages(stages)
    features, start = [], 0
    for i, head in enumerate(heads):
        own = scores[start : start + len(head)]
        start += len(head)
        features.append(stage_features(head, own, per_query[i]))
    return heads, features


def read_dev_ids(folder: str | Path) -> list[str]:
    """The dev query ids a training run held out (``data/dev_queries.txt`` of its output folder)."""
    path = Path(folder) / "data" / "dev_queries.txt"
    if not path.is_file():
        raise ConfigError(f"{path} not found: pass dev_ids= (the queries held out of the reranker's training)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError("no dev query ids: the training run held out no dev queries", path)
    return ids
