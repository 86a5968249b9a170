"""Issue 23 acceptance, plumbing at collection scale: `searchkit rerank` on a TREC run searchkit did not write.

The run: scikit-learn TF-IDF (cosine, sublinear tf, English stopwords) top-100 of SciFact test, written by this
script in Anserini's layout (4-decimal scores, tag ``sklearn-tfidf``). The reranker: a randomly initialised 2-layer
cross-encoder (searchkit.models.tiny), because no trained English reranker is in this workspace: its scores mean
nothing, the point is that the command runs on a foreign file and reports the input run's recall at depth.

Usage: python eval/results/rerank_foreign_run.py WORKDIR   (then the `searchkit rerank` command it prints)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

DATA = Path("/work/shared/datasets/scifact")


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").open(encoding="utf-8")]
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()}
    judged = {line.split("\t")[0] for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    matrix = vectorizer.fit_transform([(d.get("title", "") + " " + d["text"]).strip() for d in docs])
    ids = [str(d["_id"]) for d in docs]
    with (work / "tfidf.trec").open("w") as out:
        for qid in sorted(judged, key=int):
            scores = (matrix @ vectorizer.transform([queries[qid]]).T).toarray().ravel()
            top = np.argsort(-scores, kind="stable")[:100]
            for rank, row in enumerate(top, start=1):
                out.write(f"{qid} Q0 {ids[row]} {rank} {scores[row]:.4f} sklearn-tfidf\n")
    from searchkit.models.tiny import make_tiny_cross_encoder

    words = sorted(vectorizer.vocabulary_)[:5000]
    make_tiny_cross_encoder(work / "tiny-ce", words=words)
    print(f"wrote {work / 'tfidf.trec'} and {work / 'tiny-ce'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
