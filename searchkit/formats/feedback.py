"""The feedback log: what a server showed (impressions) and what people did with it (feedback), in one SQLite file.

SQLite in WAL mode because the log has one writer (the server's logging thread) and readers that must not stop it
(``searchkit feedback stats`` / ``export`` and the retraining loop read while the server appends); a committed
transaction survives a killed process (``kill -9``) and, with ``synchronous=FULL``, a power cut; the file is one
self-contained, portable database that the standard library reads, with no server to run. Rows are only ever
appended (retention deletes whole old rows, see :meth:`FeedbackLog.prune`); nothing that identifies a person (an IP
address, headers, cookies) has a column, and the query text may be stored hashed (``query_hashed``).

Tables (schema version :data:`SCHEMA_VERSION`, in ``meta``):

- ``impressions``: ``request_id`` (primary key), ``time`` (Unix seconds), ``query`` (the text, or its salted
  sha256 hex digest when ``query_hashed``), ``mode``, ``doc_ids`` (JSON list, in the order shown: rank 1 first),
  ``generation`` (the index generation served), ``index_fingerprint``, ``model`` (the reranker's fingerprint or
  ``""``), ``swapped`` (the 1-based rank ``r`` whose result was swapped with rank ``r + 1`` for exploration, or
  NULL), ``query_hashed`` (0/1).
- ``feedback``: ``event_id`` (autoincrement), ``request_id`` (an impression's), ``time``, ``doc_id``, ``rank``
  (1-based, as shown), ``kind`` (``click``, ``judgment`` or ``dwell``), ``value`` (a judgment's grade, a dwell
  time in seconds; NULL for a click).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "feedback.sqlite"
>>> with FeedbackLog(path) as log:
...     log.append_impressions([Impression("r1", 10.0, "cancer", "bm25", ("d3", "d1"), 1, "abc", "", None)])
...     log.append_feedback([Feedback("r1", 12.5, "d1", 2, "click")])
>>> with FeedbackLog(path, readonly=True) as log:
...     [i.doc_ids for i in log.impressions()], [(f.doc_id, f.rank, f.kind) for f in log.feedback()]
([('d3', 'd1')], [('d1', 2, 'click')])
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from searchkit.types import DataError

SCHEMA_VERSION = 1
FEEDBACK_KINDS = ("click", "judgment", "dwell")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    request_id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    query TEXT NOT NULL,
    mode TEXT NOT NULL,
    doc_ids TEXT NOT NULL,
    generation INTEGER NOT NULL,
    index_fingerprint TEXT NOT NULL,
    model TEXT NOT NULL,
    swapped INTEGER,
    query_hashed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS feedback (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    time REAL NOT NULL,
    doc_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS impressions_time ON impressions (time);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback (time);
"""


_INSERT_IMPRESSIONS = (
    "INSERT OR REPLACE INTO impressions SELECT "
    + ", ".join(f"json_extract(value, '$[{column}]')" for column in range(10))
    + " FROM json_each(?)"
)


class Impression(NamedTuple):
    """One response as shown: ``doc_ids`` best first; ``swapped``: the rank exchanged with the next for exploration."""

    request_id: str
    time: float
    query: str
    mode: str
    doc_ids: tuple[str, ...]
    generation: int
    index_fingerprint: str
    model: str
    swapped: int | None = None
    query_hashed: bool = False


class Feedback(NamedTuple):
    """One event on a shown result: ``kind`` is one of :data:`FEEDBACK_KINDS`; ``value`` a grade or seconds."""

    request_id: str
    time: float
    doc_id: str
    rank: int
    kind: str
    value: float | None = None


class RankStats(NamedTuple):
    """One rank of :class:`FeedbackStats`: impressions that showed a result there, clicks on it, their ratio."""

    rank: int
    shown: int
    clicks: int
    click_through: float


class FeedbackStats(NamedTuple):
    """What a log holds: counts, the share of impressions without a click, and click-through by rank."""

    impressions: int
    queries: int
    events: dict[str, int]
    clicked_impressions: int
    swapped_impressions: int
    abandonment: float
    first: float | None
    last: float | None
    models: dict[str, int]
    by_rank: list[RankStats]

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "by_rank": [row._asdict() for row in self.by_rank]}


def hash_query(text: str, salt: str) -> str:
    """The stored form of a query when queries are kept hashed: the hex sha256 of ``salt`` and the text.

    >>> hash_query("cancer", "s") == hash_query("cancer", "s") != hash_query("cancer", "t")
    True
    """
    return hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()


class FeedbackLog:
    """The log at ``path`` (created with its schema unless ``readonly``). Not shared between threads: each thread
    opens its own (SQLite connections are per thread); any number of readers may run beside the one writer."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.is_file():
                    raise DataError("no feedback log here; give the file `searchkit serve --feedback-log` writes", path)
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                with self._db:
                    self._db.executescript(_SCHEMA)
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._check_version()
        except sqlite3.DatabaseError as err:
            raise DataError(f"not a readable feedback log ({err})", path) from None

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = "none" if row is None else row[0]
            raise DataError(f"feedback log schema version {found}, this searchkit reads {SCHEMA_VERSION}", self.path)

    def append_impressions(self, impressions: Iterable[Impression]) -> None:
        """Append impressions in one transaction (committed, hence durable, when this returns)."""
        rows = [
            (i.request_id, i.time, i.query, i.mode, json.dumps(list(i.doc_ids)), i.generation, i.index_fingerprint,
             i.model, i.swapped, int(i.query_hashed))
            for i in impressions
        ]  # fmt: skip
        if not rows:
            return
        # one statement over a JSON array, not one per row: a server's writer thread then hands the GIL back and
        # forth once per batch instead of once per row (sqlite3 releases it around every step)
        with self._db:
            self._db.execute(_INSERT_IMPRESSIONS, (json.dumps(rows),))

    def append_feedback(self, events: Iterable[Feedback]) -> None:
        """Append feedback events in one transaction (committed, hence durable, when this returns)."""
        rows = [(e.request_id, e.time, e.doc_id, e.rank, e.kind, e.value) for e in events]
        for row in rows:
            if row[4] not in FEEDBACK_KINDS:
                raise DataError(f"feedback kind {row[4]!r}; kinds: {', '.join(FEEDBACK_KINDS)}", self.path)
        with self._db:
            self._db.executemany(
                "INSERT INTO feedback (request_id, time, doc_id, rank, kind, value) VALUES (?, ?, ?, ?, ?, ?)", rows
            )

    def has_request(self, request_id: str) -> bool:
        """Whether an impression was logged under ``request_id``."""
        query = "SELECT 1 FROM impressions WHERE request_id = ?"
        return self._db.execute(query, (request_id,)).fetchone() is not None

    def impression(self, request_id: str) -> Impression | None:
        """The impression logged under ``request_id`` (None when there is none)."""
        row = self._db.execute("SELECT * FROM impressions WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else _impression(row)

    def impressions(self, since: float | None = None, until: float | None = None) -> Iterator[Impression]:
        """Impressions with ``since <= time < until``, oldest first."""
        where, args = _window(since, until)
        for row in self._db.execute(f"SELECT * FROM impressions{where} ORDER BY time, request_id", args):
            yield _impression(row)

    def feedback(self, since: float | None = None, until: float | None = None) -> Iterator[Feedback]:
        """Feedback events with ``since <= time < until``, in the order they were logged."""
        where, args = _window(since, until)
        columns = "request_id, time, doc_id, rank, kind, value"
        for row in self._db.execute(f"SELECT {columns} FROM feedback{where} ORDER BY event_id", args):
            yield Feedback(*row)

    def stats(self, max_rank: int = 10, since: float | None = None, until: float | None = None) -> FeedbackStats:
        """Counts and click-through by rank (ranks 1..``max_rank``) over impressions with ``since <= time < until``
        and their feedback. A rank's click-through: clicks at that rank over impressions that showed that many
        results.

        >>> import tempfile, pathlib
        >>> with FeedbackLog(pathlib.Path(tempfile.mkdtemp()) / "f.sqlite") as log:
        ...     log.append_impressions([Impression("a", 1.0, "q", "bm25", ("d1", "d2"), 1, "fp", ""),
        ...                             Impression("b", 2.0, "q", "bm25", ("d1",), 1, "fp", "")])
        ...     log.append_feedback([Feedback("a", 3.0, "d2", 2, "click")])
        ...     stats = log.stats(max_rank=2)
        >>> stats.impressions, stats.abandonment, [(r.rank, r.shown, r.clicks) for r in stats.by_rank]
        (2, 0.5, [(1, 2, 0), (2, 1, 1)])
        """
        where, args = _window(since, until)
        shown = f"SELECT * FROM impressions{where}"
        one = self._db.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT query), COUNT(swapped), MIN(time), MAX(time) FROM ({shown})", args
        ).fetchone()
        impressions, queries, swapped, first, last = one
        joined = f"SELECT f.* FROM feedback f JOIN ({shown}) i ON f.request_id = i.request_id"
        events = dict(self._db.execute(f"SELECT kind, COUNT(*) FROM ({joined}) GROUP BY kind", args).fetchall())
        clicked = self._db.execute(
            f"SELECT COUNT(DISTINCT request_id) FROM ({joined}) WHERE kind = 'click'", args
        ).fetchone()[0]
        models = dict(self._db.execute(f"SELECT model, COUNT(*) FROM ({shown}) GROUP BY model", args).fetchall())
        lengths = dict(
            self._db.execute(f"SELECT json_array_length(doc_ids), COUNT(*) FROM ({shown}) GROUP BY 1", args).fetchall()
        )
        clicks = dict(
            self._db.execute(f"SELECT rank, COUNT(*) FROM ({joined}) WHERE kind = 'click' GROUP BY rank", args)
        )
        rows = []
        for rank in range(1, max_rank + 1):
            seen = sum(count for length, count in lengths.items() if length >= rank)
            hits = int(clicks.get(rank, 0))
            rows.append(RankStats(rank, seen, hits, hits / seen if seen else 0.0))
        abandonment = 1.0 - clicked / impressions if impressions else 0.0
        return FeedbackStats(
            impressions, queries, {kind: events.get(kind, 0) for kind in FEEDBACK_KINDS}, clicked, swapped,
            abandonment, first, last, models, rows
        )  # fmt: skip

    def prune(self, before: float) -> int:
        """Delete impressions older than ``before`` (Unix seconds) and their feedback (retention); returns how many."""
        with self._db:
            old = "SELECT request_id FROM impressions WHERE time < ?"
            self._db.execute(f"DELETE FROM feedback WHERE request_id IN ({old})", (before,))
            return self._db.execute("DELETE FROM impressions WHERE time < ?", (before,)).rowcount

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeedbackLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _impression(row: tuple[Any, ...]) -> Impression:
    request_id, time, query, mode, doc_ids, generation, fingerprint, model, swapped, hashed = row
    return Impression(
        request_id, time, query, mode, tuple(json.loads(doc_ids)), generation, fingerprint, model, swapped, bool(hashed)
    )


def _window(since: float | None, until: float | None) -> tuple[str, tuple[float, ...]]:
    clauses = [(" time >= ?", since), (" time < ?", until)]
    kept = [(sql, value) for sql, value in clauses if value is not None]
    where = " WHERE" + " AND".join(sql for sql, _ in kept) if kept else ""
    return where, tuple(value for _, value in kept)
