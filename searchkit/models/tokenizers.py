"""Tokenizers: loading one for a model name, fingerprinting it, and tokenizing documents without special tokens.

Two tokenizers with the same :func:`tokenizer_fingerprint` turn every text into the same ids, which is what lets
the reranker and the dense encoder read an index's stored token ids instead of tokenizing the documents again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from searchkit.models.loading import check_model_source, load_error, resolve_model
from searchkit.types import ConfigError

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


UNKNOWN_SAMPLE = 500
"""Texts (documents, training pairs) whose tokens are counted to tell whether a model can read them."""


def unknown_share(tokenizer: Any, texts: Sequence[str]) -> float:
    """The share of ``texts``' tokens that are the tokenizer's unknown token (``[UNK]``): 0 for text its vocabulary
    covers, near 1 for a script it does not know (all-MiniLM-L6-v2 on Chinese). 0.0 for a tokenizer without one.

    >>> tok = load_tokenizer("all-MiniLM-L6-v2")
    >>> unknown_share(tok, ["solar panels"]), unknown_share(tok, ["癌症治疗的儿童"]) > 0.5
    (0.0, True)
    """
    unknown = getattr(tokenizer, "unk_token_id", None)
    texts = [text for text in texts if text]
    if unknown is None or not texts:
        return 0.0
    encoded = tokenizer(
        list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    total = sum(len(ids) for ids in encoded["input_ids"])
    return sum(ids.count(unknown) for ids in encoded["input_ids"]) / total if total else 0.0


def unreadable(tokenizer: Any, texts: Sequence[str], limit: float) -> float | None:
    """``unknown_share`` of a sample of ``texts`` when it is above ``limit`` (the model cannot read them), else None."""
    share = unknown_share(tokenizer, list(texts)[:UNKNOWN_SAMPLE])
    return share if share > limit else None


def unreadable_message(what: str, model: str, share: float, count: int, where: str) -> str:
    """One line: the model, the share of unknown tokens it found, and what to use instead."""
    return (
        f"{what} {model!r} cannot read {where}: {share:.0%} of the tokens of {count} sampled texts are unknown to "
        "its vocabulary ([UNK]); use a model that covers the language (any sentence-transformers or Hugging Face "
        "name or folder, e.g. a multilingual or Chinese one such as paraphrase-multilingual-MiniLM-L12-v2 or "
        "BAAI/bge-small-zh-v1.5), or raise max_unknown to use it anyway"
    )


def check_readable(tokenizer: Any, texts: Sequence[str], limit: float, what: str, model: str, where: str) -> None:
    """ConfigError (:func:`unreadable_message`) when more than ``limit`` of a sample of ``texts``' tokens are unknown
    to ``tokenizer``: a build or a training run refuses a model that cannot read its data."""
    sample = [text for text in texts if text][:UNKNOWN_SAMPLE]
    share = unreadable(tokenizer, sample, limit)
    if share is not None:
        raise ConfigError(unreadable_message(what, model, share, len(sample), where))
