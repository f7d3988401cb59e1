"""Pseudo-label strategies on tiny hand-built cases whose selections are computed by hand."""

import numpy as np
import pytest

from pseudo import strategies as pseudo

# 6 unlabelled samples, 3 classes
PROBS = np.array([
    [0.90, 0.05, 0.05],   # 0: student sure of class 0
    [0.50, 0.40, 0.10],   # 1: unsure, class 0
    [0.10, 0.85, 0.05],   # 2: sure of class 1
    [0.20, 0.70, 0.10],   # 3: class 1
    [0.30, 0.30, 0.40],   # 4: class 2, unsure
    [0.96, 0.02, 0.02],   # 5: surest of class 0
])
# two teachers; -1 = no usable answer
T_LAB = np.array([[0, 1, 1, 1, 2, 0],
                  [0, 0, 1, -1, 0, 0]])
T_CONF = np.array([[5, 4, 3, 5, 5, 2],
                   [4, 5, 5, np.nan, 1, 5]], dtype=float)


def test_acl_p_t_schedule():
    assert [round(pseudo.acl_p_t(t), 10) for t in range(6)] == [0.6, 0.5, 0.4, 0.3, 0.2, 0.2]
    assert pseudo.acl_p_t(3, p_init=1.0, gamma=0.25, p_min=0.1) == pytest.approx(0.25)


def test_acl_refine_by_hand():
    r = pseudo.acl_refine(PROBS, T_LAB, T_CONF, p_t=0.5, c_t=4)
    # sample 0: both teachers say 0 with conf >= 4 -> 0.90 + 1.0
    assert r[0].tolist() == pytest.approx([1.90, 0.05, 0.05])
    # sample 1: teacher 0 says 1 (conf 4), teacher 1 says 0 (conf 5)
    assert r[1].tolist() == pytest.approx([1.00, 0.90, 0.10])
    # sample 2: teacher 0 conf 3 < 4 does not count; teacher 1 says 1 (conf 5)
    assert r[2].tolist() == pytest.approx([0.10, 1.35, 0.05])
    # sample 3: teacher 0 says 1 (conf 5); teacher 1 has no answer
    assert r[3].tolist() == pytest.approx([0.20, 1.20, 0.10])
    # sample 4: teacher 0 says 2 (conf 5); teacher 1 conf 1
    assert r[4].tolist() == pytest.approx([0.30, 0.30, 0.90])
    # sample 5: teacher 0 conf 2 does not count; teacher 1 says 0 (conf 5)
    assert r[5].tolist() == pytest.approx([1.46, 0.02, 0.02])


def test_acl_selection_threshold_and_cap():
    # t = 1 -> p_t = 0.5; refined tops: 1.90, 1.00, 1.35, 1.20, 0.90, 1.46; theta 0.995 -> 0,1,2,3,5
    sel = pseudo.select_acl(PROBS, T_LAB, T_CONF, t=1, theta=0.995, top_k=200)
    assert sel.index.tolist() == [0, 1, 2, 3, 5]
    assert sel.label.tolist() == [0, 0, 1, 1, 0]
    # cap 1 per class: class 0 keeps its highest refined score (sample 0: 1.90), class 1 sample 2 (1.35)
    sel = pseudo.select_acl(PROBS, T_LAB, T_CONF, t=1, theta=0.995, top_k=1)
    assert sel.index.tolist() == [0, 2]
    # late iteration: p_t = p_min = 0.2 -> tops 1.30, 0.70, 1.05, 0.90, 0.60, 1.16 -> 0, 2, 5
    sel = pseudo.select_acl(PROBS, T_LAB, T_CONF, t=7, theta=0.995)
    assert sel.index.tolist() == [0, 2, 5]
    assert all(s == "acl" for s in sel.source) and np.all(sel.confidence <= 1)


def test_teacher_strategy():
    sel = pseudo.select_teacher(T_LAB, T_CONF, min_conf=4)
    assert sel.index.tolist() == [0, 1, 3, 4]
    assert sel.label.tolist() == [0, 1, 1, 2]
    assert sel.confidence.tolist() == pytest.approx([1.0, 0.8, 1.0, 1.0])
    sel = pseudo.select_teacher(T_LAB, T_CONF, min_conf=5, teacher=1)
    assert sel.index.tolist() == [1, 2, 5]


def test_student_strategy_is_class_balanced():
    sel = pseudo.select_student(PROBS, top_k=1)
    # class 0: samples 0, 1, 5 -> the most probable, 5; class 1: 2 (0.85) over 3; class 2: 4
    assert sel.index.tolist() == [2, 4, 5]
    assert sel.label.tolist() == [1, 2, 0]
    sel = pseudo.select_student(PROBS, top_k=2, min_prob=0.8)
    assert sel.index.tolist() == [0, 2, 5]


def test_consensus_rules():
    # one run, teacher 0 only: predictions 0,0,1,1,2,0 vs teacher 0,1,1,1,2,0 -> all but sample 1
    sel = pseudo.select_consensus(PROBS, T_LAB[:1], T_CONF[:1])
    assert sel.index.tolist() == [0, 2, 3, 4, 5]
    # with a teacher confidence threshold of 4: sample 2 (conf 3) and 5 (conf 2) drop out
    sel = pseudo.select_consensus(PROBS, T_LAB[:1], T_CONF[:1], min_conf=4)
    assert sel.index.tolist() == [0, 3, 4]
    # two teachers, rule all: every voter (run, t0, t1) agrees -> 0 and 5 only (2: t0 conf ok, agrees)
    sel = pseudo.select_consensus(PROBS, T_LAB, T_CONF, rule="all")
    assert sel.index.tolist() == [0, 2, 5]
    # majority of 3 voters (at least 2) including a teacher: 0,1(run 0 + t1 0),2,3(run+t0),4(run+t0),5
    sel = pseudo.select_consensus(PROBS, T_LAB, T_CONF, rule="majority")
    assert sel.index.tolist() == [0, 1, 2, 3, 4, 5]
    # and a model-probability threshold
    sel = pseudo.select_consensus(PROBS, T_LAB, T_CONF, rule="majority", min_prob=0.8)
    assert sel.index.tolist() == [0, 2, 5]
    # two runs that disagree on sample 1 (mean prediction still 0): rule all fails it
    other = PROBS.copy()
    other[1] = [0.3, 0.6, 0.1]
    sel = pseudo.select_consensus([PROBS, other], T_LAB[1:], T_CONF[1:], rule="all")
    assert 1 not in sel.index.tolist()
    with pytest.raises(ValueError, match="rule"):
        pseudo.select_consensus(PROBS, T_LAB, T_CONF, rule="some")


def test_consensus_majority_counts_only_the_voters_that_vote():
    # two runs that disagree on sample 1 (run 0 says 0, run 1 says 1; mean [.475, .45, .075] -> 0), teacher 0
    # says 1 (conf 4), teacher 1 says 0 (conf 5): with min_conf 5 teacher 0 abstains, so 2 of the 3 voters that
    # vote (run 0, teacher 1) agree on 0 -> chosen. Counted as a vote against it was 2 of 4, not a majority.
    other = PROBS.copy()
    other[1] = [0.45, 0.5, 0.05]
    sel = pseudo.select_consensus([PROBS, other], T_LAB, T_CONF, rule="majority", min_conf=5)
    assert 1 in sel.index.tolist()
    assert sel.label[sel.index.tolist().index(1)] == 0
    # every teacher abstains (no answer or under min_conf): nobody but the runs votes -> no pseudo label
    no_teacher = np.full((2, 6), -1)
    assert len(pseudo.select_consensus(PROBS, no_teacher, np.full((2, 6), np.nan), rule="majority")) == 0
    assert len(pseudo.select_consensus(PROBS, T_LAB, T_CONF, rule="majority", min_conf=6)) == 0
    # an abstaining teacher does not make a minority a majority: run 0 (0) against teacher 0 (1) on sample 1,
    # teacher 1 abstains -> 1 of 2 agree with the mean prediction 0 -> not chosen
    t_lab = T_LAB.copy()
    t_lab[1, 1] = -1
    assert 1 not in pseudo.select_consensus(PROBS, t_lab, T_CONF, rule="majority").index.tolist()


def test_none_and_dispatch():
    assert len(pseudo.select("none")) == 0
    sel = pseudo.select("acl", PROBS, T_LAB, T_CONF, t=1)
    assert sel.index.tolist() == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="unknown pseudo-label strategy"):
        pseudo.select("magic", PROBS)


def test_selection_frame_and_precision():
    sel = pseudo.select_teacher(T_LAB, T_CONF, min_conf=4)
    names = [f"s{i}" for i in range(6)]
    frame = pseudo.selection_frame(sel, names, ["a", "b", "c"], weight=0.5, weight_by_confidence=True)
    assert frame["name"].tolist() == ["s0", "s1", "s3", "s4"]
    assert frame["weight"].tolist() == pytest.approx([0.5, 0.4, 0.5, 0.5])
    truth = {"s0": "a", "s1": "a", "s3": "b"}  # s4 unknown
    rep = pseudo.precision_report(frame, truth, ["a", "b", "c"]).set_index("group")
    assert rep.loc["all", "count"] == 4 and rep.loc["all", "scored"] == 3
    assert rep.loc["all", "precision"] == pytest.approx(2 / 3)
    assert rep.loc["b", "precision"] == pytest.approx(0.5)  # s1 (wrong) and s3 (right)
    assert rep.loc["a", "precision"] == pytest.approx(1.0)
    assert np.isnan(rep.loc["c", "precision"])
