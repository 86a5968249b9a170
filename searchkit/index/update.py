"""Living indexes: add, replace and delete documents, and compact, as one atomic new generation of the index.

An update never modifies a file in place. It plans the rows of the new generation — the rows it keeps (every row,
or only the live ones when it compacts), then the added documents, with the deleted or replaced ones marked as
tombstones — writes that generation next to the index (``.<name>.building``, files it does not change hard-linked),
and swaps it in whole under the index's lock, with :mod:`searchkit.index`'s machinery: readers see the old index or
the new one, never a mix, and a process killed at any point leaves the old or the new one, either verifiable.

Every component follows the rows: the doc store and ``docids.txt`` get the new documents appended; BM25 analyzes only
the new documents and recomputes every score for the new statistics (:mod:`searchkit.retrieval.postings`: equal to a
fresh build of the same documents); dense encodes only the new documents, with the index's own model, and adds them to
FAISS under the next ids; stored tokens and filter columns append theirs. A deleted document's row stays as a tombstone
(``deleted.npy``) that every stage skips, so row numbers and FAISS ids stay stable, until a compaction drops the
tombstones and renumbers the rows (FAISS rebuilt from the stored embeddings: nothing is re-encoded). An update compacts
by itself when tombstones pass :attr:`UpdateConfig.compact_ratio` of the rows.

>>> import tempfile, pathlib
>>> from searchkit.index import Index
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "tiny")
>>> index = index.update(add=[Document("d9", "Solar panels on every roof")], delete=["d3"])
>>> index.num_docs, index.generation, index.bm25.search("solar", k=1)[0].doc_id
(8, 2, 'd9')
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import UpdateConfig
from searchkit.faults import checkpoint
from searchkit.formats import read_corpus, save_npy_atomic
from searchkit.index.bundle import IndexBundle
from searchkit.index.components import component_entry, component_kind, component_order
from searchkit.index.docstore import doc_line, unique_documents
from searchkit.index.generations import changing, link_tree, move_into_place
from searchkit.index.layout import DELETED, DOCIDS, DOCSTORE, OFFSETS
from searchkit.index.manifest import write_manifest
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.filters import FilterColumns
from searchkit.retrieval.tokens import DocumentTokens
from searchkit.types import ConfigError, DataError, Document
from searchkit.version import __version__

logger = logging.getLogger(__name__)


_COPY_BLOCK = 1 << 20


Documents = Iterable[Document] | str | Path | None
"""Documents to add: Documents, or a corpus read with the fields the index was built with."""


@dataclass(frozen=True)
class RowPlan:
    """The rows of the new generation: old rows ``keep`` (increasing), then ``added``; ``dead`` marks tombstones."""

    keep: np.ndarray
    added: list[Document]
    dead: np.ndarray
    compacts: bool
    replaced: int
    deleted: int

    @property
    def num_rows(self) -> int:
        return len(self.keep) + len(self.added)

    @property
    def rows_unchanged(self) -> bool:
        """Nothing added and no row dropped (deletions only): every row holds what it held."""
        return not self.added and not self.compacts


def read_update_corpus(index: IndexBundle, corpus: str | Path, **fields: str | None) -> list[Document]:
    """Read ``corpus`` with the fields the index was built with (``fields`` overrides id/title/text field names)."""
    recorded = index.manifest.get("fields", {})
    names = {key: fields.get(f"{key}_field") or recorded.get(key, default) for key, default in _FIELDS.items()}
    return list(
        read_corpus(
            corpus,
            id_field=names["id"],
            title_field=names["title"],
            text_field=names["text"],
            metadata_fields=recorded.get("metadata", ()),
        )
    )


_FIELDS = {"id": "_id", "title": "title", "text": "text"}


def plan_rows(
    index: IndexBundle, added: Sequence[Document], delete: Sequence[str], compact: bool | None, config: UpdateConfig
) -> RowPlan:
    """Which rows the new generation keeps, adds and marks dead; DataError for ids to delete that are not there."""
    check_deletable(index, delete)
    gone = {index.row(doc_id) for doc_id in delete}
    replaced = {index.row(doc.doc_id) for doc in added if _has(index, doc.doc_id)} - gone
    tombstones = np.union1d(index.deleted_rows, np.fromiter(gone | replaced, dtype=np.int64))
    live_after = index.num_rows - len(tombstones) + len(added)
    if live_after == 0:
        raise DataError(f"the update would delete every document of {index.path}; build a new index instead")
    if compact is None:
        compact = len(tombstones) > config.compact_ratio * (index.num_rows + len(added))
    if compact:
        keep = np.setdiff1d(np.arange(index.num_rows, dtype=np.int64), tombstones)
        dead = np.zeros(len(keep) + len(added), dtype=bool)
    else:
        keep = np.arange(index.num_rows, dtype=np.int64)
        dead = np.zeros(index.num_rows + len(added), dtype=bool)
        dead[tombstones] = True
    return RowPlan(keep, list(added), dead, bool(compact), len(replaced), len(gone))


def check_deletable(index: IndexBundle, doc_ids: Sequence[str], source: str | Path | None = None) -> None:
    """DataError (naming ``source``, the file they came from, when given) if some ids are not live documents."""
    missing = [doc_id for doc_id in doc_ids if not _has(index, doc_id)]
    if missing:
        shown = ", ".join(repr(doc_id[:80]) for doc_id in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} of the ids to delete are not documents of {index.path} (e.g. {shown}); "
            "remove them from the list",
            source,
        )


def _has(index: IndexBundle, doc_id: str) -> bool:
    try:
        index.row(doc_id)
    except KeyError:
        return False
    return True


def update_index(
    index: IndexBundle,
    add: Documents,
    delete: Iterable[str],
    compact: bool | None,
    config: UpdateConfig,
    progress: bool,
) -> Path | None:
    """:meth:`searchkit.index.Index.update`: one new generation with ``add`` added (replacing documents with the same
    id), ``delete`` deleted, compacted when ``compact`` (None: when tombstones pass ``config.compact_ratio``).

    Returns the folder, holding the new generation, or None when there was nothing to do."""
    started = time.perf_counter()
    added = read_update_corpus(index, add) if isinstance(add, str | Path) else list(unique_documents(add or []))
    deletions = list(dict.fromkeys(str(doc_id) for doc_id in delete))
    if not added and not deletions and not (compact and len(index.deleted_rows)):
        logger.info("%s: nothing to %s", index.path, "compact" if compact else "update")
        return None
    plan = plan_rows(index, added, deletions, compact, config)
    operation = "index.compact" if compact and not added and not deletions else "index.update"
    with changing(index, "update") as (target, building):
        shutil.rmtree(building, ignore_errors=True)  # an update is redone from the start, never resumed
        building.mkdir(parents=True)
        try:
            row_ids = _write_rows(index, plan, building)
            checkpoint(f"{operation}.docstore")
            entries = _write_components(index, plan, building, row_ids, operation, progress)
            manifest = json.loads(json.dumps(index.manifest))
            manifest["components"].update(entries)
            manifest.update(
                searchkit_version=__version__,
                generation=index.generation + 1,
                num_docs=plan.num_rows - int(plan.dead.sum()),
                num_rows=plan.num_rows,
                updated=datetime.now(UTC).isoformat(timespec="seconds"),
                last_update={
                    "added": len(added) - plan.replaced,
                    "replaced": plan.replaced,
                    "deleted": plan.deleted,
                    "compacted": plan.compacts,
                },
            )
            write_manifest(building, manifest, index)
            checkpoint(f"{operation}.manifest")
            move_into_place(building, target, operation)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    tombstones = int(plan.dead.sum())
    logger.info(
        "%s: generation %d: %d added, %d replaced, %d deleted%s in %.2f s (%d documents, %d tombstones)",
        target,
        index.generation + 1,
        len(added) - plan.replaced,
        plan.replaced,
        plan.deleted,
        ", compacted" if plan.compacts else "",
        time.perf_counter() - started,
        plan.num_rows - tombstones,
        tombstones,
    )
    return target


def _write_rows(index: IndexBundle, plan: RowPlan, building: Path) -> list[str]:
    """The new generation's ``docids.txt``, doc store (kept rows' bytes copied, new documents appended) and
    ``deleted.npy``; hard links when the rows are unchanged. Returns the row ids."""
    lines = [doc_line(doc) for doc in plan.added]
    row_ids = [index.row_ids[row] for row in plan.keep.tolist()] + [str(doc.doc_id) for doc in plan.added]
    if plan.rows_unchanged:
        for name in (DOCIDS, DOCSTORE, OFFSETS):
            link_tree(index.path / name, building / name)
    else:
        offsets = np.asarray(index.store.offsets)
        kept_offsets = _copy_rows(index.path / DOCSTORE, offsets, plan.keep, building / DOCSTORE, lines)
        added = np.cumsum([len(line) for line in lines], dtype=np.int64) + kept_offsets[-1]
        save_npy_atomic(building / OFFSETS, np.concatenate([kept_offsets, added]))
        (building / DOCIDS).write_text("".join(doc_id + "\n" for doc_id in row_ids), encoding="utf-8")
    tombstones = np.flatnonzero(plan.dead).astype(np.int64)
    if len(tombstones):
        save_npy_atomic(building / DELETED, tombstones)
    return row_ids


def _copy_rows(source: Path, offsets: np.ndarray, keep: np.ndarray, target: Path, lines: list[bytes]) -> np.ndarray:
    """Copy the doc store lines of rows ``keep`` (runs of consecutive rows in one go), then ``lines``; return the
    kept rows' new offsets."""
    lengths = offsets[keep + 1] - offsets[keep]
    new_offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    breaks = np.flatnonzero(np.diff(keep) != 1) + 1
    with source.open("rb") as read, target.open("wb") as write:
        for run in np.split(keep, breaks) if len(keep) else []:
            start, end = int(offsets[run[0]]), int(offsets[run[-1] + 1])
            read.seek(start)
            while start < end:
                block = read.read(min(_COPY_BLOCK, end - start))
                if not block:
                    raise DataError(f"{source} ended early; run `searchkit index verify`")
                write.write(block)
                start += len(block)
        for line in lines:
            write.write(line)
        write.flush()
        os.fsync(write.fileno())
    return new_offsets


def _write_components(
    index: IndexBundle, plan: RowPlan, building: Path, row_ids: list[str], operation: str, show_progress: bool
) -> dict[str, Any]:
    """Every component of the new generation (hard-linked when deletions alone leave it unchanged); their entries."""
    entries: dict[str, Any] = {}
    configs = index.components
    tokens: Any = None
    for name in component_order(index.manifest["components"]):  # tokens before dense
        source = index.component(name)
        folder = building / name
        if component_kind(name) == "bm25":
            built: Any = BM25Retriever.rewrite(
                source, folder, plan.keep, plan.dead, plan.added, row_ids, every_document=lambda: iter(index.store)
            )
        elif plan.rows_unchanged:  # deletions only: rows and contents unchanged, tombstones live in the index
            link_tree(index.path / name, folder)
            built = source
        elif name == "tokens":
            built = tokens = DocumentTokens.rewrite(source, folder, plan.keep, plan.added, row_ids)
        elif name == "dense":
            built = DenseRetriever.rewrite(
                source, folder, plan.keep, plan.added, row_ids, tokens=tokens, show_progress=show_progress
            )
        elif name == "filters":
            built = FilterColumns.rewrite(source, folder, plan.keep, plan.added, row_ids)
        else:  # a component this version cannot update: refuse rather than leave it behind the others
            raise ConfigError(f"{index.path}: cannot update its {name} component; rebuild the index")
        entries[name] = component_entry(configs[name], built)
        checkpoint(f"{operation}.component")
    return entries
