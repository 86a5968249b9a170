"""Merging a fine-tuned model back with the model it started from: ``theta = alpha * theta_ft + (1 - alpha) *
theta_base``, tensor by tensor (WiSE-FT, Wortsman et al. 2022; LM-Cocktail, Xiao et al. 2023). ``alpha = 1`` is the
fine-tuned model, ``alpha = 0`` the starting one, in between keeps part of what the base knew (out-of-domain
quality) with part of the in-domain gain. The bi-encoder trainer picks alpha on dev
(``DenseTrainConfig.merge_alpha = "auto"``, :mod:`searchkit.training.bi_encoder`).

>>> import torch
>>> merged = merge_state_dicts({"w": torch.tensor([2.0, 4.0])}, {"w": torch.tensor([0.0, 0.0])}, 0.25)
>>> merged["w"].tolist()
[0.5, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from searchkit.types import ConfigError


def merge_state_dicts(fine_tuned: Mapping[str, Any], base: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """``alpha * fine_tuned + (1 - alpha) * base`` for every floating-point tensor (computed in float32 or wider,
    then cast back to the tensor's dtype); integer tensors (position ids) must be equal and are kept.

    Both state dicts must hold the same names and shapes (the same architecture): otherwise a ConfigError naming
    the first difference. ``alpha`` is in [0, 1]; 0 gives the base's tensors exactly, 1 the fine-tuned ones.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"merge alpha must be in [0, 1], got {alpha}")
    if set(fine_tuned) != set(base):
        only = sorted(set(fine_tuned) ^ set(base))
        raise ConfigError(f"cannot merge models of different architectures: {only[0]} is in only one of them")
    merged: dict[str, Any] = {}
    for name, tuned in fine_tuned.items():
        start = base[name]
        if tuned.shape != start.shape:
            raise ConfigError(f"cannot merge {name}: shape {tuple(tuned.shape)} vs {tuple(start.shape)} in the base")
        if not torch.is_floating_point(tuned):
            if not torch.equal(tuned, start):
                raise ConfigError(f"cannot merge {name}: an integer tensor that differs from the base's")
            merged[name] = tuned.clone()
            continue
        wide = torch.promote_types(tuned.dtype, torch.float32)
        mixed = alpha * tuned.to(wide) + (1.0 - alpha) * start.to(device=tuned.device, dtype=wide)
        merged[name] = mixed.to(tuned.dtype)
    return merged


def merge_into(model: Any, base_state: Mapping[str, Any], alpha: float) -> Any:
    """Load ``merge_state_dicts(model's own state, base_state, alpha)`` into ``model`` (a torch module) and return it.

    >>> import torch
    >>> layer = torch.nn.Linear(1, 1, bias=False)
    >>> _ = torch.nn.init.constant_(layer.weight, 3.0)
    >>> merge_into(layer, {"weight": torch.zeros(1, 1)}, 0.5).weight.item()
    1.5
    """
    import torch

    own = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model.load_state_dict(merge_state_dicts(own, base_state, alpha))
    return model
