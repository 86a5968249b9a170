"""LoRA fine-tuning of the tiny random reranker (``adapter = "lora"``): only the adapter and the classification head
train (the base's weights come back bit for bit), the loss goes down, the output is a small adapter folder that
searchkit's loader puts over its base and that scores exactly as the trained model did; a bad adapter folder is
one ConfigError line. The out-of-domain warning of a reranker trained on another collection is here too (the
card's ``collection``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_dense_train_config

from searchkit.config import BM25Config, TrainConfig
from searchkit.formats import read_run
from searchkit.index import Index
from searchkit.models.cross_encoder import CrossEncoderReranker
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.training.cross_encoder import TrainResult, train
from searchkit.types import ConfigError

TINY = Path(__file__).parent / "data" / "tiny"
WORDS = [
    "apple",
    "banana",
    "cherry",
    "delta",
    "echo",
    "falcon",
    "granite",
    "harbor",
    "igloo",
    "jungle",
    "kettle",
    "lantern",
    "meadow",
    "nectar",
    "orbit",
    "pepper",
    "quartz",
    "river",
    "saddle",
    "tundra",
    "umbrella",
    "violet",
    "walnut",
    "xenon",
    "yonder",
    "zephyr",
    "anchor",
    "basil",
    "canyon",
    "dune",
    "about",
    "notes",
    "on",
    "and",
    "the",
]  # fmt: skip  (tests/conftest.py's synthetic collection)


def _texts(corpus: Path) -> tuple[dict[str, str], dict[str, str]]:
    docs = {}
    for line in (corpus / "corpus.jsonl").read_text().splitlines():
        record = json.loads(line)
        docs[record["_id"]] = " ".join(part for part in (record["title"], record["text"]) if part)
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (corpus / "queries.jsonl").read_text().splitlines()
    }
    return docs, queries


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path) -> Path:
    folder = tmp_path_factory.mktemp("train-lora")
    make_tiny_cross_encoder(folder / "base", words=WORDS)
    (folder / "corpus").symlink_to(synthetic_beir)
    # A first stage that counts only which query words a document holds (k1 = 0): default BM25 ranks the synthetic
    # dev queries perfectly, and an epoch is kept only when its score as shipped beats the first stage's.
    Index.build(synthetic_beir, folder / "index", bm25=BM25Config(k1=0.0, b=0.0))
    return folder


def _config(workspace: Path, name: str, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        output=str(workspace / name),
        corpus=str(workspace / "corpus"),
        split="train",
        index=str(workspace / "index"),
        base_model=str(workspace / "base"),
        max_length=48,
        mine_depth=8,
        skip_top=1,
        random_negatives=2,
        negatives_per_group=3,
        groups_per_step=2,
        epochs=3,
        lr=1e-2,
        dev_queries=6,
        dev_depth=10,
        patience=5,
        log_every=1,
        device="cpu",
        seed=7,
        adapter="lora",
        lora_rank=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def lora(workspace: Path) -> TrainResult:
    return train(_config(workspace, "lora"))


def test_the_adapter_folder_is_small_and_names_its_base(lora: TrainResult, workspace: Path) -> None:
    out = lora.output
    names = {path.name for path in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "searchkit.json", "dev_run.trec"} <= names
    assert "model.safetensors" not in names
    assert "searchkit:" in (out / "README.md").read_text(encoding="utf-8")  # searchkit's model card, not peft's
    base_size = (workspace / "base" / "model.safetensors").stat().st_size
    assert (out / "adapter_model.safetensors").stat().st_size < base_size / 10
    card = json.loads((out / "searchkit.json").read_text())
    adapter = card["adapter"]
    assert adapter["method"] == "lora" and adapter["rank"] == 4 and adapter["alpha"] == 8.0
    assert adapter["target_modules"] == ["query", "value"]  # peft's default for BERT
    assert "classifier" in adapter["modules_to_save"]
    assert adapter["base_model"]["name"] == str(workspace / "base") and adapter["base_model"]["weights_sha256"]
    # trainable: the LoRA matrices of 2 layers x (query, value) and the one-output head, nothing else
    hidden, rank = 32, 4
    assert adapter["trainable_parameters"] == 2 * 2 * (2 * hidden * rank) + hidden + 1
    assert card["training_config"]["adapter"] == "lora" and card["files"]["adapter_model.safetensors"]["size"] > 0


def test_only_the_adapter_and_the_head_train(lora: TrainResult, workspace: Path) -> None:
    """Every weight of the base model is the base's, bit for bit; the head and the adapters moved."""
    from safetensors.numpy import load_file

    reranker = CrossEncoderReranker(lora.output, device="cpu", dtype="fp32")
    base = load_file(str(workspace / "base" / "model.safetensors"))
    state = {name: value.detach().numpy() for name, value in reranker.model.state_dict().items()}
    checked = 0
    for name, value in state.items():
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        if "lora_" in name or "modules_to_save" in name or "original_module" in name or key not in base:
            continue
        np.testing.assert_array_equal(value, base[key], err_msg=name)
        checked += 1
    assert checked == len(base) - 2  # all but the head's weight and bias
    head = state["base_model.model.classifier.modules_to_save.default.weight"]
    assert not np.array_equal(head, base["classifier.weight"])
    lora_b = [value for name, value in state.items() if "lora_B" in name]
    assert lora_b and all(np.abs(value).max() > 0 for value in lora_b)  # lora_B starts at zero: it trained


def test_the_loss_goes_down(lora: TrainResult, workspace: Path) -> None:
    """Listwise loss of the training groups, scored by the reloaded adapter and by the untrained base."""
    docs, _ = _texts(workspace / "corpus")
    rows = [json.loads(line) for line in (lora.output / "data" / "train_pairs.jsonl").read_text().splitlines()]

    def loss_of(reranker: CrossEncoderReranker) -> float:
        total = 0.0
        for query_id in sorted({row["query_id"] for row in rows}):
            own = [row for row in rows if row["query_id"] == query_id]
            for positive in [row for row in own if row["label"] > 0]:
                group = [positive, *(row for row in own if row["label"] == 0)]
                scores = reranker.score([positive["query"]] * len(group), [docs[row["doc"]] for row in group])
                total += float(np.log(np.exp(scores - scores.max()).sum()) + scores.max() - scores[0])
        return total

    before = loss_of(CrossEncoderReranker(workspace / "base", device="cpu", dtype="fp32"))
    after = loss_of(CrossEncoderReranker(lora.output, device="cpu", dtype="fp32"))
    assert math.isfinite(after) and after < before - 0.1
    steps = [json.loads(line) for line in (lora.output / "train_log.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in steps if record["event"] == "step"]
    assert len(set(losses)) > 1


def test_the_adapter_reloads_to_the_same_scores_exactly(lora: TrainResult, workspace: Path) -> None:
    """Loaded over its base by searchkit's loader, the folder scores the same every time, bit for bit (the base's
    fresh head is replaced by the trained one), and as the trained model did at the end of training: dev_run.trec
    holds its in-memory logits (equal up to float32 rounding of the CPU kernels, 1e-6)."""
    docs, queries = _texts(workspace / "corpus")
    dev_run = read_run(lora.output / "dev_run.trec")
    assert dev_run and lora.best_epoch > 0
    pairs = [(queries[query_id], docs[hit.doc_id]) for query_id, hits in dev_run.items() for hit in hits]
    trained = np.array([hit.score for hits in dev_run.values() for hit in hits], dtype=np.float32)
    first = CrossEncoderReranker(lora.output, device="cpu", dtype="fp32")
    assert first.max_length == 48
    scores = first.score(*zip(*pairs, strict=True))
    again = CrossEncoderReranker(lora.output, device="cpu", dtype="fp32").score(*zip(*pairs, strict=True))
    np.testing.assert_array_equal(scores, again)
    np.testing.assert_allclose(scores, trained, rtol=1e-6, atol=1e-7)
    untrained = CrossEncoderReranker(workspace / "base", device="cpu", dtype="fp32").score(*zip(*pairs, strict=True))
    assert np.abs(untrained - trained).max() > 1e-3  # the adapter and its head changed the scores


def _bad_copy(lora: TrainResult, tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(lora.output, folder, ignore=shutil.ignore_patterns("data", "cache", "checkpoint"))
    return folder


def test_a_bad_adapter_folder_is_one_line(lora: TrainResult, tmp_path: Path) -> None:
    folder = _bad_copy(lora, tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "searchkit.json").unlink()  # the card would refuse the missing file first (DataError)
    with pytest.raises(ConfigError, match=r"no adapter_model\.safetensors") as err:
        CrossEncoderReranker(folder, device="cpu")
    assert "\n" not in str(err.value)

    folder = _bad_copy(lora, tmp_path / "b")
    (folder / "adapter_config.json").write_text("{not json")
    (folder / "searchkit.json").unlink()
    with pytest.raises(ConfigError, match="not a LoRA adapter config") as err:
        CrossEncoderReranker(folder, device="cpu")
    assert "\n" not in str(err.value)

    # its base is gone: named, one line
    folder = _bad_copy(lora, tmp_path / "c")
    card = json.loads((folder / "searchkit.json").read_text())
    (folder / "searchkit.json").unlink()
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "no-such-base")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"no-such-base.*no such folder") as err:
        CrossEncoderReranker(folder, device="cpu")
    assert "\n" not in str(err.value) and card["adapter"]


def test_an_adapter_without_its_head_is_refused(lora: TrainResult, tmp_path: Path) -> None:
    """A fresh base head is random: an adapter file that lacks the head it was trained with is refused."""
    from safetensors.torch import load_file, save_file

    folder = _bad_copy(lora, tmp_path)
    (folder / "searchkit.json").unlink()
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(
        ConfigError, match=r"lacks 1 part\(s\) of its adapter \(the classifier module it saves whole\)"
    ) as err:
        CrossEncoderReranker(folder, device="cpu")
    assert "\n" not in str(err.value)


def test_an_adapter_over_another_base_is_refused(lora: TrainResult, workspace: Path, tmp_path: Path) -> None:
    other = make_tiny_cross_encoder(tmp_path / "other", seed=3, words=WORDS)
    folder = _bad_copy(lora, tmp_path)
    shutil.rmtree(workspace / "base-moved", ignore_errors=True)
    base = Path(json.loads((folder / "searchkit.json").read_text())["adapter"]["base_model"]["name"])
    shutil.copytree(base, workspace / "base-moved")
    try:
        for name in ("model.safetensors",):
            shutil.copy(other / name, base / name)
        with pytest.raises(ConfigError, match="is not the one it was trained over"):
            CrossEncoderReranker(folder, device="cpu")
    finally:
        shutil.copy(workspace / "base-moved" / "model.safetensors", base / "model.safetensors")


def test_lora_settings_are_checked() -> None:
    common = {"output": "o", "pairs": "p.tsv"}
    with pytest.raises(ConfigError, match="adapter must be one of lora"):
        TrainConfig(**common, adapter="prefix")
    with pytest.raises(ConfigError, match="lora_dropout must be in"):
        TrainConfig(**common, adapter="lora", lora_dropout=1.0)
    with pytest.raises(ConfigError, match="extend_vocabulary adds embedding rows"):
        TrainConfig(**common, adapter="lora", extend_vocabulary=True)
    with pytest.raises(ConfigError, match="lora_rank must be an integer"):
        TrainConfig(**common, adapter="lora", lora_rank=2.5)  # type: ignore[arg-type]
    assert TrainConfig(**common, lora_target_modules=["query"]).lora_target_modules == ("query",)


def test_a_target_that_names_no_module_is_one_line(workspace: Path) -> None:
    with pytest.raises(ConfigError, match="cannot add a LoRA adapter") as err:
        train(_config(workspace, "bad-target", lora_target_modules=("no_such_module",), overwrite=True))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- out of domain (the card's collection)
def test_the_card_records_the_collection(lora: TrainResult, workspace: Path) -> None:
    from searchkit.index import Index

    card = json.loads((lora.output / "searchkit.json").read_text())
    source = Index.open(workspace / "index").manifest["source"]
    assert card["collection"] == {"path": source["path"], "sha256": source["sha256"]} and source["sha256"]


def test_another_collection_warns_once(
    lora: TrainResult, workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from searchkit.index import Index
    from searchkit.search import Searcher

    reranker = CrossEncoderReranker(lora.output, device="cpu", dtype="fp32")
    with caplog.at_level(logging.WARNING, logger="searchkit.models.cross_encoder"):
        Searcher(Index.open(workspace / "index"), mode="bm25", rerank=reranker)  # its own collection: silent
    assert not [r for r in caplog.records if "another collection" in r.getMessage()]

    other = tmp_path / "other"
    shutil.copytree(TINY, other)  # not the collection it was trained on
    with (other / "corpus.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "extra", "title": "", "text": "another collection entirely"}) + "\n")
    index = Index.build(other, tmp_path / "other-index")
    with caplog.at_level(logging.WARNING, logger="searchkit.models.cross_encoder"):
        for _ in range(2):  # twice: one warning
            Searcher(index, mode="bm25", rerank=reranker).search("cats")
    warned = [r.getMessage() for r in caplog.records if "another collection" in r.getMessage()]
    assert len(warned) == 1
    assert "0.021-0.043 nDCG@10" in warned[0] and str(lora.output) in warned[0] and "searchkit train" in warned[0]


# ---------------------------------------------------------------------- the bi-encoder
@pytest.fixture(scope="module")
def dense_workspace(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path) -> Path:
    from searchkit.index import Index

    folder = tmp_path_factory.mktemp("dense-lora")
    Index.build(synthetic_beir, folder / "index")
    return folder


def _dense_config(folder: Path, base: Path, corpus: Path, name: str, **changes: Any) -> Any:
    lora = {"lr": 1e-2, "adapter": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0}
    return tiny_dense_train_config(folder, base, corpus, name, **{**lora, **changes})


@pytest.fixture(scope="module")
def dense_lora(dense_workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path) -> Any:
    from searchkit.training.bi_encoder import train_dense

    return train_dense(_dense_config(dense_workspace, tiny_bi_encoder, synthetic_beir, "out"))


def _adapter_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_resumed_lora_reranker_equals_a_straight_run(lora: TrainResult, workspace: Path) -> None:
    killed = train(_config(workspace, "lora-resumed", stop_after_epochs=1))
    assert killed.interrupted
    resumed = train(_config(workspace, "lora-resumed", resume=True))
    assert resumed.epochs_run == lora.epochs_run and resumed.best_epoch == lora.best_epoch
    ours, reference = _adapter_weights(resumed.output), _adapter_weights(lora.output)
    assert ours.keys() == reference.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], reference[key], atol=1e-6, err_msg=key)


def test_a_resumed_lora_bi_encoder_equals_a_straight_run(
    dense_lora: Any, dense_workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path
) -> None:
    """The trainer restores checkpoints by loading their adapter weights (resume here; the best epoch at the end)."""
    from searchkit.training.bi_encoder import train_dense

    def config(**changes: Any) -> Any:
        return _dense_config(dense_workspace, tiny_bi_encoder, synthetic_beir, "resumed", **changes)

    killed = train_dense(config(stop_after_epochs=1))
    assert killed.interrupted and killed.epochs_run == 1
    resumed = train_dense(config(resume=True))
    assert resumed.epochs_run == 2 and resumed.best_epoch == dense_lora.best_epoch
    ours, reference = _adapter_weights(resumed.output), _adapter_weights(dense_lora.output)
    assert ours.keys() == reference.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], reference[key], atol=1e-6, err_msg=key)


def test_a_lora_bi_encoder_is_a_small_adapter_that_reloads(
    dense_lora: Any, tiny_bi_encoder: Path, synthetic_beir: Path
) -> None:
    from searchkit.formats import document_text, read_corpus, read_qrels, read_queries
    from searchkit.models.cards import read_model_card
    from searchkit.models.encoder import Encoder, load_sentence_transformer
    from searchkit.training.bi_encoder_data import DevRetrieval

    out = dense_lora.output
    assert dense_lora.shipped and dense_lora.best_epoch > 0
    names = {path.name for path in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "modules.json", "searchkit.json"} <= names
    assert "model.safetensors" not in names
    assert "searchkit:" in (out / "README.md").read_text(encoding="utf-8")  # searchkit's model card, not peft's
    assert (out / "adapter_model.safetensors").stat().st_size < (
        tiny_bi_encoder / "model.safetensors"
    ).stat().st_size / 5
    card = read_model_card(out, "dense")
    assert card["adapter"]["method"] == "lora" and card["adapter"]["base_model"]["name"] == str(tiny_bi_encoder)
    assert card["adapter"]["modules_to_save"] == []  # mean pooling: no head to train
    # loaded over its base, the adapter reproduces the kept epoch's recorded dev scores
    reloaded = load_sentence_transformer(str(out), str(out), "cpu")
    corpus = synthetic_beir
    docs = list(read_corpus(corpus))
    dev_ids = (out / "data" / "dev_queries.txt").read_text().split()
    queries = [q for q in read_queries(corpus, split="train") if q.query_id in dev_ids]
    qrels = read_qrels(corpus, "train")
    dev = DevRetrieval(
        queries,
        {q: qrels[q] for q in dev_ids},
        [d.doc_id for d in docs],
        [document_text(d) for d in docs],
        depth=10,
        max_length=32,
    )
    again = dev(reloaded)
    for name, value in card["final_dev"].items():
        assert again[name] == pytest.approx(value, abs=1e-5)
    texts = [document_text(d) for d in docs[:5]]
    ours = Encoder(str(out), device="cpu", max_length=32, dtype="fp32").encode(texts)
    base = Encoder(str(tiny_bi_encoder), device="cpu", max_length=32, dtype="fp32").encode(texts)
    np.testing.assert_allclose(ours, reloaded.encode(texts, normalize_embeddings=True), atol=1e-6)
    assert np.abs(ours - base).max() > 1e-3  # the adapter changed the embeddings


def test_sentence_transformers_loads_the_lora_bi_encoder(dense_lora: Any, tiny_bi_encoder: Path) -> None:
    """sentence-transformers' own adapter loading (PeftAdapterMixin.load_adapter) gives the same vectors; it goes
    through transformers' peft integration, which may need a newer peft than the one installed."""
    from sentence_transformers import SentenceTransformer

    from searchkit.models.encoder import Encoder

    model = SentenceTransformer(str(tiny_bi_encoder), device="cpu")
    try:
        model.load_adapter(str(dense_lora.output))
    except ValueError as err:
        if "version of PEFT" not in str(err):
            raise
        pytest.skip(f"transformers' peft integration refuses the installed peft: {err}")
    texts = ["about apple", "notes on river and violet"]
    ours = Encoder(str(dense_lora.output), device="cpu", max_length=32, dtype="fp32").encode(texts)
    np.testing.assert_allclose(ours, model.encode(texts, normalize_embeddings=True), atol=1e-5)


def test_an_index_is_built_with_the_lora_bi_encoder(dense_lora: Any, synthetic_beir: Path, tmp_path: Path) -> None:
    """``DenseConfig(model=ADAPTER_FOLDER)`` builds and searches an index; its scores are the adapter's cosines (up to
    the index's fp16 storage)."""
    from searchkit.config import DenseConfig
    from searchkit.formats import document_text
    from searchkit.index import Index
    from searchkit.models.encoder import Encoder
    from searchkit.search import Searcher

    config = DenseConfig(model=str(dense_lora.output), device="cpu", max_length=32, dtype="fp32")
    index = Index.build(synthetic_beir, tmp_path / "index", dense=config)
    hits = Searcher(index, mode="dense").search("about apple", 3)
    encoder = Encoder(str(dense_lora.output), device="cpu", max_length=32, dtype="fp32")
    docs = list(index.iter_documents())
    vectors = encoder.encode([document_text(doc) for doc in docs])
    query = encoder.encode(["about apple"], alone=True)[0]
    cosines = dict(zip([doc.doc_id for doc in docs], vectors @ query, strict=True))
    for hit in hits:
        assert hit.score == pytest.approx(float(cosines[hit.doc_id]), abs=2e-3)
    assert min(hit.score for hit in hits) >= sorted(cosines.values())[-3] - 2e-3
