"""Micro-batching: concurrent requests that share a key are answered by one call, run in a worker thread.

A model scores 32 queries in one call far faster than in 32 calls, and a server gets its queries one request at a
time. :class:`MicroBatcher` queues each request's item under its key (for searches: the index generation, mode,
``k`` and rerank settings); the oldest group leaves when it is full (``max_batch``) or when its first item has
waited ``max_wait`` seconds (at once if it had to wait for a worker), and only when a worker thread is free, so under
load the groups grow while the workers are busy (dynamic batching) and an idle server adds at most ``max_wait``
to a request. The work runs in
``threads`` worker threads, off the event loop, which stays free to accept and answer other requests.

:class:`Lanes` puts several batchers side by side, each with threads of its own, and sends a key to the one its
``lane`` names: a BM25 query that takes a millisecond is then never queued behind a neural batch that takes a
second (with one queue it waits for every batch ahead of it, whatever it costs).

>>> import asyncio
>>> async def demo() -> list[str]:
...     batcher = MicroBatcher(lambda key, items: [f"{key}:{item}" for item in items], max_batch=8, max_wait=0.01)
...     try:
...         return await asyncio.gather(batcher.submit("k", "a"), batcher.submit("k", "b"))
...     finally:
...         await batcher.close()
>>> asyncio.run(demo())
['k:a', 'k:b']
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")


class QueueFull(Exception):
    """More items wait than the batcher's ``max_queue``: the caller should answer 503 (try again later)."""


@dataclass
class _Group(Generic[T, R]):
    """Items waiting under one key, with their callers' futures and arrival times (monotonic seconds)."""

    items: list[T] = field(default_factory=list)
    futures: list[asyncio.Future[R]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)


class MicroBatcher(Generic[K, T, R]):
    """Group concurrent items by key and answer each group with one ``run(key, items)`` call in a worker thread.

    ``run`` returns one result per item, in order; an exception it raises is every caller's. ``on_dispatch(key,
    waits)`` is called on the event loop as a group leaves, with each item's time in the queue (for metrics).
    ``name`` prefixes the worker threads' names.
    """

    def __init__(
        self,
        run: Callable[[K, list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        threads: int = 1,
        on_dispatch: Callable[[K, list[float]], None] | None = None,
        name: str = "searchkit-serve",
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._on_dispatch = on_dispatch
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._threads = threads
        self._groups: dict[K, _Group[T, R]] = {}
        self._pending = 0
        self._freed = 0.0  # when a worker last finished (monotonic)
        # created on first use: they belong to the running event loop, which does not exist yet here
        self._slots: asyncio.Semaphore | None = None
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    @property
    def pending(self) -> int:
        """Items queued and not yet handed to a worker."""
        return self._pending

    async def submit(self, key: K, item: T) -> R:
        """Queue ``item`` under ``key`` and wait for its result (QueueFull when ``max_queue`` items wait)."""
        if self._pending >= self.max_queue:
            raise QueueFull(f"{self._pending} queries are waiting (the limit is {self.max_queue}); try again later")
        loop = asyncio.get_running_loop()
        wakeup = self._start()
        future: asyncio.Future[R] = loop.create_future()
        group = self._groups.setdefault(key, _Group())
        group.items.append(item)
        group.futures.append(future)
        group.arrived.append(time.monotonic())
        self._pending += 1
        wakeup.set()
        return await future

    async def call(self, fn: Callable[..., V], *args: Any) -> V:
        """Run ``fn(*args)`` unbatched on the same worker threads (so it shares them fairly with the batches)."""
        self._start()
        assert self._slots is not None
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        """Stop dispatching, fail what still waits, and wait for the running calls to end."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for group in self._groups.values():
            for future in group.futures:
                if not future.done():
                    future.set_exception(RuntimeError("the server is shutting down"))
        self._groups.clear()
        self._pending = 0
        if self._running:
            await asyncio.wait(list(self._running))
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    # ------------------------------------------------------------------ internals
    def _start(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._threads)
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())
        return self._wakeup

    async def _dispatch_forever(self) -> None:
        assert self._slots is not None
        assert self._wakeup is not None
        while True:
            while not self._groups:
                self._wakeup.clear()
                await self._wakeup.wait()
            # then a free worker (meanwhile the waiting groups grow); it is held at most max_wait for its group
            await self._slots.acquire()
            try:
                key, group = await self._next_group()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._answer(key, group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_group(self) -> tuple[K, _Group[T, R]]:
        """The oldest group once it is full or its first item has waited ``max_wait``; taken off the queue.

        Only this task removes groups, and it calls this when there is one."""
        assert self._wakeup is not None
        while True:
            key, group = next(iter(self._groups.items()))
            delay = group.arrived[0] + self.max_wait - time.monotonic()
            # a group that arrived while every worker was busy has waited enough: a worker idling now wastes time
            waited_for_worker = group.arrived[0] <= self._freed
            if len(group.items) < self.max_batch and delay > 0 and not waited_for_worker:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                continue
            taken = _Group(
                group.items[: self.max_batch], group.futures[: self.max_batch], group.arrived[: self.max_batch]
            )
            # the rest keeps its place at the front: its items have waited longest
            del group.items[: self.max_batch], group.futures[: self.max_batch], group.arrived[: self.max_batch]
            if not group.items:
                del self._groups[key]
            self._pending -= len(taken.items)
            return key, taken

    async def _answer(self, key: K, group: _Group[T, R]) -> None:
        assert self._slots is not None
        try:
            if self._on_dispatch is not None:
                now = time.monotonic()
                self._on_dispatch(key, [now - arrived for arrived in group.arrived])
            results = await asyncio.get_running_loop().run_in_executor(self._pool, self._run, key, group.items)
            if len(results) != len(group.items):
                raise RuntimeError(f"a batch of {len(group.items)} items got {len(results)} results")
        except Exception as err:
            for future in group.futures:
                if not future.done():  # a caller that went away has cancelled its future
                    future.set_exception(err)
        else:
            for future, result in zip(group.futures, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._freed = time.monotonic()
            self._slots.release()


class Lanes(Generic[K, T, R]):
    """Batchers side by side (``batchers``: lane name -> MicroBatcher, each with its own worker threads and queue);
    a key's items go to the lane ``lane(key)`` names.

    >>> async def demo() -> list[str]:
    ...     run = lambda key, items: [f"{key}:{item}" for item in items]
    ...     lanes = Lanes({"fast": MicroBatcher(run), "slow": MicroBatcher(run)}, lambda key: key)
    ...     try:
    ...         return await asyncio.gather(lanes.submit("slow", "a"), lanes.submit("fast", "b"))
    ...     finally:
    ...         await lanes.close()
    >>> asyncio.run(demo())
    ['slow:a', 'fast:b']
    """

    def __init__(self, batchers: Mapping[str, MicroBatcher[K, T, R]], lane: Callable[[K], str]) -> None:
        self.batchers = dict(batchers)
        self.lane = lane

    @property
    def pending(self) -> int:
        """Items queued in every lane and not yet handed to a worker."""
        return sum(batcher.pending for batcher in self.batchers.values())

    async def submit(self, key: K, item: T) -> R:
        """:meth:`MicroBatcher.submit` in ``key``'s lane."""
        return await self.batchers[self.lane(key)].submit(key, item)

    async def call(self, key: K, fn: Callable[..., V], *args: Any) -> V:
        """:meth:`MicroBatcher.call` on the worker threads of ``key``'s lane."""
        return await self.batchers[self.lane(key)].call(fn, *args)

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
