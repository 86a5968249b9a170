"""Model cards (searchkit.json and its README.md Hub card): written and read in one place, version and kind checked;
model names and devices."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from searchkit.models.cards import (
    CARD_VERSION,
    MODEL_CARD,
    README,
    lineage,
    read_model_card,
    readme_text,
    write_model_card,
)
from searchkit.models.device import MMAP_THRESHOLD, TUNE_MALLOC_ENV, auto_batch_tokens, resolve_device
from searchkit.models.loading import resolve_model
from searchkit.types import ConfigError, DataError
from searchkit.version import __version__


def test_card_round_trip_has_header_then_fields(tmp_path: Path) -> None:
    path = write_model_card(tmp_path / "model", "reranker", {"interpolation": 0.25, "parent": None})
    assert path == tmp_path / "model" / MODEL_CARD
    card = read_model_card(tmp_path / "model", "reranker")
    assert card == {
        "format": "searchkit-reranker",
        "format_version": CARD_VERSION,
        "searchkit_version": __version__,
        "interpolation": 0.25,
        "parent": None,
    }
    assert list(card)[:3] == ["format", "format_version", "searchkit_version"]
    assert not list(tmp_path.joinpath("model").glob("*.tmp"))


def test_card_fields_cannot_override_the_header(tmp_path: Path) -> None:
    write_model_card(tmp_path, "dense", {"format": "searchkit-reranker", "format_version": 99, "x": 1})
    card = read_model_card(tmp_path)
    assert (card["format"], card["format_version"], card["x"]) == ("searchkit-dense", CARD_VERSION, 1)


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind"):
        write_model_card(tmp_path, "bm25", {})


def test_no_card_reads_empty(tmp_path: Path) -> None:
    assert read_model_card(tmp_path) == {}
    assert read_model_card("cross-encoder/ms-marco-MiniLM-L6-v2") == {}


def _write(folder: Path, text: str) -> None:
    (folder / MODEL_CARD).write_text(text, encoding="utf-8")


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "{not json")
    with pytest.raises(DataError, match="invalid model card") as err:
        read_model_card(tmp_path)
    assert err.value.path == str(tmp_path / MODEL_CARD)


def test_non_object_and_foreign_cards_are_data_errors(tmp_path: Path) -> None:
    _write(tmp_path, "[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        read_model_card(tmp_path)
    _write(tmp_path, json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(DataError, match="not a searchkit model card"):
        read_model_card(tmp_path)
    _write(tmp_path, json.dumps({"format": "searchkit-reranker", "format_version": "1"}))
    with pytest.raises(DataError, match="format_version"):
        read_model_card(tmp_path)


def test_newer_card_is_refused_with_upgrade_hint(tmp_path: Path) -> None:
    _write(tmp_path, json.dumps({"format": "searchkit-reranker", "format_version": CARD_VERSION + 1}))
    with pytest.raises(DataError, match=r"newer searchkit.*upgrade") as err:
        read_model_card(tmp_path)
    assert err.value.path == str(tmp_path / MODEL_CARD)


def test_kind_mismatch_is_a_config_error(tmp_path: Path) -> None:
    write_model_card(tmp_path, "dense", {})
    assert read_model_card(tmp_path)["format"] == "searchkit-dense"
    with pytest.raises(ConfigError, match="dense model, not a reranker"):
        read_model_card(tmp_path, "reranker")


def test_legacy_card_without_lineage_reads_its_base() -> None:
    # the shape of the cards in eval/results/*.searchkit.json written before lineage existed
    card = {"base_model": {"name": "all-MiniLM-L6-v2", "fresh_head": True, "weights_sha256": {"m.safetensors": "a"}}}
    assert lineage(card) == [{"name": "all-MiniLM-L6-v2", "sha256": {"m.safetensors": "a"}}]
    assert lineage({}) == []


def test_recorded_lineage_is_returned_in_order_as_copies() -> None:
    steps = [{"name": "base", "sha256": None}, {"name": "/models/parent", "sha256": {"model.safetensors": "p"}}]
    card = {"lineage": steps, "base_model": {"name": "ignored"}}
    got = lineage(card)
    assert got == steps
    got[0]["name"] = "changed"
    assert steps[0]["name"] == "base"


def test_resolve_model_passes_other_names_through() -> None:
    assert resolve_model("some/other-model") == "some/other-model"
    assert Path(resolve_model("all-MiniLM-L6-v2")).is_dir()


def test_resolve_device_cpu_and_missing_cuda() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


ALLOCATOR_PROBE = """
import ctypes, sys, time
from searchkit.models.device import tune_cpu_allocator
tuned = tune_cpu_allocator()
# what the tuning is for: a freed 16 MiB block is reused, so writing a second one faults no new pages in
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def fresh_pages() -> int:
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(16 << 20)
    ctypes.memset(block, 1, 16 << 20)
    libc.free(ctypes.c_void_p(block))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
fresh_pages()
print(tuned, fresh_pages())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc's mallopt")
@pytest.mark.parametrize("opt_out", [False, True])
def test_tuned_allocator_reuses_freed_blocks_and_can_be_turned_off(opt_out: bool) -> None:
    env = {**os.environ, TUNE_MALLOC_ENV: "0" if opt_out else "1"}
    out = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    assert tuned == str(not opt_out)
    pages = (16 << 20) // 4096
    if opt_out:  # glibc's default: a 16 MiB block is a fresh mmap each time, every page faulted in again
        assert int(faults) >= pages // 2
    else:
        assert int(faults) < pages // 10


def test_cpu_batch_budget_keeps_the_widest_activation_under_the_mmap_threshold() -> None:
    import torch

    bert_base = SimpleNamespace(hidden_size=768, intermediate_size=3072)
    for dtype in (torch.float32, torch.bfloat16):
        budget = auto_batch_tokens(bert_base, dtype, "cpu")
        size = budget * 3072 * (torch.finfo(dtype).bits // 8)
        assert size <= MMAP_THRESHOLD < 2 * size  # the largest power of two that fits
    assert auto_batch_tokens(SimpleNamespace(hidden_size=64), torch.float32, "cpu") == 16384  # capped
    assert auto_batch_tokens(None, torch.float32, "cpu") == 2048  # no config: BERT-base width assumed


# ---------------------------------------------------------------------- README.md: the Hugging Face model card
RERANKER_CARD = {
    "base_model": {"name": "all-MiniLM-L6-v2"},
    "lineage": [{"name": "all-MiniLM-L6-v2", "sha256": None}, {"name": "/tmp/parent", "sha256": {"m": "ab"}}],
    "training_config": {"corpus": "../shared/datasets/scifact", "split": "train", "qrels": None},
    "dev_metric": "nDCG@10",
    "final_dev": {"reranker": 0.61, "first_stage": 0.55, "interpolated": 0.64, "a": 0.7},
}


def test_every_card_write_writes_a_readme_huggingface_parses(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    write_model_card(tmp_path, "reranker", RERANKER_CARD)
    card = ModelCard.load(tmp_path / README)  # the Hub's own parser of model-card metadata
    data = card.data
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "text-ranking"
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the embedded default, by its Hub name
    assert data.datasets == ["scifact"] and data.metrics == ["nDCG@10"]
    assert {"searchkit", "reranker", "cross-encoder"} <= set(data.tags)
    results = {r.metric_name: r.metric_value for r in data.eval_results}
    assert results == {"dev nDCG@10 (reranker alone)": 0.61, "dev nDCG@10 (fused with the first stage)": 0.64}
    assert {r.dataset_split for r in data.eval_results} == {"dev"} and data.model_name == tmp_path.name
    assert data.to_dict()["searchkit"]["lineage"] == ["all-MiniLM-L6-v2", "/tmp/parent"]
    assert "1. `all-MiniLM-L6-v2`\n2. `/tmp/parent`\n3. this model" in card.text
    assert read_model_card(tmp_path, "reranker")["final_dev"]["interpolated"] == 0.64  # the README is not checked


def test_dense_card_readme_reports_each_dev_metric(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    card = {
        "base_model": {"name": "hf://my-org/base@v1"},
        "lineage": [{"name": "hf://my-org/base@v1", "sha256": None}, {"name": "/local/parent", "sha256": None}],
        "training_config": {"corpus": "irds:beir/scifact/train"},
        "dev_metric": "nDCG@10",
        "final_dev": {"nDCG@10": 0.5, "RR@10": 0.4, "R@100": 0.9},
    }
    write_model_card(tmp_path, "dense", card)
    data = ModelCard.load(tmp_path / README).data
    assert data.pipeline_tag == "sentence-similarity" and "bi-encoder" in data.tags
    assert data.base_model == "my-org/base"  # the nearest ancestor on the Hub (the parent is a local folder)
    assert data.datasets == ["beir/scifact/train"]
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"nDCG@10": 0.5, "RR@10": 0.4, "R@100": 0.9}


def test_a_card_without_results_or_hub_ancestors_still_parses(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    data = ModelCard(readme_text({"format": "searchkit-reranker", "base_model": {"name": "/tmp/b"}}, "m")).data
    assert data.base_model is None and data.eval_results is None and data.library_name == "sentence-transformers"


def test_a_readme_searchkit_did_not_write_is_kept(tmp_path: Path) -> None:
    (tmp_path / README).write_text("# my own notes\n")
    write_model_card(tmp_path, "reranker", RERANKER_CARD)
    assert (tmp_path / README).read_text() == "# my own notes\n"
    (tmp_path / README).unlink()
    write_model_card(tmp_path, "reranker", {**RERANKER_CARD, "final_dev": None})  # rewritten: results dropped
    assert "model-index" not in (tmp_path / README).read_text()
