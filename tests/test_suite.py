"""Expected-score suites: loading, validation, runs that pass and fail, query selection."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from searchkit.config import BM25Config, RerankConfig
from searchkit.evaluate.metrics import DEFAULT_METRICS
from searchkit.experiments.suite import run_suite
from searchkit.experiments.suite_file import load_suite, with_reranker
from searchkit.formats import read_queries
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.types import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny"


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-9)


def test_a_dataset_runs_exactly_its_splits_queries(tmp_path: Path) -> None:
    """The default selection is read_queries(source, split=...): the judged queries, whatever share of the file
    they are; queries = "all" runs every query (unjudged ones then follow `unjudged`)."""
    text = tiny_suite(tmp_path).read_text()
    judged = load_suite(write_suite(tmp_path, text.replace('queries = "all"\n', ""), "judged.toml"))
    assert judged.datasets["tiny"].queries == "split"
    assert judged.datasets["tiny"].read_queries() == read_queries(TINY, split="test")
    assert [q.query_id for q in judged.datasets["tiny"].read_queries()] == ["q1", "q2", "q3", "q4"]
    result = run_suite(judged, write=False)
    assert result.conditions[0].queries["rule"] == "judged in test" and result.conditions[0].queries["run"] == 4
    assert result.conditions[0].evaluation.num_queries == 4  # q5, unjudged, never ran
    every = load_suite(tiny_suite(tmp_path))
    assert [q.query_id for q in every.datasets["tiny"].read_queries()] == ["q1", "q2", "q3", "q4", "q5"]
    with pytest.raises(ConfigError, match=r"\[datasets.tiny\]: must be one of split, all, got 'some'"):
        load_suite(write_suite(tmp_path, text.replace('queries = "all"', 'queries = "some"'), "bad.toml"))


# ---------------------------------------------------------------------------------------------------- suites

TINY_SUITE = """
[suite]
name = "tiny"
metrics = ["nDCG@10", "RR@10", "R@100", "AP"]
tolerance = 0.001

[datasets.tiny]
source = "{source}"
queries = "all"
index = "indexes/tiny"

[[conditions]]
name = "bm25"
dataset = "tiny"
mode = "bm25"
bm25 = {{ k1 = 1.5, b = 0.75 }}
k = 10
expected = {{ "nDCG@10" = {ndcg}, "MRR@10" = 0.6 }}
"""
# Expected by hand from the tiny fixture: q1 -> d1, d5 (both judged: every metric 1), q2 -> d3, d8, d4
# (d3, d8 judged: 1), q4 -> 007 (1), q3 is all stopwords (no hits: 0), q5 is unjudged (0, kept).
# Every metric is 3/5 = 0.6 over the 5 queries (unjudged = "zero"), 3/4 = 0.75 with unjudged = "skip".


def write_suite(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_suite(tmp_path: Path, ndcg: float = 0.6) -> Path:
    return write_suite(tmp_path, TINY_SUITE.format(source=TINY.as_posix(), ndcg=ndcg))


def test_load_suite(tmp_path: Path) -> None:
    suite = load_suite(tiny_suite(tmp_path))
    assert suite.name == "tiny"
    assert suite.tolerance == 0.001
    (cond,) = suite.conditions
    assert cond.expected == {"nDCG@10": 0.6, "RR@10": 0.6}
    assert cond.bm25 == BM25Config(k1=1.5, b=0.75)
    assert cond.index == (tmp_path / "indexes" / "tiny").resolve()
    assert suite.datasets["tiny"].source == TINY


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("tolerance = 0.001", "tolerance = 0.001\ntolerence = 1", r"\[suite\]: unknown key 'tolerence'"),
        ('index = "indexes/tiny"', 'index = "i"\nsplt = "x"', r"\[datasets.tiny\]: unknown key 'splt'"),
        ("k = 10", "k = 10\ndepth = 5", r"'bm25': unknown key 'depth'"),
        ('expected = {{ "nDCG@10" = {ndcg}, "MRR@10" = 0.6 }}', "", "missing key 'expected'"),
        ('expected = {{ "nDCG@10" = {ndcg}, "MRR@10" = 0.6 }}', "expected = {{}}", "non-empty"),
        ('"MRR@10" = 0.6', '"MRR@x" = 0.6', "unknown metric"),
        ('"MRR@10" = 0.6', '"MRR@10" = "high"', "must be a number"),
        ('dataset = "tiny"', 'dataset = "tony"', "dataset 'tony' is not defined"),
        ('mode = "bm25"', 'mode = "sparse"', "must be one of bm25, dense, hybrid, cascade"),
        ("k1 = 1.5", "k1 = 1.5, kk = 2", "unknown BM25Config setting 'kk'"),
        ("k = 10", 'k = 10\ndense = {{ model = "m" }}', "mode 'bm25' does not use dense"),
        ("k = 10", "k = 0", "positive integer"),
        ('"nDCG@10", ', '"nDCG@10", "XYZ", ', "unknown metric"),
    ],
)
def test_suite_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in TINY_SUITE
    text = TINY_SUITE.replace(old, new).format(source=TINY.as_posix(), ndcg=0.6)
    path = write_suite(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value)  # every error names the file


def test_suite_errors_shared_index_and_duplicates(tmp_path: Path) -> None:
    other = TINY_SUITE.split("[[conditions]]")[1].replace('name = "bm25"', 'name = "bm25-b"')
    conflict = TINY_SUITE + "[[conditions]]" + other.replace("b = 0.75", "b = 0.5")
    with pytest.raises(ConfigError, match="own 'index' path"):
        load_suite(write_suite(tmp_path, conflict.format(source=TINY.as_posix(), ndcg=0.6)))
    duplicate = TINY_SUITE + "[[conditions]]" + TINY_SUITE.split("[[conditions]]")[1]
    with pytest.raises(ConfigError, match="duplicate condition names"):
        load_suite(write_suite(tmp_path, duplicate.format(source=TINY.as_posix(), ndcg=0.6)))
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "missing.toml")


def test_run_suite_check_passes(tmp_path: Path) -> None:
    from searchkit.formats import read_run

    suite = load_suite(tiny_suite(tmp_path))
    out = tmp_path / "results" / "tiny.json"
    result = run_suite(suite, check=True, output=out)
    assert result.passed
    (cond,) = result.conditions
    assert cond.evaluation.num_queries == 5
    assert cond.evaluation.aggregate == {m: approx(0.6) for m in DEFAULT_METRICS}
    assert cond.evaluation.report.unjudged.examples == ("q5",)
    assert cond.index["action"] == "built"
    rows = {c.metric: c for c in cond.comparisons}
    assert rows["nDCG@10"].ok and rows["RR@10"].ok and rows["AP"].ok is None
    text = result.format()
    assert "RR@10" in text and "MRR@10" not in text and "passed" in text and "k1=1.5" in text
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["passed"] is True
    assert saved["conditions"][0]["index"]["fingerprint"] == cond.index["fingerprint"]
    assert saved["conditions"][0]["evaluation"]["per_query"]["q3"]["nDCG@10"] == 0.0
    assert saved["searchkit_version"]
    assert "git_commit" in saved and "search" in saved["conditions"][0]["seconds"]
    run = read_run(out.with_name("tiny.bm25.trec"))
    assert [hit.doc_id for hit in run["q1"]] == ["d1", "d5"]
    # the index is reused on the next run; when its config changes it is rebuilt only when asked (issue 19)
    assert run_suite(suite, check=True, write=False).conditions[0].index["action"] == "reused"
    changed = load_suite(write_suite(tmp_path, tiny_suite(tmp_path).read_text().replace("k1 = 1.5", "k1 = 1.2")))
    with pytest.raises(ConfigError, match=r"bm25\.k1 is 1\.5 in the index, 1\.2 in the suite"):
        run_suite(changed, check=False, write=False)
    assert run_suite(changed, check=False, write=False, rebuild=True).conditions[0].index["action"] == "built"


def test_run_suite_wrong_expected_fails(tmp_path: Path) -> None:
    result = run_suite(load_suite(tiny_suite(tmp_path, ndcg=0.7)), check=True, write=False)
    assert not result.passed
    rows = {c.metric: c for c in result.conditions[0].comparisons}
    assert rows["nDCG@10"].ok is False
    assert rows["nDCG@10"].delta == approx(-0.1)
    assert rows["RR@10"].ok is True
    assert "FAIL" in result.format()
    assert result.to_dict()["passed"] is False


def test_run_suite_unjudged_skip_and_only(tmp_path: Path) -> None:
    text = tiny_suite(tmp_path).read_text()
    text = text.replace('mode = "bm25"', 'mode = "bm25"\nunjudged = "skip"').replace("= 0.6", "= 0.75")
    suite = load_suite(write_suite(tmp_path, text))
    result = run_suite(suite, check=True, write=False, only=["bm*"])
    assert result.passed
    assert result.conditions[0].evaluation.num_queries == 4
    with pytest.raises(ConfigError, match="no condition"):
        run_suite(suite, only=["dense"], write=False)


@pytest.mark.slow
def test_scifact_suite() -> None:
    result = run_suite(load_suite(ROOT / "eval" / "scifact.toml"), check=True, write=False)
    assert result.passed, result.format()
    ndcg = {cond.name: cond.evaluation.aggregate["nDCG@10"] for cond in result.conditions}
    assert all(cond.evaluation.num_queries == 300 for cond in result.conditions)
    assert ndcg["bm25"] >= 0.680  # issue acceptance; bm25s reports 0.686
    assert abs(ndcg["dense"] - 0.645) <= 0.005  # MTEB: 0.6451 for all-MiniLM-L6-v2
    assert ndcg["hybrid-rrf"] >= 0.70 and ndcg["hybrid-rrf"] > max(ndcg["bm25"], ndcg["dense"])


@pytest.mark.slow
def test_classic_suite() -> None:
    result = run_suite(load_suite(ROOT / "eval" / "classic.toml"), check=True, write=False)
    assert result.passed, result.format()
    ndcg = {cond.name: cond.evaluation.aggregate["nDCG@10"] for cond in result.conditions}
    better = [
        name
        for name in ("cranfield", "cisi", "medline", "vaswani")
        if ndcg[f"{name}-hybrid"] >= max(ndcg[f"{name}-bm25"], ndcg[f"{name}-dense"])
    ]
    assert len(better) >= 3, ndcg  # hybrid at least as good as the better single stage on 3 of the 4


def test_run_suite_hybrid_adds_dense_to_an_existing_index(tmp_path: Path) -> None:
    run_suite(load_suite(tiny_suite(tmp_path)), write=False)  # a BM25-only index
    hybrid = """
[[conditions]]
name = "hybrid"
dataset = "tiny"
mode = "hybrid"
bm25 = { k1 = 1.5, b = 0.75 }
fusion = { method = "rrf", depth = 10 }
k = 10
expected = { "R@100" = 0.8 }
"""
    # q3 (all stopwords) now gets dense hits: d2 is found, so R@100 = 4/5 where BM25 alone had 3/5
    suite = load_suite(write_suite(tmp_path, tiny_suite(tmp_path).read_text() + hybrid))
    first = run_suite(suite, only=["hybrid"], write=False)
    assert first.passed, first.format()
    assert first.conditions[0].index["action"] == "extended"
    assert set(first.conditions[0].index["components"]) == {"bm25", "dense"}
    again = run_suite(suite, write=False)
    assert [c.index["action"] for c in again.conditions] == ["reused", "reused"]
    assert "dense model=all-MiniLM-L6-v2" in again.format()


def test_run_suite_reranker_condition(tmp_path: Path) -> None:
    from searchkit.models.tiny import make_tiny_cross_encoder

    make_tiny_cross_encoder(tmp_path / "tiny-ce", words=["cats", "mice", "solar"])
    rerank = """
[[conditions]]
name = "bm25-rerank"
dataset = "tiny"
bm25 = { k1 = 1.5, b = 0.75 }
rerank = { model = "./tiny-ce", depth = 3, device = "cpu", dtype = "fp32" }
k = 10
expected = { "R@100" = 0.6 }
"""
    # the reranker only reorders what BM25 returned, so recall is BM25's: 3/5
    suite = load_suite(write_suite(tmp_path, tiny_suite(tmp_path).read_text() + rerank))
    assert suite.conditions[1].rerank == RerankConfig(str(tmp_path / "tiny-ce"), depth=3, device="cpu", dtype="fp32")
    alone = load_suite(write_suite(tmp_path, tiny_suite(tmp_path).read_text() + rerank.replace(
        'dtype = "fp32"', 'dtype = "fp32", interpolation = "none", fusion = "none"')))  # fmt: skip
    assert alone.conditions[1].rerank is not None
    assert (alone.conditions[1].rerank.interpolation, alone.conditions[1].rerank.fusion) == (None, None)
    result = run_suite(suite, output=tmp_path / "out" / "r.json")
    assert result.passed, result.format()
    assert result.conditions[0].first_stage is None
    first_stage = result.conditions[1].first_stage
    assert first_stage is not None and "R@3" in first_stage  # recall at the rerank depth, beside the reranked run
    assert first_stage["R@100"] == pytest.approx(0.6)
    assert "first stage alone (what the reranker was given): R@3" in result.format()
    from searchkit.formats import read_run

    plain, reranked = (read_run(tmp_path / "out" / f"r.{name}.trec") for name in ("bm25", "bm25-rerank"))
    assert {q: {h.doc_id for h in hits} for q, hits in plain.items()} == {
        q: {h.doc_id for h in hits} for q, hits in reranked.items()
    }
    bad = tiny_suite(tmp_path).read_text() + rerank.replace("depth = 3", "depth = 3, colour = 1")
    with pytest.raises(ConfigError, match="rerank: unknown RerankConfig setting 'colour'"):
        load_suite(write_suite(tmp_path, bad))


def test_with_reranker_derives_a_condition_that_run_suite_runs(tmp_path: Path, tiny_cross_encoder: Path) -> None:
    rerank = f"""
[[conditions]]
name = "bm25-rerank"
dataset = "tiny"
bm25 = {{ k1 = 1.5, b = 0.75 }}
rerank = {{ model = "{tiny_cross_encoder.as_posix()}", depth = 3, dtype = "fp32", interpolation = "none" }}
k = 3
expected = {{ "nDCG@10" = 0.5 }}
"""
    suite = load_suite(write_suite(tmp_path, tiny_suite(tmp_path).read_text() + rerank))
    plain, shipped = suite.conditions
    other = make_tiny_cross_encoder(tmp_path / "other-ce", seed=1, words=["cats", "mice", "solar"])
    derived = with_reranker(shipped, other, "ablation")
    assert shipped.rerank is not None and derived.rerank == dataclasses.replace(shipped.rerank, model=str(other))
    assert (derived.name, derived.index, derived.k, derived.mode, derived.expected) == (
        "ablation", shipped.index, 3, shipped.mode, {})  # fmt: skip
    result = run_suite(dataclasses.replace(suite, conditions=(derived,)), write=False)
    (row,) = result.conditions
    assert row.name == "ablation" and row.settings["rerank"]["model"] == str(other)
    assert all(c.expected is None for c in row.comparisons) and result.passed  # the pins were the other model's
    assert row.first_stage is not None and row.first_stage["R@3"] == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="'bm25' does not rerank"):
        with_reranker(plain, other, "ablation")


# ------------------------------------------------------------------------------------- datasets from recipes

RECIPE_SUITE = """
[suite]
name = "recipe"
metrics = ["nDCG@10"]

[datasets.tiny]
recipe = "tiny-index.toml"

[[conditions]]
name = "en"
dataset = "tiny"
mode = "bm25"
k = 10
expected = {{ "nDCG@10" = 0.75 }}

[[conditions]]
name = "bigram"
dataset = "tiny"
mode = "bm25.cjk-bigram"
k = 10
expected = {{ "nDCG@10" = {bigram} }}

[[conditions]]
name = "fused"
dataset = "tiny"
mode = "hybrid"
fusion = {{ stages = ["bm25", "bm25.cjk-bigram"] }}
k = 10
expected = {{ "nDCG@10" = 0.75 }}
"""

TINY_INDEX_RECIPE = """
corpus = "{source}"
output = "indexes/tiny-two"

[[bm25]]
analyzer = "en"

[[bm25]]
analyzer = "cjk-bigram"
"""


def test_a_dataset_built_from_an_index_recipe_serves_every_stage(tmp_path: Path) -> None:
    from searchkit.evaluate.metrics import evaluate
    from searchkit.evaluate.runs import run_queries
    from searchkit.formats import read_qrels
    from searchkit.index import Index
    from searchkit.search import Searcher

    write_suite(tmp_path, TINY_INDEX_RECIPE.format(source=TINY.as_posix()), "tiny-index.toml")
    built = Index.build(TINY, tmp_path / "oracle", bm25=[BM25Config(), BM25Config(analyzer="cjk-bigram")])
    queries = read_queries(TINY, split="test")  # the queries judged in test, as the suite selects them
    oracle_run = run_queries(Searcher(built, mode="bm25.cjk-bigram"), queries, 10)
    ids = [q.query_id for q in queries]
    bigram = evaluate(oracle_run, read_qrels(TINY, "test"), ["nDCG@10"], query_ids=ids).aggregate["nDCG@10"]
    suite = load_suite(write_suite(tmp_path, RECIPE_SUITE.format(bigram=round(bigram, 4))))
    assert suite.datasets["tiny"].source == TINY.resolve()
    assert suite.conditions[1].index == (tmp_path / "indexes" / "tiny-two").resolve()

    result = run_suite(suite, check=True, write=False)
    assert result.passed, result.format()
    assert [c.index["action"] for c in result.conditions] == ["built", "built", "built"]  # one build, shared
    assert set(result.conditions[0].index["components"]) == {"bm25", "bm25.cjk-bigram"}
    assert result.conditions[1].evaluation.aggregate["nDCG@10"] == approx(bigram)
    assert run_suite(suite, write=False).conditions[0].index["action"] == "reused"


@pytest.mark.parametrize(
    ("condition_extra", "dataset_extra", "message"),
    [
        ("bm25 = { k1 = 1.2 }", "", "is built from its recipe: set bm25 there"),
        ('index = "elsewhere"', "", "is built from its recipe: set index there"),
        ("", 'source = "x"', "give either 'recipe' or 'source'"),
        ("", "", ""),
    ],
)
def test_recipe_datasets_refuse_settings_of_their_own(
    tmp_path: Path, condition_extra: str, dataset_extra: str, message: str
) -> None:
    write_suite(tmp_path, TINY_INDEX_RECIPE.format(source=TINY.as_posix()), "tiny-index.toml")
    text = RECIPE_SUITE.format(bigram=0.5).replace(
        'recipe = "tiny-index.toml"', f'recipe = "tiny-index.toml"\n{dataset_extra}'
    )
    text = text.replace('mode = "bm25.cjk-bigram"', f'mode = "bm25.cjk-bigram"\n{condition_extra}')
    path = write_suite(tmp_path, text)
    if not message:
        assert load_suite(path).conditions[1].mode == "bm25.cjk-bigram"
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_suite(path)


def test_stage_modes_need_a_recipe_dataset(tmp_path: Path) -> None:
    text = TINY_SUITE.format(source=TINY.as_posix(), ndcg=0.6).replace('mode = "bm25"', 'mode = "bm25.zh"')
    refusal = "mode: must be one of bm25, dense, hybrid, cascade, got 'bm25.zh'"
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        load_suite(write_suite(tmp_path, text))


# ---------------------------------------------------------------------------------------------------- significance
BASELINE_SUITE = """
[suite]
name = "tiny-significance"
metrics = ["nDCG@10", "RR@10", "R@100"]
baseline = "bm25"
test = "permutation"

[datasets.tiny]
source = "{source}"
queries = "all"
index = "indexes/tiny"

[[conditions]]
name = "bm25"
dataset = "tiny"
expected = {{ "RR@10" = 0.6 }}

[[conditions]]
name = "bm25-top1"
dataset = "tiny"
k = 1
expected = {{ "RR@10" = 0.6 }}

[[conditions]]
name = "bm25-top2"
dataset = "tiny"
k = 2
expected = {{ "RR@10" = 0.6 }}

[[conditions]]
name = "bm25-skip"
dataset = "tiny"
unjudged = "skip"
expected = {{ "RR@10" = 0.75 }}
"""
# By hand: k = 1 keeps one of the two relevant documents of q1 (d1, d5) and of q2 (d3, d8): R@100 and nDCG@10 fall
# on those two queries and on no other, so of the 4 sign assignments of the two differences 2 reach |mean|: p 0.5.
# RR@10 is the same on every query (p 1). k = 2 changes nothing (p 1). Holm over the two: 0.5 * 2 = 1.0.
# bm25-skip is scored on 4 queries, not the baseline's 5: it gets no p-value.


def test_suite_p_values_against_the_baseline(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, BASELINE_SUITE.format(source=TINY.as_posix())))
    assert suite.baselines == ("bm25",) and suite.test == "permutation"
    out = tmp_path / "results" / "significance.json"
    result = run_suite(suite, check=True, output=out)
    assert result.passed
    base, top1, top2, skip = result.conditions
    assert base.significance is not None and base.significance["baseline"] == "bm25" and "p" not in base.significance
    assert top1.significance is not None and top2.significance is not None and skip.significance is None
    assert top1.significance["p_raw"] == {"nDCG@10": 0.5, "RR@10": 1.0, "R@100": 0.5}
    assert top2.significance["p_raw"] == {"nDCG@10": 1.0, "RR@10": 1.0, "R@100": 1.0}
    assert top1.significance["p"] == {"nDCG@10": 1.0, "RR@10": 1.0, "R@100": 1.0}  # Holm: 2 * 0.5
    assert top1.significance["queries"] == 5 and top1.significance["correction"] == "holm"
    text = result.format()
    assert "tiny/bm25 (baseline)" in text and "paired randomization test" in text
    summary = text[text.index("summary (") :].splitlines()
    assert summary[1].split() == ["run", "nDCG@10", "p", "RR@10", "p", "R@100", "p"]
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["conditions"][1]["significance"]["p_raw"]["R@100"] == 0.5


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('baseline = "bm25"', 'baseline = "bm26"', r"\[suite\] baseline: 'bm26' is not a condition"),
        ('baseline = "bm25"', 'baseline = ["bm25", "bm25-top1"]', "are both baselines of dataset 'tiny'"),
        ('baseline = "bm25"', "baseline = 3", "must be a condition name or a list"),
        ('test = "permutation"', 'test = "wilcoxon"', r"\[suite\] test: must be one of t, permutation"),
    ],
)
def test_suite_baseline_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = BASELINE_SUITE.replace(old, new).format(source=TINY.as_posix())
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path, text))
