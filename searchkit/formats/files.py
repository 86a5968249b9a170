"""Sources and files: what a path names (BEIR folder, JSONL/TSV file, ``irds:`` id), content hashes, atomic
writes (temp file + ``os.replace``), and line iteration that accepts LF/CRLF, a UTF-8 BOM, gzip and blank lines."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from searchkit.types import DataError

Source = str | Path


IRDS_PREFIX = "irds:"


_EXPECTED = "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>"


_GZIP_MAGIC = b"\x1f\x8b"


def is_irds(source: Source) -> bool:
    """Whether ``source`` names an ir-datasets dataset rather than a path.

    >>> is_irds("irds:beir/scifact/test"), is_irds("tests/data/tiny")
    (True, False)
    """
    return isinstance(source, str) and source.startswith(IRDS_PREFIX)


def existing(source: Source, expected: str = _EXPECTED) -> Path:
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
    path = existing(source)
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: Python < 3.13's symlink loop, in a race
        raise DataError(
            "symlink loop" if isinstance(err, RuntimeError) else f"cannot resolve ({err})", source
        ) from None


def beir_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
        if (folder / name).is_symlink():
            existing(folder / name)  # a loop or a dangling link: say so rather than "no corpus.jsonl"
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
    path = existing(source)
    return beir_file(path, "corpus") if path.is_dir() else path


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
    path = existing(path)
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


def is_tsv(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson", ".tsv", ".txt")):
        return name.endswith((".tsv", ".txt"))
    first = next(iter_lines(path), None)
    return first is None or not first[1].lstrip().startswith("{")
