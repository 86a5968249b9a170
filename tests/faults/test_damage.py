"""Damage every file of an index (delete, truncate, flip a byte) and every manifest key (missing, wrong type, a
future format version): ``Index.open`` (no full verification) either refuses the index with a SearchkitError or
answers exactly as the undamaged index does; ``verify`` finds every change that matters. Nothing is silently wrong.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from searchkit.config import TokensConfig
from searchkit.index import Index
from searchkit.types import SearchkitError

if TYPE_CHECKING:
    from .conftest import FaultTables

QUERIES = ["cats chasing mice", "solar electricity", "wind energy storage", "leading zeros document"]


def _answers(index: Index, vectors: np.ndarray) -> Any:
    """Everything a user can get out of an index: hits of both components, stored tokens, documents, ids, configs."""
    assert index.bm25 is not None and index.dense is not None and index.tokens is not None
    return (
        [index.bm25.search(query, 8) for query in QUERIES],
        index.tokens.rows(range(index.num_docs)),
        index.tokens.fingerprint,
        index.dense.search_vectors(vectors, 8),
        index.documents(index.docids),
        list(index.iter_documents()),
        index.docids,
        index.components,
        index.num_docs,
    )


@pytest.fixture(scope="module")
def pristine(tiny_hybrid_index: Index, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Any]:
    folder = tmp_path_factory.mktemp("damage") / "pristine"
    shutil.copytree(tiny_hybrid_index.path, folder)
    Index.open(folder).add(tokens=TokensConfig(max_length=16))  # short rows: most documents are cut
    index = Index.open(folder, verify=True)
    assert index.dense is not None
    vectors = index.dense.encode_queries(QUERIES)
    return folder, vectors, _answers(index, vectors)


def _flip(offset: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset(len(data))] ^= 0x20
        path.write_bytes(bytes(data))

    return damage


FILE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "delete": lambda path: path.unlink(),
    "truncate to half": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "truncate to 0": lambda path: path.write_bytes(b""),
    "append a byte": lambda path: path.write_bytes(path.read_bytes() + b"\x00"),
    "flip first byte": _flip(lambda n: 0),
    "flip middle byte": _flip(lambda n: n // 2),
    "flip last byte": _flip(lambda n: n - 1),
}


def _manifest_edits(manifest: dict[str, Any]) -> dict[str, Callable[[dict[str, Any]], None]]:
    """Per key: missing, and wrong type; plus a future format version and edits deeper inside."""
    edits: dict[str, Callable[[dict[str, Any]], None]] = {}
    for key in manifest:
        edits[f"{key}: missing"] = lambda m, key=key: m.pop(key)
        edits[f"{key}: wrong type"] = lambda m, key=key: m.__setitem__(
            key, "7" if not isinstance(m[key], str) else [m[key]]
        )
    edits["format_version: future"] = lambda m: m.__setitem__("format_version", m["format_version"] + 1)
    edits["num_docs: other value"] = lambda m: m.__setitem__("num_docs", m["num_docs"] - 1)
    edits["bm25 k1: other value"] = lambda m: m["components"]["bm25"]["config"].__setitem__("k1", 0.9)
    edits["dense factory: other"] = lambda m: m["components"]["dense"]["config"].__setitem__("faiss_factory", "HNSW8")
    edits["dense model: other"] = lambda m: m["components"]["dense"]["config"].__setitem__("model", "elsewhere")
    edits["tokens max_length: other"] = lambda m: m["components"]["tokens"]["config"].__setitem__("max_length", 8)
    edits["tokens model: other"] = lambda m: m["components"]["tokens"]["config"].__setitem__("model", "elsewhere")
    edits["tokens fingerprint: other"] = lambda m: m["components"]["tokens"].__setitem__("fingerprint", "0" * 64)
    edits["tokens fingerprint: missing"] = lambda m: m["components"]["tokens"].pop("fingerprint")
    edits["files: one missing"] = lambda m: m["files"].pop("docids.txt")
    edits["files: path outside"] = lambda m: m["files"].__setitem__("../escape", m["files"].pop("docids.txt"))
    edits["sizes: one changed"] = lambda m: m["sizes"].__setitem__("docids.txt", 3)
    edits["component: unknown"] = lambda m: m["components"].__setitem__("sparse", {"config": {}})
    edits["checksum: other value"] = lambda m: m.__setitem__("checksum", "0" * 64)
    return edits


# Edits that leave what every file means unchanged: none since the checksum became required (issue 19): a manifest
# without it is refused like any other edit (only a format-1 manifest with neither checksum nor sizes is older).
HARMLESS_EDITS: set[str] = set()


def _classify(
    folder: Path, vectors: np.ndarray | None, expected: Any, answers: Callable[[Index, Any], Any] = _answers
) -> tuple[str, bool]:
    """('on open' | 'harmless' | 'silently wrong', detected by verify)."""
    try:
        index = Index.open(folder)
        outcome = "harmless" if answers(index, vectors) == expected else "silently wrong"
    except SearchkitError as err:
        assert "\n" not in str(err), f"error message is not one line: {err}"
        outcome = "on open"
    try:
        Index.open(folder, verify=True)
        verified = False
    except SearchkitError:
        verified = True
    return outcome, verified


def _record(tables: FaultTables, target: str, outcome: str, by_verify: bool) -> None:
    row = tables.damaged(target)
    row.cases += 1
    row.on_open += outcome == "on open"
    row.harmless += outcome == "harmless"
    row.silently_wrong += outcome == "silently wrong"
    row.by_verify += by_verify


def test_damaged_files_are_detected(
    pristine: tuple[Path, np.ndarray, Any], tmp_path: Path, fault_tables: FaultTables
) -> None:
    source, vectors, expected = pristine
    relpaths = [*sorted(json.loads((source / "manifest.json").read_text())["files"]), "manifest.json"]
    assert all(any(p.startswith(f"{name}/") for p in relpaths) for name in ("bm25", "dense", "tokens"))
    label = lambda relpath: f"index file {relpath.split('/')[0] + '/*' if '/' in relpath else relpath}"  # noqa: E731
    assert (
        _damage_each(source, relpaths, tmp_path, fault_tables, label, lambda f: _classify(f, vectors, expected)) == []
    )


def _damage_each(
    source: Path,
    relpaths: list[str],
    tmp_path: Path,
    tables: FaultTables,
    label: Callable[[str], str],
    classify: Callable[[Path], tuple[str, bool]],
) -> list[str]:
    """Every FILE_DAMAGE done to every file of a copy of ``source``, classified and recorded; the failures."""
    failures = []
    for relpath in relpaths:
        for kind, damage in FILE_DAMAGE.items():
            folder = tmp_path / "case"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(source, folder)
            damage(folder / relpath)
            outcome, by_verify = classify(folder)
            _record(tables, label(relpath), outcome, by_verify)
            if outcome != "on open" or not by_verify:
                failures.append(f"{relpath} {kind}: {outcome}, verify {'found' if by_verify else 'missed'} it")
    return failures


def test_edited_manifest_keys_are_detected(
    pristine: tuple[Path, np.ndarray, Any], tmp_path: Path, fault_tables: FaultTables
) -> None:
    source, vectors, expected = pristine
    manifest = json.loads((source / "manifest.json").read_text())
    failures = []
    for name, edit in _manifest_edits(manifest).items():
        folder = tmp_path / "case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source, folder)
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        (folder / "manifest.json").write_text(json.dumps(edited, indent=2), encoding="utf-8")
        outcome, by_verify = _classify(folder, vectors, expected)
        _record(fault_tables, "manifest.json keys", outcome, by_verify)
        wanted = ("harmless", False) if name in HARMLESS_EDITS else ("on open", True)
        if (outcome, by_verify) != wanted:
            failures.append(f"{name}: {outcome}, verify {'found' if by_verify else 'missed'} it")
    assert failures == []


def test_an_index_without_sizes_or_checksum_still_opens(pristine: tuple[Path, np.ndarray, Any], tmp_path: Path) -> None:
    """Indexes written before the manifest recorded sizes and its own checksum open and verify as before."""
    source, vectors, expected = pristine
    folder = tmp_path / "older"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["sizes"], manifest["checksum"]
    manifest["format_version"] = 1  # what such indexes were
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    assert _answers(Index.open(folder, verify=True), vectors) == expected
    (folder / "docs.jsonl").write_bytes((folder / "docs.jsonl").read_bytes().replace(b"Cats", b"Bats", 1))
    with pytest.raises(SearchkitError, match=r"checksum mismatch in docs\.jsonl"):
        Index.open(folder)


# ---------------------------------------------------------------------- an updated index: tombstones, filter columns
def _updated_answers(index: Index, _: Any = None) -> Any:
    """What a user gets out of an updated index with filters: plain and filtered hits, masks, documents, ids."""
    from searchkit.search import Searcher

    searcher = Searcher(index, mode="bm25")
    return (
        searcher.search_batch(QUERIES, 8),
        searcher.search_batch(QUERIES, 8, filter="year>=2003"),
        searcher.search_batch(QUERIES, 8, filter="lang in en,de"),
        index.deleted_rows.tolist(),
        index.documents(index.docids),
        index.docids,
        index.num_docs,
    )


@pytest.fixture(scope="module")
def updated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The tiny corpus with metadata and filter columns, then updated: d2 replaced, d4 deleted, d9 added."""
    from searchkit.config import FilterConfig
    from searchkit.formats import read_corpus
    from searchkit.types import Document

    docs = [
        doc._replace(metadata={"year": 2000 + row, "lang": ["en", "fr", "de"][row % 3]})
        for row, doc in enumerate(read_corpus(Path(__file__).resolve().parents[1] / "data" / "tiny"))
    ]
    folder = tmp_path_factory.mktemp("damage") / "updated"
    index = Index.build(docs, folder, filters=FilterConfig(["year:number", "lang"]))
    added = [Document("d2", "Solar cats", metadata={"year": 2009, "lang": "en"}), Document("d9", "Wind mice")]
    index = index.update(add=added, delete=["d4"])
    assert len(index.deleted_rows) == 2
    return folder, _updated_answers(index)


def test_damaged_update_files_are_detected(
    updated: tuple[Path, Any], tmp_path: Path, fault_tables: FaultTables
) -> None:
    """The files an update writes or changes: tombstones, filter columns, BM25 term frequencies and lengths."""
    source, expected = updated
    relpaths = [
        p
        for p in json.loads((source / "manifest.json").read_text())["files"]
        if p.split("/")[0] in ("deleted.npy", "filters", "bm25")
    ]
    assert "deleted.npy" in relpaths and "bm25/tf.csc.index.npy" in relpaths and "filters/1.values.json" in relpaths
    label = lambda relpath: f"updated index {relpath.split('/')[0]}"  # noqa: E731
    classify = lambda folder: _classify(folder, None, expected, _updated_answers)  # noqa: E731
    assert _damage_each(source, relpaths, tmp_path, fault_tables, label, classify) == []


def test_tombstones_edited_consistently_are_refused(updated: tuple[Path, Any], tmp_path: Path) -> None:
    """deleted.npy and the manifest changed together (checksums redone): verify still finds the disagreement with
    the BM25 component, so no edit of the tombstones alone can bring a deleted document back."""
    from searchkit.formats import save_npy_atomic
    from searchkit.index.manifest import write_manifest

    source, _ = updated
    folder = tmp_path / "edited"
    shutil.copytree(source, folder)
    save_npy_atomic(folder / "deleted.npy", np.array([1], dtype=np.int64))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["num_docs"] += 1
    write_manifest(folder, manifest)
    with pytest.raises(SearchkitError, match=r"its deleted rows are not the index's deleted\.npy"):
        Index.open(folder, verify=True)


# ---------------------------------------------------------------------- a trained reranker folder
PAIRS = (["cats chasing mice", "solar electricity"], ["Cats chase mice around the garden.", "Solar panels."])


def _reranker_answers(folder: Path) -> Any:
    from searchkit.models.cross_encoder import CrossEncoderReranker

    reranker = CrossEncoderReranker(folder, batch_size=4, device="cpu", dtype="fp32")
    return reranker.score(*PAIRS).tolist(), reranker.interpolation, reranker.max_length


@pytest.fixture(scope="module")
def trained_model(tiny_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A model folder as `searchkit train` leaves it: save_pretrained files, then the searchkit.json card."""
    from searchkit.models.cards import write_reranker_card

    folder = tmp_path_factory.mktemp("model") / "reranker"
    shutil.copytree(tiny_cross_encoder, folder)
    write_reranker_card(folder, {"interpolation": 0.5, "max_length": 48, "score_kind": "logit"})
    return folder, _reranker_answers(folder)


def _classify_model(folder: Path, expected: Any) -> str:
    try:
        answers = _reranker_answers(folder)
    except SearchkitError as err:
        assert "\n" not in str(err), f"error message is not one line: {err}"
        return "on open"
    return "harmless" if answers == expected else "silently wrong"


def test_damaged_model_folders_are_refused(
    trained_model: tuple[Path, Any], tmp_path: Path, fault_tables: FaultTables
) -> None:
    """Loading is the model's only check (there is no separate verify): every damage must be refused there."""
    source, expected = trained_model
    names = sorted(p.name for p in source.iterdir() if p.is_file())
    assert {"config.json", "model.safetensors", "searchkit.json"} <= set(names)
    failures = []
    cases = [(name, kind, damage) for name in names for kind, damage in FILE_DAMAGE.items()]
    card = json.loads((source / "searchkit.json").read_text())
    for key in card:
        cases.append(("searchkit.json keys", f"{key}: missing", lambda path, key=key: _edit_json(path, key, None)))
        cases.append(("searchkit.json keys", f"{key}: wrong type", lambda path, key=key: _edit_json(path, key, [7])))
    cases.append(("searchkit.json keys", "format_version: future", lambda path: _edit_json(path, "format_version", 2)))
    for name, kind, damage in cases:
        folder = tmp_path / "case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source, folder)
        damage(folder / (name if name in names else "searchkit.json"))
        if (name, kind) == ("searchkit.json", "delete"):
            # Without its card the folder is a plain Hugging Face cross-encoder (valid, cannot be told from one):
            # the same scores, only the card's settings (interpolation) are gone. Counted as harmless, documented.
            scores, interpolation, _ = _reranker_answers(folder)
            assert scores == expected[0] and interpolation is None
            _record(fault_tables, f"model {name}", "harmless", False)
            continue
        if name == "README.md":
            # The Hugging Face model card is documentation written for people (and the Hub) from searchkit.json,
            # which it never overrides: outside the checksums on purpose, so users may edit it. Damage to it must
            # change nothing the model answers.
            assert _reranker_answers(folder)[:2] == expected[:2], kind
            _record(fault_tables, f"model {name}", "harmless", False)
            continue
        outcome = _classify_model(folder, expected)
        _record(fault_tables, f"model {name}", outcome, outcome == "on open")
        if outcome != "on open" and kind != "checksum: missing":
            failures.append(f"{name} {kind}: {outcome}")
    assert failures == []


def _edit_json(path: Path, key: str, value: Any) -> None:
    payload = json.loads(path.read_text())
    if value is None:
        payload.pop(key)
    else:
        payload[key] = value
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
