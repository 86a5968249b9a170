"""The dense encoder: texts -> token ids -> batches sorted by length -> SentenceTransformer modules -> vectors.

Tokenization is a separate step from the model call (the design's speed seam), so token ids can later be computed
once at build time. fp16 on a GPU, fp32 on the CPU; output equals ``SentenceTransformer.encode``.

>>> encoder = Encoder("all-MiniLM-L6-v2", device="cpu")
>>> encoder.encode(["solar panels", "wind turbines"]).shape
(2, 384)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from searchkit.config import DenseConfig
from searchkit.models import resolve_device, resolve_model

logger = logging.getLogger(__name__)


class Encoder:
    """Texts -> token ids -> length-sorted batches -> the SentenceTransformer modules -> (n, dim) float32.

    ``tokenize`` and ``embed_tokens`` are separate steps so token ids can be computed once and stored.
    Output equals ``SentenceTransformer.encode`` (same modules: transformer, pooling, normalize).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        max_length: int = 256,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.name = model
        self.resolved = resolve_model(model)
        self.device = resolve_device(device, "dense")
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.model = SentenceTransformer(self.resolved, device=self.device)
        self.model.max_seq_length = max_length
        self.dtype = "float16" if self.device.startswith("cuda") else "float32"
        self.model.to(torch.float16 if self.dtype == "float16" else torch.float32)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        logger.info("dense encoder: %s on %s (%s)", model, self.device, self.dtype)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None)
        dim = getter() if getter else self.model.get_sentence_embedding_dimension()
        return int(dim) if dim else int(self.encode([""]).shape[1])

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_length``, unpadded."""
        if not texts:
            return []
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def embed_tokens(self, ids: Sequence[Sequence[int]], progress: Any = None) -> np.ndarray:
        """Embed token id lists in batches sorted longest first; rows come back in input order."""
        import torch

        n = len(ids)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out: np.ndarray | None = None
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                batch = order[start : start + self.batch_size]
                width = int(lengths[batch].max())
                input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                for j, row in enumerate(batch):
                    seq = ids[row]
                    cols = slice(width - len(seq), width) if self.left_pad else slice(0, len(seq))
                    input_ids[j, cols] = seq
                    mask[j, cols] = 1
                features = {
                    "input_ids": torch.from_numpy(input_ids).to(self.device),
                    "attention_mask": torch.from_numpy(mask).to(self.device),
                }
                if self.token_types:
                    features["token_type_ids"] = torch.zeros_like(features["input_ids"])
                emb = self.model(features)["sentence_embedding"].float()
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                if out is None:
                    out = np.empty((n, emb.shape[1]), dtype=np.float32)
                out[batch] = emb.cpu().numpy()
                if progress is not None:
                    progress.update(len(batch))
        return out if out is not None else np.empty((0, self.dim), dtype=np.float32)

    def encode(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        """(len(texts), dim) float32 embeddings."""
        return self.embed_tokens(self.tokenize(texts), progress=progress)


_ENCODERS: dict[tuple[Any, ...], Encoder] = {}


def get_encoder(config: DenseConfig) -> Encoder:
    """The process-wide encoder for a config's embedding settings (loaded once)."""
    key = (config.model, config.device, config.max_length, config.batch_size, config.normalize)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(
            config.model,
            device=config.device,
            max_length=config.max_length,
            batch_size=config.batch_size,
            normalize=config.normalize,
        )
    return _ENCODERS[key]
