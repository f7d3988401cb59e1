#!/usr/bin/env bash
# Each feature alone, over seeds, then a table of mean/std accuracy and weighted F1 per feature.
# Override any of these with environment variables, e.g.
#   FEATS="demo-hubert-large-UTT demo-roberta-large-UTT" SEEDS="0 1" EPOCHS=20 ./run_eval_unimodal.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
DATASET=${DATASET:-demo}
FEATS=${FEATS:-"demo-clip-vit-base-UTT demo-videomae-large-UTT demo-hubert-large-UTT demo-wav2vec2-base-UTT demo-roberta-large-UTT demo-bert-base-UTT demo-openface-au-FRM demo-vlm-scores"}
SEEDS=${SEEDS:-"0 1 2 3 4"}
EPOCHS=${EPOCHS:-40}
MODEL=${MODEL:-auto_attention}
LR=${LR:-1e-3}
BATCH_SIZE=${BATCH_SIZE:-64}
DEVICE=${DEVICE:-auto}
SAVE_ROOT=${SAVE_ROOT:-./saved/unimodal_${DATASET}}
EXTRA_ARGS=${EXTRA_ARGS:-}

for feat in $FEATS; do
  for seed in $SEEDS; do
    echo "== feature ${feat}, seed ${seed}"
    # shellcheck disable=SC2086
    if ! $PY train.py --seed "$seed" --dataset "$DATASET" --save_root "${SAVE_ROOT}/${feat}" \
        --feat "['${feat}']" --model "$MODEL" --lr "$LR" --batch_size "$BATCH_SIZE" --epochs "$EPOCHS" \
        --device "$DEVICE" --test --quiet $EXTRA_ARGS; then
      echo "error: training failed for feature=${feat} seed=${seed}" >&2
      exit 1
    fi
  done
done
$PY eval_avg_performance.py --save_root "$SAVE_ROOT"
