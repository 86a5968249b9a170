"""Training: the weighted cross-entropy loss by hand, and few-step training of a tiny random BERT (loss goes down,
output reloads and scores the same, resume equals a straight run, pair files train). Pair files and mining:
test_train_data.py; TrainConfig and recipes: test_config.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchkit.config import TrainConfig, load_train_recipe
from searchkit.formats import read_qrels, read_run
from searchkit.models.cross_encoder import CrossEncoderReranker, PairEncoder, batch_tensors
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.training.cross_encoder import TrainResult, train
from searchkit.training.loss import weighted_cross_entropy
from searchkit.types import ConfigError, DataError

TINY = Path(__file__).parent / "data" / "tiny"
PAIRS = Path(__file__).parent / "data" / "rerank"
RECIPE = Path(__file__).parent.parent / "training" / "scifact.toml"


def _log(x: float) -> float:
    return math.log(x)


# ---------------------------------------------------------------------- the loss, by hand
def test_pointwise_loss_by_hand() -> None:
    import torch

    scores, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    # binary cross-entropy on the logit: -log sigmoid(s) for a positive, -log(1 - sigmoid(s)) for a negative
    terms = [_log(1 + math.exp(-2.0)), _log(1 + math.exp(-1.0)), _log(1 + math.exp(0.5))]
    unweighted = weighted_cross_entropy(scores, labels)
    assert float(unweighted) == pytest.approx(sum(terms) / 3, abs=1e-6)
    weighted = weighted_cross_entropy(scores, labels, torch.tensor([1.0, 3.0, 0.5]))
    assert float(weighted) == pytest.approx((terms[0] + 3 * terms[1] + 0.5 * terms[2]) / 4.5, abs=1e-6)


def test_listwise_loss_by_hand() -> None:
    import torch

    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # softmax cross-entropy of the positive: -log(e^s_pos / sum_j e^s_j)
    first = -_log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
    second = -_log(1 / (1 + 2 * math.e))
    loss = weighted_cross_entropy(scores, labels, torch.tensor([1.0, 2.0]), mode="listwise")
    assert float(loss) == pytest.approx((first + 2 * second) / 3, abs=1e-6)
    assert float(weighted_cross_entropy(scores, labels, mode="listwise")) == pytest.approx((first + second) / 2)


def test_weights_scale_as_specified() -> None:
    import torch

    scores, labels = torch.tensor([1.5, -0.3, 0.2]), torch.tensor([1.0, 0.0, 1.0])
    weights = torch.tensor([1.0, 2.0, 0.5])
    base = float(weighted_cross_entropy(scores, labels, weights))
    # only relative weights count: scaling them all changes nothing
    assert float(weighted_cross_entropy(scores, labels, 7.0 * weights)) == pytest.approx(base, abs=1e-6)
    # an integer weight w is the same as the item repeated w times
    repeated = weighted_cross_entropy(torch.tensor([1.5, -0.3, -0.3]), torch.tensor([1.0, 0.0, 0.0]))
    assert float(weighted_cross_entropy(scores[:2], labels[:2], weights[:2])) == pytest.approx(float(repeated))
    # listwise: a group of weight 2 counts as two groups
    groups, group_labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    twice = weighted_cross_entropy(groups, group_labels, torch.tensor([2.0, 1.0]), mode="listwise")
    stacked = weighted_cross_entropy(groups[[0, 0, 1]], group_labels[[0, 0, 1]], mode="listwise")
    assert float(twice) == pytest.approx(float(stacked), abs=1e-6)


def test_zero_weight_items_get_no_gradient() -> None:
    import torch

    scores = torch.tensor([1.0, -2.0, 0.3], requires_grad=True)
    weighted_cross_entropy(scores, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 2.0])).backward()
    assert scores.grad is not None
    assert scores.grad[1] == 0 and scores.grad[0] != 0 and scores.grad[2] != 0
    groups = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.1, 0.3]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    weighted_cross_entropy(groups, labels, torch.tensor([0.0, 1.0]), mode="listwise").backward()
    assert groups.grad is not None
    assert torch.all(groups.grad[0] == 0) and torch.any(groups.grad[1] != 0)
    # all weights zero: loss 0 and no gradient at all (not a division by zero)
    none = torch.tensor([0.5, 0.5], requires_grad=True)
    loss = weighted_cross_entropy(none, torch.tensor([1.0, 0.0]), torch.zeros(2))
    loss.backward()
    assert float(loss.detach()) == 0.0 and none.grad is not None and torch.all(none.grad == 0)


def test_loss_refuses_bad_input() -> None:
    import torch

    with pytest.raises(DataError, match="every group needs a positive"):
        weighted_cross_entropy(torch.zeros(1, 3), torch.zeros(1, 3), mode="listwise")
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        weighted_cross_entropy(torch.zeros(2), torch.ones(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ConfigError, match="loss mode"):
        weighted_cross_entropy(torch.zeros(2), torch.ones(2), mode="pairwise")
    with pytest.raises(ConfigError, match="weights shape"):
        weighted_cross_entropy(torch.zeros(2), torch.ones(2), torch.ones(3))


# ---------------------------------------------------------------------- which epoch ships
def test_one_dev_score_keeps_the_epoch_and_guards_it() -> None:
    """The kept epoch and the guard both go by the score as shipped (interpolated): an epoch whose reranker alone
    improves but whose shipped score does not is not kept, and the guard then compares the same numbers."""
    from searchkit.training.selection import better_epoch, guard_report

    start = {"epoch": 0, "dev": {"reranker": 0.40, "first_stage": 0.512, "interpolated": 0.512, "a": 0.0}}
    alone_better = {"epoch": 1, "dev": {"reranker": 0.45, "first_stage": 0.512, "interpolated": 0.510, "a": 0.2}}
    shipped_better = {"epoch": 2, "dev": {"reranker": 0.39, "first_stage": 0.512, "interpolated": 0.530, "a": 0.5}}
    assert not better_epoch(alone_better, start)  # the reranker alone rose, the shipped score fell
    assert better_epoch(shipped_better, start) and better_epoch(shipped_better, alone_better)
    history, best = [start, alone_better, shipped_better], 0
    for epoch, entry in enumerate(history[1:], start=1):
        if better_epoch(entry, history[best]):
            best = epoch
    assert best == 2
    guard = guard_report(history, best, "nDCG@10", "base", "tiny")
    assert guard is not None and guard["score"] == "interpolated"
    assert (guard["start"], guard["shipped"], guard["improved"]) == (0.512, 0.530, True)
    without_first_stage = [{"dev": {"reranker": 0.3}}, {"dev": {"reranker": 0.2}}]
    assert not better_epoch(without_first_stage[1], without_first_stage[0])
    assert better_epoch({"epoch": 1}, start)  # no dev set: the latest epoch is kept


# ---------------------------------------------------------------------- training a tiny BERT
def _words() -> list[str]:
    text = "".join((TINY / name).read_text() for name in ("corpus.jsonl", "queries.jsonl"))
    text += "".join(path.read_text() for path in PAIRS.iterdir())
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train")
    make_tiny_cross_encoder(folder / "base", words=_words())
    return folder


def _config(workspace: Path, name: str, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        output=str(workspace / name),
        corpus=str(TINY),
        split="test",
        index=str(workspace / "index"),
        base_model=str(workspace / "base"),
        max_length=48,
        mine_depth=6,
        skip_top=1,
        random_negatives=2,
        negatives_per_group=3,
        groups_per_step=2,
        epochs=2,
        lr=3e-3,
        dev_queries=1,
        dev_depth=6,
        patience=5,
        log_every=1,
        device="cpu",
        seed=7,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def straight(workspace: Path) -> TrainResult:
    """Two epochs in one go, keeping the last checkpoint (the reference for resume)."""
    return train(_config(workspace, "straight", keep_checkpoint=True))


def test_output_folder_and_model_card(straight: TrainResult) -> None:
    out = straight.output
    names = {path.name for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "searchkit.json", "train_log.jsonl", "dev_run.trec"} <= names
    assert {"data", "cache", "checkpoint"} <= names and "best" not in names
    card = json.loads((out / "searchkit.json").read_text())
    assert card["score_kind"] == "logit" and card["max_length"] == 48
    assert [entry["epoch"] for entry in card["dev"]] == [0, 1, 2]  # the starting model is evaluated too
    assert card["dev"][0]["loss"] is None and card["dev"][1]["loss"] > 0
    assert set(card["dev"][0]["dev"]) >= {"reranker", "first_stage", "interpolated", "a", "grid"}
    assert 0 < card["dev"][0]["dev"]["first_stage_recall"] <= 1  # what the reranker can at best find
    assert card["interpolation"] in [float(a) for a in card["dev"][0]["dev"]["grid"]]
    assert card["final_dev"] == card["dev"][card["best_epoch"]]["dev"]
    assert card["training_config"]["lr"] == 3e-3 and card["base_model"]["name"].endswith("base")
    data = (out / "data" / "train_pairs.jsonl").read_bytes()
    assert card["training_data"]["sha256"] == hashlib.sha256(data).hexdigest()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {record["event"] for record in log} == {"step", "dev"}
    assert straight.epochs_run == 2 and not straight.interrupted
    try:
        import matplotlib  # noqa: F401  (optional: the plot is skipped, with a log line, without it)
    except ImportError:
        assert "training_curves.png" not in names
    else:
        assert (out / "training_curves.png").stat().st_size > 0
    assert straight.train_queries + straight.dev_queries == 4  # q1..q4 are judged; q5 is not in the split


def test_trained_folder_has_a_hub_model_card(straight: TrainResult) -> None:
    from huggingface_hub import ModelCard

    card = json.loads((straight.output / "searchkit.json").read_text())
    data = ModelCard.load(straight.output / "README.md").data
    assert data.library_name == "sentence-transformers" and data.datasets == ["tiny"]
    assert data.eval_results[0].metric_value == card["final_dev"]["reranker"]
    assert data.to_dict()["searchkit"]["lineage"] == [step["name"] for step in card["lineage"]]


def test_card_records_lineage_guard_and_fusion(straight: TrainResult, workspace: Path) -> None:
    from searchkit.models.cards import lineage, read_model_card

    card = read_model_card(straight.output, "reranker")
    assert card["format"] == "searchkit-reranker" and card["format_version"] == 1
    base = card["base_model"]
    assert card["parent"] is None and card["lineage"] == [{"name": base["name"], "sha256": base["weights_sha256"]}]
    assert lineage(card) == card["lineage"] and set(base["weights_sha256"]) == {"model.safetensors"}
    guard = card["guard"]
    assert guard["compared_with"] == "base" and guard["start"] == card["dev"][0]["dev"]["interpolated"]
    assert guard["improved"] == (guard["shipped"] > guard["start"])
    fusion = card["fusion"]  # fitted on dev at the end, at the dev depth, over the BM25 index's stages
    assert fusion["depth"] == 6 and fusion["mode"] == "bm25"
    assert abs(sum(fusion["weights"].values()) - 1) < 1e-6
    assert fusion["fitted"]["fused"] >= card["final_dev"]["interpolated"] - 1e-12  # never below the interpolation
    assert fusion["fitted"]["queries"] == straight.dev_queries and straight.fusion == fusion
    shipped = [entry["dev"]["interpolated"] for entry in card["dev"]]
    assert card["best_epoch"] == shipped.index(max(shipped))  # the epoch kept is the one the guard judges
    assert guard["shipped"] == max(shipped)


def test_init_from_continues_a_fine_tuned_reranker(straight: TrainResult, workspace: Path) -> None:
    from searchkit.models.cards import read_model_card

    child = train(_config(workspace, "child", init_from=str(straight.output), epochs=1, fit_fusion=False))
    parent_card = read_model_card(straight.output, "reranker")
    card = read_model_card(child.output, "reranker")
    weights = hashlib.sha256((straight.output / "model.safetensors").read_bytes()).hexdigest()
    assert card["parent"] == {"name": str(straight.output), "sha256": {"model.safetensors": weights}}
    assert card["lineage"] == [*parent_card["lineage"], card["parent"]]  # base -> parent
    assert card["base_model"] == parent_card["base_model"] and card["fusion"] is None
    # epoch 0 is the parent itself (same dev queries and candidates), and the guard compares with it
    assert card["dev"][0]["dev"]["reranker"] == pytest.approx(parent_card["final_dev"]["reranker"], abs=1e-6)
    assert card["guard"]["compared_with"] == "parent" and card["guard"]["model"] == str(straight.output)
    grandchild = train(_config(workspace, "grandchild", init_from=str(child.output), epochs=1, max_steps=1))
    chain = read_model_card(grandchild.output, "reranker")["lineage"]
    names = [parent_card["base_model"]["name"], str(straight.output), str(child.output)]
    assert [step["name"] for step in chain] == names
    two = workspace / "two-outputs"  # not a one-output reranker: refused before any weight is read
    two.mkdir(exist_ok=True)
    config = json.loads((workspace / "base" / "config.json").read_text())
    config.update(id2label={"0": "no", "1": "yes"}, label2id={"no": 0, "yes": 1})
    (two / "config.json").write_text(json.dumps(config))
    shutil.copyfile(workspace / "base" / "model.safetensors", two / "model.safetensors")  # a complete folder
    with pytest.raises(ConfigError, match="ONE output"):
        train(_config(workspace, "bad-parent", init_from=str(two)))


def test_init_from_refuses_a_dev_split_that_holds_the_parents_training_queries(
    straight: TrainResult, workspace: Path
) -> None:
    from searchkit.formats import read_queries
    from searchkit.models.cards import read_model_card
    from searchkit.training.data import split_dev

    recorded = read_model_card(straight.output, "reranker")["dev_split"]
    assert recorded["seed"] == 7 and len(recorded["dev"]) == 1
    qrels = read_qrels(TINY, "test")
    usable = [q for q in read_queries(TINY, split="test") if any(g > 0 for g in qrels.get(q.query_id, {}).values())]
    seed = next(s for s in range(100) if [q.query_id for q in split_dev(usable, 1, s)[1]] != recorded["dev"])
    with pytest.raises(ConfigError, match=r"were training queries of the parent.*seed = 7"):
        train(_config(workspace, "other-dev", init_from=str(straight.output), seed=seed))
    assert not (workspace / "other-dev" / "model.safetensors").exists()


def test_mined_negatives_are_never_judged_and_no_query_is_dropped(straight: TrainResult) -> None:
    qrels = read_qrels(TINY, "test")
    rows = [json.loads(line) for line in (straight.output / "data" / "train_pairs.jsonl").read_text().splitlines()]
    dev = (straight.output / "data" / "dev_queries.txt").read_text().split()
    assert {row["query_id"] for row in rows} | set(dev) == {"q1", "q2", "q3", "q4"}
    for row in rows:
        judged = qrels[row["query_id"]]
        if row["label"] == 0:
            assert row["doc"] not in judged
        else:
            assert judged[row["doc"]] == row["label"]  # grades kept
    # q3 is all stopwords: BM25 finds nothing, random negatives still give it a group
    if "q3" not in dev:
        assert any(row["query_id"] == "q3" and row["label"] == 0 for row in rows)
    cache = read_run(straight.output / "cache" / "mine.trec")
    assert all(len(hits) <= 6 for hits in cache.values())


def test_output_reloads_and_scores_identically(straight: TrainResult) -> None:
    from sentence_transformers import CrossEncoder

    out = straight.output
    reranker = CrossEncoderReranker(out, device="cpu", dtype="fp32")  # fp32: the reference
    assert reranker.max_length == 48  # from the model card
    dev_run = read_run(out / "dev_run.trec")
    index_docs = {
        json.loads(line)["_id"]: json.loads(line) for line in (TINY / "corpus.jsonl").read_text().splitlines()
    }
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"] for line in (TINY / "queries.jsonl").read_text().splitlines()
    }
    for query_id, hits in dev_run.items():
        texts = [" ".join(p for p in (index_docs[h.doc_id]["title"], index_docs[h.doc_id]["text"]) if p) for h in hits]
        scores = reranker.score([queries[query_id]] * len(hits), texts)
        np.testing.assert_allclose(scores, [hit.score for hit in hits], atol=1e-5)
        # sentence-transformers loads the same folder and, with the identity activation recorded, agrees
        peer = CrossEncoder(str(out), device="cpu").predict(
            [(queries[query_id], text) for text in texts], show_progress_bar=False
        )
        np.testing.assert_allclose(scores, peer, atol=1e-4)


def test_training_lowers_the_loss(workspace: Path) -> None:
    """Loss of the training groups (eval mode, no dropout): after a few epochs it is below the start's."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = train(_config(workspace, "lowers", dev_queries=0, epochs=4, lr=5e-3))
    assert result.best_epoch == 4  # no dev set: the last epoch is kept
    rows = [json.loads(line) for line in (result.output / "data" / "train_pairs.jsonl").read_text().splitlines()]

    def loss_of(folder: Path) -> float:
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        encoder = PairEncoder(AutoTokenizer.from_pretrained(folder), 48)
        total = 0.0
        for query_id in sorted({row["query_id"] for row in rows}):
            own = [row for row in rows if row["query_id"] == query_id]
            for positive in [row for row in own if row["label"] > 0]:
                group = [positive, *(row for row in own if row["label"] == 0)]
                pairs = encoder.encode([positive["query"]] * len(group), [_text(row["doc"]) for row in group])
                with torch.no_grad():
                    logits = model(**batch_tensors(pairs, range(len(group)), 0, "cpu")).logits[:, 0]
                labels = torch.tensor([[1.0] + [0.0] * (len(group) - 1)])
                total += float(weighted_cross_entropy(logits[None], labels, mode="listwise"))
        return total

    assert loss_of(result.output) < loss_of(workspace / "base")


def _text(doc_id: str) -> str:
    for line in (TINY / "corpus.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["_id"] == doc_id:
            return " ".join(part for part in (record["title"], record["text"]) if part)
    raise KeyError(doc_id)


def test_resume_continues_from_the_last_checkpoint(workspace: Path, straight: TrainResult) -> None:
    from safetensors.torch import load_file

    killed = train(_config(workspace, "resumed", keep_checkpoint=True, stop_after_epochs=1))
    assert killed.interrupted and killed.epochs_run == 1
    out = killed.output
    assert not (out / "searchkit.json").exists() and (out / "checkpoint" / "state.json").is_file()
    with pytest.raises(ConfigError, match="holds an interrupted run"):
        train(_config(workspace, "resumed", keep_checkpoint=True))
    with pytest.raises(ConfigError, match=r"settings changed since the checkpoint \(lr\)"):
        train(_config(workspace, "resumed", keep_checkpoint=True, resume=True, lr=1e-3))
    with (out / "train_log.jsonl").open("a") as log:  # what a run killed during epoch 2 had logged
        log.write(json.dumps({"event": "step", "epoch": 2, "step": 99, "loss": 0.0, "lr": 0.0}) + "\n")
    resumed = train(_config(workspace, "resumed", keep_checkpoint=True, resume=True))
    assert resumed.epochs_run == 2 and not resumed.interrupted
    for name in ("model.safetensors", "optimizer.safetensors"):
        ours = load_file(str(out / "checkpoint" / name))
        reference = load_file(str(straight.output / "checkpoint" / name))
        assert ours.keys() == reference.keys()
        for key in ours:
            assert np.array_equal(ours[key].numpy(), reference[key].numpy()), f"{name}: {key} differs"
    card, reference_card = (json.loads((p / "searchkit.json").read_text()) for p in (out, straight.output))
    assert card["dev"] == reference_card["dev"]
    logs = [(p / "train_log.jsonl").read_text().splitlines() for p in (out, straight.output)]
    assert logs[0] == logs[1]
    with pytest.raises(ConfigError, match="already holds a trained model"):
        train(_config(workspace, "resumed", resume=True))


def test_training_from_a_pair_file(workspace: Path) -> None:
    cfg = _config(
        workspace,
        "pairs",
        pairs=str(PAIRS / "pairs.tsv"),
        loss="pointwise",
        weighting="column",
        epochs=1,
        dev_queries=1,
    )
    result = train(cfg)
    card = json.loads((result.output / "searchkit.json").read_text())
    assert card["training_data"]["pairs"].endswith("pairs.tsv")
    assert card["interpolation"] is None  # no first stage to interpolate with
    assert result.train_queries == 1 and result.dev_queries == 1
    rows = [json.loads(line) for line in (result.output / "data" / "train_pairs.jsonl").read_text().splitlines()]
    assert {row["weight"] for row in rows} <= {2.0, 1.0, 0.5, 1.5}  # the column, 1.0 where it is empty
    text_pairs = _config(workspace, "pairs-text", pairs=str(PAIRS / "pairs.jsonl"), epochs=1, dev_queries=0)
    assert train(text_pairs).train_queries == 2
    bad = workspace / "bad.tsv"
    bad.write_text("cats\tnope\t1\n")
    with pytest.raises(DataError, match=r"bad.tsv:1: document 'nope' is not in the index"):
        train(_config(workspace, "pairs-bad", pairs=str(bad)))


@pytest.mark.slow
def test_scifact_recipe_starts(tmp_path: Path) -> None:
    """The real recipe, cut to a few queries and steps: mining, dev evaluation and output all run."""
    cfg = load_train_recipe(RECIPE)
    if not Path(cfg.corpus or "").is_dir():
        pytest.skip("needs ../shared/datasets/scifact")
    smoke = dataclasses.replace(cfg, output=str(tmp_path / "out"), limit_queries=12, dev_queries=4, max_steps=2)
    result = train(smoke)
    assert result.train_queries == 8 and result.dev_queries == 4
    assert (tmp_path / "out" / "searchkit.json").is_file()
