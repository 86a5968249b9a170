"""Records and the checks every field passes: JSON and TSV lines parsed without guessing, ids (single printable
tokens, whitespace and control characters refused), integers within Python's int-string limit, finite numbers and
no lone surrogates; each failure a DataError naming the file, line and field."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from searchkit.formats.files import IRDS_PREFIX, Source, is_tsv, iter_lines
from searchkit.types import ConfigError, DataError

Records = Iterator[tuple[int, dict[str, Any]]]  # (line number, fields) of each record of a file


# Header names by column, compared case-insensitively: a first row is a header only when every column is one.
DOC_ID_HEADERS = frozenset({"_id", "id", "docid", "doc_id", "doc-id", "docno", "corpus-id", "corpus_id", "pid", "did"})


QUERY_ID_HEADERS = frozenset({"qid", "query_id", "query-id", "queryid", "topic", "topic_id", "topic-id"})


_TSV_HEADERS = (  # (first column, middle column of three, last column) of a TSV corpus or queries file
    DOC_ID_HEADERS | QUERY_ID_HEADERS,
    frozenset({"title", "headline"}),
    frozenset({"text", "body", "contents", "content", "passage", "document", "abstract", "query", "question"}),
)


_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # an extra column of a header that names its columns


MAX_DIGITS = sys.int_info.default_max_str_digits  # Python's int-string limit (4,300 digits)


class _LongNumber(ValueError):
    """A JSON number longer than Python's int-string limit (raised inside ``json.loads``, caught by the reader)."""

    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def digit_count(literal: str) -> int:
    return sum(char.isdigit() for char in literal)


def _json_int(literal: str) -> int:
    if len(literal) > MAX_DIGITS and digit_count(literal) > MAX_DIGITS:
        raise _LongNumber(literal)
    return int(literal)


def _json_float(literal: str) -> float:
    if len(literal) > MAX_DIGITS and digit_count(literal) > MAX_DIGITS:
        raise _LongNumber(literal)
    return float(literal)


def parse_json_line(line: str, path: Source, number: int) -> Any:
    """One line of a JSON Lines file, parsed; a DataError naming file, line and column for invalid JSON or a number
    longer than Python's int-string limit (every JSONL reader of searchkit parses through here).

    >>> parse_json_line('{"_id": "d1", "n": 7}', "c.jsonl", 1)
    {'_id': 'd1', 'n': 7}
    """
    try:
        return json.loads(line, parse_int=_json_int, parse_float=_json_float)
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg} at column {err.colno}", path, number) from None
    except _LongNumber as err:
        count, column = digit_count(err.literal), line.find(err.literal) + 1
        message = f"a number with {count} digits at column {column}: {err.literal[:20]}...; "
        raise DataError(message + f"numbers past {MAX_DIGITS} digits must be JSON strings", path, number) from None


def _json_records(path: Path) -> Records:
    for number, line in iter_lines(path):
        record = parse_json_line(line, path, number)
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
) -> Records:
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
) -> Records:
    """``(line, fields)`` of each record of a JSONL or TSV file (TSV: see :func:`_tsv_records`)."""
    return _tsv_records(path, positional, id_field, text_field) if is_tsv(path) else _json_records(path)


def _missing(record: dict[str, Any], what: str, path: Source, line: int) -> DataError:
    fields = ", ".join(repr(str(name))[1:-1] for name in record) or "none"  # escaped: keys may hold newlines
    return DataError(f"missing {what}; this line has fields: {fields}", path, line)


def get_id(record: dict[str, Any], name: str, what: str, path: Source, line: int) -> str:
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


def nested_surrogate(value: Any) -> str:
    """:func:`surrogate_problem` of the first string (key or value) in a JSON value that has one."""
    if isinstance(value, str):
        return surrogate_problem(value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        problem = (surrogate_problem(key) if isinstance(key, str) else "") or nested_surrogate(inner)
        if problem:
            return problem
    return ""


def get_text(record: dict[str, Any], name: str, path: Source, line: int, required: bool = True) -> str:
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


def irds_records(source: str, kind: str, text_field: str = "", fallback: str = "") -> Records:
    """ir-datasets namedtuples (``docs``/``queries``/``qrels``) as dicts; text taken from ``text_field``, else
    from ``fallback``, else from ``default_text()``.

    Failures are one line naming the id and what to do: an unknown id, and data ir-datasets cannot fetch (offline: it
    downloads on first use into ``IR_DATASETS_HOME``). ir-datasets' own log lines are kept quiet unless searchkit
    logs at INFO (``-v``); its download bar still shows.
    """
    try:
        import ir_datasets
    except ImportError:
        raise ConfigError(f"reading {source} needs ir-datasets: pip install ir-datasets") from None
    name = source[len(IRDS_PREFIX) :]
    with _irds_quiet(ir_datasets):
        try:
            dataset = ir_datasets.load(name)
        except KeyError:
            raise DataError(
                f"unknown ir-datasets id {name!r}: ids are listed at https://ir-datasets.com (e.g. beir/scifact/test, "
                "written irds:beir/scifact/test)",
                source,
            ) from None
    return _irds_rows(ir_datasets, source, kind, dataset, text_field, fallback)


def _irds_rows(module: Any, source: str, kind: str, dataset: Any, text_field: str, fallback: str) -> Records:
    with _irds_quiet(module):
        try:
            items = getattr(dataset, f"{kind}_iter")()
            for number, item in enumerate(items, start=1):
                record = dict(item._asdict())
                if text_field and text_field not in record and fallback in record:
                    record[text_field] = record[fallback]
                elif text_field and text_field not in record and hasattr(item, "default_text"):
                    record[text_field] = item.default_text()
                yield number, record
        except (OSError, RuntimeError) as err:  # requests' errors are OSErrors; several mirrors: a RuntimeError
            raise _irds_failure(source, kind, err) from None


def _irds_failure(source: str, kind: str, err: BaseException) -> DataError:
    """One line for data ir-datasets could not fetch or read: the id, the cause in short, and the fix."""
    reason = " ".join(str(err).split())
    resolve = re.search(r"Failed to resolve '([^']+)'", reason)
    if resolve:
        reason = f"cannot resolve {resolve[1]}"
    elif len(reason) > 160:
        reason = reason[:157] + "..."
    home = os.environ.get("IR_DATASETS_HOME", "~/.ir_datasets")
    network = type(err).__module__.split(".")[0] in ("requests", "urllib3") or "download sources failed" in reason
    fix = (
        f"ir-datasets downloads its data on first use into IR_DATASETS_HOME ({home}): run once where there is "
        "network (or copy that folder here), or read a local copy (a BEIR folder or a .jsonl file)"
        if network
        else f"check or delete its files under IR_DATASETS_HOME ({home}) and try again"
    )
    what = "download" if network else "read"
    return DataError(f"ir-datasets could not {what} the {kind} ({type(err).__name__}: {reason}); {fix}", source)


@contextlib.contextmanager
def _irds_quiet(module: Any) -> Iterator[None]:
    """ir-datasets' logger (its own handler, on stderr) at ERROR while it works for us, unless searchkit logs INFO."""
    easy = getattr(getattr(module, "log", None), "easy", None)  # creating it through ir-datasets sets its handler
    logger = easy().logger() if easy is not None else logging.getLogger("ir_datasets")
    previous = logger.level
    if not logging.getLogger("searchkit").isEnabledFor(logging.INFO):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
