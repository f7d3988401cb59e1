"""Ensembles, re-ranking rules, submissions and the ensemble.py command line, on hand-computed cases."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import config
from conftest import REPO, write_pred_csv
from ensembling.voting import fit_weights, member_ids, read_members, vote, weighted_f1
from common.errors import DataError
from ensembling.rerank import (HURTS, Validation, apply_rules, fit_bias, load_rules, rerank, teacher_answers,
                               validate_rules)
from ensembling.submission import check_submission, write_submission

MER = config.EMO_RULE["MER"]
C3 = ["neutral", "angry", "happy"]

# R=3 members, N=4 samples, C=3 classes
M0 = [[.6, .3, .1], [.2, .5, .3], [.4, .35, .25], [.1, .2, .7]]
M1 = [[.5, .4, .1], [.1, .3, .6], [.05, .9, .05], [.3, .3, .4]]
M2 = [[.2, .7, .1], [.5, .2, .3], [.45, .4, .15], [.2, .6, .2]]
PROBS = np.array([M0, M1, M2])


# ------------------------------------------------------------------------------------------------------
# voting
# ------------------------------------------------------------------------------------------------------
def test_majority_vote_counts_votes_and_breaks_ties_by_mean_probability():
    scores, pred = vote(PROBS, "majority")
    # votes: s0 0,0,1; s1 1,2,0 (three-way tie; mean probs .8/3, 1.0/3, 1.2/3 -> 2); s2 0,1,0; s3 2,2,1
    assert pred.tolist() == [0, 2, 0, 2]
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 3, 0],
                                        [0, 1 / 3, 2 / 3]])
    # votes and mean probabilities both tied: the earlier class
    _, pred = vote(np.array([[[.6, .4]], [[.4, .6]]]), "majority")
    assert pred.tolist() == [0]


def test_soft_vote_is_the_mean_probability():
    scores, pred = vote(PROBS, "soft")
    np.testing.assert_allclose(scores[0], [1.3 / 3, 1.4 / 3, .3 / 3])
    np.testing.assert_allclose(scores[2], [.9 / 3, 1.65 / 3, .45 / 3])
    assert pred.tolist() == [1, 2, 1, 2]  # differs from majority on s0 and s2


def test_weighted_vote_normalises_the_weights():
    scores, pred = vote(PROBS, "weighted", [3, 1, 0])  # -> .75, .25, 0
    np.testing.assert_allclose(scores, [[.575, .325, .1], [.175, .45, .375], [.3125, .4875, .2],
                                        [.15, .225, .625]])
    assert pred.tolist() == [0, 1, 1, 2]
    assert vote(PROBS, "weighted", [1, 0, 0])[1].tolist() == [0, 1, 0, 2]  # member 0 alone
    with pytest.raises(ValueError, match="needs weights"):
        vote(PROBS, "weighted")
    with pytest.raises(ValueError, match="non-negative"):
        vote(PROBS, "weighted", [1, -1, 1])
    with pytest.raises(ValueError, match="unknown voting mode"):
        vote(PROBS, "median")


def test_weighted_f1_matches_sklearn():
    from common.metrics import emotion_metrics
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    p[:3] = 5  # a class never in the truth
    assert weighted_f1(y, p, 6) == pytest.approx(emotion_metrics(y, p)["f1"])


def test_fit_weights_picks_the_member_that_is_right_on_validation():
    labels = np.array([0, 1, 2, 0, 1, 2])
    right = np.full((6, 3), .1)
    right[np.arange(6), labels] = .8
    wrong = np.full((6, 3), .1)
    wrong[np.arange(6), (labels + 1) % 3] = .8
    flat = np.full((6, 3), 1 / 3)
    probs = np.stack([wrong, flat, right])
    w = fit_weights(probs, labels)
    assert w.tolist() == [0.0, 0.0, 1.0]
    assert np.array_equal(w, fit_weights(probs, labels))  # deterministic
    # two complementary members: each is right on half, together (with the tie-breaking third) better
    a, b = right.copy(), right.copy()
    a[3:] = wrong[3:]
    b[:3] = wrong[:3]
    w = fit_weights(np.stack([a, b, wrong]), labels, rounds=10)
    assert w[2] == 0 and w[0] > 0 and w[1] > 0 and w.sum() == pytest.approx(1)


# ------------------------------------------------------------------------------------------------------
# reading members
# ------------------------------------------------------------------------------------------------------
def _pred_csv(path, names, probs, classes=C3, labels=None):
    return write_pred_csv(path, names, probs, classes, labels)


def test_read_members_aligns_names_and_classes_and_renormalises(tmp_path):
    names = ["a", "b", "c"]
    p0 = _pred_csv(tmp_path / "seed0" / "run" / "test_pred.csv", names, [[.5, .25, .25], [0, 1, 0], [.25, .25, .5]],
                   labels=["neutral", "angry", "happy"])
    # same members, rows shuffled and columns in another order
    p1 = _pred_csv(tmp_path / "seed1" / "run" / "test_pred.csv", ["c", "a", "b"], [[.2, .7, .1], [.1, .1, .8],
                                                                                 [.3, .3, .4]],
                   classes=["happy", "neutral", "angry"])
    m = read_members([p0, p1])
    assert m.names == names and m.class_names == C3 and m.probs.shape == (2, 3, 3)
    np.testing.assert_allclose(m.probs[0, 0], [.5, .25, .25])
    np.testing.assert_allclose(m.probs[1], [[.1, .8, .1], [.3, .4, .3], [.7, .1, .2]])
    assert m.labels.tolist() == [0, 1, 2]
    assert m.member_ids == ["seed0/run/test_pred", "seed1/run/test_pred"]
    assert member_ids(["x/a.csv", "y/b.csv"]) == ["a", "b"]
    assert member_ids(["x/a.csv", "x/a.csv"]) == ["a", "a#2"]


def test_read_members_refuses_missing_names_and_other_classes(tmp_path):
    p0 = _pred_csv(tmp_path / "m0.csv", ["a", "b", "c"], np.eye(3))
    short = _pred_csv(tmp_path / "m1.csv", ["a", "b", "z"], np.eye(3))
    with pytest.raises(DataError, match=r"m1\.csv.*1 missing: c; 1 extra: z"):
        read_members([p0, short])
    other = _pred_csv(tmp_path / "m2.csv", ["a", "b", "c"], np.eye(3), classes=["neutral", "angry", "sad"])
    with pytest.raises(DataError, match=r"m2\.csv.*missing: \['happy'\]; extra: \['sad'\]"):
        read_members([p0, other])
    with pytest.raises(DataError, match="does not exist"):
        read_members([str(tmp_path / "nope.csv")])


# ------------------------------------------------------------------------------------------------------
# rules
# ------------------------------------------------------------------------------------------------------
def _mer_row(**kw):
    row = np.zeros(len(MER))
    for k, v in kw.items():
        row[MER.index(k)] = v
    return row


DEMOTE_SCORES = np.stack([
    _mer_row(worried=.40, sad=.30, angry=.30),                 # lead .10 -> sad
    _mer_row(worried=.60, sad=.20, surprise=.20),              # lead .40 -> kept
    _mer_row(worried=.40, angry=.35, happy=.25),               # lead .05, but no alternative scores > 0 -> kept
    _mer_row(worried=.40, angry=.30, neutral=.20, sad=.10),    # lead .10 -> neutral (gap .20)
    _mer_row(happy=.50, worried=.45, sad=.05),                 # not predicted worried -> kept
])
DEMOTE = {"type": "demote", "class": "worried", "margin": .15, "alternatives": ["sad", "surprise", "neutral"]}


def test_demote_takes_the_best_alternative_when_the_lead_is_small():
    names = [f"s{i}" for i in range(5)]
    pred, report = apply_rules([DEMOTE], DEMOTE_SCORES, MER, names)
    assert [MER[i] for i in pred] == ["sad", "worried", "worried", "neutral", "happy"]
    assert report.loc[0, "test_changed"] == 2 and np.isnan(report.loc[0, "valid_f1_before"])
    assert report.loc[0, "flag"] == ""
    pred, _ = apply_rules([dict(DEMOTE, max_gap=.15)], DEMOTE_SCORES, MER, names)
    assert [MER[i] for i in pred] == ["sad", "worried", "worried", "worried", "happy"]
    # majority vote shares tied three ways, the voter's tie-break chose worried: its lead is 0 -> sad (listed
    # before neutral, same score)
    tied = _mer_row(neutral=1 / 3, worried=1 / 3, sad=1 / 3)[None]
    assert apply_rules([], tied, MER, ["x"], pred=[MER.index("worried")])[0].tolist() == [MER.index("worried")]
    assert apply_rules([DEMOTE], tied, MER, ["x"], pred=[MER.index("worried")])[0].tolist() == [MER.index("sad")]


TEACHER_SCORES = np.array([[.45, .40, .15]] * 5 + [[.6, .3, .1]])  # margin .05 except the last (.3)
TEACHER_NAMES = ["t0", "t1", "t2", "t3", "t4", "t5"]
TEACHER = {"t0": ("happy", 5.0), "t1": ("happy", 3.0), "t3": ("bored", 5.0), "t4": ("angry", 4.0),
           "t5": ("happy", 5.0)}


def test_teacher_decides_only_below_the_margin_and_above_the_confidence():
    rule = {"type": "teacher", "min_conf": 4, "margin": .1}
    pred, report = apply_rules([rule], TEACHER_SCORES, C3, TEACHER_NAMES, teacher=TEACHER)
    # t0 confident -> happy; t1 conf 3 < 4; t2 no answer; t3 label not in the set; t4 conf 4 >= 4; t5 margin .3
    assert [C3[i] for i in pred] == ["happy", "neutral", "neutral", "neutral", "angry", "neutral"]
    assert report.loc[0, "test_changed"] == 2
    with pytest.raises(DataError, match=r"rule 1 \(teacher\) needs the teacher's answers"):
        apply_rules([rule], TEACHER_SCORES, C3, TEACHER_NAMES)


def test_bias_hand_case_two_classes():
    # log(s0/s1): 2.94, 1.39, .41, .20; the labels are half and half: offsets must flip exactly two samples
    scores = np.array([[.95, .05], [.8, .2], [.6, .4], [.55, .45]])
    b = fit_bias(scores, [0, 0, 1, 1])
    assert np.log(1.5) < b[1] - b[0] < np.log(4) and b.sum() == pytest.approx(0)
    pred, report = apply_rules([{"type": "bias"}], scores, ["negative", "positive"], list("abcd"),
                               valid=(scores, [0, 0, 1, 1], list("abcd")))
    assert pred.tolist() == [0, 0, 1, 1]
    assert report.loc[0, "valid_f1_after"] == 1.0 and report.loc[0, "valid_f1_before"] < 1.0
    assert set(report.loc[0, "offsets"]) == {"negative", "positive"}


def _skewed(n, rng, shift):
    y = np.repeat(np.arange(3), n // 3)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.5
    s = np.exp(logits + shift)
    return y, s / s.sum(1, keepdims=True)


def test_bias_recovers_known_offsets_and_corrects_the_test_distribution():
    rng = np.random.default_rng(0)
    shift = np.array([1.0, 0.0, -1.0])  # the model over-predicts class 0, under-predicts class 2
    vy, vs = _skewed(300, rng, shift)
    ty, ts = _skewed(300, rng, shift)
    res = rerank([{"type": "bias"}], ts, C3, [f"t{i}" for i in range(300)], valid=Validation(vs, vy))
    b = np.array([res.report.loc[0, "offsets"][c] for c in C3])
    np.testing.assert_allclose(b, -shift, atol=0.3)
    target = np.full(3, 1 / 3)
    before = np.abs(np.bincount(ts.argmax(1), minlength=3) / 300 - target).sum()
    after = np.abs(np.bincount(res.pred, minlength=3) / 300 - target).sum()
    assert after < before / 3
    assert np.bincount(res.valid_pred, minlength=3).tolist() == [100, 100, 100]
    # only some classes may move
    res = rerank([{"type": "bias", "classes": ["happy"]}], ts, C3, [f"t{i}" for i in range(300)],
                 valid=Validation(vs, vy))
    off = res.report.loc[0, "offsets"]
    assert off["neutral"] == off["angry"] == 0 and off["happy"] > 0
    with pytest.raises(DataError, match=r"rule 1 \(bias\) is fitted on labelled validation"):
        apply_rules([{"type": "bias"}], ts, C3, [f"t{i}" for i in range(300)])


def test_report_flags_a_rule_that_hurts_validation_and_rules_apply_in_order():
    names = [f"s{i}" for i in range(5)]
    truth = [MER.index(x) for x in ["worried", "worried", "worried", "worried", "happy"]]
    rules = [{"type": "teacher", "min_conf": 4, "margin": .2}, DEMOTE]
    teacher = {"s0": ("worried", 5.0)}  # a confident teacher keeps s0 worried: demote leaves it alone
    pred, report = apply_rules(rules, DEMOTE_SCORES, MER, names, teacher=teacher,
                               valid=Validation(DEMOTE_SCORES, truth, names))
    assert [MER[i] for i in pred] == ["worried", "worried", "worried", "neutral", "happy"]
    assert report["test_changed"].tolist() == [0, 1] and report["valid_changed"].tolist() == [0, 1]
    assert report.loc[0, "valid_f1_after"] == report.loc[1, "valid_f1_before"] == 1.0
    assert report.loc[1, "valid_f1_after"] < 1.0
    assert report["flag"].tolist() == ["", HURTS]


def test_rule_validation_names_the_rule_the_field_and_the_allowed_values(tmp_path):
    with pytest.raises(DataError, match=r"rule 2 \(demote\): field 'class' names \['worry'\], not in the label set"):
        validate_rules([{"type": "bias"}, dict(DEMOTE, **{"class": "worry"})], MER)
    with pytest.raises(DataError, match="rule 1 has type 'boost'; allowed types: demote, bias, teacher"):
        validate_rules([{"type": "boost"}], MER)
    with pytest.raises(DataError, match=r"rule 1 \(teacher\): unknown field\(s\) \['conf'\]; allowed fields"):
        validate_rules([{"type": "teacher", "conf": 4}], MER)
    with pytest.raises(DataError, match=r"rule 1 \(teacher\): field 'min_conf' is 7, it must be in \[0, 5\]"):
        validate_rules([{"type": "teacher", "min_conf": 7}], MER)
    with pytest.raises(DataError, match=r"rule 1 \(demote\): missing field\(s\) \['alternatives'\]"):
        validate_rules([{"type": "demote", "class": "worried", "margin": .1}], MER)
    with pytest.raises(DataError, match="field 'target' is 'uniform'; allowed values: labelled"):
        validate_rules([{"type": "bias", "target": "uniform"}], MER)
    bad = tmp_path / "rules.yaml"
    bad.write_text("type: demote\n")
    with pytest.raises(DataError, match=r"rules\.yaml.*must be a YAML list"):
        load_rules(str(bad), MER)
    shipped = load_rules(os.path.join(REPO, "rerank_rules.yaml"), MER)
    assert [r["type"] for r in shipped] == ["bias", "teacher", "demote"]
    assert shipped[2]["class"] == "worried" and shipped[2]["alternatives"] == ["sad", "surprise", "neutral"]


# ------------------------------------------------------------------------------------------------------
# submissions
# ------------------------------------------------------------------------------------------------------
def test_check_submission_names_each_problem():
    cand = ["a", "b", "c"]
    check_submission(["c", "a", "b"], ["happy", "angry", "neutral"], cand, C3)
    with pytest.raises(DataError, match="predicted more than once: a"):
        check_submission(["a", "a", "b", "c"], ["happy"] * 4, cand, C3)
    with pytest.raises(DataError, match="1 candidate names have no prediction: c"):
        check_submission(["a", "b"], ["happy"] * 2, cand, C3)
    with pytest.raises(DataError, match="1 predicted names are not in the candidate list: zz"):
        check_submission(["a", "b", "c", "zz"], ["happy"] * 4, cand, C3)
    with pytest.raises(DataError, match=r"2 labels are not in the label set .*'joy' x2"):
        check_submission(cand, ["joy", "joy", "happy"], cand, C3)


def test_write_submission_in_candidate_order(tmp_path):
    path = tmp_path / "out" / "sub.csv"
    dist = write_submission(str(path), ["b", "a", "c"], ["angry", "happy", "angry"], ["a", "b", "c"], C3,
                            log=None)
    assert dist == {"neutral": 0, "angry": 2, "happy": 1}
    df = pd.read_csv(path)
    assert df.columns.tolist() == ["name", "discrete"] and df["name"].tolist() == ["a", "b", "c"]
    assert df["discrete"].tolist() == ["happy", "angry", "angry"]
    assert os.listdir(tmp_path / "out") == ["sub.csv"]


# ------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------
def test_ensemble_cli_end_to_end(tmp_path, capsys):
    import ensemble as cli
    rng = np.random.default_rng(0)
    classes = MER
    v_names, t_names = [f"v{i:02d}" for i in range(30)], [f"t{i:02d}" for i in range(24)]
    v_y, t_y = rng.integers(0, 6, 30), rng.integers(0, 6, 24)

    def member(y, acc):
        p = rng.dirichlet(np.ones(6), len(y))
        right = rng.random(len(y)) < acc
        p[right, y[right]] += 1.0
        return p / p.sum(1, keepdims=True)

    runs = []
    for k, acc in enumerate([.9, .6, .2]):
        run = tmp_path / "saved" / f"seed{k}" / "moe" / "run"
        _pred_csv(run / "valid_pred.csv", v_names, member(v_y, acc), classes, [classes[i] for i in v_y])
        _pred_csv(run / "test_pred.csv", t_names, member(t_y, acc), classes)
        runs.append(str(run))
    pd.DataFrame({"name": t_names, "discrete": [classes[i] for i in t_y]}).to_csv(tmp_path / "truth.csv",
                                                                                  index=False)
    pd.DataFrame({"name": t_names[::-1]}).to_csv(tmp_path / "cand.csv", index=False)
    with open(tmp_path / "teacher.jsonl", "w") as f:
        for n, y in list(zip(t_names, t_y)) + list(zip(v_names, v_y)):
            f.write(json.dumps({"name": n, "label": classes[y], "scores": {c: float(c == classes[y]) for c in classes},
                                "confidence": 5, "description": "", "teacher": "t"}) + "\n")
    out = tmp_path / "sub" / "submission.csv"
    argv = ["--preds", *runs, "--valid_preds", *runs, "--mode", "weighted", "--rules",
            os.path.join(REPO, "rerank_rules.yaml"), "--teacher", str(tmp_path / "teacher.jsonl"),
            "--candidates", str(tmp_path / "cand.csv"), "--labels", str(tmp_path / "truth.csv"), "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "seed0/moe/run/test_pred" in text and "ensemble (weighted)" in text and "ensemble + rules" in text
    assert "teacher label where" in text and f"submission {out}: 24 names" in text
    sub = pd.read_csv(out)
    assert sub["name"].tolist() == t_names[::-1] and set(sub["discrete"]) <= set(classes)
    pred = pd.read_csv(tmp_path / "sub" / "submission_pred.csv")
    assert pred.columns.tolist()[:3] == ["name", "label", "pred"]
    assert dict(zip(pred["name"], pred["pred"])) == dict(zip(sub["name"], sub["discrete"]))
    assert len(pd.read_csv(tmp_path / "sub" / "submission_rules.csv")) == 3
    # explicit weights, no validation: member 0 alone
    assert cli.main(["--preds", *runs, "--mode", "weighted", "--weights", "1", "0", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    m0 = pd.read_csv(os.path.join(runs[0], "test_pred.csv"))
    assert pd.read_csv(out)["discrete"].tolist() == m0["pred"].tolist()
    # a submission with a name outside the candidates is refused, and nothing is written
    pd.DataFrame({"name": t_names[:-1]}).to_csv(tmp_path / "cand_short.csv", index=False)
    bad_out = tmp_path / "bad" / "submission.csv"
    assert cli.main(["--preds", *runs, "--candidates", str(tmp_path / "cand_short.csv"), "--out",
                     str(bad_out)]) == 2
    assert "not in the candidate list: t23" in capsys.readouterr().err and not bad_out.exists()
    # weighted without validation predictions or weights
    assert cli.main(["--preds", *runs, "--mode", "weighted", "--out", str(bad_out)]) == 2
    assert "--valid_preds" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# small fixes: fixed samples in fit_bias, BOM in teacher files, empty rules files, a member given twice
# ------------------------------------------------------------------------------------------------------
def test_fit_bias_refuses_fixed_samples_without_their_predictions():
    scores = np.array([[.95, .05], [.8, .2], [.6, .4], [.55, .45]])
    fixed = np.array([False, False, False, True])
    # without fixed_pred the fixed sample's label is unknown: it used to be counted as class 0
    with pytest.raises(ValueError, match=r"1 samples are fixed but fixed_pred is None"):
        fit_bias(scores, [0, 0, 1, 1], fixed=fixed)
    # with it, the fixed sample counts as its decided label: decided 1, only one more flip is needed
    b1 = fit_bias(scores, [0, 0, 1, 1], fixed=fixed, fixed_pred=[0, 0, 0, 1])
    s = scores[:3] * np.exp(b1)
    assert s.argmax(1).tolist() == [0, 0, 1]
    # decided 0: the other three must give 0, 1, 1... and no fixed sample (all False) needs no fixed_pred
    b0 = fit_bias(scores, [0, 0, 1, 1], fixed=fixed, fixed_pred=[0, 0, 0, 0])
    assert (scores[:3] * np.exp(b0)).argmax(1).tolist() == [0, 1, 1]
    np.testing.assert_allclose(fit_bias(scores, [0, 0, 1, 1], fixed=np.zeros(4, bool)), fit_bias(scores, [0, 0, 1, 1]))


def test_teacher_files_with_a_bom_keep_their_first_record(tmp_path):
    from teachers.client.output import read_output
    from teachers.offline import read_texts
    from teachers.records import read_teacher_jsonl
    path = tmp_path / "teacher.jsonl"
    recs = [{"name": n, "label": lab, "scores": {c: float(c == lab) for c in MER}, "confidence": 5,
             "description": f"{lab} face", "teacher": "t"} for n, lab in [("c1", "happy"), ("c2", "sad")]]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8-sig")  # starts with a BOM
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    df, problems = read_teacher_jsonl(str(path), "MER")
    assert df["name"].tolist() == ["c1", "c2"] and problems == []
    assert teacher_answers(str(path), MER) == {"c1": ("happy", 5.0), "c2": ("sad", 5.0)}
    state = read_output(str(path))
    assert list(state.records) == ["c1", "c2"] and state.bad_lines == []
    assert read_texts(str(path)) == (["c1", "c2"], ["happy face", "sad face"])


def test_an_empty_rules_file_is_refused(tmp_path, capsys):
    import ensemble as cli
    for text in ("", "# only a comment\n\n", "[]\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(DataError, match=r"rules file '.*empty\.yaml' holds no rules .*give a rules file with at "
                                            r"least one rule .*or leave out --rules"):
            load_rules(str(path), MER)
    pred = _pred_csv(tmp_path / "m0.csv", ["a", "b"], np.eye(6)[:2], MER)
    assert cli.main(["--preds", pred, "--rules", str(path), "--out", str(tmp_path / "sub.csv")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rules file")
    assert not (tmp_path / "sub.csv").exists()


def test_a_member_file_given_twice_is_refused(tmp_path, capsys):
    import ensemble as cli
    run = tmp_path / "seed0" / "run"
    names = ["a", "b", "c"]
    test = _pred_csv(run / "test_pred.csv", names, np.eye(6)[:3], MER)
    valid = _pred_csv(run / "valid_pred.csv", names, np.eye(6)[:3], MER, labels=MER[:3])
    other = _pred_csv(tmp_path / "seed1" / "run" / "test_pred.csv", names, np.eye(6)[:3], MER)
    out = str(tmp_path / "sub.csv")
    for argv, flag, twice in [(["--preds", test, other, test], "--preds", test),
                              (["--preds", str(run), test], "--preds", test),  # a run folder: its test_pred.csv
                              (["--preds", test, other, "--valid_preds", valid, valid], "--valid_preds", valid)]:
        assert cli.main(argv + ["--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} gives '{twice}' twice")
        assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)
    # the same run under --preds and --valid_preds is normal
    assert cli.main(["--preds", str(run), "--valid_preds", str(run), "--out", out]) == 0


def test_issue23_member_probabilities_that_do_not_sum_to_1_are_refused(tmp_path, capsys):
    import ensemble as cli
    names = ["a", "b", "c"]
    good = _pred_csv(tmp_path / "good.csv", names, np.eye(3) * 0.7 + 0.1)
    bad = _pred_csv(tmp_path / "bad.csv", names, [[0.8, 0.1, 0.1], [2.0, 1.0, 0.5], [0.2, 0.3, 0.5]])
    with pytest.raises(DataError, match=r"bad\.csv.*row 'b' sum to 3.5"):
        read_members([good, bad])
    within = _pred_csv(tmp_path / "within.csv", names, [[0.8, 0.1, 0.1004], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    assert read_members([good, within]).probs.shape == (2, 3, 3)  # rounding within 1e-3 is fine
    out = str(tmp_path / "sub.csv")
    six = np.eye(6)[:3] * 0.5 + 1 / 12
    good6 = _pred_csv(tmp_path / "good6.csv", names, six, MER)
    bad6 = _pred_csv(tmp_path / "bad6.csv", names, six * [[1], [1.1], [1]], MER)
    assert cli.main(["--preds", good6, bad6, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'b'" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_issue23_the_same_member_file_under_two_paths_is_refused(tmp_path, capsys):
    import ensemble as cli
    names = ["a", "b", "c"]
    probs = np.eye(6)[:3] * 0.5 + 1 / 12
    a = _pred_csv(tmp_path / "a.csv", names, probs, MER)
    b = _pred_csv(tmp_path / "b.csv", names, probs[::-1], MER)
    sym, hard = str(tmp_path / "sym.csv"), str(tmp_path / "hard.csv")
    os.symlink(a, sym)
    os.link(a, hard)
    out = str(tmp_path / "sub.csv")
    for link in (sym, hard):
        assert cli.main(["--preds", a, b, link, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --preds gives one file twice under two paths")
        assert f"'{a}'" in err and f"'{link}'" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)
    assert cli.main(["--preds", a, b, "--out", out]) == 0
