"""From clicks to training pairs (searchkit.training.feedback, ``searchkit feedback export``, a recipe's
``feedback_log``): weights 1 / p(rank) by hand, clipping, skipped-above-the-last-click negatives, windows, the
sidecar record, and the loop at tiny scale (simulated clicks -> export -> train --init-from -> the dev guard)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from searchkit.config import TrainConfig
from searchkit.formats import (
    Feedback,
    FeedbackLog,
    Impression,
    LabelledPair,
    read_pairs,
    read_qrels,
    read_queries,
    write_pairs,
)
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.training.cross_encoder import train
from searchkit.training.feedback import export_feedback, feedback_pairs
from searchkit.training.propensity import Propensities
from searchkit.training.simulate import ClickModel, simulate_clicks
from searchkit.types import ConfigError, DataError
from tests.conftest import run_cli

TINY = Path(__file__).parent / "data" / "tiny"
FIXED = Propensities((1.0, 0.5, 0.25, 0.05), (1.0,) * 4, (1.0,) * 4, (0, 0, 0), ("prior",) * 4)


def _log(path: Path) -> Path:
    shown = ("a", "b", "c", "d")
    with FeedbackLog(path) as log:
        log.append_impressions(
            [
                Impression("r1", 1.0, "cats", "bm25", shown, 0, "fp", ""),
                Impression("r2", 2.0, "cats", "bm25", shown, 0, "fp", ""),
                Impression("r3", 3.0, "cats", "bm25", shown, 0, "fp", ""),  # no click: not used
                Impression("r4", 4.0, "dogs", "bm25", ("x", "y"), 0, "fp", ""),
                Impression("r5", 5.0, "0f3a", "bm25", ("x", "y"), 0, "fp", "", None, True),  # hashed
                Impression("r6", 6.0, "dogs", "bm25", ("x", "y"), 0, "fp", ""),
                Impression("r7", 7.0, "cats", "bm25", shown, 0, "fp", ""),
            ]
        )
        log.append_feedback(
            [
                Feedback("r1", 1.5, "c", 3, "click"),
                Feedback("r2", 2.5, "a", 1, "click"),
                Feedback("r2", 2.6, "c", 3, "click"),
                Feedback("r2", 2.7, "c", 3, "dwell", 30.0),  # not a click
                Feedback("r4", 4.5, "y", 2, "click"),
                Feedback("r5", 5.5, "y", 2, "click"),
                Feedback("r6", 6.5, "zzz", 1, "click"),  # not shown: dropped
                Feedback("r7", 7.5, "d", 4, "click"),  # 1 / 0.05 = 20, clipped
            ]
        )
    return path


def _rows(pairs: list[LabelledPair]) -> list[tuple[str, str, int, float | None]]:
    return [(p.query, p.doc, p.label, None if p.weight is None else round(p.weight, 6)) for p in pairs]


def test_weights_by_hand(tmp_path: Path) -> None:
    export = feedback_pairs(_log(tmp_path / "log.sqlite"), propensities=FIXED, clip=10.0)
    # cats: c clicked at rank 3 twice (1/0.25 each), a clicked at 1 once and skipped above c once, b skipped 3
    # times (r1, r2, r7), d clicked at 4 once (clipped to 10); a skipped in r1 and r7; c skipped in r7
    assert _rows(export.pairs) == [
        ("cats", "c", 1, 8.0),
        ("cats", "a", 1, 1.0),
        ("cats", "d", 1, 10.0),
        ("cats", "a", 0, 2.0),
        ("cats", "b", 0, 3.0),
        ("cats", "c", 0, 1.0),
        ("dogs", "y", 1, 2.0),
        ("dogs", "x", 0, 1.0),
    ]
    counts = export.record["counts"]
    assert counts["impressions"] == 7 and counts["clicked_impressions"] == 4
    assert counts["hashed_skipped"] == 1 and counts["stray_clicks"] == 1 and counts["clicks"] == 7
    assert counts["queries"] == 2 and counts["positives"] == 4 and counts["negatives"] == 4
    assert export.record["clip"] == 10.0 and export.record["window"]["first"] == 1.0
    naive = feedback_pairs(tmp_path / "log.sqlite", naive=True)
    assert _rows(naive.pairs)[:3] == [("cats", "c", 1, 2.0), ("cats", "a", 1, 1.0), ("cats", "d", 1, 1.0)]
    assert naive.record["propensities"] is None and naive.record["clip"] is None


def test_window_and_estimated_propensities(tmp_path: Path) -> None:
    path = _log(tmp_path / "log.sqlite")
    window = feedback_pairs(path, propensities=FIXED, since=2.0, until=4.5)
    assert {(p.query, p.doc, p.label) for p in window.pairs} == {
        ("cats", "a", 1),
        ("cats", "c", 1),
        ("cats", "b", 0),
        ("dogs", "y", 1),
        ("dogs", "x", 0),
    }
    assert window.record["window"] == {"since": 2.0, "until": 4.5, "first": 2.0, "last": 4.0}
    estimated = feedback_pairs(path)  # no swaps in this log: the prior, said so
    assert estimated.record["propensities"]["source"] == ["prior"] * 4
    assert _rows(estimated.pairs)[0] == ("cats", "c", 1, round(2 * 0.68 / 0.48, 6))
    with pytest.raises(DataError, match="no impression with a click"):
        feedback_pairs(path, since=100.0)
    with pytest.raises(ConfigError, match="clip must be >= 1"):
        feedback_pairs(path, clip=0.5)


def test_export_writes_what_train_reads(tmp_path: Path) -> None:
    export = export_feedback(_log(tmp_path / "log.sqlite"), tmp_path / "pairs.tsv", propensities=FIXED, clip=5.0)
    back = read_pairs(tmp_path / "pairs.tsv")
    assert _rows(back) == _rows(export.pairs) and back[0].weight == 8.0  # 4 + 4: clipped per click
    assert back[2].doc == "d" and back[2].weight == 5.0
    record = json.loads((tmp_path / "pairs.tsv.json").read_text())
    assert record["clip"] == 5.0 and record["counts"]["positives"] == 4
    with pytest.raises(DataError, match="tab or line break"):
        write_pairs(tmp_path / "bad.tsv", [LabelledPair("q", "a\tb", 1, None, True, 0)])


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path / "log.sqlite")
    code, out, _ = run_cli(
        ["feedback", "export", str(log), "-o", str(tmp_path / "p.tsv"), "--since", "1970-01-01"], capsys
    )
    assert code == 0 and "8 (4 positives, 4 negatives) of 2 queries" in out and "prior" in out
    assert len(read_pairs(tmp_path / "p.tsv")) == 8
    code, out, _ = run_cli(["feedback", "export", str(log), "-o", str(tmp_path / "n.tsv"), "--naive", "--json"], capsys)
    assert code == 0 and json.loads(out)["naive"] is True
    code, _, err = run_cli(["feedback", "export", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "x.tsv")], capsys)
    assert code == 1 and "no feedback log here" in err and "Traceback" not in err
    code, _, err = run_cli(["feedback", "export", str(log), "-o", str(tmp_path / "x.tsv"), "--until", "soon"], capsys)
    assert code == 2 and "give Unix seconds or an ISO date" in err


# ---------------------------------------------------------------------- the loop, at tiny scale
def _words() -> list[str]:
    text = "".join((TINY / name).read_text() for name in ("corpus.jsonl", "queries.jsonl"))
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


def test_feedback_log_recipe_and_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """qrels-trained parent -> simulated clicks on its rankings -> feedback_log recipe with init_from -> guard."""
    make_tiny_cross_encoder(tmp_path / "base", words=_words())
    common = dict(
        corpus=str(TINY), split="test", index=str(tmp_path / "index"), base_model=str(tmp_path / "base"),
        max_length=48, negatives_per_group=2, groups_per_step=2, epochs=1, lr=3e-3, dev_queries=1, dev_depth=6,
        mine_depth=6, device="cpu", seed=7, fit_fusion=False,
    )  # fmt: skip
    parent = train(TrainConfig(output=str(tmp_path / "parent"), **common))  # type: ignore[arg-type]
    from searchkit.index import Index
    from searchkit.search import Searcher

    index = Index.open(tmp_path / "index")
    queries = [q for q in read_queries(str(TINY)) if q.query_id in {"q1", "q2", "q4"}]
    hits = Searcher(index, mode="bm25").search_batch([q.text for q in queries], 6)
    rankings = {}
    for query, found in zip(queries, hits, strict=True):
        ids = [hit.doc_id for hit in found]
        rankings[query.text] = (ids + [doc for doc in index.docids if doc not in ids])[:6]  # six shown
    qrels = read_qrels(str(TINY), "test")
    relevant = {q.text: {d for d, g in qrels[q.query_id].items() if g > 0} for q in queries}
    with FeedbackLog(tmp_path / "feedback.sqlite") as log:
        simulate_clicks(log, rankings, relevant, 600, ClickModel(eta=1.0), explore=0.3, seed=3, start_time=1000.0)
    code, _, _ = run_cli(
        ["feedback", "export", str(tmp_path / "feedback.sqlite"), "-o", str(tmp_path / "p.tsv")], capsys
    )
    assert code == 0
    child_cfg = dataclasses.replace(
        TrainConfig(output=str(tmp_path / "child"), **common),  # type: ignore[arg-type]
        corpus=None,
        feedback_log=str(tmp_path / "feedback.sqlite"),
        feedback_since=1100.0,
        weighting="column",
        init_from=str(parent.output),
    )
    child = train(child_cfg)
    card = json.loads((child.output / "searchkit.json").read_text())
    data = card["training_data"]
    assert data["feedback_log"].endswith("feedback.sqlite") and data["window"]["since"] == 1100.0
    assert data["window"]["first"] == 1100.0 and data["counts"]["impressions"] == 500
    assert data["clip"] == 10.0 and len(data["propensities"]["values"]) == 6
    assert card["guard"]["compared_with"] == "parent" and card["parent"] is not None
    assert isinstance(card["guard"]["improved"], bool) and card["guard"]["start"] > 0  # dev from held-out clicks
    rows = [json.loads(line) for line in (child.output / "data" / "train_pairs.jsonl").read_text().splitlines()]
    assert any(row["weight"] > 1.0 for row in rows if row["label"] > 0)  # inverse-propensity weights arrived
    with pytest.raises(ConfigError, match="not both"):
        dataclasses.replace(child_cfg, pairs=str(tmp_path / "p.tsv"))
    with pytest.raises(ConfigError, match="needs a pairs file or feedback_log"):
        dataclasses.replace(child_cfg, feedback_log=None, weighting="column")
