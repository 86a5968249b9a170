"""A manifest that cannot be switched off (issue 19, item 3): its checksum is required, the query-side dense
settings it records are cross-checked with the component's own files, open refuses files the manifest does not list,
and verify checks embeddings.npy against the FAISS index row for row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchkit.formats import json_checksum, sha256_file
from searchkit.index import Index
from searchkit.types import IndexFormatError, SearchkitError

from .conftest import CLI


@pytest.fixture
def hybrid_copy(tiny_hybrid_index: Any, tmp_path: Path) -> Path:
    folder = tmp_path / "idx"
    shutil.copytree(tiny_hybrid_index.path, folder)
    return folder


def _manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def _save(folder: Path, manifest: dict[str, Any], *, rehash: bool = True) -> None:
    """Write ``manifest`` back, its files' digests, sizes and its own checksum redone (a deliberate edit) unless not."""
    if rehash:
        for relpath in manifest["files"]:
            manifest["files"][relpath] = sha256_file(folder / relpath)
            manifest["sizes"][relpath] = (folder / relpath).stat().st_size
        manifest["checksum"] = json_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _refused_on_open(folder: Path, cli: CLI, *words: str) -> None:
    with pytest.raises(IndexFormatError) as caught:
        Index.open(folder)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message
    done = cli("search", folder, "solar", "--mode", "dense")
    assert done.returncode == 1 and "Traceback" not in done.stderr and all(word in done.stderr for word in words)


def test_the_checksum_cannot_be_deleted_to_change_the_query_prefix(hybrid_copy: Path, cli: CLI) -> None:
    manifest = _manifest(hybrid_copy)
    del manifest["checksum"]
    manifest["components"]["dense"]["config"]["query_prefix"] = "query: "
    _save(hybrid_copy, manifest, rehash=False)
    _refused_on_open(hybrid_copy, cli, "has no 'checksum'", "edited or damaged")


@pytest.mark.parametrize(("setting", "value"), [("query_prefix", "query: "), ("normalize", False), ("max_length", 32)])
def test_query_settings_are_checked_against_the_component(
    hybrid_copy: Path, cli: CLI, setting: str, value: Any
) -> None:
    """Even an edit with the checksum redone: model.json records how queries must be encoded."""
    manifest = _manifest(hybrid_copy)
    manifest["components"]["dense"]["config"][setting] = value
    _save(hybrid_copy, manifest)
    _refused_on_open(hybrid_copy, cli, f"model.json records {setting}", "the manifest's config says")


def test_an_unlisted_file_in_a_component_folder_is_refused(hybrid_copy: Path, cli: CLI) -> None:
    """index.faiss zeroed and taken out of the manifest (checksum redone) used to be searched."""
    manifest = _manifest(hybrid_copy)
    del manifest["files"]["dense/index.faiss"], manifest["sizes"]["dense/index.faiss"]
    (hybrid_copy / "dense" / "index.faiss").write_bytes(
        b"\x00" * (hybrid_copy / "dense" / "index.faiss").stat().st_size
    )
    _save(hybrid_copy, manifest)
    _refused_on_open(hybrid_copy, cli, "dense/index.faiss is not listed in the manifest")
    (hybrid_copy / "dense" / "extra.npy").write_bytes(b"stray")  # any unlisted file, not only a component's own
    with pytest.raises(IndexFormatError, match=r"dense/extra\.npy is not listed"):
        Index.open(hybrid_copy)


def test_verify_checks_the_embeddings_against_the_faiss_index(hybrid_copy: Path, cli: CLI) -> None:
    """Rows of embeddings.npy reversed, digests redone: open cannot tell (it does not hash big arrays' meaning), but
    verify reconstructs a sample from FAISS and finds the rows differ (cascade would score the wrong documents)."""
    path = hybrid_copy / "dense" / "embeddings.npy"
    embeddings = np.load(path)
    np.save(path, np.ascontiguousarray(embeddings[::-1]))
    _save(hybrid_copy, _manifest(hybrid_copy))
    Index.open(hybrid_copy)
    with pytest.raises(SearchkitError, match=r"index\.faiss does not hold embeddings\.npy row for row"):
        Index.open(hybrid_copy, verify=True)
    done = cli("index", "verify", hybrid_copy)
    assert done.returncode == 1 and "does not hold embeddings.npy row for row" in done.stderr


def test_a_pristine_index_verifies(hybrid_copy: Path) -> None:
    index = Index.open(hybrid_copy, verify=True)
    assert index.manifest["format_version"] == 2
    assert json.loads((hybrid_copy / "dense" / "model.json").read_text())["query"] == {
        "query_prefix": "",
        "normalize": True,
        "max_length": index.components["dense"].max_length,
    }
