"""What the plan of a build measures: the corpus (documents, bytes, analyzed terms and postings, vocabulary growth),
the models (dimensions, token counts, encoding speed on this device), this machine's memory, and the size of a FAISS
index of each factory (measured on small real indexes, then scaled).

Every figure comes from the real code paths: the build's own analyzer and doc-store lines, the real tokenizers and
encoder, faiss's own indexes. :mod:`searchkit.index.plan` turns them into a :class:`~searchkit.index.plan.BuildPlan`.

>>> stats = measure_corpus([Document("a", "solar power"), Document("b", "wind power")], None, None)
>>> stats.docs, stats.chars
(2, 21)
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from searchkit.config import BM25Config, DenseConfig, FilterConfig
from searchkit.formats import corpus_path, document_text, is_irds, open_binary
from searchkit.index.docstore import doc_line
from searchkit.models.device import cpuinfo_bf16_unit
from searchkit.models.encoder import get_encoder
from searchkit.models.loading import resolve_model
from searchkit.models.tokenizers import load_tokenizer
from searchkit.text.analyzers import Analyzer
from searchkit.types import ConfigError, DataError, Document

ENCODE_SAMPLE = 256
"""Documents encoded to measure the encoder's speed (``measure=True``)."""


TOKEN_SAMPLE = 2000
"""Documents (a seeded reservoir over those read) whose model tokens are counted."""


NPY_HEADER = 128
"""Bytes of a ``.npy`` header for the 1-D and 2-D arrays an index stores."""


# ---------------------------------------------------------------------- the corpus
@dataclass
class CorpusStats:
    """What a pass over (part of) the corpus measured."""

    docs: int = 0
    store_bytes: int = 0
    id_chars: int = 0
    chars: int = 0
    terms: int = 0
    postings: int = 0
    vocab: dict[str, int] = field(default_factory=dict)
    growth: list[tuple[int, int]] = field(default_factory=list)  # (docs, vocabulary) at powers of two
    reservoir: list[str] = field(default_factory=list)
    filter_values: dict[str, set[str]] = field(default_factory=dict)
    analyzer_json: int = 0
    seconds: float = 0.0


def measure_corpus(docs: Iterable[Document], bm25: BM25Config | None, filters: FilterConfig | None) -> CorpusStats:
    """One streamed pass: doc-store bytes, ids, BM25 terms and postings (the build's analyzer), a text reservoir."""

    stats = CorpusStats(filter_values={name: set() for name in (filters.types if filters else {})})
    analyzer = None
    if bm25 is not None:
        analyzer = Analyzer.from_config(bm25)
        stats.analyzer_json = len(json.dumps(analyzer.to_json(), indent=1))
    word_ids: dict[str, int] = {}
    rng = random.Random(0)
    start = time.perf_counter()
    next_mark = 1
    stream = iter(docs)
    while chunk := list(islice(stream, 512)):
        texts = [document_text(doc) for doc in chunk]
        for doc, text in zip(chunk, texts, strict=True):
            stats.docs += 1
            stats.store_bytes += len(doc_line(doc))
            stats.id_chars += len(str(doc.doc_id).encode("utf-8"))
            stats.chars += len(text)
            if len(stats.reservoir) < TOKEN_SAMPLE:
                stats.reservoir.append(text)
            else:
                slot = rng.randrange(stats.docs)
                if slot < TOKEN_SAMPLE:
                    stats.reservoir[slot] = text
            for name, values in stats.filter_values.items():
                value = (doc.metadata or {}).get(name)
                if value is not None and len(values) < 100_000:
                    values.add(json.dumps(value))
        if analyzer is not None:
            flat = array("i")
            ends = analyzer.add_ids(texts, word_ids, stats.vocab, flat)
            ids = np.frombuffer(flat, dtype=np.intc)
            begin = 0
            for end in ends:
                stats.postings += len(np.unique(ids[begin:end]))
                begin = end
            stats.terms += len(ids)
        while stats.docs >= next_mark:  # vocabulary growth, for Heaps' law
            stats.growth.append((next_mark, len(stats.vocab)))
            next_mark *= 2
    stats.growth.append((stats.docs, len(stats.vocab)))
    stats.seconds = time.perf_counter() - start
    if not stats.docs:
        raise DataError("the corpus has no documents")
    return stats


def heaps_beta(growth: list[tuple[int, int]]) -> float:
    """The exponent of Heaps' law ``V = K n^beta`` fitted on the vocabulary's growth over the sample's second half
    (0.5, a typical value, when the sample is too small to say; clamped to [0.3, 1]).

    >>> round(heaps_beta([(2**k, int(10 * 2 ** (0.6 * k))) for k in range(4, 14)]), 2)
    0.6
    """
    points = [(math.log(n), math.log(v)) for n, v in growth if n >= 64 and v > 0]
    points = points[len(points) // 2 :]
    if len(points) < 2:
        return 0.5
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    beta = sum((x - mean_x) * (y - mean_y) for x, y in points) / denominator if denominator else 0.5
    return min(1.0, max(0.3, beta))


def count_lines(path: str | Path) -> int:
    """Lines of a text file (gzip'd or not), by a scan of its bytes: what ``index plan --sample`` counts documents by.

    >>> count_lines("tests/data/tiny/corpus.jsonl")
    8
    """

    lines = 0
    last = b"\n"
    with open_binary(Path(path)) as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def count_documents(corpus: str | Path, first_line: int) -> int | None:
    """Documents of a corpus by a cheap count: its file's lines less the header, or ir-datasets' docs_count."""

    if is_irds(corpus):
        try:
            import ir_datasets

            count = ir_datasets.load(str(corpus)[len("irds:") :]).docs_count()
        except Exception:  # any failure means "unknown": the caller asks for a count
            return None
        return int(count) if count else None
    path = corpus_path(corpus)
    assert path is not None
    return count_lines(path) - (first_line - 1)


# ---------------------------------------------------------------------- models (dense, tokens)
def model_dims(resolved: str) -> dict[str, int]:
    """Embedding dimension, hidden and intermediate sizes, heads and parameter count of a local model folder,
    read from its files (no model loaded): the sentence-transformers modules and safetensors headers."""
    folder = Path(resolved)
    found: dict[str, int] = {}
    if not folder.is_dir():
        return found
    config_file = folder / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        for key, name in (("hidden_size", "hidden"), ("intermediate_size", "intermediate")):
            if isinstance(config.get(key), int):
                found[name] = config[key]
        if isinstance(config.get("num_attention_heads"), int):
            found["heads"] = config["num_attention_heads"]
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text(encoding="utf-8")):
            module_config = folder / str(module.get("path", "")) / "config.json"
            if not module.get("path") or not module_config.is_file():
                continue
            settings = json.loads(module_config.read_text(encoding="utf-8"))
            for key in ("word_embedding_dimension", "out_features"):
                if isinstance(settings.get(key), int):
                    found["dim"] = settings[key]
    params = 0
    for weights in sorted(folder.rglob("*.safetensors")):
        with weights.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        params += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    if params:
        found["params"] = params
    return found


def token_counts(model: str, texts: Sequence[str]) -> tuple[list[int], int]:
    """Model tokens of each text (no special tokens, no truncation) and the special tokens one text gets: the model's
    ``tokenizer.json`` run by the ``tokenizers`` library (what its fast tokenizer wraps; no torch import), else its
    Hugging Face tokenizer."""

    definition = Path(resolve_model(model)) / "tokenizer.json"
    if definition.is_file():
        fast = Tokenizer.from_file(str(definition))
        fast.no_truncation()
        fast.no_padding()
        specials = len(fast.encode("a").ids) - len(fast.encode("a", add_special_tokens=False).ids)
        counts = [len(encoding.ids) for encoding in fast.encode_batch(list(texts), add_special_tokens=False)]
        return counts, specials

    tokenizer = load_tokenizer(model)
    encoded = tokenizer(
        list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    return [len(ids) for ids in encoded["input_ids"]], int(tokenizer.num_special_tokens_to_add(pair=False))


def device_dtype(config: DenseConfig) -> tuple[str, str]:
    """Where and in which dtype the build will encode, by searchkit.models' rules but without importing torch (the
    plan a build logs must not load it early): a GPU device node for ``auto``, the CPU's bf16 flags for ``auto``."""
    device = config.device
    if device == "auto":
        device = "cuda" if Path("/dev/nvidiactl").exists() else "cpu"
    if config.dtype != "auto":
        return device, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[config.dtype]
    if device.startswith("cuda"):
        return device, "float16"

    return device, "bfloat16" if cpuinfo_bf16_unit() else "float32"


def physical_memory() -> int:
    """This machine's RAM in bytes (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):
        return 0


def rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def measure_encoding(config: DenseConfig, texts: Sequence[str]) -> dict[str, Any]:
    """Encode ``texts`` with the build's encoder after a warm-up: seconds, tokens, resident and GPU memory."""

    torch_before = "torch" in sys.modules
    rss_before = rss()
    encoder = get_encoder(config)
    import torch

    encoder.encode(list(texts[:8]))  # warm-up: kernels, allocator
    resident = rss() - rss_before
    cuda = encoder.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    ids = encoder.tokenize(list(texts))
    encoder.embed_tokens(ids)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(row) for row in ids)
    return {
        "device": encoder.device,
        "dtype": encoder.dtype,
        "dim": encoder.dim,
        "sample_docs": len(texts),
        "sample_tokens": tokens,
        "sample_seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
        "resident": None if torch_before else max(0, resident),
        "vram": int(torch.cuda.max_memory_allocated()) if cuda else None,
    }


# ---------------------------------------------------------------------- FAISS
@dataclass(frozen=True)
class FaissSize:
    """Serialized bytes of a FAISS factory: ``fixed + per_list * nlist + per_vector * n``."""

    factory: str
    fixed: float
    per_list: float
    per_vector: float
    nlist: int
    trained: bool

    def bytes(self, num_vectors: int) -> int:
        return round(self.fixed + self.per_list * self.nlist + self.per_vector * num_vectors)


_IVF = re.compile(r"IVF(\d+)")


_MEASURED: dict[tuple[str, int], FaissSize] = {}


def _fast_training(index: Any) -> None:
    """One k-means iteration and no polysemous training wherever the factory trains: the bytes do not change."""
    import faiss

    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        chain: Any = inner.chain
        for position in range(chain.size()):
            transform = faiss.downcast_VectorTransform(chain.at(position))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter, transform.niter_pq, transform.niter_pq_0 = 1, 1, 1
        inner = faiss.downcast_index(inner.index)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.cp.niter, ivf.cp.min_points_per_centroid = 1, 1
        inner = faiss.downcast_index(ivf)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    quantizer = getattr(inner, "pq", None)
    if quantizer is not None:
        quantizer.cp.niter, quantizer.cp.min_points_per_centroid = 1, 1


def faiss_size(factory: str, dim: int) -> FaissSize:
    """Measure how ``factory``'s serialized size grows, on random unit vectors of dimension ``dim``.

    Two sizes with 2,000 and 4,000 vectors give the bytes per vector; for an IVF factory a second index with
    more lists gives the bytes per list, so ``IVF65536`` is measured with 16 and 64 lists and extrapolated to its
    own count. Training uses one k-means iteration (sizes do not depend on it). Cached per (factory, dim).

    >>> size = faiss_size("Flat", 8)
    >>> size.per_vector, size.bytes(1000) - size.bytes(0)
    (32.0, 32000)
    """
    key = (factory, dim)
    if key in _MEASURED:
        return _MEASURED[key]
    import faiss

    match = _IVF.search(factory)
    nlist = int(match.group(1)) if match else 0
    rng = np.random.default_rng(0)
    train_points = 10_000 if "OPQ" in factory else 4_096
    vectors = rng.standard_normal((max(train_points, 4_000), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def sizes(lists: int, counts: Sequence[int]) -> tuple[list[int], bool]:
        spec = _IVF.sub(f"IVF{lists}", factory) if nlist else factory
        try:
            index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ConfigError(f"invalid FAISS factory {factory!r}: {str(err).splitlines()[-1]}") from None
        trained = not index.is_trained
        if trained:
            _fast_training(index)
            index.train(vectors[:train_points])
        out, added = [], 0
        for count in counts:
            index.add(vectors[added:count])
            added = count
            out.append(int(faiss.serialize_index(index).nbytes))
        return out, trained

    (small, large), trained = sizes(16, (2_000, 4_000))
    per_vector = (large - small) / 2_000
    per_list = 0.0
    if nlist:
        (more,), _ = sizes(64, (2_000,))
        per_list = (more - small) / (64 - 16)
    fixed = small - per_vector * 2_000 - per_list * (16 if nlist else 0)
    result = FaissSize(factory, fixed, per_list, per_vector, nlist, trained)
    _MEASURED[key] = result
    return result


def suggest_factories(num_docs: int, dim: int) -> list[str]:
    """Flat, HNSW32, IVF-Flat, IVF-PQ and OPQ+IVF-PQ for ``num_docs`` vectors: nlist the power of two nearest
    ``4 sqrt(n)`` (FAISS's guideline) but at most ``n / 39`` (its training minimum), m sub-quantizers of 8
    dimensions; the PQ ones only from 256 vectors (a PQ's k-means needs 256 points).

    >>> suggest_factories(8_800_000, 384)
    ['Flat', 'HNSW32', 'IVF16384,Flat', 'IVF16384,PQ48', 'OPQ48,IVF16384,PQ48']
    >>> suggest_factories(100, 384)
    ['Flat', 'HNSW32', 'IVF2,Flat']
    """
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(num_docs))))
    while nlist > 1 and nlist * 39 > num_docs:
        nlist //= 2
    m = max(divisor for divisor in range(1, max(1, dim // 8) + 1) if dim % divisor == 0)
    factories = ["Flat", "HNSW32", f"IVF{nlist},Flat"]
    if num_docs >= 256:
        factories += [f"IVF{nlist},PQ{m}", f"OPQ{m},IVF{nlist},PQ{m}"]
    return factories
