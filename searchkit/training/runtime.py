"""What every training loop here shares: seeds, bf16 autocast, the AdamW optimizer with BERT's decay groups, the
linear warmup-and-decay schedule, and the PNG of the training curves."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import TrainConfig

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: str, bf16: bool) -> Any:
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def adamw_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen (an adapter's base model)
            continue
        # biases and LayerNorm weights are not decayed (the usual BERT fine-tuning setting)
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def linear_schedule(optimizer: Any, total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to 0."""
    import torch

    warmup = round(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def plot_curves(out: Path, metric: str) -> None:
    """training_curves.png: logged loss by step, and the dev metric by epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
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
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend()
    figure.tight_layout()
    figure.savefig(out / "training_curves.png", dpi=100)
    plt.close(figure)
