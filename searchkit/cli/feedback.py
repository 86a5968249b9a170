"""``searchkit feedback``: read a ``serve --feedback-log`` file (``stats``: counts and click-through by rank;
``export``: clicks as weighted training pairs)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import click

from searchkit.cli.options import echo_json
from searchkit.formats import FeedbackLog
from searchkit.training.feedback import DEFAULT_CLIP, export_feedback
from searchkit.training.propensity import MIN_SWAPS


def parse_moment(text: str | None) -> float | None:
    """A ``--since``/``--until`` value as Unix seconds: a number of seconds, or an ISO 8601 date or date-time (UTC
    unless it names a zone).

    >>> parse_moment("2026-12-01"), parse_moment("1700000000.5"), parse_moment(None)
    (1796083200.0, 1700000000.5, None)
    """
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise click.BadParameter(f"{text!r}: give Unix seconds or an ISO date, e.g. 2026-12-01T08:00") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(value):
        raise click.BadParameter(f"{text!r}: give Unix seconds or an ISO date, e.g. 2026-12-01T08:00")
    return value


@click.group("feedback", short_help="Read a serve feedback log: stats, or training pairs (export).")
def feedback() -> None:
    """Read the log `searchkit serve --feedback-log PATH` writes (impressions and clicks, SQLite)."""


@feedback.command("export")
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Pairs TSV.")
@click.option("--naive", is_flag=True, help="Every click weighs 1 (no propensity correction; the biased baseline).")
@click.option(
    "--clip", default=DEFAULT_CLIP, show_default=True, type=float, help="Largest weight 1 / p(rank) of a click."
)
@click.option("--since", default=None, help="Only impressions from this moment (Unix seconds or ISO date, UTC).")
@click.option("--until", default=None, help="Only impressions before this moment.")
@click.option(
    "--min-swaps",
    default=MIN_SWAPS,
    show_default=True,
    type=int,
    help="Swapped impressions a rank needs to be estimated (fewer: the position-based prior, said in a log line).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the propensity bootstrap interval.")
@click.option("--json", "as_json", is_flag=True, help="Print the export's record (window, counts, propensities).")
def export_command(
    log: Path,
    output: Path,
    naive: bool,
    clip: float,
    since: str | None,
    until: str | None,
    min_swaps: int,
    seed: int,
    as_json: bool,
) -> None:
    """Write LOG's clicks as labelled pairs (query, doc, label, weight) to OUTPUT, the TSV `searchkit train` reads
    (`pairs = "OUTPUT"`, `weighting = "column"`): clicked results are positives weighted 1 / p(rank), clipped;
    results above the last click that were not clicked are negatives; the rest are not used. Propensities are
    estimated from the log's explore swaps. The window, counts, clip and propensities go to OUTPUT.json.

    Python: searchkit.training.feedback.export_feedback(LOG, OUTPUT, naive=..., clip=..., since=..., until=...)
    """
    export = export_feedback(
        log,
        output,
        naive=naive,
        clip=clip,
        since=parse_moment(since),
        until=parse_moment(until),
        min_swaps=min_swaps,
        seed=seed,
    )
    record = export.record
    if as_json:
        echo_json(record)
        return
    counts = record["counts"]
    click.echo(
        f"pairs        {len(export.pairs)} ({counts['positives']} positives, {counts['negatives']} negatives) of "
        f"{counts['queries']} queries -> {output}"
    )
    click.echo(
        f"from         {counts['clicked_impressions']} clicked of {counts['impressions']} impressions, "
        f"{counts['clicks']} clicks"
    )
    propensities = record["propensities"]
    if propensities is None:
        click.echo("weights      naive: every click weighs 1")
    else:
        click.echo(f"weights      1 / p(rank), clipped at {record['clip']:g}; p(r) / p(1) by rank:")
        columns = ("values", "lower", "upper", "source")
        rows = zip(*(propensities[name] for name in columns), strict=True)
        for rank, (value, low, high, source) in enumerate(rows, start=1):
            click.echo(f"  {rank:>3}  {value:.3f}  [{low:.3f}, {high:.3f}]  {source}")
    click.echo(f"record       {output.with_name(output.name + '.json')}")


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
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
