"""Evaluation: run queries through any retriever, score runs with ir-measures, and run expected-score suites.

Every metric is computed by ir-measures and named by its strings (``nDCG@10``, ``RR@10``, ``R@100``, ``AP``);
``RR@k`` is printed as ``MRR@k``. The evaluator is built so it cannot be fooled:

- a query with judgments but no results scores 0 and stays in the mean (trec_eval ``-c``);
- with ``query_ids`` (the full query set), queries without any judgment score 0 and stay in the mean
  (``unjudged="zero"``, the default) or are left out (``unjudged="skip"``, trec_eval's convention that
  published tables follow); the report says which;
- ties are broken one way for every metric, :func:`searchkit.types.sort_hits`'s (score, then doc_id, both
  descending, as trec_eval): hits are handed to ir-measures with scores derived from their rank in that order,
  so no backend can re-break a tie;
- duplicate hits (the first, best-ranked one is kept), run queries without judgments and qrels documents
  unknown to the corpus are counted in an :class:`EvalReport` and logged, never silently dropped;
- ids are strings; an int id is refused, since it has already lost its leading zeros.

>>> from searchkit.types import Hit
>>> ev = evaluate({"q1": [Hit("d2", 2.0), Hit("d1", 1.0)]}, {"q1": {"d1": 1}, "q2": {"d3": 1}}, ["RR@10"])
>>> ev.aggregate["RR@10"], ev.per_query["q2"]["RR@10"], ev.num_queries   # q2: judged, no results -> 0
(0.25, 0.0, 2)

Suites of expected scores (``eval/*.toml``) live in :mod:`searchkit.experiments.suite`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ir_measures

from searchkit.types import ConfigError, DataError, Qrels, Run, sort_hits

logger = logging.getLogger(__name__)


DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100", "AP")


UNJUDGED_MODES = ("zero", "skip")


EXAMPLES = 5


def parse_metric(metric: str) -> Any:
    """The ir-measures measure for ``metric``; an unknown or malformed name is a ConfigError."""
    try:
        measure = ir_measures.parse_measure(metric)
        measure.validate_params()  # parse_measure accepts any parameter name
        str(measure)
        return measure
    except Exception as err:  # ir-measures raises NameError, ValueError, ... for bad names
        raise ConfigError(
            f"unknown metric {metric!r} ({err}); use ir-measures names such as nDCG@10, RR@10, AP"
        ) from None


def canonical_metric(metric: str) -> str:
    """The ir-measures string of ``metric`` (``"MRR@10"`` -> ``"RR@10"``): the key used in every result."""
    return str(parse_metric(metric))


def display_name(metric: str) -> str:
    """The name users expect to read: ``RR@10`` is printed ``MRR@10``; every other metric is unchanged.

    >>> display_name("RR@10"), display_name("nDCG@10")
    ('MRR@10', 'nDCG@10')
    """
    if metric == "RR" or metric.startswith(("RR@", "RR(")):
        return "M" + metric
    return metric


def check_unique(ids: Sequence[str], what: str) -> None:
    _check_str_ids(ids, what)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dups = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        raise DataError(f"{len(dups)} duplicate {what} ids, e.g. {', '.join(dups[:EXAMPLES])}")


def _check_str_ids(ids: Iterable[Any], what: str) -> None:
    for value in ids:
        if not isinstance(value, str):
            raise DataError(f"{what} id {value!r} is a {type(value).__name__}; ids must be str (leading zeros matter)")


@dataclass(frozen=True)
class IdCount:
    """How many ids fell in one category of an :class:`EvalReport`, with up to 5 examples."""

    count: int = 0
    examples: tuple[str, ...] = ()

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdCount:
        ids = sorted(ids)
        return cls(len(ids), tuple(ids[:EXAMPLES]))


@dataclass(frozen=True)
class EvalReport:
    """What the evaluator noticed about its inputs; :meth:`lines` words each non-empty count.

    ``unjudged`` are queries of ``query_ids`` without any judgment: scored 0 (``unjudged_mode="zero"``) or
    left out (``"skip"``). ``unknown_docs`` is None unless ``corpus_ids`` was given; its examples read
    ``query_id:doc_id``, as do those of ``duplicate_hits``.
    """

    unjudged_mode: str
    unjudged: IdCount = IdCount()
    missing_from_run: IdCount = IdCount()
    run_not_in_qrels: IdCount = IdCount()
    qrels_not_in_query_ids: IdCount = IdCount()
    duplicate_hits: IdCount = IdCount()
    unknown_docs: IdCount | None = None

    def lines(self) -> list[str]:
        """One line per non-empty category, e.g. ``2 judged queries have no results (scored 0): q2, q7``."""
        return [line for _, line in self._entries()]

    def _entries(self) -> list[tuple[bool, str]]:
        """(is it a problem worth a warning, line) for each non-empty category."""
        how = "scored 0, kept in the mean" if self.unjudged_mode == "zero" else "skipped"
        entries = [
            (False, self.unjudged, f"queries have no judgments ({how}, unjudged={self.unjudged_mode!r})"),
            (True, self.missing_from_run, "judged queries have no results (scored 0)"),
            (False, self.run_not_in_qrels, "run queries are not judged and outside the query set (ignored)"),
            (True, self.qrels_not_in_query_ids, "judged queries are outside query_ids (ignored)"),
            (True, self.duplicate_hits, "duplicate hits in the run (the best-ranked one kept)"),
            (True, self.unknown_docs or IdCount(), "qrels documents are not in the corpus"),
        ]
        return [(bad, f"{ids.count} {text}: {', '.join(ids.examples)}") for bad, ids, text in entries if ids.count]


@dataclass(frozen=True)
class Evaluation:
    """Scores of one run: ``aggregate[metric]`` over ``num_queries`` queries and ``per_query[qid][metric]``.

    Metric keys are ir-measures strings (``"RR@10"``, printed ``MRR@10`` by :func:`display_name`).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    report: EvalReport


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    query_ids: Iterable[str] | None = None,
    unjudged: str = "zero",
    corpus_ids: Iterable[str] | None = None,
    log_problems: bool = True,
) -> Evaluation:
    """Score ``run`` against ``qrels`` with ir-measures.

    The query set is ``query_ids`` when given, else the judged queries of ``qrels``. Judged queries missing
    from the run score 0 and stay in the mean. Queries of ``query_ids`` without any judgment score 0
    (``unjudged="zero"``) or are left out (``"skip"``). Hits are ranked by :func:`sort_hits` before scoring.
    What is odd about the inputs (:class:`EvalReport`) is logged unless ``log_problems`` is false (a caller scoring
    many runs over the same queries logs it once).
    """
    if unjudged not in UNJUDGED_MODES:
        raise ConfigError(f"unjudged must be one of {', '.join(UNJUDGED_MODES)}, got {unjudged!r}")
    measures = {canonical_metric(metric): parse_metric(metric) for metric in metrics}
    if not measures:
        raise ConfigError("no metrics to compute")
    _check_str_ids(run, "run query")
    _check_str_ids(qrels, "qrels query")
    for docs in qrels.values():
        _check_str_ids(docs, "qrels document")

    judged = {qid for qid, docs in qrels.items() if docs}
    if query_ids is None:
        query_set = set(judged)
        known = set(judged)
        unjudged_ids: set[str] = set()
        outside: set[str] = set()
    else:
        query_set = set(query_ids)
        _check_str_ids(query_set, "query")
        known = set(query_set)
        unjudged_ids = query_set - judged
        outside = judged - query_set
        if unjudged == "skip":
            query_set -= unjudged_ids
    if not query_set:
        raise DataError("no queries to evaluate: the qrels judge none of the queries")

    scored_run, duplicates = _rank_scores(run, judged & query_set)
    unknown = None
    if corpus_ids is not None:
        corpus = set(corpus_ids)
        unknown = IdCount.of(f"{q}:{d}" for q, docs in qrels.items() for d in docs if d not in corpus)
    report = EvalReport(
        unjudged_mode=unjudged,
        unjudged=IdCount.of(unjudged_ids),
        missing_from_run=IdCount.of(q for q in judged & query_set if not run.get(q)),
        run_not_in_qrels=IdCount.of(set(run) - judged - known),
        qrels_not_in_query_ids=IdCount.of(outside),
        duplicate_hits=IdCount.of(duplicates),
        unknown_docs=unknown,
    )
    for problem, line in report._entries() if log_problems else ():
        logger.log(logging.WARNING if problem else logging.INFO, line)

    per_query = {qid: dict.fromkeys(measures, 0.0) for qid in sorted(query_set)}
    judged_qrels = {qid: dict(qrels[qid]) for qid in judged & query_set}
    names = {measure: name for name, measure in measures.items()}
    if judged_qrels:
        for metric in ir_measures.iter_calc(list(measures.values()), judged_qrels, scored_run):
            if metric.query_id in per_query:
                per_query[metric.query_id][names[metric.measure]] = float(metric.value)
    aggregate = {}
    for name, measure in measures.items():
        agg = measure.aggregator()
        for values in per_query.values():
            agg.add(values[name])
        aggregate[name] = float(agg.result())
    return Evaluation(aggregate, per_query, len(per_query), report)


def _rank_scores(run: Run, query_ids: set[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Run in sort_hits order, deduplicated, with scores n, n-1, ..., 1 so nothing can re-break a tie."""
    scored: dict[str, dict[str, float]] = {}
    duplicates = []
    for qid, hits in run.items():
        ranked: dict[str, float] = {}
        for hit in sort_hits(hits):
            if not isinstance(hit.doc_id, str):
                raise DataError(
                    f"run document id {hit.doc_id!r} (query {qid}) is {type(hit.doc_id).__name__}; ids must be str"
                )
            if hit.doc_id in ranked:
                duplicates.append(f"{qid}:{hit.doc_id}")
            else:
                ranked[hit.doc_id] = 0.0
        if qid in query_ids and ranked:
            n = len(ranked)
            scored[qid] = {doc_id: float(n - rank) for rank, doc_id in enumerate(ranked)}
    return scored, duplicates
