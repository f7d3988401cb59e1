"""Ensembles of prediction CSVs: read and align the members, vote, fit member weights on validation.

A member is one prediction CSV (written by test.py / ``engine.trainer.prediction_frame``): ``name``, an
optional ``label`` (the truth, where known), ``pred`` and ``prob_<class>`` for each class, plus
``weight_<expert>`` columns, which are ignored. Runs, seeds, models and the per-expert head files
(``<out>__head_<expert>.csv``) are all members alike.

* :func:`read_members` -> :class:`Members`: probabilities ``(R, N, C)`` aligned on the first file's names.
* :func:`vote`: ``majority`` | ``soft`` | ``weighted`` -> scores ``(N, C)`` and predictions ``(N,)``.
* :func:`fit_weights`: greedy forward selection with replacement (Caruana et al., 2004) on VALIDATION
  predictions only; the weights then go to :func:`vote` with ``mode="weighted"`` on the test predictions.
  Their F1 on the predictions they were fitted on is in-sample: ``ensembling.oof`` fits them on out-of-fold
  predictions and cross-fits them for a held-out figure.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import config
from dataloader.files import DataError, _preview, check_labels, read_csv_names

MODES = ("majority", "soft", "weighted")
PROB_PREFIX = "prob_"
_TOL = 1e-12


@dataclass
class Members:
    """Aligned predictions of ``R`` ensemble members on ``N`` names over ``C`` classes.

    ``probs``: ``(R, N, C)`` float64, each row renormalised to sum 1, columns in ``class_names`` order;
    ``labels``: ``(N,)`` class indices from the files' ``label`` column, or None where no file has one;
    ``member_ids``: a short unique id per member, from its path; ``paths``: the files read.
    Members read from fold groups (``ensembling.oof``) also carry ``folds``: ``(N,)`` the fold of each name
    (out-of-fold validation predictions; None otherwise) and ``groups``: the files of each member.
    """
    names: list
    class_names: list
    probs: np.ndarray
    member_ids: list
    labels: np.ndarray = None
    paths: list = field(default_factory=list)
    folds: np.ndarray = None
    groups: list = None


def prob_classes(path):
    """The classes of a prediction CSV's ``prob_<class>`` columns, in column order (reads the header only)."""
    if not os.path.isfile(path):
        raise DataError(f"prediction file '{path}' does not exist")
    cols = list(pd.read_csv(path, nrows=0).columns)
    classes = [c[len(PROB_PREFIX):] for c in cols if c.startswith(PROB_PREFIX)]
    if not classes:
        raise DataError(f"prediction file '{path}' has no prob_<class> columns (columns: {cols}); "
                        "prediction CSVs are written by test.py or train.py --test")
    return classes


def match_emo_rule(classes):
    """The key of ``config.EMO_RULE`` whose label set is ``classes`` (same order first, then the same set),
    or None."""
    for key, rule in config.EMO_RULE.items():
        if list(rule) == list(classes):
            return key
    for key, rule in config.EMO_RULE.items():
        if set(rule) == set(classes) and len(rule) == len(classes):
            return key
    return None


def member_ids(paths):
    """Short unique ids: the shortest trailing part of the paths (folders + file stem) that tells them apart,
    e.g. ``seed0/moe/run/test_pred`` and ``seed1/moe/run/test_pred``; a file given twice gets ``#2``."""
    full = [os.path.normpath(os.path.abspath(p)) for p in paths]
    distinct = sorted(set(full))
    parts = {}
    for p in distinct:
        bits = [b for b in p.split(os.sep) if b]
        bits[-1] = os.path.splitext(bits[-1])[0]
        parts[p] = bits
    for k in range(1, max(len(b) for b in parts.values()) + 1):
        short = {p: "/".join(b[-k:]) for p, b in parts.items()}
        if len(set(short.values())) == len(short):
            break
    seen, out = {}, []
    for p in full:
        seen[p] = seen.get(p, 0) + 1
        out.append(short[p] if seen[p] == 1 else f"{short[p]}#{seen[p]}")
    return out


SUM_TOL = 1e-3  # a member row's probabilities must sum to 1 within this (test.py writes 6 decimals)


def _read_one(path, class_names):
    """``(names, probs (N, C) in class_names order, labels list or None)`` of one prediction CSV."""
    classes = prob_classes(path)
    if set(classes) != set(class_names) or len(classes) != len(class_names):
        missing = [c for c in class_names if c not in classes]
        extra = [c for c in classes if c not in class_names]
        raise DataError(
            f"prediction file '{path}' has prob columns for {classes}, but the ensemble's classes are "
            f"{list(class_names)}" + (f"; missing: {missing}" if missing else "") + (f"; extra: {extra}" if extra
                                                                                      else "")
            + ". Every member must predict the same label set (check --emo_rule and the files).")
    df = read_csv_names(path)
    if "name" not in df.columns:
        raise DataError(f"prediction file '{path}' has no 'name' column (columns: {list(df.columns)})")
    names = df["name"].astype(str).tolist()
    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise DataError(f"prediction file '{path}' lists {len(dup)} names more than once: {_preview(dup)}")
    try:
        probs = df[[PROB_PREFIX + c for c in class_names]].to_numpy(dtype=np.float64)
    except ValueError as e:
        raise DataError(f"prediction file '{path}': prob columns must be numbers ({e})") from e
    bad = ~np.isfinite(probs).all(1) | (probs < 0).any(1)
    if bad.any():
        raise DataError(f"prediction file '{path}': {int(bad.sum())} rows have empty, negative or non-finite "
                        f"probabilities: {_preview(np.array(names)[bad])}")
    total = probs.sum(1, keepdims=True)
    if (total <= 0).any():
        zero = np.array(names)[total[:, 0] <= 0]
        raise DataError(f"prediction file '{path}': {len(zero)} rows have probabilities summing to 0: "
                        f"{_preview(zero)}")
    off = np.abs(total[:, 0] - 1.0) > SUM_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(f"prediction file '{path}': the probabilities of row '{names[i]}' sum to {total[i, 0]:.6g}, "
                        f"not 1 (tolerance {SUM_TOL:g}; {int(off.sum())} rows off): not a probability "
                        f"distribution (logits or scores?); give test.py's prediction CSVs")
    labels = None
    if "label" in df.columns:
        empty = df["label"].isna()
        if empty.any():
            raise DataError(f"prediction file '{path}': {int(empty.sum())} rows have an empty 'label' "
                            f"({_preview(df['name'][empty])}); fill them or drop the column")
        labels = df["label"].astype(str).str.strip().str.lower().tolist()
        check_labels(labels, class_names, f"the 'label' column of '{path}'")
    return names, probs / total, labels


def align_names(ref, names, pos, what, ref_what, fix):
    """Positions that put ``names`` in the order of ``ref`` (``pos``: ``{name: index in ref}``); a set of names that
    differs raises naming ``what``, ``ref_what``, a preview of the missing and extra names, and ``fix``."""
    here = set(names)
    missing = [n for n in ref if n not in here]
    extra = [n for n in names if n not in pos]
    if missing or extra:
        raise DataError(f"{what} does not hold the same names as {ref_what}"
                        + (f"; {len(missing)} missing: {_preview(missing)}" if missing else "")
                        + (f"; {len(extra)} extra: {_preview(extra)}" if extra else "") + f". {fix}")
    order = np.empty(len(names), dtype=np.int64)
    order[[pos[n] for n in names]] = np.arange(len(names))
    return order


def read_members(paths, class_names=None):
    """Read prediction CSVs into :class:`Members`, aligned on the first file's names.

    ``class_names``: the label set (its order is the column order of ``probs``); default the first file's
    ``prob_`` columns. Every file must hold the same set of names and the same classes (in any column
    order), else a :class:`DataError` names the file and previews the missing or extra names. Where several
    files carry a ``label`` column, they must agree.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no prediction files given")
    class_names = list(class_names) if class_names is not None else prob_classes(paths[0])
    ref_names, probs, labels, label_src = None, [], None, None
    for path in paths:
        names, p, labs = _read_one(path, class_names)
        if ref_names is None:
            ref_names, pos = names, {n: i for i, n in enumerate(names)}
            order = np.arange(len(names))
        else:
            order = align_names(ref_names, names, pos, f"prediction file '{path}'", f"'{paths[0]}'",
                                "Every member must predict the same name list (rerun test.py with the same --names).")
        probs.append(p[order])
        if labs is not None:
            labs = [labs[i] for i in order]
            if labels is None:
                labels, label_src = labs, path
            else:
                diff = [n for n, a, b in zip(ref_names, labels, labs) if a != b]
                if diff:
                    raise DataError(f"the 'label' columns of '{label_src}' and '{path}' disagree on {len(diff)} "
                                    f"names: {_preview(diff)}")
    cidx = {c: i for i, c in enumerate(class_names)}
    label_idx = None if labels is None else np.array([cidx[x] for x in labels], dtype=np.int64)
    return Members(names=list(ref_names), class_names=class_names, probs=np.stack(probs),
                   member_ids=member_ids(paths), labels=label_idx, paths=paths)


def _check_probs(probs):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"member probabilities must have shape (R, N, C) with R >= 1, got {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("member probabilities hold NaN or Inf")
    return probs


def _check_weights(weights, n_members):
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n_members:
        raise ValueError(f"{w.shape[0]} weights for {n_members} members")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all 0, got {w.tolist()}")
    return w / w.sum()


def vote(probs, mode, weights=None):
    """Combine members' probabilities ``(R, N, C)``: returns ``(scores (N, C), pred (N,))``.

    * ``majority``: each member's argmax is one vote; scores are vote shares. Ties between classes with the
      same number of votes go to the one with the higher mean probability, then to the earlier class.
    * ``soft``: the mean probability.
    * ``weighted``: the weighted mean probability; ``weights`` ``(R,)`` (non-negative, normalised here) must be
      given, e.g. from :func:`fit_weights`.

    Ties in ``soft``/``weighted`` scores go to the earlier class (label-set order).
    """
    probs = _check_probs(probs)
    if mode not in MODES:
        raise ValueError(f"unknown voting mode '{mode}': use one of {', '.join(MODES)}")
    if mode != "weighted" and weights is not None:
        raise ValueError(f"weights are only used by mode 'weighted', not '{mode}'")
    n_members, _, n_classes = probs.shape
    if mode == "majority":
        votes = probs.argmax(2)  # (R, N)
        counts = np.stack([(votes == c).sum(0) for c in range(n_classes)], axis=1)
        scores = counts / n_members
        tied = counts == counts.max(1, keepdims=True)
        pred = np.where(tied, probs.mean(0), -np.inf).argmax(1)
        return scores, pred
    if mode == "soft":
        scores = probs.mean(0)
    else:
        if weights is None:
            raise ValueError("mode 'weighted' needs weights (R,): fit them with fit_weights on validation")
        scores = np.tensordot(_check_weights(weights, n_members), probs, axes=1)
    return scores, scores.argmax(1)


def weighted_f1(labels, pred, n_classes):
    """Weighted F1 (the MER metric, as sklearn's ``f1_score(average="weighted", zero_division=0)``)."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    tp = np.bincount(labels[labels == pred], minlength=n_classes).astype(np.float64)
    support = np.bincount(labels, minlength=n_classes).astype(np.float64)
    predicted = np.bincount(pred, minlength=n_classes).astype(np.float64)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float((f1 * support).sum() / support.sum())


def log_loss(labels, probs, eps=1e-12):
    """Mean negative log probability of the true class (rows renormalised)."""
    probs = np.asarray(probs, dtype=np.float64)
    p = probs[np.arange(len(labels)), labels] / probs.sum(1)
    return float(-np.log(np.clip(p, eps, None)).mean())


def fit_weights(val_probs, val_labels, method="greedy", rounds=50):
    """Member weights ``(R,)`` fitted on VALIDATION predictions only (never on the test set).

    ``greedy``: forward selection with replacement (Caruana et al., 2004). Starting from an empty ensemble,
    each of ``rounds`` rounds adds the member whose addition gives the highest validation weighted F1 of the
    averaged probabilities (ties: the lower log loss, then the earlier member); a member may be added more
    than once. The ensemble of the best round (highest F1, then lowest log loss, then fewest additions) is
    kept, and its weights are how often each member was added, normalised to sum 1. Deterministic.
    """
    probs = _check_probs(val_probs)
    n_members, n, n_classes = probs.shape
    labels = np.asarray(val_labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} validation labels for {n} validation predictions")
    if n == 0 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"validation labels must be class indices 0..{n_classes - 1}")
    if method != "greedy":
        raise ValueError(f"unknown weight fitting method '{method}': use 'greedy'")
    rounds = int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    def better(a, b):  # (f1, log loss) a better than b
        return a[0] > b[0] + _TOL or (abs(a[0] - b[0]) <= _TOL and a[1] < b[1] - _TOL)

    counts = np.zeros(n_members, dtype=np.int64)
    total = np.zeros((n, n_classes))
    best, best_counts = None, None
    for k in range(1, rounds + 1):
        pick, pick_key = None, None
        for r in range(n_members):
            avg = (total + probs[r]) / k
            key = (weighted_f1(labels, avg.argmax(1), n_classes), log_loss(labels, avg))
            if pick is None or better(key, pick_key):
                pick, pick_key = r, key
        counts[pick] += 1
        total += probs[pick]
        if best is None or better(pick_key, best):
            best, best_counts = pick_key, counts.copy()
    return best_counts / best_counts.sum()
