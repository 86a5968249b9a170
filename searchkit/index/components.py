"""The components an index can hold, in build order, each with its config class and the class that stores it.

A component is a folder of the index written and read by one class of :mod:`searchkit.retrieval` (``build``,
``load``, ``verify``, ``rewrite``; see each module's docstring for its files); its config is a frozen dataclass of
:mod:`searchkit.config`, stored whole in the manifest entry (``{"config": {...}, ...}``) beside whatever the
component records about its files (``manifest_entry``).

>>> list(COMPONENTS)
['bm25', 'tokens', 'dense', 'filters']
>>> component_entry(BM25Config(), None)["config"]["k1"]
1.5
"""

from __future__ import annotations

from typing import Any, NamedTuple

from searchkit.config import BM25Config, DenseConfig, FilterConfig, TokensConfig, config_to_dict
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.dense import DenseRetriever
from searchkit.retrieval.filters import FilterColumns
from searchkit.retrieval.tokens import DocumentTokens


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
"""The components that retrieve (an index needs one of them); the others serve them."""


def config_dicts(configs: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready dicts of the configs that are set (None: the component is not built)."""
    return {name: config_to_dict(config) for name, config in configs.items() if config is not None}


def component_entry(config: Any, built: Any) -> dict[str, Any]:
    """A component's manifest entry: its config, plus what the component records beside it (``manifest_entry``)."""
    describe = getattr(built, "manifest_entry", None)
    return {"config": config_to_dict(config), **(describe() if describe is not None else {})}
