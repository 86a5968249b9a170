"""Labelled pair files, the training data a person (or ``searchkit feedback export``) gives ``searchkit train``:
TSV ``query<TAB>doc<TAB>label[<TAB>weight]`` (header optional) or JSONL ``{"query", "doc_id" | "text", "label",
"weight"?}``. Labels are integer grades >= 0 (0: a negative), weights finite and >= 0 (empty: none given).
:func:`read_pairs` and :func:`write_pairs` are the format's one reader and writer.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
>>> write_pairs(path, [LabelledPair("cats", "d1", 1, 2.5, True, 0), LabelledPair("cats", "d2", 0, None, True, 0)])
>>> [(p.doc, p.label, p.weight) for p in read_pairs(path)]
[('d1', 1, 2.5), ('d2', 0, None)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from searchkit.formats.files import iter_lines
from searchkit.formats.records import parse_json_line
from searchkit.types import DataError


class LabelledPair(NamedTuple):
    """A line of a pair file: query text, doc (an id or a text), grade (0: negative), optional weight."""

    query: str
    doc: str
    label: int
    weight: float | None
    doc_is_id: bool
    line: int


def read_pairs(path: str | Path, doc: str = "id") -> list[LabelledPair]:
    """Read labelled pairs: TSV ``query<TAB>doc<TAB>label[<TAB>weight]`` (header optional; ``doc`` says
    whether that column holds doc ids or texts) or JSONL ``{"query", "doc_id" | "text", "label", "weight"?}``.

    Labels are integer grades >= 0 (0: negative); weights finite and >= 0. A bad line raises a DataError
    naming ``file:line``.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
    >>> _ = path.write_text("query\\tdoc\\tlabel\\tweight\\ncats\\td1\\t1\\t2.0\\ncats\\td2\\t0\\n")
    >>> [(p.doc, p.label, p.weight) for p in read_pairs(path)]
    [('d1', 1, 2.0), ('d2', 0, None)]
    """

    pairs: list[LabelledPair] = []
    for number, line in iter_lines(path):
        if line.lstrip().startswith("{"):
            pairs.append(_json_pair(line, path, number))
            continue
        parts = line.split("\t")
        if not pairs and len(parts) >= 3 and parts[2].strip().lower() == "label":
            continue  # header
        if len(parts) not in (3, 4):
            raise DataError(
                f"expected 3 or 4 tab-separated columns (query, doc, label[, weight]), found {len(parts)}",
                path,
                number,
            )
        query, doc_value = parts[0].strip(), parts[1].strip()
        weight = parts[3] if len(parts) == 4 else None
        pairs.append(_pair(query, doc_value, parts[2], weight, doc == "id", path, number))
    if not pairs:
        raise DataError("no labelled pairs found", path)
    return pairs


PAIRS_HEADER = "query\tdoc\tlabel\tweight"


def write_pairs(path: str | Path, pairs: Sequence[LabelledPair]) -> None:
    """Write labelled pairs as the TSV :func:`read_pairs` reads (header ``query doc label weight``; an empty weight
    where a pair has none), atomically. Whitespace runs in a query (tabs, newlines) become one space; a doc with
    a tab or newline is refused (ids never hold one; write texts as JSONL). Weights keep 6 significant digits."""
    lines = [PAIRS_HEADER]
    for pair in pairs:
        if "\t" in pair.doc or "\n" in pair.doc or "\r" in pair.doc:
            raise DataError(f"doc {pair.doc[:40]!r} holds a tab or line break; a TSV pair file cannot", path)
        weight = "" if pair.weight is None else f"{pair.weight:.6g}"
        lines.append(f"{' '.join(pair.query.split())}\t{pair.doc}\t{pair.label}\t{weight}")
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def _json_pair(line: str, path: str | Path, number: int) -> LabelledPair:
    record = parse_json_line(line, path, number)
    if not isinstance(record, dict) or not isinstance(record.get("query"), str) or "label" not in record:
        raise DataError("expected an object with 'query' (a string), 'doc_id' or 'text', and 'label'", path, number)
    if ("doc_id" in record) == ("text" in record):
        raise DataError("give exactly one of 'doc_id' and 'text'", path, number)
    is_id = "doc_id" in record
    value = str(record["doc_id"] if is_id else record["text"])
    return _pair(record["query"], value, record["label"], record.get("weight"), is_id, path, number)


def _pair(query: str, doc: str, label: Any, weight: Any, is_id: bool, path: str | Path, number: int) -> LabelledPair:
    if not query.strip() or not doc.strip():
        raise DataError("empty query or doc", path, number)
    try:
        grade = int(str(label).strip())
    except ValueError:
        raise DataError(f"label must be an integer grade >= 0, found {label!r}", path, number) from None
    if grade < 0:
        raise DataError(f"label must be an integer grade >= 0, found {label!r}", path, number)
    value: float | None = None
    if weight is not None and str(weight).strip() != "":
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise DataError(f"weight must be a finite number >= 0, found {weight!r}", path, number)
    return LabelledPair(query.strip(), doc.strip() if is_id else doc, grade, value, is_id, number)
