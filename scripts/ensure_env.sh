#!/usr/bin/env bash
# Sourced by run_demo.sh and run_tests.sh: picks (or creates) a Python environment and installs the
# project's requirements into it. Sets PY to that environment's python.
#   - an active virtualenv or conda environment is used as it is;
#   - otherwise ./.venv is used, and created if there is none (VENV=path to choose another folder).
# PyTorch is installed first, as TORCH_SPEC (default torch==2.13.0; e.g. TORCH_SPEC="torch==2.13.0
# --index-url https://download.pytorch.org/whl/cu128" for a CUDA build), only when it is not importable.
set -euo pipefail
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=${PYTHON:-python}
else
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating a virtual environment in $VENV"
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
fi
export PY
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "== installing ${TORCH_SPEC:-torch==2.13.0}"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
if ! "$PY" -c "import numpy, sklearn, pandas, tqdm, yaml, matplotlib, transformers, av${EXTRA_IMPORTS:-}" >/dev/null 2>&1; then
  echo "== installing requirements${EXTRA_REQUIREMENTS:+ and $EXTRA_REQUIREMENTS}"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q -r requirements.txt ${EXTRA_REQUIREMENTS:-}
fi
