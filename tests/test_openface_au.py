"""preprocess/openface_au.py on hand-written OpenFace 2.x FeatureExtraction CSVs."""

import os

import numpy as np
import pandas as pd
import pytest

import openface_au
from common.errors import DataError

R_COLS = [a + "_r" for a in openface_au.AU_R]
C_COLS = [a + "_c" for a in openface_au.AU_C]
AU_COLS = R_COLS + C_COLS  # the output layout


def au_value(col, frame):
    """A value unique to (column, frame): the column's index in the output layout, plus frame / 100."""
    return AU_COLS.index(col) + frame / 100.0


def write_csv(path, rows, drop=(), nan=(), extra=True, shuffle_aus=False):
    """An OpenFace-style CSV: header names and values after ", " (OpenFace's leading space).

    ``rows``: (frame, face_id, success); ``drop``: AU columns left out; ``nan``: (frame, face_id) whose
    AU01_r is blank; ``extra``: gaze/pose/landmark columns too; ``shuffle_aus``: AU columns out of order.
    """
    aus = [c for c in (R_COLS + C_COLS) if c not in drop]
    if shuffle_aus:
        aus = aus[::-1]
    head = ["frame", "face_id", "timestamp", "confidence", "success"]
    if extra:
        head += ["gaze_0_x", "gaze_angle_y", "pose_Tx", "pose_Rz", "x_0", "y_67"]
    header = head + aus
    lines = [", ".join(header)]
    for frame, face, success in rows:
        vals = [str(frame), str(face), f"{(frame - 1) / 30:.3f}", "0.98" if success else "0.0", str(success)]
        if extra:
            vals += ["0.1", "-0.2", "12.5", "0.03", "301.2", "411.9"]
        for c in aus:
            blank = c == "AU01_r" and (frame, face) in nan
            vals.append("" if blank else f"{au_value(c, frame):.2f}")
        lines.append(", ".join(vals))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    return d


def test_layout_matches_the_registered_au_feature():
    import config
    assert openface_au.DIM == 35 == len(AU_COLS) == config.FEAT_AU_DICT["demo-openface-au-FRM"][0]
    assert openface_au.AU_COLUMNS[:2] == ["AU01_r", "AU02_r"] and openface_au.AU_COLUMNS[-1] == "AU45_c"
    assert len(openface_au.AU_R) == 17 and len(openface_au.AU_C) == 18


def test_normal_clip_layout_order_and_dropped_frames(src):
    # frame 3 unsuccessful, frame 5 has a blank AU value; AU columns written in reverse order in the file
    rows = [(1, 0, 1), (2, 0, 1), (3, 0, 0), (4, 0, 1), (5, 0, 1)]
    path = write_csv(src / "clip_a.csv", rows, nan={(5, 0)}, shuffle_aus=True)
    arr, info = openface_au.convert_clip(str(path))
    assert arr.dtype == np.float32 and arr.shape == (3, 35)
    frames = [1, 2, 4]
    expect = np.array([[au_value(c, f) for c in AU_COLS] for f in frames], dtype=np.float32)
    np.testing.assert_allclose(arr, expect, atol=1e-5)
    assert info["status"] == "ok" and info["frames"] == 3 and info["faces"] == 1 and info["nan_frames"] == 1
    assert info["rows"] == 5 and info["successful"] == 4
    assert "NaN" in info["reason"] and "unsuccessful" in info["reason"]


def test_without_optional_columns(src):
    # only success and the AU columns: no frame, face_id, gaze or pose
    aus = ", ".join(AU_COLS)
    vals = ", ".join("1.0" for _ in AU_COLS)
    (src / "bare.csv").write_text(f" success, {aus}\n 1, {vals}\n 0, {vals}\n")
    arr, info = openface_au.convert_clip(str(src / "bare.csv"))
    assert arr.shape == (1, 35) and info["faces"] == 1


def test_multi_face_keeps_the_face_seen_longest_ordered_by_frame(src):
    # face 0: 2 successful frames; face 1: 3 successful (rows out of frame order) and 1 unsuccessful
    rows = [(1, 0, 1), (3, 1, 1), (1, 1, 1), (2, 0, 1), (2, 1, 1), (4, 1, 0), (3, 0, 0)]
    arr, info = openface_au.convert_clip(str(write_csv(src / "two.csv", rows)))
    assert info["face_id"] == 1 and info["faces"] == 2 and arr.shape == (3, 35)
    np.testing.assert_allclose(arr[:, 0], [au_value("AU01_r", f) for f in (1, 2, 3)], atol=1e-5)
    assert "kept face 1 of 2" in info["reason"]
    # a tie goes to the lowest face_id
    rows = [(1, 2, 1), (2, 2, 1), (1, 5, 1), (2, 5, 1)]
    _, info = openface_au.convert_clip(str(write_csv(src / "tie.csv", rows)))
    assert info["face_id"] == 2


def test_folder_reports_empty_and_broken_clips_and_goes_on(src, tmp_path):
    write_csv(src / "good.csv", [(1, 0, 1), (2, 0, 1)])
    write_csv(src / "nobody.csv", [(1, 0, 0), (2, 0, 0)])
    write_csv(src / "allnan.csv", [(1, 0, 1)], nan={(1, 0)})
    write_csv(src / "noaus.csv", [(1, 0, 1)], drop=("AU28_c", "AU45_r"))
    (src / "garbage.csv").write_bytes(b"")
    (src / "notes.txt").write_text("not a clip")
    with pytest.raises(DataError, match=r"noaus\.csv.*AU45_r, AU28_c"):
        openface_au.convert_clip(str(src / "noaus.csv"))

    out = tmp_path / "out"
    report = openface_au.convert_folder(str(src), str(out), num_workers=2, progress=False)
    assert list(report.columns) == ["name", "status", "frames", "faces", "reason"]
    assert sorted(os.listdir(out)) == ["good.npy", "openface_report.csv"]
    status = dict(zip(report.name, report.status))
    assert status == {"allnan": "empty", "garbage": "error", "good": "ok", "noaus": "error", "nobody": "empty"}
    reason = dict(zip(report.name, report.reason))
    assert "no successful frame" in reason["nobody"]
    assert "NaN" in reason["allnan"]
    assert "AU45_r" in reason["noaus"] and "AU28_c" in reason["noaus"] and "-aus" in reason["noaus"]
    assert "empty" in reason["garbage"]
    on_disk = pd.read_csv(out / "openface_report.csv", keep_default_na=False)
    assert list(on_disk.columns) == ["name", "status", "frames", "faces", "reason"]
    assert on_disk.set_index("name").loc["good", "frames"] == 2
    assert np.load(out / "good.npy").shape == (2, 35)
    text = openface_au.summarize(report, str(out))
    assert "nobody [empty]" in text and "noaus [error]" in text and "1 ok" in text


def test_rerun_skips_existing_outputs_and_overwrite_redoes_them(src, tmp_path):
    write_csv(src / "a.csv", [(1, 0, 1), (2, 0, 1)])
    write_csv(src / "b.csv", [(1, 0, 1)])
    out = tmp_path / "out"
    first = openface_au.convert_folder(str(src), str(out), progress=False)
    assert first.status.tolist() == ["ok", "ok"]
    marker = np.full((7, 35), -1, np.float32)
    np.save(out / "a.npy", marker)  # stands in for an output of an earlier run
    os.remove(out / "b.npy")  # as if the earlier run had stopped before b
    second = openface_au.convert_folder(str(src), str(out), progress=False)
    assert second.status.tolist() == ["skipped", "ok"] and second.frames.tolist() == [7, 1]
    np.testing.assert_array_equal(np.load(out / "a.npy"), marker)
    third = openface_au.convert_folder(str(src), str(out), overwrite=True, progress=False)
    assert third.status.tolist() == ["ok", "ok"] and np.load(out / "a.npy").shape == (2, 35)
    assert not [f for f in os.listdir(out) if f.endswith(".part")]


def test_main_exit_codes(src, tmp_path, capsys):
    write_csv(src / "nobody.csv", [(1, 0, 0)])
    out = tmp_path / "out"
    assert openface_au.main(["--src", str(src), "--out", str(out), "--quiet"]) == 1  # nothing converted
    assert "nobody [empty]" in capsys.readouterr().out
    write_csv(src / "good.csv", [(1, 0, 1)])
    assert openface_au.main(["--src", str(src), "--out", str(out), "--quiet", "--num_workers", "1"]) == 0
    assert (out / "good.npy").is_file() and not (out / "nobody.npy").exists()
    assert openface_au.main(["--src", str(src), "--out", str(out), "--quiet"]) == 0  # all done already: resumes
    empty = tmp_path / "empty"
    empty.mkdir()
    assert openface_au.main(["--src", str(empty), "--out", str(out), "--quiet"]) == 1
    assert "holds no .csv files" in capsys.readouterr().err
    assert openface_au.main(["--src", str(tmp_path / "absent"), "--out", str(out), "--quiet"]) == 1
    assert "is not a folder" in capsys.readouterr().err
