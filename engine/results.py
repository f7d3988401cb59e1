"""Which checkpoint a result came from, and whether a run folder holds a finished run.

Every ``best.pth`` train.py saves carries a ``checkpoint_id`` (new at each save). Every result computed from it
carries the same id: a ``checkpoint`` column in prediction CSVs (``valid_pred.csv``, ``test_pred.csv``, test.py's
outputs), a ``checkpoint`` key in ``test_metrics.json`` and ``summary.json``. A reader that takes a result from a
run folder checks the id against the folder's ``best.pth`` (:func:`check_current`), so a file left by an earlier
run, or by an earlier best epoch, is refused instead of being read as the current model's.

A run is *finished* when its ``summary.json`` exists (written last), its resume state ``last.pth`` is gone and the
summary names the checkpoint in ``best.pth``. test.py refuses an unfinished run unless asked
(``--allow_unfinished``): a run killed after 1 of 40 epochs, or one still training, is not the model a user means.
"""

import json
import os
import uuid

import pandas as pd

from common.checkpoints import load_checkpoint as _load_checkpoint
from common.errors import DataError

RUN_LOCK = ".lock"  # the run folder's lock file (common.locks.FileLock), held while train.py writes the folder


def new_checkpoint_id():
    return uuid.uuid4().hex[:16]


def checkpoint_id(run_dir):
    """The id of the run's ``best.pth`` (None when it has none; ``"unstamped"`` for a checkpoint of an older
    version)."""
    path = os.path.join(run_dir, "best.pth")
    if not os.path.isfile(path):
        return None
    ckpt = load_checkpoint(path, "checkpoint", BEST_FIX, mmap=True)
    return str(ckpt.get("checkpoint_id") or "unstamped")


BEST_FIX = "retrain the run (train.py with its settings), or give the folder of another run"


def load_checkpoint(path, what="checkpoint", fix=BEST_FIX, mmap=False):
    """:func:`common.checkpoints.load_checkpoint` with a run's fix (retrain it) as the default."""
    return _load_checkpoint(path, what, fix, mmap=mmap)


def unfinished_reason(run_dir, ckpt_id=None):
    """Why ``run_dir`` is not a finished run (a short phrase), or None when it is."""
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(os.path.join(run_dir, "last.pth")):
        epoch = _last_epoch(run_dir)
        return (f"stopped after epoch {epoch}" if epoch else "stopped") + " or still training (last.pth is there)"
    if not os.path.isfile(summary_path):
        return "it has no summary.json: it was stopped before the end, or is still training"
    try:
        with open(summary_path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return "its summary.json cannot be read"
    ckpt_id = ckpt_id or checkpoint_id(run_dir)
    if summary.get("checkpoint") and ckpt_id and summary["checkpoint"] != ckpt_id:
        return "its summary.json describes another checkpoint than best.pth"
    return None


def _last_epoch(run_dir):
    path = os.path.join(run_dir, "metrics.csv")
    try:
        return len(pd.read_csv(path))
    except Exception:
        return None


def check_finished(run_dir, allow_unfinished=False, log=None, ckpt_id=None):
    """Refuse an unfinished run (or, with ``allow_unfinished``, log that its best epoch so far is used)."""
    reason = unfinished_reason(run_dir, ckpt_id)
    if reason is None:
        return
    if not allow_unfinished:
        raise DataError(f"run folder '{run_dir}' is not a finished run ({reason}); finish it with train.py --resume "
                        "and the same settings, or pass --allow_unfinished to use its best epoch so far")
    if log is not None:
        log.warning(f"run folder '{run_dir}' is not a finished run ({reason}); using its best epoch so far "
                    "(--allow_unfinished)")


def result_checkpoint(path):
    """The checkpoint id a result file records (CSV ``checkpoint`` column, JSON ``checkpoint`` key), or None."""
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f).get("checkpoint")
    cols = pd.read_csv(path, nrows=0).columns
    if "checkpoint" not in cols:
        return None
    ids = pd.read_csv(path, usecols=["checkpoint"], dtype=str)["checkpoint"].dropna().unique()
    if len(ids) > 1:
        raise DataError(f"'{path}' mixes predictions of {len(ids)} checkpoints ({', '.join(ids[:3])}); rewrite it "
                        "with test.py")
    return ids[0] if len(ids) else None


def check_current(run_dir, path):
    """Refuse a result file of ``run_dir`` that did not come from the run's current ``best.pth``."""
    current = checkpoint_id(run_dir)
    if current is None:
        raise DataError(f"'{path}' is in run folder '{run_dir}', which has no best.pth: it is no result of a "
                        "model there; retrain the run or give the predictions of a finished one")
    recorded = result_checkpoint(path)
    if recorded is None:
        raise DataError(f"'{path}' records no checkpoint (written by an older version, or not by train.py/test.py): "
                        f"it cannot be told apart from a stale file; rewrite it with test.py --run {run_dir}")
    if recorded != current:
        raise DataError(f"'{path}' came from checkpoint {recorded}, but '{run_dir}/best.pth' is now {current} (the "
                        f"run was retrained since): it is stale; rewrite it with test.py --run {run_dir}")
