"""Races: threads sharing one Searcher, a reader process while the index is rebuilt under it, two builds at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from searchkit.config import BM25Config
from searchkit.index import Index
from searchkit.index.generations import build_lock
from searchkit.search import Searcher
from searchkit.types import Document

if TYPE_CHECKING:
    from .conftest import CLI

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"
QUERIES = ["cats chasing mice", "solar electricity", "wind energy", "leading zeros document", "the of and", "dogs"]


# ---------------------------------------------------------------------- threads
@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder: Path) -> Any:
    from searchkit.models.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(tiny_cross_encoder, max_length=48, batch_size=4, device="cpu", dtype="fp32")


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid", "hybrid+rerank"])
def test_eight_threads_share_a_searcher(mode: str, tiny_hybrid_index: Index, reranker: Any) -> None:
    rerank = reranker if mode.endswith("+rerank") else None
    searcher = Searcher(tiny_hybrid_index, mode=mode.removesuffix("+rerank"), rerank=rerank)
    serial = {query: searcher.search(query, 5) for query in QUERIES}
    serial_batch = searcher.search_batch(QUERIES, 5)  # a batch may round differently (1e-7) from single queries
    work = [query for _ in range(6) for query in QUERIES]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda query: (query, searcher.search(query, 5)), work))
        batches = list(pool.map(lambda _: searcher.search_batch(QUERIES, 5), range(8)))
    assert all(hits == serial[query] for query, hits in results)
    assert all(batch == serial_batch for batch in batches)


# ---------------------------------------------------------------------- a reader while the index is rebuilt
READER = r"""
import json, sys, time
from pathlib import Path
from searchkit.index import Index

target, expected_file, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
expected = json.loads(expected_file.read_text())

def answer(index):
    hits = index.bm25.search("solar electricity", 4)
    docs = index.documents([hit.doc_id for hit in hits])
    return [[hit.doc_id, hit.score, doc.text] for hit, doc in zip(hits, docs)]

def check(index, report, where):
    if len(sys.argv) > 5:  # updates: the manifest's generation number names what the index holds
        generation = str(index.manifest["generation"])
    else:
        k1 = index.manifest["components"]["bm25"]["config"]["k1"]
        generation = index.manifest["source"]["sha256"] + ":" + str(k1)
    got = answer(index)
    if generation not in expected:
        report["errors"].append(f"{where}: unknown generation {generation}")
    elif got != expected[generation]:
        report["errors"].append(f"{where}: mixed generations: {got} for {generation}")
    else:
        report["seen"][generation] = report["seen"].get(generation, 0) + 1

report = {"seen": {}, "errors": [], "opens": 0}
pinned = Index.open(target)  # opened once, before any rebuild: keeps serving its own generation
Path(sys.argv[4]).write_text("ready")
while not stop.exists():
    try:
        check(Index.open(target), report, "fresh open")
        report["opens"] += 1
        check(pinned, report, "long-lived index")
    except Exception as err:
        report["errors"].append(f"{type(err).__name__}: {err}")
print(json.dumps(report))
"""


def _corpus(folder: Path, variant: str) -> Path:
    folder.mkdir(parents=True)
    rows = [json.loads(line) for line in (TINY / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    if variant == "B":  # same ids, other texts and therefore other scores
        rows = [{**row, "text": row["text"] + " solar" * (i % 3)} for i, row in enumerate(rows)]
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / "corpus.jsonl").write_text(lines, encoding="utf-8")
    return folder / "corpus.jsonl"


def _generation(index: Index) -> str:
    return index.manifest["source"]["sha256"] + ":" + str(index.manifest["components"]["bm25"]["config"]["k1"])


def test_reader_never_errors_nor_mixes_generations_during_rebuilds_and_adds(tmp_path: Path) -> None:
    """Generations: corpus A or B (same ids, other texts) x BM25 k1 1.2 or 0.9, switched by builds and adds."""
    corpora = {variant: _corpus(tmp_path / variant, variant) for variant in "AB"}
    target = tmp_path / "live"
    expected = {}
    for corpus in corpora.values():
        for k1 in (1.2, 0.9):
            index = Index.build(corpus, target, bm25=BM25Config(k1=k1), overwrite=True)
            assert index.bm25 is not None
            hits = index.bm25.search("solar electricity", 4)
            docs = index.documents([hit.doc_id for hit in hits])
            expected[_generation(index)] = [[h.doc_id, h.score, d.text] for h, d in zip(hits, docs, strict=True)]
    assert len({json.dumps(answer) for answer in expected.values()}) == 4

    def rebuild() -> None:
        for round_ in range(15):
            variant = "AB"[round_ % 2]
            index = Index.build(corpora[variant], target, bm25=BM25Config(k1=1.2), overwrite=True)
            index.add(bm25=BM25Config(k1=0.9), overwrite=True)

    report = _read_while(target, expected, rebuild, tmp_path)
    assert report["errors"] == []
    assert len(report["seen"]) >= 3 and report["opens"] >= 10, report


def _read_while(
    target: Path, expected: dict[str, Any], write: Callable[[], None], work: Path, *key: str
) -> dict[str, Any]:
    """Run the READER process on ``target`` while ``write`` changes it; its report (``key``: "updates" names
    generations by the manifest's number)."""
    (work / "expected.json").write_text(json.dumps(expected), encoding="utf-8")
    stop, ready = work / "stop", work / "ready"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(target), str(work / "expected.json"), str(stop), str(ready), *key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert reader.poll() is None, reader.communicate()[1]
            assert time.monotonic() < deadline, "the reader did not start"
            time.sleep(0.05)
        write()
    finally:
        stop.write_text("stop")
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def _updates(round_: int) -> tuple[list[Document], list[str]]:
    """Round i of the update race: d3 replaced by a text naming solar i % 3 + 1 times, d5 deleted or re-added."""
    texts = [Document("d3", "solar " * (round_ % 3 + 1) + "electricity round " + str(round_))]
    if round_ % 2:
        return [*texts, Document("d5", "Electricity from solar cells, again")], []
    return texts, ["d5"]


def test_reader_never_errors_nor_mixes_generations_during_updates(tmp_path: Path) -> None:
    """Generations made by `Index.update` (replacements, deletions, re-adds, compactions), each named by its number."""
    rounds = 12
    reference = Index.build(TINY, tmp_path / "reference")
    expected = {}
    for round_ in range(rounds + 1):  # the same updates, once, to know what every generation answers
        assert reference.bm25 is not None
        hits = reference.bm25.search("solar electricity", 4)
        docs = reference.documents([hit.doc_id for hit in hits])
        expected[str(reference.generation)] = [[h.doc_id, h.score, d.text] for h, d in zip(hits, docs, strict=True)]
        added, deleted = _updates(round_)
        reference = reference.update(add=added, delete=deleted)
    target = tmp_path / "live"
    index = Index.build(TINY, target)

    def update() -> None:
        current = index
        for round_ in range(rounds):
            added, deleted = _updates(round_)
            current = current.update(add=added, delete=deleted)
            time.sleep(0.2)  # room for the reader to open each generation even on busy cores (the counts below)

    report = _read_while(target, expected, update, tmp_path, "updates")
    assert report["errors"] == []
    assert len(report["seen"]) >= 3 and report["opens"] >= 10, report


# ---------------------------------------------------------------------- two builds, one target
def test_a_second_build_fails_while_one_holds_the_target(tmp_path: Path, cli: CLI) -> None:
    target = tmp_path / "idx"
    with build_lock(target):
        second = cli("index", "build", "--corpus", TINY, "-o", target)
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "another build or add of this index is running" in second.stderr
    assert not target.exists()
    Index.build(TINY, target)  # the lock is gone with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_two_concurrent_builds_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    command = [sys.executable, "-m", "searchkit", "index", "build", "--corpus", str(TINY), "-o", str(target)]
    builds = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((build.wait(timeout=120), build.communicate()[1]) for build in builds)
    (won, _), (lost, error) = outcomes
    assert (won, lost) == (0, 1), outcomes
    assert error.count("\n") == 1 and ("another build or add" in error or "already exists" in error), error
    Index.open(target, verify=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_open_retries_when_the_swap_lands_between_its_read_and_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window a reader once lost under the full suite: its manifest read fails because the folder was moved
    aside, and by the time it looks again the next generation already stands at the path. That is a swap, not a
    folder without a manifest: the open retries and gets the new generation."""
    import os

    from searchkit.index.generations import old_dir
    from searchkit.index.layout import MANIFEST

    target = tmp_path / "live"
    Index.build(TINY, target, bm25=BM25Config(k1=1.2))
    Index.build(TINY, tmp_path / "next", bm25=BM25Config(k1=0.9))
    real_read = Path.read_bytes
    swaps = []

    def read_during_swap(path: Path) -> bytes:
        if path == target / MANIFEST and not swaps:  # the whole swap happens while this read is in flight
            os.replace(target, old_dir(target))
            os.replace(tmp_path / "next", target)
            swaps.append(path)
            raise FileNotFoundError(path)
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_during_swap)
    index = Index.open(target)
    assert swaps and index.manifest["components"]["bm25"]["config"]["k1"] == 0.9
