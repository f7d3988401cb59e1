#!/usr/bin/env bash
# The whole pipeline on the embedded demo, on a fresh machine, in minutes:
#   environment -> demo data -> splits -> feature check -> unimodal ablation -> stage 1 (multimodal model)
#   -> teacher report -> consensus pseudo labels -> stage 2 (labelled + pseudo, 2 seeds) -> soft-voting ensemble
#   -> re-ranking rules -> submission, with a final table of test F1 after each step.
# Environment variables: SEEDS (default "0"), EPOCHS (20), MM_EPOCHS (30), S2_EPOCHS (15), DEVICE (auto),
# VENV (.venv).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
MM_EPOCHS=${MM_EPOCHS:-30}
S2_EPOCHS=${S2_EPOCHS:-15}
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
    --run_name stage1 --test --quiet 2>>"$SAVE_ROOT/multimodal.log"
done

echo "== scores on the demo's test list (labels used only for scoring)"
"$PY" eval_avg_performance.py --save_root "$SAVE_ROOT/unimodal" --out "$SAVE_ROOT/summary" --highlight multimodal-all

TEACHER=features/demo/teachers/demo-vlm.jsonl
STAGE1="$SAVE_ROOT/unimodal/multimodal-all/demo/seed0/auto_attention/stage1"
if [ ! -f "$STAGE1/best.pth" ]; then
  echo "== stage 1 (seed 0) for the semi-supervised steps"
  "$PY" train.py --dataset demo --seed 0 --feat "[${FEAT_LIST%,}]" --model auto_attention --lr 1e-3 --batch_size 64 \
    --epochs "$MM_EPOCHS" --device "$DEVICE" --save_root "$SAVE_ROOT/unimodal/multimodal-all" --run_name stage1 --test --quiet \
    2>>"$SAVE_ROOT/multimodal.log"
fi
echo "== teacher: accuracy and coverage of the VLM teacher per confidence level (labelled clips)"
"$PY" preprocess/teacher_report.py --dataset demo --parts train --teacher "$TEACHER" --out "$SAVE_ROOT/teacher_report" \
  | grep -E "^\| (confidence|= |all labelled)"
echo "== pseudo labels: consensus of the stage-1 model and the teacher on the unlabelled pool (at most 400 a class)"
"$PY" pseudo_label.py --dataset demo --seed 0 --strategy consensus --top_k 400 --runs "$STAGE1" --teachers "$TEACHER" \
  --device "$DEVICE" --out "$SAVE_ROOT/pseudo_consensus.json" 2>>"$SAVE_ROOT/pseudo.log" | grep -E "^ *(class|source|all) "
echo "== stage 2: labelled + pseudo-labelled, seeds 0 and 1 ($S2_EPOCHS epochs; log: $SAVE_ROOT/stage2.log)"
for seed in 0 1; do
  "$PY" train.py --dataset demo --split "$SAVE_ROOT/pseudo_consensus.json" --seed "$seed" --feat "[${FEAT_LIST%,}]" \
    --model auto_attention --lr 1e-3 --batch_size 64 --epochs "$S2_EPOCHS" --device "$DEVICE" \
    --save_root "$SAVE_ROOT/stage2" --run_name stage2 --test --quiet 2>>"$SAVE_ROOT/stage2.log" | grep "TEST:"
done
echo "== ensemble (soft voting: stage 1 + both stage-2 runs) + re-ranking rules (rerank_rules.yaml) + submission"
S2="$SAVE_ROOT/stage2/demo"
"$PY" ensemble.py --preds "$STAGE1" "$S2/seed0/auto_attention/stage2" "$S2/seed1/auto_attention/stage2" \
  --valid_preds "$STAGE1" "$S2/seed0/auto_attention/stage2" "$S2/seed1/auto_attention/stage2" --mode soft \
  --rules rerank_rules.yaml --teacher "$TEACHER" --candidates features/demo/test.csv \
  --labels features/demo/test_labels.csv --out "$SAVE_ROOT/submission.csv" 2>>"$SAVE_ROOT/ensemble.log" \
  | tee "$SAVE_ROOT/ensemble.txt"
echo "== test weighted F1 after each step"
"$PY" - "$SAVE_ROOT" <<'PYEOF'
import json, os, sys
import pandas as pd
root = sys.argv[1]
def f1(run):
    return json.load(open(os.path.join(run, "test_metrics.json")))["test_f1"]
best_single = pd.read_csv(os.path.join(root, "summary.csv"))
best_single = best_single[~best_single["experiment"].str.contains("multimodal")]
rows = [("best single feature (unimodal)", best_single["test_f1_mean"].max()),
        ("stage 1: multimodal, labelled only", f1(os.path.join(root, "unimodal/multimodal-all/demo/seed0/auto_attention/stage1")))]
for seed in (0, 1):
    rows.append((f"stage 2: + consensus pseudo labels, seed {seed}", f1(os.path.join(root, f"stage2/demo/seed{seed}/auto_attention/stage2"))))
pred = pd.read_csv(os.path.join(root, "submission_pred.csv"))
from sklearn.metrics import f1_score
ens = [l for l in open(os.path.join(root, "ensemble.txt")) if l.strip().startswith("ensemble (soft)")]
if ens:
    rows.append(("ensemble: soft vote of the three", float(ens[0].split()[-2])))
rows.append(("ensemble + re-ranking rules (submission)", f1_score(pred["label"], pred["pred"], average="weighted")))
for name, value in rows:
    print(f"{name:<48} {value:.4f}")
PYEOF
echo "== done in $(( $(date +%s) - start ))s; runs and plots in $SAVE_ROOT; submission $SAVE_ROOT/submission.csv"
