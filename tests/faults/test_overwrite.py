"""Nothing searchkit did not write is ever deleted: ``--overwrite`` replaces a searchkit index or an empty folder and
refuses anything else with one line; the output may not be, contain or lie inside the corpus; a symlinked target's
index is replaced where the link points (the link stays a link); suites never rebuild an index whose settings differ
unless told to (``--rebuild``), and say which setting differs. (Issue 19, item 1.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from searchkit.config import BM25Config
from searchkit.experiments.suite import run_suite
from searchkit.experiments.suite_file import load_suite
from searchkit.index import Index
from searchkit.types import ConfigError, Document

from .conftest import CLI

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (links followed): what must come out of a refusal untouched."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def _one_line_error(done: object) -> str:
    stderr = getattr(done, "stderr", "")
    assert getattr(done, "returncode", None) == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_overwrite_refuses_a_folder_that_is_not_an_index(tmp_path: Path, cli: CLI) -> None:
    target = tmp_path / "d"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("important", encoding="utf-8")
    (target / "sub" / "notes.md").write_text("mine", encoding="utf-8")
    before = _tree(target)
    line = _one_line_error(cli("index", "build", "--corpus", TINY, "-o", target, "--overwrite"))
    assert f"{target} is not a searchkit index (no manifest.json) and not empty" in line
    assert _tree(target) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["d"]  # no temp folder, no lock left
    with pytest.raises(ConfigError, match="not a searchkit index"):
        Index.build(TINY, target, overwrite=True)
    assert _tree(target) == before


def test_overwrite_refuses_a_file_and_a_foreign_manifest(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file, not an index folder"):
        Index.build(TINY, afile, overwrite=True)
    assert afile.read_text(encoding="utf-8") == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"format": "another-tool"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"its manifest\.json is not a searchkit one"):
        Index.build(TINY, other, overwrite=True)
    assert (other / "manifest.json").read_text(encoding="utf-8") == '{"format": "another-tool"}'


def test_overwrite_replaces_an_index_and_an_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Index.build(TINY, empty, overwrite=True).num_docs == 8
    index = Index.build([Document("a", "solar")], empty, overwrite=True)  # an index: replaced
    assert index.num_docs == 1 and (empty / "manifest.json").is_file()


@pytest.mark.parametrize("where", ["is", "inside", "contains"])
def test_the_output_may_not_be_contain_or_lie_inside_the_corpus(where: str, tmp_path: Path, cli: CLI) -> None:
    corpus = tmp_path / "data" / "tiny"
    shutil.copytree(TINY, corpus)
    before = _tree(tmp_path / "data")
    target = {"is": corpus, "inside": corpus / "index", "contains": tmp_path / "data"}[where]
    relation = {"is": "is", "inside": "lies inside", "contains": "contains"}[where]
    line = _one_line_error(cli("index", "build", "--corpus", corpus, "-o", target, "--overwrite"))
    assert f"{target} {relation} the corpus {corpus}: write the index elsewhere" in line
    assert _tree(tmp_path / "data") == before
    corpus_file = corpus / "corpus.jsonl"  # a corpus given as a file: its folder is the same
    with pytest.raises(ConfigError, match="the corpus"):
        Index.build(corpus_file, corpus, overwrite=True)
    assert _tree(tmp_path / "data") == before


def test_a_symlinked_target_is_replaced_where_it_points_and_stays_a_link(tmp_path: Path, cli: CLI) -> None:
    real = tmp_path / "indexes" / "tiny-v1"
    Index.build(TINY, real)
    alias = tmp_path / "current"
    alias.symlink_to(real, target_is_directory=True)
    for _ in range(2):  # a second --overwrite of the same link works too (it once failed: "Not a directory")
        done = cli("index", "build", "--corpus", TINY, "-o", alias, "--overwrite", "--k1", "1.2")
        assert done.returncode == 0, done.stderr
        assert alias.is_symlink() and alias.resolve() == real.resolve()
        assert Index.open(alias).components["bm25"].k1 == 1.2
        assert sorted(path.name for path in tmp_path.iterdir()) == ["current", "indexes"]  # no .current.old link
        assert sorted(path.name for path in real.parent.iterdir()) == ["tiny-v1"]
    updated = Index.open(alias).update(add=[Document("n1", "solar roofs")])  # updates go through the link too
    assert updated.num_docs == 9 and alias.is_symlink() and Index.open(alias).num_docs == 9
    assert sorted(path.name for path in tmp_path.iterdir()) == ["current", "indexes"]


def test_a_dangling_or_looping_link_is_refused(tmp_path: Path, cli: CLI) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    line = _one_line_error(cli("index", "build", "--corpus", TINY, "-o", dangling, "--overwrite"))
    assert "is a symlink to" in line and "which does not exist" in line
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert "a symlink loop" in _one_line_error(cli("index", "build", "--corpus", TINY, "-o", loop, "--overwrite"))
    assert dangling.is_symlink() and loop.is_symlink() and not (tmp_path / "nowhere").exists()


def _suite(tmp_path: Path, index: Path, k1: float, rebuild: bool | None = None) -> Path:
    head = "" if rebuild is None else f"rebuild = {str(rebuild).lower()}\n"
    suite = tmp_path / "suite.toml"
    suite.write_text(
        f'[suite]\nname = "s"\nmetrics = ["nDCG@10"]\n{head}\n'
        f'[datasets.tiny]\nsource = "{TINY}"\nsplit = "test"\n\n'
        f'[[conditions]]\nname = "bm25"\ndataset = "tiny"\nindex = "{index}"\nmode = "bm25"\n'
        f'bm25 = {{ k1 = {k1} }}\nexpected = {{ "nDCG@10" = 0.5 }}\n',
        encoding="utf-8",
    )
    return suite


def test_a_suite_never_deletes_a_folder_named_as_its_index(tmp_path: Path, cli: CLI) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("important", encoding="utf-8")
    suite = _suite(tmp_path, folder, 1.5)
    for extra in ([], ["--rebuild"]):  # not even when told to rebuild: it is not an index
        line = _one_line_error(cli("eval", suite, "-o", tmp_path / "results.json", *extra))
        assert str(folder) in line
        assert (folder / "keep.txt").read_text(encoding="utf-8") == "important"
        assert sorted(path.name for path in folder.iterdir()) == ["keep.txt"]


def test_a_suite_says_which_setting_differs_and_rebuilds_only_when_told(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-index"
    Index.build(TINY, folder, bm25=BM25Config(k1=1.5))
    fingerprint = Index.open(folder).fingerprint()
    with pytest.raises(ConfigError) as caught:
        run_suite(load_suite(_suite(tmp_path, folder, 0.9)), write=False)
    message = str(caught.value)
    assert "bm25.k1 is 1.5 in the index, 0.9 in the suite" in message and "--rebuild" in message
    assert "\n" not in message and Index.open(folder).fingerprint() == fingerprint  # untouched
    result = run_suite(load_suite(_suite(tmp_path, folder, 0.9)), write=False, rebuild=True)
    assert result.conditions[0].index["action"] == "built" and Index.open(folder).components["bm25"].k1 == 0.9
    again = run_suite(load_suite(_suite(tmp_path, folder, 1.2, rebuild=True)), write=False)  # the suite's own key
    assert again.conditions[0].index["action"] == "built" and Index.open(folder).components["bm25"].k1 == 1.2
    same = run_suite(load_suite(_suite(tmp_path, folder, 1.2)), write=False)
    assert same.conditions[0].index["action"] == "reused"
