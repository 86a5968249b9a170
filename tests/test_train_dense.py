"""Dense fine-tuning of a tiny random bi-encoder on the synthetic BEIR collection (tests/conftest.py): the dev split
is the reranker's and never trained on, hard negatives are never judged, the loss goes down, the output reloads and
encodes identically (and through an index), resume equals a straight run, --init-from records the lineage, and
the dev guard refuses a model that does not beat its start."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_dense_train_config

from searchkit.config import DenseTrainConfig, TrainConfig, load_dense_train_recipe
from searchkit.formats import read_qrels, read_run
from searchkit.models.cards import read_model_card
from searchkit.training.bi_encoder import DenseTrainResult, train_dense
from searchkit.training.bi_encoder_data import DevRetrieval, retrieve_dense
from searchkit.types import ConfigError, Query


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path) -> Path:
    from searchkit.index import Index

    folder = tmp_path_factory.mktemp("train-dense")
    Index.build(synthetic_beir, folder / "index")
    return folder


def _config(workspace: Path, base: Path, corpus: Path, name: str, **changes: Any) -> DenseTrainConfig:
    return tiny_dense_train_config(workspace, base, corpus, name, **changes)


@pytest.fixture(scope="module")
def straight(workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path) -> DenseTrainResult:
    """Two epochs in one go, keeping the checkpoints (the reference for resume)."""
    return train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "straight", keep_checkpoint=True))


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "data" / "train_pairs.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------------- data
def test_dev_split_is_the_rerankers(workspace: Path, straight: DenseTrainResult, synthetic_beir: Path) -> None:
    from searchkit.training.data import load_training_data

    reranker = TrainConfig(
        output=str(workspace / "reranker-data"),
        corpus=str(synthetic_beir),
        index=str(workspace / "index"),
        dev_queries=6,
        seed=7,
    )
    load_training_data(reranker, Path(reranker.output), show_progress=False)
    ours = (straight.output / "data" / "dev_queries.txt").read_text().split()
    theirs = (Path(reranker.output) / "data" / "dev_queries.txt").read_text().split()
    assert len(ours) == 6 and ours == theirs


def test_dev_and_test_queries_are_never_trained_on(straight: DenseTrainResult, synthetic_beir: Path) -> None:
    rows = _rows(straight.output)
    dev = set((straight.output / "data" / "dev_queries.txt").read_text().split())
    trained = {row["query_id"] for row in rows}
    assert trained and dev and not trained & dev
    assert trained | dev == {f"q{i}" for i in range(30)}  # every judged train query is used, once
    assert "t0" not in trained | dev  # the test split is not read
    lines = (synthetic_beir / "queries.jsonl").read_text().splitlines()
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in lines}
    assert not {row["query"] for row in rows} & {queries[qid] for qid in dev}
    # the model card reports the same counts
    card = read_model_card(straight.output, "dense")
    assert card["training_data"]["dev_queries"] == len(dev) and card["training_data"]["train_queries"] == len(trained)


def test_hard_negatives_are_unjudged_and_from_the_window(straight: DenseTrainResult, synthetic_beir: Path) -> None:
    qrels = read_qrels(synthetic_beir, "train")
    mined = read_run(straight.output / "cache" / "mine.trec")
    rows = _rows(straight.output)
    assert len(rows) == sum(1 for row in rows for _ in [0])  # one row per (query, positive)
    assert sorted((r["query_id"], r["positive_id"]) for r in rows) == sorted(
        (qid, doc) for qid in {r["query_id"] for r in rows} for doc, grade in qrels[qid].items() if grade > 0
    )
    for row in rows:
        assert len(row["negative_ids"]) == 2
        window = [hit.doc_id for hit in mined.get(row["query_id"], [])][1:8]  # skip_top=1, mine_depth=8
        for doc in row["negative_ids"]:
            assert doc not in qrels[row["query_id"]]
        mined_ones = [doc for doc in row["negative_ids"] if doc in window]
        unjudged_window = [doc for doc in window if doc not in qrels[row["query_id"]]]
        assert len(mined_ones) == min(2, len(unjudged_window))  # random top-ups only when the window is short


# ---------------------------------------------------------------------- training
def _mnrl_loss(folder: Path, rows: list[dict[str, Any]], texts: dict[str, str]) -> float:
    """MultipleNegativesRankingLoss (scale 20) of all rows as one batch, eval mode, by hand from the embeddings."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    queries = model.encode([row["query"] for row in rows], normalize_embeddings=True)
    docs = [row["positive_id"] for row in rows] + [doc for row in rows for doc in row["negative_ids"]]
    candidates = model.encode([texts[doc] for doc in docs], normalize_embeddings=True)
    scores = 20.0 * queries @ candidates.T
    scores -= scores.max(axis=1, keepdims=True)
    log_softmax = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return float(-np.mean([log_softmax[i, i] for i in range(len(rows))]))


def test_training_lowers_the_loss(workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path) -> None:
    from searchkit.formats import document_text, read_corpus

    result = train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "lowers", dev_queries=0, epochs=4))
    assert result.shipped is None and result.best_epoch == 4  # no dev set: the last epoch is kept, unchecked
    texts = {doc.doc_id: document_text(doc) for doc in read_corpus(synthetic_beir)}
    rows = _rows(result.output)
    assert _mnrl_loss(result.output, rows, texts) < _mnrl_loss(tiny_bi_encoder, rows, texts) - 0.1


def test_output_folder_and_model_card(straight: DenseTrainResult, tiny_bi_encoder: Path) -> None:
    out = straight.output
    names = {path.name for path in out.iterdir()}
    assert {"modules.json", "model.safetensors", "searchkit.json", "train_log.jsonl", "data", "cache"} <= names
    card = json.loads((out / "searchkit.json").read_text())
    assert card["format"] == "searchkit-dense" and card["format_version"] == 1
    assert [entry["epoch"] for entry in card["dev"]] == [0, 1, 2]  # the starting model is evaluated too
    assert card["dev"][0]["loss"] is None and card["dev"][1]["loss"] > 0 and card["dev"][1]["train_seconds"] > 0
    assert set(card["dev"][0]["dev"]) == {"nDCG@10", "RR@10", "R@100"}
    scores = [entry["dev"]["nDCG@10"] for entry in card["dev"]]
    assert card["best_epoch"] == int(np.argmax(scores)) and card["final_dev"] == card["dev"][card["best_epoch"]]["dev"]
    assert card["shipped"] == (max(scores[1:]) > scores[0]) == straight.shipped
    assert card["parent"] is None and card["lineage"] == [card["base_model"]]
    assert card["base_model"]["name"] == str(tiny_bi_encoder) and card["base_model"]["sha256"]
    assert card["training_config"]["lr"] == 1e-3 and card["train_pairs_per_second"] > 0
    data = (out / "data" / "train_pairs.jsonl").read_bytes()
    assert card["training_data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (out / "checkpoints").is_dir()  # keep_checkpoint


def test_trained_folder_has_a_hub_model_card(straight: DenseTrainResult) -> None:
    from huggingface_hub import ModelCard

    card = json.loads((straight.output / "searchkit.json").read_text())
    data = ModelCard.load(straight.output / "README.md").data
    assert data.pipeline_tag == "sentence-similarity" and "searchkit" in data.tags
    assert {r.metric_type: r.metric_value for r in data.eval_results} == card["final_dev"]


def test_output_reloads_and_encodes_identically(straight: DenseTrainResult, synthetic_beir: Path) -> None:
    """The folder loads in sentence-transformers and in searchkit's Encoder with the same vectors, and retrieving
    dev with the reloaded model reproduces the kept epoch's recorded dev scores (the saved weights are that epoch's)."""
    from sentence_transformers import SentenceTransformer

    from searchkit.formats import document_text, read_corpus, read_queries
    from searchkit.models.encoder import Encoder

    out = straight.output
    docs = list(read_corpus(synthetic_beir))
    texts = [document_text(doc) for doc in docs]
    reloaded = SentenceTransformer(str(out), device="cpu")
    ours = Encoder(str(out), device="cpu", max_length=32, dtype="fp32").encode(texts)
    np.testing.assert_allclose(ours, reloaded.encode(texts, normalize_embeddings=True), atol=1e-5)
    card = read_model_card(out, "dense")
    dev_ids = (out / "data" / "dev_queries.txt").read_text().split()
    queries = [q for q in read_queries(synthetic_beir, split="train") if q.query_id in dev_ids]
    qrels = read_qrels(synthetic_beir, "train")
    dev = DevRetrieval(
        queries, {q: qrels[q] for q in dev_ids}, [d.doc_id for d in docs], texts, depth=10, max_length=32
    )
    again = dev(reloaded)
    for name, value in card["final_dev"].items():
        assert again[name] == pytest.approx(value, abs=1e-5)


def test_resume_continues_from_the_last_checkpoint(
    workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path, straight: DenseTrainResult
) -> None:
    def config(**changes: Any) -> DenseTrainConfig:
        return _config(workspace, tiny_bi_encoder, synthetic_beir, "resumed", keep_checkpoint=True, **changes)

    killed = train_dense(config(stop_after_epochs=1))
    assert killed.interrupted and killed.epochs_run == 1 and killed.shipped is None
    out = killed.output
    assert not (out / "searchkit.json").exists() and list((out / "checkpoints").glob("checkpoint-*"))
    with pytest.raises(ConfigError, match="holds an interrupted run"):
        train_dense(config())
    with pytest.raises(ConfigError, match=r"settings changed since the checkpoint \(lr\)"):
        train_dense(config(resume=True, lr=5e-4))
    with (out / "train_log.jsonl").open("a") as log:  # what a run killed during epoch 2 had logged
        log.write(json.dumps({"event": "step", "epoch": 2, "step": 99, "loss": 0.0, "lr": 0.0}) + "\n")
    resumed = train_dense(config(resume=True))
    assert resumed.epochs_run == 2 and not resumed.interrupted
    ours, reference = _weights(out), _weights(straight.output)
    assert ours.keys() == reference.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], reference[key], atol=1e-6, err_msg=key)
    card, reference_card = (read_model_card(p, "dense") for p in (out, straight.output))
    strip = ("train_seconds", "dev_seconds")
    assert [{k: v for k, v in e.items() if k not in strip} for e in card["dev"]] == [
        {k: v for k, v in e.items() if k not in strip} for e in reference_card["dev"]
    ]
    with pytest.raises(ConfigError, match="already holds a trained model"):
        train_dense(config(resume=True))


def test_init_from_records_the_lineage_and_compares_with_the_parent(
    workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path, straight: DenseTrainResult
) -> None:
    parent = straight.output
    child = train_dense(
        _config(workspace, tiny_bi_encoder, synthetic_beir, "child", init_from=str(parent), epochs=1, lr=1e-4)
    )
    card = read_model_card(child.output, "dense")
    parent_card = read_model_card(parent, "dense")
    assert card["parent"] == str(parent) and child.start_model == str(parent)
    assert [step["name"] for step in card["lineage"]] == [str(tiny_bi_encoder), str(parent)]
    assert card["lineage"][0] == parent_card["lineage"][0] and card["base_model"] == parent_card["base_model"]
    assert (
        card["lineage"][1]["sha256"]["model.safetensors"]
        == hashlib.sha256((parent / "model.safetensors").read_bytes()).hexdigest()
    )
    # epoch 0 is the parent: the guard compares with it, not with the base model
    assert card["dev"][0]["dev"] == pytest.approx(parent_card["final_dev"], abs=1e-5)
    assert card["shipped"] == (card["dev"][1]["dev"]["nDCG@10"] > card["dev"][0]["dev"]["nDCG@10"])
    # a reranker is not an encoder to start from
    reranker = workspace / "a-reranker"
    reranker.mkdir(exist_ok=True)
    (reranker / "searchkit.json").write_text(json.dumps({"format": "searchkit-reranker", "format_version": 1}))
    with pytest.raises(ConfigError, match="not a dense"):
        train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "bad-parent", init_from=str(reranker)))
    # another seed holds out queries the parent trained on: refused before training
    assert parent_card["dev_split"]["seed"] == 7 and len(parent_card["dev_split"]["dev"]) == 6
    with pytest.raises(ConfigError, match="were training queries of the parent"):
        train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "other-dev", init_from=str(parent), seed=8))


def test_dev_guard_keeps_the_start_when_nothing_beats_it(
    workspace: Path, tiny_bi_encoder: Path, synthetic_beir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An lr of 1e-30 cannot move fp32 weights: no epoch beats the start, so nothing is shipped."""
    with caplog.at_level("WARNING", logger="searchkit.training.bi_encoder"):
        result = train_dense(_config(workspace, tiny_bi_encoder, synthetic_beir, "guard", lr=1e-30))
    assert result.shipped is False and result.best_epoch == 0
    assert "DEV GUARD" in caplog.text
    card = read_model_card(result.output, "dense")
    assert card["shipped"] is False and card["best_epoch"] == 0
    start, kept = _weights(tiny_bi_encoder), _weights(result.output)
    for key in start:
        np.testing.assert_array_equal(kept[key], start[key])
    assert any(line.startswith("NOT SHIPPED") for line in result.summary())


# ---------------------------------------------------------------------- the encoder in an index, the CLI
def test_index_add_reencodes_with_the_fine_tuned_encoder(
    workspace: Path, straight: DenseTrainResult, synthetic_beir: Path, tiny_bi_encoder: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from searchkit.config import DenseConfig
    from searchkit.formats import document_text
    from searchkit.index import Index

    base = DenseConfig(model=str(tiny_bi_encoder), dtype="fp32")
    index = Index.build(synthetic_beir, workspace / "add-index", dense=base)
    index = index.add(dense=DenseConfig(model=str(straight.output), max_length=32, dtype="fp32"), overwrite=True)
    stored = np.load(index.path / "dense" / "embeddings.npy").astype(np.float32)
    texts = [document_text(doc) for doc in index.iter_documents()]
    expected = SentenceTransformer(str(straight.output), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(stored, expected, atol=2e-3)  # fp16 storage
    hits = index.dense.search("about apple", k=3)
    query = SentenceTransformer(str(straight.output), device="cpu").encode(["about apple"], normalize_embeddings=True)
    best = retrieve_dense(query, expected, ["q"], index.docids, 1)["q"][0]
    assert hits[0].doc_id == best.doc_id


def test_cli_dispatches_dense_recipes_and_init_from(
    workspace: Path, straight: DenseTrainResult, synthetic_beir: Path, tiny_bi_encoder: Path
) -> None:
    from click.testing import CliRunner

    from searchkit.cli.main import cli

    recipe = workspace / "dense.toml"
    recipe.write_text(
        f'model = "dense"\ncorpus = "{synthetic_beir}"\nindex = "index"\noutput = "cli-out"\n'
        f'base_model = "{tiny_bi_encoder}"\nmax_length = 32\ndev_max_length = 32\nmine_mode = "bm25"\n'
        'batch_size = 4\nepochs = 1\ndev_queries = 6\nseed = 7\nprecision = "fp32"\ndevice = "cpu"\n'
    )
    result = CliRunner().invoke(cli, ["train", str(recipe), "--init-from", str(straight.output), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["start_model"] == str(straight.output) and payload["epochs_run"] == 1
    card = read_model_card(workspace / "cli-out", "dense")
    assert card["parent"] == str(straight.output) and len(card["lineage"]) == 2
    text = CliRunner().invoke(cli, ["train", str(recipe), "--overwrite", "--max-steps", "1"])
    assert text.exit_code == 0, text.output
    assert "dense encoder" in text.output and ("shipped" in text.output or "NOT SHIPPED" in text.output)


def test_recipe_loading(tmp_path: Path) -> None:
    cfg = load_dense_train_recipe(Path(__file__).parent.parent / "training" / "scifact-dense.toml")
    assert cfg.split == "train" and cfg.dev_queries == 100 and cfg.seed == 42  # the reranker's dev split
    bad = tmp_path / "bad.toml"
    bad.write_text('corpus = "c"\nindex = "i"\noutput = "o"\n')
    with pytest.raises(ConfigError, match='starts with model = "dense"'):
        load_dense_train_recipe(bad)
    bad.write_text('model = "dense"\ncorpus = "c"\nindex = "i"\noutput = "o"\nlearning_rate = 1\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown DenseTrainConfig setting 'learning_rate'"):
        load_dense_train_recipe(bad)
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        DenseTrainConfig(output="o", corpus="c", index="i", batch_size=1)


def test_retrieve_dense_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    docs, queries = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    run = retrieve_dense(queries, docs, [f"q{i}" for i in range(7)], [f"d{j}" for j in range(50)], 5)
    for i in range(7):
        order = np.argsort(-(queries[i] @ docs.T))[:5]
        assert [hit.doc_id for hit in run[f"q{i}"]] == [f"d{j}" for j in order]
    assert len(retrieve_dense(queries[:1], docs, ["q"], [f"d{j}" for j in range(50)], 500)["q"]) == 50
    assert Query("q", "x").query_id == "q"
