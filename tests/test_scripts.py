"""The shell entry points, run as a user runs them, on a small demo in a scratch folder."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO
from engine.selection import binomial_se


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    env = dict(os.environ, MER_FEATURE_ROOT=str(root), MER_TRAIN_LST=str(root / "train_lst"), PYTHON=sys.executable)
    run = dict(cwd=REPO, env=env, capture_output=True, text=True)
    for cmd in (["preprocess/make_demo.py", "--n_train", "150", "--n_unlabeled", "30", "--n_test", "60"],
                ["preprocess/build_splits.py", "--dataset", "demo", "--seeds", "0,1"]):
        r = subprocess.run([sys.executable, *cmd], **run)
        assert r.returncode == 0, r.stderr
    return root, env


def test_train_cli_lists_models_and_runs_on_the_demo(small_demo):
    root, env = small_demo
    r = subprocess.run([sys.executable, "train.py", "--list_models"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "auto_attention" in r.stdout.split()
    r = subprocess.run([sys.executable, "train.py", "--dataset", "demo", "--seed", "1", "--epochs", "2", "--quiet",
                        "--feat", "['demo-openface-au-FRM','demo-vlm-scores']", "--save_root", str(root / "cli"),
                        "--device", "cpu", "--test"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith("BEST: epoch:")
    assert "feature demo-openface-au-FRM: read 240 files" in r.stderr


def test_loader_benchmark_runs_and_prints_its_figure(tmp_path):
    r = subprocess.run([sys.executable, "bench/loader_throughput.py", "--n", "300", "--batch_size", "64",
                        "--num_workers", "0"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("speedup: ") and float(last.split()[-1]) > 0


def needs_mosi(test):
    """A real-data bench on the shared MOSI features: slow (a converter and trainings in separate processes)."""
    present = os.path.isdir(os.path.join(REPO, "..", "shared", "data", "mosi-bclstm"))
    return pytest.mark.slow(pytest.mark.skipif(not present, reason="shared MOSI data absent")(test))


def _mosi_bench(tmp_path, *flags):
    """bench/mosi_bclstm.py on one seed, with its converted data, splits and runs in ``tmp_path``."""
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path / "f"), MER_TRAIN_LST=str(tmp_path / "lst"))
    r = subprocess.run([sys.executable, "bench/mosi_bclstm.py", "--seeds", "0", *flags,
                        "--save_root", str(tmp_path / "saved"), "--device", "cpu"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("mosi test accuracy: ")
    return lines


@needs_mosi
def test_mosi_benchmark_converts_trains_and_prints_its_figure(tmp_path):
    last = _mosi_bench(tmp_path, "--epochs", "2", "--l2", "1e-5", "--patience", "5")[-1]
    assert 0.5 < float(last.split()[3]) <= 1
    assert (tmp_path / "f" / "mosi" / "test_labels.csv").is_file()
    import yaml

    args = yaml.safe_load((tmp_path / "saved" / "mosi" / "seed0" / "auto_attention" / "run" / "args.yaml").read_text())
    assert args["patience"] == 5  # the bench's --patience reaches train.py


@needs_mosi
def test_mosi_benchmark_weight_decay_grid_keeps_the_one_standard_error_choice(tmp_path):
    lines = _mosi_bench(tmp_path, "--epochs", "1", "--l2", "1e-5,10")
    choice = next(line for line in lines if "one standard error rule" in line)
    runs = tmp_path / "saved" / "mosi" / "seed0" / "auto_attention"
    accs = {}
    for l2 in ("1e-05", "10"):
        with open(runs / f"run_l2_{l2}" / "summary.json") as f:
            accs[l2] = json.load(f)["valid_acc"]
    n = int(choice.split("(")[1].split()[0])
    expected = "10" if accs["10"] >= max(accs.values()) - binomial_se(max(accs.values()), n) else "1e-05"
    assert choice.endswith(f"-> l2 {expected}")
    with open(runs / f"run_l2_{expected}" / "summary.json") as f:
        kept = json.load(f)["test_acc"]
    assert f"test acc {kept:.4f}" in next(line for line in lines if line.startswith("seed 0: valid F1"))


@needs_mosi
def test_mosi_benchmark_with_context_trains_over_whole_videos(tmp_path):
    _mosi_bench(tmp_path, "--epochs", "1", "--context", "--l2", "1e-5")
    log = (tmp_path / "saved" / "mosi" / "seed0" / "auto_attention" / "ctx3" / "train.log").read_text()
    assert "context: valid:" in log and "; 0 of one utterance)" in log  # every video whole, none cut


@needs_mosi
def test_bclstm_reference_converts_mosi_and_prints_its_figure(tmp_path):
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path / "f"), MER_TRAIN_LST=str(tmp_path / "lst"))
    r = subprocess.run([sys.executable, "bench/bclstm_reference.py", "--seeds", "0", "--max_epochs", "2",
                        "--device", "cpu"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert "1447 utterances in 62 videos/dialogues" in lines and "752 utterances in 31 videos/dialogues" in lines
    assert sum("level 1" in line for line in lines) == 3
    last = lines[-1]
    assert last.startswith("bc-LSTM reference test accuracy: ") and 0.3 < float(last.split()[-3]) <= 1


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.path.join(REPO, "..", "shared", "data", "meld")),
                    reason="shared MELD data absent")
def test_meld_benchmark_converts_trains_without_and_with_context_and_prints_its_figure(tmp_path):
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path / "f"), MER_TRAIN_LST=str(tmp_path / "lst"))
    r = subprocess.run([sys.executable, "bench/meld.py", "--seeds", "0", "--epochs", "1", "--context", "1",
                        "--feat", "meld-tfidf-UTT", "--save_root", str(tmp_path / "saved"), "--device", "cpu"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("meld test weighted F1 with context: ") and 0.2 < float(lines[-1].split()[-3]) <= 1
    assert any(line.startswith("| no context |") for line in lines)
    table = pd.read_csv(tmp_path / "saved" / "meld_bench.csv")
    assert sorted(table["context"]) == [0, 1] and table["test_f1"].between(0, 1).all()
    assert (tmp_path / "f" / "meld" / "meld-tfidf-UTT").is_dir()  # converted by the project's own script
    assert not (tmp_path / "f" / "meld" / "meld-minilm-UTT").exists()  # only what was asked for
    log = (tmp_path / "saved" / "meld" / "seed0" / "auto_attention" / "ctx1" / "train.log").read_text()
    assert "context: train: 9989 utterances in 1038 dialogues" in log  # MELD's official train dialogues
