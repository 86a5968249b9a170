"""Significance: the paired t-test and the paired randomization test against ranx's ``compare`` and scipy on one
fixed example, Holm by hand, ``searchkit compare`` through the command line, and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_cli

from searchkit.cli.main import cli
from searchkit.evaluate.metrics import evaluate
from searchkit.evaluate.significance import (
    compare_to_baseline,
    holm,
    paired_p_value,
    paired_t_test,
    permutation_test,
)
from searchkit.evaluate.tables import format_p
from searchkit.formats import read_qrels, write_run
from searchkit.types import ConfigError, DataError, Hit

METRICS = ["nDCG@10", "RR@10"]
RANX_METRICS = {"nDCG@10": "ndcg@10", "RR@10": "mrr@10"}


def _example() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, list[Hit]]]]:
    """12 queries over 40 documents, graded qrels, three runs without ties: "bm25", "better" (scores nudged
    towards relevant documents) and "best" (nudged more)."""
    rng = np.random.default_rng(2026)
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, dict[str, list[Hit]]] = {"bm25": {}, "better": {}, "best": {}}
    for q in range(12):
        qid = f"q{q}"
        docs = [f"d{i}" for i in rng.permutation(40)[:20]]
        relevant = rng.choice(20, size=4, replace=False)
        qrels[qid] = {docs[i]: int(rng.integers(1, 3)) for i in relevant}
        noise = rng.random(20)
        for name, nudge in (("bm25", 0.0), ("better", 0.25), ("best", 0.6)):
            scores = noise + nudge * np.array([doc in qrels[qid] for doc in docs]) * rng.random(20)
            runs[name][qid] = [Hit(doc, float(score)) for doc, score in zip(docs, scores, strict=True)]
    return qrels, runs


@pytest.fixture(scope="module")
def example() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, list[Hit]]]]:
    return _example()


def _per_query(evaluation: object, metric: str) -> list[float]:
    per_query = evaluation.per_query  # type: ignore[attr-defined]
    return [per_query[q][metric] for q in sorted(per_query)]


def _ranx(example: tuple[dict[str, dict[str, int]], dict[str, dict[str, list[Hit]]]], **options: object) -> object:
    import ranx

    qrels, runs = example
    ranx_runs = []
    for name, run in runs.items():
        ranx_run = ranx.Run.from_dict({q: {h.doc_id: h.score for h in hits} for q, hits in run.items()})
        ranx_run.name = name
        ranx_runs.append(ranx_run)
    return ranx.compare(ranx.Qrels.from_dict(qrels), ranx_runs, metrics=list(RANX_METRICS.values()), **options)


def test_t_test_matches_ranx_and_scipy(example: tuple) -> None:  # type: ignore[type-arg]
    from scipy.stats import ttest_rel

    qrels, runs = example
    evaluations = {name: evaluate(run, qrels, METRICS) for name, run in runs.items()}
    report = _ranx(example, stat_test="student")
    for name in ("better", "best"):
        for metric, theirs in RANX_METRICS.items():
            assert evaluations[name].aggregate[metric] == pytest.approx(report.results[name][theirs], abs=1e-12)
            ours = paired_t_test(_per_query(evaluations[name], metric), _per_query(evaluations["bm25"], metric))
            ranx_p = report.comparisons["bm25", name][theirs]["p_value"]
            scipy_p = ttest_rel(_per_query(evaluations[name], metric), _per_query(evaluations["bm25"], metric)).pvalue
            assert ours == pytest.approx(ranx_p, rel=1e-9) and ours == pytest.approx(scipy_p, rel=1e-12)
            assert 0 < ours < 1
    significance = compare_to_baseline(evaluations, "bm25", METRICS, "t")
    for metric, theirs in RANX_METRICS.items():
        raw = [report.comparisons["bm25", name][theirs]["p_value"] for name in ("better", "best")]
        corrected = holm(raw)
        assert significance.raw["better"][metric] == pytest.approx(raw[0], rel=1e-9)
        assert [significance.p[name][metric] for name in ("better", "best")] == pytest.approx(corrected, rel=1e-9)


def test_permutation_test_is_exact_and_matches_ranx_and_scipy(example: tuple) -> None:  # type: ignore[type-arg]
    from scipy.stats import permutation_test as scipy_permutation_test

    qrels, runs = example
    evaluations = {name: evaluate(run, qrels, METRICS) for name, run in runs.items()}
    report = _ranx(example, stat_test="fisher", n_permutations=20_000, random_seed=7)
    for name in ("better", "best"):
        for metric, theirs in RANX_METRICS.items():
            system, base = _per_query(evaluations[name], metric), _per_query(evaluations["bm25"], metric)
            ours = permutation_test(system, base)  # 12 queries: all 4,096 sign assignments
            exact = scipy_permutation_test(
                (np.array(system), np.array(base)),
                lambda x, y: np.mean(x - y),
                permutation_type="samples",
                n_resamples=np.inf,
            ).pvalue
            assert ours == pytest.approx(min(1.0, exact), abs=1e-12)
            if metric == "nDCG@10":
                # ranx draws 20,000 random permutations: within 4 standard errors of the exact value. (Not for
                # MRR: its per-query values 1, 1/2, 1/3, ... make many assignments tie the observed difference
                # exactly, and ranx compares means computed in another order, so float error drops the ties,
                # the identity included: it reports p = 0 where the exact value is 1/64.)
                assert abs(ours - report.comparisons["bm25", name][theirs]["p_value"]) < 4 * math.sqrt(0.25 / 20_000)


def test_the_permutation_test_by_hand_and_when_it_draws() -> None:
    # d = (0.2, -0.1, 0.3): of the 8 sign assignments, |sum| >= 0.4 for (+,-,+), (-,+,-), (+,+,+), (-,-,-)
    assert permutation_test([0.5, 0.1, 0.9], [0.3, 0.2, 0.6]) == 0.5
    assert permutation_test([0.5, 0.1], [0.5, 0.1]) == 1.0  # no query differs
    rng = np.random.default_rng(3)
    a, b = rng.random(30), rng.random(30) * 0.8  # 2**30 assignments: 5,000 are drawn
    drawn = permutation_test(a, b, permutations=5000, seed=11)
    assert drawn == permutation_test(a, b, permutations=5000, seed=11)  # seeded
    assert drawn != permutation_test(a, b, permutations=5000, seed=12)
    from scipy.stats import permutation_test as scipy_permutation_test

    reference = scipy_permutation_test(
        (a, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=50_000, random_state=1
    ).pvalue
    assert abs(drawn - reference) < 0.03
    assert paired_p_value(a, b, "t") == pytest.approx(paired_t_test(a, b))
    with pytest.raises(ConfigError, match="must be one of t, permutation"):
        paired_p_value(a, b, "wilcoxon")
    with pytest.raises(DataError, match="equal-length"):
        paired_t_test([1.0, 2.0], [1.0])


def test_holm_by_hand() -> None:
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> kept at 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.5]) == [1.0, 1.0]  # capped
    assert holm([0.2]) == [0.2]
    adjusted = holm([0.02, math.nan, 0.01])  # NaN is not counted: m = 2
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm([]) == []


def test_compare_to_baseline_refuses_unpaired_runs(example: tuple) -> None:  # type: ignore[type-arg]
    qrels, runs = example
    full = evaluate(runs["bm25"], qrels, METRICS)
    fewer = evaluate(runs["best"], {q: qrels[q] for q in list(qrels)[:6]}, METRICS)
    with pytest.raises(DataError, match="not scored on the same queries"):
        compare_to_baseline({"bm25": full, "best": fewer}, "bm25", METRICS)
    with pytest.raises(ConfigError, match="baseline 'dense' is not one of the runs"):
        compare_to_baseline({"bm25": full}, "dense", METRICS)


def _write(tmp_path: Path, example: tuple) -> tuple[Path, list[Path]]:  # type: ignore[type-arg]
    qrels, runs = example
    qrels_path = tmp_path / "qrels.txt"
    rows = [f"{q} 0 {doc} {grade}\n" for q, docs in qrels.items() for doc, grade in docs.items()]
    qrels_path.write_text("".join(rows), encoding="utf-8")
    assert read_qrels(qrels_path) == qrels
    paths = []
    for name, run in runs.items():
        paths.append(tmp_path / f"{name}.trec")
        write_run(run, paths[-1], tag=name)
    return qrels_path, paths


def test_compare_command_prints_the_table_with_p_values(tmp_path: Path, example: tuple) -> None:  # type: ignore[type-arg]
    qrels_path, paths = _write(tmp_path, example)
    report = _ranx(example, stat_test="student")
    runner = CliRunner()
    args = ["compare", str(qrels_path), *map(str, paths), "--baseline", "bm25", "--metrics", "nDCG@10,RR@10"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "nDCG@10", "p", "RR@10", "p"]
    assert lines[2].split()[:2] == ["bm25", "(baseline)"]
    for line, name in zip(lines[3:5], ("better", "best"), strict=True):
        cells = line.split()
        assert cells[0] == name
        for column, metric in ((2, "ndcg@10"), (4, "mrr@10")):
            raw = [report.comparisons["bm25", other][metric]["p_value"] for other in ("better", "best")]
            assert cells[column] == format_p(holm(raw)[("better", "best").index(name)])
        assert cells[1] == f"{report.results[name]['ndcg@10']:.4f}"
    assert lines[5].startswith("p: two-sided paired t-test against bm25 over 12 queries, Holm-corrected")

    as_json = runner.invoke(cli, [*args, "--test", "permutation", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["baseline"] == "bm25" and data["test"] == "permutation" and data["queries"] == 12
    assert set(data["runs"]) == {"bm25", "better", "best"} and set(data["p"]) == {"better", "best"}
    for metric in METRICS:
        raw = [data["raw"][name][metric] for name in ("better", "best")]
        assert [data["p"][name][metric] for name in ("better", "best")] == pytest.approx(holm(raw))
    by_path = runner.invoke(cli, ["compare", str(qrels_path), *map(str, paths), "--baseline", str(paths[1])])
    assert by_path.exit_code == 0 and "better (baseline)" in by_path.output  # a path names its run too


def test_compare_command_errors_are_one_line(
    tmp_path: Path,
    example: tuple,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
) -> None:
    qrels_path, paths = _write(tmp_path, example)
    broken = tmp_path / "broken.trec"
    broken.write_text("q1 Q0 d1 1 0.5 tag\nq2 Q0 d2 1\n", encoding="utf-8")
    code, out, err = run_cli(["compare", str(qrels_path), str(paths[0]), str(broken)], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "broken.trec:2: expected 6 columns" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["compare", str(qrels_path), *map(str, paths), "--baseline", "dense"], capsys)
    assert code == 2 and "'dense' is none of the runs: bm25, better, best" in err
