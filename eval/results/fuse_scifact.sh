#!/usr/bin/env bash
# Issue 23 acceptance: `searchkit fuse` of the BM25 and dense run files equals the Searcher's own hybrid (RRF, k=60,
# depth 100) on SciFact test, to the bit. Run from the repository root: bash eval/results/fuse_scifact.sh
set -euo pipefail
data=${DATA:-/work/shared/datasets/scifact}
work=${WORK:-/tmp/h23a-idx/fuse-scifact}
mkdir -p "$work"
python -m searchkit index build --corpus "$data" -o "$work/index" --dense all-MiniLM-L6-v2 --device cpu --overwrite
for mode in bm25 dense hybrid; do
  python -m searchkit run "$work/index" "$data" --split test --mode "$mode" -k 100 --depth 100 -o "$work/$mode.trec"
done
python -m searchkit fuse "$work/bm25.trec" "$work/dense.trec" -o "$work/fused.trec" --method rrf -k 100 --tag searchkit
cmp "$work/hybrid.trec" "$work/fused.trec" && echo "IDENTICAL: fused.trec == hybrid.trec ($(wc -l < "$work/hybrid.trec") lines)"
python -m searchkit score "$data" "$work/hybrid.trec" -m nDCG@10 -m RR@10 -m R@100
python -m searchkit score "$data" "$work/fused.trec" -m nDCG@10 -m RR@10 -m R@100
