"""Rule-based re-ranking of an ensemble's predictions: correct known biases in how people label.

Rules come from a YAML file the user edits (``rerank_rules.yaml`` at the repository root is an example):
a list, applied in order, each rule a mapping with a ``type`` and its fields.

* ``demote`` ``{type: demote, class: worried, margin: 0.15, alternatives: [sad, surprise, neutral]}``
  [optional ``max_gap``]: where the prediction is ``class`` and its score leads the runner-up (the best
  other class) by less than ``margin``, predict instead the alternative with the highest score (the first
  listed on a tie), provided that score is > 0 and, with ``max_gap``, at most ``max_gap`` below ``class``'s.
  (The MER2025 runner-up: predict ``worried`` only when it clearly wins.)
* ``bias`` ``{type: bias}`` [optional ``classes`` (default all), ``iterations`` (100), ``target: labelled``]:
  an additive offset per class on the log scores, fitted on the VALIDATION predictions so that the
  distribution of predicted labels matches the labelled (validation truth) distribution, then applied to
  the test scores. Fitting is iterative proportional adjustment: ``b_c += step * log(target_c / predicted_c)``
  (counts smoothed by half a sample, ``step`` 1 decaying by 0.9 a round, only the listed ``classes``
  move), keeping the offsets of the round whose predicted distribution is closest (L1) to the target,
  the earliest on a tie; deterministic. With every class fitted, the offsets are centred to mean 0. It is
  meant for ``soft``/``weighted`` scores: ``majority`` vote shares are coarse and often tied (a tie is then
  broken by class order, no longer by the mean probability).
* ``teacher`` ``{type: teacher, min_conf: 4, margin: 0.1}``: where the top-two score margin is below
  ``margin`` and the teacher answered this name with confidence >= ``min_conf`` and a label of the label
  set, predict the teacher's label.

How rules interact. The state is the scores ``(N, C)`` plus the current prediction. It starts as the
ensemble's scores and predictions (the argmax of the scores, except where ``majority`` voting broke a tie
of votes by the mean probability). A sample decided by ``demote`` (demoted) or ``teacher`` (given the
teacher's label, even where that is the current prediction: a confident teacher confirms it) is final: later
rules leave it alone, so the order of the file is the order of priority. ``bias`` rescales the scores of
every sample (``scores * exp(b)``, renormalised) and re-takes the argmax of the samples that no earlier rule
has changed, so later rules (margins included) see the corrected scores. Hence every sample that no
``demote``/``teacher`` rule has decided is predicted as the argmax of the current scores (up to ties).

Validation data (scores, labels, names, teacher answers) runs through the same rules, in the same order:
``bias`` is fitted on it, and the report gives per rule the validation weighted F1 before and after it
(sequentially, after the earlier rules) and flags a rule that lowers it with ``HURTS VALIDATION F1``.
Choose rules on validation only; the test predictions never feed back into any rule. The validation F1 after
a ``bias`` rule is measured on the rows its offsets were fitted on (in-sample, optimistic):
``ensembling.oof`` cross-fits the rules over out-of-fold predictions for a held-out figure.
"""

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

from ensembling.voting import weighted_f1
from common.errors import DataError

RULE_FIELDS = {
    "demote": {"required": ("class", "margin", "alternatives"), "optional": ("max_gap",)},
    "bias": {"required": (), "optional": ("classes", "iterations", "target")},
    "teacher": {"required": (), "optional": ("min_conf", "margin")},
}
DEFAULTS = {"bias": {"iterations": 100, "target": "labelled"}, "teacher": {"min_conf": 4.0, "margin": 0.1}}
BIAS_TARGETS = ("labelled",)
HURTS = "HURTS VALIDATION F1"
REPORT_COLUMNS = ["rule", "type", "description", "test_changed", "valid_changed", "valid_f1_before",
                  "valid_f1_after", "flag", "offsets"]


@dataclass
class Validation:
    """Validation data for the rules: ``scores`` ``(N, C)``, ``labels`` ``(N,)`` (class indices or label
    strings; None where unknown), ``names``, ``teacher`` (name -> (label, confidence), or None) and ``pred``
    (the voter's predictions; default the argmax of ``scores``)."""
    scores: np.ndarray
    labels: object = None
    names: list = None
    teacher: dict = None
    pred: object = None


@dataclass
class RerankResult:
    """Everything :func:`rerank` computes: test ``pred`` and final ``scores``, the ``report``, the validation
    predictions after all rules (or None) and the rules as validated (defaults filled in); ``steps`` and
    ``valid_steps``: the test and validation predictions after each rule (``steps[i]`` after rule ``i + 1``;
    validation entries None without validation data), which ``ensembling.oof`` scores rule by rule on
    held-out folds."""
    pred: np.ndarray
    scores: np.ndarray
    report: pd.DataFrame
    valid_pred: np.ndarray = None
    rules: list = None
    steps: list = None
    valid_steps: list = None


# ------------------------------------------------------------------------------------------------------
# Reading and checking the rules
# ------------------------------------------------------------------------------------------------------
def _number(value, where, field, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: field '{field}' must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise DataError(f"{where}: field '{field}' is {value}, it must be {span}")
    return float(value)


def _class_list(value, where, field, class_names):
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(c, str) for c in items):
        raise DataError(f"{where}: field '{field}' must be a non-empty list of classes from "
                        f"{list(class_names)}, got {value!r}")
    items = [c.strip().lower() for c in items]
    bad = [c for c in items if c not in class_names]
    if bad:
        raise DataError(f"{where}: field '{field}' names {bad}, not in the label set {list(class_names)}")
    if len(set(items)) != len(items):
        raise DataError(f"{where}: field '{field}' lists a class twice: {items}")
    return items


def validate_rules(rules, class_names, source="rules"):
    """Check a list of rule mappings against the label set; returns them with defaults filled in.

    Raises :class:`DataError` naming ``source``, the rule (1 = the first) and the bad field, with the allowed
    values."""
    class_names = list(class_names)
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise DataError(f"{source}: the rules must be a YAML list (one '- type: ...' item per rule), "
                        f"got {type(rules).__name__}")
    out = []
    for i, raw in enumerate(rules, 1):
        if not isinstance(raw, dict):
            raise DataError(f"{source}: rule {i} must be a mapping with a 'type', got {raw!r}")
        kind = raw.get("type")
        if kind not in RULE_FIELDS:
            raise DataError(f"{source}: rule {i} has type {kind!r}; allowed types: {', '.join(RULE_FIELDS)}")
        where = f"{source}: rule {i} ({kind})"
        spec = RULE_FIELDS[kind]
        allowed = ("type",) + spec["required"] + spec["optional"]
        unknown = [k for k in raw if k not in allowed]
        if unknown:
            raise DataError(f"{where}: unknown field(s) {unknown}; allowed fields: {', '.join(allowed)}")
        missing = [k for k in spec["required"] if k not in raw]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; a {kind} rule needs "
                            f"{', '.join(spec['required'])}")
        rule = {"type": kind, **DEFAULTS.get(kind, {}), **{k: v for k, v in raw.items() if k != "type"}}
        if kind == "demote":
            rule["class"] = _class_list(rule["class"], where, "class", class_names)
            if len(rule["class"]) != 1:
                raise DataError(f"{where}: field 'class' must be one class, got {rule['class']}")
            rule["class"] = rule["class"][0]
            rule["margin"] = _number(rule["margin"], where, "margin", 0)
            rule["alternatives"] = _class_list(rule["alternatives"], where, "alternatives", class_names)
            if rule["class"] in rule["alternatives"]:
                raise DataError(f"{where}: field 'alternatives' must not include the demoted class "
                                f"'{rule['class']}'")
            if rule.get("max_gap") is not None:
                rule["max_gap"] = _number(rule["max_gap"], where, "max_gap", 0)
            else:
                rule["max_gap"] = None
        elif kind == "bias":
            rule["classes"] = (list(class_names) if rule.get("classes") is None
                               else _class_list(rule["classes"], where, "classes", class_names))
            it = rule["iterations"]
            if isinstance(it, bool) or not isinstance(it, int) or it < 1:
                raise DataError(f"{where}: field 'iterations' must be an integer >= 1, got {it!r}")
            if rule["target"] not in BIAS_TARGETS:
                raise DataError(f"{where}: field 'target' is {rule['target']!r}; allowed values: "
                                f"{', '.join(BIAS_TARGETS)}")
        else:
            rule["min_conf"] = _number(rule["min_conf"], where, "min_conf", 0, 5)
            rule["margin"] = _number(rule["margin"], where, "margin", 0)
        out.append(rule)
    return out


def load_rules(path, class_names):
    """Read and check a rules YAML file.

    A file that holds no rule (empty, only comments, or an empty list) is refused: asking for rules and
    getting none is most likely the wrong file, and the report would silently say nothing."""
    if not os.path.isfile(path):
        raise DataError(f"rules file '{path}' does not exist (see rerank_rules.yaml for an example)")
    with open(path, encoding="utf-8-sig") as f:
        try:
            rules = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise DataError(f"rules file '{path}' is not valid YAML: {e}") from e
    if rules is None or rules == []:
        raise DataError(f"rules file '{path}' holds no rules (it is empty or only comments): give a rules file "
                        "with at least one rule (see rerank_rules.yaml), or leave out --rules")
    return validate_rules(rules, class_names, source=f"rules file '{path}'")


def describe(rule, class_names=None):
    """One line saying what a (validated) rule does."""
    if rule["type"] == "demote":
        gap = f" and within {rule['max_gap']:g} of it" if rule["max_gap"] is not None else ""
        return (f"{rule['class']} leading by < {rule['margin']:g} -> best of "
                f"{', '.join(rule['alternatives'])}{gap}")
    if rule["type"] == "bias":
        every = class_names is not None and set(rule["classes"]) == set(class_names)
        which = "all classes" if every else ", ".join(rule["classes"])
        return f"log-score offsets ({which}) matching the {rule['target']} validation distribution"
    return f"teacher label where top-two margin < {rule['margin']:g} and confidence >= {rule['min_conf']:g}"


def teacher_answers(path, class_names, log=None):
    """``name -> (label, confidence)`` from a teacher JSON Lines file (unusable lines are skipped and
    counted in the log); records without a label are left out."""
    from teachers.records import read_teacher_jsonl
    df, problems = read_teacher_jsonl(path, list(class_names))
    answers = {n: (lab, conf) for n, lab, conf in zip(df["name"], df["label"], df["confidence"])
               if isinstance(lab, str)}
    if log is not None:
        log.info(f"teacher {path}: {len(answers)} answers" + (f"; {len(problems)} unusable lines skipped"
                                                              if problems else ""))
    return answers


# ------------------------------------------------------------------------------------------------------
# Applying the rules
# ------------------------------------------------------------------------------------------------------
class _State:
    """Scores, current prediction and which samples a demote/teacher rule has already changed."""

    def __init__(self, scores, names=None, teacher=None, labels=None, pred=None):
        self.scores = scores
        if pred is None:
            self.pred = scores.argmax(1)
        else:
            self.pred = np.asarray(pred, dtype=np.int64).copy()
            if self.pred.shape != (len(scores),) or (self.pred < 0).any() or (self.pred >= scores.shape[1]).any():
                raise DataError(f"initial predictions must be {len(scores)} class indices 0..{scores.shape[1] - 1}")
        self.fixed = np.zeros(len(scores), dtype=bool)
        self.names = names
        self.teacher = teacher
        self.labels = labels

    def f1(self):
        if self.labels is None:
            return float("nan")
        return weighted_f1(self.labels, self.pred, self.scores.shape[1])


def _top_two_margin(scores):
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _demote(rule, state, cidx):
    k = cidx[rule["class"]]
    alts = np.array([cidx[a] for a in rule["alternatives"]])
    s = state.scores
    others = np.delete(s, k, axis=1).max(1)
    alt_scores = s[:, alts]
    best = alts[alt_scores.argmax(1)]  # first listed on a tie
    best_score = alt_scores.max(1)
    hit = (~state.fixed) & (state.pred == k) & (s[:, k] - others < rule["margin"]) & (best_score > 0)
    if rule["max_gap"] is not None:
        hit &= s[:, k] - best_score <= rule["max_gap"]
    state.pred = np.where(hit, best, state.pred)
    state.fixed |= hit


def _teacher(rule, state, cidx, where):
    if state.teacher is None:
        raise DataError(f"{where} needs the teacher's answers: pass a teacher file (--teacher)")
    if state.names is None:
        raise DataError(f"{where} needs the sample names to look up the teacher's answers")
    low = (~state.fixed) & (_top_two_margin(state.scores) < rule["margin"])
    for i in np.flatnonzero(low):
        answer = state.teacher.get(state.names[i])
        if answer is None:
            continue
        label, conf = answer
        if label not in cidx or conf is None or not np.isfinite(conf) or conf < rule["min_conf"]:
            continue
        state.pred[i] = cidx[label]
        state.fixed[i] = True  # decided by the teacher, even where it agrees with the ensemble


def _smoothed_distribution(pred, n_classes):
    n = len(pred)
    return (np.bincount(pred, minlength=n_classes) + 0.5) / (n + 0.5 * n_classes)


def fit_bias(scores, labels, classes_idx=None, iterations=100, fixed=None, fixed_pred=None):
    """Per-class log-score offsets ``(C,)`` that make the predicted label distribution of ``scores`` match
    the distribution of ``labels`` (see the module docstring). ``fixed``/``fixed_pred``: samples whose
    prediction is already decided (they count in the distribution with their ``fixed_pred`` label but do not
    move). ``fixed`` with a decided sample needs ``fixed_pred`` (the predictions, ``(N,)``; only the fixed
    entries are read): without it those samples' labels are unknown, and counting them as any class would
    skew the fit, so a :class:`ValueError` says so (:func:`rerank` always passes both)."""
    scores = np.asarray(scores, dtype=np.float64)
    n, n_classes = scores.shape
    labels = np.asarray(labels, dtype=np.int64)
    move = np.zeros(n_classes, dtype=bool)
    move[list(range(n_classes)) if classes_idx is None else list(classes_idx)] = True
    with np.errstate(divide="ignore"):
        logs = np.log(scores)
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    if fixed.shape != (n,):
        raise ValueError(f"fixed must be {n} booleans, got shape {fixed.shape}")
    if fixed.any():
        if fixed_pred is None:
            raise ValueError(f"fit_bias: {int(fixed.sum())} samples are fixed but fixed_pred is None: pass the "
                             "fixed samples' predictions (fixed_pred), they count in the predicted distribution")
        fixed_pred = np.asarray(fixed_pred, dtype=np.int64)
        if fixed_pred.shape != (n,):
            raise ValueError(f"fixed_pred must be {n} class indices, got shape {fixed_pred.shape}")
    else:
        fixed_pred = 0  # unused: no sample is fixed
    target = np.bincount(labels, minlength=n_classes) / n
    target_s = _smoothed_distribution(labels, n_classes)
    b = np.zeros(n_classes)
    best_b, best_d, step = b.copy(), np.inf, 1.0
    for _ in range(iterations + 1):
        pred = np.where(fixed, fixed_pred, (logs + b).argmax(1))
        d = np.abs(np.bincount(pred, minlength=n_classes) / n - target).sum()
        if d < best_d - 1e-12:
            best_b, best_d = b.copy(), d
        if d <= 1e-12:
            break
        b = b + step * np.where(move, np.log(target_s / _smoothed_distribution(pred, n_classes)), 0.0)
        step *= 0.9
    if move.all():
        best_b = best_b - best_b.mean()
    return best_b


def _apply_offsets(state, b):
    s = state.scores * np.exp(b)
    state.scores = s / s.sum(1, keepdims=True)
    state.pred = np.where(state.fixed, state.pred, state.scores.argmax(1))


def _as_validation(valid, class_names):
    if valid is None:
        return None
    if isinstance(valid, dict):
        valid = Validation(**valid)
    elif isinstance(valid, (tuple, list)):
        valid = Validation(*valid)
    scores = np.asarray(valid.scores, dtype=np.float64)
    labels = valid.labels
    if labels is not None:
        labels = list(labels)
        if labels and isinstance(labels[0], str):
            cidx = {c: i for i, c in enumerate(class_names)}
            bad = sorted({x for x in labels if x not in cidx})
            if bad:
                raise DataError(f"validation labels {bad} are not in the label set {list(class_names)}")
            labels = [cidx[x] for x in labels]
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape[0] != scores.shape[0]:
            raise DataError(f"{labels.shape[0]} validation labels for {scores.shape[0]} validation scores")
    names = None if valid.names is None else [str(n) for n in valid.names]
    return _State(_check_scores(scores, class_names, "validation"), names, valid.teacher, labels, valid.pred)


def _check_scores(scores, class_names, what):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(class_names):
        raise DataError(f"{what} scores must have shape (N, {len(class_names)}), got {scores.shape}")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores.sum(1) <= 0).any():
        raise DataError(f"{what} scores must be finite and non-negative, with no all-zero row")
    return scores.copy()


def rerank(rules, scores, class_names, names, teacher=None, valid=None, pred=None):
    """Apply ``rules`` (validated or raw mappings) in order; returns a :class:`RerankResult`.

    ``scores``: the ensemble's test scores ``(N, C)``; ``names``: the test names (the teacher rule looks
    them up); ``teacher``: name -> (label, confidence) or None; ``valid``: a :class:`Validation` (or a tuple
    ``(scores, labels, names[, teacher])`` or a dict of those) with the validation teacher defaulting to
    ``teacher``; needed by ``bias`` and for the F1 columns of the report. ``pred``: the voter's test
    predictions (``vote``'s second output; they differ from the argmax of the scores only where ``majority``
    broke a tie of votes), default the argmax of ``scores``.
    """
    class_names = list(class_names)
    rules = validate_rules(list(rules or []), class_names)
    cidx = {c: i for i, c in enumerate(class_names)}
    test = _State(_check_scores(scores, class_names, "test"), [str(n) for n in names], teacher, pred=pred)
    if len(test.names) != len(test.scores):
        raise DataError(f"{len(test.names)} names for {len(test.scores)} test score rows")
    val = _as_validation(valid, class_names)
    if val is not None and val.teacher is None:
        val.teacher = teacher
    rows, steps, valid_steps = [], [], []
    for i, rule in enumerate(rules, 1):
        where = f"rule {i} ({rule['type']})"
        before_test = test.pred.copy()
        before_val = None if val is None else val.pred.copy()
        f1_before = float("nan") if val is None else val.f1()
        offsets = None
        if rule["type"] == "demote":
            for st in (test, val):
                if st is not None:
                    _demote(rule, st, cidx)
        elif rule["type"] == "teacher":
            _teacher(rule, test, cidx, where)
            if val is not None and val.teacher is not None and val.names is not None:
                _teacher(rule, val, cidx, where)
        else:
            if val is None or val.labels is None:
                raise DataError(f"{where} is fitted on labelled validation predictions: pass them "
                                "(--valid_preds with a 'label' column)")
            b = fit_bias(val.scores, val.labels, [cidx[c] for c in rule["classes"]], rule["iterations"],
                         val.fixed, val.pred)
            offsets = {c: round(float(v), 4) for c, v in zip(class_names, b)}
            for st in (test, val):
                _apply_offsets(st, b)
        f1_after = float("nan") if val is None else val.f1()
        desc = describe(rule, class_names)
        rows.append({"rule": i, "type": rule["type"], "description": desc,
                     "test_changed": int((test.pred != before_test).sum()),
                     "valid_changed": 0 if val is None else int((val.pred != before_val).sum()),
                     "valid_f1_before": f1_before, "valid_f1_after": f1_after,
                     "flag": HURTS if f1_after < f1_before - 1e-12 else "", "offsets": offsets})
        steps.append(test.pred.copy())
        valid_steps.append(None if val is None else val.pred.copy())
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    return RerankResult(pred=test.pred, scores=test.scores, report=report,
                        valid_pred=None if val is None else val.pred, rules=rules, steps=steps,
                        valid_steps=valid_steps)


def apply_rules(rules, scores, class_names, names, teacher=None, valid=None, pred=None):
    """Apply the rules in order: returns ``(pred (N,), report)``, see :func:`rerank`.

    The report has one row per rule: ``rule`` (1 = first), ``type``, ``description``, ``test_changed``,
    ``valid_changed`` (predictions this rule changed), ``valid_f1_before``/``valid_f1_after`` (validation
    weighted F1 before and after it, after the earlier rules; NaN without labelled validation data),
    ``flag`` (``HURTS VALIDATION F1`` where it drops) and ``offsets`` (the fitted offsets of a ``bias`` rule).
    """
    res = rerank(rules, scores, class_names, names, teacher, valid, pred)
    return res.pred, res.report
