#!/usr/bin/env bash
# Each feature alone, over seeds, then a table of mean/std accuracy and weighted F1 per feature.
# Override any of these with environment variables, e.g.
#   FEATS="demo-hubert-large-UTT demo-roberta-large-UTT" SEEDS="0 1" EPOCHS=20 ./run_eval_unimodal.sh
# Many runs at once (engine/grid.py): JOBS=4 trains four at a time (each its own process, its output in
# ${SAVE_ROOT}/grid/logs/<feature>_seed<k>.log); GPUS="0,1,2,3" gives each run one GPU; GRID_ARGS passes further
# grid flags, e.g. GRID_ARGS="--cluster slurm --slurm_partition gpu --slurm_gpus_per_task 1". There a failed run
# is named with its log while the others finish, and finished runs are skipped on a rerun. Without JOBS and GPUS
# the runs go one after another and the first failure stops the script, as before.
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
JOBS=${JOBS:-1}
GPUS=${GPUS:-}
GRID_ARGS=${GRID_ARGS:-}

# the train.py flags of one run: feature $1, seed $2, one a line
run_args() {
  printf '%s\n' --seed "$2" --dataset "$DATASET" --save_root "${SAVE_ROOT}/$1" --feat "['$1']" --model "$MODEL" \
    --lr "$LR" --batch_size "$BATCH_SIZE" --epochs "$EPOCHS" --device "$DEVICE" --test --quiet
}

if [ "$JOBS" = 1 ] && [ -z "$GPUS" ] && [ -z "$GRID_ARGS" ]; then
  for feat in $FEATS; do
    for seed in $SEEDS; do
      echo "== feature ${feat}, seed ${seed}"
      mapfile -t args < <(run_args "$feat" "$seed")
      # shellcheck disable=SC2086
      if ! $PY train.py "${args[@]}" $EXTRA_ARGS; then
        echo "error: training failed for feature=${feat} seed=${seed}" >&2
        exit 1
      fi
    done
  done
else
  # one run a line for the grid: "<feature>_seed<k><TAB><train.py flags, shell-quoted>"
  mkdir -p "${SAVE_ROOT}/grid"
  for feat in $FEATS; do
    for seed in $SEEDS; do
      mapfile -t args < <(run_args "$feat" "$seed")
      printf '%s_seed%s\t' "$feat" "$seed"
      printf '%q ' "${args[@]}"
      printf '%s\n' "$EXTRA_ARGS"
    done
  done > "${SAVE_ROOT}/grid/runs.txt"
  # shellcheck disable=SC2086
  if ! $PY -m engine.grid --specs "${SAVE_ROOT}/grid/runs.txt" --grid_dir "${SAVE_ROOT}/grid" --jobs "$JOBS" \
      ${GPUS:+--gpus "$GPUS"} $GRID_ARGS; then
    echo "error: training failed for some runs (named above); the table is not made" >&2
    exit 1
  fi
fi
$PY eval_avg_performance.py --save_root "$SAVE_ROOT"
