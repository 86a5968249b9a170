"""Metadata filters (searchkit.retrieval.filters): the grammar, the column store against a pure-Python oracle, and
filtered
searches in every mode: a filtered-out document is never returned, and k hits come back when k documents match."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LANGS, WORDS, synthetic_documents
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchkit.config import FilterConfig
from searchkit.index import Index
from searchkit.retrieval.filters import Condition, Filter, FilterColumns, parse_condition, parse_filter
from searchkit.search import Searcher
from searchkit.types import ConfigError, DataError, Document


# ---------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("year>=2020", ("year", ">=", ("2020",))),
        ("  year  <  2020 ", ("year", "<", ("2020",))),
        ("lang=en", ("lang", "=", ("en",))),
        ("lang==en", ("lang", "=", ("en",))),
        ("lang != en", ("lang", "!=", ("en",))),
        ("score<=0.5", ("score", "<=", ("0.5",))),
        ("score>-1e3", ("score", ">", ("-1e3",))),
        ("title='a, b = c'", ("title", "=", ("a, b = c",))),
        ('title="it\'s"', ("title", "=", ("it's",))),
        ("lang in en,fr", ("lang", "in", ("en", "fr"))),
        ("lang in (en, fr , 'pt br')", ("lang", "in", ("en", "fr", "pt br"))),
        ('lang IN ("a,b")', ("lang", "in", ("a,b",))),
        ("pub.date>=2024-01-01", ("pub.date", ">=", ("2024-01-01",))),
    ],
)
def test_parse_condition(expression: str, expected: tuple[str, str, tuple[str, ...]]) -> None:
    assert parse_condition(expression) == Condition(*expected)


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("year", "expected FIELD OP VALUE"),
        ("year>=", "no value after the operator"),
        ("year =< 3", "starts with an operator"),
        ("2020<year", "expected FIELD OP VALUE"),
        ("lang='en", "unbalanced quotes"),
        ("lang in ", "expected FIELD OP VALUE|at least one value"),
        ("lang in a,,b", "empty or badly quoted"),
        ("lang in a,'b", "empty or badly quoted|cannot read"),
        ("lang ~ en", "expected FIELD OP VALUE"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_condition(expression)


def test_parse_filter_accepts_one_several_or_none() -> None:
    assert parse_filter(None) == Filter() and not parse_filter([])
    assert parse_filter("a=1") == parse_filter(["a=1"]) == parse_filter(parse_filter("a=1"))
    assert str(parse_filter(["year>=2020", "lang in en,'pt br'"])) == 'year>=2020 AND lang in en,"pt br"'
    with pytest.raises(ConfigError, match="a string or a list of strings"):
        parse_filter([3])  # type: ignore[list-item]


VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\"'"), min_size=1, max_size=8)


@given(
    field=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,6}", fullmatch=True), op=st.sampled_from(["=", "!=", "<", ">="])
)
def test_a_condition_prints_as_an_expression_that_parses_back(field: str, op: str) -> None:
    for values in (("en",), ("a b, c",), ("x=y",)):
        condition = Condition(field, op, values)
        assert parse_condition(str(condition)) == condition
    listed = Condition(field, "in", ("a", "b c", "d,e"))
    assert parse_condition(str(listed)) == listed


@given(value=VALUES)
def test_any_quoted_value_parses_back(value: str) -> None:
    if value.strip() == value and value:
        assert parse_condition(str(Condition("f", "=", (value,)))).values == (value,)


# ---------------------------------------------------------------------- the column store against an oracle
def _oracle(metadata: dict[str, Any] | None, condition: Condition, kind: str) -> bool:
    """What a condition means, written directly on one document's metadata."""
    value = (metadata or {}).get(condition.field)
    if value is None:
        return False
    if kind == "number":
        have: Any = float(value)
        wanted: list[Any] = [float(item) for item in condition.values]
    else:
        have = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        wanted = list(condition.values)
    if condition.op == "in":
        return have in wanted
    ops = {
        "=": operator.eq,
        "!=": operator.ne,
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }
    return bool(ops[condition.op](have, wanted[0]))


METADATA = st.fixed_dictionaries(
    {},
    optional={
        "year": st.one_of(st.integers(1990, 2030), st.sampled_from(["2001", " 2010 ", "1999.5"])),
        "lang": st.one_of(st.sampled_from([*LANGS, "pt br", "EN", ""]), st.integers(0, 3), st.booleans()),
    },
)
CONDITIONS = st.one_of(
    st.builds(
        Condition,
        st.just("year"),
        st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
        st.tuples(st.sampled_from(["1999.5", "2001", "2010", "2020", "-5", "1e9"])),
    ),
    st.builds(
        Condition, st.just("year"), st.just("in"), st.lists(st.sampled_from(["2001", "2010.0"]), min_size=1).map(tuple)
    ),
    st.builds(
        Condition,
        st.just("lang"),
        st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
        st.tuples(st.sampled_from([*LANGS, "pt br", "EN", "", "true", "1", "zz"])),
    ),
    st.builds(
        Condition,
        st.just("lang"),
        st.just("in"),
        st.lists(st.sampled_from([*LANGS, "2", "false"]), min_size=1).map(tuple),
    ),
)
TYPES = {"year": "number", "lang": "keyword"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=st.lists(METADATA, min_size=1, max_size=12), conditions=st.lists(CONDITIONS, max_size=3))
def test_masks_equal_the_oracle(
    metadata: list[dict[str, Any]], conditions: list[Condition], tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = [Document(f"d{i}", "", metadata=meta or None) for i, meta in enumerate(metadata)]
    folder = tmp_path_factory.mktemp("columns")
    columns = FilterColumns.build(docs, folder, FilterConfig(["year:number", "lang"]), [doc.doc_id for doc in docs])
    mask = columns.mask(Filter(tuple(conditions)))
    expected = [all(_oracle(doc.metadata, c, TYPES[c.field]) for c in conditions) for doc in docs]
    assert mask.tolist() == expected
    assert columns.verify() == []


@pytest.mark.parametrize(
    ("value", "match"),
    [([2020], "not a number"), ({"y": 1}, "not a number"), (True, "not a number"), ("soon", "not a number")],
)
def test_a_number_field_refuses_what_is_not_a_number(tmp_path: Path, value: Any, match: str) -> None:
    docs = [Document("ok", "", metadata={"year": 1}), Document("bad", "", metadata={"year": value})]
    with pytest.raises(DataError, match=f"document 'bad': filterable field 'year' is .* {match}"):
        FilterColumns.build(docs, tmp_path, FilterConfig(["year:number"]), ["ok", "bad"])


def test_a_keyword_field_refuses_lists(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a string, number or boolean"):
        FilterColumns.build([Document("a", "", metadata={"tag": ["x"]})], tmp_path, FilterConfig(["tag"]), ["a"])


def test_filter_config_checks_names_and_types() -> None:
    assert FilterConfig(("a", "b:number")) == FilterConfig(["a:keyword", "b:number"])
    for fields, match in (
        (["a:date"], "unknown type 'date'"),
        (["a", "a:number"], "declared twice"),
        (["year>"], "names are letters"),
        ("year", "a list of"),
    ):
        with pytest.raises(ConfigError, match=match):
            FilterConfig(fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- filtered searches
QUERIES = [f"about {word}" for word in WORDS[:12]] + ["notes on zephyr and apple"]
FILTERS = st.lists(CONDITIONS, min_size=1, max_size=2).map(lambda cs: Filter(tuple(cs)))


def _matching(index: Index, spec: Filter) -> set[str]:
    return {
        doc.doc_id
        for doc in index.iter_documents()
        if all(_oracle(doc.metadata, c, TYPES[c.field]) for c in spec.conditions)
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=FILTERS, k=st.integers(1, 25), mode=st.sampled_from(["bm25", "dense", "hybrid", "cascade"]))
def test_a_filtered_search_never_returns_a_filtered_out_document(
    filtered_index: Index, spec: Filter, k: int, mode: str
) -> None:
    allowed = _matching(filtered_index, spec)
    results = Searcher(filtered_index, mode=mode).search_batch(QUERIES, k, filter=spec)
    for query, hits in zip(QUERIES, results, strict=True):
        assert {hit.doc_id for hit in hits} <= allowed, (mode, spec)
        assert len(hits) <= k
        if mode == "dense":  # every allowed document is a dense candidate (exact FAISS Flat): k hits when k match
            assert len(hits) == min(k, len(allowed)), (query, spec)
        if mode == "bm25":  # the allowed documents that share a term with the query
            bm25 = filtered_index.bm25
            assert bm25 is not None
            sharing = {hit.doc_id for hit in bm25.search(query, filtered_index.num_docs)} & allowed
            assert len(hits) == min(k, len(sharing)), (query, spec)


def test_filtered_results_are_the_unfiltered_ranking_restricted(filtered_index: Index) -> None:
    """Exact, not approximate: the filtered top k is the first k of the full ranking's allowed documents."""
    spec = "lang in en,de"
    allowed = _matching(filtered_index, parse_filter(spec))
    n = filtered_index.num_docs
    for mode in ("bm25", "dense"):
        searcher = Searcher(filtered_index, mode=mode)
        for full, filtered in zip(
            searcher.search_batch(QUERIES, n), searcher.search_batch(QUERIES, 5, filter=spec), strict=True
        ):
            assert filtered == [hit for hit in full if hit.doc_id in allowed][:5]
    explained = Searcher(filtered_index, mode="hybrid").explain(QUERIES[0], 5, filter=spec)
    assert explained and {hit.doc_id for hit in explained} <= allowed


@pytest.mark.parametrize("factory", ["HNSW8", "IVF4,Flat"])
def test_approximate_faiss_indexes_take_the_filter_too(tmp_path: Path, tiny_encoder_config: Any, factory: str) -> None:
    import dataclasses

    config = dataclasses.replace(tiny_encoder_config, faiss_factory=factory, nprobe=4)
    index = Index.build(
        synthetic_documents(60), tmp_path / "i", bm25=None, dense=config, filters=FilterConfig(["lang"])
    )
    allowed = _matching(index, parse_filter("lang=fr"))
    for hits in Searcher(index, mode="dense").search_batch(QUERIES, 10, filter="lang=fr"):
        assert hits and {hit.doc_id for hit in hits} <= allowed


def test_filter_errors_are_one_clear_line(filtered_index: Index, tmp_path: Path) -> None:
    searcher = Searcher(filtered_index, mode="bm25")
    for spec, match in (
        ("yeer>1", "unknown field 'yeer'; the index's filterable fields are: year, lang"),
        ("year>=twenty", "'twenty' is not a number"),
        ("year in 1,x", "'x' is not a number"),
        ("year", "expected FIELD OP VALUE"),
    ):
        with pytest.raises(ConfigError, match=match):
            searcher.search("apple", 3, filter=spec)
        with pytest.raises(ConfigError, match=match):
            searcher.filtered(spec)  # checked before any query runs
    plain = Index.build(synthetic_documents(3), tmp_path / "plain")
    with pytest.raises(ConfigError, match="has no filterable fields"):
        Searcher(plain).search("apple", 3, filter="year>1")
    assert Searcher(plain).search("about apple", 3, filter=[]) == Searcher(plain).search("about apple", 3)


def test_filter_columns_can_be_added_to_an_index(tmp_path: Path) -> None:
    index = Index.build(synthetic_documents(20), tmp_path / "i")
    assert index.filters is None and index.document("s0").metadata is not None  # metadata kept in the doc store
    added = index.add(filters=FilterConfig(["year:number"]))
    assert added.allowed_rows("year<2005") is not None
    expected = [bool(doc.metadata and doc.metadata.get("year", 9999) < 2005) for doc in added.iter_documents()]
    assert added.allowed_rows("year<2005").tolist() == expected  # type: ignore[union-attr]
    added.verify()


def test_mask_of_an_empty_filter_is_everything(filtered_index: Index) -> None:
    columns = filtered_index.filters
    assert columns is not None
    assert columns.mask(None).all() and filtered_index.allowed_rows(None) is None
    assert np.array_equal(columns.mask("lang in en,fr,de"), columns.mask("lang>=de") & columns.mask("lang<=fr"))
