"""What the server serves: one opened index generation, the Searchers over it, and the swap to a new generation.

No HTTP here (the routes are in :mod:`searchkit.serve.app`), and no search logic: every answer comes from a
:class:`searchkit.search.Searcher`. A request takes the current :class:`Generation` when it arrives and is answered
from it to the end, documents included; :meth:`SearchEngine.reload` opens the folder again, builds and warms the new
generation completely, then swaps one reference. Requests in flight finish on the old generation, whose arrays stay
readable after a rebuild deletes its files (an opened :class:`searchkit.index.Index` holds them memory-mapped or
open: see ``Index.open``), and it is freed when the last of them is done.

>>> import tempfile, pathlib
>>> from searchkit.index import Index
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> _ = Index.build("tests/data/tiny", folder)
>>> engine = SearchEngine(EngineSpec(str(folder)))
>>> generation = engine.current
>>> searcher = engine.searcher(generation, "bm25", None, None)
>>> engine.search(generation, searcher, 2, [SearchItem("cats chasing mice", ("title",))])[0][0]["doc_id"]
'd1'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from searchkit.config import SEARCH_MODES, FusionConfig, RerankConfig, config_from_dict, config_to_dict
from searchkit.formats import json_checksum
from searchkit.index import Index
from searchkit.index.layout import MANIFEST
from searchkit.models.cross_encoder import CrossEncoderReranker
from searchkit.search import Searcher, StageObserver
from searchkit.types import ConfigError, Hit, IndexFormatError
from searchkit.version import __version__

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

OPEN_ATTEMPTS = 20
WARM_UP_QUERY = "warm up"


@dataclass(frozen=True)
class EngineSpec:
    """What to serve: the index folder and the searcher settings (``searchkit serve``'s options).

    Plain data that round-trips through JSON, so several worker processes build the same engine.

    >>> spec = EngineSpec("indexes/x", mode="bm25", rerank=RerankConfig("model", depth=20))
    >>> EngineSpec.from_json(spec.to_json()) == spec
    True
    """

    index: str
    mode: str = "auto"
    fusion: FusionConfig = FusionConfig()  # noqa: RUF009 - frozen dataclass, safe as a default
    rerank: RerankConfig | None = None
    device: str | None = None

    def to_json(self) -> str:
        payload = {
            "index": self.index,
            "mode": self.mode,
            "fusion": config_to_dict(self.fusion),
            "rerank": None if self.rerank is None else config_to_dict(self.rerank),
            "device": self.device,
        }
        return json.dumps(payload)

    @classmethod
    def from_json(cls, text: str) -> EngineSpec:
        raw = json.loads(text)
        rerank = raw.get("rerank")
        return cls(
            index=raw["index"],
            mode=raw.get("mode", "auto"),
            fusion=config_from_dict(FusionConfig, raw.get("fusion") or {}),
            rerank=None if rerank is None else config_from_dict(RerankConfig, rerank),
            device=raw.get("device"),
        )


class SearchItem(NamedTuple):
    """One query of a batched search and the document fields its caller wants with each hit."""

    query: str
    fields: tuple[str, ...] = ()


class Generation:
    """One opened index generation: the Index, the sha256 of its manifest (its fingerprint), and the Searchers
    built on it (one per mode and reranker, made on first use; a Searcher is safe to share between threads)."""

    def __init__(self, number: int, index: Index, fingerprint: str, fusion: FusionConfig) -> None:
        self.number = number
        self.index = index
        self.fingerprint = fingerprint
        self.fusion = fusion
        self.opened = datetime.now(UTC).isoformat(timespec="seconds")
        self._searchers: dict[tuple[str, int | None], Searcher] = {}
        self._lock = threading.Lock()
        # the modes the Searcher accepts for these components (it raises ConfigError for the others)
        self.modes = [mode for mode in SEARCH_MODES if self._accepts(mode)]

    def _accepts(self, mode: str) -> bool:
        try:
            Searcher(self.index, mode=mode, fusion=self.fusion)
        except ConfigError:
            return False
        return True

    def searcher(self, mode: str, reranker: Any, make: Callable[..., Searcher], observe: StageObserver) -> Searcher:
        """The Searcher for ``mode`` and ``reranker`` (None or a reranker object), made by ``make`` on first use."""
        key = (mode, None if reranker is None else id(reranker))
        found = self._searchers.get(key)
        if found is None:
            with self._lock:
                found = self._searchers.get(key)
                if found is None:
                    found = make(self.index, mode=mode, fusion=self.fusion, rerank=reranker, observe=observe)
                    self._searchers[key] = found
        return found

    def forget_searchers(self) -> None:
        """Drop the Searchers made so far (after the reranker changed: requests in flight keep theirs)."""
        with self._lock:
            self._searchers.clear()


class SearchEngine:
    """The index generation being served, its searchers, and the reranker (loaded once, shared by generations).

    ``observe`` receives each stage's duration (first_stage, rerank, documents) for the metrics; it may be set
    later (every Searcher reports to it through its public ``observe`` hook). ``searcher_class``: the Searcher class
    built (tests count calls with a subclass).
    """

    def __init__(
        self,
        spec: EngineSpec,
        observe: StageObserver | None = None,
        searcher_class: type[Searcher] = Searcher,
    ) -> None:
        _check_mode(spec.mode)
        self.spec = spec
        self.observe = observe
        self.searcher_class = searcher_class
        self.reranker: Any = None
        if spec.rerank is not None:
            self.reranker = CrossEncoderReranker.from_config(spec.rerank)
        self._variants: dict[int, Any] = {}
        self._reload_lock = threading.Lock()
        self.reloads = 0
        self.model_version = model_fingerprint(self.reranker)
        self.current = self._open(1)

    # ------------------------------------------------------------------ generations
    def _open(self, number: int) -> Generation:
        """Open the folder as one consistent generation, build its default searcher and answer one query with it
        (loading the encoder and reranker, building the doc-id tables) before anyone is served from it."""
        folder = Path(self.spec.index)
        for _ in range(OPEN_ATTEMPTS):
            index = Index.open(folder, device=self.spec.device)
            # Index.fingerprint() reads the folder as it is now; this one is the opened generation's own
            raw = (folder / MANIFEST).read_bytes()
            if json.loads(raw) == index.manifest:
                break
            logger.info("%s changed while it was being opened; opening it again", folder)
        else:
            raise IndexFormatError(f"{folder} kept changing while being opened; try the reload again later")
        generation = Generation(number, index, hashlib.sha256(raw).hexdigest(), self.spec.fusion)
        self.searcher(generation, None, None, None).search(WARM_UP_QUERY, 1)
        logger.info("serving %s generation %d (fingerprint %s)", folder, number, generation.fingerprint[:12])
        return generation

    def reload(self) -> Generation:
        """Open the index folder again and swap it in (one reload at a time; a failed one changes nothing)."""
        with self._reload_lock:
            generation = self._open(self.current.number + 1)
            self.current = generation  # one reference: requests that hold the old generation keep it
            self.reloads += 1
            return generation

    def load_reranker(self, model: str) -> str:
        """Load the reranker folder ``model`` (the served reranker's settings, another model), answer one query with
        it, then serve it instead of the current one; its fingerprint. The previous one serves until the swap."""
        with self._reload_lock:
            settings = dataclasses.replace(self.spec.rerank or RerankConfig(model), model=model)
            reranker = CrossEncoderReranker.from_config(settings)
            generation = self.current
            probe = self.searcher_class(
                generation.index, mode=self.spec.mode, fusion=generation.fusion, rerank=reranker
            )
            probe.search(WARM_UP_QUERY, 1)
            self.reranker, self._variants = reranker, {}
            self.spec = dataclasses.replace(self.spec, rerank=settings)
            self.model_version = model_fingerprint(reranker)
            generation.forget_searchers()
            logger.info("serving reranker %s (fingerprint %s)", model, self.model_version)
            return self.model_version

    # ------------------------------------------------------------------ searchers
    def searcher(
        self, generation: Generation, mode: str | None, rerank: bool | None, rerank_depth: int | None
    ) -> Searcher:
        """The generation's Searcher for ``mode`` (None: the served one). ``rerank`` None reranks when the server
        has a reranker; ``rerank_depth`` None is the reranker's own depth. ConfigError for an unknown mode, a mode
        the index's components do not allow, or a rerank the server cannot do."""
        mode = _check_mode(mode or self.spec.mode)
        if mode not in generation.modes:
            have = ", ".join(generation.index.manifest["components"])
            raise ConfigError(f"mode {mode!r} needs components this index lacks (it has: {have})")
        return generation.searcher(mode, self._reranker(rerank, rerank_depth), self.searcher_class, self._observe)

    def _observe(self, stage: str, seconds: float) -> None:
        if self.observe is not None:
            self.observe(stage, seconds)

    def _reranker(self, rerank: bool | None, depth: int | None) -> Any:
        if rerank is False or (rerank is None and self.reranker is None):
            return None
        if self.reranker is None:
            raise ConfigError("this server has no reranker: start it with --rerank MODEL")
        if depth is None or depth == self.reranker.depth:
            return self.reranker
        if depth not in self._variants:  # the same loaded model, another depth
            self._variants[depth] = self.reranker.variant(dataclasses.replace(self.reranker.config, depth=depth))
        return self._variants[depth]

    # ------------------------------------------------------------------ answers (run in worker threads)
    def search(
        self,
        generation: Generation,
        searcher: Searcher,
        k: int,
        items: Sequence[SearchItem],
        filter: Sequence[str] = (),
    ) -> list[list[dict[str, Any]]]:
        """Each item's hits as JSON-ready dicts (rank, doc_id, score and its fields), from one ``search_batch``
        (``filter``: metadata conditions, as ``Searcher.search_batch``'s; a bad one raises ConfigError)."""
        results = searcher.search_batch([item.query for item in items], k, filter=list(filter) or None)
        return [self._rows(generation, hits, item.fields) for hits, item in zip(results, items, strict=True)]

    def explain(
        self, generation: Generation, searcher: Searcher, k: int, item: SearchItem, filter: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The top ``k`` of ``Searcher.explain``: each hit with its rank and score in every stage that ran."""
        explained = searcher.explain(item.query, k, filter=list(filter) or None)
        rows = self._rows(generation, [Hit(hit.doc_id, hit.score) for hit in explained], item.fields)
        for row, hit in zip(rows, explained, strict=True):
            row["stages"] = {name: stage._asdict() for name, stage in hit.stages.items()}
        return rows

    def _rows(self, generation: Generation, hits: list[Hit], fields: Sequence[str]) -> list[dict[str, Any]]:
        rows = [{"rank": rank, "doc_id": hit.doc_id, "score": hit.score} for rank, hit in enumerate(hits, start=1)]
        if fields and hits:
            start = time.perf_counter()
            documents = generation.index.documents([hit.doc_id for hit in hits])
            for row, document in zip(rows, documents, strict=True):
                for name in fields:
                    row[name] = getattr(document, name)
            self._observe("documents", time.perf_counter() - start)
        return rows

    # ------------------------------------------------------------------ description
    def health(self) -> dict[str, Any]:
        """What is served: the index generation (fingerprint, components), modes, models, version."""
        generation = self.current
        index = generation.index
        components = {name: config_to_dict(config) for name, config in index.components.items()}
        return {
            "status": "ok",
            "version": __version__,
            "index": {
                "path": self.spec.index,
                "fingerprint": generation.fingerprint,
                "generation": generation.number,
                "opened": generation.opened,
                "num_docs": index.num_docs,
                "components": components,
            },
            "default_mode": self.searcher(generation, None, False, None).mode,
            "modes": generation.modes,
            "models": self.models(),
            "rerank_depth": None if self.reranker is None else self.reranker.depth,
            "reloads": self.reloads,
        }

    def models(self) -> dict[str, str | None]:
        """The dense encoder's and the reranker's model names (None where there is none)."""
        dense = self.current.index.components.get("dense")
        return {
            "dense": None if dense is None else str(dense.model),
            "reranker": None if self.reranker is None else str(self.reranker.config.model),
        }


def model_fingerprint(reranker: Any) -> str:
    """A reranker's version, as the feedback log and metrics label it: the first 16 hex digits of the checksum of
    its card (which records the sha256 of its weight files), or of its name for a model without a card; "" for
    none.

    >>> model_fingerprint(None)
    ''
    """
    if reranker is None:
        return ""
    card = getattr(reranker, "card", None)
    if card:
        return json_checksum(dict(card))[:16]
    return hashlib.sha256(str(reranker.config.model).encode()).hexdigest()[:16]


def _check_mode(mode: str) -> str:
    if mode not in SEARCH_MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    return mode
