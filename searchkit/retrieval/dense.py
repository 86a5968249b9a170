"""Dense retrieval: a sentence-transformers encoder and a FAISS inner-product index over its embeddings.

Files this component writes in the folder it is given (the index owns the manifest and checksums)::

    embeddings.npy   fp16 (num_docs, dim), row i is docids[i]; other FAISS types are built from it
    index.faiss      faiss.write_index of the CPU form of ``DenseConfig.faiss_factory`` (inner product)
    faiss.json       how index.faiss was built: factory, metric, ntotal, dim, train_sample, seed, train_rows,
                     faiss_version, parts, mmap (whether faiss memory-maps the type: then loads map it)
    model.json       the encoder's identity (name, where it resolved, sha256 of its weight files), dim, and the
                     query-side settings (query_prefix, normalize, max_length) the manifest must agree with
    passages.npy     only with ``DenseConfig.passages``: int64 (num_docs + 1,), document row i's passages are
                     embeddings rows passages[i]:passages[i + 1] (at least one each); FAISS holds every passage
    shards/          only during a build: shard-00000.npy ... (fp16) + state.json, for resuming

Encoding keeps tokenization apart from the model call (texts -> token ids -> batches sorted by length -> the
SentenceTransformer modules), runs fp16 on a GPU and fp32 on the CPU. When the index stores its documents' token ids
(the ``tokens`` component, :mod:`searchkit.retrieval.tokens`) from the encoder's own tokenizer, they are encoded instead
of the texts (:func:`usable_tokens`): no document is read or tokenized again. Heavy libraries (torch, faiss,
sentence-transformers) are imported inside functions, and the model loads at the first query, not at ``load``.

Passages (``DenseConfig.passages``, :mod:`searchkit.text.passages`): every document is split into overlapping token
windows, each encoded on its own; embeddings and FAISS hold passage vectors, ``passages.npy`` maps them to their
documents. A search fetches passages until it has enough distinct documents, and scores each document found by its
best passage (``max``, MaxP, over all its passages, from the stored embeddings) or by its first (``first``, FirstP:
FAISS then searches first passages only). Everything outside this module sees document rows. Without passages a
document is cut to ``max_length`` tokens, and the build logs how many were.

Rows are FAISS ids: row i of the index is vector i (a document's row when there are no passages). An update
(:meth:`DenseRetriever.rewrite`) appends the new documents' vectors after the others, so every id stays what it
was; a deleted row stays in FAISS as a tombstone (:meth:`DenseRetriever.set_deleted`) that searches exclude with an
ID selector, until a compaction rebuilds the FAISS index from the kept embeddings (no re-encoding). A metadata
filter (``allowed``) is the same kind of selector, so the top k is taken among the allowed rows only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import DenseConfig
from searchkit.faults import checkpoint
from searchkit.formats import document_text, save_npy_atomic, write_json_atomic
from searchkit.models.device import resolve_device
from searchkit.models.encoder import Encoder, get_encoder
from searchkit.models.loading import identity_key, model_identity
from searchkit.models.tokenizers import UNKNOWN_SAMPLE, load_tokenizer, unreadable, unreadable_message
from searchkit.ranking.arrays import DocIdTable, Ranking, sort_ranking
from searchkit.retrieval.faiss_index import (
    ADD_CHUNK,
    GPU_MAX_K,
    apply_search_params,
    combine_masks,
    place_index,
    read_faiss_index,
    rebuild_index,
    reconstruction_problem,
    search_selected,
    write_faiss_atomic,
)
from searchkit.text.passages import aggregate_scores, split_passages
from searchkit.types import (
    ConfigError,
    DataError,
    Document,
    Hit,
    IndexFormatError,
    check_k,
)

if TYPE_CHECKING:
    from searchkit.retrieval.tokens import DocumentTokens


logger = logging.getLogger(__name__)


STATE_VERSION = 1
PASSAGES = "passages.npy"
RESCORE_MARGIN = 8
"""Candidates FAISS returns beyond k, all re-scored from the stored embeddings one query at a time: a query's
scores and top k then never depend on the queries searched with it (FAISS's batched and single-query inner products
differ by ~1e-7, enough to swap near-ties), and a compressed index (PQ, SQ) gets its top k re-ranked exactly."""


ShardWriter = Callable[[int, np.ndarray], None]
"""Saves shard ``number``'s fp16 embeddings (the build's own shard file, then its fault checkpoint)."""


class ShardEncoding(Protocol):
    """Who encodes a build's dense shards when it is not this process (Ray actors:
    :class:`searchkit.distributed.encoding.RayEncoding`), passed down by the caller of the build.

    ``encode_shards`` encodes the shards ``todo`` (number, first row, end row) of the index being built, reading the
    rows itself: the stored ``tokens`` when they are given (the encoder's own tokenizer), else the documents of the
    doc store in ``store``; it calls ``write(number, embeddings)`` for each shard as it arrives, in this process.
    """

    def encode_shards(
        self,
        todo: Sequence[tuple[int, int, int]],
        config: DenseConfig,
        *,
        store: Path,
        tokens: DocumentTokens | None,
        write: ShardWriter,
        progress: Any,
    ) -> None: ...


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
        rows = hi - lo
        if state.get("passages") is not None:
            try:
                counts = np.load(_counts_path(path), allow_pickle=False)
            except (OSError, ValueError):
                continue
            if counts.shape != (hi - lo,) or (counts <= 0).any():
                continue
            rows = int(counts.sum())
        if array.ndim == 2 and array.shape[0] == rows and array.dtype == np.float16:
            done.add(number)
    return done


def _counts_path(shard: Path) -> Path:
    """The passage counts (int64, one per document) saved beside a shard's embeddings when passages are on."""
    return shard.with_name(shard.stem + ".passages.npy")


def _windows(config: DenseConfig) -> list[int] | None:
    """The passage settings that decide the embeddings (tokens, stride), or None without passages (the aggregate is
    a search-time choice: the same vectors serve MaxP and FirstP)."""
    return None if config.passages is None else [config.passages.tokens, config.passages.stride]


class DocumentEncoding:
    """One build's (or update's) way from documents to the rows it stores: every passage (``config.passages``) or
    the document cut to the model's length, counting the cut documents to log them once at the end."""

    def __init__(self, encoder: Encoder, config: DenseConfig) -> None:
        self.encoder = encoder
        self.config = config
        self.room = encoder.max_length - encoder.num_special_tokens
        self.prefix = encoder.document_ids([config.doc_prefix])[0] if config.doc_prefix else []
        passages = config.passages
        if passages is not None and passages.tokens + len(self.prefix) > self.room:
            raise ConfigError(
                f"PassageConfig.tokens={passages.tokens} is more than the dense model reads of a passage "
                f"({self.room - len(self.prefix)} tokens at DenseConfig.max_length={encoder.max_length}); "
                "use fewer tokens or a larger max_length"
            )
        self.documents = 0
        self.truncated = 0

    def encode(
        self, texts: Sequence[str] | None, ids: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(fp32 embeddings of the stored rows, passages per document) of documents given as texts (the document
        text, without ``doc_prefix``) or as token ids without special tokens."""
        if ids is None:  # without passages the prefix is tokenized with the text, as the encoder always did
            prefix = self.config.doc_prefix if self.config.passages is None else ""
            ids = self.encoder.document_ids([prefix + text for text in texts or []])
        self.documents += len(ids)
        passages = self.config.passages
        if passages is None:
            self.truncated += sum(len(row) > self.room for row in ids)
            counts = np.ones(len(ids), dtype=np.int64)
            rows: list[Sequence[int]] = list(ids)
        else:
            windows, counts = split_passages(ids, passages.tokens, passages.stride)
            rows = [[*self.prefix, *row] for row in windows] if self.prefix else list(windows)
        embeddings = self.encoder.embed_tokens(self.encoder.with_special_tokens(rows))
        return embeddings, counts

    def log_truncated(self) -> None:
        """One line when documents were cut to the model's length (never with passages)."""
        if self.truncated:
            logger.warning(
                "dense: %d of %d documents longer than the model's %d tokens were truncated; set passages to "
                "score every part of them (DenseConfig(passages=PassageConfig()), [dense.passages] in a recipe)",
                self.truncated,
                self.documents,
                self.encoder.max_length,
            )


def encode_shards(
    docs: Iterable[Document],
    folder: Path,
    config: DenseConfig,
    docids: Sequence[str],
    identity: dict[str, Any],
    show_progress: bool,
    tokens: DocumentTokens | None = None,
    encoding: ShardEncoding | None = None,
    store: Path | None = None,
) -> list[Path]:

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
        "passages": _windows(config),
    }
    shard_dir = folder / "shards"
    done = _completed_shards(shard_dir, state, bounds)
    if done:
        logger.info("dense: resuming: %d of %d shards already encoded", len(done), len(bounds))
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(shard_dir / "state.json", state)
    logger.info("dense: encoding %d docs in %d shards of %d into %s", n, len(bounds), size, shard_dir)

    if encoding is not None:  # the same shard files, encoded elsewhere (Ray actors) from the rows they read
        if config.passages is not None:
            raise ConfigError("dense passages are encoded in this process only: build without --ray (Ray encoding)")
        if store is None:
            raise ConfigError("an encoding backend needs the doc store folder of the index being built (store=)")
        todo = [(number, lo, hi) for number, (lo, hi) in enumerate(bounds) if number not in done]
        if todo and tokens is None:
            _check_readable(config, list(islice(docs, UNKNOWN_SAMPLE)))

        def write(number: int, embeddings: np.ndarray) -> None:
            save_npy_atomic(shard_dir / f"shard-{number:05d}.npy", embeddings)
            checkpoint("dense.shard")

        with tqdm(total=n, unit="doc", desc="dense encode", disable=not show_progress) as bar:
            bar.update(sum(hi - lo for number, (lo, hi) in enumerate(bounds) if number in done))
            encoding.encode_shards(todo, config, store=store, tokens=tokens, write=write, progress=bar)
        return [shard_dir / f"shard-{number:05d}.npy" for number in range(len(bounds))]
    stream = iter(docs if tokens is None else [Document(doc_id, "") for doc_id in docids])
    paths = []
    checked = False
    documents: DocumentEncoding | None = None
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
            if not checked:  # the first shard to encode: a model that cannot read the corpus would encode noise
                checked = True
                _check_readable(
                    config,
                    chunk[:UNKNOWN_SAMPLE],
                    tokens.rows(range(lo, min(hi, lo + UNKNOWN_SAMPLE))) if tokens is not None else None,
                )
            documents = documents or DocumentEncoding(encoder, config)
            if tokens is not None:
                embeddings, counts = documents.encode(None, tokens.rows(range(lo, hi)))
            else:
                embeddings, counts = documents.encode([document_text(doc) for doc in chunk])
            bar.update(hi - lo)
            if config.passages is not None:
                save_npy_atomic(_counts_path(path), counts)
            save_npy_atomic(path, embeddings.astype(np.float16))
            checkpoint("dense.shard")
    if next(stream, None) is not None:
        raise DataError(f"the corpus has more documents than the {n} docids")
    if documents is not None:
        documents.log_truncated()
    return paths


def _check_readable(config: DenseConfig, docs: Sequence[Document], ids: Sequence[Sequence[int]] | None = None) -> None:
    """ConfigError when ``config``'s model reads too few of a sample's tokens (more than ``max_unknown`` are its
    unknown token): the documents' texts, or their stored token ids (the encoder's own tokenizer's) when given."""
    tokenizer = load_tokenizer(config.model)
    if ids is not None:
        unknown, total = getattr(tokenizer, "unk_token_id", None), sum(len(row) for row in ids)
        share = sum(list(row).count(unknown) for row in ids) / total if total and unknown is not None else 0.0
        found = share if share > config.max_unknown else None
        count = len(ids)
    else:
        found, count = unreadable(tokenizer, [document_text(doc) for doc in docs], config.max_unknown), len(docs)
    if found is not None:
        raise ConfigError(unreadable_message("dense model", config.model, found, count, "this corpus"))


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


def _passage_offsets(counts: np.ndarray) -> np.ndarray:
    """``passages.npy`` from the passages per document: document i's rows are offsets[i]:offsets[i + 1]."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def usable_tokens(tokens: DocumentTokens | None, config: DenseConfig) -> DocumentTokens | None:
    """``tokens`` when the encoder of ``config`` can embed them instead of the texts (same tokenizer, no doc prefix,
    no document stored shorter than the encoder reads it), else None (the reason logged)."""
    if tokens is None:
        return None
    if config.doc_prefix:
        reason: str | None = f"DenseConfig.doc_prefix={config.doc_prefix!r} is not in them"
    else:
        encoder = get_encoder(config)
        if config.passages is None:
            reason = tokens.mismatch(encoder.tokenizer_fingerprint, encoder.max_length - encoder.num_special_tokens)
        else:  # every token of a document: usable when no stored document was cut
            reason = tokens.mismatch(encoder.tokenizer_fingerprint, 0)
            if reason is None and not tokens.complete():
                reason = f"passages read every token of a document, the index stores at most {tokens.max_length}"
    if reason is not None:
        logger.info("dense: encoding document texts, not the index's stored tokens: %s", reason)
        return None
    logger.info("dense: encoding the index's stored document tokens (no document is tokenized again)")
    return tokens


# The DenseConfig fields that decide document embeddings; the others (FAISS type, search parameters, batch size,
# device, query prefix) can change without re-encoding the corpus.
EMBEDDING_FIELDS = ("model", "max_length", "normalize", "doc_prefix", "dtype")
"""With the passage windows (tokens, stride; not the aggregate), compared by :func:`same_embeddings`."""
QUERY_FIELDS = ("query_prefix", "normalize", "max_length")
"""The DenseConfig settings queries are encoded with: recorded in model.json at build and checked against the
manifest's config on every open, so an edited manifest cannot change how queries are encoded."""


def model_record(identity: dict[str, Any], config: DenseConfig, dim: int) -> dict[str, Any]:
    """``model.json``: the encoder's identity, the embeddings' dimension and the query-side settings."""
    return {**identity, "dim": dim, "query": {name: getattr(config, name) for name in QUERY_FIELDS}}


def same_embeddings(old: DenseConfig, new: DenseConfig) -> bool:
    """Whether documents encoded under ``old`` are exactly what ``new`` would produce.

    >>> same_embeddings(DenseConfig(), DenseConfig(faiss_factory="HNSW32", batch_size=8))
    True
    >>> same_embeddings(DenseConfig(), DenseConfig(max_length=128))
    False
    """
    same = all(getattr(old, name) == getattr(new, name) for name in EMBEDDING_FIELDS)
    return same and _windows(old) == _windows(new)


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
        self._queries_checked = False
        self.passage_offsets: np.ndarray | None = None  # with passages: document i's rows are [i]:[i + 1]
        if (folder / PASSAGES).is_file():
            self.passage_offsets = np.load(folder / PASSAGES, allow_pickle=False)
        self._passage_docs: np.ndarray | None = None

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

    @property
    def num_vectors(self) -> int:
        """Rows of embeddings.npy and vectors in FAISS: the passages, or one per document without them."""
        return int(self.embeddings.shape[0])

    @property
    def passage_docs(self) -> np.ndarray:
        """The document row of every stored vector (int64, ``num_vectors``): the passage -> document map."""
        if self._passage_docs is None:
            if self.passage_offsets is None:
                self._passage_docs = np.arange(self.num_vectors, dtype=np.int64)
            else:
                counts = np.diff(self.passage_offsets)
                self._passage_docs = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        return self._passage_docs

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest records beside the config: the number of passages, when documents are split."""
        return {} if self.passage_offsets is None else {"num_passages": self.num_vectors}

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
        encoding: ShardEncoding | None = None,
        store: Path | None = None,
    ) -> DenseRetriever:
        """Encode ``docs`` (row i is ``docids[i]``) in resumable shards, then write the component files.

        ``tokens``: the index's stored document tokens; encoded instead of ``docs`` when :func:`usable_tokens`.
        ``encoding``: who encodes the shards when not this process (:class:`ShardEncoding`, e.g. Ray actors), reading
        the rows from the stored tokens or the doc store in ``store``; the files written are the same.
        """
        folder = Path(folder)
        resolve_device(config.device, "dense")  # a bad device fails before any document is read
        folder.mkdir(parents=True, exist_ok=True)
        identity = model_identity(config.model)
        tokens = usable_tokens(tokens, config)
        paths = encode_shards(docs, folder, config, docids, identity, show_progress, tokens, encoding, store)
        first = np.load(paths[0], mmap_mode="r", allow_pickle=False) if paths else None
        dim = int(first.shape[1]) if first is not None else get_encoder(config).dim
        num_rows = len(docids)
        if config.passages is not None:
            counts = [np.load(_counts_path(path), allow_pickle=False) for path in paths]
            offsets = _passage_offsets(np.concatenate([np.zeros(0, dtype=np.int64), *counts]))
            save_npy_atomic(folder / PASSAGES, offsets)
            num_rows = int(offsets[-1])
            logger.info("dense: %d passages of %d documents", num_rows, len(docids))
        _concatenate(paths, folder / "embeddings.npy", num_rows, dim)
        rebuild_index(folder, config.faiss_factory, train_sample=config.train_sample)
        write_json_atomic(folder / "model.json", model_record(identity, config, dim))
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
        write_json_atomic(folder / "model.json", model_record(info, config, int(embeddings.shape[1])))
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
        shutil.copyfile(source / "embeddings.npy", folder / "embeddings.npy")
        (folder / PASSAGES).unlink(missing_ok=True)
        if (source / PASSAGES).is_file():
            shutil.copyfile(source / PASSAGES, folder / PASSAGES)
        recorded = json.loads((source / "model.json").read_text(encoding="utf-8"))
        identity = {key: value for key, value in recorded.items() if key not in ("dim", "query")}
        write_json_atomic(folder / "model.json", model_record(identity, config, int(recorded["dim"])))
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
        added, counts = source._encode_new(new_docs, tokens, len(keep), show_progress)
        kept_rows = source.vector_rows(keep)
        embeddings = np.concatenate([np.asarray(source.embeddings)[kept_rows], added])
        save_npy_atomic(folder / "embeddings.npy", embeddings)
        (folder / PASSAGES).unlink(missing_ok=True)
        if source.passage_offsets is not None:
            kept_counts = np.diff(source.passage_offsets)[keep]
            save_npy_atomic(folder / PASSAGES, _passage_offsets(np.concatenate([kept_counts, counts])))
        shutil.copyfile(source.folder / "model.json", folder / "model.json")
        train_sample = int(source.faiss_info.get("train_sample", config.train_sample))
        if len(keep) == source.num_docs:
            import faiss

            index = faiss.read_index(str(source.folder / "index.faiss"))  # a private copy, not the memory map
            for start in range(0, len(added), ADD_CHUNK):
                index.add(np.ascontiguousarray(added[start : start + ADD_CHUNK], dtype=np.float32))
            write_faiss_atomic(index, folder / "index.faiss")
            write_json_atomic(folder / "faiss.json", {**source.faiss_info, "ntotal": int(index.ntotal)})
        else:
            rebuild_index(folder, config.faiss_factory, train_sample=train_sample)
        logger.info("dense: %d rows kept, %d encoded and added", len(keep), len(added))
        return cls.load(folder, config, docids)

    def vector_rows(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors (passages) of document ``rows``, documents in the given order (int64)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.passage_offsets is None:
            return rows
        starts, ends = self.passage_offsets[rows], self.passage_offsets[rows + 1]
        counts = ends - starts
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return np.arange(int(counts.sum()), dtype=np.int64) + shift

    def _encode_new(
        self, docs: Sequence[Document], tokens: DocumentTokens | None, first_row: int, show_progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """fp16 embeddings of documents to add (their passages, with passages), by the model that encoded the index
        (refused when it changed), and the passages per document."""
        if not docs:
            return np.empty((0, self.dim), dtype=np.float16), np.zeros(0, dtype=np.int64)
        current = model_identity(self.config.model)
        if current.get("weights") and identity_key(current) != identity_key(self.model_info):
            raise ConfigError(
                f"the dense model {self.config.model!r} now has other weights than the one that encoded this index "
                f"({self.model_info.get('resolved')}), so new documents would not be comparable with the others; "
                "update with the same model (Index.open(..., dense_model=PATH)) or rebuild the index"
            )

        documents = DocumentEncoding(get_encoder(self.config), self.config)
        stored = usable_tokens(tokens, self.config)
        with tqdm(total=len(docs), unit="doc", desc="dense encode", disable=not show_progress) as bar:
            if stored is not None:
                vectors, counts = documents.encode(None, stored.rows(range(first_row, first_row + len(docs))))
            else:
                vectors, counts = documents.encode([document_text(doc) for doc in docs])
            bar.update(len(docs))
        documents.log_truncated()
        return np.asarray(vectors).astype(np.float16), counts

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
        problems = self._passage_problems()
        rows = self.num_docs if self.passage_offsets is None or problems else int(self.passage_offsets[-1])
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != rows:
            problems.append(f"embeddings.npy has shape {self.embeddings.shape}, expected ({rows}, dim)")
        if self.embeddings.dtype != np.float16:
            problems.append(f"embeddings.npy is {self.embeddings.dtype}, expected float16")
        if self.index.ntotal != rows:
            problems.append(f"index.faiss holds {self.index.ntotal} vectors, expected {rows}")
        if self.index.d != self.dim:
            problems.append(f"index.faiss has dimension {self.index.d}, embeddings have {self.dim}")
        if self.model_info.get("dim") != self.dim:
            problems.append(f"model.json says dimension {self.model_info.get('dim')}, embeddings have {self.dim}")
        recorded = self.model_info.get("query")
        if isinstance(recorded, dict):  # written since index format 2: the manifest's query settings must be these
            problems.extend(
                f"model.json records {name} {recorded.get(name)!r} for queries, the manifest's config says "
                f"{getattr(self.config, name)!r} (edited?)"
                for name in QUERY_FIELDS
                if recorded.get(name) != getattr(self.config, name)
            )
        if self.faiss_info.get("factory") != self.config.faiss_factory:
            problems.append(
                f"index.faiss was built as {self.faiss_info.get('factory')!r}, config says "
                f"{self.config.faiss_factory!r} (rebuild it with rebuild_index)"
            )
        return problems

    def _passage_problems(self) -> list[str]:
        offsets = self.passage_offsets
        if offsets is None:
            if self.config.passages is not None:
                return [f"the config splits documents into passages but {PASSAGES} is missing (rebuild)"]
            return []
        if self.config.passages is None:
            return [f"{PASSAGES} holds passages but the config has passages=None (edited?)"]
        if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) != self.num_docs + 1:
            return [f"{PASSAGES} is {offsets.dtype} with shape {offsets.shape}, expected int64 ({self.num_docs + 1},)"]
        if int(offsets[0]) != 0 or (np.diff(offsets) <= 0).any():
            return [f"{PASSAGES} does not start at 0 with at least one passage a document"]
        return []

    def verify(self) -> list[str]:
        """Problems with this component's files and their agreement with the doc ids (empty when sound)."""
        problems = self._problems()
        if self.model_info.get("name") != self.config.model:
            name = self.model_info.get("name")
            problems.append(f"model.json names model {name!r}, config says {self.config.model!r}")
        for start in range(0, self.num_vectors, ADD_CHUNK):
            if not np.isfinite(self.embeddings[start : start + ADD_CHUNK]).all():
                problems.append(f"embeddings.npy has non-finite values in rows {start}..")
                break
        if not problems:  # cascade scores from embeddings.npy, search from index.faiss: they must be the same rows
            problem = reconstruction_problem(self.folder / "index.faiss", self.embeddings)
            if problem:
                problems.append(problem)
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
        """(len(queries), dim) float32 query embeddings (with ``query_prefix``), each query encoded alone (the same
        query gets the same vector whatever it is batched with); queries the model cannot read (more than
        ``max_unknown`` unknown tokens) are logged, once per retriever."""
        if not self._queries_checked and queries:
            share = unreadable(self.encoder.tokenizer, list(queries), self.config.max_unknown)
            if share is not None:
                self._queries_checked = True
                logger.warning(
                    "dense: %s",
                    unreadable_message("the dense model", self.config.model, share, len(queries), "the queries"),
                )
        # each query alone: its embedding, hits and scores never depend on the queries searched with it
        return self.encoder.encode([self.config.query_prefix + query for query in queries], alone=True)

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
        selected = combine_masks(allowed, self._deleted)
        k = min(k, self.num_docs if selected is None else int(np.count_nonzero(selected)))
        if k == 0 or len(vectors) == 0:
            return [Ranking.empty() for _ in range(len(vectors))]
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.passage_offsets is not None:
            return self._search_passages(queries, k, selected)
        index = self.index
        if self.where != "cpu" and (k > GPU_MAX_K or selected is not None):  # no ID selectors on the GPU
            index = self._large_k_index()
        wanted = min(k + RESCORE_MARGIN, self.num_docs if selected is None else int(np.count_nonzero(selected)))
        if selected is None:
            _, rows = index.search(queries, wanted)
        else:
            _, rows = search_selected(index, queries, wanted, selected, self.config)
        rows = rows.astype(np.int64, copy=False)
        results = []
        for q in range(len(rows)):
            found = rows[q][rows[q] >= 0]  # FAISS pads with -1 when it finds fewer
            exact = self.score_vector(queries[q], found)
            ranked = sort_ranking(found, exact, self._table.keys)
            results.append(Ranking(ranked.rows[:k], ranked.scores[:k]))
        return results

    def _search_passages(self, queries: np.ndarray, k: int, selected: np.ndarray | None) -> list[Ranking]:
        """Top-k documents by passages: FAISS is asked for passages (first passages only for ``first``) until they
        come from ``k + RESCORE_MARGIN`` distinct documents (or every searchable one), each query on its own after
        the first batched call; the documents found are scored exactly (:meth:`score_vector`)."""
        assert self.passage_offsets is not None and self.config.passages is not None
        starts = self.passage_offsets[:-1]
        mask: np.ndarray | None = None
        if self.config.passages.aggregate == "first":
            mask = np.zeros(self.num_vectors, dtype=bool)
            mask[starts if selected is None else starts[selected]] = True
        elif selected is not None:
            mask = selected[self.passage_docs]
        searchable = self.num_vectors if mask is None else int(np.count_nonzero(mask))
        live = self.num_docs if selected is None else int(np.count_nonzero(selected))
        need = min(k + RESCORE_MARGIN, live)
        per_doc = -(-self.num_vectors // max(1, self.num_docs))  # mean passages a document, rounded up
        wanted = min(searchable, need * per_doc)
        rows = self._search_passage_rows(queries, wanted, mask)
        results = []
        for q in range(len(queries)):
            found, asked = rows[q], wanted
            docs = np.unique(self.passage_docs[found[found >= 0]])
            while len(docs) < need and asked < searchable:  # a query whose passages crowd few documents
                asked = min(searchable, asked * 2)
                found = self._search_passage_rows(queries[q : q + 1], asked, mask)[0]
                docs = np.unique(self.passage_docs[found[found >= 0]])
            ranked = sort_ranking(docs, self.score_vector(queries[q], docs), self._table.keys)
            results.append(Ranking(ranked.rows[:k], ranked.scores[:k]))
        return results

    def _search_passage_rows(self, queries: np.ndarray, wanted: int, mask: np.ndarray | None) -> np.ndarray:
        index = self.index
        if self.where != "cpu" and (wanted > GPU_MAX_K or mask is not None):  # no ID selectors on the GPU
            index = self._large_k_index()
        if mask is None:
            _, rows = index.search(queries, wanted)
        else:
            _, rows = search_selected(index, queries, wanted, mask, self.config)
        result: np.ndarray = rows.astype(np.int64, copy=False)
        return result

    def score_vector(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The inner products of ``vector`` with the stored embeddings of document ``rows`` (float32 from the fp16
        rows, one query at a time; with passages, the best of a document's passages or its first, as
        ``passages.aggregate`` says): every dense score searchkit reports, in search and in cascade, is this one
        number."""
        rows = np.asarray(rows, dtype=np.int64)
        vector = np.asarray(vector, dtype=np.float32)
        if self.passage_offsets is None:
            picked = np.asarray(self.embeddings[rows], dtype=np.float32)
            scores: np.ndarray = (picked @ vector).astype(np.float64)
            return scores
        assert self.config.passages is not None
        if self.config.passages.aggregate == "first":
            first = np.asarray(self.embeddings[self.passage_offsets[rows]], dtype=np.float32)
            return (first @ vector).astype(np.float64)
        passages = np.asarray(self.embeddings[self.vector_rows(rows)], dtype=np.float32)
        counts = self.passage_offsets[rows + 1] - self.passage_offsets[rows]
        return aggregate_scores((passages @ vector).astype(np.float64), counts, "max")

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
                out[i] = self.score_vector(vector, np.asarray(rows[i], dtype=np.int64))
        return out
