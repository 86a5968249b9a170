"""Kill -9 at named checkpoints (searchkit.faults), then check: the last committed state is intact and verifies,
a rerun (or --resume) finishes with results identical to an uninterrupted run, and nothing temporary is left.

The CLI runs in a subprocess with SEARCHKIT_FAULT set; references are uninterrupted runs of the same operation.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from searchkit.config import BM25Config, DenseConfig, load_index_recipe, load_train_recipe
from searchkit.index import Index
from searchkit.training.cross_encoder import train
from searchkit.types import ConfigError, IndexFormatError

if TYPE_CHECKING:
    from .conftest import CLI, FaultTables

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"
KILLED = -signal.SIGKILL


def _files(folder: Path) -> dict[str, str]:
    """Every file's sha256 as the manifest records it: equal dicts mean byte-identical indexes."""
    return dict(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"])


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def _verifies(target: Path) -> bool:
    try:
        Index.open(target, verify=True)
    except IndexFormatError:
        return False
    return True


def _killed_then_verified(cli: CLI, target: Path, point: str, *args: str | Path) -> bool:
    """Run the CLI killed at ``point``; check the index verifies after it (a kill in the middle of the swap leaves
    no target until the next open or write puts the old one back). Whether the operation was committed."""
    killed = cli(*args, fault=point)
    assert killed.returncode == KILLED, killed.stderr
    if point.endswith(".swap"):
        assert not target.exists()
        verified = cli("index", "verify", target)
        assert verified.returncode == 0, verified.stderr
    assert _verifies(target)
    return point.endswith(".swapped")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Uninterrupted builds: the default BM25 index, and one with k1=1.2 (the 'previous' state of a rebuild)."""
    root = tmp_path_factory.mktemp("reference")
    return {
        "default": _files(Index.build(TINY, root / "default").path),
        "k1=1.2": _files(Index.build(TINY, root / "k12", bm25=BM25Config(k1=1.2)).path),
    }


# ---------------------------------------------------------------------- index build
@pytest.mark.parametrize("point", ["index.build.docstore", "index.build.component", "index.build.manifest"])
def test_fresh_build_killed(
    point: str, tmp_path: Path, cli: CLI, reference: dict[str, dict[str, str]], fault_tables: FaultTables
) -> None:
    row = fault_tables.kill("index build (new)", point)
    row.tried += 1
    target = tmp_path / "idx"
    killed = cli("index", "build", "--corpus", TINY, "-o", target, fault=point)
    assert killed.returncode == KILLED, killed.stderr
    assert not target.exists()  # nothing committed: no half index at the target
    with pytest.raises(IndexFormatError, match="no such index folder"):
        Index.open(target)
    row.recovered += 1
    rerun = cli("index", "build", "--corpus", TINY, "-o", target)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(target) == reference["default"] and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


REBUILD_POINTS = [
    "index.build.docstore",
    "index.build.component",
    "index.build.manifest",
    "index.build.swap",
    "index.build.swapped",
]


@pytest.mark.parametrize("point", REBUILD_POINTS)
def test_rebuild_killed(
    point: str, tmp_path: Path, cli: CLI, reference: dict[str, dict[str, str]], fault_tables: FaultTables
) -> None:
    row = fault_tables.kill("index build --overwrite", point)
    row.tried += 1
    target = tmp_path / "idx"
    Index.build(TINY, target, bm25=BM25Config(k1=1.2))
    committed = _killed_then_verified(
        cli, target, point, "index", "build", "--corpus", TINY, "-o", target, "--overwrite"
    )
    assert _files(target) == reference["default" if committed else "k1=1.2"]
    row.recovered += 1
    rerun = cli("index", "build", "--corpus", TINY, "-o", target, "--overwrite")
    assert rerun.returncode == 0, rerun.stderr
    assert _files(target) == reference["default"] and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


# ---------------------------------------------------------------------- index add
ADD_POINTS = ["index.add.component", "index.add.manifest", "index.add.swap", "index.add.swapped"]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_add_killed(
    point: str, tmp_path: Path, cli: CLI, reference: dict[str, dict[str, str]], fault_tables: FaultTables
) -> None:
    row = fault_tables.kill("index add --overwrite", point)
    row.tried += 1
    target = tmp_path / "idx"
    Index.build(TINY, target, bm25=BM25Config(k1=1.2))
    expected_after = _files(
        Index.build(TINY, tmp_path / "ref", bm25=BM25Config(k1=1.2)).add(bm25=BM25Config(), overwrite=True).path
    )
    killed = cli("index", "add", target, "--bm25", "--overwrite", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    committed = point == "index.add.swapped"
    assert _verifies(target)
    assert _files(target) == (expected_after if committed else reference["k1=1.2"])
    row.recovered += 1
    if not committed:
        rerun = cli("index", "add", target, "--bm25", "--overwrite")
        assert rerun.returncode == 0, rerun.stderr
    else:  # the add was done; the next build or add of the same index clears what the killed one left
        Index.open(target).add(bm25=BM25Config(), overwrite=True)
    assert _files(target) == expected_after and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


# ---------------------------------------------------------------------- index update / index compact
UPDATE_POINTS = [
    "index.update.docstore",
    "index.update.component",
    "index.update.manifest",
    "index.update.swap",
    "index.update.swapped",
]
COMPACT_POINTS = ["index.compact.component", "index.compact.swap"]


@pytest.fixture(scope="module")
def update_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An update's inputs (d1 replaced, d9 added, d3 deleted) and the files of the index after it, uninterrupted,
    and after compacting that."""
    root = tmp_path_factory.mktemp("update")
    add = root / "add.jsonl"
    rows = [{"_id": "d1", "title": "Cats", "text": "Cats sleep all day"}, {"_id": "d9", "text": "Tidal electricity"}]
    add.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    ids = root / "ids.txt"
    ids.write_text("d3\n", encoding="utf-8")
    updated = Index.build(TINY, root / "ref").update(add=add, delete=["d3"])
    assert len(updated.deleted_rows) == 2  # 2 tombstones of 10 rows: the update itself does not compact
    return {
        "args": ["--add", add, "--delete", ids],
        "after": _files(updated.path),
        "compacted": _files(updated.compact().path),
    }


@pytest.mark.parametrize("point", UPDATE_POINTS)
def test_update_killed(
    point: str,
    tmp_path: Path,
    cli: CLI,
    reference: dict[str, dict[str, str]],
    update_inputs: dict[str, Any],
    fault_tables: FaultTables,
) -> None:
    row = fault_tables.kill("index update", point)
    row.tried += 1
    target = tmp_path / "idx"
    Index.build(TINY, target)
    committed = _killed_then_verified(cli, target, point, "index", "update", target, *update_inputs["args"])
    assert _files(target) == (update_inputs["after"] if committed else reference["default"])
    assert Index.open(target).generation == (2 if committed else 1)
    row.recovered += 1
    if not committed:
        rerun = cli("index", "update", target, *update_inputs["args"])
        assert rerun.returncode == 0, rerun.stderr
        assert _files(target) == update_inputs["after"] and _verifies(target)
    compacted = cli("index", "compact", target)  # the next write also clears what a killed one left
    assert compacted.returncode == 0, compacted.stderr
    assert _files(target) == update_inputs["compacted"] and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_compact_killed(
    point: str, tmp_path: Path, cli: CLI, update_inputs: dict[str, Any], fault_tables: FaultTables
) -> None:
    row = fault_tables.kill("index compact", point)
    row.tried += 1
    target = tmp_path / "idx"
    Index.build(TINY, target)
    assert cli("index", "update", target, *update_inputs["args"]).returncode == 0
    assert not _killed_then_verified(cli, target, point, "index", "compact", target)
    assert _files(target) == update_inputs["after"]  # the previous generation, whole
    row.recovered += 1
    rerun = cli("index", "compact", target)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(target) == update_inputs["compacted"] and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


# ---------------------------------------------------------------------- dense encoding (resumable shards)
def test_dense_build_resumes_from_its_shards(
    tmp_path: Path, cli: CLI, tiny_dense_config: DenseConfig, fault_tables: FaultTables
) -> None:
    row = fault_tables.kill("index build (dense)", "dense.shard:2")
    row.tried += 1
    recipe = tmp_path / "dense.toml"
    recipe.write_text(
        f'corpus = "{TINY}"\noutput = "idx"\nbm25 = false\n\n[dense]\ndevice = "cpu"\nbatch_size = 4\nshard_size = 2\n',
        encoding="utf-8",
    )
    loaded = load_index_recipe(recipe)
    reference = _files(Index.build(TINY, tmp_path / "ref", bm25=None, dense=loaded.dense).path)
    target = tmp_path / "idx"
    killed = cli("index", "build", recipe, fault="dense.shard:2")
    assert killed.returncode == KILLED, killed.stderr
    assert not target.exists()
    shards = tmp_path / ".idx.building" / "dense" / "shards"
    assert sorted(p.name for p in shards.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy"]
    row.recovered += 1
    rerun = cli("-v", "index", "build", recipe)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 2 of 4 shards already encoded" in rerun.stderr
    assert _files(target) == reference and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


@pytest.mark.slow  # two more processes loading the dense model (~15 s each on 2 busy cores)
def test_dense_add_resumes_from_its_shards(tmp_path: Path, cli: CLI, fault_tables: FaultTables) -> None:
    row = fault_tables.kill("index add --dense", "dense.shard:1")
    row.tried += 1
    target = tmp_path / "idx"
    before = _files(Index.build(TINY, target).path)
    dense = DenseConfig(model="all-MiniLM-L6-v2", faiss_factory="Flat", device="cpu")
    reference = _files(Index.build(TINY, tmp_path / "ref").add(dense=dense).path)
    killed = cli("index", "add", target, "--dense", "all-MiniLM-L6-v2", "--device", "cpu", fault="dense.shard:1")
    assert killed.returncode == KILLED, killed.stderr
    assert _files(target) == before and _verifies(target)
    row.recovered += 1
    rerun = cli("-v", "index", "add", target, "--dense", "all-MiniLM-L6-v2", "--device", "cpu")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 1 of 1 shards already encoded" in rerun.stderr
    assert _files(target) == reference and _verifies(target)
    assert _leftovers(target) == []
    row.identical += 1


# ---------------------------------------------------------------------- train (checkpoints, --resume)
TRAIN_SETTINGS: dict[str, Any] = {
    "split": "test",
    "max_length": 48,
    "mine_depth": 6,
    "skip_top": 1,
    "random_negatives": 2,
    "negatives_per_group": 3,
    "groups_per_step": 2,
    "epochs": 2,
    "lr": 3e-3,
    "dev_queries": 1,
    "dev_depth": 6,
    "patience": 5,
    "log_every": 1,
    "device": "cpu",
    "seed": 7,
}


def _train_recipe(workspace: Path, name: str) -> Path:
    lines = [
        f'output = "{name}"',
        f'corpus = "{TINY}"',
        'index = "index"',
        f'base_model = "{workspace / "base"}"',
        *(f"{key} = {json.dumps(value)}" for key, value in TRAIN_SETTINGS.items()),
    ]
    recipe = workspace / f"{name}.toml"
    recipe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return recipe


@pytest.fixture(scope="module")
def train_workspace(tmp_path_factory: pytest.TempPathFactory, tiny_words: list[str], cli: CLI) -> Path:
    """A tiny base cross-encoder, a BM25 index of the tiny corpus and an uninterrupted reference run."""
    from searchkit.models.tiny import make_tiny_cross_encoder

    workspace = tmp_path_factory.mktemp("train")
    make_tiny_cross_encoder(workspace / "base", words=tiny_words)
    Index.build(TINY, workspace / "index")
    train(load_train_recipe(_train_recipe(workspace, "reference")))  # uninterrupted, in this process
    return workspace


@pytest.mark.parametrize(
    "point",
    [
        "train.epoch:1",
        pytest.param("train.checkpoint.swap:1", marks=pytest.mark.slow),  # like train.epoch, one epoch later
        pytest.param("train.card", marks=pytest.mark.slow),  # one more epoch-2 run (~30 s on 2 busy cores)
    ],
)
def test_train_killed_then_resumed(point: str, train_workspace: Path, cli: CLI, fault_tables: FaultTables) -> None:
    row = fault_tables.kill("train", point)
    row.tried += 1
    name = "run-" + point.replace(":", "-").replace(".", "-")
    out = train_workspace / name
    recipe = _train_recipe(train_workspace, name)
    killed = cli("train", recipe, fault=point)
    assert killed.returncode == KILLED, killed.stderr
    assert not (out / "searchkit.json").exists()  # a killed run never looks like a finished model
    states = [out / folder / "state.json" for folder in ("checkpoint", "checkpoint.old")]
    assert any(state.is_file() for state in states)
    with pytest.raises(ConfigError, match="holds an interrupted run"):  # never silently started over
        train(load_train_recipe(recipe))
    row.recovered += 1
    resumed = cli("train", recipe, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = train_workspace / "reference"
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    cards = [json.loads((folder / "searchkit.json").read_text()) for folder in (out, reference)]
    assert cards[0]["dev"] == cards[1]["dev"] and cards[0]["interpolation"] == cards[1]["interpolation"]
    assert not {"checkpoint", "checkpoint.tmp", "checkpoint.old", "best"} & {p.name for p in out.iterdir()}
    row.identical += 1


def test_the_tier_reaches_every_documented_checkpoint() -> None:
    """Every checkpoint named in searchkit.faults' table is exercised by a kill test above (or listed here)."""
    import searchkit.faults

    table = re.findall(r"^``([a-z0-9_.]+)``\s", searchkit.faults.__doc__ or "", flags=re.MULTILINE)
    documented = set(table)
    tested = {
        *REBUILD_POINTS,
        *ADD_POINTS,
        *UPDATE_POINTS,
        *COMPACT_POINTS,
        "dense.shard",
        "train.epoch",
        "train.checkpoint.swap",
        "train.card",
    }
    assert documented == tested
