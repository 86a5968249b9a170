"""Option stacks shared by several commands (searcher settings, tokens, metadata, Ray, filters), with the configs
they become, and the small output helpers every command uses. Defaults come from the configs' own fields."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from searchkit.config import (
    DEFAULT_DENSE_MODEL,
    BM25Config,
    FusionConfig,
    PassageConfig,
    RayConfig,
    RerankConfig,
    TokensConfig,
)
from searchkit.distributed.queries import SearcherSpec
from searchkit.types import ConfigError


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def bm25_config(
    method: str,
    k1: float,
    b: float,
    stemmer: str,
    stopwords: str,
    analyzer: str = BM25Config.analyzer,
    min_token_length: int = BM25Config.min_token_length,
) -> BM25Config:
    """The BM25Config of the command line's BM25 options ('none' turns the stemmer or the stopwords off)."""
    return BM25Config(
        method=method,
        k1=k1,
        b=b,
        stemmer=None if stemmer.lower() == "none" else stemmer,
        stopwords=None if stopwords.lower() == "none" else stopwords,
        analyzer=analyzer,
        min_token_length=min_token_length,
    )


def with_options(func: Any, options: Sequence[Any]) -> Any:
    """``func`` decorated by each click option of ``options``, listed in the order --help shows them."""
    for option in reversed(options):
        func = option(func)
    return func


def tokens_options(func: Any) -> Any:
    """``--tokens [MODEL]`` and ``--tokens-max-length`` (index build and index add)."""
    options = [
        click.option(
            "--tokens",
            "tokens_model",
            is_flag=False,
            flag_value=DEFAULT_DENSE_MODEL,
            default=None,
            metavar="[MODEL]",
            help=f"Also store every document's token ids, from MODEL's tokenizer (default: {DEFAULT_DENSE_MODEL}); "
            "a reranker or dense encoder with the same tokenizer then never tokenizes documents.",
        ),
        click.option(
            "--tokens-max-length",
            type=int,
            default=None,
            help=f"Tokens stored per document (default {TokensConfig.max_length}).",
        ),
    ]
    return with_options(func, options)


PASSAGES_METAVAR = "TOKENS,STRIDE[,max|first]"


def parse_passages(ctx: click.Context | None, param: Any, value: str | None) -> PassageConfig | None:
    """``--passages 128,64`` (or ``128,64,first``) as a PassageConfig; None when not given.

    >>> parse_passages(None, None, "128,64,first")
    PassageConfig(tokens=128, stride=64, aggregate='first')
    """
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts[:2]):
        raise click.BadParameter(f"expected {PASSAGES_METAVAR} (e.g. 128,64), got {value!r}")
    try:
        return PassageConfig(int(parts[0]), int(parts[1]), *parts[2:])
    except ConfigError as err:
        raise click.BadParameter(str(err)) from None


def passages_option(help_text: str) -> Any:
    """``--passages TOKENS,STRIDE[,max|first]`` parsed into a PassageConfig (:func:`parse_passages`)."""
    return click.option("--passages", callback=parse_passages, metavar=PASSAGES_METAVAR, help=help_text)


def tokens_config(model: str | None, max_length: int | None) -> Any:
    """The TokensConfig of ``--tokens [MODEL]`` and ``--tokens-max-length`` (None without --tokens)."""

    if model is None:
        if max_length is not None:
            raise ConfigError("--tokens-max-length needs --tokens")
        return None
    return TokensConfig(model=model) if max_length is None else TokensConfig(model=model, max_length=max_length)


def metadata_options(func: Any) -> Any:
    """``--metadata FIELD`` and ``--filterable FIELD[:TYPE]`` (index build)."""
    options = [
        click.option(
            "--metadata",
            "metadata_fields",
            multiple=True,
            metavar="FIELD",
            help="Keep this corpus column in each document's metadata (repeatable; BEIR's metadata object is kept "
            "anyway).",
        ),
        click.option(
            "--filterable",
            multiple=True,
            metavar="FIELD[:TYPE]",
            help="Store this metadata field column-wise for --filter (repeatable); TYPE keyword (default) or number.",
        ),
    ]
    return with_options(func, options)


def ray_options(func: Any) -> Any:
    """``--ray [ADDRESS]`` and ``--ray-actors N`` (index build / add, run): see searchkit.distributed."""
    options = [
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="local",
            default=None,
            metavar="[ADDRESS]",
            help="Spread the work over a Ray cluster (extra searchkit[ray]): alone, a local instance or the one "
            "RAY_ADDRESS names; 'auto' joins this machine's cluster, ray://HOST:10001 a remote one.",
        ),
        click.option("--ray-actors", type=int, default=None, help="Ray actors (default: one per GPU or CPU)."),
    ]
    return with_options(func, options)


def ray_config(address: str | None, actors: int | None) -> Any:
    """RayConfig(address=..., actors=...) when --ray was given, else None."""

    if address is None:
        if actors is not None:
            raise click.UsageError("--ray-actors needs --ray")
        return None
    return RayConfig(address=None if address == "local" else address, actors=actors)


# ---------------------------------------------------------------------- search / run
def searcher_options(func: Any) -> Any:
    options = [
        click.option("--mode", default="auto", show_default=True, help="auto, bm25, dense, hybrid or cascade."),
        click.option("--fusion", default=FusionConfig.method, show_default=True, help="Hybrid fusion: rrf or convex."),
        click.option("--depth", default=FusionConfig.depth, show_default=True, help="Candidates per first stage."),
        click.option("--alpha", default=FusionConfig.alpha, show_default=True, help="Dense weight for convex fusion."),
        click.option("--rrf-k", default=FusionConfig.rrf_k, show_default=True, help="RRF constant."),
        click.option("--device", default=None, help="Device for the dense model and the reranker: auto, cpu or cuda."),
        click.option(
            "--rerank",
            "rerank_model",
            default=None,
            metavar="MODEL",
            help="Rerank with this cross-encoder: a `searchkit train` output folder or a model name.",
        ),
        click.option(
            "--rerank-depth",
            type=int,
            default=None,
            help="First-stage hits the reranker re-scores (default: the depth its card's learned fusion was fitted "
            "at, else 100).",
        ),
        click.option(
            "--no-fusion",
            is_flag=True,
            help="Ignore the reranker card's learned fusion (use its interpolation weight, if any).",
        ),
    ]

    @functools.wraps(func)
    def with_settings(*args: Any, **kwargs: Any) -> Any:
        kwargs["settings"] = SearcherSettings(**{name: kwargs.pop(name) for name in SEARCHER_FIELDS})
        return func(*args, **kwargs)

    return with_options(with_settings, options)


@dataclass(frozen=True)
class SearcherSettings:
    """The searcher options shared by `search` and `run`, gathered into one value."""

    mode: str
    fusion: str
    depth: int
    alpha: float
    rrf_k: int
    device: str | None
    rerank_model: str | None
    rerank_depth: int | None
    no_fusion: bool

    def rerank_config(self) -> Any:
        """RerankConfig(MODEL, device=..., depth=...): only what was given overrides RerankConfig's defaults."""

        if self.rerank_model is None:
            return None
        given: dict[str, Any] = {"device": self.device, "depth": self.rerank_depth}
        settings = {name: value for name, value in given.items() if value is not None}
        return RerankConfig(self.rerank_model, fusion=None if self.no_fusion else "auto", **settings)

    def fusion_config(self) -> Any:
        """FusionConfig(method=..., depth=..., alpha=..., rrf_k=...)"""

        return FusionConfig(method=self.fusion, depth=self.depth, alpha=self.alpha, rrf_k=self.rrf_k)

    def spec(self, directory: Path, filters: Sequence[str] = ()) -> Any:
        """SearcherSpec(directory, mode=..., fusion=FusionConfig(...), rerank=RerankConfig(...), filters=...)"""

        return SearcherSpec(
            str(directory), self.mode, self.fusion_config(), self.rerank_config(), self.device, tuple(filters)
        )

    def build(self, directory: Path) -> Any:
        """Searcher(Index.open(directory), mode=..., fusion=FusionConfig(...), rerank=RerankConfig(...))"""
        return self.spec(directory)()


SEARCHER_FIELDS = [field.name for field in fields(SearcherSettings)]


def filter_option(func: Any) -> Any:
    """``--filter EXPR`` (repeatable; search and run): see searchkit.retrieval.filters for the grammar."""
    return click.option(
        "--filter",
        "filters",
        multiple=True,
        metavar="EXPR",
        help="Only documents whose metadata meet EXPR: FIELD OP VALUE (OP =, !=, <, <=, >, >=) or FIELD in V1,V2; "
        "repeat for several (all must hold), e.g. --filter 'year>=2020' --filter 'lang=en'.",
    )(func)
