"""A LangChain retriever over a searchkit Searcher (the ``langchain`` extra: ``langchain-core``).

>>> from searchkit.index import Index
>>> from searchkit.search import Searcher
>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
>>> retriever = SearchkitRetriever(searcher=Searcher(index), k=2)
>>> [doc.metadata["doc_id"] for doc in retriever.invoke("cats chase mice")]
['d1', 'd5']
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from searchkit.formats import document_text
from searchkit.search import Searcher

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.retrievers import BaseRetriever
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        f"searchkit.integrations.langchain needs langchain-core ({err}): pip install 'searchkit[langchain]'"
    ) from err


class SearchkitRetriever(BaseRetriever):
    """The ``k`` best documents of ``searcher`` for a query, as LangChain Documents (best first).

    ``page_content``: the document's title and text as searchkit scores them
    (:func:`searchkit.formats.document_text`); ``metadata``: ``doc_id``, ``score``, ``rank`` (1-based),
    ``title`` and the document's own metadata. ``filter``: a searchkit filter (``"year>=2020"``) applied to
    every query. Any Searcher works: BM25, dense, hybrid, reranked.
    """

    searcher: Searcher
    k: int = 10
    filter: Any = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LangChainDocument]:
        hits = self.searcher.search(query, self.k, filter=self.filter)
        documents = self.searcher.index.documents([hit.doc_id for hit in hits])
        return [
            LangChainDocument(
                page_content=document_text(doc),
                metadata={
                    **(doc.metadata or {}),
                    "doc_id": hit.doc_id,
                    "score": hit.score,
                    "rank": rank,
                    "title": doc.title,
                },
                id=hit.doc_id,
            )
            for rank, (hit, doc) in enumerate(zip(hits, documents, strict=True), 1)
        ]
