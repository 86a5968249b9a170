#!/usr/bin/env bash
# Issue 23 acceptance, CPU-cheap variant: `searchkit fuse` of two first stages' run files equals the Searcher's own
# hybrid (RRF k=60 over the top 100 of each) on SciFact test, to the bit. The two stages are BM25 over the English
# analyzer (stemmed, stopwords, k1 1.5 b 0.75) and a second BM25 over Lucene's CJK-bigram analyzer without stemmer or
# stopwords, k1 0.9 b 0.4 (a different ranking; the index builds in seconds; the dense variant is fuse_scifact.sh).
# Run from the repository root: bash eval/results/fuse_scifact_bm25.sh
set -euo pipefail
data=${DATA:-/work/shared/datasets/scifact}
work=${WORK:-/tmp/h23a-idx/fuse-bm25}
mkdir -p "$work"
python -c "
import sys
from searchkit.config import BM25Config
from searchkit.index import Index
second = BM25Config(analyzer='cjk-bigram', stemmer=None, stopwords=None, k1=0.9, b=0.4)
Index.build(sys.argv[1], sys.argv[2], bm25=[BM25Config(), second], overwrite=True)
" "$data" "$work/index"
for mode in bm25 bm25.cjk-bigram hybrid; do
  python -m searchkit run "$work/index" "$data" --split test --mode "$mode" -k 100 --depth 100 -o "$work/$mode.trec"
done
python -m searchkit fuse "$work/bm25.trec" "$work/bm25.cjk-bigram.trec" -o "$work/fused.trec" -k 100 --tag searchkit
cmp "$work/hybrid.trec" "$work/fused.trec" && echo "IDENTICAL: fused.trec == hybrid.trec ($(wc -l < "$work/hybrid.trec") lines)"
for run in bm25 bm25.cjk-bigram hybrid fused; do
  python -m searchkit score "$data" "$work/$run.trec" -m ndcg_cut_10 -m recip_rank -m recall_100 | sed -n 3p
done
