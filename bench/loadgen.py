"""Load on a searchkit server, and the same work without one: throughput, latency percentiles, errors, memory.

:func:`start_server` runs ``searchkit serve`` in a child process on a free loopback port; :func:`drive` keeps
``clients`` concurrent requests in flight for a fixed time (or request count) from an asyncio loop (one keep-alive
connection a client), optionally reloading the index meanwhile; :func:`drive_mixed` runs several groups of such
clients at once (BM25 and hybrid, say) beside slow clients that trickle their headers or bodies (:data:`SLOW_KINDS`);
:func:`bare_loop` is the baseline: one thread calling ``Searcher.search`` (and reading the same fields) in a loop,
what an application would do without the server. ``bench/serve.py`` is the command-line shell over them.

>>> result = LoadResult(ok=[0.010, 0.020], errors={}, dropped=0, sent=2, seconds=0.5)
>>> result.summary()["throughput_per_s"], result.summary()["p50_ms"]
(4.0, 10.0)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchtools import percentiles

from searchkit.serve.settings import TOKEN_ENV
from searchkit.types import ConfigError


@dataclass
class LoadResult:
    """What a load run saw: latencies of the answered requests (seconds), non-200 answers by status, requests
    that got no answer at all (``dropped``: connection errors, timeouts), requests sent, wall time, reloads."""

    ok: list[float]
    errors: dict[int, int]
    dropped: int
    sent: int
    seconds: float
    reloads: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Throughput of answered requests, their p50/p95/p99, and the failures."""
        latency = percentiles(self.ok) if self.ok else {}
        return {
            "throughput_per_s": round(len(self.ok) / self.seconds, 1) if self.seconds else 0.0,
            **latency,
            "sent": self.sent,
            "answered": len(self.ok),
            "errors": sum(self.errors.values()),
            "errors_by_status": {str(status): count for status, count in sorted(self.errors.items())},
            "dropped": self.dropped,
            "seconds": round(self.seconds, 2),
            **({"reloads": dict(self.reloads)} if self.reloads else {}),
        }


# ---------------------------------------------------------------------- a server in a child process
def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of process ``pid`` in MB (Linux ``VmHWM``; None where it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


class ServerProcess:
    """A running ``searchkit serve`` child: its ``url``, ``pid``, ``token``, log file; stopped on exit (SIGTERM)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str | None, log: Path) -> None:
        self.process = process
        self.url = url
        self.token = token
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (uvicorn finishes the requests in flight), then SIGKILL after ``timeout``; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_server(
    index: str | Path,
    args: Sequence[str] = (),
    *,
    token: str | None = None,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``searchkit serve INDEX --port P ARGS`` on a free port and wait until ``/health`` answers.

    ConfigError with the server's last log lines when it exits or does not answer within ``timeout`` seconds.
    """
    port = free_port()
    command = [sys.executable, "-m", "searchkit", "serve", str(index), "--port", str(port), *args]
    environment = {**os.environ, **(env or {})}
    environment.pop(TOKEN_ENV, None)
    if token:
        environment[TOKEN_ENV] = token
    handle, name = tempfile.mkstemp(prefix="searchkit-serve-", suffix=".log")
    with os.fdopen(handle, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", token, Path(name))
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise ConfigError(f"searchkit serve exited with {process.returncode}: {tail}")
        if _healthy(server):
            return server
        if time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise ConfigError(f"searchkit serve did not answer /health within {timeout:.0f} s: {tail}")
        time.sleep(0.1)


def _healthy(server: ServerProcess) -> bool:
    request = urllib.request.Request(server.url + "/health", headers=server.headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------- load
class _Connection:
    """One keep-alive HTTP/1.1 connection that posts a body and reads the answer's status (its body by length).

    Why not httpx: on these 2 cores an httpx request costs the client 2-3 ms of CPU (about 400 requests/s whatever
    the server does), more than the server spends answering it, so the load test would measure httpx. This client
    costs a tenth of that; it understands exactly what uvicorn sends (a Content-Length on every answer).
    """

    def __init__(self, host: str, port: int, headers: bytes) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n".encode("ascii")
        self.writer.write(head + self.headers + b"\r\n" + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            fields = {name.strip().lower(): value.strip() for name, value in fields.items()}
            await self.reader.readexactly(int(fields.get("content-length", "0")))
        except BaseException:
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class _Tally:
    """What one group of clients saw so far."""

    ok: list[float] = field(default_factory=list)
    errors: Counter[int] = field(default_factory=Counter)
    dropped: int = 0

    def result(self, seconds: float, reloads: Mapping[str, int] | None = None) -> LoadResult:
        sent = len(self.ok) + sum(self.errors.values()) + self.dropped
        return LoadResult(self.ok, dict(self.errors), self.dropped, sent, seconds, dict(reloads or {}))


async def _client(
    host: str,
    port: int,
    headers: bytes,
    route: str,
    payloads: Sequence[bytes],
    numbers: Iterator[int],
    deadline: float,
    max_requests: int | None,
    timeout: float,
    tally: _Tally,
) -> None:
    """One client on one keep-alive connection: post the next payload as soon as the previous one is answered."""
    connection = _Connection(host, port, headers)
    try:
        while time.perf_counter() < deadline:
            number = next(numbers)
            if max_requests is not None and number >= max_requests:
                return
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    status = await connection.post(route, payloads[number % len(payloads)])
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                tally.dropped += 1
                continue
            if status == 200:
                tally.ok.append(time.perf_counter() - sent)
            else:
                tally.errors[status] += 1
    finally:
        connection.close()


def _request_headers(token: str | None) -> bytes:
    headers = b"Content-Type: application/json\r\n"
    if token:
        headers += f"Authorization: Bearer {token}\r\n".encode("ascii")
    return headers


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


async def drive(
    url: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    clients: int = 32,
    duration: float = 60.0,
    max_requests: int | None = None,
    route: str = "/search",
    token: str | None = None,
    reloads: int = 0,
    timeout: float = 120.0,
) -> LoadResult:
    """``clients`` concurrent clients (one keep-alive connection each), each posting the next of ``bodies`` (round
    robin) as soon as its previous request is answered, until ``duration`` seconds have passed or
    ``max_requests`` were sent; requests in flight then finish. A request without an answer (connection error,
    ``timeout``) counts as dropped. ``reloads``: POST /admin/reload that many times, evenly spread over the run
    (needs ``token``)."""
    if not bodies:
        raise ConfigError("drive needs at least one request body")
    host, port = _host_port(url)
    headers = _request_headers(token)
    payloads = [json.dumps(body).encode("utf-8") for body in bodies]  # encoded once: the client should cost little
    tally = _Tally()
    reloaded: Counter[str] = Counter()
    numbers = itertools.count()
    start = time.perf_counter()
    deadline = start + duration
    args = (host, port, headers, route, payloads, numbers, deadline, max_requests, timeout, tally)

    async def reloader() -> None:
        for i in range(reloads):
            await asyncio.sleep(max(0.0, start + duration * (i + 1) / (reloads + 1) - time.perf_counter()))
            # a connection of its own each time: the server closes one left idle longer than its keep-alive
            connection = _Connection(host, port, headers)
            try:
                status = await connection.post("/admin/reload", b"")
                reloaded["ok" if status == 200 else f"status {status}"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                reloaded[type(err).__name__] += 1
            finally:
                connection.close()

    await asyncio.gather(*(_client(*args) for _ in range(clients)), reloader())
    return tally.result(time.perf_counter() - start, reloaded)


# ---------------------------------------------------------------------- mixed load and slow clients
@dataclass
class SlowResult:
    """What slow clients of one ``kind`` saw: how each connection ended (the status the server answered, ``closed``
    without an answer, ``reset``, or ``open``: still held when the run ended) and how long each was held."""

    kind: str
    ended: dict[str, int]
    held: list[float]

    def summary(self) -> dict[str, Any]:
        held = sorted(self.held)
        return {
            "connections": len(held),
            "ended": dict(sorted(self.ended.items())),
            "median_held_s": round(held[len(held) // 2], 2) if held else None,
            "longest_held_s": round(held[-1], 2) if held else None,
        }


SLOW_KINDS = ("headers", "body")
"""``headers``: a request whose headers arrive a byte at a time; ``body``: whole headers, then a byte of the body
at a time (a Content-Length it never reaches)."""


def slow_request(kind: str, token: str | None = None) -> tuple[bytes, bytes]:
    """(what a slow client of ``kind`` sends at once, what it then sends a byte at a time)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    if kind == "headers":
        return b"", f"POST /search HTTP/1.1\r\nHost: bench\r\n{auth}X-Slow: {'a' * 4000}\r\n\r\n".encode()
    if kind == "body":
        head = f"POST /search HTTP/1.1\r\nHost: bench\r\n{auth}Content-Type: application/json\r\n"
        return f"{head}Content-Length: 4000\r\n\r\n".encode(), b'{"query": "' + b"a" * 3989
    raise ConfigError(f"unknown slow client kind {kind!r}; choose one of {', '.join(SLOW_KINDS)}")


async def _slow_connection(host: str, port: int, kind: str, token: str | None, every: float, deadline: float) -> Any:
    """One slow connection until the server answers or closes it, or ``deadline``: (how it ended, seconds held)."""
    first, trickled = slow_request(kind, token)
    start = time.perf_counter()
    ended = "open"
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "refused", 0.0
    answer = asyncio.ensure_future(reader.read(65536))
    try:
        writer.write(first)
        for byte in trickled:
            if answer.done() or time.perf_counter() >= deadline:
                break
            writer.write(bytes([byte]))
            await asyncio.wait({answer}, timeout=every)
        else:
            await asyncio.wait({answer}, timeout=max(0.0, deadline - time.perf_counter()))
        if answer.done():
            data = answer.result()
            ended = data.split(b" ", 2)[1].decode("ascii", "replace") if data.startswith(b"HTTP/1.1 ") else "closed"
    except OSError:
        ended = "reset"
    finally:
        if not answer.done():
            answer.cancel()
        writer.close()
    return ended, time.perf_counter() - start


async def drive_mixed(
    url: str,
    groups: Mapping[str, tuple[Sequence[Mapping[str, Any]], int]],
    *,
    duration: float = 60.0,
    token: str | None = None,
    slow_clients: Mapping[str, int] | None = None,
    slow_every: float = 0.5,
    timeout: float = 120.0,
) -> tuple[dict[str, LoadResult], dict[str, SlowResult]]:
    """Several groups of clients at once, as :func:`drive` runs one: ``groups`` maps a name to (bodies, clients),
    each group posting its own bodies round robin to /search; meanwhile ``slow_clients`` (kind -> count, kinds in
    :data:`SLOW_KINDS`) each send a request a byte every ``slow_every`` seconds, and connect again as soon as the
    server closes them. Returns each group's LoadResult and each kind's SlowResult."""
    host, port = _host_port(url)
    headers = _request_headers(token)
    start = time.perf_counter()
    deadline = start + duration
    tallies = {name: _Tally() for name in groups}
    slow: dict[str, SlowResult] = {kind: SlowResult(kind, {}, []) for kind in slow_clients or {}}
    finished: dict[str, float] = {}

    async def group(name: str, bodies: Sequence[Mapping[str, Any]], count: int) -> None:
        payloads = [json.dumps(body).encode("utf-8") for body in bodies]
        args = (host, port, headers, "/search", payloads, itertools.count(), deadline, None, timeout, tallies[name])
        await asyncio.gather(*(_client(*args) for _ in range(count)))
        finished[name] = time.perf_counter()  # a group's throughput is over its own time, stragglers included

    for name, (bodies, _) in groups.items():
        if not bodies:
            raise ConfigError(f"client group {name!r} needs at least one request body")

    async def slow_client(kind: str) -> None:
        result = slow[kind]
        while time.perf_counter() < deadline:
            ended, held = await _slow_connection(host, port, kind, token, slow_every, deadline)
            result.ended[ended] = result.ended.get(ended, 0) + 1
            result.held.append(held)

    slowed = [slow_client(kind) for kind, count in (slow_clients or {}).items() for _ in range(count)]
    await asyncio.gather(*(group(name, bodies, count) for name, (bodies, count) in groups.items()), *slowed)
    return {name: tally.result(finished[name] - start) for name, tally in tallies.items()}, slow


def bare_loop(
    searcher: Any,
    queries: Sequence[str],
    *,
    k: int = 10,
    fields: Sequence[str] = (),
    duration: float = 60.0,
    max_requests: int | None = None,
) -> LoadResult:
    """The baseline: ``searcher.search(query, k)`` (and the documents' ``fields``, as the server returns them) one
    query after another in this thread, for ``duration`` seconds or ``max_requests`` queries."""
    ok: list[float] = []
    start = time.perf_counter()
    deadline = start + duration
    for number in itertools.count():
        if time.perf_counter() >= deadline or (max_requests is not None and number >= max_requests):
            break
        sent = time.perf_counter()
        hits = searcher.search(queries[number % len(queries)], k)
        if fields:
            for document in searcher.index.documents([hit.doc_id for hit in hits]):
                for name in fields:
                    getattr(document, name)
        ok.append(time.perf_counter() - sent)
    return LoadResult(ok, {}, 0, len(ok), time.perf_counter() - start)
