"""The `searchkit` command line: every command end to end on the tiny fixture, errors as one line + exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import run_cli

from searchkit.cli.main import main

TINY = Path(__file__).parent / "data" / "tiny"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("cli") / "tiny"
    main(["--no-progress", "index", "build", "--corpus", str(TINY), "-o", str(target)])
    return target


def test_help_is_instant_and_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from searchkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'faiss', 'transformers', 'sentence_transformers', 'bm25s', 'ir_measures',"
        " 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "index" in result.stdout and "search" in result.stdout and "train" in result.stdout
    assert "HEAVY []" in result.stdout


def test_the_lazy_command_table_is_what_the_commands_say() -> None:
    from searchkit.cli.main import COMMANDS, cli

    ctx = click.Context(cli)
    for name, entry in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=1000) == entry.short_help


def test_index_info_and_verify(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["index", "info", str(index_dir)], capsys)
    assert code == 0 and "documents  8" in out and "k1=1.5" in out
    code, out, _ = run_cli(["index", "info", str(index_dir), "--json"], capsys)
    assert json.loads(out)["num_docs"] == 8
    code, out, _ = run_cli(["index", "verify", str(index_dir)], capsys)
    assert code == 0 and "ok" in out


def test_verify_fails_on_flipped_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "flip"
    assert run_cli(["index", "build", "--corpus", str(TINY), "-o", str(target)], capsys)[0] == 0
    store = target / "docs.jsonl"
    data = bytearray(store.read_bytes())
    data[10] ^= 0x20
    store.write_bytes(bytes(data))
    code, _, err = run_cli(["index", "verify", str(target)], capsys)
    assert code == 1
    assert err.startswith("error: ") and "checksum mismatch in docs.jsonl" in err
    assert len(err.strip().splitlines()) == 1


def test_search_table_and_json(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["search", str(index_dir), "cats chasing mice", "-k", "2"], capsys)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["1", "d1"]
    code, out, _ = run_cli(["search", str(index_dir), "cats chasing mice", "-k", "2", "--json"], capsys)
    hits = json.loads(out)
    assert hits[0]["doc_id"] == "d1" and hits[0]["title"] == "Cats and dogs" and len(hits) == 2
    code, out, _ = run_cli(["search", str(index_dir), "the of and"], capsys)
    assert code == 0 and "no results" in out
    code, out, _ = run_cli(["search", str(index_dir), "mice", "--explain"], capsys)
    assert code == 0 and "bm25: #1" in out


def test_run_score_round_trip(index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_file = tmp_path / "tiny.trec"
    code, out, err = run_cli(["run", str(index_dir), str(TINY), "-o", str(run_file), "-k", "5"], capsys)
    assert code == 0, err
    lines = run_file.read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d1", "1"]
    code, out, _ = run_cli(["score", str(TINY), str(run_file), "-m", "ndcg_cut_10", "-m", "mrr@10"], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["run", "nDCG@10", "RR@10"]
    code, out, _ = run_cli(["score", str(TINY), str(run_file), "--json"], capsys)
    assert set(json.loads(out)["aggregate"]) >= {"nDCG@10", "RR@10", "R@100", "AP"}


def test_run_split_selects_exactly_the_splits_queries(
    index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--split selects the queries judged in that split, as read_queries(split=...) does, even when the split
    judges most of the file (SciFact's train: 809 of 1,109; a rule "all queries when the split judges most" ran
    the test queries too)."""
    from searchkit.formats import read_queries

    folder = tmp_path / "two-splits"
    (folder / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).write_bytes((TINY / name).read_bytes())
    header = "query-id\tcorpus-id\tscore\n"
    (folder / "qrels" / "train.tsv").write_text(header + "q1\td1\t1\nq2\td3\t1\nq4\t007\t1\n", encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(header + "q5\td1\t1\n", encoding="utf-8")
    for split, expected in (("train", {"q1", "q2", "q4"}), ("test", {"q5"})):
        run_file = tmp_path / f"{split}.trec"
        code, out, err = run_cli(["run", str(index_dir), str(folder), "--split", split, "-o", str(run_file)], capsys)
        assert code == 0, err
        ran = {line.split()[0] for line in run_file.read_text().splitlines()}
        assert ran == expected == {q.query_id for q in read_queries(folder, split=split)}
        assert f": {len(expected)} queries" in out


def test_errors_are_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\nnot json\n', encoding="utf-8")
    cases = [
        ["index", "build", "--corpus", str(bad), "-o", str(tmp_path / "i")],
        ["index", "info", str(tmp_path / "nowhere")],
        ["search", str(tmp_path / "nowhere"), "q"],
        ["index", "build", "--corpus", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "j")],
        ["index", "build"],
    ]
    for args in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 1, args
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert run_cli(cases[0], capsys)[2].startswith(f"error: {bad}:2:")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.jsonl"]


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from searchkit.types import IndexFormatError

    with pytest.raises(IndexFormatError):
        main(["--debug", "index", "info", str(tmp_path / "nowhere")])


def test_build_from_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'corpus = "{TINY.as_posix()}"\noutput = "built"\n[bm25]\nk1 = 0.9\nb = 0.4\n', encoding="utf-8")
    code, out, err = run_cli(["index", "build", str(recipe), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["components"]["bm25"]["config"]["k1"] == 0.9
    recipe.write_text('corpus = "x"\noutput = "y"\nbogus = 1\n', encoding="utf-8")
    code, _, err = run_cli(["index", "build", str(recipe)], capsys)
    assert code == 1 and "unknown key 'bogus'" in err


# ---------------------------------------------------------------------- train, then rerank with the result
def _tiny_recipe(folder: Path, index_dir: Path) -> Path:
    import re

    from searchkit.models.tiny import make_tiny_cross_encoder

    text = (TINY / "corpus.jsonl").read_text() + (TINY / "queries.jsonl").read_text()
    make_tiny_cross_encoder(folder / "base", words=sorted(set(re.findall(r"[a-z]+", text.lower()))))
    recipe = folder / "tiny.toml"
    recipe.write_text(
        f'corpus = "{TINY.as_posix()}"\n'
        'split = "test"\n'
        f'index = "{index_dir.as_posix()}"\n'
        'output = "reranker"\n'  # relative: next to the recipe
        'base_model = "./base"\n'
        "max_length = 48\nmine_depth = 6\nrandom_negatives = 2\nnegatives_per_group = 3\ngroups_per_step = 2\n"
        "epochs = 2\nlr = 3e-3\ndev_queries = 1\ndev_depth = 6\nseed = 7\n",
        encoding="utf-8",
    )
    return recipe


def test_train_then_search_with_the_reranker(
    index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from searchkit.config import RerankConfig
    from searchkit.index import Index
    from searchkit.models.cross_encoder import CrossEncoderReranker
    from searchkit.search import Searcher

    recipe = _tiny_recipe(tmp_path, index_dir)
    out = tmp_path / "reranker"
    code, text, err = run_cli(["--no-progress", "train", str(recipe), "--max-steps", "2", "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"output       {out}" in text and "pairs/s" in text and "first stage  dev nDCG@10" in text
    assert "best epoch" in text and "interpolation" in text
    card = json.loads((out / "searchkit.json").read_text())
    assert card["training_config"]["max_steps"] == 2 and card["training_config"]["device"] == "cpu"
    assert card["dev"][0]["epoch"] == 0 and card["dev"][-1]["step"] == 2  # stopped by --max-steps
    # the output folder exists: refused without --overwrite, one line, exit 1
    code, _, err = run_cli(["train", str(recipe)], capsys)
    assert code == 1 and "already holds a trained model" in err and len(err.strip().splitlines()) == 1
    code, text, err = run_cli(
        ["--no-progress", "train", str(recipe), "--overwrite", "--max-steps", "1", "--limit-queries", "3", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(text)
    assert result["train_queries"] + result["dev_queries"] == 3 and result["output"] == str(out)
    assert result["dev"][0]["epoch"] == 0 and "reranker" in result["dev"][0]["dev"]

    # search --rerank: the same hits and scores as the one-line Python equivalent
    args = ["search", str(index_dir), "cats chasing mice", "-k", "3", "--rerank", str(out), "--device", "cpu"]
    code, text, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    hits = json.loads(text)
    searcher = Searcher(Index.open(index_dir), rerank=RerankConfig(str(out), device="cpu"))
    expected = searcher.search("cats chasing mice", 3)
    assert [hit["doc_id"] for hit in hits] == [hit.doc_id for hit in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    code, text, _ = run_cli([*args, "--rerank-depth", "2", "--explain"], capsys)
    assert code == 0 and "bm25: #" in text
    run_file = tmp_path / "reranked.trec"
    code, text, err = run_cli(
        ["run", str(index_dir), str(TINY), "-o", str(run_file), "-k", "4", "--rerank", str(out), "--rerank-depth", "2"],
        capsys,
    )
    assert code == 0, err
    assert run_file.read_text().splitlines()[0].split()[0] == "q1"

    # fit-fusion on the trained folder: its dev queries, the card gets a fusion that --rerank then uses
    code, text, err = run_cli(["--no-progress", "fit-fusion", str(out), str(index_dir), "--depth", "3",
                               "--device", "cpu", "--dtype", "fp32"], capsys)  # fmt: skip
    assert code == 0, err
    assert "fusion       " in text and "written to" in text
    card = json.loads((out / "searchkit.json").read_text())
    assert card["fusion"]["depth"] == 3 and abs(sum(card["fusion"]["weights"].values()) - 1) < 1e-6
    assert CrossEncoderReranker(out, device="cpu", depth=3).fusion is not None
    code, text, err = run_cli([*args, "--rerank-depth", "3", "--no-fusion", "--json"], capsys)
    assert code == 0, err
    # several depths: the chosen one is marked, written in the card; a bad list is a one-line usage error
    code, text, err = run_cli(["--no-progress", "fit-fusion", str(out), str(index_dir), "--depth", "2,3",
                               "--device", "cpu", "--dtype", "fp32"], capsys)  # fmt: skip
    assert code == 0, err
    chosen = json.loads((out / "searchkit.json").read_text())["fusion"]["depth"]
    assert "<- chosen" in text and f"depth {chosen:>4}" in text and chosen in (2, 3)
    code, text, err = run_cli(["fit-fusion", str(out), str(index_dir), "--depth", "2,x"], capsys)
    assert code == 2 and "give a depth or a comma-separated list" in err


def test_train_errors_are_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "bad.toml"
    cases = {
        'output = "o"\nindex = "i"\ncorpus = "c"\nlearning_rate = 1\n': "unknown TrainConfig setting 'learning_rate'",
        'output = "o"\nindex = "i"\ncorpus = "c"\nloss = "pairwise"\n': "loss must be one of",
        "output = \n": "invalid TOML",
    }
    for content, message in cases.items():
        recipe.write_text(content, encoding="utf-8")
        code, _, err = run_cli(["train", str(recipe)], capsys)
        assert code == 1 and err.startswith(f"error: {recipe}: ") and message in err, err
        assert len(err.strip().splitlines()) == 1
    recipe.write_text('output = "o"\nindex = "i"\ncorpus = "c"\n', encoding="utf-8")
    code, _, err = run_cli(["train", str(recipe), "--max-steps", "0"], capsys)
    assert code == 1 and "max_steps must be > 0" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", str(tmp_path / "missing.toml")], capsys)
    assert code == 1 and "recipe not found" in err
    code, _, err = run_cli(["search", str(tmp_path), "q", "--rerank", str(tmp_path / "nope")], capsys)
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_index_analyze_shows_the_terms(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["index", "analyze", str(index_dir), "The cats chasing zebras"], capsys)
    assert code == 0
    assert out.splitlines()[0] == "cat chase zebra"
    assert "not in the index (ignored at query time): zebra" in out
    code, out, _ = run_cli(["index", "analyze", str(index_dir), "the of and"], capsys)
    assert "no terms" in out


def test_score_help_states_the_tie_rule_and_the_names_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["score", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "by score, then by doc id, both descending (trec_eval's order)" in text
    assert "RR@10 0.3333 here and from trec_eval, 1.0 from ir_measures.calc_aggregate" in text
    assert "ndcg_cut_10" in text and "mrr@10" in text
