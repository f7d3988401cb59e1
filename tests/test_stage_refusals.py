"""Refused before the first write, and never a traceback (issue 23): a semi.py rerun with other settings, a checkpoint
that cannot be read, a MER2025 rerun that writes fewer tables, and an ablation driver killed with its runs going."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import config
from conftest import CLASSES, REPO, load_script, train_args, train_killed_after
from test_grid import tiny_children  # noqa: F401  (the fixture: the tiny data set registered for child processes)
from test_mer2025 import FEATS, make_release

SEMI_TRAIN_ARGS = ["--feat", "tiny-signal,tiny-noise", "--epochs", "4", "--lr", "3e-3", "--batch_size", "16",
                   "--hidden_dim", "32", "--dropout", "0.1", "--num_workers", "0", "--no_plots"]


def _snapshot(folder):
    """Every file under ``folder`` with its content and modification time."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


def _error_line(err, alone=False):
    """The one ``error:`` line of a refused command, its last line, with no traceback (``alone``: and nothing
    logged before it)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err
    assert not alone or len(lines) == 1, err
    return errors[0]


# ------------------------------------------------------------------------------------------------- semi.py


def _semi_inputs(env):
    """A pool (the tiny seed-0 training list's last 60 names, labelled list of the first 36) and a teacher that is
    right on every pool name, with confidence 5 on every third name and 4 on the others: ``--min_conf 4`` takes
    the whole pool, ``--min_conf 5`` a third of it."""
    from dataloader.files import read_split_json, write_split_json

    base = read_split_json(os.path.join(str(env.tmp), "train_lst", "tiny", "seed0.json"), CLASSES)
    tr = base["train_info"]
    split = str(env.tmp / "labelled.json")
    write_split_json(split, {k: v[:36] for k, v in tr.items()}, base["valid_info"])
    pool, labels = tr["names"][36:], tr["emos"][36:]
    pool_csv = env.tmp / "pool.csv"
    pd.DataFrame({"name": pool}).to_csv(pool_csv, index=False)
    teacher = env.tmp / "teacher.jsonl"
    teacher.write_text("".join(json.dumps({"name": n, "label": lab, "scores": {c: float(c == lab) for c in CLASSES},
                                           "confidence": 5 if i % 3 == 0 else 4, "description": "", "teacher": "t"})
                               + "\n" for i, (n, lab) in enumerate(zip(pool, labels))))
    return split, str(pool_csv), str(teacher), len(pool)


def _semi_argv(split, pool_csv, teacher, out, min_conf):
    return ["--mode", "two_stage", "--strategy", "teacher", "--dataset", "tiny", "--seed", "0", "--split", split,
            "--unlabeled", pool_csv, "--teachers", teacher, "--out", out, "--device", "cpu", "--threads", "1",
            "--min_conf", str(min_conf), "--train_args", " ".join(SEMI_TRAIN_ARGS)]


def _pseudo_in_list(path):
    with open(path) as f:
        doc = json.load(f)
    return sum(s != "labelled" for s in doc["train_info"]["sources"])


def test_case4_semi_rerun_refused_at_stage2_writes_nothing(tiny, capsys, monkeypatch):
    import semi as semi_script
    from pseudo import drivers

    split, pool_csv, teacher, n_pool = _semi_inputs(tiny)
    out = str(tiny.tmp / "semi")
    assert semi_script.main(_semi_argv(split, pool_csv, teacher, out, 4)) == 0
    result = json.load(open(os.path.join(out, "result.json")))
    listed = os.path.join(out, "pseudo_teacher.json")
    assert result["n_pseudo"] == n_pool == _pseudo_in_list(listed)
    before = _snapshot(out)
    capsys.readouterr()
    # other strategy settings: stage 2's folder holds the run of the old pseudo labels; refused before any write
    assert semi_script.main(_semi_argv(split, pool_csv, teacher, out, 5)) == 2
    line = _error_line(capsys.readouterr().err, alone=True)
    assert "stage2_teacher" in line and "min_conf" in line and "--out" in line
    assert _snapshot(out) == before  # pseudo list, its CSV and report, semi.log, result.json: all as they were
    # the same command again is still reused, and result.json describes the list it names
    assert semi_script.main(_semi_argv(split, pool_csv, teacher, out, 4)) == 0
    assert json.load(open(os.path.join(out, "result.json")))["n_pseudo"] == _pseudo_in_list(listed)

    # stage 2 deleted to make room for the new settings, and the rerun dies while stage 2 trains: the list is
    # rewritten, and no result.json is left that describes the old one
    import shutil
    shutil.rmtree(os.path.join(out, "tiny", "seed0", "auto_attention", "stage2_teacher"))
    real = drivers.train_run

    def dies_in_stage2(*a, **k):
        if a[3].startswith("stage2"):
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(drivers, "train_run", dies_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        semi_script.main(_semi_argv(split, pool_csv, teacher, out, 5))
    assert _pseudo_in_list(listed) == n_pool // 3
    assert not os.path.exists(os.path.join(out, "result.json"))
    monkeypatch.setattr(drivers, "train_run", real)
    assert semi_script.main(_semi_argv(split, pool_csv, teacher, out, 5)) == 0
    result = json.load(open(os.path.join(out, "result.json")))
    assert result["n_pseudo"] == _pseudo_in_list(listed) == n_pool // 3


def test_case4_semi_acl_rerun_with_other_parameters_writes_nothing(tiny, capsys):
    import semi as semi_script

    split, pool_csv, teacher, _ = _semi_inputs(tiny)
    out = str(tiny.tmp / "acl")
    argv = ["--mode", "acl", "--dataset", "tiny", "--seed", "0", "--split", split, "--unlabeled", pool_csv,
            "--teachers", teacher, "--out", out, "--device", "cpu", "--threads", "1", "--max_iter", "1",
            "--train_args", " ".join(SEMI_TRAIN_ARGS)]
    assert semi_script.main(argv + ["--theta", "0.9"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert semi_script.main(argv + ["--theta", "0.8"]) == 2
    line = _error_line(capsys.readouterr().err, alone=True)
    assert "acl_state.json" in line and "theta: 0.9 there, 0.8 now" in line
    assert _snapshot(out) == before


def test_case4_semi_low_resource_rerun_with_other_n_writes_nothing(tiny, capsys):
    import semi as semi_script

    _, _, teacher, _ = _semi_inputs(tiny)
    out = str(tiny.tmp / "lowres")
    argv = ["--mode", "two_stage", "--strategy", "none", "--dataset", "tiny", "--seed", "0", "--teachers", teacher,
            "--out", out, "--device", "cpu", "--threads", "1", "--train_args", " ".join(SEMI_TRAIN_ARGS)]
    assert semi_script.main(argv + ["--n_labelled", "15"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    # another N: stage 1 of 15 labelled samples is there; labelled.json and pool_truth.csv are not redrawn
    assert semi_script.main(argv + ["--n_labelled", "20"]) == 2
    line = _error_line(capsys.readouterr().err, alone=True)
    assert "stage1" in line and "split_sha1" in line
    assert _snapshot(out) == before


def test_case4_semi_rerun_with_model_pretrain_in_train_args_is_reused_not_refused(tiny, capsys):
    """Every stage of a run whose --train_args hold --model_pretrain starts from given weights: a rerun of the same
    command is not taken for a change of --stage2_init."""
    import semi as semi_script
    from conftest import train_args as tiny_train_args
    from engine.trainer import train

    pre = train(tiny_train_args(tiny, "--epochs", "2", "--num_workers", "0", "--hidden_dim", "32", "--dropout", "0.1",
                                "--run_name", "pre"))["run_dir"]
    split, pool_csv, teacher, _ = _semi_inputs(tiny)
    out = str(tiny.tmp / "semi_pretrained")
    argv = _semi_argv(split, pool_csv, teacher, out, 4)
    argv[argv.index("--train_args") + 1] += f" --model_pretrain {os.path.join(pre, 'best.pth')}"
    assert semi_script.main(argv) == 0

    def trained():
        return {k: v for k, v in _snapshot(os.path.join(out, "tiny")).items() if k.endswith(("best.pth", "summary.json"))}

    before = trained()
    assert len(before) == 4
    capsys.readouterr()
    assert semi_script.main(argv) == 0, capsys.readouterr().err
    assert trained() == before  # both stages reused, none trained again
    # --stage2_init stage1 instead: other initial weights for stage 2, refused (by the weights' hash, once stage 1
    # is there to hash) before its pseudo-label list is rewritten
    listed = os.path.join(out, "pseudo_teacher.json")
    with open(listed, "rb") as f:
        was = f.read()
    assert semi_script.main(argv + ["--stage2_init", "stage1"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "stage2_teacher" in line and "model_pretrain_sha1" in line
    with open(listed, "rb") as f:
        assert f.read() == was


# ------------------------------------------------------------------------------------------------- checkpoints


def _spoil(path, how):
    import argparse

    import torch

    if how == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    else:  # an object weights_only=True refuses to unpickle
        torch.save({"state_dict": {}, "epoch": 1, "args": argparse.Namespace(lr=1.0)}, path)


@pytest.mark.parametrize("how", ["truncated", "disallowed"])
def test_truncated_checkpoint_is_one_line_for_test_resume_and_model_pretrain(tiny, capsys, monkeypatch, how):
    import shutil

    import test as test_script
    import train as train_script
    from engine.trainer import train

    flags = ["--dataset", "tiny", "--seed", "0", "--feat", "tiny-signal,tiny-noise", "--epochs", "2", "--lr", "3e-3",
             "--batch_size", "16", "--hidden_dim", "32", "--dropout", "0.1", "--save_root", str(tiny.tmp / "saved"),
             "--quiet",
             "--device", "cpu", "--num_workers", "0", "--no_plots"]
    run = train(train_args(tiny, "--epochs", "2", "--num_workers", "0"))["run_dir"]
    # test.py on a run whose best.pth is spoilt (also with --allow_unfinished, which reads it another way)
    pretrain = str(tiny.tmp / "pretrain.pth")
    shutil.copyfile(os.path.join(run, "best.pth"), pretrain)
    _spoil(os.path.join(run, "best.pth"), how)
    for extra in ([], ["--allow_unfinished"]):
        capsys.readouterr()
        assert test_script.main(["--run", run, "--names", str(tiny.tmp / "test.csv"), "--device", "cpu",
                                 "--out", str(tiny.tmp / "p.csv")] + extra) == 2
        line = _error_line(capsys.readouterr().err)
        assert os.path.join(run, "best.pth") in line and "retrain" in line
    # --model_pretrain: refused before a run folder is made
    _spoil(pretrain, how)
    capsys.readouterr()
    assert train_script.main(flags + ["--model_pretrain", pretrain, "--run_name", "from_pretrain"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert pretrain in line and "--model_pretrain" in line
    assert not list((tiny.tmp / "saved").rglob("from_pretrain"))
    # --resume of a killed run whose last.pth is spoilt: the run folder is left as it was
    train_killed_after(tiny, monkeypatch, 1, "--epochs", "3", "--run_name", "killed", "--num_workers", "0")
    killed = os.path.join(str(tiny.tmp), "saved", "tiny", "seed0", "auto_attention", "killed")
    _spoil(os.path.join(killed, "last.pth"), how)
    before = _snapshot(killed)
    capsys.readouterr()
    assert train_script.main(flags + ["--epochs", "3", "--run_name", "killed", "--resume"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert os.path.join(killed, "last.pth") in line and "delete" in line
    after = _snapshot(killed)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


# ------------------------------------------------------------------------------------------------- MER2025


def test_mer2025_rerun_removes_outputs_it_no_longer_writes(tmp_path, monkeypatch, capsys):
    release, feat_root, out = tmp_path / "release", tmp_path / "features", tmp_path / "out"
    make_release(str(release), str(feat_root))
    for feat, (modality, dim) in FEATS.items():
        monkeypatch.setitem(config.MODALITY_DICTS[modality], feat, [dim, str(feat_root / feat)])
    script = load_script("preprocess/mer2025.py")
    argv = ["--release", str(release), "--out", str(out), "--features_root", str(feat_root)]
    assert script.main(argv) == 0
    assert (out / "transcripts.csv").is_file() and (out / "subtitle_chieng.csv").is_file()
    (out / "notes.txt").write_text("mine")  # a file the converter never writes is left alone
    # the release without its subtitle table: the earlier transcripts would be read as this release's
    os.remove(release / "subtitle_chieng.csv")
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert not (out / "transcripts.csv").exists() and not (out / "subtitle_chieng.csv").exists()
    assert "removed" in printed and "transcripts.csv" in printed
    report = json.loads((out / "mer2025_report.json").read_text(encoding="utf-8"))
    assert "transcripts.csv" not in report["written"] and "transcripts.csv" in report["removed"]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted(report["written"] + ["notes.txt"])


# ------------------------------------------------------------------------------------------------- grid


def _train_children(mark):
    """The train.py processes whose command line names ``mark``, this test's own folder (children of the driver,
    or orphans)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if any(c.endswith(b"train.py") for c in cmd) and any(mark.encode() in c for c in cmd):
            out.append(int(pid))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_ablation_driver_leaves_no_train_process(tiny_children, sig):
    env = tiny_children
    save_root = env.tmp / "killed_driver"
    cmd = [sys.executable, os.path.join(REPO, "ablation.py"), "--dataset", "tiny", "--feat", "tiny-signal,tiny-noise",
           "--model", "auto_attention", "--seeds", "0", "--parts", "all,without", "--threads", "1", "--jobs", "2",
           "--save_root", str(save_root),
           "--train_args", "--epochs 400 --lr 3e-3 --batch_size 16 --hidden_dim 32 --device cpu --num_workers 0 "
                           "--no_plots"]
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    children = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(children) < 2:
            time.sleep(0.2)
            children = _train_children(str(save_root))
            assert driver.poll() is None, "the driver ended before its runs started"
        assert len(children) == 2, "the driver did not start two train.py runs"
        time.sleep(1.0)  # the children past their start (imports), as a user's kill would find them
        driver.send_signal(sig)
        driver.wait(timeout=30)
        # SIGTERM: the driver stops its runs and exits as the signal would (128 + 15); SIGKILL: the kernel ends them
        assert driver.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "train.py runs outlived their driver"
    finally:
        for pid in _train_children(str(save_root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_case4_semi_context_pool_of_names_alone_is_refused_before_stage1(tiny, capsys):
    """A context student whose unlabelled pool the tables do not know (a list of names alone: every name a dialogue
    of one) is refused before stage 1 trains, and nothing is written; the same pool with its dialogues runs."""
    import semi as semi_script

    split, pool_csv, teacher, _ = _semi_inputs(tiny)
    from dataloader.files import read_split_json

    labelled = read_split_json(split, CLASSES)["train_info"]["names"]
    dialogues = tiny.tmp / "dialogues.csv"  # the labelled names in dialogues of 4; the pool's names not in it
    pd.DataFrame({"name": labelled, "dialogue": [f"d{i // 4}" for i in range(len(labelled))],
                  "order": [i % 4 for i in range(len(labelled))]}).to_csv(dialogues, index=False)
    out = str(tiny.tmp / "semi_ctx")
    argv = _semi_argv(split, pool_csv, teacher, out, 4)
    argv[-1] += f" --context 1 --dialogue_csv {dialogues}"
    assert semi_script.main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert "unlabelled pool" in line and "dialogues of one utterance" in line
    assert not os.path.exists(out)

    from pseudo.drivers import check_pool_dialogues

    pool = pd.read_csv(pool_csv)["name"].tolist()
    with_dialogues = tiny.tmp / "pool_dialogues.csv"
    pd.DataFrame({"name": pool, "dialogue": [f"p{i // 3}" for i in range(len(pool))],
                  "order": [i % 3 for i in range(len(pool))]}).to_csv(with_dialogues, index=False)
    train_args = ["--dataset", "tiny", "--context", "1", "--dialogue_csv", str(dialogues)]
    check_pool_dialogues("tiny", train_args, pool, str(with_dialogues))  # its dialogues given: no refusal
    check_pool_dialogues("tiny", ["--dataset", "tiny"], pool, pool_csv)  # no context: nothing to check
