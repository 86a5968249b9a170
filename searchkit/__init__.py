"""searchkit: BM25 + dense (FAISS) retrieval, fusion, cross-encoder reranking and IR evaluation.

Importing the package is cheap: heavy modules (torch, faiss, transformers) load only when a component needs them.

The package's layers, lowest first (a module imports only from its own layer and those below; ``make lint`` checks
it): ``types``, ``version``; ``config``, ``formats``, ``faults``; ``text`` (analyzers, batching) and ``ranking``
(ranked arrays, fusion arithmetic); ``models`` (loading, devices, the bi-encoder, the cross-encoder, cards);
``retrieval`` (BM25, dense/FAISS, filters, stored tokens: an index's components); ``index`` (the folder, its
generations, build, update, plan); ``search`` (the Searcher); ``evaluate`` (runs, metrics, tables);
``training``; ``experiments`` (suites); ``distributed`` (Ray); ``serve``; ``cli``.

>>> import searchkit
>>> searchkit.Hit("d1", 1.5)
Hit(doc_id='d1', score=1.5)
"""

from __future__ import annotations

import importlib
from typing import Any

from searchkit.config import BM25Config, DenseConfig, FusionConfig, PassageConfig, RerankConfig, TokensConfig
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
from searchkit.version import __version__

# Public names that live in modules with heavier imports; resolved on first use. (The metric function
# `evaluate` is not here: it shares its name with its module, so use `from searchkit.evaluate import evaluate`.)
_LAZY = {
    "Index": "searchkit.index.api",
    "BM25Retriever": "searchkit.retrieval.bm25",
    "DenseRetriever": "searchkit.retrieval.dense",
    "Searcher": "searchkit.search",
    "CrossEncoderReranker": "searchkit.models.cross_encoder",
    "run_queries": "searchkit.evaluate.runs",
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
    "PassageConfig",
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
