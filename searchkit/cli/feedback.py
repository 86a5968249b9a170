"""``searchkit feedback``: read the feedback log `searchkit serve --feedback-log` writes (``stats``)."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from searchkit.cli.options import echo_json
from searchkit.formats import FeedbackLog


@click.group("feedback", short_help="Read a feedback log written by `searchkit serve --feedback-log`.")
def feedback() -> None:
    """Read a feedback log (SQLite) written by `searchkit serve --feedback-log`; a running server may keep writing."""


@feedback.command("stats", short_help="Counts and click-through by rank.")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-rank", default=10, show_default=True, type=click.IntRange(min=1), help="Ranks shown.")
@click.option("--json", "as_json", is_flag=True)
def stats_command(log: Path, max_rank: int, as_json: bool) -> None:
    """Impressions, distinct queries, feedback events by kind, abandonment, exploration swaps, impressions per
    model version, and click-through by rank (clicks at a rank / impressions that showed that rank).

    Python: FeedbackLog(LOG, readonly=True).stats(max_rank)"""

    with FeedbackLog(log, readonly=True) as reader:
        stats = reader.stats(max_rank)
    if as_json:
        echo_json(stats.to_dict())
        return
    window = "" if stats.first is None or stats.last is None else f" from {_when(stats.first)} to {_when(stats.last)}"
    click.echo(f"{log}: {stats.impressions} impressions of {stats.queries} distinct queries{window}")
    click.echo("events: " + ", ".join(f"{count} {kind}" for kind, count in stats.events.items()))
    click.echo(
        f"impressions with a click: {stats.clicked_impressions} (abandonment {stats.abandonment:.3f}); "
        f"exploration swaps: {stats.swapped_impressions}"
    )
    for model, count in sorted(stats.models.items()):
        click.echo(f"model {model or 'none (no reranker)'}: {count} impressions")
    click.echo("rank\tshown\tclicks\tctr")
    for row in stats.by_rank:
        click.echo(f"{row.rank}\t{row.shown}\t{row.clicks}\t{row.click_through:.4f}")


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")
