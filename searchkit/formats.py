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

>>> docs = list(read_corpus("tests/data/tiny"))
>>> len(docs), docs[6].doc_id
(8, '007')
>>> sorted(read_qrels("tests/data/tiny", "test")["q1"].items())
[('d1', 2), ('d5', 1)]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from searchkit.types import ConfigError, DataError, Document, Hit, Qrels, Query, Run, sort_hits

Source = str | Path
_Records = Iterator[tuple[int, dict[str, Any]]]  # (line number, fields) of each record of a file
IRDS_PREFIX = "irds:"
_EXPECTED = "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"
_GZIP_MAGIC = b"\x1f\x8b"
_ID_HEADERS = {"_id", "id", "docid", "doc_id", "doc-id", "corpus-id", "qid", "query_id", "query-id"}
_HEADER_WORD = re.compile(r"[A-Za-z][A-Za-z_\- ]*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?inf(inity)?", re.IGNORECASE)
_QRELS_COLUMNS = {3: "3 (query-id, corpus-id, score)", 4: "4 (TREC: query-id, iteration, doc-id, relevance)"}


def is_irds(source: Source) -> bool:
    """Whether ``source`` names an ir-datasets dataset rather than a path.

    >>> is_irds("irds:beir/scifact/test"), is_irds("tests/data/tiny")
    (True, False)
    """
    return isinstance(source, str) and source.startswith(IRDS_PREFIX)


def _existing(source: Source, expected: str = _EXPECTED) -> Path:
    if not Path(source).exists():
        raise DataError(f"no such file or directory; {expected}", source)
    return Path(source)


def _beir_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
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
        with open_binary(path) as handle:
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


def _json_records(path: Path) -> _Records:
    for number, line in iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err.msg} at column {err.colno}", path, number) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, found {line[:60]!r}", path, number)
        yield number, record


def _tsv_records(path: Path, positional: dict[int, tuple[str, ...]], id_field: str) -> _Records:
    """Rows as dicts, named by a first line that contains ``id_field``, else by position (``positional``
    maps a column count to names); a first line starting with a usual id name (``id``, ``qid``) is skipped."""
    names: list[str] | None = None
    for number, line in iter_lines(path):
        parts = [part.strip() for part in line.split("\t")]
        if names is None:
            names = parts if id_field in parts else []
            if names or parts[0].lower() in _ID_HEADERS:
                continue
        fields = names or positional.get(len(parts), ())
        if len(fields) != len(parts):
            options = {len(names): tuple(names)} if names else positional
            wanted = " or ".join(f"{n} ({', '.join(cols)})" for n, cols in options.items())
            raise DataError(f"expected {wanted} tab-separated columns, found {len(parts)}", path, number)
        yield number, dict(zip(fields, parts, strict=True))


def read_records(path: Path, positional: dict[int, tuple[str, ...]], id_field: str) -> _Records:
    return _tsv_records(path, positional, id_field) if _is_tsv(path) else _json_records(path)


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
    return ""


def _get_text(record: dict[str, Any], name: str, path: Source, line: int, required: bool = True) -> str:
    if name not in record:
        if not required:
            return ""
        raise _missing(record, f"text field {name!r}", path, line)
    value = "" if record[name] is None else record[name]
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
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
    TSV rows are ``id<TAB>text`` or ``id<TAB>title<TAB>text``, or named by a first line that contains
    ``id_field``. ir-datasets documents give ``doc_id`` and their ``text_field``/``title_field`` attributes.
    The source is checked at once, the documents read as the iterator is consumed; a corpus without
    documents raises a DataError when it ends.

    A document's ``metadata`` is BEIR's ``metadata`` object (when it is a non-empty JSON object) plus the
    ``metadata_fields`` columns the record has (JSONL keys, TSV header columns, ir-datasets attributes); None when
    it has neither.

    >>> docs = read_corpus("tests/data/tiny")
    >>> next(docs)
    Document(doc_id='d1', text='Cats chase mice. Dogs chase cats around the garden.', title='Cats and dogs')
    """
    if is_irds(source):
        records = _irds_records(str(source), "docs", text_field, "body")
        return _documents(source, records, "doc_id", title_field, text_field, metadata_fields)
    path = corpus_path(source)
    assert path is not None
    positional = {2: (id_field, text_field), 3: (id_field, title_field or "title", text_field)}
    records = read_records(path, positional, id_field)
    return _documents(path, records, id_field, title_field, text_field, metadata_fields)


def _documents(
    where: Source,
    records: _Records,
    id_field: str,
    title_field: str | None,
    text_field: str,
    metadata_fields: Sequence[str] = (),
) -> Iterator[Document]:
    count = 0
    for number, record in records:
        doc_id = _get_id(record, id_field, "document", where, number)
        text = _get_text(record, text_field, where, number)
        title = _get_text(record, title_field, where, number, required=False) if title_field else ""
        count += 1
        yield Document(doc_id, text, title, _metadata(record, metadata_fields))
    if not count:
        raise DataError(f"no documents found in {where}", where)


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


def _metadata(record: dict[str, Any], fields: Sequence[str]) -> dict[str, Any] | None:
    """BEIR's ``metadata`` object (when a JSON object) plus the chosen extra columns; None when both are empty."""
    beir = record.get("metadata")
    merged = {**beir} if isinstance(beir, dict) else {}
    merged.update((name, record[name]) for name in fields if name in record)
    return merged or None


def read_queries(
    source: Source, *, split: str | None = None, id_field: str = "_id", text_field: str = "text"
) -> list[Query]:
    """Read queries, in file order, from a BEIR folder, JSONL or TSV (``qid<TAB>text``) file or ``irds:`` id.

    With ``split``, a BEIR folder's queries are limited to those judged in ``qrels/<split>.tsv`` (its
    ``queries.jsonl`` holds every split's queries). An ``irds:`` id already names its split, so ``split`` is
    ignored there; for a single file it is a ConfigError.

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
    queries = [
        Query(_get_id(record, id_field, "query", where, n), _get_text(record, text_field, where, n))
        for n, record in records
    ]
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
    (``split`` is used only for a BEIR folder). The same pair judged twice with different grades is an error.

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


def _parse_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    columns, first = 0, True
    for number, line in iter_lines(path):
        parts = [part.strip() for part in (line.split("\t") if "\t" in line else line.split())]
        if first and _HEADER_WORD.fullmatch(parts[-1]):
            first = False
            continue  # a header such as "query-id corpus-id score"
        first = False
        if len(parts) not in (3, 4) or (columns and len(parts) != columns):
            both = f"{_QRELS_COLUMNS[3]} or {_QRELS_COLUMNS[4]}"
            expected = f"{_QRELS_COLUMNS[columns]} like the lines before" if columns else both
            raise DataError(f"expected {expected} columns, found {len(parts)}", path, number)
        columns = len(parts)
        query_id, doc_id = parts[0], parts[-2]
        try:
            grade = int(parts[-1])
        except ValueError:
            raise DataError(f"relevance must be an integer, found {parts[-1]!r}", path, number) from None
        judged = qrels.setdefault(query_id, {})
        if judged.get(doc_id, grade) != grade:
            message = f"document {doc_id!r} judged twice for query {query_id!r}: {judged[doc_id]} and {grade}"
            raise DataError(message, path, number)
        judged[doc_id] = grade
    if not qrels:
        raise DataError(f"no judgments found in {path}", path)
    return qrels


def read_run(path: Source) -> Run:
    """Read a TREC run file (``query-id Q0 doc-id rank score tag``); hits are ordered by :func:`sort_hits`
    (score, then doc_id, both descending, as trec_eval does), whatever the rank column says.

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
            raise DataError(f"score must be a number, found {score_text!r}", path, number)
        hits = scores.setdefault(query_id, {})
        if doc_id in hits:
            raise DataError(f"document {doc_id!r} appears twice for query {query_id!r}", path, number)
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
