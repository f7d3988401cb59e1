#!/usr/bin/env bash
# The test suite, on CPU, in a few minutes: ./run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")"
EXTRA_IMPORTS=", pytest" EXTRA_REQUIREMENTS="pytest>=7.4" source scripts/ensure_env.sh
exec "$PY" -m pytest -q tests "$@"
