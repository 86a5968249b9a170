"""searchkit.distributed: dense encoding and benchmark runs on a local Ray cluster give the single-process results.

The tests that need a cluster start a 2-CPU local Ray instance (once per module; skipped without Ray): one tiny
build in the default tier, the rest (each Ray job starts its actors: tens of seconds) and the SciFact acceptance
tests in the slow tier. Without Ray, ``--ray`` is a one-line error naming the extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from searchkit.cli.main import cli, main
from searchkit.config import DenseConfig, RayConfig, TokensConfig
from searchkit.distributed.cluster import plan_actors, require_ray
from searchkit.distributed.encoding import RayEncoding
from searchkit.evaluate.runs import run_queries
from searchkit.formats import read_queries
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.types import ConfigError

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray instance with 2 CPUs (the acceptance's `ray.init(num_cpus=2)`), shut down after the module."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _embeddings(index: Index) -> np.ndarray:
    return np.load(index.path / "dense" / "embeddings.npy")


def test_ray_missing_is_a_one_line_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synthetic_beir: Path,
    tiny_bi_encoder: Path,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as on a machine without it
    with pytest.raises(ConfigError, match=r"pip install 'searchkit\[ray\]'"):
        require_ray()
    args = ["--no-progress", "index", "build", "--corpus", str(synthetic_beir), "-o", str(tmp_path / "i")]
    for extra in (["--dense", str(tiny_bi_encoder), "--device", "cpu", "--ray"], ["--ray", "ray://nowhere:1"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, *extra])
        assert stop.value.code != 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "searchkit[ray]" in lines[0] and "Traceback" not in err, err
        assert not (tmp_path / "i").exists()  # nothing half-built left behind


def test_actor_count_follows_gpus_or_cpus() -> None:
    assert plan_actors(RayConfig(), cpus=2, gpus=0, use_gpus=False) == 2
    assert plan_actors(RayConfig(cpus_per_actor=2), cpus=5, gpus=0, use_gpus=False) == 2
    assert plan_actors(RayConfig(), cpus=16, gpus=4, use_gpus=True) == 4
    assert plan_actors(RayConfig(actors=3), cpus=16, gpus=4, use_gpus=True) == 3
    with pytest.raises(ConfigError):
        RayConfig(actors=0)


def test_ray_build_writes_the_single_process_embeddings(
    local_ray: Any, tmp_path: Path, synthetic_beir: Path, tiny_encoder_config: DenseConfig
) -> None:
    config = dataclasses.replace(tiny_encoder_config, shard_size=8)  # 30 documents: 4 shards over 2 actors
    alone = Index.build(synthetic_beir, tmp_path / "alone", dense=config)
    spread = Index.build(synthetic_beir, tmp_path / "ray", dense=config, encoding=RayEncoding(RayConfig()))
    assert _embeddings(spread).dtype == _embeddings(alone).dtype == np.float16
    assert np.array_equal(_embeddings(spread), _embeddings(alone))
    spread.verify()  # raises when a file or checksum is off
    assert not (spread.path / "dense" / "shards").exists()


@pytest.mark.slow
def test_ray_add_encodes_stored_tokens_like_the_single_process_add(
    local_ray: Any, tmp_path: Path, synthetic_beir: Path, tiny_encoder_config: DenseConfig, tiny_bi_encoder: Path
) -> None:
    tokens = TokensConfig(model=str(tiny_bi_encoder))
    base = Index.build(synthetic_beir, tmp_path / "base", tokens=tokens)
    config = dataclasses.replace(tiny_encoder_config, shard_size=8)
    alone = Index.build(synthetic_beir, tmp_path / "alone", tokens=tokens, dense=config)
    added = base.add(dense=config, encoding=RayEncoding(RayConfig(actors=2)))
    assert np.array_equal(_embeddings(added), _embeddings(alone))


@pytest.mark.slow
def test_ray_run_is_the_single_process_run(
    local_ray: Any, tmp_path: Path, synthetic_beir: Path, tiny_encoder_config: DenseConfig
) -> None:
    from searchkit.distributed.queries import SearcherSpec, run_queries_on_ray

    index = Index.build(synthetic_beir, tmp_path / "i", dense=tiny_encoder_config)
    queries = read_queries(synthetic_beir)
    alone = run_queries(Searcher(index, mode="hybrid"), queries, 5, batch_size=7)
    opener = SearcherSpec(str(index.path), mode="hybrid")
    spread = run_queries_on_ray(opener, queries, 5, RayConfig(), batch_size=7)
    assert list(spread) == list(alone) and spread == alone
    self_excluded = run_queries_on_ray(opener, queries, 5, RayConfig(), batch_size=7, exclude_self=True)
    assert self_excluded == run_queries(Searcher(index, mode="hybrid"), queries, 5, batch_size=7, exclude_self=True)


@pytest.mark.slow
def test_cli_run_with_ray_writes_the_same_trec_file(
    local_ray: Any, tmp_path: Path, synthetic_beir: Path, tiny_bi_encoder: Path
) -> None:
    runner = CliRunner()
    build = ["index", "build", "--corpus", str(synthetic_beir), "-o", str(tmp_path / "i")]
    built = runner.invoke(cli, [*build, "--dense", str(tiny_bi_encoder), "--device", "cpu", "--ray"])
    assert built.exit_code == 0, built.output
    outputs = {}
    for name, extra in (("alone", []), ("ray", ["--ray", "--ray-actors", "2"])):
        outputs[name] = tmp_path / f"{name}.trec"
        args = ["run", str(tmp_path / "i"), str(synthetic_beir), "-o", str(outputs[name]), "--mode", "hybrid"]
        result = runner.invoke(cli, [*args, "--device", "cpu", "--batch-size", "8", *extra])
        assert result.exit_code == 0, result.output
    assert outputs["ray"].read_bytes() == outputs["alone"].read_bytes()


# ------------------------------------------------------------------------------------------- SciFact (slow)


@pytest.fixture(scope="module")
def scifact_builds(local_ray: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Index]:
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is not here")
    folder = tmp_path_factory.mktemp("scifact-ray")
    config = DenseConfig(device="cpu", dtype="fp32", shard_size=1024)  # 6 shards: the kill test needs several
    alone = Index.build(SCIFACT, folder / "alone", dense=config)
    spread = Index.build(SCIFACT, folder / "ray", dense=config, encoding=RayEncoding(RayConfig()))
    return {"alone": alone, "ray": spread}


@pytest.mark.slow
def test_scifact_ray_build_equals_single_process(scifact_builds: dict[str, Index]) -> None:
    alone, spread = (_embeddings(scifact_builds[name]) for name in ("alone", "ray"))
    difference = float(np.abs(alone.astype(np.float32) - spread.astype(np.float32)).max())
    print(f"SciFact fp32 CPU: max abs embedding difference, Ray vs single process: {difference}")
    assert alone.dtype == spread.dtype == np.float16 and difference == 0.0


@pytest.mark.slow
def test_scifact_ray_run_is_identical(scifact_builds: dict[str, Index], tmp_path: Path) -> None:
    runner = CliRunner()
    outputs = {}
    for name, extra in (("alone", []), ("ray", ["--ray"])):
        outputs[name] = tmp_path / f"{name}.trec"
        args = ["run", str(scifact_builds["alone"].path), str(SCIFACT), "--split", "test", "-o", str(outputs[name])]
        result = runner.invoke(cli, [*args, "--mode", "hybrid", "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
    assert outputs["ray"].read_bytes() == outputs["alone"].read_bytes()


@pytest.mark.slow
def test_scifact_ray_build_survives_a_killed_worker(
    scifact_builds: dict[str, Index], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every encoding actor kills itself (SIGKILL) at its second shard, after encoding it and before returning
    it: Ray restarts the actor and retries the shard, and the result is still the single-process one."""
    import ray

    ray.shutdown()  # the workers of a fresh instance inherit the fault variable
    monkeypatch.setenv("SEARCHKIT_FAULT", "ray.encode.shard:2")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        config = DenseConfig(device="cpu", dtype="fp32", shard_size=1024)
        rebuilt = Index.build(SCIFACT, tmp_path / "killed", dense=config, encoding=RayEncoding(RayConfig()))
        assert np.array_equal(_embeddings(rebuilt), _embeddings(scifact_builds["alone"]))
    finally:
        ray.shutdown()
        monkeypatch.delenv("SEARCHKIT_FAULT")
        os.environ.pop("SEARCHKIT_FAULT", None)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(json.dumps({"killed_worker_build": "identical"}))
