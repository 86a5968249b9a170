"""The data model: tie order and error messages."""

from __future__ import annotations

from searchkit.types import DataError, Hit, sort_hits


def test_sort_hits_breaks_ties_by_doc_id_descending() -> None:
    hits = [Hit("a", 1.0), Hit("c", 2.0), Hit("b", 1.0), Hit("z", 0.5)]
    assert [hit.doc_id for hit in sort_hits(hits)] == ["c", "b", "a", "z"]


def test_data_error_names_path_and_line() -> None:
    assert str(DataError("bad", path="x.tsv", line=7)) == "x.tsv:7: bad"
    assert str(DataError("bad", path="x.tsv")) == "x.tsv: bad"
    assert str(DataError("bad")) == "bad"
    assert DataError("bad", path="x.tsv", line=7).line == 7
