"""Out-of-fold ensembles (ensembling/oof.py, ensemble.py with fold groups): members as groups of fold files,
weights and bias offsets fitted on out-of-fold predictions, and their cross-fitted (held-out) effect, on
seeded synthetic prediction CSVs and hand-computed cases."""

import os

import numpy as np
import pandas as pd
import pytest

import config
from conftest import write_pred_csv
from common.errors import DataError
from ensembling.oof import (check_distinct, cross_fit, expand, fit_and_apply, heldout_table, read_test_groups,
                            read_valid_groups)
from ensembling.rerank import fit_bias
from ensembling.voting import Members, weighted_f1

MER = config.EMO_RULE["MER"]
C2 = ["negative", "positive"]
C3 = ["neutral", "angry", "happy"]


def _pred_csv(path, names, probs, classes=C3, labels=None):
    return write_pred_csv(path, names, probs, classes, labels)


# ------------------------------------------------------------------------------------------------------
# reading fold groups
# ------------------------------------------------------------------------------------------------------
def test_valid_groups_concatenate_out_of_fold_and_test_groups_average(tmp_path):
    v = tmp_path / "valid"
    # member a: fold 0 holds n0 n1, fold 1 holds n2 n3 n4
    a = [_pred_csv(v / "a-fold0.csv", ["n0", "n1"], [[.8, .1, .1], [.1, .8, .1]], labels=["neutral", "angry"]),
         _pred_csv(v / "a-fold1.csv", ["n2", "n3", "n4"], [[.1, .1, .8], [.5, .5, 0], [.5, .25, .25]],
                   labels=["happy", "angry", "neutral"])]
    # member b: the same folds, its files in the other order, rows shuffled, prob columns in another order
    b = [_pred_csv(v / "b-fold1.csv", ["n4", "n2", "n3"], [[.2, .7, .1], [.3, .3, .4], [.6, .2, .2]],
                   classes=["happy", "neutral", "angry"], labels=["neutral", "happy", "angry"]),
         _pred_csv(v / "b-fold0.csv", ["n1", "n0"], [[.3, .3, .4], [.1, .1, .8]], labels=["angry", "neutral"])]
    m = read_valid_groups([a, b], C3, ["a-fold*", "b-fold*"])
    assert m.names == ["n0", "n1", "n2", "n3", "n4"] and m.folds.tolist() == [0, 0, 1, 1, 1]
    assert m.labels.tolist() == [0, 1, 2, 1, 0] and m.member_ids == ["a-fold*", "b-fold*"]
    np.testing.assert_allclose(m.probs[0, 4], [.5, .25, .25])  # renormalised
    np.testing.assert_allclose(m.probs[1], [[.1, .1, .8], [.3, .3, .4], [.3, .4, .3], [.2, .2, .6], [.7, .1, .2]])
    assert m.groups == [a, b]

    t = tmp_path / "test"
    ta = [_pred_csv(t / "a-fold0.csv", ["x", "y"], [[.6, .2, .2], [.2, .2, .6]]),
          _pred_csv(t / "a-fold1.csv", ["y", "x"], [[.4, .4, .2], [.2, .6, .2]])]
    tb = [_pred_csv(t / "b.csv", ["y", "x"], [[1, 0, 0], [0, 0, 1]])]  # a single file beside a group
    m = read_test_groups([ta, tb], C3, ["a", "b"])
    assert m.names == ["x", "y"] and m.folds is None
    np.testing.assert_allclose(m.probs[0], [[.4, .4, .2], [.3, .3, .4]])  # the mean over the folds
    np.testing.assert_allclose(m.probs[1], [[0, 0, 1], [1, 0, 0]])
    # single files throughout: read as before, no folds
    m = read_valid_groups([[a[0]], [b[1]]], C3, ["a0", "b0"])
    assert m.folds is None and m.names == ["n0", "n1"]


def test_fold_groups_refuse_overlaps_other_folds_and_other_names(tmp_path):
    v = tmp_path / "valid"
    y = ["neutral", "angry", "happy", "neutral"]
    p = np.full((4, 3), 1 / 3)
    a = [_pred_csv(v / "a0.csv", ["n0", "n1"], p[:2], labels=y[:2]),
         _pred_csv(v / "a1.csv", ["n2", "n3"], p[2:], labels=y[2:])]
    # a member whose fold files overlap (hold-out lists, not folds)
    seeds = [_pred_csv(v / "s0.csv", ["n0", "n1", "n2"], p[:3], labels=y[:3]),
             _pred_csv(v / "s1.csv", ["n1", "n2", "n3"], p[1:], labels=y[1:])]
    with pytest.raises(DataError, match=r"'s\*': fold files '.*s0\.csv' and '.*s1\.csv' share 2 names \(n1, n2\).*"
                                        r"disjoint"):
        read_valid_groups([a, seeds], C3, ["a*", "s*"])
    # the same names cut into other folds
    other = [_pred_csv(v / "o0.csv", ["n0", "n2"], p[:2], labels=[y[0], y[2]]),
             _pred_csv(v / "o1.csv", ["n1", "n3"], p[2:], labels=[y[1], y[3]])]
    with pytest.raises(DataError, match=r"member 'o\*': fold file '.*o0\.csv' holds names of folds \[0, 1\] of "
                                        r"'a\*'.*same fold lists"):
        read_valid_groups([a, other], C3, ["a*", "o*"])
    # other names
    short = [_pred_csv(v / "x0.csv", ["n0", "n1"], p[:2], labels=y[:2]),
             _pred_csv(v / "x1.csv", ["n2", "z"], p[2:], labels=[y[2], "happy"])]
    with pytest.raises(DataError, match=r"member 'x\*' does not hold the same names as 'a\*'; 1 missing: n3; "
                                        r"1 extra: z"):
        read_valid_groups([a, short], C3, ["a*", "x*"])
    # another number of folds
    with pytest.raises(DataError, match=r"member 'one' has 1 fold file\(s\), member 'a\*' 2"):
        read_valid_groups([a, [short[0]]], C3, ["a*", "one"])
    # test fold files that predict different names cannot be averaged
    t = [_pred_csv(tmp_path / "t0.csv", ["x", "y"], p[:2]), _pred_csv(tmp_path / "t1.csv", ["x", "w"], p[:2])]
    with pytest.raises(DataError, match=r"--preds 't\*': a member's fold files are averaged.*t1\.csv.*1 missing: y"):
        read_test_groups([t], C3, ["t*"])
    # patterns: natural order, and none matching is an error
    for k in (10, 2, 1):
        (tmp_path / "nat").mkdir(exist_ok=True)
        (tmp_path / "nat" / f"m-fold{k}.csv").write_text("")
    assert [os.path.basename(f) for f in expand(str(tmp_path / "nat" / "m-fold*.csv"), "--preds")] == \
        ["m-fold1.csv", "m-fold2.csv", "m-fold10.csv"]
    with pytest.raises(DataError, match=r"--valid_preds pattern '.*nope\*' matches no file or run folder"):
        expand(str(tmp_path / "nope*"), "--valid_preds")
    # a file in two members (overlapping patterns) is refused
    with pytest.raises(DataError, match=r"--preds gives '.*a0\.csv' twice, by item 1 'a\*' and item 2 'a0\*'"):
        check_distinct([a, [a[0]]], ["a*", "a0*"], "--preds")


# ------------------------------------------------------------------------------------------------------
# cross-fitting
# ------------------------------------------------------------------------------------------------------
def _two_by_two():
    """2 members, 2 folds of 4 names, 2 classes: A is right on fold 0 and says 'negative' on all of fold 1,
    B the mirror image; their mean is right everywhere."""
    right = [[.9, .1], [.9, .1], [.1, .9], [.1, .9]]
    a = right + [[.6, .4]] * 4
    b = [[.4, .6]] * 4 + right
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    return Members(names=[f"n{i}" for i in range(8)], class_names=C2, probs=np.array([a, b]),
                   member_ids=["A", "B"], labels=labels, folds=np.array([0] * 4 + [1] * 4))


def test_cross_fitted_heldout_f1_by_hand():
    m = _two_by_two()
    cross = cross_fit(m, "weighted")
    # left out fold 0: fitted on fold 1, where B alone is right (F1 1) and adding A only raises the log loss
    # -> weights (0, 1); fold 0 is then predicted by B: positive, positive, positive, positive. Mirror image
    # for fold 1: A alone -> negative x4.
    assert [w.tolist() for w in cross.fold_weights] == [[0, 1], [1, 0]]
    assert cross.pred.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    # pooled over the 8 names: per class tp 2, predicted 4, support 4 -> F1 2*2/(4+4) = .5 each; weighted .5
    full = fit_and_apply(m.probs, m.names, C2, "weighted", fit_probs=m.probs, fit_labels=m.labels,
                         fit_names=m.names)
    assert full.weights.tolist() == [.5, .5]  # fitted on all 8: A, then B (their mean is right everywhere)
    table = heldout_table(m.labels, 2, "weighted", full, cross).set_index("step")
    assert table.loc["weighted voting", "heldout_f1"] == pytest.approx(0.5)
    assert table.loc["weighted voting", "insample_f1"] == 1.0  # overfitting shows: fitted on 1.0, held out .5
    assert table.loc["weighted voting", "fitted_on_oof"] == "member weights"
    assert table.loc["soft voting", "insample_f1"] == table.loc["soft voting", "heldout_f1"] == 1.0
    # deterministic
    again = cross_fit(m, "weighted")
    assert again.pred.tolist() == cross.pred.tolist()
    # given weights: nothing is fitted, held-out equals in-sample
    cross = cross_fit(m, "weighted", weights=[1, 1])
    assert cross.pred.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit(Members(m.names, C2, m.probs, ["A", "B"], m.labels, folds=np.zeros(8, int)))


def test_cross_fitted_bias_rule_equals_offsets_fitted_on_the_other_folds():
    rng = np.random.default_rng(3)
    n, k = 90, 3
    labels = np.repeat(np.arange(3), n // 3)
    logits = rng.normal(0, 1, (2, n, 3)) + np.array([1.2, 0, -1.2])  # both over-predict class 0
    logits[:, np.arange(n), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    folds = np.arange(n) % k
    m = Members([f"n{i}" for i in range(n)], C3, probs, ["a", "b"], labels, folds=folds)
    cross = cross_fit(m, "soft", rules=[{"type": "bias"}])
    scores = probs.mean(0)
    expected = np.empty(n, dtype=np.int64)
    for j in range(k):
        out = folds == j
        b = fit_bias(scores[~out], labels[~out])
        s = scores[out] * np.exp(b)
        expected[out] = (s / s.sum(1, keepdims=True)).argmax(1)
    assert cross.steps[0].tolist() == expected.tolist()
    full = fit_and_apply(probs, m.names, C3, "soft", rules=[{"type": "bias"}], fit_probs=probs, fit_labels=labels,
                         fit_names=m.names)
    table = heldout_table(labels, 3, "soft", full, cross)
    assert table["step"].tolist() == ["soft voting", "+ rule 1 (bias)"]
    assert table.loc[1, "heldout_f1"] == pytest.approx(weighted_f1(labels, expected, 3))
    assert table.loc[1, "insample_f1"] == pytest.approx(weighted_f1(labels, full.rerank.valid_pred, 3))
    assert table.loc[1, "fitted_on_oof"] == "bias offsets"


def test_overfitting_shows_when_weights_are_fitted_on_noise():
    # 12 members that know nothing (random probabilities), 5 folds: greedy weights fitted on all rows find
    # a combination that scores well there; on folds they were not fitted on they are back to chance
    rng = np.random.default_rng(0)
    n, r = 150, 12
    labels = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), (r, n))
    m = Members([f"n{i}" for i in range(n)], C3, probs, [f"m{i}" for i in range(r)], labels,
                folds=np.arange(n) % 5)
    full = fit_and_apply(probs, m.names, C3, "weighted", fit_probs=probs, fit_labels=labels, fit_names=m.names)
    table = heldout_table(labels, 3, "weighted", full, cross_fit(m, "weighted")).set_index("step")
    insample, held = table.loc["weighted voting", ["insample_f1", "heldout_f1"]]
    assert insample > held + 0.1
    assert insample > table.loc["soft voting", "insample_f1"] + 0.05


# ------------------------------------------------------------------------------------------------------
# ensemble.py with fold groups
# ------------------------------------------------------------------------------------------------------
def _fold_members(tmp_path, rng, n_folds=3, per_fold=30, n_test=40):
    """Three members trained on the same folds: m0 good on folds 0 and 1, poor on fold 2; m1 the other way
    round; m2 mediocre everywhere. Validation and test CSVs per fold, as test.py --out_dir writes them."""
    names = [f"v{i:03d}" for i in range(n_folds * per_fold)]
    y = rng.integers(0, 6, len(names))
    t_names = [f"t{i:03d}" for i in range(n_test)]
    t_y = rng.integers(0, 6, n_test)

    def probs(labels, acc):
        p = rng.dirichlet(np.ones(6), len(labels))
        right = rng.random(len(labels)) < acc
        p[right, labels[right]] += 1.0
        return p / p.sum(1, keepdims=True)

    accs = {"m0": [.9, .9, .2], "m1": [.2, .6, .9], "m2": [.5, .5, .5]}
    for member, acc in accs.items():
        for j in range(n_folds):
            part = slice(j * per_fold, (j + 1) * per_fold)
            _pred_csv(tmp_path / "valid" / f"demo_seed0_auto_attention_{member}-fold{j}.csv", names[part],
                      probs(y[part], acc[j]), MER, [MER[i] for i in y[part]])
            _pred_csv(tmp_path / "test" / f"demo_seed0_auto_attention_{member}-fold{j}.csv", t_names,
                      probs(t_y, np.mean(acc)), MER)
    pd.DataFrame({"name": t_names, "discrete": [MER[i] for i in t_y]}).to_csv(tmp_path / "truth.csv", index=False)
    return list(accs), t_names


def test_ensemble_cli_with_fold_groups(tmp_path, capsys):
    import ensemble as cli
    members, t_names = _fold_members(tmp_path, np.random.default_rng(1))
    valid = [str(tmp_path / "valid" / f"*_{m}-fold?.csv") for m in members]
    test = [str(tmp_path / "test" / f"*_{m}-fold?.csv") for m in members]
    rules = tmp_path / "rules.yaml"
    rules.write_text("- type: bias\n- type: demote\n  class: worried\n  margin: 0.15\n"
                     "  alternatives: [sad, surprise, neutral]\n")
    out = tmp_path / "sub" / "submission.csv"
    argv = ["--preds", *test, "--valid_preds", *valid, "--mode", "weighted", "--rules", str(rules),
            "--labels", str(tmp_path / "truth.csv"), "--out", str(out)]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    text = cap.out
    assert "valid_f1_is" in text and "fitted on (in-sample)" in text and "heldout_f1" in text
    assert "insample_f1_before" in text and "heldout_f1_after" in text and "valid_f1_before" not in text
    assert "held-out estimate" in text and "out-of-fold predictions of 3 folds (90 names)" in text
    assert "weights fitted without fold 0" in cap.err and "3 fold files out-of-fold" in cap.err
    assert "an honest estimate needs" not in cap.err
    held = pd.read_csv(tmp_path / "sub" / "submission_heldout.csv")
    assert held["step"].tolist() == ["soft voting", "weighted voting", "+ rule 1 (bias)", "+ rule 2 (demote)"]
    assert held["fitted_on_oof"].tolist() == ["-", "member weights", "bias offsets", "-"]
    assert (held["insample_f1"] >= held["heldout_f1"] - 0.05).all()
    rep = pd.read_csv(tmp_path / "sub" / "submission_rules.csv")
    assert {"insample_f1_before", "insample_f1_after", "heldout_f1_before", "heldout_f1_after",
            "heldout_flag"} <= set(rep.columns)
    assert rep.loc[0, "heldout_f1_after"] == pytest.approx(held.loc[2, "heldout_f1"])
    assert rep.loc[0, "insample_f1_after"] == pytest.approx(held.loc[2, "insample_f1"])
    sub = pd.read_csv(out)
    assert sub["name"].tolist() == t_names
    # the table's held-out figure for the ensemble is the held-out table's
    table_lines = [l for l in text.splitlines() if l.startswith("ensemble (weighted)")]
    assert f"{held.loc[1, 'heldout_f1']:.4f}" in table_lines[0]

    # soft voting without rules: nothing fitted; the table says so and held-out equals in-sample
    assert cli.main(["--preds", *test, "--valid_preds", *valid, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    held = pd.read_csv(tmp_path / "sub" / "submission_heldout.csv")
    assert held["step"].tolist() == ["soft voting"] and "fitted on (in-sample)" not in text

    # members as single files: works as before, the fitted figures labelled in-sample, and a log line
    one_v = [str(tmp_path / "valid" / f"demo_seed0_auto_attention_{m}-fold0.csv") for m in members]
    one_t = [str(tmp_path / "test" / f"demo_seed0_auto_attention_{m}-fold0.csv") for m in members]
    assert cli.main(["--preds", *one_t, "--valid_preds", *one_v, "--mode", "weighted", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "fitted on (in-sample)" in cap.out and "heldout_f1" not in cap.out
    assert "is in-sample" in cap.err and "--kfold" in cap.err

    # an unquoted pattern expanded by the shell gives one member per file: the counts disagree, with a hint
    assert cli.main(["--preds", *test, "--valid_preds", *sorted(str(p) for p in (tmp_path / "valid").iterdir()),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 --preds but 9 --valid_preds" in err and "quoted pattern" in err and len(err.strip().splitlines()) == 1
    # members trained on other folds are refused in one line
    for j, names in enumerate([["v000", "v030"], ["v001", "v031"]]):
        _pred_csv(tmp_path / "bad" / f"x-fold{j}.csv", names, np.full((2, 6), 1 / 6), MER, ["neutral"] * 2)
    assert cli.main(["--preds", test[0], test[1], "--valid_preds", valid[0], str(tmp_path / "bad" / "x-fold*"),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --valid_preds member") and len(err.strip().splitlines()) == 1
