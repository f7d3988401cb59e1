#!/usr/bin/env bash
# The whole pipeline on the embedded demo, on a fresh machine, in minutes:
#   environment -> demo data -> splits -> feature check -> unimodal ablation -> stage 1 (multimodal model)
#   -> teacher report -> consensus pseudo labels -> stage 2 (labelled + pseudo, 2 seeds) -> soft-voting ensemble
#   -> re-ranking rules -> submission, with a final table of test F1 after each step and each stage's wall time.
# Environment variables: SEEDS (default "0"), EPOCHS (20), MM_EPOCHS (30), S2_EPOCHS (15), DEVICE (auto),
# VENV (.venv), and for speed:
#   JOBS (2): training processes at once. With 2 or more the unimodal runs go JOBS at a time (run_eval_unimodal.sh's
#     grid) in the background, beside stage 1 and the pseudo labels (they feed neither), and the two stage-2 seeds
#     train at once. JOBS=1: one process at a time, the stages one after another (with PATIENCE=0: the schedule
#     of the script before these variables).
#   THREADS (CPU cores / JOBS, at least 1): CPU threads of each training process (train.py --threads); 1 on 2
#     cores, where a process with a thread per core waits on the threads of the others.
#   PATIENCE (10): early stopping of stage 1 (train.py --patience; 0: off, all MM_EPOCHS). Its best epoch is
#     still the one kept and tested; the other runs always run all their epochs.
# Another JOBS or THREADS changes a run's floating-point sums, so its last digits and sometimes its best epoch.
set -euo pipefail
cd "$(dirname "$0")"
now() { echo "${EPOCHREALTIME:-$(date +%s)}"; }  # seconds (bash 5: to the microsecond)
t_data=$(now)
source scripts/ensure_env.sh
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
MM_EPOCHS=${MM_EPOCHS:-30}
S2_EPOCHS=${S2_EPOCHS:-15}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-2}
CORES=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
THREADS=${THREADS:-$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))}
PATIENCE=${PATIENCE:-10}
SAVE_ROOT=${SAVE_ROOT:-./saved/demo}
ALL_FEATS="demo-clip-vit-base-UTT demo-videomae-large-UTT demo-hubert-large-UTT demo-wav2vec2-base-UTT demo-roberta-large-UTT demo-bert-base-UTT demo-openface-au-FRM demo-vlm-scores"
# several at once: the unimodal runs longest first (the AU sequences), so that the long one does not start last
UNI_FEATS=$ALL_FEATS
if [ "$JOBS" != 1 ]; then UNI_FEATS="demo-openface-au-FRM ${ALL_FEATS/ demo-openface-au-FRM/}"; fi
FEAT_LIST=$(printf "'%s'," $ALL_FEATS)
S1_ARGS=(--threads "$THREADS")
if [ "$PATIENCE" != 0 ]; then S1_ARGS+=(--patience "$PATIENCE"); fi

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

t_unimodal=$(now)
rm -rf "$SAVE_ROOT"
mkdir -p "$SAVE_ROOT"
unimodal() {  # run_eval_unimodal.sh over all features; its log in $SAVE_ROOT/unimodal.log, its end time in unimodal.end
  local rc=0
  PYTHON="$PY" FEATS="$UNI_FEATS" SEEDS="$SEEDS" EPOCHS="$EPOCHS" DEVICE="$DEVICE" SAVE_ROOT="$SAVE_ROOT/unimodal" \
    JOBS="$JOBS" "$@" ./run_eval_unimodal.sh 2>"$SAVE_ROOT/unimodal.log" || rc=$?
  now >"$SAVE_ROOT/unimodal.end"
  return "$rc"
}
unimodal_report() {  # each run's test figures, in the order of ALL_FEATS
  for feat in $ALL_FEATS; do
    for seed in $SEEDS; do
      echo "== feature ${feat}, seed ${seed}"
      grep "^TEST:" "$SAVE_ROOT/unimodal/grid/logs/${feat}_seed${seed}.log"
    done
  done
}
if [ "$JOBS" = 1 ]; then
  echo "== unimodal ablation: each feature alone (seeds: $SEEDS, $EPOCHS epochs, $THREADS thread(s); log: $SAVE_ROOT/unimodal.log)"
  unimodal env EXTRA_ARGS="--no_plots --threads $THREADS" | grep -E "^(== feature|TEST:)"
else
  echo "== unimodal ablation: each feature alone (seeds: $SEEDS, $EPOCHS epochs, $JOBS at a time, $THREADS thread(s) each;" \
    "log: $SAVE_ROOT/unimodal.log), in the background beside stage 1 and the pseudo labels"
  set -m  # its own process group, stopped with the script if the script stops early
  unimodal env GRID_ARGS="--threads $THREADS" EXTRA_ARGS="--no_plots" </dev/null >/dev/null &
  unimodal_pid=$!
  set +m
  trap 'kill -- -"$unimodal_pid" 2>/dev/null || true' EXIT
fi

t_stage1=$(now)
echo "== multimodal: auto_attention over all 8 features ($MM_EPOCHS epochs, patience $PATIENCE; log: $SAVE_ROOT/multimodal.log)"
stage1() {  # the multimodal run of seed $1, its log appended to $SAVE_ROOT/multimodal.log
  "$PY" train.py --dataset demo --seed "$1" --feat "[${FEAT_LIST%,}]" --model auto_attention --lr 1e-3 \
    --batch_size 64 --epochs "$MM_EPOCHS" --device "$DEVICE" --save_root "$SAVE_ROOT/unimodal/multimodal-all" \
    --run_name stage1 --test --quiet "${S1_ARGS[@]}" 2>>"$SAVE_ROOT/multimodal.log"
}
for seed in $SEEDS; do stage1 "$seed"; done
TEACHER=features/demo/teachers/demo-vlm.jsonl
STAGE1="$SAVE_ROOT/unimodal/multimodal-all/demo/seed0/auto_attention/stage1"
if [ ! -f "$STAGE1/best.pth" ]; then
  echo "== stage 1 (seed 0) for the semi-supervised steps"
  stage1 0
fi

t_pseudo=$(now)
echo "== teacher: accuracy and coverage of the VLM teacher per confidence level (labelled clips)"
"$PY" preprocess/teacher_report.py --dataset demo --parts train --teacher "$TEACHER" --out "$SAVE_ROOT/teacher_report" \
  | grep -E "^\| (confidence|= |all labelled)"
echo "== pseudo labels: consensus of the stage-1 model and the teacher on the unlabelled pool (at most 400 a class)"
"$PY" pseudo_label.py --dataset demo --seed 0 --strategy consensus --top_k 400 --runs "$STAGE1" --teachers "$TEACHER" \
  --device "$DEVICE" --out "$SAVE_ROOT/pseudo_consensus.json" 2>>"$SAVE_ROOT/pseudo.log" | grep -E "^ *(class|source|all) "
t_pseudo_end=$(now)

if [ "$JOBS" != 1 ]; then
  if ! wait "$unimodal_pid"; then
    echo "error: the unimodal ablation failed (log: $SAVE_ROOT/unimodal.log):" >&2
    tail -n 5 "$SAVE_ROOT/unimodal.log" >&2
    exit 1
  fi
  trap - EXIT
  echo "== unimodal ablation (run in the background): each run's test figures"
  unimodal_report
fi
echo "== scores on the demo's test list (labels used only for scoring)"
"$PY" eval_avg_performance.py --save_root "$SAVE_ROOT/unimodal" --out "$SAVE_ROOT/summary" --highlight multimodal-all

t_stage2=$(now)
echo "== stage 2: labelled + pseudo-labelled, seeds 0 and 1 ($S2_EPOCHS epochs; logs: $SAVE_ROOT/stage2_seed{0,1}.log)"
stage2() {  # seed $1; its output in $SAVE_ROOT/stage2_seed$1.out, its log in stage2_seed$1.log
  "$PY" train.py --dataset demo --split "$SAVE_ROOT/pseudo_consensus.json" --seed "$1" --feat "[${FEAT_LIST%,}]" \
    --model auto_attention --lr 1e-3 --batch_size 64 --epochs "$S2_EPOCHS" --device "$DEVICE" \
    --save_root "$SAVE_ROOT/stage2" --run_name stage2 --test --quiet --no_plots --threads "$THREADS" \
    >"$SAVE_ROOT/stage2_seed$1.out" 2>"$SAVE_ROOT/stage2_seed$1.log"
}
rcs=()
if [ "$JOBS" = 1 ]; then
  for seed in 0 1; do stage2 "$seed" && rcs+=(0) || rcs+=($?); done
else  # the two seeds at once, each its own process
  stage2 0 & pid0=$!
  stage2 1 & pid1=$!
  wait "$pid0" && rcs+=(0) || rcs+=($?)
  wait "$pid1" && rcs+=(0) || rcs+=($?)
fi
for seed in 0 1; do
  if [ "${rcs[$seed]}" != 0 ]; then
    echo "error: stage 2, seed $seed failed with exit code ${rcs[$seed]} (log: $SAVE_ROOT/stage2_seed$seed.log)" >&2
  fi
done
[ "${rcs[*]}" = "0 0" ] || exit 1
grep -h "^TEST:" "$SAVE_ROOT/stage2_seed0.out" "$SAVE_ROOT/stage2_seed1.out"

t_ensemble=$(now)
echo "== ensemble (soft voting: stage 1 + both stage-2 runs) + re-ranking rules (rerank_rules.yaml) + submission"
S2="$SAVE_ROOT/stage2/demo"
"$PY" ensemble.py --preds "$STAGE1" "$S2/seed0/auto_attention/stage2" "$S2/seed1/auto_attention/stage2" \
  --valid_preds "$STAGE1" "$S2/seed0/auto_attention/stage2" "$S2/seed1/auto_attention/stage2" --mode soft \
  --rules rerank_rules.yaml --teacher "$TEACHER" --candidates features/demo/test.csv \
  --labels features/demo/test_labels.csv --out "$SAVE_ROOT/submission.csv" 2>>"$SAVE_ROOT/ensemble.log" \
  | tee "$SAVE_ROOT/ensemble.txt"
echo "== test weighted F1 after each step, and each stage's wall time"
"$PY" - "$SAVE_ROOT" "$JOBS" "$t_data" "$t_unimodal" "$(cat "$SAVE_ROOT/unimodal.end")" "$t_stage1" "$t_pseudo" \
  "$t_pseudo_end" "$t_stage2" "$t_ensemble" <<'PYEOF'
import json, os, sys, time
import pandas as pd
root, jobs = sys.argv[1], int(sys.argv[2])
# the times as bash wrote them (a decimal comma in some locales)
t_data, t_uni, t_uni_end, t_s1, t_pseudo, t_pseudo_end, t_s2, t_ens = (float(t.replace(",", "."))
                                                                      for t in sys.argv[3:])
end = time.time()
def f1(run):
    return json.load(open(os.path.join(run, "test_metrics.json")))["test_f1"]
best_single = pd.read_csv(os.path.join(root, "summary.csv"))
best_single = best_single[~best_single["experiment"].str.contains("multimodal")]
# (step, test F1 or None, the wall time of the stage it ends, in seconds, or None)
rows = [("demo data, features, splits (environment check included)", None, t_uni - t_data),
        ("best single feature (unimodal ablation)", best_single["test_f1_mean"].max(), t_uni_end - t_uni),
        ("stage 1: multimodal, labelled only", f1(os.path.join(root, "unimodal/multimodal-all/demo/seed0/auto_attention/stage1")),
         t_pseudo - t_s1),
        ("teacher report + consensus pseudo labels", None, t_pseudo_end - t_pseudo)]
for seed in (0, 1):
    rows.append((f"stage 2: + consensus pseudo labels, seed {seed}", f1(os.path.join(root, f"stage2/demo/seed{seed}/auto_attention/stage2")),
                 t_ens - t_s2 if seed == 0 else None))
pred = pd.read_csv(os.path.join(root, "submission_pred.csv"))
from sklearn.metrics import f1_score
ens = [l for l in open(os.path.join(root, "ensemble.txt")) if l.strip().startswith("ensemble (soft)")]
if ens:
    rows.append(("ensemble: soft vote of the three", float(ens[0].split()[-2]), end - t_ens))
rows.append(("ensemble + re-ranking rules (submission)", f1_score(pred["label"], pred["pred"], average="weighted"),
             None if ens else end - t_ens))
print(f"{'step':<58} {'test F1':>7} {'wall s':>7}")
for name, value, seconds in rows:
    print(f"{name:<58} {'-' if value is None else f'{value:.4f}':>7} {'' if seconds is None else f'{seconds:.1f}':>7}")
print(f"{'total (elapsed)':<58} {'':>7} {end - t_data:>7.1f}")
if jobs > 1:
    print("(the unimodal ablation ran in the background, beside stage 1 and the pseudo labels: its time overlaps theirs)")
PYEOF
echo "== done in $(( $(date +%s) - ${t_data%[.,]*} ))s; runs and plots in $SAVE_ROOT; submission $SAVE_ROOT/submission.csv"
