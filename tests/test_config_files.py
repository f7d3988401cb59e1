"""config.py, file formats and the split builder."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import config
from conftest import REPO
from dataloader.files import DataError, read_label_csv, read_split_json, write_split_json


def test_label_sets_are_the_published_ones():
    assert config.EMO_RULE["MER"] == ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    assert config.EMO_RULE["MELD"] == ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
    assert config.EMO_RULE["MOSI"] == ["negative", "positive"]
    for key in ("IEMOCAP", "CREMAD", "RAVDESS"):
        assert len(set(config.EMO_RULE[key])) == len(config.EMO_RULE[key]) >= 6


def test_feature_registry_entries_and_lookup():
    for table in config.MODALITY_DICTS.values():
        for name, (dim, root) in table.items():
            assert isinstance(dim, int) and dim > 0, name
            assert isinstance(root, str) and root.startswith(config.FEATURE_ROOT), name
    assert config.find_feature("demo-openface-au-FRM")[:2] == ("au", 35)
    with pytest.raises(KeyError, match="not registered in config.py"):
        config.find_feature("no-such-feature")


def test_feature_root_is_overridable_by_environment(tmp_path):
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import config; print(config.FEAT_TEXT_DICT['demo-bert-base-UTT'][1])"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == os.path.join(str(tmp_path), "demo", "demo-bert-base-UTT")


def test_unknown_label_is_named_with_its_count(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"name": ["a", "b", "c", "d"], "discrete": ["happy", "Joyful", "joyful", "sad"]}).to_csv(path, index=False)
    with pytest.raises(DataError) as e:
        read_label_csv(str(path), config.EMO_RULE["MER"])
    msg = str(e.value)
    assert "'joyful' x2" in msg and "labels.csv" in msg and "--emo_rule" in msg
    df = read_label_csv(str(path))  # without a label set: read, lower-cased, valence filled
    assert df["discrete"].tolist() == ["happy", "joyful", "joyful", "sad"] and (df["valence"] == 0).all()


def test_split_json_round_trip_and_overlap_check(tmp_path):
    path = str(tmp_path / "s.json")
    write_split_json(path, {"names": ["a", "b"], "emos": ["happy", "sad"], "vals": [1, -1]},
                     {"names": ["c"], "emos": ["neutral"], "vals": [0]})
    doc = read_split_json(path, config.EMO_RULE["MER"])
    assert doc["train_info"]["names"] == ["a", "b"] and doc["valid_info"]["vals"] == [0.0]
    write_split_json(path, {"names": ["a", "b"], "emos": ["happy", "sad"]}, {"names": ["b"], "emos": ["sad"]})
    with pytest.raises(DataError, match="both train and valid"):
        read_split_json(path)


def test_legacy_npy_list_needs_trust_flag(tmp_path):
    import convert_lst
    src = tmp_path / "seed0.npy"
    legacy = {"train_info": {"names": ["x", "y"], "emos": ["happy", "sad"], "vals": [0.5, -0.5]},
              "valid_info": {"names": ["z"], "emos": ["neutral"], "vals": [0.0]}}
    np.save(src, legacy, allow_pickle=True)
    dst = str(tmp_path / "seed0.json")
    with pytest.raises(DataError, match="--trust-pickle"):
        convert_lst.convert(str(src), dst)
    assert not os.path.exists(dst)
    assert convert_lst.convert(str(src), dst, trust_pickle=True) == (2, 1)
    with open(dst) as f:
        assert json.load(f)["train_info"]["vals"] == [0.5, -0.5]
    (tmp_path / "bad.npy").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError):
        convert_lst.convert(str(tmp_path / "bad.npy"), dst, trust_pickle=True)


def test_splits_are_stratified_seeded_and_group_aware(tmp_path):
    import build_splits
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"name": [f"n{i}" for i in range(n)],
                       "discrete": rng.choice(["happy", "sad", "neutral"], n, p=[0.5, 0.3, 0.2]),
                       "valence": 0.0, "video": [f"v{i // 6}" for i in range(n)]})
    df.to_csv(tmp_path / "l.csv", index=False)
    build_splits.build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "a"), seeds=(0, 1))
    build_splits.build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "b"), seeds=(0,))
    s0 = read_split_json(str(tmp_path / "a" / "seed0.json"))
    s1 = read_split_json(str(tmp_path / "a" / "seed1.json"))
    again = read_split_json(str(tmp_path / "b" / "seed0.json"))
    assert len(s0["valid_info"]["names"]) == 60 and len(s0["train_info"]["names"]) == 240
    assert s0 == again and s0["valid_info"]["names"] != s1["valid_info"]["names"]
    full = df["discrete"].value_counts(normalize=True)
    valid = pd.Series(s0["valid_info"]["emos"]).value_counts(normalize=True)
    assert (abs(full - valid) < 0.03).all()
    build_splits.build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "g"), seeds=(0,), group_col="video")
    g = read_split_json(str(tmp_path / "g" / "seed0.json"))
    vid = dict(zip(df.name, df.video))
    assert not {vid[n] for n in g["train_info"]["names"]} & {vid[n] for n in g["valid_info"]["names"]}
    build_splits.build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "k"), kfold=5)
    folds = [read_split_json(str(tmp_path / "k" / f"fold{k}.json"))["valid_info"]["names"] for k in range(5)]
    assert sorted(sum(folds, [])) == sorted(df.name)


def test_official_split_from_a_column_or_name_lists_with_dialogues(tmp_path, capsys):
    import build_splits
    df = pd.DataFrame({"name": [f"u{i}" for i in range(12)], "discrete": ["happy", "sad", "neutral"] * 4,
                       "dialogue": [f"d{i // 3}" for i in range(12)], "order": [i % 3 for i in range(12)],
                       "split": ["train"] * 6 + ["dev"] * 3 + ["test"] * 3})
    df.to_csv(tmp_path / "l.csv", index=False)
    args = ["--label_csv", str(tmp_path / "l.csv"), "--emo_rule", "MER", "--out_dir", str(tmp_path / "o"),
            "--group_col", "dialogue"]
    assert build_splits.main(args + ["--split_col", "split"]) == 0
    doc = read_split_json(str(tmp_path / "o" / "official.json"))
    assert doc["train_info"]["names"] == [f"u{i}" for i in range(6)]  # test rows left out
    assert doc["valid_info"]["names"] == ["u6", "u7", "u8"]
    assert doc["valid_info"]["dialogues"] == ["d2"] * 3 and doc["valid_info"]["orders"] == [0.0, 1.0, 2.0]
    # the same split from two name lists
    df[df.split == "train"][["name"]].to_csv(tmp_path / "tr.csv", index=False)
    df[df.split == "dev"][["name"]].to_csv(tmp_path / "va.csv", index=False)
    assert build_splits.main(args + ["--train_names", str(tmp_path / "tr.csv"), "--valid_names",
                                     str(tmp_path / "va.csv"), "--name", "lists"]) == 0
    lists = read_split_json(str(tmp_path / "o" / "lists.json"))
    assert lists["train_info"] == doc["train_info"] and lists["valid_info"] == doc["valid_info"]
    capsys.readouterr()
    # bad official splits: one line each, nothing written
    df.assign(split=["train"] * 6 + ["holdout"] * 6).to_csv(tmp_path / "odd.csv", index=False)
    pd.DataFrame({"name": ["u0", "zz"]}).to_csv(tmp_path / "ghost.csv", index=False)
    pd.DataFrame({"name": ["u0", "u6"]}).to_csv(tmp_path / "both.csv", index=False)
    for extra, message in [(["--label_csv", str(tmp_path / "odd.csv"), "--split_col", "split"], "values ['holdout']"),
                           (["--split_col", "nope"], "'nope' is not a column"),
                           (["--train_names", str(tmp_path / "ghost.csv"), "--valid_names", str(tmp_path / "va.csv")],
                            "1 names that are not in the label table"),
                           (["--train_names", str(tmp_path / "both.csv"), "--valid_names", str(tmp_path / "va.csv")],
                            "1 names in both train and valid: u6")]:
        assert build_splits.main(args + extra + ["--name", "bad"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "o" / "bad.json")


def test_eval_avg_performance_means_and_stds_by_hand(tmp_path, capsys):
    import eval_avg_performance as eap
    values = {"feat-a": [(0.5, 0.4), (0.7, 0.6)], "feat-b": [(0.9, 0.8), (0.9, 1.0)]}
    for feat, runs in values.items():
        for seed, (acc, f1) in enumerate(runs):
            d = tmp_path / feat / "demo" / f"seed{seed}" / "auto_attention" / "run"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({"valid_acc": acc, "valid_f1": f1, "test_acc": acc,
                                                        "test_f1": f1}))
    assert eap.main(["--save_root", str(tmp_path), "--highlight", "feat-a"]) == 0
    table = pd.read_csv(tmp_path / "summary.csv")
    assert table["experiment"].tolist() == ["feat-b", "feat-a"]  # sorted by test F1
    b = table.iloc[0]
    assert b["seeds"] == 2 and b["test_f1_mean"] == pytest.approx(0.9) and b["test_f1_std"] == pytest.approx(0.1)
    assert table.iloc[1]["valid_acc_mean"] == pytest.approx(0.6)
    out = capsys.readouterr().out
    assert "| feat-b | 2 | 0.9000 +- 0.0000 | 0.9000 +- 0.1000 |" in out
    assert "feat-a: test weighted F1 0.5000 vs best other 0.9000 (feat-b): -40.00 points" in out
    assert (tmp_path / "summary.md").read_text().startswith("| experiment | seeds |")
