"""From clicks to training pairs: the feedback log's impressions and clicks as labelled, weighted pairs
(``searchkit feedback export``, or a recipe's ``feedback_log``).

For each impression with at least one click (a session without one says nothing about which result was good):

- every clicked result is a positive (label 1) weighing ``1 / p(rank)``, its rank's inverse examination propensity
  (:mod:`searchkit.training.propensity`, estimated from the same log's swaps, or the prior), at most ``clip``
  (a few clicks at deep ranks would otherwise dominate the loss; the clip is recorded);
- every result shown above the last click and not clicked is a negative (label 0) weighing 1: it was examined
  (the person read past it to click below it) and skipped;
- results below the last click are not used: they may never have been looked at.

Clicks of one query and document are summed: a row per (query, document, label) whose weight is the sum of its
events' weights (so a listwise group, weighed by its positive, counts each click once, as a per-click loss would).
``naive`` drops the propensities: every click weighs 1 (the biased estimator, for comparison). Queries stored
hashed cannot be trained on and are skipped with a log line; a click on a document the impression did not show is
dropped, counted.

The export's record (``FeedbackPairs.record``: the window, counts, clip and propensities) goes into the sidecar
``pairs.tsv.json`` beside the TSV and into a trained model's card.

>>> import tempfile, pathlib
>>> from searchkit.formats import Feedback, FeedbackLog, Impression
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.sqlite"
>>> with FeedbackLog(path) as log:
...     log.append_impressions([Impression("r1", 10.0, "cats", "bm25", ("d1", "d2", "d3", "d4"), 0, "", "")])
...     log.append_feedback([Feedback("r1", 11.0, "d3", 3, "click")])
>>> export = feedback_pairs(path, clip=10.0)
>>> [(p.doc, p.label, round(p.weight, 3)) for p in export.pairs]
[('d3', 1, 1.417), ('d1', 0, 1.0), ('d2', 0, 1.0)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchkit.config import FEEDBACK_CLIP
from searchkit.formats import FeedbackLog, LabelledPair, write_json_atomic, write_pairs
from searchkit.training.propensity import MIN_SWAPS, Propensities, estimate_propensities
from searchkit.types import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_CLIP = FEEDBACK_CLIP  # the one default, beside the other settings in searchkit.config


@dataclass(frozen=True)
class FeedbackPairs:
    """An export: the pairs (TSV order: by query as first seen, positives first) and what made them."""

    pairs: list[LabelledPair]
    record: dict[str, Any]


def feedback_pairs(
    log_path: str | Path,
    *,
    naive: bool = False,
    clip: float | None = DEFAULT_CLIP,
    since: float | None = None,
    until: float | None = None,
    propensities: Propensities | None = None,
    min_swaps: int = MIN_SWAPS,
    seed: int = 0,
) -> FeedbackPairs:
    """The labelled pairs of the log's impressions with ``since <= time < until`` (Unix seconds); see the module
    docstring. ``propensities``: given, or estimated from the same window (``min_swaps``, ``seed``: see
    :func:`searchkit.training.propensity.estimate_propensities`). Raises DataError when no impression in the window
    has a click."""
    if clip is not None and clip < 1:
        raise ConfigError(f"clip must be >= 1 (a weight 1 / p is at least 1), got {clip}")
    with FeedbackLog(log_path, readonly=True) as log:
        impressions = list(log.impressions(since, until))
        wanted = {impression.request_id for impression in impressions}
        events = [event for event in log.feedback(since) if event.request_id in wanted]
    clicks = [event for event in events if event.kind == "click"]
    depth = max((len(impression.doc_ids) for impression in impressions), default=1)
    if propensities is None and not naive:
        propensities = estimate_propensities(impressions, clicks, depth=max(depth, 1), min_swaps=min_swaps, seed=seed)
    clicked: dict[str, set[str]] = {}
    for event in clicks:
        clicked.setdefault(event.request_id, set()).add(event.doc_id)
    weights: dict[tuple[str, str, int], float] = {}  # (query, doc, label) -> summed weight, in first-seen order
    hashed = stray = used = positive_events = negative_events = 0
    for impression in impressions:
        hits = clicked.get(impression.request_id)
        if not hits:
            continue
        if impression.query_hashed:
            hashed += 1
            continue
        ranks = {doc: rank for rank, doc in enumerate(impression.doc_ids, start=1)}
        stray += len(hits - ranks.keys())
        shown_hits = [doc for doc in impression.doc_ids if doc in hits]
        if not shown_hits:
            continue
        used += 1
        last = ranks[shown_hits[-1]]
        for doc in impression.doc_ids[:last]:
            if doc in hits:
                weight = 1.0 if propensities is None else propensities.weight(ranks[doc], clip)
                key, positive_events = (impression.query, doc, 1), positive_events + 1
            else:
                weight, key, negative_events = 1.0, (impression.query, doc, 0), negative_events + 1
            weights[key] = weights.get(key, 0.0) + weight
    if hashed:
        logger.warning("%d clicked impressions have hashed queries and are not used (no text to train on)", hashed)
    if stray:
        logger.warning("%d clicks name a document their impression did not show and are dropped", stray)
    if not weights:
        raise DataError("no impression with a click on a shown result in this window: nothing to export", log_path)
    by_query: dict[str, list[tuple[str, int, float]]] = {}
    for (query, doc, label), weight in weights.items():
        by_query.setdefault(query, []).append((doc, label, weight))
    pairs: list[LabelledPair] = []
    for query, rows in by_query.items():
        for doc, label, weight in sorted(rows, key=lambda row: -row[1]):  # stable: positives first, in seen order
            pairs.append(LabelledPair(query, doc, label, weight, True, len(pairs) + 2))
    times = [impression.time for impression in impressions]
    record = {
        "feedback_log": str(log_path),
        "window": {"since": since, "until": until, "first": min(times), "last": max(times)},
        "counts": {
            "impressions": len(impressions),
            "clicked_impressions": used,
            "hashed_skipped": hashed,
            "clicks": len(clicks),
            "stray_clicks": stray,
            "positive_events": positive_events,
            "negative_events": negative_events,
            "queries": len(by_query),
            "positives": sum(p.label > 0 for p in pairs),
            "negatives": sum(p.label == 0 for p in pairs),
        },
        "naive": naive,
        "clip": None if naive else clip,
        "propensities": None if propensities is None else propensities.to_dict(),
    }
    return FeedbackPairs(pairs, record)


def export_feedback(log_path: str | Path, output: str | Path, **options: Any) -> FeedbackPairs:
    """Write :func:`feedback_pairs` to ``output`` (the TSV ``searchkit train`` reads as ``pairs``, weighting
    ``column``) and its record to ``output + ".json"``; ``options`` are :func:`feedback_pairs`'.

    >>> import tempfile, pathlib, json
    >>> from searchkit.formats import Feedback, FeedbackLog, Impression
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with FeedbackLog(folder / "log.sqlite") as log:
    ...     log.append_impressions([Impression("r1", 10.0, "cats", "bm25", ("d1", "d2"), 0, "", "")])
    ...     log.append_feedback([Feedback("r1", 11.0, "d2", 2, "click")])
    >>> export = export_feedback(folder / "log.sqlite", folder / "pairs.tsv", naive=True)
    >>> (folder / "pairs.tsv").read_text().splitlines()
    ['query\\tdoc\\tlabel\\tweight', 'cats\\td2\\t1\\t1', 'cats\\td1\\t0\\t1']
    >>> json.loads((folder / "pairs.tsv.json").read_text())["counts"]["positives"]
    1
    """
    export = feedback_pairs(log_path, **options)
    target = Path(output)
    write_pairs(target, export.pairs)
    write_json_atomic(target.with_name(target.name + ".json"), export.record)
    logger.info(
        "%d pairs (%d positives) of %d queries written to %s",
        len(export.pairs),
        export.record["counts"]["positives"],
        export.record["counts"]["queries"],
        target,
    )
    return export
