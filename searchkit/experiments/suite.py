"""Running an expected-score suite (``eval/*.toml``, read by :mod:`searchkit.experiments.suite_file`).

``searchkit eval SUITE --check`` builds (or reuses) each condition's index, runs the dataset's queries, scores
them with :func:`searchkit.evaluate.metrics.evaluate`, compares every expected metric with its tolerance and writes
the results (metrics, per-query values, index fingerprint, version, git commit, timings, TREC runs) to
``eval/results/``. See :func:`searchkit.experiments.suite_file.load_suite` for the schema.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchkit.config import (
    IndexRecipe,
    RerankConfig,
    config_to_dict,
)
from searchkit.evaluate.metrics import (
    Evaluation,
    evaluate,
)
from searchkit.evaluate.runs import run_queries
from searchkit.evaluate.significance import compare_to_baseline
from searchkit.evaluate.tables import format_p, format_score, format_table, render_table, to_json
from searchkit.experiments.suite_file import Condition, Suite, local_path
from searchkit.formats import read_qrels, source_sha256, write_run
from searchkit.index import Index
from searchkit.index.components import bm25_components
from searchkit.models.cross_encoder import MODEL_FIELDS, CrossEncoderReranker
from searchkit.search import Searcher
from searchkit.types import ConfigError, IndexFormatError, Qrels, Query
from searchkit.version import __version__

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """One expected score against the one measured; ``ok`` is ``|delta| <= tolerance``."""

    metric: str
    expected: float | None
    got: float
    delta: float | None
    ok: bool | None


@dataclass(frozen=True)
class ConditionResult:
    """What one condition of a suite measured, with its comparisons and provenance."""

    name: str
    dataset: str
    mode: str
    k: int
    settings: dict[str, Any]
    queries: dict[str, Any]
    evaluation: Evaluation
    comparisons: tuple[Comparison, ...]
    index: dict[str, Any]
    seconds: dict[str, float]
    run_file: str | None
    first_stage: dict[str, float] | None = None  # reranked conditions: the first stage alone, R@depth included
    significance: dict[str, Any] | None = None  # against the suite's baseline of this dataset: p per metric

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.comparisons)


@dataclass(frozen=True)
class SuiteResult:
    """A suite run: one :class:`ConditionResult` per condition; ``passed`` when every expected score held."""

    suite: str
    suite_file: str
    check: bool
    conditions: tuple[ConditionResult, ...]
    searchkit_version: str
    git_commit: str | None
    created: str
    output: str | None

    @property
    def passed(self) -> bool:
        return all(cond.passed for cond in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what the results file holds)."""
        out = dataclasses.asdict(self)
        out["passed"] = self.passed
        for cond, data in zip(self.conditions, out["conditions"], strict=True):
            data["passed"] = cond.passed
        return out

    def format(self) -> str:
        """Human report: each condition's settings, a metric | expected | got | delta | ok table, warnings."""
        parts = []
        for cond in self.conditions:
            settings = "; ".join(f"{key} {_short(value)}" for key, value in cond.settings.items() if value)
            selected = cond.queries
            parts.append(
                f"{cond.name} [{cond.dataset}/{selected['split']}, mode {cond.mode}, k {cond.k}] {settings}\n"
                f"  {cond.evaluation.num_queries} queries ({selected['rule']}, "
                f"unjudged={selected['unjudged']}), search {cond.seconds['search']:.1f}s"
            )
            tested = cond.significance if cond.significance and "p" in cond.significance else None
            table = [["metric", "expected", "got", "delta", "ok", *(["p"] if tested else [])]]
            for c in cond.comparisons:
                ok = "" if c.ok is None else ("ok" if c.ok else "FAIL")
                delta = "" if c.delta is None else f"{c.delta:+.4f}".replace("-0.0000", "+0.0000")
                row = [c.metric, format_score(c.expected), format_score(c.got), delta, ok]
                table.append(row + ([format_p(tested["p"].get(c.metric))] if tested else []))
            parts.append(_indent(render_table(table)))
            if cond.significance:
                parts.append(_indent(cond.significance["method"]))
            if cond.first_stage is not None:
                values = ", ".join(f"{m} {v:.4f}" for m, v in cond.first_stage.items())
                parts.append(_indent(f"first stage alone (what the reranker was given): {values}"))
            parts.extend(_indent(line) for line in cond.evaluation.report.lines())
        metrics = list(dict.fromkeys(m for cond in self.conditions for m in cond.evaluation.aggregate))
        summary = [(_summary_name(cond), cond.evaluation) for cond in self.conditions]
        p_values = {_summary_name(c): c.significance.get("p", {}) for c in self.conditions if c.significance}
        parts.append(f"\nsummary ({self.suite})\n" + format_table(summary, metrics, p_values or None))
        failed = [cond.name for cond in self.conditions if not cond.passed]
        verdict = "passed" if not failed else f"FAILED ({', '.join(failed)})"
        parts.append(f"suite {self.suite}: {verdict}" + (f"; results in {self.output}" if self.output else ""))
        return "\n".join(parts)


def _summary_name(cond: ConditionResult) -> str:
    baseline = cond.significance is not None and cond.significance["baseline"] == cond.name
    return f"{cond.dataset}/{cond.name}" + (" (baseline)" if baseline else "")


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def run_suite(
    suite: Suite,
    *,
    check: bool = True,
    show_progress: bool = False,
    only: Sequence[str] | None = None,
    output: str | Path | None = None,
    write: bool = True,
    rebuild: bool | None = None,
) -> SuiteResult:
    """Run every condition of ``suite`` (or those whose name matches a pattern of ``only``) and compare.

    Each index is built once and reused when it exists with the same source and component configs (a component missing
    from it is added). An existing index built from another source or with other settings is rebuilt only when
    ``rebuild`` (None: the suite's own ``rebuild`` key) says so; otherwise the run stops with one line naming the
    setting that differs. A folder that is not a searchkit index is never replaced. Queries come from the dataset's
    queries.jsonl as :meth:`~searchkit.experiments.suite_file.SuiteDataset.read_queries` selects them (the
    queries judged in its split, or every one with ``queries = "all"``), scored against ``qrels/<split>.tsv`` with
    the condition's ``unjudged`` mode; qrels documents missing from the corpus are reported. ``check`` logs each
    metric outside its tolerance (``passed`` is computed either way). With ``write``, results go to ``output``
    (default ``<suite dir>/results/<suite>-<UTC time>.json``)
    with a TREC run per condition beside it (``<json stem>.<condition>.trec``).
    """

    chosen = [c for c in suite.conditions if only is None or any(fnmatch.fnmatchcase(c.name, p) for p in only)]
    if not chosen:
        raise ConfigError(
            f"no condition of {suite.path} matches {list(only or [])}; "
            f"conditions: {', '.join(c.name for c in suite.conditions)}"
        )
    now = _dt.datetime.now(_dt.UTC)
    json_path = Path(output) if output is not None else _results_path(suite, now)

    indexes: dict[Path, tuple[Any, dict[str, Any]]] = {}
    data: dict[str, tuple[list[Query], Qrels]] = {}
    results = []
    for cond in chosen:
        dataset = suite.datasets[cond.dataset]
        if cond.index not in indexes:
            group = [c for c in chosen if c.index == cond.index]
            bm25 = next((c.bm25 for c in group if c.bm25 is not None), None)
            dense = next((c.dense for c in group if c.dense is not None), None)
            recipe = dataset.recipe
            wanted = (
                {**bm25_components(recipe.bm25), **({"dense": recipe.dense} if recipe.dense else {})}
                if recipe is not None
                else {name: cfg for name, cfg in (("bm25", bm25), ("dense", dense)) if cfg is not None}
            )
            indexes[cond.index] = _prepare_index(
                cond.index, dataset.source, wanted, show_progress, suite.rebuild if rebuild is None else rebuild, recipe
            )
        index, index_info = indexes[cond.index]
        if dataset.name not in data:
            qrels = read_qrels(dataset.source, dataset.split)
            data[dataset.name] = (dataset.read_queries(), qrels)
        queries, qrels = data[dataset.name]
        trec = None
        if write:
            trec = json_path.with_name(f"{json_path.stem}.{_safe_name(cond.name)}.trec")
        try:
            results.append(_run_condition(suite, cond, index, index_info, queries, qrels, trec, show_progress))
        except BaseException:
            _LOADED_RERANKERS.clear()
            raise
        for c in results[-1].comparisons:
            if check and c.ok is False:
                logger.warning("%s: %s = %.4f, expected %.4f ± %g", cond.name, c.metric, c.got, c.expected,
                               cond.tolerance)  # fmt: skip
    _LOADED_RERANKERS.clear()  # models and remembered logits live for one suite run
    results = _with_significance(suite, results)
    result = SuiteResult(suite.name, str(suite.path), check, tuple(results), __version__,
                         _git_commit(suite.path.parent), now.isoformat(timespec="seconds"),
                         str(json_path) if write else None)  # fmt: skip
    if write:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(to_json(result.to_dict()) + "\n", encoding="utf-8")
        logger.info("wrote %s", json_path)
    return result


def _with_significance(suite: Suite, results: list[ConditionResult]) -> list[ConditionResult]:
    """Each baseline's dataset: every other condition scored on the same queries is tested against it per query
    (``suite.test``), Holm-corrected across those conditions, one family per metric."""
    by_name = {r.name: r for r in results}
    changed: dict[str, ConditionResult] = {}
    for baseline in suite.baselines:
        base = by_name.get(baseline)
        if base is None:
            logger.info("baseline %s was not run: no p-values for its dataset", baseline)
            continue
        ids = set(base.evaluation.per_query)
        others = [r for r in results if r.dataset == base.dataset and r.name != baseline]
        group = [r for r in others if set(r.evaluation.per_query) == ids]
        for r in others:
            if r not in group:
                logger.info("%s is not tested against %s: it is scored on other queries (unjudged)", r.name, baseline)
        if not group or len(ids) < 2:
            continue
        metrics = [m for m in base.evaluation.aggregate if all(m in r.evaluation.aggregate for r in group)]
        tested = {baseline: base.evaluation, **{r.name: r.evaluation for r in group}}
        significance = compare_to_baseline(tested, baseline, metrics, suite.test)
        common = {"baseline": baseline, "test": suite.test, "queries": significance.queries, "correction": "holm"}
        common["method"] = significance.describe()
        changed[baseline] = dataclasses.replace(base, significance=common)
        for r in group:
            own = {**common, "p": significance.p[r.name], "p_raw": significance.raw[r.name]}
            changed[r.name] = dataclasses.replace(r, significance=own)
    return [changed.get(r.name, r) for r in results]


def _run_condition(
    suite: Suite,
    cond: Condition,
    index: Any,
    index_info: dict[str, Any],
    queries: list[Query],
    qrels: Qrels,
    trec: Path | None,
    show_progress: bool,
) -> ConditionResult:
    """Search, evaluate and compare one condition; write its TREC run to ``trec`` when given."""

    dataset = suite.datasets[cond.dataset]
    searcher = Searcher(index, mode=cond.mode, fusion=cond.fusion, rerank=_reranker(cond.rerank))
    reranker, depth = searcher.reranker, searcher.rerank_depth
    started = time.perf_counter()
    run = run_queries(searcher, queries, cond.k, show_progress=show_progress, exclude_self=dataset.exclude_self)
    searched = time.perf_counter()
    metrics = list(dict.fromkeys([*suite.metrics, *cond.expected]))
    query_ids = [q.query_id for q in queries] + list(qrels)  # a judged query missing from the file scores 0
    evaluation = evaluate(run, qrels, metrics, query_ids=query_ids, unjudged=cond.unjudged, corpus_ids=index.docids)
    seconds = {"search": searched - started, "evaluate": time.perf_counter() - searched}
    first_stage = None
    if reranker is not None:
        # An honest rerank report: how much the reranker was given (recall at its depth) beside what it made of it.
        plain = Searcher(index, mode=cond.mode, fusion=cond.fusion)
        first_run = run_queries(plain, queries, depth, exclude_self=dataset.exclude_self)
        first_metrics = list(dict.fromkeys([f"R@{depth}", *metrics]))
        first_stage = evaluate(first_run, qrels, first_metrics, query_ids=query_ids, unjudged=cond.unjudged).aggregate
    if trec is not None:
        write_run(run, trec, tag=_safe_name(cond.name))
    settings = {
        "bm25": config_to_dict(cond.bm25) if cond.bm25 else None,
        "dense": config_to_dict(cond.dense) if cond.dense else None,
        "fusion": config_to_dict(cond.fusion) if cond.mode in ("hybrid", "cascade") else None,
        "rerank": config_to_dict(cond.rerank) if cond.rerank else None,
        "tolerance": cond.tolerance,
    }
    selection = {
        "split": dataset.split,
        "run": len(queries),
        "rule": f"judged in {dataset.split}" if dataset.queries == "split" else "all queries",
        "unjudged": cond.unjudged,
        "exclude_self": dataset.exclude_self,
    }
    comparisons = _compare(evaluation.aggregate, cond.expected, cond.tolerance)
    return ConditionResult(cond.name, cond.dataset, cond.mode, cond.k, settings, selection, evaluation,
                           comparisons, index_info, seconds, trec.name if trec else None, first_stage)  # fmt: skip


# Settings that change how fast a component is built or used, not what is in it: a suite reuses an index whose
# recorded config differs from the condition's only in these.
RUNTIME_FIELDS = ("batch_size", "batch_tokens", "device", "shard_size")


def _built_with(config: Any, wanted: Any) -> dict[str, Any] | None:
    """A component config as a dict of what decides its contents; None when it is not of ``wanted``'s class."""
    if type(config) is not type(wanted):
        return None
    settings = {k: v for k, v in config_to_dict(config).items() if k not in RUNTIME_FIELDS}
    model = settings.get("model")
    if isinstance(model, str) and Path(model).is_dir():  # a model folder, however its path was written
        settings["model"] = local_path(Path(model))
    return settings


_LOADED_RERANKERS: dict[tuple[Any, ...], Any] = {}


def _reranker(config: RerankConfig | None) -> Any:
    """The condition's reranker; conditions that differ only in how scores are mixed (interpolation, fusion, depth)
    share one loaded model and its remembered logits, so each (query, document) pair is scored once per suite run."""
    if config is None:
        return None

    key = tuple(getattr(config, name) for name in MODEL_FIELDS)
    if key not in _LOADED_RERANKERS:
        _LOADED_RERANKERS.clear()  # one model in memory at a time
        loaded = CrossEncoderReranker.from_config(config)
        loaded.remember_scores()
        _LOADED_RERANKERS[key] = loaded
    return _LOADED_RERANKERS[key].variant(config)


def _safe_name(name: str) -> str:
    """``name`` usable in a file name and as a TREC run tag."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name) or "run"


def _results_path(suite: Suite, now: _dt.datetime) -> Path:
    """``<suite dir>/results/<suite>-<UTC time>.json``, never one that exists already."""
    stem = suite.path.parent / "results" / f"{suite.name}-{now:%Y%m%d-%H%M%S}"
    path, number = stem.with_name(stem.name + ".json"), 1
    while path.exists():
        number += 1
        path = stem.with_name(f"{stem.name}-{number}.json")
    return path


def _compare(aggregate: Mapping[str, float], expected: Mapping[str, float], tolerance: float) -> tuple[Comparison, ...]:
    rows = []
    for metric, got in aggregate.items():
        want = expected.get(metric)
        if want is None:
            rows.append(Comparison(metric, None, got, None, None))
        else:
            delta = got - want
            rows.append(Comparison(metric, want, got, delta, abs(delta) <= tolerance + 1e-12))
    return tuple(rows)


def _prepare_index(
    path: Path,
    source: Path,
    wanted: Mapping[str, Any],
    show_progress: bool,
    rebuild: bool = False,
    recipe: IndexRecipe | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Open the index at ``path`` when it matches ``source`` and the ``wanted`` component configs (adding a missing
    ``bm25`` or ``dense``); build it when there is none; rebuild one that differs only with ``rebuild``, else
    ConfigError naming the difference. An index ``recipe`` is built whole, as ``searchkit index build`` would."""
    bm25, dense = wanted.get("bm25"), wanted.get("dense")
    started = time.perf_counter()
    action, why = "built", "no index yet"
    if path.exists():
        try:
            index = Index.open(path)
        except IndexFormatError as err:
            why = f"it cannot be opened ({err})"
        else:
            differences = _differences(index, source, wanted)
            missing = [n for n in wanted if n not in index.manifest.get("components", {})]
            if recipe is not None and missing:
                differences = [f"it lacks {', '.join(missing)}, which {recipe.output.name}'s recipe builds"]
            if differences:
                why = "; ".join(differences)
            elif missing:
                logger.info("adding %s to %s", ", ".join(missing), path)
                index = index.add(
                    bm25=bm25 if "bm25" in missing else None,
                    dense=dense if "dense" in missing else None,
                    show_progress=show_progress,
                )
                action = "extended"
            else:
                action = "reused"
        if action == "built" and not rebuild:
            raise ConfigError(
                f"{path}: the existing index does not match the suite ({why}); rerun with --rebuild (or "
                "rebuild = true in the suite's [suite] table) to rebuild it, or give the condition another index"
            )
    if action == "built":
        logger.info("building %s from %s: %s", path, source, why)
        if recipe is not None:
            index = Index.build(source, path, bm25=recipe.bm25, dense=recipe.dense, tokens=recipe.tokens,
                                filters=recipe.filters, overwrite=True, show_progress=show_progress,
                                **recipe.fields)  # fmt: skip
        else:
            index = Index.build(source, path, bm25=bm25, dense=dense, overwrite=True, show_progress=show_progress)
    info = {
        "path": str(path),
        "action": action,
        "fingerprint": index.fingerprint(),
        "components": index.manifest.get("components", {}),
        "source": index.manifest.get("source"),
        "seconds": time.perf_counter() - started,
    }
    return index, info


def _differences(index: Any, source: Path, wanted: Mapping[str, Any]) -> list[str]:
    """How ``index`` differs from what a suite wants of it: its source, then each setting of a component it has."""
    recorded = index.manifest.get("source", {}) or {}
    if recorded.get("path") != str(source):
        return [f"it was built from {recorded.get('path')}, the suite reads {source}"]
    if recorded.get("sha256") != source_sha256(source):
        return [f"{source} changed since the index was built (its sha256 differs)"]
    found: list[str] = []
    for name, config in wanted.items():
        if name not in index.manifest.get("components", {}):
            continue
        have, want = _built_with(index.components[name], config) or {}, _built_with(config, config) or {}
        found.extend(
            f"{name}.{key} is {have.get(key)!r} in the index, {want.get(key)!r} in the suite"
            for key in sorted(set(have) | set(want))
            if have.get(key) != want.get(key)
        )
    return found


def _git_commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
