"""Out-of-fold (OOF) ensembles: members given as groups of fold files, member weights and ``bias`` offsets fitted
on OOF predictions, and their effect measured on folds they were not fitted on (cross-fitting).

Why. A run's validation list has already chosen its best epoch. Fitting the ensemble's member weights
(:func:`ensembling.voting.fit_weights`) and the ``bias`` rules' offsets (``ensembling.rerank``) on those same
predictions and then reporting their F1 there reports a figure the fit was tuned to: optimistic, the more so
the more members, rounds and classes. With k folds (``preprocess/build_splits.py --kfold K`` writes
``train_lst/<dataset>/fold{0..K-1}.json``, whose validation lists partition the labelled names) each member is
trained once per fold and predicts its fold's validation list; together these give every labelled name a
prediction from a model that never trained on it: the member's out-of-fold predictions.

Members as fold groups. ``ensemble.py`` reads one member per item of ``--preds``/``--valid_preds``. An item
holding a glob character (``*``, ``?`` or ``[``) is a pattern that ensemble.py expands itself (quote it, so
that the shell leaves it alone): its matches, in natural order (``fold2`` before ``fold10``), are that
member's fold files, prediction CSVs or run folders (a run folder stands for its ``valid_pred.csv`` /
``test_pred.csv``). An item without one is one file, as before.

* Validation (:func:`read_valid_groups`): a member's fold files are concatenated into its OOF predictions;
  their names must be disjoint (hold-out ``seed<k>`` lists overlap: they are not folds). The fold of a name is
  the file it came from. Every member must cover the same names with the same folds: each of its files must
  hold exactly the names of one file of the first member (in any file order), else a :class:`DataError`
  names the file and the folds its names come from.
* Test (:func:`read_test_groups`): the probabilities of a member's fold models are averaged (every file of the
  group must predict the same names).

Fitting and reporting. :func:`fit_and_apply` fits the weights (``weighted`` without given weights) and the
rules' offsets on labelled predictions and applies them to others; with all OOF rows as the fit rows and the
test predictions as the others, it gives the submission. :func:`cross_fit` measures what fitting does: for each
fold j it fits on the OOF rows of the other folds and predicts fold j; the held-out predictions of all folds
are pooled and scored once (weighted F1). :func:`heldout_table` sets that held-out F1 beside the in-sample one
(fitted on and scored on all OOF rows) for soft voting (nothing fitted), the chosen voting and each rule in
turn: where the in-sample figure is higher, the difference is what the fit learnt about its own rows.
Everything is deterministic (the greedy fit and the offsets are).

Epoch selection. Out-of-fold figures are held out only if no out-of-fold row chose its fold model's best
epoch. Fold lists of ``build_splits.py --kfold`` hold an inner ``select_info`` list (part of each fold's
training rows) that chooses the epoch (``--epoch_selection inner``, the default); with ``--epoch_selection
out_of_fold`` (the former lists) each fold model chooses on its own out-of-fold rows, and every figure
measured on them is optimistic. train.py and test.py mark each predicted row (``chose_epoch``: 1 where the row
chose the checkpoint's epoch); :func:`epoch_selection` reads those marks from the fold files, and
ensemble.py states in its report which selection ran.
"""

import glob
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.errors import DataError
from dataloader.files import _preview, natural_key
from ensembling.rerank import RerankResult, Validation, rerank, validate_rules
from ensembling.voting import (MODES, Members, _read_one, align_names, fit_weights, member_ids, read_members, vote,
                               weighted_f1)

GLOB_CHARS = "*?["


# ------------------------------------------------------------------------------------------------------
# Reading members as fold groups
# ------------------------------------------------------------------------------------------------------
def is_pattern(item):
    """Whether a member item is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(c in str(item) for c in GLOB_CHARS)


def expand(item, flag):
    """The paths a member item stands for: a pattern's matches in natural order (a :class:`DataError` when
    there is none), else the item itself. Run folders are left for the caller to resolve."""
    item = str(item)
    if not is_pattern(item):
        return [item]
    found = sorted(glob.glob(item), key=natural_key)
    if not found:
        raise DataError(f"{flag} pattern '{item}' matches no file or run folder")
    return found


def check_distinct(groups, items, flag):
    """Refuse a file given twice among the members of one flag (two items, or two patterns that both match
    it): it would count twice in the vote. The same file under ``--preds`` and ``--valid_preds`` is fine."""
    seen = {}
    for i, (item, group) in enumerate(zip(items, groups), 1):
        for path in group:
            key = _file_key(path)
            if key in seen:
                j, first, first_path = seen[key]
                if first_path != path:  # a symbolic or hard link, or another spelling of the same path
                    raise DataError(f"{flag} gives one file twice under two paths, '{first_path}' (item {j}) and "
                                    f"'{path}' (item {i}): it would count twice in "
                                    f"the vote; give each member file once")
                how = (f"twice (items {j} and {i})" if first == item
                       else f"twice, by item {j} '{first}' and item {i} '{item}'")
                raise DataError(f"{flag} gives '{path}' {how}: give each member file once")
            seen[key] = (i, item, path)


def _file_key(path):
    """The file's identity (device, inode), so that a symbolic or hard link to a member is the same member;
    the resolved path where the file cannot be read."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def _align(entries, flag):
    """Align members ``(item, names, probs, labels or None)`` on the first one's names; returns
    ``(names, probs (R, N, C), labels or None)``."""
    item0, ref, _, _ = entries[0]
    pos = {n: i for i, n in enumerate(ref)}
    probs, labels, label_src = [], None, None
    for item, names, p, labs in entries:
        order = align_names(ref, names, pos, f"{flag} member '{item}'", f"'{item0}'",
                            "Every member must predict the same names.")
        probs.append(p[order])
        if labs is not None:
            labs = np.asarray(labs)[order]
            if labels is None:
                labels, label_src = labs, item
            elif (labs != labels).any():
                diff = [n for n, a, b in zip(ref, labels, labs) if a != b]
                raise DataError(f"the labels of {flag} members '{label_src}' and '{item}' disagree on {len(diff)} "
                                f"names: {_preview(diff)}")
    return list(ref), np.stack(probs), labels


def read_test_groups(groups, class_names, items, flag="--preds"):
    """Test predictions of members given as groups of files (see the module docstring): each group's
    probabilities averaged over its files, the members aligned on the first one's names.

    ``groups``: one list of prediction CSV paths per member; ``items``: what the user gave for each (its
    id and the name in errors). Where every group is one file this is :func:`read_members`, as before."""
    class_names = list(class_names)
    check_distinct(groups, items, flag)
    if all(len(g) == 1 for g in groups):
        members = read_members([g[0] for g in groups], class_names)
        members.groups = [list(g) for g in groups]
        return members
    entries = []
    for item, group in zip(items, groups):
        try:
            m = read_members(group, class_names)
        except DataError as e:
            if len(group) == 1:
                raise
            raise DataError(f"{flag} '{item}': a member's fold files are averaged, so each must predict the same "
                            f"names: {e}") from e
        entries.append((item, m.names, m.probs.mean(0), m.labels))
    names, probs, labels = _align(entries, flag)
    return Members(names=names, class_names=class_names, probs=probs, member_ids=member_ids(items),
                   labels=labels, paths=[p for g in groups for p in g], groups=[list(g) for g in groups])


def _read_group(item, group, class_names, flag):
    """One member's fold files concatenated: ``(names, probs, labels or None, fold per name, name sets)``."""
    names, probs, labels, folds, sets = [], [], [], [], []
    owner = {}
    has_labels = None
    for k, path in enumerate(group):
        n_k, p_k, l_k = _read_one(path, class_names)
        if not n_k:
            raise DataError(f"{flag} '{item}': fold file '{path}' holds no predictions")
        if has_labels is not None and has_labels != (l_k is not None):
            with_l, without = (group[0], path) if has_labels else (path, group[0])
            raise DataError(f"{flag} '{item}': '{with_l}' has a 'label' column but '{without}' has none: give "
                            "every fold file its labels (test.py --split_valid writes them)")
        has_labels = l_k is not None
        shared = [n for n in n_k if n in owner]
        if shared:
            other = group[owner[shared[0]]]
            raise DataError(f"{flag} '{item}': fold files '{other}' and '{path}' share {len(shared)} names "
                            f"({_preview(shared)}); a member's fold files must hold disjoint validation lists, one "
                            "file per fold of preprocess/build_splits.py --kfold (hold-out seed<k> lists overlap)")
        owner.update({n: k for n in n_k})
        names += n_k
        probs.append(p_k)
        labels += l_k or []
        folds += [k] * len(n_k)
        sets.append(frozenset(n_k))
    return names, np.concatenate(probs), (labels if has_labels else None), np.asarray(folds), sets


def read_valid_groups(groups, class_names, items, flag="--valid_preds"):
    """Out-of-fold validation predictions of members given as groups of fold files (see the module
    docstring): :class:`Members` with ``folds`` (the fold of each name, from the first member's file order).

    Where every group is one file this is :func:`read_members`, as before (``folds`` None)."""
    class_names = list(class_names)
    check_distinct(groups, items, flag)
    sizes = [len(g) for g in groups]
    if all(s == 1 for s in sizes):
        members = read_members([g[0] for g in groups], class_names)
        members.groups = [list(g) for g in groups]
        return members
    for item, s in zip(items, sizes):
        if s != sizes[0]:
            raise DataError(f"{flag} member '{item}' has {s} fold file(s), member '{items[0]}' {sizes[0]}: give "
                            "every member one file per fold, the same folds for all")
    cidx = {c: i for i, c in enumerate(class_names)}
    reads = [_read_group(items[0], groups[0], class_names, flag)]
    names0, folds0, sets0 = reads[0][0], reads[0][3], reads[0][4]
    fold_of = dict(zip(names0, folds0))
    entries = []
    for r, (item, group) in enumerate(zip(items, groups)):
        names, probs, labels, _, sets = reads[0] if r == 0 else _read_group(item, group, class_names, flag)
        align_names(names0, names, fold_of, f"{flag} member '{item}'", f"'{items[0]}'",
                    "Every member's folds must cover the same labelled names.")
        for path, s in zip(group, sets):
            if s not in sets0:
                ks = sorted({int(fold_of[n]) for n in s})
                raise DataError(f"{flag} member '{item}': fold file '{path}' holds names of folds {ks} of "
                                f"'{items[0]}' (fold k = its k-th file, {', '.join(groups[0])}): every member must "
                                "be trained on the same fold lists (train_lst/<dataset>/fold<k>.json), one run "
                                "per fold")
        labs = None if labels is None else np.array([cidx[x] for x in labels], dtype=np.int64)
        entries.append((item, names, probs, labs))
    names, probs, labels = _align(entries, flag)
    return Members(names=names, class_names=class_names, probs=probs, member_ids=member_ids(items),
                   labels=labels, paths=[p for g in groups for p in g], folds=np.asarray(folds0, dtype=np.int64),
                   groups=[list(g) for g in groups])


@dataclass
class EpochSelection:
    """How the fold models of out-of-fold members chose their epochs: ``rows`` (rows of the members' fold
    files), ``chose`` (of them, rows that chose their model's best epoch) and ``unknown`` (fold files without a
    ``chose_epoch`` column: written before it existed, or not by train.py/test.py)."""
    rows: int
    chose: int
    unknown: list

    @property
    def held_out(self):
        """Whether no out-of-fold row chose an epoch (all files marked)."""
        return not self.unknown and self.chose == 0

    def line(self):
        """The report's one line on it."""
        if self.unknown:
            return (f"epoch selection: unknown for {len(self.unknown)} fold file(s) (no chose_epoch column, e.g. "
                    f"'{self.unknown[0]}'): if their models chose their epochs on these out-of-fold rows, the "
                    "out-of-fold and held-out figures are optimistic; rewrite them with test.py --split_valid from "
                    "runs trained by this version, whose checkpoints record the names that chose their epoch")
        if self.chose:
            return (f"epoch selection: ON THE OUT-OF-FOLD ROWS ({self.chose} of the members' {self.rows} out-of-fold "
                    "predictions chose their fold model's best epoch), so the out-of-fold and held-out figures are "
                    "optimistic; for held-out figures build the folds with an inner split "
                    "(preprocess/build_splits.py --kfold K, --epoch_selection inner, the default) and retrain")
        return (f"epoch selection: inner split (each fold list's select_info); none of the members' {self.rows} "
                "out-of-fold predictions chose its fold model's epoch, so the out-of-fold figures are held out")


def epoch_selection(groups):
    """:class:`EpochSelection` of validation fold files (``groups``: one list of CSV paths per member), from
    their ``chose_epoch`` column (engine/trainer.py ``prediction_frame``)."""
    rows = chose = 0
    unknown = []
    for path in (p for g in groups for p in g):
        if "chose_epoch" not in pd.read_csv(path, nrows=0).columns:
            unknown.append(path)
            continue
        col = pd.to_numeric(pd.read_csv(path, usecols=["chose_epoch"])["chose_epoch"], errors="coerce")
        if col.isna().any():
            raise DataError(f"fold file '{path}': its chose_epoch column holds values other than 0 and 1; "
                            "rewrite it with test.py --split_valid")
        rows += len(col)
        chose += int((col != 0).sum())
    return EpochSelection(rows=rows, chose=chose, unknown=unknown)


# ------------------------------------------------------------------------------------------------------
# Fitting, applying, cross-fitting
# ------------------------------------------------------------------------------------------------------
@dataclass
class Fit:
    """What :func:`fit_and_apply` did: ``weights`` (normalised; None unless ``weighted``), ``fitted_weights``
    (fitted on the fit rows, not given), the ensemble's ``scores``/``pred`` on the scored rows before the
    rules, ``fit_pred`` on the fit rows (None without), and the rules' :class:`RerankResult`."""
    weights: np.ndarray
    fitted_weights: bool
    scores: np.ndarray
    pred: np.ndarray
    fit_pred: np.ndarray
    rerank: RerankResult


def fit_and_apply(probs, names, class_names, mode="soft", weights=None, rounds=50, rules=(), teacher=None,
                  fit_probs=None, fit_labels=None, fit_names=None):
    """Fit on labelled predictions, apply to others: returns a :class:`Fit`.

    ``probs`` ``(R, N, C)`` and ``names``: the predictions to decide (test rows, or a held-out fold);
    ``fit_probs`` ``(R, M, C)``, ``fit_labels`` ``(M,)`` and ``fit_names``: the predictions to fit on (all OOF
    rows, the other folds, or a validation list); None to fit nothing. ``mode``: ``majority``/``soft``/
    ``weighted``; ``weights``: given member weights (``weighted`` only; else fitted by :func:`fit_weights` on
    the fit rows); ``rules``: re-ranking rules, whose ``bias`` offsets are fitted on the fit rows."""
    if mode not in MODES:
        raise ValueError(f"unknown voting mode '{mode}': use one of {', '.join(MODES)}")
    fitted = False
    if mode == "weighted":
        if weights is None:
            if fit_probs is None or fit_labels is None:
                raise ValueError("mode 'weighted' needs weights or labelled predictions to fit them on")
            weights = fit_weights(fit_probs, fit_labels, rounds=rounds)
            fitted = True
        weights = np.asarray(weights, dtype=np.float64)
        weights = weights / weights.sum()
    elif weights is not None:
        raise ValueError(f"weights are only used by mode 'weighted', not '{mode}'")
    scores, pred = vote(probs, mode, weights)
    val, fit_pred = None, None
    if fit_probs is not None:
        fit_scores, fit_pred = vote(fit_probs, mode, weights)
        val = Validation(fit_scores, fit_labels, fit_names, teacher, fit_pred)
    res = rerank(list(rules or []), scores, class_names, names, teacher, val, pred=pred)
    return Fit(weights=weights, fitted_weights=fitted, scores=scores, pred=pred, fit_pred=fit_pred, rerank=res)


@dataclass
class CrossFit:
    """Held-out predictions of :func:`cross_fit` on every OOF row: ``soft_pred`` (soft voting, nothing
    fitted), ``pred`` (the chosen voting, fitted on the other folds), ``steps`` (after each rule, in order),
    and the weights fitted for each fold (``fold_weights``, ``folds`` their fold ids)."""
    folds: list
    soft_pred: np.ndarray
    pred: np.ndarray
    steps: list
    fold_weights: list


def cross_fit(members, mode="soft", weights=None, rounds=50, rules=(), teacher=None):
    """Cross-fitted predictions of OOF ``members`` (:class:`Members` with ``folds`` and ``labels``): for each
    fold, weights and offsets fitted on the rows of the other folds (as :func:`fit_and_apply`) decide that
    fold's rows. Returns a :class:`CrossFit`."""
    if members.folds is None or members.labels is None:
        raise ValueError("cross-fitting needs labelled out-of-fold predictions (members with folds and labels)")
    folds = np.asarray(members.folds)
    ids = sorted(np.unique(folds).tolist())
    if len(ids) < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {len(ids)}")
    rules = validate_rules(list(rules or []), members.class_names)
    n = len(members.names)
    names = np.asarray(members.names, dtype=object)
    pred = np.full(n, -1, dtype=np.int64)
    steps = np.full((len(rules), n), -1, dtype=np.int64)
    fold_weights = []
    for k in ids:
        out = folds == k
        fit = fit_and_apply(members.probs[:, out], names[out].tolist(), members.class_names, mode, weights, rounds,
                            rules, teacher, fit_probs=members.probs[:, ~out], fit_labels=members.labels[~out],
                            fit_names=names[~out].tolist())
        pred[out] = fit.pred
        for i, step in enumerate(fit.rerank.steps):
            steps[i, out] = step
        fold_weights.append(fit.weights)
    return CrossFit(folds=ids, soft_pred=vote(members.probs, "soft")[1], pred=pred, steps=list(steps),
                    fold_weights=fold_weights)


HELDOUT_COLUMNS = ["step", "fitted_on_oof", "insample_f1", "heldout_f1"]


def heldout_table(labels, n_classes, mode, full, cross):
    """In-sample against held-out weighted F1, one row per step: soft voting (nothing fitted), the chosen
    voting (unless soft) and each rule after the ones before it.

    ``full``: the :class:`Fit` fitted on all OOF rows (its ``fit_pred`` and ``rerank.valid_steps`` are the
    in-sample predictions); ``cross``: the :class:`CrossFit` of the same settings. ``fitted_on_oof`` says what
    a step fits on the OOF rows (``-``: nothing)."""
    def f1(pred):
        return weighted_f1(labels, pred, n_classes)

    soft = f1(cross.soft_pred)
    rows = [{"step": "soft voting", "fitted_on_oof": "-", "insample_f1": soft, "heldout_f1": soft}]
    if mode != "soft":
        rows.append({"step": f"{mode} voting", "fitted_on_oof": "member weights" if full.fitted_weights else "-",
                     "insample_f1": f1(full.fit_pred), "heldout_f1": f1(cross.pred)})
    for i, (rule, insample, held) in enumerate(zip(full.rerank.rules, full.rerank.valid_steps, cross.steps), 1):
        rows.append({"step": f"+ rule {i} ({rule['type']})",
                     "fitted_on_oof": "bias offsets" if rule["type"] == "bias" else "-",
                     "insample_f1": f1(insample), "heldout_f1": f1(held)})
    return pd.DataFrame(rows, columns=HELDOUT_COLUMNS)
