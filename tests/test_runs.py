"""Run files fused and reranked: ``fuse_runs`` against ranx on shared examples and against the Searcher's own hybrid
to the bit; ``searchkit fuse`` and ``searchkit rerank`` from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from searchkit.config import FusionConfig
from searchkit.evaluate.runs import run_queries
from searchkit.formats import read_queries, read_run, write_run
from searchkit.ranking.fusion import fuse_runs
from searchkit.search import Searcher
from searchkit.types import ConfigError, DataError, Hit, Run

TINY = Path(__file__).parent / "data" / "tiny"

# Three runs with distinct, non-constant scores per query (ranx maps constant scores to 0, searchkit's min-max to 1),
# documents missing from some runs, and a query one run lacks entirely.
RUN_A: Run = {
    "q1": [Hit("d1", 12.5), Hit("d2", 7.25), Hit("d3", 3.0), Hit("d4", 1.5)],
    "q2": [Hit("d5", 4.0), Hit("d1", 2.0), Hit("d6", 0.5)],
}
RUN_B: Run = {
    "q1": [Hit("d3", 0.91), Hit("d5", 0.72), Hit("d1", 0.35), Hit("d7", 0.1)],
    "q2": [Hit("d6", 0.88), Hit("d5", 0.41), Hit("d2", 0.2)],
}
RUN_C: Run = {
    "q1": [Hit("d7", 30.0), Hit("d2", 22.0), Hit("d1", 9.0)],
    "q2": [Hit("d2", 3.5), Hit("d6", 1.25)],
}


def ranx_fused(
    runs: list[Run], method: str, params: dict[str, Any], norm: str = "min-max"
) -> dict[str, dict[str, float]]:
    from ranx import Run as RanxRun
    from ranx import fuse

    queries = sorted({qid for run in runs for qid in run})
    converted = [RanxRun({qid: {hit.doc_id: hit.score for hit in run.get(qid, [])} for qid in queries}) for run in runs]
    return {qid: dict(docs) for qid, docs in fuse(converted, norm=norm, method=method, params=params).to_dict().items()}


def as_scores(run: Run) -> dict[str, dict[str, float]]:
    return {qid: {hit.doc_id: hit.score for hit in hits} for qid, hits in run.items()}


CASES = [
    ("rrf", {}, "rrf", {"k": 60}, "minmax"),
    ("rrf", {"rrf_k": 10}, "rrf", {"k": 10}, "minmax"),
    ("convex", {"weights": [0.2, 0.3, 0.5]}, "wsum", {"weights": [0.2, 0.3, 0.5]}, "minmax"),
    ("combsum", {}, "sum", {}, "minmax"),
    ("combmnz", {}, "mnz", {}, "minmax"),
    ("combsum", {}, "sum", {}, "max"),
    ("combmnz", {}, "mnz", {}, "sum"),
    ("combsum", {}, "sum", {}, "zmuv"),
]


@pytest.mark.parametrize(("method", "ours", "theirs", "params", "norm"), CASES)
def test_fusion_equals_ranx_on_shared_examples(
    method: str, ours: dict[str, Any], theirs: str, params: dict[str, Any], norm: str
) -> None:
    fused = fuse_runs([RUN_A, RUN_B, RUN_C], method, norm=norm, **ours)
    expected = ranx_fused([RUN_A, RUN_B, RUN_C], theirs, params, {"minmax": "min-max"}.get(norm, norm))
    got = as_scores(fused)
    assert got.keys() == expected.keys()
    for qid in expected:
        assert got[qid].keys() == expected[qid].keys()
        assert got[qid] == pytest.approx(expected[qid], rel=1e-12, abs=1e-12)
        # ranked by score, ties by doc id descending
        assert [h.doc_id for h in fused[qid]] == [
            d for d, _ in sorted(got[qid].items(), key=lambda item: (item[1], item[0]), reverse=True)
        ]


def test_rrf_by_hand_and_a_query_one_run_lacks() -> None:
    fused = fuse_runs([{"q": [Hit("a", 2.0), Hit("b", 1.0)], "only": [Hit("x", 1.0)]}, {"q": [Hit("b", 9.0)]}])
    assert fused["q"] == [Hit("b", 1 / 62 + 1 / 61), Hit("a", 1 / 61)]
    assert fused["only"] == [Hit("x", 1 / 61)]


def test_fusion_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ConfigError, match="two runs"):
        fuse_runs([RUN_A])
    with pytest.raises(ConfigError, match="one weight per run"):
        fuse_runs([RUN_A, RUN_B], "convex", weights=[1.0])
    with pytest.raises(ConfigError, match="weights apply to convex"):
        fuse_runs([RUN_A, RUN_B], "rrf", weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="unknown fusion method"):
        fuse_runs([RUN_A, RUN_B], "borda")


def stage_runs(index: Any, tmp_path: Path) -> tuple[Path, Path, list[Any]]:
    """The tiny queries' BM25 and dense runs at depth 8, written to TREC files as `searchkit run` would."""
    queries = list(read_queries(TINY))
    paths = []
    for mode in ("bm25", "dense"):
        path = tmp_path / f"{mode}.trec"
        write_run(run_queries(Searcher(index, mode=mode), queries, 8), path)
        paths.append(path)
    return paths[0], paths[1], queries


def test_fusing_the_stage_run_files_is_the_searchers_hybrid_to_the_bit(
    tiny_hybrid_index: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bm25, dense, queries = stage_runs(tiny_hybrid_index, tmp_path)
    hybrid = run_queries(Searcher(tiny_hybrid_index, mode="hybrid", fusion=FusionConfig(depth=8)), queries, 8)
    assert fuse_runs([read_run(bm25), read_run(dense)], "rrf") == hybrid  # Hit equality: float scores exactly
    convex = Searcher(tiny_hybrid_index, mode="hybrid", fusion=FusionConfig(method="convex", alpha=0.3, depth=8))
    assert fuse_runs([read_run(bm25), read_run(dense)], "convex", weights=[0.7, 0.3]) == run_queries(convex, queries, 8)

    out = tmp_path / "fused.trec"
    code, stdout, stderr = run_cli(["fuse", str(bm25), str(dense), "-o", str(out)], capsys)
    assert code == 0, stderr
    assert "2 runs (rrf)" in stdout
    assert read_run(out) == hybrid


def test_fuse_cli_bad_weights_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(RUN_A, tmp_path / "a.trec")
    write_run(RUN_B, tmp_path / "b.trec")
    args = ["fuse", str(tmp_path / "a.trec"), str(tmp_path / "b.trec"), "-o", str(tmp_path / "o.trec")]
    code, _, stderr = run_cli([*args, "--method", "convex", "--weights", "0.5"], capsys)
    assert code == 1 and stderr.strip().count("\n") == 0 and "one weight per run" in stderr
    code, _, stderr = run_cli([*args, "--method", "convex", "--weights", "a,b"], capsys)
    assert code == 2 and "--weights" in stderr


# ---------------------------------------------------------------------- rerank any run
RUNS = Path(__file__).parent / "data" / "runs"


@pytest.fixture(scope="module")
def rerank_config(tiny_cross_encoder: Path) -> Any:
    from searchkit.config import RerankConfig

    return RerankConfig(str(tiny_cross_encoder), device="cpu", dtype="fp32", depth=3)


def test_rerank_run_scores_another_systems_run_as_the_cross_encoder_does(
    tiny_hybrid_index: Any, tiny_cross_encoder: Path, rerank_config: Any
) -> None:
    from scipy.special import logit
    from sentence_transformers import CrossEncoder

    from searchkit.formats import document_text

    run = read_run(RUNS / "other-system.trec")
    texts = {q.query_id: q.text for q in read_queries(TINY)}
    reranked = Searcher(tiny_hybrid_index, rerank=rerank_config).rerank_run(texts, run)
    oracle = CrossEncoder(str(tiny_cross_encoder), device="cpu")  # sigmoid of the logits, in fp32
    assert list(reranked) == list(run)
    for qid, hits in run.items():
        head = hits[:3]
        pairs = [(texts[qid], document_text(tiny_hybrid_index.document(h.doc_id))) for h in head]
        expected = dict(zip([h.doc_id for h in head], logit(oracle.predict(pairs)).tolist(), strict=True))
        got = reranked[qid]
        assert {h.doc_id for h in got[:3]} == set(expected)
        assert [h.score for h in got[:3]] == pytest.approx([expected[h.doc_id] for h in got[:3]], abs=1e-4)
        assert [h.doc_id for h in got[3:]] == [h.doc_id for h in hits[3:]]  # the tail keeps its order, below
        assert all(t.score < min(h.score for h in got[:3]) for t in got[3:])


def test_reranking_a_searchkit_run_file_is_the_searchers_own_rerank(
    tiny_hybrid_index: Any, rerank_config: Any, tmp_path: Path
) -> None:
    queries = list(read_queries(TINY))
    path = tmp_path / "bm25.trec"
    write_run(run_queries(Searcher(tiny_hybrid_index, mode="bm25"), queries, 8), path)
    own = run_queries(Searcher(tiny_hybrid_index, mode="bm25", rerank=rerank_config), queries, 8)
    texts = {q.query_id: q.text for q in queries}
    from_file = Searcher(tiny_hybrid_index, rerank=rerank_config).rerank_run(texts, read_run(path), batch_size=2)
    assert {qid: hits for qid, hits in from_file.items() if hits} == {qid: hits for qid, hits in own.items() if hits}


def test_rerank_cli_reports_the_input_runs_recall_at_depth(
    tiny_hybrid_index: Any, tiny_cross_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "reranked.trec"
    base = ["rerank", str(tiny_hybrid_index.path), str(RUNS / "other-system.trec"), "-o", str(out)]
    args = [*base, "--queries", str(TINY), "--model", str(tiny_cross_encoder), "--depth", "3", "--device", "cpu"]
    code, stdout, stderr = run_cli([*args, "--qrels", str(TINY), "-m", "nDCG@10", "--json"], capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    # R@3 by hand: q1 {d1, d5} -> d1 of the top 3: 1/2; q2 {d3, d8}: 1; q4 {007}: 1; q3 {d2}, not in the run: 0
    assert report["input"]["R@3"] == pytest.approx(0.625)
    assert report["reranked"]["R@3"] == pytest.approx(0.625)  # reranking the top 3 cannot change what it holds
    assert set(report["reranked"]) == {"R@3", "nDCG@10"}
    assert read_run(out).keys() == {"q1", "q2", "q4"}

    code, stdout, _ = run_cli([*args, "--qrels", str(TINY)], capsys)
    assert code == 0 and "input other-system.trec" in stdout and "R@3" in stdout
    by_corpus = tmp_path / "by-corpus.trec"
    code, stdout, stderr = run_cli([*args[:4], str(by_corpus), *args[5:], "--corpus", str(TINY), "--json"], capsys)
    assert code == 0, stderr
    assert json.loads(stdout) == {"output": str(by_corpus), "depth": 3, "queries": 3}
    assert _close(read_run(by_corpus), read_run(out))


def _close(a: Run, b: Run) -> bool:
    return a.keys() == b.keys() and all(
        [h.doc_id for h in a[q]] == [h.doc_id for h in b[q]]
        and [h.score for h in a[q]] == pytest.approx([h.score for h in b[q]], abs=1e-5)
        for q in a
    )


def test_rerank_candidates_missing_from_the_store_are_one_line(
    tiny_hybrid_index: Any, tiny_cross_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["rerank", str(tiny_hybrid_index.path), str(RUNS / "unknown-docs.trec"), "-o", str(tmp_path / "o.trec")]
    code, stdout, stderr = run_cli([*args, "--queries", str(TINY), "--model", str(tiny_cross_encoder)], capsys)
    assert code == 1 and stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip() and "Loading weights" not in line]  # their bar
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "2 candidates" in stderr and "q1:d99" in stderr and "q2:x-17" in stderr and "--corpus" in stderr
    assert not (tmp_path / "o.trec").exists()
    texts = {"q1": "cats"}
    with pytest.raises(DataError, match="1 of the run's 2 queries have no text"):
        Searcher(tiny_hybrid_index, rerank=_config(tiny_cross_encoder)).rerank_run(
            texts, read_run(RUNS / "unknown-docs.trec")
        )


def _config(model: Path) -> Any:
    from searchkit.config import RerankConfig

    return RerankConfig(str(model), device="cpu", dtype="fp32")
