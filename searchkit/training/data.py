"""Training data for reranker fine-tuning: labelled pair files, pairs from qrels with mined hard negatives, the
dev split, and the first-stage runs they need (cached).

Training data is either a qrels split (positives: grade > 0, grades kept) with hard negatives mined from an
index's first stage, or a user's file of labelled pairs (:func:`read_pairs`). Mining never returns a judged
document of the query, skips the very top of the ranking (``skip_top``: where unjudged relevant documents
live), can add random negatives, never drops a query without saying so, and caches the first stage in the
output folder. Dev queries are held out of the train queries (seeded shuffle).

:func:`load_training_data` writes into the output folder::

    data/     train_pairs.jsonl (the exact training examples, whose sha256 the model card records),
              dev_queries.txt (held-out ids)
    cache/    first-stage runs (TREC + key), reused while index, queries and settings match

>>> hits = [Hit(d, 1.0) for d in ["a", "b", "c"]]
>>> mine_negatives(hits, {"a"}, depth=3)
['b', 'c']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from searchkit.config import RerankConfig, TrainConfig, config_to_dict
from searchkit.formats import (
    LabelledPair,
    document_text,
    read_pairs,
    read_qrels,
    read_queries,
    read_run,
    sha256_file,
    write_run,
)
from searchkit.index import Index
from searchkit.models.cards import MODEL_CARD
from searchkit.search import Searcher
from searchkit.training.feedback import feedback_pairs
from searchkit.types import ConfigError, DataError, Hit, Qrels, Query

logger = logging.getLogger(__name__)


def mine_negatives(
    ranking: Sequence[Hit],
    judged: Sequence[str] | set[str],
    *,
    depth: int,
    skip_top: int = 0,
    count: int | None = None,
) -> list[str]:
    """Hard negatives from one query's first-stage ``ranking``: ranks ``skip_top + 1 .. depth`` (1-based,
    counted in the ranking as given), minus every judged document of the query, best first, at most ``count``.

    >>> hits = [Hit(d, 1.0) for d in ["a", "b", "c", "d", "e"]]
    >>> mine_negatives(hits, {"c"}, depth=4, skip_top=1)
    ['b', 'd']
    """
    known = set(judged)
    mined = [hit.doc_id for hit in ranking[skip_top:depth] if hit.doc_id not in known]
    return mined if count is None else mined[:count]


@dataclass
class TrainQuery:
    """One query's training material: (doc key, grade, weight) positives and (doc key, weight) negatives."""

    query_id: str
    text: str
    positives: list[tuple[str, int, float]]
    negatives: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class DevSet:
    """Held-out queries and the candidates they rerank (first-stage hits, or their labelled pairs)."""

    queries: list[Query]
    candidates: list[list[Hit]]
    qrels: Qrels
    has_first_stage: bool
    split: dict[str, Any] = field(default_factory=dict)  # dev_split_record: what the model card records


@dataclass
class TrainingData:
    """What a training run consumes: train queries, the dev set, the text of every doc key they name (an index
    doc id, or ``line<N>`` for a pair file's inline text), the sha256 of data/train_pairs.jsonl and where the data
    came from (for the model card)."""

    train: list[TrainQuery]
    dev: DevSet
    texts: dict[str, str]
    sha256: str
    source: dict[str, Any]


def load_training_data(cfg: TrainConfig, out: Path, show_progress: bool) -> TrainingData:
    """Training queries with their positives and negatives, the dev set, and every text they need.

    Opens ``cfg.index`` (building a BM25 index of ``cfg.corpus`` when it is missing), reads the pair file or the
    qrels split, holds out the dev queries, mines negatives, logs a summary and writes ``out/data/`` (and the
    first stage to ``out/cache/``). Raises DataError when no training query is left.
    """
    index = _open_index(cfg, show_progress)
    if cfg.feedback_log is not None:
        export = feedback_pairs(
            cfg.feedback_log,
            naive=cfg.feedback_naive,
            clip=cfg.feedback_clip,
            since=cfg.feedback_since,
            until=cfg.feedback_until,
            min_swaps=cfg.feedback_min_swaps,
            seed=cfg.seed,
        )
        train, dev, texts = _pairs_data(cfg, index, export.pairs, cfg.feedback_log)
        source: dict[str, Any] = dict(export.record)
    elif cfg.pairs is not None:
        train, dev, texts = _pairs_data(cfg, index, read_pairs(cfg.pairs, cfg.pairs_doc), cfg.pairs)
        source = {"pairs": cfg.pairs}
    else:
        train, dev, texts = _qrels_data(cfg, index, out, show_progress)
        source = {"qrels": cfg.qrels or cfg.corpus, "split": cfg.split}
    if index is not None:
        source["index_fingerprint"] = index.fingerprint()
    if cfg.loss == "listwise":
        empty = [query.query_id for query in train if not query.negatives]
        if empty:
            logger.warning(
                "%d training queries have no negatives and are left out of the listwise loss: %s%s",
                len(empty),
                ", ".join(empty[:5]),
                " ..." if len(empty) > 5 else "",
            )
            train = [query for query in train if query.negatives]
    if not train:
        raise DataError("no training queries left (none with a positive, or every one held out for dev)")
    counts = sorted(len(query.negatives) for query in train)
    logger.info(
        "training data: %d queries, %d positives, negatives per query min %d / median %d / max %d; %d dev",
        len(train),
        sum(len(q.positives) for q in train),
        counts[0],
        counts[len(counts) // 2],
        counts[-1],
        len(dev.queries),
    )
    sha = _write_data(out, train, dev)
    return TrainingData(train, dev, texts, sha, source)


def _open_index(cfg: TrainConfig, show_progress: bool) -> Any:

    if cfg.index is None:
        return None
    path = Path(cfg.index)
    if not path.exists():
        if not (cfg.build_index and cfg.corpus):
            raise ConfigError(f"index {path} does not exist; build it, or set corpus (and build_index = true)")
        logger.info("building a BM25 index of %s at %s for mining", cfg.corpus, path)
        return Index.build(cfg.corpus, path, show_progress=show_progress)
    return Index.open(path)


def split_dev(
    queries: Sequence[Query], dev_queries: float, seed: int, limit_queries: int | None = None
) -> tuple[list[Query], list[Query]]:
    """(train, dev): a seeded shuffle of ``queries``, cut to ``limit_queries``; the first ``dev_queries`` (a count,
    or a fraction when below 1) are dev. Reranker and dense training call it with the same usable queries (judged,
    with a positive, in file order), count and seed, so both hold out the same dev queries.

    >>> qs = [Query(f"q{i}", "text") for i in range(6)]
    >>> train, dev = split_dev(qs, 2, seed=42)
    >>> len(train), len(dev), sorted(q.query_id for q in train + dev) == sorted(q.query_id for q in qs)
    (4, 2, True)
    """
    rng = np.random.default_rng(seed)
    shuffled = [queries[i] for i in rng.permutation(len(queries))]
    if limit_queries is not None:
        shuffled = shuffled[:limit_queries]
    wanted = round(dev_queries * len(shuffled)) if dev_queries < 1 else int(dev_queries)
    if wanted >= len(shuffled):
        logger.warning(
            "dev_queries=%s leaves no training queries out of %d: using %d for dev",
            dev_queries,
            len(shuffled),
            len(shuffled) // 2,
        )
        wanted = len(shuffled) // 2
    return shuffled[wanted:], shuffled[:wanted]


SPLIT_DATA = ("corpus", "queries", "qrels", "pairs", "split")  # the recipe settings naming the judgments split


def dev_split_record(usable: Sequence[Query], dev: Sequence[Query], cfg: Any) -> dict[str, Any]:
    """What a model card records of its dev split (:func:`split_dev`): the settings that cut it, a digest of the
    queries it was cut from and the dev query ids, so that continual fine-tuning can check it holds out the same
    queries as its parent (:func:`check_parent_split`). ``cfg`` is the recipe (reranker or dense).

    >>> qs = [Query(f"q{i}", "text") for i in range(6)]
    >>> cfg = TrainConfig("out", corpus="beir", index="idx", dev_queries=2, seed=42)
    >>> record = dev_split_record(qs, split_dev(qs, 2, seed=42)[1], cfg)
    >>> record["seed"], len(record["dev"]), len(record["candidates_sha256"])
    (42, 2, 64)
    """
    # ids and texts: a pair file's queries are numbered in file order, so ids alone do not tell two files apart
    listing = "\n".join(f"{query.query_id}\t{query.text}" for query in usable)
    digest = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    data = {key: _data_setting(key, getattr(cfg, key, None)) for key in SPLIT_DATA}
    return {
        "seed": cfg.seed,
        "dev_queries": cfg.dev_queries,
        "limit_queries": cfg.limit_queries,
        "candidates_sha256": digest,
        "dev": sorted(query.query_id for query in dev),
        "data": data,
    }


def _data_setting(key: str, value: Any) -> str | None:
    """A SPLIT_DATA setting as compared: paths normalised (recipes store them as ``folder/../data``)."""
    if value is None:
        return None
    return str(value) if key == "split" else os.path.normpath(str(value))


def check_parent_split(split: dict[str, Any], parent_card: dict[str, Any], parent: str | Path) -> None:
    """Refuse continual fine-tuning whose dev queries were the parent's training queries.

    The dev split is a seeded shuffle, so another ``seed`` (or ``dev_queries`` / ``limit_queries``) over the same
    judgments holds out queries the parent trained on: dev would then score the model on what it learned (a
    SciFact run with seed 43 over a seed-42 parent read 0.85 nDCG@10 on dev, 0.71 on its true dev queries) and
    the dev guard, the interpolation and the fusion would all be fitted on it. Raises ConfigError in that case;
    over other judgments (new queries) only warns for dev queries the parent did not hold out. Cards written
    before the split was recorded are checked by their settings.

    >>> parent = {"dev_split": {"seed": 42, "dev": ["q1"], "candidates_sha256": "x"}}
    >>> check_parent_split({"seed": 42, "dev": ["q1"], "candidates_sha256": "x"}, parent, "p")
    >>> check_parent_split({"seed": 43, "dev": ["q2"], "candidates_sha256": "x"}, parent, "p")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: init_from p: 1 of this run's 1 dev queries (q2) were training queries of ...
    """
    keys = ("seed", "dev_queries", "limit_queries")
    recorded = parent_card.get("dev_split")
    if recorded is None:  # a card from before the split was recorded: the settings over the same judgments
        settings = parent_card.get("training_config") or {}
        same_data = all(_data_setting(key, settings.get(key)) == split["data"][key] for key in SPLIT_DATA)
        if settings and same_data and any(settings.get(key) != split[key] for key in keys):
            wanted = ", ".join(f"{key} = {settings.get(key)}" for key in keys)
            raise ConfigError(
                f"init_from {parent}: this run splits dev off the parent's judgments with other settings, so its "
                f"dev queries would include queries the parent trained on; hold out the parent's: {wanted}"
            )
        return
    extra = sorted(set(split["dev"]) - set(recorded.get("dev", [])))
    if not extra:
        return
    if recorded.get("candidates_sha256") == split["candidates_sha256"]:
        wanted = ", ".join(f"{key} = {recorded.get(key)}" for key in keys)
        raise ConfigError(
            f"init_from {parent}: {len(extra)} of this run's {len(split['dev'])} dev queries ({', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''}) were training queries of the parent, so dev would score it on "
            f"what it learned; hold out the parent's: {wanted}"
        )
    logger.warning(
        "init_from %s was trained on other judgments: %d of this run's %d dev queries were not held out by it "
        "and may be queries it trained on (dev scores would then be optimistic): %s",
        parent,
        len(extra),
        len(split["dev"]),
        ", ".join(extra[:5]),
    )


def _qrels_data(
    cfg: TrainConfig, index: Any, out: Path, show_progress: bool
) -> tuple[list[TrainQuery], DevSet, dict[str, str]]:

    qrels = read_qrels(str(cfg.qrels or cfg.corpus), cfg.split)
    query_source = str(cfg.queries or cfg.corpus)
    queries = read_queries(query_source, split=cfg.split if Path(query_source).is_dir() else None)
    judged_queries = [query for query in queries if query.query_id in qrels]
    without = [q.query_id for q in judged_queries if not any(g > 0 for g in qrels[q.query_id].values())]
    if without:
        logger.warning(
            "%d queries have judgments but no positive (grade > 0) and are not used: %s",
            len(without),
            ", ".join(without[:5]),
        )
    missing = sorted(set(qrels) - {query.query_id for query in queries})
    if missing:
        logger.warning(
            "%d judged queries have no text in the queries file and are not used: %s",
            len(missing),
            ", ".join(missing[:5]),
        )
    usable = [query for query in judged_queries if query.query_id not in set(without)]
    if cfg.only_queries is not None:  # a cross-validation fold's training queries: the others are never read
        allowed = set(cfg.only_queries)
        usable = [query for query in usable if query.query_id in allowed]
    train_queries, dev_queries = split_dev(usable, cfg.dev_queries, cfg.seed, cfg.limit_queries)

    mined = first_stage_hits(
        index,
        cfg.mine_mode,
        train_queries,
        cfg.mine_depth,
        out / "cache",
        "mine",
        show_progress,
        rerank=None if cfg.mine_model is None else mining_reranker(cfg),
    )
    rng = np.random.default_rng([cfg.seed, 1])
    train: list[TrainQuery] = []
    for query in train_queries:
        judged = qrels[query.query_id]
        positives = [(doc, grade, _positive_weight(cfg, grade, None)) for doc, grade in judged.items() if grade > 0]
        negatives = mine_negatives(
            mined[query.query_id],
            set(judged),
            depth=cfg.mine_depth,
            skip_top=cfg.skip_top,
            count=cfg.negatives_per_query,
        )
        negatives += [doc for doc, grade in judged.items() if grade <= 0]  # judged non-relevant: sure negatives
        negatives += _random_negatives(index.docids, set(judged) | set(negatives), cfg.random_negatives, rng)
        weight = _negative_weight(cfg, None)
        train.append(TrainQuery(query.query_id, query.text, positives, [(doc, weight) for doc in negatives]))
    dev_runs = first_stage_hits(index, cfg.dev_mode, dev_queries, cfg.dev_depth, out / "cache", "dev", show_progress)
    dev = DevSet(
        dev_queries,
        [dev_runs[q.query_id] for q in dev_queries],
        {q.query_id: qrels[q.query_id] for q in dev_queries},
        True,
        dev_split_record(usable, dev_queries, cfg),
    )
    needed = list(
        dict.fromkeys(
            [
                *(d for q in train for d, _, _ in q.positives),
                *(d for q in train for d, _ in q.negatives),
                *(h.doc_id for hits in dev.candidates for h in hits),
            ]
        )
    )
    known = set(index.docids)
    unknown = [doc for doc in needed if doc not in known]
    if unknown:
        logger.warning(
            "%d judged documents are not in the index and are skipped: %s",
            len(unknown),
            ", ".join(unknown[:5]),
        )
        for item in train:
            item.positives = [p for p in item.positives if p[0] in known]
        train = [item for item in train if item.positives]
    texts: dict[str, str] = {}
    present = [doc for doc in needed if doc in known]
    for start in range(0, len(present), 4096):
        chunk = present[start : start + 4096]
        texts.update(zip(chunk, [document_text(doc) for doc in index.documents(chunk)], strict=True))
    return train, dev, texts


def _positive_weight(cfg: TrainConfig, grade: int, explicit: float | None) -> float:
    if cfg.weighting == "class":
        return cfg.positive_weight
    if cfg.weighting == "grade":
        return float(grade)
    if cfg.weighting == "column":
        return 1.0 if explicit is None else explicit
    return 1.0


def _negative_weight(cfg: TrainConfig, explicit: float | None) -> float:
    if cfg.weighting == "class":
        return cfg.negative_weight
    if cfg.weighting == "column" and explicit is not None:
        return explicit
    return 1.0


def _random_negatives(docids: Sequence[str], exclude: set[str], count: int, rng: np.random.Generator) -> list[str]:
    if count <= 0 or len(docids) <= len(exclude):
        return []
    picked: list[str] = []
    for _ in range(count * 20):  # a few tries each: exclusions are rare in a real corpus
        doc = docids[int(rng.integers(len(docids)))]
        if doc not in exclude and doc not in picked:
            picked.append(doc)
            if len(picked) == count:
                break
    return picked


def _pairs_data(
    cfg: TrainConfig, index: Any, pairs: list[LabelledPair], path: str
) -> tuple[list[TrainQuery], DevSet, dict[str, str]]:

    if any(pair.doc_is_id for pair in pairs) and index is None:
        raise ConfigError(f"{path} names documents by id: set `index` so their texts can be read")
    known = set(index.docids) if index is not None else set()
    texts: dict[str, str] = {}
    by_query: dict[str, list[tuple[str, LabelledPair]]] = {}
    for pair in pairs:
        if pair.doc_is_id:
            if pair.doc not in known:
                where = pair.line if cfg.feedback_log is None else None
                raise DataError(f"document {pair.doc!r} is not in the index {cfg.index}", path, where)
            key = pair.doc
        else:
            key = f"line{pair.line}"
            texts[key] = pair.doc
        by_query.setdefault(pair.query, []).append((key, pair))
    ids = {text: f"p{n}" for n, text in enumerate(by_query, start=1)}
    queries = [Query(ids[text], text) for text in by_query]
    without = [query.query_id for query in queries if not any(p.label > 0 for _, p in by_query[query.text])]
    if without:
        logger.warning(
            "%d queries of %s have no positive pair and are not used: %s",
            len(without),
            path,
            ", ".join(without[:5]),
        )
    usable = [q for q in queries if q.query_id not in set(without)]
    train_queries, dev_queries = split_dev(usable, cfg.dev_queries, cfg.seed, cfg.limit_queries)
    train = []
    for query in train_queries:
        items = by_query[query.text]
        positives = [(k, p.label, _positive_weight(cfg, p.label, p.weight)) for k, p in items if p.label > 0]
        negatives = [(k, _negative_weight(cfg, p.weight)) for k, p in items if p.label == 0]
        train.append(TrainQuery(query.query_id, query.text, positives, negatives))
    # a doc listed twice in a query (clicked in one session, skipped in another) is one candidate, at its best grade
    candidates = [[Hit(key, 0.0) for key in dict.fromkeys(key for key, _ in by_query[q.text])] for q in dev_queries]
    qrels: Qrels = {}
    for query in dev_queries:
        grades = qrels.setdefault(query.query_id, {})
        for key, pair in by_query[query.text]:
            grades[key] = max(grades.get(key, 0), pair.label)
    needed = {key for q in by_query.values() for key, p in q if p.doc_is_id}
    if needed:
        chunk = sorted(needed)
        texts.update(zip(chunk, [document_text(doc) for doc in index.documents(chunk)], strict=True))
    split = dev_split_record(usable, dev_queries, cfg)
    return train, DevSet(dev_queries, candidates, qrels, False, split), texts


def mining_reranker(cfg: TrainConfig) -> RerankConfig:
    """The pipeline negatives are mined over from a round's second on: ``mine_model`` (the last kept round) with
    its card's learned fusion, reranking the whole mined depth (so the pool is ordered as that pipeline ranks)."""
    assert cfg.mine_model is not None
    return RerankConfig(cfg.mine_model, depth=cfg.mine_depth, device=cfg.device, batch_size=cfg.eval_batch_size)


def first_stage_hits(
    index: Any,
    mode: str,
    queries: list[Query],
    k: int,
    cache: Path,
    name: str,
    show_progress: bool,
    *,
    rerank: RerankConfig | None = None,
) -> dict[str, list[Hit]]:
    """Top ``k`` of ``mode`` for each query (reranked by ``rerank`` and its card's fusion when given), from
    ``cache/<name>.trec`` when its key (index, mode, reranker, k, queries) matches, else searched and cached."""

    if not queries:
        return {}
    searcher = Searcher(index, mode=mode, rerank=rerank)
    digest = hashlib.sha256("".join(f"{q.query_id}\t{q.text}\n" for q in queries).encode()).hexdigest()
    key = {
        "index": index.fingerprint(),
        "mode": searcher.mode,
        "fusion": config_to_dict(searcher.fusion),
        "k": k,
        "queries_sha256": digest,
    }
    if rerank is not None:  # the reranker's weights and card (its fusion) are part of what was mined
        model = Path(rerank.model)
        key["rerank"] = {
            "model": str(model),
            "files": {p.name: sha256_file(p) for p in [*sorted(model.glob("*.safetensors")), model / MODEL_CARD]},
            "depth": rerank.depth,
        }
    run_path, key_path = cache / f"{name}.trec", cache / f"{name}.json"
    if run_path.is_file() and key_path.is_file() and json.loads(key_path.read_text(encoding="utf-8")) == key:
        logger.info("first stage (%s, top %d) for %d queries read from %s", searcher.mode, k, len(queries), run_path)
        run = read_run(run_path)
        return {q.query_id: run.get(q.query_id, []) for q in queries}
    starts: Any = range(0, len(queries), 256)
    if show_progress:
        starts = tqdm(starts, desc=f"first stage ({name})", unit="batch", dynamic_ncols=True)
    result: dict[str, list[Hit]] = {}
    for start in starts:
        batch = queries[start : start + 256]
        for query, hits in zip(batch, searcher.search_batch([q.text for q in batch], k), strict=True):
            result[query.query_id] = hits
    empty = [qid for qid, hits in result.items() if not hits]
    if empty:
        logger.warning(
            "the %s first stage found nothing for %d queries (e.g. all stopwords): %s",
            searcher.mode,
            len(empty),
            ", ".join(empty[:5]),
        )
    cache.mkdir(parents=True, exist_ok=True)
    write_run({qid: hits for qid, hits in result.items() if hits}, run_path, tag=f"{name}-{searcher.mode}")
    key_path.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return result


def _write_data(out: Path, train: list[TrainQuery], dev: DevSet) -> str:
    """Write the training examples (JSONL) and dev query ids; return the examples' sha256."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for query in train:
        for doc, grade, weight in query.positives:
            lines.append(
                {"query_id": query.query_id, "query": query.text, "doc": doc, "label": grade, "weight": weight}
            )
        for doc, weight in query.negatives:
            lines.append({"query_id": query.query_id, "query": query.text, "doc": doc, "label": 0, "weight": weight})
    payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    (folder / "train_pairs.jsonl").write_bytes(payload)
    (folder / "dev_queries.txt").write_text("".join(q.query_id + "\n" for q in dev.queries), encoding="utf-8")
    return hashlib.sha256(payload).hexdigest()
