"""Many runs at once (engine/grid.py): a pool of processes gives the sequential grid's metrics, a failed run is
reported while the others finish, a rerun skips finished runs, submitit's local executor runs the same grid,
and ablation.py --jobs 2 writes the table of --jobs 1.

The runs' processes do not see the tiny fixture's registration (it patches ``config`` in this process): the
fixture's data set is also written as a ``dataset.yaml`` registration that config.py reads at import in every
child (``MER_FEATURE_ROOT``), with the fixture's split lists and feature cache (``MER_TRAIN_LST``,
``MER_CACHE_ROOT``). Every comparison gives both sides the same ``--threads 1``: a different thread count may
change a result's last digits (see the module docstring)."""

import os
import sys
import time

import pytest
import yaml

from conftest import CLASSES, REPO, load_script, train_args
from engine.grid import SKIPPED, THREAD_ENV, Grid, GridFailed, read_specs, run_grid

METRICS = ("valid_acc", "valid_f1", "test_acc", "test_f1", "best_epoch")


@pytest.fixture
def tiny_children(tiny, monkeypatch):
    """The tiny fixture, registered for child processes too (a dataset.yaml under MER_FEATURE_ROOT)."""
    folder = tiny.root / "tiny"
    folder.mkdir()
    reg = {"name": "tiny", "emo_rule": "TINY", "labels": list(CLASSES),
           "label_csv": str(tiny.tmp / "labels.csv"), "test_csv": str(tiny.tmp / "test.csv"),
           "test_label_csv": str(tiny.tmp / "test_labels.csv"), "unlabeled_csv": None, "unlabeled_truth": None,
           "teacher_dir": None, "group_col": None,
           "features": {"tiny-signal": {"modality": "text", "dim": 8, "folder": str(tiny.root / "tiny-signal")},
                        "tiny-noise": {"modality": "audio", "dim": 5, "folder": str(tiny.root / "tiny-noise")},
                        "tiny-au": {"modality": "au", "dim": 4, "folder": str(tiny.root / "tiny-au")}}}
    with open(folder / "dataset.yaml", "w") as f:
        yaml.safe_dump(reg, f)
    monkeypatch.setenv("MER_FEATURE_ROOT", str(tiny.root))
    monkeypatch.setenv("MER_TRAIN_LST", str(tiny.tmp / "train_lst"))
    monkeypatch.setenv("MER_CACHE_ROOT", str(tiny.tmp / "cache"))
    # runs in this process set --threads 1 (torch's pool and, for processes started later, OMP_NUM_THREADS...)
    import torch

    threads, env_before = torch.get_num_threads(), {k: os.environ.get(k) for k in THREAD_ENV}
    yield tiny
    torch.set_num_threads(threads)
    for k, v in env_before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def grid_specs(env, save_root, n=8, extra=()):
    """``n`` tiny runs: seeds 0 and 1 x feature sets x learning rates, 3 epochs each."""
    feats = ["tiny-signal,tiny-noise", "tiny-signal", "tiny-noise", "tiny-signal,tiny-au"]
    out = []
    for i in range(n):
        seed, feat, lr = i % 2, feats[(i // 2) % len(feats)], ("3e-3", "1e-2")[(i // 8) % 2]
        cfg = train_args(env, "--seed", str(seed), "--feat", feat, "--lr", lr, "--epochs", "3", "--test",
                         "--threads", "1", "--save_root", str(save_root), *extra)
        out.append((f"{feat.replace(',', '+')}_seed{seed}_lr{lr}", cfg))
    return out


def metrics(results):
    return [{k: r.summary.get(k) for k in METRICS} for r in results]


def test_eight_runs_with_two_jobs_give_the_sequential_grids_metrics(tiny_children):
    env = tiny_children
    t0 = time.time()
    seq = run_grid(grid_specs(env, env.tmp / "seq"), env.tmp / "grid_seq", jobs=1, progress=False)
    t_seq = time.time() - t0
    assert all(r.status == "done" for r in seq)
    t0 = time.time()
    par = run_grid(grid_specs(env, env.tmp / "par"), str(env.tmp / "grid_par"), jobs=2, threads=1)
    t_par = time.time() - t0
    assert [r.status for r in par] == ["done"] * 8
    assert metrics(par) == metrics(seq)  # the same numbers, bit for bit (both with --threads 1)
    for r in par:
        assert os.path.isfile(r.log) and "RUN: " in open(r.log).read()
        assert r.summary["run_dir"].startswith(str(env.tmp / "par"))
        assert os.path.basename(r.summary["run_dir"]) == os.path.basename(
            seq[par.index(r)].summary["run_dir"])  # the same settings, so the same run name
    print(f"8 tiny runs: sequential in-process {t_seq:.1f}s, 2 processes {t_par:.1f}s")


def test_a_failed_run_is_reported_the_others_finish_and_a_rerun_skips_them(tiny_children, capsys):
    env = tiny_children
    good = grid_specs(env, env.tmp / "saved", n=2)
    bad = ("bad", train_args(env, "--feat", "no-such-feature", "--epochs", "3", "--threads", "1"))
    with pytest.raises(GridFailed) as e:
        run_grid([good[0], bad, good[1]], str(env.tmp / "grid"), jobs=2, threads=1)
    assert "1 of 3 runs failed" in str(e.value) and "bad (exit code 2" in str(e.value)
    err = capsys.readouterr().err
    assert "bad: FAILED (exit code 2" in err and err.count(": done in ") == 2  # one progress line a run
    log = env.tmp / "grid" / "logs" / "bad.log"
    assert "no-such-feature" in e.value.failed[0].error and str(log) in e.value.failed[0].error
    assert e.value.failed[0].returncode == 2 and "no-such-feature" in log.read_text()
    # the rerun: the two finished runs are skipped without a process; two specs of one new run folder train once
    new = grid_specs(env, env.tmp / "saved", n=3)[2][1]
    res = run_grid([good[0], good[1], ("new", new), ("new_again", new)], str(env.tmp / "grid"), jobs=2,
                   threads=1, progress=False)
    assert [r.status for r in res] == [SKIPPED, SKIPPED, "done", "done"]
    assert res[0].log is None and res[1].log is None  # no process was started for them
    assert metrics(res[2:3]) == metrics(res[3:]) and not (env.tmp / "grid" / "logs" / "new_again.log").exists()
    # in this process a finished run is skipped too (train.py --resume)
    here = run_grid([good[0][1].replace(resume=True)], progress=False)
    assert metrics(here) == metrics(res[:1])
    assert res[0].summary["run_dir"] == here[0].summary["run_dir"]


def test_two_stage_drivers_run_together_and_share_their_stage1_run(tiny_children):
    """run_drivers with a grid: two strategies' drivers ask for the same stage-1 run (trained once), make their
    pseudo labels here and train their stage 2 at once; the results are those of the drivers in this process."""
    from pseudo.drivers import run_drivers, two_stage_steps
    from test_semi import TRAIN_ARGS, _setup

    env = tiny_children
    split, pool, truth, teacher, truth_csv = _setup(env)
    args = TRAIN_ARGS + ["--epochs", "3", "--threads", "1"]

    def drivers(out):
        return [two_stage_steps("tiny", 0, split, args, strategy, kw, [teacher], pool, truth_csv, str(env.tmp / out),
                                device="cpu") for strategy, kw in (("teacher", {"min_conf": 4}), ("student", {}))]

    def figures(res):
        return [(r["n_pseudo"], r["precision"], r["counts"], *[{k: v for k, v in r[s].items() if k != "run_dir"}
                                                                for s in ("stage1", "stage2")]) for r in res]

    here = run_drivers(drivers("here"))
    with Grid(str(env.tmp / "grid"), jobs=2, threads=1, progress=False) as grid:
        pooled = run_drivers(drivers("pool"), grid)
    assert figures(pooled) == figures(here) and pooled[0]["n_pseudo"] > 0
    assert len(os.listdir(env.tmp / "grid" / "logs")) == 3  # stage 1 once, two stage-2 runs


def test_gpus_are_dealt_out_to_the_job_slots(tiny_children, monkeypatch):
    """--jobs 4 --gpus 0,1: each process sees one GPU (CUDA_VISIBLE_DEVICES) and trains with --device cuda, two
    runs a GPU; --threads max(1, cores // jobs). The processes are stand-ins here (this machine has no GPU)."""
    import engine.grid as grid_mod

    env = tiny_children
    seen = []

    class FakeProcess:
        def __init__(self, cmd, env=None, stdout=None, stderr=None):
            seen.append((cmd, env))
            run_dir = env_dir / f"run{len(seen)}"
            run_dir.mkdir(parents=True)
            (run_dir / "summary.json").write_text('{"valid_f1": 0.5}')
            stdout.write(f"RUN: {run_dir}\n")

        def poll(self):
            return 0

    env_dir = env.tmp / "fake"
    monkeypatch.setattr(grid_mod.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(grid_mod, "cpu_cores", lambda: 16)
    res = run_grid(grid_specs(env, env.tmp / "s", n=4), str(env.tmp / "grid"), jobs=4, gpus="0,1", progress=False)
    assert [r.summary["valid_f1"] for r in res] == [0.5] * 4
    assert [e["CUDA_VISIBLE_DEVICES"] for _, e in seen] == ["0", "1", "0", "1"]
    for cmd, e in seen:
        assert cmd[cmd.index("--device") + 1] == "cuda" and cmd[cmd.index("--gpu") + 1] == "0"
        assert cmd[cmd.index("--threads") + 1] == "4" and e["OMP_NUM_THREADS"] == "4"
        assert cmd[1].endswith("train.py") and cmd[2] == "--config"


def test_specs_file_lines():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("# name<TAB>train.py flags\n\none\t--feat \\[\\'a\\'\\] --lr 1e-3\n--feat \"['b', 'c']\" --epochs 2\n")
    try:
        specs = read_specs(f.name)
    finally:
        os.remove(f.name)
    assert specs == [("one", ["--feat", "['a']", "--lr", "1e-3"]), (None, ["--feat", "['b', 'c']", "--epochs", "2"])]


def test_run_eval_unimodal_one_after_another_and_with_jobs(tiny_children):
    """run_eval_unimodal.sh. Without JOBS the runs go one after another (each feature over seeds, then the table)
    and the first failure stops the script, naming the run. JOBS=2: the runs go through python -m engine.grid; a
    failed run is named with its log while the others finish, a rerun skips the finished runs (those of the
    sequential path too) and the table follows."""
    import shutil
    import subprocess

    import pandas as pd

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = tiny_children
    base = dict(os.environ, DATASET="tiny", SEEDS="0", EPOCHS="2", SAVE_ROOT=str(env.tmp / "uni"), DEVICE="cpu",
                EXTRA_ARGS="--hidden_dim 32", PYTHON=sys.executable)

    def script(**changes):
        return subprocess.run(["bash", "run_eval_unimodal.sh"], cwd=REPO, env=dict(base, **changes),
                              capture_output=True, text=True)

    # one after another: a feature over two seeds, the table
    r = script(FEATS="tiny-signal", SEEDS="0 1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "== feature tiny-signal, seed 1" in r.stdout and "| tiny-signal" in r.stdout
    table = pd.read_csv(env.tmp / "uni" / "summary.csv")
    assert len(table) == 1 and table["experiment"][0].startswith("tiny-signal") and table["seeds"][0] == 2
    assert table["test_f1_mean"].between(0, 1).all()
    # a failing run stops the script with a message naming it
    r = script(FEATS="no-such-feature")
    assert r.returncode == 1 and "feature=no-such-feature seed=0" in r.stderr
    # with jobs: a failure is named with its log, the other run finishes, no table
    r = script(FEATS="tiny-noise no-such-feature", JOBS="2")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "error: run no-such-feature_seed0 failed: exit code 2" in r.stderr
    assert "no-such-feature_seed0.log" in r.stderr and "1 of 2 runs finished (0 skipped" in r.stdout
    # the rerun skips both finished runs (one trained by the sequential path) and makes the table
    r = script(FEATS="tiny-signal tiny-noise", JOBS="2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "2 of 2 runs finished (2 skipped as finished before)" in r.stdout
    table = pd.read_csv(env.tmp / "uni" / "summary.csv").set_index("experiment")
    assert set(table.index) == {"tiny-signal", "tiny-noise"}
    assert table.loc["tiny-signal", "seeds"] == 2 and table.loc["tiny-noise", "seeds"] == 1


@pytest.mark.slow  # submitit's local executor: a process a run, polled
def test_submitit_local_executor_runs_the_grid(tiny_children):
    submitit = pytest.importorskip("submitit", reason="submitit is not installed (requirements-dev.txt)")
    assert submitit
    env = tiny_children
    specs = grid_specs(env, env.tmp / "seq", n=2)
    seq = run_grid(specs, progress=False)
    specs = grid_specs(env, env.tmp / "cluster", n=2)
    res = run_grid(specs, str(env.tmp / "grid"), jobs=2, threads=1, cluster="local", progress=False)
    assert [r.status for r in res] == ["done", "done"]
    assert metrics(res) == metrics(seq)
    assert os.path.isdir(env.tmp / "grid" / "submitit") and all(os.path.isfile(r.log) for r in res)


def test_cluster_settings_and_a_missing_submitit_are_one_line_errors(tiny_children, monkeypatch):
    """No process is started: the errors come before."""
    import builtins

    from common.errors import DataError, OptionalDependencyError

    env = tiny_children
    real_import = builtins.__import__

    def no_submitit(name, *a, **k):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(OptionalDependencyError, match="pip install submitit"):
        run_grid(grid_specs(env, env.tmp / "s", n=1), str(env.tmp / "grid"), cluster="slurm", progress=False)
    monkeypatch.setattr(builtins, "__import__", real_import)
    for kw, msg in (({"jobs": 0}, "--jobs 0"), ({"gpus": "a,b"}, "--gpus"), ({"cluster": "pbs"}, "--cluster"),
                    ({"cluster": "slurm", "gpus": "0"}, "--slurm_gpus_per_task")):
        with pytest.raises(DataError, match=msg):
            Grid(str(env.tmp / "grid"), **kw)


def test_ablation_with_two_jobs_writes_the_table_of_one_job(tiny_children, capsys):
    ablation = load_script("ablation.py")
    env = tiny_children
    common = ["--dataset", "tiny", "--feat", "tiny-signal,tiny-noise", "--model", "auto_attention", "--seeds", "0",
              "--parts", "all,without", "--threads", "1",
              "--train_args", "--epochs 3 --lr 3e-3 --batch_size 16 --hidden_dim 32 --device cpu --num_workers 2 --no_plots"]
    assert ablation.main(common + ["--save_root", str(env.tmp / "one")]) == 0
    out_one = capsys.readouterr().out
    assert ablation.main(common + ["--save_root", str(env.tmp / "two"), "--jobs", "2"]) == 0
    out_two = capsys.readouterr().out
    one = (env.tmp / "one" / "ablation.md").read_text()
    assert (env.tmp / "two" / "ablation.md").read_text() == one and "| all | 1 |" in one
    assert (env.tmp / "two" / "ablation.csv").read_text() == (env.tmp / "one" / "ablation.csv").read_text()
    lost = [ln for ln in out_one.splitlines() if ln.startswith("F1 lost without")]
    assert lost and lost == [ln for ln in out_two.splitlines() if ln.startswith("F1 lost without")]
    assert sorted(os.listdir(env.tmp / "two" / "grid" / "logs")) == [
        "all_seed0.log", "without=tiny-noise_seed0.log", "without=tiny-signal_seed0.log"]
    assert not (env.tmp / "one" / "grid").exists()  # one job: in this process, as before
