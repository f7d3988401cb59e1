"""train.py and test.py end to end on the tiny data set with a known answer."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import test as test_script
import train as train_script
from conftest import CLASSES, train_args
from toolkit import trainer
from toolkit.trainer import evaluate_run, train


def test_training_learns_the_known_answer_and_writes_the_run_folder(tiny, capsys):
    summary = train(train_args(tiny, "--test"))
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
    real = trainer.emotion_metrics
    calls = {"n": 0}

    def crash_in_third_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "emotion_metrics", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(train_args(tiny, "--run_name", "cut", "--epochs", "4"))
    run = os.path.join(os.path.dirname(full["run_dir"]), "cut")
    assert os.path.isfile(os.path.join(run, "last.pth")) and not os.path.exists(os.path.join(run, "summary.json"))
    assert len(pd.read_csv(os.path.join(run, "metrics.csv"))) == 2  # finished epochs are on disk
    monkeypatch.setattr(trainer, "emotion_metrics", real)
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
    from toolkit.files import read_split_json
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
    log = open(os.path.join(root, "all", "tiny", "seed0", "moe", "run", "train.log")).read()
    assert "already complete" in log and "epoch 6/6" in log  # the first run's log is kept


def test_test_script_batch_mode_writes_every_run_and_expert_head(tiny, capsys):
    runs = [train(train_args(tiny, "--model", "moe", "--seed", str(seed)))["run_dir"] for seed in (0, 1)]
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
