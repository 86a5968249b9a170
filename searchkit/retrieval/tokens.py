"""Tokenize once: document token ids stored in the index at build time (the ``tokens`` component).

Files this component writes in the folder it is given (the index owns the manifest and checksums)::

    ids.npy          int32 (num_tokens,): every document's token ids, row after row, without special tokens
    offsets.npy      int64 (num_docs + 1,): document row i is ids[offsets[i]:offsets[i + 1]] (at most max_length)
    tokenizer.json   the tokenizer's name, where it resolved, fingerprint, vocab_size; max_length and num_tokens

A document's ids are those of ``document_text(doc)`` (title and text, as the reranker reads it) under
:attr:`TokensConfig.model`'s tokenizer, cut to the first ``max_length``. The reranker joins them to each query's ids
(:meth:`searchkit.models.cross_encoder.PairEncoder.join`), and dense re-encoding adds the encoder's special tokens to
them (:meth:`searchkit.models.encoder.Encoder.with_special_tokens`): neither tokenizes a document again. Both use the
stored ids only when their tokenizer has the same :func:`tokenizer_fingerprint` and needs no more than ``max_length``
tokens a document (:meth:`DocumentTokens.mismatch`); otherwise they read the texts, as without this component.

>>> import tempfile, pathlib
>>> from searchkit.config import TokensConfig
>>> from searchkit.index import Index
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "tiny"
>>> index = Index.build("tests/data/tiny", folder, tokens=TokensConfig(max_length=8))
>>> stored = index.component("tokens")
>>> stored.max_length, max(len(ids) for ids in stored.rows(range(index.num_docs)))
(8, 8)
>>> stored.fingerprint == index.manifest["components"]["tokens"]["fingerprint"]
True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import TokensConfig
from searchkit.formats import document_text, gather_ragged, save_npy_atomic, write_json_atomic
from searchkit.models.loading import resolve_model
from searchkit.models.tokenizers import load_tokenizer, tokenize_documents, tokenizer_fingerprint
from searchkit.types import ConfigError, DataError, Document, IndexFormatError

logger = logging.getLogger(__name__)


IDS = "ids.npy"


OFFSETS = "offsets.npy"


INFO = "tokenizer.json"


_CHUNK = 1024
"""Documents tokenized per call of the (batched, fast) tokenizer during a build."""


_SCAN = 1 << 22
"""Token ids checked per step by verify (bounded memory on big indexes)."""


class DocumentTokens:
    """The stored token ids of every document (memory-mapped), by row; see the module docstring."""

    component = "tokens"
    files = (IDS, OFFSETS, INFO)

    def __init__(self, folder: Path, config: TokensConfig, docids: Sequence[str]) -> None:
        self.folder = folder
        self.config = config
        self.docids = list(docids)
        self.ids: np.ndarray = np.load(folder / IDS, mmap_mode="r", allow_pickle=False)
        self.offsets: np.ndarray = np.load(folder / OFFSETS, mmap_mode="r", allow_pickle=False)
        try:
            self.info: dict[str, Any] = json.loads((folder / INFO).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise IndexFormatError(f"{folder / INFO}: unreadable ({err}); rebuild the tokens component") from None
        if not isinstance(self.info, dict):
            raise IndexFormatError(f"{folder / INFO}: not a JSON object; rebuild the tokens component")

    def __repr__(self) -> str:
        return f"DocumentTokens({self.folder}, model={self.config.model!r}, max_length={self.max_length})"

    @property
    def num_docs(self) -> int:
        return len(self.docids)

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def fingerprint(self) -> str:
        """The :func:`tokenizer_fingerprint` of the tokenizer these ids came from."""
        return str(self.info.get("fingerprint"))

    def manifest_entry(self) -> dict[str, Any]:
        """What the index manifest records beside this component's config: the tokenizer's fingerprint."""
        return {"fingerprint": self.fingerprint}

    def rows(self, rows: Iterable[int]) -> list[list[int]]:
        """Token ids (without special tokens) of the documents at ``rows``, in that order."""
        offsets, ids = self.offsets, self.ids
        return [ids[int(offsets[row]) : int(offsets[row + 1])].tolist() for row in rows]

    def complete(self) -> bool:
        """Whether every document is stored whole (none reached ``max_length``, so none was cut): what reading
        every token of a document (passages) needs."""
        return self.num_docs == 0 or int(np.diff(self.offsets).max()) < self.max_length

    def mismatch(self, fingerprint: str | None, needed: int) -> str | None:
        """Why a tokenizer with ``fingerprint`` that reads ``needed`` tokens of a document cannot use these ids
        (one line), or None when it can: the same tokenizer, and no document cut shorter than it would cut it."""
        if fingerprint is None:
            return "its tokenizer has no fingerprint (not a fast tokenizer)"
        if fingerprint != self.fingerprint:
            return f"the index's tokens come from another tokenizer ({self.config.model})"
        if needed > self.max_length:
            return f"it reads up to {needed} tokens a document, the index stores at most {self.max_length}"
        return None

    # -- build / load

    @classmethod
    def build(
        cls,
        docs: Iterable[Document],
        folder: str | Path,
        config: TokensConfig,
        docids: Sequence[str],
        show_progress: bool = False,
    ) -> DocumentTokens:
        """Tokenize ``docs`` (row i is ``docids[i]``) once and write the component's files."""

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(config.model)
        fingerprint = tokenizer_fingerprint(tokenizer)
        if fingerprint is None:
            raise ConfigError(
                f"the tokenizer of {config.model!r} is not a fast (Rust) tokenizer, so stored tokens could not be "
                "matched to a reranker's; use a model with a tokenizer.json, or build without tokens"
            )
        vocab_size = len(tokenizer)
        n = len(docids)
        offsets = np.zeros(n + 1, dtype=np.int64)
        raw = folder / (IDS + ".raw")
        stream = iter(docs)
        row = 0
        with raw.open("wb") as out, tqdm(total=n, unit="doc", desc="tokens", disable=not show_progress) as bar:
            while row < n:
                chunk = list(islice(stream, min(_CHUNK, n - row)))
                if not chunk:
                    raise DataError(f"the corpus ended after {row} documents, but docids lists {n}")
                for i, doc in enumerate(chunk, start=row):
                    if doc.doc_id != docids[i]:
                        raise DataError(f"document {i} has id {doc.doc_id!r}, but docids[{i}] is {docids[i]!r}")
                for ids in tokenize_documents(tokenizer, [document_text(doc) for doc in chunk], config.max_length):
                    out.write(np.asarray(ids, dtype=np.int32).tobytes())
                    offsets[row + 1] = offsets[row] + len(ids)
                    row += 1
                bar.update(len(chunk))
        if next(stream, None) is not None:
            raise DataError(f"the corpus has more documents than the {n} docids")
        save_npy_atomic(folder / IDS, np.fromfile(raw, dtype=np.int32))
        raw.unlink()
        save_npy_atomic(folder / OFFSETS, offsets)
        _write_info(folder, config, tokenizer, fingerprint, vocab_size, int(offsets[-1]))
        logger.info("tokens: stored %d token ids of %d documents (%s)", int(offsets[-1]), n, config.model)
        return cls.load(folder, config, docids)

    @classmethod
    def reindex(
        cls, source: str | Path, folder: str | Path, config: TokensConfig, docids: Sequence[str]
    ) -> DocumentTokens:
        """Write a component with a ``max_length`` no larger than ``source``'s from its stored ids (no corpus, no
        tokenizing): each row is cut to the new length. Only valid for the same tokenizer (:meth:`reusable`)."""
        old = cls.load(source, config_with(source), docids)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lengths = np.minimum(np.diff(old.offsets), config.max_length)
        offsets = np.zeros(len(docids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.empty(int(offsets[-1]), dtype=np.int32)
        for row in range(len(docids)):
            start = int(old.offsets[row])
            ids[offsets[row] : offsets[row + 1]] = old.ids[start : start + int(lengths[row])]
        save_npy_atomic(folder / IDS, ids)
        save_npy_atomic(folder / OFFSETS, offsets)
        info = {**old.info, "max_length": config.max_length, "num_tokens": int(offsets[-1])}
        write_json_atomic(folder / INFO, info)
        logger.info("tokens: cut the stored tokens of %s to %d a document", source, config.max_length)
        return cls.load(folder, config, docids)

    @classmethod
    def rewrite(
        cls,
        source: DocumentTokens,
        folder: str | Path,
        keep: np.ndarray,
        new_docs: Sequence[Document],
        docids: Sequence[str],
    ) -> DocumentTokens:
        """Write at ``folder`` the stored ids of ``source``'s rows ``keep`` followed by those of ``new_docs``
        (tokenized here, as a build would); the tokenizer must still be the one the stored ids came from."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = source.config
        kept, offsets = gather_ragged(source.ids, source.offsets, keep)
        added: list[list[int]] = []
        if new_docs:
            tokenizer = load_tokenizer(config.model)
            fingerprint = tokenizer_fingerprint(tokenizer)
            if fingerprint != source.fingerprint:
                raise ConfigError(
                    f"the tokenizer of {config.model!r} is not the one the index's stored tokens came from; "
                    "replace them first: `searchkit index add DIR --tokens MODEL --overwrite`"
                )
            for start in range(0, len(new_docs), _CHUNK):
                chunk = new_docs[start : start + _CHUNK]
                added.extend(tokenize_documents(tokenizer, [document_text(doc) for doc in chunk], config.max_length))
        lengths = np.array([len(ids) for ids in added], dtype=np.int64)
        ids = np.concatenate([kept, *(np.asarray(row, dtype=np.int32) for row in added)]).astype(np.int32)
        offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(lengths)]).astype(np.int64)
        save_npy_atomic(folder / IDS, ids)
        save_npy_atomic(folder / OFFSETS, offsets)
        write_json_atomic(folder / INFO, {**source.info, "num_tokens": len(ids)})
        return cls.load(folder, config, docids)

    @staticmethod
    def reusable(source: str | Path, config: TokensConfig) -> bool:
        """Whether ``source`` (a tokens folder) holds what ``config`` asks for, or more of it: the same model and
        tokenizer (fingerprint of the tokenizer as it is now) and a ``max_length`` at least ``config``'s."""
        try:
            info = json.loads((Path(source) / INFO).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if info.get("name") != config.model or not isinstance(info.get("max_length"), int):
            return False
        if info["max_length"] < config.max_length:
            return False
        return bool(tokenizer_fingerprint(load_tokenizer(config.model)) == info.get("fingerprint"))

    @classmethod
    def load(cls, folder: str | Path, config: TokensConfig, docids: Sequence[str]) -> DocumentTokens:
        """Open the arrays (memory-mapped) after cheap checks of their headers, shapes and ends."""
        folder = Path(folder)
        missing = [name for name in cls.files if not (folder / name).is_file()]
        if missing:
            raise IndexFormatError(f"{folder}: tokens component lacks {', '.join(missing)}; rebuild it")
        try:
            tokens = cls(folder, config, docids)
        except ValueError as err:
            raise IndexFormatError(f"{folder}: unreadable token arrays ({err}); rebuild the tokens component") from None
        problems = tokens._problems()
        if problems:
            raise IndexFormatError(f"{folder}: " + "; ".join(problems))
        return tokens

    def _problems(self) -> list[str]:
        ids, offsets, info = self.ids, self.offsets, self.info
        if ids.ndim != 1 or ids.dtype != np.int32:
            return [f"{IDS} is {ids.dtype} with shape {ids.shape}, expected int32 (num_tokens,)"]
        if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) != self.num_docs + 1:
            return [f"{OFFSETS} is {offsets.dtype} with shape {offsets.shape}, expected int64 ({self.num_docs + 1},)"]
        problems = []
        if int(offsets[0]) != 0 or int(offsets[-1]) != len(ids):
            problems.append(f"{OFFSETS} spans {int(offsets[0])}..{int(offsets[-1])}, {IDS} has {len(ids)} ids")
        if info.get("num_tokens") != len(ids):
            problems.append(f"{INFO} says {info.get('num_tokens')} tokens, {IDS} has {len(ids)}")
        if info.get("name") != self.config.model:
            problems.append(f"{INFO} names tokenizer {info.get('name')!r}, the config says {self.config.model!r}")
        if info.get("max_length") != self.config.max_length:
            problems.append(f"{INFO} says max_length {info.get('max_length')}, the config {self.config.max_length}")
        fingerprint = info.get("fingerprint")
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:
            problems.append(f"{INFO} has no tokenizer fingerprint")
        vocab = info.get("vocab_size")
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab <= 0:
            problems.append(f"{INFO} has no vocab_size")
        return problems

    def verify(self) -> list[str]:
        """Problems with this component's files (empty when sound): every row within max_length, every id in the
        vocabulary, offsets in order."""
        problems = self._problems()
        if problems:
            return problems
        lengths = np.diff(self.offsets)
        if (lengths < 0).any():
            problems.append(f"{OFFSETS} is not in increasing order")
        elif (lengths > self.max_length).any():
            problems.append(f"{OFFSETS} has documents longer than max_length={self.max_length}")
        vocab = int(self.info["vocab_size"])
        for start in range(0, len(self.ids), _SCAN):
            part = self.ids[start : start + _SCAN]
            if len(part) and (int(part.min()) < 0 or int(part.max()) >= vocab):
                problems.append(f"{IDS} has ids outside the vocabulary (0..{vocab - 1}) after position {start}")
                break
        return problems


def config_with(folder: str | Path) -> TokensConfig:
    """The TokensConfig a tokens folder was written with (from its ``tokenizer.json``)."""
    path = Path(folder) / INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return TokensConfig(model=info["name"], max_length=info["max_length"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IndexFormatError(f"{path}: unreadable ({err}); rebuild the tokens component") from None


def _write_info(
    folder: Path, config: TokensConfig, tokenizer: Any, fingerprint: str, vocab_size: int, num_tokens: int
) -> None:
    info = {
        "name": config.model,
        "resolved": resolve_model(config.model),
        "tokenizer_class": type(tokenizer).__name__,
        "fingerprint": fingerprint,
        "vocab_size": vocab_size,
        "max_length": config.max_length,
        "num_tokens": num_tokens,
    }
    write_json_atomic(folder / INFO, info)
