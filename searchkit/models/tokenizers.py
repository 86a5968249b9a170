"""Tokenizers: loading one for a model name, fingerprinting it, and tokenizing documents without special tokens.

Two tokenizers with the same :func:`tokenizer_fingerprint` turn every text into the same ids, which is what lets
the reranker and the dense encoder read an index's stored token ids instead of tokenizing the documents again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from searchkit.models.loading import check_model_source, load_error, resolve_model

_VOLATILE = ("truncation", "padding")
"""Parts of a fast tokenizer's JSON that change with the last call's settings, not with what it produces."""


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """sha256 of a fast tokenizer's definition (``backend_tokenizer.to_str()``, minus its per-call truncation and
    padding state, as canonical JSON); None for a tokenizer without one (a slow, pure-Python tokenizer).

    Two tokenizers with the same fingerprint turn every text into the same ids.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    definition = json.loads(backend.to_str())
    for key in _VOLATILE:
        definition.pop(key, None)
    canonical = json.dumps(definition, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_tokenizer(model: str) -> Any:
    """The Hugging Face tokenizer of ``model`` (resolved by :func:`searchkit.models.loading.resolve_model`, checked
    by :func:`searchkit.models.loading.check_model_source`: it exists and runs no code of its own)."""
    from transformers import AutoTokenizer

    source = check_model_source(model, "tokenizer", source=resolve_model(model), layout="tokenizer")
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise load_error("the tokenizer of", model, err) from None


def tokenize_documents(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Ids of each text without special tokens, cut to the first ``max_length`` (the reranker's own cut)."""
    if not texts:
        return []
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    return [list(ids[:max_length]) for ids in encoded["input_ids"]]
