"""Feedback capture in the server: impressions of ``/search`` answers and the feedback events of ``POST /feedback``,
written to a :class:`searchkit.formats.FeedbackLog` by one writer thread, off the request path.

A search puts its impression on the writer's queue and is answered at once: its latency does not wait for the disk.
The writer commits impressions in groups gathered for up to :data:`FLUSH_EVERY_S` (one transaction, one fsync for
all of them, rather than one per search); an impression still in the queue when the process is killed is lost (the
answer it describes is not a promise of anything). A feedback event is answered only once the writer has committed
it (SQLite WAL, ``synchronous=FULL``): an acknowledged event (a 2xx) survives ``kill -9`` and a power cut; the
client's wait is one transaction, shared by every event that arrived meanwhile (group commit). The queue is first-in
first-out and an impression is queued before its answer is sent, so the impression of any ``request_id`` a client
can know is committed before, or in the same batch as, its feedback.

Feedback is checked against its impression: an unknown ``request_id`` is 404, a ``doc_id`` not shown at ``rank``
400. Nothing that identifies a person is stored (no address, header or cookie reaches this module), and with
``hash_queries`` the query is stored as its salted hash. Exploration (``explore``): for that share of ``/search``
answers, one random adjacent pair of the shown hits is swapped (ranks renumbered as shown) and the upper rank of the
pair recorded as ``Impression.swapped``.

The log's path may not leave its folder: the file, and SQLite's ``-wal`` and ``-shm`` beside it, must not be
symbolic links (:func:`check_log_path`).

>>> import tempfile, pathlib
>>> from searchkit.serve.settings import FeedbackSettings
>>> path = pathlib.Path(tempfile.mkdtemp()) / "fb.sqlite"
>>> recorder = FeedbackRecorder(FeedbackSettings(str(path)))
>>> request_id = recorder.impression("cats", "bm25", ["d1", "d2"], 1, "fp", "", None)
>>> recorder.record_sync(request_id, "d2", 2, "click", None)["recorded"]
True
>>> recorder.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import random
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from searchkit.formats import Feedback, FeedbackLog, Impression, hash_query
from searchkit.serve.metrics import ServeMetrics
from searchkit.serve.settings import SALT_ENV, FeedbackSettings
from searchkit.types import ConfigError, DataError

logger = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
FLUSH_EVERY_S = 0.1  # impressions are committed in groups gathered for this long (feedback cuts it short)
BATCH = 8192
CLICKED_MEMORY = 100_000  # request ids whose first click was counted (older ones forgotten)


class FeedbackRefused(Exception):
    """Feedback the server does not record: ``status`` (404 unknown request, 400 not what was shown) and a line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_log_path(path: str | Path) -> Path:
    """The log's path, refused (ConfigError, one line) when it could write outside its folder: a folder that does
    not exist, the name of a folder, or a symbolic link as the file or as SQLite's ``-wal``/``-shm`` beside it.

    >>> check_log_path("/no/such/folder/fb.sqlite")
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: --feedback-log /no/such/folder/fb.sqlite: the folder /no/such/folder does not exist
    """
    given = Path(path)
    folder = given.parent
    if not folder.is_dir():
        raise ConfigError(f"--feedback-log {given}: the folder {folder} does not exist")
    target = folder.resolve() / given.name
    for name in (given.name, given.name + "-wal", given.name + "-shm", given.name + ".salt"):
        if (folder / name).is_symlink():
            raise ConfigError(
                f"--feedback-log {given}: {folder / name} is a symbolic link; the log stays in its folder"
            )
    if target.is_dir():
        raise ConfigError(f"--feedback-log {given}: is a folder; name a file in it")
    return target


def query_salt(log: Path) -> str:
    """The salt of hashed queries: ``$SEARCHKIT_FEEDBACK_SALT``, else ``LOG.salt`` (made once, owner-only)."""
    given = os.environ.get(SALT_ENV)
    if given:
        return given
    path = log.with_name(log.name + ".salt")
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        salt = path.read_text(encoding="utf-8").strip()
        if not salt:
            raise DataError("empty salt file; delete it (hashes of older impressions no longer match)", path) from None
        return salt
    salt = secrets.token_hex(32)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(salt + "\n")
        out.flush()
        os.fsync(out.fileno())
    return salt


class _Pending(NamedTuple):
    event: Feedback
    done: concurrent.futures.Future[dict[str, Any]]


_STOP = object()


class FeedbackRecorder:
    """The server's side of the feedback log: ``impression`` (non-blocking), ``record`` (awaits the commit),
    ``explore`` (the swap), ``close`` (drains the queue, then closes the log)."""

    def __init__(self, settings: FeedbackSettings, metrics: ServeMetrics | None = None) -> None:
        self.settings = settings
        self.path = check_log_path(settings.log)
        self.metrics = metrics
        self.salt = query_salt(self.path) if settings.hash_queries else ""
        self._log = FeedbackLog(self.path)  # opened here (errors reach the caller), used by the writer thread only
        self._random = random.Random(settings.seed)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._urgent = threading.Event()
        self._impressions_waiting = 0
        self._count_lock = threading.Lock()
        self._clicked: OrderedDict[str, None] = OrderedDict()
        self._pruned_at = 0.0
        self._prune()
        self._thread = threading.Thread(target=self._write_loop, name="searchkit-feedback", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ request path
    def explore(self, hits: list[dict[str, Any]]) -> int | None:
        """For ``explore`` of the answers: swap one random adjacent pair of ``hits`` (rank dicts, best first) in
        place, renumbering their ranks; the upper rank of the pair (1-based), or None when nothing was swapped."""
        share = self.settings.explore
        if share <= 0.0 or len(hits) < 2 or self._random.random() >= share:
            return None
        upper = self._random.randrange(1, len(hits))  # ranks upper and upper + 1 trade places
        hits[upper - 1], hits[upper] = hits[upper], hits[upper - 1]
        hits[upper - 1]["rank"], hits[upper]["rank"] = upper, upper + 1
        return upper

    def impression(
        self,
        query: str,
        mode: str,
        doc_ids: Sequence[str],
        generation: int,
        index_fingerprint: str,
        model: str,
        swapped: int | None,
    ) -> str | None:
        """Queue one answer's impression; its ``request_id`` (None when the queue is full: not logged, counted)."""
        with self._count_lock:
            if self._impressions_waiting >= self.settings.max_pending:
                if self.metrics is not None:
                    self.metrics.unlogged.inc()
                return None
            self._impressions_waiting += 1
        request_id = uuid.uuid4().hex
        text = hash_query(query, self.salt) if self.settings.hash_queries else query
        impression = Impression(
            request_id, time.time(), text, mode, tuple(doc_ids), generation, index_fingerprint, model, swapped,
            self.settings.hash_queries,
        )  # fmt: skip
        self._queue.put(impression)
        if self.metrics is not None:
            self.metrics.impression(model)
        return request_id

    async def record(self, request_id: str, doc_id: str, rank: int, kind: str, value: float | None) -> dict[str, Any]:
        """Record one feedback event; returns once it is committed. FeedbackRefused for one that does not match
        an impression."""
        return await asyncio.wrap_future(self._submit(request_id, doc_id, rank, kind, value))

    def record_sync(self, request_id: str, doc_id: str, rank: int, kind: str, value: float | None) -> dict[str, Any]:
        """:meth:`record` for callers outside an event loop."""
        return self._submit(request_id, doc_id, rank, kind, value).result()

    def _submit(
        self, request_id: str, doc_id: str, rank: int, kind: str, value: float | None
    ) -> concurrent.futures.Future[dict[str, Any]]:
        done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        if not self._thread.is_alive():
            done.set_exception(FeedbackRefused(503, "the feedback log is closed"))
            return done
        self._queue.put(_Pending(Feedback(request_id, time.time(), doc_id, rank, kind, value), done))
        self._urgent.set()  # the writer commits now rather than at the end of its gathering window
        return done

    # ------------------------------------------------------------------ the writer thread
    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=60.0)
            except queue.Empty:
                self._prune()
                continue
            if not isinstance(first, _Pending) and first is not _STOP:
                # impressions only: gather more for FLUSH_EVERY_S (one commit for all), unless feedback arrives
                self._urgent.wait(FLUSH_EVERY_S)
            self._urgent.clear()  # before draining: feedback queued after this sets it again
            items = [first]
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in items)
            self._write([item for item in items if item is not _STOP])
            self._prune()
        self._log.close()

    def _write(self, items: list[Any]) -> None:
        impressions = [item for item in items if isinstance(item, Impression)]
        pending = [item for item in items if isinstance(item, _Pending)]
        if impressions:
            try:
                self._log.append_impressions(impressions)
            except Exception as err:  # the searches were answered: count and log, keep serving
                logger.error("feedback log: %d impressions not written: %s", len(impressions), err)
                if self.metrics is not None:
                    self.metrics.unlogged.inc(len(impressions))
            with self._count_lock:
                self._impressions_waiting -= len(impressions)
        if not pending:
            return
        accepted: list[tuple[_Pending, Impression]] = []
        for item in pending:
            try:
                accepted.append((item, self._shown(item.event)))
            except FeedbackRefused as refused:
                item.done.set_exception(refused)
        if not accepted:
            return
        try:
            self._log.append_feedback([item.event for item, _ in accepted])
        except Exception as err:
            logger.error("feedback log: %d events not written: %s", len(accepted), err)
            for item, _ in accepted:
                item.done.set_exception(FeedbackRefused(503, f"the feedback log could not be written ({err})"))
            return
        for item, shown in accepted:  # committed: acknowledge
            event = item.event
            if event.kind == "click" and self.metrics is not None:
                first = event.request_id not in self._clicked
                if first:
                    self._clicked[event.request_id] = None
                    if len(self._clicked) > CLICKED_MEMORY:
                        self._clicked.popitem(last=False)
                self.metrics.click(shown.model, event.rank, first)
            item.done.set_result({"recorded": True, "request_id": event.request_id, "kind": event.kind})

    def _shown(self, event: Feedback) -> Impression:
        impression = self._log.impression(event.request_id)
        if impression is None:
            raise FeedbackRefused(
                404,
                f"unknown request_id {event.request_id!r}: send the request_id of a /search answer of this server "
                f"(impressions older than {self.settings.retention_days:g} days are deleted)",
            )
        if not 1 <= event.rank <= len(impression.doc_ids) or impression.doc_ids[event.rank - 1] != event.doc_id:
            raise FeedbackRefused(
                400, f"doc_id {event.doc_id!r} was not shown at rank {event.rank} of request {event.request_id}"
            )
        return impression

    def _prune(self) -> None:
        days = self.settings.retention_days
        now = time.time()
        if days <= 0 or now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            removed = self._log.prune(before=now - days * 86400.0)
        except Exception as err:
            logger.error("feedback log: retention pruning failed: %s", err)
            return
        if removed:
            logger.info("feedback log: %d impressions older than %g days deleted", removed, days)

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then close the log (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._urgent.set()
            self._thread.join(timeout)
