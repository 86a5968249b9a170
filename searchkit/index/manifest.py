"""The manifest: what an index folder holds, checked on open and by verify, written last by every generation.

``manifest.json`` records the format and its integer version, the searchkit version, the source, the fields read,
every component's config, every file's sha256 and size, and its own sha256 (``checksum``, over the canonical JSON
of the other keys); see :mod:`searchkit.index.layout` for the folder's files. :func:`check_manifest` refuses a
manifest that is not one, is newer than this searchkit, or was edited; :func:`open_problems` checks the files
against it cheaply (sizes, and the digests of small files).

>>> try:
...     check_manifest({"format": "searchkit-index", "format_version": 99}, Path("manifest.json"))
... except IndexFormatError as err:
...     print(str(err)[:60])
manifest.json: written by searchkit ? (index format 99); thi
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from searchkit.config import (
    config_from_dict,
)
from searchkit.formats import json_checksum, sha256_file, write_json_atomic
from searchkit.index.components import COMPONENTS, component_kind, is_component_name
from searchkit.index.layout import (
    DELETED,
    DOCIDS,
    DOCSTORE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    OFFSETS,
    OPEN_HASH_LIMIT,
)
from searchkit.types import ConfigError, IndexFormatError
from searchkit.version import __version__


class Generation(Protocol):
    """An opened generation of an index (what a new one is assembled from): its folder and its manifest."""

    @property
    def path(self) -> Path: ...

    @property
    def manifest(self) -> Mapping[str, Any]: ...


def checksums(folder: Path, previous: Generation | None = None) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest, keyed by POSIX relative path.

    A file hard-linked from ``previous`` (the generation a new one is made from: same inode) keeps the digest its
    manifest records, so an update hashes only the files it wrote.
    """
    known: dict[str, str] = previous.manifest["files"] if previous is not None else {}
    digests = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == MANIFEST:
            continue
        relpath = path.relative_to(folder).as_posix()
        linked = previous is not None and relpath in known and same_file(path, previous.path / relpath)
        digests[relpath] = known[relpath] if linked else sha256_file(path)
    return digests


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_manifest(folder: Path, manifest: dict[str, Any], previous: Generation | None = None) -> None:
    """Record every file's sha256 and size, then the manifest's own checksum, and write it atomically."""
    manifest["files"] = checksums(folder, previous)
    manifest["sizes"] = {relpath: (folder / relpath).stat().st_size for relpath in manifest["files"]}
    manifest.pop("checksum", None)
    manifest["checksum"] = json_checksum(manifest)
    write_json_atomic(folder / MANIFEST, manifest)


def load_deleted(folder: Path, manifest: dict[str, Any]) -> np.ndarray:
    """The tombstone rows the manifest lists (``deleted.npy``), as a sorted int64 array; empty without one."""
    if DELETED not in manifest.get("files", {}):
        return np.zeros(0, dtype=np.int64)
    try:
        deleted = np.load(folder / DELETED, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise IndexFormatError(f"{folder / DELETED}: unreadable ({err}); run `searchkit index verify`") from None
    if deleted.ndim != 1 or deleted.dtype != np.int64:
        raise IndexFormatError(f"{folder / DELETED}: {deleted.dtype}{deleted.shape}, expected int64 rows")
    return deleted


def read_manifest(folder: Path) -> Any:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def manifest_changed(manifest_path: Path, raw: bytes) -> bool:
    """Whether the manifest is no longer the one read at the start of an open (the folder was swapped)."""
    try:
        return manifest_path.read_bytes() != raw
    except OSError:
        return True


def open_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Cheap checks of the files against the manifest: present, recorded size, sha256 when small."""
    problems: list[str] = []
    sizes: dict[str, int] = manifest.get("sizes", {})
    for relpath, digest in manifest["files"].items():
        file = folder / relpath
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            problems.append(f"missing file {relpath}")
            continue
        if relpath in sizes and size != sizes[relpath]:
            problems.append(f"{relpath} has {size} bytes, the manifest says {sizes[relpath]}")
        elif size <= OPEN_HASH_LIMIT and sha256_file(file) != digest:
            problems.append(f"checksum mismatch in {relpath}")
    for required in (DOCIDS, DOCSTORE, OFFSETS):
        if required not in manifest["files"]:
            problems.append(f"the manifest lists no {required}")
    problems.extend(f"{relpath} is not listed in the manifest" for relpath in unlisted_files(folder, manifest))
    return problems


def unlisted_files(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Files in the index folder (hidden ones aside) that the manifest does not list: a component must never read a
    file nobody vouched for, so open refuses them and verify reports them."""
    listed = manifest.get("files", {})
    return [
        relpath
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.name != MANIFEST
        and (relpath := path.relative_to(folder).as_posix()) not in listed
        and not any(part.startswith(".") for part in Path(relpath).parts)
    ]


def check_manifest(manifest: Any, path: Path) -> None:
    """The manifest's schema, format version, component configs and checksum; IndexFormatError (or ConfigError
    for a bad component setting) naming the key."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a searchkit index manifest; rebuild the index")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IndexFormatError(f"{path}: format_version missing or not an integer; rebuild the index")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: written by searchkit {manifest.get('searchkit_version', '?')} (index format {version}); "
            f"this searchkit {__version__} reads formats up to {FORMAT_VERSION}: upgrade with "
            "`pip install -U searchkit` or rebuild the index with this version"
        )

    def bad(key: str, wanted: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: '{key}' is missing or not {wanted}; rebuild the index")

    # The checksum cannot be switched off: every manifest written since it existed has it (format 2, and format 1
    # from the same change that added ``sizes``), so only a format-1 manifest with neither is an older index.
    if version >= 2 or "sizes" in manifest or "checksum" in manifest:
        for key in ("checksum", "sizes"):
            if key not in manifest:
                raise IndexFormatError(
                    f"{path}: the manifest has no '{key}' (format {version} always writes one): it was edited or "
                    "damaged; rebuild the index"
                )

    num_docs = manifest.get("num_docs")
    if not isinstance(num_docs, int) or isinstance(num_docs, bool) or num_docs < 1:
        raise bad("num_docs", "a positive integer")
    rows = manifest.get("num_rows", num_docs)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < num_docs:
        raise bad("num_rows", "an integer of at least num_docs")
    generation = manifest.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise bad("generation", "a non-negative integer")
    if rows != num_docs and DELETED not in manifest.get("files", {}):
        raise IndexFormatError(
            f"{path}: {rows - num_docs} rows are deleted but no {DELETED} is listed; rebuild the index"
        )
    components = manifest.get("components")
    if not isinstance(components, dict) or not components:
        raise bad("components", "a non-empty object")
    unknown = {name for name in components if not is_component_name(name)}
    if unknown:
        raise IndexFormatError(f"{path}: unknown components {sorted(unknown)}; upgrade searchkit")
    for name, entry in components.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise bad(f"components.{name}.config", "an object")
        fingerprint = entry.get("fingerprint")
        if name == "tokens" and not (isinstance(fingerprint, str) and len(fingerprint) == 64):
            raise bad(f"components.{name}.fingerprint", "a sha256 digest")
        try:
            config_from_dict(COMPONENTS[component_kind(name)].config_class, entry["config"])
        except ConfigError as err:
            raise ConfigError(f"{path}: components.{name}: {err}") from None
        except (TypeError, ValueError) as err:
            raise IndexFormatError(f"{path}: components.{name}.config is invalid ({err}); rebuild the index") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(key, str) and isinstance(value, str) and len(value) == 64 for key, value in files.items()
    ):
        raise bad("files", "an object of sha256 digests")
    for relpath in files:
        parts = Path(relpath).parts
        if Path(relpath).is_absolute() or ".." in parts or not parts:
            raise IndexFormatError(f"{path}: file {relpath!r} lies outside the index; rebuild the index")
    if "sizes" in manifest:
        sizes = manifest["sizes"]
        if not isinstance(sizes, dict) or set(sizes) != set(files):
            raise bad("sizes", "an object with the size of every file")
        if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in sizes.values()):
            raise bad("sizes", "an object of byte counts")
    for key in ("source", "fields"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(key, "an object")
    if "checksum" in manifest and manifest["checksum"] != json_checksum(manifest):
        raise IndexFormatError(f"{path}: checksum mismatch: the manifest was edited or damaged; rebuild the index")
