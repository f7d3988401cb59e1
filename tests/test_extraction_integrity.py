"""A feature folder never mixes (issue 23, items 2 and 3 and the extraction ones of "Smaller ones"): one
extraction at a time holds the folder's lock, a clip whose input changed since its file was written is
redone, ``--limit`` must be positive, a refused first run leaves no folder behind, and a manifest that is
not a JSON object is one line. Tiny seeded models through extract_features.py's main, in this process."""

import contextlib
import io
import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

from common.errors import DataError
from common.locks import FileLock, LockHeld
from conftest import load_script
from extraction import media, runner, writer
from extraction.tiny_models import save_tiny_model
from test_names import one_error_line
from test_reliability import _hold_lock  # a separate process holding a lock until killed (as a first run would)

LOCK = ".extract.lock"  # the feature folder's lock file
TEXTS = ["i am so happy today", "this makes me angry", "i feel sad and worried", "what a surprise"]
NAMES = [f"u{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {fam: save_tiny_model(fam, str(root / fam), texts=TEXTS, max_length=24) for fam in ("bert", "hubert")}


@pytest.fixture(scope="module")
def extract():
    return load_script("preprocess/extract_features.py")


@pytest.fixture
def data(tmp_path):
    """Names, subtitles and one short wav per name."""
    pd.DataFrame({"name": NAMES}).to_csv(tmp_path / "names.csv", index=False)
    write_subs(tmp_path, TEXTS)
    (tmp_path / "audio").mkdir()
    for i, n in enumerate(NAMES):
        write_tone(tmp_path / "audio" / f"{n}.wav", 200 + 50 * i, seed=i)
    return tmp_path


def write_subs(d, texts):
    pd.DataFrame({"name": NAMES[:len(texts)], "text": texts}).to_csv(d / "subs.csv", index=False)


def write_tone(path, freq, seconds=0.6, seed=0):
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + np.random.default_rng(seed).normal(0, 0.01, t.size)
    media.write_wav(path, wave.astype(np.float32))


def run_main(module, *args):
    """``module.main(args)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([*map(str, args), "--quiet", "--device", "cpu"])
    return code, out.getvalue(), err.getvalue()


def text_args(d, models, out, *extra):
    return ["--modality", "text", "--model", models["bert"], "--names", d / "names.csv", "--subtitles",
            d / "subs.csv", "--out", out, *extra]


def audio_args(d, models, out, *extra):
    return ["--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv", "--audio_dir",
            d / "audio", "--out", out, *extra]


def report(out):
    return pd.read_csv(out / writer.REPORT, dtype={"name": str}).set_index("name")


# ------------------------------------------------------------------------------------- 2. one extraction per folder
def test_case2_second_extraction_on_a_folder_in_use_is_refused_naming_the_first(data, models, extract):
    """The first run holds the folder's lock (here this test holds it, as that run would); a second run, even
    with other settings and a folder whose manifest would refuse them, is refused by the lock, naming the first
    run (pid, host, since, command) and the fix, and writes nothing."""
    out = data / "feat"
    out.mkdir()
    first = FileLock(str(out / LOCK), what="first").acquire()
    try:
        code, _, err = run_main(extract, *text_args(data, models, out, "--layers", "-1"))
        line = one_error_line(err)
        assert code == 2 and f"feature folder '{out}' is in use by pid {os.getpid()} on " in line
        assert " since " in line and first.holder()["command"][:40] in line
        assert "--out" in line  # the fix: wait for it, or extract into another folder
        assert sorted(os.listdir(out)) == [LOCK]  # nothing written; the holder's folder and lock stay
        # the lock is taken before the folder's manifest is checked: a folder of other settings says "in use" too
        writer.write_manifest(str(out), {"settings": {"model": "other"}})
        code, _, err = run_main(extract, *text_args(data, models, out))
        assert code == 2 and "is in use by pid" in one_error_line(err)
    finally:
        first.release()
    os.remove(out / writer.MANIFEST)
    code, _, err = run_main(extract, *text_args(data, models, out))  # once released, the run goes ahead
    assert code == 0, err
    assert report(out).status.eq("ok").all()


def test_case2_the_lock_is_held_for_the_whole_run_and_a_killed_holder_frees_it(data, models, extract, monkeypatch):
    out = data / "feat"
    seen = []
    real = runner.extract_share

    def probing(*a, **k):  # while clips are extracted, another process cannot take the folder
        try:
            FileLock(str(out / LOCK), what=f"feature folder '{out}'").acquire().release()
            seen.append("free")
        except LockHeld as e:
            seen.append(str(e))
        return real(*a, **k)

    monkeypatch.setattr(runner, "extract_share", probing)
    code, _, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    assert len(seen) == 1 and f"is in use by pid {os.getpid()}" in seen[0]
    FileLock(str(out / LOCK)).acquire().release()  # released at the end of the run
    monkeypatch.undo()

    holder = _hold_lock(str(out / LOCK))  # a run killed with SIGKILL frees the folder: flock goes with its process
    try:
        code, _, err = run_main(extract, *text_args(data, models, out))
        assert code == 2 and f"is in use by pid {holder.pid}" in one_error_line(err)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, stdout, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    assert f"{len(NAMES)} already there" in stdout


# ------------------------------------------------------------------------------------- 3. features follow their inputs
def test_case3_a_changed_transcript_is_redone_not_kept(data, models, extract):
    out = data / "feat"
    code, _, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    before = {n: np.load(out / f"{n}.npy") for n in NAMES}
    fps = json.loads((out / writer.MANIFEST).read_text())["input_fingerprints"]
    assert sorted(fps) == NAMES and len(set(fps.values())) == len(NAMES)

    changed = [TEXTS[0], "what a surprise today", *TEXTS[2:]]  # u1's transcript re-imported with another text
    write_subs(data, changed)
    code, stdout, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    r = report(out)
    assert r.loc["u1", "status"] == "redone" and "input changed" in r.loc["u1", "reason"]
    assert r.loc[["u0", "u2", "u3"], "status"].eq("exists").all()
    assert "1 redone (input changed)" in stdout and "3 already there" in stdout
    assert not np.array_equal(np.load(out / "u1.npy"), before["u1"])
    for n in ("u0", "u2", "u3"):
        assert np.array_equal(np.load(out / f"{n}.npy"), before[n])
    fresh = data / "fresh"  # the redone clip equals a clip extracted from scratch with the new text
    run_main(extract, *text_args(data, models, fresh))
    assert np.array_equal(np.load(out / "u1.npy"), np.load(fresh / "u1.npy"))
    manifest = json.loads((out / writer.MANIFEST).read_text())
    assert manifest["counts"]["redone"] == 1 and manifest["input_fingerprints"]["u1"] != fps["u1"]

    code, stdout, _ = run_main(extract, *text_args(data, models, out))  # nothing changed: nothing redone
    assert code == 0 and f"{len(NAMES)} already there" in stdout and report(out).status.eq("exists").all()

    write_subs(data, [TEXTS[0], TEXTS[1], "", TEXTS[3]])  # a changed input that now fails keeps no old feature
    code, _, _ = run_main(extract, *text_args(data, models, out))
    assert code == 1 and report(out).loc["u2", "status"] == "missing_text" and not (out / "u2.npy").exists()
    write_subs(data, TEXTS[:3])  # an input that is gone cannot be compared: its feature is kept
    code, _, _ = run_main(extract, *text_args(data, models, out))
    assert report(out).loc["u3", "status"] == "exists" and (out / "u3.npy").exists()


def test_case3_a_changed_media_file_is_redone(data, models, extract):
    out = data / "feat"
    code, _, err = run_main(extract, *audio_args(data, models, out))
    assert code == 0, err
    before = np.load(out / "u2.npy")
    write_tone(data / "audio" / "u2.wav", 900, seconds=0.8, seed=7)  # re-exported: another size and mtime
    code, stdout, err = run_main(extract, *audio_args(data, models, out))
    assert code == 0, err
    r = report(out)
    assert r.loc["u2", "status"] == "redone" and r.drop("u2").status.eq("exists").all()
    assert not np.array_equal(np.load(out / "u2.npy"), before) and "1 redone" in stdout
    st = os.stat(data / "audio" / "u0.wav")  # the same size and a new mtime: redone as well
    os.utime(data / "audio" / "u0.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    code, _, _ = run_main(extract, *audio_args(data, models, out))
    assert report(out).loc["u0", "status"] == "redone" and report(out).drop("u0").status.eq("exists").all()


def test_case3_a_folder_without_recorded_fingerprints_keeps_its_files_and_says_so(data, models, extract):
    out = data / "feat"
    code, _, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    manifest = json.loads((out / writer.MANIFEST).read_text())
    del manifest["input_fingerprints"]  # a folder written before fingerprints were recorded
    writer.write_manifest(str(out), manifest)
    before = np.load(out / "u1.npy")
    write_subs(data, [TEXTS[0], "what a surprise today", *TEXTS[2:]])
    code, stdout, err = run_main(extract, *text_args(data, models, out))
    assert code == 0, err
    assert report(out).status.eq("exists").all() and np.array_equal(np.load(out / "u1.npy"), before)
    assert f"{len(NAMES)} clips have no recorded input fingerprint" in err
    # from now on their inputs are recorded: a later change is redone
    write_subs(data, [TEXTS[0], "i am so angry today", *TEXTS[2:]])
    code, _, _ = run_main(extract, *text_args(data, models, out))
    assert report(out).loc["u1", "status"] == "redone"


# ------------------------------------------------------------------------------------- smaller ones
@pytest.mark.parametrize("limit", ["0", "-2"])
def test_limit_zero_or_negative_is_refused(data, models, extract, limit):
    out = data / "feat"
    code, _, err = run_main(extract, *text_args(data, models, out, "--limit", limit))
    line = one_error_line(err)
    assert code == 2 and f"--limit {limit}" in line and "positive" in line
    assert not out.exists()


def test_a_refused_first_extraction_leaves_no_empty_folder(data, models, extract, monkeypatch):
    """A refusal once the folder is made (here the folder check, made to refuse) removes the folders this run
    made, and only those; a folder that was there stays."""
    def refuse(folder, identity):
        raise DataError(f"'{folder}': refused for the test")

    monkeypatch.setattr(writer, "check_folder", refuse)
    out = data / "new" / "feat"
    code, _, err = run_main(extract, *text_args(data, models, out))
    assert code == 2 and "refused for the test" in one_error_line(err)
    assert not out.exists() and not (data / "new").exists()
    (data / "kept").mkdir()  # a folder that was there before (empty or not) is never removed
    code, _, _ = run_main(extract, *text_args(data, models, data / "kept"))
    assert code == 2 and os.listdir(data / "kept") == []
    (data / "kept" / "other.txt").write_text("another run's")
    code, _, _ = run_main(extract, *text_args(data, models, data / "kept"))
    assert code == 2 and os.listdir(data / "kept") == ["other.txt"]


@pytest.mark.parametrize("content", ["[]", "3", '"text"', "null", '{"settings": [1, 2]}'])
def test_a_manifest_that_is_not_an_object_is_one_line_naming_it(data, models, extract, content):
    out = data / "feat"
    out.mkdir()
    (out / writer.MANIFEST).write_text(content)
    with pytest.raises(DataError, match=rf"{writer.MANIFEST}.*(restore it|another --out)"):
        writer.check_folder(str(out), {"model": "bert"})
    code, _, err = run_main(extract, *text_args(data, models, out))
    line = one_error_line(err)
    assert code == 2 and writer.MANIFEST in line and "--out" in line
    assert (out / writer.MANIFEST).read_text() == content  # left as it was
