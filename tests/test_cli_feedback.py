"""`searchkit feedback stats`: counts and click-through by rank of a feedback log, golden numbers by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from searchkit.formats import Feedback, FeedbackLog, Impression


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """4 impressions (3 distinct queries, one swapped, two models); clicks at ranks 1, 1, 3; a judgment; a dwell."""
    path = tmp_path / "feedback.sqlite"
    with FeedbackLog(path) as writer:
        writer.append_impressions([
            Impression("a", 10.0, "cats", "bm25", ("d1", "d2", "d3"), 1, "fp", "m1"),
            Impression("b", 20.0, "cats", "bm25", ("d1", "d2"), 1, "fp", "m1", swapped=1),
            Impression("c", 30.0, "dogs", "bm25", ("d4", "d5", "d6"), 1, "fp", "m2"),
            Impression("d", 40.0, "mice", "bm25", ("d7",), 1, "fp", "m2"),
        ])  # fmt: skip
        writer.append_feedback([
            Feedback("a", 11.0, "d1", 1, "click"), Feedback("a", 12.0, "d3", 3, "click"),
            Feedback("c", 31.0, "d4", 1, "click"), Feedback("c", 32.0, "d4", 1, "judgment", 2.0),
            Feedback("c", 33.0, "d4", 1, "dwell", 40.0), Feedback("zz", 34.0, "d9", 1, "click"),  # no impression
        ])  # fmt: skip
    return path


def test_stats_json(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["feedback", "stats", str(log), "--max-rank", "4", "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["impressions"] == 4 and stats["queries"] == 3 and stats["swapped_impressions"] == 1
    assert stats["events"] == {"click": 3, "judgment": 1, "dwell": 1}  # the event without an impression: not counted
    assert stats["clicked_impressions"] == 2 and stats["abandonment"] == pytest.approx(0.5)
    assert stats["models"] == {"m1": 2, "m2": 2} and (stats["first"], stats["last"]) == (10.0, 40.0)
    rows = [(row["rank"], row["shown"], row["clicks"], row["click_through"]) for row in stats["by_rank"]]
    assert rows == [(1, 4, 2, 0.5), (2, 3, 0, 0.0), (3, 2, 1, 0.5), (4, 0, 0, 0.0)]


def test_stats_table_and_a_missing_log(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["feedback", "stats", str(log), "--max-rank", "3"], capsys)
    assert code == 0
    assert "4 impressions of 3 distinct queries from 1970-01-01T00:00:10+00:00" in out
    assert "events: 3 click, 1 judgment, 1 dwell" in out and "abandonment 0.500" in out
    assert out.splitlines()[-3:] == ["1\t4\t2\t0.5000", "2\t3\t0\t0.0000", "3\t2\t1\t0.5000"]
    code, _, err = run_cli(["feedback", "stats", str(tmp_path / "none.sqlite")], capsys)
    assert code == 1 and err.count("\n") == 1 and "no feedback log here" in err
