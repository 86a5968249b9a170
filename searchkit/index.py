"""The on-disk index bundle: build, open, add components, verify.

Layout of an index folder (everything but the component folders is written by this module)::

    <name>/
      manifest.json        format, format_version (int), searchkit_version, created, num_docs,
                           source (path + sha256), fields, components {name: {config}}, files {relpath: sha256}
      docids.txt           row i of every component is the document on line i
      docs.jsonl           doc store: one JSON object per document ({"_id", "title", "text"}, and "metadata" when
                           the document has any)
      docs.offsets.npy     int64 byte offsets into docs.jsonl (num_rows + 1 entries), memory-mapped: one seek a doc
      deleted.npy          only after an update deleted or replaced documents: the sorted int64 rows that are
                           tombstones (every stage skips them; ``Index.compact`` rewrites the index without them)
      bm25/                BM25Retriever files (bm25s arrays + vocab + analyzer settings + term frequencies)
      tokens/              DocumentTokens files: every document's token ids (int32 ids.npy + int64 offsets.npy,
                           tokenizer.json); the manifest's entry also records the tokenizer's fingerprint
      dense/               DenseRetriever files (embeddings fp16 .npy + index.faiss)
      filters/             FilterColumns files: the declared filterable metadata fields, column-wise

The manifest also records every file's size (``sizes``) and its own sha256 (``checksum``, over the canonical JSON of
the other keys), the ``generation`` (1 for a build, one more for every update, compaction or add) and ``num_rows``
(rows, tombstones included; ``num_docs`` counts the live documents); an index written before they existed still
opens, with the checks it allows.

Updates (:meth:`Index.update`, in :mod:`searchkit.update`) add, replace and delete documents: new documents are
appended as new rows, a deleted or replaced one becomes a tombstone, and every component follows (BM25 scores are
recomputed for the new statistics, new documents are encoded with the index's dense model).

Generations. A build, an add and an update all write a complete new folder (``.<name>.building``; an add hard-links the
files it keeps) and swap it in with ``os.replace``, holding ``.<name>.lock`` (``flock``) so that a second build
or add of the same target fails at once with a clear error. A build that fails leaves neither the target nor the
temp folder behind; an interrupted one (Ctrl-C, or a killed process) keeps the temp folder so that dense encoding
resumes from its finished shards. A process killed between moving the old index aside and moving the new one
in leaves the old one in ``.<name>.old``: the next ``Index.open`` or build of ``<name>`` puts it back.

Opening is a snapshot. :meth:`Index.open` reads the manifest, checks it (schema, checksum, format version),
checks every file's size against it, hashes the files of at most ``OPEN_HASH_LIMIT`` bytes, checks the doc ids
and doc store against each other, loads every component (arrays memory-mapped, cheap shape checks), then reads
the manifest again: if a rebuild swapped the folder meanwhile, it starts over, so an open index never mixes two
generations, and it keeps serving the generation it opened (open files and memory maps outlive the swap).
:meth:`Index.verify` hashes every file and checks every invariant. No pickle anywhere: JSON, ``.npy`` with
``allow_pickle=False``, FAISS's own format, bm25s's arrays.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny"
>>> index = Index.build("tests/data/tiny", out)
>>> index.num_docs, index.document("007").title
(8, 'Leading zeros')
>>> Index.open(out).bm25.search("solar electricity", k=1)[0].doc_id
'd3'
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchkit import __version__
from searchkit.config import (
    BM25Config,
    DenseConfig,
    FilterConfig,
    RayConfig,
    TokensConfig,
    UpdateConfig,
    config_from_dict,
    config_to_dict,
)
from searchkit.faults import checkpoint
from searchkit.formats import id_problem, json_checksum, sha256_file, write_json_atomic
from searchkit.types import ConfigError, DataError, Document, IndexFormatError, SearchkitError

if TYPE_CHECKING:
    from searchkit.bm25 import BM25Retriever
    from searchkit.dense import DenseRetriever
    from searchkit.filters import FilterColumns, FilterSpec
    from searchkit.tokens import DocumentTokens

logger = logging.getLogger(__name__)

FORMAT = "searchkit-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"
DOCSTORE = "docs.jsonl"
OFFSETS = "docs.offsets.npy"
DELETED = "deleted.npy"
BUILD_STATE = "build-state.json"
OPEN_HASH_LIMIT = 16 << 20
"""Files of at most this many bytes are hashed on every open (all of a small index); larger ones only by verify."""
OPEN_WAIT_SECONDS = 10.0
"""How long Index.open waits for a concurrent swap (a build or add of the same folder) to settle."""


@dataclass(frozen=True)
class _ComponentSpec:
    config_class: type
    module: str
    class_name: str

    def retriever_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.class_name)


# What a setting added to a config later meant for manifests written before it existed: dense embeddings were
# encoded in fp32 then (the CPU default; no GPU index was ever recorded without a dtype).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"dense": {"dtype": "fp32"}}

# Components in the order they are built (tokens before dense, which encodes them); the key is the folder's name.
COMPONENTS: dict[str, _ComponentSpec] = {
    "bm25": _ComponentSpec(BM25Config, "searchkit.bm25", "BM25Retriever"),
    "tokens": _ComponentSpec(TokensConfig, "searchkit.tokens", "DocumentTokens"),
    "dense": _ComponentSpec(DenseConfig, "searchkit.dense", "DenseRetriever"),
    "filters": _ComponentSpec(FilterConfig, "searchkit.filters", "FilterColumns"),
}
RETRIEVERS = ("bm25", "dense")
"""The components that retrieve (an index needs one of them); the others serve them."""


def _checksums(folder: Path, previous: Index | None = None) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest, keyed by POSIX relative path.

    A file hard-linked from ``previous`` (the generation a new one is made from: same inode) keeps the digest its
    manifest records, so an update hashes only the files it wrote.
    """
    known: dict[str, str] = previous.manifest["files"] if previous is not None else {}
    digests = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == MANIFEST:
            continue
        relpath = path.relative_to(folder).as_posix()
        linked = previous is not None and relpath in known and _same_file(path, previous.path / relpath)
        digests[relpath] = known[relpath] if linked else sha256_file(path)
    return digests


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _write_manifest(folder: Path, manifest: dict[str, Any], previous: Index | None = None) -> None:
    """Record every file's sha256 and size, then the manifest's own checksum, and write it atomically."""
    manifest["files"] = _checksums(folder, previous)
    manifest["sizes"] = {relpath: (folder / relpath).stat().st_size for relpath in manifest["files"]}
    manifest.pop("checksum", None)
    manifest["checksum"] = json_checksum(manifest)
    write_json_atomic(folder / MANIFEST, manifest)


def _progress(iterable: Iterable[Any], show: bool, desc: str, total: int | None = None) -> Iterable[Any]:
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="doc", dynamic_ncols=True)


class _DocStore:
    """Documents by row: ``docs.jsonl`` plus memory-mapped offsets, one ``pread`` a document.

    The file stays open from construction on, so the store keeps reading the generation it was opened on even
    after a rebuild swaps the folder; ``pread`` keeps it safe to share between threads.
    """

    _BLOCK = 1 << 20

    def __init__(self, folder: Path) -> None:
        self.path = folder / DOCSTORE
        self.offsets = np.load(folder / OFFSETS, mmap_mode="r", allow_pickle=False)
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        self.size = os.fstat(self._fd).st_size

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def problems(self, num_docs: int) -> list[str]:
        """Cheap structural checks: the offsets' header and shape, their ends, and the store's size."""
        offsets = self.offsets
        if offsets.ndim != 1 or offsets.dtype != np.int64:
            return [f"{OFFSETS} is {offsets.dtype} with shape {offsets.shape}, expected int64 ({num_docs + 1},)"]
        if len(offsets) != num_docs + 1:
            return [f"{OFFSETS} describes {len(offsets) - 1} documents, {DOCIDS} has {num_docs}"]
        if int(offsets[0]) != 0 or int(offsets[-1]) != self.size:
            return [f"{DOCSTORE} has {self.size} bytes, {OFFSETS} says {int(offsets[-1])}"]
        return []

    def _read(self, start: int, end: int) -> bytes:
        if not 0 <= start <= end <= self.size:
            raise IndexFormatError(
                f"{self.path}: offsets {start}..{end} outside the file; run `searchkit index verify`"
            )
        return os.pread(self._fd, end - start, start)

    def get(self, rows: Sequence[int]) -> list[Document]:
        return [
            _decode_doc(self._read(int(self.offsets[row]), int(self.offsets[row + 1])), self.path, row) for row in rows
        ]

    def __iter__(self) -> Iterator[Document]:
        rows = len(self)
        row = 0
        while row < rows:
            start = int(self.offsets[row])
            end = row + 1
            while end < rows and int(self.offsets[end + 1]) - start <= self._BLOCK:
                end += 1
            block = self._read(start, int(self.offsets[end]))
            for inner in range(row, end):
                lo, hi = int(self.offsets[inner]) - start, int(self.offsets[inner + 1]) - start
                yield _decode_doc(block[lo:hi], self.path, inner)
            row = end


def doc_line(doc: Document) -> bytes:
    """A document's line in the doc store (its metadata only when it has some, so older stores read the same)."""
    record: dict[str, Any] = {"_id": str(doc.doc_id), "title": doc.title or "", "text": doc.text or ""}
    if doc.metadata:
        if not isinstance(doc.metadata, dict):
            raise DataError(
                f"document {str(doc.doc_id)[:80]!r}: metadata must be a dict, got {type(doc.metadata).__name__}"
            )
        record["metadata"] = doc.metadata
    try:
        return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as err:
        raise DataError(f"document {str(doc.doc_id)[:80]!r}: metadata that JSON cannot hold ({err})") from None


def _decode_doc(raw: bytes, path: Path, row: int) -> Document:
    try:
        record = json.loads(raw)
        metadata = record.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError("metadata is not an object")
        return Document(record["_id"], record["text"], record["title"], metadata)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise IndexFormatError(
            f"{path}: document row {row + 1} is damaged ({type(err).__name__}); run `searchkit index verify`"
        ) from None


def unique_documents(docs: Iterable[Document]) -> Iterator[Document]:
    """``docs`` checked one by one (searchkit Documents with valid ids, ids as strings), ids given twice left out.

    Duplicate ids are collected over the whole input and reported together at its end (first few), so the user fixes
    them in one pass instead of one error per run.
    """
    seen: set[str] = set()
    duplicates: list[str] = []
    for number, doc in enumerate(docs, start=1):
        if not isinstance(doc, Document):
            raise DataError(f"expected a searchkit Document, got {type(doc).__name__} (document {number})")
        doc_id = str(doc.doc_id)
        problem = id_problem(doc_id)
        if problem:
            raise DataError(f"document id {doc_id[:80]!r} (row {number}) {problem}")
        if doc_id in seen:
            duplicates.append(doc_id)
            continue
        seen.add(doc_id)
        yield doc if doc_id is doc.doc_id else doc._replace(doc_id=doc_id)
    if duplicates:
        unique = list(dict.fromkeys(duplicates))
        shown = ", ".join(unique[:5]) + (" ..." if len(unique) > 5 else "")
        raise DataError(
            f"{len(duplicates)} duplicate document ids ({len(unique)} distinct), e.g. {shown}; "
            "make every document id unique"
        )


def _write_docstore(docs: Iterable[Document], folder: Path, show_progress: bool) -> list[str]:
    """Stream documents into the doc store; return the doc ids in row order."""
    docids: list[str] = []
    offsets: list[int] = [0]
    position = 0
    with (folder / DOCSTORE).open("wb") as store, (folder / DOCIDS).open("w", encoding="utf-8") as ids:
        for doc in unique_documents(_progress(docs, show_progress, "storing documents")):
            docids.append(doc.doc_id)
            ids.write(doc.doc_id + "\n")
            line = doc_line(doc)
            store.write(line)
            position += len(line)
            offsets.append(position)
    if not docids:
        raise DataError("the corpus has no documents")
    np.save(folder / OFFSETS, np.asarray(offsets, dtype=np.int64), allow_pickle=False)
    return docids


def _describe_source(corpus: str | Path | Iterable[Document]) -> dict[str, Any]:
    from searchkit.formats import is_irds, source_sha256

    if isinstance(corpus, str | Path):
        path = str(corpus) if is_irds(corpus) else str(Path(corpus).resolve())
        return {"path": path, "sha256": source_sha256(corpus)}
    return {"path": None, "sha256": None}


class Index:
    """A self-describing index folder: doc store, doc ids, and the retrieval components built over them.

    >>> import tempfile, pathlib
    >>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "idx")
    >>> sorted(index.components)
    ['bm25']
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._overrides = overrides or {}
        self.row_ids: list[str] = (path / DOCIDS).read_text(encoding="utf-8").split("\n")
        """Every row's doc id, tombstones included: what row numbers (components, rankings) index."""
        if self.row_ids[-1] == "":
            self.row_ids.pop()
        self._store = _DocStore(path)
        self.deleted_rows: np.ndarray = _load_deleted(path, manifest)
        """The sorted rows that are tombstones (deleted or replaced documents), empty when there are none."""
        self._live_ids: list[str] | None = None
        self._rows: dict[str, int] | None = None
        self._loaded: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_docs(self) -> int:
        """Live documents (rows minus tombstones)."""
        return self.num_rows - len(self.deleted_rows)

    @property
    def num_rows(self) -> int:
        """Rows of every component, tombstones included."""
        return len(self.row_ids)

    @property
    def docids(self) -> list[str]:
        """The live documents' ids, in row order."""
        if not len(self.deleted_rows):
            return self.row_ids
        if self._live_ids is None:
            live = self.live_rows()
            assert live is not None
            self._live_ids = [self.row_ids[row] for row in np.flatnonzero(live).tolist()]
        return self._live_ids

    @property
    def generation(self) -> int:
        """How many builds, adds, updates and compactions made this index (1 for a fresh build; 0 if unrecorded)."""
        return int(self.manifest.get("generation", 0))

    def live_rows(self) -> np.ndarray | None:
        """A bool mask of the rows that are live documents, None when no row is a tombstone."""
        if not len(self.deleted_rows):
            return None
        live = np.ones(self.num_rows, dtype=bool)
        live[self.deleted_rows] = False
        return live

    @property
    def components(self) -> dict[str, Any]:
        """Component name -> its config (a frozen dataclass), as recorded in the manifest."""
        return {
            name: config_from_dict(COMPONENTS[name].config_class, {**LEGACY_DEFAULTS.get(name, {}), **entry["config"]})
            for name, entry in self.manifest["components"].items()
        }

    def component(self, name: str) -> Any:
        """The loaded retriever of component ``name`` (loaded once, on first use)."""
        if name not in self.manifest["components"]:
            available = ", ".join(self.manifest["components"]) or "none"
            raise ConfigError(
                f"{self.path} has no {name} component (it has: {available}); "
                f"add one with `searchkit index build --corpus ... --{name}` or Index.add({name}=...)"
            )
        if name not in self._loaded:
            spec = COMPONENTS[name]
            config: Any = config_from_dict(spec.config_class, self.manifest["components"][name]["config"])
            if self._overrides.get(name):
                config = dataclasses.replace(config, **self._overrides[name])
            loaded = spec.retriever_class().load(self.path / name, config, self.row_ids)
            if len(self.deleted_rows) and hasattr(loaded, "set_deleted"):
                loaded.set_deleted(self.deleted_rows)
            self._loaded[name] = loaded
        return self._loaded[name]

    @property
    def bm25(self) -> BM25Retriever | None:
        return self.component("bm25") if "bm25" in self.manifest["components"] else None

    @property
    def dense(self) -> DenseRetriever | None:
        return self.component("dense") if "dense" in self.manifest["components"] else None

    @property
    def tokens(self) -> DocumentTokens | None:
        """The stored document token ids (:mod:`searchkit.tokens`), when the index has them."""
        return self.component("tokens") if "tokens" in self.manifest["components"] else None

    @property
    def filters(self) -> FilterColumns | None:
        """The filterable metadata columns (:mod:`searchkit.filters`), when the index has them."""
        return self.component("filters") if "filters" in self.manifest["components"] else None

    def allowed_rows(self, spec: FilterSpec) -> np.ndarray | None:
        """The rows a search with filter ``spec`` may return (a bool mask; None: no filter, every live row).

        >>> import tempfile, pathlib
        >>> from searchkit.types import Document
        >>> docs = [Document("a", "x", metadata={"y": 1}), Document("b", "x", metadata={"y": 2})]
        >>> index = Index.build(docs, pathlib.Path(tempfile.mkdtemp()) / "i", filters=FilterConfig(["y:number"]))
        >>> index.allowed_rows("y>1").tolist()
        [False, True]
        """
        from searchkit.filters import parse_filter

        parsed = parse_filter(spec)
        if not parsed:
            return None
        columns = self.filters
        if columns is None:
            raise ConfigError(
                f"{self.path} has no filterable fields, so it cannot apply the filter {parsed}; build it with "
                "--filterable FIELD[:number] (FilterConfig), or add them: Index.add(filters=FilterConfig([...]))"
            )
        mask = columns.mask(parsed)
        live = self.live_rows()
        return mask if live is None else mask & live

    def row(self, doc_id: str) -> int:
        """Row number of live document ``doc_id`` (KeyError naming the id if absent)."""
        if self._rows is None:
            rows = {doc_id: row for row, doc_id in enumerate(self.row_ids)}  # a replaced id: its last row, the live one
            for row in self.deleted_rows.tolist():
                if rows.get(self.row_ids[row]) == row:
                    del rows[self.row_ids[row]]
            self._rows = rows
        try:
            return self._rows[doc_id]
        except KeyError:
            raise KeyError(f"document {doc_id!r} is not in {self.path}") from None

    def document(self, doc_id: str) -> Document:
        """The stored document with id ``doc_id``."""
        return self._store.get([self.row(doc_id)])[0]

    def documents(self, doc_ids: Sequence[str]) -> list[Document]:
        """The stored documents for ``doc_ids``, in that order."""
        return self._store.get([self.row(doc_id) for doc_id in doc_ids])

    def iter_documents(self) -> Iterator[Document]:
        """Every live document in row order (streamed)."""
        if not len(self.deleted_rows):
            return iter(self._store)
        deleted = set(self.deleted_rows.tolist())
        return (doc for row, doc in enumerate(self._store) if row not in deleted)

    def fingerprint(self) -> str:
        """sha256 of manifest.json: identifies the exact index contents (the manifest holds every file's hash)."""
        return sha256_file(self.path / MANIFEST)

    # ------------------------------------------------------------------ build / open
    @classmethod
    def build(
        cls,
        corpus: str | Path | Iterable[Document],
        path: str | Path,
        *,
        bm25: BM25Config | None = BM25Config(),  # noqa: B008 - frozen dataclass, safe as a default
        dense: DenseConfig | None = None,
        tokens: TokensConfig | None = None,
        filters: FilterConfig | None = None,
        overwrite: bool = False,
        show_progress: bool = False,
        id_field: str = "_id",
        title_field: str = "title",
        text_field: str = "text",
        metadata_fields: Sequence[str] = (),
        ray: RayConfig | None = None,
        force: bool = False,
    ) -> Index:
        """Build an index over ``corpus`` (BEIR dir, JSONL/TSV file, ``irds:<id>`` or Documents) at ``path``.

        ``tokens``: also store every document's token ids (tokenized once, before dense encoding, which then uses
        them when the tokenizers match); a reranker with the same tokenizer reads them instead of the texts.
        Documents keep their metadata (BEIR's ``metadata`` object, plus the corpus columns ``metadata_fields`` and the
        ``filters`` fields name); ``filters`` stores the fields it declares column-wise for filtered searches.
        ``ray``: encode the dense component on a Ray cluster (:mod:`searchkit.distributed`; the same files).
        A plan of the build (:func:`searchkit.plan.check_build`: disk, peak RAM) is logged first, and a build whose
        plan exceeds the free disk is refused unless ``force``.

        >>> import tempfile, pathlib
        >>> Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i").num_docs
        8
        """
        from searchkit.formats import read_corpus

        target = Path(path)
        configs = {"bm25": bm25, "tokens": tokens, "dense": dense, "filters": filters}
        if all(configs[name] is None for name in RETRIEVERS):
            raise ConfigError("nothing to build: enable BM25 and/or dense (e.g. drop --no-bm25 or add --dense)")
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
        _check_ray(ray, dense)
        with _build_lock(target):
            _recover(target)
            if target.exists() and not overwrite:
                raise ConfigError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
            source = _describe_source(corpus)
            fields: dict[str, Any] = {"id": id_field, "title": title_field, "text": text_field}
            kept = list(dict.fromkeys([*metadata_fields, *(filters.types if filters is not None else ())]))
            if kept:
                fields["metadata"] = kept
            from searchkit.plan import check_build

            check_build(corpus, target, configs, fields, force=force)
            building = _building_dir(target)
            state = {"source": source, "fields": fields, "components": _config_dicts(configs)}
            _prepare_build_dir(building, state)
            try:
                if isinstance(corpus, str | Path):
                    docs: Iterable[Document] = read_corpus(
                        corpus, id_field=id_field, title_field=title_field, text_field=text_field, metadata_fields=kept
                    )
                else:
                    docs = corpus
                docids = _write_docstore(docs, building, show_progress)
                logger.info("stored %d documents from %s", len(docids), source["path"] or "an iterable")
                checkpoint("index.build.docstore")
                entries: dict[str, Any] = {}
                stored: Any = None
                for name, config in configs.items():
                    if config is not None:
                        built = _build_component(name, config, building, docids, show_progress, tokens=stored, ray=ray)
                        stored = built if name == "tokens" else stored
                        entries[name] = _component_entry(config, built)
                        checkpoint("index.build.component")
                manifest: dict[str, Any] = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "searchkit_version": __version__,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "generation": 1,
                    "num_docs": len(docids),
                    "num_rows": len(docids),
                    "source": source,
                    "fields": fields,
                    "components": entries,
                    "files": {},
                }
                (building / BUILD_STATE).unlink(missing_ok=True)
                _write_manifest(building, manifest)
                checkpoint("index.build.manifest")
                _move_into_place(building, target, "index.build")
            except KeyboardInterrupt:
                logger.warning(
                    "build interrupted; partial work kept in %s: run the same build again to resume", building
                )
                raise
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        logger.info("built %s (%d docs, components: %s)", target, len(docids), ", ".join(manifest["components"]))
        return cls.open(target)

    @classmethod
    def open(
        cls, path: str | Path, *, verify: bool = False, device: str | None = None, dense_model: str | None = None
    ) -> Index:
        """Open an index folder (fast: arrays are memory-mapped, models load on first query).

        Cheap checks run every time (manifest schema and checksum, file sizes, hashes of files up to
        ``OPEN_HASH_LIMIT`` bytes, doc ids against the doc store, component shapes), and every component is loaded,
        so the opened index is one consistent generation even while a rebuild replaces the folder.
        ``verify=True`` also checks every checksum and invariant (see :meth:`verify`). ``device`` (auto, cpu, cuda)
        and ``dense_model`` (a local copy of the same model) override, for this process only, what the manifest
        recorded at build time: an index built on a GPU machine opens on a laptop, and vice versa.
        """
        folder = Path(path)
        overrides: dict[str, Any] = {}
        if device is not None:
            overrides["device"] = device
        if dense_model is not None:
            overrides["model"] = dense_model
        deadline = time.monotonic() + OPEN_WAIT_SECONDS
        while True:
            try:
                index = cls._open_once(folder, {"dense": overrides} if overrides else None)
            except _Swapping:
                if time.monotonic() > deadline:
                    raise IndexFormatError(
                        f"{folder} kept changing for {OPEN_WAIT_SECONDS:.0f} s while being opened (a build or add "
                        "running in a loop?); try again when it is done"
                    ) from None
                time.sleep(0.02)
                continue
            break
        if verify:
            index.verify()
        return index

    @classmethod
    def _open_once(cls, folder: Path, overrides: dict[str, dict[str, Any]] | None) -> Index:
        """One attempt at opening ``folder``; _Swapping when a concurrent swap got in the way."""
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            if _old_dir(folder).is_dir():
                _recover_or_wait(folder)
            raise IndexFormatError(f"{folder}: no such index folder; build one with `searchkit index build`")
        try:
            identity = folder.stat().st_ino  # a swap puts another directory (another inode) at this path
        except FileNotFoundError:
            raise _Swapping from None
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            # the folder was moved aside during the read, and the next generation may already stand at the path
            # (another directory: its inode differs) by the time we look again
            try:
                swapped = folder.stat().st_ino != identity
            except FileNotFoundError:
                swapped = True
            if swapped or _old_dir(folder).exists():
                raise _Swapping from None
            raise IndexFormatError(
                f"{folder} is not a searchkit index (no {MANIFEST}); build one with `searchkit index build`"
            ) from None
        try:
            try:
                manifest = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise IndexFormatError(f"{manifest_path}: corrupt manifest ({err}); rebuild the index") from None
            _check_manifest(manifest, manifest_path)
            problems = _open_problems(folder, manifest)
            if problems:
                raise IndexFormatError(
                    f"{folder}: damaged index: {'; '.join(problems)}; run `searchkit index verify {folder}` "
                    "or rebuild it"
                )
            index = cls(folder, manifest, overrides)
            problems = index._structure_problems()
            if problems:
                raise IndexFormatError(f"{folder}: damaged index: {'; '.join(problems)}; rebuild it")
            index._load_components()
        except (SearchkitError, OSError, ValueError) as err:
            if _changed(manifest_path, raw):
                raise _Swapping from None
            if isinstance(err, SearchkitError):
                raise
            raise IndexFormatError(f"{folder}: damaged index ({err}); run `searchkit index verify {folder}`") from None
        if _changed(manifest_path, raw):
            raise _Swapping
        return index

    def _structure_problems(self) -> list[str]:
        """Cheap invariants between the doc ids, the tombstones, the doc store and the manifest."""
        rows = self.manifest.get("num_rows", self.manifest["num_docs"])
        if self.num_rows != rows:
            return [f"{DOCIDS} has {self.num_rows} lines, manifest says {rows}"]
        if self.num_docs != self.manifest["num_docs"]:
            live = self.manifest["num_docs"]
            return [f"{DELETED} marks {len(self.deleted_rows)} of {rows} rows, the manifest says {live} are live"]
        deleted = self.deleted_rows
        if len(deleted) and (int(deleted[0]) < 0 or int(deleted[-1]) >= rows or bool((np.diff(deleted) <= 0).any())):
            return [f"{DELETED} is not a sorted list of distinct rows in 0..{rows - 1}"]
        return self._store.problems(self.num_rows)

    def _load_components(self) -> None:
        """Load every component now (memory maps, FAISS index): the snapshot this Index object serves."""
        for name in self.manifest["components"]:
            try:
                retriever = self.component(name)
            except ImportError as err:  # an optional library is missing: fail when the component is used
                logger.warning("%s: %s component not loaded (%s)", self.path, name, err)
                continue
            if getattr(retriever, "num_docs", self.num_rows) != self.num_rows:
                raise IndexFormatError(
                    f"{self.path / name}: scores {retriever.num_docs} documents, the index has {self.num_rows} rows"
                )
            problem = self._entry_problem(name, retriever)
            if problem:
                raise IndexFormatError(f"{self.path / name}: {problem}; rebuild it")

    def _entry_problem(self, name: str, retriever: Any) -> str | None:
        """Whether a component's files agree with what its manifest entry records beside the config."""
        describe = getattr(retriever, "manifest_entry", None)
        if describe is None:
            return None
        entry = self.manifest["components"][name]
        for key, value in describe().items():
            if entry.get(key) != value:
                return f"the manifest records {key} {entry.get(key)!r}, its files say {value!r}"
        return None

    def add(
        self,
        *,
        bm25: BM25Config | None = None,
        dense: DenseConfig | None = None,
        tokens: TokensConfig | None = None,
        filters: FilterConfig | None = None,
        overwrite: bool = False,
        show_progress: bool = False,
        ray: RayConfig | None = None,
    ) -> Index:
        """Add (or with ``overwrite`` replace) a component without rebuilding the others; returns the re-opened index.

        The new generation is assembled next to the index (hard links to the files it keeps, the new component
        built beside them, a new manifest) and swapped in whole, so a failure or a crash leaves the index as it
        was and readers never see half of it. Replacing a dense component whose embedding settings are unchanged
        (only the FAISS type or search parameters differ) reuses the stored fp16 embeddings instead of re-encoding.
        Encoding a dense component reads the index's stored tokens when its tokenizer is theirs (no document is
        tokenized again); replacing the tokens with a shorter ``max_length`` of the same tokenizer cuts the stored
        ids instead of tokenizing again.
        """
        given = {"bm25": bm25, "tokens": tokens, "dense": dense, "filters": filters}
        configs = {name: config for name, config in given.items() if config is not None}
        if not configs:
            raise ConfigError(
                "nothing to add: pass bm25=BM25Config(...), dense=DenseConfig(...), tokens=TokensConfig(...) and/or "
                "filters=FilterConfig(...)"
            )
        for name in configs:
            if name in self.manifest["components"] and not overwrite:
                raise ConfigError(f"{self.path} already has a {name} component; pass overwrite=True to replace it")
        _check_ray(ray, dense)
        target = self.path
        with changing(self, "add") as building:
            state = {"add": _config_dicts(configs), "base": self.manifest.get("checksum") or self.fingerprint()}
            _prepare_build_dir(building, state)
            try:
                for entry in target.iterdir():
                    if entry.name not in (MANIFEST, *configs) and not entry.name.startswith("."):
                        _link_tree(entry, building / entry.name)
                stored: Any = self.tokens if "tokens" not in configs else None
                entries: dict[str, Any] = {}
                for name, config in configs.items():
                    if self._reusable(name, config):
                        stage = building / name
                        shutil.rmtree(stage, ignore_errors=True)
                        built = COMPONENTS[name].retriever_class().reindex(target / name, stage, config, self.row_ids)
                    else:
                        built = _build_component(
                            name, config, building, self.row_ids, show_progress, tokens=stored, ray=ray
                        )
                    if name == "bm25" and len(self.deleted_rows):  # built over every row: take the tombstones out
                        built = self._without_tombstones(built, building / name)
                    stored = built if name == "tokens" else stored
                    entries[name] = _component_entry(config, built)
                    checkpoint("index.add.component")
                manifest = json.loads(json.dumps(self.manifest))
                manifest["components"].update(entries)
                manifest["searchkit_version"] = __version__
                manifest["generation"] = self.generation + 1
                if filters is not None:  # an update reads these corpus columns too from now on
                    fields = manifest.setdefault("fields", {})
                    fields["metadata"] = list(dict.fromkeys([*fields.get("metadata", []), *filters.types]))
                (building / BUILD_STATE).unlink(missing_ok=True)
                _write_manifest(building, manifest, self)
                checkpoint("index.add.manifest")
                _move_into_place(building, target, "index.add")
            except KeyboardInterrupt:
                raise
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return Index.open(target)

    def update(
        self,
        add: Iterable[Document] | str | Path | None = None,
        delete: Iterable[str] = (),
        *,
        compact: bool | None = None,
        config: UpdateConfig | None = None,
        show_progress: bool = False,
    ) -> Index:
        """Add documents (a document whose id is in the index replaces it), delete documents by id, and return the
        index re-opened on the new generation; this object keeps serving the old one.

        ``add``: Documents, or a corpus (read with the fields the index was built with). Everything happens in one
        atomic step (see :mod:`searchkit.update`): a failure or a crash leaves the index as it was. Deleted and
        replaced documents stay as tombstones until a compaction: ``compact=True`` compacts now, None (the default)
        when tombstones pass ``UpdateConfig.compact_ratio`` of the rows. BM25 scores afterwards equal those of a
        fresh build of the same documents; new documents are encoded with the index's dense model.

        >>> import tempfile, pathlib
        >>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
        >>> index.update(add=[Document("d1", "Updated text")], delete=["d2"]).document("d1").text
        'Updated text'
        """
        from searchkit.update import update_index

        return update_index(self, add, delete, compact, config or UpdateConfig(), show_progress)

    def add_documents(self, docs: Iterable[Document] | str | Path, **options: Any) -> Index:
        """:meth:`update` with ``add=docs``: add documents, replacing those with the same ids; the new generation."""
        return self.update(add=docs, **options)

    def delete_documents(self, doc_ids: Iterable[str], **options: Any) -> Index:
        """:meth:`update` with ``delete=doc_ids``; the new generation."""
        return self.update(delete=doc_ids, **options)

    def compact(self) -> Index:
        """Rewrite the index without its tombstones (rows renumbered, nothing re-encoded); the new generation, or
        this index when it has none."""
        return self.update(compact=True)

    def _reusable(self, name: str, config: Any) -> bool:
        """Whether the new ``name`` component can be made from the stored one's files (no corpus pass)."""
        if isinstance(config, DenseConfig):
            return self._reusable_embeddings(config)
        if isinstance(config, TokensConfig) and "tokens" in self.manifest["components"]:
            from searchkit.tokens import DocumentTokens

            return DocumentTokens.reusable(self.path / "tokens", config)
        return False

    def _reusable_embeddings(self, config: DenseConfig) -> bool:
        """True when this index's stored embeddings are what ``config`` would encode (only FAISS settings differ)."""
        from searchkit.dense import same_embeddings

        if "dense" not in self.manifest["components"]:
            return False
        if not same_embeddings(self.components["dense"], config):
            return False
        # the same name is not the same model: a folder retrained in place has other weights
        from searchkit.models import identity_key, model_identity

        stored = self.component("dense").model_info
        return bool(identity_key(stored) == identity_key(model_identity(config.model)))

    # ------------------------------------------------------------------ verification
    def verify(self) -> None:
        """Check checksums of every file and the invariants between them; IndexFormatError lists what is wrong."""
        problems: list[str] = []
        expected: dict[str, str] = self.manifest.get("files", {})
        if "checksum" in self.manifest and self.manifest["checksum"] != json_checksum(self.manifest):
            problems.append(f"{MANIFEST} checksum mismatch (edited or damaged)")
        sizes = self.manifest.get("sizes", {})
        for relpath, digest in expected.items():
            file = self.path / relpath
            if not file.is_file():
                problems.append(f"missing file {relpath}")
            elif sha256_file(file) != digest:
                problems.append(f"checksum mismatch in {relpath}")
            elif relpath in sizes and file.stat().st_size != sizes[relpath]:
                problems.append(f"size mismatch in {relpath}")
        for file in self.path.rglob("*"):
            relpath = file.relative_to(self.path).as_posix()
            if file.is_file() and file.name != MANIFEST and relpath not in expected and not relpath.startswith("."):
                problems.append(f"unexpected file {relpath}")
        problems.extend(self._structure_problems())
        if len(self._store) != self.num_rows:
            problems.append(f"{OFFSETS} describes {len(self._store)} documents, {DOCIDS} has {self.num_rows}")
        elif (self.path / DOCSTORE).stat().st_size != int(self._store.offsets[-1]):
            problems.append(f"{DOCSTORE} size does not match {OFFSETS}")
        if not problems:
            problems.extend(self._row_problems())
        if not problems:
            for name in self.manifest["components"]:
                try:
                    problems.extend(f"{name}: {problem}" for problem in self.component(name).verify())
                    problem = self._entry_problem(name, self.component(name))
                    if problem:
                        problems.append(f"{name}: {problem}")
                    deleted = getattr(self.component(name), "deleted_rows", None)
                    if deleted is not None and not np.array_equal(deleted(), self.deleted_rows):
                        problems.append(f"{name}: its deleted rows are not the index's {DELETED}")
                except Exception as err:  # a component that cannot even load is a verification failure
                    problems.append(f"{name}: cannot load ({err})")
        if problems:
            raise IndexFormatError(
                f"{self.path} failed verification: " + "; ".join(problems) + ". Rebuild it with `searchkit index build`"
            )

    def _row_problems(self) -> list[str]:
        """Rows against the doc store: every row's id is its stored document's, and no two live rows share an id."""
        problems: list[str] = []
        for row, (doc_id, doc) in enumerate(zip(self.row_ids, self._store, strict=True)):
            if doc.doc_id != doc_id:
                problems.append(f"row {row + 1} of {DOCIDS} is {doc_id!r}, {DOCSTORE} holds {doc.doc_id!r} there")
                break
        if len(set(self.docids)) != self.num_docs:
            problems.append("two live rows hold the same document id")
        return problems

    def _without_tombstones(self, built: Any, folder: Path) -> Any:
        """A BM25 component built over every row, rewritten with the tombstones deleted (not counted, no postings)."""
        from searchkit.bm25 import BM25Retriever

        staging = folder.with_name(folder.name + ".tmp")
        dead = np.zeros(self.num_rows, dtype=bool)
        dead[self.deleted_rows] = True
        rewritten = BM25Retriever.rewrite(built, staging, np.arange(self.num_rows), dead, [], self.row_ids)
        shutil.rmtree(folder)
        os.replace(staging, folder)
        return BM25Retriever.load(folder, rewritten.config, self.row_ids)

    def info(self) -> dict[str, Any]:
        """A summary for humans and `searchkit index info`: manifest minus file hashes, plus sizes on disk."""
        summary = {key: value for key, value in self.manifest.items() if key != "files"}
        summary["path"] = str(self.path)
        summary["size_bytes"] = sum(file.stat().st_size for file in self.path.rglob("*") if file.is_file())
        summary["fingerprint"] = self.fingerprint()
        return summary


# ---------------------------------------------------------------------- helpers
class _Swapping(Exception):
    """Internal: the folder was swapped by a concurrent build or add while it was being opened; try again."""


def _building_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.building"


def _old_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` (an exclusive ``flock``) for a build or add; a second one fails at once.

    The kernel drops the lock when its process dies, so a killed build never blocks the next one. The file is
    removed on release; a process that opened it just before is told apart by its inode and takes a new one.
    """
    import fcntl

    path = _lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{target}: another build or add of this index is running (pid {holder}, lock {path}); "
                "wait for it to finish, then try again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def changing(index: Index, what: str) -> Iterator[Path]:
    """Hold the lock of ``index``'s folder for an add or update (a killed swap undone first) and yield the folder to
    assemble the new generation in; ConfigError when the folder no longer holds the generation ``index`` opened."""
    with _build_lock(index.path):
        _recover(index.path)
        if _read_manifest(index.path) != index.manifest:
            raise ConfigError(f"{index.path} changed since it was opened; open it again and repeat the {what}")
        yield _building_dir(index.path)


def _recover(target: Path) -> None:
    """Under the lock: undo a swap a killed process left half done (the previous index back in place)."""
    old = _old_dir(target)
    if not old.is_dir():
        return
    if not target.exists() and (old / MANIFEST).is_file():
        logger.warning("%s: a build or add was killed while swapping; restored the previous index", target)
        os.replace(old, target)
    else:
        shutil.rmtree(old, ignore_errors=True)


def _recover_or_wait(target: Path) -> None:
    """Open found ``target`` missing but ``.<name>.old`` present: a swap is running (wait) or was killed (undo)."""
    try:
        with _build_lock(target):
            _recover(target)
    except (ConfigError, OSError):
        pass  # a live build or add holds the lock (it is between its two renames), or the folder is read-only
    raise _Swapping


def _load_deleted(folder: Path, manifest: dict[str, Any]) -> np.ndarray:
    """The tombstone rows the manifest lists (``deleted.npy``), as a sorted int64 array; empty without one."""
    if DELETED not in manifest.get("files", {}):
        return np.zeros(0, dtype=np.int64)
    try:
        deleted = np.load(folder / DELETED, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{folder / DELETED}: unreadable ({err}); run `searchkit index verify`") from None
    if deleted.ndim != 1 or deleted.dtype != np.int64:
        raise IndexFormatError(f"{folder / DELETED}: {deleted.dtype}{deleted.shape}, expected int64 rows")
    return deleted


def _read_manifest(folder: Path) -> Any:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _changed(manifest_path: Path, raw: bytes) -> bool:
    """Whether the manifest is no longer the one read at the start of an open (the folder was swapped)."""
    try:
        return manifest_path.read_bytes() != raw
    except OSError:
        return True


def _open_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Cheap checks of the files against the manifest: present, recorded size, sha256 when small."""
    problems: list[str] = []
    sizes: dict[str, int] = manifest.get("sizes", {})
    for relpath, digest in manifest["files"].items():
        file = folder / relpath
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            problems.append(f"missing file {relpath}")
            continue
        if relpath in sizes and size != sizes[relpath]:
            problems.append(f"{relpath} has {size} bytes, the manifest says {sizes[relpath]}")
        elif size <= OPEN_HASH_LIMIT and sha256_file(file) != digest:
            problems.append(f"checksum mismatch in {relpath}")
    for required in (DOCIDS, DOCSTORE, OFFSETS):
        if required not in manifest["files"]:
            problems.append(f"the manifest lists no {required}")
    return problems


def _link_tree(source: Path, destination: Path) -> None:
    """Hard-link ``source`` (a file or a folder, recursively) at ``destination``; copy where links fail.

    Index files are never modified in place (every write is a new file moved over the old one), so two
    generations may share them.
    """
    if source.is_dir():
        destination.mkdir(exist_ok=True)
        for child in source.iterdir():
            _link_tree(child, destination / child.name)
        return
    if destination.exists():
        return
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _config_dicts(configs: dict[str, Any]) -> dict[str, Any]:
    return {name: config_to_dict(config) for name, config in configs.items() if config is not None}


def _prepare_build_dir(building: Path, state: dict[str, Any]) -> None:
    """Create the temp build folder, keeping an interrupted build of the same inputs (for resume).

    Only an exact match of source, fields and configs is resumed; anything else starts clean.
    """
    state_file = building / "build-state.json"
    if building.exists():
        previous = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            previous = json.loads(state_file.read_text(encoding="utf-8"))
        if previous == json.loads(json.dumps(state)):
            logger.info("resuming the interrupted build in %s", building)
            return
        shutil.rmtree(building)
    building.mkdir(parents=True)
    write_json_atomic(state_file, state)


def _component_entry(config: Any, built: Any) -> dict[str, Any]:
    """A component's manifest entry: its config, plus what the component records beside it (``manifest_entry``)."""
    describe = getattr(built, "manifest_entry", None)
    return {"config": config_to_dict(config), **(describe() if describe is not None else {})}


def _check_ray(ray: RayConfig | None, dense: DenseConfig | None) -> None:
    """Before any work: Ray is installed when asked for (a one-line error naming the extra otherwise)."""
    if ray is None:
        return
    from searchkit.distributed import require_ray

    require_ray()
    if dense is None:
        logger.info("ray: no dense component to encode; the build runs in this process")


def _build_component(
    name: str,
    config: Any,
    folder: Path,
    docids: list[str],
    show_progress: bool,
    *,
    subfolder: bool = True,
    tokens: Any = None,
    ray: RayConfig | None = None,
) -> Any:
    """Build component ``name`` from the doc store of the index being built (streamed again from disk); returns it.

    ``tokens``: the index's stored document tokens, handed to the dense component (it encodes them when it can).
    ``ray``: the dense component is encoded on Ray (its actors read the doc store themselves).
    """
    target = folder / name if subfolder else folder
    target.mkdir(exist_ok=True)
    store_folder = folder if subfolder else folder.parent
    store = _DocStore(store_folder)
    retriever_class = COMPONENTS[name].retriever_class()
    logger.info("building %s component over %d documents", name, len(docids))
    extra: dict[str, Any] = {"tokens": tokens} if name == "dense" and tokens is not None else {}
    if name == "dense" and ray is not None:
        from searchkit.dense import RayEncoding

        extra["ray"] = RayEncoding(ray, store_folder)
    return retriever_class.build(iter(store), target, config, docids, show_progress=show_progress, **extra)


def _move_into_place(building: Path, target: Path, operation: str) -> None:
    """Swap the finished generation in; an existing target is moved aside first (rename over a full dir fails).

    Readers opening meanwhile retry (see Index.open); a crash between the two renames is undone by ``_recover``.
    """
    old = _old_dir(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
        checkpoint(f"{operation}.swap")
    try:
        os.replace(building, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    checkpoint(f"{operation}.swapped")
    shutil.rmtree(old, ignore_errors=True)


def _check_manifest(manifest: Any, path: Path) -> None:
    """The manifest's schema, format version, component configs and checksum; IndexFormatError (or ConfigError
    for a bad component setting) naming the key."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a searchkit index manifest; rebuild the index")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexFormatError(f"{path}: format_version missing or not an integer; rebuild the index")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: written by searchkit {manifest.get('searchkit_version', '?')} (index format {version}); "
            f"this searchkit {__version__} reads formats up to {FORMAT_VERSION}: upgrade with "
            "`pip install -U searchkit` or rebuild the index with this version"
        )

    def bad(key: str, wanted: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: '{key}' is missing or not {wanted}; rebuild the index")

    num_docs = manifest.get("num_docs")
    if not isinstance(num_docs, int) or isinstance(num_docs, bool) or num_docs < 1:
        raise bad("num_docs", "a positive integer")
    rows = manifest.get("num_rows", num_docs)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < num_docs:
        raise bad("num_rows", "an integer of at least num_docs")
    generation = manifest.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise bad("generation", "a non-negative integer")
    if rows != num_docs and DELETED not in manifest.get("files", {}):
        raise IndexFormatError(
            f"{path}: {rows - num_docs} rows are deleted but no {DELETED} is listed; rebuild the index"
        )
    components = manifest.get("components")
    if not isinstance(components, dict) or not components:
        raise bad("components", "a non-empty object")
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise IndexFormatError(f"{path}: unknown components {sorted(unknown)}; upgrade searchkit")
    for name, entry in components.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise bad(f"components.{name}.config", "an object")
        fingerprint = entry.get("fingerprint")
        if name == "tokens" and not (isinstance(fingerprint, str) and len(fingerprint) == 64):
            raise bad(f"components.{name}.fingerprint", "a sha256 digest")
        try:
            config_from_dict(COMPONENTS[name].config_class, entry["config"])
        except ConfigError as err:
            raise ConfigError(f"{path}: components.{name}: {err}") from None
        except (TypeError, ValueError) as err:
            raise IndexFormatError(f"{path}: components.{name}.config is invalid ({err}); rebuild the index") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(key, str) and isinstance(value, str) and len(value) == 64 for key, value in files.items()
    ):
        raise bad("files", "an object of sha256 digests")
    for relpath in files:
        parts = Path(relpath).parts
        if Path(relpath).is_absolute() or ".." in parts or not parts:
            raise IndexFormatError(f"{path}: file {relpath!r} lies outside the index; rebuild the index")
    if "sizes" in manifest:
        sizes = manifest["sizes"]
        if not isinstance(sizes, dict) or set(sizes) != set(files):
            raise bad("sizes", "an object with the size of every file")
        if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in sizes.values()):
            raise bad("sizes", "an object of byte counts")
    for key in ("source", "fields"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(key, "an object")
    if "checksum" in manifest and manifest["checksum"] != json_checksum(manifest):
        raise IndexFormatError(f"{path}: checksum mismatch: the manifest was edited or damaged; rebuild the index")
