"""Training a reranker in rounds (``rounds`` in a recipe): mine, train, score dev, refit the fusion, keep or stop.

One round is one :func:`searchkit.training.cross_encoder.train` run in ``OUTPUT/rounds/round-<r>/``. Round 1 is
today's run (hard negatives from the first stage, ``lr``). Every later round continues from the last kept round
(``init_from``) and mines fresh hard negatives from the pipeline that model will be served over: the first stage
reranked by it and mixed by its card's learned fusion (``mine_model``); its learning rate is ``lr * lr_decay **
(r - 1)``. After training, the fusion (and with ``fusion_depths`` the rerank depth) is refitted on dev, and the
round's **shipped dev score** (:func:`shipped_dev_score`: the fitted fusion's, else the interpolation's, else the
reranker's) decides: a round is kept only when it beats the last kept round's; the first round that does not is
dropped and ends the loop. Dev queries and their candidates are the same in every round (same seed and split),
so the scores compare like with like. The kept round's folder is copied to ``OUTPUT`` and its card records every
round (``rounds``: learning rate, dev score, kept or dropped).

>>> shipped_dev_score({"fusion": {"fitted": {"fused": 0.61}}, "final_dev": {"interpolated": 0.6, "reranker": 0.5}})
0.61
>>> shipped_dev_score({"fusion": None, "final_dev": {"interpolated": 0.6, "reranker": 0.5}})
0.6
>>> round_lr(1e-4, 0.5, 3)
2.5e-05
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchkit.config import TrainConfig, config_to_dict
from searchkit.models.cards import MODEL_CARD, read_reranker_card, write_reranker_card
from searchkit.training.cross_encoder import TrainResult, train
from searchkit.training.fusion import fit_fusion
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


ROUNDS_FOLDER = "rounds"
"""Where the rounds of ``OUTPUT`` are trained: ``OUTPUT/rounds/round-<r>/``, dropped ones included."""


def round_lr(lr: float, decay: float, round_number: int) -> float:
    """The learning rate of round ``round_number`` (1-based): ``lr * decay ** (round_number - 1)``."""
    return lr * decay ** (round_number - 1)


def shipped_dev_score(card: Mapping[str, Any]) -> float | None:
    """A trained reranker's dev score as shipped: its learned fusion's fitted score when it has one, else the
    interpolation's, else the reranker's alone; None without dev queries."""
    fusion = card.get("fusion") or {}
    fitted = fusion.get("fitted") or {}
    if "fused" in fitted:
        return float(fitted["fused"])
    final = card.get("final_dev") or {}
    for key in ("interpolated", "reranker"):
        if key in final:
            return float(final[key])
    return None


def train_rounds(config: TrainConfig, show_progress: bool = False) -> TrainResult:
    """Train ``config.rounds`` rounds as the module docstring says; with ``rounds = 1`` this is :func:`train`.

    Returns the kept round's :class:`TrainResult` with ``output`` = ``config.output`` and ``rounds`` filled in.
    """
    if config.rounds == 1:
        result = train(config, show_progress)
        if config.fusion_depths and not result.interrupted and result.dev_queries:
            _refit(config, Path(config.output), show_progress)
            result = dataclasses.replace(result, fusion=read_reranker_card(config.output).get("fusion"))
        return result
    _check(config)
    out = Path(config.output)
    _prepare(out, config)
    records: list[dict[str, Any]] = []
    kept: Path | None = None
    kept_result: TrainResult | None = None
    best: float | None = None
    for number in range(1, config.rounds + 1):
        folder = out / ROUNDS_FOLDER / f"round-{number}"
        lr = round_lr(config.lr, config.lr_decay, number)
        changes: dict[str, Any] = {"output": str(folder), "rounds": 1, "lr": lr}
        if kept is not None:
            changes.update(init_from=str(kept), mine_model=str(kept))
        round_config = dataclasses.replace(config, **changes)
        logger.info(
            "round %d of %d: lr %.3g, negatives mined over %s", number, config.rounds, lr, kept or "the first stage"
        )
        result = _train_round(round_config, folder, show_progress)
        if result.interrupted:
            return result  # a stop asked for mid-round: resume=True continues this round
        if config.fusion_depths:
            _refit(config, folder, show_progress)
        card = read_reranker_card(folder)
        score = shipped_dev_score(card)
        improved = best is None or (score is not None and score > best)
        fusion = card.get("fusion") or {}
        records.append(
            {
                "round": number,
                "lr": lr,
                "mined_with": None if kept is None else kept.name,
                "dev": score,
                "best_epoch": result.best_epoch,
                "depth": fusion.get("depth"),
                "kept": improved,
                "seconds": result.seconds,
            }
        )
        if not improved:
            logger.info(
                "round %d: dev %s %.4f does not beat round %s's %.4f: dropped, and the rounds stop",
                number,
                config.dev_metric,
                score if score is not None else float("nan"),
                kept.name.removeprefix("round-") if kept else "-",
                best if best is not None else float("nan"),
            )
            break
        logger.info("round %d: dev %s %.4f: kept", number, config.dev_metric, score if score is not None else 0.0)
        kept, kept_result, best = folder, result, score
    assert kept is not None and kept_result is not None
    _ship(kept, out, config, records)
    return dataclasses.replace(kept_result, output=out, rounds=records)


def _refit(config: TrainConfig, folder: Path, show_progress: bool) -> None:
    """Refit the fusion of a trained folder on its dev queries at each of ``fusion_depths``, keeping the depth
    chosen on dev (:func:`searchkit.training.fusion.fit_fusion`)."""
    if config.index is None:
        raise ConfigError("fusion_depths refits the fusion over an index: set index")
    fit_fusion(
        folder,
        config.index,
        depth=config.fusion_depths,
        mode=config.dev_mode,
        metric=config.dev_metric,
        device=config.device,
        batch_size=config.eval_batch_size,
        show_progress=show_progress,
    )


def _check(config: TrainConfig) -> None:
    if config.pairs is not None or config.index is None:
        raise ConfigError("rounds > 1 mine fresh negatives each round: give qrels and an index, not a pairs file")
    if config.dev_queries <= 0:
        raise ConfigError("rounds > 1 keep a round only when dev improves: set dev_queries > 0")


def _prepare(out: Path, config: TrainConfig) -> None:
    """Refuse a finished output folder unless ``overwrite``; with it, clear the folder (rounds keep their caches)."""
    if (out / MODEL_CARD).is_file() and not config.overwrite:
        raise ConfigError(f"{out} already holds a trained model; pass overwrite=True (--overwrite) to replace it")
    if config.overwrite and out.is_dir():
        for child in out.iterdir():
            if child.name != ROUNDS_FOLDER:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _train_round(config: TrainConfig, folder: Path, show_progress: bool) -> TrainResult:
    """One round's training; a round an earlier run finished with the same settings is reused when resuming."""
    card = read_reranker_card(folder) if config.resume else {}
    if card and _settings(card.get("training_config") or {}) == _settings(config_to_dict(config)):
        logger.info("round %s already trained (resume): reused", folder.name)
        return _result_of(card, folder)
    return train(config, show_progress)


def _settings(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded training config without the flags that say how a run was started (not what it trains)."""
    return {key: value for key, value in recorded.items() if key not in ("resume", "overwrite")}


def _result_of(card: Mapping[str, Any], folder: Path) -> TrainResult:
    history = list(card.get("dev") or [])
    return TrainResult(
        folder,
        int(card.get("best_epoch", 0)),
        max((entry.get("epoch", 0) for entry in history), default=0),
        history,
        card.get("interpolation"),
        0,
        len((card.get("dev_split") or {}).get("dev", [])),
        int(card.get("train_pairs", 0)),
        float(card.get("seconds", 0.0)),
        float(card.get("train_pairs_per_second", 0.0)),
        fusion=card.get("fusion"),
    )


def _ship(kept: Path, out: Path, config: TrainConfig, records: list[dict[str, Any]]) -> None:
    """Copy the kept round's model folder to ``out`` and record every round in its card."""
    for child in kept.iterdir():
        if child.name in ("cache", "checkpoint", "best"):
            continue
        target = out / child.name
        if child.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(child, target)
        else:
            shutil.copy2(child, target)
    card = read_reranker_card(kept)
    card["rounds"] = {
        "recipe": config_to_dict(dataclasses.replace(config, resume=False, overwrite=False)),
        "kept": int(kept.name.removeprefix("round-")),
        "history": records,
    }
    write_reranker_card(out, card)
    logger.info("round %s shipped to %s (%d rounds run)", kept.name.removeprefix("round-"), out, len(records))
