"""Expected-score suites: ``eval/*.toml`` files listing datasets and conditions with pinned scores.

``searchkit eval SUITE --check`` builds (or reuses) each condition's index, runs the dataset's queries, scores them
with :func:`searchkit.evaluate.evaluate`, compares every expected metric with its tolerance and writes the results
(metrics, per-query values, index fingerprint, version, git commit, timings, TREC runs) to ``eval/results/``.
See :func:`load_suite` for the schema.

>>> suite = load_suite("eval/scifact.toml")
>>> suite.name, [condition.name for condition in suite.conditions]
('scifact', ['bm25', 'dense', 'hybrid-rrf', 'hybrid-convex', 'cascade'])
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchkit.config import (
    BM25Config,
    DenseConfig,
    FusionConfig,
    RerankConfig,
    config_from_dict,
    config_to_dict,
    load_recipe,
)
from searchkit.evaluate import (
    DEFAULT_METRICS,
    UNJUDGED_MODES,
    Evaluation,
    canonical_metric,
    display_name,
    evaluate,
    format_score,
    format_table,
    render_table,
    run_queries,
    to_json,
)
from searchkit.types import ConfigError, Qrels, Query

logger = logging.getLogger(__name__)

SUITE_MODES = ("bm25", "dense", "hybrid", "cascade")
_EXAMPLES = 5


_SUITE_KEYS = {"name", "description", "metrics", "tolerance", "unjudged"}
_DATASET_KEYS = {"source", "split", "index", "exclude_self", "unjudged"}
_CONDITION_KEYS = {
    "name",
    "dataset",
    "mode",
    "k",
    "bm25",
    "dense",
    "fusion",
    "rerank",
    "index",
    "tolerance",
    "unjudged",
    "expected",
}


@dataclass(frozen=True)
class SuiteDataset:
    """A BEIR-layout dataset of a suite: ``source`` folder, qrels ``split``, default ``index`` path."""

    name: str
    source: Path
    split: str = "test"
    index: Path | None = None
    exclude_self: bool = False
    unjudged: str = "zero"


@dataclass(frozen=True)
class Condition:
    """One retrieval setting on one dataset, with the scores it is expected to reach."""

    name: str
    dataset: str
    index: Path
    mode: str = "bm25"
    k: int = 100
    bm25: BM25Config | None = None
    dense: DenseConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    rerank: RerankConfig | None = None
    tolerance: float = 0.002
    unjudged: str = "zero"
    expected: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A validated suite file: see :func:`load_suite`."""

    path: Path
    name: str
    metrics: tuple[str, ...]
    tolerance: float
    datasets: dict[str, SuiteDataset]
    conditions: tuple[Condition, ...]
    description: str = ""


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite TOML; every error names the file and the offending key.

    Schema (paths are relative to the suite file)::

        [suite]
        name = "scifact"                      # required; also names the results file
        metrics = ["nDCG@10", "RR@10", "R@100", "AP"]   # ir-measures strings (default: these four)
        tolerance = 0.002                     # |got - expected| allowed (default 0.002)
        unjudged = "zero"                     # zero | skip, for queries without judgments (default zero)

        [datasets.scifact]
        source = "../../shared/datasets/scifact"  # BEIR: corpus.jsonl, queries.jsonl, qrels/<split>.tsv
        split = "test"                        # default test
        index = "../indexes/scifact-bm25"     # where the index is built or reused (git-ignored)
        exclude_self = false                  # drop a query's own id from its results
        unjudged = "zero"                     # overrides [suite]

        [[conditions]]
        name = "bm25"                         # unique
        dataset = "scifact"
        mode = "bm25"                         # bm25 | dense | hybrid | cascade
        k = 100                               # hits per query (default 100)
        bm25 = { k1 = 1.5, b = 0.75 }         # BM25Config fields (bm25/hybrid/cascade; default BM25Config())
        dense = { model = "all-MiniLM-L6-v2" }  # DenseConfig fields (dense/hybrid/cascade)
        fusion = { method = "rrf", depth = 100 }  # FusionConfig fields (hybrid/cascade)
        rerank = { model = "../training/out", depth = 100 }  # RerankConfig fields; ./ ../ / paths are
                                              # relative to this file, other names go to Hugging Face;
                                              # interpolation = "none": the reranker alone; fusion = "none":
                                              # the card's interpolation instead of its learned fusion
        index = "../indexes/other"            # optional: overrides the dataset's index path
        tolerance = 0.002                     # optional: overrides [suite]
        unjudged = "skip"                     # optional: overrides the dataset
        expected = { "nDCG@10" = 0.6857 }     # required, non-empty; metrics not in [suite] are added

    Conditions sharing an index path must agree on its component configs (give one its own ``index``).
    Queries: every query of the dataset's queries.jsonl, or only those judged in ``split`` when it judges
    fewer than half of them (the file then holds several splits); see :func:`restrict_to_split`.
    """
    path = Path(path)
    data = load_recipe(path)
    base = path.parent

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {where}: {message}")

    def check_keys(table: Any, valid: set[str], where: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise fail(where, "must be a table")
        for key in table:
            if key not in valid:
                raise fail(where, f"unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
        return table

    top = check_keys(data, {"suite", "datasets", "conditions"}, "top level")
    head = check_keys(top.get("suite", {}), _SUITE_KEYS, "[suite]")
    if "name" not in head:
        raise fail("[suite]", "missing key 'name'")
    if not isinstance(head.get("metrics", []), list):
        raise fail("[suite] metrics", "must be a list of metric names")
    try:
        metrics = tuple(canonical_metric(m) for m in head.get("metrics", DEFAULT_METRICS))
    except ConfigError as err:
        raise fail("[suite] metrics", str(err)) from None
    tolerance = _number(head.get("tolerance", 0.002), lambda m: fail("[suite] tolerance", m))
    suite_unjudged = _choice(head.get("unjudged", "zero"), UNJUDGED_MODES, lambda m: fail("[suite] unjudged", m))

    datasets: dict[str, SuiteDataset] = {}
    for name, table in check_keys(top.get("datasets", {}), set(top.get("datasets", {})), "[datasets]").items():
        where = f"[datasets.{name}]"
        table = check_keys(table, _DATASET_KEYS, where)
        if "source" not in table:
            raise fail(where, "missing key 'source'")
        datasets[name] = SuiteDataset(
            name=name,
            source=(base / table["source"]).resolve(),
            split=str(table.get("split", "test")),
            index=(base / table["index"]).resolve() if "index" in table else None,
            exclude_self=bool(table.get("exclude_self", False)),
            unjudged=_choice(table.get("unjudged", suite_unjudged), UNJUDGED_MODES, lambda m, w=where: fail(w, m)),
        )

    conditions: list[Condition] = []
    raw_conditions = top.get("conditions", [])
    if not isinstance(raw_conditions, list) or not raw_conditions:
        raise fail("[[conditions]]", "a suite needs at least one [[conditions]] table")
    for number, table in enumerate(raw_conditions, start=1):
        named = isinstance(table, dict) and isinstance(table.get("name"), str)
        where = f"[[conditions]] {table['name']!r}" if named else f"[[conditions]] #{number}"
        table = check_keys(table, _CONDITION_KEYS, where)
        conditions.append(_load_condition(table, where, base, datasets, tolerance, fail))
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise fail("[[conditions]]", f"duplicate condition names: {sorted({n for n in names if names.count(n) > 1})}")
    _check_shared_indexes(conditions, {name: d.source for name, d in datasets.items()}, fail)
    return Suite(
        path.resolve(),
        str(head["name"]),
        metrics,
        tolerance,
        datasets,
        tuple(conditions),
        str(head.get("description", "")),
    )


def _load_condition(
    table: dict[str, Any],
    where: str,
    base: Path,
    datasets: dict[str, SuiteDataset],
    tolerance: float,
    fail: Any,
) -> Condition:
    for key in ("name", "dataset", "expected"):
        if key not in table:
            raise fail(where, f"missing key {key!r}")
    where = f"[[conditions]] {table['name']!r}"
    if table["dataset"] not in datasets:
        raise fail(where, f"dataset {table['dataset']!r} is not defined; datasets: {', '.join(datasets) or 'none'}")
    dataset = datasets[table["dataset"]]
    mode = _choice(table.get("mode", "bm25"), SUITE_MODES, lambda m: fail(f"{where} mode", m))
    uses_bm25, uses_dense = mode != "dense", mode != "bm25"
    configs: dict[str, Any] = {}
    for key, cls, used in (
        ("bm25", BM25Config, uses_bm25),
        ("dense", DenseConfig, uses_dense),
        ("fusion", FusionConfig, mode in ("hybrid", "cascade")),
    ):
        if key in table and not used:
            raise fail(f"{where} {key}", f"mode {mode!r} does not use {key} settings")
        settings = dict(table.get(key, {}))
        if key == "dense" and str(settings.get("model", "")).startswith((".", "/")):
            settings["model"] = _local_path(base / settings["model"])  # a model folder, relative to the suite
        try:
            configs[key] = config_from_dict(cls, settings) if used else None
        except (ConfigError, TypeError) as err:
            raise fail(f"{where} {key}", str(err)) from None
    rerank = table.get("rerank")
    if rerank is not None:
        rerank = _load_rerank(rerank, base, lambda m: fail(f"{where} rerank", m))
    expected = table["expected"]
    if not isinstance(expected, dict) or not expected:
        raise fail(f"{where} expected", "must be a non-empty table of metric = score")
    try:
        expected = {canonical_metric(m): _number(v, lambda msg: ConfigError(msg)) for m, v in expected.items()}
    except ConfigError as err:
        raise fail(f"{where} expected", str(err)) from None
    index = (base / table["index"]).resolve() if "index" in table else dataset.index
    if index is None:
        raise fail(where, f"no index path: set 'index' here or in [datasets.{dataset.name}]")
    k = table.get("k", 100)
    if not isinstance(k, int) or k <= 0:
        raise fail(f"{where} k", f"must be a positive integer, got {k!r}")
    return Condition(
        name=str(table["name"]),
        dataset=dataset.name,
        index=index,
        mode=mode,
        k=k,
        bm25=configs["bm25"],
        dense=configs["dense"],
        fusion=configs["fusion"] or FusionConfig(),
        rerank=rerank,
        tolerance=_number(table.get("tolerance", tolerance), lambda m: fail(f"{where} tolerance", m)),
        unjudged=_choice(table.get("unjudged", dataset.unjudged), UNJUDGED_MODES, lambda m: fail(where, m)),
        expected=expected,
    )


def _local_path(path: Path) -> str:
    return str(path.resolve())


def _load_rerank(table: Any, base: Path, error: Any) -> RerankConfig:
    """A ``rerank`` table as a RerankConfig; a model starting with ``.`` or ``/`` is a path relative to the suite
    file, anything else a Hugging Face name passed on as is. TOML has no null: ``interpolation = "none"`` means
    the reranker alone, ``fusion = "none"`` ignores the card's learned fusion."""
    if not isinstance(table, dict) or "model" not in table:
        raise error("must be a table with at least 'model'")
    table = dict(table)
    if str(table["model"]).startswith((".", "/")):
        table["model"] = _local_path(base / table["model"])
    for key in ("interpolation", "fusion"):
        if table.get(key) == "none":
            table[key] = None
    try:
        return config_from_dict(RerankConfig, table)
    except (ConfigError, TypeError, ValueError) as err:
        raise error(str(err)) from None


def _number(value: Any, error: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise error(f"must be a number >= 0, got {value!r}")
    return float(value)


def _choice(value: Any, choices: Sequence[str], error: Any) -> str:
    if value not in choices:
        raise error(f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _check_shared_indexes(conditions: Sequence[Condition], sources: dict[str, Path], fail: Any) -> None:
    """Conditions that share an index path must ask for the same source and component configs."""
    needs: dict[Path, dict[str, Any]] = {}
    for cond in conditions:
        need = needs.setdefault(cond.index, {})
        for key, value in (("source", sources[cond.dataset]), ("bm25", cond.bm25), ("dense", cond.dense)):
            if value is None:
                continue
            if need.setdefault(key, value) != value:
                raise fail(
                    f"[[conditions]] {cond.name!r}",
                    f"index {cond.index} is shared with a condition using another {key}; "
                    "give this condition its own 'index' path",
                )


def with_reranker(condition: Condition, model: str | Path, name: str) -> Condition:
    """``condition`` reranking with another ``model`` (an ablation's), renamed ``name``: the same first stage, depth,
    ``k`` and mixing settings, and no expected scores (those pinned belong to the condition's own model). Run it with
    ``run_suite(dataclasses.replace(suite, conditions=(derived, ...)))``.

    >>> from searchkit.config import RerankConfig
    >>> row = Condition("rerank", "scifact", Path("idx"), "hybrid", 20, rerank=RerankConfig("a", depth=20),
    ...                 expected={"nDCG@10": 0.7})
    >>> derived = with_reranker(row, "b", "ablation")
    >>> derived.name, derived.rerank.model, derived.rerank.depth, derived.k, derived.expected
    ('ablation', 'b', 20, 20, {})
    """
    if condition.rerank is None:
        raise ConfigError(f"condition {condition.name!r} does not rerank: it has no reranker to swap")
    rerank = dataclasses.replace(condition.rerank, model=str(model))
    return dataclasses.replace(condition, name=name, rerank=rerank, expected={})


# ------------------------------------------------------------------------------------------ suite runs


def select_queries(queries: str | Path, split: str | None = None) -> list[Query]:
    """The queries of ``queries`` (BEIR folder, file or ``irds:`` id) to run for qrels ``split``.

    Without a split: every query. With one, the rule suites use: when the split's qrels judge fewer than half
    of the queries, the file holds several splits (SciFact's queries.jsonl has train and test) and only the
    judged queries are kept; otherwise every query is kept, and the unjudged ones score 0 (cisi: 112 queries,
    76 judged) unless evaluation skips them.
    """
    from searchkit.formats import read_qrels, read_queries

    all_queries = list(read_queries(queries))
    if split is None:
        return all_queries
    return restrict_to_split(all_queries, read_qrels(queries, split))


def restrict_to_split(queries: Sequence[Query], qrels: Qrels) -> list[Query]:
    """Apply :func:`select_queries`'s rule: keep only the judged queries when they are under half."""
    judged = [query for query in queries if query.query_id in qrels]
    return judged if 2 * len(judged) < len(queries) else list(queries)


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
            table = [["metric", "expected", "got", "delta", "ok"]]
            for c in cond.comparisons:
                ok = "" if c.ok is None else ("ok" if c.ok else "FAIL")
                delta = "" if c.delta is None else f"{c.delta:+.4f}".replace("-0.0000", "+0.0000")
                table.append([display_name(c.metric), format_score(c.expected), format_score(c.got), delta, ok])
            parts.append(_indent(render_table(table)))
            if cond.first_stage is not None:
                values = ", ".join(f"{display_name(m)} {v:.4f}" for m, v in cond.first_stage.items())
                parts.append(_indent(f"first stage alone (what the reranker was given): {values}"))
            parts.extend(_indent(line) for line in cond.evaluation.report.lines())
        metrics = list(dict.fromkeys(m for cond in self.conditions for m in cond.evaluation.aggregate))
        summary = [(f"{cond.dataset}/{cond.name}", cond.evaluation) for cond in self.conditions]
        parts.append(f"\nsummary ({self.suite})\n" + format_table(summary, metrics))
        failed = [cond.name for cond in self.conditions if not cond.passed]
        verdict = "passed" if not failed else f"FAILED ({', '.join(failed)})"
        parts.append(f"suite {self.suite}: {verdict}" + (f"; results in {self.output}" if self.output else ""))
        return "\n".join(parts)


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
) -> SuiteResult:
    """Run every condition of ``suite`` (or those whose name matches a pattern of ``only``) and compare.

    Each index is built once and reused when it exists with the same source and component configs (a
    component missing from it is added; a different config or source rebuilds it). Queries come from the
    dataset's queries.jsonl through :func:`restrict_to_split`'s rule, scored against ``qrels/<split>.tsv``
    with the condition's ``unjudged`` mode; qrels documents missing from the corpus are reported.
    ``check`` logs each metric outside its tolerance (``passed`` is computed either way).
    With ``write``, results go to ``output`` (default ``<suite dir>/results/<suite>-<UTC time>.json``) with a
    TREC run per condition beside it (``<json stem>.<condition>.trec``).
    """
    from searchkit import __version__
    from searchkit.formats import read_qrels, read_queries

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
            indexes[cond.index] = _prepare_index(cond.index, dataset.source, bm25, dense, show_progress)
        index, index_info = indexes[cond.index]
        if dataset.name not in data:
            qrels = read_qrels(dataset.source, dataset.split)
            data[dataset.name] = (list(read_queries(dataset.source)), qrels)
        all_queries, qrels = data[dataset.name]
        trec = None
        if write:
            trec = json_path.with_name(f"{json_path.stem}.{_safe_name(cond.name)}.trec")
        try:
            results.append(_run_condition(suite, cond, index, index_info, all_queries, qrels, trec, show_progress))
        except BaseException:
            _LOADED_RERANKERS.clear()
            raise
        for c in results[-1].comparisons:
            if check and c.ok is False:
                logger.warning("%s: %s = %.4f, expected %.4f ± %g", cond.name, c.metric, c.got, c.expected,
                               cond.tolerance)  # fmt: skip
    _LOADED_RERANKERS.clear()  # models and remembered logits live for one suite run
    result = SuiteResult(suite.name, str(suite.path), check, tuple(results), __version__,
                         _git_commit(suite.path.parent), now.isoformat(timespec="seconds"),
                         str(json_path) if write else None)  # fmt: skip
    if write:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(to_json(result.to_dict()) + "\n", encoding="utf-8")
        logger.info("wrote %s", json_path)
    return result


def _run_condition(
    suite: Suite,
    cond: Condition,
    index: Any,
    index_info: dict[str, Any],
    all_queries: list[Query],
    qrels: Qrels,
    trec: Path | None,
    show_progress: bool,
) -> ConditionResult:
    """Search, evaluate and compare one condition; write its TREC run to ``trec`` when given."""
    from searchkit.formats import write_run
    from searchkit.search import Searcher

    dataset = suite.datasets[cond.dataset]
    queries = restrict_to_split(all_queries, qrels)
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
        "in_file": len(all_queries),
        "run": len(queries),
        "rule": "judged only" if len(queries) < len(all_queries) else "all queries",
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
        settings["model"] = _local_path(Path(model))
    return settings


_LOADED_RERANKERS: dict[tuple[Any, ...], Any] = {}


def _reranker(config: RerankConfig | None) -> Any:
    """The condition's reranker; conditions that differ only in how scores are mixed (interpolation, fusion, depth)
    share one loaded model and its remembered logits, so each (query, document) pair is scored once per suite run."""
    if config is None:
        return None
    from searchkit.rerank import MODEL_FIELDS, CrossEncoderReranker

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
    path: Path, source: Path, bm25: BM25Config | None, dense: DenseConfig | None, show_progress: bool
) -> tuple[Any, dict[str, Any]]:
    """Open the index at ``path`` when it matches ``source`` and the configs; add or rebuild otherwise."""
    from searchkit.formats import source_sha256
    from searchkit.index import Index
    from searchkit.types import IndexFormatError

    wanted = {name: cfg for name, cfg in (("bm25", bm25), ("dense", dense)) if cfg is not None}
    started = time.perf_counter()
    action, why = "built", "no index yet"
    if path.exists():
        try:
            index = Index.open(path)
            components = index.manifest.get("components", {})
            recorded = index.manifest.get("source", {}) or {}
            stale = [
                n
                for n, cfg in wanted.items()
                if n in components and _built_with(index.components[n], cfg) != _built_with(cfg, cfg)
            ]
            missing = [n for n in wanted if n not in components]
            if recorded.get("path") != str(source) or recorded.get("sha256") != source_sha256(source):
                why = f"it was built from another source ({recorded.get('path')})"
            elif stale:
                why = f"its {', '.join(stale)} config differs"
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
        except IndexFormatError as err:
            why = f"it cannot be opened ({err})"
    if action == "built":
        logger.info("building %s from %s: %s", path, source, why)
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


def _git_commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
