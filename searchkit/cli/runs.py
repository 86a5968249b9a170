"""``searchkit fuse`` (run files fused as the Searcher fuses its stages) and ``searchkit rerank`` (any TREC run's
candidates re-scored by a cross-encoder, with the texts from an index's doc store)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from searchkit.config import FusionConfig
from searchkit.formats import read_run, write_run
from searchkit.ranking.fusion import FUSE_METHODS, NORMS, fuse_runs


def parse_weights(text: str | None) -> list[float] | None:
    """``"0.3,0.7"`` -> ``[0.3, 0.7]`` (None stays None); a value that is not a number is a usage error."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint="--weights") from None


@click.command("fuse", short_help="Fuse TREC run files (RRF, convex, CombSUM, CombMNZ).")
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="TREC run file.")
@click.option("--method", default="rrf", show_default=True, type=click.Choice(FUSE_METHODS))
@click.option(
    "--weights",
    default=None,
    metavar="W1,W2,...",
    help="Convex fusion: one weight per run, in the order given (default: equal weights summing to 1; two runs "
    "BM25,DENSE with 1-a,a are the Searcher's convex hybrid with --alpha a).",
)
@click.option("--rrf-k", default=FusionConfig.rrf_k, show_default=True, help="RRF constant.")
@click.option(
    "--norm",
    default="minmax",
    show_default=True,
    type=click.Choice(NORMS),
    help="Per-query score normalisation for convex, combsum and combmnz (constant scores: 1.0 under minmax).",
)
@click.option("-k", default=1000, show_default=True, help="Hits per query written.")
@click.option("--tag", default="searchkit-fuse", show_default=True, help="Run tag (TREC column 6).")
def fuse_command(
    runs: Sequence[Path],
    output: Path,
    method: str,
    weights: str | None,
    rrf_k: int,
    norm: str,
    k: int,
    tag: str,
) -> None:
    """Fuse RUNS (TREC run files) per query with the arithmetic the Searcher's hybrid uses.

    Ranks are each run's score order (ties by doc id, descending, as trec_eval); a query missing from a run gets
    nothing from it. Python: write_run(fuse_runs([read_run(r) for r in runs], method, weights=...), output)
    """
    fused = fuse_runs([read_run(path) for path in runs], method, weights=parse_weights(weights), rrf_k=rrf_k, norm=norm)
    write_run({query_id: hits[:k] for query_id, hits in fused.items()}, output, tag=tag)
    click.echo(f"wrote {output}: {len(fused)} queries fused from {len(runs)} runs ({method})")
