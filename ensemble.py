"""Ensemble prediction CSVs (runs, seeds, expert heads, fold models), re-rank with rules, write a challenge
submission.

    python ensemble.py --preds saved/demo/seed0/moe/run saved/demo/seed1/moe/run saved/demo/seed2/lmf/run \
        --valid_preds saved/demo/seed0/moe/run saved/demo/seed1/moe/run saved/demo/seed2/lmf/run \
        --mode soft --rules rerank_rules.yaml --teacher features/demo/teachers/demo-vlm.jsonl \
        --candidates features/demo/test.csv --labels features/demo/test_labels.csv --out saved/submission.csv
    # members trained once per fold (preprocess/build_splits.py --kfold 5): each member is one QUOTED glob
    # pattern over its fold files, expanded here (validation: out-of-fold; test: averaged over the folds)
    python ensemble.py --preds 'saved/oof/test/*_m1-fold?.csv' 'saved/oof/test/*_m2-fold?.csv' \
        --valid_preds 'saved/oof/valid/*_m1-fold?.csv' 'saved/oof/valid/*_m2-fold?.csv' --mode weighted \
        --rules rerank_rules.yaml --teacher features/demo/teachers/demo-vlm.jsonl --out saved/submission.csv

Members: ``--preds`` prediction CSVs (test.py / train.py --test), or run folders (their ``test_pred.csv``,
or ``--pred_name``), one item per member. ``--valid_preds``: the same members' VALIDATION predictions, in the
same order (a run folder -> its ``valid_pred.csv``), with the ``label`` column train.py and test.py
--split_valid write: member weights (``--mode weighted``, greedy selection of Caruana et al. 2004) and
``bias`` rules are fitted on them, and they give the validation columns of the table and the rule report.
The test labels (``--labels``, else a ``label`` column of the test CSVs) are used for scoring only. Columns
other than ``name``, ``label`` and ``prob_<class>`` are ignored. A file given twice under one flag is refused.

Fold groups (ensembling/oof.py). An item holding ``*``, ``?`` or ``[`` is a glob pattern, expanded by this
script (quote it so the shell does not): its matches, in natural order, are one member's fold files (CSVs or
run folders). Under ``--valid_preds`` they are concatenated into the member's out-of-fold (OOF) predictions
(their names must be disjoint; the fold of a name is the file it came from; every member must have the same
names in the same folds); under ``--preds`` their probabilities are averaged (the same names in each). Why:
a run's validation list already chose its best epoch; weights and offsets fitted on it and scored on it give
an in-sample, optimistic F1. With OOF members the final weights and offsets are fitted on all OOF rows, and
their effect is cross-fitted: each fold is decided by weights and offsets fitted on the other folds, and the
pooled held-out weighted F1 is reported beside the in-sample one (soft voting, the chosen voting, each rule).
The report also says how the fold models chose their epochs (an ``epoch selection:`` line, from the
``chose_epoch`` column of the fold files): on an inner split (``select_info`` of the fold lists, the default of
``build_splits.py --kfold``), so the out-of-fold figures are held out, or on the out-of-fold rows themselves,
which makes them optimistic.

Voting (ensembling/voting.py): ``majority`` (votes; ties by mean probability), ``soft`` (mean probability),
``weighted`` (weighted mean; weights from ``--weights`` or fitted on validation). Rules (ensembling/rerank.py,
example ``rerank_rules.yaml``; a rules file must hold at least one rule): ``demote``, ``bias``, ``teacher``,
applied in order.

Prints a table of each member's and the ensemble's validation and test weighted F1 and accuracy
(``valid_f1_is`` says whether a validation figure was measured on the rows the weights or offsets were
fitted on: ``fitted on (in-sample)``; with fold groups ``heldout_f1`` is the cross-fitted figure), the rule
report (validation columns named ``insample_f1_*`` where anything was fitted on validation, ``heldout_f1_*``
with fold groups; a rule that lowers the validation F1 is flagged ``HURTS VALIDATION F1``, the held-out one
``HURTS HELD-OUT F1``), with fold groups the held-out table, and the label distribution of the submission.
Without fold groups, fitted figures are in-sample and a log line says how to get an honest estimate.
Writes ``--out`` (``name,discrete`` in candidate order), and beside it ``<out>_pred.csv`` (the ensemble's
predictions in the prediction-CSV format: ``prob_`` columns are the scores after the rules, ``pred`` the final
label), with rules ``<out>_rules.csv``, with fold groups ``<out>_heldout.csv``. Exit status 2 on bad input.
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd

import config
from ensembling.voting import MODES, match_emo_rule, prob_classes, weighted_f1
from ensembling.oof import (check_distinct, cross_fit, epoch_selection, expand, fit_and_apply, heldout_table,
                            read_test_groups, read_valid_groups)
from dataloader.files import DataError, read_label_csv, read_names_csv
from common.metrics import emotion_metrics
from ensembling.rerank import load_rules, teacher_answers
from ensembling.submission import write_submission
from common.utils import get_logger
from engine.results import check_current, result_checkpoint

IN_SAMPLE = "fitted on (in-sample)"
NOT_FITTED = "not fitted on"
HURTS_HELDOUT = "HURTS HELD-OUT F1"
HONEST_HINT = ("an honest estimate needs out-of-fold predictions: train each member once per fold list of "
               "preprocess/build_splits.py --kfold K and give its fold files as one quoted pattern (ensemble.py "
               "--help)")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preds", nargs="+", required=True,
                   help="test prediction CSVs or run folders, one per member; a quoted glob pattern is one member's "
                        "fold files (averaged)")
    p.add_argument("--valid_preds", nargs="*", default=[],
                   help="the same members' validation prediction CSVs or run folders, same order; a quoted glob "
                        "pattern is one member's fold files (concatenated: out-of-fold predictions)")
    p.add_argument("--pred_name", default="test_pred.csv", help="file read from a run folder given to --preds")
    p.add_argument("--valid_pred_name", default="valid_pred.csv",
                   help="file read from a run folder given to --valid_preds")
    p.add_argument("--mode", default="soft", choices=MODES)
    p.add_argument("--weights", nargs="*", type=float, default=None,
                   help="member weights for --mode weighted (default: fitted on --valid_preds)")
    p.add_argument("--rounds", type=int, default=50, help="greedy weight-fitting rounds")
    p.add_argument("--emo_rule", default=None, choices=sorted(config.EMO_RULE),
                   help="label set (default: the one matching the first CSV's prob columns)")
    p.add_argument("--rules", default=None, help="re-ranking rules YAML (e.g. rerank_rules.yaml)")
    p.add_argument("--teacher", default=None, help="teacher JSON Lines for 'teacher' rules")
    p.add_argument("--candidates", default=None, help="CSV with a name column (default: the predicted names)")
    p.add_argument("--labels", default=None, help="test truth CSV name,discrete (scoring only)")
    p.add_argument("--out", default=os.path.join(config.SAVE_ROOT, "submission.csv"),
                   help="submission CSV (default saved/submission.csv)")
    return p


def resolve_paths(items, file_name, flag):
    """Prediction CSV paths: a run folder stands for its ``file_name``. A file inside a run folder must come from
    the run's current ``best.pth`` (engine/results.py: a stale file is refused); no file may mix checkpoints."""
    out = []
    for item in items:
        path = os.path.join(item, file_name) if os.path.isdir(item) else item
        if not os.path.isfile(path):
            hint = f" (run folder '{item}' has no {file_name})" if os.path.isdir(item) else ""
            raise DataError(f"{flag} '{path}' does not exist{hint}")
        run_dir = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(run_dir, "args.yaml")) and os.path.isfile(os.path.join(run_dir, "best.pth")):
            check_current(run_dir, path)
        else:
            result_checkpoint(path)
        out.append(path)
    return out


def member_groups(items, file_name, flag):
    """One list of prediction CSV paths per member: a glob pattern stands for its matches (one member's fold
    files), a run folder for its ``file_name``."""
    return [resolve_paths(expand(item, flag), file_name, flag) for item in items]


def describe_group(group, how):
    return group[0] if len(group) == 1 else f"{len(group)} fold files {how} ({group[0]} ... {group[-1]})"


def resolve_classes(emo_rule, first_csv):
    if emo_rule is not None:
        return emo_rule, list(config.EMO_RULE[emo_rule])
    classes = prob_classes(first_csv)
    key = match_emo_rule(classes)
    if key is None:
        raise DataError(f"the prob columns of '{first_csv}' ({classes}) match no label set in config.EMO_RULE; "
                        "pass --emo_rule (add the label set to config.EMO_RULE first if it is new)")
    return key, list(config.EMO_RULE[key])


def test_truth(labels_csv, members, class_names):
    """``(N,)`` class indices of the test names, -1 where unknown; None without any truth."""
    if labels_csv:
        table = read_label_csv(labels_csv, class_names).set_index("name")["discrete"]
        cidx = {c: i for i, c in enumerate(class_names)}
        truth = np.array([cidx[table[n]] if n in table.index else -1 for n in members.names])
        if (truth < 0).all():
            raise DataError(f"--labels '{labels_csv}' holds none of the {len(members.names)} predicted names")
        return truth
    return members.labels


def _metrics(labels, pred):
    if labels is None:
        return float("nan"), float("nan")
    known = labels >= 0
    m = emotion_metrics(labels[known], np.asarray(pred)[known])
    return m["f1"], m["acc"]


def score_table(test, valid, weights, full, test_labels, mode, has_rules, fitted_any, cross=None):
    """One row per member, the ensemble, and the ensemble after the rules.

    ``full``: the :class:`ensembling.oof.Fit` of the submission. With validation predictions,
    ``valid_f1_is`` says whether a row's validation figures were measured on the rows its weights or offsets
    were fitted on; with fold groups (``cross``), ``heldout_f1`` is the cross-fitted figure."""
    valid_labels = None if valid is None else valid.labels
    n_classes = len(test.class_names)
    rows = []
    entries = [(mid, weights[r], valid.probs[r].argmax(1) if valid is not None else None, test.probs[r].argmax(1),
                NOT_FITTED, None) for r, mid in enumerate(test.member_ids)]
    entries.append((f"ensemble ({mode})", np.nan, full.fit_pred, full.pred,
                    IN_SAMPLE if full.fitted_weights else NOT_FITTED, None if cross is None else cross.pred))
    if has_rules:
        entries.append(("ensemble + rules", np.nan, full.rerank.valid_pred, full.rerank.pred,
                        IN_SAMPLE if fitted_any else NOT_FITTED, None if cross is None else cross.steps[-1]))
    for label, weight, vpred, tpred, use, held in entries:
        vf, va = _metrics(valid_labels, vpred) if vpred is not None else (np.nan, np.nan)
        tf, ta = _metrics(test_labels, tpred)
        row = {"member": label, "weight": weight, "valid_f1": vf, "valid_acc": va}
        if valid is not None:
            row["valid_f1_is"] = use
        if cross is not None:
            row["heldout_f1"] = weighted_f1(valid_labels, held if held is not None else vpred, n_classes)
        row.update({"test_f1": tf, "test_acc": ta})
        rows.append(row)
    return pd.DataFrame(rows)


def prediction_csv(path, names, scores, pred, class_names, labels=None):
    """The ensemble's predictions in the prediction-CSV format, written atomically."""
    df = pd.DataFrame({"name": names})
    if labels is not None and (labels >= 0).all():
        df["label"] = [class_names[i] for i in labels]
    df["pred"] = [class_names[i] for i in pred]
    for j, c in enumerate(class_names):
        df[f"prob_{c}"] = scores[:, j]
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, path)


def rule_report(report, fitted_any, cross=None, labels=None, n_classes=None):
    """The rule report as written and printed: validation columns renamed ``insample_f1_*`` where anything was
    fitted on validation (weights or a bias rule), held-out columns added with fold groups (``cross``)."""
    report = report.copy()
    if cross is not None:
        held = [weighted_f1(labels, p, n_classes) for p in [cross.pred] + list(cross.steps)]
        report["heldout_f1_before"] = held[:-1]
        report["heldout_f1_after"] = held[1:]
        report["heldout_flag"] = [HURTS_HELDOUT if a < b - 1e-12 else "" for b, a in zip(held[:-1], held[1:])]
    if fitted_any:
        report = report.rename(columns={"valid_f1_before": "insample_f1_before", "valid_f1_after": "insample_f1_after"})
    return report


def rule_table(report):
    """The rule report as text: one line per rule, then the fitted offsets of the bias rules."""
    shown = report.drop(columns=["offsets"]).copy()
    width = max(len(d) for d in shown["description"])
    shown["description"] = [d.ljust(width) for d in shown["description"]]
    lines = [shown.to_string(index=False, na_rep="-", float_format=fmt)]
    for i, off in zip(report["rule"], report["offsets"]):
        if off:
            lines.append(f"rule {i} offsets: " + ", ".join(f"{c} {v:+.3f}" for c, v in off.items()))
    return "\n".join(lines)


def fmt(x):
    return f"{x:.4f}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = get_logger("mer.ensemble")
    try:
        test_groups = member_groups(args.preds, args.pred_name, "--preds")
        valid_groups = member_groups(args.valid_preds, args.valid_pred_name, "--valid_preds")
        if valid_groups and len(valid_groups) != len(test_groups):
            raise DataError(f"{len(test_groups)} --preds but {len(valid_groups)} --valid_preds: give the validation "
                            "predictions of the same members, in the same order (a member's fold files as one "
                            "quoted pattern, e.g. 'saved/oof/valid/*_m1-fold?.csv')")
        check_distinct(test_groups, args.preds, "--preds")
        check_distinct(valid_groups, args.valid_preds, "--valid_preds")
        emo_rule, class_names = resolve_classes(args.emo_rule, test_groups[0][0])
        test = read_test_groups(test_groups, class_names, args.preds)
        valid = read_valid_groups(valid_groups, class_names, args.valid_preds) if valid_groups else None
        oof = valid is not None and valid.folds is not None
        n_members = len(test_groups)
        log.info(f"{n_members} members, {len(test.names)} test names, label set {emo_rule}"
                 + (f", {len(valid.names)} validation names" if valid else "")
                 + (f" (out-of-fold, {len(set(valid.folds.tolist()))} folds)" if oof else ""))
        for r, mid in enumerate(test.member_ids):
            log.info(f"member {mid}: test {describe_group(test_groups[r], 'averaged')}"
                     + (f", validation {describe_group(valid_groups[r], 'out-of-fold')}" if valid_groups else ""))
        valid_labels = None if valid is None else valid.labels

        if args.weights and args.mode != "weighted":
            raise DataError(f"--weights are used by --mode weighted only, not --mode {args.mode}")
        given = None
        if args.mode == "weighted":
            if args.weights:
                given = np.asarray(args.weights, dtype=np.float64)
                if len(given) != n_members:
                    raise DataError(f"{len(given)} --weights for {n_members} members")
            elif valid_labels is None:
                raise DataError("--mode weighted fits the weights on validation predictions: pass --valid_preds "
                                "(with a 'label' column, as in train.py's valid_pred.csv) or --weights")

        teacher = teacher_answers(args.teacher, class_names, log) if args.teacher else None
        rules = load_rules(args.rules, class_names) if args.rules else []
        full = fit_and_apply(test.probs, test.names, class_names, args.mode, given, args.rounds, rules, teacher,
                             fit_probs=None if valid is None else valid.probs, fit_labels=valid_labels,
                             fit_names=None if valid is None else valid.names)
        fitted_any = full.fitted_weights or any(r["type"] == "bias" for r in rules)
        shown_weights = full.weights if full.weights is not None else np.full(n_members, 1.0 / n_members)

        cross = heldout = None
        if oof and valid_labels is not None:
            cross = cross_fit(valid, args.mode, given, args.rounds, rules, teacher)
            heldout = heldout_table(valid_labels, len(class_names), args.mode, full, cross)
            if full.fitted_weights:
                for k, w in zip(cross.folds, cross.fold_weights):
                    log.info(f"weights fitted without fold {k}: " + ", ".join(f"{x:.3f}" for x in w))
        elif fitted_any and valid_labels is not None:
            log.info("the validation F1 of the fitted weights / bias offsets is in-sample (measured on the "
                     f"predictions they were fitted on); {HONEST_HINT}")

        test_labels = test_truth(args.labels, test, class_names)
        table = score_table(test, valid, shown_weights, full, test_labels, args.mode, bool(rules), fitted_any, cross)
        print(table.to_string(index=False, na_rep="-", float_format=fmt))
        if oof:
            k = len(set(valid.folds.tolist()))
            print(f"valid_f1: on the out-of-fold predictions of {k} folds ({len(valid.names)} names); heldout_f1: "
                  f"weights and offsets fitted on {k - 1} folds decide the fold left out, pooled over all {k}")
            selection = epoch_selection(valid_groups).line()
            print(selection)
            log.info(selection)
        elif valid is not None and fitted_any:
            print(f"valid_f1 '{IN_SAMPLE}': measured on the predictions the weights/offsets were fitted on "
                  "(optimistic); " + HONEST_HINT)
        report = None
        if rules:
            report = rule_report(full.rerank.report, fitted_any, cross, valid_labels, len(class_names))
            print()
            print(rule_table(report))
        if heldout is not None:
            print()
            print("held-out estimate: insample_f1 fitted on and scored on all out-of-fold rows; heldout_f1 "
                  "cross-fitted (each fold decided by what was fitted on the other folds, pooled)")
            print(heldout.to_string(index=False, float_format=fmt))

        candidates = read_names_csv(args.candidates) if args.candidates else list(test.names)
        final_labels = [class_names[i] for i in full.rerank.pred]
        print()
        dist = write_submission(args.out, test.names, final_labels, candidates, class_names, log=None)
        stem = os.path.splitext(args.out)[0]
        prediction_csv(stem + "_pred.csv", test.names, full.rerank.scores, full.rerank.pred, class_names,
                       test_labels)
        if rules:
            report.to_csv(stem + "_rules.csv", index=False)
        if heldout is not None:
            heldout.to_csv(stem + "_heldout.csv", index=False)
        log.info(f"label distribution {dist}; ensemble predictions {stem}_pred.csv"
                 + (f"; rule report {stem}_rules.csv" if rules else "")
                 + (f"; held-out estimate {stem}_heldout.csv" if heldout is not None else ""))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
