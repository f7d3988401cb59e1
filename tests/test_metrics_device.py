"""Metrics against hand-computed values; device selection."""

import pytest
import torch

from common.metrics import emotion_metrics, format_confusion, full_report
from engine.selection import binomial_se, one_standard_error
from common.utils import parse_feat_list, resolve_device


def test_accuracy_and_weighted_f1_by_hand():
    labels = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    # class 0: P=1, R=2/3, F1=0.8 (support 3); class 1: P=1/2, R=1/2, F1=0.5 (2); class 2: P=1/2, R=1, F1=2/3 (1)
    m = emotion_metrics(labels, preds)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    text, cm = full_report(labels, preds, ["a", "b", "c"])
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert "truth" in format_confusion(cm, ["a", "b", "c"])


def test_numpy_metrics_equal_scikit_learn_on_random_labels():
    """emotion_metrics is numpy (no scikit-learn import per process); it must give scikit-learn's figures, also
    where a class is only predicted, only true, or absent, and for a single sample."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    cases = [([0], [0]), ([0], [1]), ([2, 2], [0, 1]), ([], [])]
    for t in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 7))
        y = rng.integers(0, k, n)
        p = y.copy() if t % 2 else rng.integers(0, k + 2, n)
        p[rng.random(n) < 0.3] = rng.integers(0, k + 2)
        cases.append((y, p))
    for y, p in cases:
        m = emotion_metrics(y, p)
        if len(y) == 0:
            assert m == {"acc": 0.0, "f1": 0.0}
            continue
        assert m["acc"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert m["f1"] == pytest.approx(f1_score(y, p, average="weighted", zero_division=0), abs=1e-12)
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        emotion_metrics([0, 1, 2], [0, 1])


def test_numpy_report_and_confusion_equal_scikit_learn():
    """full_report is numpy too: scikit-learn's classification_report text (digits 4, zero_division 0) and
    confusion_matrix, byte for byte, with classes never predicted or never true. (Where no prediction is right,
    scikit-learn prints the supports as floats, 3.0; ours stay whole numbers, so those cases are left out.)"""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    rng = np.random.default_rng(1)
    compared = 0
    for t in range(300):
        k, n = int(rng.integers(2, 8)), int(rng.integers(1, 60))
        names = [f"{'long' * int(rng.integers(0, 4))}class{i}" for i in range(k)]
        y = np.zeros(n, np.int64) if t % 7 == 0 else rng.integers(0, k, n)
        p = y.copy()
        wrong = rng.random(n) < rng.random()
        p[wrong] = rng.integers(0, k, int(wrong.sum()))
        text, cm = full_report(y, p, names)
        assert cm.tolist() == confusion_matrix(y, p, labels=list(range(k))).tolist()
        if (y == p).any():
            assert text == classification_report(y, p, labels=list(range(k)), target_names=names, digits=4,
                                                 zero_division=0)
            compared += 1
    assert compared > 250


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.device_count() >= 2:
        assert str(resolve_device("auto", gpu=1)) == "cuda:1"
    elif torch.cuda.is_available():  # one GPU: index 1 does not exist, and the error says how many there are
        with pytest.raises(ValueError, match="sees 1 CUDA device"):
            resolve_device("auto", gpu=1)
    else:
        assert str(resolve_device("auto", gpu=1)) == "cpu"
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown --device"):
        resolve_device("tpu")


def test_feature_list_syntaxes():
    assert parse_feat_list("['a', 'b']") == ["a", "b"]
    assert parse_feat_list("a, b,c") == ["a", "b", "c"]
    with pytest.raises(ValueError):
        parse_feat_list("[1, 2]")


def test_one_standard_error_rule_by_hand():
    assert binomial_se(0.9, 100) == pytest.approx(0.03)
    # a perfect score keeps the doubt of one sample
    assert binomial_se(1.0, 100) == pytest.approx((0.01 * 0.99 / 100) ** 0.5)
    # best 0.90 on 100 samples, SE 0.03: 0.88 and 0.871 are within it, 0.86 is not; the most regularised of
    # those wins
    assert one_standard_error([0.90, 0.88, 0.871, 0.86], 100, [1e-5, 1e-3, 1e-2, 1e-1]) == 2
    # with 10,000 samples the SE is 0.003: only the best is left
    assert one_standard_error([0.90, 0.88, 0.871, 0.86], 10000, [1e-5, 1e-3, 1e-2, 1e-1]) == 0
    # equal simplicity: the higher score, then the earlier setting
    assert one_standard_error([0.89, 0.90, 0.90], 100, [1, 1, 1]) == 1
    with pytest.raises(ValueError, match="one simplicity value per score"):
        one_standard_error([0.9, 0.8], 100, [1])
    with pytest.raises(ValueError, match="positive number"):
        binomial_se(0.9, 0)


def test_threads_are_bounded_by_the_flag_or_omp_num_threads(monkeypatch):
    import torch

    from common.utils import set_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_threads(None) == 2  # the usual variable is honoured when no flag is given
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(1)
        assert set_threads(None) == 1  # neither: nothing changes
        for bad in (0, -2, 1.5):
            with pytest.raises(ValueError, match="--threads"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_every_command_that_trains_or_embeds_takes_threads(capsys):
    from conftest import load_script

    for script in ("train.py", "test.py", "semi.py", "pseudo_label.py", "ablation.py", "bench/low_resource.py",
                   "preprocess/extract_features.py", "preprocess/vlm_features.py", "preprocess/meld.py",
                   "preprocess/mosi_bclstm.py", "preprocess/offline_teacher.py"):
        with pytest.raises(SystemExit) as e:
            load_script(script).main(["--help"])
        assert e.value.code == 0 and "--threads N" in capsys.readouterr().out, script
