"""The components an index can hold, in build order, each with its config class and the class that stores it.

A component is a folder of the index written and read by one class of :mod:`searchkit.retrieval` (``build``,
``load``, ``verify``, ``rewrite``; see each module's docstring for its files); its config is a frozen dataclass of
:mod:`searchkit.config`, stored whole in the manifest entry (``{"config": {...}, ...}``) beside whatever the
component records about its files (``manifest_entry``).

An index may hold BM25 over several analyzers (issue 22): the first is the component ``bm25``, each other one
``bm25.<analyzer>`` (``bm25.zh``, ``bm25.cjk-bigram``), a folder of the same name; every one is a first stage.

>>> list(COMPONENTS)
['bm25', 'tokens', 'dense', 'filters']
>>> component_entry(BM25Config(), None)["config"]["k1"]
1.5
>>> component_kind("bm25.zh"), bm25_components([BM25Config(), BM25Config(analyzer="zh")]).keys()
('bm25', dict_keys(['bm25', 'bm25.zh']))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from searchkit.config import ANALYZERS, BM25Config, DenseConfig, FilterConfig, TokensConfig, config_to_dict
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.filters import FilterColumns
from searchkit.retrieval.tokens import DocumentTokens
from searchkit.types import ConfigError


class ComponentSpec(NamedTuple):
    """A component's config class and the class that builds, loads and verifies its folder."""

    config_class: type
    retriever_class: type


# What a setting added to a config later meant for manifests written before it existed: dense embeddings were
# encoded in fp32 then (the CPU default; no GPU index was ever recorded without a dtype).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"dense": {"dtype": "fp32"}}

# Components in the order they are built (tokens before dense, which encodes them); the key is the folder's name.
COMPONENTS: dict[str, ComponentSpec] = {
    "bm25": ComponentSpec(BM25Config, BM25Retriever),
    "tokens": ComponentSpec(TokensConfig, DocumentTokens),
    "dense": ComponentSpec(DenseConfig, DenseRetriever),
    "filters": ComponentSpec(FilterConfig, FilterColumns),
}

RETRIEVERS = ("bm25", "dense")
"""The kinds of component that retrieve (an index needs one of them); the others serve them."""


def component_kind(name: str) -> str:
    """The kind of the component a manifest names ``name``: the name itself, or ``bm25`` for ``bm25.<analyzer>``;
    ConfigError for a name that is neither."""
    kind, dot, analyzer = name.partition(".")
    if (not dot and kind in COMPONENTS) or (kind == "bm25" and analyzer in ANALYZERS):
        return kind
    raise ConfigError(f"unknown index component {name!r}; components: {', '.join(COMPONENTS)} (and bm25.<analyzer>)")


def is_component_name(name: str) -> bool:
    """Whether ``name`` is a component name this searchkit knows (see :func:`component_kind`)."""
    try:
        component_kind(name)
    except ConfigError:
        return False
    return True


def component_order(names: Iterable[str]) -> list[str]:
    """``names`` in build order: by kind as :data:`COMPONENTS` lists them (tokens before dense), ``bm25`` first."""
    kinds = list(COMPONENTS)
    return sorted(names, key=lambda name: (kinds.index(component_kind(name)), name != "bm25", name))


def retrieving(names: Iterable[str]) -> list[str]:
    """The components among ``names`` that are first stages, in build order (BM25 ones first, then dense)."""
    return [name for name in component_order(names) if component_kind(name) in RETRIEVERS]


def bm25_components(bm25: BM25Config | Sequence[BM25Config] | None) -> dict[str, BM25Config]:
    """The BM25 components of a build: one config is ``bm25``; several are ``bm25`` then ``bm25.<analyzer>``
    (their analyzers must differ: the analyzer names the folder)."""
    if bm25 is None:
        return {}
    configs = [bm25] if isinstance(bm25, BM25Config) else list(bm25)
    if not all(isinstance(config, BM25Config) for config in configs):
        raise ConfigError(f"bm25 must be a BM25Config or a list of them, got {bm25!r}")
    named = {"bm25": configs[0]} if configs else {}
    for config in configs[1:]:
        name = f"bm25.{config.analyzer}"
        if name in named or config.analyzer == configs[0].analyzer:
            raise ConfigError(f"two BM25 components with the {config.analyzer} analyzer; give each its own analyzer")
        named[name] = config
    return named


def config_dicts(configs: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready dicts of the configs that are set (None: the component is not built)."""
    return {name: config_to_dict(config) for name, config in configs.items() if config is not None}


def component_entry(config: Any, built: Any) -> dict[str, Any]:
    """A component's manifest entry: its config, plus what the component records beside it (``manifest_entry``)."""
    describe = getattr(built, "manifest_entry", None)
    return {"config": config_to_dict(config), **(describe() if describe is not None else {})}
