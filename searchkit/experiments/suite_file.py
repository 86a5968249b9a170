"""The suite file (``eval/*.toml``): datasets, conditions (retrievers, fusion, reranker, depths) and their expected
scores, read and checked here with every setting's key in its error; :mod:`searchkit.experiments.suite` runs it.

>>> suite = load_suite("eval/scifact.toml")
>>> suite.name, [c.name for c in suite.conditions][:2]
('scifact', ['bm25', 'dense'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchkit.config import (
    BM25Config,
    DenseConfig,
    FusionConfig,
    IndexRecipe,
    RerankConfig,
    config_from_dict,
    load_index_recipe,
    load_recipe,
)
from searchkit.evaluate.metrics import (
    DEFAULT_METRICS,
    UNJUDGED_MODES,
    canonical_metric,
)
from searchkit.evaluate.significance import TESTS
from searchkit.formats import read_queries
from searchkit.types import ConfigError, Query

SUITE_MODES = ("bm25", "dense", "hybrid", "cascade")


_EXAMPLES = 5


_SUITE_KEYS = {"name", "description", "metrics", "tolerance", "unjudged", "rebuild", "baseline", "test"}


_DATASET_KEYS = {"source", "recipe", "split", "queries", "index", "exclude_self", "unjudged"}


# Which queries of a dataset run: those judged in its split (read_queries(source, split=...)), or every query of
# its queries.jsonl (a one-split collection whose unjudged queries should count, e.g. CISI).
QUERY_SELECTIONS = ("split", "all")


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
    """A BEIR-layout dataset of a suite: ``source`` folder, qrels ``split``, default ``index`` path; or an index
    ``recipe`` (``indexes/*.toml``), whose corpus, output and component settings (several BM25 analyzers, say) the
    conditions then share instead of giving their own."""

    name: str
    source: Path
    split: str = "test"
    index: Path | None = None
    exclude_self: bool = False
    unjudged: str = "zero"
    recipe: IndexRecipe | None = None
    queries: str = "split"

    def read_queries(self) -> list[Query]:
        """The queries this dataset runs: those judged in ``split`` (exactly ``read_queries(source, split=split)``,
        the one rule ``searchkit run --split`` and training use), or with ``queries = "all"`` every query."""
        return read_queries(self.source, split=self.split if self.queries == "split" else None)


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
    rebuild: bool = False
    """Whether an existing index whose source or settings differ from a condition's is rebuilt (else refused)."""
    baselines: tuple[str, ...] = ()
    """Conditions the others of their dataset are tested against (at most one per dataset): a p-value column."""
    test: str = "t"
    """The paired significance test: ``t`` or ``permutation`` (see searchkit.evaluate.significance)."""


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite TOML; every error names the file and the offending key.

    Schema (paths are relative to the suite file)::

        [suite]
        name = "scifact"                      # required; also names the results file
        metrics = ["nDCG@10", "RR@10", "R@100", "AP"]   # ir-measures strings (default: these four)
        tolerance = 0.002                     # |got - expected| allowed (default 0.002)
        unjudged = "zero"                     # zero | skip, for queries without judgments (default zero)
        baseline = "bm25"                     # optional: a condition (or a list, one per dataset) the others
                                              # of its dataset are tested against, per query: the report
                                              # gains a p-value column, Holm-corrected across those rows
        test = "t"                            # t (paired t-test, default) | permutation (randomization)

        [datasets.scifact]
        source = "../../shared/datasets/scifact"  # BEIR: corpus.jsonl, queries.jsonl, qrels/<split>.tsv
        # or recipe = "../indexes/qbqtc.toml": the index recipe gives source, index and every component's settings
        # (conditions then give no bm25/dense tables; their mode may name any stage, e.g. "bm25.zh")
        split = "test"                        # default test
        queries = "split"                     # split: the queries judged in qrels/<split>.tsv (default);
                                              # all: every query of queries.jsonl (unjudged ones then follow
                                              # `unjudged`: a one-split collection such as CISI)
        index = "../indexes/scifact-bm25"     # where the index is built or reused (git-ignored)
        exclude_self = false                  # drop a query's own id from its results
        unjudged = "zero"                     # overrides [suite]

        [[conditions]]
        name = "bm25"                         # unique
        dataset = "scifact"
        mode = "bm25"                         # bm25 | dense | hybrid | cascade (| bm25.<analyzer>: recipe datasets)
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
    Queries: those judged in ``split`` (what ``read_queries(source, split=split)`` and ``searchkit run --split``
    select), or every query of queries.jsonl with ``queries = "all"``; see :meth:`SuiteDataset.read_queries`.
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
    rebuild = head.get("rebuild", False)
    if not isinstance(rebuild, bool):
        raise fail("[suite] rebuild", f"must be true or false, got {rebuild!r}")
    suite_unjudged = _choice(head.get("unjudged", "zero"), UNJUDGED_MODES, lambda m: fail("[suite] unjudged", m))

    datasets: dict[str, SuiteDataset] = {}
    for name, table in check_keys(top.get("datasets", {}), set(top.get("datasets", {})), "[datasets]").items():
        where = f"[datasets.{name}]"
        table = check_keys(table, _DATASET_KEYS, where)
        recipe = _dataset_recipe(table, base, lambda m, w=where: fail(w, m))
        if recipe is None and "source" not in table:
            raise fail(where, "missing key 'source' (or 'recipe', an index recipe)")
        source = Path(recipe.corpus) if recipe is not None else base / table["source"]
        index = recipe.output if recipe is not None else (base / table["index"] if "index" in table else None)
        datasets[name] = SuiteDataset(
            name=name,
            source=source.resolve(),
            recipe=recipe,
            split=str(table.get("split", "test")),
            index=index.resolve() if index is not None else None,
            exclude_self=bool(table.get("exclude_self", False)),
            unjudged=_choice(table.get("unjudged", suite_unjudged), UNJUDGED_MODES, lambda m, w=where: fail(w, m)),
            queries=_choice(table.get("queries", "split"), QUERY_SELECTIONS, lambda m, w=where: fail(w, m)),
        )

    conditions: list[Condition] = []
    raw_conditions = top.get("conditions", [])
    if not isinstance(raw_conditions, list) or not raw_conditions:
        raise fail("[[conditions]]", "a suite needs at least one [[conditions]] table")
    for number, table in enumerate(raw_conditions, start=1):
        named = isinstance(table, dict) and isinstance(table.get("name"), str)
        where = f"[[conditions]] {table['name']!r}" if named else f"[[conditions]] #{number}"
        table = check_keys(table, _CONDITION_KEYS, where)
        conditions.append(load_condition(table, where, base, datasets, tolerance, fail))
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise fail("[[conditions]]", f"duplicate condition names: {sorted({n for n in names if names.count(n) > 1})}")
    check_shared_indexes(conditions, {name: d.source for name, d in datasets.items()}, fail)
    baselines = _baselines(head.get("baseline", []), conditions, fail)
    test = _choice(head.get("test", "t"), TESTS, lambda m: fail("[suite] test", m))
    return Suite(
        path.resolve(),
        str(head["name"]),
        metrics,
        tolerance,
        datasets,
        tuple(conditions),
        str(head.get("description", "")),
        rebuild,
        baselines,
        test,
    )


def _baselines(value: Any, conditions: Sequence[Condition], fail: Any) -> tuple[str, ...]:
    """``[suite] baseline``: a condition name or a list of them, at most one per dataset."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise fail("[suite] baseline", f"must be a condition name or a list of them, got {value!r}")
    by_name = {c.name: c for c in conditions}
    seen: dict[str, str] = {}
    for name in names:
        if name not in by_name:
            raise fail("[suite] baseline", f"{name!r} is not a condition; conditions: {', '.join(by_name)}")
        dataset = by_name[name].dataset
        if dataset in seen:
            raise fail("[suite] baseline", f"{seen[dataset]!r} and {name!r} are both baselines of dataset {dataset!r}")
        seen[dataset] = name
    return tuple(names)


def load_condition(
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
    mode = table.get("mode", "bm25")
    if not (dataset.recipe is not None and isinstance(mode, str) and mode.startswith("bm25.")):
        mode = _choice(mode, SUITE_MODES, lambda m: fail(f"{where} mode", m))
    uses_bm25, uses_dense = mode != "dense", mode != "bm25"
    if dataset.recipe is not None:
        uses_bm25 = uses_dense = False  # the dataset's index recipe decides every component's settings
        for key in ("bm25", "dense", "index"):
            if key in table:
                raise fail(f"{where} {key}", f"dataset {dataset.name!r} is built from its recipe: set {key} there")
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
            settings["model"] = local_path(base / settings["model"])  # a model folder, relative to the suite
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


def _dataset_recipe(table: dict[str, Any], base: Path, error: Any) -> IndexRecipe | None:
    """The dataset's index recipe when it names one (then ``source`` and ``index`` come from it, never beside it)."""
    if "recipe" not in table:
        return None
    for key in ("source", "index"):
        if key in table:
            raise error(f"give either 'recipe' or '{key}': the recipe names the corpus and the index folder")
    try:
        return load_index_recipe(base / str(table["recipe"]))
    except (ConfigError, OSError) as err:
        raise error(f"recipe: {err}") from None


def local_path(path: Path) -> str:
    return str(path.resolve())


def _load_rerank(table: Any, base: Path, error: Any) -> RerankConfig:
    """A ``rerank`` table as a RerankConfig; a model starting with ``.`` or ``/`` is a path relative to the suite
    file, anything else a Hugging Face name passed on as is. TOML has no null: ``interpolation = "none"`` means
    the reranker alone, ``fusion = "none"`` ignores the card's learned fusion."""
    if not isinstance(table, dict) or "model" not in table:
        raise error("must be a table with at least 'model'")
    table = dict(table)
    if str(table["model"]).startswith((".", "/")):
        table["model"] = local_path(base / table["model"])
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


def check_shared_indexes(conditions: Sequence[Condition], sources: dict[str, Path], fail: Any) -> None:
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
