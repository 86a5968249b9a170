"""Tables for people and JSON for machines: evaluation results as aligned text.

A metric has one name everywhere, its ir-measures string (``RR@10``, ``nDCG@10``), in tables and JSON alike, however
it was asked for (``mrr@10``, ``recip_rank``, ``MRR@10``: :func:`searchkit.evaluate.metrics.canonical_metric`).

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

TableRows = Mapping[str, "Evaluation | Mapping[str, float]"] | Sequence[tuple[str, "Evaluation | Mapping[str, float]"]]


def format_table(rows: TableRows, metrics: Sequence[str]) -> str:
    """A plain-text table: one row per named run, one column per metric (ir-measures names, 4 decimals).

    ``rows``: ``{name: Evaluation or aggregate dict}`` or a list of ``(name, ...)`` pairs.

    >>> print(format_table([("bm25", {"nDCG@10": 0.68, "RR@10": 0.64})], ["nDCG@10", "RR@10"]))
    run   nDCG@10   RR@10
    ----  -------  ------
    bm25   0.6800  0.6400
    """
    keys = [canonical_metric(metric) for metric in metrics]
    header = ["run", *keys]
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
