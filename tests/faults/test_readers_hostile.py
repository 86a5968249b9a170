"""Readers that never guess (issue 19, item 4): hostile inputs to the corpus, queries, qrels, run and id readers,
each refused with one line naming the file (and the line, and the field, where there is one), never a traceback,
and a data row never dropped as a header.

The cases, in the issue's order: a JSON number past Python's int-string limit, a symlink loop as a path, a TSV
whose first id is ``id``/``docid``/``qid``, a qrels file whose first line is ``1 13 relevant``, an id given twice
(both lines named), a lone surrogate (named by its field, not "metadata"). Each goes through the Python readers
and, for a few, the command line (rc 1, one line on stderr, nothing built).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from searchkit.formats import read_corpus, read_ids, read_qrels, read_queries, read_run
from searchkit.index import Index
from searchkit.index.build import describe_source
from searchkit.types import DataError, Document, Hit, Query

if TYPE_CHECKING:
    from .conftest import CLI

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"
LIMIT = sys.int_info.default_max_str_digits  # 4300
BIG = "1" * 5000
SURROGATE = "(half a UTF-16 pair; UTF-8 cannot store it)"
LOOP = "symlink loop (its links lead back to themselves, never to a file)"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The one-line message of the DataError ``call`` raises (an iterator it returns is consumed)."""
    with pytest.raises(DataError) as caught:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def _refused(cli: CLI, *args: str | Path) -> str:
    """Run the command line; it must exit 1 with one line on stderr (no traceback). Returns that line's message."""
    done = cli(*args)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert lines[0].isascii() and lines[0].isprintable()
    return lines[0].removeprefix("error: ")


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))  # hidden ones too: no lock, temp or building folder left behind


# ---------------------------------------------------------------------- 1. numbers past the int-string limit
@pytest.mark.parametrize(
    ("reader", "row"),
    [
        (read_corpus, {"_id": "__BIG__", "text": "x"}),
        (read_corpus, {"_id": "b", "text": "__BIG__"}),
        (read_corpus, {"_id": "b", "title": "__BIG__", "text": "x"}),
        (read_corpus, {"_id": "b", "text": "x", "metadata": {"n": "__BIG__"}}),
        (read_queries, {"_id": "__BIG__", "text": "x"}),
        (read_queries, {"_id": "q2", "text": "__BIG__"}),
    ],
    ids=["corpus id", "corpus text", "corpus title", "corpus metadata", "queries id", "queries text"],
)
def test_a_json_integer_past_the_limit_is_one_line_naming_file_line_and_column(
    reader: Callable[..., Any], row: dict[str, Any], tmp_path: Path
) -> None:
    line = json.dumps(row).replace('"__BIG__"', BIG)
    path = _write(tmp_path / "input.jsonl", '{"_id": "a", "text": "fine"}\n' + line + "\n")
    column = line.index(BIG) + 1
    expected = f"{path}:2: a number with 5000 digits at column {column}: {BIG[:20]}...; "
    assert _error(reader, path) == expected + f"numbers past {LIMIT} digits must be JSON strings"


def test_a_long_float_is_refused_like_an_integer_and_an_infinite_text_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": -' + BIG + ".5e3}\n")
    assert _error(read_corpus, path).startswith(f"{path}:1: a number with 5002 digits at column 22: -{BIG[:19]}...")
    path = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": 1e999}\n')
    assert _error(read_corpus, path) == f"{path}:2: field 'text' must be a string or a finite number, found inf"
    path = _write(tmp_path / "corpus.jsonl", '{"_id": 123, "text": 45}\n')  # short numbers stay as written
    assert list(read_corpus(path)) == [Document("123", "45")]


def test_a_qrels_grade_past_the_limit_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "qrels.tsv", f"q1\td1\t1\nq1\td2\t{BIG}\n")
    expected = f"{path}:2: relevance is a number with 5000 digits: {BIG[:20]}...; grades are small integers"
    assert _error(read_qrels, path) == expected


def test_cli_build_of_a_corpus_with_a_long_number_is_one_line_and_builds_nothing(tmp_path: Path, cli: CLI) -> None:
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": ' + BIG + ', "text": "x"}\n')
    message = _refused(cli, "index", "build", "--corpus", corpus, "-o", tmp_path / "idx")
    assert message == _error(read_corpus, corpus)
    assert message.startswith(f"{corpus}:1: a number with 5000 digits at column 9: ")
    assert _names(tmp_path) == ["corpus.jsonl"]


# ---------------------------------------------------------------------- 2. symlink loops (and dangling links)
@pytest.fixture
def loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (read_corpus, "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"),
        (read_queries, "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"),
        (read_qrels, "expected a BEIR folder, a qrels file or irds:<id>"),
        (read_run, "expected a TREC run file"),
        (read_ids, "expected a file of document ids, one a line"),
        (describe_source, "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"),
    ],
    ids=["corpus", "queries", "qrels", "run", "ids", "describe_source"],
)
def test_a_symlink_loop_is_one_line_naming_the_path(
    reader: Callable[..., Any], expected: str, loop: Path, tmp_path: Path
) -> None:
    assert _error(reader, loop) == f"{loop}: {LOOP}; {expected}"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    nowhere = repr(str(tmp_path / "nowhere"))
    assert _error(reader, dangling) == f"{dangling}: a symlink to {nowhere}, which does not exist; {expected}"


def test_a_beir_folder_whose_corpus_is_a_symlink_loop_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").symlink_to(folder / "corpus.jsonl")
    assert _error(read_corpus, folder).startswith(f"{folder / 'corpus.jsonl'}: {LOOP}; ")
    with pytest.raises(DataError, match="symlink loop"):
        Index.build(folder, tmp_path / "idx")
    assert _names(tmp_path) == ["beir"]


def test_cli_build_and_score_refuse_a_symlink_loop_with_one_line(loop: Path, tmp_path: Path, cli: CLI) -> None:
    message = _refused(cli, "index", "build", "--corpus", loop, "-o", tmp_path / "idx")
    assert message == f"{loop}: {LOOP}; expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"
    assert _names(tmp_path) == ["a", "b"]
    run = _write(tmp_path / "run.trec", "q1 Q0 d1 1 1.0 t\n")
    assert _refused(cli, "score", loop, run) == f"{loop}: {LOOP}; expected a BEIR folder, a qrels file or irds:<id>"
    assert _refused(cli, "score", TINY, loop) == f"{loop}: {LOOP}; expected a TREC run file"


# ---------------------------------------------------------------------- 3. a TSV's first id is never a header
@pytest.mark.parametrize("first", ["id", "docid", "qid", "_id", "ID", "doc_id"])
def test_a_tsv_corpus_keeps_a_first_document_whose_id_is_a_header_name(first: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.tsv", f"{first}\tthe first document\nd2\tthe second\n")
    assert list(read_corpus(path)) == [Document(first, "the first document"), Document("d2", "the second")]
    path = _write(tmp_path / "corpus.tsv", f"{first}\tA title\tthe first document\nd2\t\tthe second\n")
    assert list(read_corpus(path)) == [Document(first, "the first document", "A title"), Document("d2", "the second")]


@pytest.mark.parametrize("first", ["qid", "id", "query-id", "_id"])
def test_a_tsv_queries_file_keeps_a_first_query_whose_id_is_a_header_name(first: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "queries.tsv", f"{first}\twhat cats eat\nq2\tsolar power\n")
    assert read_queries(path) == [Query(first, "what cats eat"), Query("q2", "solar power")]


@pytest.mark.parametrize(
    "header",
    ["_id\ttitle\ttext", "docid\ttext", "id\ttext", "ID\tTitle\tBody", "docid\theadline\tbody", "pid\tpassage"],
)
def test_a_whole_header_row_is_still_a_header(header: str, tmp_path: Path) -> None:
    rows = "a\tT\tfirst\n" if header.count("\t") == 2 else "a\tfirst\n"
    expected = Document("a", "first", "T" if header.count("\t") == 2 else "")
    assert list(read_corpus(_write(tmp_path / "corpus.tsv", f"{header}\n{rows}"))) == [expected]


def test_a_whole_queries_header_is_skipped_and_a_header_that_names_columns_names_them(tmp_path: Path) -> None:
    for header in ("qid\ttext", "query-id\tquery", "_id\ttext"):
        queries = _write(tmp_path / "queries.tsv", f"{header}\nq1\tcats\n")
        assert read_queries(queries) == [Query("q1", "cats")]
    named = _write(tmp_path / "named.tsv", "year\t_id\ttext\n2020\ta\tfirst\n")
    assert list(read_corpus(named, metadata_fields=["year"])) == [Document("a", "first", metadata={"year": "2020"})]


def test_cli_build_keeps_the_document_whose_id_is_id(tmp_path: Path, cli: CLI) -> None:
    corpus = _write(tmp_path / "corpus.tsv", "id\tcats chase mice\nd2\tdogs chase cats\n")
    done = cli("index", "build", "--corpus", corpus, "-o", tmp_path / "idx")
    assert done.returncode == 0, done.stderr
    assert Index.open(tmp_path / "idx").docids == ["id", "d2"]


# ---------------------------------------------------------------------- 4. a qrels first line is data unless a header
@pytest.mark.parametrize("first", ["1 13 relevant", "1\t13\trelevant", "1 0 13 relevant", "q1 d1 yes"])
def test_a_qrels_first_line_with_a_word_for_a_grade_is_an_error_not_a_header(first: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "qrels.txt", f"{first}\n2 14 1\n" if first.count(" ") != 3 else f"{first}\n2 0 14 1\n")
    grade = first.split()[-1]
    hint = "nor is the line a known header such as 'query-id corpus-id score'"
    assert _error(read_qrels, path) == f"{path}:1: relevance must be an integer, found {grade!r}; {hint}"


@pytest.mark.parametrize(
    "header",
    ["query-id\tcorpus-id\tscore", "qid Q0 docid rel", "query_id corpus_id score", "QUERY-ID CORPUS-ID SCORE"],
)
def test_a_qrels_header_is_recognised_only_as_a_whole_line(header: str, tmp_path: Path) -> None:
    columns = len(header.split())
    row = "q1 0 d1 2" if columns == 4 else "q1 d1 2"
    assert read_qrels(_write(tmp_path / "qrels.txt", f"{header}\n{row}\n")) == {"q1": {"d1": 2}}
    assert read_qrels(_write(tmp_path / "qrels.txt", "1 13 1\n1 14 0\n")) == {"1": {"13": 1, "14": 0}}
    assert read_qrels(TINY)["q1"] == {"d1": 2, "d5": 1}  # BEIR's own header (CRLF)


def test_cli_score_refuses_a_qrels_file_whose_first_line_is_1_13_relevant(tmp_path: Path, cli: CLI) -> None:
    qrels = _write(tmp_path / "qrels.txt", "1 13 relevant\n2 14 1\n")
    run = _write(tmp_path / "run.trec", "1 Q0 13 1 2.0 t\n2 Q0 99 1 1.0 t\n")
    message = _refused(cli, "score", qrels, run, "-m", "P@1")
    assert message == _error(read_qrels, qrels)
    assert message.startswith(f"{qrels}:1: relevance must be an integer, found 'relevant'")


# ---------------------------------------------------------------------- 5. an id given twice names both lines
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n'),
        ("corpus.tsv", "a\tx\n\nb\ty\na\tz\n"),
        ("corpus.tsv", "_id\ttext\na\tx\n\nb\ty\na\tz\n"),
    ],
    ids=["jsonl", "tsv", "tsv with header"],
)
def test_a_duplicate_document_id_names_the_file_and_both_lines(name: str, content: str, tmp_path: Path) -> None:
    path = _write(tmp_path / name, content)
    first, again = (1, 4) if content.startswith("a") or content.startswith("{") else (2, 5)
    expected = f"{path}:{again}: duplicate document id 'a': lines {first} and {again}; make every document id unique"
    assert _error(read_corpus, path) == expected
    assert _error(Index.build, path, tmp_path / "idx") == expected
    assert _names(tmp_path) == [name]


def test_several_duplicate_document_ids_are_counted_in_the_same_line(tmp_path: Path) -> None:
    ids = ["a", "b", "a", "c", "b", "b", "d"]
    path = _write(tmp_path / "corpus.jsonl", "".join(json.dumps({"_id": i, "text": "t"}) + "\n" for i in ids))
    assert _error(read_corpus, path) == (
        f"{path}:3: duplicate document id 'a': lines 1 and 3; "
        "3 duplicate document ids (2 distinct), e.g. a, b; make every document id unique"
    )


def test_duplicate_documents_given_as_objects_name_both_positions(tmp_path: Path) -> None:
    docs = [Document("x", "one"), Document("y", "two"), Document("x", "three"), Document("y", "four")]
    assert _error(Index.build, docs, tmp_path / "idx") == (
        "duplicate document id 'x': documents 1 and 3; "
        "2 duplicate document ids (2 distinct), e.g. x, y; make every document id unique"
    )
    assert _names(tmp_path) == []


def test_an_update_from_a_file_with_a_duplicate_id_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    index = Index.build(TINY, tmp_path / "idx")
    before = (index.path / "manifest.json").read_bytes()
    added = _write(tmp_path / "add.jsonl", '{"_id": "n1", "text": "new"}\n{"_id": "n1", "text": "again"}\n')
    expected = f"{added}:2: duplicate document id 'n1': lines 1 and 2; make every document id unique"
    assert _error(index.update, add=added) == expected
    assert (index.path / "manifest.json").read_bytes() == before
    assert Index.open(index.path).num_docs == 8


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("queries.jsonl", '{"_id": "q1", "text": "x"}\n{"_id": "q2", "text": "y"}\n{"_id": "q1", "text": "z"}\n'),
        ("queries.tsv", "q1\tx\nq2\ty\nq1\tz\n"),
    ],
    ids=["jsonl", "tsv"],
)
def test_a_duplicate_query_id_names_the_file_and_both_lines(name: str, content: str, tmp_path: Path) -> None:
    path = _write(tmp_path / name, content)
    expected = f"{path}:3: duplicate query id 'q1': lines 1 and 3; make every query id unique"
    assert _error(read_queries, path) == expected


def test_a_pair_judged_twice_names_both_lines_and_a_repeated_judgment_is_kept_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq1\td1\t2\n")
    expected = f"{path}:4: document 'd1' judged twice for query 'q1': 1 on line 2 and 2 on line 4"
    assert _error(read_qrels, path) == expected
    path = _write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d1 1\n")
    assert read_qrels(path) == {"q1": {"d1": 1}}


def test_a_document_twice_in_a_run_names_both_lines(tmp_path: Path, cli: CLI) -> None:
    path = _write(tmp_path / "run.trec", "q1 Q0 d1 1 2.0 t\nq2 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq1 Q0 d1 3 0.5 t\n")
    expected = f"{path}:4: document 'd1' appears twice for query 'q1': lines 1 and 4"
    assert _error(read_run, path) == expected
    assert _refused(cli, "score", TINY, path) == expected
    assert read_run(_write(tmp_path / "ok.trec", "q1 Q0 d1 1 2.0 t\nq2 Q0 d1 1 2.0 t\n")) == {
        "q1": [Hit("d1", 2.0)],
        "q2": [Hit("d1", 2.0)],
    }


def test_cli_build_of_a_corpus_with_a_duplicate_id_is_one_line_and_builds_nothing(tmp_path: Path, cli: CLI) -> None:
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    message = _refused(cli, "index", "build", "--corpus", corpus, "-o", tmp_path / "idx")
    assert message == f"{corpus}:2: duplicate document id 'a': lines 1 and 2; make every document id unique"
    assert _names(tmp_path) == ["corpus.jsonl"]


# ---------------------------------------------------------------------- 6. a lone surrogate names its field
LONE_SURROGATES: dict[str, tuple[Callable[..., Any], str, str]] = {  # JSON line -> what the message says
    "corpus id": (read_corpus, '{"_id": "a\\udc00", "text": "x"}', "document id 'a\\udc00' holds a lone surrogate"),
    "corpus title": (
        read_corpus,
        '{"_id": "a", "title": "\\ud800", "text": "x"}',
        "field 'title' holds a lone surrogate",
    ),
    "corpus text": (read_corpus, '{"_id": "a", "text": "bad \\ud800 here"}', "field 'text' holds a lone surrogate"),
    "corpus metadata": (
        read_corpus,
        '{"_id": "a", "text": "x", "metadata": {"k": ["\\udfff"]}}',
        "field 'metadata' holds a lone surrogate",
    ),
    "queries id": (read_queries, '{"_id": "q\\ud800", "text": "x"}', "query id 'q\\ud800' holds a lone surrogate"),
    "queries text": (read_queries, '{"_id": "q1", "text": "\\udbff!"}', "field 'text' holds a lone surrogate"),
}
WHERE = {  # the surrogate and its 1-based character in the field
    "corpus id": "'\\udc00' at character 2",
    "corpus title": "'\\ud800' at character 1",
    "corpus text": "'\\ud800' at character 5",
    "corpus metadata": "'\\udfff' at character 1",
    "queries id": "'\\ud800' at character 2",
    "queries text": "'\\udbff' at character 1",
}


@pytest.mark.parametrize("case", list(LONE_SURROGATES))
def test_a_lone_surrogate_names_the_file_line_and_field(case: str, tmp_path: Path) -> None:
    reader, line, what = LONE_SURROGATES[case]
    path = _write(tmp_path / "input.jsonl", '{"_id": "ok", "text": "fine \\ud83d\\ude00"}\n' + line + "\n")
    assert _error(reader, path) == f"{path}:2: {what} {WHERE[case]} {SURROGATE}"


def test_a_lone_surrogate_in_a_document_object_names_its_field_not_metadata(tmp_path: Path) -> None:
    message = _error(Index.build, [Document("a", "fine"), Document("b", "x\ud800", "t")], tmp_path / "idx")
    assert message == f"document 'b': its text holds a lone surrogate '\\ud800' at character 2 {SURROGATE}"
    assert _names(tmp_path) == []


def test_cli_build_names_the_field_that_holds_a_lone_surrogate(tmp_path: Path, cli: CLI) -> None:
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "title": "ok", "text": "bad \\ud800 here"}\n')
    message = _refused(cli, "index", "build", "--corpus", corpus, "-o", tmp_path / "idx")
    assert message == f"{corpus}:1: field 'text' holds a lone surrogate '\\ud800' at character 5 {SURROGATE}"
    assert _names(tmp_path) == ["corpus.jsonl"]
