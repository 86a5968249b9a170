"""Configs: validation, manifest round trips, index and training recipe loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchkit.config import (
    BM25Config,
    DenseConfig,
    FusionConfig,
    RerankConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_index_recipe,
    load_recipe,
    load_train_recipe,
)
from searchkit.types import ConfigError

RECIPE = Path(__file__).parent.parent / "training" / "scifact.toml"


@pytest.mark.parametrize(
    "config",
    [
        BM25Config(method="bm25+", delta=1.0),
        DenseConfig(),
        FusionConfig(alpha=0.2),
        RerankConfig("m", interpolation=0.3),
        TrainConfig(output="o", index="i", corpus="c"),
    ],
)
def test_round_trip(config: object) -> None:
    assert config_from_dict(type(config), config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: BM25Config(method="bm26"), "unknown BM25 method 'bm26'"),
        (lambda: BM25Config(b=1.5), "b must be in"),
        (lambda: DenseConfig(batch_size=0), "batch_size must be > 0"),
        (lambda: DenseConfig(device="tpu"), "device must be"),
        (lambda: FusionConfig(method="sum"), "unknown fusion method"),
        (lambda: FusionConfig(alpha=2), "alpha must be in"),
        (lambda: RerankConfig("m", dtype="int8"), "unknown dtype 'int8'"),
        (lambda: RerankConfig("m", interpolation="best"), "interpolation must be"),
        (lambda: TrainConfig(output="o", index="i", corpus="c", loss="pairwise"), "loss must be one of"),
    ],
)
def test_invalid_settings(factory: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        factory()  # type: ignore[operator]


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        BM25Config().k1 = 2.0  # type: ignore[misc]


def test_recipe_paths_are_relative_to_the_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "sub" / "r.toml"
    recipe.parent.mkdir()
    recipe.write_text('corpus = "data/c.jsonl"\noutput = "out"\nbm25 = false\n[dense]\nmodel = "m"\n')
    loaded = load_index_recipe(recipe)
    assert loaded.corpus == str(tmp_path / "sub" / "data" / "c.jsonl")
    assert loaded.output == tmp_path / "sub" / "out"
    assert loaded.bm25 is None and loaded.dense == DenseConfig(model="m")


def test_recipe_errors_name_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('corpus = "c"\noutput = "o"\n[bm25]\nk2 = 1\n')
    with pytest.raises(ConfigError, match=r"r.toml: unknown BM25Config setting 'k2'"):
        load_index_recipe(recipe)
    recipe.write_text("corpus = \n")
    with pytest.raises(ConfigError, match=r"r.toml: invalid TOML"):
        load_recipe(recipe)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "none.toml")
    recipe.write_text('corpus = "irds:beir/scifact/test"\noutput = "o"\n')
    assert load_index_recipe(recipe).corpus == "irds:beir/scifact/test"


# ---------------------------------------------------------------------- training recipes
def test_scifact_recipe_loads_with_paths_from_its_folder() -> None:
    cfg = load_train_recipe(RECIPE)
    root = RECIPE.resolve().parent
    assert Path(cfg.output) == root / "scifact-reranker"
    assert Path(cfg.index).resolve() == (root.parent / "indexes" / "scifact").resolve()  # type: ignore[arg-type]
    assert Path(cfg.corpus).resolve() == (root.parent.parent / "shared" / "datasets" / "scifact").resolve()  # type: ignore[arg-type]
    assert (cfg.lr, cfg.warmup_ratio, cfg.groups_per_step, cfg.negatives_per_group, cfg.mine_depth) == (
        1e-4,
        0.1,
        4,
        7,
        50,
    )
    assert (cfg.max_length, cfg.loss, cfg.epochs, cfg.dev_queries, cfg.dev_depth) == (256, "listwise", 1, 100, 20)
    assert cfg.split == "train"


def test_recipe_and_config_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('output = "o"\nindex = "i"\ncorpus = "c"\nlearning_rate = 1\n')
    with pytest.raises(ConfigError, match="unknown TrainConfig setting 'learning_rate'"):
        load_train_recipe(recipe)
    with pytest.raises(ConfigError, match="class weights need loss='pointwise'"):
        TrainConfig(output="o", index="i", corpus="c", weighting="class")
    with pytest.raises(ConfigError, match="needs a pairs file"):
        TrainConfig(output="o", index="i", corpus="c", weighting="column", loss="pointwise")
    with pytest.raises(ConfigError, match="skip_top"):
        TrainConfig(output="o", index="i", corpus="c", skip_top=50, mine_depth=50)
    with pytest.raises(ConfigError, match="give an index"):
        TrainConfig(output="o", corpus="c")
    recipe.write_text('output = "o"\nindex = "i"\ncorpus = "c"\ninterpolation_grid = ["half"]\n')
    with pytest.raises(ConfigError, match=r"r.toml: TrainConfig.interpolation_grid must be a list of numbers"):
        load_train_recipe(recipe)
    recipe.write_text('output = "o"\nindex = "i"\ncorpus = "c"\nepochs = "two"\n')
    with pytest.raises(ConfigError, match=r"r.toml: "):
        load_train_recipe(recipe)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[bm25]\nk1 = "high"', "BM25Config.k1 must be a number, got 'high'"),
        ("[bm25]\nstemmer = 3", "BM25Config.stemmer must be a string or unset, got 3"),
        ("[dense]\nnormalize = 1", "DenseConfig.normalize must be true or false, got 1"),
        ('[dense]\nmax_length = "256"', "DenseConfig.max_length must be an integer, got '256'"),
        ("[tokens]\nmax_length = 1.5", "TokensConfig.max_length must be an integer, got 1.5"),
        ('[filters]\nfields = "year"', "FilterConfig.fields must be a list of strings, got 'year'"),
    ],
)
def test_recipe_types_are_checked_with_the_key_in_the_message(tmp_path: Path, table: str, message: str) -> None:
    """One mechanism (pydantic's strict validators, :func:`check_types`) for every config, whoever builds it."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'corpus = "c"\noutput = "o"\n{table}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_index_recipe(recipe)
    assert str(caught.value) == f"{recipe}: {message}"


def test_an_integer_is_a_number_and_a_number_is_not_a_flag() -> None:
    assert BM25Config(k1=2).k1 == 2
    with pytest.raises(ConfigError, match=r"FusionConfig\.rrf_k must be an integer, got True"):
        FusionConfig(rrf_k=True)
