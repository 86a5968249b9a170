"""The weighted cross-entropy loss of reranker fine-tuning, a small pure function with its own tests.

``L = sum_i w_i * l(y_i, s_i) / sum_i w_i``, with ``l`` binary cross-entropy on the logit (pointwise) or softmax
cross-entropy over a query's group of one positive and n negatives (listwise); the weights come from class weights,
relevance grades or an explicit column of the training file (:mod:`searchkit.training.data`).
"""

from __future__ import annotations

from typing import Any

from searchkit.config import LOSSES
from searchkit.types import ConfigError, DataError


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
