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

Suites of expected scores (``eval/*.toml``) live in :mod:`searchkit.suite`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures

from searchkit.types import ConfigError, DataError, Hit, Qrels, Query, Retriever, Run, sort_hits

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100", "AP")
UNJUDGED_MODES = ("zero", "skip")
_EXAMPLES = 5


# ---------------------------------------------------------------------------------------------- metrics


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


# ----------------------------------------------------------------------------------------- running queries


def run_queries(
    retriever: Retriever,
    queries: Sequence[Query],
    k: int = 100,
    *,
    batch_size: int = 256,
    show_progress: bool = False,
    exclude_self: bool = False,
) -> Run:
    """Search every query with ``retriever.search_batch``, in batches; every query gets an entry (maybe []).

    ``exclude_self`` drops a query's own id from its results (collections whose queries are documents):
    ``k + 1`` hits are retrieved, the query's id removed, and at most ``k`` kept.
    """
    batches = query_batches(queries, k, batch_size)
    depth = k + 1 if exclude_self else k
    run: Run = {}
    steps: Iterable[tuple[int, int]] = batches
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(batches, desc="queries", unit="batch")
    for start, end in steps:
        batch = queries[start:end]
        results = retriever.search_batch([query.text for query in batch], depth)
        collect_batch(run, batch, results, k, exclude_self, type(retriever).__name__)
    return run


def query_batches(queries: Sequence[Query], k: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, end) query batches of a run, after checking ``k``, ``batch_size`` and the query ids."""
    if k <= 0 or batch_size <= 0:
        raise ConfigError(f"k and batch_size must be > 0, got k={k}, batch_size={batch_size}")
    _check_unique([query.query_id for query in queries], "query")
    return [(start, min(start + batch_size, len(queries))) for start in range(0, len(queries), batch_size)]


def collect_batch(
    run: Run, batch: Sequence[Query], results: Sequence[Sequence[Hit]], k: int, exclude_self: bool, source: str
) -> None:
    """Put one batch's hit lists into ``run`` (the query's own id dropped when ``exclude_self``, ``k`` kept)."""
    if len(results) != len(batch):
        raise DataError(f"{source}.search_batch gave {len(results)} lists for {len(batch)} queries")
    for query, hits in zip(batch, results, strict=True):
        if exclude_self:
            hits = [hit for hit in hits if hit.doc_id != query.query_id]
        run[query.query_id] = list(hits[:k])


def _check_unique(ids: Sequence[str], what: str) -> None:
    _check_str_ids(ids, what)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dups = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        raise DataError(f"{len(dups)} duplicate {what} ids, e.g. {', '.join(dups[:_EXAMPLES])}")


def _check_str_ids(ids: Iterable[Any], what: str) -> None:
    for value in ids:
        if not isinstance(value, str):
            raise DataError(f"{what} id {value!r} is a {type(value).__name__}; ids must be str (leading zeros matter)")


# -------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class IdCount:
    """How many ids fell in one category of an :class:`EvalReport`, with up to 5 examples."""

    count: int = 0
    examples: tuple[str, ...] = ()

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdCount:
        ids = sorted(ids)
        return cls(len(ids), tuple(ids[:_EXAMPLES]))


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
) -> Evaluation:
    """Score ``run`` against ``qrels`` with ir-measures.

    The query set is ``query_ids`` when given, else the judged queries of ``qrels``. Judged queries missing
    from the run score 0 and stay in the mean. Queries of ``query_ids`` without any judgment score 0
    (``unjudged="zero"``) or are left out (``"skip"``). Hits are ranked by :func:`sort_hits` before scoring.
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
    for problem, line in report._entries():
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


# ---------------------------------------------------------------------------------------------- reranking


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

    ``heads[i]``: query ``query_ids[i]``'s first-stage candidates (the reranked top, best first); ``scores[i]``:
    the reranker's logits for them; ``fusion``: a :class:`searchkit.config.LearnedFusion` (or None) applied with
    ``stages[i]`` (that query's BM25/dense rankings) as :func:`searchkit.fusion.fuse` does. ``all_query_ids`` and
    ``unjudged`` are passed to :func:`evaluate`. Each run holds the candidates only, so metrics below ``depth``
    are the reranked top's.

    >>> from searchkit.types import Hit
    >>> from searchkit.config import LearnedFusion
    >>> heads = [[Hit("a", 2.0), Hit("b", 1.0)]]
    >>> ev = rerank_evaluation(["q"], heads, [[0.0, 5.0]], {"q": {"b": 1}}, ["RR@10"],
    ...                        fusion=LearnedFusion({"reranker": 0.4, "first_stage": 0.6}))
    >>> ev.first_stage, ev.reranker, ev.fused
    ({'R@2': 1.0, 'RR@10': 0.5}, {'R@2': 1.0, 'RR@10': 1.0}, {'R@2': 1.0, 'RR@10': 0.5})
    """
    import numpy as np

    from searchkit.fusion import fuse, reranker_only, stage_features
    from searchkit.types import Hit

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


# ------------------------------------------------------------------------------------- tables and JSON


TableRows = Mapping[str, "Evaluation | Mapping[str, float]"] | Sequence[tuple[str, "Evaluation | Mapping[str, float]"]]


def format_table(rows: TableRows, metrics: Sequence[str]) -> str:
    """A plain-text table: one row per named run, one column per metric (display names, 4 decimals).

    ``rows``: ``{name: Evaluation or aggregate dict}`` or a list of ``(name, ...)`` pairs.

    >>> print(format_table([("bm25", {"nDCG@10": 0.68, "RR@10": 0.64})], ["nDCG@10", "RR@10"]))
    run   nDCG@10  MRR@10
    ----  -------  ------
    bm25   0.6800  0.6400
    """
    keys = [canonical_metric(metric) for metric in metrics]
    header = ["run", *(display_name(key) for key in keys)]
    body = []
    for name, row in rows.items() if isinstance(rows, Mapping) else rows:
        values = row.aggregate if isinstance(row, Evaluation) else row
        body.append([name, *(format_score(values.get(key)) for key in keys)])
    return render_table([header, *body])


def format_score(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def render_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def evaluation_to_dict(evaluation: Evaluation, *, per_query: bool = True) -> dict[str, Any]:
    """JSON-ready dict of an Evaluation (``per_query`` can be left out for short output)."""
    out = dataclasses.asdict(evaluation)
    if not per_query:
        del out["per_query"]
    return out


def to_json(obj: Any) -> str:
    """JSON text of an Evaluation, SuiteResult or plain data (dataclasses and paths converted)."""

    def default(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

    return json.dumps(obj, default=default, indent=2, sort_keys=True, allow_nan=False)
