"""Pseudo-label selection strategies over unlabelled samples (pure functions of arrays, so each rule can be
checked by hand).

Inputs, for ``N`` unlabelled samples and ``C`` classes:

* ``probs``: the student's (stage-1 model's) class probabilities, ``(N, C)``, or a list of such arrays (one
  per stage-1 run) for the consensus rule;
* ``teacher_labels``: ``(T, N)`` class indices of ``T`` teachers, ``-1`` where a teacher gave no usable answer;
* ``teacher_conf``: ``(T, N)`` teacher confidences on the teacher's 0-5 scale (NaN where missing).

Every strategy returns a :class:`Selection`: the chosen sample indices, their pseudo labels, a confidence
in [0, 1] and the source of the label, from which :func:`selection_frame` makes the per-sample table
written beside the pseudo-label list.

Strategies (the baselines and the two recipes of the semi-supervised track):

* ``none`` (No-PL): nothing.
* ``teacher`` (T-PL): the teacher's label where its confidence reaches ``min_conf``.
* ``student`` (S-PL): the student's own predictions whose probability reaches ``min_prob``, class-balanced:
  at most ``top_k`` per predicted class, the most probable first.
* ``consensus`` (MRAC25): samples where the stage-1 prediction and the teacher's label agree; with several
  stage-1 runs or several teachers, ``rule='all'`` needs every voter to agree (a teacher without a usable
  answer or under ``min_conf`` then blocks the sample: all means all), ``'majority'`` more than half of the
  voters that vote (runs and teachers together) on the label, which must be the runs' mean prediction and
  have at least one teacher's vote. Under ``'majority'`` a teacher without a usable answer or under
  ``min_conf`` abstains: it counts neither for nor against. Stage-1 runs always vote, so nobody voting means
  no teacher voting: such a sample gets no pseudo label (the runs alone are the ``student`` strategy).
  Optional thresholds on the model probability and on the teacher confidence.
* ``acl`` (ACL-MER): refined scores ``s = p + p_t * sum_teachers 1[teacher label = c and conf >= c_t]`` (not
  renormalised: the boost is what lets teacher agreement lower the student confidence needed, so that
  ``theta = 0.995`` is reachable); take samples with ``max_c s > theta``, at most ``top_k`` per class (the
  highest refined scores first); ``p_t = max(p_init - gamma * t, p_min)`` at iteration ``t`` (0-based).
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STRATEGIES = ("none", "teacher", "student", "consensus", "acl")
# ACL-MER defaults (p_init, gamma, p_min, theta, top_k, c_t)
ACL_DEFAULTS = {"p_init": 0.6, "gamma": 0.1, "p_min": 0.2, "theta": 0.995, "top_k": 200, "c_t": 4.0}


@dataclass
class Selection:
    """Chosen samples: ``index`` into the unlabelled list, ``label`` (class index), ``confidence`` in [0, 1],
    ``source`` per sample (``teacher``, ``student``, ``consensus``, ``acl``)."""
    index: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    source: list = field(default_factory=list)

    def __len__(self):
        return len(self.index)

    @staticmethod
    def empty():
        return Selection(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), [])


def _as_teachers(teacher_labels, teacher_conf, n):
    labels = np.atleast_2d(np.asarray(teacher_labels, dtype=np.int64))
    conf = np.atleast_2d(np.asarray(teacher_conf, dtype=np.float64))
    if labels.shape != conf.shape or labels.shape[1] != n:
        raise ValueError(f"teacher labels {labels.shape} and confidences {conf.shape} must both be (teachers, {n})")
    return labels, conf


def cap_per_class(index, label, score, top_k, num_classes):
    """Keep at most ``top_k`` samples per class, those with the highest ``score`` (ties: lower index first).
    ``top_k <= 0`` keeps everything. Returns positions into the given arrays, sorted."""
    index, label, score = np.asarray(index), np.asarray(label), np.asarray(score, dtype=np.float64)
    if top_k is None or top_k <= 0:
        return np.arange(len(index))
    keep = []
    for c in range(num_classes):
        pos = np.flatnonzero(label == c)
        order = np.lexsort((index[pos], -score[pos]))  # score descending, then index ascending
        keep.extend(pos[order[:top_k]].tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))


def select_teacher(teacher_labels, teacher_conf, min_conf=4.0, teacher=0):
    """T-PL: teacher ``teacher``'s label where its confidence is at least ``min_conf``."""
    labels, conf = np.atleast_2d(teacher_labels), np.atleast_2d(np.asarray(teacher_conf, dtype=np.float64))
    lab, cf = labels[teacher], conf[teacher]
    ok = (lab >= 0) & np.nan_to_num(cf >= min_conf, nan=False)
    idx = np.flatnonzero(ok)
    return Selection(idx, lab[idx].astype(np.int64), cf[idx] / 5.0, ["teacher"] * len(idx))


def select_student(probs, top_k=200, min_prob=0.0):
    """S-PL: the student's argmax where its probability reaches ``min_prob``, at most ``top_k`` per class."""
    probs = np.asarray(probs, dtype=np.float64)
    pred, top = probs.argmax(1), probs.max(1)
    idx = np.flatnonzero(top >= min_prob)
    keep = cap_per_class(idx, pred[idx], top[idx], top_k, probs.shape[1])
    idx = idx[keep]
    return Selection(idx, pred[idx], top[idx], ["student"] * len(idx))


def select_consensus(probs, teacher_labels, teacher_conf, rule="all", min_prob=0.0, min_conf=0.0, top_k=0):
    """MRAC25 consensus: stage-1 prediction(s) and teacher label(s) agree (see the module docstring)."""
    runs = [np.asarray(p, dtype=np.float64) for p in (probs if isinstance(probs, (list, tuple)) else [probs])]
    n, c = runs[0].shape
    labels, conf = _as_teachers(teacher_labels, teacher_conf, n)
    mean = np.mean(runs, axis=0)
    pred = mean.argmax(1)
    run_votes = np.stack([r.argmax(1) for r in runs])  # (R, N)
    teacher_ok = (labels >= 0) & np.nan_to_num(conf >= min_conf, nan=False)
    teacher_votes = np.where(teacher_ok, labels, -1)  # a teacher under its threshold does not vote for anything
    voters = np.concatenate([run_votes, teacher_votes])  # (R + T, N)
    agree = (voters == pred[None, :]).sum(0)
    if rule == "all":
        chosen = agree == voters.shape[0]
    elif rule == "majority":
        # abstaining teachers (-1) are left out of the count; at least one teacher must vote for the label
        voting = (voters >= 0).sum(0)
        chosen = (agree * 2 > voting) & (teacher_votes == pred[None, :]).any(0)
    else:
        raise ValueError(f"consensus rule must be 'all' or 'majority', got '{rule}'")
    chosen &= mean.max(1) >= min_prob
    idx = np.flatnonzero(chosen)
    keep = cap_per_class(idx, pred[idx], mean.max(1)[idx], top_k, c)
    idx = idx[keep]
    return Selection(idx, pred[idx], mean.max(1)[idx], ["consensus"] * len(idx))


def acl_p_t(t, p_init=0.6, gamma=0.1, p_min=0.2):
    """ACL-MER's teacher boost at iteration ``t`` (0-based): ``max(p_init - gamma * t, p_min)``."""
    return max(p_init - gamma * t, p_min)


def acl_refine(probs, teacher_labels, teacher_conf, p_t, c_t=4.0):
    """Refined scores ``(N, C)``: the student's probabilities plus ``p_t`` for every teacher whose label is
    that class and whose confidence is at least ``c_t``."""
    probs = np.asarray(probs, dtype=np.float64)
    labels, conf = _as_teachers(teacher_labels, teacher_conf, probs.shape[0])
    refined = probs.copy()
    for lab, cf in zip(labels, conf):
        ok = (lab >= 0) & np.nan_to_num(cf >= c_t, nan=False)
        refined[np.flatnonzero(ok), lab[ok]] += p_t
    return refined


def select_acl(probs, teacher_labels, teacher_conf, t=0, p_init=0.6, gamma=0.1, p_min=0.2, theta=0.995,
               top_k=200, c_t=4.0):
    """ACL-MER collaborative labelling at iteration ``t``: refine, threshold at ``theta``, cap per class."""
    p_t = acl_p_t(t, p_init, gamma, p_min)
    refined = acl_refine(probs, teacher_labels, teacher_conf, p_t, c_t)
    pred, top = refined.argmax(1), refined.max(1)
    idx = np.flatnonzero(top > theta)
    keep = cap_per_class(idx, pred[idx], top[idx], top_k, refined.shape[1])
    idx = idx[keep]
    return Selection(idx, pred[idx], np.minimum(top[idx], 1.0), ["acl"] * len(idx))


def select(strategy, probs=None, teacher_labels=None, teacher_conf=None, **kw):
    """Dispatch on ``strategy`` (one of STRATEGIES) with that strategy's keyword arguments."""
    if strategy == "none":
        return Selection.empty()
    if strategy == "teacher":
        return select_teacher(teacher_labels, teacher_conf, **kw)
    if strategy == "student":
        return select_student(probs, **kw)
    if strategy == "consensus":
        return select_consensus(probs, teacher_labels, teacher_conf, **kw)
    if strategy == "acl":
        return select_acl(probs, teacher_labels, teacher_conf, **kw)
    raise ValueError(f"unknown pseudo-label strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")


def selection_frame(sel, names, class_names, weight=1.0, weight_by_confidence=False):
    """Per-sample table of a selection: ``name, emo, source, confidence, weight``."""
    conf = np.asarray(sel.confidence, dtype=np.float64)
    w = weight * conf if weight_by_confidence else np.full(len(sel), float(weight))
    return pd.DataFrame({"name": [names[i] for i in sel.index], "emo": [class_names[c] for c in sel.label],
                         "source": list(sel.source), "confidence": np.round(conf, 6), "weight": np.round(w, 6)})


def precision_report(frame, truth, class_names):
    """Precision and count of pseudo labels per class and per source against ``truth`` (name -> label;
    names without truth are counted but not scored). Returns a DataFrame with an ``all`` row."""
    rows = []
    df = frame.copy()
    df["truth"] = [truth.get(n) for n in df["name"]]
    df["correct"] = df["truth"] == df["emo"]
    scored = df[df["truth"].notna()]
    groups = [("class", c, df[df["emo"] == c], scored[scored["emo"] == c]) for c in class_names]
    groups += [("source", s, df[df["source"] == s], scored[scored["source"] == s]) for s in sorted(set(df["source"]))]
    groups.append(("all", "all", df, scored))
    for kind, key, part, sc in groups:
        rows.append({"by": kind, "group": key, "count": len(part), "scored": len(sc),
                     "precision": float(sc["correct"].mean()) if len(sc) else float("nan")})
    return pd.DataFrame(rows)
