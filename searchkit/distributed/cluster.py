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

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from searchkit.config import RayConfig
from searchkit.types import ConfigError, SearchkitError

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


def actor_pool(ray: Any, config: RayConfig, use_gpus: bool) -> dict[str, Any]:
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
def searchkit_errors() -> Iterator[None]:
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


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
