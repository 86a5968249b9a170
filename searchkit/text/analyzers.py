"""Analyzers: text -> the terms BM25 indexes, one object saved with the index and applied to every query.

:class:`Analyzer` lowercases, splits with bm25s's pattern (runs of two or more word characters), drops stopwords and
stems with PyStemmer: the steps of bm25s's Tokenizer, with the same term ids. Its settings (the stopword list
itself included) are saved as JSON in the BM25 component, so a query always goes through the analyzer its index was
built with.

>>> from searchkit.config import BM25Config
>>> Analyzer.from_config(BM25Config()).terms("The winds of change")
['wind', 'chang']
"""

from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from searchkit.config import BM25Config
from searchkit.types import (
    ConfigError,
    IndexFormatError,
)

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""bm25s's default splitter (scikit-learn's CountVectorizer pattern)."""


class Analyzer:
    """Lowercase, split, drop stopwords, stem: bm25s's Tokenizer steps, inspectable term by term."""

    def __init__(self, stemmer: str | None, stopwords: str | None, stopword_list: Sequence[str]) -> None:
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.stopword_list = list(stopword_list)
        self._stop = frozenset(self.stopword_list)
        self._split = re.compile(TOKEN_PATTERN).findall
        self._local = threading.local()  # PyStemmer objects are not thread-safe: one per thread
        if stemmer is not None:
            self._stemmer_object()  # fail early on an unknown language

    @classmethod
    def from_config(cls, config: BM25Config) -> Analyzer:
        from bm25s.tokenization import Tokenizer

        try:  # bm25s resolves a list name ("en", "german", ...) to its words
            resolved = Tokenizer(stopwords=config.stopwords).stopwords
        except ValueError as err:
            raise ConfigError(f"BM25 stopwords {config.stopwords!r}: {err}") from None
        return cls(config.stemmer, config.stopwords, resolved or [])

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Analyzer:
        if saved.get("lowercase") is not True or saved.get("token_pattern") != TOKEN_PATTERN:
            raise IndexFormatError(f"unsupported BM25 analyzer {saved}; rebuild the index")
        return cls(saved["stemmer"], saved["stopwords"], saved["stopword_list"])

    def to_json(self) -> dict[str, Any]:
        return {
            "lowercase": True,
            "token_pattern": TOKEN_PATTERN,
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
            "stopword_list": self.stopword_list,
        }

    def _stemmer_object(self) -> Any:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            try:
                stemmer = Stemmer.Stemmer(self.stemmer)
            except KeyError:
                languages = ", ".join(Stemmer.algorithms())
                raise ConfigError(f"unknown stemmer language {self.stemmer!r}; choose one of {languages}") from None
            self._local.stemmer = stemmer
        return stemmer

    def terms(self, text: str) -> list[str]:
        words = [word for word in self._split(text.lower()) if word not in self._stop]
        if self.stemmer is None or not words:
            return words
        stems: list[str] = self._stemmer_object().stemWords(words)
        return stems

    def add_ids(self, texts: Sequence[str], word_ids: dict[str, int], vocab: dict[str, int], out: array) -> list[int]:
        """Append the texts' term ids to ``out`` (C ints), growing ``vocab``; return where each text's ids end.

        The terms of :meth:`terms`, numbered in order of first appearance as bm25s's Tokenizer numbers them.
        Each distinct word is analyzed once: ``word_ids`` remembers word -> term id (-1: stopword) across calls.
        """
        split = self._split
        words_per_text = [split(text.lower()) for text in texts]
        words = list(chain.from_iterable(words_per_text))
        new_words = [word for word in dict.fromkeys(words) if word not in word_ids]
        if new_words:
            kept = [word for word in new_words if word not in self._stop]
            word_ids.update((word, -1) for word in new_words if word in self._stop)
            terms = self._stemmer_object().stemWords(kept) if self.stemmer is not None and kept else kept
            for word, term in zip(kept, terms, strict=True):
                word_ids[word] = vocab.setdefault(term, len(vocab))
        ids = np.array(list(map(word_ids.__getitem__, words)), dtype=np.intc)
        indexed = ids >= 0
        indexed_before = np.concatenate([[0], np.cumsum(indexed)])
        text_ends = np.cumsum([len(text_words) for text_words in words_per_text], dtype=np.int64)
        ends: list[int] = (indexed_before[text_ends] + len(out)).tolist()
        out.frombytes(ids[indexed].tobytes())
        return ends
