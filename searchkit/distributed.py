"""Beyond one machine on Ray: an index's dense encoding and a benchmark run's queries spread over a Ray cluster.

Ray is an optional extra (``pip install 'searchkit[ray]'``); nothing here imports it until a ``--ray`` run asks,
and without it that run stops with a one-line error naming the extra (:func:`require_ray`).

- **Encoding** (``index build --ray`` / ``index add --ray``, ``Index.build(..., ray=RayConfig())``): the shards of
  doc rows the single-process encoder writes (``dense/shards/shard-NNNNN.npy``) become the rows of a Ray Dataset,
  mapped by an actor pool (one actor per GPU, or CPU actors) that each load the model once and read their shard's
  documents (or stored token ids) from the index being built, so the driver holds no text at all. Each finished
  shard comes back to the driver and is written under its number, so the files, their order, resume after a kill
  and ``index verify`` are those of a single-process build. A killed actor is restarted and its shard retried
  (Ray Data's actor pools do both). Workers read the build folder, so on a multi-host cluster it must be on storage
  every node sees, as for any file Ray Data reads.
- **Runs** (``searchkit run ... --ray``): the query batches a single-process run would search, one per Ray row,
  go to actors that each open the index (memory-mapped) and the reranker once; results are put back in query
  order, so the TREC run is the single-process one.

>>> from searchkit.config import RayConfig
>>> plan_actors(RayConfig(), cpus=8, gpus=0, use_gpus=False)
8
>>> plan_actors(RayConfig(cpus_per_actor=4), cpus=8, gpus=2, use_gpus=True)
2
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import DenseConfig, FusionConfig, RayConfig, RerankConfig, TokensConfig
from searchkit.faults import checkpoint
from searchkit.types import ConfigError, Query, Run, SearchkitError

logger = logging.getLogger(__name__)

RAY_HINT = "pip install 'searchkit[ray]'"


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # Ray Data ships with ray[data], the extra's requirement
    except ImportError:
        raise ConfigError(f"--ray needs Ray (Ray Data), which is not installed: {RAY_HINT}") from None
    return ray


def connect(config: RayConfig) -> Any:
    """Join (or start) the Ray cluster ``config`` names, once per process; returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if config.address:
            options["address"] = config.address
        else:
            options["include_dashboard"] = False
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = config.address or "a local Ray instance"
            raise ConfigError(f"cannot connect to Ray at {where}: {str(err).splitlines()[0]}") from None
    resources = ray.cluster_resources()
    logger.info("ray: %s CPUs, %s GPUs in the cluster", int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own bar
    context.execution_options.preserve_order = True
    return ray


def plan_actors(config: RayConfig, *, cpus: float, gpus: float, use_gpus: bool) -> int:
    """How many model actors: ``config.actors``, else one per GPU (``use_gpus``) or per ``cpus_per_actor`` CPUs."""
    if config.actors:
        return config.actors
    if use_gpus:
        return max(1, int(gpus))
    return max(1, int(cpus // config.cpus_per_actor))


def _pool(ray: Any, config: RayConfig, use_gpus: bool) -> dict[str, Any]:
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if use_gpus and gpus < 1:
        logger.warning("ray: the model asks for a GPU but the cluster has none; CPU actors are used")
        use_gpus = False
    actors = plan_actors(config, cpus=float(resources.get("CPU", 1)), gpus=gpus, use_gpus=use_gpus)
    logger.info("ray: %d %s actors", actors, "GPU" if use_gpus else f"{config.cpus_per_actor}-CPU")
    return {
        "compute": ray.data.ActorPoolStrategy(size=actors),
        "num_cpus": config.cpus_per_actor,
        "num_gpus": 1 if use_gpus else 0,
    }


@contextmanager
def _searchkit_errors() -> Iterator[None]:
    """Re-raise the searchkit error behind a failed Ray task (Ray wraps it once or twice) as itself."""
    try:
        yield
    except Exception as err:
        seen: BaseException | None = err
        while seen is not None:
            if isinstance(seen, SearchkitError):
                raise seen from None
            cause = getattr(seen, "cause", None)
            seen = cause if isinstance(cause, BaseException) else seen.__cause__
        raise


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- encoding


class StoreRows:
    """Documents ``lo..hi`` of the doc store in ``folder`` (what a Ray worker reads; opened on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "_store": None}

    def texts(self, lo: int, hi: int, prefix: str) -> list[str]:
        from searchkit.formats import document_text
        from searchkit.index import _DocStore

        if self._store is None:
            self._store = _DocStore(self.folder)
        return [prefix + document_text(doc) for doc in self._store.get(range(lo, hi))]


class TokenRows:
    """Stored token ids of documents ``lo..hi`` (the tokens component in ``folder``, read by
    :class:`searchkit.tokens.DocumentTokens`, memory-mapped on first use)."""

    def __init__(self, folder: Path, config: TokensConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        self._tokens: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "config": self.config, "_tokens": None}

    def ids(self, lo: int, hi: int) -> list[list[int]]:
        from searchkit.tokens import DocumentTokens

        if self._tokens is None:
            self._tokens = DocumentTokens(self.folder, self.config, ())
        return self._tokens.rows(range(lo, hi))


class _ShardEncoder:
    """A Ray actor: the encoder loaded once; a batch of shard numbers in, their fp16 embeddings out."""

    def __init__(self, config: DenseConfig, rows: StoreRows | TokenRows, threads: int) -> None:
        from searchkit.encoder import get_encoder

        _set_threads(threads)
        if config.device.startswith("cuda:"):  # the actor sees only the GPU Ray gave it
            import dataclasses

            config = dataclasses.replace(config, device="cuda")
        self.config = config
        self.rows = rows
        self.encoder = get_encoder(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = []
        for lo, hi in zip(batch["lo"].tolist(), batch["hi"].tolist(), strict=True):
            if isinstance(self.rows, TokenRows):
                ids = self.encoder.with_special_tokens(self.rows.ids(lo, hi))
                embeddings = self.encoder.embed_tokens(ids)
            else:
                embeddings = self.encoder.encode(self.rows.texts(lo, hi, self.config.doc_prefix))
            vectors.append(np.asarray(embeddings).astype(np.float16))
            checkpoint("ray.encode.shard")  # fault tests kill the actor here, its shard encoded but not returned
        return {"shard": batch["shard"], "embeddings": np.stack(vectors)}


def encode_shards(
    todo: Sequence[tuple[int, int, int]],
    config: DenseConfig,
    rows: StoreRows | TokenRows,
    write: Callable[[int, np.ndarray], None],
    ray_config: RayConfig,
    progress: Any = None,
) -> None:
    """Encode the shards ``todo`` (number, first row, end row) on Ray; ``write(number, fp16 embeddings)`` each one
    as it arrives, on the driver (the shard files of a single-process build)."""
    if not todo:
        return
    ray = connect(ray_config)
    pool = _pool(ray, ray_config, use_gpus=config.device != "cpu")
    items = [{"shard": number, "lo": lo, "hi": hi} for number, lo, hi in todo]
    sizes = {number: hi - lo for number, lo, hi in todo}
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _ShardEncoder,
        fn_constructor_kwargs={"config": config, "rows": rows, "threads": ray_config.cpus_per_actor},
        batch_size=1,
        batch_format="numpy",
        **pool,
    )
    with _searchkit_errors():
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            number = int(batch["shard"][0])
            write(number, np.asarray(batch["embeddings"][0], dtype=np.float16))
            if progress is not None:
                progress.update(sizes[number])


# ------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class SearcherSpec:
    """What a searcher is made of, as a picklable value: calling it opens the index (memory-mapped) and builds the
    :class:`searchkit.search.Searcher` (what each Ray actor of a run does once; the CLI builds its searchers so too).

    ``filters``: metadata filter expressions (``searchkit.filters``) every search applies.
    """

    index: str
    mode: str = "auto"
    fusion: FusionConfig = FusionConfig()  # noqa: RUF009 - frozen dataclass, safe as a default
    rerank: RerankConfig | None = None
    device: str | None = None
    filters: tuple[str, ...] = ()

    def __call__(self) -> Any:
        from searchkit.index import Index
        from searchkit.search import Searcher

        opened = Index.open(self.index, device=self.device)
        searcher = Searcher(opened, mode=self.mode, fusion=self.fusion, rerank=self.rerank)
        return searcher.filtered(list(self.filters)) if self.filters else searcher


class _QueryBatchSearcher:
    """A Ray actor: the searcher opened once (index memory-mapped, reranker loaded); query batches in, hits out."""

    def __init__(self, open_searcher: Callable[[], Any], texts: list[str], depth: int, threads: int) -> None:
        _set_threads(threads)
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
    """:func:`searchkit.evaluate.run_queries` with the query batches searched by Ray actors.

    ``open_searcher``: a picklable function with no arguments that returns the searcher (each actor calls it once).
    The batches are those of the single-process run, so the run is the same. ``use_gpus``: one actor per GPU.
    """
    from searchkit.evaluate import collect_batch, query_batches

    batches = query_batches(queries, k, batch_size)
    ray = connect(ray_config)
    depth = k + 1 if exclude_self else k
    pool = _pool(ray, ray_config, use_gpus=use_gpus)
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
    from tqdm.auto import tqdm

    from searchkit.types import Hit

    run: Run = {}
    found: dict[int, list[list[Hit]]] = {}
    with tqdm(total=len(queries), desc="queries", unit="query", disable=not show_progress) as bar, _searchkit_errors():
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            number = int(batch["batch"][0])
            found[number] = [[Hit(*hit) for hit in row] for row in json.loads(batch["hits"][0])]
            start, end = batches[number]
            bar.update(end - start)
    for number, (start, end) in enumerate(batches):
        collect_batch(run, queries[start:end], found[number], k, exclude_self, "the Ray searchers")
    return run
