"""Fine-tuning the dense bi-encoder (``searchkit train RECIPE.toml`` with ``model = "dense"``).

Settings are a :class:`searchkit.config.DenseTrainConfig` (``load_dense_train_recipe`` reads one). The training
examples are a qrels split's (query, positive) pairs, each with ``hard_negatives`` documents drawn (seeded, once)
from the index's first stage at ranks ``skip_top + 1 .. mine_depth`` minus every judged document of the query
(``searchkit.training.data``'s mining and first-stage cache). They are learnt with sentence-transformers'
``MultipleNegativesRankingLoss`` (or its cached version) through ``SentenceTransformerTrainer``: every other
positive and hard negative of the batch is a negative too, and a batch never holds the same text twice (no
false in-batch negatives from queries with several positives).

Dev queries are held out of training with :func:`searchkit.training.data.split_dev`, the reranker's split (same
queries, count and seed), so both stages and the fusion fitted on dev never trained on them. The starting model
and every epoch are scored on dev by dense retrieval over the whole index (the candidate encoder encodes every
document; ``dev_metric`` and RR@10 / R@100 by ir-measures through :func:`searchkit.evaluate.metrics.evaluate`). The
best epoch is kept, training stops after ``patience`` epochs without a gain, and **the dev guard**: when no
epoch beats the starting model (the base, or the ``init_from`` parent), the run says so (a warning, the card's
``"shipped": false``, the CLI summary) and the folder holds the starting weights (best on dev: epoch 0).

Output folder::

    modules.json, config.json, model.safetensors, tokenizer files, 1_Pooling/, ...
                       a standard sentence-transformers folder: SentenceTransformer(folder), DenseConfig(model=folder),
                       searchkit index add DIR --dense FOLDER --overwrite
    searchkit.json     kind "dense": base model, parent, lineage, full config, training-data sha256, dev metrics of
                       the start and every epoch, best epoch, shipped, timings, pairs/s
    train_log.jsonl    loss every ``log_every`` steps; one line per dev evaluation (epoch 0: the starting model)
    data/, cache/      train_pairs.jsonl (the exact rows, ids), dev_queries.txt; first-stage runs
    checkpoints/       Trainer checkpoints of the last (and best) epoch, for ``resume``; removed at the end unless
                       keep_checkpoint

>>> from searchkit.config import DenseTrainConfig
>>> DenseTrainConfig(output="out", corpus="tests/data/tiny", index="idx").loss
'mnrl'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import DENSE_TRAIN_RUN_CONTROL, DenseTrainConfig, config_to_dict
from searchkit.evaluate.metrics import canonical_metric
from searchkit.formats import document_text
from searchkit.models.cards import MODEL_CARD, lineage, read_model_card, write_model_card
from searchkit.models.device import cpu_bf16_support, resolve_device
from searchkit.models.encoder import load_sentence_transformer
from searchkit.models.loading import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_card,
    add_lora,
    check_model_source,
    is_adapter,
    model_identity,
    resolve_model,
)
from searchkit.models.merging import merge_into
from searchkit.models.tokenizers import UNKNOWN_SAMPLE, check_readable
from searchkit.training.bi_encoder_data import (
    DEV_METRICS,
    DenseTrainingData,
    DevRetrieval,
    load_dense_training_data,
    open_training_index,
)
from searchkit.training.data import check_parent_split
from searchkit.training.runtime import seed_everything
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


CHECKPOINTS = "checkpoints"


LOG = "train_log.jsonl"


@dataclass(frozen=True)
class DenseTrainResult:
    """What a run did: ``dev`` holds one entry per evaluation (epoch 0 is the starting model).

    ``shipped``: whether the kept model beats the starting model on dev (None without dev queries).
    """

    output: Path
    start_model: str
    best_epoch: int
    epochs_run: int
    dev: list[dict[str, Any]]
    shipped: bool | None
    train_queries: int
    dev_queries: int
    train_pairs: int
    seconds: float
    pairs_per_second: float
    precision: str
    metric: str = "nDCG@10"
    interrupted: bool = False
    stopped_early: bool = False

    def summary(self) -> list[str]:
        """The run in a few lines (what ``searchkit train`` prints)."""
        took = f"{self.seconds:.1f} s" if self.seconds < 120 else f"{self.seconds / 60:.1f} min"
        metric = self.metric
        lines = [
            f"output       {self.output}  (dense encoder, started from {self.start_model})",
            f"data         {self.train_queries} train queries, {self.dev_queries} dev queries, {self.train_pairs} "
            f"training pairs at {self.pairs_per_second:.1f} pairs/s ({self.precision}), {took}",
        ]
        if self.interrupted:
            lines.append(f"stopped      after epoch {self.epochs_run} (checkpoint kept): continue with --resume")
        else:
            early = " (stopped early)" if self.stopped_early else ""
            lines.append(f"epochs       {self.epochs_run} run{early}; best epoch {self.best_epoch} (0: starting model)")
        evaluated = [entry for entry in self.dev if "dev" in entry]
        if not evaluated:
            lines.append("dev          none (no dev queries): the last epoch is kept unchecked")
            return lines
        names = list(evaluated[0]["dev"])
        lines.append("dev by epoch (* kept):")
        lines.append(f"{'epoch':>5}  {'loss':>8}  " + "  ".join(f"{name:>8}" for name in names))
        for entry in evaluated:
            loss = entry.get("loss")
            loss_text = "-" if loss is None else f"{loss:.4f}"
            marker = "  *" if entry["epoch"] == self.best_epoch else ""
            scores = "  ".join(f"{entry['dev'][name]:8.4f}" for name in names)
            lines.append(f"{entry['epoch']:>5}  {loss_text:>8}  {scores}{marker}")
        if self.interrupted:
            return lines
        start, best = evaluated[0]["dev"][metric], self.dev[self.best_epoch]["dev"][metric]
        if self.shipped:
            lines.append(f"shipped      epoch {self.best_epoch}: dev {metric} {best:.4f} > start {start:.4f}")
        else:
            lines.append(
                f"NOT SHIPPED  no epoch beat the starting model on dev {metric} ({start:.4f}): the folder holds the "
                "starting weights; do not use it as an improvement"
            )
        return lines


def train_dense(config: DenseTrainConfig, show_progress: bool = False) -> DenseTrainResult:
    """Fine-tune a sentence-transformers bi-encoder as ``config`` says and write the output folder (module docs).

    >>> import tempfile
    >>> from searchkit.config import DenseTrainConfig
    >>> out = tempfile.mkdtemp()
    >>> train_dense(DenseTrainConfig(output=out, corpus="tests/data/tiny", index=out + "/none", build_index=False))
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: index .../none does not exist; build it, or set corpus (and build_index = true)
    """
    return _DenseTrainer(config, show_progress).run()


def _st_evaluator(dev: DevRetrieval, metric: str) -> Any:
    """``dev`` as a sentence-transformers evaluator (the Trainer calls it after every epoch)."""
    try:
        from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import SentenceEvaluator  # type: ignore[no-redef]

    class _Evaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = "dev"
            self.greater_is_better = True
            self.primary_metric = metric

        def __call__(self, model: Any, output_path: Any = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            return dict(self.prefix_name_to_metrics(dev(model), self.name))

    return _Evaluator()


class _DenseTrainer:
    def __init__(self, config: DenseTrainConfig, show_progress: bool) -> None:
        self.cfg = config
        self.show_progress = show_progress
        self.out = Path(config.output)
        self.metric = canonical_metric(config.dev_metric)

    def run(self) -> DenseTrainResult:
        cfg = self.cfg
        started = time.perf_counter()
        start_name = cfg.init_from or cfg.base_model
        start_what = "base model" if cfg.init_from is None else "init_from"
        if cfg.init_from is not None and is_adapter(cfg.init_from):
            raise ConfigError(
                f"init_from {cfg.init_from}: an adapter folder ({ADAPTER_CONFIG}); continue from a full encoder, "
                "or train a new adapter over the adapter's base model"
            )
        # the starting model's folder first, before the training data (its rules: searchkit.models.loading)
        check_model_source(start_name, start_what, source=resolve_model(start_name), layout="sentence-transformers")
        checkpoint = self._prepare_output()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device, "training")
        bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and (device.startswith("cuda") or (device == "cpu" and bool(cpu_bf16_support())))
        )
        self.precision = "bf16" if bf16 else "fp32"
        index = open_training_index(cfg, self.show_progress)
        data = load_dense_training_data(cfg, index, self.out, self.show_progress)
        ancestry = self._lineage()
        if cfg.init_from is not None and data.dev_queries:
            check_parent_split(data.split, read_model_card(Path(cfg.init_from), "dense"), cfg.init_from)
        model = _load_model(start_name, device, cfg.max_length, start_what)
        if cfg.adapter == "lora":  # the transformer's LoRA adapters train; its own weights stay frozen
            model[0].model = add_lora(
                model[0].model,
                rank=cfg.lora_rank,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                task="FEATURE_EXTRACTION",
            )
        texts = [text for row in data.rows for text in (row["query"], row["positive"])]
        sample = texts[:: max(1, len(texts) // UNKNOWN_SAMPLE)]
        check_readable(model.tokenizer, sample, cfg.max_unknown, "model", start_name, "the training data")

        dev: DevRetrieval | None = None
        if data.dev_queries:
            docs = list(index.iter_documents())
            dev = DevRetrieval(
                data.dev_queries,
                data.dev_qrels,
                [doc.doc_id for doc in docs],
                [document_text(doc) for doc in docs],
                depth=cfg.dev_depth,
                metrics=[self.metric, *DEV_METRICS],
                batch_size=cfg.eval_batch_size,
                max_length=cfg.dev_max_length,
                bf16=bf16,
            )
        if checkpoint is None:
            entry: dict[str, Any] = {"event": "dev", "epoch": 0, "step": 0, "loss": None}
            if dev is not None:
                tick = time.perf_counter()
                entry["dev"] = dev(model)
                entry["dev_seconds"] = round(time.perf_counter() - tick, 1)
                logger.info("dev %s of the starting model %s: %s", self.metric, start_name, entry["dev"])
            self._log(entry)
        logger.info(
            "fine-tuning %s on %s: %d pairs (+%d hard negatives each), batch %d, %d epochs, %s, device %s",
            start_name,
            self.out,
            len(data.rows),
            cfg.hard_negatives,
            cfg.batch_size,
            cfg.epochs,
            self.precision,
            device,
        )
        trainer, state = self._trainer(model, data, dev, device, bf16)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        history = [r for r in self._read_log() if r["event"] == "dev"]
        epochs_run = int(history[-1]["epoch"]) if history else 0
        max_steps = trainer.state.max_steps
        interrupted = state["stop_requested"] and trainer.state.global_step < max_steps
        if interrupted:
            logger.info("stopping after epoch %d as asked (stop_after_epochs); resume=True continues", epochs_run)
        stopped_early = bool(not interrupted and trainer.state.global_step < max_steps and not state["stop_requested"])
        train_seconds = sum(r.get("train_seconds", 0.0) for r in history)
        pairs = min(len(data.rows) * epochs_run, trainer.state.global_step * cfg.batch_size)
        pairs_per_second = pairs / train_seconds if train_seconds > 0 else 0.0
        result = DenseTrainResult(
            output=self.out,
            start_model=start_name,
            best_epoch=epochs_run,
            epochs_run=epochs_run,
            dev=[{k: v for k, v in r.items() if k != "event"} for r in history],
            shipped=None,
            train_queries=len(data.train_queries),
            dev_queries=len(data.dev_queries),
            train_pairs=len(data.rows),
            seconds=round(time.perf_counter() - started, 1),
            pairs_per_second=round(pairs_per_second, 2),
            precision=self.precision,
            metric=self.metric,
            interrupted=interrupted,
            stopped_early=stopped_early,
        )
        if interrupted:
            return result
        return self._finish(result, trainer.model, data, ancestry, device, train_seconds, dev)

    # ------------------------------------------------------------------ output folder
    def _prepare_output(self) -> Path | None:
        """Check what the output folder holds; return the Trainer checkpoint to resume from, if any."""
        cfg, out = self.cfg, self.out
        checkpoint = _last_checkpoint(out / CHECKPOINTS)
        if cfg.overwrite:
            for child in out.iterdir() if out.is_dir() else []:
                if child.name != "cache":  # keyed by index, queries and settings: always safe to reuse
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            checkpoint = None
        elif (out / MODEL_CARD).is_file():
            raise ConfigError(f"{out} already holds a trained model; pass overwrite=True (--overwrite) to replace it")
        elif checkpoint is not None and not cfg.resume:
            raise ConfigError(
                f"{out} holds an interrupted run ({checkpoint.name}); pass resume=True (--resume) to continue it, "
                "or overwrite=True (--overwrite) to start over"
            )
        elif cfg.resume and checkpoint is None:
            logger.info("resume: no checkpoint in %s yet, starting from the beginning", out)
        out.mkdir(parents=True, exist_ok=True)
        saved = out / CHECKPOINTS / "config.json"
        if checkpoint is not None:
            before = json.loads(saved.read_text(encoding="utf-8"))
            changed = [name for name, value in _comparable(cfg).items() if before.get(name) != value]
            if changed:
                raise ConfigError(
                    f"{out}: settings changed since the checkpoint ({', '.join(changed)}); resume with the same "
                    "recipe, or pass overwrite=True (--overwrite) to start over"
                )
            epoch = round(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["epoch"])
            # what a run killed after this checkpoint logged is redone: keep the log up to the checkpoint
            kept = [r for r in self._read_log() if r["epoch"] <= epoch]
            (out / LOG).write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        else:
            (out / LOG).unlink(missing_ok=True)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(_comparable(cfg), indent=2) + "\n", encoding="utf-8")
        return checkpoint

    def _log(self, record: dict[str, Any]) -> None:
        with (self.out / LOG).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _read_log(self) -> list[dict[str, Any]]:
        path = self.out / LOG
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _lineage(self) -> list[dict[str, Any]]:
        """The models this run descends from, oldest first (base, or the parent's lineage and the parent)."""
        cfg = self.cfg
        if cfg.init_from is None:
            return [{"name": cfg.base_model, "sha256": model_identity(cfg.base_model).get("weights")}]
        parent = Path(cfg.init_from)
        if not parent.is_dir():
            raise ConfigError(f"init_from {parent} is not a model folder; give a fine-tuned encoder's output folder")
        card = read_model_card(parent, "dense")
        before = lineage(card)
        if not card:
            logger.warning("init_from %s has no searchkit card: its own ancestry is unknown", parent)
        return [*before, {"name": str(parent), "sha256": model_identity(str(parent)).get("weights")}]

    # ------------------------------------------------------------------ the Trainer
    def _trainer(
        self, model: Any, data: DenseTrainingData, dev: DevRetrieval | None, device: str, bf16: bool
    ) -> tuple[Any, dict[str, Any]]:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from transformers import EarlyStoppingCallback

        cfg = self.cfg
        columns: dict[str, list[str]] = {
            "anchor": [row["query"] for row in data.rows],
            "positive": [row["positive"] for row in data.rows],
        }
        for n in range(cfg.hard_negatives):
            columns[f"negative_{n + 1}"] = [row["negatives"][n] for row in data.rows]
        dataset = Dataset.from_dict(columns)
        evaluator = _st_evaluator(dev, self.metric) if dev is not None else None
        args = SentenceTransformerTrainingArguments(
            output_dir=str(self.out / CHECKPOINTS),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.eval_batch_size,
            learning_rate=cfg.lr,
            weight_decay=cfg.weight_decay,
            **_warmup(cfg.warmup_ratio),
            max_grad_norm=cfg.max_grad_norm,
            lr_scheduler_type="linear",
            bf16=bf16,
            use_cpu=device == "cpu",
            seed=cfg.seed,
            data_seed=cfg.seed,
            batch_sampler="no_duplicates",
            eval_strategy="epoch" if evaluator is not None else "no",
            save_strategy="epoch",
            save_total_limit=1,
            load_best_model_at_end=evaluator is not None,
            metric_for_best_model=f"dev_{self.metric}" if evaluator is not None else None,
            greater_is_better=True,
            logging_strategy="steps",
            logging_steps=cfg.log_every,
            logging_first_step=True,
            report_to="none",
            disable_tqdm=not self.show_progress,
            dataloader_num_workers=0,
        )
        loss = _loss(model, cfg)
        state: dict[str, Any] = {"stop_requested": False}
        callbacks: list[Any] = [_log_callback(self, state)]
        if evaluator is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.patience))
        trainer_class = _adapter_trainer(SentenceTransformerTrainer) if cfg.adapter else SentenceTransformerTrainer
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=loss,
            evaluator=evaluator,
            callbacks=callbacks,
        )
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the library logs; train_log.jsonl holds the numbers
        return trainer, state

    # ------------------------------------------------------------------ the end
    def _finish(
        self,
        result: DenseTrainResult,
        trained: Any,
        data: DenseTrainingData,
        ancestry: list[dict[str, Any]],
        device: str,
        train_seconds: float,
        dev: DevRetrieval | None = None,
    ) -> DenseTrainResult:
        cfg, out, metric = self.cfg, self.out, self.metric
        history = result.dev
        shipped: bool | None = None
        best_epoch = result.epochs_run
        model = trained
        if history and "dev" in history[0]:
            scores = [entry["dev"][metric] for entry in history]
            best_epoch = int(np.argmax(scores))  # the first best; epoch 0 is the starting model
            shipped = best_epoch > 0
            if not shipped:
                logger.warning(
                    "DEV GUARD: no epoch beat the starting model %s on dev %s (%.4f; epochs: %s); %s keeps the "
                    "starting weights and its card says shipped=false",
                    result.start_model,
                    metric,
                    scores[0],
                    ", ".join(f"{s:.4f}" for s in scores[1:]) or "none",
                    out,
                )
                model = _load_model(result.start_model, device, cfg.max_length)
        merge = _merge_report(self, model, result.start_model, device, dev) if shipped is not False else None
        for name in (
            "modules.json",
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            ADAPTER_CONFIG,
            ADAPTER_WEIGHTS,
            "1_Pooling",
            "2_Normalize",
        ):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        model.max_seq_length = cfg.dev_max_length  # what SentenceTransformer(folder) uses: the evaluated length
        model.save(str(out), create_model_card=False)
        adapter = None
        if cfg.adapter and shipped is not False:
            (out / "README.md").unlink(missing_ok=True)  # peft's hub card; searchkit.json is the card
            start_weights = {"name": result.start_model, "weights_sha256": ancestry[-1]["sha256"]}
            adapter = adapter_card(model[0].model, start_weights)
        start = history[0].get("dev") if history else None
        card = {
            "base_model": ancestry[0],
            "parent": cfg.init_from,
            "lineage": ancestry,
            "start_model": {"name": result.start_model, "sha256": ancestry[-1]["sha256"]},
            "training_config": config_to_dict(cfg),
            "training_data": {
                "sha256": data.sha256,
                **data.source,
                "train_queries": len(data.train_queries),
                "dev_queries": len(data.dev_queries),
                "pairs": len(data.rows),
            },
            "dev_split": data.split,
            "loss": {"name": cfg.loss, "scale": cfg.scale, "hard_negatives": cfg.hard_negatives},
            "dev_metric": metric,
            "dev": history,
            "start_dev": start,
            "best_epoch": best_epoch,
            "final_dev": history[best_epoch].get("dev") if history else None,
            "shipped": shipped,
            "max_length": cfg.dev_max_length,
            "normalize": True,
            "precision": self.precision,
            "timings": {
                "total_seconds": result.seconds,
                "train_seconds": round(train_seconds, 1),
                "dev_seconds": round(sum(entry.get("dev_seconds", 0.0) for entry in history), 1),
            },
            "train_pairs": round(result.pairs_per_second * train_seconds),
            "train_pairs_per_second": result.pairs_per_second,
        }
        if merge is not None:
            card["merge"] = merge
        if adapter is not None:
            card["adapter"] = adapter
        write_model_card(out, "dense", card)
        if not cfg.keep_checkpoint:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        logger.info("dense encoder written to %s (best epoch %d, shipped %s)", out, best_epoch, shipped)
        return dataclasses.replace(result, best_epoch=best_epoch, shipped=shipped)


def _merge_report(
    trainer: _DenseTrainer, model: Any, start: str, device: str, dev: DevRetrieval | None
) -> dict[str, Any] | None:
    """Merge the kept model with its starting weights in place (``merge_alpha``; see :mod:`searchkit.models.merging`)
    and say how: alpha, how it was chosen, and the dev metric of every alpha tried (``"auto"``: the grid's best on
    dev, the smallest alpha of ties, since it keeps the most of what the base knew)."""
    cfg, metric = trainer.cfg, trainer.metric
    if cfg.merge_alpha is None:
        return None
    base_state = {k: v.detach().clone() for k, v in _load_model(start, device, cfg.max_length).state_dict().items()}
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tried: dict[str, dict[str, float]] = {}
    if cfg.merge_alpha == "auto":
        assert dev is not None  # DenseTrainConfig refuses "auto" without dev queries
        for alpha in cfg.merge_alpha_grid:
            model.load_state_dict(tuned)
            tried[str(alpha)] = dev(merge_into(model, base_state, alpha))
            logger.info("merge alpha %.2f: dev %s %.4f", alpha, metric, tried[str(alpha)][metric])
        best = max(tried[str(a)][metric] for a in cfg.merge_alpha_grid)
        alpha = min(a for a in cfg.merge_alpha_grid if tried[str(a)][metric] == best)
    else:
        alpha = float(cfg.merge_alpha)
    model.load_state_dict(tuned)
    merge_into(model, base_state, alpha)
    if dev is not None and str(alpha) not in tried:
        tried[str(alpha)] = dev(model)
    logger.info("shipping alpha=%.2f * fine-tuned + %.2f * %s", alpha, 1 - alpha, start)
    return {
        "alpha": alpha,
        "chosen": "dev" if cfg.merge_alpha == "auto" else "set",
        "formula": "alpha * fine-tuned + (1 - alpha) * starting weights",
        "start_model": start,
        "dev": tried,
        "merged_dev": tried.get(str(alpha)),
    }


def _adapter_trainer(base: Any) -> Any:
    """``base`` (SentenceTransformerTrainer) restoring checkpoints of a LoRA model by loading their adapter weights
    into the model being trained (the best epoch at the end, and resume): sentence-transformers would reload the
    checkpoint folder as a model of its own through transformers' peft integration, which needs a newer peft than
    the adapters do."""

    class _AdapterTrainer(base):
        def _load_from_checkpoint(self, checkpoint_path: str, model: Any = None) -> None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            target: Any = getattr(self.model, "_orig_mod", self.model)
            weights = load_file(str(Path(checkpoint_path) / ADAPTER_WEIGHTS))
            set_peft_model_state_dict(target[0].model, weights)

    return _AdapterTrainer


def _log_callback(trainer: _DenseTrainer, flags: dict[str, Any]) -> Any:
    """A TrainerCallback that writes train_log.jsonl (steps, per-epoch dev with timings) and stops after
    ``stop_after_epochs`` epochs (the checkpoint of that epoch is saved first)."""
    from transformers import TrainerCallback

    metric_key = f"eval_dev_{trainer.metric}"
    stop_after = trainer.cfg.stop_after_epochs

    class _Callback(TrainerCallback):
        epoch_started = 0.0
        losses: list[float] = []  # noqa: RUF012 - reset at every epoch begin
        last_epoch: dict[str, Any] = {}  # noqa: RUF012

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.epoch_started = time.perf_counter()
            self.losses = []

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            logs = logs or {}
            epoch = int(np.ceil(state.epoch - 1e-9)) if state.epoch else 0
            if "loss" in logs:
                self.losses.append(float(logs["loss"]))
                lr = float(logs.get("learning_rate", 0.0))
                trainer._log(
                    {"event": "step", "epoch": epoch, "step": state.global_step, "loss": logs["loss"], "lr": lr}
                )
            if metric_key in logs:
                dev = {k.removeprefix("eval_dev_"): float(v) for k, v in logs.items() if k.startswith("eval_dev_")}
                record = {"event": "dev", "epoch": epoch, "step": state.global_step, **self.last_epoch, "dev": dev}
                record["dev_seconds"] = round(float(logs.get("eval_runtime", 0.0)), 1)
                trainer._log(record)
                self.last_epoch = {}

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seconds = time.perf_counter() - self.epoch_started
            loss = float(np.mean(self.losses)) if self.losses else None
            self.last_epoch = {"loss": loss, "train_seconds": round(seconds, 3)}
            if args.eval_strategy == "no" or str(args.eval_strategy).endswith("NO"):
                epoch = int(np.ceil(state.epoch - 1e-9))
                trainer._log({"event": "dev", "epoch": epoch, "step": state.global_step, **self.last_epoch})
                self.last_epoch = {}
            if stop_after is not None and state.epoch >= stop_after - 1e-9:
                flags["stop_requested"] = True
                control.should_training_stop = True

    return _Callback()


def _warmup(ratio: float) -> dict[str, Any]:
    """The warmup as a fraction of the steps: ``warmup_steps`` (a float) from transformers 5, ``warmup_ratio``
    before it."""
    import transformers

    return {"warmup_steps" if int(transformers.__version__.split(".")[0]) >= 5 else "warmup_ratio": ratio}


def _loss(model: Any, cfg: DenseTrainConfig) -> Any:
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import losses  # type: ignore[no-redef,attr-defined]
    if cfg.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size)
    return losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)


def _load_model(name: str, device: str, max_length: int, what: str = "dense model") -> Any:
    """A SentenceTransformer with fp32 master weights (bf16 comes from autocast), ``max_length`` tokens; its folder
    checked first (:func:`searchkit.models.loading.check_model_source`)."""
    import torch

    source = check_model_source(name, what, source=resolve_model(name), layout="sentence-transformers")
    model = load_sentence_transformer(name, source, device, what)
    model.to(torch.float32)
    model.max_seq_length = max_length
    return model


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.rsplit("-", 1)[1])) if found else None


def _comparable(cfg: DenseTrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (run-control switches excluded)."""
    values = config_to_dict(cfg)
    for name in DENSE_TRAIN_RUN_CONTROL:
        values.pop(name)
    return dict(json.loads(json.dumps(values)))
