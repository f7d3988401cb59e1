"""Ensemble prediction CSVs (runs, seeds, expert heads), re-rank with rules, write a challenge submission.

    python ensemble.py --preds saved/demo/seed0/moe/run saved/demo/seed1/moe/run saved/demo/seed2/lmf/run \
        --valid_preds saved/demo/seed0/moe/run saved/demo/seed1/moe/run saved/demo/seed2/lmf/run \
        --mode weighted --rules rerank_rules.yaml --teacher features/demo/teachers/demo-vlm.jsonl \
        --candidates features/demo/test.csv --labels features/demo/test_labels.csv --out saved/submission.csv

Members: ``--preds`` prediction CSVs (test.py / train.py --test), or run folders (their ``test_pred.csv``,
or ``--pred_name``). ``--valid_preds``: the same members' VALIDATION predictions, in the same order (a run
folder -> its ``valid_pred.csv``), with the ``label`` column train.py writes: member weights
(``--mode weighted``, greedy selection of Caruana et al. 2004) and ``bias`` rules are fitted on them, and
they give the validation column of the table and the rule report. The test labels (``--labels``, else a
``label`` column of the test CSVs) are used for scoring only.

Voting (ensembling/voting.py): ``majority`` (votes; ties by mean probability), ``soft`` (mean probability),
``weighted`` (weighted mean; weights from ``--weights`` or fitted on validation). Rules (ensembling/rerank.py,
example ``rerank_rules.yaml``): ``demote``, ``bias``, ``teacher``, applied in order.

Prints a table of each member's and the ensemble's validation and test weighted F1 and accuracy, the rule
report (a rule that lowers the validation F1 is flagged ``HURTS VALIDATION F1``) and the label distribution
of the submission. Writes ``--out`` (``name,discrete`` in candidate order), and beside it
``<out>_pred.csv`` (the ensemble's predictions in the prediction-CSV format: ``prob_`` columns are the
scores after the rules, ``pred`` the final label) and, with rules, ``<out>_rules.csv``. Exit status 2 on
bad input.
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd

import config
from ensembling.voting import MODES, fit_weights, match_emo_rule, prob_classes, read_members, vote
from dataloader.files import DataError, read_label_csv, read_names_csv
from common.metrics import emotion_metrics
from ensembling.rerank import Validation, load_rules, rerank, teacher_answers
from ensembling.submission import write_submission
from common.utils import get_logger


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preds", nargs="+", required=True, help="test prediction CSVs or run folders")
    p.add_argument("--valid_preds", nargs="*", default=[],
                   help="the same members' validation prediction CSVs or run folders, same order")
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
    """Prediction CSV paths: a run folder stands for its ``file_name``."""
    out = []
    for item in items:
        path = os.path.join(item, file_name) if os.path.isdir(item) else item
        if not os.path.isfile(path):
            hint = f" (run folder '{item}' has no {file_name})" if os.path.isdir(item) else ""
            raise DataError(f"{flag} '{path}' does not exist{hint}")
        out.append(path)
    return out


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


def score_table(test, valid, weights, ens, final, test_labels, valid_labels, mode, has_rules):
    """One row per member, the ensemble, and the ensemble after the rules."""
    rows = []
    for r, mid in enumerate(test.member_ids):
        vf, va = _metrics(valid_labels, valid.probs[r].argmax(1)) if valid is not None else (np.nan, np.nan)
        tf, ta = _metrics(test_labels, test.probs[r].argmax(1))
        rows.append({"member": mid, "weight": weights[r], "valid_f1": vf, "valid_acc": va, "test_f1": tf,
                     "test_acc": ta})
    entries = [(f"ensemble ({mode})", ens)] + ([("ensemble + rules", final)] if has_rules else [])
    for label, (vpred, tpred) in entries:
        vf, va = _metrics(valid_labels, vpred) if vpred is not None else (np.nan, np.nan)
        tf, ta = _metrics(test_labels, tpred)
        rows.append({"member": label, "weight": np.nan, "valid_f1": vf, "valid_acc": va, "test_f1": tf,
                     "test_acc": ta})
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


def rule_table(report):
    """The rule report as text: one line per rule, then the fitted offsets of the bias rules."""
    shown = report.drop(columns=["offsets"]).copy()
    width = max(len(d) for d in shown["description"])
    shown["description"] = [d.ljust(width) for d in shown["description"]]
    lines = [shown.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}")]
    for i, off in zip(report["rule"], report["offsets"]):
        if off:
            lines.append(f"rule {i} offsets: " + ", ".join(f"{c} {v:+.3f}" for c, v in off.items()))
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = get_logger("mer.ensemble")
    try:
        test_paths = resolve_paths(args.preds, args.pred_name, "--preds")
        valid_paths = resolve_paths(args.valid_preds, args.valid_pred_name, "--valid_preds")
        if valid_paths and len(valid_paths) != len(test_paths):
            raise DataError(f"{len(test_paths)} --preds but {len(valid_paths)} --valid_preds: give the validation "
                            "predictions of the same members, in the same order")
        emo_rule, class_names = resolve_classes(args.emo_rule, test_paths[0])
        test = read_members(test_paths, class_names)
        valid = read_members(valid_paths, class_names) if valid_paths else None
        log.info(f"{len(test_paths)} members, {len(test.names)} test names, label set {emo_rule}"
                 + (f", {len(valid.names)} validation names" if valid else ""))
        for mid, tp, vp in zip(test.member_ids, test_paths, valid_paths or [None] * len(test_paths)):
            log.info(f"member {mid}: test {tp}" + (f", validation {vp}" if vp else ""))
        valid_labels = None if valid is None else valid.labels

        weights = None
        if args.weights and args.mode != "weighted":
            raise DataError(f"--weights are used by --mode weighted only, not --mode {args.mode}")
        if args.mode == "weighted":
            if args.weights:
                weights = np.asarray(args.weights, dtype=np.float64)
                if len(weights) != len(test_paths):
                    raise DataError(f"{len(weights)} --weights for {len(test_paths)} members")
            elif valid_labels is None:
                raise DataError("--mode weighted fits the weights on validation predictions: pass --valid_preds "
                                "(with a 'label' column, as in train.py's valid_pred.csv) or --weights")
            else:
                weights = fit_weights(valid.probs, valid_labels, rounds=args.rounds)
            weights = weights / weights.sum()
        shown_weights = weights if weights is not None else np.full(len(test_paths), 1.0 / len(test_paths))
        scores, pred = vote(test.probs, args.mode, weights)
        v_scores, v_pred = vote(valid.probs, args.mode, weights) if valid is not None else (None, None)

        teacher = teacher_answers(args.teacher, class_names, log) if args.teacher else None
        rules = load_rules(args.rules, class_names) if args.rules else []
        val = Validation(v_scores, valid_labels, valid.names, teacher, v_pred) if valid is not None else None
        res = rerank(rules, scores, class_names, test.names, teacher, val, pred=pred)

        test_labels = test_truth(args.labels, test, class_names)
        table = score_table(test, valid, shown_weights, (v_pred, pred), (res.valid_pred, res.pred), test_labels,
                            valid_labels, args.mode, bool(rules))
        print(table.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}"))
        if rules:
            print()
            print(rule_table(res.report))

        candidates = read_names_csv(args.candidates) if args.candidates else list(test.names)
        final_labels = [class_names[i] for i in res.pred]
        print()
        dist = write_submission(args.out, test.names, final_labels, candidates, class_names, log=None)
        stem = os.path.splitext(args.out)[0]
        prediction_csv(stem + "_pred.csv", test.names, res.scores, res.pred, class_names, test_labels)
        if rules:
            res.report.to_csv(stem + "_rules.csv", index=False)
        log.info(f"label distribution {dist}; ensemble predictions {stem}_pred.csv"
                 + (f"; rule report {stem}_rules.csv" if rules else ""))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
