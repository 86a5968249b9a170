"""The on-disk index bundle: build, open, add components, verify.

Layout of an index folder (everything but the component folders is written by this module)::

    <name>/
      manifest.json        format, format_version (int), searchkit_version, created, num_docs,
                           source (path + sha256), fields, components {name: {config}}, files {relpath: sha256}
      docids.txt           row i of every component is the document on line i
      docs.jsonl           doc store: one JSON object per document ({"_id", "title", "text"})
      docs.offsets.npy     int64 byte offsets into docs.jsonl (num_docs + 1 entries), memory-mapped: one seek a doc
      bm25/                BM25Retriever files (bm25s arrays + vocab + analyzer settings)
      dense/               DenseRetriever files (embeddings fp16 .npy + index.faiss)

Builds are atomic: everything is written into ``.<name>.building`` next to the target and moved into place with
``os.replace``; a build that fails leaves neither the target nor the temp folder behind. An interrupted build
(Ctrl-C, or a killed process) keeps the temp folder so that dense encoding resumes from its finished shards.
No pickle anywhere: JSON, ``.npy`` with ``allow_pickle=False``, FAISS's own format, bm25s's arrays.

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchkit import __version__
from searchkit.config import BM25Config, DenseConfig, config_from_dict, config_to_dict
from searchkit.formats import sha256_file, write_json_atomic
from searchkit.types import ConfigError, DataError, Document, IndexFormatError

if TYPE_CHECKING:
    from searchkit.bm25 import BM25Retriever
    from searchkit.dense import DenseRetriever

logger = logging.getLogger(__name__)

FORMAT = "searchkit-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"
DOCSTORE = "docs.jsonl"
OFFSETS = "docs.offsets.npy"


@dataclass(frozen=True)
class _ComponentSpec:
    config_class: type
    module: str
    class_name: str

    def retriever_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.class_name)


# Components in the order they are built; the folder name inside the index is the key.
COMPONENTS: dict[str, _ComponentSpec] = {
    "bm25": _ComponentSpec(BM25Config, "searchkit.bm25", "BM25Retriever"),
    "dense": _ComponentSpec(DenseConfig, "searchkit.dense", "DenseRetriever"),
}


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest, keyed by POSIX relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _progress(iterable: Iterable[Any], show: bool, desc: str, total: int | None = None) -> Iterable[Any]:
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="doc", dynamic_ncols=True)


class _DocStore:
    """Documents by row: ``docs.jsonl`` plus memory-mapped offsets, one seek a document."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / DOCSTORE
        self.offsets = np.load(folder / OFFSETS, mmap_mode="r", allow_pickle=False)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def get(self, rows: Sequence[int]) -> list[Document]:
        docs: list[Document] = []
        with self.path.open("rb") as handle:
            for row in rows:
                start, end = int(self.offsets[row]), int(self.offsets[row + 1])
                handle.seek(start)
                docs.append(_decode_doc(handle.read(end - start)))
        return docs

    def __iter__(self) -> Iterator[Document]:
        with self.path.open("rb") as handle:
            for line in handle:
                yield _decode_doc(line)


def _decode_doc(raw: bytes) -> Document:
    record = json.loads(raw)
    return Document(record["_id"], record["text"], record["title"])


def _write_docstore(docs: Iterable[Document], folder: Path, show_progress: bool) -> list[str]:
    """Stream documents into the doc store; return the doc ids in row order.

    Duplicate ids are collected over the whole corpus and reported together (first few), so the user fixes them in
    one pass instead of one error per run.
    """
    docids: list[str] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    offsets: list[int] = [0]
    position = 0
    with (folder / DOCSTORE).open("wb") as store, (folder / DOCIDS).open("w", encoding="utf-8") as ids:
        for doc in _progress(docs, show_progress, "storing documents"):
            if not isinstance(doc, Document):
                raise DataError(f"expected a searchkit Document, got {type(doc).__name__}")
            doc_id = str(doc.doc_id)
            if not doc_id or any(ch in doc_id for ch in "\r\n\t "):
                raise DataError(
                    f"document id {doc_id!r} (row {len(docids) + 1}) is empty or contains whitespace; "
                    "ids must be single tokens so that TREC run files stay valid"
                )
            if doc_id in seen:
                duplicates.append(doc_id)
                continue
            seen.add(doc_id)
            docids.append(doc_id)
            ids.write(doc_id + "\n")
            line = (
                json.dumps({"_id": doc_id, "title": doc.title or "", "text": doc.text or ""}, ensure_ascii=False) + "\n"
            ).encode("utf-8")
            store.write(line)
            position += len(line)
            offsets.append(position)
    if duplicates:
        unique = list(dict.fromkeys(duplicates))
        shown = ", ".join(unique[:5]) + (" ..." if len(unique) > 5 else "")
        raise DataError(
            f"{len(duplicates)} duplicate document ids ({len(unique)} distinct), e.g. {shown}; "
            "make every document id unique"
        )
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
        self.docids: list[str] = (path / DOCIDS).read_text(encoding="utf-8").splitlines()
        self._store = _DocStore(path)
        self._rows: dict[str, int] | None = None
        self._loaded: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_docs(self) -> int:
        return len(self.docids)

    @property
    def components(self) -> dict[str, Any]:
        """Component name -> its config (a frozen dataclass), as recorded in the manifest."""
        return {
            name: config_from_dict(COMPONENTS[name].config_class, entry["config"])
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
            self._loaded[name] = spec.retriever_class().load(self.path / name, config, self.docids)
        return self._loaded[name]

    @property
    def bm25(self) -> BM25Retriever | None:
        return self.component("bm25") if "bm25" in self.manifest["components"] else None

    @property
    def dense(self) -> DenseRetriever | None:
        return self.component("dense") if "dense" in self.manifest["components"] else None

    def row(self, doc_id: str) -> int:
        """Row number of ``doc_id`` (KeyError naming the id if absent)."""
        if self._rows is None:
            self._rows = {doc_id: row for row, doc_id in enumerate(self.docids)}
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
        """Every stored document in row order (streamed)."""
        return iter(self._store)

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
        overwrite: bool = False,
        show_progress: bool = False,
        id_field: str = "_id",
        title_field: str = "title",
        text_field: str = "text",
    ) -> Index:
        """Build an index over ``corpus`` (BEIR dir, JSONL/TSV file, ``irds:<id>`` or Documents) at ``path``.

        >>> import tempfile, pathlib
        >>> Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i").num_docs
        8
        """
        from searchkit.formats import read_corpus

        target = Path(path)
        configs = {"bm25": bm25, "dense": dense}
        if all(config is None for config in configs.values()):
            raise ConfigError("nothing to build: enable BM25 and/or dense (e.g. drop --no-bm25 or add --dense)")
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
        source = _describe_source(corpus)
        fields = {"id": id_field, "title": title_field, "text": text_field}
        building = target.parent / f".{target.name}.building"
        state = {"source": source, "fields": fields, "components": _config_dicts(configs)}
        _prepare_build_dir(building, state)

        try:
            if isinstance(corpus, str | Path):
                docs: Iterable[Document] = read_corpus(
                    corpus, id_field=id_field, title_field=title_field, text_field=text_field
                )
            else:
                docs = corpus
            docids = _write_docstore(docs, building, show_progress)
            logger.info("stored %d documents from %s", len(docids), source["path"] or "an iterable")
            for name, config in configs.items():
                if config is not None:
                    _build_component(name, config, building, docids, show_progress)
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "searchkit_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "num_docs": len(docids),
                "source": source,
                "fields": fields,
                "components": {name: {"config": config_to_dict(config)} for name, config in configs.items() if config},
                "files": {},
            }
            (building / "build-state.json").unlink(missing_ok=True)
            manifest["files"] = _checksums(building)
            write_json_atomic(building / MANIFEST, manifest)
            _move_into_place(building, target)
        except KeyboardInterrupt:
            logger.warning("build interrupted; partial work kept in %s: run the same build again to resume", building)
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

        ``verify=True`` also checks every checksum and invariant (see :meth:`verify`). ``device`` (auto, cpu, cuda)
        and ``dense_model`` (a local copy of the same model) override, for this process only, what the manifest
        recorded at build time: an index built on a GPU machine opens on a laptop, and vice versa.
        """
        folder = Path(path)
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            raise IndexFormatError(f"{folder}: no such index folder; build one with `searchkit index build`")
        if not manifest_path.is_file():
            raise IndexFormatError(
                f"{folder} is not a searchkit index (no {MANIFEST}); build one with `searchkit index build`"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFormatError(f"{manifest_path}: corrupt manifest ({err}); rebuild the index") from None
        _check_manifest(manifest, manifest_path)
        overrides: dict[str, Any] = {}
        if device is not None:
            overrides["device"] = device
        if dense_model is not None:
            overrides["model"] = dense_model
        try:
            index = cls(folder, manifest, {"dense": overrides} if overrides else None)
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{folder}: damaged index ({err}); run `searchkit index verify {folder}`") from None
        if verify:
            index.verify()
        return index

    def add(
        self,
        *,
        bm25: BM25Config | None = None,
        dense: DenseConfig | None = None,
        overwrite: bool = False,
        show_progress: bool = False,
    ) -> Index:
        """Add (or with ``overwrite`` replace) a component without rebuilding the others; returns the re-opened index.

        The new component is built next to the live ones and swapped in together with a new manifest, so a failure
        leaves the index as it was. Replacing a dense component whose embedding settings are unchanged (only the
        FAISS type or search parameters differ) reuses the stored fp16 embeddings instead of re-encoding.
        """
        configs = {name: config for name, config in {"bm25": bm25, "dense": dense}.items() if config is not None}
        if not configs:
            raise ConfigError("nothing to add: pass bm25=BM25Config(...) and/or dense=DenseConfig(...)")
        for name in configs:
            if name in self.manifest["components"] and not overwrite:
                raise ConfigError(f"{self.path} already has a {name} component; pass overwrite=True to replace it")
        staged: dict[str, Path] = {}
        try:
            for name, config in configs.items():
                stage = self.path / f".{name}.building"
                _prepare_build_dir(stage, {"component": name, "config": config_to_dict(config)})
                staged[name] = stage
                if isinstance(config, DenseConfig) and self._reusable_embeddings(config):
                    COMPONENTS[name].retriever_class().reindex(self.path / name, stage, config, self.docids)
                else:
                    _build_component(name, config, stage, self.docids, show_progress, subfolder=False)
        except KeyboardInterrupt:
            raise
        except BaseException:
            for stage in staged.values():
                shutil.rmtree(stage, ignore_errors=True)
            raise
        manifest = json.loads(json.dumps(self.manifest))
        for name, stage in staged.items():
            (stage / "build-state.json").unlink(missing_ok=True)
            old = self.path / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if (self.path / name).exists():
                os.replace(self.path / name, old)
            os.replace(stage, self.path / name)
            shutil.rmtree(old, ignore_errors=True)
            manifest["components"][name] = {"config": config_to_dict(configs[name])}
        manifest["files"] = _checksums(self.path)
        manifest["searchkit_version"] = __version__
        write_json_atomic(self.path / MANIFEST, manifest)
        return Index.open(self.path)

    def _reusable_embeddings(self, config: DenseConfig) -> bool:
        """True when this index's stored embeddings are what ``config`` would encode (only FAISS settings differ)."""
        from searchkit.dense import same_embeddings

        if "dense" not in self.manifest["components"]:
            return False
        return same_embeddings(self.components["dense"], config)

    # ------------------------------------------------------------------ verification
    def verify(self) -> None:
        """Check checksums of every file and the invariants between them; IndexFormatError lists what is wrong."""
        problems: list[str] = []
        expected: dict[str, str] = self.manifest.get("files", {})
        for relpath, digest in expected.items():
            file = self.path / relpath
            if not file.is_file():
                problems.append(f"missing file {relpath}")
            elif sha256_file(file) != digest:
                problems.append(f"checksum mismatch in {relpath}")
        for file in self.path.rglob("*"):
            relpath = file.relative_to(self.path).as_posix()
            if file.is_file() and file.name != MANIFEST and relpath not in expected and not relpath.startswith("."):
                problems.append(f"unexpected file {relpath}")
        if self.num_docs != self.manifest.get("num_docs"):
            problems.append(f"{DOCIDS} has {self.num_docs} lines, manifest says {self.manifest.get('num_docs')}")
        if len(self._store) != self.num_docs:
            problems.append(f"{OFFSETS} describes {len(self._store)} documents, {DOCIDS} has {self.num_docs}")
        elif (self.path / DOCSTORE).stat().st_size != int(self._store.offsets[-1]):
            problems.append(f"{DOCSTORE} size does not match {OFFSETS}")
        if not problems:
            for name in self.manifest["components"]:
                try:
                    problems.extend(f"{name}: {problem}" for problem in self.component(name).verify())
                except Exception as err:  # a component that cannot even load is a verification failure
                    problems.append(f"{name}: cannot load ({err})")
        if problems:
            raise IndexFormatError(
                f"{self.path} failed verification: " + "; ".join(problems) + ". Rebuild it with `searchkit index build`"
            )

    def info(self) -> dict[str, Any]:
        """A summary for humans and `searchkit index info`: manifest minus file hashes, plus sizes on disk."""
        summary = {key: value for key, value in self.manifest.items() if key != "files"}
        summary["path"] = str(self.path)
        summary["size_bytes"] = sum(file.stat().st_size for file in self.path.rglob("*") if file.is_file())
        summary["fingerprint"] = self.fingerprint()
        return summary


# ---------------------------------------------------------------------- helpers
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


def _build_component(
    name: str, config: Any, folder: Path, docids: list[str], show_progress: bool, *, subfolder: bool = True
) -> None:
    """Build component ``name`` from the doc store of the index being built (streamed again from disk)."""
    target = folder / name if subfolder else folder
    target.mkdir(exist_ok=True)
    store_folder = folder if subfolder else folder.parent
    store = _DocStore(store_folder)
    retriever_class = COMPONENTS[name].retriever_class()
    logger.info("building %s component over %d documents", name, len(docids))
    retriever_class.build(iter(store), target, config, docids, show_progress=show_progress)


def _move_into_place(building: Path, target: Path) -> None:
    """Swap the finished build in; an existing target is moved aside first (rename over a full dir fails)."""
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(building, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_manifest(manifest: Any, path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a searchkit index manifest; rebuild the index")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexFormatError(f"{path}: format_version missing or not an integer; rebuild the index")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: written by searchkit {manifest.get('searchkit_version', '?')} (index format {version}); "
            f"this searchkit {__version__} reads formats up to {FORMAT_VERSION}: upgrade with "
            "`pip install -U searchkit` or rebuild the index with this version"
        )
    unknown = set(manifest.get("components", {})) - set(COMPONENTS)
    if unknown:
        raise IndexFormatError(f"{path}: unknown components {sorted(unknown)}; upgrade searchkit")
