"""Metadata filters: a small expression grammar, and the column store it runs on (the ``filters`` component).

Grammar: one condition an expression; a search given several expressions keeps the documents that meet all of them.

===========================  ==============================================================================
``FIELD OP VALUE``           ``OP`` is ``=`` (or ``==``), ``!=``, ``<``, ``<=``, ``>``, ``>=``
``FIELD in V1,V2,...``       any of the values; parentheses around the list are optional: ``lang in (en, fr)``
===========================  ==============================================================================

``FIELD`` is a field declared filterable when the index was built (:class:`searchkit.config.FilterConfig`). A
``number`` field takes numbers (``year>=2020``, ``score<0.5``); a ``keyword`` field takes strings, compared exactly
or in string (code point) order, so ISO dates compare as dates. A value may be quoted (``'...'`` or ``"..."``) to
keep spaces, commas or operators in it. A document without a value for the field meets no condition on it (not
even ``!=``). An unknown field or a value of the wrong type is a ConfigError naming it.

Filters are applied inside each retrieval stage before its top k is taken (BM25 masks its scores, FAISS searches
with an ID selector), so a filtered-out document is never returned and k hits come back whenever k documents match.

Files of the component folder::

    columns.json          every field's name, type and file; the number of rows
    <i>.npy               field i: float64 (NaN: no value) for a number field, int32 codes (-1: no value) for a
                          keyword field, indexes into ...
    <i>.values.json       ... its distinct values, sorted (code order is string order)

>>> from searchkit.types import Document
>>> docs = [Document("a", "", metadata={"year": 2019, "lang": "en"}), Document("b", "", metadata={"year": 2021})]
>>> import tempfile
>>> columns = FilterColumns.build(docs, tempfile.mkdtemp(), FilterConfig(["year:number", "lang"]), ["a", "b"])
>>> columns.mask(parse_filter(["year>=2020"])).tolist(), columns.mask(parse_filter("lang in en,fr")).tolist()
([False, True], [True, False])
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from searchkit.config import FilterConfig
from searchkit.formats import save_npy_atomic, write_json_atomic
from searchkit.types import ConfigError, DataError, Document, IndexFormatError

logger = logging.getLogger(__name__)


COLUMNS = "columns.json"


OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in")


_CONDITION = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\-]*)\s*"
    r"(?:(?P<op>==|!=|<=|>=|=|<|>)\s*(?P<value>.*?)|\s(?:in|IN)\s+(?P<values>.*?))\s*\Z",
    re.DOTALL,
)


_ITEM = re.compile(r"\s*(?:\"(?P<double>[^\"]*)\"|'(?P<single>[^']*)'|(?P<bare>[^,]*?))\s*(?:,|\Z)")


class Condition(NamedTuple):
    """One parsed condition: ``field op values`` (one value, except for ``in``), values as written."""

    field: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        if self.op == "in":
            return f"{self.field} in {','.join(_quote(value) for value in self.values)}"
        return f"{self.field}{self.op}{_quote(self.values[0])}"


def _quote(value: str) -> str:
    """``value`` as the grammar reads it back: bare when it can be, else in the quotes it does not contain."""
    if value and re.fullmatch(r"[^\s,'\"=<>!()]+", value):
        return value
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True)
class Filter:
    """Conditions that must all hold (:func:`parse_filter` makes one); empty: no filter."""

    conditions: tuple[Condition, ...] = ()

    def __str__(self) -> str:
        return " AND ".join(map(str, self.conditions))

    def __bool__(self) -> bool:
        return bool(self.conditions)


FilterSpec = Filter | str | Sequence[str] | None
"""What ``filter=`` accepts: a Filter, one expression, several (all must hold) or None."""


def parse_condition(expression: str) -> Condition:
    """One expression of the grammar (module docstring) as a Condition; ConfigError saying what is wrong.

    >>> parse_condition("year >= 2020"), parse_condition("lang in (en, 'pt br')")
    (Condition(field='year', op='>=', values=('2020',)), Condition(field='lang', op='in', values=('en', 'pt br')))
    """
    match = _CONDITION.match(expression)
    if match is None:
        raise ConfigError(
            f"filter {expression!r}: expected FIELD OP VALUE (OP one of =, !=, <, <=, >, >=) or FIELD in V1,V2; "
            "e.g. year>=2020 or lang in en,fr"
        )
    field = match["field"]
    values: tuple[str, ...]
    if match["op"] is not None:
        op = "=" if match["op"] == "==" else match["op"]
        values = (_unquote(match["value"], expression),)
    else:
        op = "in"
        listed = match["values"].strip()
        if listed.startswith("(") and listed.endswith(")"):
            listed = listed[1:-1]
        values = tuple(_items(listed, expression))
    return Condition(field, op, values)


def _unquote(raw: str, expression: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    if not raw:
        raise ConfigError(f"filter {expression!r}: no value after the operator")
    if raw[0] in "<>=!":  # `year =< 3`: a mistyped operator, not the value '< 3'
        raise ConfigError(
            f"filter {expression!r}: the value {raw!r} starts with an operator; quote it if it is a value"
        )
    if raw[0] in "'\"" or any(char in raw for char in "'\""):
        raise ConfigError(f"filter {expression!r}: unbalanced quotes in {raw!r}")
    return raw


def _items(listed: str, expression: str) -> list[str]:
    items: list[str] = []
    position = 0
    while position < len(listed):
        match = _ITEM.match(listed, position)
        if match is None or match.end() == position:
            raise ConfigError(f"filter {expression!r}: cannot read the list of values at {listed[position:]!r}")
        value = match["double"] if match["double"] is not None else match["single"]
        if value is None:
            value = match["bare"]
            if not value or any(char in value for char in "'\""):
                raise ConfigError(f"filter {expression!r}: an empty or badly quoted value in the list")
        items.append(value)
        position = match.end()
    if not items:
        raise ConfigError(f"filter {expression!r}: 'in' needs at least one value")
    return items


def parse_filter(spec: FilterSpec) -> Filter:
    """A Filter from a Filter, one expression, several expressions (all must hold) or None (no filter).

    >>> str(parse_filter(["year>=2020", "lang=en"]))
    'year>=2020 AND lang=en'
    """
    if spec is None:
        return Filter()
    if isinstance(spec, Filter):
        return spec
    expressions = [spec] if isinstance(spec, str) else list(spec)
    if not all(isinstance(expression, str) for expression in expressions):
        raise ConfigError(f"filter must be a string or a list of strings, got {spec!r}")
    return Filter(tuple(parse_condition(expression) for expression in expressions))


# ---------------------------------------------------------------------- values
def number_value(value: Any) -> float | None:
    """A number field's stored value: a JSON number or a numeric string (TSV columns) as float; None for null.

    Raises ValueError for anything else (booleans, lists, words, NaN).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError
    number = float(value.strip()) if isinstance(value, str) else float(value)
    if math.isnan(number):
        raise ValueError
    return number


def keyword_value(value: Any) -> str | None:
    """A keyword field's stored value: a string, or a JSON number or boolean as it is written in JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise ValueError


# ---------------------------------------------------------------------- the component
class FilterColumns:
    """The declared filterable fields of every row, column-wise (memory-mapped); :meth:`mask` evaluates a Filter."""

    component = "filters"

    def __init__(self, folder: Path, config: FilterConfig, docids: Sequence[str]) -> None:
        self.folder = folder
        self.config = config
        self.docids = docids
        try:
            self.info: dict[str, Any] = json.loads((folder / COLUMNS).read_text(encoding="utf-8"))
            fields = self.info["fields"]
            self.columns: dict[str, np.ndarray] = {
                name: np.load(folder / entry["file"], mmap_mode="r", allow_pickle=False)
                for name, entry in fields.items()
            }
            self.values: dict[str, list[str]] = {
                name: json.loads((folder / entry["values"]).read_text(encoding="utf-8"))
                for name, entry in fields.items()
                if entry["type"] == "keyword"
            }
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise IndexFormatError(f"{folder}: unreadable filter columns ({err}); rebuild the index") from None

    def __repr__(self) -> str:
        return f"FilterColumns({self.folder}, fields={list(self.config.types)}, rows={self.num_docs})"

    @property
    def num_docs(self) -> int:
        """Rows (the index's, deleted ones included)."""
        return len(self.docids)

    @property
    def types(self) -> dict[str, str]:
        return self.config.types

    # -- build / rewrite / load
    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        folder: str | Path,
        config: FilterConfig,
        docids: Sequence[str],
        show_progress: bool = False,
    ) -> FilterColumns:
        """Read the declared fields of ``docs`` (row i is ``docids[i]``) from their metadata; write the columns."""
        raw: dict[str, list[Any]] = {name: [] for name in config.types}
        rows = 0
        for row, doc in enumerate(docs):
            if row >= len(docids) or doc.doc_id != docids[row]:
                raise DataError(f"filter columns: document row {row} is {doc.doc_id!r}, the doc ids disagree")
            metadata = doc.metadata or {}
            for name, values in raw.items():
                values.append(metadata.get(name))
            rows = row + 1
        if rows != len(docids):
            raise DataError(f"filter columns: {len(docids)} doc ids but {rows} documents")
        columns = {name: cls._convert(name, config.types[name], values, docids, 0) for name, values in raw.items()}
        return cls._write(Path(folder), config, docids, columns)

    @classmethod
    def rewrite(
        cls,
        source: FilterColumns,
        folder: str | Path,
        keep: np.ndarray,
        new_docs: Sequence[Document],
        docids: Sequence[str],
    ) -> FilterColumns:
        """Write at ``folder`` the columns of ``source``'s rows ``keep`` followed by those of ``new_docs``."""
        columns: dict[str, tuple[str, Any]] = {}
        for name, kind in source.types.items():
            added = [(doc.metadata or {}).get(name) for doc in new_docs]
            converted = cls._convert(name, kind, added, docids, len(keep))
            old = np.asarray(source.columns[name])[keep]
            if kind == "number":
                columns[name] = ("number", np.concatenate([old, converted[1]]))
            else:  # merge the dictionaries: old codes are renumbered into the merged sorted values
                old_values, (new_values, new_codes) = source.values[name], converted[1]
                merged = sorted(set(old_values) | set(new_values))
                position = {value: code for code, value in enumerate(merged)}
                remap_old = np.array([position[value] for value in old_values] + [-1], dtype=np.int32)
                remap_new = np.array([position[value] for value in new_values] + [-1], dtype=np.int32)
                codes = np.concatenate([remap_old[old], remap_new[new_codes]])
                columns[name] = ("keyword", (merged, codes))
        return cls._write(Path(folder), source.config, docids, columns)

    @staticmethod
    def _convert(name: str, kind: str, values: list[Any], docids: Sequence[str], first_row: int) -> tuple[str, Any]:
        """A field's raw metadata values as its column: float64 for a number, (sorted values, codes) for a keyword."""
        convert = number_value if kind == "number" else keyword_value
        out: list[Any] = []
        for offset, value in enumerate(values):
            try:
                out.append(convert(value))
            except (ValueError, OverflowError):
                doc_id = docids[first_row + offset]
                wanted = "a number" if kind == "number" else "a string, number or boolean"
                raise DataError(
                    f"document {doc_id!r}: filterable field {name!r} is {str(value)[:60]!r}, not {wanted} "
                    f"(declared {name}:{kind}); fix the value or declare the field otherwise"
                ) from None
        if kind == "number":
            return kind, np.array([math.nan if value is None else value for value in out], dtype=np.float64)
        distinct = sorted({value for value in out if value is not None})
        position = {value: code for code, value in enumerate(distinct)}
        codes = np.array([-1 if value is None else position[value] for value in out], dtype=np.int32)
        return kind, (distinct, codes)

    @classmethod
    def _write(
        cls, folder: Path, config: FilterConfig, docids: Sequence[str], columns: dict[str, tuple[str, Any]]
    ) -> FilterColumns:
        folder.mkdir(parents=True, exist_ok=True)
        fields: dict[str, Any] = {}
        for number, (name, (kind, column)) in enumerate(columns.items()):
            entry: dict[str, Any] = {"type": kind, "file": f"{number}.npy"}
            if kind == "keyword":
                distinct, column = column
                entry["values"] = f"{number}.values.json"
                write_json_atomic(folder / entry["values"], distinct)
            save_npy_atomic(folder / entry["file"], column)
            fields[name] = entry
        write_json_atomic(folder / COLUMNS, {"fields": fields, "num_rows": len(docids)})
        return cls.load(folder, config, docids)

    @classmethod
    def load(cls, folder: str | Path, config: FilterConfig, docids: Sequence[str]) -> FilterColumns:
        """Open the columns (memory-mapped) after cheap checks of their shapes against the config and the rows."""
        columns = cls(Path(folder), config, docids)
        problems = columns._problems()
        if problems:
            raise IndexFormatError(f"{folder}: " + "; ".join(problems) + "; rebuild the index")
        return columns

    def _problems(self) -> list[str]:
        fields = self.info.get("fields", {})
        declared = {name: entry.get("type") for name, entry in fields.items()}
        if declared != self.types:
            return [f"{COLUMNS} holds fields {declared}, the config declares {self.types}"]
        problems = []
        for name, column in self.columns.items():
            dtype = np.float64 if self.types[name] == "number" else np.int32
            if column.shape != (self.num_docs,) or column.dtype != dtype:
                problems.append(
                    f"field {name!r} is {column.dtype}{column.shape}, expected {np.dtype(dtype)}({self.num_docs},)"
                )
        if self.info.get("num_rows") != self.num_docs:
            problems.append(f"{COLUMNS} says {self.info.get('num_rows')} rows, the index has {self.num_docs}")
        return problems

    def verify(self) -> list[str]:
        """Problems with the files (empty when sound): shapes, codes within their dictionaries, sorted dictionaries."""
        problems = self._problems()
        for name, distinct in self.values.items():
            codes = self.columns[name]
            if not all(isinstance(value, str) for value in distinct) or distinct != sorted(set(distinct)):
                problems.append(f"field {name!r}: its values are not distinct sorted strings")
            elif len(codes) and (int(codes.min()) < -1 or int(codes.max()) >= len(distinct)):
                problems.append(f"field {name!r}: codes outside its {len(distinct)} values")
        return problems

    # -- evaluation
    def mask(self, spec: FilterSpec) -> np.ndarray:
        """The rows that meet every condition of ``spec`` (a bool array over rows; all True for no condition)."""
        parsed = parse_filter(spec)
        mask = np.ones(self.num_docs, dtype=bool)
        for condition in parsed.conditions:
            mask &= self._condition(condition)
        return mask

    def _condition(self, condition: Condition) -> np.ndarray:
        field, op, values = condition
        if field not in self.columns:
            known = ", ".join(self.types) or "none"
            raise ConfigError(
                f"filter {condition}: unknown field {field!r}; the index's filterable fields are: {known} "
                "(declare more at build: --filterable FIELD[:number])"
            )
        column = np.asarray(self.columns[field])
        if self.types[field] == "number":
            numbers = [self._number(condition, value) for value in values]
            return _compare(column, op, numbers) & ~np.isnan(column)
        distinct = self.values[field]
        present = column >= 0
        if op in ("=", "in"):
            codes = [code for code in (_code(distinct, value) for value in values) if code is not None]
            return np.isin(column, codes)
        value = values[0]
        if op == "!=":
            code = _code(distinct, value)
            return present if code is None else present & (column != code)
        # codes follow string order: a comparison with a string is one with its insertion point
        bounds = {
            "<": ("left", np.less),
            "<=": ("right", np.less),
            ">": ("right", np.greater_equal),
            ">=": ("left", np.greater_equal),
        }
        side, compare = bounds[op]
        cut = bisect.bisect_left(distinct, value) if side == "left" else bisect.bisect_right(distinct, value)
        return present & compare(column, cut)

    @staticmethod
    def _number(condition: Condition, value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            raise ConfigError(f"filter {condition}: {value!r} is not a number ({condition.field} is a number field)")
        return number


def _code(distinct: list[str], value: str) -> int | None:
    """The code of ``value`` in a sorted dictionary, None when no row has it."""
    position = bisect.bisect_left(distinct, value)
    return position if position < len(distinct) and distinct[position] == value else None


def _compare(column: np.ndarray, op: str, numbers: list[float]) -> np.ndarray:
    if op == "in":
        return np.isin(column, numbers)
    operations = {
        "=": np.equal,
        "!=": np.not_equal,
        "<": np.less,
        "<=": np.less_equal,
        ">": np.greater,
        ">=": np.greater_equal,
    }
    result: np.ndarray = operations[op](column, numbers[0])
    return result
