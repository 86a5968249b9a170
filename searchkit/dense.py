"""Dense retrieval: a sentence-transformers encoder and a FAISS inner-product index over its embeddings.

Files this component writes in the folder it is given (the index owns the manifest and checksums)::

    embeddings.npy   fp16 (num_docs, dim), row i is docids[i]; other FAISS types are built from it
    index.faiss      faiss.write_index of the CPU form of ``DenseConfig.faiss_factory`` (inner product)
    faiss.json       how index.faiss was built: factory, metric, ntotal, dim, train_sample, seed, train_rows,
                     faiss_version, parts, mmap (whether faiss memory-maps the type: then loads map it)
    model.json       the encoder's identity (name, where it resolved, sha256 of its weight files) and dim
    shards/          only during a build: shard-00000.npy ... (fp16) + state.json, for resuming

Encoding keeps tokenization apart from the model call (texts -> token ids -> batches sorted by length -> the
SentenceTransformer modules), runs fp16 on a GPU and fp32 on the CPU. When the index stores its documents' token
ids (the ``tokens`` component, :mod:`searchkit.tokens`) from the encoder's own tokenizer, they are encoded instead of
the texts (:func:`usable_tokens`): no document is read or tokenized again. Heavy libraries (torch, faiss,
sentence-transformers) are imported inside functions, and the model loads at the first query, not at ``load``.

Rows are FAISS ids: row i of the index is vector i. An update (:meth:`DenseRetriever.rewrite`) appends the new
documents' vectors after the others, so every id stays what it was; a deleted row stays in FAISS as a tombstone
(:meth:`DenseRetriever.set_deleted`) that searches exclude with an ID selector, until a compaction rebuilds the FAISS
index from the kept embeddings (no re-encoding). A metadata filter (``allowed``) is the same kind of selector, so
the top k is taken among the allowed rows only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from searchkit.config import DenseConfig, RayConfig
from searchkit.encoder import Encoder, get_encoder
from searchkit.faults import checkpoint
from searchkit.formats import document_text, save_npy_atomic, write_json_atomic
from searchkit.models import identity_key, model_identity, resolve_device
from searchkit.ranking import DocIdTable, Ranking, sort_ranking
from searchkit.types import (
    ConfigError,
    DataError,
    Document,
    Hit,
    IndexFormatError,
    check_k,
)

if TYPE_CHECKING:
    from searchkit.tokens import DocumentTokens

logger = logging.getLogger(__name__)

GPU_MAX_K = 2048  # FAISS GPU k-selection limit; larger k is served by the CPU index
STATE_VERSION = 1


class RayEncoding(NamedTuple):
    """How a build encodes on Ray: the cluster settings and the folder of the doc store the actors read."""

    config: RayConfig
    store: Path


_ADD_CHUNK = 65_536


# ---------------------------------------------------------------- FAISS

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
    for start in range(0, n, _ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + _ADD_CHUNK], dtype=np.float32))
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


def _write_faiss_atomic(index: Any, path: Path) -> None:
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
    import time

    import faiss

    folder = Path(folder)
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    started = time.perf_counter()
    index = build_faiss_index(embeddings, factory, train_sample=train_sample, seed=seed)
    seconds = time.perf_counter() - started
    trained = not faiss.index_factory(index.d, factory, faiss.METRIC_INNER_PRODUCT).is_trained
    _write_faiss_atomic(index, folder / "index.faiss")
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


def _combine(allowed: np.ndarray | None, deleted: np.ndarray | None) -> np.ndarray | None:
    """The rows a search may return: ``allowed`` minus the tombstones (None: every row)."""
    if deleted is None:
        return allowed
    return ~deleted if allowed is None else allowed & ~deleted


def _search_selected(
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


# ---------------------------------------------------------------- sharded, resumable encoding


def _docids_sha256(docids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for doc_id in docids:
        digest.update(doc_id.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _completed_shards(shard_dir: Path, state: dict[str, Any], bounds: list[tuple[int, int]]) -> set[int]:
    """Shards already encoded under the same state; shards of another state are discarded."""
    state_path = shard_dir / "state.json"
    if not shard_dir.exists():
        return set()
    try:
        saved = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if saved != state:
        logger.info("dense: discarding shards in %s: they were encoded with other settings or docs", shard_dir)
        shutil.rmtree(shard_dir)
        return set()
    done: set[int] = set()
    for number, (lo, hi) in enumerate(bounds):
        path = shard_dir / f"shard-{number:05d}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if array.ndim == 2 and array.shape[0] == hi - lo and array.dtype == np.float16:
            done.add(number)
    return done


def _encode_shards(
    docs: Iterable[Document],
    folder: Path,
    config: DenseConfig,
    docids: Sequence[str],
    identity: dict[str, Any],
    show_progress: bool,
    tokens: DocumentTokens | None = None,
    ray: RayEncoding | None = None,
) -> list[Path]:
    from tqdm.auto import tqdm

    device = resolve_device(config.device, "dense")
    n, size = len(docids), config.shard_size
    bounds = [(lo, min(n, lo + size)) for lo in range(0, n, size)]
    state = {
        "version": STATE_VERSION,
        "model": identity_key(identity),
        "config": {
            key: getattr(config, key) for key in ("model", "max_length", "normalize", "doc_prefix", "shard_size")
        },
        "dtype": "float16" if device.startswith("cuda") else "float32",
        "num_docs": n,
        "docids_sha256": _docids_sha256(docids),
    }
    shard_dir = folder / "shards"
    done = _completed_shards(shard_dir, state, bounds)
    if done:
        logger.info("dense: resuming: %d of %d shards already encoded", len(done), len(bounds))
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(shard_dir / "state.json", state)
    logger.info("dense: encoding %d docs in %d shards of %d into %s", n, len(bounds), size, shard_dir)

    if ray is not None:  # the same shard files, encoded by Ray actors that read the rows themselves
        from searchkit.distributed import StoreRows, TokenRows, encode_shards

        rows = TokenRows(tokens.folder, tokens.config) if tokens is not None else StoreRows(ray.store)
        todo = [(number, lo, hi) for number, (lo, hi) in enumerate(bounds) if number not in done]

        def write(number: int, embeddings: np.ndarray) -> None:
            save_npy_atomic(shard_dir / f"shard-{number:05d}.npy", embeddings)
            checkpoint("dense.shard")

        with tqdm(total=n, unit="doc", desc="dense encode (ray)", disable=not show_progress) as bar:
            bar.update(sum(hi - lo for number, (lo, hi) in enumerate(bounds) if number in done))
            encode_shards(todo, config, rows, write, ray.config, bar)
        return [shard_dir / f"shard-{number:05d}.npy" for number in range(len(bounds))]
    stream = iter(docs if tokens is None else [Document(doc_id, "") for doc_id in docids])
    paths = []
    with tqdm(total=n, unit="doc", desc="dense encode", disable=not show_progress) as bar:
        for number, (lo, hi) in enumerate(bounds):
            chunk = list(islice(stream, hi - lo))
            if len(chunk) != hi - lo:
                raise DataError(f"the corpus ended after {lo + len(chunk)} documents, but docids lists {n}")
            for row, doc in enumerate(chunk, start=lo):
                if doc.doc_id != docids[row]:
                    raise DataError(f"document {row} has id {doc.doc_id!r}, but docids[{row}] is {docids[row]!r}")
            path = shard_dir / f"shard-{number:05d}.npy"
            paths.append(path)
            if number in done:
                bar.update(hi - lo)
                continue
            encoder = get_encoder(config)
            if tokens is not None:
                ids = encoder.with_special_tokens(tokens.rows(range(lo, hi)))
                embeddings = encoder.embed_tokens(ids, progress=bar)
            else:
                embeddings = encoder.encode([config.doc_prefix + document_text(doc) for doc in chunk], progress=bar)
            save_npy_atomic(path, embeddings.astype(np.float16))
            checkpoint("dense.shard")
    if next(stream, None) is not None:
        raise DataError(f"the corpus has more documents than the {n} docids")
    return paths


def _concatenate(paths: list[Path], target: Path, num_docs: int, dim: int) -> None:
    if num_docs == 0:
        save_npy_atomic(target, np.empty((0, dim), dtype=np.float16))
        return
    tmp = target.with_name(target.name + ".tmp.npy")
    merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(num_docs, dim))
    row = 0
    for path in paths:
        shard = np.load(path, mmap_mode="r", allow_pickle=False)
        if shard.shape[1] != dim:
            raise IndexFormatError(f"{path}: dimension {shard.shape[1]}, expected {dim}")
        merged[row : row + len(shard)] = shard
        row += len(shard)
    merged.flush()
    del merged
    os.replace(tmp, target)


# ---------------------------------------------------------------- retriever


def usable_tokens(tokens: DocumentTokens | None, config: DenseConfig) -> DocumentTokens | None:
    """``tokens`` when the encoder of ``config`` can embed them instead of the texts (same tokenizer, no doc prefix,
    no document stored shorter than the encoder reads it), else None (the reason logged)."""
    if tokens is None:
        return None
    if config.doc_prefix:
        reason: str | None = f"DenseConfig.doc_prefix={config.doc_prefix!r} is not in them"
    else:
        encoder = get_encoder(config)
        reason = tokens.mismatch(encoder.tokenizer_fingerprint, encoder.max_length - encoder.num_special_tokens)
    if reason is not None:
        logger.info("dense: encoding document texts, not the index's stored tokens: %s", reason)
        return None
    logger.info("dense: encoding the index's stored document tokens (no document is tokenized again)")
    return tokens


# The DenseConfig fields that decide document embeddings; the others (FAISS type, search parameters, batch size,
# device, query prefix) can change without re-encoding the corpus.
EMBEDDING_FIELDS = ("model", "max_length", "normalize", "doc_prefix", "dtype")


def same_embeddings(old: DenseConfig, new: DenseConfig) -> bool:
    """Whether documents encoded under ``old`` are exactly what ``new`` would produce.

    >>> same_embeddings(DenseConfig(), DenseConfig(faiss_factory="HNSW32", batch_size=8))
    True
    >>> same_embeddings(DenseConfig(), DenseConfig(max_length=128))
    False
    """
    return all(getattr(old, name) == getattr(new, name) for name in EMBEDDING_FIELDS)


class DenseRetriever:
    """Dense first-stage retrieval over a folder written by ``build``; model loads at the first query."""

    component = "dense"
    files = ("embeddings.npy", "index.faiss", "faiss.json", "model.json")

    def __init__(self, folder: Path, config: DenseConfig, docids: Sequence[str], index: Any, where: str) -> None:
        self.folder = folder
        self.config = config
        self.docids = list(docids)
        self._table = DocIdTable(self.docids)
        self.embeddings: np.ndarray = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        self.model_info: dict[str, Any] = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        self.faiss_info: dict[str, Any] = json.loads((folder / "faiss.json").read_text(encoding="utf-8"))
        self.index = index
        self.where = where
        self._cpu_index: Any = index if where == "cpu" else None
        self._encoder: Encoder | None = None
        self._deleted: np.ndarray | None = None  # bool over rows: tombstones every search excludes

    def __repr__(self) -> str:
        return (
            f"DenseRetriever({self.folder}, model={self.config.model!r}, "
            f"faiss={self.config.faiss_factory!r}, num_docs={self.num_docs}, on={self.where})"
        )

    @property
    def num_docs(self) -> int:
        return len(self.docids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    # -- build / load

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        folder: str | Path,
        config: DenseConfig,
        docids: Sequence[str],
        show_progress: bool = False,
        tokens: DocumentTokens | None = None,
        ray: RayEncoding | None = None,
    ) -> DenseRetriever:
        """Encode ``docs`` (row i is ``docids[i]``) in resumable shards, then write the component files.

        ``tokens``: the index's stored document tokens; encoded instead of ``docs`` when :func:`usable_tokens`.
        ``ray``: encode the shards on Ray actors that read the rows from the doc store it names (see
        :mod:`searchkit.distributed`); the files written are the same.
        """
        folder = Path(folder)
        resolve_device(config.device, "dense")  # a bad device fails before any document is read
        folder.mkdir(parents=True, exist_ok=True)
        identity = model_identity(config.model)
        tokens = usable_tokens(tokens, config)
        paths = _encode_shards(docs, folder, config, docids, identity, show_progress, tokens, ray)
        first = np.load(paths[0], mmap_mode="r", allow_pickle=False) if paths else None
        dim = int(first.shape[1]) if first is not None else get_encoder(config).dim
        _concatenate(paths, folder / "embeddings.npy", len(docids), dim)
        rebuild_index(folder, config.faiss_factory, train_sample=config.train_sample)
        write_json_atomic(folder / "model.json", {**identity, "dim": dim})
        shutil.rmtree(folder / "shards", ignore_errors=True)
        return cls.load(folder, config, docids)

    @classmethod
    def from_embeddings(
        cls,
        embeddings: np.ndarray,
        folder: str | Path,
        config: DenseConfig,
        docids: Sequence[str],
        model_info: dict[str, Any] | None = None,
    ) -> DenseRetriever:
        """Write a component from precomputed embeddings (stored fp16) and load it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(folder / "embeddings.npy", np.asarray(embeddings, dtype=np.float16))
        rebuild_index(folder, config.faiss_factory, train_sample=config.train_sample)
        info = model_info if model_info is not None else model_identity(config.model)
        write_json_atomic(folder / "model.json", {**info, "dim": int(embeddings.shape[1])})
        return cls.load(folder, config, docids)

    @classmethod
    def reindex(
        cls, source: str | Path, folder: str | Path, config: DenseConfig, docids: Sequence[str]
    ) -> DenseRetriever:
        """Build a component with another FAISS type from ``source``'s stored embeddings: no re-encoding.

        Only valid when ``same_embeddings(old_config, config)``; the caller (Index.add) checks that.
        """
        source, folder = Path(source), Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("embeddings.npy", "model.json"):
            shutil.copyfile(source / name, folder / name)
        rebuild_index(folder, config.faiss_factory, train_sample=config.train_sample)
        logger.info("dense: reused the stored embeddings of %s for FAISS %s", source, config.faiss_factory)
        return cls.load(folder, config, docids)

    @classmethod
    def rewrite(
        cls,
        source: DenseRetriever,
        folder: str | Path,
        keep: np.ndarray,
        new_docs: Sequence[Document],
        docids: Sequence[str],
        tokens: DocumentTokens | None = None,
        show_progress: bool = False,
    ) -> DenseRetriever:
        """Write at ``folder`` the component of ``source``'s rows ``keep`` followed by ``new_docs``, encoded with the
        index's own model (the stored tokens of the new rows when ``tokens``, the rewritten tokens component, has
        them and :func:`usable_tokens`, as a build does).

        When every row is kept the new vectors are added to a copy of the FAISS index (ids unchanged); otherwise
        (a compaction) the FAISS index is built again from the kept embeddings, as a fresh build would build it.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = source.config
        keep = np.asarray(keep, dtype=np.int64)
        added = source._encode_new(new_docs, tokens, len(keep), show_progress)
        embeddings = np.concatenate([np.asarray(source.embeddings)[keep], added])
        save_npy_atomic(folder / "embeddings.npy", embeddings)
        shutil.copyfile(source.folder / "model.json", folder / "model.json")
        train_sample = int(source.faiss_info.get("train_sample", config.train_sample))
        if len(keep) == source.num_docs:
            import faiss

            index = faiss.read_index(str(source.folder / "index.faiss"))  # a private copy, not the memory map
            for start in range(0, len(added), _ADD_CHUNK):
                index.add(np.ascontiguousarray(added[start : start + _ADD_CHUNK], dtype=np.float32))
            _write_faiss_atomic(index, folder / "index.faiss")
            write_json_atomic(folder / "faiss.json", {**source.faiss_info, "ntotal": int(index.ntotal)})
        else:
            rebuild_index(folder, config.faiss_factory, train_sample=train_sample)
        logger.info("dense: %d rows kept, %d encoded and added", len(keep), len(added))
        return cls.load(folder, config, docids)

    def _encode_new(
        self, docs: Sequence[Document], tokens: DocumentTokens | None, first_row: int, show_progress: bool
    ) -> np.ndarray:
        """fp16 embeddings of documents to add, by the model that encoded the index (refused when it changed)."""
        if not docs:
            return np.empty((0, self.dim), dtype=np.float16)
        current = model_identity(self.config.model)
        if current.get("weights") and identity_key(current) != identity_key(self.model_info):
            raise ConfigError(
                f"the dense model {self.config.model!r} now has other weights than the one that encoded this index "
                f"({self.model_info.get('resolved')}), so new documents would not be comparable with the others; "
                "update with the same model (Index.open(..., dense_model=PATH)) or rebuild the index"
            )
        from tqdm.auto import tqdm

        encoder = get_encoder(self.config)
        stored = usable_tokens(tokens, self.config)
        with tqdm(total=len(docs), unit="doc", desc="dense encode", disable=not show_progress) as bar:
            if stored is not None:
                ids = encoder.with_special_tokens(stored.rows(range(first_row, first_row + len(docs))))
                vectors = encoder.embed_tokens(ids, progress=bar)
            else:
                vectors = encoder.encode([self.config.doc_prefix + document_text(doc) for doc in docs], progress=bar)
        return np.asarray(vectors).astype(np.float16)

    def set_deleted(self, rows: np.ndarray) -> None:
        """Rows every search must skip (the index's tombstones); they stay in FAISS until a compaction."""
        if len(rows) == 0:
            self._deleted = None
            return
        mask = np.zeros(self.num_docs, dtype=bool)
        mask[rows] = True
        self._deleted = mask

    @classmethod
    def load(cls, folder: str | Path, config: DenseConfig, docids: Sequence[str]) -> DenseRetriever:
        """Open the arrays (embeddings memory-mapped) and the FAISS index (memory-mapped where faiss can,
        :func:`read_faiss_index`); the encoder stays unloaded."""
        folder = Path(folder)
        missing = [name for name in cls.files if not (folder / name).is_file()]
        if missing:
            raise IndexFormatError(f"{folder}: dense component lacks {', '.join(missing)}; rebuild it")
        cpu_index = read_faiss_index(folder / "index.faiss")  # memory-mapped where faiss maps the type
        apply_search_params(cpu_index, nprobe=config.nprobe, ef_search=config.ef_search)
        index, where = place_index(cpu_index, config.device)
        if where != "cpu":
            apply_search_params(index, nprobe=config.nprobe, ef_search=config.ef_search)
        retriever = cls(folder, config, docids, index, where)
        problems = retriever._problems()
        if problems:
            raise IndexFormatError(f"{folder}: " + "; ".join(problems))
        return retriever

    def _problems(self) -> list[str]:
        problems = []
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != self.num_docs:
            problems.append(f"embeddings.npy has shape {self.embeddings.shape}, expected ({self.num_docs}, dim)")
        if self.embeddings.dtype != np.float16:
            problems.append(f"embeddings.npy is {self.embeddings.dtype}, expected float16")
        if self.index.ntotal != self.num_docs:
            problems.append(f"index.faiss holds {self.index.ntotal} vectors, expected {self.num_docs}")
        if self.index.d != self.dim:
            problems.append(f"index.faiss has dimension {self.index.d}, embeddings have {self.dim}")
        if self.model_info.get("dim") != self.dim:
            problems.append(f"model.json says dimension {self.model_info.get('dim')}, embeddings have {self.dim}")
        if self.faiss_info.get("factory") != self.config.faiss_factory:
            problems.append(
                f"index.faiss was built as {self.faiss_info.get('factory')!r}, config says "
                f"{self.config.faiss_factory!r} (rebuild it with rebuild_index)"
            )
        return problems

    def verify(self) -> list[str]:
        """Problems with this component's files and their agreement with the doc ids (empty when sound)."""
        problems = self._problems()
        if self.model_info.get("name") != self.config.model:
            name = self.model_info.get("name")
            problems.append(f"model.json names model {name!r}, config says {self.config.model!r}")
        for start in range(0, self.num_docs, _ADD_CHUNK):
            if not np.isfinite(self.embeddings[start : start + _ADD_CHUNK]).all():
                problems.append(f"embeddings.npy has non-finite values in rows {start}..")
                break
        return problems

    # -- queries

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = get_encoder(self.config)
            current = model_identity(self.config.model)
            if current.get("weights") and identity_key(current) != identity_key(self.model_info):
                logger.warning(
                    "dense: the query encoder %s has other weights than the one that encoded the index (%s)",
                    current.get("resolved"),
                    self.model_info.get("resolved"),
                )
        return self._encoder

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), dim) float32 query embeddings (with ``query_prefix``)."""
        return self.encoder.encode([self.config.query_prefix + query for query in queries])

    def search_vectors(self, vectors: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[list[Hit]]:
        """Top-k hits for each query vector (inner product), ordered by ``sort_hits``; with ``allowed`` (a bool
        mask over rows), among the rows it allows only."""
        ids = self._table.ids
        return [ranking.to_hits(ids) for ranking in self.search_vector_rows(vectors, k, allowed=allowed)]

    def search_vector_rows(self, vectors: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[Ranking]:
        """:meth:`search_vectors` as arrays (row numbers and scores, best first): no Python object per hit."""
        check_k(k)
        if allowed is not None and allowed.shape != (self.num_docs,):
            raise ConfigError(f"allowed must be a bool mask over the {self.num_docs} rows, got shape {allowed.shape}")
        selected = _combine(allowed, self._deleted)
        k = min(k, self.num_docs if selected is None else int(np.count_nonzero(selected)))
        if k == 0 or len(vectors) == 0:
            return [Ranking.empty() for _ in range(len(vectors))]
        index = self.index
        if self.where != "cpu" and (k > GPU_MAX_K or selected is not None):  # no ID selectors on the GPU
            index = self._large_k_index()
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if selected is None:
            scores, rows = index.search(queries, k)
        else:
            scores, rows = _search_selected(index, queries, k, selected, self.config)
        scores = scores.astype(np.float64)
        rows = rows.astype(np.int64, copy=False)
        ties = (scores[:, 1:] == scores[:, :-1]).any(axis=1)
        missing = bool((rows < 0).any())  # FAISS pads with -1 when it finds fewer than k
        results = []
        for q in range(len(rows)):
            row_ids, row_scores = (rows[q][rows[q] >= 0], scores[q][rows[q] >= 0]) if missing else (rows[q], scores[q])
            ranked = sort_ranking(row_ids, row_scores, self._table.keys) if ties[q] else Ranking(row_ids, row_scores)
            results.append(ranked)
        return results

    def _large_k_index(self) -> Any:
        if self._cpu_index is None:
            import faiss

            self._cpu_index = faiss.read_index(str(self.folder / "index.faiss"))
            apply_search_params(self._cpu_index, nprobe=self.config.nprobe, ef_search=self.config.ef_search)
            logger.info("dense: k > %d is searched on the CPU copy of the index", GPU_MAX_K)
        return self._cpu_index

    def search_batch(
        self, queries: Sequence[str], k: int = 10, *, allowed: np.ndarray | None = None
    ) -> list[list[Hit]]:
        """Top-k hits per query (among the rows ``allowed``, a bool mask, allows); an empty query gets no hits."""
        ids = self._table.ids
        return [ranking.to_hits(ids) for ranking in self.search_rows(queries, k, allowed=allowed)]

    def search_rows(self, queries: Sequence[str], k: int = 10, *, allowed: np.ndarray | None = None) -> list[Ranking]:
        """:meth:`search_batch` as arrays (row numbers and scores, best first): what fusion works on."""
        if isinstance(queries, str):
            raise ConfigError("search_batch takes a sequence of query strings, not one string")
        check_k(k)
        results = [Ranking.empty() for _ in queries]
        live = [i for i, query in enumerate(queries) if query.strip()]
        if live:
            found = self.search_vector_rows(self.encode_queries([queries[i] for i in live]), k, allowed=allowed)
            for i, ranking in zip(live, found, strict=True):
                results[i] = ranking
        return results

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def score_rows(self, queries: Sequence[str], rows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Inner products of each query with its candidate rows' stored embeddings (cascade re-scoring)."""
        if len(queries) != len(rows):
            raise ConfigError(f"score_rows got {len(queries)} queries but {len(rows)} row lists")
        out = [np.empty(0, dtype=np.float32) for _ in queries]
        live = [i for i, candidates in enumerate(rows) if len(candidates)]
        if live:
            vectors = self.encode_queries([queries[i] for i in live])
            for i, vector in zip(live, vectors, strict=True):
                picked = np.asarray(rows[i], dtype=np.int64)
                out[i] = np.asarray(self.embeddings[picked], dtype=np.float32) @ vector
        return out
