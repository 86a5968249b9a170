"""The dense encoder: texts -> token ids -> batches sorted by length -> SentenceTransformer modules -> vectors.

Tokenization is a separate step from the model call (the design's speed seam), so token ids can be computed once at
build time. Batches are cut by a token budget from length-sorted texts (:mod:`searchkit.text.batching`).
``dtype="auto"`` runs fp16 on a GPU, bf16 on a CPU with AMX or AVX512-BF16 and fp32 elsewhere
(:func:`searchkit.models.device.resolve_dtype`); in fp32 the output equals ``SentenceTransformer.encode``, in bf16 it
stays within cosine 0.999 of it.

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
from searchkit.models.cards import read_model_card
from searchkit.models.device import auto_batch_tokens, resolve_device, resolve_dtype
from searchkit.models.hub import is_hub_ref
from searchkit.models.loading import (
    adapter_base,
    apply_adapter,
    check_model_source,
    is_adapter,
    load_error,
    model_identity,
    resolve_model,
)
from searchkit.models.tokenizers import tokenizer_fingerprint
from searchkit.text.batching import grouped_batches, pad_rows, token_budget_batches
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


def load_sentence_transformer(name: str, resolved: str, device: str, what: str = "dense model") -> Any:
    """``SentenceTransformer(resolved)`` (safetensors only, no remote code), errors as one ConfigError line.

    A LoRA encoder folder (``adapter = "lora"`` training: ``adapter_config.json`` next to ``modules.json``) is
    loaded over the base model its card names (:func:`searchkit.models.loading.adapter_base`): the base's modules,
    the adapter on its transformer (:func:`searchkit.models.loading.apply_adapter`).
    """
    from sentence_transformers import SentenceTransformer

    source = resolved
    if is_adapter(resolved):
        source = resolve_model(adapter_base(resolved, what, read_model_card(resolved, "dense")))
    try:
        loaded = SentenceTransformer(
            source, device=device, trust_remote_code=False, model_kwargs={"use_safetensors": True}
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise load_error(what, name, err) from None
    if source != resolved:
        loaded[0].model = apply_adapter(loaded[0].model, resolved, f"{what} {name}")
        loaded.to(device)
    return loaded


class Encoder:
    """Texts -> token ids -> token-budget batches -> the SentenceTransformer modules -> (n, dim) float32.

    ``tokenize`` and ``embed_tokens`` are separate steps so token ids can be computed once and stored.
    Output equals ``SentenceTransformer.encode`` in fp32 (same modules: transformer, pooling, normalize).
    The model folder is checked before it is loaded (:func:`searchkit.models.loading.check_model_source`: it exists,
    runs no code of its own, its modules hold safetensors weights); an ``hf://`` model's files also against the
    sha256s its searchkit card records, when it has one.
    ``batch_size`` caps the rows of a batch, ``batch_tokens`` its padded tokens; ``dtype``: auto, fp32, fp16, bf16.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = DenseConfig.device,
        max_length: int = DenseConfig.max_length,
        batch_size: int = DenseConfig.batch_size,
        normalize: bool = DenseConfig.normalize,
        dtype: str = DenseConfig.dtype,
        batch_tokens: int | None = DenseConfig.batch_tokens,
    ) -> None:
        self.name = model
        self.resolved = resolve_model(model)
        self.device = resolve_device(device, "dense")
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        check_model_source(model, "dense model", source=self.resolved, layout="sentence-transformers")
        if is_hub_ref(model):  # a downloaded searchkit model: its files checked against its card before loading
            read_model_card(model, "dense")
        self.model = load_sentence_transformer(model, self.resolved, self.device)
        self.model.max_seq_length = max_length
        torch_dtype = resolve_dtype(dtype, self.device, "dense encoder")
        self.dtype = str(torch_dtype).removeprefix("torch.")
        self.model.to(torch_dtype)
        self.model.eval()
        body = getattr(self.model[0], "auto_model", None)  # the transformer whose width sets the CPU budget
        self.batch_tokens = batch_tokens or auto_batch_tokens(getattr(body, "config", None), torch_dtype, self.device)
        self.tokenizer = self.model.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        self._fingerprint: str | None = None
        self._special: tuple[list[int], list[int]] | None = None
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

    def document_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens and without truncation (every token of a document: what
        :meth:`with_special_tokens` cuts to the model's length, or passages are cut from)."""
        if not texts:
            return []
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """:func:`searchkit.models.tokenizers.tokenizer_fingerprint` of this encoder's tokenizer (computed once)."""

        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._fingerprint

    @property
    def num_special_tokens(self) -> int:
        """Special tokens the tokenizer adds around one text ([CLS] and [SEP] for BERT)."""
        return int(self.tokenizer.num_special_tokens_to_add(pair=False))

    def with_special_tokens(self, ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Stored document ids (no special tokens) as :meth:`tokenize` would give them: cut to ``max_length`` minus
        the special tokens, which are then added (``build_inputs_with_special_tokens`` where the tokenizer has it,
        else the template read from the tokenizer by encoding one probe text)."""
        room = self.max_length - self.num_special_tokens
        build = getattr(self.tokenizer, "build_inputs_with_special_tokens", None)
        if build is not None:
            return [list(build(list(row[:room]))) for row in ids]
        before, after = self._special_template()
        return [[*before, *row[:room], *after] for row in ids]

    def _special_template(self) -> tuple[list[int], list[int]]:
        if self._special is None:
            probe = "document"
            bare = list(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
            full = list(self.tokenizer(probe, add_special_tokens=True)["input_ids"])
            start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), -1)
            if start < 0 or not bare:
                raise ConfigError(f"cannot read the special tokens of tokenizer {type(self.tokenizer).__name__}")
            self._special = (full[:start], full[start + len(bare) :])
        return self._special

    def embed_tokens(self, ids: Sequence[Sequence[int]], progress: Any = None, *, alone: bool = False) -> np.ndarray:
        """Embed token id lists in token-budget batches, longest first; rows come back in input order.

        ``alone``: every row in a batch of its own (queries: a query's embedding then never depends on the other
        queries encoded with it, :mod:`searchkit.text.batching`; it also pads nothing)."""
        import torch

        n = len(ids)
        lengths = [len(row) for row in ids]
        if alone:
            batches = grouped_batches(lengths, range(n), max_tokens=self.batch_tokens, max_rows=1)
        else:
            batches = token_budget_batches(lengths, max_tokens=self.batch_tokens, max_rows=self.batch_size)
        out: np.ndarray | None = None
        with torch.inference_mode():
            for batch in batches:
                input_ids, mask = pad_rows(ids, batch, self.pad_id, left=self.left_pad)
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

    def encode(self, texts: Sequence[str], progress: Any = None, *, alone: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 embeddings (``alone``: each text in a batch of its own, as queries are)."""
        return self.embed_tokens(self.tokenize(texts), progress=progress, alone=alone)


_ENCODERS: dict[tuple[Any, ...], Encoder] = {}


def get_encoder(config: DenseConfig) -> Encoder:
    """The process-wide encoder for a config's embedding settings (loaded once)."""
    key = tuple(getattr(config, name) for name in ("model", "device", "max_length", "normalize", "dtype"))
    # the weights' sha256 too: a model folder retrained in place must not be served from the cache
    weights = model_identity(config.model).get("weights") or {}
    key += (config.batch_size, config.batch_tokens, tuple(sorted(weights.items())))
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(
            config.model,
            device=config.device,
            max_length=config.max_length,
            batch_size=config.batch_size,
            normalize=config.normalize,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
        )
    return _ENCODERS[key]
