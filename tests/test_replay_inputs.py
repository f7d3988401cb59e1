"""A ``--config <run>/args.yaml`` replay trains on the inputs its run was made with: a split list, initial
checkpoint or dialogue table whose content no longer matches the hash the run recorded is refused in one line
naming the file, unless ``--allow_changed_inputs`` (then one warning in train.log); an input a flag chooses anew is
not compared."""

import glob
import os

import pandas as pd
import torch
import yaml

import train as train_script
from conftest import train_args
from dataloader.files import read_split_json, write_split_json
from engine.trainer import train

FAST = ("--epochs", "2")


def _run(tiny, *extra):
    """A finished tiny run; returns its summary and its args.yaml."""
    summary = train(train_args(tiny, *FAST, *extra))
    return summary, os.path.join(summary["run_dir"], "args.yaml")


def _rewrite_split(path):
    """Swap the first training name with the first validation name: the same names, another split."""
    doc = read_split_json(path)
    tr, va = doc["train_info"], doc["valid_info"]
    for key in ("names", "emos", "vals"):
        tr[key][0], va[key][0] = va[key][0], tr[key][0]
    write_split_json(path, tr, va)


def _replay(args_yaml, save_root, *extra):
    return train_script.main(["--config", args_yaml, "--save_root", str(save_root), "--quiet", *extra])


def _runs(save_root):
    return glob.glob(os.path.join(str(save_root), "tiny", "seed0", "*", "*"))


def test_replay_refuses_a_changed_split_list_naming_it(tiny, capsys):
    _, args_yaml = _run(tiny)
    split = yaml.safe_load(open(args_yaml))["split"]
    _rewrite_split(split)
    capsys.readouterr()
    assert _replay(args_yaml, tiny.tmp / "other") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"split list '{split}' changed since the run of '{args_yaml}' was made (sha1 " in err[0]
    assert "restore it, or give --allow_changed_inputs to train on it as it is now" in err[0]
    assert not os.path.exists(tiny.tmp / "other") or not _runs(tiny.tmp / "other")


def test_replay_with_allow_changed_inputs_trains_and_warns_in_train_log(tiny):
    first, args_yaml = _run(tiny)
    split = yaml.safe_load(open(args_yaml))["split"]
    _rewrite_split(split)
    assert _replay(args_yaml, tiny.tmp / "other", "--allow_changed_inputs") == 0
    (run,) = _runs(tiny.tmp / "other")
    log = open(os.path.join(run, "train.log")).read()
    warning = [line for line in log.splitlines() if "WARNING" in line and "--allow_changed_inputs" in line]
    assert len(warning) == 1 and f"split list '{split}'" in warning[0]
    doc = yaml.safe_load(open(os.path.join(run, "args.yaml")))
    assert "allow_changed_inputs" not in doc and "recorded_inputs" not in doc  # a replay of it does not inherit it
    assert doc["config_hash"] != first["config_hash"]  # the new list's hash: another run
    # a replay of the new run, on its own (unchanged) inputs, trains without the flag
    assert _replay(os.path.join(run, "args.yaml"), tiny.tmp / "third") == 0


def test_unchanged_replay_trains_to_the_same_metrics(tiny):
    first, args_yaml = _run(tiny)
    assert _replay(args_yaml, tiny.tmp / "other") == 0
    (run,) = _runs(tiny.tmp / "other")
    timing = ["seconds", "samples_per_s"]  # the wall clock, not the result
    replayed, original = (pd.read_csv(os.path.join(d, "metrics.csv")) for d in (run, first["run_dir"]))
    pd.testing.assert_frame_equal(replayed.drop(columns=timing, errors="ignore"),
                                  original.drop(columns=timing, errors="ignore"))
    assert "--allow_changed_inputs" not in open(os.path.join(run, "train.log")).read()


def test_replay_with_split_given_on_the_command_line_is_not_compared(tiny, capsys):
    _, args_yaml = _run(tiny)
    split = yaml.safe_load(open(args_yaml))["split"]
    _rewrite_split(split)
    # the same (rewritten) list, or another one, named on the command line: the user's choice
    assert _replay(args_yaml, tiny.tmp / "other", "--split", split) == 0
    other = os.path.join(os.path.dirname(split), "seed1.json")
    assert _replay(args_yaml, tiny.tmp / "other", "--split", other) == 0
    assert len(_runs(tiny.tmp / "other")) == 2
    # --seed alone keeps the replay on the list its run recorded (args.yaml names it): still compared
    capsys.readouterr()
    assert _replay(args_yaml, tiny.tmp / "other", "--seed", "1") == 2
    assert f"split list '{split}' changed since" in capsys.readouterr().err


def test_replay_refuses_a_changed_model_pretrain_naming_it(tiny, capsys):
    stage1, _ = _run(tiny)
    ckpt = torch.load(os.path.join(stage1["run_dir"], "best.pth"), map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    pre = str(tiny.tmp / "pre.pth")
    torch.save(state, pre)
    _, args_yaml = _run(tiny, "--model_pretrain", pre, "--run_name", "stage2")
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, pre)
    capsys.readouterr()
    assert _replay(args_yaml, tiny.tmp / "other") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--model_pretrain '{pre}' changed since the run of" in err[0], err
    assert not os.path.exists(tiny.tmp / "other") or not _runs(tiny.tmp / "other")
    # another checkpoint given on the command line is the user's choice
    assert _replay(args_yaml, tiny.tmp / "other", "--model_pretrain", pre) == 0
