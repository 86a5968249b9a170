"""``searchkit serve``: the HTTP API and search page over one index (the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from searchkit.cli.options import SearcherSettings, searcher_options
from searchkit.config import ServeConfig
from searchkit.formats import FeedbackLog
from searchkit.serve.engine import EngineSpec
from searchkit.serve.feedback import check_log_path
from searchkit.serve.runner import serve
from searchkit.serve.settings import TOKEN_ENV, FeedbackSettings


@click.command("serve", short_help="Serve an index over HTTP, with a search page.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@searcher_options
@click.option("--host", default=ServeConfig.host, show_default=True, help="Interface to listen on (loopback).")
@click.option("--port", default=ServeConfig.port, show_default=True, type=int)
@click.option("--workers", default=ServeConfig.workers, show_default=True, type=int, help="Server processes.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Bearer token required on every API route and always on admin routes (or set {TOKEN_ENV}).",
)
@click.option("--max-batch", default=ServeConfig.max_batch, show_default=True, help="Queries per batched call.")
@click.option(
    "--batch-wait-ms", default=ServeConfig.batch_wait_ms, show_default=True, help="Longest wait to fill a batch."
)
@click.option(
    "--read-timeout",
    default=ServeConfig.read_timeout_s,
    show_default=True,
    help="Seconds a client has to send a request's headers, and as long for its body (later: 408, closed).",
)
@click.option(
    "--max-header-bytes",
    default=ServeConfig.max_header_bytes,
    show_default=True,
    help="Largest request line and headers (more: 431, closed).",
)
@click.option(
    "--feedback-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record impressions (every /search answer gets a request_id) and POST /feedback events in this SQLite "
    "file (its folder must exist); `searchkit feedback stats LOG` reads it.",
)
@click.option(
    "--feedback-retention-days",
    default=FeedbackSettings.retention_days,
    show_default=True,
    type=float,
    help="Delete logged impressions (and their feedback) older than this; 0 keeps them.",
)
@click.option("--hash-queries", is_flag=True, help="Store queries as salted sha256 hashes, not their text.")
@click.option(
    "--explore",
    default=FeedbackSettings.explore,
    show_default=True,
    type=float,
    help="Share of /search answers with one random adjacent pair of results swapped (logged; for position bias).",
)
def serve_command(
    directory: Path,
    settings: SearcherSettings,
    host: str,
    port: int,
    workers: int,
    token: str | None,
    max_batch: int,
    batch_wait_ms: float,
    read_timeout: float,
    max_header_bytes: int,
    feedback_log: Path | None,
    feedback_retention_days: float,
    hash_queries: bool,
    explore: float,
) -> None:
    """Serve an index over HTTP: POST /search, /search/batch, /explain; GET /health, /metrics; a search page at /;
    POST /admin/reload (or SIGHUP) re-opens the index after a rebuild, or loads {"model": PATH} if its dev guard
    passed. With --feedback-log: POST /feedback records clicks, judgments and dwell times. API docs at /docs.

    Needs `pip install 'searchkit[serve]'`. Python: searchkit.serve.serve(EngineSpec(directory, ...), ServeConfig(...))
    """

    spec = EngineSpec(
        str(directory),
        mode=settings.mode,
        fusion=settings.fusion_config(),
        rerank=settings.rerank_config(),
        device=settings.device,
    )
    config = ServeConfig(
        host=host,
        port=port,
        workers=workers,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        read_timeout_s=read_timeout,
        max_header_bytes=max_header_bytes,
    )
    feedback = None
    if feedback_log is not None:
        FeedbackLog(check_log_path(feedback_log)).close()  # a bad path or file: one line now, not in a worker
        feedback = FeedbackSettings(
            str(feedback_log), retention_days=feedback_retention_days, hash_queries=hash_queries, explore=explore
        )
    elif hash_queries or explore:
        raise click.UsageError("--hash-queries and --explore need --feedback-log")
    serve(spec, config, token=token, feedback=feedback)
