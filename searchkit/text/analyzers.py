"""Analyzers: text -> the terms BM25 indexes, a named, recorded choice saved with the index and applied to every query.

Every analyzer runs the same steps, in one place (:meth:`Analyzer.words`, then :meth:`Analyzer.terms`): normalise,
lowercase, split into words, drop stopwords, stem. What differs is named by :attr:`BM25Config.analyzer`:

``en`` (the default)
    bm25s's Tokenizer steps exactly, with its term ids: runs of ``min_token_length`` or more word characters (2:
    bm25s's ``\\b\\w\\w+\\b``; 1 keeps what users type, "vitamin C", "X-ray", "5"), bm25s stopwords, PyStemmer.
``cjk-bigram``
    Lucene's CJKAnalyzer: text NFKC-normalised (full-width letters and digits become ASCII), Traditional Chinese
    converted to Simplified (OpenCC ``t2s``), every run of Han, kana or Hangul cut into overlapping bigrams (a run of
    one character is that character), every other run of word characters analysed as ``en`` does (stopwords,
    stemmer, ``min_token_length``).
``cjk-unigram-bigram``
    ``cjk-bigram`` plus every single character of a CJK run (Lucene's ``outputUnigrams``): the analyzer the QBQTC
    README's 0.7994 was measured with.
``zh``
    Chinese words: CJK runs segmented by jieba's dictionary in search mode (``rjieba.cut_for_search``: the words and
    the dictionary words inside them), the rest as ``cjk-bigram``. rjieba is jieba's Rust port: the same dictionary
    and segmentation (identical on every QBQTC document with HMM off), 11x faster (eval/results/qbqtc_cpu.md).

The settings (the stopword list itself and the segmenter's version included) are saved as JSON in the BM25
component, so a query always goes through the analyzer its index was built with; an index written before analyzers
had names reads as ``en``, exactly as before.

>>> from searchkit.config import BM25Config
>>> Analyzer.from_config(BM25Config()).terms("The winds of change")
['wind', 'chang']
>>> Analyzer.from_config(BM25Config(min_token_length=1)).terms("vitamin C and X-ray in 5 children")
['vitamin', 'c', 'x', 'ray', '5', 'children']
>>> Analyzer.from_config(BM25Config(analyzer="cjk-bigram")).terms("癌症治疗 儿童 ＡＢＣ１２３")
['癌症', '症治', '治疗', '儿童', 'abc123']
>>> Analyzer.from_config(BM25Config(analyzer="cjk-bigram")).terms("電腦") == Analyzer.from_config(
...     BM25Config(analyzer="cjk-bigram")).terms("电脑")
True
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from importlib import metadata
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from searchkit.config import ANALYZERS, BM25Config
from searchkit.types import ConfigError, IndexFormatError

logger = logging.getLogger(__name__)

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""bm25s's default splitter (scikit-learn's CountVectorizer pattern): what ``en`` splits with."""
SHORT_TOKEN_PATTERN = r"(?u)\b\w+\b"
"""``en`` with ``min_token_length=1``: single letters and digits are words too."""
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u3100-\u312f\u31f0-\u31ff"
"""Hiragana, Katakana, CJK ideographs (extension A, unified, compatibility), Hangul syllables, Bopomofo."""
_RUNS = re.compile(rf"(?P<cjk>[{CJK}]+)|(?P<word>(?:(?![{CJK}])\w)+)")
ZH_EXTRA = "pip install 'searchkit[zh]'"


@functools.cache
def _t2s() -> Callable[[str], str]:
    """OpenCC's Traditional -> Simplified conversion (the ``zh`` extra), loaded once."""
    try:
        import opencc
    except ImportError:
        raise ConfigError(
            f"the CJK analyzers convert Traditional to Simplified Chinese with opencc: {ZH_EXTRA}"
        ) from None
    converter = opencc.OpenCC("t2s")
    convert: Callable[[str], str] = converter.convert
    return convert


@functools.cache
def _segmenter() -> Callable[[str], list[str]]:
    """rjieba's search-mode segmentation (the ``zh`` extra), loaded once."""
    try:
        import rjieba
    except ImportError:
        raise ConfigError(f"the zh analyzer segments Chinese words with rjieba: {ZH_EXTRA}") from None
    cut: Callable[[str], list[str]] = rjieba.cut_for_search
    return cut


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class AnalyzedText(NamedTuple):
    """A text's terms and the :attr:`Analyzer.fingerprint` of the analyzer that made them: a query analyzed ahead of
    time, which only an index built with that same analyzer accepts."""

    terms: tuple[str, ...]
    analyzer: str


class Analyzer:
    """Normalise, lowercase, split, drop stopwords, stem: one analyzer of :data:`searchkit.config.ANALYZERS`,
    inspectable term by term (see the module docstring)."""

    def __init__(
        self,
        stemmer: str | None,
        stopwords: str | None,
        stopword_list: Sequence[str],
        *,
        kind: str = "en",
        min_token_length: int = 2,
    ) -> None:
        if kind not in ANALYZERS:
            raise ConfigError(f"unknown analyzer {kind!r}; choose one of {', '.join(ANALYZERS)}")
        self.kind = kind
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.stopword_list = list(stopword_list)
        self.min_token_length = min_token_length
        self._stop = frozenset(self.stopword_list)
        self._local = threading.local()  # PyStemmer objects are not thread-safe: one per thread
        self.segmenter = _version("rjieba") if kind == "zh" else None
        self.converter = _version("opencc") if kind != "en" else None
        if kind == "en":
            pattern = TOKEN_PATTERN if min_token_length == 2 else SHORT_TOKEN_PATTERN
            findall = re.compile(pattern).findall
            self.words: Callable[[str], list[str]] = lambda text: findall(text.lower())
        else:
            self.words = self._cjk_words
            self._convert = _t2s()
            self._cut = _segmenter() if kind == "zh" else None
        if stemmer is not None:
            self._stemmer_object()  # fail early on an unknown language

    @classmethod
    def from_config(cls, config: BM25Config) -> Analyzer:
        from bm25s.tokenization import Tokenizer

        try:  # bm25s resolves a list name ("en", "german", ...) to its words
            resolved = Tokenizer(stopwords=config.stopwords).stopwords
        except ValueError as err:
            raise ConfigError(f"BM25 stopwords {config.stopwords!r}: {err}") from None
        return cls(
            config.stemmer,
            config.stopwords,
            resolved or [],
            kind=config.analyzer,
            min_token_length=config.min_token_length,
        )

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Analyzer:
        """The analyzer an index was built with (``to_json``); an older index's (no ``kind``) is ``en`` as it was."""
        kind = saved.get("kind", "en")
        length = saved.get("min_token_length", 2)
        pattern = TOKEN_PATTERN if length == 2 else SHORT_TOKEN_PATTERN
        if kind not in ANALYZERS or saved.get("lowercase") is not True or length not in (1, 2):
            raise IndexFormatError(f"unsupported BM25 analyzer {saved}; rebuild the index")
        if kind == "en" and saved.get("token_pattern") != pattern:
            raise IndexFormatError(f"unsupported BM25 analyzer {saved}; rebuild the index")
        analyzer = cls(saved["stemmer"], saved["stopwords"], saved["stopword_list"], kind=kind, min_token_length=length)
        for key, now in (("segmenter", analyzer.segmenter), ("converter", analyzer.converter)):
            if saved.get(key) != now:  # a new dictionary may cut some queries otherwise than the documents were
                logger.warning(
                    "the index's %s analyzer was built with %s %s, this machine has %s: some queries may be cut "
                    "differently from the documents (install that version, or rebuild the index)",
                    kind,
                    {"segmenter": "rjieba", "converter": "opencc"}[key],
                    saved.get(key),
                    now,
                )
        return analyzer

    def to_json(self) -> dict[str, Any]:
        saved: dict[str, Any] = {"kind": self.kind, "lowercase": True}
        if self.kind == "en":
            saved["token_pattern"] = TOKEN_PATTERN if self.min_token_length == 2 else SHORT_TOKEN_PATTERN
        else:
            saved.update(normalize="NFKC", traditional="t2s", converter=self.converter, segmenter=self.segmenter)
        saved.update(
            stemmer=self.stemmer,
            stopwords=self.stopwords,
            stopword_list=self.stopword_list,
            min_token_length=self.min_token_length,
        )
        return saved

    @property
    def fingerprint(self) -> str:
        """sha256 of the settings (:meth:`to_json`): two analyzers with the same fingerprint make the same terms."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode("utf-8")).hexdigest()

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

    def _cjk_words(self, text: str) -> list[str]:
        text = self._convert(unicodedata.normalize("NFKC", text).lower())
        words: list[str] = []
        for match in _RUNS.finditer(text):
            run = match.group("cjk")
            if run is None:
                word = match.group("word")
                if len(word) >= self.min_token_length:
                    words.append(word)
            elif self._cut is not None:
                words.extend(word for word in self._cut(run) if not word.isspace())
            elif len(run) == 1:
                words.append(run)
            else:
                if self.kind == "cjk-unigram-bigram":
                    words.extend(run)
                words.extend(run[i : i + 2] for i in range(len(run) - 1))
        return words

    def _stems(self, words: list[str]) -> list[str]:
        """``words`` stemmed. A Snowball stemmer leaves the words of scripts it does not know as they are (the
        English one changes none of QBQTC's 126,742 distinct CJK words), so CJK words pass through unchanged."""
        if self.stemmer is None or not words:
            return words
        stemmed: list[str] = self._stemmer_object().stemWords(words)
        return stemmed

    def terms(self, text: str) -> list[str]:
        """The terms of ``text``: its words without stopwords, stemmed."""
        return self._stems([word for word in self.words(text) if word not in self._stop])

    def analyze(self, text: str) -> AnalyzedText:
        """:meth:`terms` with this analyzer's fingerprint, for a search that should not analyze ``text`` again.

        >>> from searchkit.config import BM25Config
        >>> Analyzer.from_config(BM25Config()).analyze("solar winds").terms
        ('solar', 'wind')
        """
        return AnalyzedText(tuple(self.terms(text)), self.fingerprint)

    def add_ids(self, texts: Sequence[str], word_ids: dict[str, int], vocab: dict[str, int], out: array) -> list[int]:
        """Append the texts' term ids to ``out`` (C ints), growing ``vocab``; return where each text's ids end.

        The terms of :meth:`terms`, numbered in order of first appearance as bm25s's Tokenizer numbers them.
        Each distinct word is analyzed once: ``word_ids`` remembers word -> term id (-1: stopword) across calls.
        """
        words_per_text = [self.words(text) for text in texts]
        words = list(chain.from_iterable(words_per_text))
        new_words = [word for word in dict.fromkeys(words) if word not in word_ids]
        if new_words:
            kept = [word for word in new_words if word not in self._stop]
            word_ids.update((word, -1) for word in new_words if word in self._stop)
            for word, term in zip(kept, self._stems(kept), strict=True):
                word_ids[word] = vocab.setdefault(term, len(vocab))
        ids = np.array(list(map(word_ids.__getitem__, words)), dtype=np.intc)
        indexed = ids >= 0
        indexed_before = np.concatenate([[0], np.cumsum(indexed)])
        text_ends = np.cumsum([len(text_words) for text_words in words_per_text], dtype=np.int64)
        ends: list[int] = (indexed_before[text_ends] + len(out)).tolist()
        out.frombytes(ids[indexed].tobytes())
        return ends
