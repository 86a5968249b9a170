"""``searchkit train`` (a reranker or bi-encoder recipe) and ``searchkit fit-fusion`` (refit a reranker's fusion)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from searchkit.cli.options import echo_json
from searchkit.config import TrainConfig, config_to_dict, load_dense_train_recipe, load_recipe, load_train_recipe
from searchkit.training.bi_encoder import train_dense
from searchkit.training.cross_validation import cross_validate
from searchkit.training.fusion import fit_fusion
from searchkit.training.rounds import train_rounds
from searchkit.types import ConfigError


# ---------------------------------------------------------------------- train
@click.command("train", short_help="Fine-tune a reranker or a bi-encoder as a recipe says.")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the output folder (its first-stage cache is kept).")
@click.option("--max-steps", type=int, default=None, help="Stop after N optimizer steps (smoke runs).")
@click.option("--limit-queries", type=int, default=None, help="Use only N queries, dev included (smoke runs).")
@click.option("--device", default=None, help="Override the recipe's device: auto, cpu or cuda.")
@click.option(
    "--init-from",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Start from this already fine-tuned model folder (continual fine-tuning; lineage recorded).",
)
@click.option(
    "--folds",
    type=int,
    default=None,
    help="Cross-validate: split the judged queries into K folds, train on the others, score each fold (recipe: folds).",
)
@click.option("--fold-seed", type=int, default=None, help="Seed of the fold split (default: the recipe's seed).")
@click.option("--json", "as_json", is_flag=True, help="Print the TrainResult as JSON.")
@click.pass_context
def train_command(
    ctx: click.Context,
    recipe: Path,
    resume: bool,
    overwrite: bool,
    max_steps: int | None,
    limit_queries: int | None,
    device: str | None,
    init_from: Path | None,
    folds: int | None,
    fold_seed: int | None,
    as_json: bool,
) -> None:
    """Fine-tune a model as RECIPE.toml (training/*.toml) says: a cross-encoder reranker (the output folder is a
    model for --rerank), or with `model = "dense"` in the recipe the bi-encoder (a sentence-transformers folder
    for `index add DIR --dense FOLDER`).

    With `rounds = N` in the recipe it trains up to N rounds (fresh negatives mined over the last kept model and its
    fusion, a decaying learning rate, a round kept only while dev improves); with --folds K (or `folds = K`) it
    cross-validates: K models, each scored on the fold of judged queries it never saw (OUTPUT/cv.md).

    Python: train_rounds(dataclasses.replace(load_train_recipe(recipe), resume=..., max_steps=...)),
    cross_validate(...) for folds, or for a dense recipe train_dense(dataclasses.replace(load_dense_train_recipe(
    recipe), init_from=...))
    """

    # only what was given on the command line overrides the recipe
    given = {
        "max_steps": max_steps,
        "limit_queries": limit_queries,
        "device": device,
        "folds": folds,
        "fold_seed": fold_seed,
    }
    changes: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    changes.update({name: True for name, flag in (("resume", resume), ("overwrite", overwrite)) if flag})
    if init_from is not None:
        changes["init_from"] = str(init_from)
    if load_recipe(recipe).get("model") == "dense":
        dense = train_dense(dataclasses.replace(load_dense_train_recipe(recipe), **changes), ctx.obj["progress"])
        if as_json:
            echo_json(dataclasses.asdict(dense))
        else:
            for line in dense.summary():
                click.echo(line)
        return

    if "init_from" in changes and "init_from" not in {field.name for field in dataclasses.fields(TrainConfig)}:
        raise ConfigError(f"{recipe}: --init-from is not supported for reranker recipes yet")
    cfg = dataclasses.replace(load_train_recipe(recipe), **changes)
    if cfg.folds > 1:
        validated = cross_validate(cfg, show_progress=ctx.obj["progress"])
        if as_json:
            echo_json(dataclasses.asdict(validated))
            return
        click.echo(f"output       {validated.output} ({validated.seconds / 60:.1f} min)")
        click.echo(f"folds        {validated.k} (seed {validated.seed}) over {validated.queries} judged queries")
        click.echo(validated.table())
        return
    result = train_rounds(cfg, show_progress=ctx.obj["progress"])
    if as_json:
        echo_json(dataclasses.asdict(result))
        return
    for line in _train_summary(result, cfg.dev_metric):
        click.echo(line)


def _train_summary(result: Any, metric: str) -> list[str]:
    """A TrainResult in a few lines: where it went, which epoch won, dev scores per epoch, speed."""
    took = f"{result.seconds:.1f} s" if result.seconds < 120 else f"{result.seconds / 60:.1f} min"
    lines = [
        f"output       {result.output}",
        f"data         {result.train_queries} train queries, {result.dev_queries} dev queries, "
        f"{result.train_pairs} pairs at {result.pairs_per_second:.1f} pairs/s, {took}",
    ]
    if result.interrupted:
        lines.append(f"stopped      after epoch {result.epochs_run} (checkpoint kept): continue with --resume")
    else:
        early = " (stopped early)" if result.stopped_early else ""
        lines.append(f"epochs       {result.epochs_run} run{early}; best epoch {result.best_epoch} (0: starting model)")
    evaluated = [entry for entry in result.dev if "dev" in entry]
    if not evaluated:
        lines.append("dev          none (no dev queries): the last epoch is kept unchecked")
        return lines
    first = evaluated[0]["dev"]
    if "first_stage" in first:
        lines.append(f"first stage  dev {metric} {first['first_stage']:.4f}")
    lines.append(f"dev {metric} by epoch (* shipped):")
    lines.append(f"{'epoch':>5}  {'loss':>8}  {'reranker':>8}  {'interpolated':>12}  {'a':>4}")
    for entry in evaluated:
        dev, loss = entry["dev"], entry.get("loss")
        mixed = f"{dev['interpolated']:12.4f}  {dev['a']:>4g}" if "interpolated" in dev else f"{'-':>12}  {'-':>4}"
        marker = "  *" if entry["epoch"] == result.best_epoch else ""
        loss_text = "-" if loss is None else f"{loss:.4f}"
        lines.append(f"{entry['epoch']:>5}  {loss_text:>8}  {dev['reranker']:8.4f}  {mixed}{marker}")
    if not result.interrupted:
        weight = "none (reranker scores only)" if result.interpolation is None else f"a = {result.interpolation}"
        lines.append(f"shipped      epoch {result.best_epoch}, interpolation {weight} (dev {metric})")
        fusion = getattr(result, "fusion", None)
        if fusion:
            lines.append(_fusion_line(fusion, metric))
    for entry in getattr(result, "rounds", None) or []:
        score = "-" if entry["dev"] is None else f"{entry['dev']:.4f}"
        verdict = "kept" if entry["kept"] else "dropped (no dev gain): rounds stopped"
        lines.append(f"round {entry['round']:<6} lr {entry['lr']:.3g}, shipped dev {metric} {score}: {verdict}")
    return lines


def _fusion_line(fusion: dict[str, Any], metric: str) -> str:
    weights = ", ".join(f"{name} {weight:.3f}" for name, weight in fusion["weights"].items())
    fitted = fusion.get("fitted") or {}
    score = f"; dev {metric} {fitted['fused']:.4f}" if "fused" in fitted else ""
    return f"fusion       {weights} (fitted at depth {fusion.get('depth')}, mode {fusion.get('mode')}{score})"


@click.command("fit-fusion", short_help="Fit a trained reranker's learned fusion on its dev queries.")
@click.argument("model", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--depth",
    default=None,
    help="Rerank depth it will be used at (default: RerankConfig's), or several, e.g. 20,30,50: the smallest whose "
    "fused dev score is within 0.002 of the best is chosen.",
)
@click.option("--mode", default="auto", show_default=True, help="First stage: auto, bm25, dense, hybrid or cascade.")
@click.option(
    "--dev-queries",
    "dev_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File of dev query ids, one a line (default: MODEL/data/dev_queries.txt).",
)
@click.option("--metric", default="nDCG@10", show_default=True, help="Dev metric the weights maximise.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fit_fusion_command(
    ctx: click.Context,
    model: Path,
    directory: Path,
    depth: str | None,
    mode: str,
    dev_file: Path | None,
    metric: str,
    device: str,
    dtype: str,
    as_json: bool,
) -> None:
    """Fit the learned fusion of every stage for a trained reranker MODEL on its dev queries, over the index
    DIRECTORY, and store it in MODEL/searchkit.json (used from then on by --rerank MODEL and suites).

    Dev queries, their texts and qrels come from the training run (its data/dev_queries.txt and the card's training
    split); the test split is never read. Python: searchkit.training.fusion.fit_fusion(MODEL, DIRECTORY, depth=...,
    mode=...)
    """

    dev_ids = None
    if dev_file is not None:
        dev_ids = [line.strip() for line in dev_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        depths = [int(part) for part in depth.split(",")] if depth else None
    except ValueError:
        raise click.BadParameter(f"{depth!r}: give a depth or a comma-separated list, e.g. 20,30,50") from None
    fitted, report = fit_fusion(
        model,
        directory,
        dev_ids=dev_ids,
        depth=depths,
        mode=mode,
        metric=metric,
        device=device,
        dtype=dtype,
        show_progress=ctx.obj["progress"],
    )
    if as_json:
        echo_json(config_to_dict(fitted))
        return
    name = report["metric"]
    click.echo(f"dev          {report['queries']} queries, {name}, depth {fitted.depth}, mode {fitted.mode}")
    for stage, value in report["alone"].items():
        click.echo(f"  {stage:<12} alone {value:.4f}")
    a = report["interpolation"]
    click.echo(f"  interpolated (a = {a['a']}) {a['score']:.4f}")
    click.echo(f"  fused        {report['fused']:.4f}")
    for each, row in report.get("depths", {}).items():
        mark = "  <- chosen" if int(each) == fitted.depth else ""
        click.echo(
            f"  depth {each:>4}   first-stage recall {row['first_stage_recall']:.4f}   reranker alone "
            f"{row['reranker_alone']:.4f}   fused {row['fused']:.4f}{mark}"
        )
    click.echo(_fusion_line(config_to_dict(fitted), name))
    click.echo(f"written to   {model / 'searchkit.json'}")
