"""Early stopping (--patience), experiment trackers (--tracker tensorboard|mlflow) and --no_plots on the tiny data set:
where training stops and what it keeps, what a resumed run counts, what the trackers hold (read back from their own
files), and that none of it changes the run folder or the hashes of earlier runs."""

import glob
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import torch

import train as train_script
from conftest import REPO, train_args, train_killed_after
from engine import trainer
from engine.config import IDENTITY_FIELDS, TrainConfig, file_sha1
from engine.tracking import NullTracker
from engine.trainer import patience_met, train

CURVES = ["epoch", "train_loss", "valid_loss", "valid_acc", "valid_f1"]


def fast_args(tiny, *extra, plots=False):
    """The tiny data set's one informative feature at a high learning rate: validation F1 reaches 1.0 within two
    epochs and the validation loss then stops falling, so a patience of 3 ends the run long before 30 epochs.
    Without curves unless ``plots`` (conftest.train_args)."""
    return train_args(tiny, "--feat", "tiny-signal", "--lr", "1e-2", "--threads", "1", *extra, plots=plots)


def run_folder(tiny, name):
    return os.path.join(str(tiny.tmp), "saved", "tiny", "seed0", "auto_attention", name)


def curves(run):
    return pd.read_csv(os.path.join(run, "metrics.csv"))[CURVES]


# ------------------------------------------------------------------------------------------- early stopping
def test_patience_stops_training_and_keeps_the_best_epoch(tiny, capsys):
    s = train(fast_args(tiny, "--epochs", "30", "--patience", "3", "--run_name", "p3", "--no_plots"))
    run = s["run_dir"]
    m = pd.read_csv(os.path.join(run, "metrics.csv"))
    best_row = m.loc[m["epoch"] == s["best_epoch"]].iloc[0]
    assert s["stopped_early"] is True and s["epochs_run"] == len(m) == s["best_epoch"] + 3 < 30
    assert m["valid_f1"].max() == 1.0 and best_row["valid_f1"] == pytest.approx(s["valid_f1"])
    # the best epoch is the last one the rule of best.pth picked: no later epoch beats it
    later = m[m["epoch"] > s["best_epoch"]]
    assert (later["valid_f1"] <= s["valid_f1"]).all()
    assert not ((later["valid_f1"] == s["valid_f1"]) & (later["valid_loss"] < best_row["valid_loss"])).any()
    ckpt = torch.load(os.path.join(run, "best.pth"), map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == s["best_epoch"] and ckpt["valid_f1"] == pytest.approx(s["valid_f1"])
    assert ckpt["config"]["patience"] == 3
    valid_pred = pd.read_csv(os.path.join(run, "valid_pred.csv"))
    assert (valid_pred["checkpoint"] == ckpt["checkpoint_id"]).all()
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["stopped_early"] is True and summary["epochs_run"] == len(m)
    assert not os.path.exists(os.path.join(run, "last.pth"))
    out = capsys.readouterr().out
    assert f"BEST: epoch:{s['best_epoch']}, " in out
    log = open(os.path.join(run, "train.log")).read()
    assert (f"early stop after epoch {len(m)}: no better validation F1 for 3 epochs; best epoch {s['best_epoch']}"
            in log)
    # --config <run>/args.yaml replays it: the same settings, the same curves, the same stop
    assert train_script.main(["--config", os.path.join(run, "args.yaml"), "--save_root", str(tiny.tmp / "replay"),
                              "--run_name", "replay", "--quiet"]) == 0
    replay = glob.glob(str(tiny.tmp / "replay" / "tiny" / "seed0" / "auto_attention" / "replay"))[0]
    pd.testing.assert_frame_equal(curves(replay), curves(run))
    again = json.load(open(os.path.join(replay, "summary.json")))
    assert again["config_hash"] == s["config_hash"] and again["stopped_early"] is True
    # without --patience the same run trains all its epochs and reports its own best
    full = train(fast_args(tiny, "--epochs", "12", "--run_name", "full", "--no_plots"))
    assert full["epochs_run"] == 12 and full["stopped_early"] is False
    pd.testing.assert_frame_equal(curves(full["run_dir"]).iloc[:len(m)], curves(run))


def test_patience_is_part_of_the_identity_only_when_set(tiny):
    base = fast_args(tiny, plots=True).resolved()
    old_keys = set(IDENTITY_FIELDS) | {"split_sha1", "model_pretrain_sha1", "dialogue_csv_sha1"}
    assert base.patience is None and set(base.identity()) == old_keys
    # an args.yaml written before the field existed (no patience, tracker or plots key) gives the same hash
    older = {k: v for k, v in base.to_dict().items() if k not in ("patience", "tracker", "plots")}
    assert TrainConfig.from_dict(older).resolved().config_hash() == base.config_hash()
    # the defaults hash as they did before the field existed: the old rule, rebuilt by hand
    default = TrainConfig(dataset="tiny").resolved()
    old = {k: getattr(default, k) for k in IDENTITY_FIELDS}
    old.update(split_sha1=file_sha1(default.split_path(), "split list"), model_pretrain_sha1=None,
               dialogue_csv_sha1=[])
    old = json.loads(json.dumps(old, sort_keys=True, default=str))
    assert default.config_hash() == hashlib.sha1(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()
    patient = fast_args(tiny, "--patience", "3").resolved()
    assert patient.identity() == {**base.identity(), "patience": 3}
    assert patient.config_hash() != base.config_hash() and patient.default_run_name() != base.default_run_name()
    # where it runs is not what it computes: neither the tracker nor the plots enter the identity
    other = fast_args(tiny, "--tracker", "tensorboard", "--no_plots").resolved()
    assert (other.tracker, other.plots) == ("tensorboard", False)
    assert other.config_hash() == base.config_hash() and other.default_run_name() == base.default_run_name()
    assert fast_args(tiny, "--tracker", "none").resolved().tracker is None


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "three"])
def test_a_bad_patience_is_refused_in_one_line_before_a_run_folder_is_written(tiny, capsys, value):
    root = tiny.tmp / "refused"
    argv = ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "2", "--save_root", str(root), "--quiet",
            "--threads", "1", "--patience", value]
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --patience ") and "no early stopping" in err
    assert ("is not a whole number" if value in ("1.5", "three") else "must be at least 1") in err
    assert not root.exists()  # refused with the config, before a run folder or its lock was made


def test_a_bad_tracker_and_a_missing_tracker_package_are_refused_in_one_line(tiny, capsys, monkeypatch):
    root = tiny.tmp / "refused"
    argv = ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "2", "--save_root", str(root), "--quiet",
            "--threads", "1"]
    assert train_script.main(argv + ["--tracker", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --tracker 'wandb': use tensorboard or mlflow, or none (no tracker)"
    for name, package in (("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")):
        monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
        assert train_script.main(argv + ["--tracker", name]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--tracker {name} needs the" in err and "pip install" in err
    assert not root.exists() or not any(root.rglob("args.yaml"))


def test_the_stop_rule_is_read_from_the_history():
    def rows(*pairs):
        return [{"epoch": i + 1, "valid_f1": f, "valid_loss": loss} for i, (f, loss) in enumerate(pairs)]

    assert not patience_met([], 2) and not patience_met(rows((0.5, 1.0), (0.4, 1.0), (0.4, 1.0)), None)
    assert patience_met(rows((0.5, 1.0), (0.4, 1.0), (0.5, 1.0)), 2)  # an equal F1 at an equal loss is no better
    assert not patience_met(rows((0.5, 1.0), (0.4, 1.0), (0.5, 0.9)), 2)  # equal F1, lower loss: a new best
    assert not patience_met(rows((0.5, 1.0), (0.6, 2.0), (0.6, 2.0)), 2)
    assert patience_met(rows((0.5, 1.0), (0.6, 2.0), (0.6, 2.0), (0.1, 0.1)), 2)


def test_a_resumed_run_counts_its_patience_from_the_history(tiny, monkeypatch):
    flags = ("--epochs", "30", "--patience", "3", "--no_plots")
    whole = train(fast_args(tiny, *flags, "--run_name", "whole"))
    n, best = whole["epochs_run"], whole["best_epoch"]
    assert whole["stopped_early"] and n == best + 3
    # killed with one epoch after the best one done: the resumed run trains the two still missing, no more
    train_killed_after(tiny, monkeypatch, best + 1, "--feat", "tiny-signal", "--lr", "1e-2", "--threads", "1",
                       *flags, "--run_name", "cut")
    cut = run_folder(tiny, "cut")
    assert os.path.isfile(os.path.join(cut, "last.pth")) and len(curves(cut)) == best + 1
    resumed = train(fast_args(tiny, *flags, "--run_name", "cut", "--resume"))
    assert resumed["epochs_run"] == n and resumed["best_epoch"] == best and resumed["stopped_early"]
    pd.testing.assert_frame_equal(curves(cut), curves(whole["run_dir"]))

    # killed after the epoch that met the rule was saved (before last.pth was removed): a resume trains nothing
    class DyingTracker(NullTracker):
        closed = False

        def log_epoch(self, row):
            if row["epoch"] == n:
                raise KeyboardInterrupt

        def close(self):
            DyingTracker.closed = True

    real_tracker = trainer.make_tracker
    monkeypatch.setattr(trainer, "make_tracker", lambda name: DyingTracker())
    with pytest.raises(KeyboardInterrupt):
        train(fast_args(tiny, *flags, "--run_name", "late"))
    monkeypatch.setattr(trainer, "make_tracker", real_tracker)
    assert DyingTracker.closed  # the tracker is closed when training raises
    late = run_folder(tiny, "late")
    assert os.path.isfile(os.path.join(late, "last.pth")) and len(curves(late)) == n
    epochs_trained = []
    real = trainer.train_epoch
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: epochs_trained.append(1) or real(*a, **k))
    again = train(fast_args(tiny, *flags, "--run_name", "late", "--resume"))
    assert epochs_trained == [] and again["epochs_run"] == n and again["stopped_early"] and again["best_epoch"] == best
    assert not os.path.exists(os.path.join(late, "last.pth"))
    pd.testing.assert_frame_equal(curves(late), curves(whole["run_dir"]))


# ------------------------------------------------------------------------------------------- trackers
def test_tensorboard_records_the_settings_and_the_curves_of_metrics_csv(tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    s = train(fast_args(tiny, "--epochs", "3", "--tracker", "tensorboard", "--test", "--run_name", "tb", plots=True))
    run = s["run_dir"]
    for f in ("args.yaml", "metrics.csv", "best.pth", "valid_pred.csv", "loss.png", "metrics.png", "train.log",
              "summary.json", "test_pred.csv", "test_metrics.json", "test_pred_confusion.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    m = pd.read_csv(os.path.join(run, "metrics.csv"))
    ea = EventAccumulator(os.path.join(run, "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    for key in ("train_loss", "valid_loss", "valid_acc", "valid_f1", "lr", "samples_per_s"):
        events = ea.Scalars(key)
        assert [e.step for e in events] == m["epoch"].tolist(), key
        assert [e.value for e in events] == pytest.approx(m[key].tolist(), rel=1e-5, abs=1e-6), key
    final = {key: ea.Scalars(key)[-1].value for key in ("best_valid_f1", "best_valid_acc", "best_valid_loss",
                                                        "best_epoch", "epochs_run", "test_f1", "test_acc")}
    assert final == pytest.approx({"best_valid_f1": s["valid_f1"], "best_valid_acc": s["valid_acc"],
                                   "best_valid_loss": s["valid_loss"], "best_epoch": s["best_epoch"],
                                   "epochs_run": 3, "test_f1": s["test_f1"], "test_acc": s["test_acc"]},
                                  rel=1e-5, abs=1e-6)
    content = ea.PluginTagToContent("hparams")
    start = [plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info for v in content.values()
             if plugin_data_pb2.HParamsPluginData.FromString(v).HasField("session_start_info")][0]
    hp = start.hparams
    assert hp["lr"].number_value == pytest.approx(1e-2) and hp["epochs"].number_value == 3
    assert hp["feat"].string_value == "tiny-signal" and hp["dataset"].string_value == "tiny"
    assert hp["model_args.hidden_dim"].number_value == 32 and hp["model_args.seq_layers"].number_value == 2
    assert hp["config_hash"].string_value == s["config_hash"] and hp["tracker"].string_value == "tensorboard"
    # the tracker adds tb/ and changes nothing else
    plain = train(fast_args(tiny, "--epochs", "3", "--test", "--run_name", "plain", plots=True))
    assert plain["config_hash"] == s["config_hash"] and plain["test_f1"] == s["test_f1"]
    pd.testing.assert_frame_equal(curves(plain["run_dir"]), curves(run))
    assert set(os.listdir(run)) - set(os.listdir(plain["run_dir"])) == {"tb"}


def test_mlflow_records_params_per_epoch_metrics_and_final_metrics_and_continues_a_resumed_run(tiny, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: a file store under --save_root
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # recorded, so that the variable the tracker sets is undone
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    flags = ("--epochs", "4", "--tracker", "mlflow", "--test", "--no_plots", "--run_name", "ml")
    train_killed_after(tiny, monkeypatch, 2, "--feat", "tiny-signal", "--lr", "1e-2", "--threads", "1", *flags)
    uri = pathlib.Path(tiny.tmp, "saved", "mlruns").as_uri()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    [cut] = client.search_runs([experiment.experiment_id])
    assert cut.info.status == "FAILED"  # closed, and marked, when training raised
    s = train(fast_args(tiny, *flags, "--resume"))
    [run] = client.search_runs([experiment.experiment_id])  # the resumed run goes on in the same MLflow run
    assert run.info.run_id == cut.info.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "ml" and mlflow.__version__
    assert run.data.tags["config_hash"] == s["config_hash"] and run.data.tags["run_dir"] == s["run_dir"]
    params = run.data.params
    assert params["lr"] == "0.01" and params["epochs"] == "4" and params["feat"] == "tiny-signal"
    assert params["model_args.hidden_dim"] == "32" and params["config_hash"] == s["config_hash"]
    m = pd.read_csv(os.path.join(s["run_dir"], "metrics.csv"))
    for key in ("train_loss", "valid_loss", "valid_acc", "valid_f1", "lr", "samples_per_s"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda x: x.step)
        assert [h.step for h in history] == [1, 2, 3, 4], key
        assert [h.value for h in history] == pytest.approx(m[key].tolist(), rel=1e-5, abs=1e-6), key
    final = run.data.metrics
    assert final["best_valid_f1"] == pytest.approx(s["valid_f1"]) and final["best_epoch"] == s["best_epoch"]
    assert final["best_valid_loss"] == pytest.approx(s["valid_loss"], abs=1e-9)
    assert final["test_f1"] == pytest.approx(s["test_f1"]) and final["test_acc"] == pytest.approx(s["test_acc"])
    assert final["epochs_run"] == 4 and final["stopped_early"] == 0


# ------------------------------------------------------------------------------------------- --no_plots
def test_no_plots_writes_everything_but_the_pictures(tiny):
    s = train(fast_args(tiny, "--epochs", "2", "--no_plots", "--test", "--run_name", "np"))
    files = set(os.listdir(s["run_dir"])) - {".lock"}
    assert files == {"args.yaml", "metrics.csv", "best.pth", "valid_pred.csv", "train.log", "summary.json",
                     "test_pred.csv", "test_metrics.json"}
    assert s["test_f1"] > 0.9 and s["epochs_run"] == 2 and s["stopped_early"] is False


def test_importing_the_trainer_loads_neither_matplotlib_nor_a_tracker():
    code = ("import engine.trainer, sys; "
            "print('matplotlib' in sys.modules, 'tensorboard' in sys.modules, 'mlflow' in sys.modules, "
            "'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False", "False"]  # scikit-learn: 2 s a process start
