"""The demo generator, the feature check and the MOSI converter."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

import config
import make_demo
from conftest import REPO, SHARED_DATA
from conftest import load_script


@pytest.fixture(scope="module")
def demo():
    return make_demo.generate(n_train=600, n_unlabeled=900, n_test=300, seed=0)


def test_demo_is_deterministic_and_mer_shaped(demo):
    table, feats, au, teacher = demo
    again = make_demo.generate(n_train=600, n_unlabeled=900, n_test=300, seed=0)
    pd.testing.assert_frame_equal(table, again[0])
    np.testing.assert_array_equal(feats["demo-hubert-large-UTT"], again[1]["demo-hubert-large-UTT"])
    counts = table["discrete"].value_counts()
    assert set(counts.index) == set(config.EMO_RULE["MER"])
    assert counts.idxmax() == "neutral" and counts.idxmin() == "surprise"
    assert table["split"].value_counts().to_dict() == {"unlabeled": 900, "train": 600, "test": 300}
    for name, x in feats.items():
        assert x.shape == (1800, config.find_feature(name)[1]) and np.isfinite(x).all()
    assert all(a.ndim == 2 and a.shape[1] == 35 and 10 <= a.shape[0] <= 96 for a in au)
    stacked = np.concatenate(au)
    assert stacked[:, :17].min() >= 0 and stacked[:, :17].max() <= 5
    assert set(np.unique(stacked[:, 17:])) <= {0.0, 1.0}
    assert 0.0 < (table["corrupted"] != "").mean() < 0.12


def test_demo_teacher_is_right_about_70_percent_and_more_when_confident(demo):
    table, _, _, teacher = demo
    truth = dict(zip(table["name"], table["discrete"]))
    right = np.array([r["label"] == truth[r["name"]] for r in teacher])
    conf = np.array([r["confidence"] for r in teacher])
    assert 0.62 < right.mean() < 0.78
    assert right[conf >= 4].mean() > right[conf <= 2].mean() + 0.3
    r = teacher[0]
    assert set(r) == {"name", "label", "scores", "confidence", "description", "teacher"}
    assert abs(sum(r["scores"].values()) - 1) < 1e-3 and r["label"] in config.EMO_RULE["MER"]


def test_demo_no_single_feature_solves_it_and_modalities_complement(demo):
    table, feats, _, _ = demo
    y = table["discrete"].to_numpy()
    tr, te = (table["split"] != "test").to_numpy(), (table["split"] == "test").to_numpy()

    def score(x):
        clf = LogisticRegression(max_iter=500, C=0.5).fit(x[tr], y[tr])
        return f1_score(y[te], clf.predict(x[te]), average="weighted")

    names = ["demo-videomae-large-UTT", "demo-hubert-large-UTT", "demo-roberta-large-UTT"]
    single = {n: score(feats[n].astype(np.float32)) for n in names}
    fused = score(np.concatenate([feats[n].astype(np.float32) for n in names], axis=1))
    assert max(single.values()) < 0.7
    assert fused > max(single.values()) + 0.1


def test_written_demo_passes_the_feature_check_and_a_broken_file_fails_it(tmp_path):
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path))
    run = dict(cwd=REPO, env=env, capture_output=True, text=True)
    r = subprocess.run([sys.executable, "preprocess/make_demo.py", "--out", str(tmp_path / "demo"), "--n_train", "80",
                        "--n_unlabeled", "60", "--n_test", "30"], **run)
    assert r.returncode == 0, r.stderr
    assert "Teacher accuracy" in (tmp_path / "demo" / "README.md").read_text()
    assert len(pd.read_csv(tmp_path / "demo" / "track1_train_disdim.csv")) == 80
    with open(tmp_path / "demo" / "teachers" / "demo-vlm.jsonl") as f:
        assert len([json.loads(line) for line in f]) == 170
    r = subprocess.run([sys.executable, "preprocess/vlm_features.py", "--dataset", "demo", "--features", "desc", "--quiet",
                        "--teacher", str(tmp_path / "demo" / "teachers" / "demo-vlm.jsonl")], **run)
    assert r.returncode == 0, r.stderr
    feats = [f for f in config.all_features() if f.startswith("demo-") and f != "demo-vlm-desc-minilm"]
    r = subprocess.run([sys.executable, "preprocess/check_feat_dim.py", "--dataset", "demo", "--feat", *feats], **run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo-openface-au-FRM" in r.stdout and " 170 " in r.stdout
    victim = sorted(os.listdir(tmp_path / "demo" / "demo-bert-base-UTT"))[0]
    np.save(tmp_path / "demo" / "demo-bert-base-UTT" / victim, np.zeros(7, np.float32))
    os.remove(tmp_path / "demo" / "demo-vlm-scores" / victim)
    r = subprocess.run([sys.executable, "preprocess/check_feat_dim.py", "--dataset", "demo", "--feat", *feats], **run)
    assert r.returncode == 1
    assert "1 files disagree with dim 768" in r.stdout and victim in r.stdout
    assert "1 listed names have no file" in r.stdout


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mosi-bclstm")), reason="shared MOSI data absent")
def test_mosi_converter_on_the_real_release(tmp_path):
    mosi_bclstm = load_script("preprocess/mosi_bclstm.py")
    tables = mosi_bclstm.convert(os.path.join(SHARED_DATA, "mosi-bclstm"), str(tmp_path))
    assert len(tables["train"]) == 1447 and len(tables["test"]) == 752
    assert tables["train"].video.nunique() == 62 and tables["test"].video.nunique() == 31
    assert not set(tables["train"].video) & set(tables["test"].video)
    x = np.load(tmp_path / "mosi-bclstm-audio" / (tables["test"].name.iloc[0] + ".npy"))
    assert x.shape == (73,) and x.dtype == np.float32
    assert set(pd.read_csv(tmp_path / "test_labels.csv").discrete) == {"negative", "positive"}


def test_mosi_converter_rejects_a_broken_copy(tmp_path):
    mosi_bclstm = load_script("preprocess/mosi_bclstm.py")
    from common.errors import DataError
    with pytest.raises(DataError, match="transcripts.csv' is missing"):
        mosi_bclstm.convert(str(tmp_path), str(tmp_path / "out"))


def test_demo_descriptions_are_no_giveaway(demo):
    from sklearn.feature_extraction.text import TfidfVectorizer
    table, _, _, teacher = demo
    y = table["discrete"].to_numpy()
    tr, te = (table["split"] != "test").to_numpy(), (table["split"] == "test").to_numpy()
    desc = np.array([r["description"] for r in teacher])
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(desc[tr])
    clf = LogisticRegression(max_iter=2000).fit(vec.transform(desc[tr]), y[tr])
    acc = (clf.predict(vec.transform(desc[te])) == y[te]).mean()
    assert 0.5 < acc < 0.85  # informative (it is the teacher's reasoning), but no single feature solves the demo


def test_load_script_keeps_the_repositorys_modules_ahead_of_a_scripts_namesakes():
    import importlib.util
    load_script("bench/bclstm_reference.py")  # bench/ holds an ensemble.py too
    import sys
    paths = [os.path.abspath(p) for p in sys.path]
    assert paths.index(os.path.join(REPO, "bench")) > paths.index(REPO)
    origin = importlib.util.find_spec("ensemble").origin
    assert os.path.dirname(origin) == REPO and load_script("bench/bclstm_reference.py").FEATS[0] == "mosi-bclstm-text"
