"""Evaluation: run queries through any retriever, score runs with ir-measures, and run expected-score suites.

Every metric is computed by ir-measures and named by its strings (``nDCG@10``, ``RR@10``, ``R@100``, ``AP``), in
tables and JSON alike; trec_eval's and ranx's spellings (``ndcg_cut_10``, ``recip_rank``, ``map``, ``mrr@10``) are
accepted and read as those (:func:`parse_metric`). The evaluator is built so it cannot be fooled:

- a query with judgments but no results scores 0 and stays in the mean (trec_eval ``-c``);
- with ``query_ids`` (the full query set), queries without any judgment score 0 and stay in the mean
  (``unjudged="zero"``, the default) or are left out (``unjudged="skip"``, trec_eval's convention that
  published tables follow); the report says which;
- ties are broken one way for every metric, :func:`searchkit.types.sort_hits`'s (score, then doc_id, both
  descending, as trec_eval): hits are handed to ir-measures with scores derived from their rank in that order,
  so no backend can re-break a tie. ir-measures' own default differs on ties: it computes ``RR`` with its
  ``msmarco`` provider, which keeps tied hits in the order given, so a query whose three hits ``d1, d2, d3`` all
  score 1.0 with ``d1`` relevant gets RR@10 1/3 here (trec_eval ranks ``d3, d2, d1``) and 1.0 from
  ``ir_measures.calc_aggregate``;
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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ir_measures

from searchkit.types import ConfigError, DataError, Qrels, Run, sort_hits

logger = logging.getLogger(__name__)


DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100", "AP")


UNJUDGED_MODES = ("zero", "skip")


EXAMPLES = 5


RANX_NAMES = {
    "ndcg": "nDCG",
    "mrr": "RR",
    "rr": "RR",
    "map": "AP",
    "ap": "AP",
    "recall": "R",
    "r": "R",
    "precision": "P",
    "p": "P",
    "hit_rate": "Success",
    "success": "Success",
    "r-precision": "Rprec",
    "rprec": "Rprec",
    "bpref": "Bpref",
}
"""ranx's metric spellings (and lower-case ir-measures ones) -> ir-measures names; ``@k`` carries over as the cutoff."""


_RANX_NAME = re.compile(r"(?P<name>[a-z_-]+)(?:@(?P<cutoff>\d+))?")


def parse_metric(metric: str) -> Any:
    """The ir-measures measure for ``metric`` in any peer's spelling, by one parser: ir-measures' own names
    (``nDCG@10``, ``RR@10``, ``MRR@10``, ``R@100``, ``P@5``, ``AP``), trec_eval's (``ndcg_cut_10``, ``ndcg_cut.10``,
    ``map``, ``recip_rank``, ``P_5``, ``recall_100``, ``success_10``; through ``ir_measures.parse_trec_measure``) and
    ranx's (``ndcg@10``, ``mrr@10``, ``map@100``, ``recall@100``, ``precision@5``, ``hit_rate@10``,
    ``r-precision``). An unknown or malformed name, or a trec_eval name that stands for several metrics (``P``), is
    a ConfigError.

    >>> [str(parse_metric(m)) for m in ["ndcg_cut_10", "map", "recip_rank", "mrr@10", "recall@100", "P_5"]]
    ['nDCG@10', 'AP', 'RR', 'RR@10', 'R@100', 'P@5']
    """
    text = metric.strip()
    try:
        return _checked(ir_measures.parse_measure(text))
    except Exception as err:  # ir-measures raises NameError, ValueError, ... for bad names
        reason = str(err)
    try:
        trec = ir_measures.parse_trec_measure(text)
    except Exception:  # not a trec_eval name either
        trec = None
    if trec is not None and len(trec) > 1:
        names = ", ".join(str(m) for m in trec)
        raise ConfigError(f"metric {metric!r} is trec_eval's name for {len(trec)} metrics ({names}); give one")
    if trec:
        return _checked(trec[0])
    ranx = _RANX_NAME.fullmatch(text.lower())
    if ranx and ranx["name"] in RANX_NAMES:
        cutoff = f"@{ranx['cutoff']}" if ranx["cutoff"] else ""
        return _checked(ir_measures.parse_measure(RANX_NAMES[ranx["name"]] + cutoff))
    raise ConfigError(
        f"unknown metric {metric!r} ({reason}); use ir-measures (nDCG@10, RR@10, AP), trec_eval (ndcg_cut_10, "
        "recip_rank, map) or ranx (ndcg@10, mrr@10, map) names"
    )


def _checked(measure: Any) -> Any:
    try:
        measure.validate_params()  # parse_measure accepts any parameter name
        str(measure)
    except Exception as err:
        raise ConfigError(
            f"unknown metric {measure!r} ({err}); use ir-measures names such as nDCG@10, RR@10, AP"
        ) from None
    return measure


def canonical_metric(metric: str) -> str:
    """The ir-measures string of ``metric`` (``"MRR@10"``, ``"recip_rank"`` -> ``"RR@10"``, ``"RR"``): the one name
    of a metric in every table, JSON file and result key.

    >>> canonical_metric("mrr@10"), canonical_metric("ndcg_cut.10"), canonical_metric("MRR@10")
    ('RR@10', 'nDCG@10', 'RR@10')
    """
    return str(parse_metric(metric))


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

    Metric keys are ir-measures strings (``"RR@10"``), the names tables print too.
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
