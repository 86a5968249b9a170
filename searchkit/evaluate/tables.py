"""Tables for people and JSON for machines: evaluation results as aligned text.

A metric has one name everywhere, its ir-measures string (``RR@10``, ``nDCG@10``), in tables and JSON alike, however
it was asked for (``mrr@10``, ``recip_rank``, ``MRR@10``: :func:`searchkit.evaluate.metrics.canonical_metric`). A
table that compares systems against a baseline (:func:`format_comparison`) gives each metric a p-value column
(:mod:`searchkit.evaluate.significance`).

>>> print(format_table([("bm25", {"nDCG@10": 0.5, "RR@10": 0.25})], ["ndcg_cut_10", "mrr@10"]))
run   nDCG@10   RR@10
----  -------  ------
bm25   0.5000  0.2500
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from searchkit.evaluate.metrics import Evaluation, canonical_metric
from searchkit.evaluate.significance import Significance

TableRows = Mapping[str, "Evaluation | Mapping[str, float]"] | Sequence[tuple[str, "Evaluation | Mapping[str, float]"]]


def format_table(
    rows: TableRows, metrics: Sequence[str], p_values: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """A plain-text table: one row per named run, one column per metric (ir-measures names, 4 decimals).

    ``rows``: ``{name: Evaluation or aggregate dict}`` or a list of ``(name, ...)`` pairs. With ``p_values``
    (``{name: {metric: p}}``, e.g. :class:`~searchkit.evaluate.significance.Significance`'s ``p``) a ``p`` column
    follows each metric; a row without one shows ``-``.

    >>> print(format_table([("bm25", {"nDCG@10": 0.68, "RR@10": 0.64})], ["nDCG@10", "RR@10"]))
    run   nDCG@10   RR@10
    ----  -------  ------
    bm25   0.6800  0.6400
    """
    keys = [canonical_metric(metric) for metric in metrics]
    header = ["run"]
    for key in keys:
        header += [key, "p"] if p_values is not None else [key]
    body = []
    for name, row in rows.items() if isinstance(rows, Mapping) else rows:
        values = row.aggregate if isinstance(row, Evaluation) else row
        cells = [name]
        for key in keys:
            cells.append(format_score(values.get(key)))
            if p_values is not None:
                cells.append(format_p(p_values.get(name, {}).get(key)))
        body.append(cells)
    return render_table([header, *body])


def format_comparison(evaluations: Mapping[str, Evaluation], metrics: Sequence[str], significance: Significance) -> str:
    """:func:`format_table` with a p-value column after each metric (``significance.p``, against its baseline,
    whose row says ``(baseline)``), and a last line saying which test and correction gave them.

    >>> from searchkit.evaluate.metrics import evaluate
    >>> from searchkit.evaluate.significance import compare_to_baseline
    >>> from searchkit.types import Hit
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    >>> good = {q: [Hit(f"d{q[1]}", 1.0)] for q in qrels}
    >>> bad = {q: [Hit("d9", 2.0), Hit(f"d{q[1]}", 1.0)] for q in qrels}
    >>> runs = {"bad": evaluate(bad, qrels, ["RR@10"]), "good": evaluate(good, qrels, ["RR@10"])}
    >>> print(format_comparison(runs, ["RR@10"], compare_to_baseline(runs, "bad", ["RR@10"], "permutation")))
    run              RR@10       p
    --------------  ------  ------
    bad (baseline)  0.5000       -
    good            1.0000  0.2500
    p: two-sided paired randomization test (10000 sign flips at most, seed 42) against bad over 3 queries, \
Holm-corrected across the 1 other run per metric
    """
    rows = [(f"{name} (baseline)" if name == significance.baseline else name, ev) for name, ev in evaluations.items()]
    return format_table(rows, metrics, significance.p) + "\n" + significance.describe()


def format_score(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def format_p(value: float | None) -> str:
    """A p-value in a table: 4 decimals, ``<0.0001`` below that, ``-`` for none.

    >>> format_p(0.03125), format_p(1e-7), format_p(None)
    ('0.0312', '<0.0001', '-')
    """
    if value is None or math.isnan(value):
        return "-"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


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
