"""``searchkit score`` (metrics of a TREC run against qrels) and ``searchkit eval`` (a suite, ``--check`` against its
expected scores)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from searchkit.cli.options import echo_json
from searchkit.evaluate.metrics import DEFAULT_METRICS, evaluate
from searchkit.evaluate.tables import evaluation_to_dict, format_table
from searchkit.experiments.suite import run_suite
from searchkit.experiments.suite_file import load_suite
from searchkit.formats import read_qrels, read_queries, read_run


@click.command("score", short_help="Score a TREC run against qrels.")
@click.argument("qrels")
@click.argument("run_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-m",
    "--metric",
    "metrics",
    multiple=True,
    help="Metric (repeatable) in ir-measures (nDCG@10, RR@10, R@100, AP), trec_eval (ndcg_cut_10, recip_rank, map, "
    "P_5) or ranx (ndcg@10, mrr@10, recall@100) spelling; printed by its ir-measures name. Default: "
    + ", ".join(DEFAULT_METRICS)
    + ".",
)
@click.option("--split", default="test", show_default=True, help="Qrels split when QRELS is a BEIR folder.")
@click.option("--queries", default=None, help="Full query set: unjudged queries count as 0 (see --unjudged).")
@click.option("--unjudged", default="zero", show_default=True, type=click.Choice(["zero", "skip"]))
@click.option("--per-query", is_flag=True, help="Also print each query's values.")
@click.option("--json", "as_json", is_flag=True)
def score_command(
    qrels: str,
    run_file: Path,
    metrics: Sequence[str],
    split: str,
    queries: str | None,
    unjudged: str,
    per_query: bool,
    as_json: bool,
) -> None:
    """Score a TREC RUN_FILE against QRELS.  Python: evaluate(read_run(run), read_qrels(qrels), metrics)

    Ties: hits are ranked by score, then by doc id, both descending (trec_eval's order), for every metric, whatever
    the rank column says. ir-measures' default differs on ties (its RR keeps tied hits in file order): a query whose
    hits d1, d2, d3 all score 1.0, with d1 relevant, gets RR@10 0.3333 here and from trec_eval, 1.0 from
    ir_measures.calc_aggregate.
    """

    chosen = tuple(metrics) or DEFAULT_METRICS
    query_ids = [query.query_id for query in read_queries(queries)] if queries else None
    result = evaluate(read_run(run_file), read_qrels(qrels, split), chosen, query_ids=query_ids, unjudged=unjudged)
    if as_json:
        echo_json(evaluation_to_dict(result, per_query=per_query))
        return
    if per_query:
        for query_id, values in result.per_query.items():
            click.echo(query_id + "\t" + "\t".join(f"{name}={value:.4f}" for name, value in values.items()))
    click.echo(format_table([(str(run_file), result.aggregate)], chosen))
    for line in result.report.lines():
        click.echo(line)


@click.command("eval", short_help="Run an evaluation suite and compare with its expected scores.")
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Exit 1 when a metric leaves its expected tolerance.")
@click.option("--only", multiple=True, help="Run only these conditions (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Results JSON path.")
@click.option(
    "--rebuild",
    is_flag=True,
    default=None,
    help="Rebuild an existing index whose source or settings differ from a condition's (default: the suite's "
    "`rebuild` key, else refuse and say what differs). A folder that is not a searchkit index is never replaced.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def eval_command(
    ctx: click.Context,
    suite: Path,
    check: bool,
    only: Sequence[str],
    output: Path | None,
    rebuild: bool | None,
    as_json: bool,
) -> None:
    """Run an evaluation SUITE (eval/*.toml) and compare with its expected scores.

    Python: run_suite(load_suite(suite), check=True, rebuild=None)
    """

    result = run_suite(
        load_suite(suite),
        check=check,
        show_progress=ctx.obj["progress"],
        only=list(only) or None,
        output=output,
        rebuild=rebuild,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.format())
    if check and not result.passed:
        sys.exit(1)
