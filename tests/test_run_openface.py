"""preprocess/run_openface.py with a stand-in FeatureExtraction (a Python script) that writes OpenFace's output.

The stand-in's behaviour is steered by the bytes of the (dummy) video: ``ok`` (12 frames with a face),
``slow`` (the same after 0.5 s), ``fail`` (exit 1, a message on stderr), ``failout`` (exit 1, OpenFace's way:
the error on stdout only), ``hang`` (sleeps 30 s), ``noface`` (a CSV with success 0 everywhere and no aligned
image), ``nocsv`` (exit 0, no CSV), ``partial`` (writes half a CSV, waits 1.5 s, then finishes).
Each invocation appends ``<of>\\t<start>\\t<end>`` to a log (``<end>`` is ``-`` for hang and partial, written
before they wait), so tests count invocations and check overlaps.
"""

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import openface_au
import run_openface

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 12
RGB = (200, 100, 30)  # the aligned faces' colour; green is replaced by 10 * frame number

STAND_IN = r'''#!{python}
import argparse, os, sys, time
from PIL import Image

AU_R = {au_r!r}
AU_C = {au_c!r}
LOG = {log!r}
p = argparse.ArgumentParser()
p.add_argument("-f", required=True)
p.add_argument("-out_dir", required=True)
p.add_argument("-of", required=True)
p.add_argument("-simsize", type=int, default=112)
p.add_argument("-format_aligned", default="bmp")
for flag in ("-aus", "-pose", "-gaze", "-simalign", "-nobadaligned", "-nomask"):
    p.add_argument(flag, action="store_true")
a, unknown = p.parse_known_args()
if unknown:
    sys.exit("unknown flags " + " ".join(unknown))
t0 = time.time()
mode = open(a.f).read().strip()

def invocation(end):
    with open(LOG, "a") as f:
        f.write(f"{{a.of}}\t{{t0:.4f}}\t{{end}}\n")

stem = os.path.splitext(a.of)[0]  # OpenFace drops what follows the last dot of -of
os.makedirs(a.out_dir, exist_ok=True)
with open(os.path.join(a.out_dir, stem + "_of_details.txt"), "w") as f:
    f.write("Input:" + a.f + "\n")
aligned = os.path.join(a.out_dir, stem + "_aligned")
if a.simalign:
    os.makedirs(aligned, exist_ok=True)
if mode in ("hang", "partial"):
    invocation("-")
if mode == "hang":
    time.sleep(30)
if mode == "slow":
    time.sleep(0.5)
if mode == "fail":
    print("Attempting to read from file: " + a.f)
    print("Fatal error: Failed to open video source, exiting", file=sys.stderr)
    invocation(time.time())
    sys.exit(1)
if mode == "failout":
    print("ERROR: Could not load the landmark detector")
    invocation(time.time())
    sys.exit(1)
if mode == "nocsv":
    invocation(time.time())
    sys.exit(0)
success = 0 if mode == "noface" else 1
head = ["frame", "face_id", "timestamp", "confidence", "success", "gaze_angle_x", "pose_Rx"]
head += [x + "_r" for x in AU_R] + [x + "_c" for x in AU_C]
rows = []
for k in range(1, {frames} + 1):
    vals = [k, 0, (k - 1) / 30, 0.98 * success, success, 0.1, 0.2]
    vals += [k / 10 + i for i in range(len(AU_R))] + [1.0] * len(AU_C)
    rows.append(", ".join(str(v) for v in vals))
with open(os.path.join(a.out_dir, stem + ".csv"), "w") as f:
    f.write(", ".join(head) + "\n")
    if mode == "partial":
        f.write("\n".join(rows[:3]) + "\n")
        f.flush()
        time.sleep(1.5)
    f.write("\n".join(rows) + "\n")
for k in range(1, {frames} + 1):
    if success and a.simalign:
        img = Image.new("RGB", (a.simsize, a.simsize), ({r}, 10 * k, {b}))
        img.save(os.path.join(aligned, "frame_det_00_%06d.%s" % (k, a.format_aligned)))
if mode != "partial":
    invocation(time.time())
'''


@pytest.fixture
def env(tmp_path):
    class Env:
        pass

    e = Env()
    e.tmp = tmp_path
    e.log = tmp_path / "invocations.log"
    e.bin = tmp_path / "bin dir" / "FeatureExtraction"
    e.bin.parent.mkdir()
    e.bin.write_text(STAND_IN.format(python=sys.executable, au_r=openface_au.AU_R, au_c=openface_au.AU_C,
                                     log=str(e.log), frames=FRAMES, r=RGB[0], b=RGB[2]))
    e.bin.chmod(e.bin.stat().st_mode | stat.S_IXUSR)
    e.videos = tmp_path / "videos"
    e.videos.mkdir()
    e.out = tmp_path / "openface out"
    return e


def add_videos(env, **modes):
    """``name=mode``: a dummy video whose bytes steer the stand-in."""
    for name, mode in modes.items():
        (env.videos / f"{name}.mp4").write_text(mode)


def invocations(env):
    """``[(of, start, end or None)]`` of the stand-in's runs."""
    if not env.log.exists():
        return []
    rows = [line.split("\t") for line in env.log.read_text().splitlines() if line]
    return [(of, float(t0), None if t1 == "-" else float(t1)) for of, t0, t1 in rows]


def run(env, *extra, workers=4):
    return run_openface.main(["--bin", str(env.bin), "--video_dir", str(env.videos), "--out", str(env.out),
                              "--workers", str(workers), "--size", "16", "--quiet", *extra])


def report(env):
    return pd.read_csv(env.out / "logs" / run_openface.REPORT_NAME, keep_default_na=False).set_index("name")


def names_csv(env, names):
    path = env.tmp / "names.csv"
    pd.DataFrame({"name": names}).to_csv(path, index=False)
    return str(path)


def test_run_writes_csvs_au_sequences_and_face_arrays_and_reports_failures(env, capsys):
    add_videos(env, good0="ok", good1="ok", noface="noface", fail="fail", failout="failout", nocsv="nocsv")
    au_out, faces_out = env.tmp / "au", env.tmp / "faces"
    names = names_csv(env, ["good0", "good1", "noface", "fail", "failout", "nocsv", "ghost"])
    code = run(env, "--names", names, "--au_out", str(au_out), "--faces_out", str(faces_out))
    printed = capsys.readouterr().out
    assert code == 1
    rep = report(env)
    assert rep.status.to_dict() == {"good0": "ok", "good1": "ok", "noface": "ok", "fail": "failed",
                                    "failout": "failed", "nocsv": "failed", "ghost": "missing"}
    assert rep.loc["fail", "reason"] == "Fatal error: Failed to open video source, exiting"
    assert rep.loc["fail", "returncode"] == "1"
    assert rep.loc["failout", "reason"] == "ERROR: Could not load the landmark detector"  # stdout fallback
    assert "no CSV" in rep.loc["nocsv", "reason"] and f"{env.videos}/ghost.<mp4" in rep.loc["ghost", "reason"]
    assert rep.loc["good0", "frames"] == str(FRAMES)
    for name in ("fail", "failout", "nocsv"):
        assert name in printed and os.path.isfile(rep.loc[name, "log"])
    assert "$ " in (env.out / "logs" / "fail.log").read_text()  # the log starts with the command line

    # OpenFace's outputs: only for finished clips; no temporary folder left
    assert sorted(p.name for p in env.out.glob("*.csv")) == ["good0.csv", "good1.csv", "noface.csv"]
    assert len(list((env.out / "good0_aligned").glob("*.bmp"))) == FRAMES
    assert not (env.out / ".tmp").exists()  # each clip's private folder is gone, then the empty .tmp
    assert (env.out / "logs" / "good0_of_details.txt").is_file()

    # AU sequences through openface_au; the run report is not taken for a clip
    au = np.load(au_out / "good0.npy")
    assert au.shape == (FRAMES, 35) and au.dtype == np.float32
    np.testing.assert_allclose(au[:, 0], np.arange(1, FRAMES + 1) / 10, atol=1e-6)  # AU01_r of frame k: k/10
    au_rep = pd.read_csv(au_out / openface_au.REPORT_NAME).set_index("name")
    assert au_rep.status.to_dict() == {"good0": "ok", "good1": "ok", "noface": "empty"}

    # MERTools face crops: (T, H, W, 3) uint8 in BGR order, frames in natural order (2 before 10)
    faces = np.load(faces_out / "good0" / "good0.npy")
    assert faces.shape == (FRAMES, 16, 16, 3) and faces.dtype == np.uint8
    assert tuple(faces[0, 5, 5]) == (RGB[2], 10, RGB[0])  # B, G, R
    np.testing.assert_array_equal(faces[:, 0, 0, 1], 10 * np.arange(1, FRAMES + 1))
    assert not (faces_out / "noface").exists()
    assert rep.loc["noface", "faces"] == "empty" and "no aligned image" in rep.loc["noface", "faces_reason"]
    assert rep.loc["good1", "faces"] == "ok" and rep.loc["good1", "face_frames"] == str(FRAMES)
    assert "extract_features.py --dataset <dataset> --modality visual --face_dir" in printed
    assert "FEAT_AU_DICT" in printed

    # a second run invokes the binary only for the clips without output
    before = len(invocations(env))
    code = run(env, "--names", names, "--au_out", str(au_out), "--faces_out", str(faces_out))
    again = [of for of, _, _ in invocations(env)[before:]]
    assert code == 1 and sorted(again) == ["fail", "failout", "nocsv"]
    rep = report(env)
    assert rep.loc["good0", "status"] == "skipped" and rep.loc["good0", "faces"] == "skipped"
    assert rep.loc["ghost", "status"] == "missing"

    # once the failures are fixed, everything is ok or skipped: exit 0
    add_videos(env, fail="ok", failout="ok", nocsv="ok")
    (env.videos / "ghost.avi").write_text("ok")
    before = len(invocations(env))
    assert run(env, "--names", names, "--au_out", str(au_out), "--faces_out", str(faces_out)) == 0
    assert sorted(of for of, _, _ in invocations(env)[before:]) == ["fail", "failout", "ghost", "nocsv"]
    assert np.load(au_out / "fail.npy").shape == (FRAMES, 35)
    assert np.load(faces_out / "ghost" / "ghost.npy").shape == (FRAMES, 16, 16, 3)


def test_killed_run_leaves_nothing_that_is_read_as_a_result(env):
    add_videos(env, good0="ok", good1="ok")
    # a run killed mid-clip: a private folder of a dead process with half a CSV, and a stale aligned folder
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = env.out / ".tmp" / f"good0.{dead.pid}"
    (stale / "good0_aligned").mkdir(parents=True)
    (stale / "good0.csv").write_text("frame, face_id, timestamp, confidence, success\n1, 0, 0.0")
    (env.out / "good0_aligned").mkdir()
    (env.out / "good0_aligned" / "frame_det_00_000099.bmp").write_bytes(b"old")
    assert run(env) == 0
    assert not stale.exists()
    assert sorted(of for of, _, _ in invocations(env)) == ["good0", "good1"]
    assert len(pd.read_csv(env.out / "good0.csv")) == FRAMES
    assert not (env.out / "good0_aligned" / "frame_det_00_000099.bmp").exists()


def test_sigkill_mid_clip_leaves_no_partial_csv(env):
    add_videos(env, slowclip="partial")
    cmd = [sys.executable, os.path.join(REPO, "preprocess", "run_openface.py"), "--bin", str(env.bin),
           "--video_dir", str(env.videos), "--out", str(env.out), "--quiet", "--size", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp_csv = env.out / ".tmp" / f"slowclip.{proc.pid}" / "slowclip.csv"
    deadline = time.time() + 15
    while not tmp_csv.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert tmp_csv.exists(), "the stand-in never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (env.out / "slowclip.csv").exists()
    time.sleep(1.7)  # the orphaned stand-in finishes writing into the dead run's folder
    assert not (env.out / "slowclip.csv").exists()
    add_videos(env, slowclip="ok")
    assert run(env) == 0
    assert not (env.out / ".tmp" / f"slowclip.{proc.pid}").exists()
    assert len(pd.read_csv(env.out / "slowclip.csv")) == FRAMES


def test_overwrite_runs_finished_clips_again(env):
    add_videos(env, good0="ok")
    faces_out = env.tmp / "faces"
    assert run(env, "--faces_out", str(faces_out)) == 0
    (faces_out / "good0" / "good0.npy").write_bytes(b"stale")
    (env.out / "good0_aligned" / "frame_det_00_000099.bmp").write_bytes(b"stale")
    assert run(env, "--faces_out", str(faces_out), "--overwrite") == 0
    assert [of for of, _, _ in invocations(env)] == ["good0", "good0"]
    assert report(env).loc["good0", "status"] == "ok"
    assert np.load(faces_out / "good0" / "good0.npy").shape == (FRAMES, 16, 16, 3)
    assert len(list((env.out / "good0_aligned").iterdir())) == FRAMES


def test_workers_run_clips_in_parallel(env):
    add_videos(env, **{f"s{i}": "slow" for i in range(6)})
    assert run(env, workers=3) == 0
    spans = sorted((t0, t1) for _, t0, t1 in invocations(env))
    assert len(spans) == 6
    overlaps = sum(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
    assert overlaps >= 1


def test_names_and_paths_with_spaces_and_dots(env):
    env.videos = env.tmp / "my videos"
    env.videos.mkdir()
    add_videos(env, **{"clip one.take2": "ok"})
    assert run(env, "--faces_out", str(env.tmp / "face crops")) == 0
    assert (env.out / "clip one.take2.csv").is_file()
    assert (env.out / "clip one.take2_aligned").is_dir()
    assert np.load(env.tmp / "face crops" / "clip one.take2" / "clip one.take2.npy").shape[0] == FRAMES


def test_timeout_kills_the_clip(env):
    add_videos(env, stuck="hang", good0="ok")
    t0 = time.time()
    assert run(env, "--timeout", "1.5") == 1
    assert time.time() - t0 < 15
    rep = report(env)
    assert rep.loc["stuck", "status"] == "timeout" and "1.5" in rep.loc["stuck", "reason"]
    assert rep.loc["good0", "status"] == "ok"
    assert not (env.out / "stuck.csv").exists() and not (env.out / ".tmp").exists()


@pytest.mark.parametrize("problem", ["missing", "not executable"])
def test_bad_binary_is_a_one_line_error(env, capsys, problem):
    add_videos(env, good0="ok")
    if problem == "missing":
        env.bin = env.tmp / "nowhere" / "FeatureExtraction"
    else:
        env.bin.chmod(0o644)
    assert run(env) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(env.bin) in err and "FeatureExtraction" in err and "--bin" in err
    assert not env.out.exists() and not env.log.exists()


def test_dataset_names_and_video_dir(env, capsys, monkeypatch):
    import config
    add_videos(env, a="ok", b="ok", c="ok", unused="ok")
    pd.DataFrame({"name": ["a", "b"], "discrete": ["x", "y"]}).to_csv(env.tmp / "train.csv", index=False)
    pd.DataFrame({"name": ["b", "c"]}).to_csv(env.tmp / "test.csv", index=False)
    monkeypatch.setitem(config.DATASETS, "vids", {"label_csv": str(env.tmp / "train.csv"),
                                                  "test_csv": str(env.tmp / "test.csv"), "unlabeled_csv": None,
                                                  "video_dir": str(env.videos)})
    code = run_openface.main(["--bin", str(env.bin), "--dataset", "vids", "--out", str(env.out), "--quiet",
                              "--size", "16"])
    assert code == 0
    assert sorted(of for of, _, _ in invocations(env)) == ["a", "b", "c"]
    assert "--dataset vids --modality visual" in capsys.readouterr().out
    assert run_openface.main(["--bin", str(env.bin), "--dataset", "nope", "--out", str(env.out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope" in err and "vids" in err
