"""searchkit inside the frameworks people build with: PyTerrier, LangChain and LlamaIndex (the top layer).

Each module imports its framework and is importable only with its extra (``pip install 'searchkit[pyterrier]'``,
``[langchain]``, ``[llamaindex]``); nothing else in searchkit imports them.

- :mod:`searchkit.integrations.pyterrier`: :class:`~searchkit.integrations.pyterrier.SearcherTransformer` (a
  Searcher as a PyTerrier retrieval transformer: queries in, ranked documents out) and
  :class:`~searchkit.integrations.pyterrier.RerankerTransformer` (a cross-encoder re-scoring any PyTerrier
  pipeline's candidates);
- :mod:`searchkit.integrations.langchain`: :class:`~searchkit.integrations.langchain.SearchkitRetriever`, a
  LangChain ``BaseRetriever``;
- :mod:`searchkit.integrations.llamaindex`: :class:`~searchkit.integrations.llamaindex.SearchkitLlamaRetriever`, a
  LlamaIndex ``BaseRetriever``.
"""
