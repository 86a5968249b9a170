"""Plan an index build before it starts: documents, disk per component, peak RAM, VRAM and encoding time.

:func:`plan_build` reads the corpus through :func:`searchkit.formats.read_corpus` (streamed, one document at a
time) and measures what drives each figure with the code the build itself runs:

- **Counts.** By default every document is read and analyzed. With ``sample=N`` only the first N are, and the
  total is the corpus file's line count (a byte scan; a TSV header left out); with ``scale_to=N`` the total is N
  (e.g. MS MARCO's 8.8M passages planned from a sample). Figures scaled up from a sample are marked *extrapolated*.
- **Disk.** Per document, the doc-store line (:func:`searchkit.index.docstore.doc_line`) and the id; BM25 postings (the
  distinct terms of each document under the build's analyzer, 12 bytes each: score, row, term frequency) and its
  vocabulary (grown by Heaps' law ``V ~ n^beta``, beta fitted on the sample, when extrapolating); stored token ids
  (4 bytes each); fp16 embeddings (``n x dim x 2``); and the FAISS file, whose bytes per vector, per inverted list
  and fixed are *measured* by serializing small indexes of that factory built on random vectors
  (:func:`faiss_size`). ``.npy`` headers and JSON side files are counted. The peak during a build adds the fp16
  dense shards, which are deleted only once embeddings.npy and index.faiss exist.
- **Encoding time** (``measure=True``): :data:`ENCODE_SAMPLE` documents spread over the sample are encoded by the
  build's encoder (:func:`searchkit.models.encoder.get_encoder`) after a warm-up batch; the measured tokens per second
  scale to the corpus's tokens (the build's work grows with tokens, not documents).
- **VRAM** (device cuda): the encoder's peak (``torch.cuda.max_memory_allocated`` around the measured sample,
  else weights plus one batch's activations), and FAISS on the GPU: the index's bytes plus faiss's temporary
  memory (StandardGpuResources reserves up to 1.5 GiB). HNSW stays on the CPU.

Peak RAM is a model of what :meth:`searchkit.index.Index.build` holds at once, phase by phase (bytes; n documents,
T analyzed BM25 terms, P postings, V vocabulary terms, K stored token ids, d embedding dimension)::

    ids     = n * (ID_BYTES + mean id length)                the doc ids list, held for the whole build
    store   = BASE + ids + STORE_DOC_BYTES * n               offsets list + duplicate-id set while storing
    bm25    = BASE + ids + BM25_T * T + BM25_P * P + BM25_N * n + BM25_V * V     analysis, bm25s, postings
    kept    = 12 P + 4 n + 8 V + KEPT_V * V                  the built BM25 arrays and vocabulary stay referenced
    tokens  = BASE + ids + kept + 4 K + 8 n                  every stored token id, in RAM once before saving
    model   = ENCODER + W                                    torch & co. + weights (W), or measured (measure=True)
    shard   = min(n, shard_size) * (chars + SHARD_TOKEN_BYTES * tokens + 4 d)      one shard's texts, ids, vectors
    encode  = BASE + ids + kept + model + WORKSPACE + shard  WORKSPACE: the activations the allocator keeps
    faiss   = BASE + ids + kept + model + WORKSPACE + F      F: embeddings mapped (2 n d) + index + float32 copies
    peak    = max(store, bm25, tokens, encode, faiss)

The constants (:data:`RAM_CONSTANTS`) were calibrated on this machine against builds measured with
``/usr/bin/time -v`` (eval/results/plan_cpu.md): BM25 ones by least squares over builds of several corpora, the
encoder's runtime from SciFact's build. With ``measure=True`` the encoder's resident memory (torch, weights, one
batch) is measured in this process instead, when torch was not loaded before.

>>> plan = plan_build("tests/data/tiny", measure=False)
>>> plan.num_docs, plan.components, plan.extrapolated
(8, ('bm25',), False)
>>> import pathlib, tempfile
>>> from searchkit.index import Index
>>> built = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "tiny")
>>> plan.disk["docstore"] == sum((built.path / name).stat().st_size for name in ("docs.jsonl", "docs.offsets.npy"))
True
>>> try:
...     check_free_disk(plan, "/tmp/tiny-index", free=1000)
... except ConfigError as refused:
...     print(str(refused).split("; ")[-1])
free some space, build elsewhere, or pass --force (force=True) to build anyway
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from searchkit.config import BM25Config, DenseConfig, FilterConfig, TokensConfig
from searchkit.formats import corpus_path, is_irds, read_corpus, read_records
from searchkit.index.measure import (
    ENCODE_SAMPLE,
    NPY_HEADER,
    CorpusStats,
    count_documents,
    device_dtype,
    faiss_size,
    heaps_beta,
    measure_corpus,
    measure_encoding,
    model_dims,
    physical_memory,
    suggest_factories,
    token_counts,
)
from searchkit.models.encoder import get_encoder
from searchkit.models.loading import resolve_model
from searchkit.text.passages import passage_spans
from searchkit.types import ConfigError, Document

logger = logging.getLogger(__name__)


QUICK_SAMPLE = 2000
"""Documents read by the plan :meth:`searchkit.index.Index.build` logs (the total is counted from the file)."""


FAISS_TEMP_MEMORY = 1536 << 20
"""faiss's StandardGpuResources temporary memory on a GPU with more than 8 GiB (its cap)."""


RAM_CONSTANTS: dict[str, float] = {
    # least squares over BM25-only builds of 10 corpora (5k-300k documents, 0.3M-17M terms; within 4% of each),
    # checked on a 1M-document build (within 0.1% given its counts)
    "BASE": 71.8e6,  # interpreter, numpy, bm25s, PyStemmer, searchkit (the fit's intercept)
    "BM25_T": 34.6,  # per analyzed term: flat int32 ids, the int64 temporaries of the postings, bm25s's lists
    "BM25_P": 25.2,  # per posting: bm25s's scores/rows/cols and CSC sort, term frequencies
    "BM25_N": 108.9,  # per document, besides its id: offsets, bm25s's per-document lists
    "BM25_V": 249.1,  # per vocabulary term: the word -> id and term -> id dicts, bm25s's frequency dict and set
    # by construction (object sizes), not fitted
    "ID_BYTES": 64.0,  # a doc id's str object and list slot, besides its characters
    "STORE_DOC_BYTES": 90.0,  # an offset (int object + slot) and the duplicate-id set's slot, while storing
    "KEPT_V": 150.0,  # per vocabulary term the built BM25 retriever keeps (its term -> column dict)
    "SHARD_TOKEN_BYTES": 72.0,  # per model token of a shard: the tokenizer's lists and searchkit's copy (ints)
    # from SciFact's measured dense build (peak 1,962 MiB): ENCODER + WORKSPACE = its peak less the rest of the model
    "ENCODER": 575e6,  # torch, transformers, sentence-transformers, faiss: resident with the model loaded, less W
    # the CPU encoder's activations, as glibc keeps them (searchkit.models.device.tune_cpu_allocator): batches of varied
    # shapes leave the heap at this size, whatever the model (the CPU batch budget bounds its widest activation);
    # a corpus of only some 40 batches stops at about half of it (cranfield, 1,400 documents: overestimated)
    "WORKSPACE": 1245e6,
}
"""The peak-RAM model's constants (see the module docstring), calibrated in eval/results/plan_cpu.md."""


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class FaissOption:
    """What one FAISS factory costs for the planned corpus (sizes measured on small indexes, see faiss_size)."""

    factory: str
    disk: int
    """Bytes of index.faiss."""
    bytes_per_vector: float
    fixed: int
    """Bytes that do not grow with the vectors (header, centroids, inverted-list headers, OPQ matrix)."""
    build_ram: int
    """RAM of the FAISS step: the index, the embeddings it reads (memory-mapped fp16) and its float32 copies."""
    vram: int | None
    """GPU memory if searched on a GPU (index + faiss's temporary memory); None: faiss keeps it on the CPU."""
    search: str


@dataclass(frozen=True)
class BuildPlan:
    """What a build will take: counts, disk per component (bytes), RAM per phase, VRAM, encoding time.

    ``count`` says where ``num_docs`` comes from: ``counted`` (every document read), ``lines`` (the corpus file's
    lines, with ``sampled_docs`` read) or ``target`` (given); ``extrapolated`` when figures are scaled from a sample.
    """

    corpus: str
    num_docs: int
    count: str
    sampled_docs: int
    extrapolated: bool
    components: tuple[str, ...]
    disk: dict[str, int]
    temporary_disk: int
    ram: dict[str, int]
    vram: dict[str, int] = field(default_factory=dict)
    device: str | None = None
    dense: dict[str, Any] = field(default_factory=dict)
    encode: dict[str, Any] = field(default_factory=dict)
    faiss: tuple[FaissOption, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def disk_total(self) -> int:
        """Bytes of the finished index."""
        return sum(self.disk.values())

    @property
    def disk_peak(self) -> int:
        """Bytes on disk at the build's fullest moment (the index plus its temporary shards)."""
        return self.disk_total + self.temporary_disk

    @property
    def peak_ram(self) -> int:
        return max(self.ram.values())

    @property
    def peak_phase(self) -> str:
        return max(self.ram, key=lambda phase: self.ram[phase])

    def summary(self) -> str:
        """One line for a log: documents, disk, peak RAM, encoding time."""
        label = " (extrapolated)" if self.extrapolated else ""
        parts = [
            f"{self.num_docs:,} docs ({self.count}){label}",
            f"disk {human_bytes(self.disk_total)} (peak {human_bytes(self.disk_peak)})",
            f"peak RAM {human_bytes(self.peak_ram)} ({self.peak_phase})",
        ]
        if self.vram:
            parts.append(f"VRAM {human_bytes(max(self.vram.values()))}")
        if self.encode.get("seconds") is not None:
            parts.append(f"encoding {human_seconds(self.encode['seconds'])}")
        return "build plan: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field plus the totals."""
        payload = asdict(self)
        payload.update(disk_total=self.disk_total, disk_peak=self.disk_peak, peak_ram=self.peak_ram)
        payload["peak_phase"] = self.peak_phase
        return payload

    def table(self, free_disk: int | None = None) -> str:
        """The plan for people: aligned rows in human units (``searchkit index plan``)."""
        x = " (extrapolated)" if self.extrapolated else ""
        how = {
            "counted": "counted, every document read",
            "lines": f"lines of the corpus file; text measured on the first {self.sampled_docs:,}",
            "target": f"given; text measured on {self.sampled_docs:,} documents",
        }[self.count]
        lines = [f"plan for {self.corpus}", f"  documents      {self.num_docs:,} ({how})"]
        if self.dense:
            d = self.dense
            lines.append(f"  dense          {d['model']}, dim {d['dim']}, {d['device']} {d['dtype']}, {d['factory']}")
        lines.append(f"disk{x}")
        for name, size in self.disk.items():
            lines.append(f"  {_DISK_LABELS.get(name, name):<34} {human_bytes(size):>10}")
        lines.append(f"  {'total':<34} {human_bytes(self.disk_total):>10}")
        lines.append(f"  {'peak while building (+ shards)':<34} {human_bytes(self.disk_peak):>10}")
        if free_disk is not None:
            lines.append(f"  {'free where it goes':<34} {human_bytes(free_disk):>10}")
        lines.append(
            f"peak RAM{x}: {human_bytes(self.peak_ram)} (phase: {self.peak_phase}; model, see searchkit.index.plan)"
        )
        lines.append("  " + " | ".join(f"{phase} {human_bytes(size)}" for phase, size in self.ram.items()))
        if self.vram:
            lines.append(f"VRAM on {self.device}")
            for name, size in self.vram.items():
                lines.append(f"  {name:<34} {human_bytes(size):>10}")
        if self.encode:
            e = self.encode
            lines.append(
                f"encoding{x}: {human_seconds(e['seconds'])} for {self.num_docs:,} docs on {e['device']} "
                f"({e['dtype']}); measured {e['docs_per_s']:.1f} docs/s, {e['tokens_per_s']:,.0f} tokens/s "
                f"on {e['sample_docs']} docs"
            )
        elif self.dense:
            lines.append("encoding: not measured (measure=False, --no-measure)")
        if self.faiss:
            lines.append(f"FAISS factories for {self.num_docs:,} vectors{x} (sizes measured on small indexes)")
            header = f"{'factory':<24} {'index.faiss':>11} {'B/vector':>9} {'build RAM':>10} {'VRAM (GPU)':>10}"
            lines.append(f"  {header}  search")
            for option in self.faiss:
                vram = human_bytes(option.vram) if option.vram is not None else "CPU only"
                lines.append(
                    f"  {option.factory:<24} {human_bytes(option.disk):>11} {option.bytes_per_vector:>9.1f} "
                    f"{human_bytes(option.build_ram):>10} {vram:>10}  {option.search}"
                )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


_DISK_LABELS = {
    "docstore": "doc store (docs.jsonl + offsets)",
    "docids": "doc ids (docids.txt)",
    "bm25": "bm25/",
    "tokens": "tokens/ (int32 ids + offsets)",
    "dense_embeddings": "dense/embeddings.npy (fp16)",
    "dense_faiss": "dense/index.faiss",
    "dense_passages": "dense/passages.npy (passage -> document)",
    "filters": "filters/",
    "manifest": "manifest + side files",
}


def human_bytes(size: float) -> str:
    """Bytes in binary units, three significant figures.

    >>> human_bytes(999), human_bytes(1536), human_bytes(13.5 * 2**30), human_bytes(800 * 2**20)
    ('999 B', '1.50 KiB', '13.5 GiB', '800 MiB')
    """
    value = float(size)
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1000 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.{2 if abs(value) < 10 else 1 if abs(value) < 100 else 0}f} {unit}"


def human_seconds(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``200000`` -> ``2d7h``.

    >>> human_seconds(95), human_seconds(200000), human_seconds(3.2)
    ('1m35s', '2d7h', '3.2s')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _faiss_option(factory: str, n: int, dim: int, train_sample: int) -> FaissOption:
    size = faiss_size(factory, dim)
    disk = size.bytes(n)
    temporaries = min(n, 65_536) * dim * 6  # an add chunk: fp16 slice + float32 copy
    if size.trained:
        temporaries += min(n, train_sample) * dim * 6  # the training sample: fp16 gather + float32 copy
    build_ram = n * dim * 2 + disk + temporaries
    search = "exact" if factory.strip() == "Flat" else "approximate: " + ("efSearch" if "HNSW" in factory else "nprobe")
    return FaissOption(
        factory=factory,
        disk=disk,
        bytes_per_vector=size.per_vector,
        fixed=round(disk - size.per_vector * n),
        build_ram=build_ram,
        vram=None if "HNSW" in factory else disk + FAISS_TEMP_MEMORY,
        search=search,
    )


# ---------------------------------------------------------------------- the plan
def plan_build(
    corpus: str | Path | Iterable[Document],
    *,
    bm25: BM25Config | None = BM25Config(),  # noqa: B008 - frozen dataclass, safe as a default
    dense: DenseConfig | None = None,
    tokens: TokensConfig | None = None,
    filters: FilterConfig | None = None,
    id_field: str = "_id",
    title_field: str = "title",
    text_field: str = "text",
    metadata_fields: Sequence[str] = (),
    sample: int | None = None,
    scale_to: int | None = None,
    measure: bool = True,
    factories: Sequence[str] | None = None,
) -> BuildPlan:
    """Plan building an index of ``corpus`` with these components (the arguments of Index.build).

    ``sample``: read only the first ``sample`` documents and count the rest by the file's lines; ``scale_to``: plan
    for this many documents (figures extrapolated from those read). ``measure``: encode a sample with the dense
    model to time it, and measure every FAISS factory of the table (``factories``, default
    :func:`suggest_factories` plus the configured one); without it only the configured factory is measured and no
    model is loaded (the plan a build logs). See the module docstring for how each figure is made.
    """

    if sample is not None and sample <= 0:
        raise ConfigError(f"sample must be > 0, got {sample}")
    if scale_to is not None and scale_to <= 0:
        raise ConfigError(f"scale_to must be > 0, got {scale_to}")
    kept = list(dict.fromkeys([*metadata_fields, *(filters.types if filters is not None else ())]))
    label = str(corpus) if isinstance(corpus, str | Path) else f"{type(corpus).__name__} of documents"
    if isinstance(corpus, str | Path):
        docs: Iterable[Document] = read_corpus(
            corpus, id_field=id_field, title_field=title_field, text_field=text_field, metadata_fields=kept
        )
        first_line = _first_record_line(corpus, id_field, title_field, text_field)
    else:
        docs, first_line = corpus, 1
    limited = islice(docs, sample) if sample is not None else docs
    stats = measure_corpus(limited, bm25, filters)
    count = "counted"
    num_docs = stats.docs
    if sample is not None and stats.docs == sample and scale_to is None:
        if not isinstance(corpus, str | Path):
            raise ConfigError("a sample of an in-memory corpus needs scale_to (the number of documents to plan for)")
        counted = count_documents(corpus, first_line)
        if counted is None:
            raise ConfigError(f"{corpus}: cannot count its documents cheaply; give scale_to (--scale-to N)")
        num_docs, count = max(counted, stats.docs), "lines"
    if scale_to is not None:
        num_docs, count = scale_to, "target"
    return _plan(label, num_docs, count, stats, bm25, dense, tokens, filters, measure, factories)


def _first_record_line(corpus: str | Path, id_field: str, title_field: str | None, text_field: str) -> int:
    """The line of a corpus file's first record (2 after a TSV header), so that line counts leave headers out."""

    if is_irds(corpus):
        return 1
    path = corpus_path(corpus)
    assert path is not None
    positional = {2: (id_field, text_field), 3: (id_field, title_field or "title", text_field)}
    first = next(read_records(path, positional, id_field), None)
    return first[0] if first is not None else 1


def _plan(
    corpus: str,
    n: int,
    count: str,
    stats: CorpusStats,
    bm25: BM25Config | None,
    dense: DenseConfig | None,
    tokens: TokensConfig | None,
    filters: FilterConfig | None,
    measure: bool,
    factories: Sequence[str] | None,
) -> BuildPlan:
    c = RAM_CONSTANTS
    s = stats.docs
    scale = n / s
    extrapolated = n != s
    notes: list[str] = []
    per_doc = {
        "store_bytes": stats.store_bytes / s,
        "id_bytes": stats.id_chars / s + 1,
        "chars": stats.chars / s,
    }
    disk: dict[str, int] = {
        "docstore": round(stats.store_bytes * scale) + NPY_HEADER + 8 * (n + 1),
        "docids": round(per_doc["id_bytes"] * n),
    }
    ids_ram = n * (c["ID_BYTES"] + per_doc["id_bytes"])
    ram: dict[str, int] = {"store": round(c["BASE"] + ids_ram + c["STORE_DOC_BYTES"] * n)}
    kept = 0.0
    files = 3
    if bm25 is not None:
        beta = heaps_beta(stats.growth)
        vocab = round(len(stats.vocab) * scale**beta) if extrapolated else len(stats.vocab)
        terms, postings = stats.terms * scale, stats.postings * scale
        per_doc.update(terms=stats.terms / s, postings=stats.postings / s)
        vocab_json = len(json.dumps(stats.vocab, separators=(",", ":"), ensure_ascii=False).encode()) / max(
            1, len(stats.vocab)
        )
        nonoccurrence = NPY_HEADER + 4 * vocab if bm25.method in ("bm25l", "bm25+") else 0
        disk["bm25"] = round(
            3 * (NPY_HEADER + 4 * postings)
            + NPY_HEADER
            + 8 * (vocab + 1)
            + NPY_HEADER
            + 4 * n
            + vocab_json * vocab
            + nonoccurrence
            + _BM25_SIDE_FILES
            + stats.analyzer_json
        )
        files += 7 + bool(nonoccurrence)
        ram["bm25"] = round(
            c["BASE"] + ids_ram + c["BM25_T"] * terms + c["BM25_P"] * postings + c["BM25_N"] * n + c["BM25_V"] * vocab
        )
        kept = 12 * postings + 4 * n + 8 * vocab + c["KEPT_V"] * vocab
        stats_vocab = {"vocab": vocab, "heaps_beta": round(beta, 3) if extrapolated else None}
        per_doc.update({key: value for key, value in stats_vocab.items() if value is not None})
    reservoir = stats.reservoir
    model_tokens: dict[str, tuple[list[int], int]] = {}
    for model in {config.model for config in (dense, tokens) if config is not None}:
        model_tokens[model] = token_counts(model, reservoir)
    if tokens is not None:
        counts, _ = model_tokens[tokens.model]
        stored = n * sum(min(length, tokens.max_length) for length in counts) / max(1, len(counts))
        disk["tokens"] = round(2 * NPY_HEADER + 4 * stored + 8 * (n + 1) + 400)
        files += 3
        ram["tokens"] = round(c["BASE"] + ids_ram + kept + 4 * stored + 8 * n)
        kept += 8 * n
        per_doc["stored_tokens"] = stored / n
    temporary = 0
    vram: dict[str, int] = {}
    encode: dict[str, Any] = {}
    options: list[FaissOption] = []
    device = None
    dense_info: dict[str, Any] = {}
    if dense is not None:
        dims = model_dims(resolve_model(dense.model))
        counts, specials = model_tokens[dense.model]
        vectors = n
        if dense.passages is None:
            lengths = [min(length + specials, dense.max_length) for length in counts]
        else:  # every passage is encoded and stored: rows of embeddings.npy and FAISS are passages
            spans = [passage_spans(length, dense.passages.tokens, dense.passages.stride) for length in counts]
            lengths = [end - start + specials for doc in spans for start, end in doc]
            vectors = round(n * len(lengths) / max(1, len(counts)))
            per_doc["passages"] = len(lengths) / max(1, len(counts))
        tokens_per_doc = sum(lengths) / max(1, len(counts))
        per_doc["model_tokens"] = tokens_per_doc
        if measure:  # first: the encoder's resident memory is measured from before torch loads
            step = max(1, len(reservoir) // ENCODE_SAMPLE)
            encode = measure_encoding(dense, reservoir[::step][:ENCODE_SAMPLE])
            dims.setdefault("dim", encode["dim"])
            encode["seconds"] = n * tokens_per_doc / encode["tokens_per_s"]
        device, dtype = (encode["device"], encode["dtype"]) if encode else device_dtype(dense)
        dim = dims.get("dim") or _loaded_dim(dense)
        weights = dims.get("params", 0) * (4 if dtype == "float32" else 2)
        dense_info = {"model": dense.model, "dim": dim, "device": device, "dtype": dtype}
        dense_info["factory"] = dense.faiss_factory
        disk["dense_embeddings"] = NPY_HEADER + vectors * dim * 2
        if dense.passages is not None:
            disk["dense_passages"] = NPY_HEADER + 8 * (n + 1)
        temporary = math.ceil(n / dense.shard_size) * NPY_HEADER + vectors * dim * 2
        gpu = device.startswith("cuda")
        wanted = list(factories) if factories is not None else (suggest_factories(n, dim) if measure else [])
        if dense.faiss_factory not in wanted:
            wanted.insert(0, dense.faiss_factory)
        options = [_faiss_option(factory, vectors, dim, dense.train_sample) for factory in wanted]
        configured = next(option for option in options if option.factory == dense.faiss_factory)
        disk["dense_faiss"] = configured.disk
        files += 4
        resident = encode.get("resident") or (c["ENCODER"] + weights)
        shard_docs = min(n, dense.shard_size)
        shard = shard_docs * (per_doc["chars"] + c["SHARD_TOKEN_BYTES"] * tokens_per_doc + 4 * dim)
        common = c["BASE"] + ids_ram + kept + resident + c["WORKSPACE"]
        ram["dense encode"] = round(common + shard)
        ram["dense faiss"] = round(common + configured.build_ram)
        if gpu:
            heads = dims.get("heads", 12)
            width = dims.get("intermediate", 4 * dims.get("hidden", dim)) + 4 * dims.get("hidden", dim)
            activations = 16_384 * (width * 2 + heads * dense.max_length * 2)
            vram["dense encoder"] = int(encode.get("vram") or weights + activations)
            if configured.vram is not None:
                vram[f"FAISS {dense.faiss_factory}"] = configured.vram
        elif measure:
            notes.append(f"VRAM: none (device {device}); plan with --device cuda on a GPU machine to see it")
        if measure and encode and not encode.get("resident"):
            notes.append("torch was loaded before the plan: the encoder's resident RAM is the calibrated constant")
    if filters is not None:
        columns = 0.0
        for name, kind in filters.types.items():
            values = stats.filter_values.get(name, set())
            columns += NPY_HEADER + n * (8 if kind == "number" else 4) + sum(len(v) + 2 for v in values) + 40
        disk["filters"] = round(columns + 200)
        files += 1 + 2 * len(filters.types)
    disk["manifest"] = 1100 + 140 * files + (420 if dense is not None else 0)  # + faiss.json, model.json
    physical = physical_memory()
    if physical and max(ram.values()) > physical:
        notes.append(
            f"the peak RAM exceeds this machine's {human_bytes(physical)}: build on a bigger one, or pick a FAISS "
            "factory whose build RAM fits (the table), or build BM25 and dense separately (index add)"
        )
    if extrapolated:
        notes.append(
            f"per-document figures measured on {s:,} documents and scaled to {n:,}"
            + (f"; BM25 vocabulary by Heaps' law (beta {per_doc.get('heaps_beta')})" if bm25 is not None else "")
        )
    return BuildPlan(
        corpus=corpus,
        num_docs=n,
        count=count,
        sampled_docs=s,
        extrapolated=extrapolated,
        components=tuple(
            name
            for name, config in (("bm25", bm25), ("tokens", tokens), ("dense", dense), ("filters", filters))
            if config is not None
        ),
        disk=disk,
        temporary_disk=temporary,
        ram=ram,
        vram=vram,
        device=device,
        dense=dense_info,
        encode=encode,
        faiss=tuple(options),
        stats={key: round(value, 2) if isinstance(value, float) else value for key, value in per_doc.items()},
        notes=tuple(notes),
    )


_BM25_SIDE_FILES = 230 + 330
"""params.index.json, and searchkit.json's config and statistics (its analyzer settings are measured per config)."""


def _loaded_dim(config: DenseConfig) -> int:
    """The embedding dimension from the loaded encoder (a hub model whose folder the plan cannot read)."""

    return int(get_encoder(config).dim)


# ---------------------------------------------------------------------- disk check
def free_disk(output: str | Path) -> tuple[Path, int]:
    """The folder a build of ``output`` writes into (its parent, or the nearest that exists) and its free bytes."""
    where = Path(output).absolute().parent
    while not where.exists() and where != where.parent:
        where = where.parent
    return where, shutil.disk_usage(where).free


def check_free_disk(plan: BuildPlan, output: str | Path, *, free: int | None = None) -> None:
    """ConfigError (one line, naming the sizes and ``--force``) when the build's peak disk exceeds the free space
    where ``output`` goes (``free``: the bytes to assume, else ``shutil.disk_usage`` of output's parent)."""
    where, available = free_disk(output) if free is None else (Path(output).absolute().parent, free)
    if plan.disk_peak <= available:
        return
    raise ConfigError(
        f"{output}: the build needs about {human_bytes(plan.disk_peak)} of disk ({human_bytes(plan.disk_total)} for "
        f"the index, {human_bytes(plan.temporary_disk)} of temporary shards) but {where} has only "
        f"{human_bytes(available)} free; free some space, build elsewhere, or pass --force (force=True) to build anyway"
    )


def check_build(
    corpus: str | Path | Iterable[Document],
    output: Path,
    configs: dict[str, Any],
    fields: dict[str, Any],
    *,
    force: bool = False,
) -> BuildPlan | None:
    """The plan :meth:`searchkit.index.Index.build` logs before it starts, checked against the free disk.

    ``configs``: the components' configs by name (None: not built); ``fields``: the manifest's ``fields`` (``id``,
    ``title``, ``text``, ``metadata``). Cheap: the first :data:`QUICK_SAMPLE` documents are measured and the rest
    counted by the corpus file's lines; no model is loaded. A one-pass iterator of documents (not a list) is not
    planned (None). ConfigError when the plan exceeds the free disk, unless ``force`` (then a warning).
    """
    if not isinstance(corpus, str | Path | Sequence):
        logger.info("build plan: skipped (the corpus is a one-pass iterator)")
        return None
    in_memory = not isinstance(corpus, str | Path)
    try:
        plan = _quick_plan(corpus, configs, fields, in_memory)
    except ConfigError as err:  # e.g. an ir-datasets corpus without a count: the build goes on unplanned
        logger.info("build plan: skipped (%s)", err)
        return None
    logger.info("%s", plan.summary())
    try:
        check_free_disk(plan, output)
    except ConfigError as err:
        if not force:
            raise
        logger.warning("%s (building anyway: force)", err)
    return plan


def _quick_plan(corpus: Any, configs: dict[str, Any], fields: dict[str, Any], in_memory: bool) -> BuildPlan:
    """plan_build without a model: the first QUICK_SAMPLE documents read (of a file, the rest counted by lines)."""
    return plan_build(
        corpus[:QUICK_SAMPLE] if in_memory else corpus,
        bm25=configs.get("bm25"),
        dense=configs.get("dense"),
        tokens=configs.get("tokens"),
        filters=configs.get("filters"),
        id_field=fields.get("id", "_id"),
        title_field=fields.get("title", "title"),
        text_field=fields.get("text", "text"),
        metadata_fields=fields.get("metadata", ()),
        sample=None if in_memory else QUICK_SAMPLE,
        scale_to=len(corpus) if in_memory and len(corpus) > QUICK_SAMPLE else None,
        measure=False,
    )
