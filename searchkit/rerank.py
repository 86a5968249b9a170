"""Cross-encoder reranking: score (query, document text) pairs with a one-output sequence classifier.

Any standard Hugging Face sequence-classification folder with ONE output loads: ``searchkit train`` outputs
and ``sentence_transformers.CrossEncoder`` ones. Scores are raw logits (``score_kind = "logit"``); on the same
folder they equal ``CrossEncoder(path).predict(pairs, activation_fn=torch.nn.Identity())`` in fp32 (and plain
``predict`` on searchkit's own outputs, which record an identity activation).

Speed seams (design): tokenization is a step of its own. Queries and texts are tokenized separately, without
special tokens, and joined with the tokenizer's own pair template (``[CLS] q [SEP] d [SEP]`` for BERT), so
documents could later come pre-tokenized from an index. Pairs are then sorted by length, batched with little
padding, run under ``torch.inference_mode`` and put back in input order: a score does not depend on the batch
it landed in (beyond float rounding: 1e-5 in fp32 in the tests).

Truncation policy, explicit and counted: only the document is cut (``only_second``) to fit ``max_length``; a
query longer than half of ``max_length`` is first cut to that half, so a document always keeps room. Every
call logs how many pairs were cut; the totals are in ``truncated_pairs`` / ``scored_pairs``.

A model folder may hold a ``searchkit.json`` (written by ``searchkit train``) whose ``interpolation`` weight
``a`` makes :meth:`CrossEncoderReranker.rerank_batch` return ``a * minmax(reranker) + (1 - a) *
minmax(first stage)`` per query (``a`` is tuned on dev queries at the end of training; ``a = 1`` keeps the raw
logits); its ``max_length`` is the default length.

>>> import tempfile, pathlib
>>> from searchkit.types import Hit
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "tiny-ce"
>>> _ = make_tiny_cross_encoder(folder)          # a randomly initialised 2-layer BERT, for examples and tests
>>> reranker = CrossEncoderReranker(folder, device="cpu")
>>> reranker.score(["cats"], ["cats chase mice"]).shape
(1,)
>>> candidates, texts = [[Hit("d1", 2.0), Hit("d2", 1.0)]], [["cats chase mice", "solar power"]]
>>> hits = reranker.rerank_batch(["cats"], candidates, texts)
>>> sorted(hit.doc_id for hit in hits[0])
['d1', 'd2']
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from searchkit.config import RERANK_DTYPES, RerankConfig
from searchkit.models import resolve_device
from searchkit.types import ConfigError, DataError, Hit, sort_hits

logger = logging.getLogger(__name__)

MODEL_CARD = "searchkit.json"
SCORE_KIND = "logit"
DTYPES = RERANK_DTYPES
DEFAULT_MAX_LENGTH = 512
_AUTO = "auto"


# ------------------------------------------------------------------------------------------- loading


def read_model_card(model: str | Path) -> dict[str, Any]:
    """The ``searchkit.json`` of a local model folder, or {} when there is none (hub names, other models)."""
    path = Path(model) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"invalid model card: {err}", path) from None
    if not isinstance(card, dict):
        raise DataError("invalid model card: expected a JSON object", path)
    return card


def load_cross_encoder(model: str | Path, *, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a one-output sequence classifier; anything else is a ConfigError.

    The output count is checked from the config before any weight is read, so a base encoder (no head, which
    transformers would give two fresh outputs) is refused with a message saying how to get a reranker.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    name = str(model)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load reranker {name!r}: {err}") from None
    if config.num_labels != 1:
        architectures = ", ".join(getattr(config, "architectures", None) or ["unknown"])
        raise ConfigError(
            f"reranker {name!r} has {config.num_labels} outputs (num_labels={config.num_labels}, "
            f"architectures: {architectures}); a cross-encoder reranker needs a sequence classifier with ONE "
            "output. Fine-tune one with `searchkit train` (which adds a one-output head to a base model)."
        )
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        hf_model = AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load reranker {name!r}: {err}") from None
    return hf_model, tokenizer


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype for ``dtype`` on ``device``: ``auto`` is fp16 on CUDA, fp32 (the reference) on CPU."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == _AUTO:
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


# ------------------------------------------------------------------------------------------- tokenization


class EncodedPairs(NamedTuple):
    """Token ids of (query, text) pairs with special tokens, ready for the model; ``truncated``: pairs cut."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: int


class PairEncoder:
    """Tokenizes queries and texts separately and joins them with the tokenizer's pair template.

    The template (special tokens before, between and after the two sequences, and their token types) is read
    from the tokenizer by encoding one probe pair, so BERT, RoBERTa, XLM-R or DeBERTa layouts work unguessed.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self._template = self._read_template()
        self.num_special = sum(len(part[0]) for part in self._template)
        if max_length <= self.num_special + 2:
            raise ConfigError(f"max_length={max_length} leaves no room for text next to the special tokens")
        self.max_query_tokens = max_length // 2

    def _read_template(self) -> tuple[tuple[list[int], list[int]], ...]:
        probe_a, probe_b = "query", "document"
        a = self.tokenize([probe_a])[0]
        b = self.tokenize([probe_b])[0]
        full = self.tokenizer(probe_a, probe_b, return_token_type_ids=True, verbose=False)
        ids = list(full["input_ids"])
        types = list(full.get("token_type_ids") or [0] * len(ids))
        start_a = _find(ids, a, 0)
        start_b = _find(ids, b, start_a + len(a)) if start_a >= 0 else -1
        if start_a < 0 or start_b < 0:
            raise ConfigError(f"cannot read the pair layout of tokenizer {type(self.tokenizer).__name__}")
        end_a, end_b = start_a + len(a), start_b + len(b)
        self._type_a, self._type_b = types[start_a], types[start_b]
        return (
            (ids[:start_a], types[:start_a]),
            (ids[end_a:start_b], types[end_a:start_b]),
            (ids[end_b:], types[end_b:]),
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens or truncation (the fast tokenizer, batched)."""
        if not texts:
            return []
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def join(self, query_ids: Sequence[Sequence[int]], text_ids: Sequence[Sequence[int]]) -> EncodedPairs:
        """Pairs from pre-tokenized queries and texts (``query_ids[i]`` goes with ``text_ids[i]``)."""
        (pre, pre_t), (mid, mid_t), (post, post_t) = self._template
        input_ids: list[list[int]] = []
        type_ids: list[list[int]] = []
        truncated = 0
        for full_query, full_text in zip(query_ids, text_ids, strict=True):
            q = list(full_query[: self.max_query_tokens])
            room = self.max_length - self.num_special - len(q)
            d = list(full_text[:room])
            truncated += len(q) < len(full_query) or len(d) < len(full_text)
            input_ids.append([*pre, *q, *mid, *d, *post])
            if self.uses_token_types:
                type_ids.append([*pre_t, *[self._type_a] * len(q), *mid_t, *[self._type_b] * len(d), *post_t])
        return EncodedPairs(input_ids, type_ids if self.uses_token_types else None, truncated)

    def encode(self, queries: Sequence[str], texts: Sequence[str]) -> EncodedPairs:
        """Tokenize each distinct query once, every text, and join them into pairs."""
        distinct = list(dict.fromkeys(queries))
        by_query = dict(zip(distinct, self.tokenize(distinct), strict=True))
        return self.join([by_query[query] for query in queries], self.tokenize(texts))


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for position in range(start, len(haystack) - len(needle) + 1):
        if haystack[position : position + len(needle)] == needle:
            return position
    return -1


def batch_tensors(pairs: EncodedPairs, rows: Sequence[int], pad_id: int, device: str) -> dict[str, Any]:
    """Model inputs for ``rows`` of ``pairs``, padded to the longest of them (the right side, masked)."""
    import torch

    width = max(len(pairs.input_ids[row]) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64) if pairs.token_type_ids is not None else None
    for i, row in enumerate(rows):
        length = len(pairs.input_ids[row])
        ids[i, :length] = pairs.input_ids[row]
        mask[i, :length] = 1
        if types is not None and pairs.token_type_ids is not None:
            types[i, :length] = pairs.token_type_ids[row]
    arrays = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        arrays["token_type_ids"] = types
    return {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}


# ------------------------------------------------------------------------------------------- reranker


class CrossEncoderReranker:
    """Scores (query, text) pairs with a one-output cross-encoder and reranks first-stage candidates.

    ``model``: a model folder or hub name (a sequence classifier with one output). ``max_length``: tokens per
    pair (None: the model card's training length, else 512). ``dtype``: ``auto`` (fp16 on CUDA, fp32 on CPU),
    ``fp32``, ``fp16`` or ``bf16``. ``interpolation``: ``"auto"`` uses the model card's weight if it has one.
    See the module docstring for an example.
    """

    score_kind = SCORE_KIND

    def __init__(
        self,
        model: str | Path,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str = _AUTO,
        dtype: str = _AUTO,
        interpolation: float | str | None = _AUTO,
    ) -> None:
        settings = RerankConfig(str(model), max_length, batch_size, device, dtype, interpolation)
        self.device = resolve_device(device, "reranker")
        torch_dtype = resolve_dtype(dtype, self.device)
        hf_model, tokenizer = load_cross_encoder(model, dtype=torch_dtype)
        card = read_model_card(model)
        self._setup(hf_model, tokenizer, settings, card, torch_dtype)
        self.name = str(model)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
        interpolation: float | None = None,
    ) -> CrossEncoderReranker:
        """A reranker over a loaded model (training's dev evaluation), left on its device and dtype."""
        if model.config.num_labels != 1:
            raise ConfigError(f"a reranker needs a model with one output, got num_labels={model.config.num_labels}")
        self = cls.__new__(cls)
        self.device = str(next(model.parameters()).device)
        settings = RerankConfig("<in memory>", max_length, batch_size, "cpu", _AUTO, interpolation)
        self._setup(model, tokenizer, settings, {}, next(model.parameters()).dtype)
        self.name = "<in memory>"
        return self

    def _setup(self, model: Any, tokenizer: Any, settings: RerankConfig, card: dict[str, Any], dtype: Any) -> None:
        self.model = model.to(self.device).eval()
        self.card = card
        self.dtype = dtype
        self.batch_size = settings.batch_size
        limit = int(getattr(model.config, "max_position_embeddings", DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH)
        wanted = settings.max_length or int(card.get("max_length") or DEFAULT_MAX_LENGTH)
        self.max_length = min(wanted, limit)
        self.encoder = PairEncoder(tokenizer, self.max_length)
        a = card.get("interpolation") if settings.interpolation == _AUTO else settings.interpolation
        self.interpolation: float | None = None if a is None else float(a)
        self.scored_pairs = 0
        self.truncated_pairs = 0
        self._warned = False

    # ------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Raw logits (float32) of the flat pairs ``(queries[i], texts[i])``, in input order."""
        if len(queries) != len(texts):
            raise DataError(f"score needs as many queries as texts, got {len(queries)} and {len(texts)}")
        if not queries:
            return np.zeros(0, dtype=np.float32)
        pairs = self.encoder.encode(queries, texts)
        self._count_truncation(pairs.truncated, len(queries))
        return self.score_encoded(pairs, show_progress)

    def score_encoded(self, pairs: EncodedPairs, show_progress: bool = False) -> np.ndarray:
        """Logits of pre-tokenized pairs: batches sorted by length (longest first), input order restored."""
        import torch

        count = len(pairs.input_ids)
        order = sorted(range(count), key=lambda row: -len(pairs.input_ids[row]))
        scores = np.zeros(count, dtype=np.float32)
        starts: Any = range(0, count, self.batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="rerank", unit="batch", dynamic_ncols=True)
        outputs = []
        with torch.inference_mode():
            for start in starts:
                batch = batch_tensors(pairs, order[start : start + self.batch_size], self.encoder.pad_id, self.device)
                # logits stay on the device until the end: no sync per batch, so the host prepares the next
                # batch while the GPU runs this one
                outputs.append(self.model(**batch).logits[:, 0].float())
            if outputs:
                scores[order] = torch.cat(outputs).cpu().numpy()
        return scores

    def _count_truncation(self, truncated: int, total: int) -> None:
        self.scored_pairs += total
        self.truncated_pairs += truncated
        if not truncated:
            return
        message = "reranker: %d of %d pairs longer than max_length=%d; their document text was cut (only_second)"
        level = logging.INFO if self._warned else logging.WARNING
        self._warned = True
        logger.log(level, message, truncated, total, self.max_length)

    # ------------------------------------------------------------------ reranking
    def rerank_batch(
        self, queries: Sequence[str], candidates: Sequence[Sequence[Hit]], texts: Sequence[Sequence[str]]
    ) -> list[list[Hit]]:
        """Re-score each query's candidates (``texts[i][j]`` is the text of ``candidates[i][j]``).

        Returns exactly the given candidates, ordered by :func:`searchkit.types.sort_hits`. Scores are logits,
        or with an interpolation weight ``a``: ``a * minmax(logits) + (1 - a) * minmax(first-stage scores)``.
        """
        if not len(queries) == len(candidates) == len(texts):
            raise DataError(
                f"rerank_batch needs a candidate list and a text list per query, got {len(queries)} queries, "
                f"{len(candidates)} candidate lists and {len(texts)} text lists"
            )
        flat_queries: list[str] = []
        flat_texts: list[str] = []
        for query, hits, hit_texts in zip(queries, candidates, texts, strict=True):
            if len(hits) != len(hit_texts):
                raise DataError(f"query {query!r}: {len(hits)} candidates but {len(hit_texts)} texts")
            flat_queries.extend([query] * len(hits))
            flat_texts.extend(hit_texts)
        scores = self.score(flat_queries, flat_texts)
        results: list[list[Hit]] = []
        start = 0
        for hits in candidates:
            own = scores[start : start + len(hits)].astype(np.float64)
            start += len(hits)
            if self.interpolation is not None and self.interpolation < 1.0:
                first = np.array([hit.score for hit in hits], dtype=np.float64)
                own = interpolate(own, first, self.interpolation)
            results.append(sort_hits(Hit(hit.doc_id, float(s)) for hit, s in zip(hits, own, strict=True)))
        return results


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1]; constant scores all map to 1.0 (as the Searcher's fusion does).

    >>> minmax(np.array([3.0, 1.0, 2.0])).tolist()
    [1.0, 0.0, 0.5]
    """
    if scores.size == 0:
        return scores.astype(np.float64)
    low, high = float(scores.min()), float(scores.max())
    if high == low:
        return np.ones_like(scores, dtype=np.float64)
    return (scores - low) / (high - low)


def interpolate(reranker: np.ndarray, first_stage: np.ndarray, a: float) -> np.ndarray:
    """``a * minmax(reranker) + (1 - a) * minmax(first_stage)`` for one query's candidates.

    >>> interpolate(np.array([0.0, 2.0]), np.array([10.0, 5.0]), 0.25).tolist()
    [0.75, 0.25]
    """
    return a * minmax(reranker) + (1.0 - a) * minmax(first_stage)


# ------------------------------------------------------------------------------------------- tiny model


def make_tiny_cross_encoder(folder: str | Path, *, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """Save a randomly initialised 2-layer BERT cross-encoder (one output) with a small WordPiece vocabulary.

    For examples, tests and benchmarks of the plumbing only: its scores mean nothing. The vocabulary holds the
    special tokens, ``words`` (lower-cased), letters, digits and their ``##`` continuations.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

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
        initializer_range=0.2,  # wider than BERT's 0.02, so untrained scores differ visibly between pairs
    )
    config.num_labels = 1
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
