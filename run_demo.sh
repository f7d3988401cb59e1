#!/usr/bin/env bash
# The whole foundation on the embedded demo, on a fresh machine, in minutes:
#   environment -> demo data -> splits -> feature check -> unimodal ablation -> multimodal model -> scores
# Environment variables: SEEDS (default "0"), EPOCHS (20), MM_EPOCHS (30), DEVICE (auto), VENV (.venv).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
MM_EPOCHS=${MM_EPOCHS:-30}
DEVICE=${DEVICE:-auto}
SAVE_ROOT=${SAVE_ROOT:-./saved/demo}
ALL_FEATS="demo-clip-vit-base-UTT demo-videomae-large-UTT demo-hubert-large-UTT demo-wav2vec2-base-UTT demo-roberta-large-UTT demo-bert-base-UTT demo-openface-au-FRM demo-vlm-scores"
start=$(date +%s)

if [ ! -f features/demo/test_labels.csv ]; then
  echo "== making the demo data set (features/demo)"
  "$PY" preprocess/make_demo.py
fi
if [ ! -d features/demo/demo-vlm-desc-tfidf ]; then
  echo "== VLM knowledge: embedding the teacher's descriptions (TF-IDF+SVD fitted on the labelled clips)"
  "$PY" preprocess/vlm_features.py --dataset demo --teacher features/demo/teachers/demo-vlm.jsonl --features desc \
    --quiet 2>&1 | tail -n 1
fi
echo "== building splits (train_lst/demo)"
"$PY" preprocess/build_splits.py --dataset demo
echo "== checking registered features against the disk"
"$PY" preprocess/check_feat_dim.py --dataset demo --feat $ALL_FEATS

echo "== unimodal ablation: each feature alone (seeds: $SEEDS, $EPOCHS epochs; log: $SAVE_ROOT/unimodal.log)"
rm -rf "$SAVE_ROOT"
mkdir -p "$SAVE_ROOT"
PYTHON="$PY" FEATS="$ALL_FEATS" SEEDS="$SEEDS" EPOCHS="$EPOCHS" DEVICE="$DEVICE" SAVE_ROOT="$SAVE_ROOT/unimodal" \
  ./run_eval_unimodal.sh 2>"$SAVE_ROOT/unimodal.log" | grep -E "^(== feature|TEST:)"

echo "== multimodal: auto_attention over all 8 features ($MM_EPOCHS epochs; log: $SAVE_ROOT/multimodal.log)"
FEAT_LIST=$(printf "'%s'," $ALL_FEATS)
for seed in $SEEDS; do
  "$PY" train.py --dataset demo --seed "$seed" --feat "[${FEAT_LIST%,}]" --model auto_attention --lr 1e-3 \
    --batch_size 64 --epochs "$MM_EPOCHS" --device "$DEVICE" --save_root "$SAVE_ROOT/unimodal/multimodal-all" \
    --test --quiet 2>>"$SAVE_ROOT/multimodal.log"
done

echo "== scores on the demo's test list (labels used only for scoring)"
"$PY" eval_avg_performance.py --save_root "$SAVE_ROOT/unimodal" --out "$SAVE_ROOT/summary" --highlight multimodal-all
echo "== done in $(( $(date +%s) - start ))s; runs and plots in $SAVE_ROOT"
