"""Cross-check of searchkit compare's raw t-test p-values against ranx on the shipped SciFact runs.

Run from eval/results: python significance_ranx_check.py (see significance_cpu.md).
"""

import sys

sys.path.insert(0, "../..")

import ranx

from searchkit.evaluate.metrics import evaluate
from searchkit.evaluate.significance import compare_to_baseline
from searchkit.formats import read_qrels, read_run

R = "scifact-quality-20261130-074954"
names = ["hybrid-base", "hybrid-ft", "rerank-alone", "rerank-fusion"]
qrels = read_qrels("../../../shared/datasets/scifact", "test")
runs = {n: read_run(f"{R}.{n}.trec") for n in names}
evaluations = {n: evaluate(r, qrels, ["nDCG@10"]) for n, r in runs.items()}
ours = compare_to_baseline(evaluations, "hybrid-base", ["nDCG@10"], "t")
ranx_runs = []
for n, r in runs.items():
    run = ranx.Run.from_dict({q: {h.doc_id: h.score for h in hits} for q, hits in r.items() if q in qrels})
    run.name = n
    ranx_runs.append(run)
ranx_qrels = ranx.Qrels.from_dict({q: dict(d) for q, d in qrels.items()})
report = ranx.compare(ranx_qrels, ranx_runs, metrics=["ndcg@10"], stat_test="student", make_comparable=True)
for n in names[1:]:
    theirs = report.comparisons["hybrid-base", n]["ndcg@10"]["p_value"]
    print(
        f"{n:15s} ours raw p {ours.raw[n]['nDCG@10']:.6g}  ranx student p {theirs:.6g}  "
        f"nDCG@10 ours {evaluations[n].aggregate['nDCG@10']:.4f} ranx {report.results[n]['ndcg@10']:.4f}"
    )
