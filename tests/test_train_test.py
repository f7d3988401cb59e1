"""train.py and test.py end to end on the tiny data set with a known answer."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import test as test_script
import train as train_script
from conftest import CLASSES, train_args, train_killed_after
from common.errors import DataError
from engine.trainer import evaluate_run, train


def test_training_learns_the_known_answer_and_writes_the_run_folder(tiny, capsys):
    summary = train(train_args(tiny, "--test", plots=True))
    run = summary["run_dir"]
    for f in ("args.yaml", "metrics.csv", "best.pth", "valid_pred.csv", "loss.png", "metrics.png", "train.log",
              "summary.json", "test_pred.csv", "test_metrics.json"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert not os.path.exists(os.path.join(run, "last.pth"))
    assert summary["valid_f1"] > 0.9 and summary["test_f1"] > 0.9
    metrics = pd.read_csv(os.path.join(run, "metrics.csv"))
    assert list(metrics.columns[:7]) == ["epoch", "train_loss", "valid_loss", "valid_acc", "valid_f1", "seconds",
                                         "samples_per_s"]
    assert len(metrics) == 8 and metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    assert metrics["valid_f1"].max() == pytest.approx(summary["valid_f1"])
    out = capsys.readouterr().out
    assert f"BEST: epoch:{summary['best_epoch']}, " in out and "f-score:" in out
    pred = pd.read_csv(os.path.join(run, "valid_pred.csv"))
    probs = pred[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert {"weight_tiny-signal", "weight_tiny-noise"} <= set(pred.columns)


def test_same_seed_same_metrics(tiny):
    a = train(train_args(tiny, "--run_name", "a", "--epochs", "3"))
    b = train(train_args(tiny, "--run_name", "b", "--epochs", "3"))
    ma = pd.read_csv(os.path.join(a["run_dir"], "metrics.csv"))
    mb = pd.read_csv(os.path.join(b["run_dir"], "metrics.csv"))
    cols = ["train_loss", "valid_loss", "valid_acc", "valid_f1"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols])
    c = train(train_args(tiny, "--run_name", "c", "--epochs", "3", "--seed", "1"))
    mc = pd.read_csv(os.path.join(c["run_dir"], "metrics.csv"))
    assert not np.allclose(ma["train_loss"], mc["train_loss"])


def test_interrupted_run_resumes_to_the_same_result(tiny, monkeypatch):
    full = train(train_args(tiny, "--run_name", "full", "--epochs", "4"))
    train_killed_after(tiny, monkeypatch, 2, "--run_name", "cut", "--epochs", "4")
    run = os.path.join(os.path.dirname(full["run_dir"]), "cut")
    assert os.path.isfile(os.path.join(run, "last.pth")) and not os.path.exists(os.path.join(run, "summary.json"))
    assert len(pd.read_csv(os.path.join(run, "metrics.csv"))) == 2  # finished epochs are on disk
    resumed = train(train_args(tiny, "--run_name", "cut", "--epochs", "4", "--resume"))
    a = pd.read_csv(os.path.join(full["run_dir"], "metrics.csv"))
    b = pd.read_csv(os.path.join(run, "metrics.csv"))
    cols = ["train_loss", "valid_loss", "valid_f1"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert resumed["valid_f1"] == pytest.approx(full["valid_f1"])


def test_frame_level_feature_trains(tiny):
    s = train(train_args(tiny, "--feat", "tiny-au", "--epochs", "6", "--max_len", "8", "--seq_dim", "16",
                         "--seq_heads", "2", "--run_name", "au"))
    assert s["valid_f1"] > 0.8


def test_test_script_writes_probabilities_report_and_confusion_png(tiny, capsys):
    s = train(train_args(tiny))
    out = str(tiny.tmp / "preds" / "test_pred.csv")
    rc = test_script.main(["--run", s["run_dir"], "--names", str(tiny.tmp / "test.csv"),
                           "--labels", str(tiny.tmp / "test_labels.csv"), "--out", out, "--device", "cpu"])
    assert rc == 0
    pred = pd.read_csv(out)
    assert len(pred) == 30 and np.allclose(pred[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-4)
    assert os.path.isfile(str(tiny.tmp / "preds" / "test_pred_confusion.png"))
    printed = capsys.readouterr().out
    assert "TEST: acc:" in printed and "precision" in printed and "truth \\ pred" in printed
    res = evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), str(tiny.tmp / "test_labels.csv"), device="cpu")
    acc = (pred["pred"] == pred["label"]).mean()
    assert res["acc"] == pytest.approx(acc) and int(res["confusion"].sum()) == 30
    # names only: probabilities without metrics
    res = evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), device="cpu")
    assert "acc" not in res and len(res["predictions"]) == 30


def test_cli_reports_bad_input_clearly(tiny, capsys):
    args = ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "1", "--save_root", str(tiny.tmp / "s"),
            "--quiet"]
    assert train_script.main(args + ["--seed", "7"]) == 2
    assert "build_splits.py" in capsys.readouterr().err
    assert train_script.main(["--dataset", "nowhere", "--feat", "tiny-signal"]) == 2
    assert "config.DATASETS" in capsys.readouterr().err
    assert train_script.main(args + ["--feat", "ghost-feature"]) == 2
    assert "'ghost-feature' is not registered in config.py" in capsys.readouterr().err
    bad_split = tiny.tmp / "bad.json"
    bad_split.write_text(json.dumps({"train_info": {"names": ["s0000"], "emos": ["furious"]},
                                     "valid_info": {"names": ["s0001"], "emos": ["happy"]}}))
    assert train_script.main(args + ["--split", str(bad_split)]) == 2
    assert "'furious' x1" in capsys.readouterr().err
    assert train_script.main(args + ["--model", "nosuch", "--run_name", "bad_model"]) == 2
    assert "unknown model 'nosuch'; registered models: auto_attention" in capsys.readouterr().err
    assert not list((tiny.tmp / "s").rglob("bad_model"))  # no run folder left behind for it
    import torch
    if not torch.cuda.is_available():  # a GPU asked for on a machine without one: one line, no traceback
        assert train_script.main(args + ["--device", "cuda"]) == 2
        assert "use --device cpu or --device auto" in capsys.readouterr().err


def test_feature_standardisation_is_fitted_on_train_and_saved_in_the_checkpoint(tiny):
    import torch

    from dataloader import SampleSet, load_features
    from dataloader.files import read_split_json
    s = train(train_args(tiny, "--epochs", "2", "--run_name", "norm"))
    ckpt = torch.load(os.path.join(s["run_dir"], "best.pth"), weights_only=True)
    split = read_split_json(str(tiny.tmp / "train_lst" / "tiny" / "seed0.json"))
    train_names = split["train_info"]["names"]
    x = load_features(["tiny-signal"])[0]
    ref = x.gather(x.rows(train_names))[0]
    assert torch.allclose(ckpt["state_dict"]["input_norm.mean0"], torch.tensor(ref.mean(0)), atol=1e-5)
    assert torch.allclose(ckpt["state_dict"]["input_norm.std0"], torch.tensor(ref.std(0)), atol=1e-5)
    raw = train(train_args(tiny, "--epochs", "2", "--run_name", "raw", "--feat_norm", "none"))
    ckpt = torch.load(os.path.join(raw["run_dir"], "best.pth"), weights_only=True)
    assert (ckpt["state_dict"]["input_norm.std0"] == 1).all()
    au = SampleSet(load_features(["tiny-au"]), train_names).feature_stats()[0]
    assert au[0].shape == (4,) and torch.isfinite(au[1]).all()


@pytest.mark.parametrize("model", ["moe", "auto_attention"])
def test_dropping_an_expert_at_test_time(tiny, model):
    s = train(train_args(tiny, "--model", model, "--run_name", model, "--hidden_dim", "32"))
    full = evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), str(tiny.tmp / "test_labels.csv"), device="cpu")
    no_noise = evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), str(tiny.tmp / "test_labels.csv"),
                            device="cpu", drop_experts=["tiny-noise"])
    no_signal = evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), str(tiny.tmp / "test_labels.csv"),
                             device="cpu", drop_experts=["tiny-signal"])
    assert no_noise["f1"] > 0.9 and full["f1"] > 0.9  # the informative expert alone still carries it
    assert no_signal["f1"] < no_noise["f1"] - 0.3  # without it, chance level
    pred = no_noise["predictions"]
    assert (pred["weight_tiny-noise"] == 0).all() and np.allclose(pred.filter(like="weight_").sum(axis=1), 1)
    if model == "moe":
        assert "weight_cross-modal" in pred.columns
    with pytest.raises(Exception, match="not experts of this run"):
        evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), drop_experts=["ghost"], device="cpu")
    with pytest.raises(ValueError, match="keep at least one"):
        evaluate_run(s["run_dir"], str(tiny.tmp / "test.csv"), drop_experts=["tiny-noise", "tiny-signal"],
                     device="cpu")


def test_ablation_ranks_the_informative_expert_first(tiny, capsys):
    import ablation
    root = str(tiny.tmp / "abl")
    targs = "--epochs 6 --lr 3e-3 --batch_size 16 --hidden_dim 32 --device cpu --num_workers 2"
    assert ablation.main(["--dataset", "tiny", "--feat", "tiny-signal,tiny-noise", "--model", "moe", "--seeds", "0",
                          "--save_root", root, "--train_args", targs]) == 0
    table = pd.read_csv(os.path.join(root, "ablation.csv"))
    assert set(table["experiment"]) == {"alone:tiny-signal", "alone:tiny-noise", "all", "without:tiny-signal",
                                        "without:tiny-noise"}
    assert (table["seeds"] == 1).all()
    f1 = dict(zip(table["experiment"], table["test_f1_mean"]))
    assert f1["all"] > 0.9 and f1["alone:tiny-signal"] > 0.9 and f1["alone:tiny-noise"] < 0.6
    out = capsys.readouterr().out
    assert "most important first): tiny-signal" in out
    assert os.path.isfile(os.path.join(root, "ablation.png"))
    # a rerun skips finished runs
    assert ablation.main(["--dataset", "tiny", "--feat", "tiny-signal,tiny-noise", "--model", "moe", "--seeds", "0",
                          "--parts", "all", "--save_root", root, "--train_args", targs]) == 0
    (run,) = glob.glob(os.path.join(root, "all", "tiny", "seed0", "moe", "*"))  # named by its settings
    log = open(os.path.join(run, "train.log")).read()
    assert "already complete" in log and "epoch 6/6" in log  # the first run's log is kept


def test_test_script_batch_mode_writes_every_run_and_expert_head(tiny, capsys):
    runs = [train(train_args(tiny, "--model", "moe", "--seed", str(seed), "--run_name", "run"))["run_dir"]
            for seed in (0, 1)]
    runs.append(train(train_args(tiny, "--run_name", "aa"))["run_dir"])
    out_dir = tiny.tmp / "preds"
    rc = test_script.main(["--run", *runs, "--names", str(tiny.tmp / "test.csv"), "--labels",
                           str(tiny.tmp / "test_labels.csv"), "--out_dir", str(out_dir), "--heads", "--device", "cpu"])
    assert rc == 0
    files = sorted(os.listdir(out_dir))
    for rid in ("tiny_seed0_moe_run", "tiny_seed1_moe_run"):
        assert f"{rid}.csv" in files
        for head in ("tiny-signal", "tiny-noise", "cross-modal"):  # one head per expert plus the cross-modal one
            df = pd.read_csv(out_dir / f"{rid}__head_{head}.csv")
            assert len(df) == 30 and np.allclose(df[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-4)
    # auto_attention has no heads: only its fused prediction
    assert "tiny_seed0_auto_attention_aa.csv" in files
    assert not any(f.startswith("tiny_seed0_auto_attention_aa__head") for f in files)
    # the signal head is far better than the noise head on the known answer
    sig = pd.read_csv(out_dir / "tiny_seed0_moe_run__head_tiny-signal.csv")
    noise = pd.read_csv(out_dir / "tiny_seed0_moe_run__head_tiny-noise.csv")
    assert (sig["pred"] == sig["label"]).mean() > (noise["pred"] == noise["label"]).mean() + 0.3
    # each run's own validation list, scored with its split's labels
    rc = test_script.main(["--run", *runs[:2], "--split_valid", "--out_dir", str(tiny.tmp / "valid"), "--device",
                           "cpu"])
    assert rc == 0
    v = pd.read_csv(tiny.tmp / "valid" / "tiny_seed0_moe_run.csv")
    assert len(v) == 24 and "label" in v.columns  # the tiny split holds 24 validation samples
    # several runs need --out_dir
    with pytest.raises(SystemExit):
        test_script.main(["--run", *runs[:2], "--names", str(tiny.tmp / "test.csv")])


def test_runs_are_named_by_their_settings_and_a_folder_never_holds_other_settings(tiny):
    a = train(train_args(tiny, "--epochs", "2"))
    a1 = train(train_args(tiny, "--epochs", "2", "--seed", "1"))
    b = train(train_args(tiny, "--epochs", "2", "--lr", "1e-3"))
    name = os.path.basename(a["run_dir"])
    assert name.startswith("auto_attention-") and os.path.basename(a1["run_dir"]) == name  # seeds share the name
    assert os.path.basename(b["run_dir"]) != name and os.path.isfile(os.path.join(a["run_dir"], "best.pth"))
    assert a["config_hash"] != a1["config_hash"]  # ... not the identity: the seed is part of it

    # an explicit folder that holds a finished run: other settings are refused, with or without --resume,
    # and nothing of it is touched
    train(train_args(tiny, "--epochs", "2", "--run_name", "x", "--test"))
    run = os.path.join(str(tiny.tmp), "saved", "tiny", "seed0", "auto_attention", "x")
    before = {f: os.path.getmtime(os.path.join(run, f)) for f in os.listdir(run) if f != ".lock"}
    for extra in ((), ("--resume",)):
        with pytest.raises(DataError, match=r"other settings \(epochs: 2 there, 3 now"):
            train(train_args(tiny, "--epochs", "3", "--run_name", "x", *extra))
    assert {f: os.path.getmtime(os.path.join(run, f)) for f in os.listdir(run) if f != ".lock"} == before
    # a rewritten split list is a change too, although its path is the same
    split = os.path.join(str(tiny.tmp), "train_lst", "tiny", "seed0.json")
    doc = json.load(open(split))
    doc["train_info"]["emos"][0] = CLASSES[(CLASSES.index(doc["train_info"]["emos"][0]) + 1) % 3]
    json.dump(doc, open(split, "w"))
    with pytest.raises(DataError, match="split_sha1"):
        train(train_args(tiny, "--epochs", "2", "--run_name", "x", "--resume"))
    # files of unknown settings (an older version's run) are refused as well
    legacy = os.path.join(str(tiny.tmp), "saved", "tiny", "seed0", "auto_attention", "legacy")
    os.makedirs(legacy)
    open(os.path.join(legacy, "summary.json"), "w").write("{}")
    with pytest.raises(DataError, match="settings are unknown"):
        train(train_args(tiny, "--run_name", "legacy", "--resume"))


def test_a_rerun_leaves_nothing_of_the_old_run(tiny):
    s = train(train_args(tiny, "--epochs", "2", "--run_name", "y", "--test"))
    assert os.path.isfile(os.path.join(s["run_dir"], "test_metrics.json"))
    s2 = train(train_args(tiny, "--epochs", "2", "--run_name", "y"))  # the same settings again, without --test
    assert not os.path.exists(os.path.join(s2["run_dir"], "test_metrics.json"))
    assert not os.path.exists(os.path.join(s2["run_dir"], "test_pred.csv")) and "test_f1" not in s2
    # --resume on the finished run with --test scores it then, once
    s3 = train(train_args(tiny, "--epochs", "2", "--run_name", "y", "--resume", "--test"))
    assert s3["valid_f1"] == s2["valid_f1"] and os.path.isfile(os.path.join(s3["run_dir"], "test_metrics.json"))


def test_config_replays_a_run_and_flags_override_it(tiny, capsys):
    import yaml

    a = train(train_args(tiny, "--epochs", "3", "--model", "moe", "--model_args", "lambda_kl=0.2", "--test"))
    args_yaml = os.path.join(a["run_dir"], "args.yaml")
    doc = yaml.safe_load(open(args_yaml))
    assert doc["config_hash"] == a["config_hash"] and doc["model_args"]["lambda_kl"] == 0.2
    assert doc["model_args"]["lambda_head"] == 0.3  # model-tune.yaml's value, resolved into the run's config
    assert doc["versions"]["project"] and doc["identity"]["epochs"] == 3
    assert train_script.main(["--config", args_yaml, "--save_root", str(tiny.tmp / "replay"), "--quiet"]) == 0
    replay = json.load(open(glob.glob(str(tiny.tmp / "replay" / "tiny" / "seed0" / "moe" / "*" / "summary.json"))[0]))
    assert replay["config_hash"] == a["config_hash"] and replay["valid_f1"] == a["valid_f1"]
    assert replay["best_epoch"] == a["best_epoch"]
    # a flag after --config wins, and makes another run
    assert train_script.main(["--config", args_yaml, "--save_root", str(tiny.tmp / "replay"), "--epochs", "2",
                              "--quiet"]) == 0
    assert len(glob.glob(str(tiny.tmp / "replay" / "tiny" / "seed0" / "moe" / "*"))) == 2
    # the checkpoint carries the config and the versions too
    ckpt = torch.load(os.path.join(a["run_dir"], "best.pth"), map_location="cpu", weights_only=True)
    assert ckpt["config_hash"] == a["config_hash"] and ckpt["config"]["model_args"]["lambda_kl"] == 0.2
    assert ckpt["versions"]["torch"]
    # a user's YAML sits between model-tune.yaml and the flags
    mine = tiny.tmp / "mine.yaml"
    mine.write_text("dataset: tiny\nfeat: [tiny-signal]\nepochs: 1\ndropout: 0.25\nmodel_args: {hidden_dim: 16}\n")
    from engine.config import TrainConfig
    cfg = TrainConfig.from_argv(["--config", str(mine), "--hidden_dim", "8"]).resolved()
    assert cfg.feat == ["tiny-signal"] and cfg.epochs == 1
    assert cfg.model_args["dropout"] == 0.25 and cfg.model_args["hidden_dim"] == 8
    assert cfg.model_args["seq_layers"] == 2  # model-tune.yaml under both


def test_a_data_set_without_a_label_set_is_refused_not_given_mer(tiny, monkeypatch):
    import config
    from engine.config import emo_rule_of

    monkeypatch.setitem(config.DATASETS, "nolabels", {**config.DATASETS["tiny"], "emo_rule": None})
    with pytest.raises(DataError, match="names no label set"):
        emo_rule_of("nolabels")
    with pytest.raises(DataError, match="names no label set"):
        train(train_args(tiny, "--dataset", "nolabels", "--split", str(tiny.tmp / "train_lst" / "tiny" / "seed0.json")))
    assert emo_rule_of("nolabels", "TINY") == "TINY" and emo_rule_of("tiny") == "TINY"
