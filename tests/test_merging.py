"""Merging a fine-tuned model with its start (searchkit.models.merging): alpha = 0 is the base bit for bit, 1 the
fine-tuned model, in between the weighted mean by hand; and the bi-encoder trainer's ``merge_alpha`` (a set alpha,
or the dev-best of the grid) ships those weights and records how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_dense_train_config

from searchkit.config import DenseTrainConfig
from searchkit.models.merging import merge_into, merge_state_dicts
from searchkit.types import ConfigError


def _states() -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    tuned = {"w": torch.randn(3, 4, generator=generator), "b": torch.randn(4, generator=generator).to(torch.bfloat16)}
    base = {"w": torch.randn(3, 4, generator=generator), "b": torch.randn(4, generator=generator).to(torch.bfloat16)}
    tuned["ids"] = base["ids"] = torch.arange(5)
    return tuned, base


def test_alpha_zero_is_the_base_and_one_the_fine_tuned_exactly() -> None:
    import torch

    tuned, base = _states()
    for alpha, expected in ((0.0, base), (1.0, tuned)):
        merged = merge_state_dicts(tuned, base, alpha)
        for name, tensor in expected.items():
            assert merged[name].dtype == tensor.dtype and torch.equal(merged[name], tensor), (alpha, name)


def test_alpha_in_between_by_hand() -> None:
    tuned, base = _states()
    merged = merge_state_dicts(tuned, base, 0.3)
    expected = 0.3 * tuned["w"].numpy().astype(np.float64) + 0.7 * base["w"].numpy().astype(np.float64)
    np.testing.assert_allclose(merged["w"].numpy(), expected, rtol=1e-6)
    assert merged["b"].dtype == tuned["b"].dtype  # computed in float32, cast back
    np.testing.assert_array_equal(merged["ids"].numpy(), np.arange(5))


def test_models_that_do_not_match_are_refused() -> None:
    import torch

    tuned, base = _states()
    with pytest.raises(ConfigError, match="different architectures: extra"):
        merge_state_dicts({**tuned, "extra": torch.zeros(1)}, base, 0.5)
    with pytest.raises(ConfigError, match=r"cannot merge w: shape \(2, 4\)"):
        merge_state_dicts({**tuned, "w": torch.zeros(2, 4)}, base, 0.5)
    with pytest.raises(ConfigError, match="integer tensor"):
        merge_state_dicts({**tuned, "ids": torch.arange(1, 6)}, base, 0.5)
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\]"):
        merge_state_dicts(tuned, base, 1.5)


def test_merge_into_a_module() -> None:
    import torch

    layer = torch.nn.Linear(4, 3)
    base = {name: torch.zeros_like(tensor) for name, tensor in layer.state_dict().items()}
    before = layer.weight.detach().clone()
    merge_into(layer, base, 0.5)
    assert torch.allclose(layer.weight, before / 2)


def test_merge_settings_are_checked() -> None:
    common = {"output": "o", "corpus": "c", "index": "i"}
    with pytest.raises(ConfigError, match="merge_alpha must be a number in"):
        DenseTrainConfig(**common, merge_alpha="best")
    with pytest.raises(ConfigError, match="merge_alpha must be a number in"):
        DenseTrainConfig(**common, merge_alpha=1.5)
    with pytest.raises(ConfigError, match="needs adapter unset"):
        DenseTrainConfig(**common, merge_alpha=0.5, adapter="lora")
    with pytest.raises(ConfigError, match="chosen on dev"):
        DenseTrainConfig(**common, merge_alpha="auto", dev_queries=0)
    assert DenseTrainConfig(**common, merge_alpha_grid=[1, 0.5, 0.5]).merge_alpha_grid == (0.5, 1.0)


# ---------------------------------------------------------------------- the bi-encoder trainer's merge_alpha
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path) -> Path:
    from searchkit.index import Index

    folder = tmp_path_factory.mktemp("merge-dense")
    Index.build(synthetic_beir, folder / "index")
    return folder


def _config(workspace: Path, base: Path, corpus: Path, name: str, **changes: Any) -> DenseTrainConfig:
    return tiny_dense_train_config(workspace, base, corpus, name, **changes)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_merge_alpha_zero_ships_the_starting_weights(
    workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path
) -> None:
    from searchkit.models.cards import read_model_card
    from searchkit.training.bi_encoder import train_dense

    result = train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "zero", merge_alpha=0.0))
    card = read_model_card(result.output, "dense")
    if not result.shipped:
        pytest.skip("no epoch beat the start on dev: nothing is merged")  # the dev guard's case, tested elsewhere
    assert card["merge"]["alpha"] == 0.0 and card["merge"]["chosen"] == "set"
    merged, base = _weights(result.output), _weights(tiny_bi_encoder)
    assert set(merged) == set(base)
    for name, tensor in base.items():
        np.testing.assert_array_equal(merged[name], tensor, err_msg=name)


def test_merge_alpha_auto_picks_the_dev_best(workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from searchkit.models.cards import read_model_card
    from searchkit.training.bi_encoder import train_dense

    cfg = _config(workspace, tiny_bi_encoder, synthetic_beir, "auto", merge_alpha="auto", merge_alpha_grid=(0, 0.5, 1))
    result = train_dense(cfg)
    assert result.shipped  # the tiny model learns this collection (tests/test_train_dense.py)
    card = read_model_card(result.output, "dense")
    merge = card["merge"]
    scores = {float(alpha): dev["nDCG@10"] for alpha, dev in merge["dev"].items()}
    assert sorted(scores) == [0.0, 0.5, 1.0] and merge["chosen"] == "dev"
    best = max(scores.values())
    assert merge["alpha"] == min(alpha for alpha, value in scores.items() if value == best)
    assert scores[0.0] == pytest.approx(card["dev"][0]["dev"]["nDCG@10"], abs=1e-6)  # alpha 0: the start
    assert scores[1.0] == pytest.approx(card["final_dev"]["nDCG@10"], abs=1e-6)  # alpha 1: the kept epoch
    # the folder holds the merged weights: alpha * kept epoch + (1 - alpha) * start, re-derived from the files
    alpha = merge["alpha"]
    unmerged = train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "unmerged"))
    kept, base, shipped = _weights(unmerged.output), _weights(tiny_bi_encoder), _weights(result.output)
    for name, tensor in base.items():
        if tensor.dtype.kind == "f":
            expected = alpha * kept[name].astype(np.float64) + (1 - alpha) * tensor.astype(np.float64)
            np.testing.assert_allclose(shipped[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    SentenceTransformer(str(result.output), device="cpu").encode(["about apple"])  # a standard ST folder
