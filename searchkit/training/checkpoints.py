"""Training checkpoints: the last finished epoch saved atomically, and resume from it.

A checkpoint is a folder ``checkpoint/`` in the training output: ``model.safetensors``, ``optimizer.safetensors``
(the optimizer's tensors; the rest of its state in JSON), ``rng.safetensors`` (torch and CUDA RNG states) and
``state.json`` (the loop's state, the scheduler, the settings that must not change, and the training data's
sha256). No pickle anywhere. It is written to ``checkpoint.tmp`` and swapped in with ``os.replace`` (the previous
one kept as ``checkpoint.old`` during the swap), so a kill at any moment leaves one complete checkpoint.

>>> flat, plain = flatten_optimizer({"state": {0: {"step": 3}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]})
>>> unflatten_optimizer(flat, plain)["param_groups"][0]["betas"]
(0.9, 0.99)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from searchkit.config import TRAIN_RUN_CONTROL, TrainConfig, config_to_dict
from searchkit.faults import checkpoint as fault_point
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


NAMES = ("checkpoint", "checkpoint.old")


def find_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint in the output folder ``out`` (``checkpoint/``, else ``checkpoint.old/``), if any."""
    return next((out / name for name in NAMES if (out / name / "state.json").is_file()), None)


def checkpoint_epoch(checkpoint: Path) -> int:
    """The epoch a checkpoint was saved after."""
    return int(json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["epoch"])


def comparable(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (run-control switches excluded)."""
    values = config_to_dict(cfg)
    for name in TRAIN_RUN_CONTROL:
        values.pop(name, None)
    values["interpolation_grid"] = list(values["interpolation_grid"])
    return json.loads(json.dumps(values))


def save_checkpoint(
    out: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], cfg: TrainConfig, data_sha256: str
) -> None:
    """Write ``out/checkpoint`` atomically: weights, optimizer, RNG, the loop ``state`` and what resume checks."""
    import torch
    from safetensors.torch import save_file, save_model

    tmp, final, old = (out / name for name in ("checkpoint.tmp", "checkpoint", "checkpoint.old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    tensors, optimizer_json = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    payload = {
        **state,
        "optimizer": optimizer_json,
        "scheduler": scheduler.state_dict(),
        "config": comparable(cfg),
        "train_data_sha256": data_sha256,
    }
    (tmp / "state.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        fault_point("train.checkpoint.swap")
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    checkpoint: Path,
    out: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    cfg: TrainConfig,
    data_sha256: str,
    device: str,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from ``checkpoint``; return the loop state.

    Settings or training data that changed since the checkpoint are a ConfigError naming them. The training log
    is cut back to what the checkpoint had seen.
    """
    import torch
    from safetensors.torch import load_file, load_model

    state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    saved, now = state.pop("config"), comparable(cfg)
    changed = sorted(key for key in set(saved) | set(now) if saved.get(key) != now.get(key))
    if changed:
        raise ConfigError(
            f"cannot resume {out}: settings changed since the checkpoint ({', '.join(changed)})"
            "; restore them or pass overwrite=True to start over"
        )
    if state.pop("train_data_sha256") != data_sha256:
        raise ConfigError(f"cannot resume {out}: the training data changed since the checkpoint")
    load_model(model, str(checkpoint / "model.safetensors"), device=device)
    # loaded on the CPU: load_state_dict moves moments to their parameters' device and keeps "step" where
    # a non-capturable AdamW needs it
    tensors = load_file(str(checkpoint / "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten_optimizer(tensors, state.pop("optimizer")))
    scheduler.load_state_dict(state.pop("scheduler"))
    rng = load_file(str(checkpoint / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[key] for key in sorted(k for k in rng if k.startswith("cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    log = out / "train_log.jsonl"
    if log.is_file():  # drop what the killed run logged after its last checkpoint
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        kept = [record for record in records if record["epoch"] <= state["epoch"]]
        log.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    logger.info("resumed %s after epoch %d (step %d)", out, state["epoch"], state["step"])
    return state


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optimizer state as (tensors for safetensors, the rest for JSON): no pickle."""
    tensors: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if hasattr(value, "detach"):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def unflatten_optimizer(tensors: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer` (JSON turned ``betas`` into a list: back to a tuple)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *saved["plain"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [
        {**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
