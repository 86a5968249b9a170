"""Evaluation: runs of queries through any retriever, metrics by ir-measures, tables, and rerank reports.

:mod:`~searchkit.evaluate.runs` (``run_queries``), :mod:`~searchkit.evaluate.metrics` (``evaluate``: every metric by
ir-measures, never by hand), :mod:`~searchkit.evaluate.tables` (human tables and JSON),
:mod:`~searchkit.evaluate.rerank_report` (a reranker against the ranking it was given),
:mod:`~searchkit.evaluate.significance` (paired tests against a baseline, Holm-corrected).

>>> from searchkit.evaluate import evaluate
>>> evaluate({"q1": []}, {"q1": {"d1": 1}}, ["nDCG@10"]).aggregate["nDCG@10"]
0.0
"""

from searchkit.evaluate.metrics import DEFAULT_METRICS, Evaluation, evaluate, parse_metric
from searchkit.evaluate.runs import run_queries

__all__ = ["DEFAULT_METRICS", "Evaluation", "evaluate", "parse_metric", "run_queries"]
