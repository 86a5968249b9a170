"""The server's Prometheus metrics, in a registry of their own (one per app, so tests and embedders can make several).

Names: ``searchkit_requests_total`` and ``searchkit_request_errors_total`` (by route and status),
``searchkit_request_seconds`` (by route), ``searchkit_stage_seconds`` (by stage: queue, first_stage, rerank,
documents), ``searchkit_batch_size``, ``searchkit_queue_depth``, ``searchkit_reloads_total`` (by result), and the
info gauges ``searchkit_index_info`` (path, fingerprint, generation, documents, components),
``searchkit_model_info`` (role, name) and ``searchkit_model_version_info`` (the reranker's fingerprint). With a
feedback log (:mod:`searchkit.serve.feedback`), per model version (``model``: the reranker's fingerprint, ``none``
without one), since the server started: ``searchkit_feedback_impressions_total``,
``searchkit_feedback_clicks_total``, ``searchkit_click_through_rate`` (clicks per impression),
``searchkit_click_reciprocal_rank`` (the mean over impressions of 1 / the rank of their first click, 0 for one
without a click), ``searchkit_abandonment_rate`` (the share of impressions without a click), and
``searchkit_feedback_unlogged_total`` (impressions the writer could not take: queue full or a failed write).

>>> metrics = ServeMetrics()
>>> metrics.request("/search", 200, 0.004)
>>> b'searchkit_requests_total{route="/search",status="200"} 1.0' in metrics.render()[0]
True
>>> metrics.impression("m1"); metrics.impression("m1"); metrics.click("m1", rank=2, first=True)
>>> b'searchkit_click_reciprocal_rank{model="m1"} 0.25' in metrics.render()[0]
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# from 0.5 ms (a BM25 query) to 30 s (a deep rerank on a CPU)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Counters, histograms and gauges of one app, and their Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "searchkit_requests", "Requests answered, by route and status.", ["route", "status"], registry=registry
        )
        self.errors = Counter(
            "searchkit_request_errors",
            "Requests answered with a 4xx or 5xx status, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "searchkit_request_seconds",
            "Time from the request to its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stages = Histogram(
            "searchkit_stage_seconds",
            "Time in each stage: queue (a query waiting to be batched), first_stage and rerank (per Searcher call, "
            "a batch of queries), documents (reading the requested fields).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "searchkit_batch_size", "Queries per batched Searcher call.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.queue_depth = Gauge("searchkit_queue_depth", "Queries waiting to be batched.", registry=registry)
        self.reloads = Counter(
            "searchkit_reloads", "Index reloads (hot swaps), by result.", ["result"], registry=registry
        )
        self.index_info = Gauge(
            "searchkit_index_info",
            "The index generation being served (value 1).",
            ["path", "fingerprint", "generation", "num_docs", "components"],
            registry=registry,
        )
        self.model_info = Gauge(
            "searchkit_model_info", "Models in use (value 1), by role.", ["role", "name"], registry=registry
        )
        self.model_version = Gauge(
            "searchkit_model_version_info",
            "The reranker served (value 1): its fingerprint, the ``model`` label of the feedback metrics.",
            ["model", "name"],
            registry=registry,
        )
        self.unlogged = Counter(
            "searchkit_feedback_unlogged",
            "Impressions not written to the feedback log (its queue full, or a failed write).",
            registry=registry,
        )
        self.feedback = FeedbackCollector()
        registry.register(self.feedback)

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (and its error, for a 4xx or 5xx) and observe its latency."""
        code = str(status)
        self.requests.labels(route, code).inc()
        if status >= 400:
            self.errors.labels(route, code).inc()
        self.latency.labels(route).observe(seconds)

    def stage(self, name: str, seconds: float) -> None:
        self.stages.labels(name).observe(seconds)

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from ``depth`` at every scrape."""
        self.queue_depth.set_function(depth)

    def served(self, path: str, fingerprint: str, generation: int, num_docs: int, components: list[str]) -> None:
        """Describe the index generation now served (the previous one's series is dropped)."""
        self.index_info.clear()
        self.index_info.labels(path, fingerprint, str(generation), str(num_docs), ",".join(components)).set(1)

    def models(self, names: Mapping[str, str | None], version: str = "") -> None:
        """Describe the models now served; ``version``: the reranker's fingerprint ("": none)."""
        self.model_info.clear()
        for role, name in names.items():
            if name is not None:
                self.model_info.labels(role, name).set(1)
        self.model_version.clear()
        self.model_version.labels(version or "none", names.get("reranker") or "").set(1)

    def impression(self, model: str) -> None:
        """Count one logged impression of model version ``model`` ("" : no reranker)."""
        self.feedback.impression(model)

    def click(self, model: str, rank: int, first: bool) -> None:
        """Count one click at ``rank`` on an impression of ``model``; ``first``: its impression's first click."""
        self.feedback.click(model, rank, first)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class FeedbackCollector:
    """Click-through, reciprocal rank of first clicks and abandonment per model version, computed at each scrape
    from the counts (a custom collector: the ratios are exposed as gauges beside the counters they come from)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # model -> [impressions, clicks, clicked impressions, sum of 1 / first-click rank]
        self._counts: dict[str, list[float]] = {}

    def impression(self, model: str) -> None:
        with self._lock:
            self._counts.setdefault(model or "none", [0, 0, 0, 0.0])[0] += 1

    def click(self, model: str, rank: int, first: bool) -> None:
        with self._lock:
            counts = self._counts.setdefault(model or "none", [0, 0, 0, 0.0])
            counts[1] += 1
            if first:
                counts[2] += 1
                counts[3] += 1.0 / rank

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = {model: list(values) for model, values in self._counts.items()}
        labels = ["model"]
        impressions = CounterMetricFamily(
            "searchkit_feedback_impressions", "Impressions logged, by model version.", labels=labels
        )
        clicks = CounterMetricFamily("searchkit_feedback_clicks", "Clicks recorded, by model version.", labels=labels)
        ctr = GaugeMetricFamily(
            "searchkit_click_through_rate", "Clicks per impression, by model version.", labels=labels
        )
        mrr = GaugeMetricFamily(
            "searchkit_click_reciprocal_rank",
            "Mean over impressions of 1 / the rank of their first click (0 without a click), by model version.",
            labels=labels,
        )
        abandonment = GaugeMetricFamily(
            "searchkit_abandonment_rate", "Share of impressions without a click, by model version.", labels=labels
        )
        for model, (shown, clicked, with_click, reciprocal) in sorted(counts.items()):
            impressions.add_metric([model], shown)
            clicks.add_metric([model], clicked)
            if shown:
                ctr.add_metric([model], clicked / shown)
                mrr.add_metric([model], reciprocal / shown)
                abandonment.add_metric([model], max(0.0, 1.0 - with_click / shown))
        yield from (impressions, clicks, ctr, mrr, abandonment)
