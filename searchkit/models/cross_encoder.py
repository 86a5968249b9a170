"""Cross-encoder reranking: score (query, document text) pairs with a one-output sequence classifier.

Any standard Hugging Face sequence-classification folder with ONE output loads: ``searchkit train`` outputs
and ``sentence_transformers.CrossEncoder`` ones. Scores are raw logits (``score_kind = "logit"``); on the same
folder they equal ``CrossEncoder(path).predict(pairs, activation_fn=torch.nn.Identity())`` in fp32 (and plain
``predict`` on searchkit's own outputs, which record an identity activation).

Speed seams (design): tokenization is a step of its own. Queries and texts are tokenized separately, without
special tokens, and joined with the tokenizer's own pair template (``[CLS] q [SEP] d [SEP]`` for BERT), so
documents can come pre-tokenized from an index (its ``tokens`` component, :mod:`searchkit.retrieval.tokens`):
:meth:`CrossEncoderReranker.score_tokens` and ``rerank_batch(..., doc_tokens=...)`` tokenize only the queries.
:attr:`CrossEncoderReranker.tokenizer_fingerprint` tells whether stored ids are this tokenizer's. Pairs are then
sorted by length, batched with little padding, run under ``torch.inference_mode`` and put back in input order: a
score does not depend on the batch it landed in (beyond float rounding: 1e-5 in fp32 in the tests).

Truncation policy, explicit and counted: only the document is cut (``only_second``) to fit ``max_length``; a
query longer than half of ``max_length`` is first cut to that half, so a document always keeps room. Every
call logs how many pairs were cut; the totals are in ``truncated_pairs`` / ``scored_pairs``.

This module is the reranker's one owner: loading (:func:`load_cross_encoder`, also training's base model with
``fresh_head=True``) and scoring; its card is read through :mod:`searchkit.models.cards`. The reranker scores pairs
and knows nothing of indexes or of the first stage: a model folder's ``searchkit.json`` (written by ``searchkit
train``) may hold a ``fusion`` (a :class:`searchkit.config.LearnedFusion` fitted on dev, see
:mod:`searchkit.training.fusion`) or, on older cards, an ``interpolation`` weight ``a``, which the reranker exposes
as :attr:`CrossEncoderReranker.fusion` and the Searcher applies to its logits
(:func:`searchkit.ranking.fusion.mix_scores`); the card's ``max_length`` is the default length.

>>> import tempfile, pathlib
>>> from searchkit.models.tiny import make_tiny_cross_encoder
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

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import MAX_UNKNOWN, LearnedFusion, PassageConfig, RerankConfig, config_from_dict
from searchkit.formats import sha256_file
from searchkit.models.cards import MODEL_CARD, read_reranker_card
from searchkit.models.device import auto_batch_tokens, resolve_device, resolve_dtype
from searchkit.models.loading import (
    adapter_base,
    apply_adapter,
    check_loaded_weights,
    check_model_source,
    fetch_model,
    is_adapter,
    load_error,
    resolve_model,
)
from searchkit.models.tokenizers import tokenizer_fingerprint, unreadable, unreadable_message
from searchkit.ranking.fusion import interpolation_model, mix_scores
from searchkit.text.batching import grouped_batches, pad_rows, token_budget_batches
from searchkit.text.passages import aggregate_scores, split_passages
from searchkit.types import ConfigError, DataError, Hit

logger = logging.getLogger(__name__)


__all__ = ["CrossEncoderReranker", "load_cross_encoder"]


SCORE_KIND = "logit"
QUERY_BATCH_ROWS = 8
"""Pairs of one query in one CPU batch: per-query batches keep a query's scores independent of the others (their
widths differ otherwise), and 8 rows stay in cache (measured: 0.99x-0.84x the CPU time of mixing queries at depth
20-100, eval/results/batch_invariance_cpu.md)."""


DEFAULT_MAX_LENGTH = 512


_AUTO = "auto"


# The RerankConfig fields that decide the loaded model and its logits; the others only mix scores (variants)
MODEL_FIELDS = ("model", "max_length", "batch_size", "device", "dtype", "batch_tokens")


OUT_OF_DOMAIN_EFFECT = (
    "measured: rerankers fine-tuned on SciFact cost 0.021-0.043 nDCG@10 against the untrained pipeline on Cranfield, "
    "CISI, Medline and Vaswani (issue 21)"
)
"""What using a fine-tuned reranker over another collection was measured to cost (the out-of-domain warning)."""


_OUT_OF_DOMAIN_WARNED: set[tuple[str, str, str]] = set()


class LoadedModel(NamedTuple):
    """A loaded cross-encoder: the HF model, its tokenizer, and what it was loaded from (for cards and lineage)."""

    model: Any
    tokenizer: Any
    identity: dict[str, Any]


def load_cross_encoder(
    model: str | Path, *, dtype: Any = None, fresh_head: bool = False, seed: int = 0, what: str | None = None
) -> LoadedModel:
    """Load a one-output sequence classifier (a reranker) and its tokenizer.

    The folder is checked first (:func:`searchkit.models.loading.check_model_source`: it exists, runs no code of its
    own, holds safetensors weights). ``fresh_head=False`` (scoring, ``init_from``): anything but a one-output
    classifier is a ConfigError (checked from the config before any weight is read: a base encoder would get two
    random outputs), and so is a checkpoint that lacks any of its weights (a missing classifier head would be
    random: :func:`searchkit.models.loading.check_loaded_weights`). ``fresh_head=True`` (training's base model): a
    model without a one-output classification head (or whose head is not in its weights) gets a fresh one, seeded
    by ``seed``; the embedded all-MiniLM-L6-v2 names resolve to their folder. ``identity``: name, resolved path,
    ``fresh_head`` (whether a head was added) and the sha256 of local weight files. ``what`` names the model in
    errors (default "base model" with ``fresh_head``, else "reranker"; training passes "init_from").
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    name = str(model)
    what = what or ("base model" if fresh_head else "reranker")
    if is_adapter(name):
        return _load_adapter(name, what, dtype)
    resolved = check_model_source(name, what, source=resolve_model(name) if fresh_head else fetch_model(name))
    try:
        config = AutoConfig.from_pretrained(resolved, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise load_error(what, name, err) from None
    has_head = config.num_labels == 1 and any("SequenceClassification" in a for a in config.architectures or [])
    if not fresh_head and config.num_labels != 1:
        architectures = ", ".join(getattr(config, "architectures", None) or ["unknown"])
        raise ConfigError(
            f"reranker {name!r} has {config.num_labels} outputs (num_labels={config.num_labels}, "
            f"architectures: {architectures}); a cross-encoder reranker needs a sequence classifier with ONE "
            "output. Fine-tune one with `searchkit train` (which adds a one-output head to a base model)."
        )
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if fresh_head:
        kwargs.update(num_labels=1, ignore_mismatched_sizes=True)
        torch.manual_seed(seed)
    try:
        with quiet_transformers():  # its load report of missing keys: refused or logged below, in one line
            hf_model, info = AutoModelForSequenceClassification.from_pretrained(resolved, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise load_error(what, name, err) from None
    missing = set(info.get("missing_keys") or ())
    if not fresh_head:
        check_loaded_weights(name, what, missing)
    fresh = fresh_head and (not has_head or bool(missing))
    if fresh:
        logger.info(
            "base model %s: a fresh one-output head (seed %d) is put on top of it (%d tensors not in its weights)",
            name,
            seed,
            len(missing),
        )
    return LoadedModel(hf_model, tokenizer, model_weights(name, resolved, fresh))


def _load_adapter(name: str, what: str, dtype: Any) -> LoadedModel:
    """A LoRA reranker folder (``searchkit train`` with ``adapter = "lora"``): the base its card names (with a head,
    fresh if it has none, then replaced by the adapter's own), the adapter and its head on top, the folder's
    tokenizer. Any problem with the folder or its base is one ConfigError line."""
    from transformers import AutoTokenizer

    check_model_source(name, what)
    card = read_reranker_card(name)
    base_name = adapter_base(name, what, card)
    base = load_cross_encoder(base_name, dtype=dtype, fresh_head=True, what=f"base model of {what} {name}")
    loaded = apply_adapter(base.model, name, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise load_error(what, name, err) from None
    identity = {**model_weights(name, name), "adapter_of": base.identity}
    return LoadedModel(loaded, tokenizer, identity)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings off for the block (its multi-line load report), its verbosity restored after."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def model_weights(name: str, resolved: str, fresh_head: bool = False) -> dict[str, Any]:
    """Identity of a model for cards: name, resolved path, fresh_head, sha256 of local ``*.safetensors`` files."""

    identity: dict[str, Any] = {"name": name, "resolved": resolved, "fresh_head": fresh_head}
    folder = Path(resolved)
    if folder.is_dir():
        identity["weights_sha256"] = {p.name: sha256_file(p) for p in sorted(folder.glob("*.safetensors"))}
    return identity


def resolve_fusion(
    card: Mapping[str, Any], interpolation: float | str | None, fusion: str | None, where: str = "model card"
) -> LearnedFusion | None:
    """How reranker scores are mixed with the first stage, from the settings and the card.

    ``interpolation=None``: reranker scores only; a number ``a``: the two-stage mix with that weight; ``"auto"``:
    the card's learned ``fusion`` (unless ``fusion`` is None), else the card's ``interpolation``, else nothing.

    >>> resolve_fusion({"interpolation": 0.5}, "auto", "auto").weights
    {'reranker': 0.5, 'first_stage': 0.5}
    >>> resolve_fusion({"interpolation": 0.5, "fusion": {"weights": {"reranker": 1.0}}}, "auto", "auto").weights
    {'reranker': 1.0}
    >>> resolve_fusion({"interpolation": 0.5}, None, "auto") is None
    True
    """
    if interpolation is None:
        return None
    if interpolation != "auto":
        return interpolation_model(float(interpolation))
    saved = card.get("fusion")
    if fusion == "auto" and saved:
        try:
            return config_from_dict(LearnedFusion, saved)
        except (ConfigError, TypeError) as err:
            message = f"invalid fusion in the model card: {err}; refit it with `searchkit fit-fusion`"
            raise DataError(message, where) from None
    a = card.get("interpolation")
    return None if a is None else interpolation_model(float(a))


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
        return self.encode_tokens(queries, self.tokenize(texts))

    def encode_tokens(self, queries: Sequence[str], text_ids: Sequence[Sequence[int]]) -> EncodedPairs:
        """Tokenize each distinct query once and join it to pre-tokenized texts (ids without special tokens)."""
        distinct = list(dict.fromkeys(queries))
        by_query = dict(zip(distinct, self.tokenize(distinct), strict=True))
        return self.join([by_query[query] for query in queries], text_ids)


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for position in range(start, len(haystack) - len(needle) + 1):
        if haystack[position : position + len(needle)] == needle:
            return position
    return -1


def query_groups(queries: Sequence[str]) -> np.ndarray:
    """Each pair's query, numbered in order of first appearance: the groups a reranker's batches never mix.

    >>> query_groups(["b", "a", "b"]).tolist()
    [0, 1, 0]
    """
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(query, len(numbers)) for query in queries], dtype=np.int64)


def batch_tensors(pairs: EncodedPairs, rows: Sequence[int], pad_id: int, device: str) -> dict[str, Any]:
    """Model inputs for ``rows`` of ``pairs``, padded to the longest of them (the right side, masked)."""
    import torch

    ids, mask = pad_rows(pairs.input_ids, rows, pad_id)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if pairs.token_type_ids is not None:
        arrays["token_type_ids"] = pad_rows(pairs.token_type_ids, rows, 0)[0]
    return {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}


class CrossEncoderReranker:
    """Scores (query, text) pairs with a one-output cross-encoder and reranks first-stage candidates.

    ``model``: a model folder or hub name (a sequence classifier with one output). ``max_length``: tokens per
    pair (None: the model card's training length, else 512). ``dtype``: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
    ``interpolation`` / ``fusion``: how scores are mixed with the first stage (see :func:`resolve_fusion`; the
    default uses the card's learned fusion, else its interpolation weight). The settings are a
    :class:`searchkit.config.RerankConfig` (:meth:`from_config`); :attr:`depth` is the rerank depth a
    Searcher uses (``config.depth``, else the depth the card's learned fusion was fitted at). See the module
    docstring for an example.
    """

    score_kind = SCORE_KIND

    def __init__(
        self,
        model: str | Path,
        max_length: int | None = None,
        batch_size: int = RerankConfig.batch_size,
        device: str = _AUTO,
        dtype: str = _AUTO,
        interpolation: float | str | None = _AUTO,
        fusion: str | None = _AUTO,
        depth: int | None = RerankConfig.depth,
        batch_tokens: int | None = RerankConfig.batch_tokens,
        passages: PassageConfig | None = RerankConfig.passages,
    ) -> None:
        settings = RerankConfig(
            str(model), max_length, batch_size, device, dtype, interpolation, depth, fusion, batch_tokens, passages
        )
        self.device = resolve_device(device, "reranker")
        torch_dtype = resolve_dtype(dtype, self.device, "reranker")
        card = read_reranker_card(model)  # first: it checks the model files it records before they are loaded
        loaded = load_cross_encoder(model, dtype=torch_dtype)
        self._setup(loaded.model, loaded.tokenizer, settings, card, torch_dtype)
        self.name = str(model)

    @classmethod
    def from_config(cls, config: RerankConfig) -> CrossEncoderReranker:
        """The reranker ``config`` describes (what ``Searcher(index, rerank=config)`` builds)."""
        return cls(
            config.model,
            config.max_length,
            config.batch_size,
            config.device,
            config.dtype,
            config.interpolation,
            config.fusion,
            config.depth,
            config.batch_tokens,
            config.passages,
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = RerankConfig.batch_size,
        interpolation: float | None = None,
    ) -> CrossEncoderReranker:
        """A reranker over a loaded model (training's dev evaluation), left on its device and dtype."""
        if model.config.num_labels != 1:
            raise ConfigError(f"a reranker needs a model with one output, got num_labels={model.config.num_labels}")
        self = cls.__new__(cls)
        self.device = str(next(model.parameters()).device)
        settings = RerankConfig("<in memory>", max_length, batch_size, "cpu", _AUTO, interpolation, fusion=None)
        self._setup(model, tokenizer, settings, {}, next(model.parameters()).dtype)
        self.name = "<in memory>"
        return self

    def _setup(self, model: Any, tokenizer: Any, settings: RerankConfig, card: dict[str, Any], dtype: Any) -> None:
        self.model = model.to(self.device).eval()
        self.card = card
        self.dtype = dtype
        self.batch_size = settings.batch_size
        self.batch_tokens = settings.batch_tokens or auto_batch_tokens(model.config, dtype, self.device)
        limit = int(getattr(model.config, "max_position_embeddings", DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH)
        wanted = settings.max_length or int(card.get("max_length") or DEFAULT_MAX_LENGTH)
        self.max_length = min(wanted, limit)
        self.config = settings
        self.encoder = PairEncoder(tokenizer, self.max_length)
        if settings.passages is not None and settings.passages.tokens > self.max_document_tokens:
            raise ConfigError(
                f"PassageConfig.tokens={settings.passages.tokens} is more than a pair holds of a document "
                f"({self.max_document_tokens} tokens at max_length={self.max_length}, before the query's); use fewer"
            )
        where = str(Path(settings.model) / MODEL_CARD)
        self.fusion: LearnedFusion | None = resolve_fusion(card, settings.interpolation, settings.fusion, where)
        self._warn_depth()
        self.scored_pairs = 0
        self.truncated_pairs = 0
        self._warned = False
        self._memo: dict[tuple[str, Any], float] | None = None
        self._queries_checked = False
        self._fingerprint: str | None = None

    def _warn_depth(self) -> None:
        if self.fusion is not None and self.fusion.depth is not None and self.fusion.depth != self.depth:
            logger.warning(
                "reranker %s: its fusion was fitted at rerank depth %d but is used at depth %d (min-max ranges "
                "differ); refit it at this depth with `searchkit fit-fusion --depth %d`",
                self.config.model,
                self.fusion.depth,
                self.depth,
                self.depth,
            )

    def check_collection(self, source: Mapping[str, Any] | None) -> bool:
        """Whether this reranker was trained on the collection ``source`` names (an index manifest's ``source``:
        corpus path and sha256); True when either side does not say. A reranker whose card records another
        collection logs one warning (once per model and collection in a process) naming the measured
        out-of-domain cost, and the fix: fine-tune on this collection's judgments (``searchkit train``).

        >>> import tempfile, pathlib
        >>> from searchkit.models.tiny import make_tiny_cross_encoder
        >>> reranker = CrossEncoderReranker(make_tiny_cross_encoder(pathlib.Path(tempfile.mkdtemp()) / "ce"))
        >>> reranker.check_collection({"path": "corpus", "sha256": "ab"})  # no card: nothing recorded
        True
        """
        trained = self.card.get("collection")
        theirs = (source or {}).get("sha256")
        if not isinstance(trained, Mapping) or not trained.get("sha256") or not theirs:
            return True
        if trained["sha256"] == theirs:
            return True
        key = (self.name, str(trained["sha256"]), str(theirs))
        if key not in _OUT_OF_DOMAIN_WARNED:
            _OUT_OF_DOMAIN_WARNED.add(key)
            logger.warning(
                "reranker %s was trained on another collection (%s, sha256 %s...) than this index's (%s, sha256 "
                "%s...): out of domain, it may rank worse than the first stage alone (%s); fine-tune it on this "
                "collection's judgments with `searchkit train` (init_from it)",
                self.name,
                trained.get("path"),
                str(trained["sha256"])[:12],
                (source or {}).get("path"),
                str(theirs)[:12],
                OUT_OF_DOMAIN_EFFECT,
            )
        return False

    def variant(self, config: RerankConfig) -> CrossEncoderReranker:
        """This loaded model with ``config``'s mixing settings (interpolation, fusion, depth): nothing is reloaded,
        and with :meth:`remember_scores` on, pairs either of them scored are not scored again."""
        if any(getattr(config, name) != getattr(self.config, name) for name in MODEL_FIELDS):
            raise ConfigError(f"a variant may only change interpolation, fusion and depth: {config} vs {self.config}")
        other = copy.copy(self)
        other.config = config
        where = str(Path(config.model) / MODEL_CARD)
        other.fusion = resolve_fusion(self.card, config.interpolation, config.fusion, where)
        other._warn_depth()
        return other

    def remember_scores(self) -> None:
        """Keep every (query, text) logit this reranker (and its variants made afterwards) computes, so a pair is
        scored once however many conditions rerank it (evaluation suites; unbounded memory: not for serving)."""
        if self._memo is None:
            self._memo = {}

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """:func:`searchkit.models.tokenizers.tokenizer_fingerprint` of this reranker's tokenizer (sha256 of the fast
        tokenizer's definition; None for a slow one): stored document tokens with the same fingerprint are scored
        as they are, without tokenizing the documents."""

        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.encoder.tokenizer)
        return self._fingerprint

    @property
    def max_document_tokens(self) -> int:
        """The most document tokens a pair can hold (``max_length`` minus the special tokens): stored document
        tokens cut shorter than this could score differently from the texts."""
        return self.max_length - self.encoder.num_special

    @property
    def depth(self) -> int:
        """How many first-stage candidates a Searcher hands this reranker: ``config.depth``, else the depth its
        learned fusion was fitted at (a fusion's min-max ranges are those of that many candidates), else 100."""
        return self.config.resolved_depth(None if self.fusion is None else self.fusion.depth)

    @property
    def interpolation(self) -> float | None:
        """The two-stage weight ``a`` when the mix is reranker + first stage only (older cards), else None."""
        if self.fusion is None or set(self.fusion.weights) - {"reranker", "first_stage"}:
            return None
        return float(self.fusion.weights.get("reranker", 0.0))

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        queries: Sequence[str],
        texts: Sequence[str],
        show_progress: bool = False,
        *,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw logits (float32) of the flat pairs ``(queries[i], texts[i])``, in input order.

        Pairs are batched with pairs of their own group only (``groups[i]``; default: pairs of the same query text),
        so a pair's logit does not depend on what else is scored with it."""
        if len(queries) != len(texts):
            raise DataError(f"score needs as many queries as texts, got {len(queries)} and {len(texts)}")
        if not queries:
            return np.zeros(0, dtype=np.float32)
        if self._memo is not None:
            keys = list(zip(queries, texts, strict=True))
            return self._score_remembered(keys, lambda new: self.encoder.encode(*zip(*new, strict=True)), show_progress)
        pairs = self.encoder.encode(queries, texts)
        self._count_truncation(pairs.truncated, len(queries))
        return self.score_encoded(pairs, show_progress, groups=query_groups(queries) if groups is None else groups)

    def score_tokens(
        self,
        queries: Sequence[str],
        doc_tokens: Sequence[Sequence[int]],
        show_progress: bool = False,
        *,
        groups: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`score` of ``(queries[i], document i)`` given the documents' token ids (this tokenizer's, without
        special tokens, e.g. an index's stored tokens): only the queries are tokenized.

        The same logits as :meth:`score` on the texts, as long as no document was cut below
        :attr:`max_document_tokens`.
        """
        if len(queries) != len(doc_tokens):
            raise DataError(
                f"score_tokens needs as many queries as documents, got {len(queries)} and {len(doc_tokens)}"
            )
        if not queries:
            return np.zeros(0, dtype=np.float32)
        if self._memo is not None:
            keys = [(query, tuple(ids)) for query, ids in zip(queries, doc_tokens, strict=True)]
            return self._score_remembered(
                keys, lambda new: self.encoder.encode_tokens(*zip(*new, strict=True)), show_progress
            )
        pairs = self.encoder.encode_tokens(queries, doc_tokens)
        self._count_truncation(pairs.truncated, len(queries))
        return self.score_encoded(pairs, show_progress, groups=query_groups(queries) if groups is None else groups)

    def _score_remembered(
        self,
        keys: Sequence[tuple[str, Any]],
        encode: Callable[[list[tuple[str, Any]]], EncodedPairs],
        show_progress: bool,
    ) -> np.ndarray:
        assert self._memo is not None
        memo = self._memo
        new = list(dict.fromkeys(key for key in keys if key not in memo))
        if new:
            pairs = encode(new)
            self._count_truncation(pairs.truncated, len(new))
            scores = self.score_encoded(pairs, show_progress, groups=query_groups([query for query, _ in new]))
            memo.update(zip(new, scores.tolist(), strict=True))
        return np.array([memo[key] for key in keys], dtype=np.float32)

    def score_encoded(
        self, pairs: EncodedPairs, show_progress: bool = False, *, groups: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        """Logits of pre-tokenized pairs: token-budget batches, longest first, input order restored.

        ``groups`` (each pair's query, as :func:`query_groups` numbers them): batches never mix queries, and on the
        CPU hold at most :data:`QUERY_BATCH_ROWS` pairs, so a pair's logit depends only on its own query's pairs
        (:mod:`searchkit.text.batching`); without it, any pairs share batches (wider, for one-off scoring).
        """
        import torch

        count = len(pairs.input_ids)
        scores = np.zeros(count, dtype=np.float32)
        lengths = [len(ids) for ids in pairs.input_ids]
        batches: Any
        if groups is None:
            batches = token_budget_batches(lengths, max_tokens=self.batch_tokens, max_rows=self.batch_size)
        else:
            rows = self.batch_size if self.device.startswith("cuda") else min(self.batch_size, QUERY_BATCH_ROWS)
            batches = grouped_batches(lengths, groups, max_tokens=self.batch_tokens, max_rows=rows)
        order = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        if show_progress:
            batches = tqdm(batches, desc="rerank", unit="batch", dynamic_ncols=True)
        outputs = []
        with torch.inference_mode():
            for rows in batches:
                batch = batch_tensors(pairs, rows, self.encoder.pad_id, self.device)
                # logits stay on the device until the end: no sync per batch, so the host prepares the next
                # batch while the GPU runs this one
                outputs.append(self.model(**batch).logits[:, 0].float())
            if outputs:
                scores[order] = torch.cat(outputs).cpu().numpy()
        return scores

    def _score_passages(
        self, queries: Sequence[str], ids: Sequence[Sequence[int]], groups: np.ndarray, passages: PassageConfig
    ) -> np.ndarray:
        """A (query, document) logit from its passages' pairs: the best (``max``, MaxP) or the first (``first``,
        FirstP: only the first passage is scored). Each query's pairs still share batches with their own only."""
        if passages.aggregate == "first":
            windows, counts = [list(row[: passages.tokens]) for row in ids], np.ones(len(ids), dtype=np.int64)
        else:
            windows, counts = split_passages(ids, passages.tokens, passages.stride)
        pair_queries = [query for query, count in zip(queries, counts.tolist(), strict=True) for _ in range(count)]
        logits = self.score_tokens(pair_queries, windows, groups=np.repeat(groups, counts))
        return aggregate_scores(logits, counts, passages.aggregate) if len(ids) else logits

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
        self,
        queries: Sequence[str],
        candidates: Sequence[Sequence[Hit]],
        texts: Sequence[Sequence[str]] | None,
        doc_tokens: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> list[list[Hit]]:
        """Re-score each query's candidates by their logits (``texts[i][j]`` is the text of ``candidates[i][j]``).

        With ``passages`` (:class:`searchkit.config.PassageConfig`) a candidate's logit is its best passage's
        (``max``) or its first passage's (``first``): every passage is paired with the query and scored.

        ``doc_tokens`` (instead of ``texts``, which may then be None): ``doc_tokens[i][j]`` are the token ids of
        ``candidates[i][j]`` under this reranker's tokenizer, without special tokens (an index's stored tokens
        whose fingerprint is :attr:`tokenizer_fingerprint`); the documents are not tokenized, the scores are those
        of their texts.

        Returns exactly the given candidates with their logits, ordered by :func:`searchkit.types.sort_hits`.
        Mixing them with the first stage (:attr:`fusion`, from the card) is the Searcher's job
        (:func:`searchkit.ranking.fusion.mix_scores`).
        """
        documents: Sequence[Sequence[Any]] | None = doc_tokens if doc_tokens is not None else texts
        what = "token list" if doc_tokens is not None else "text list"
        if documents is None:
            raise DataError("rerank_batch needs the candidates' texts or their doc_tokens")
        if not len(queries) == len(candidates) == len(documents):
            raise DataError(
                f"rerank_batch needs a candidate list and a {what} per query, got {len(queries)} queries, "
                f"{len(candidates)} candidate lists and {len(documents)} {what}s"
            )
        if not self._queries_checked and queries:  # logged once: a reranker that cannot read the queries guesses
            share = unreadable(self.encoder.tokenizer, list(queries), MAX_UNKNOWN)
            if share is not None:
                self._queries_checked = True
                message = unreadable_message("the reranker", self.config.model, share, len(queries), "the queries")
                logger.warning("reranker: %s", message)
        flat_queries: list[str] = []
        flat_documents: list[Any] = []
        for query, hits, hit_documents in zip(queries, candidates, documents, strict=True):
            if len(hits) != len(hit_documents):
                kind = "token lists" if doc_tokens is not None else "texts"
                raise DataError(f"query {query!r}: {len(hits)} candidates but {len(hit_documents)} {kind}")
            flat_queries.extend([query] * len(hits))
            flat_documents.extend(hit_documents)
        # each query's pairs batched on their own, even when two queries are the same text
        groups = np.repeat(np.arange(len(candidates)), [len(hits) for hits in candidates])
        if self.config.passages is not None:
            ids = flat_documents if doc_tokens is not None else self.encoder.tokenize(flat_documents)
            scores = self._score_passages(flat_queries, ids, groups, self.config.passages)
        elif doc_tokens is not None:
            scores = self.score_tokens(flat_queries, flat_documents, groups=groups)
        else:
            scores = self.score(flat_queries, flat_documents, groups=groups)
        return mix_scores(candidates, scores, None)
