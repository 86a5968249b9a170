"""Honest rerank reports: a reranked run scored beside the ranking it was given and that ranking's recall at the
rerank depth, so a reranker is only credited with the documents the first stage actually handed it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchkit.evaluate.metrics import canonical_metric, evaluate
from searchkit.ranking.fusion import fuse, reranker_only, stage_features
from searchkit.types import DataError, Hit, Qrels, Run, sort_hits


@dataclass(frozen=True)
class RerankEvaluation:
    """A reranker on a first stage's top ``depth``: the first stage alone (with ``R@depth``, the share of relevant
    documents the reranker was given), the reranker alone (raw scores), and fused (``None`` without a fusion model).
    ``runs`` holds the three runs (``first_stage``, ``reranker``, ``fused``) over the candidates."""

    depth: int
    first_stage: dict[str, float]
    reranker: dict[str, float]
    fused: dict[str, float] | None
    runs: dict[str, Run]


def rerank_evaluation(
    query_ids: Sequence[str],
    heads: Sequence[Sequence[Any]],
    scores: Sequence[Any],
    qrels: Qrels,
    metrics: Sequence[str],
    *,
    fusion: Any = None,
    stages: Sequence[Mapping[str, Sequence[Any]]] | None = None,
    all_query_ids: Iterable[str] | None = None,
    unjudged: str = "zero",
) -> RerankEvaluation:
    """Score a reranker's work from its logits: one helper for training's dev loop, suites and benchmarks.

    ``heads[i]``: query ``query_ids[i]``'s first-stage candidates (the reranked top, best first); ``scores[i]``: the
    reranker's logits for them; ``fusion``: a :class:`searchkit.config.LearnedFusion` (or None) applied with
    ``stages[i]`` (that query's BM25/dense rankings) as :func:`searchkit.ranking.fusion.fuse` does. ``all_query_ids``
    and ``unjudged`` are passed to :func:`evaluate`. Each run holds the candidates only, so metrics below ``depth`` are
    the reranked top's.

    >>> from searchkit.types import Hit
    >>> from searchkit.config import LearnedFusion
    >>> heads = [[Hit("a", 2.0), Hit("b", 1.0)]]
    >>> ev = rerank_evaluation(["q"], heads, [[0.0, 5.0]], {"q": {"b": 1}}, ["RR@10"],
    ...                        fusion=LearnedFusion({"reranker": 0.4, "first_stage": 0.6}))
    >>> ev.first_stage, ev.reranker, ev.fused
    ({'R@2': 1.0, 'RR@10': 0.5}, {'R@2': 1.0, 'RR@10': 1.0}, {'R@2': 1.0, 'RR@10': 0.5})
    """

    if not len(query_ids) == len(heads) == len(scores):
        raise DataError(f"rerank_evaluation: {len(query_ids)} queries, {len(heads)} heads, {len(scores)} score lists")
    depth = max((len(head) for head in heads), default=0)
    wanted = list(dict.fromkeys([f"R@{max(depth, 1)}", *(canonical_metric(m) for m in metrics)]))
    runs: dict[str, Run] = {"first_stage": {}, "reranker": {}}
    if fusion is not None and not reranker_only(fusion):
        runs["fused"] = {}
    for i, (qid, head, own) in enumerate(zip(query_ids, heads, scores, strict=True)):
        logits = np.asarray(own, dtype=np.float64)
        runs["first_stage"][qid] = list(head)
        runs["reranker"][qid] = sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(head, logits, strict=True))
        if "fused" in runs:
            mixed = fuse(fusion, stage_features(head, logits, None if stages is None else stages[i]))
            runs["fused"][qid] = sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(head, mixed, strict=True))
    results = {
        name: evaluate(run, qrels, wanted, query_ids=all_query_ids, unjudged=unjudged).aggregate
        for name, run in runs.items()
    }
    return RerankEvaluation(depth, results["first_stage"], results["reranker"], results.get("fused"), runs)


def run_rerank_evaluation(
    first_stage: Run,
    reranked: Run,
    depth: int,
    qrels: Qrels,
    metrics: Sequence[str],
    *,
    query_ids: Iterable[str] | None = None,
    unjudged: str = "zero",
) -> RerankEvaluation:
    """The report of a reranked run file (``searchkit rerank``), as suites give it: the input run with ``R@depth``
    (what the reranker was handed) beside the reranked run (``reranker``: the run as the Searcher returns it, the
    card's fusion included; ``fused`` is None), both over every metric and ``R@depth``.

    >>> ev = run_rerank_evaluation({"q": [Hit("a", 2.0), Hit("b", 1.0), Hit("c", 0.5)]},
    ...                            {"q": [Hit("b", 3.0), Hit("a", 1.0), Hit("c", -1.0)]}, 2, {"q": {"b": 1, "c": 1}},
    ...                            ["RR@10"])
    >>> ev.first_stage, ev.reranker
    ({'R@2': 0.5, 'RR@10': 0.5}, {'R@2': 0.5, 'RR@10': 1.0})
    """
    wanted = list(dict.fromkeys([f"R@{max(depth, 1)}", *(canonical_metric(m) for m in metrics)]))
    runs = {"first_stage": first_stage, "reranker": reranked}
    results = {
        name: evaluate(run, qrels, wanted, query_ids=query_ids, unjudged=unjudged, log_problems=name == "reranker")
        for name, run in runs.items()
    }
    return RerankEvaluation(depth, results["first_stage"].aggregate, results["reranker"].aggregate, None, runs)
