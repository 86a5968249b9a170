"""Every file format searchkit reads or writes: BEIR folders, JSONL and TSV corpora and queries, TREC qrels
and runs (all optionally gzip'd), and ir-datasets ids (``irds:beir/scifact/test``).

A *source* is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), one file
(``.jsonl``, ``.tsv``, either gzip'd; other names are sniffed: a first line starting with ``{`` is JSONL)
or an ``irds:`` id. LF or CRLF line ends, a UTF-8 BOM and blank lines are all fine. Ids are always
stripped strings (JSON ``7`` is ``"7"``, ``"007"`` stays ``"007"``); titles default to ``""``; a null text
is ``""``. Bad data raises a DataError naming the file and its 1-based line. A corpus is streamed.

Ids (documents and queries) are single printable tokens: an id with whitespace of any kind (space, tab, newline,
``\u2028``, ...) or a control character is refused where it is read, with the file and line, because TREC runs,
qrels and ``docids.txt`` are whitespace- or line-separated and such an id would silently shift their columns or rows.
Everything else is kept verbatim, never escaped or rewritten: ``../x``, ``a/b``, quotes, non-ASCII, 10 KB ids.
Ids are never used as file names, and the doc store holds them JSON-encoded, so they cannot reach outside a file.

Readers never guess. A first line is a header only when the whole line is one: a TSV corpus or queries file's
first row is skipped when every column is a known name for its place (``_id``/``id``/``docid``/``qid``...,
``title``/``headline``, ``text``/``body``/``contents``/``query``...: ``docid<TAB>text``) and names the columns
when it holds the ``id_field`` and ``text_field`` and only other column names (``_id<TAB>text<TAB>year``); any
other first row is data, so a document whose id is ``id`` is kept. A qrels file's first line is a header only when
it is exactly one (``query-id corpus-id score``, ``qid Q0 docid rel``, ...); a first line such as
``1 13 relevant`` is an error (the grade is not an integer), never a skipped header. An id given twice is an error
naming the file and both lines: a document in a corpus, a query in a queries file, a document in one query's hits
of a run, a pair judged twice with two grades in qrels (the same judgment repeated is kept once). A JSON number
longer than Python's int-string limit (4,300 digits), a non-finite number as a text or title, a lone surrogate
(``"\\ud800"``, half a UTF-16 pair that UTF-8 cannot store) in any field, and a path that is a symlink loop are
each one line naming the file (and the line and field where there is one), never a traceback.

>>> docs = list(read_corpus("tests/data/tiny"))
>>> len(docs), docs[6].doc_id
(8, '007')
>>> sorted(read_qrels("tests/data/tiny", "test")["q1"].items())
[('d1', 2), ('d5', 1)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from searchkit.formats.files import Source, beir_file, corpus_path, existing, is_irds, iter_lines
from searchkit.formats.records import (
    Records,
    get_id,
    get_text,
    id_problem,
    irds_records,
    nested_surrogate,
    read_records,
)
from searchkit.formats.trec import read_qrels
from searchkit.types import ConfigError, DataError, Document, Query


def read_corpus(
    source: Source,
    *,
    id_field: str = "_id",
    title_field: str | None = "title",
    text_field: str = "text",
    metadata_fields: Sequence[str] = (),
) -> Iterator[Document]:
    """Stream the documents of a BEIR folder, a JSONL/TSV file (gzip'd or not) or an ``irds:`` id.

    JSONL lines are objects with ``id_field``, ``text_field`` and optionally ``title_field`` (None: no title).
    TSV rows are ``id<TAB>text`` or ``id<TAB>title<TAB>text``, or named by a first line that names ``id_field``
    and ``text_field`` (see "Readers never guess" for what a header is). ir-datasets documents give ``doc_id`` and
    their ``text_field``/``title_field`` attributes. The source is checked at once, the documents read as the
    iterator is consumed; a corpus without documents raises a DataError when it ends, and so does an id given
    twice, naming both lines, as soon as the second is read (the rest of the file is scanned to count the others).

    A document's ``metadata`` is BEIR's ``metadata`` object (when it is a non-empty JSON object) plus the
    ``metadata_fields`` columns the record has (JSONL keys, TSV header columns, ir-datasets attributes); None when
    it has neither.

    >>> docs = read_corpus("tests/data/tiny")
    >>> next(docs)
    Document(doc_id='d1', text='Cats chase mice. Dogs chase cats around the garden.', title='Cats and dogs')
    """
    if is_irds(source):
        name = str(source)

        def records_of() -> Records:
            return irds_records(name, "docs", text_field, "body")

        return _documents(source, records_of(), records_of, "doc_id", title_field, text_field, metadata_fields)
    path = corpus_path(source)
    assert path is not None
    positional = {2: (id_field, text_field), 3: (id_field, title_field or "title", text_field)}

    def file_records() -> Records:
        return read_records(path, positional, id_field)

    return _documents(path, file_records(), file_records, id_field, title_field, text_field, metadata_fields)


def _documents(
    where: Source,
    records: Records,
    records_of: Callable[[], Records],
    id_field: str,
    title_field: str | None,
    text_field: str,
    metadata_fields: Sequence[str] = (),
) -> Iterator[Document]:
    """Documents from ``records``; ``records_of`` reads them again from the start (for a duplicate's first line)."""
    seen: set[str] = set()
    for number, record in records:
        doc_id = get_id(record, id_field, "document", where, number)
        if doc_id in seen:
            raise _duplicate_document(where, records_of, records, id_field, seen, doc_id, number)
        seen.add(doc_id)
        text = get_text(record, text_field, where, number)
        title = get_text(record, title_field, where, number, required=False) if title_field else ""
        yield Document(doc_id, text, title, _metadata(record, metadata_fields, where, number))
    if not seen:
        raise DataError(f"no documents found in {where}", where)


def _duplicate_document(
    where: Source,
    records_of: Callable[[], Records],
    rest: Records,
    id_field: str,
    seen: set[str],
    doc_id: str,
    number: int,
) -> DataError:
    """The error for ``doc_id`` given again on line ``number``: both lines, and how many ids are given twice in
    all (the rest of the records scanned for ids only, up to the first record that is not valid)."""
    duplicates = [doc_id]
    try:
        for line, record in rest:
            again = get_id(record, id_field, "document", where, line)
            if again in seen:
                duplicates.append(again)
            seen.add(again)
    except DataError:
        pass  # reported once the duplicates are fixed
    first = next(line for line, record in records_of() if get_id(record, id_field, "", where, line) == doc_id)
    unit = "records" if is_irds(where) else "lines"
    message = f"duplicate document id {doc_id[:80]!r}: {unit} {first} and {number}"
    return DataError(f"{message}; {duplicate_summary(duplicates, 'document')}", where, number)


def duplicate_summary(duplicates: Sequence[str], what: str) -> str:
    """The end of a duplicate-id error: how many ids were given again (when more than one) and what to do.

    >>> duplicate_summary(["x", "y", "x"], "document")
    '3 duplicate document ids (2 distinct), e.g. x, y; make every document id unique'
    """
    advice = f"make every {what} id unique"
    if len(duplicates) < 2:
        return advice
    unique = list(dict.fromkeys(duplicates))
    shown = ", ".join(unique[:5]) + (" ..." if len(unique) > 5 else "")
    return f"{len(duplicates)} duplicate {what} ids ({len(unique)} distinct), e.g. {shown}; {advice}"


def read_ids(source: Source) -> list[str]:
    """Document ids, one a line (``index update --delete``); blank lines are skipped, each id is checked.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ids.txt"
    >>> _ = path.write_text("d1\\r\\n\\n 007 \\n", encoding="utf-8")
    >>> read_ids(path)
    ['d1', '007']
    """
    path = existing(source, "expected a file of document ids, one a line")
    if path.is_dir():
        raise DataError("is a folder; expected a file of document ids, one a line", path)
    ids = []
    for number, line in iter_lines(path):
        doc_id = line.strip()
        problem = id_problem(doc_id)
        if problem:
            raise DataError(f"document id {doc_id[:80]!r} {problem}", path, number)
        ids.append(doc_id)
    return ids


def _metadata(record: dict[str, Any], fields: Sequence[str], path: Source, line: int) -> dict[str, Any] | None:
    """BEIR's ``metadata`` object (when a JSON object) plus the chosen extra columns; None when both are empty."""
    beir = record.get("metadata")
    merged = {**beir} if isinstance(beir, dict) else {}
    if merged and nested_surrogate(merged):
        raise DataError(f"field 'metadata' {nested_surrogate(merged)}", path, line)
    for name in fields:
        if name in record:
            problem = nested_surrogate(record[name])
            if problem:
                raise DataError(f"field {name!r} {problem}", path, line)
            merged[name] = record[name]
    return merged or None


def read_queries(
    source: Source, *, split: str | None = None, id_field: str = "_id", text_field: str = "text"
) -> list[Query]:
    """Read queries, in file order, from a BEIR folder, JSONL or TSV (``qid<TAB>text``) file or ``irds:`` id.

    With ``split``, a BEIR folder's queries are limited to those judged in ``qrels/<split>.tsv`` (its
    ``queries.jsonl`` holds every split's queries). An ``irds:`` id already names its split, so ``split`` is
    ignored there; for a single file it is a ConfigError. A query id given twice is a DataError naming both lines.

    >>> [q.query_id for q in read_queries("tests/data/tiny", split="test")]
    ['q1', 'q2', 'q3', 'q4']
    """
    where: Source = source
    if is_irds(source):
        records, id_field = irds_records(str(source), "queries", text_field, "title"), "query_id"
    else:
        path = existing(source)
        if path.is_file() and split is not None:
            raise ConfigError(f"split={split!r} applies to BEIR folders only, and {path} is a file")
        where = beir_file(path, "queries") if path.is_dir() else path
        records = read_records(where, {2: (id_field, text_field)}, id_field)
    queries: list[Query] = []
    lines: dict[str, int] = {}
    for number, record in records:
        query_id = get_id(record, id_field, "query", where, number)
        if query_id in lines:
            unit = "records" if is_irds(where) else "lines"
            message = f"duplicate query id {query_id[:80]!r}: {unit} {lines[query_id]} and {number}"
            raise DataError(f"{message}; make every query id unique", where, number)
        lines[query_id] = number
        queries.append(Query(query_id, get_text(record, text_field, where, number)))
    if split is not None and not is_irds(source):
        judged = read_qrels(source, split)
        queries = [query for query in queries if query.query_id in judged]
    if not queries:
        raise DataError(f"no queries found in {where}", where)
    return queries


def document_text(doc: Document) -> str:
    """The text that represents a document to BM25 and to encoders: its title and text, joined by a space.

    >>> document_text(Document("d1", "Cats chase mice.", "Cats"))
    'Cats Cats chase mice.'
    >>> document_text(Document("d2", "No title here."))
    'No title here.'
    """
    return " ".join(part for part in (doc.title, doc.text) if part)
