"""Benchmark runs on Ray: the query batches a single-process run would search, each sent to actors that open the
index (memory-mapped) and the reranker once; results are put back in query order, so the TREC run is the
single-process one."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import FusionConfig, RayConfig, RerankConfig
from searchkit.distributed.cluster import actor_pool, connect, searchkit_errors, set_threads
from searchkit.evaluate.runs import collect_batch, query_batches
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.types import Hit, Query, Run


@dataclass(frozen=True)
class SearcherSpec:
    """What a searcher is made of, as a picklable value: calling it opens the index (memory-mapped) and builds the
    :class:`searchkit.search.Searcher` (what each Ray actor of a run does once; the CLI builds its searchers so too).

    ``filters``: metadata filter expressions (``searchkit.retrieval.filters``) every search applies.
    """

    index: str
    mode: str = "auto"
    fusion: FusionConfig = FusionConfig()  # noqa: RUF009 - frozen dataclass, safe as a default
    rerank: RerankConfig | None = None
    device: str | None = None
    filters: tuple[str, ...] = ()

    def __call__(self) -> Any:

        opened = Index.open(self.index, device=self.device)
        searcher = Searcher(opened, mode=self.mode, fusion=self.fusion, rerank=self.rerank)
        return searcher.filtered(list(self.filters)) if self.filters else searcher


class _QueryBatchSearcher:
    """A Ray actor: the searcher opened once (index memory-mapped, reranker loaded); query batches in, hits out."""

    def __init__(self, open_searcher: Callable[[], Any], texts: list[str], depth: int, threads: int) -> None:
        set_threads(threads)
        self.searcher = open_searcher()
        self.texts = texts
        self.depth = depth

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for start, end in zip(batch["start"].tolist(), batch["end"].tolist(), strict=True):
            hits = self.searcher.search_batch(self.texts[start:end], self.depth)
            results.append(json.dumps([[list(hit) for hit in row] for row in hits]))  # floats round-trip exactly
        return {"batch": batch["batch"], "hits": np.array(results, dtype=object)}


def run_queries_on_ray(
    open_searcher: Callable[[], Any],
    queries: Sequence[Query],
    k: int,
    ray_config: RayConfig,
    *,
    batch_size: int = 256,
    exclude_self: bool = False,
    use_gpus: bool = False,
    show_progress: bool = False,
) -> Run:
    """:func:`searchkit.evaluate.runs.run_queries` with the query batches searched by Ray actors.

    ``open_searcher``: a picklable function with no arguments that returns the searcher (each actor calls it once).
    The batches are those of the single-process run, so the run is the same. ``use_gpus``: one actor per GPU.
    """

    batches = query_batches(queries, k, batch_size)
    ray = connect(ray_config)
    depth = k + 1 if exclude_self else k
    pool = actor_pool(ray, ray_config, use_gpus=use_gpus)
    items = [{"batch": number, "start": start, "end": end} for number, (start, end) in enumerate(batches)]
    texts = [query.text for query in queries]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _QueryBatchSearcher,
        fn_constructor_kwargs={
            "open_searcher": open_searcher,
            "texts": texts,
            "depth": depth,
            "threads": ray_config.cpus_per_actor,
        },
        batch_size=1,
        batch_format="numpy",
        **pool,
    )

    run: Run = {}
    found: dict[int, list[list[Hit]]] = {}
    with tqdm(total=len(queries), desc="queries", unit="query", disable=not show_progress) as bar, searchkit_errors():
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            number = int(batch["batch"][0])
            found[number] = [[Hit(*hit) for hit in row] for row in json.loads(batch["hits"][0])]
            start, end = batches[number]
            bar.update(end - start)
    for number, (start, end) in enumerate(batches):
        collect_batch(run, queries[start:end], found[number], k, exclude_self, "the Ray searchers")
    return run
