"""An opened index: one consistent generation of an index folder, its documents and its loaded components.

Opening is a snapshot. :meth:`IndexBundle.open` reads the manifest, checks it (schema, checksum, format version:
:mod:`searchkit.index.manifest`), checks every file's size against it, hashes the files of at most
``OPEN_HASH_LIMIT`` bytes, checks the doc ids and doc store against each other, loads every component (arrays
memory-mapped, cheap shape checks), then reads the manifest again: if a rebuild swapped the folder meanwhile, it
starts over, so an open index never mixes two generations, and it keeps serving the generation it opened (open
files and memory maps outlive the swap). :meth:`IndexBundle.verify` hashes every file and checks every invariant.

This class only reads. Building, adding components and updating documents are operations one layer up
(:mod:`searchkit.index.build`, :mod:`searchkit.index.update`) that take an opened bundle and write the next
generation; :class:`searchkit.index.Index` is this class with those operations as methods.

>>> import tempfile, pathlib
>>> from searchkit.index.build import build_index
>>> out = build_index("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "tiny")
>>> bundle = IndexBundle.open(out)
>>> bundle.num_docs, bundle.document("007").title
(8, 'Leading zeros')
>>> bundle.bm25.search("solar electricity", k=1)[0].doc_id
'd3'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from searchkit.config import config_from_dict
from searchkit.formats import json_checksum, sha256_file
from searchkit.index.components import COMPONENTS, LEGACY_DEFAULTS, component_kind
from searchkit.index.docstore import DocStore
from searchkit.index.generations import Swapping, old_dir, recover_or_wait
from searchkit.index.layout import DELETED, DOCIDS, DOCSTORE, MANIFEST, OFFSETS
from searchkit.index.manifest import check_manifest, load_deleted, manifest_changed, open_problems, unlisted_files
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.filters import FilterColumns, FilterSpec, parse_filter
from searchkit.retrieval.tokens import DocumentTokens
from searchkit.types import ConfigError, Document, IndexFormatError, SearchkitError

logger = logging.getLogger(__name__)

_Opened = TypeVar("_Opened", bound="IndexBundle")

OPEN_WAIT_SECONDS = 10.0
"""How long Index.open waits for a concurrent swap (a build or add of the same folder) to settle."""


class IndexBundle:
    """A self-describing index folder: doc store, doc ids, and the retrieval components built over them.

    >>> import tempfile, pathlib
    >>> from searchkit.index import Index
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
        self.store = DocStore(path)
        self.deleted_rows: np.ndarray = load_deleted(path, manifest)
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
            name: config_from_dict(
                COMPONENTS[component_kind(name)].config_class,
                {**LEGACY_DEFAULTS.get(component_kind(name), {}), **entry["config"]},
            )
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
            spec = COMPONENTS[component_kind(name)]
            config: Any = config_from_dict(spec.config_class, self.manifest["components"][name]["config"])
            if self._overrides.get(name):
                config = dataclasses.replace(config, **self._overrides[name])
            loaded = spec.retriever_class.load(  # type: ignore[attr-defined]
                self.path / name, config, self.row_ids
            )
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
        """The stored document token ids (:mod:`searchkit.retrieval.tokens`), when the index has them."""
        return self.component("tokens") if "tokens" in self.manifest["components"] else None

    @property
    def filters(self) -> FilterColumns | None:
        """The filterable metadata columns (:mod:`searchkit.retrieval.filters`), when the index has them."""
        return self.component("filters") if "filters" in self.manifest["components"] else None

    def allowed_rows(self, spec: FilterSpec) -> np.ndarray | None:
        """The rows a search with filter ``spec`` may return (a bool mask; None: no filter, every live row).

        >>> import tempfile, pathlib
        >>> from searchkit.config import FilterConfig
        >>> from searchkit.index import Index
        >>> from searchkit.types import Document
        >>> docs = [Document("a", "x", metadata={"y": 1}), Document("b", "x", metadata={"y": 2})]
        >>> index = Index.build(docs, pathlib.Path(tempfile.mkdtemp()) / "i", filters=FilterConfig(["y:number"]))
        >>> index.allowed_rows("y>1").tolist()
        [False, True]
        """
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
        return self.store.get([self.row(doc_id)])[0]

    def documents(self, doc_ids: Sequence[str]) -> list[Document]:
        """The stored documents for ``doc_ids``, in that order."""
        return self.store.get([self.row(doc_id) for doc_id in doc_ids])

    def iter_documents(self) -> Iterator[Document]:
        """Every live document in row order (streamed)."""
        if not len(self.deleted_rows):
            return iter(self.store)
        deleted = set(self.deleted_rows.tolist())
        return (doc for row, doc in enumerate(self.store) if row not in deleted)

    def fingerprint(self) -> str:
        """sha256 of manifest.json: identifies the exact index contents (the manifest holds every file's hash)."""
        return sha256_file(self.path / MANIFEST)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls: type[_Opened],
        path: str | Path,
        *,
        verify: bool = False,
        device: str | None = None,
        dense_model: str | None = None,
    ) -> _Opened:
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
            except Swapping:
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
    def _open_once(cls: type[_Opened], folder: Path, overrides: dict[str, dict[str, Any]] | None) -> _Opened:
        """One attempt at opening ``folder``; Swapping when a concurrent swap got in the way."""
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            if old_dir(folder).is_dir():
                recover_or_wait(folder)
            raise IndexFormatError(f"{folder}: no such index folder; build one with `searchkit index build`")
        try:
            identity = folder.stat().st_ino  # a swap puts another directory (another inode) at this path
        except FileNotFoundError:
            raise Swapping from None
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            # the folder was moved aside during the read, and the next generation may already stand at the path
            # (another directory: its inode differs) by the time we look again
            try:
                swapped = folder.stat().st_ino != identity
            except FileNotFoundError:
                swapped = True
            if swapped or old_dir(folder).exists():
                raise Swapping from None
            raise IndexFormatError(
                f"{folder} is not a searchkit index (no {MANIFEST}); build one with `searchkit index build`"
            ) from None
        try:
            try:
                manifest = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise IndexFormatError(f"{manifest_path}: corrupt manifest ({err}); rebuild the index") from None
            check_manifest(manifest, manifest_path)
            problems = open_problems(folder, manifest)
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
            if manifest_changed(manifest_path, raw):
                raise Swapping from None
            if isinstance(err, SearchkitError):
                raise
            raise IndexFormatError(f"{folder}: damaged index ({err}); run `searchkit index verify {folder}`") from None
        if manifest_changed(manifest_path, raw):
            raise Swapping
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
        return self.store.problems(self.num_rows)

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
        problems.extend(f"unexpected file {relpath}" for relpath in unlisted_files(self.path, self.manifest))
        problems.extend(self._structure_problems())
        if len(self.store) != self.num_rows:
            problems.append(f"{OFFSETS} describes {len(self.store)} documents, {DOCIDS} has {self.num_rows}")
        elif (self.path / DOCSTORE).stat().st_size != int(self.store.offsets[-1]):
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
        for row, (doc_id, doc) in enumerate(zip(self.row_ids, self.store, strict=True)):
            if doc.doc_id != doc_id:
                problems.append(f"row {row + 1} of {DOCIDS} is {doc_id!r}, {DOCSTORE} holds {doc.doc_id!r} there")
                break
        if len(set(self.docids)) != self.num_docs:
            problems.append("two live rows hold the same document id")
        return problems

    def info(self) -> dict[str, Any]:
        """A summary for humans and `searchkit index info`: manifest minus file hashes, plus sizes on disk."""
        summary = {key: value for key, value in self.manifest.items() if key != "files"}
        summary["path"] = str(self.path)
        summary["size_bytes"] = sum(file.stat().st_size for file in self.path.rglob("*") if file.is_file())
        summary["fingerprint"] = self.fingerprint()
        return summary
