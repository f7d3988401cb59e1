"""The clip demo of docs/features.md, command by command: synthetic clips -> features (three encoders) -> feature
check -> splits -> a trained multimodal model. The commands are read from the page itself, so that what a
newcomer pastes is what runs here; features/ moves to a temporary MER_FEATURE_ROOT and runs to a temporary --save_root."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "tests/test_clip_demo.py runs the commands of the next block"


def readme_commands():
    text = open(os.path.join(REPO, "docs", "features.md"), encoding="utf-8").read()
    block = text[text.index(MARKER):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    return [line.split("  #")[0].strip() for line in block.strip().splitlines() if line.strip()]


@pytest.mark.slow  # a walk-through of separate processes: about 40 s
def test_readme_clip_demo_runs_from_clips_to_a_trained_model(tmp_path):
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == [
        "preprocess/make_clip_demo.py", "preprocess/extract_features.py", "preprocess/extract_features.py",
        "preprocess/extract_features.py", "preprocess/check_feat_dim.py", "preprocess/build_splits.py", "train.py"]
    features = tmp_path / "features"
    env = dict(os.environ, MER_FEATURE_ROOT=str(features), MER_TRAIN_LST=str(tmp_path / "train_lst"),
               MER_CACHE_ROOT=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    outputs = []
    for cmd in commands:
        argv = shlex.split(re.sub(r"(?<![\w/])features/", str(features) + "/", cmd))
        assert argv[0] == "python"
        argv = [sys.executable] + argv[1:]
        if argv[1] == "train.py":
            argv += ["--save_root", str(tmp_path / "saved"), "--quiet"]
        elif argv[1] == "preprocess/extract_features.py":
            argv += ["--quiet"]
        res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout)

    demo = features / "clipdemo"
    for folder, dim in (("tiny-hubert-UTT", 64), ("tiny-clip-UTT", 32), ("tiny-bert-langeng-UTT", 64)):
        files = [f for f in os.listdir(demo / folder) if f.endswith(".npy")]
        assert len(files) == 48
        x = np.load(demo / folder / files[0])
        assert x.shape == (dim,) and x.dtype == np.float16 and np.isfinite(x).all()
        manifest = json.loads((demo / folder / "extract_manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["counts"]["written"] == 48
    for out in outputs[1:4]:
        assert "registered in config.py as clipdemo-" in out and "48 written" in out
    assert "ok" in outputs[4] and "missing" in outputs[4]  # the check's table header and rows
    metrics = [json.loads(open(os.path.join(root, f)).read()) for root, _, files in os.walk(tmp_path / "saved")
               for f in files if f == "test_metrics.json"]
    assert len(metrics) == 1
    # each modality carries the class: the multimodal model must do far better than chance (1/6)
    assert metrics[0]["test_f1"] > 0.6, metrics[0]
