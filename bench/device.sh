#!/usr/bin/env bash
# Every GPU check of searchkit in ONE device call, under a hard deadline (default 8 minutes), saving each step's
# output under $OUT as soon as it finishes, so that a step cut by the deadline still leaves the ones before it.
#
#   GPU (one `device` run; build the kit here first, see eval/results/device_PENDING.md):
#     command: bash bench/device.sh
#     carry:   [".device/faiss-gpu", ".device/wheels", ".device/scifact.tar.xz", ".device/model-arch"]
#   ~50 MB with the checkout. The speed benchmarks and parity tests need the model's shape, not its values, so
#   without real weights (.device/model, 45 MB: too much for the same call) the script builds all-MiniLM-L6-v2's
#   architecture with seeded random weights from .device/model-arch (config + tokenizer, 1 MB); peers load the same
#   folder. The training step needs the real weights: it runs when .device/model (or model.tar.xz) was carried,
#   e.g. in a second call that carries it instead of the faiss kit.
#   CPU rehearsal (same script, tiny sizes, no kit; the slow test tier runs it):
#     bash bench/device.sh --cpu [--out DIR]
#
# Steps, in order (each with its own timeout inside the deadline; a failed step is recorded and the next runs):
#   setup     faiss-gpu from the carried kit, the wheels the image lacks, the model unpacked  (GPU only)
#   tests     pytest -m gpu (CPU/GPU parity of the encoder, FAISS and the reranker)          (GPU only)
#   dense     bench/dense.py: our encoder vs SentenceTransformer.encode, FAISS GPU vs raw faiss, CPU/GPU top-10
#   rerank    bench/rerank.py: CrossEncoderReranker vs CrossEncoder.predict (fp32), agreement, nDCG@10
#   latency   bench/latency.py: p50/p95/p99 of bm25, dense, hybrid, hybrid + rerank top-20/100
#   train     the SciFact GPU reranker recipe, then its test-split suite
# The summary table (step, status, seconds) is printed last and written to $OUT/summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
DEADLINE=${DEVICE_DEADLINE:-480}
OUT_DIR=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --out) OUT_DIR=$2; shift ;;
    --deadline) DEADLINE=$2; shift ;;
    *) echo "bench/device.sh: unknown argument $1 (use --cpu, --out DIR, --deadline SECONDS)" >&2; exit 2 ;;
  esac
  shift
done
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
# the CPU rehearsal encodes SciFact on 2 cores: minutes, not the GPU's seconds
[ "$MODE" = cpu ] && [ -z "${DEVICE_DEADLINE:-}" ] && [ "$DEADLINE" = 480 ] && DEADLINE=1500
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
START=$(date +%s)
SUMMARY="$OUT_DIR/summary.md"
printf '| step | status | seconds |\n| --- | --- | --- |\n' > "$SUMMARY"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# step NAME SECONDS COMMAND...: run COMMAND with at most SECONDS (less if the deadline is nearer), log to $OUT
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - START) - 5 ))
  if [ "$left" -le 10 ]; then
    printf '| %s | skipped (deadline) | 0 |\n' "$name" >> "$SUMMARY"; return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local began=$(date +%s) status
  echo "== $name (at most ${limit}s)"
  timeout --signal=TERM --kill-after=5 "$limit" bash -c "$*" > "$OUT_DIR/$name.txt" 2>&1
  status=$?
  tail -n 25 "$OUT_DIR/$name.txt"
  case $status in 0) status=ok ;; 124|137) status="timed out" ;; *) status="failed ($status)" ;; esac
  printf '| %s | %s | %s |\n' "$name" "$status" "$(( $(date +%s) - began ))" >> "$SUMMARY"
}

if [ "$MODE" = gpu ]; then
  KIT=.device
  DATA=/tmp/searchkit-data
  MODEL=/tmp/searchkit-model
  step setup 150 "bash $KIT/faiss-gpu/setup.sh \
    && python3 -m pip install -q --no-index --no-deps --target /tmp/site $KIT/wheels/*.whl \
    && mkdir -p $DATA && tar -C $DATA -xJf $KIT/scifact.tar.xz \
    && if [ -d $KIT/model ]; then cp -r $KIT/model $MODEL; \
       elif [ -f $KIT/model.tar.xz ]; then mkdir -p $MODEL && tar -C $MODEL --strip-components=1 -xJf $KIT/model.tar.xz; \
       else python3 -c 'import sys, torch; from transformers import AutoConfig, AutoModel, AutoTokenizer; \
         torch.manual_seed(0); c = AutoConfig.from_pretrained(sys.argv[1]); AutoModel.from_config(c).save_pretrained(sys.argv[2]); \
         AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])' $KIT/model-arch $MODEL; fi"
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
  [ -f /tmp/faiss-gpu/env.sh ] && . /tmp/faiss-gpu/env.sh
  DEVICE=cuda
  SIZES="--nvec 1000000 --nq 10000"
  RERANK_SIZES="--queries 300 --depth 100"
  LATENCY_SIZES="--queries 200 --rerank-queries 100"
  TRAIN_RECIPE=training/scifact-gpu.toml
  step tests 90 "SEARCHKIT_TEST_DENSE_MODEL=$MODEL python3 -m pytest -q -m gpu -p no:cacheprovider tests"
else
  DATA=../shared/datasets
  MODEL=all-MiniLM-L6-v2
  DEVICE=cpu
  SIZES="--limit 32 --nvec 2000 --nq 50 --repeats 1"
  RERANK_SIZES="--queries 3 --depth 4"
  LATENCY_SIZES="--queries 3 --rerank-queries 1"
  TRAIN_RECIPE=training/scifact-cpu-small.toml
fi

INDEX=$OUT_DIR/index-scifact
step index $([ "$MODE" = cpu ] && echo 480 || echo 120) "python3 -m searchkit --no-progress index build --corpus $DATA/scifact -o $INDEX --dense $MODEL --overwrite"
step dense 150 "python3 bench/dense.py --model $MODEL --data-root $DATA --device $DEVICE $SIZES \
  --json $OUT_DIR/bench_dense.json"
step rerank 150 "python3 bench/rerank.py --base-model $MODEL --data $DATA/scifact --index $INDEX --device $DEVICE \
  $RERANK_SIZES \
  --json $OUT_DIR/bench_rerank.json"
step latency 90 "python3 bench/latency.py --base-model $MODEL --index $INDEX --data $DATA/scifact --device $DEVICE \
  $LATENCY_SIZES \
  --json $OUT_DIR/bench_latency.json"
# the training recipe with this machine's paths (data, the index just built, an output folder outside $OUT)
RECIPE=$OUT_DIR/train-recipe.toml
TRAINED=${TMPDIR:-/tmp}/searchkit-device-reranker
sed -e "s#^corpus = .*#corpus = \"$(cd "$DATA" && pwd)/scifact\"#" -e "s#^index = .*#index = \"$INDEX\"#" \
    -e "s#^output = .*#output = \"$TRAINED\"#" -e "s#^base_model = .*#base_model = \"$MODEL\"#" \
    "$TRAIN_RECIPE" > "$RECIPE"
if [ "$MODE" = gpu ] && [ ! -d .device/model ] && [ ! -f .device/model.tar.xz ]; then
  printf '| train | skipped (no real weights carried) | 0 |\n' >> "$SUMMARY"
elif [ "$MODE" = gpu ]; then
  step train 240 "python3 -m searchkit --no-progress train $RECIPE --overwrite && cp $TRAINED/searchkit.json $OUT_DIR/"
  step rerank-trained 90 "python3 bench/rerank.py --model $TRAINED --data $DATA/scifact --index $INDEX \
    --device $DEVICE --queries 300 --depth 20 --json $OUT_DIR/bench_rerank_trained.json"
else  # the rehearsal trains two steps on a dozen queries: it checks the plumbing, not the model
  step train 150 "python3 -m searchkit --no-progress train $RECIPE --overwrite --max-steps 2 --limit-queries 12 \
    && cp $TRAINED/searchkit.json $OUT_DIR/"
fi

echo "== summary ($MODE, $(( $(date +%s) - START ))s of ${DEADLINE}s; outputs in $OUT_DIR)"
cat "$SUMMARY"
! grep -q "failed" "$SUMMARY"
