"""TREC qrels and runs (and BEIR qrels TSV), read and written: a header only when the line is exactly one, integer
grades, a document judged twice with two grades refused, runs sorted by :func:`searchkit.types.sort_hits`
(trec_eval's tie order) and written atomically, optionally gzip'd."""

from __future__ import annotations

import gzip
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

from searchkit.formats.files import Source, existing, is_irds, iter_lines
from searchkit.formats.records import DOC_ID_HEADERS, MAX_DIGITS, QUERY_ID_HEADERS, digit_count, get_id, irds_records
from searchkit.types import ConfigError, DataError, Hit, Qrels, Run, sort_hits

_QRELS_DOC_HEADERS = DOC_ID_HEADERS | {"doc", "document", "document-id", "document_id"}


_GRADE_HEADERS = frozenset({"score", "relevance", "rel", "label", "grade", "judgment", "judgement"})


_QRELS_HEADERS = {  # columns of a qrels header line: 3 (BEIR) or 4 (TREC)
    3: (QUERY_ID_HEADERS | {"query"}, _QRELS_DOC_HEADERS, _GRADE_HEADERS),
    4: (QUERY_ID_HEADERS | {"query"}, frozenset({"q0", "iteration", "iter"}), _QRELS_DOC_HEADERS, _GRADE_HEADERS),
}


_GRADE = re.compile(r"[-+]?\d+")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?inf(inity)?", re.IGNORECASE)


_QRELS_COLUMNS = {3: "3 (query-id, corpus-id, score)", 4: "4 (TREC: query-id, iteration, doc-id, relevance)"}


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
        for n, qrel in irds_records(str(source), "qrels"):
            query_id, doc_id = (get_id(qrel, key, "qrels", source, n) for key in ("query_id", "doc_id"))
            qrels.setdefault(query_id, {})[doc_id] = int(qrel["relevance"])
        if not qrels:
            raise DataError(f"no judgments found in {source}", source)
        return qrels
    path = existing(source, "expected a BEIR folder, a qrels file or irds:<id>")
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
        if len(grade) > MAX_DIGITS:
            count = digit_count(grade)
            raise DataError(
                f"relevance is a number with {count} digits: {grade[:20]}...; grades are small integers", path, number
            )
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
    path = existing(path, "expected a TREC run file")
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
