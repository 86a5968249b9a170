"""Fine-tuning a cross-encoder reranker with a weighted cross-entropy loss (``searchkit train RECIPE.toml``).

Settings are a :class:`searchkit.config.TrainConfig` (``load_train_recipe`` reads one from ``training/*.toml``); the
training data (pair files or qrels with mined hard negatives, the dev split, the cached first stage) comes from
:mod:`searchkit.training.data`, checkpoints and resume from :mod:`searchkit.training.checkpoints`, the starting model
and its card from :mod:`searchkit.models.cross_encoder`. This module holds the loss, the training loop, dev evaluation
(through :func:`searchkit.evaluate.rerank_report.rerank_evaluation`), the dev guard, the fitted fusion and the output
folder.

The loss is :func:`weighted_cross_entropy`, ``L = sum_i w_i * l(y_i, s_i) / sum_i w_i``: binary cross-entropy
on the logit (``pointwise``) or softmax cross-entropy over one positive and n negatives (``listwise``, weights
per group). Weights (``weighting``): ``none``; ``class`` (``positive_weight`` / ``negative_weight``, pointwise
only); ``grade`` (a positive weighs its relevance grade); ``column`` (the pair file's weight column).

The starting model and every epoch are scored on the dev queries (``dev_metric``, default nDCG@10, by
ir-measures through :func:`searchkit.evaluate.metrics.evaluate`, reranking the first stage's top ``dev_depth``); the
best epoch is kept (the starting model included) by the score as shipped, the interpolated one when dev has a first
stage (:func:`searchkit.training.selection.shipped_score`, which the dev guard compares too), training stops early
after ``patience`` epochs without a gain, and the weight ``a`` of ``a * minmax(reranker) + (1 - a) *
minmax(first stage)`` is tuned on dev over a grid holding 0 and 1, so the shipped model never ranks dev worse than
the first stage did.

Output folder::

    config.json, model.safetensors, tokenizer files
                         a save_pretrained folder (loads in CrossEncoder and CrossEncoderReranker)
    searchkit.json       base model, full training config, sha256 of the training data, dev metrics per epoch,
                         best epoch, interpolation weight, score_kind, max_length, timings
    train_log.jsonl      loss and learning rate every ``log_every`` steps; one line per dev evaluation
    training_curves.png  loss and dev metric curves (skipped, with a log line, without matplotlib)
    dev_run.trec         the shipped model's reranker scores (logits) on the dev candidates
    data/, cache/        the training examples, dev query ids and first-stage runs (see searchkit.training.data)
    checkpoint/          the last finished epoch (weights, optimizer, RNG in safetensors; the rest JSON), for
                         resume; removed at the end unless keep_checkpoint

>>> import torch
>>> round(float(weighted_cross_entropy(torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]]), mode="listwise")), 4)
1.3863
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import LearnedFusion, TrainConfig, config_to_dict
from searchkit.evaluate.metrics import canonical_metric
from searchkit.evaluate.rerank_report import rerank_evaluation
from searchkit.faults import checkpoint as fault_point
from searchkit.formats import write_run
from searchkit.index import Index
from searchkit.models.cards import MODEL_CARD, lineage, read_reranker_card, write_reranker_card
from searchkit.models.cross_encoder import (
    SCORE_KIND,
    CrossEncoderReranker,
    PairEncoder,
    batch_tensors,
    load_cross_encoder,
)
from searchkit.models.device import resolve_device
from searchkit.models.loading import (
    ADAPTER_CONFIG,
    adapter_card,
    add_lora,
    check_model_source,
    is_adapter,
    resolve_model,
)
from searchkit.models.tokenizers import UNKNOWN_SAMPLE, check_readable
from searchkit.models.vocabulary import extend_vocabulary, missing_characters
from searchkit.ranking.fusion import interpolation_model, stage_features
from searchkit.search import Searcher
from searchkit.training.checkpoints import checkpoint_epoch, find_checkpoint, load_checkpoint, save_checkpoint
from searchkit.training.data import TrainingData, check_parent_split, load_training_data
from searchkit.training.fusion import fit_weights
from searchkit.training.loss import weighted_cross_entropy
from searchkit.training.runtime import adamw_optimizer, autocast, linear_schedule, plot_curves, seed_everything
from searchkit.training.selection import better_epoch, guard_report
from searchkit.types import ConfigError, Hit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a run did: ``dev`` holds one entry per evaluation (epoch 0 is the starting model); ``rounds`` one per
    round of :func:`searchkit.training.rounds.train_rounds`."""

    output: Path
    best_epoch: int
    epochs_run: int
    dev: list[dict[str, Any]]
    interpolation: float | None
    train_queries: int
    dev_queries: int
    train_pairs: int
    seconds: float
    pairs_per_second: float
    interrupted: bool = False
    stopped_early: bool = False
    fusion: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] | None = None  # one entry per round (searchkit.training.rounds), when run in rounds


def train(config: TrainConfig, show_progress: bool = False) -> TrainResult:
    """Fine-tune a cross-encoder as ``config`` says and write the output folder (see the module docstring)."""
    return _Trainer(config, show_progress).run()


class _Trainer:
    def __init__(self, config: TrainConfig, show_progress: bool) -> None:
        self.cfg = config
        self.show_progress = show_progress
        self.out = Path(config.output)
        self.metric = canonical_metric(config.dev_metric)
        self._dev_reranker: CrossEncoderReranker | None = None
        self.dev_scores = np.zeros(0, dtype=np.float32)

    # ------------------------------------------------------------------ top level
    def run(self) -> TrainResult:
        cfg = self.cfg
        started = time.perf_counter()
        self._check_start()
        checkpoint = self._prepare_output()
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device, "training")
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.startswith("cuda"))
        data = load_training_data(cfg, self.out, self.show_progress)
        self.data = data
        model, tokenizer, base_identity = self._load_start()
        if cfg.init_from is not None and data.dev.queries:
            check_parent_split(data.dev.split, self.parent_card, cfg.init_from)
        texts = [query.text for query in data.train] + list(data.texts.values())
        if cfg.extend_vocabulary:
            characters = missing_characters(tokenizer, texts)
            model, tokenizer = extend_vocabulary(model, tokenizer, characters, seed=cfg.seed)
            base_identity = {**base_identity, "vocabulary_added": len(characters)}
        if cfg.adapter == "lora":  # the adapter and the head train; the starting model's weights stay frozen
            model = add_lora(
                model,
                rank=cfg.lora_rank,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                task="SEQ_CLS",
            )
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        sample = texts[:: max(1, len(texts) // UNKNOWN_SAMPLE)]
        check_readable(
            tokenizer, sample, cfg.max_unknown, "model", cfg.init_from or cfg.base_model, "the training data"
        )
        self.encoder = PairEncoder(tokenizer, cfg.max_length)
        self._tokenize(data)

        groups_per_epoch = sum(len(query.positives) for query in data.train)
        micro_batches = math.ceil(groups_per_epoch / cfg.groups_per_step)
        self.steps_per_epoch = max(1, math.ceil(micro_batches / cfg.accumulation_steps))
        total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        self.total_steps = total_steps
        self.optimizer = adamw_optimizer(self.model, cfg)
        self.scheduler = linear_schedule(self.optimizer, total_steps, cfg.warmup_ratio)
        logger.info(
            "training %s on %s: %d groups an epoch, %d optimizer steps an epoch, %d in all, %s, device %s%s",
            cfg.base_model,
            self.out,
            groups_per_epoch,
            self.steps_per_epoch,
            total_steps,
            cfg.loss,
            self.device,
            " (bf16 autocast)" if self.bf16 else "",
        )

        state = None
        if checkpoint is not None:
            state = load_checkpoint(
                checkpoint, self.out, self.model, self.optimizer, self.scheduler, cfg, data.sha256, self.device
            )
        if state is None:
            state = {
                "epoch": 0,
                "step": 0,
                "history": [],
                "best_epoch": 0,
                "bad_epochs": 0,
                "train_seconds": 0.0,
                "pairs": 0,
                "stopped_early": False,
            }
            entry = {"epoch": 0, "step": 0, "loss": None, **self._evaluate_dev()}
            if data.dev.queries and data.dev.has_first_stage:
                entry["dev"]["first_stage_recall"] = self._first_stage_recall()
            self._log({"event": "dev", **entry})
            state["history"].append(entry)
            self._save_best(0)
        interrupted = False
        epoch = state["epoch"]
        while epoch < cfg.epochs and not state["stopped_early"] and state["step"] < total_steps:
            epoch += 1
            loss = self._train_epoch(epoch, state)
            entry = {"epoch": epoch, "step": state["step"], "loss": loss, **self._evaluate_dev()}
            self._log({"event": "dev", **entry})
            state["history"].append(entry)
            best = state["history"][state["best_epoch"]]
            if better_epoch(entry, best):
                state["best_epoch"], state["bad_epochs"] = epoch, 0
                self._save_best(epoch)
            else:
                state["bad_epochs"] += 1
                if data.dev.queries and state["bad_epochs"] >= cfg.patience:
                    logger.info("early stop after epoch %d: no dev gain for %d epochs", epoch, cfg.patience)
                    state["stopped_early"] = True
            state["epoch"] = epoch
            save_checkpoint(self.out, self.model, self.optimizer, self.scheduler, state, cfg, self.data.sha256)
            fault_point("train.epoch")
            if cfg.stop_after_epochs is not None and epoch >= cfg.stop_after_epochs and epoch < cfg.epochs:
                interrupted = not state["stopped_early"] and state["step"] < total_steps
                if interrupted:
                    logger.info("stopping after epoch %d as asked (stop_after_epochs); resume=True continues", epoch)
                    break
        return self._finish(state, base_identity, started, interrupted)

    # ------------------------------------------------------------------ the starting model
    def _check_start(self) -> None:
        """The starting model's folder, checked before the training data is loaded (minutes, when negatives are
        mined): it exists, runs no code of its own, holds safetensors weights. Its weights are checked on load."""
        cfg = self.cfg
        if cfg.init_from is None:
            check_model_source(cfg.base_model, "base model", source=resolve_model(cfg.base_model))
        else:
            check_model_source(cfg.init_from, "init_from")
            if is_adapter(cfg.init_from):
                raise ConfigError(
                    f"init_from {cfg.init_from}: an adapter folder ({ADAPTER_CONFIG}); continue from a full reranker, "
                    "or train a new adapter over the adapter's base model"
                )

    def _load_start(self) -> tuple[Any, Any, dict[str, Any]]:
        """``(model, tokenizer, identity)`` of the starting point: ``init_from`` (a fine-tuned reranker, its card
        read for the lineage) or ``base_model`` with a fresh one-output head. fp32 master weights whatever the
        checkpoint stores (AdamW on fp16 weights loses updates); bf16 comes from autocast during training."""
        import torch

        cfg = self.cfg
        if cfg.init_from is None:
            self.parent_card: dict[str, Any] = {}
            return load_cross_encoder(cfg.base_model, dtype=torch.float32, fresh_head=True, seed=cfg.seed)
        folder = Path(cfg.init_from)
        self.parent_card = read_reranker_card(folder)
        if not self.parent_card:
            logger.warning("init_from %s has no searchkit.json: its lineage starts at itself", folder)
        loaded = load_cross_encoder(folder, dtype=torch.float32, what="init_from")
        logger.info("continuing from the fine-tuned reranker %s", folder)
        return loaded

    def _lineage(self, start: dict[str, Any]) -> list[dict[str, Any]]:
        """base -> parent -> ...: the parent's recorded chain plus the parent itself (or just the base model)."""
        step = {"name": start["name"], "sha256": start.get("weights_sha256")}
        if self.cfg.init_from is None:
            return [step]
        return [*lineage(self.parent_card), step]

    # ------------------------------------------------------------------ output folder
    def _prepare_output(self) -> Path | None:
        """Check what the output folder holds; return the checkpoint to resume from, if any."""
        cfg, out = self.cfg, self.out
        checkpoint = find_checkpoint(out)
        if cfg.overwrite:
            for child in out.iterdir() if out.is_dir() else []:
                # the cache is keyed by index, queries and settings: always safe to reuse
                if child.name != "cache":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            checkpoint = None
        elif (out / MODEL_CARD).is_file():
            raise ConfigError(f"{out} already holds a trained model; pass overwrite=True (--overwrite) to replace it")
        elif checkpoint is not None and not cfg.resume:
            epoch = checkpoint_epoch(checkpoint)
            raise ConfigError(
                f"{out} holds an interrupted run (checkpoint after epoch {epoch}); pass resume=True (--resume) "
                "to continue it, or overwrite=True (--overwrite) to start over"
            )
        elif cfg.resume and checkpoint is None:
            logger.info("resume: no checkpoint in %s yet, starting from the beginning", out)
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:  # a fresh start: a log left by a run killed before a checkpoint is stale
            (out / "train_log.jsonl").unlink(missing_ok=True)
        return checkpoint

    def _log(self, record: dict[str, Any]) -> None:
        with (self.out / "train_log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ tokens
    def _tokenize(self, data: TrainingData) -> None:
        keys = list(data.texts)
        self.doc_tokens = dict(zip(keys, self.encoder.tokenize([data.texts[key] for key in keys]), strict=True))
        queries = [query.text for query in data.train]
        self.query_tokens = dict(zip(queries, self.encoder.tokenize(queries), strict=True))

    # ------------------------------------------------------------------ one epoch
    def _groups(self, epoch: int) -> list[tuple[str, list[str], list[float], list[float]]]:
        """This epoch's groups (query, docs with the positive first, labels, item weights), shuffled.

        The sampling RNG is seeded by (seed, epoch) alone: a resumed run draws what a straight run does.
        """
        rng = np.random.default_rng([self.cfg.seed, epoch])
        n = self.cfg.negatives_per_group
        groups = []
        for query in self.data.train:
            pool = query.negatives
            for key, _grade, weight in query.positives:
                if len(pool) >= n:
                    picked = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
                elif pool:
                    picked = [pool[i] for i in rng.choice(len(pool), size=n, replace=True)]
                else:
                    picked = []
                docs = [key, *(doc for doc, _ in picked)]
                groups.append((query.text, docs, [1.0] + [0.0] * len(picked), [weight, *(w for _, w in picked)]))
        order = rng.permutation(len(groups))
        return [groups[i] for i in order]

    def _train_epoch(self, epoch: int, state: dict[str, Any]) -> float:
        import torch

        cfg = self.cfg
        groups = self._groups(epoch)
        batches = [groups[i : i + cfg.groups_per_step] for i in range(0, len(groups), cfg.groups_per_step)]
        progress: Any = None
        if self.show_progress:
            progress = tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", dynamic_ncols=True)
        self.model.train()
        started = time.perf_counter()
        losses: list[float] = []
        window: list[float] = []
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(batches, start=1):
            loss = self._loss(batch)
            (loss / cfg.accumulation_steps).backward()
            value = float(loss.detach())
            losses.append(value)
            window.append(value)
            state["pairs"] += sum(len(docs) for _, docs, _, _ in batch)
            if index % cfg.accumulation_steps == 0 or index == len(batches):
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                if state["step"] % cfg.log_every == 0:
                    lr = self.scheduler.get_last_lr()[0]
                    self._log(
                        {
                            "event": "step",
                            "epoch": epoch,
                            "step": state["step"],
                            "loss": sum(window) / len(window),
                            "lr": lr,
                        }
                    )
                    window = []
                if state["step"] >= self.total_steps:
                    break
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        if progress is not None:
            progress.close()
        state["train_seconds"] += time.perf_counter() - started
        return sum(losses) / max(1, len(losses))

    def _loss(self, batch: list[tuple[str, list[str], list[float], list[float]]]) -> Any:
        import torch

        queries = [self.query_tokens[query] for query, docs, _, _ in batch for _ in docs]
        texts = [self.doc_tokens[doc] for _, docs, _, _ in batch for doc in docs]
        pairs = self.encoder.join(queries, texts)
        inputs = batch_tensors(pairs, range(len(pairs.input_ids)), self.encoder.pad_id, self.device)
        with autocast(self.device, self.bf16):
            logits = self.model(**inputs).logits[:, 0].float()
        labels = torch.tensor([y for _, _, ys, _ in batch for y in ys], device=self.device)
        weights = torch.tensor([w for _, _, _, ws in batch for w in ws], device=self.device)
        if self.cfg.loss == "pointwise":
            return weighted_cross_entropy(logits, labels, weights, "pointwise")
        size = len(batch[0][1])
        group_weights = weights.view(-1, size)[:, 0]  # a group weighs what its positive does
        return weighted_cross_entropy(logits.view(-1, size), labels.view(-1, size), group_weights, "listwise")

    # ------------------------------------------------------------------ dev
    def _dev_scores(self) -> np.ndarray:
        """The model's logits for every dev candidate, flat in (query, candidate) order."""
        dev = self.data.dev
        if self._dev_reranker is None:  # one reranker for the run: it counts truncated pairs once
            self._dev_reranker = CrossEncoderReranker.from_model(
                self.model, self.tokenizer, max_length=self.cfg.max_length, batch_size=self.cfg.eval_batch_size
            )
        self.model.eval()
        queries = [query.text for query, hits in zip(dev.queries, dev.candidates, strict=True) for _ in hits]
        texts = [self.data.texts[hit.doc_id] for hits in dev.candidates for hit in hits]
        with autocast(self.device, self.bf16):
            flat = self._dev_reranker.score(queries, texts, show_progress=self.show_progress)
        self.model.train()
        return flat

    def _per_query(self, flat: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum([0, *(len(hits) for hits in self.data.dev.candidates)])
        return [flat[start:end] for start, end in itertools.pairwise(bounds)]

    def _evaluate_dev(self) -> dict[str, Any]:
        """Dev metric of the reranker alone, of the first stage, and of the best interpolation on the grid."""
        dev = self.data.dev
        if not dev.queries:
            return {}
        self.dev_scores = self._dev_scores()
        scores = self._per_query(self.dev_scores)
        grid = sorted({0.0, 1.0, *self.cfg.interpolation_grid}, reverse=True) if dev.has_first_stage else [1.0]
        results = {a: self._dev_metric(scores, a) for a in grid}
        best_a = max(grid, key=lambda a: results[a])  # max keeps the first of ties: the largest weight
        entry: dict[str, Any] = {"dev": {"reranker": results[1.0]}}
        if dev.has_first_stage:
            entry["dev"].update(
                first_stage=results[0.0],
                interpolated=results[best_a],
                a=best_a,
                grid={str(a): value for a, value in results.items()},
            )
        logger.info(
            "dev %s: reranker %.4f%s",
            self.metric,
            results[1.0],
            f", first stage {results[0.0]:.4f}, interpolated {results[best_a]:.4f} (a={best_a})"
            if dev.has_first_stage
            else "",
        )
        return entry

    def _first_stage_recall(self) -> float:
        """Recall of the dev candidates: the share of relevant documents the reranker is given to find."""
        dev = self.data.dev
        ids = [q.query_id for q in dev.queries]
        scores = self._per_query(self.dev_scores)
        report = rerank_evaluation(ids, dev.candidates, scores, dev.qrels, [self.metric])
        recall = float(report.first_stage[f"R@{max(report.depth, 1)}"])
        logger.info(
            "dev: %d queries; the first stage's top %d holds %.1f%% of their relevant documents (R@%d)",
            len(ids),
            report.depth,
            100 * recall,
            report.depth,
        )
        return recall

    def _dev_metric(self, scores: list[np.ndarray], a: float) -> float:
        """Dev metric of ``a * reranker + (1 - a) * first stage`` (a = 1: the reranker alone), by the one helper."""
        dev = self.data.dev
        ids = [q.query_id for q in dev.queries]
        report = rerank_evaluation(ids, dev.candidates, scores, dev.qrels, [self.metric], fusion=interpolation_model(a))
        return float((report.fused or report.reranker)[self.metric])

    # ------------------------------------------------------------------ checkpoints
    def _save_best(self, epoch: int) -> None:
        from safetensors.torch import save_model

        folder = self.out / "best"
        folder.mkdir(exist_ok=True)
        save_model(self.model, str(folder / "model.safetensors.tmp"))
        os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
        if self.data.dev.queries:
            np.save(folder / "dev_scores.npy", self.dev_scores, allow_pickle=False)
        (folder / "best.json").write_text(json.dumps({"epoch": epoch}) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ the end
    def _collection(self) -> dict[str, Any] | None:
        """The collection the reranker was trained on, as its index's manifest names it (``source``: the corpus
        path and sha256): a Searcher over an index of another collection warns once (out of domain)."""
        if self.cfg.index is None:
            return None
        source = Index.open(self.cfg.index).manifest.get("source") or {}
        if not source.get("sha256"):
            return None
        return {"path": source.get("path"), "sha256": source["sha256"]}

    def _fit_fusion(self, final: dict[str, Any]) -> dict[str, Any] | None:
        """Fit the learned fusion of every stage on dev with the shipped epoch's scores (see
        searchkit.ranking.fusion)."""

        cfg, dev = self.cfg, self.data.dev
        if not cfg.fit_fusion or not dev.has_first_stage or cfg.index is None:
            return None
        searcher = Searcher(Index.open(cfg.index), mode=cfg.dev_mode)
        stages = searcher.stages([q.text for q in dev.queries], cfg.dev_depth)
        per_query = searcher.per_query_stages(stages)
        scores = self._per_query(np.load(self.out / "best" / "dev_scores.npy", allow_pickle=False))
        features = [
            stage_features(head, own, per_query[i])
            for i, (head, own) in enumerate(zip(dev.candidates, scores, strict=True))
        ]
        ids = [q.query_id for q in dev.queries]
        model, report = fit_weights(
            dev.candidates, features, ids, dev.qrels, metric=self.metric, interpolation_grid=cfg.interpolation_grid
        )
        fitted = LearnedFusion(model.weights, depth=cfg.dev_depth, mode=searcher.mode, fitted=report)
        final["fused"] = report["fused"]
        return config_to_dict(fitted)

    def _finish(self, state: dict[str, Any], base: dict[str, Any], started: float, interrupted: bool) -> TrainResult:
        from safetensors.torch import load_model

        cfg, data = self.cfg, self.data
        history, best_epoch = state["history"], state["best_epoch"]
        seconds = time.perf_counter() - started
        rate = state["pairs"] / state["train_seconds"] if state["train_seconds"] else 0.0
        result = TrainResult(
            self.out,
            best_epoch,
            state["epoch"],
            history,
            None,
            len(data.train),
            len(data.dev.queries),
            state["pairs"],
            seconds,
            rate,
            interrupted,
            state["stopped_early"],
        )
        if interrupted:
            return result
        load_model(self.model, str(self.out / "best" / "model.safetensors"), device=self.device)
        final: dict[str, Any] | None = history[best_epoch].get("dev")
        interpolation = final.get("a") if final else None
        if final and data.dev.queries:
            if interpolation == 0.0:
                logger.warning(
                    "the fine-tuned reranker does not beat the first stage on dev (%s %.4f vs %.4f): shipped "
                    "with interpolation 0, which keeps the first stage's order",
                    self.metric,
                    final["reranker"],
                    final["first_stage"],
                )
            scores = self._per_query(np.load(self.out / "best" / "dev_scores.npy", allow_pickle=False))
            run = {
                q.query_id: [Hit(h.doc_id, float(s)) for h, s in zip(hits, own, strict=True)]
                for q, hits, own in zip(data.dev.queries, data.dev.candidates, scores, strict=True)
            }
            write_run(run, self.out / "dev_run.trec", tag="searchkit-dev")
        if not data.dev.queries:
            logger.warning("no dev queries: the last epoch is shipped unchecked against its starting point")
        elif best_epoch == 0 and state["epoch"] > 0:
            logger.warning(
                "no epoch beat the starting model (%s) on dev %s: the starting model is shipped",
                "the parent" if cfg.init_from else "the base model",
                self.metric,
            )
        fusion = self._fit_fusion(final) if final and data.dev.queries else None
        self.model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.linear.Identity"}
        self.model.save_pretrained(self.out)
        if cfg.adapter:
            (self.out / "README.md").unlink(missing_ok=True)  # peft's hub card; searchkit.json is the card
        self.tokenizer.model_max_length = cfg.max_length
        self.tokenizer.save_pretrained(self.out)
        parent = None if cfg.init_from is None else {"name": base["name"], "sha256": base.get("weights_sha256")}
        card = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "score_kind": SCORE_KIND,
            "max_length": cfg.max_length,
            "interpolation": interpolation,
            "interpolation_note": "a * minmax(reranker logits) + (1 - a) * minmax(first-stage scores)",
            "fusion": fusion,
            "base_model": self.parent_card.get("base_model", base) if cfg.init_from else base,
            "parent": parent,
            "lineage": self._lineage(base),
            "guard": guard_report(
                history, best_epoch, self.metric, "parent" if cfg.init_from else "base", base["name"]
            ),
            "training_config": config_to_dict(cfg),
            "training_data": {"sha256": data.sha256, **data.source},
            "dev_split": data.dev.split,
            "dev_metric": self.metric,
            "dev": history,
            "best_epoch": best_epoch,
            "final_dev": final,
            "stopped_early": state["stopped_early"],
            "seconds": round(seconds, 1),
            "train_pairs": state["pairs"],
            "train_pairs_per_second": round(rate, 2),
            "collection": self._collection(),
        }
        if cfg.adapter:
            start = {"name": cfg.init_from or cfg.base_model, "weights_sha256": base.get("weights_sha256")}
            card["adapter"] = adapter_card(self.model, start)
        fault_point("train.card")
        write_reranker_card(self.out, card)
        plot_curves(self.out, self.metric)
        shutil.rmtree(self.out / "best", ignore_errors=True)
        if not cfg.keep_checkpoint:
            shutil.rmtree(self.out / "checkpoint", ignore_errors=True)
        logger.info("reranker written to %s (best epoch %d, interpolation %s)", self.out, best_epoch, interpolation)
        return dataclasses.replace(result, interpolation=interpolation, fusion=fusion)
