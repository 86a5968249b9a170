"""Cross-validated reranker training for collections without a train split (``searchkit train RECIPE --folds K``).

The judged queries (those of ``split`` with a text) are split by query into ``folds`` seeded folds
(:func:`searchkit.training.folds.fold_split`, seed ``fold_seed``, default ``seed``). For each fold, a model is
trained (in rounds, when the recipe asks for them: :func:`searchkit.training.rounds.train_rounds`) on the other
folds' queries only (``only_queries``: its dev queries are carved from them, its negatives mined for them and its
fusion fitted on them), then the fold's own queries are searched with it (the first stage reranked by that model and
mixed by its learned fusion) and, beside it, by the untrained pipeline (the same first stage, ``dev_mode``). The
fold runs are concatenated into one run over every judged query, so each query is scored exactly once, by a model
and a fusion that never saw it; this is checked from what each fold's training wrote (its training examples and dev
query ids) before the fold is scored.

Output folder::

    folds.json           the split: k, seed and each fold's query ids
    folds/fold-<i>/      the fold's trained reranker (its card records the fold), test_run.trec (its queries)
    run.trec             the fold runs concatenated: every judged query, scored by the model that did not see it
    untrained.trec       the untrained pipeline over the same queries
    cv.json, cv.md       trained vs untrained over all queries and per fold (JSON, and as a table)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchkit.config import RerankConfig, TrainConfig, config_to_dict
from searchkit.evaluate.metrics import canonical_metric, evaluate
from searchkit.evaluate.runs import run_queries
from searchkit.evaluate.tables import format_table
from searchkit.formats import read_qrels, read_queries, write_json_atomic, write_run
from searchkit.index import Index
from searchkit.models.cards import MODEL_CARD, read_reranker_card, write_reranker_card
from searchkit.search import Searcher
from searchkit.training.folds import fold_split
from searchkit.training.rounds import train_rounds
from searchkit.types import ConfigError, DataError, Qrels, Query, Run, SearchkitError

logger = logging.getLogger(__name__)


CV_METRICS = ("RR@10", "R@100")
"""Reported beside the recipe's ``dev_metric``."""


RUN_DEPTH = 100
"""Hits per query in the fold runs."""


@dataclass(frozen=True)
class CrossValidationResult:
    """What a cross-validated run measured: the trained and untrained pipelines over every judged query (the fold
    runs concatenated) and per fold (``folds[i]``: its query count, ``trained`` and ``untrained`` aggregates)."""

    output: Path
    k: int
    seed: int
    queries: int
    metrics: list[str]
    trained: dict[str, float]
    untrained: dict[str, float]
    folds: list[dict[str, Any]]
    seconds: float

    def table(self) -> str:
        """All queries, then one row pair per fold: the figures of cv.md."""
        rows: list[tuple[str, Mapping[str, float]]] = [
            (f"untrained (all {self.queries})", self.untrained),
            (f"fine-tuned (all {self.queries})", self.trained),
        ]
        for fold in self.folds:
            name = f"fold {fold['fold']} ({fold['queries']})"
            rows += [(f"{name} untrained", fold["untrained"]), (f"{name} fine-tuned", fold["trained"])]
        return format_table(rows, self.metrics)


def judged_queries(config: TrainConfig) -> tuple[list[Query], Qrels]:
    """The queries cross-validation splits: those of ``config.split`` that are judged and have a text, in file
    order, and their qrels."""
    qrels = read_qrels(str(config.qrels or config.corpus), config.split)
    source = str(config.queries or config.corpus)
    queries = read_queries(source, split=config.split if Path(source).is_dir() else None)
    judged = [query for query in queries if qrels.get(query.query_id)]
    if not judged:
        raise DataError(f"no judged queries with a text in {source} (split {config.split!r})")
    return judged, {query.query_id: qrels[query.query_id] for query in judged}


def cross_validate(config: TrainConfig, show_progress: bool = False) -> CrossValidationResult:
    """Train and evaluate ``config.folds`` folds as the module docstring says; write the output folder."""
    started = time.perf_counter()
    if config.folds < 2:
        raise ConfigError(f"cross-validation needs folds >= 2, got {config.folds}")
    if config.pairs is not None or config.index is None:
        raise ConfigError("cross-validation splits judged queries: give qrels and an index, not a pairs file")
    out = Path(config.output)
    if (out / "cv.json").is_file() and not (config.overwrite or config.resume):
        raise ConfigError(f"{out} already holds a cross-validation run; pass overwrite=True or resume=True")
    queries, qrels = judged_queries(config)
    seed = config.seed if config.fold_seed is None else config.fold_seed
    folds = fold_split([query.query_id for query in queries], config.folds, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "folds.json", {"k": config.folds, "seed": seed, "folds": folds})
    metrics = list(dict.fromkeys(canonical_metric(m) for m in (config.dev_metric, *CV_METRICS)))
    by_id = {query.query_id: query for query in queries}
    trained_run: Run = {}
    untrained_run: Run = {}
    figures: list[dict[str, Any]] = []
    for number, held_out in enumerate(folds, start=1):
        folder = out / "folds" / f"fold-{number}"
        unseen = set(held_out)
        rest = tuple(query.query_id for query in queries if query.query_id not in unseen)
        fold_config = dataclasses.replace(config, output=str(folder), folds=1, only_queries=rest)
        logger.info("fold %d of %d: training on %d queries, %d held out", number, config.folds, len(rest), len(unseen))
        _train_fold(fold_config, folder, show_progress)
        check_unseen(folder, unseen)
        card = read_reranker_card(folder)
        if "cross_validation" not in card:
            card["cross_validation"] = {"fold": number, "k": config.folds, "seed": seed, "held_out": sorted(unseen)}
            write_reranker_card(folder, card)
        index = Index.open(str(config.index))
        fold_queries = [by_id[qid] for qid in held_out]
        settings = RerankConfig(str(folder), device=config.device, batch_size=config.eval_batch_size)
        trained = run_queries(Searcher(index, mode=config.dev_mode, rerank=settings), fold_queries, RUN_DEPTH)
        untrained = run_queries(Searcher(index, mode=config.dev_mode), fold_queries, RUN_DEPTH)
        write_run(trained, folder / "test_run.trec", tag=f"cv-fold-{number}")
        fold_qrels = {qid: qrels[qid] for qid in held_out}
        figures.append(
            {
                "fold": number,
                "queries": len(held_out),
                "trained": evaluate(trained, fold_qrels, metrics, log_problems=False).aggregate,
                "untrained": evaluate(untrained, fold_qrels, metrics, log_problems=False).aggregate,
            }
        )
        trained_run.update(trained)
        untrained_run.update(untrained)
    write_run(trained_run, out / "run.trec", tag="cv-fine-tuned")
    write_run(untrained_run, out / "untrained.trec", tag="cv-untrained")
    result = CrossValidationResult(
        out,
        config.folds,
        seed,
        len(queries),
        metrics,
        evaluate(trained_run, qrels, metrics).aggregate,
        evaluate(untrained_run, qrels, metrics, log_problems=False).aggregate,
        figures,
        time.perf_counter() - started,
    )
    _write_report(result, config)
    return result


def _train_fold(config: TrainConfig, folder: Path, show_progress: bool) -> None:
    """Train one fold's model; a fold an earlier run finished is kept when resuming."""
    if config.resume and (folder / MODEL_CARD).is_file():
        logger.info("fold %s already trained (resume): reused", folder.name)
        return
    train_rounds(config, show_progress)


def check_unseen(folder: str | Path, held_out: Sequence[str] | set[str]) -> None:
    """Raise when a trained fold's own records name a held-out query among what it trained on: its training
    examples (``data/train_pairs.jsonl``) or its dev queries (``data/dev_queries.txt``, which the fusion was
    fitted on). The guarantee cross-validation rests on, checked before the fold is scored."""
    folder = Path(folder)
    seen: set[str] = set()
    with (folder / "data" / "train_pairs.jsonl").open(encoding="utf-8") as handle:
        seen.update(json.loads(line)["query_id"] for line in handle if line.strip())
    dev = (folder / "data" / "dev_queries.txt").read_text(encoding="utf-8").split()
    leaked = sorted((seen | set(dev)) & set(held_out))
    if leaked:
        raise SearchkitError(
            f"{folder}: {len(leaked)} held-out queries were used in training or dev ({', '.join(leaked[:5])}); "
            "their scores would be optimistic"
        )


def _write_report(result: CrossValidationResult, config: TrainConfig) -> None:
    payload = {
        "k": result.k,
        "seed": result.seed,
        "queries": result.queries,
        "metrics": result.metrics,
        "trained": result.trained,
        "untrained": result.untrained,
        "folds": result.folds,
        "seconds": round(result.seconds, 1),
        "recipe": config_to_dict(dataclasses.replace(config, resume=False, overwrite=False)),
    }
    write_json_atomic(result.output / "cv.json", payload)
    text = (
        f"# {result.k}-fold cross-validation ({result.queries} judged queries, fold seed {result.seed})\n\n"
        "Every query is scored once, by the fold model (and fusion) that did not see it; the untrained pipeline "
        f"is the same first stage ({config.dev_mode}) without the reranker.\n\n```\n{result.table()}\n```\n"
    )
    (result.output / "cv.md").write_text(text, encoding="utf-8")
    logger.info("cross-validation written to %s (%.0f s)", result.output, result.seconds)
