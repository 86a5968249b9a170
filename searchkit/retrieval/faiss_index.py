"""FAISS for the dense component: building an index of any factory over stored embeddings, reading it (memory-mapped
where faiss can), placing it on GPUs, and searching with ID selectors (tombstones and metadata filters).

Every index is inner product over the fp16 embeddings (normalised: cosine) and written in its CPU form; a GPU index is
made at load time (:func:`place_index`). Trained types (IVF, PQ) are trained on a seeded sample.

>>> import faiss
>>> index = faiss.index_factory(8, "IVF4_HNSW8,Flat", faiss.METRIC_INNER_PRODUCT)
>>> [type(part).__name__ for part in faiss_parts(index)]
['IndexIVFFlat', 'IndexHNSWFlat', 'IndexFlat']
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from searchkit.config import DenseConfig
from searchkit.formats import write_json_atomic
from searchkit.types import (
    ConfigError,
    IndexFormatError,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


GPU_MAX_K = 2048  # FAISS GPU k-selection limit; larger k is served by the CPU index


ADD_CHUNK = 65_536


# How faiss reads each index type memory-mapped, measured on faiss 1.15 by reading every type with every flag and
# comparing results and RSS: IO_FLAG_MMAP_IFC maps the codes of Flat, SQ and PQ indexes, the vectors and graph of
# HNSW, and IVF inverted lists (also behind an OPQ/PCA transform): identical results, almost no anonymous memory,
# and pages shared with every other process that maps the file. The legacy IO_FLAG_MMAP maps IVF lists only (it
# does nothing for Flat), and no flag maps fast-scan lists ("PQ{m}x4fs": IO_FLAG_MMAP_IFC reads them in full and
# maps the file too), so the types below are the ones mapped; anything else is read into memory. A mapped index is
# read-only: adding to it (or to a clone of it) aborts the process, so updates read a private copy.
MMAP_TYPES = frozenset(
    {
        "IndexFlat",
        "IndexFlatIP",
        "IndexFlatL2",
        "IndexPQ",
        "IndexScalarQuantizer",
        "IndexHNSWFlat",
        "IndexHNSWSQ",
        "IndexIVFFlat",
        "IndexIVFPQ",
        "IndexIVFScalarQuantizer",
        "IndexPreTransform",
    }
)


# faiss's k-means warns below this many training vectors per centroid (IVF lists, PQ sub-quantizer codes)
_POINTS_PER_CENTROID = 39


def _faiss_message(err: BaseException) -> str:
    """faiss's error as one line: its last line, without the C++ file and function it came from."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    last = re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[-1])
    return re.sub(r"^Error: '.*?' failed: ", "", last)


def faiss_parts(index: Any) -> list[Any]:
    """``index`` and every index inside it (the index behind a pre-transform, an IVF's coarse quantizer, HNSW's
    storage, a refine stage's two), each downcast to its own type.

    >>> import faiss
    >>> index = faiss.index_factory(8, "IVF4_HNSW8,Flat", faiss.METRIC_INNER_PRODUCT)
    >>> [type(part).__name__ for part in faiss_parts(index)]
    ['IndexIVFFlat', 'IndexHNSWFlat', 'IndexFlat']
    """
    import faiss

    parts, stack = [], [index]
    while stack:
        part = faiss.downcast_index(stack.pop(0))
        parts.append(part)
        for name in ("index", "quantizer", "storage", "base_index", "refine_index"):
            child = getattr(part, name, None)
            if isinstance(child, faiss.Index):
                stack.append(child)
    return parts


def _training_needs(index: Any) -> list[tuple[str, int]]:
    """(part, centroids) of every k-means that training ``index`` runs: the sample needs at least that many rows."""
    import faiss

    needs: list[tuple[str, int]] = []
    for part in faiss_parts(index):
        if isinstance(part, faiss.IndexIVF):
            needs.append((f"IVF{part.nlist}", int(part.nlist)))
        pq = getattr(part, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            needs.append((f"PQ{pq.M}x{pq.nbits}", int(pq.ksub)))
    if isinstance(index, faiss.IndexPreTransform):
        chain: Any = index.chain  # a SWIG vector (the stubs say list)
        for i in range(chain.size()):
            transform = faiss.downcast_VectorTransform(chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                needs.append((f"OPQ{transform.M}", 256))  # trains its own 8-bit PQ
    return needs


def _check_training_size(index: Any, factory: str, size: int, n: int, train_sample: int) -> None:
    """A one-line ConfigError, with the fix, when ``size`` rows cannot train ``index``; a warning when they are
    fewer than faiss's k-means wants."""
    needs = _training_needs(index)
    if not needs:
        return
    part, centroids = max(needs, key=lambda need: need[1])
    if size >= centroids:
        if size < _POINTS_PER_CENTROID * centroids:
            if n > size:
                fix = f"raise DenseConfig.train_sample to {min(n, _POINTS_PER_CENTROID * centroids)}"
            elif part.startswith("IVF"):
                fix = f"IVF{max(1, n // _POINTS_PER_CENTROID)} would train better on this corpus"
            else:
                fix = "on a corpus this small, Flat or HNSW32 would search better"
            logger.warning(
                "dense: FAISS %r trains on %d vectors, fewer than the %d (%d per centroid) that train %s well; %s",
                factory,
                size,
                _POINTS_PER_CENTROID * centroids,
                _POINTS_PER_CENTROID,
                part,
                fix,
            )
        return
    if n >= centroids:  # the corpus has enough rows, the sample does not
        fix = f"raise DenseConfig.train_sample (now {train_sample}) to {min(n, _POINTS_PER_CENTROID * centroids)}"
    elif part.startswith("IVF"):
        lists = max(1, n // _POINTS_PER_CENTROID)
        fix = f"use at most IVF{lists} for {n} vectors (about corpus / {_POINTS_PER_CENTROID}), or 'Flat' / 'HNSW32'"
    else:
        fix = "use 'Flat' or 'HNSW32' for so few vectors (8-bit PQ wants about 10,000 or more), or 4-bit PQ{m}x4fs"
    raise ConfigError(f"cannot train FAISS {factory!r} on {size} vectors: {part} needs at least {centroids}; {fix}")


def build_faiss_index(vectors: np.ndarray, factory: str = "Flat", *, train_sample: int = 100_000, seed: int = 0) -> Any:
    """An inner-product FAISS index from ``factory`` over ``vectors`` (any float dtype; added as float32).

    Indexes that need training (IVF, PQ, OPQ, SQ) are trained on a seeded sample of at most ``train_sample`` rows;
    a sample too small for the factory's k-means is a one-line :class:`ConfigError` saying how to fix it. Any
    factory faiss builds with the inner-product metric works (embeddings are L2-normalised, so inner product is
    cosine): ``Flat``, ``HNSW32``, ``IVF1024,Flat``, ``IVF1024_HNSW32,Flat``, ``IVF1024,PQ48``,
    ``IVF1024,PQ48x4fs``, ``OPQ48,IVF1024,PQ48``, ``OPQ48_192,IVF1024,PQ48``, ``IVF1024,SQ8``, ``HNSW32,SQ8``...
    PQ codebooks skip faiss's polysemous training (a reordering only polysemous search uses, and minutes of CPU).

    >>> x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
    >>> index = build_faiss_index(x / np.linalg.norm(x, axis=1, keepdims=True), "IVF16,PQ8")
    >>> index.ntotal, type(index).__name__
    (2000, 'IndexIVFPQ')
    """
    import faiss

    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        hint = "PQ{m} needs m to divide the dimension" if "PQ" in factory else "see faiss's wiki, 'The index factory'"
        message = _faiss_message(err)
        raise ConfigError(f"invalid FAISS factory {factory!r} for dimension {dim}: {message} ({hint})") from None
    parts = faiss_parts(index)
    not_ip = sorted({type(part).__name__ for part in parts if part.metric_type != faiss.METRIC_INNER_PRODUCT})
    if not_ip:
        raise ConfigError(
            f"FAISS {factory!r}: faiss {faiss.__version__} builds {', '.join(not_ip)} with the L2 metric only, and "
            "searchkit ranks by inner product; use Flat, HNSW32, IVF{n},Flat, IVF{n},PQ{m} or OPQ{m},IVF{n},PQ{m}"
        )
    for part in parts:
        if getattr(part, "do_polysemous_training", False):
            part.do_polysemous_training = False
    if not index.is_trained:
        size = min(n, train_sample)
        _check_training_size(index, factory, size, n, train_sample)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        try:
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        except RuntimeError as err:
            raise ConfigError(
                f"cannot train FAISS {factory!r} on {size} vectors ({_faiss_message(err)}); "
                "use fewer lists (IVFn with n well under the corpus size) or 'Flat'"
            ) from None
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return index


def mmap_supported(index: Any) -> bool:
    """Whether faiss reads ``index``'s type memory-mapped (IO_FLAG_MMAP_IFC): every part is in :data:`MMAP_TYPES`.

    >>> import faiss
    >>> mmap_supported(faiss.IndexFlatIP(8)), mmap_supported(faiss.index_factory(8, "IVF4,PQ4x4fs"))
    (True, False)
    """
    return all(type(part).__name__ in MMAP_TYPES for part in faiss_parts(index))


def read_faiss_index(path: str | Path, *, mmap: bool = True) -> Any:
    """Read ``path`` (written by :func:`rebuild_index`), memory-mapped when ``mmap`` and ``faiss.json`` beside it
    says faiss maps its type (see :data:`MMAP_TYPES`), else into memory; an unreadable file is an
    :class:`IndexFormatError`. A mapped index shares its pages with every process that maps the file and must not
    be added to (read it with ``mmap=False`` for a private, writable copy).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = np.save(folder / "embeddings.npy", np.eye(4, 8, dtype=np.float16))
    >>> _ = rebuild_index(folder, "Flat")
    >>> read_faiss_index(folder / "index.faiss").ntotal
    4
    """
    import faiss

    path = Path(path)
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((path.parent / "faiss.json").read_text(encoding="utf-8"))
    # faiss.json before the "mmap" key: the Flat indexes it was always meant for
    if mmap and bool(info.get("mmap", str(info.get("factory", "")).strip() == "Flat")):
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as err:
            logger.info("dense: faiss cannot map %s (%s); reading it into memory", path, _faiss_message(err))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise IndexFormatError(f"{path}: unreadable FAISS index ({_faiss_message(err)})") from None


RECONSTRUCT_SAMPLE = 256
"""Rows verify reconstructs from the FAISS index and compares with the stored embeddings."""


def reconstruction_problem(path: str | Path, embeddings: np.ndarray, *, sample: int = RECONSTRUCT_SAMPLE) -> str | None:
    """Whether the FAISS index at ``path`` holds the stored ``embeddings`` in the same rows (None when it does).

    A seeded sample of rows is reconstructed from a private copy of the index. Types that store the vectors as they
    are (Flat, HNSW, IVF-Flat) must give them back exactly; compressed ones (PQ, SQ, OPQ) must give back, for
    at least 90% of the sample, a vector nearer (by cosine) to its own row than to any other sampled row. Fast-scan
    types (``PQ..x4fs``), which faiss cannot reconstruct, are logged as not checked, not reported as damage.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float16)
    >>> np.save(folder / "embeddings.npy", vectors)
    >>> _ = rebuild_index(folder, "Flat")
    >>> reconstruction_problem(folder / "index.faiss", vectors) is None
    True
    >>> reconstruction_problem(folder / "index.faiss", vectors[::-1])
    'index.faiss does not hold embeddings.npy row for row (50 of 50 sampled rows differ)'
    """
    import faiss

    index = read_faiss_index(path, mmap=False)
    total = len(embeddings)
    if total == 0 or index.ntotal != total:
        return None  # the shape checks report this
    parts = faiss_parts(index)
    if any(type(part).__name__.endswith("FastScan") for part in parts):
        # faiss crashes reconstructing IVF fast-scan lists (their codes are packed by blocks): not checked
        logger.info("dense: %s is a fast-scan index, which faiss cannot reconstruct: row check skipped", path)
        return None
    rows = np.sort(np.random.default_rng(0).choice(total, size=min(sample, total), replace=False))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    try:
        rebuilt = np.stack([index.reconstruct(int(row)) for row in rows]).astype(np.float32)
    except RuntimeError as err:
        logger.info("dense: %s cannot reconstruct its vectors (%s): row check skipped", path, _faiss_message(err))
        return None
    stored = np.asarray(embeddings[rows], dtype=np.float32)
    differ = int(np.count_nonzero(np.any(rebuilt != stored, axis=1)))
    if differ == 0:
        return None
    lossy = (faiss.IndexPQ, faiss.IndexScalarQuantizer, faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer)
    exact = not any(isinstance(part, (*lossy, faiss.IndexPreTransform)) for part in parts)
    if not exact:
        norms = np.linalg.norm(rebuilt, axis=1, keepdims=True) * np.linalg.norm(stored, axis=1, keepdims=True).T
        similarity = (rebuilt @ stored.T) / np.maximum(norms, 1e-12)
        nearest_own = float(np.mean(np.argmax(similarity, axis=1) == np.arange(len(rows))))
        if nearest_own >= 0.9:
            return None
    return f"{Path(path).name} does not hold embeddings.npy row for row ({differ} of {len(rows)} sampled rows differ)"


def _on_gpu(index: Any) -> bool:
    """Whether ``index`` is searched on a GPU: a GpuIndex, shards or replicas of them, or a transform before one."""
    import faiss

    if "Gpu" in type(index).__name__:
        return True
    if not isinstance(index, faiss.Index):
        return False
    part: Any = faiss.downcast_index(index)
    if "Gpu" in type(part).__name__:
        return True
    if isinstance(part, faiss.IndexPreTransform):
        return _on_gpu(part.index)
    count = getattr(part, "count", None)  # IndexShards, IndexReplicas
    return callable(count) and count() > 0 and _on_gpu(part.at(0))


def apply_search_params(index: Any, *, nprobe: int, ef_search: int) -> None:
    """Set nprobe (IVF), efSearch (HNSW) and quantizer_efSearch (an IVF's HNSW quantizer) where the index has them;
    on a GPU (one, or shards over several) through faiss's GPU parameter space.

    >>> import faiss
    >>> index = faiss.index_factory(8, "IVF4_HNSW8,Flat", faiss.METRIC_INNER_PRODUCT)
    >>> apply_search_params(index, nprobe=3, ef_search=40)
    >>> ivf = faiss.extract_index_ivf(index)
    >>> ivf.nprobe, faiss.downcast_index(ivf.quantizer).hnsw.efSearch
    (3, 40)
    """
    import faiss

    space = faiss.GpuParameterSpace() if _on_gpu(index) else faiss.ParameterSpace()
    space.initialize(index)
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search), ("quantizer_efSearch", ef_search)):
        with contextlib.suppress(RuntimeError):  # the index has no such parameter
            space.set_index_parameter(index, name, value)


class FaissPlacement(NamedTuple):
    """Where a FAISS index is searched: ``gpus`` () for the CPU, one GPU, or several the index is sharded over."""

    gpus: tuple[int, ...]
    shard: bool
    where: str


def faiss_placement(device: str, num_gpus: int) -> FaissPlacement:
    """Where ``device`` puts a FAISS index when faiss sees ``num_gpus`` GPUs: ``cpu`` (or no GPU) on the CPU;
    ``cuda:N`` on GPU N; ``auto`` and ``cuda`` sharded over every GPU when there are several, else on GPU 0.

    >>> faiss_placement("auto", 4)
    FaissPlacement(gpus=(0, 1, 2, 3), shard=True, where='cuda:0-3')
    >>> faiss_placement("cuda:2", 4).where, faiss_placement("cuda", 1).where, faiss_placement("auto", 0).where
    ('cuda:2', 'cuda:0', 'cpu')
    """
    if device == "cpu" or num_gpus <= 0:
        return FaissPlacement((), False, "cpu")
    if ":" in device:
        gpu = int(device.split(":", 1)[1])
        return FaissPlacement((gpu,), False, f"cuda:{gpu}")
    if num_gpus == 1:
        return FaissPlacement((0,), False, "cuda:0")
    return FaissPlacement(tuple(range(num_gpus)), True, f"cuda:0-{num_gpus - 1}")


_GPU_RESOURCES: dict[int, Any] = {}


def _gpu_resources(gpu: int) -> Any:
    import faiss

    if gpu not in _GPU_RESOURCES:
        _GPU_RESOURCES[gpu] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[gpu]


def place_index(index: Any, device: str) -> tuple[Any, str]:
    """Move a CPU index where :func:`faiss_placement` says: one GPU, shards over all GPUs
    (``GpuMultipleClonerOptions(shard=True)``: each GPU holds and searches a part, results merged), or the CPU.
    Returns (index, where); a type faiss cannot move (HNSW, fast-scan) stays on the CPU with a warning.

    >>> import faiss
    >>> place_index(faiss.IndexFlatIP(8), "cpu")[1]
    'cpu'
    """
    import faiss

    if device == "cpu":
        return index, "cpu"
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if not has_gpu:
        if device.startswith("cuda"):
            logger.warning(
                "dense: device=%r asked for FAISS on GPU, but this faiss build has no GPU support or sees "
                "no GPU; GPU fell back to CPU (install faiss-gpu for GPU search)",
                device,
            )
        else:
            logger.info("dense: FAISS search on CPU (faiss has no GPU)")
        return index, "cpu"
    plan = faiss_placement(device, faiss.get_num_gpus())
    try:
        if plan.shard:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            resources = [_gpu_resources(gpu) for gpu in plan.gpus]
            moved = faiss.index_cpu_to_gpu_multiple_py(resources, index, co=options, gpus=list(plan.gpus))
        else:
            moved = faiss.index_cpu_to_gpu(_gpu_resources(plan.gpus[0]), plan.gpus[0], index)
    except RuntimeError as err:
        logger.warning("dense: this FAISS index cannot run on %s (%s); GPU fell back to CPU", plan.where, err)
        return index, "cpu"
    logger.info("dense: FAISS index on %s%s", plan.where, " (sharded)" if plan.shard else "")
    return moved, plan.where


def write_faiss_atomic(index: Any, path: Path) -> None:
    import faiss

    if _on_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def rebuild_index(folder: str | Path, factory: str, *, train_sample: int = 100_000, seed: int = 0) -> Any:
    """(Re)build ``folder/index.faiss`` from ``folder/embeddings.npy`` with ``factory``; no re-encoding.

    ``faiss.json`` records how: factory, metric, vectors, dimension, sample, seed, the faiss version, the index's
    parts, whether faiss memory-maps it (:func:`mmap_supported`), train and add seconds.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = np.save(folder / "embeddings.npy", np.eye(300, 8, dtype=np.float16))
    >>> rebuild_index(folder, "HNSW16").ntotal, json.loads((folder / "faiss.json").read_text())["mmap"]
    (300, True)
    """

    import faiss

    folder = Path(folder)
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    started = time.perf_counter()
    index = build_faiss_index(embeddings, factory, train_sample=train_sample, seed=seed)
    seconds = time.perf_counter() - started
    trained = not faiss.index_factory(index.d, factory, faiss.METRIC_INNER_PRODUCT).is_trained
    write_faiss_atomic(index, folder / "index.faiss")
    built = {"factory": factory, "metric": "inner_product", "ntotal": int(index.ntotal), "dim": int(index.d)}
    write_json_atomic(
        folder / "faiss.json",
        {
            **built,
            "train_sample": train_sample,
            "seed": seed,
            "train_rows": min(len(embeddings), train_sample) if trained else 0,
            "faiss_version": faiss.__version__,
            "parts": [type(part).__name__ for part in faiss_parts(index)],
            "mmap": mmap_supported(index),
        },  # no timings: a resumed build must write the same bytes as an uninterrupted one
    )
    logger.info("dense: wrote %s (%s, %d vectors, %.1f s)", folder / "index.faiss", factory, index.ntotal, seconds)
    return index


def combine_masks(allowed: np.ndarray | None, deleted: np.ndarray | None) -> np.ndarray | None:
    """The rows a search may return: ``allowed`` minus the tombstones (None: every row)."""
    if deleted is None:
        return allowed
    return ~deleted if allowed is None else allowed & ~deleted


def search_selected(
    index: Any, queries: np.ndarray, k: int, selected: np.ndarray, config: DenseConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` among the ``selected`` rows only: a FAISS ID selector, so the top k is taken among them.

    The search parameters of the index's type carry the selector and the configured nprobe / efSearch (parameters
    given to a search replace the index's own). An index type without selector support is searched for more
    neighbours, filtered afterwards: exact for its ranking, k hits while that many allowed rows are found.
    """
    import faiss as faiss_module

    faiss: Any = faiss_module  # its stubs lack the search-parameter classes
    bits = np.packbits(selected, bitorder="little")  # faiss's bitmap: row i is bit i % 8 of byte i // 8
    selector = faiss.IDSelectorBitmap(len(selected), faiss.swig_ptr(bits))
    inner = faiss.downcast_index(index)
    if faiss.try_extract_index_ivf(index) is not None:
        params: Any = faiss.SearchParametersIVF(sel=selector, nprobe=config.nprobe)
    elif isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=config.ef_search)
    else:
        params = faiss.SearchParameters(sel=selector)
    try:
        found: tuple[np.ndarray, np.ndarray] = index.search(queries, k, params=params)
        return found
    except RuntimeError:
        logger.debug("dense: %s takes no ID selector; searching deeper and filtering", type(inner).__name__)
    wanted = min(int(index.ntotal), k + int(len(selected) - np.count_nonzero(selected)))
    scores, rows = index.search(queries, wanted)
    keep = (rows >= 0) & selected[np.maximum(rows, 0)]
    out_scores = np.full((len(rows), k), -np.inf, dtype=scores.dtype)
    out_rows = np.full((len(rows), k), -1, dtype=rows.dtype)
    for q in range(len(rows)):
        kept = np.flatnonzero(keep[q])[:k]
        out_scores[q, : len(kept)], out_rows[q, : len(kept)] = scores[q, kept], rows[q, kept]
    return out_scores, out_rows
