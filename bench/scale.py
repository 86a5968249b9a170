"""Growth table: searchkit's BM25 (and dense) build and search at 100k, 300k and 1M synthetic documents, against bm25s.

Corpora come from :mod:`synthetic` (Zipf–Mandelbrot words over a Heaps'-law vocabulary, passage-length
documents, short queries from the same words), generated once into ``--cache-dir`` and reused. For each size:

- ours: ``Index.build(corpus, out, bm25=BM25Config(), dense=None)`` (doc store + BM25 component + manifest), then
  ``Index.open(out).bm25.search_batch(queries, k=10)``;
- bm25s: the corpus read from the same JSONL, ``bm25s.tokenize`` with the same analyzer (lowercase, bm25s's
  splitter, its ``en`` stopwords, PyStemmer english: searchkit's defaults; the two indexes' vocabularies and score
  arrays are checked equal, so both engines index the same tokens), ``BM25().index``, ``save``; then
  ``BM25.load`` + ``bm25s.tokenize(queries)`` + ``retrieve(k=10, n_threads=0)``;
- dense (``--dense-sizes``): ``Index.build(corpus, out, bm25=None, dense=DenseConfig(tiny model, cpu, fp32))``, a
  randomly initialised 2-layer, 32-wide BERT bi-encoder written into the cache dir (its speed says what the
  pipeline around the model costs; a real model's encoding time is the model's).

Every build runs in a fresh subprocess (one per engine and size, single-threaded: OMP/MKL/OpenBLAS/torch threads
= 1) that then loads its index and times the queries. Peak RSS is the child's VmHWM (interpreter and imports
included; ru_maxrss is not used because a child's starts from its parent's peak at fork), also given over the RSS
after imports, and per build phase from a 20 ms RSS sampler. Index size is the bytes of every file written.
Query throughput is the median of ``--repeats`` passes over the queries after one warm-up pass. Each measure's
growth exponent is the least-squares slope of log(measure) against log(documents).

Usage (from the repository root; the real run takes the machine's heavy-work lock)::

    flock /tmp/heavy.lock python bench/scale.py --sizes 100k 300k 1M \
        --json eval/results/scale_cpu.json --markdown eval/results/scale_cpu.md
    python bench/scale.py --smoke            # tiny sizes, seconds: the test of this script
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("DISABLE_TQDM", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

K = 10
STOPWORDS = "en"
STEMMER = "english"
TINY_MODEL_WORDS = 2000
"""The tiny bi-encoder's WordPiece vocabulary holds the corpus's most frequent words (others are spelled out)."""
DENSE_MAX_LENGTH = 128
ACCEPT_TOLERANCE = 0.05
"""How much larger our growth exponent may be than bm25s's and still count as 'no faster' (timing noise)."""
SMOKE_SIZES = [400, 1200]


# ====================================================================== child: one engine, one size
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


class _Phases:
    """Time and peak RSS of each named phase of a build: a thread samples VmRSS every 20 ms."""

    def __init__(self) -> None:
        self.current = "setup"
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.peak_kib: dict[str, int] = {}
        self._since = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._note(_status_kib("VmRSS"))

    def _note(self, kib: int) -> None:
        phase = self.current
        self.peak_kib[phase] = max(self.peak_kib.get(phase, 0), kib)

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        self._note(_status_kib("VmRSS"))
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self._since
        self.current, self._since = phase, now

    def stop(self) -> dict[str, Any]:
        self.enter("done")
        self._stop.set()
        self._thread.join()
        return {
            name: {"s": round(seconds, 3), "peak_rss_mb": _mib(self.peak_kib.get(name, 0))}
            for name, seconds in self.seconds.items()
            if name not in ("setup", "done")
        }


def _timed(phases: _Phases, owner: Any, name: str, phase: str, then: str | None = None) -> None:
    """Wrap ``owner.name`` so that each call runs in ``phase`` (and continues in ``then``, else the caller's)."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = phases.current
        phases.enter(phase)
        try:
            return original(*args, **kwargs)
        finally:
            phases.enter(then or previous)

    setattr(owner, name, wrapper)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _query_rates(run: Callable[[], Any], count: int, repeats: int) -> tuple[list[float], Any]:
    result = run()  # warm-up: page cache, stemmer cache
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return rates, result


def _child_ours(corpus: Path, out: Path, queries: list[str], repeats: int) -> dict[str, Any]:
    import bm25s
    import numpy as np
    import Stemmer  # noqa: F401 - imported before the clock starts, as the peer's is

    import searchkit.formats  # noqa: F401
    import searchkit.index.build as index_module  # the build's steps are looked up here: they are wrapped here
    import searchkit.retrieval.bm25 as bm25_module
    from searchkit.config import BM25Config
    from searchkit.index import Index

    imports_kib = _status_kib("VmHWM")
    phases = _Phases()
    # Phases from wrappers around the build's steps (the doc store, then the BM25 component's own steps)
    _timed(phases, index_module, "write_docstore", "docstore", then="manifest+open")
    _timed(phases, index_module, "build_component", "bm25: read doc store + analyze", then="manifest+open")
    _timed(phases, bm25s.BM25, "build_index_from_ids", "bm25: bm25s scores")
    _timed(phases, bm25_module, "from_term_ids", "bm25: term frequencies")
    _timed(phases, bm25_module.BM25Retriever, "_save", "bm25: save")
    phases.enter("setup")
    start = time.perf_counter()
    Index.build(corpus, out, bm25=BM25Config(stemmer=STEMMER, stopwords=STOPWORDS), dense=None)
    build_s = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    by_phase = phases.stop()

    start = time.perf_counter()
    index = Index.open(out)
    load_s = time.perf_counter() - start
    retriever = index.bm25
    assert retriever is not None
    rates, hits = _query_rates(lambda: retriever.search_batch(queries, k=K), len(queries), repeats)
    return {
        "build_s": build_s,
        "peak_rss_mb": _mib(peak_kib),
        "imports_rss_mb": _mib(imports_kib),
        "phases": by_phase,
        "index_bytes": _folder_bytes(out),
        "component_bytes": _folder_bytes(out / "bm25"),
        "vocab_size": retriever.vocab_size,
        "postings": len(np.asarray(retriever._indices)),
        "load_s": load_s,
        "qps_runs": rates,
        "top": [[[hit.doc_id, hit.score] for hit in query_hits] for query_hits in hits],
    }


def _child_bm25s(corpus: Path, out: Path, queries: list[str], repeats: int) -> dict[str, Any]:
    import bm25s
    import Stemmer

    imports_kib = _status_kib("VmHWM")
    phases = _Phases()
    start = time.perf_counter()
    phases.enter("read corpus")
    records = _jsonl(corpus / "corpus.jsonl")
    texts = [" ".join(part for part in (r.get("title") or "", r.get("text") or "") if part) for r in records]
    docids = None  # rows are the corpus order: d0, d1, ...
    phases.enter("tokenize")
    stemmer = Stemmer.Stemmer(STEMMER)
    tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stemmer, show_progress=False)
    del texts
    phases.enter("index")
    model = bm25s.BM25()
    model.index(tokens, show_progress=False)
    del tokens
    phases.enter("save")
    model.save(out)
    build_s = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    by_phase = phases.stop()
    del model

    start = time.perf_counter()
    loaded = bm25s.BM25.load(out, load_vocab=True)
    load_s = time.perf_counter() - start

    def run() -> Any:
        query_tokens = bm25s.tokenize(queries, stopwords=STOPWORDS, stemmer=stemmer, show_progress=False)
        return loaded.retrieve(query_tokens, k=K, show_progress=False, n_threads=0)

    rates, (rows, scores) = _query_rates(run, len(queries), repeats)
    return {
        "build_s": build_s,
        "peak_rss_mb": _mib(peak_kib),
        "imports_rss_mb": _mib(imports_kib),
        "phases": by_phase,
        "index_bytes": _folder_bytes(out),
        "vocab_size": len([term for term in loaded.vocab_dict if term != ""]),
        "docids": docids,
        "load_s": load_s,
        "qps_runs": rates,
        "top": [
            [[f"d{row}", float(score)] for row, score in zip(query_rows, query_scores, strict=True) if score > 0]
            for query_rows, query_scores in zip(rows.tolist(), scores.tolist(), strict=True)
        ],
    }


def _child_dense(corpus: Path, out: Path, model: Path) -> dict[str, Any]:
    import faiss  # noqa: F401 - the heavy imports happen before the clock starts
    import sentence_transformers  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import searchkit.index.build as index_module  # the build's steps are looked up here: they are wrapped here
    import searchkit.retrieval.dense as dense_module
    from searchkit.config import DenseConfig
    from searchkit.index import Index

    imports_kib = _status_kib("VmHWM")
    phases = _Phases()
    _timed(phases, index_module, "write_docstore", "docstore", then="manifest+open")
    _timed(phases, index_module, "build_component", "dense: encode", then="manifest+open")
    _timed(phases, dense_module, "rebuild_index", "dense: faiss")
    config = DenseConfig(model=str(model), device="cpu", dtype="fp32", max_length=DENSE_MAX_LENGTH)
    phases.enter("setup")
    start = time.perf_counter()
    Index.build(corpus, out, bm25=None, dense=config)
    build_s = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    return {
        "build_s": build_s,
        "peak_rss_mb": _mib(peak_kib),
        "imports_rss_mb": _mib(imports_kib),
        "phases": phases.stop(),
        "index_bytes": _folder_bytes(out),
        "component_bytes": _folder_bytes(out / "dense"),
        "torch_threads": torch.get_num_threads(),
    }


def _child(engine: str, corpus: Path, out: Path, result: Path, queries: int, repeats: int, model: str) -> None:
    texts = [record["text"] for record in _jsonl(corpus / "queries.jsonl")][:queries]
    if engine == "ours":
        payload = _child_ours(corpus, out, texts, repeats)
    elif engine == "bm25s":
        payload = _child_bm25s(corpus, out, texts, repeats)
    else:
        payload = _child_dense(corpus, out, Path(model))
    payload["queries"] = len(texts)
    result.write_text(json.dumps(payload) + "\n", encoding="utf-8")


# ====================================================================== parent
def parse_size(text: str) -> int:
    """``100k`` -> 100000, ``1M`` -> 1000000, ``2500`` -> 2500."""
    text = text.strip()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    return int(float(number) * scale)


def size_label(docs: int) -> str:
    if docs >= 1_000_000 and docs % 1_000_000 == 0:
        return f"{docs // 1_000_000}M"
    if docs >= 1_000 and docs % 1_000 == 0:
        return f"{docs // 1_000}k"
    return str(docs)


def make_tiny_bi_encoder(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT sentence-transformers model (mean pooling, normalised) whose
    WordPiece vocabulary holds ``words``; written once (reused when ``folder`` has it)."""
    if (folder / "modules.json").is_file():
        return folder
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    from searchkit.models.tiny import tiny_bert_parts

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        models = importlib.import_module("sentence_transformers.models")

    raw = folder.parent / f"{folder.name}-bert"
    tokenizer, config = tiny_bert_parts(raw, words)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=DENSE_MAX_LENGTH)
    dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = models.Pooling(dim(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    model.save(str(folder), create_model_card=False)
    return folder


def _run_child(engine: str, corpus: Path, out: Path, queries: int, repeats: int, model: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scale-result-") as scratch:
        result = Path(scratch) / "result.json"
        command = [sys.executable, __file__, "--child", engine, str(corpus), str(out), str(result), str(queries)]
        command += [str(repeats), str(model or "")]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            raise SystemExit(f"{engine} child failed ({done.returncode}) on {corpus}:\n{done.stderr[-4000:]}")
        payload: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    payload["peak_rss_over_imports_mb"] = round(payload["peak_rss_mb"] - payload["imports_rss_mb"], 1)
    if "qps_runs" in payload:
        payload["qps"] = statistics.median(payload["qps_runs"])
    return payload


def same_index(ours: Path, peer: Path) -> dict[str, Any]:
    """Whether our BM25 component and bm25s's saved index hold the same terms, postings and scores (term by term:
    the two number their terms differently)."""
    import numpy as np

    from searchkit.formats import gather_ragged

    def load(folder: Path, name: str) -> Any:
        return np.load(folder / f"{name}.csc.index.npy", mmap_mode="r")

    vocab_ours = json.loads((ours / "vocab.index.json").read_text(encoding="utf-8"))
    vocab_peer = json.loads((peer / "vocab.index.json").read_text(encoding="utf-8"))
    vocab_peer = {term: column for term, column in vocab_peer.items() if term != ""}  # bm25s's empty token
    same_vocab = set(vocab_ours) == set(vocab_peer)
    if not same_vocab:
        return {"same_vocabulary": False, "same_postings": False, "same_scores": False}
    # bm25s's column of each of our columns, in our column order
    columns = np.empty(len(vocab_ours), dtype=np.int64)
    for term, column in vocab_ours.items():
        columns[column] = vocab_peer[term]
    indptr_ours, indptr_peer = np.asarray(load(ours, "indptr")), np.asarray(load(peer, "indptr"))
    indices_peer, offsets = gather_ragged(load(peer, "indices"), indptr_peer, columns)
    same_layout = bool(np.array_equal(offsets, indptr_ours) and np.array_equal(indices_peer, load(ours, "indices")))
    del indices_peer
    data_peer, _ = gather_ragged(load(peer, "data"), indptr_peer, columns)
    same_scores = bool(same_layout and np.allclose(data_peer, load(ours, "data"), rtol=1e-6, atol=0))
    return {"same_vocabulary": same_vocab, "same_postings": same_layout, "same_scores": same_scores}


def top10_agreement(ours: list[list[list[Any]]], peer: list[list[list[Any]]]) -> dict[str, float]:
    """Share of queries whose top-10 sets (score > 0) agree, and whose score lists do (a differing set with equal
    scores is a tie at the 10th place, which bm25s breaks arbitrarily)."""
    import numpy as np

    same_set = same_scores = 0
    for a, b in zip(ours, peer, strict=True):
        same_set += {doc for doc, _ in a} == {doc for doc, _ in b}
        sa, sb = [score for _, score in a], [score for _, score in b]
        same_scores += len(sa) == len(sb) and bool(np.allclose(sa, sb, rtol=1e-5))
    count = max(1, len(ours))
    return {"same_set": same_set / count, "same_scores": same_scores / count}


def exponents(
    sizes: list[int], rows: list[dict[str, Any]], measures: dict[str, Callable[[dict[str, Any]], Any]]
) -> Any:
    from synthetic import growth_exponent

    fitted: dict[str, float | None] = {}
    for name, get in measures.items():
        points = [(size, get(row)) for size, row in zip(sizes, rows, strict=True) if row and get(row)]
        fitted[name] = round(growth_exponent(*zip(*points, strict=True)), 3) if len(points) >= 2 else None
    return fitted


def bench_size(
    docs: int, args: argparse.Namespace, model: Path | None, dense: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    from synthetic import CorpusSpec, write_corpus

    spec = CorpusSpec(num_docs=docs, seed=args.seed)
    corpus_dir = args.cache_dir / f"corpus-{size_label(docs)}-seed{args.seed}"
    start = time.perf_counter()
    write_corpus(spec, corpus_dir, num_queries=args.queries)
    generate_s = time.perf_counter() - start
    print(f"[{size_label(docs)}] corpus ready in {generate_s:.1f}s: {corpus_dir}", file=sys.stderr)
    row: dict[str, Any] = {
        "docs": docs,
        "corpus_bytes": (corpus_dir / "corpus.jsonl").stat().st_size,
        "vocab_size_spec": spec.vocab_size,
        "generate_s": round(generate_s, 2),
    }
    top: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix=f"scale-{size_label(docs)}-", dir=args.work_dir))
    try:
        for repeat in range(args.repeats_build):
            order = ["ours", "bm25s"] if repeat % 2 == 0 else ["bm25s", "ours"]
            for engine in order:
                out = work / f"{engine}-{repeat}"
                t0 = time.perf_counter()
                result = _run_child(engine, corpus_dir, out, args.queries, args.repeats, None)
                print(
                    f"[{size_label(docs)}] {engine} build {result['build_s']:.1f}s, peak RSS "
                    f"{result['peak_rss_mb']:.0f} MiB, {result['qps']:.1f} q/s ({time.perf_counter() - t0:.0f}s)",
                    file=sys.stderr,
                )
                top[engine] = result.pop("top")
                row.setdefault(engine + "_runs", []).append(result)
            if repeat == 0:
                row["same_index"] = same_index(work / "ours-0" / "bm25", work / "bm25s-0")
            for engine in ("ours", "bm25s"):
                shutil.rmtree(work / f"{engine}-{repeat}", ignore_errors=True)
        for engine in ("ours", "bm25s"):
            runs = row.pop(engine + "_runs")
            merged = dict(runs[0])
            merged["build_s_runs"] = [round(run["build_s"], 3) for run in runs]
            merged["build_s"] = statistics.median(run["build_s"] for run in runs)
            merged["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
            merged["peak_rss_over_imports_mb"] = max(run["peak_rss_over_imports_mb"] for run in runs)
            merged["qps_runs"] = [round(rate, 2) for run in runs for rate in run["qps_runs"]]
            merged["qps"] = statistics.median(merged["qps_runs"])
            row[engine] = merged
        row["top10_agreement"] = top10_agreement(top["ours"], top["bm25s"])
        if dense and model is not None:
            out = work / "dense"
            result = _run_child("dense", corpus_dir, out, args.queries, args.repeats, model)
            print(f"[{size_label(docs)}] dense build {result['build_s']:.1f}s", file=sys.stderr)
            row["dense"] = result
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row, top


MEASURES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ours build s": lambda r: r["ours"]["build_s"],
    "bm25s build s": lambda r: r["bm25s"]["build_s"],
    "ours BM25 component s": lambda r: sum(
        s["s"] for name, s in r["ours"]["phases"].items() if name.startswith("bm25")
    ),
    "ours peak RSS": lambda r: r["ours"]["peak_rss_mb"],
    "bm25s peak RSS": lambda r: r["bm25s"]["peak_rss_mb"],
    "ours peak RSS over imports": lambda r: r["ours"]["peak_rss_over_imports_mb"],
    "bm25s peak RSS over imports": lambda r: r["bm25s"]["peak_rss_over_imports_mb"],
    "ours index bytes": lambda r: r["ours"]["index_bytes"],
    "ours BM25 component bytes": lambda r: r["ours"]["component_bytes"],
    "bm25s index bytes": lambda r: r["bm25s"]["index_bytes"],
    "ours q/s": lambda r: r["ours"]["qps"],
    "bm25s q/s": lambda r: r["bm25s"]["qps"],
    "vocabulary (analyzed terms)": lambda r: r["ours"]["vocab_size"],
    "postings": lambda r: r["ours"]["postings"],
    "dense build s": lambda r: r.get("dense", {}).get("build_s"),
    "dense peak RSS over imports": lambda r: r.get("dense", {}).get("peak_rss_over_imports_mb"),
    "dense component bytes": lambda r: r.get("dense", {}).get("component_bytes"),
}


def _mb(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _row_cells(row: dict[str, Any]) -> list[str]:
    ours, peer = row["ours"], row["bm25s"]
    return [
        size_label(row["docs"]),
        f"{ours['vocab_size']:,}",
        f"{ours['postings']:,}",
        f"{ours['build_s']:.1f} / {peer['build_s']:.1f} ({ours['build_s'] / peer['build_s']:.2f}x)",
        f"{MEASURES['ours BM25 component s'](row):.1f}",
        f"{ours['peak_rss_mb']:,.0f} / {peer['peak_rss_mb']:,.0f} ({ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x)",
        f"+{ours['peak_rss_over_imports_mb']:,.0f} / +{peer['peak_rss_over_imports_mb']:,.0f}",
        f"{_mb(ours['index_bytes'])} ({_mb(ours['component_bytes'])}) / {_mb(peer['index_bytes'])}",
        f"{ours['qps']:,.1f} / {peer['qps']:,.1f} ({ours['qps'] / peer['qps']:.2f}x)",
        f"{row['top10_agreement']['same_set']:.0%} ({row['top10_agreement']['same_scores']:.0%})",
    ]


def _dense_cells(row: dict[str, Any]) -> list[str] | None:
    dense = row.get("dense")
    if not dense:
        return None
    encode = dense["phases"].get("dense: encode", {}).get("s", 0.0)
    return [
        size_label(row["docs"]),
        f"{dense['build_s']:.1f}",
        f"{encode:.1f} ({row['docs'] / encode:,.0f} docs/s)" if encode else "-",
        f"{dense['peak_rss_mb']:,.0f} (+{dense['peak_rss_over_imports_mb']:,.0f})",
        f"{_mb(dense['index_bytes'])} ({_mb(dense['component_bytes'])})",
    ]


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)] + [
        "| " + " | ".join(cells) + " |" for cells in rows
    ]


def verdict(fitted: dict[str, float | None], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The acceptance reading: our build time and peak RSS exponents against bm25s's, and the largest size built."""
    checks = {}
    for measure in ("build s", "peak RSS", "peak RSS over imports"):
        ours, peer = fitted[f"ours {measure}"], fitted[f"bm25s {measure}"]
        checks[measure] = {
            "ours": ours,
            "bm25s": peer,
            "no_faster": ours is not None and peer is not None and ours <= peer + ACCEPT_TOLERANCE,
        }
    largest = max(rows, key=lambda row: row["docs"])
    return {
        "tolerance": ACCEPT_TOLERANCE,
        "exponents": checks,
        "largest_built": largest["docs"],
        "largest_peak_rss_mb": largest["ours"]["peak_rss_mb"],
    }


def markdown(results: dict[str, Any]) -> str:
    from benchtools import markdown_table

    env, rows, fitted = results["environment"], results["sizes"], results["exponents"]
    lines = [
        "# Growth table: searchkit BM25 and dense builds vs bm25s on synthetic corpora",
        "",
        "```",
        results["command"],
        "```",
        "",
        markdown_table(
            "machine",
            [
                ("CPU", f"{env['cpu']['cpu']} ({env['cpu']['cores']} cores; flags {', '.join(env['cpu']['flags'])})"),
                ("load average (1 min) at start / end", f"{env['load_start']:.1f} / {env['load_end']:.1f}"),
                ("memory", f"{env['memory_gib']:.0f} GiB"),
                ("versions", ", ".join(f"{name} {version}" for name, version in env["versions"].items())),
                ("threads", "1 (OMP/MKL/OpenBLAS/torch)"),
                ("queries", f"{results['queries']} generated, k={K}, median of {results['repeats']} passes"),
                ("build repeats", str(results["repeats_build"])),
            ],
        ),
        "",
        "## BM25: ours / bm25s on the same tokens",
        "",
    ]
    header = [
        "docs",
        "terms",
        "postings",
        "build s (ours/bm25s)",
        "ours BM25 component s",
        "peak RSS MiB",
        "over imports MiB",
        "index MiB: ours (bm25/) / bm25s",
        "q/s",
        "same top-10 (scores)",
    ]
    lines += _grid(header, [_row_cells(row) for row in rows])
    dense_rows = [cells for cells in (_dense_cells(row) for row in rows) if cells is not None]
    if dense_rows:
        lines += ["", f"## Dense: tiny random bi-encoder (2 layers, 32 wide, max {DENSE_MAX_LENGTH} tokens), fp32 CPU"]
        dense_header = ["docs", "build s", "encode s", "peak RSS MiB (over imports)", "index MiB (dense/)"]
        lines += ["", *_grid(dense_header, dense_rows)]
    lines += ["", "## Growth exponents (slope of log(measure) vs log(docs))", ""]
    lines += _grid(["measure", "exponent"], [[name, "-" if v is None else f"{v:.3f}"] for name, v in fitted.items()])
    check = results["verdict"]
    lines += ["", "## Acceptance", ""]
    for measure, entry in check["exponents"].items():
        lines.append(
            f"- {measure}: exponent ours {entry['ours']} vs bm25s {entry['bm25s']}: "
            f"{'no faster' if entry['no_faster'] else 'FASTER'} (tolerance {check['tolerance']})"
        )
    lines.append(
        f"- largest corpus built: {size_label(check['largest_built'])} documents, peak RSS "
        f"{check['largest_peak_rss_mb']:,.0f} MiB"
    )
    same = all(row["same_index"]["same_scores"] for row in rows)
    lines.append(f"- same vocabulary and score arrays as bm25s at every size: {same}")
    lines += ["", "Per-phase seconds and peak RSS of every build are in the JSON (`sizes[].ours.phases`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        engine, corpus, out, result, queries, repeats, model_path = argv[1:8]
        _child(engine, Path(corpus), Path(out), Path(result), int(queries), int(repeats), model_path)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["100k", "300k", "1M"], help="corpus sizes (100k, 1M, 2500)")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes {SMOKE_SIZES}, few queries: seconds")
    parser.add_argument(
        "--dense-sizes", nargs="*", default=None, help="sizes with a dense build (default: every size; none: no dense)"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed query passes")
    parser.add_argument("--repeats-build", type=int, default=1, help="builds per engine and size (median time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "searchkit-scale")
    parser.add_argument("--work-dir", type=Path, default=None, help="where indexes are built (deleted after)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = [str(size) for size in SMOKE_SIZES]
        args.queries, args.repeats = min(args.queries, 20), 1
        if args.dense_sizes is None:
            args.dense_sizes = [str(SMOKE_SIZES[0])]
    sizes = sorted({parse_size(size) for size in args.sizes})
    dense_sizes = set(sizes) if args.dense_sizes is None else {parse_size(size) for size in args.dense_sizes}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)

    from benchtools import cpu_description, versions, write_json
    from synthetic import CorpusSpec, vocabulary

    command = "python bench/scale.py " + " ".join(shlex.quote(arg) for arg in argv)
    environment: dict[str, Any] = {
        "cpu": cpu_description(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "versions": versions("numpy", "bm25s", "PyStemmer", "torch", "sentence-transformers", "faiss-cpu"),
        "load_start": os.getloadavg()[0],
    }
    print(f"CPU: {environment['cpu']['cpu']} ({environment['cpu']['cores']} cores)", file=sys.stderr)
    model: Path | None = None
    if dense_sizes & set(sizes):
        model = make_tiny_bi_encoder(args.cache_dir / "tiny-bi-encoder", vocabulary(TINY_MODEL_WORDS))
    rows = []
    for docs in sizes:
        row, _ = bench_size(docs, args, model, docs in dense_sizes)
        rows.append(row)
    environment["load_end"] = os.getloadavg()[0]
    fitted = exponents(sizes, rows, MEASURES)
    results: dict[str, Any] = {
        "command": command,
        "environment": environment,
        "spec": CorpusSpec(num_docs=1, seed=args.seed).to_json() | {"num_docs": sizes},
        "queries": args.queries,
        "repeats": args.repeats,
        "repeats_build": args.repeats_build,
        "dense_sizes": sorted(dense_sizes & set(sizes)),
        "sizes": rows,
        "exponents": fitted,
    }
    results["verdict"] = verdict(fitted, rows)
    table = markdown(results)
    print(table)
    write_json(args.json, results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    from benchtools import run_main

    run_main(main)
