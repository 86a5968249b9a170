"""``searchkit score`` (metrics of a TREC run against qrels), ``searchkit compare`` (several runs against a baseline,
with p-values) and ``searchkit eval`` (a suite, ``--check`` against its expected scores)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from searchkit.cli.options import echo_json
from searchkit.evaluate.metrics import DEFAULT_METRICS, evaluate
from searchkit.evaluate.significance import PERMUTATIONS, SEED, TESTS, compare_to_baseline
from searchkit.evaluate.tables import evaluation_to_dict, format_comparison, format_table
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


@click.command("compare", short_help="Compare TREC runs against a baseline run, with p-values.")
@click.argument("qrels")
@click.argument("run_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="RUN...")
@click.option(
    "--baseline",
    default=None,
    metavar="NAME",
    help="The run the others are tested against: its file name "
    "without extension, or its path as given (default: the first RUN).",
)
@click.option(
    "-m",
    "--metric",
    "--metrics",
    "metrics",
    multiple=True,
    help="ir-measures name (repeatable or comma-separated). Default: nDCG@10, RR@10, R@100, AP.",
)
@click.option(
    "--test",
    "test",
    default="t",
    show_default=True,
    type=click.Choice(TESTS),
    help="Paired two-sided test: t (paired t-test) or permutation (paired randomization test).",
)
@click.option(
    "--permutations",
    default=PERMUTATIONS,
    show_default=True,
    help="Most sign assignments the permutation test enumerates; with more queries it draws this many.",
)
@click.option("--seed", default=SEED, show_default=True, help="Seed of the permutation test's random draws.")
@click.option("--split", default="test", show_default=True, help="Qrels split when QRELS is a BEIR folder.")
@click.option("--json", "as_json", is_flag=True)
def compare_command(
    qrels: str,
    run_files: Sequence[Path],
    baseline: str | None,
    metrics: Sequence[str],
    test: str,
    permutations: int,
    seed: int,
    split: str,
    as_json: bool,
) -> None:
    """Score each RUN (TREC run files) against QRELS and test each against the baseline run, per query: a p-value
    column per metric, Holm-corrected across the runs (one family per metric). Every run is scored on the judged
    queries of QRELS; a judged query a run lacks scores 0.

    Python: compare_to_baseline({name: evaluate(read_run(path), qrels, metrics)}, baseline, metrics, test="t")
    (searchkit.evaluate.significance)
    """

    chosen = [part for metric in metrics for part in metric.split(",") if part.strip()] or list(DEFAULT_METRICS)
    chosen = [metric.strip() for metric in chosen]
    names = _run_names(run_files)
    if baseline is None:
        baseline = names[0]
    elif baseline not in names:
        by_path = {str(path): name for path, name in zip(run_files, names, strict=True)}
        if baseline not in by_path:
            raise click.BadParameter(f"{baseline!r} is none of the runs: {', '.join(names)}", param_hint="--baseline")
        baseline = by_path[baseline]
    judged = read_qrels(qrels, split)
    evaluations = {name: evaluate(read_run(path), judged, chosen) for name, path in zip(names, run_files, strict=True)}
    significance = compare_to_baseline(evaluations, baseline, chosen, test, permutations=permutations, seed=seed)
    if as_json:
        echo_json(
            {
                "runs": {
                    name: {"file": str(path), "aggregate": evaluations[name].aggregate}
                    for name, path in zip(names, run_files, strict=True)
                },
                **dataclasses.asdict(significance),
            }
        )
        return
    click.echo(format_comparison(evaluations, chosen, significance))


def _run_names(paths: Sequence[Path]) -> list[str]:
    """Each run's name: its file name without the extension, or its path as given where two names would clash."""
    stems = [path.stem for path in paths]
    names = [stem if stems.count(stem) == 1 else str(path) for stem, path in zip(stems, paths, strict=True)]
    if len(set(names)) < len(names):
        raise click.BadParameter("a run file is given twice", param_hint="RUN")
    return names


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
