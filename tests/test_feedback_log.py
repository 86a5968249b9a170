"""The feedback log (searchkit.formats.feedback): round trips, windows, retention, durability, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from searchkit.formats import Feedback, FeedbackLog, Impression, hash_query
from searchkit.types import DataError


def _impression(request_id: str, time: float, swapped: int | None = None) -> Impression:
    return Impression(request_id, time, "q " + request_id, "hybrid", ("a", "b", "c"), 3, "fp", "m1", swapped)


def test_round_trip_and_windows(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with FeedbackLog(path) as log:
        log.append_impressions([_impression("r1", 1.0), _impression("r2", 5.0, swapped=2)])
        log.append_feedback([Feedback("r1", 2.0, "b", 2, "click"), Feedback("r2", 6.0, "a", 1, "judgment", 2.0)])
        assert log.has_request("r2") and not log.has_request("r9")
        assert log.impression("r2") == _impression("r2", 5.0, swapped=2) and log.impression("r9") is None
    with FeedbackLog(path, readonly=True) as log:
        assert list(log.impressions()) == [_impression("r1", 1.0), _impression("r2", 5.0, swapped=2)]
        assert [i.request_id for i in log.impressions(since=2.0)] == ["r2"]
        assert [f.request_id for f in log.feedback(until=6.0)] == ["r1"]
        assert list(log.feedback())[1] == Feedback("r2", 6.0, "a", 1, "judgment", 2.0)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_prune_deletes_old_rows_and_their_feedback(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path / "log.sqlite") as log:
        log.append_impressions([_impression("r1", 1.0), _impression("r2", 5.0)])
        log.append_feedback([Feedback("r1", 2.0, "b", 2, "click"), Feedback("r2", 6.0, "a", 1, "click")])
        assert log.prune(before=3.0) == 1
        assert [i.request_id for i in log.impressions()] == ["r2"]
        assert [f.request_id for f in log.feedback()] == ["r2"]


def test_unknown_kind_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path / "log.sqlite") as log:
        with pytest.raises(DataError, match="feedback kind 'like'"):
            log.append_feedback([Feedback("r1", 2.0, "b", 2, "click"), Feedback("r1", 2.0, "b", 2, "like")])
        assert list(log.feedback()) == []


def test_committed_rows_survive_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    script = (
        "import os, sys\n"
        "from searchkit.formats import Feedback, FeedbackLog\n"
        f"log = FeedbackLog({str(path)!r})\n"
        "log.append_feedback([Feedback('r1', 1.0, 'd', 1, 'click')])\n"
        "print('acknowledged', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9 and "acknowledged" in done.stdout
    with FeedbackLog(path, readonly=True) as log:
        assert [f.doc_id for f in log.feedback()] == ["d"]


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no feedback log here"):
        FeedbackLog(tmp_path / "missing.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just some bytes " * 100)
    with pytest.raises(DataError, match="not a readable feedback log"):
        FeedbackLog(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).executescript(
        "CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('schema_version', '9');"
    )
    with pytest.raises(DataError, match="schema version 9"):
        FeedbackLog(other, readonly=True)


def test_hashed_queries_are_salted() -> None:
    assert hash_query("cancer", "salt") != hash_query("cancer", "pepper")
    assert len(hash_query("癌症", "salt")) == 64
