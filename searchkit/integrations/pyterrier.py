"""PyTerrier transformers for a searchkit Searcher and for a searchkit reranker (the ``pyterrier`` extra).

PyTerrier's data model is pandas frames: queries ``(qid, query)`` and ranked results ``(qid, query, docno, score,
rank)``, ranks 0-based. :class:`SearcherTransformer` turns queries into results; :class:`RerankerTransformer`
re-scores the results of any pipeline (a Terrier BM25, a run file read with ``pt.io.read_results``, another
searchkit Searcher) with a cross-encoder, so both compose with PyTerrier's operators (``>>``, ``%``, ``+``) and run
in ``pt.Experiment``. Neither needs Java: PyTerrier's transformers are pure Python (only Terrier's own indexes and
retrievers start a JVM).

>>> import pandas as pd, tempfile, pathlib
>>> from searchkit.index import Index
>>> from searchkit.search import Searcher
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
>>> bm25 = SearcherTransformer(Searcher(index), k=2)
>>> bm25(pd.DataFrame({"qid": ["q1"], "query": ["cats chase mice"]}))[["qid", "docno", "rank"]]
  qid docno  rank
0  q1    d1     0
1  q1    d5     1
"""

from __future__ import annotations

from typing import Any

from searchkit.formats import document_text
from searchkit.index.bundle import IndexBundle
from searchkit.search import Reranker, Searcher
from searchkit.types import DataError, Hit

try:
    import pandas as pd
    import pyterrier as pt
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        f"searchkit.integrations.pyterrier needs PyTerrier ({err}): pip install 'searchkit[pyterrier]'"
    ) from err


class SearcherTransformer(pt.Transformer):
    """Queries ``(qid, query, ...)`` -> the ``k`` best documents of ``searcher`` per query
    ``(qid, query, docno, score, rank, ...)``; the query frame's other columns are kept.

    ``text=True`` adds each document's ``text`` (title and text, :func:`searchkit.formats.document_text`) from the
    index's doc store, for a PyTerrier reranker downstream. ``filter``: a searchkit filter for every query.
    """

    def __init__(self, searcher: Searcher, k: int = 10, *, text: bool = False, filter: Any = None) -> None:
        self.searcher = searcher
        self.k = k
        self.text = text
        self.filter = filter

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        missing = {"qid", "query"} - set(inp.columns)
        if missing:
            raise DataError(f"SearcherTransformer needs a query frame with qid and query columns (missing {missing})")
        queries = inp.drop_duplicates("qid")
        results = self.searcher.search_batch(list(queries["query"].astype(str)), self.k, filter=self.filter)
        rows: list[dict[str, Any]] = []
        for record, hits in zip(queries.to_dict("records"), results, strict=True):
            texts = (
                [document_text(d) for d in self.searcher.index.documents([h.doc_id for h in hits])] if self.text else []
            )
            for rank, hit in enumerate(hits):
                row = {**record, "docno": hit.doc_id, "score": hit.score, "rank": rank}
                if self.text:
                    row["text"] = texts[rank]
                rows.append(row)
        columns = [*inp.columns, "docno", "score", "rank", *(["text"] if self.text else [])]
        return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))

    def __repr__(self) -> str:
        return f"SearcherTransformer({self.searcher.mode}, k={self.k})"


class RerankerTransformer(pt.Transformer):
    """Results ``(qid, query, docno, ...)`` -> the same rows re-scored by ``reranker`` (a
    :class:`searchkit.models.cross_encoder.CrossEncoderReranker`: its ``rerank_batch``, batched per query as the
    Searcher's ``--rerank``) and re-ranked.

    ``score`` becomes the reranker's logit and the input's is kept as ``score_0`` (PyTerrier's pipelines mix them
    with ``+`` / ``*`` when wanted: the card's learned fusion is the Searcher's, not applied here). Document texts
    come from the frame's ``text`` column, else from ``index``'s doc store. Cut the candidates first with
    PyTerrier's ``%`` (``bm25 % 100 >> rerank``).
    """

    def __init__(self, reranker: Reranker, *, index: IndexBundle | None = None) -> None:
        self.reranker = reranker
        self.index = index

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        missing = {"qid", "query", "docno"} - set(inp.columns)
        if missing:
            raise DataError(f"RerankerTransformer needs a result frame with qid, query and docno (missing {missing})")
        if "text" not in inp.columns and self.index is None:
            raise DataError("RerankerTransformer needs the documents' texts: a text column, or index=<the Index>")
        if inp.empty:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        if inp.duplicated(["qid", "docno"]).any():
            raise DataError("RerankerTransformer: a document is listed twice for one query (qid, docno repeated)")
        groups = [group for _, group in inp.groupby("qid", sort=False)]
        queries = [str(group["query"].iloc[0]) for group in groups]
        docnos = [group["docno"].astype(str).tolist() for group in groups]
        if "text" in inp.columns:
            texts = [group["text"].astype(str).tolist() for group in groups]
        else:
            assert self.index is not None
            texts = [[document_text(d) for d in self.index.documents(ids)] for ids in docnos]
        candidates = [[Hit(docno, 0.0) for docno in ids] for ids in docnos]
        reranked = self.reranker.rerank_batch(queries, candidates, texts)  # each sorted by searchkit's tie order
        pieces = []
        for group, ids, hits in zip(groups, docnos, reranked, strict=True):
            position = {docno: i for i, docno in enumerate(ids)}
            rows = group.iloc[[position[hit.doc_id] for hit in hits]].copy()
            if "score" in rows.columns:
                rows["score_0"] = rows["score"]
            rows["score"] = [float(hit.score) for hit in hits]
            rows["rank"] = list(range(len(hits)))
            pieces.append(rows)
        return pd.concat(pieces, ignore_index=True)

    def __repr__(self) -> str:
        return f"RerankerTransformer({getattr(self.reranker, 'name', type(self.reranker).__name__)})"
