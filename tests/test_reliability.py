"""Nothing stale, nothing mixed, nothing leaked: run folders under concurrent and rejected runs, results tied to the
checkpoint they came from, inputs refused before anything is written, and sample weights that weigh."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

import test as test_script
from common.errors import DataError
from common.locks import FileLock, LockHeld
from conftest import CLASSES, REPO as ROOT, train_args, train_killed_after
from engine.results import check_current
from engine.trainer import train


def _run_dir(tiny, name):
    return os.path.join(str(tiny.tmp), "saved", "tiny", "seed0", "auto_attention", name)


def _snapshot(run):
    """Every file of a run folder (the lock file aside) with its content."""
    return {f: open(os.path.join(run, f), "rb").read() for f in sorted(os.listdir(run)) if f != ".lock"}


def _hold_lock(path):
    """A separate process holding ``path``'s lock until killed (as a second train.py would)."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from common.locks import FileLock
        FileLock({path!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------------------------------- 1. two runs, one folder
def test_a_second_run_on_a_busy_run_folder_is_refused_and_a_killed_holder_frees_it(tiny):
    run = _run_dir(tiny, "busy")
    holder = _hold_lock(os.path.join(run, ".lock"))
    try:
        with pytest.raises(LockHeld, match=rf"run folder '.*busy' is in use by pid {holder.pid} .*another --run_name"):
            train(train_args(tiny, "--epochs", "2", "--run_name", "busy", "--lr", "1e-3"))
        assert os.listdir(run) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    s = train(train_args(tiny, "--epochs", "2", "--run_name", "busy"))  # the OS released the killed holder's lock
    assert os.path.isfile(os.path.join(s["run_dir"], "summary.json"))


def test_two_train_processes_on_one_run_name_never_mix(tiny):
    """Two real train.py processes with one --run_name and other --lr: one trains, the other is refused, and
    every file of the folder describes the run that trained."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        import config, conftest, train as t
        root = {str(tiny.root)!r}
        config.CACHE_ROOT = {str(tiny.tmp / 'cache')!r}
        config.PATH_TO_TRAIN_LST = {str(tiny.tmp / 'train_lst')!r}
        config.EMO_RULE["TINY"] = conftest.CLASSES
        config.FEAT_TEXT_DICT["tiny-signal"] = [8, root + "/tiny-signal"]
        config.FEAT_AUDIO_DICT["tiny-noise"] = [5, root + "/tiny-noise"]
        config.DATASETS["tiny"] = {{"emo_rule": "TINY", "label_csv": {str(tiny.tmp / 'labels.csv')!r}}}
        import engine.trainer as tr
        real = tr.fit
        def slow_fit(*a, **k):
            time.sleep(3)  # hold the folder long enough for the other process to arrive
            return real(*a, **k)
        tr.fit = slow_fit
        sys.exit(t.main(["--dataset", "tiny", "--feat", "tiny-signal,tiny-noise", "--epochs", "3", "--lr", sys.argv[1],
                         "--run_name", "same", "--save_root", {str(tiny.tmp / 'saved')!r}, "--quiet",
                         "--device", "cpu", "--hidden_dim", "16"]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, lr], stderr=subprocess.PIPE, text=True, env=env)
             for lr in ("1e-3", "3e-3")]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(r for r, _ in results)
    assert codes == [0, 2], results
    refused = next(err for r, err in results if r == 2)
    assert "is in use by pid" in refused
    run = _run_dir(tiny, "same")
    import yaml
    args = yaml.safe_load(open(os.path.join(run, "args.yaml")))
    ckpt = torch.load(os.path.join(run, "best.pth"), map_location="cpu", weights_only=True)
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert ckpt["config"]["lr"] == args["lr"] and ckpt["config_hash"] == args["config_hash"] == summary["config_hash"]


# ------------------------------------------------------------------------------ 2. a rejected rerun damages nothing
@pytest.mark.parametrize("bad", [("--lr", "-1"), ("--epochs", "0"), ("--batch_size", "0"), ("--hidden_dim", "0"),
                                 ("--feat", "tiny-signal,tiny-signal"), ("--feat", "['tiny-signal',"),
                                 ("--dropout", "1.5")])
def test_a_rejected_rerun_leaves_a_finished_run_untouched(tiny, bad):
    train(train_args(tiny, "--epochs", "2", "--run_name", "done", "--test"))
    run = _run_dir(tiny, "done")
    before = _snapshot(run)
    with pytest.raises(DataError, match=rf"--{bad[0][2:]} .*(out of range|not a list|more than once)"):
        train(train_args(tiny, "--epochs", "2", "--run_name", "done", *bad))
    assert _snapshot(run) == before


def test_a_rerun_that_fails_on_its_data_leaves_the_finished_run_untouched(tiny):
    train(train_args(tiny, "--epochs", "2", "--run_name", "done", "--test"))
    run = _run_dir(tiny, "done")
    before = _snapshot(run)
    np.save(os.path.join(tiny.root, "tiny-noise", tiny.names[3] + ".npy"), np.full(5, np.nan, np.float32))
    with pytest.raises(DataError, match="NaN or Inf"):  # the same settings again: a restart, stopped by the data
        train(train_args(tiny, "--epochs", "2", "--run_name", "done"))
    assert _snapshot(run) == before


# --------------------------------------------------------------------------- 3. stale and unfinished results
def test_results_carry_their_checkpoint_and_stale_ones_are_refused(tiny, capsys):
    s = train(train_args(tiny, "--epochs", "2", "--run_name", "r", "--test"))
    run = s["run_dir"]
    ckpt = torch.load(os.path.join(run, "best.pth"), map_location="cpu", weights_only=True)
    ids = {pd.read_csv(os.path.join(run, f))["checkpoint"].unique().tolist()[0] for f in ("valid_pred.csv",
                                                                                          "test_pred.csv")}
    assert ids == {ckpt["checkpoint_id"]} == {s["checkpoint"]}
    assert json.load(open(os.path.join(run, "test_metrics.json")))["checkpoint"] == ckpt["checkpoint_id"]
    for f in ("valid_pred.csv", "test_pred.csv", "test_metrics.json"):
        check_current(run, os.path.join(run, f))
    old = open(os.path.join(run, "test_pred.csv")).read()
    train(train_args(tiny, "--epochs", "2", "--run_name", "r"))  # retrained, without --test
    assert not os.path.exists(os.path.join(run, "test_pred.csv"))
    with open(os.path.join(run, "test_pred.csv"), "w") as f:  # the old file restored (a backup, rsync, ...)
        f.write(old)
    with pytest.raises(DataError, match=r"test_pred.csv' came from checkpoint .* now .*stale"):
        check_current(run, os.path.join(run, "test_pred.csv"))
    import ensemble  # the ensemble does not vote with it, whether given the run folder or the file
    for member in (run, os.path.join(run, "test_pred.csv")):
        assert ensemble.main(["--preds", member, "--emo_rule", "TINY", "--out", str(tiny.tmp / "sub.csv")]) == 2
        assert "is stale; rewrite it with test.py" in capsys.readouterr().err
    assert not os.path.exists(tiny.tmp / "sub.csv")
    legacy = pd.read_csv(os.path.join(run, "test_pred.csv")).drop(columns="checkpoint")
    legacy.to_csv(os.path.join(run, "test_pred.csv"), index=False)
    with pytest.raises(DataError, match="records no checkpoint"):
        check_current(run, os.path.join(run, "test_pred.csv"))
    # test.py's own outputs carry the id too
    out = tiny.tmp / "p.csv"
    assert test_script.main(["--run", run, "--names", str(tiny.tmp / "test.csv"), "--out", str(out),
                             "--device", "cpu"]) == 0
    new_id = torch.load(os.path.join(run, "best.pth"), map_location="cpu", weights_only=True)["checkpoint_id"]
    assert new_id != ckpt["checkpoint_id"] and set(pd.read_csv(out)["checkpoint"]) == {new_id}


def test_test_script_refuses_an_unfinished_run_unless_asked(tiny, monkeypatch, capsys):
    train_killed_after(tiny, monkeypatch, 1, "--epochs", "40", "--run_name", "cut")
    run = _run_dir(tiny, "cut")
    args = ["--run", run, "--names", str(tiny.tmp / "test.csv"), "--out", str(tiny.tmp / "p.csv"), "--device", "cpu"]
    assert test_script.main(args) == 2
    err = capsys.readouterr().err
    assert "is not a finished run (stopped after epoch 1" in err and "--allow_unfinished" in err
    assert not os.path.exists(tiny.tmp / "p.csv")
    assert test_script.main(args + ["--allow_unfinished"]) == 0
    assert len(pd.read_csv(tiny.tmp / "p.csv")) == 30


# ---------------------------------------------------------------------------- 4. resume with other settings
@pytest.mark.parametrize("other", [("--lr", "1e-2", "lr: 0.003 there, 0.01 now"),
                                   ("--feat", "tiny-signal", "feat: \\['tiny-signal', 'tiny-noise'\\] there")])
def test_resume_with_other_settings_is_refused_before_anything_is_written(tiny, monkeypatch, other):
    train_killed_after(tiny, monkeypatch, 1, "--epochs", "4", "--run_name", "half")
    run = _run_dir(tiny, "half")
    before = _snapshot(run)
    with pytest.raises(DataError, match=other[2]):
        train(train_args(tiny, "--epochs", "4", "--run_name", "half", "--resume", other[0], other[1]))
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------------- 8. inputs refused
def _split(tiny, mutate):
    path = os.path.join(str(tiny.tmp), "train_lst", "tiny", "seed0.json")
    doc = json.load(open(path))
    mutate(doc)
    out = str(tiny.tmp / "bad_split.json")
    json.dump(doc, open(out, "w"))
    return out


def _dup(doc):
    doc["train_info"]["names"][1] = doc["train_info"]["names"][0]


def _weights(values):
    def mutate(doc):
        n = len(doc["train_info"]["names"])
        doc["train_info"]["weights"] = values(n)
    return mutate


def _test_name(part):
    def mutate(doc):
        doc[part]["names"][0] = "s0125"  # a name of the test list (s0120..s0149)
    return mutate


@pytest.mark.parametrize("mutate,message", [
    (_test_name("train_info"), r"1 names of the test list .* in train_info: s0125; remove them"),
    (_test_name("valid_info"), r"in valid_info: s0125"),
    (_dup, r"'train_info' in .* lists 1 names more than once"),
    (_weights(lambda n: [1.0] * (n - 1)), r"has \d+ weights for \d+ names"),
    (_weights(lambda n: [-0.5] + [1.0] * (n - 1)), r"not finite numbers >= 0 \(#0: -0.5\)"),
    (_weights(lambda n: ["high"] + [1.0] * (n - 1)), r"not finite numbers >= 0 \(#0: 'high'\)"),
    (_weights(lambda n: [0.0] * n), r"weights that are all 0"),
])
def test_bad_split_lists_are_refused_before_a_run_folder_is_made(tiny, mutate, message):
    split = _split(tiny, mutate)
    with pytest.raises(DataError, match=message):
        train(train_args(tiny, "--epochs", "1", "--split", split, "--run_name", "bad"))
    assert not os.path.exists(_run_dir(tiny, "bad"))


@pytest.mark.parametrize("content,message", [
    (b"", r"is empty: it needs a header row"),
    (b"name,discrete\n", r"has a header but no rows"),
    ("name,discrete\ns1,\xe9\n".encode("latin-1"), r"is not UTF-8 text .* save it as UTF-8"),
    (b"name,discrete\ns1,happy\ns2,\n", r"1 rows with an empty label: s2"),
    (b"name,discrete\n,happy\n", r"1 rows without a name"),
])
def test_bad_label_tables_get_one_clear_line(tmp_path, content, message):
    from dataloader.files import read_label_csv

    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_label_csv(str(path), CLASSES)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_label_table_with_a_bom_reads_its_first_column(tmp_path):
    from dataloader.files import read_label_csv

    path = tmp_path / "labels.csv"
    path.write_bytes("\ufeffname,discrete\ns1,happy\n".encode("utf-8"))
    assert read_label_csv(str(path), ["happy"])["name"].tolist() == ["s1"]


def test_build_splits_reports_a_bad_label_table_in_one_line(tmp_path, capsys):
    import build_splits

    (tmp_path / "l.csv").write_bytes(b"name,discrete\n")
    assert build_splits.main(["--label_csv", str(tmp_path / "l.csv"), "--emo_rule", "MER",
                              "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: label table") and "no rows" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


# ------------------------------------------------------------------------------- 9. sample weights that weigh
def test_a_weight_means_the_same_in_every_batch():
    from models import create_model

    torch.manual_seed(0)
    model = create_model("auto_attention", [6, 4], [False, False], 3, hidden_dim=8)
    feats = [torch.randn(10, 6), torch.randn(10, 4)]
    labels = torch.randint(0, 3, (10,))
    model.eval()  # no dropout: the same forward pass each time
    out = model(feats, [None, None])
    out = {k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()}
    full = model.loss(out, labels, torch.ones(10))
    half = model.loss(out, labels, torch.full((10,), 0.5))
    assert float(half) == pytest.approx(0.5 * float(full), rel=1e-6)  # an all-pseudo batch of weight 0.5
    assert float(full) == pytest.approx(float(model.loss(out, labels)), rel=1e-6)  # weight 1 = no weights
    grads = []
    for w in (1.0, 0.5):
        model.zero_grad()
        model.loss(model(feats, [None, None]), labels, torch.full((10,), w)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[1], 0.5 * grads[0], atol=1e-7)
    # in a mixed batch, a sample's share is its weight over the batch size, as in any other batch
    w = torch.tensor([1.0] * 5 + [0.5] * 5)
    per = torch.nn.functional.cross_entropy(out["logits"], labels, reduction="none")
    assert float(model.loss(out, labels, w)) == pytest.approx(float((per * w).sum() / 10), rel=1e-6)


def test_file_lock_waits_for_its_holder_and_names_it(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = _hold_lock(path)
    try:
        with pytest.raises(LockHeld, match=f"thing is in use by pid {holder.pid}"):
            FileLock(path, what="thing").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t0 = time.time()
    with FileLock(path, wait=True):
        assert time.time() - t0 < 5
