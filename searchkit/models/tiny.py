"""Tiny random BERT models for examples, tests and benchmarks of the plumbing (their scores mean nothing).

>>> import tempfile, pathlib
>>> folder = make_tiny_cross_encoder(pathlib.Path(tempfile.mkdtemp()) / "tiny-ce")
>>> sorted(path.name for path in folder.iterdir())[:2]
['config.json', 'model.safetensors']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def tiny_bert_parts(folder: str | Path, words: Sequence[str] = ()) -> tuple[Any, Any]:
    """``(tokenizer, config)`` of a 2-layer, 32-wide BERT whose WordPiece vocabulary (written to ``folder``) holds
    the special tokens, ``words`` (lower-cased), letters, digits and their ``##`` continuations: the parts of every
    tiny random model in examples and tests (this cross-encoder, the tests' bi-encoder)."""
    from transformers import BertConfig, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [*"abcdefghijklmnopqrstuvwxyz0123456789", *".,;:!?'-()"]
    base = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab = list(dict.fromkeys([*base, *(word.lower() for word in words)]))
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:  # transformers 5
        tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=128)
    else:  # transformers 4
        tokenizer = BertTokenizer(vocab_file=str(vocab_file), model_max_length=128)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return tokenizer, config


def make_tiny_cross_encoder(folder: str | Path, *, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """Save a randomly initialised 2-layer BERT cross-encoder (one output) with a small WordPiece vocabulary.

    For examples, tests and benchmarks of the plumbing only: its scores mean nothing. The vocabulary holds the
    special tokens, ``words`` (lower-cased), letters, digits and their ``##`` continuations.
    """
    import torch
    from transformers import BertForSequenceClassification

    folder = Path(folder)
    tokenizer, config = tiny_bert_parts(folder, words)
    config.initializer_range = 0.2  # wider than BERT's 0.02, so untrained scores differ visibly between pairs
    config.num_labels = 1
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
