"""Tests for searchkit.evaluate: golden metric values, the evaluator's guarantees, run_queries, suites."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from searchkit.evaluate.metrics import DEFAULT_METRICS, Evaluation, canonical_metric, evaluate
from searchkit.evaluate.runs import run_queries
from searchkit.evaluate.tables import format_table, to_json
from searchkit.types import ConfigError, DataError, Hit, Query

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny"


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-9)


# ---------------------------------------------------------------------------------------------- golden values

# q1 judges d1 (grade 2) and d3 (grade 1); q2 judges d2; q3 judges d9 but is missing from the run.
GOLDEN_QRELS = {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}, "q3": {"d9": 1}}
GOLDEN_RUN = {
    "q1": [Hit("d3", 3.0), Hit("d2", 2.0), Hit("d1", 1.0)],  # relevant at ranks 1 (grade 1) and 3 (grade 2)
    "q2": [Hit("d1", 0.9), Hit("d2", 0.8)],  # relevant at rank 2
}
# By hand (trec_eval: linear gain = grade, discount log2(rank + 1)):
# q1: RR = 1/1 = 1
#     DCG = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
#     IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.6309298 = 2.6309298  ->  nDCG@10 = 2 / 2.6309298 = 0.7601875
#     AP = (P@1 + P@3) / 2 = (1 + 2/3) / 2 = 0.8333333;  R@100 = 2/2 = 1
# q2: RR = 1/2;  nDCG@10 = (1/log2(3)) / 1 = 0.6309298;  AP = (1/2) / 1 = 0.5;  R@100 = 1
# q3: no results -> every metric 0, and it stays in the mean (3 queries)
Q1_NDCG = 2 / (2 + 1 / math.log2(3))
Q2_NDCG = 1 / math.log2(3)


def test_golden_values_by_hand() -> None:
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS, DEFAULT_METRICS)
    assert ev.num_queries == 3
    assert ev.per_query["q1"] == {"nDCG@10": approx(Q1_NDCG), "RR@10": 1.0, "R@100": 1.0, "AP": approx(5 / 6)}
    assert ev.per_query["q2"] == {"nDCG@10": approx(Q2_NDCG), "RR@10": 0.5, "R@100": 1.0, "AP": 0.5}
    assert ev.per_query["q3"] == {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 0.0, "AP": 0.0}
    assert ev.aggregate["nDCG@10"] == approx((Q1_NDCG + Q2_NDCG) / 3)  # (0.7601875 + 0.6309298) / 3 = 0.4637058
    assert ev.aggregate["RR@10"] == approx(0.5)  # (1 + 0.5 + 0) / 3
    assert ev.aggregate["AP"] == approx(4 / 9)  # (5/6 + 1/2 + 0) / 3
    assert ev.aggregate["R@100"] == approx(2 / 3)
    assert round(ev.aggregate["nDCG@10"], 7) == 0.4637058


def test_judged_query_missing_from_run_scores_zero_and_counts() -> None:
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["RR@10"])
    assert ev.report.missing_from_run.count == 1
    assert ev.report.missing_from_run.examples == ("q3",)
    assert "q3" in ev.per_query
    # the same run without q3 in the qrels: the mean is over 2 queries instead of 3
    without = evaluate(GOLDEN_RUN, {q: d for q, d in GOLDEN_QRELS.items() if q != "q3"}, ["RR@10"])
    assert without.aggregate["RR@10"] == approx(0.75)
    assert ev.aggregate["RR@10"] == approx(0.5)
    # an empty hit list is the same as a missing entry
    empty = evaluate({**GOLDEN_RUN, "q3": []}, GOLDEN_QRELS, ["RR@10"])
    assert empty.aggregate == ev.aggregate
    assert empty.report.missing_from_run.count == 1


def test_unjudged_zero_versus_skip() -> None:
    query_ids = ["q1", "q2", "q3", "q4"]  # q4 has no judgment at all
    run = {**GOLDEN_RUN, "q4": [Hit("d1", 1.0)]}
    zero = evaluate(run, GOLDEN_QRELS, ["RR@10"], query_ids=query_ids)
    skip = evaluate(run, GOLDEN_QRELS, ["RR@10"], query_ids=query_ids, unjudged="skip")
    assert zero.num_queries == 4
    assert zero.aggregate["RR@10"] == approx(1.5 / 4)
    assert zero.per_query["q4"] == {"RR@10": 0.0}
    assert skip.num_queries == 3
    assert skip.aggregate["RR@10"] == approx(1.5 / 3)
    assert "q4" not in skip.per_query
    for ev, mode in ((zero, "zero"), (skip, "skip")):
        assert ev.report.unjudged_mode == mode
        assert ev.report.unjudged.examples == ("q4",)
        assert ev.report.run_not_in_qrels.count == 0  # q4 is in the query set: not a stray run query
    assert "scored 0" in zero.report.lines()[0]
    assert "skipped" in skip.report.lines()[0]
    with pytest.raises(ConfigError, match="unjudged"):
        evaluate(run, GOLDEN_QRELS, ["RR@10"], unjudged="ignore")


def test_query_ids_restrict_and_report() -> None:
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["RR@10"], query_ids=["q1", "q2"])
    assert ev.num_queries == 2
    assert ev.report.qrels_not_in_query_ids.examples == ("q3",)
    stray = evaluate({**GOLDEN_RUN, "x": [Hit("d1", 1.0)]}, GOLDEN_QRELS, ["RR@10"])
    assert stray.report.run_not_in_qrels.examples == ("x",)
    assert stray.aggregate == evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["RR@10"]).aggregate


def test_ties_are_broken_by_doc_id_descending() -> None:
    qrels = {"q": {"a": 1}}
    # equal scores: trec_eval's order (doc_id descending) puts "z" first, so "a" is at rank 2 -> RR 0.5,
    # whatever order the hits come in (a backend left to itself would rank "a" first here: RR 1.0)
    for hits in ([Hit("a", 1.0), Hit("z", 1.0)], [Hit("z", 1.0), Hit("a", 1.0)]):
        ev = evaluate({"q": hits}, qrels, ["RR@10", "nDCG@10", "AP"])
        assert ev.aggregate["RR@10"] == 0.5
        assert ev.aggregate["AP"] == 0.5
        assert ev.aggregate["nDCG@10"] == approx(1 / math.log2(3))
    # an unsorted run is scored in score order
    assert evaluate({"q": [Hit("z", 0.5), Hit("a", 2.0)]}, qrels, ["RR@10"]).aggregate["RR@10"] == 1.0


def test_duplicate_hits_are_reported_and_counted_once() -> None:
    run = {"q1": GOLDEN_RUN["q1"] + [Hit("d3", 0.5)], "q2": GOLDEN_RUN["q2"]}
    ev = evaluate(run, GOLDEN_QRELS)
    assert ev.report.duplicate_hits.count == 1
    assert ev.report.duplicate_hits.examples == ("q1:d3",)
    assert ev.aggregate == evaluate(GOLDEN_RUN, GOLDEN_QRELS).aggregate


def test_unknown_qrels_documents_are_reported() -> None:
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["RR@10"], corpus_ids=["d1", "d2", "d3"])
    assert ev.report.unknown_docs is not None
    assert ev.report.unknown_docs.examples == ("q3:d9",)
    assert any("not in the corpus" in line for line in ev.report.lines())
    assert evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["RR@10"]).report.unknown_docs is None


def test_ids_must_be_strings() -> None:
    with pytest.raises(DataError, match="must be str"):
        evaluate({7: [Hit("d1", 1.0)]}, {"7": {"d1": 1}}, ["RR@10"])  # type: ignore[dict-item]
    with pytest.raises(DataError, match="must be str"):
        evaluate({"q": [Hit(7, 1.0)]}, {"q": {"7": 1}}, ["RR@10"])  # type: ignore[arg-type]
    with pytest.raises(DataError, match="must be str"):
        evaluate({"q": [Hit("007", 1.0)]}, {"q": {7: 1}}, ["RR@10"])  # type: ignore[dict-item]


def test_nothing_to_evaluate_is_an_error() -> None:
    with pytest.raises(DataError, match="no queries"):
        evaluate(GOLDEN_RUN, {}, ["RR@10"])


PEER_NAMES = {
    # trec_eval
    "ndcg_cut_10": "nDCG@10",
    "ndcg_cut.10": "nDCG@10",
    "map": "AP",
    "map_cut_100": "AP@100",
    "recip_rank": "RR",
    "P_5": "P@5",
    "P.5": "P@5",
    "recall_100": "R@100",
    "success_10": "Success@10",
    "ndcg": "nDCG",
    "bpref": "Bpref",
    "Rprec": "Rprec",
    # ranx
    "mrr@10": "RR@10",
    "mrr": "RR",
    "ndcg@10": "nDCG@10",
    "recall@100": "R@100",
    "precision@5": "P@5",
    "map@100": "AP@100",
    "hit_rate@10": "Success@10",
    "r-precision": "Rprec",
    # ir-measures, and the MRR alias it knows
    "nDCG@10": "nDCG@10",
    "RR@10": "RR@10",
    "MRR@10": "RR@10",
    "R@100": "R@100",
    "P@5": "P@5",
    "AP": "AP",
}


@pytest.mark.parametrize(("name", "canonical"), sorted(PEER_NAMES.items()))
def test_peer_metric_names_are_one_metric(name: str, canonical: str) -> None:
    assert canonical_metric(name) == canonical
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS, [name])
    assert set(ev.aggregate) == {canonical}
    assert ev.aggregate == evaluate(GOLDEN_RUN, GOLDEN_QRELS, [canonical]).aggregate


def test_ranx_spellings_score_what_ranx_scores() -> None:
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import evaluate as ranx_evaluate

    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}}
    run = {"q1": [Hit("d2", 3.0), Hit("d1", 2.0), Hit("d3", 1.0)], "q2": [Hit("d1", 2.0), Hit("d2", 1.0)]}
    names = ["ndcg@10", "mrr@10", "map@100", "recall@2", "precision@2", "hit_rate@1", "r-precision"]
    theirs = ranx_evaluate(
        RanxQrels(qrels),
        RanxRun({q: {h.doc_id: h.score for h in hits} for q, hits in run.items()}),
        names,
    )
    ours = evaluate(run, qrels, names).aggregate
    assert [ours[canonical_metric(n)] for n in names] == pytest.approx([theirs[n] for n in names])


def test_a_trec_eval_name_for_several_metrics_is_refused() -> None:
    with pytest.raises(ConfigError, match="trec_eval's name for 9 metrics"):
        evaluate(GOLDEN_RUN, GOLDEN_QRELS, ["P"])


def test_ties_follow_trec_eval_not_ir_measures_default() -> None:
    """The tie rule written in `searchkit score --help` and the README, with its example."""
    import ir_measures

    run = {"q": [Hit("d1", 1.0), Hit("d2", 1.0), Hit("d3", 1.0)]}
    qrels = {"q": {"d1": 1}}
    assert evaluate(run, qrels, ["RR@10"]).aggregate["RR@10"] == pytest.approx(1 / 3)  # ranked d3, d2, d1
    scores = {"q": {hit.doc_id: hit.score for hit in run["q"]}}
    assert ir_measures.calc_aggregate([ir_measures.RR @ 10], qrels, scores)[ir_measures.RR @ 10] == 1.0
    assert ir_measures.pytrec_eval.calc_aggregate([ir_measures.RR @ 10], qrels, scores)[
        ir_measures.RR @ 10
    ] == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ["FOO@10", "nDCG@x", "", "nDCG(junk=1)@10"])
def test_unknown_metric_is_a_config_error(metric: str) -> None:
    with pytest.raises(ConfigError, match="metric"):
        evaluate(GOLDEN_RUN, GOLDEN_QRELS, [metric])


def test_format_table_and_json() -> None:
    ev = evaluate(GOLDEN_RUN, GOLDEN_QRELS)
    table = format_table({"toy": ev, "other": {"nDCG@10": 0.5}}, DEFAULT_METRICS)
    lines = table.splitlines()
    assert lines[0].split() == ["run", "nDCG@10", "RR@10", "R@100", "AP"]
    assert lines[2].split() == ["toy", "0.4637", "0.5000", "0.6667", "0.4444"]
    assert lines[3].split() == ["other", "0.5000", "-", "-", "-"]
    assert format_table([("toy", ev.aggregate)], ["RR@10"]).splitlines()[2].split() == ["toy", "0.5000"]
    data = json.loads(to_json(ev))
    assert data["aggregate"]["RR@10"] == 0.5
    assert data["report"]["missing_from_run"] == {"count": 1, "examples": ["q3"]}
    assert Evaluation(**{**data, "report": ev.report}).aggregate == ev.aggregate


# --------------------------------------------------------------------------------------------- run_queries


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> object:
    from searchkit.index import Index

    return Index.build(TINY, tmp_path_factory.mktemp("evaluate") / "tiny")


def test_run_queries_with_bm25(tiny_index: object) -> None:
    from searchkit.formats import read_queries

    retriever = tiny_index.bm25  # type: ignore[attr-defined]
    queries = read_queries(TINY)
    run = run_queries(retriever, queries, k=2)
    assert list(run) == ["q1", "q2", "q3", "q4", "q5"]  # every query, in order
    assert run["q3"] == []  # all stopwords: no hits, still an entry
    assert [hit.doc_id for hit in run["q1"]] == ["d1", "d5"]
    assert all(len(hits) <= 2 for hits in run.values())
    assert run_queries(retriever, queries, k=2, batch_size=2) == run
    assert run == dict(
        zip([q.query_id for q in queries], retriever.search_batch([q.text for q in queries], 2), strict=True)
    )


def test_run_queries_exclude_self(tiny_index: object) -> None:
    retriever = tiny_index.bm25  # type: ignore[attr-defined]
    queries = [Query("d1", "cats chasing mice"), Query("q", "cats chasing mice")]
    plain = run_queries(retriever, queries, k=1)
    assert [hit.doc_id for hit in plain["d1"]] == ["d1"]
    run = run_queries(retriever, queries, k=1, exclude_self=True)
    assert [hit.doc_id for hit in run["d1"]] == ["d5"]  # its own id dropped, the next one fills k
    assert run["q"] == plain["q"]  # a query that is not a document is untouched


def test_run_queries_checks_inputs(tiny_index: object) -> None:
    retriever = tiny_index.bm25  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="duplicate query ids"):
        run_queries(retriever, [Query("a", "x"), Query("a", "y")])
    with pytest.raises(ConfigError):
        run_queries(retriever, [Query("a", "x")], k=0)
    assert run_queries(retriever, []) == {}
