"""Models that cannot be what they claim are refused, with one line, by every loader (the reranker, training's
``init_from`` and base model, the dense encoder and its trainer, the tokenizer of stored tokens), through the Python
API and the command line: a reranker whose classifier weights are missing (transformers would make up a random
head), a path that does not exist or a hub name not in the offline cache, a folder that asks for its own code
(``auto_map``, a foreign sentence-transformers module), and pickled weights. Good models still load: a tiny
reranker, the embedded all-MiniLM-L6-v2, a base model given a fresh head for training, a cached hub name.
The rules are :mod:`searchkit.models.loading`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_cli

from searchkit.config import DenseConfig, DenseTrainConfig, TokensConfig, TrainConfig
from searchkit.index import Index
from searchkit.types import ConfigError

REPO = Path(__file__).resolve().parents[2]
HUB_NAME = "no-such-org/no-such-model"  # a valid hub name that is in no cache
MESSAGES = {
    "no classifier": (
        r"its weights lack 2 tensors of its architecture \(classifier\.bias, classifier\.weight\), which "
        r"transformers would fill with random values \(different scores on every load\)"
    ),
    "missing path": r"no such folder or model \(/\S+ does not exist, and it is not a Hugging Face model name\)",
    "relative path": r"no such folder or model \(/\S+/no/such/model does not exist, and it is not a Hugging Face",
    "hub name not cached": (
        rf"no such folder or model \(no folder \S+, and no Hugging Face model '{HUB_NAME}' in the local cache \S+; "
        r"HF_HUB_OFFLINE is set, so nothing is downloaded: put it in the Hugging Face cache \(`hf download "
        rf"{HUB_NAME}` where there is network; HF_HUB_CACHE names the cache\), pass a model folder, or unset "
        r"HF_HUB_OFFLINE"
    ),
    "no weights": (
        r"\S+ has a model config \(config\.json\) but no weights file \(model\.safetensors\): the folder is "
        r"incomplete; copy the weights next to config\.json, or pass the complete folder"
    ),
    "remote code": (
        r"\S+/config\.json maps (AutoConfig, )?AutoModel\S* to code that comes with the model \(auto_map\), which "
        r"needs trust_remote_code, and searchkit never enables it"
    ),
    "remote code, unknown architecture": r"\S+/config\.json maps .* \(auto_map\), which needs trust_remote_code",
    "remote module": (
        r"\S+/modules\.json names the module class 'my_package\.MyModule', code outside sentence-transformers, which "
        r"needs trust_remote_code"
    ),
    "pickled weights": (
        r"\S+/pytorch_model\.bin holds pickled weights and no \*\.safetensors file is next to it; searchkit loads "
        r"safetensors only"
    ),
    "pickled code": r"\S+/pytorch_model\.bin holds pickled weights",
}


# ---------------------------------------------------------------------- hostile folders, made from good ones
class RunsCode:
    """Unpickling this writes the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _copy(source: Path, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    return folder


def _without_classifier(source: Path, folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    _copy(source, folder)
    tensors = load_file(folder / "model.safetensors")
    kept = {name: tensor for name, tensor in tensors.items() if not name.startswith("classifier.")}
    assert len(kept) == len(tensors) - 2
    save_file(kept, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _remote_code(source: Path, folder: Path, model_type: str | None = None) -> Path:
    _copy(source, folder)
    config = json.loads((folder / "config.json").read_text())
    classifier = any("SequenceClassification" in name for name in config.get("architectures") or [])
    head = "AutoModelForSequenceClassification" if classifier else "AutoModel"
    config["auto_map"] = {"AutoConfig": "modeling.MyConfig", head: "modeling.MyModel"}
    if model_type is not None:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling.py").write_text(f"open({str(folder / 'code-ran')!r}, 'w')\n")
    return folder


def _remote_module(source: Path, folder: Path) -> Path:
    _copy(source, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "my_package.MyModule"
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def _pickled(source: Path, folder: Path, runs_code: bool = False) -> Path:
    import torch
    from safetensors.torch import load_file

    _copy(source, folder)
    weights = folder / "model.safetensors"
    if runs_code:
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": RunsCode(folder / "code-ran")}))
    else:
        torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


def _without_weights(source: Path, folder: Path) -> Path:
    """A folder whose config and tokenizer are all there, but not its weights (a half-copied model)."""
    _copy(source, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return folder


Maker = Callable[[Path, Path], Path]
RERANKER_CASES: dict[str, Maker | str] = {
    "no classifier": _without_classifier,
    "missing path": lambda source, folder: folder / "missing",
    "relative path": "./no/such/model",
    "hub name not cached": HUB_NAME,
    "remote code": _remote_code,
    "remote code, unknown architecture": lambda source, folder: _remote_code(source, folder, "my-custom"),
    "pickled weights": _pickled,
    "pickled code": lambda source, folder: _pickled(source, folder, runs_code=True),
    "no weights": _without_weights,
}
ENCODER_CASES: dict[str, Maker | str] = {
    "missing path": lambda source, folder: folder / "missing",
    "relative path": "./no/such/model",
    "hub name not cached": HUB_NAME,
    "remote code": _remote_code,
    "remote code, unknown architecture": lambda source, folder: _remote_code(source, folder, "my-custom"),
    "remote module": _remote_module,
    "pickled weights": _pickled,
    "pickled code": lambda source, folder: _pickled(source, folder, runs_code=True),
    "no weights": _without_weights,
}
TOKENIZER_CASES = ["missing path", "relative path", "hub name not cached", "remote code, unknown architecture"]


def _make(case: Maker | str, source: Path, tmp_path: Path) -> str:
    if isinstance(case, str):
        return case
    return str(case(source, tmp_path / "model"))


def _ran_no_code(tmp_path: Path) -> None:
    assert not list(tmp_path.rglob("code-ran")), "a model's own code ran"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every test offline, over an empty hub cache of its own (what HF_HUB_OFFLINE=1 and HF_HUB_CACHE set), without
    Hugging Face's progress bars (what the CLI's HF_HUB_DISABLE_PROGRESS_BARS does in its own process)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(REPO)
    bars, loading_bars = not are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    yield cache
    if bars:
        enable_progress_bars()
    if loading_bars:
        hf_logging.enable_progress_bar()


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``searchkit ARGS`` in-process: (exit code, stdout, stderr), with nothing printed before it."""
    capsys.readouterr()
    return run_cli(args, capsys)


def _one_line(err: pytest.ExceptionInfo[ConfigError], pattern: str) -> None:
    assert "\n" not in str(err.value), f"not one line: {err.value}"
    assert re.search(pattern, str(err.value)), str(err.value)


def _cli_error(code: int, err: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and re.search(pattern, lines[0]), err


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Index.build(TINY, tmp_path_factory.mktemp("bm25") / "tiny").path


# ---------------------------------------------------------------------- the reranker
@pytest.mark.parametrize("kind", list(RERANKER_CASES))
def test_hostile_rerankers_are_refused(
    kind: str, tiny_cross_encoder: Path, bm25_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from searchkit.models.cross_encoder import CrossEncoderReranker

    model = _make(RERANKER_CASES[kind], tiny_cross_encoder, tmp_path)
    with pytest.raises(ConfigError) as err:
        CrossEncoderReranker(model, device="cpu", dtype="fp32")
    _one_line(err, rf"^reranker '{re.escape(model)}': {MESSAGES[kind]}")
    code, _, stderr = _cli(["search", str(bm25_index), "cats", "--rerank", model, "--device", "cpu"], capsys)
    _cli_error(code, stderr, rf"reranker '{re.escape(model)}': {MESSAGES[kind]}")
    _ran_no_code(tmp_path)


def test_a_missing_classifier_is_one_line_on_the_real_stderr(
    tiny_cross_encoder: Path, bm25_index: Path, tmp_path: Path
) -> None:
    """transformers' multi-line load report of the random head is not printed either (a subprocess: the real
    stderr, where transformers' own log handler writes)."""
    folder = _without_classifier(tiny_cross_encoder, tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "searchkit", "search", str(bm25_index), "cats", "--rerank", str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    _cli_error(done.returncode, done.stderr, MESSAGES["no classifier"])


# ---------------------------------------------------------------------- training: init_from and the base model
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_words: list[str]) -> Path:
    from searchkit.models.tiny import make_tiny_cross_encoder

    folder = tmp_path_factory.mktemp("train")
    make_tiny_cross_encoder(folder / "base", words=tiny_words)
    return folder


def _train_config(workspace: Path, name: str, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        output=str(workspace / name),
        corpus=str(TINY),
        split="test",
        index=str(workspace / "index"),
        base_model=str(workspace / "base"),
        max_length=48,
        mine_depth=6,
        negatives_per_group=3,
        groups_per_step=2,
        epochs=1,
        max_steps=1,
        dev_queries=1,
        dev_depth=6,
        device="cpu",
        seed=7,
        overwrite=True,
    )
    return dataclasses.replace(cfg, **changes)


INIT_FROM_CASES = [
    "no classifier",
    "missing path",
    "hub name not cached",
    "remote code",
    "pickled weights",
    "no weights",
]


@pytest.mark.parametrize("kind", INIT_FROM_CASES)
def test_hostile_init_from_is_refused(
    kind: str, workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from searchkit.training.cross_encoder import train

    model = _make(RERANKER_CASES[kind], workspace / "base", tmp_path)
    with pytest.raises(ConfigError) as err:
        train(_train_config(workspace, "child", init_from=model))
    _one_line(err, rf"^init_from '{re.escape(model)}': {MESSAGES[kind]}")
    assert not (workspace / "child" / "searchkit.json").exists()
    if kind in ("no classifier", "missing path"):
        recipe = tmp_path / "recipe.toml"
        settings = dataclasses.asdict(_train_config(workspace, "cli-child"))
        recipe.write_text(
            "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items() if value is not None)
        )
        code, _, stderr = _cli(["train", str(recipe), "--init-from", model], capsys)
        _cli_error(code, stderr, rf"init_from '{re.escape(model)}': {MESSAGES[kind]}")


@pytest.mark.parametrize("kind", ["missing path", "remote code", "pickled weights"])
def test_hostile_base_models_are_refused_before_the_training_data(
    kind: str, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from searchkit.training import cross_encoder

    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the training data was loaded before the base model was checked")

    monkeypatch.setattr(cross_encoder, "load_training_data", no_data)
    model = _make(RERANKER_CASES[kind], workspace / "base", tmp_path)
    with pytest.raises(ConfigError) as err:
        cross_encoder.train(_train_config(workspace, "from-base", base_model=model))
    _one_line(err, rf"^base model '{re.escape(model)}': {MESSAGES[kind]}")


# ---------------------------------------------------------------------- the dense encoder and its trainer
@pytest.mark.parametrize("kind", list(ENCODER_CASES))
def test_hostile_dense_models_are_refused(
    kind: str, tiny_bi_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _make(ENCODER_CASES[kind], tiny_bi_encoder, tmp_path)
    with pytest.raises(ConfigError) as err:
        Index.build(TINY, tmp_path / "index", dense=DenseConfig(model=model, device="cpu"))
    _one_line(err, rf"^dense model '{re.escape(model)}': {MESSAGES[kind]}")
    assert not (tmp_path / "index").exists()
    args = ["index", "build", "--corpus", str(TINY), "-o", str(tmp_path / "cli"), "--dense", model, "--device", "cpu"]
    code, _, stderr = _cli(args, capsys)
    _cli_error(code, stderr, rf"dense model '{re.escape(model)}': {MESSAGES[kind]}")
    _ran_no_code(tmp_path)


@pytest.mark.parametrize("kind", ["missing path", "remote module", "pickled weights"])
def test_hostile_dense_training_starts_are_refused(kind: str, tiny_bi_encoder: Path, tmp_path: Path) -> None:
    from searchkit.training.bi_encoder import train_dense

    model = _make(ENCODER_CASES[kind], tiny_bi_encoder, tmp_path)
    cfg = DenseTrainConfig(output=str(tmp_path / "out"), corpus=str(TINY), index=str(tmp_path / "i"), base_model=model)
    with pytest.raises(ConfigError) as err:
        train_dense(cfg)
    _one_line(err, rf"^base model '{re.escape(model)}': {MESSAGES[kind]}")
    with pytest.raises(ConfigError) as err:
        train_dense(dataclasses.replace(cfg, base_model=str(tiny_bi_encoder), init_from=model))
    _one_line(err, rf"^init_from '{re.escape(model)}': {MESSAGES[kind]}")
    assert not (tmp_path / "i").exists()  # refused before the training data (its index) was built


# ---------------------------------------------------------------------- the tokenizer of stored tokens
@pytest.mark.parametrize("kind", TOKENIZER_CASES)
def test_hostile_tokenizers_are_refused(
    kind: str, tiny_cross_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _make(RERANKER_CASES[kind], tiny_cross_encoder, tmp_path)
    with pytest.raises(ConfigError) as err:
        Index.build(TINY, tmp_path / "index", tokens=TokensConfig(model=model))
    _one_line(err, rf"^tokenizer '{re.escape(model)}': {MESSAGES[kind]}")
    args = ["index", "build", "--corpus", str(TINY), "-o", str(tmp_path / "cli"), "--tokens", model]
    code, _, stderr = _cli(args, capsys)
    _cli_error(code, stderr, rf"tokenizer '{re.escape(model)}': {MESSAGES[kind]}")
    _ran_no_code(tmp_path)


# ---------------------------------------------------------------------- what still loads
PAIRS = (["cats chase mice", "solar power"], ["Cats chase mice around the garden.", "Solar panels on roofs."])


def test_good_models_still_load(tiny_cross_encoder: Path, tiny_bi_encoder: Path) -> None:
    from searchkit.models.cross_encoder import CrossEncoderReranker
    from searchkit.models.encoder import Encoder
    from searchkit.models.tokenizers import load_tokenizer

    first = CrossEncoderReranker(tiny_cross_encoder, device="cpu", dtype="fp32").score(*PAIRS)
    again = CrossEncoderReranker(tiny_cross_encoder, device="cpu", dtype="fp32").score(*PAIRS)
    assert first.tolist() == again.tolist()  # every weight from the file: the same scores on every load
    assert Encoder(str(tiny_bi_encoder), device="cpu").encode(["cats"]).shape == (1, 32)
    embedded = Encoder("all-MiniLM-L6-v2", device="cpu")
    assert embedded.encode(["solar panels"]).shape == (1, 384)
    assert load_tokenizer("all-MiniLM-L6-v2").tokenize("solar panels") == ["solar", "panels"]


def test_a_base_model_gets_a_fresh_head_on_purpose(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """Training's base model (fresh_head=True) may lack a head: it gets a seeded one, recorded as fresh."""
    import torch

    from searchkit.models.cross_encoder import load_cross_encoder

    headless = _without_classifier(tiny_cross_encoder, tmp_path / "headless")
    one = load_cross_encoder(headless, fresh_head=True, seed=3)
    two = load_cross_encoder(headless, fresh_head=True, seed=3)
    assert one.identity["fresh_head"] and torch.equal(one.model.classifier.weight, two.model.classifier.weight)
    assert not load_cross_encoder(tiny_cross_encoder, fresh_head=True).identity["fresh_head"]  # its own head kept
    embedded = load_cross_encoder("all-MiniLM-L6-v2", fresh_head=True, seed=0)
    assert embedded.identity["fresh_head"] and embedded.model.config.num_labels == 1


def _cache(cache: Path, repo_id: str, source: Path) -> None:
    """``source`` as the cached snapshot of hub model ``repo_id`` (the Hugging Face cache layout)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_cached_hub_names_still_load_and_are_checked_too(
    offline: Path, tiny_cross_encoder: Path, tiny_bi_encoder: Path, tmp_path: Path
) -> None:
    from searchkit.models.cross_encoder import CrossEncoderReranker
    from searchkit.models.encoder import Encoder
    from searchkit.models.tokenizers import load_tokenizer

    _cache(offline, "my-org/tiny-reranker", tiny_cross_encoder)
    _cache(offline, "my-org/tiny-encoder", tiny_bi_encoder)
    expected = CrossEncoderReranker(tiny_cross_encoder, device="cpu", dtype="fp32").score(*PAIRS)
    cached = CrossEncoderReranker("my-org/tiny-reranker", device="cpu", dtype="fp32").score(*PAIRS)
    assert cached.tolist() == expected.tolist()
    assert Encoder("my-org/tiny-encoder", device="cpu").encode(["cats"]).shape == (1, 32)
    assert load_tokenizer("my-org/tiny-reranker").tokenize("cats") == ["cats"]
    # the cached folder follows the same rules as a local one
    _cache(offline, "my-org/pickled", _pickled(tiny_cross_encoder, tmp_path / "pickled"))
    with pytest.raises(ConfigError) as err:
        CrossEncoderReranker("my-org/pickled", device="cpu")
    _one_line(err, rf"^reranker 'my-org/pickled': {MESSAGES['pickled weights']}")
    assert f"{offline}/models--my-org--pickled/snapshots/" in str(err.value)
    _cache(offline, "my-org/remote", _remote_code(tiny_cross_encoder, tmp_path / "remote"))
    with pytest.raises(ConfigError) as err:
        CrossEncoderReranker("my-org/remote", device="cpu")
    _one_line(err, rf"^reranker 'my-org/remote': {MESSAGES['remote code']}")
    _ran_no_code(tmp_path)
