"""The data model every module speaks: documents, queries, hits, runs, qrels, and the error classes.

Nothing here imports anything else of searchkit, so every module can depend on it.

>>> sort_hits([Hit("a", 1.0), Hit("b", 2.0), Hit("c", 1.0)])
[Hit(doc_id='b', score=2.0), Hit(doc_id='c', score=1.0), Hit(doc_id='a', score=1.0)]
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable


class Document(NamedTuple):
    """One document of a corpus. Ids are always strings (an int id would lose leading zeros).

    ``metadata``: the document's other fields (BEIR's ``metadata`` object, extra corpus columns chosen at build),
    kept in the index's doc store; None when it has none. The repr leaves it out when None.

    >>> Document("d1", "text", metadata={"year": 2024})
    Document(doc_id='d1', text='text', title='', metadata={'year': 2024})
    """

    doc_id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        shown = f", metadata={self.metadata!r}" if self.metadata is not None else ""
        return f"Document(doc_id={self.doc_id!r}, text={self.text!r}, title={self.title!r}{shown})"


class Query(NamedTuple):
    """One query: its id (a string) and its text."""

    query_id: str
    text: str


class Hit(NamedTuple):
    """One retrieved document and its score; larger is better."""

    doc_id: str
    score: float


Run = dict[str, list[Hit]]
"""query_id -> hits, best first."""

Qrels = dict[str, dict[str, int]]
"""query_id -> doc_id -> relevance grade (> 0 is relevant)."""


@runtime_checkable
class Retriever(Protocol):
    """What every retriever and the Searcher implement: one batch call, best hits first."""

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...


def sort_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Order hits by score, then by doc_id, both descending: trec_eval's tie order, used everywhere."""
    return sorted(hits, key=lambda hit: (hit.score, hit.doc_id), reverse=True)


def check_k(k: int) -> None:
    """``k`` (hits wanted) must be a positive integer; every retriever and the Searcher check it the same way.

    >>> check_k(0)
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: k must be a positive integer, got 0
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
        raise ConfigError(f"k must be a positive integer, got {k!r}")


class SearchkitError(Exception):
    """Base of every error searchkit raises on purpose; the CLI prints it as one line."""


class ConfigError(SearchkitError):
    """A setting, argument or recipe is invalid."""


class DataError(SearchkitError):
    """Input data is malformed. The message names the file and line when they are known.

    >>> str(DataError("invalid JSON", path="corpus.jsonl", line=3))
    'corpus.jsonl:3: invalid JSON'
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class IndexFormatError(SearchkitError):
    """An index folder is missing, corrupt, or written by a newer searchkit."""
