"""searchkit in PyTerrier, LangChain and LlamaIndex: each integration run in its own framework on the tiny fixtures,
its results checked against the Searcher's (and PyTerrier's pt.Experiment against searchkit's own evaluation)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY

from searchkit.evaluate.metrics import evaluate
from searchkit.formats import document_text, read_qrels, read_queries
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.types import DataError, Hit


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(TINY, tmp_path_factory.mktemp("integrations") / "tiny")


@pytest.fixture(scope="module")
def queries() -> list[Any]:
    return read_queries(TINY)


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder: Path) -> Any:
    from searchkit.models.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(tiny_cross_encoder, device="cpu")


# ---------------------------------------------------------------------- LangChain
def test_langchain_retriever_returns_the_searchers_hits_in_a_chain(index: Index, queries: list[Any]) -> None:
    pytest.importorskip("langchain_core", reason="the langchain extra")
    from langchain_core.runnables import RunnableLambda

    from searchkit.integrations.langchain import SearchkitRetriever

    searcher = Searcher(index)
    retriever = SearchkitRetriever(searcher=searcher, k=3)
    chain = retriever | RunnableLambda(lambda docs: [(d.metadata["doc_id"], d.metadata["score"]) for d in docs])
    texts = [q.text for q in queries]
    expected = [[(h.doc_id, h.score) for h in hits] for hits in searcher.search_batch(texts, 3)]
    assert chain.batch(texts) == expected
    first = retriever.invoke(texts[0])
    assert [d.page_content for d in first] == [document_text(index.document(d.id)) for d in first]
    assert [d.metadata["rank"] for d in first] == list(range(1, len(first) + 1))
    assert asyncio.run(retriever.ainvoke(texts[0])) == first


# ---------------------------------------------------------------------- LlamaIndex
def test_llamaindex_retriever_returns_the_searchers_hits(index: Index, queries: list[Any]) -> None:
    pytest.importorskip("llama_index.core", reason="the llamaindex extra")
    from llama_index.core.postprocessor import SimilarityPostprocessor
    from llama_index.core.schema import QueryBundle

    from searchkit.integrations.llamaindex import SearchkitLlamaRetriever

    searcher = Searcher(index)
    retriever = SearchkitLlamaRetriever(searcher, k=3)
    for query in queries:
        nodes = retriever.retrieve(QueryBundle(query.text))
        assert [(n.node.node_id, n.score) for n in nodes] == [
            (h.doc_id, h.score) for h in searcher.search(query.text, 3)
        ]
        assert all(n.node.get_content() == document_text(index.document(n.node.node_id)) for n in nodes)
    nodes = retriever.retrieve("cats chasing mice")
    cutoff = (nodes[0].score + nodes[1].score) / 2  # LlamaIndex's own postprocessor over our scores
    kept = SimilarityPostprocessor(similarity_cutoff=cutoff).postprocess_nodes(nodes)
    assert [n.node.node_id for n in kept] == [nodes[0].node.node_id]
    assert [n.node.node_id for n in asyncio.run(retriever.aretrieve("cats chasing mice"))] == [
        n.node.node_id for n in nodes
    ]


# ---------------------------------------------------------------------- PyTerrier
pyterrier_missing = importlib.util.find_spec("pyterrier") is None


def test_each_integration_names_its_extra_when_the_framework_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for module, framework, extra in (
        ("searchkit.integrations.langchain", "langchain_core", "langchain"),
        ("searchkit.integrations.llamaindex", "llama_index", "llamaindex"),
        ("searchkit.integrations.pyterrier", "pyterrier", "pyterrier"),
    ):
        for name in [framework, *(n for n in list(sys.modules) if n.startswith(framework + "."))]:
            monkeypatch.setitem(sys.modules, name, None)  # `import framework[.anything]` now raises ImportError
        monkeypatch.delitem(sys.modules, module, raising=False)
        with pytest.raises(ImportError, match=rf"pip install 'searchkit\[{extra}\]'"):
            importlib.import_module(module)
        monkeypatch.undo()


@pytest.fixture(scope="module")
def topics(queries: list[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame({"qid": [q.query_id for q in queries], "query": [q.text for q in queries]})


@pytest.fixture(scope="module")
def pt_qrels() -> Any:
    import pandas as pd

    qrels = read_qrels(TINY, "test")
    rows = [(qid, docno, grade) for qid, docs in qrels.items() for docno, grade in docs.items()]
    return pd.DataFrame(rows, columns=["qid", "docno", "label"])


def _run(frame: Any) -> dict[str, list[Hit]]:
    run: dict[str, list[Hit]] = {}
    for qid, docno, score in zip(frame["qid"], frame["docno"], frame["score"], strict=True):
        run.setdefault(qid, []).append(Hit(docno, float(score)))
    return run


@pytest.mark.skipif(pyterrier_missing, reason="PyTerrier is not installed (the pyterrier extra)")
def test_pyterrier_searcher_in_an_experiment_scores_as_searchkit(index: Index, topics: Any, pt_qrels: Any) -> None:
    import pyterrier as pt

    from searchkit.integrations.pyterrier import SearcherTransformer

    searcher = Searcher(index)
    bm25 = SearcherTransformer(searcher, k=5)
    results = bm25(topics)
    assert list(results.columns) == ["qid", "query", "docno", "score", "rank"]
    expected = searcher.search_batch(list(topics["query"]), 5)
    assert _run(results) == {qid: hits for qid, hits in zip(topics["qid"], expected, strict=True) if hits}
    assert results.groupby("qid")["rank"].apply(list).map(lambda r: r == list(range(len(r)))).all()
    table = pt.Experiment([bm25], topics, pt_qrels, eval_metrics=["ndcg_cut_10", "recip_rank"], names=["bm25"])
    ours = evaluate(_run(results), read_qrels(TINY, "test"), ["nDCG@10", "RR"], log_problems=False)
    assert table["ndcg_cut_10"].iloc[0] == pytest.approx(ours.aggregate["nDCG@10"], abs=1e-12)
    assert table["recip_rank"].iloc[0] == pytest.approx(ours.aggregate["RR"], abs=1e-12)


@pytest.mark.skipif(pyterrier_missing, reason="PyTerrier is not installed (the pyterrier extra)")
def test_pyterrier_reranker_equals_the_searchers_rerank(index: Index, topics: Any, reranker: Any) -> None:
    from searchkit.integrations.pyterrier import RerankerTransformer, SearcherTransformer

    pipeline = SearcherTransformer(Searcher(index), k=6) >> RerankerTransformer(reranker, index=index)
    results = pipeline(topics)
    assert {"score_0", "score", "rank"} <= set(results.columns)
    reranked = Searcher(index, rerank=reranker).search_batch(list(topics["query"]), 6)
    expected = {qid: hits for qid, hits in zip(topics["qid"], reranked, strict=True) if hits}
    got = _run(results)
    assert {qid: [h.doc_id for h in hits] for qid, hits in got.items()} == {
        qid: [h.doc_id for h in hits] for qid, hits in expected.items()
    }
    for qid, hits in got.items():
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected[qid]], abs=1e-5)
    with_text = (SearcherTransformer(Searcher(index), k=6, text=True) >> RerankerTransformer(reranker))(topics)
    assert with_text[["qid", "docno", "rank"]].equals(results[["qid", "docno", "rank"]])
    assert with_text["score"].tolist() == pytest.approx(results["score"].tolist(), abs=1e-5)


@pytest.mark.skipif(pyterrier_missing, reason="PyTerrier is not installed (the pyterrier extra)")
def test_pyterrier_reranker_needs_texts_and_one_row_per_document(reranker: Any) -> None:
    import pandas as pd

    from searchkit.integrations.pyterrier import RerankerTransformer

    frame = pd.DataFrame({"qid": ["q1", "q1"], "query": ["x", "x"], "docno": ["d1", "d1"], "text": ["a", "a"]})
    with pytest.raises(DataError, match="listed twice"):
        RerankerTransformer(reranker)(frame)
    with pytest.raises(DataError, match="text column"):
        RerankerTransformer(reranker)(frame.drop(columns="text"))
