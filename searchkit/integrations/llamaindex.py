"""A LlamaIndex retriever over a searchkit Searcher (the ``llamaindex`` extra: ``llama-index-core``).

>>> from searchkit.index import Index
>>> from searchkit.search import Searcher
>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
>>> [node.node.node_id for node in SearchkitLlamaRetriever(Searcher(index), k=2).retrieve("cats chase mice")]
['d1', 'd5']
"""

from __future__ import annotations

from typing import Any

from searchkit.formats import document_text
from searchkit.search import Searcher

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        f"searchkit.integrations.llamaindex needs llama-index-core ({err}): pip install 'searchkit[llamaindex]'"
    ) from err


class SearchkitLlamaRetriever(BaseRetriever):
    """The ``k`` best documents of ``searcher`` for a query, as LlamaIndex ``NodeWithScore`` (best first).

    Each node is a ``TextNode`` whose id is the document id and whose text is its title and text
    (:func:`searchkit.formats.document_text`); ``metadata``: ``title``, ``rank`` (1-based) and the document's
    own metadata; the score is the Searcher's. ``filter``: a searchkit filter applied to every query.
    """

    def __init__(self, searcher: Searcher, k: int = 10, *, filter: Any = None, **kwargs: Any) -> None:
        self.searcher = searcher
        self.k = k
        self.filter = filter
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.searcher.search(query_bundle.query_str, self.k, filter=self.filter)
        documents = self.searcher.index.documents([hit.doc_id for hit in hits])
        return [
            NodeWithScore(
                node=TextNode(
                    id_=hit.doc_id,
                    text=document_text(doc),
                    metadata={**(doc.metadata or {}), "title": doc.title, "rank": rank},
                ),
                score=hit.score,
            )
            for rank, (hit, doc) in enumerate(zip(hits, documents, strict=True), 1)
        ]
