#!/usr/bin/env bash
# The GPU acceptance check: one call of this script is the whole check of everything that needs CUDA.
#
#   bench/gpu_check.sh OUT_DIR [--device cuda|cpu] [--budget SECONDS] [--only STEP,...] [--keep]
#
# It runs, each step with its own timeout and every step whatever became of the ones before, within a time
# budget (default 450 s with cuda: under 8 minutes on one GPU, the machine facts and clean-up included):
#   1. the tests marked cuda (python -m pytest -q -m cuda tests -p no:cacheprovider);
#   2. bench/train_throughput.py --device cuda, in float32 and with --amp bf16;
#   3. bench/extract_throughput.py --device cuda --size base;
#   4. a 1-GPU torchrun of preprocess/extract_features.py over synthetic clips with a tiny saved model (offline),
#      checking one feature file per clip of the registered width;
#   5. bench/rank_devices.py under a 2-process torchrun (1 process where there is one GPU, said in the note): each
#      rank's device, current CUDA device, contexts, model and batches must be GPU LOCAL_RANK's, cuda:0 refused;
#   6. a grid of 4 train.py runs at once on GPU 0 (python -m engine.grid --jobs 4 --gpus 0) on a small demo set;
#   7. one train.py --compile run, whose train.log must say it was compiled (not fallen back to eager);
#   8. bench/finetune_cuda.py: tiny text and speech models fine-tuned through preprocess/finetune_encoder.py on CUDA
#      (bf16 autocast checked inside the training, finite embeddings of the set width), with --load_in_4bit and under
#      a 2-GPU torchrun where possible (else skipped, said in the note), and on the CPU: both learn the labels;
#   9. bench/finetune_throughput.py: LoRA samples/s and peak memory on Qwen2.5-1.5B's shape (random weights, bf16),
#      without and with gradient checkpointing.
# It writes OUT_DIR/gpu_check.json (the machine: python, torch, CUDA, GPU name and memory; per step: commands,
# status, seconds, return code, figures parsed from the benches, last lines of output) and OUT_DIR/gpu_check.log
# (every step's full output); the steps' data go to OUT_DIR/work, never into the repository. Exit status 0 when
# every step is ok (or skipped where allowed), 1 when one failed, 2 for bad arguments or --device cuda without
# a GPU. --device cpu runs the same steps on the CPU at tiny sizes: CI's smoke test of this script.
# The logic and the details are in bench/gpu_check.py. Python: $PY if set, else the active virtual or conda
# environment's python, else the repository's .venv, else python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PY:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
    PY=python
  elif [ -x "$REPO/.venv/bin/python" ]; then
    PY="$REPO/.venv/bin/python"
  else
    PY=python3
  fi
fi
export HF_HUB_OFFLINE=1
exec "$PY" "$REPO/bench/gpu_check.py" "$@"
