"""Packed feature caches: never stale, rebuilt when corrupt, built once under concurrent first runs, and two
input checks of the packing (bool arrays, float64 values beyond the float32 range)."""

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from common.errors import DataError
from dataloader.features import cache_dir_for, folder_fingerprint, pack_feature

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(root, arrays):
    os.makedirs(root, exist_ok=True)
    for name, arr in arrays.items():
        np.save(os.path.join(root, name + ".npy"), arr)


def _seqs(n, dim, seed=0):
    """``n`` seeded frame-level features (T in 1..6) named s000, s001, ..."""
    rng = np.random.default_rng(seed)
    return {f"s{i:03d}": rng.normal(size=(int(rng.integers(1, 7)), dim)).astype(np.float32) for i in range(n)}


def _logger(name):
    log = logging.getLogger(f"test_feature_packs.{name}")
    log.setLevel(logging.INFO)
    return log


def _messages(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger.name]


@pytest.mark.parametrize("how", ["replaced by a copy", "rewritten in place"])
def test_changed_file_with_the_same_size_and_mtime_rebuilds_the_pack(tmp_path, caplog, how):
    """Case 5: `cp -p`, `rsync -a`, tar or os.utime keep size and mtime; the pack must still follow the file."""
    root, cache = str(tmp_path / "f"), str(tmp_path / "cache")
    rng = np.random.default_rng(5)
    old = {n: rng.normal(size=4).astype(np.float32) for n in ("a", "b", "c")}
    _write(root, old)
    log = _logger("stale")
    caplog.set_level(logging.INFO, logger=log.name)
    s1 = pack_feature("f", root, 4, False, cache_root=cache, logger=log, progress=False)
    np.testing.assert_array_equal(s1.gather(s1.rows(["b"]))[0][0], old["b"])
    fp1 = folder_fingerprint(root)

    s_again = pack_feature("f", root, 4, False, cache_root=cache, logger=log, progress=False)  # nothing changed
    assert s_again.names == ["a", "b", "c"] and sum("packed to" in m for m in _messages(caplog, log)) == 1

    path = os.path.join(root, "b.npy")
    before = os.stat(path)
    time.sleep(0.05)  # past the file system's timestamp tick
    new_b = rng.normal(size=4).astype(np.float32)
    if how == "replaced by a copy":  # a new file (new inode) renamed over the old one, mtime restored
        part = os.path.join(root, "b.npy.part")
        with open(part, "wb") as f:
            np.save(f, new_b)
        os.utime(part, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(part, path)
    else:  # the same inode, bytes overwritten, mtime restored
        with open(path, "r+b") as f:
            f.seek(-new_b.nbytes, os.SEEK_END)
            f.write(new_b.tobytes())
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # what the old check saw

    s2 = pack_feature("f", root, 4, False, cache_root=cache, logger=log, progress=False)
    np.testing.assert_array_equal(s2.gather(s2.rows(["a", "b", "c"]))[0], np.stack([old["a"], new_b, old["c"]]))
    assert folder_fingerprint(root) != fp1
    assert any("source folder changed, rebuilding" in m for m in _messages(caplog, log))


@pytest.mark.parametrize("part,frame_level", [("data.npy", False), ("data.npy", True), ("names.json", True),
                                              ("meta.json", False), ("offsets.npy", True)])
def test_truncated_pack_is_named_in_one_line_and_rebuilt(tmp_path, caplog, part, frame_level):
    """Case 6: a truncated part of the pack is detected when it is opened, logged with the cache folder, rebuilt."""
    root, cache = str(tmp_path / "f"), str(tmp_path / "cache")
    seqs = _seqs(20, 4, seed=6)
    arrays = seqs if frame_level else {n: x[0] for n, x in seqs.items()}
    _write(root, arrays)
    pack_feature("f", root, 4, frame_level, cache_root=cache, progress=False)
    cdir = cache_dir_for("f", root, cache)
    path = os.path.join(cdir, part)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])

    log = _logger("corrupt")
    caplog.set_level(logging.INFO, logger=log.name)
    store = pack_feature("f", root, 4, frame_level, cache_root=cache, logger=log, progress=False)
    names = sorted(arrays)
    x, mask = store.gather(store.rows(names))
    for i, n in enumerate(names):
        got = x[i][mask[i]] if frame_level else x[i]
        np.testing.assert_array_equal(got, arrays[n])
    warned = [m for m in _messages(caplog, log) if "corrupt" in m]
    assert len(warned) == 1, _messages(caplog, log)
    assert warned[0].startswith(f"feature f: cache {cdir} is corrupt ({part} ")
    assert warned[0].endswith("; rebuilding it")

    caplog.clear()  # the rebuilt pack opens without a word of corruption or a rebuild
    pack_feature("f", root, 4, frame_level, cache_root=cache, logger=log, progress=False)
    assert [m for m in _messages(caplog, log) if "corrupt" in m or "packed to" in m] == []


CHILD = r"""
import hashlib, json, logging, os, sys, time
root, cache, logs, me, out = sys.argv[1:6]
from dataloader import features

log = logging.getLogger("child")
log.setLevel(logging.INFO)
log.addHandler(logging.FileHandler(os.path.join(logs, me + ".log")))

if hasattr(features, "_build_pack"):
    build = features._build_pack

    def build_when_the_other_waits(*args, **kwargs):
        # the builder holds the lock until the other process is queued behind it (it logs "waiting for ..."),
        # so that both are inside pack_feature at once, whatever the machine's load
        t0 = time.time()
        while time.time() - t0 < 30:
            texts = [open(os.path.join(logs, f)).read() for f in os.listdir(logs) if f.endswith(".log")]
            if any("waiting for" in t for t in texts):
                break
            time.sleep(0.01)
        return build(*args, **kwargs)

    features._build_pack = build_when_the_other_waits

while not os.path.exists(os.path.join(logs, "go")):
    time.sleep(0.002)
store = features.pack_feature("f", root, 8, False, cache_root=cache, num_workers=2, logger=log, progress=False)
digest = hashlib.sha256(json.dumps(store.names).encode() + store.gather(store.rows(store.names))[0].tobytes())
with open(out, "w") as f:
    json.dump({"digest": digest.hexdigest(), "n": len(store)}, f)
"""


def test_two_processes_packing_at_once_build_once_and_leave_no_tmp(tmp_path):
    """Case 7: two first runs pack the same feature at the same time: one builds, the other waits and reuses."""
    root, cache, logs = str(tmp_path / "f"), str(tmp_path / "cache"), str(tmp_path / "logs")
    rng = np.random.default_rng(7)
    arrays = {f"u{i:03d}": rng.normal(size=8).astype(np.float32) for i in range(200)}
    _write(root, arrays)
    os.makedirs(logs)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, root, cache, logs, str(k), str(tmp_path / f"out{k}.json")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(2)]
    time.sleep(0.2)
    open(os.path.join(logs, "go"), "w").close()  # both start packing together
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    results = [json.load(open(tmp_path / f"out{k}.json")) for k in range(2)]
    assert results[0] == results[1] and results[0]["n"] == 200
    logs_text = [open(os.path.join(logs, f"{k}.log")).read() for k in range(2)]
    assert sum(t.count("packed to") for t in logs_text) == 1, logs_text  # exactly one build
    waiter = [t for t in logs_text if "packed to" not in t][0]
    assert "waiting for feature cache" in waiter and "packed meanwhile by another process" in waiter

    names = sorted(arrays)
    store = pack_feature("f", root, 8, False, cache_root=cache, progress=False)
    np.testing.assert_array_equal(store.gather(store.rows(names))[0], np.stack([arrays[n] for n in names]))
    assert [d for d in os.listdir(cache) if ".tmp" in d] == []


def test_leftover_tmp_folders_of_a_dead_packing_are_removed(tmp_path, caplog):
    root, cache = str(tmp_path / "f"), str(tmp_path / "cache")
    _write(root, {"a": np.ones(3, np.float32), "b": np.zeros(3, np.float32)})
    cdir = cache_dir_for("f", root, cache)
    for leftover in (cdir + ".tmp12345", cdir + ".tmp777-old"):
        os.makedirs(leftover)
        with open(os.path.join(leftover, "data.npy"), "wb") as f:
            f.write(b"\x93NUMPY half a pack")
    log = _logger("leftover")
    caplog.set_level(logging.INFO, logger=log.name)
    store = pack_feature("f", root, 3, False, cache_root=cache, logger=log, progress=False)
    assert store.names == ["a", "b"]
    assert sorted(os.listdir(cache)) == sorted([os.path.basename(cdir), os.path.basename(cdir) + ".lock"])
    assert any(f"removed {cdir}.tmp12345" in m for m in _messages(caplog, log))

    os.makedirs(cdir + ".tmp4242-old")  # beside an intact pack (a packing killed while removing the old one)
    pack_feature("f", root, 3, False, cache_root=cache, progress=False)
    assert not os.path.exists(cdir + ".tmp4242-old")


def test_bool_feature_array_is_refused_as_not_numeric(tmp_path):
    root = str(tmp_path / "f")
    _write(root, {"a": np.ones(4, np.float32), "flags": np.array([True, False, True, True])})
    with pytest.raises(DataError) as e:
        pack_feature("f", root, 4, False, cache_root=str(tmp_path / "cache"), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"'{root}'" in msg
    assert "1 unreadable files: flags.npy (dtype bool is not a numeric feature)" in msg and "re-extract" in msg
    assert not os.path.exists(cache_dir_for("f", root, str(tmp_path / "cache")))


def test_float64_beyond_float32_range_is_named_apart_from_nan(tmp_path):
    root = str(tmp_path / "f")
    rng = np.random.default_rng(8)
    _write(root, {"ok32": rng.normal(size=3).astype(np.float32), "ok64": rng.normal(size=3),
                  "huge": np.array([1.0, 1e300, 0.0]), "tiny_neg": np.array([-5e38, 0.0, 0.0])})
    with pytest.raises(DataError) as e:
        pack_feature("f", root, 3, False, cache_root=str(tmp_path / "cache"), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"'{root}'" in msg
    assert "2 files hold values beyond the float32 range (|x| > 3.4e38)" in msg
    assert "huge.npy (|x| up to 1e+300)" in msg and "tiny_neg.npy" in msg and "ok64" not in msg
    assert "rescale or clip" in msg and "NaN or Inf" not in msg

    os.remove(os.path.join(root, "huge.npy"))
    os.remove(os.path.join(root, "tiny_neg.npy"))
    np.save(os.path.join(root, "inf64.npy"), np.array([np.inf, 0.0, 0.0]))  # a real Inf stays "NaN or Inf"
    with pytest.raises(DataError, match=r"1 files hold NaN or Inf: inf64.npy"):
        pack_feature("f", root, 3, False, cache_root=str(tmp_path / "cache"), progress=False)
    assert [d for d in os.listdir(tmp_path / "cache") if ".tmp" in d] == []  # the half-written pack is gone
    os.remove(os.path.join(root, "inf64.npy"))
    store = pack_feature("f", root, 3, False, cache_root=str(tmp_path / "cache"), progress=False)
    assert store.names == ["ok32", "ok64"] and store.data.dtype == np.float32
