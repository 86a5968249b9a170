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

import errno
import gzip
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from searchkit.types import ConfigError, DataError, Document, Hit, Qrels, Query, Run, sort_hits

Source = str | Path
_Records = Iterator[tuple[int, dict[str, Any]]]  # (line number, fields) of each record of a file
IRDS_PREFIX = "irds:"
_EXPECTED = "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"
_GZIP_MAGIC = b"\x1f\x8b"
# Header names by column, compared case-insensitively: a first row is a header only when every column is one.
_DOC_ID_HEADERS = frozenset({"_id", "id", "docid", "doc_id", "doc-id", "docno", "corpus-id", "corpus_id", "pid", "did"})
_QUERY_ID_HEADERS = frozenset({"qid", "query_id", "query-id", "queryid", "topic", "topic_id", "topic-id"})
_TSV_HEADERS = (  # (first column, middle column of three, last column) of a TSV corpus or queries file
    _DOC_ID_HEADERS | _QUERY_ID_HEADERS,
    frozenset({"title", "headline"}),
    frozenset({"text", "body", "contents", "content", "passage", "document", "abstract", "query", "question"}),
)
_QRELS_DOC_HEADERS = _DOC_ID_HEADERS | {"doc", "document", "document-id", "document_id"}
_GRADE_HEADERS = frozenset({"score", "relevance", "rel", "label", "grade", "judgment", "judgement"})
_QRELS_HEADERS = {  # columns of a qrels header line: 3 (BEIR) or 4 (TREC)
    3: (_QUERY_ID_HEADERS | {"query"}, _QRELS_DOC_HEADERS, _GRADE_HEADERS),
    4: (_QUERY_ID_HEADERS | {"query"}, frozenset({"q0", "iteration", "iter"}), _QRELS_DOC_HEADERS, _GRADE_HEADERS),
}
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # an extra column of a header that names its columns
_MAX_DIGITS = sys.int_info.default_max_str_digits  # Python's int-string limit (4,300 digits)
_GRADE = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?inf(inity)?", re.IGNORECASE)
_QRELS_COLUMNS = {3: "3 (query-id, corpus-id, score)", 4: "4 (TREC: query-id, iteration, doc-id, relevance)"}


def is_irds(source: Source) -> bool:
    """Whether ``source`` names an ir-datasets dataset rather than a path.

    >>> is_irds("irds:beir/scifact/test"), is_irds("tests/data/tiny")
    (True, False)
    """
    return isinstance(source, str) and source.startswith(IRDS_PREFIX)


def _existing(source: Source, expected: str = _EXPECTED) -> Path:
    """``source`` as a Path that exists, else a DataError naming it: missing, a symlink loop, a dangling link."""
    path = Path(source)
    try:
        path.stat()
    except ValueError:  # an embedded NUL byte
        raise DataError(f"not a valid path; {expected}", repr(str(source))[1:-1]) from None
    except OSError as err:
        raise DataError(f"{_path_problem(path, err)}; {expected}", source) from None
    return path


def _path_problem(path: Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink loop (its links lead back to themselves, never to a file)"
    if path.is_symlink():
        return f"a symlink to {os.readlink(path)!r}, which does not exist"
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file or directory"
    return f"cannot be read ({err.strerror})"


def resolved(source: Source) -> Path:
    """``source`` as an absolute path with its symlinks resolved; a DataError naming it when it cannot be.

    >>> resolved("tests/data/tiny").is_absolute()
    True
    """
    path = _existing(source)
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: Python < 3.13's symlink loop, in a race
        raise DataError(
            "symlink loop" if isinstance(err, RuntimeError) else f"cannot resolve ({err})", source
        ) from None


def _beir_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
        if (folder / name).is_symlink():
            _existing(folder / name)  # a loop or a dangling link: say so rather than "no corpus.jsonl"
    found = ", ".join(sorted(child.name for child in folder.iterdir())) or "nothing"
    raise DataError(f"not a BEIR folder: no {stem}.jsonl (found: {found}); {_EXPECTED}", folder)


def corpus_path(source: Source) -> Path | None:
    """The file a corpus source refers to (a BEIR folder's ``corpus.jsonl``), or None for an ``irds:`` id.

    >>> corpus_path("tests/data/tiny").as_posix()
    'tests/data/tiny/corpus.jsonl'
    >>> corpus_path("irds:cranfield") is None
    True
    """
    if is_irds(source):
        return None
    path = _existing(source)
    return _beir_file(path, "corpus") if path.is_dir() else path


def source_sha256(source: Source) -> str | None:
    """SHA-256 (hex) of the corpus file's bytes as stored (compressed if gzip'd); None for an ``irds:`` id.

    >>> len(source_sha256("tests/data/tiny"))
    64
    """
    path = corpus_path(source)
    return None if path is None else sha256_file(path)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON via a temp file + ``os.replace``: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_npy_atomic(path: Path, array: Any) -> None:
    """Save ``array`` as ``.npy`` (never pickled) via a synced temp file + ``os.replace``."""

    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def gather_ragged(values: Any, offsets: Any, rows: Any) -> tuple[Any, Any]:
    """Rows ``rows`` of a ragged array stored as ``values`` + ``offsets`` (row i is ``values[offsets[i]:offsets[i +
    1]]``), as a new (values, int64 offsets) pair; how stored token ids and the doc store keep some rows.

    >>> import numpy as np
    >>> values, offsets = gather_ragged(np.array([1, 2, 3, 4]), np.array([0, 1, 3, 4]), np.array([1, 2]))
    >>> values.tolist(), offsets.tolist()
    ([2, 3, 4], [0, 2, 3])
    """

    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    kept = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=kept[1:])
    positions = np.repeat(starts - kept[:-1], lengths) + np.arange(int(kept[-1]), dtype=np.int64)
    return np.asarray(values)[positions], kept


def json_checksum(payload: dict[str, Any]) -> str:
    """sha256 of ``payload``'s canonical JSON (sorted keys, ASCII), its own ``checksum`` key left out: a manifest
    or model card that records it is refused when edited or damaged.

    >>> json_checksum({"b": 1, "a": [1.5]}) == json_checksum({"a": [1.5], "b": 1, "checksum": "x"})
    True
    """
    body = {key: value for key, value in payload.items() if key != "checksum"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".bin")
"""Top-level files of a model folder a loader reads (config, weights, tokenizer), recorded in its model card."""


def model_files(folder: Source, skip: str) -> dict[str, dict[str, Any]]:
    """sha256 and size of a model folder's top-level model files (see MODEL_FILE_SUFFIXES), ``skip`` left out.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}")
    >>> model_files(folder, "searchkit.json")["config.json"]["size"]
    2
    """
    return {
        path.name: {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(Path(folder).iterdir())
        if path.is_file() and path.suffix in MODEL_FILE_SUFFIXES and path.name != skip
    }


def check_model_files(folder: Source, recorded: Any, card: Source) -> None:
    """DataError naming ``card`` unless every file it records is in ``folder`` with the same size and sha256."""
    if not isinstance(recorded, dict) or not all(
        isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..") and isinstance(entry, dict)
        for name, entry in recorded.items()
    ):
        raise DataError("invalid model card: 'files' must map file names to their sha256 and size", card)
    for name, entry in recorded.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(f"model file {name} is missing; restore the model folder or retrain", card)
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            raise DataError(f"model file {name} differs from the one this card records (damaged?); retrain", card)


def sha256_file(path: Source) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks (never the whole file in memory).

    >>> sha256_file("tests/data/tiny/queries.jsonl") == source_sha256("tests/data/tiny/queries.jsonl")
    True
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as handle:
        magic = handle.read(2)
    return cast(IO[bytes], gzip.open(path, "rb") if magic == _GZIP_MAGIC else path.open("rb"))


def iter_lines(path: Source) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every non-blank line of a text file, gzip'd or not.

    Line numbers are 1-based and count blank lines; the line ending (LF or CRLF) and a leading UTF-8 BOM are
    removed. Bytes that are not UTF-8 raise a DataError naming the line.

    >>> next(iter_lines("tests/data/tiny/qrels/test.tsv"))
    (1, 'query-id\\tcorpus-id\\tscore')
    """
    path = _existing(path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)
    try:
        handle = open_binary(path)
    except OSError as err:
        raise DataError(_path_problem(path, err), path) from None
    try:
        with handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    where = f"byte 0x{raw[err.start]:02x} at position {err.start + 1}"
                    raise DataError(f"not valid UTF-8: {where}", path, number) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"corrupt gzip file: {err}", path) from None


def _is_tsv(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson", ".tsv", ".txt")):
        return name.endswith((".tsv", ".txt"))
    first = next(iter_lines(path), None)
    return first is None or not first[1].lstrip().startswith("{")


class _LongNumber(ValueError):
    """A JSON number longer than Python's int-string limit (raised inside ``json.loads``, caught by the reader)."""

    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _digits(literal: str) -> int:
    return sum(char.isdigit() for char in literal)


def _json_int(literal: str) -> int:
    if len(literal) > _MAX_DIGITS and _digits(literal) > _MAX_DIGITS:
        raise _LongNumber(literal)
    return int(literal)


def _json_float(literal: str) -> float:
    if len(literal) > _MAX_DIGITS and _digits(literal) > _MAX_DIGITS:
        raise _LongNumber(literal)
    return float(literal)


def _json_records(path: Path) -> _Records:
    for number, line in iter_lines(path):
        try:
            record = json.loads(line, parse_int=_json_int, parse_float=_json_float)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err.msg} at column {err.colno}", path, number) from None
        except _LongNumber as err:
            digits, column = _digits(err.literal), line.find(err.literal) + 1
            message = f"a number with {digits} digits at column {column}: {err.literal[:20]}...; "
            raise DataError(message + f"numbers past {_MAX_DIGITS} digits must be JSON strings", path, number) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, found {line[:60]!r}", path, number)
        yield number, record


def _tsv_header(
    parts: list[str], positional: dict[int, tuple[str, ...]], id_field: str, text_field: str
) -> list[str] | None:
    """What a first TSV row is: column names (``[id_field, ..., text_field, other names]``), ``[]`` for a header
    of known names read by position (``docid<TAB>text``), or None when it is data (see "Readers never guess")."""
    fields = {name for names in positional.values() for name in names}
    if (
        id_field in parts
        and text_field in parts
        and len(set(parts)) == len(parts)
        and all(part in fields or _COLUMN_NAME.fullmatch(part) for part in parts)
    ):
        return parts
    names = positional.get(len(parts))
    if names is None:
        return None
    first, middle, last = _TSV_HEADERS
    known = [first, *[middle] * (len(parts) - 2), last]
    if all(part == name or part.lower() in words for part, name, words in zip(parts, names, known, strict=True)):
        return []
    return None


def _tsv_records(
    path: Path, positional: dict[int, tuple[str, ...]], id_field: str, text_field: str | None = None
) -> _Records:
    """Rows as dicts, by position (``positional`` maps a column count to names) or named by a first row that is a
    header naming ``id_field`` and ``text_field`` (default: the last positional name); a first row of known header
    names is skipped. Any other first row is data: see "Readers never guess" above."""
    text_field = text_field or next(iter(positional.values()))[-1]
    names: list[str] | None = None
    for number, line in iter_lines(path):
        parts = [part.strip() for part in line.split("\t")]
        if names is None:
            header = _tsv_header(parts, positional, id_field, text_field)
            names = header or []
            if header is not None:
                continue
        fields = names or positional.get(len(parts), ())
        if len(fields) != len(parts):
            options = {len(names): tuple(names)} if names else positional
            wanted = " or ".join(f"{n} ({', '.join(cols)})" for n, cols in options.items())
            raise DataError(f"expected {wanted} tab-separated columns, found {len(parts)}", path, number)
        yield number, dict(zip(fields, parts, strict=True))


def read_records(
    path: Path, positional: dict[int, tuple[str, ...]], id_field: str, text_field: str | None = None
) -> _Records:
    """``(line, fields)`` of each record of a JSONL or TSV file (TSV: see :func:`_tsv_records`)."""
    return _tsv_records(path, positional, id_field, text_field) if _is_tsv(path) else _json_records(path)


def _missing(record: dict[str, Any], what: str, path: Source, line: int) -> DataError:
    fields = ", ".join(repr(str(name))[1:-1] for name in record) or "none"  # escaped: keys may hold newlines
    return DataError(f"missing {what}; this line has fields: {fields}", path, line)


def _get_id(record: dict[str, Any], name: str, what: str, path: Source, line: int) -> str:
    if name not in record:
        raise _missing(record, f"{what} id field {name!r}", path, line)
    value = record[name]
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not text:
        raise DataError(f"{what} id {name!r} must be a non-empty string or integer, found {value!r}", path, line)
    problem = id_problem(text)
    if problem:
        raise DataError(f"{what} id {text[:80]!r} {problem}", path, line)
    return text


def id_problem(identifier: str) -> str:
    """Why ``identifier`` cannot be a document or query id ('' when it can): see "Ids" in the module docstring.

    >>> id_problem("../d 1"), id_problem("caf\u00e9/../007")
    ('contains whitespace; ids must be single tokens (TREC runs and qrels are whitespace-separated)', '')
    """
    if not identifier:
        return "is empty"
    if identifier.split() != [identifier]:
        return "contains whitespace; ids must be single tokens (TREC runs and qrels are whitespace-separated)"
    if any(unicodedata.category(char) == "Cc" for char in identifier):
        return "contains a control character; ids must be printable"
    return surrogate_problem(identifier)


def surrogate_problem(text: str) -> str:
    """'' unless ``text`` holds a lone surrogate (half a UTF-16 pair, e.g. from a JSON ``"\\ud800"`` escape), which
    UTF-8 cannot store; then where it is.

    >>> surrogate_problem("ok \u00e9"), surrogate_problem("a\\ud800")
    ('', "holds a lone surrogate '\\\\ud800' at character 2 (half a UTF-16 pair; UTF-8 cannot store it)")
    """
    if text.isascii():
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        where = f"{text[err.start]!r} at character {err.start + 1}"
        return f"holds a lone surrogate {where} (half a UTF-16 pair; UTF-8 cannot store it)"
    return ""


def _nested_surrogate(value: Any) -> str:
    """:func:`surrogate_problem` of the first string (key or value) in a JSON value that has one."""
    if isinstance(value, str):
        return surrogate_problem(value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        problem = (surrogate_problem(key) if isinstance(key, str) else "") or _nested_surrogate(inner)
        if problem:
            return problem
    return ""


def _get_text(record: dict[str, Any], name: str, path: Source, line: int, required: bool = True) -> str:
    if name not in record:
        if not required:
            return ""
        raise _missing(record, f"text field {name!r}", path, line)
    value = "" if record[name] is None else record[name]
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"field {name!r} must be a string or a finite number, found {value!r}", path, line)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        problem = surrogate_problem(text)
        if problem:
            raise DataError(f"field {name!r} {problem}", path, line)
        return text
    raise DataError(f"field {name!r} must be a string, found {str(value)[:60]!r}", path, line)


def _irds_records(source: str, kind: str, text_field: str = "", fallback: str = "") -> _Records:
    """ir-datasets namedtuples (``docs``/``queries``/``qrels``) as dicts; text taken from ``text_field``, else
    from ``fallback``, else from ``default_text()``."""
    try:
        import ir_datasets
    except ImportError:
        raise ConfigError(f"reading {source} needs ir-datasets: pip install ir-datasets") from None
    try:
        dataset = ir_datasets.load(source[len(IRDS_PREFIX) :])
    except KeyError:
        raise DataError("unknown ir-datasets id", source) from None
    return _irds_rows(getattr(dataset, f"{kind}_iter")(), text_field, fallback)


def _irds_rows(items: Iterator[Any], text_field: str, fallback: str) -> _Records:
    for number, item in enumerate(items, start=1):
        record = dict(item._asdict())
        if text_field and text_field not in record and fallback in record:
            record[text_field] = record[fallback]
        elif text_field and text_field not in record and hasattr(item, "default_text"):
            record[text_field] = item.default_text()
        yield number, record


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

        def records_of() -> _Records:
            return _irds_records(name, "docs", text_field, "body")

        return _documents(source, records_of(), records_of, "doc_id", title_field, text_field, metadata_fields)
    path = corpus_path(source)
    assert path is not None
    positional = {2: (id_field, text_field), 3: (id_field, title_field or "title", text_field)}

    def file_records() -> _Records:
        return read_records(path, positional, id_field)

    return _documents(path, file_records(), file_records, id_field, title_field, text_field, metadata_fields)


def _documents(
    where: Source,
    records: _Records,
    records_of: Callable[[], _Records],
    id_field: str,
    title_field: str | None,
    text_field: str,
    metadata_fields: Sequence[str] = (),
) -> Iterator[Document]:
    """Documents from ``records``; ``records_of`` reads them again from the start (for a duplicate's first line)."""
    seen: set[str] = set()
    for number, record in records:
        doc_id = _get_id(record, id_field, "document", where, number)
        if doc_id in seen:
            raise _duplicate_document(where, records_of, records, id_field, seen, doc_id, number)
        seen.add(doc_id)
        text = _get_text(record, text_field, where, number)
        title = _get_text(record, title_field, where, number, required=False) if title_field else ""
        yield Document(doc_id, text, title, _metadata(record, metadata_fields, where, number))
    if not seen:
        raise DataError(f"no documents found in {where}", where)


def _duplicate_document(
    where: Source,
    records_of: Callable[[], _Records],
    rest: _Records,
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
            again = _get_id(record, id_field, "document", where, line)
            if again in seen:
                duplicates.append(again)
            seen.add(again)
    except DataError:
        pass  # reported once the duplicates are fixed
    first = next(line for line, record in records_of() if _get_id(record, id_field, "", where, line) == doc_id)
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
    path = _existing(source, "expected a file of document ids, one a line")
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
    if merged and _nested_surrogate(merged):
        raise DataError(f"field 'metadata' {_nested_surrogate(merged)}", path, line)
    for name in fields:
        if name in record:
            problem = _nested_surrogate(record[name])
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
        records, id_field = _irds_records(str(source), "queries", text_field, "title"), "query_id"
    else:
        path = _existing(source)
        if path.is_file() and split is not None:
            raise ConfigError(f"split={split!r} applies to BEIR folders only, and {path} is a file")
        where = _beir_file(path, "queries") if path.is_dir() else path
        records = read_records(where, {2: (id_field, text_field)}, id_field)
    queries: list[Query] = []
    lines: dict[str, int] = {}
    for number, record in records:
        query_id = _get_id(record, id_field, "query", where, number)
        if query_id in lines:
            unit = "records" if is_irds(where) else "lines"
            message = f"duplicate query id {query_id[:80]!r}: {unit} {lines[query_id]} and {number}"
            raise DataError(f"{message}; make every query id unique", where, number)
        lines[query_id] = number
        queries.append(Query(query_id, _get_text(record, text_field, where, number)))
    if split is not None and not is_irds(source):
        judged = read_qrels(source, split)
        queries = [query for query in queries if query.query_id in judged]
    if not queries:
        raise DataError(f"no queries found in {where}", where)
    return queries


def read_qrels(source: Source, split: str = "test") -> Qrels:
    """Read relevance judgments: ``{query_id: {doc_id: grade}}``.

    A BEIR folder's ``qrels/<split>.tsv``, a file of ``query-id corpus-id score`` rows (BEIR, header optional)
    or of ``query-id iteration doc-id relevance`` rows (TREC), tab- or space-separated, or an ``irds:`` id
    (``split`` is used only for a BEIR folder). A first line is a header only when it is exactly one (see "Readers
    never guess"). The same pair judged twice with different grades is an error naming both lines; the same
    judgment repeated is kept once.

    >>> read_qrels("tests/data/tiny")["q4"]
    {'007': 1}
    """
    if is_irds(source):
        qrels: Qrels = {}
        for n, qrel in _irds_records(str(source), "qrels"):
            query_id, doc_id = (_get_id(qrel, key, "qrels", source, n) for key in ("query_id", "doc_id"))
            qrels.setdefault(query_id, {})[doc_id] = int(qrel["relevance"])
        if not qrels:
            raise DataError(f"no judgments found in {source}", source)
        return qrels
    path = _existing(source, "expected a BEIR folder, a qrels file or irds:<id>")
    if path.is_dir():
        folder = path / "qrels"
        path = folder / f"{split}.tsv"
        if not path.is_file():
            found = ", ".join(sorted(p.name.removesuffix(".tsv") for p in folder.glob("*.tsv")))
            found = found or "none (no qrels/*.tsv files)"
            raise DataError(f"no qrels for split {split!r}; splits available: {found}", Path(source))
    return _parse_qrels(path)


def is_qrels_header(parts: Sequence[str]) -> bool:
    """Whether the columns of a qrels file's first line are exactly a known header (case-insensitive).

    >>> is_qrels_header(["query-id", "corpus-id", "score"]), is_qrels_header(["qid", "Q0", "docid", "rel"])
    (True, True)
    >>> is_qrels_header(["1", "13", "relevant"])
    False
    """
    known = _QRELS_HEADERS.get(len(parts))
    return known is not None and all(part.lower() in words for part, words in zip(parts, known, strict=True))


def _qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """``(line, query id, doc id, grade)`` of each judgment of a qrels file; a first line that is exactly a known
    header is skipped, any other line must be a judgment."""
    columns, first = 0, True
    for number, line in iter_lines(path):
        parts = [part.strip() for part in (line.split("\t") if "\t" in line else line.split())]
        if first and is_qrels_header(parts):
            first = False
            continue
        if len(parts) not in (3, 4) or (columns and len(parts) != columns):
            both = f"{_QRELS_COLUMNS[3]} or {_QRELS_COLUMNS[4]}"
            expected = f"{_QRELS_COLUMNS[columns]} like the lines before" if columns else both
            raise DataError(f"expected {expected} columns, found {len(parts)}", path, number)
        columns = len(parts)
        grade = parts[-1]
        if not _GRADE.fullmatch(grade):
            hint = "; nor is the line a known header such as 'query-id corpus-id score'" if first else ""
            raise DataError(f"relevance must be an integer, found {grade[:80]!r}{hint}", path, number)
        if len(grade) > _MAX_DIGITS:
            message = f"relevance is a number with {_digits(grade)} digits: {grade[:20]}...; grades are small integers"
            raise DataError(message, path, number)
        first = False
        yield number, parts[0], parts[-2], int(grade)


def _parse_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    for number, query_id, doc_id, grade in _qrels_rows(path):
        judged = qrels.setdefault(query_id, {})
        if judged.get(doc_id, grade) != grade:
            before = next(n for n, q, d, _ in _qrels_rows(path) if (q, d) == (query_id, doc_id))
            message = f"document {doc_id[:80]!r} judged twice for query {query_id[:80]!r}: "
            raise DataError(f"{message}{judged[doc_id]} on line {before} and {grade} on line {number}", path, number)
        judged[doc_id] = grade
    if not qrels:
        raise DataError(f"no judgments found in {path}", path)
    return qrels


def read_run(path: Source) -> Run:
    """Read a TREC run file (``query-id Q0 doc-id rank score tag``); hits are ordered by :func:`sort_hits`
    (score, then doc_id, both descending, as trec_eval does), whatever the rank column says. A document twice in
    one query's hits is an error naming both lines.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> write_run({"q1": [Hit("d1", 2.5), Hit("d2", 0.125)]}, path)
    >>> read_run(path)
    {'q1': [Hit(doc_id='d1', score=2.5), Hit(doc_id='d2', score=0.125)]}
    """
    path = _existing(path, "expected a TREC run file")
    scores: dict[str, dict[str, float]] = {}
    for number, line in iter_lines(path):
        parts = line.split()
        if len(parts) != 6:
            wanted = "6 columns (query-id Q0 doc-id rank score tag)"
            raise DataError(f"expected {wanted}, found {len(parts)}", path, number)
        query_id, _, doc_id, _, score_text, _ = parts
        score = float(score_text) if _NUMBER.fullmatch(score_text) else math.nan
        if math.isnan(score):
            raise DataError(f"score must be a number, found {score_text[:80]!r}", path, number)
        hits = scores.setdefault(query_id, {})
        if doc_id in hits:
            before = next(n for n, text in iter_lines(path) if text.split()[:3:2] == [query_id, doc_id])
            message = f"document {doc_id[:80]!r} appears twice for query {query_id[:80]!r}: lines {before} and {number}"
            raise DataError(message, path, number)
        hits[doc_id] = score
    return {query_id: sort_hits(Hit(d, s) for d, s in hits.items()) for query_id, hits in scores.items()}


def write_run(run: Run, path: Source, *, tag: str = "searchkit") -> None:
    """Write ``run`` as a TREC run file, atomically (gzip'd when the name ends in ``.gz``).

    Each query's hits are written in :func:`sort_hits` order with ranks from 1, and scores in Python's
    shortest exact form (``repr``), so :func:`read_run` gives back the same run. Ids or a tag containing
    whitespace would corrupt the file and are refused. See :func:`read_run` for an example.
    """
    path = Path(path)
    if tag.split() != [tag]:
        raise ConfigError(f"a TREC run tag must be one word, got {tag!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    # mkstemp creates the file 0600; a run file is ordinary output, so give it the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    gz = path.name.endswith(".gz")
    try:
        with cast(IO[str], (gzip.open if gz else open)(temp, "wt", encoding="utf-8", newline="\n")) as out:
            for query_id, hits in run.items():
                for rank, hit in enumerate(sort_hits(hits), start=1):
                    out.write(_run_line(query_id, hit, rank, tag, path))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _run_line(query_id: str, hit: Hit, rank: int, tag: str, path: Path) -> str:
    score = float(hit.score)
    if math.isnan(score):
        raise DataError(f"score of {hit.doc_id!r} for query {query_id!r} is NaN", path)
    if any(not value or value.split() != [value] for value in (query_id, hit.doc_id)):
        raise DataError(f"ids {query_id!r}, {hit.doc_id!r}: a TREC run cannot hold empty ids or whitespace", path)
    return f"{query_id} Q0 {hit.doc_id} {rank} {score!r} {tag}\n"


def document_text(doc: Document) -> str:
    """The text that represents a document to BM25 and to encoders: its title and text, joined by a space.

    >>> document_text(Document("d1", "Cats chase mice.", "Cats"))
    'Cats Cats chase mice.'
    >>> document_text(Document("d2", "No title here."))
    'No title here.'
    """
    return " ".join(part for part in (doc.title, doc.text) if part)
