"""Growing a WordPiece vocabulary with the characters a model cannot read, so it can be fine-tuned on them.

The embedded all-MiniLM-L6-v2 knows 244 CJK characters: a Chinese sentence is mostly ``[UNK]``. BERT tokenizers split
CJK text into single characters before WordPiece, so adding the missing characters to the vocabulary (one token each)
and one embedding row each is enough for the model to tell them apart; what they mean is then learned from the
training data. New rows start at the mean of the existing embeddings plus seeded noise of half their spread (each
row distinct, none far from the vectors the encoder's layers were trained on).

>>> import tempfile, pathlib
>>> from searchkit.models.tiny import make_tiny_cross_encoder
>>> from searchkit.models.cross_encoder import load_cross_encoder
>>> folder = make_tiny_cross_encoder(pathlib.Path(tempfile.mkdtemp()) / "ce")
>>> loaded = load_cross_encoder(folder)
>>> missing_characters(loaded.tokenizer, ["癌症治疗 儿童", "cats"])
['儿', '治', '疗', '症', '癌', '童']
>>> model, tokenizer = extend_vocabulary(loaded.model, loaded.tokenizer, ["癌", "症"])
>>> size = len(tokenizer)
>>> tokenizer.tokenize("癌症"), tokenizer.convert_tokens_to_ids(["癌", "症"]) == [size - 2, size - 1]
(['癌', '症'], True)
>>> model.get_input_embeddings().num_embeddings == len(tokenizer)
True
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from searchkit.text.analyzers import CJK
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)

_CJK_CHARS = re.compile(rf"[{CJK}]")


def missing_characters(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """The CJK characters of ``texts`` the tokenizer reads as its unknown token, most frequent first (ties in code
    point order)."""
    unknown = tokenizer.unk_token_id
    counts = Counter(char for text in texts for char in _CJK_CHARS.findall(text))
    missing = [char for char in counts if tokenizer.convert_tokens_to_ids(char) == unknown]
    return sorted(missing, key=lambda char: (-counts[char], char))


def extend_vocabulary(model: Any, tokenizer: Any, characters: Sequence[str], *, seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)`` with ``characters`` added to a WordPiece vocabulary as tokens of their own and the
    model's input embeddings grown by one row each (see the module docstring for their initialisation)."""
    import torch
    from transformers import AutoTokenizer

    if not characters:
        return model, tokenizer
    with tempfile.TemporaryDirectory(prefix="searchkit-vocab-") as scratch:
        tokenizer.save_pretrained(scratch)
        definition_path = Path(scratch) / "tokenizer.json"
        definition = json.loads(definition_path.read_text(encoding="utf-8")) if definition_path.is_file() else {}
        model_part = definition.get("model") or {}
        if model_part.get("type") != "WordPiece":
            raise ConfigError(
                f"cannot extend the vocabulary of a {type(tokenizer).__name__} ({model_part.get('type')}): only "
                "WordPiece (BERT-style) tokenizers are supported; use a model whose vocabulary covers the language"
            )
        vocab: dict[str, int] = model_part["vocab"]
        new = [char for char in dict.fromkeys(characters) if char not in vocab]
        first = len(vocab)
        vocab.update({char: first + offset for offset, char in enumerate(new)})
        definition_path.write_text(json.dumps(definition, ensure_ascii=False), encoding="utf-8")
        grown = AutoTokenizer.from_pretrained(scratch, trust_remote_code=False)
    embeddings = model.get_input_embeddings().weight.data
    old_rows = embeddings.shape[0]
    model.resize_token_embeddings(len(grown))
    weight = model.get_input_embeddings().weight.data
    generator = torch.Generator().manual_seed(seed)
    mean, spread = embeddings[:old_rows].mean(dim=0), embeddings[:old_rows].std(dim=0)
    noise = torch.randn((weight.shape[0] - old_rows, weight.shape[1]), generator=generator, dtype=torch.float32)
    weight[old_rows:] = (mean + 0.5 * spread * noise.to(weight.dtype)).to(weight.dtype)
    logger.info("vocabulary: %d characters added (%d -> %d tokens)", len(new), old_rows, len(grown))
    return model, grown
