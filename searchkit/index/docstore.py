"""The doc store: every document of an index by row, one ``pread`` each, and the checks on documents coming in.

``docs.jsonl`` holds one JSON object a row (``{"_id", "title", "text"}`` and ``"metadata"`` when the document has
some), ``docs.offsets.npy`` the int64 byte offset of every row (memory-mapped) and ``docids.txt`` the row ids.
:func:`unique_documents` is the gate every document passes on its way in (a searchkit Document, a valid id, no id
twice: an error naming both positions), :func:`write_docstore` streams them into a new generation. A corpus read
from a file has been through the same checks in its reader, which names the file and lines instead.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_docstore([Document("a", "x"), Document("b", "y", title="t")], folder, show_progress=False)
['a', 'b']
>>> DocStore(folder).get([1])
[Document(doc_id='b', text='y', title='t')]
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.formats import duplicate_summary, id_problem, surrogate_problem
from searchkit.index.layout import DOCIDS, DOCSTORE, OFFSETS
from searchkit.types import DataError, Document, IndexFormatError

if TYPE_CHECKING:
    pass


def _progress(iterable: Iterable[Any], show: bool, desc: str, total: int | None = None) -> Iterable[Any]:
    if not show:
        return iterable

    return tqdm(iterable, desc=desc, total=total, unit="doc", dynamic_ncols=True)


class DocStore:
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
            decode_doc(self._read(int(self.offsets[row]), int(self.offsets[row + 1])), self.path, row) for row in rows
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
                yield decode_doc(block[lo:hi], self.path, inner)
            row = end


def doc_line(doc: Document) -> bytes:
    """A document's line in the doc store (its metadata only when it has some, so older stores read the same)."""
    record: dict[str, Any] = {"_id": str(doc.doc_id), "title": doc.title or "", "text": doc.text or ""}
    for field, value in (("id", record["_id"]), ("title", record["title"]), ("text", record["text"])):
        problem = surrogate_problem(value) if isinstance(value, str) else ""
        if problem:
            raise DataError(f"document {_shown(record['_id'])}: its {field} {problem}")
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


def decode_doc(raw: bytes, path: Path, row: int) -> Document:
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


def _shown(doc_id: str) -> str:
    return repr(doc_id[:80])  # escaped: an id may hold what a terminal cannot print


def unique_documents(docs: Iterable[Document]) -> Iterator[Document]:
    """``docs`` checked one by one (searchkit Documents with valid ids, ids as strings).

    An id given twice is a DataError naming both positions (1-based), raised at the second: nothing after it is
    yielded, but the rest of the input is scanned so that the error also counts the other duplicates (first few
    shown) and the user fixes them in one pass instead of one error per run.
    """
    first: dict[str, int] = {}
    items = iter(docs)
    for number, doc in enumerate(items, start=1):
        if not isinstance(doc, Document):
            raise DataError(f"expected a searchkit Document, got {type(doc).__name__} (document {number})")
        doc_id = str(doc.doc_id)
        problem = id_problem(doc_id)
        if problem:
            raise DataError(f"document id {_shown(doc_id)} (row {number}) {problem}")
        if doc_id in first:
            raise _duplicate(doc_id, first, number, items)
        first[doc_id] = number
        yield doc if doc_id is doc.doc_id else doc._replace(doc_id=doc_id)


def _duplicate(doc_id: str, first: dict[str, int], number: int, rest: Iterator[Document]) -> DataError:
    """The error for ``doc_id`` given again as document ``number``; ``rest`` (what follows it) scanned for others."""
    duplicates = [doc_id]
    try:
        for doc in rest:
            if isinstance(doc, Document) and not id_problem(str(doc.doc_id)):
                again = str(doc.doc_id)
                if again in first:
                    duplicates.append(again)
                first.setdefault(again, 0)
    except DataError:
        pass  # a reader's error further on: reported once the duplicates are fixed
    message = f"duplicate document id {_shown(doc_id)}: documents {first[doc_id]} and {number}"
    return DataError(f"{message}; {duplicate_summary(duplicates, 'document')}")


def write_docstore(docs: Iterable[Document], folder: Path, show_progress: bool) -> list[str]:
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
