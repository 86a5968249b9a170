"""The bi-encoder's training data and dev retrieval: judged queries with a positive, hard negatives mined from the
index's first stage (every judged document excluded), the dev split shared with the reranker, and dense retrieval of
the dev queries over the whole index (the score the trainer keeps an epoch by)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import DenseTrainConfig
from searchkit.evaluate.metrics import canonical_metric, evaluate
from searchkit.formats import document_text, read_qrels, read_queries
from searchkit.index import Index
from searchkit.training.data import dev_split_record, first_stage_hits, mine_negatives, split_dev
from searchkit.types import ConfigError, DataError, Hit, Qrels, Query, Run, sort_hits

logger = logging.getLogger(__name__)

DEV_METRICS = ("nDCG@10", "RR@10", "R@100")


@dataclass
class DenseTrainingData:
    """Training rows (query text, positive text, hard-negative texts) with their ids, the dev set, the corpus."""

    rows: list[dict[str, Any]]
    train_queries: list[Query]
    dev_queries: list[Query]
    dev_qrels: Qrels
    sha256: str
    source: dict[str, Any]
    split: dict[str, Any]  # dev_split_record: what the model card records


def open_training_index(cfg: DenseTrainConfig, show_progress: bool) -> Any:

    assert cfg.index is not None
    path = Path(cfg.index)
    if not (path / "manifest.json").is_file():
        if not (cfg.build_index and cfg.corpus):
            raise ConfigError(f"index {path} does not exist; build it, or set corpus (and build_index = true)")
        logger.info("building a BM25 index of %s at %s for mining", cfg.corpus, path)
        return Index.build(cfg.corpus, path, show_progress=show_progress)
    return Index.open(path)


def usable_queries(queries: Sequence[Query], qrels: Qrels) -> list[Query]:
    """Judged queries with at least one positive (grade > 0), in file order: what ``split_dev`` is given.

    >>> usable_queries([Query("a", "x"), Query("b", "y"), Query("c", "z")], {"a": {"d": 1}, "b": {"d": 0}})
    [Query(query_id='a', text='x')]
    """
    return [q for q in queries if any(grade > 0 for grade in qrels.get(q.query_id, {}).values())]


def load_dense_training_data(cfg: DenseTrainConfig, index: Any, out: Path, show_progress: bool) -> DenseTrainingData:
    """Rows ``{"query_id", "query", "positive_id", "positive", "negative_ids", "negatives"}``, one per (query,
    positive), dev held out; writes ``out/data/`` (ids only) and caches the first stage in ``out/cache/``."""

    qrels = read_qrels(str(cfg.qrels or cfg.corpus), cfg.split)
    query_source = str(cfg.queries or cfg.corpus)
    queries = read_queries(query_source, split=cfg.split if Path(query_source).is_dir() else None)
    usable = usable_queries(queries, qrels)
    skipped = len([q for q in queries if q.query_id in qrels]) - len(usable)
    if skipped:
        logger.warning("%d judged queries have no positive (grade > 0) and are not used", skipped)
    train_queries, dev_queries = split_dev(usable, cfg.dev_queries, cfg.seed, cfg.limit_queries)
    mined = first_stage_hits(index, cfg.mine_mode, train_queries, cfg.mine_depth, out / "cache", "mine", show_progress)
    known = set(index.docids)
    rng = np.random.default_rng([cfg.seed, 2])
    plan: list[tuple[Query, str, list[str]]] = []
    missing: set[str] = set()
    for query in train_queries:
        judged = qrels[query.query_id]
        pool = mine_negatives(mined.get(query.query_id, []), set(judged), depth=cfg.mine_depth, skip_top=cfg.skip_top)
        for doc, grade in judged.items():
            if grade <= 0:
                continue
            if doc not in known:
                missing.add(doc)
                continue
            plan.append((query, doc, draw_negatives(pool, cfg.hard_negatives, index.docids, set(judged), rng)))
    if missing:
        logger.warning(
            "%d judged documents are not in the index and are skipped: %s", len(missing), sorted(missing)[:5]
        )
    if not plan:
        raise DataError("no training pairs left (no judged positive in the index, or every query held out for dev)")
    needed = list(dict.fromkeys(doc for _, positive, negatives in plan for doc in (positive, *negatives)))
    texts: dict[str, str] = {}
    for start in range(0, len(needed), 4096):
        chunk = needed[start : start + 4096]
        texts.update(zip(chunk, [document_text(doc) for doc in index.documents(chunk)], strict=True))
    rows = [
        {
            "query_id": query.query_id,
            "query": query.text,
            "positive_id": positive,
            "positive": texts[positive],
            "negative_ids": negatives,
            "negatives": [texts[doc] for doc in negatives],
        }
        for query, positive, negatives in plan
    ]
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    keys = ("query_id", "query", "positive_id", "negative_ids")
    payload = "".join(json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n" for row in rows).encode()
    (folder / "train_pairs.jsonl").write_bytes(payload)
    (folder / "dev_queries.txt").write_text("".join(q.query_id + "\n" for q in dev_queries), encoding="utf-8")
    source = {
        "qrels": cfg.qrels or cfg.corpus,
        "split": cfg.split,
        "index_fingerprint": index.fingerprint(),
        "mine_mode": cfg.mine_mode,
    }
    logger.info(
        "dense training data: %d train queries, %d pairs, %d hard negatives each; %d dev queries",
        len(train_queries),
        len(rows),
        cfg.hard_negatives,
        len(dev_queries),
    )
    dev_qrels = {q.query_id: qrels[q.query_id] for q in dev_queries}
    digest = hashlib.sha256(payload).hexdigest()
    split = dev_split_record(usable, dev_queries, cfg)
    return DenseTrainingData(rows, train_queries, dev_queries, dev_qrels, digest, source, split)


def draw_negatives(
    pool: list[str], count: int, docids: Sequence[str], judged: set[str], rng: np.random.Generator
) -> list[str]:
    """``count`` negatives from the mined ``pool`` (without replacement while it lasts), topped up with random
    unjudged documents when the pool is short."""
    if count == 0:
        return []
    picked = [pool[i] for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False)] if pool else []
    for _ in range(count * 50):
        if len(picked) >= count or len(docids) <= len(judged) + len(picked):
            break
        doc = docids[int(rng.integers(len(docids)))]
        if doc not in judged and doc not in picked:
            picked.append(doc)
    while picked and len(picked) < count:  # a corpus too small for distinct negatives: repeat
        picked.append(picked[len(picked) % max(1, len(picked))])
    return picked


def retrieve_dense(
    query_vectors: np.ndarray, doc_vectors: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int
) -> Run:
    """Exact inner-product top ``k`` of each query over every document (numpy, in chunks of queries).

    >>> docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> retrieve_dense(np.array([[0.0, 1.0]]), docs, ["q"], ["a", "b", "c"], 2)["q"]
    [Hit(doc_id='b', score=1.0), Hit(doc_id='c', score=0.8)]
    """

    k = min(k, len(doc_ids))
    if k <= 0:
        return {qid: [] for qid in query_ids}
    run: Run = {}
    for start in range(0, len(query_ids), 256):
        scores = query_vectors[start : start + 256] @ doc_vectors.T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < len(doc_ids)
            else np.tile(np.arange(k), (len(scores), 1))
        )
        for row, qid in enumerate(query_ids[start : start + 256]):
            run[qid] = sort_hits([Hit(doc_ids[j], round(float(scores[row, j]), 6)) for j in top[row]])
    return run


def encode_texts(model: Any, texts: Sequence[str], *, batch_size: int, max_length: int, bf16: bool) -> np.ndarray:
    """(n, dim) float32 normalised embeddings of ``texts`` by a SentenceTransformer, at ``max_length`` tokens."""

    import torch

    previous = model.max_seq_length
    model.max_seq_length = max_length
    device = str(model.device)
    autocast = (
        torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode(), autocast:
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
    finally:
        model.max_seq_length = previous
    return np.asarray(vectors, dtype=np.float32)


class DevRetrieval:
    """Dense retrieval of the dev queries over the whole corpus with a candidate encoder, scored by ir-measures.

    ``__call__(model)`` returns ``{metric: value}`` for ``metrics`` (ir-measures names, the first one is primary).
    """

    def __init__(
        self,
        queries: Sequence[Query],
        qrels: Qrels,
        doc_ids: Sequence[str],
        doc_texts: Sequence[str],
        *,
        depth: int = 100,
        metrics: Sequence[str] = DEV_METRICS,
        batch_size: int = 64,
        max_length: int = 256,
        bf16: bool = False,
    ) -> None:
        self.queries = list(queries)
        self.qrels = qrels
        self.doc_ids = list(doc_ids)
        self.doc_texts = list(doc_texts)
        self.depth = depth
        self.metrics = [canonical_metric(m) for m in dict.fromkeys(metrics)]
        self.batch_size = batch_size
        self.max_length = max_length
        self.bf16 = bf16
        self.last_run: Run = {}

    def __call__(self, model: Any) -> dict[str, float]:
        def vectors(texts: Sequence[str]) -> np.ndarray:
            return encode_texts(model, texts, batch_size=self.batch_size, max_length=self.max_length, bf16=self.bf16)

        docs = vectors(self.doc_texts)
        queries = vectors([q.text for q in self.queries])
        self.last_run = retrieve_dense(queries, docs, [q.query_id for q in self.queries], self.doc_ids, self.depth)
        scores = evaluate(self.last_run, self.qrels, self.metrics, query_ids=[q.query_id for q in self.queries])
        return {name: round(float(scores.aggregate[name]), 6) for name in self.metrics}
