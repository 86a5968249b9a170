"""Cross-validated training (searchkit.training.cross_validation, `searchkit train RECIPE --folds K`) with a tiny
random BERT on the synthetic collection. The key property, checked by instrumenting what every fold's training,
mining, dev scoring and fusion fitting read against the queries its model then scores: no query is ever scored by
a model or a fusion that saw it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import WORDS

import searchkit.training.cross_encoder as cross_encoder_module
import searchkit.training.cross_validation as cv_module
import searchkit.training.data as data_module
import searchkit.training.fusion as fusion_module
from searchkit.cli.main import cli
from searchkit.evaluate.metrics import evaluate
from searchkit.formats import read_qrels, read_queries, read_run
from searchkit.index import Index
from searchkit.models.cards import read_reranker_card
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.search import Searcher
from searchkit.training.cross_validation import check_unseen
from searchkit.training.folds import fold_split
from searchkit.types import SearchkitError


class Spy:
    """What each training folder read (train, dev, mined, fusion-fitted query ids) and what each model scored."""

    def __init__(self) -> None:
        self.current: Path | None = None
        self.seen: dict[Path, set[str]] = {}
        self.scored: list[tuple[str | None, list[str]]] = []

    def saw(self, folder: Path, ids: Any) -> None:
        self.seen.setdefault(Path(folder), set()).update(ids)


def _install(patch: pytest.MonkeyPatch, spy: Spy) -> None:
    load, hits = cross_encoder_module.load_training_data, data_module.first_stage_hits
    fit_in_training, fit_after = cross_encoder_module.fit_weights, fusion_module.fit_weights
    score = cv_module.run_queries

    def load_training_data(cfg: Any, out: Path, show_progress: bool) -> Any:
        spy.current = Path(out)
        data = load(cfg, out, show_progress)
        spy.saw(out, [q.query_id for q in data.train] + [q.query_id for q in data.dev.queries])
        return data

    def first_stage_hits(index: Any, mode: str, queries: list[Any], k: int, cache: Path, *args: Any, **kw: Any) -> Any:
        spy.saw(Path(cache).parent, [q.query_id for q in queries])
        return hits(index, mode, queries, k, cache, *args, **kw)

    def spy_fit(original: Any) -> Any:
        def fit(heads: Any, features: Any, query_ids: Any, qrels: Any, **kw: Any) -> Any:
            assert spy.current is not None
            spy.saw(spy.current, query_ids)
            return original(heads, features, query_ids, qrels, **kw)

        return fit

    def run_queries(retriever: Any, queries: list[Any], k: int = 100, **kw: Any) -> Any:
        reranker = retriever.reranker
        spy.scored.append((None if reranker is None else reranker.name, [q.query_id for q in queries]))
        return score(retriever, queries, k, **kw)

    patch.setattr(cross_encoder_module, "load_training_data", load_training_data)
    patch.setattr(data_module, "first_stage_hits", first_stage_hits)
    patch.setattr(cross_encoder_module, "fit_weights", spy_fit(fit_in_training))
    patch.setattr(fusion_module, "fit_weights", spy_fit(fit_after))
    patch.setattr(cv_module, "run_queries", run_queries)


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path) -> tuple[Path, Spy, str]:
    """`searchkit train RECIPE --folds 3 --fold-seed 11` (the recipe says folds = 2), every read instrumented."""
    folder = tmp_path_factory.mktemp("cv")
    make_tiny_cross_encoder(folder / "base", words=[*WORDS, "about", "notes", "on", "and", "the"])
    recipe = folder / "recipe.toml"
    recipe.write_text(
        "\n".join(
            [
                f'corpus = "{synthetic_beir}"',
                'split = "train"',
                f'index = "{folder / "index"}"',
                f'output = "{folder / "out"}"',
                f'base_model = "{folder / "base"}"',
                "max_length = 32",
                'mine_mode = "bm25"',
                "mine_depth = 8",
                "negatives_per_group = 3",
                "epochs = 1",
                "lr = 3e-3",
                "dev_queries = 4",
                "dev_depth = 8",
                "fusion_depths = [4, 8]",
                'device = "cpu"',
                "seed = 3",
                "folds = 2",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    spy = Spy()
    with pytest.MonkeyPatch.context() as patch:
        _install(patch, spy)
        outcome = CliRunner().invoke(cli, ["train", str(recipe), "--folds", "3", "--fold-seed", "11"])
    assert outcome.exit_code == 0, outcome.output
    return folder / "out", spy, outcome.output


def test_no_query_is_scored_by_a_model_or_fusion_that_saw_it(validated: tuple[Path, Spy, str]) -> None:
    out, spy, _ = validated
    folds = json.loads((out / "folds.json").read_text(encoding="utf-8"))["folds"]
    trained_calls = [(name, ids) for name, ids in spy.scored if name is not None]
    assert len(trained_calls) == 3
    for name, ids in trained_calls:
        assert name is not None
        seen = spy.seen.get(Path(name), set())
        assert len(seen) >= 10  # the fold model did train, tune and fit on the other folds' queries
        assert not seen & set(ids), f"{name} scored queries it saw: {sorted(seen & set(ids))}"
    scored = [qid for _, ids in trained_calls for qid in ids]
    assert sorted(scored) == sorted(qid for fold in folds for qid in fold)  # every query scored exactly once
    assert sorted(qid for name, ids in spy.scored if name is None for qid in ids) == sorted(scored)


def test_folds_are_seeded_recorded_and_the_runs_concatenated(
    validated: tuple[Path, Spy, str], synthetic_beir: Path
) -> None:
    out, _, output = validated
    qrels = read_qrels(synthetic_beir, "train")
    ids = [q.query_id for q in read_queries(synthetic_beir, split="train")]
    recorded = json.loads((out / "folds.json").read_text(encoding="utf-8"))
    assert recorded["k"] == 3 and recorded["seed"] == 11  # the command line overrides the recipe's folds = 2
    assert recorded["folds"] == fold_split(ids, 3, 11)
    run = read_run(out / "run.trec")
    assert sorted(run) == sorted(ids)
    report = json.loads((out / "cv.json").read_text(encoding="utf-8"))
    for number, fold in enumerate(recorded["folds"], start=1):
        card = read_reranker_card(out / "folds" / f"fold-{number}")
        assert card["cross_validation"] == {"fold": number, "k": 3, "seed": 11, "held_out": sorted(fold)}
        fold_run = read_run(out / "folds" / f"fold-{number}" / "test_run.trec")
        assert sorted(fold_run) == sorted(fold)
        assert all([h.doc_id for h in run[qid]] == [h.doc_id for h in fold_run[qid]] for qid in fold)
        expected = evaluate(fold_run, {qid: qrels[qid] for qid in fold}, ["nDCG@10"]).aggregate["nDCG@10"]
        assert report["folds"][number - 1]["trained"]["nDCG@10"] == pytest.approx(expected)
    assert report["trained"]["nDCG@10"] == pytest.approx(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"])
    # the untrained pipeline: the same first stage over the same queries, searched here independently
    queries = read_queries(synthetic_beir, split="train")
    hits = Searcher(Index.open(out.parent / "index"), mode="auto").search_batch([q.text for q in queries], 100)
    untrained = evaluate({q.query_id: h for q, h in zip(queries, hits, strict=True)}, qrels, ["nDCG@10"])
    assert report["untrained"]["nDCG@10"] == pytest.approx(untrained.aggregate["nDCG@10"])
    table = (out / "cv.md").read_text(encoding="utf-8")
    assert "fold 3 (10) fine-tuned" in table and "untrained (all 30)" in table and "RR@10" in table
    assert "untrained (all 30)" in output


def test_check_unseen_refuses_a_fold_that_trained_on_a_held_out_query(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pairs = [{"query_id": "q1", "doc": "d1", "label": 1}, {"query_id": "q2", "doc": "d2", "label": 0}]
    (tmp_path / "data" / "train_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "data" / "dev_queries.txt").write_text("q3\n")
    check_unseen(tmp_path, {"q4", "q5"})
    with pytest.raises(SearchkitError, match="1 held-out queries were used in training or dev \\(q2\\)"):
        check_unseen(tmp_path, {"q2", "q9"})
    with pytest.raises(SearchkitError, match="\\(q3\\)"):
        check_unseen(tmp_path, {"q3"})
