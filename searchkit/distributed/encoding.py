"""Dense encoding on Ray: the shards of an index build encoded by an actor pool, written by the build as its own.

:class:`RayEncoding` is the encoding backend a build takes (``Index.build(..., encoding=RayEncoding(RayConfig()))``,
``index build --ray``): the build's shards of doc rows become the rows of a Ray Dataset mapped by an actor pool (one
actor per GPU, or CPU actors) that each load the encoder once and read their rows themselves (the stored token ids,
or the documents of the doc store being built), so the driver holds no text. Each finished shard comes back to the
driver and is written under its number: the files, resume after a kill and ``index verify`` are those of a
single-process build. See :mod:`searchkit.distributed.cluster` for the cluster and the pool.

>>> import tempfile, pathlib
>>> from searchkit.index.docstore import write_docstore
>>> from searchkit.types import Document
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_docstore([Document("a", "solar"), Document("b", "wind", title="Wind")], folder, show_progress=False)
>>> StoreRows(folder).texts(0, 2, "passage: ")
['passage: solar', 'passage: Wind wind']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import DenseConfig, RayConfig, TokensConfig
from searchkit.distributed.cluster import actor_pool, connect, require_ray, searchkit_errors, set_threads
from searchkit.faults import checkpoint
from searchkit.formats import document_text
from searchkit.index.docstore import DocStore
from searchkit.models.encoder import get_encoder
from searchkit.retrieval.dense import ShardWriter
from searchkit.retrieval.tokens import DocumentTokens


class StoreRows:
    """Documents ``lo..hi`` of the doc store in ``folder`` (what a Ray worker reads; opened on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "_store": None}

    def texts(self, lo: int, hi: int, prefix: str) -> list[str]:
        if self._store is None:
            self._store = DocStore(self.folder)
        return [prefix + document_text(doc) for doc in self._store.get(range(lo, hi))]


class TokenRows:
    """Stored token ids of documents ``lo..hi`` (the tokens component in ``folder``, read by
    :class:`searchkit.retrieval.tokens.DocumentTokens`, memory-mapped on first use)."""

    def __init__(self, folder: Path, config: TokensConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        self._tokens: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "config": self.config, "_tokens": None}

    def ids(self, lo: int, hi: int) -> list[list[int]]:
        if self._tokens is None:
            self._tokens = DocumentTokens(self.folder, self.config, ())
        return self._tokens.rows(range(lo, hi))


class _ShardEncoder:
    """A Ray actor: the encoder loaded once; a batch of shard numbers in, their fp16 embeddings out."""

    def __init__(self, config: DenseConfig, rows: StoreRows | TokenRows, threads: int) -> None:
        set_threads(threads)
        if config.device.startswith("cuda:"):  # the actor sees only the GPU Ray gave it
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
    pool = actor_pool(ray, ray_config, use_gpus=config.device != "cpu")
    items = [{"shard": number, "lo": lo, "hi": hi} for number, lo, hi in todo]
    sizes = {number: hi - lo for number, lo, hi in todo}
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _ShardEncoder,
        fn_constructor_kwargs={"config": config, "rows": rows, "threads": ray_config.cpus_per_actor},
        batch_size=1,
        batch_format="numpy",
        **pool,
    )
    with searchkit_errors():
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            number = int(batch["shard"][0])
            write(number, np.asarray(batch["embeddings"][0], dtype=np.float16))
            if progress is not None:
                progress.update(sizes[number])


class RayEncoding:
    """The Ray encoding backend of a build (:class:`searchkit.retrieval.dense.ShardEncoding`): shards encoded by an
    actor pool on the cluster ``config`` names. Ray must be installed (checked here, before any work)."""

    def __init__(self, config: RayConfig | None = None) -> None:
        require_ray()
        self.config = config or RayConfig()

    def encode_shards(
        self,
        todo: Sequence[tuple[int, int, int]],
        config: DenseConfig,
        *,
        store: Path,
        tokens: DocumentTokens | None,
        write: ShardWriter,
        progress: Any,
    ) -> None:
        rows = TokenRows(tokens.folder, tokens.config) if tokens is not None else StoreRows(store)
        encode_shards(todo, config, rows, write, self.config, progress)
