"""searchkit: BM25 + dense (FAISS) retrieval, fusion, cross-encoder reranking and IR evaluation.

Importing the package is cheap: heavy modules (torch, faiss, transformers) load only when a component needs them.

>>> import searchkit
>>> searchkit.Hit("d1", 1.5)
Hit(doc_id='d1', score=1.5)
"""

from __future__ import annotations

import importlib
from typing import Any

from searchkit.config import BM25Config, DenseConfig, FusionConfig, RerankConfig, TokensConfig
from searchkit.types import (
    ConfigError,
    DataError,
    Document,
    Hit,
    IndexFormatError,
    Qrels,
    Query,
    Retriever,
    Run,
    SearchkitError,
    sort_hits,
)

__version__ = "0.1.0"

# Public names that live in modules with heavier imports; resolved on first use. (The metric function
# `evaluate` is not here: it shares its name with its module, so use `from searchkit.evaluate import evaluate`.)
_LAZY = {
    "Index": "searchkit.index",
    "BM25Retriever": "searchkit.bm25",
    "DenseRetriever": "searchkit.dense",
    "Searcher": "searchkit.search",
    "CrossEncoderReranker": "searchkit.rerank",
    "run_queries": "searchkit.evaluate",
    "read_corpus": "searchkit.formats",
    "read_queries": "searchkit.formats",
    "read_qrels": "searchkit.formats",
    "read_run": "searchkit.formats",
    "write_run": "searchkit.formats",
}

__all__ = [
    "BM25Config",
    "ConfigError",
    "DataError",
    "DenseConfig",
    "Document",
    "FusionConfig",
    "Hit",
    "IndexFormatError",
    "Qrels",
    "Query",
    "RerankConfig",
    "Retriever",
    "Run",
    "SearchkitError",
    "TokensConfig",
    "__version__",
    "sort_hits",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'searchkit' has no attribute {name!r}")
