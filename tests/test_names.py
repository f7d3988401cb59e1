"""Names stay inside their folder (common/names.py): a sample name from a table, list, split list or subtitle CSV,
and a run name from a flag, is refused in one line naming the row before anything is written, at every entry
point: import_dataset.py, extract_features.py (--names, a data set's lists, subtitles), the feature writer,
build_splits.py, train.py (split list, --run_name)."""

import contextlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

from common.errors import DataError
from common.names import check_name, check_names, name_problem
from conftest import load_script

GOOD = ["s0001", "dia0_utt1.mp4", "a b", "ünïcode_名字", "007", "a..b", "..hidden", "x.", "sample-1_v2.wav"]
BAD = ["", ".", "..", "sub/dir", "../../ESCAPED", "/abs/x", "a\\b", "..\\up", "C:\\x", "a\0b", "a\nb", "dir/"]
ESCAPES = ["../../ESCAPED", "sub/dir", "/abs/x"]


def run_main(module, argv):
    """``module.main(argv)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_error_line(err):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def escaped(root):
    """Files an escaping name could have made: anything called ESCAPED* at or above ``root``, or under it."""
    found = list(root.rglob("ESCAPED*"))
    for up in [root, *root.parents][:6]:
        found += [p for p in up.glob("ESCAPED*")]
    return found


# ------------------------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert name_problem(name) is None
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_with_the_value(name):
    assert name_problem(name)
    with pytest.raises(DataError, match="no '/'") as e:
        check_name(name, "--run_name")
    assert "--run_name" in str(e.value) and repr(name) in str(e.value) and "\n" not in str(e.value).replace(
        repr(name), "")


def test_check_names_names_the_first_row_and_the_count():
    with pytest.raises(DataError) as e:
        check_names(["ok", "fine", "../../ESCAPED", "sub/dir"], "name list 'x.csv'", row_offset=2)
    msg = str(e.value)
    assert "name list 'x.csv', row 4" in msg and "'../../ESCAPED'" in msg and "2 bad names" in msg
    with pytest.raises(DataError, match=r"entry #1: name '/abs/x' is an absolute path"):
        check_names(["ok", "/abs/x"], "split list")
    assert check_names(GOOD, "good") == GOOD
    assert name_problem(12) is None and name_problem(None)  # a number in a JSON list is a name; None is not


# ------------------------------------------------------------------------------------------------ import_dataset
@pytest.mark.parametrize("bad", ESCAPES)
def test_import_dataset_refuses_a_name_leaving_its_folder(tmp_path, bad):
    script = load_script("preprocess/import_dataset.py")
    work = tmp_path / "a" / "b" / "c" / "d"
    work.mkdir(parents=True)
    rows = [("u0", "joy"), ("u1", "neutral"), (bad, "joy"), ("u3", "neutral")]
    pd.DataFrame(rows, columns=["utt", "emotion"]).to_csv(work / "table.csv", index=False)
    out = work / "out"
    code, _, err = run_main(script, ["--name", "mine", "--table", work / "table.csv", "--name_col", "utt",
                                     "--label_col", "emotion", "--labels", "neutral,joy", "--out", out])
    line = one_error_line(err)
    assert code == 2
    assert "row 4" in line and repr(bad) in line and "table.csv" in line
    assert not out.exists() and not list(work.parent.rglob("*.tmp*"))
    assert sorted(p.name for p in work.iterdir()) == ["table.csv"]
    assert not escaped(tmp_path)


def test_import_dataset_keeps_legitimate_names(tmp_path):
    script = load_script("preprocess/import_dataset.py")
    names = ["dia0_utt1.mp4", "a b", "名字", "007"]
    pd.DataFrame({"name": names, "label": ["joy", "neutral", "joy", "neutral"]}).to_csv(tmp_path / "t.csv",
                                                                                         index=False)
    code, _, err = run_main(script, ["--name", "mine", "--table", tmp_path / "t.csv", "--labels", "neutral,joy",
                                     "--out", tmp_path / "out"])
    assert code == 0, err
    assert pd.read_csv(tmp_path / "out" / "train_labels.csv", dtype=str)["name"].tolist() == names


# ------------------------------------------------------------------------------------------------ extract_features
@pytest.fixture
def extract(monkeypatch):
    """extract_features.py's main, with model loading turned into a failure: a refusal must come before it."""
    from extraction import encoders

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the names were checked")

    monkeypatch.setattr(encoders, "load_encoder", no_model)
    return load_script("preprocess/extract_features.py")


@pytest.mark.parametrize("bad", ESCAPES)
def test_extract_features_refuses_a_bad_name_in_names_csv(tmp_path, extract, bad):
    work = tmp_path / "a" / "b" / "c" / "d"
    work.mkdir(parents=True)
    pd.DataFrame({"name": ["u0", bad, "u2"]}).to_csv(work / "names.csv", index=False)
    pd.DataFrame({"name": ["u0", "u2"], "text": ["hi", "ho"]}).to_csv(work / "subs.csv", index=False)
    out = work / "feats"
    code, _, err = run_main(extract, ["--modality", "text", "--model", work / "no-model", "--names",
                                      work / "names.csv", "--subtitles", work / "subs.csv", "--out", out, "--quiet",
                                      "--device", "cpu"])
    line = one_error_line(err)
    assert code == 2 and "names.csv" in line and "row 3" in line and repr(bad) in line
    assert not out.exists() and not escaped(tmp_path)


@pytest.mark.parametrize("bad", ["../../ESCAPED", "sub/dir", "/abs/feat"])
def test_extract_features_refuses_a_feature_name_that_is_a_path(tmp_path, extract, bad):
    """--feature_name names the folder under features/<dataset>/: a path there is refused before the model loads."""
    pd.DataFrame({"name": ["u0", "u2"], "text": ["hi", "ho"]}).to_csv(tmp_path / "subs.csv", index=False)
    pd.DataFrame({"name": ["u0", "u2"]}).to_csv(tmp_path / "names.csv", index=False)
    code, _, err = run_main(extract, ["--modality", "text", "--model", tmp_path / "no-model", "--names",
                                      tmp_path / "names.csv", "--subtitles", tmp_path / "subs.csv", "--feature_name",
                                      bad, "--out", tmp_path / "feats", "--quiet", "--device", "cpu"])
    line = one_error_line(err)
    assert code == 2 and "--feature_name" in line and repr(bad) in line
    assert not (tmp_path / "feats").exists() and not escaped(tmp_path)


def test_extract_features_refuses_a_bad_name_in_a_subtitle_csv(tmp_path, extract):
    pd.DataFrame({"name": ["u0", "u1"]}).to_csv(tmp_path / "names.csv", index=False)
    pd.DataFrame({"name": ["u0", "u1", "../../ESCAPED"], "text": ["a", "b", "c"]}).to_csv(tmp_path / "subs.csv",
                                                                                          index=False)
    out = tmp_path / "feats"
    code, _, err = run_main(extract, ["--modality", "text", "--model", tmp_path / "no-model", "--names",
                                      tmp_path / "names.csv", "--subtitles", tmp_path / "subs.csv", "--out", out,
                                      "--quiet", "--device", "cpu"])
    line = one_error_line(err)
    assert code == 2 and "subtitle file" in line and "row 4" in line and "'../../ESCAPED'" in line
    assert not out.exists() and not escaped(tmp_path)


def test_extract_features_refuses_a_bad_name_in_a_data_sets_list(tiny, extract):
    labels = pd.read_csv(tiny.tmp / "labels.csv", dtype={"name": str})
    labels.loc[len(labels)] = {**labels.iloc[0].to_dict(), "name": "sub/dir"}
    labels.to_csv(tiny.tmp / "labels.csv", index=False)
    out = tiny.tmp / "feats"
    code, _, err = run_main(extract, ["--dataset", "tiny", "--modality", "text", "--model", tiny.tmp / "no-model",
                                      "--subtitles", tiny.tmp / "labels.csv", "--out", out, "--quiet"])
    line = one_error_line(err)
    assert code == 2 and "labels.csv" in line and f"row {len(labels) + 1}" in line and "'sub/dir'" in line
    assert not out.exists()


def test_the_feature_writer_refuses_a_name_leaving_its_folder(tmp_path):
    from extraction import writer

    assert writer.feature_path(str(tmp_path), "dia0_utt1.mp4") == os.path.join(str(tmp_path), "dia0_utt1.mp4.npy")
    for bad in ESCAPES:
        with pytest.raises(DataError, match="clip name"):
            writer.feature_path(str(tmp_path / "f"), bad)
    with pytest.raises(DataError, match="entry #1"):
        writer.write_features(str(tmp_path), "teacher", ["ok", "../../ESCAPED"], np.zeros((2, 3)))
    assert not (tmp_path / "teacher").exists() and not escaped(tmp_path)


# ------------------------------------------------------------------------------------------------ readers
def test_every_reader_names_the_row(tmp_path):
    from dataloader.files import read_label_csv, read_names_csv, read_split_json, read_subtitles

    pd.DataFrame({"name": ["a", "b", "../x"], "discrete": ["joy"] * 3}).to_csv(tmp_path / "l.csv", index=False)
    for reader, what in ((read_names_csv, "name list"), (read_label_csv, "label table")):
        with pytest.raises(DataError, match=rf"{what} '.*l\.csv', row 4: name '\.\./x'"):
            reader(str(tmp_path / "l.csv"))
    pd.DataFrame({"name": ["/abs/x"], "text": ["t"]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataError, match="subtitle file .* row 2: name '/abs/x' is an absolute path"):
        read_subtitles(str(tmp_path / "s.csv"))
    (tmp_path / "split.json").write_text(json.dumps({"train_info": {"names": ["a"], "emos": ["joy"]},
                                                     "valid_info": {"names": ["b", "sub/dir"], "emos": ["joy"] * 2}}))
    with pytest.raises(DataError, match="'valid_info' names of split list .* entry #1: name 'sub/dir'"):
        read_split_json(str(tmp_path / "split.json"))


def test_build_splits_refuses_a_label_table_with_a_bad_name(tmp_path):
    script = load_script("preprocess/build_splits.py")
    rows = [(f"s{i}", ["neutral", "joy"][i % 2]) for i in range(20)] + [("../../ESCAPED", "joy")]
    pd.DataFrame(rows, columns=["name", "discrete"]).to_csv(tmp_path / "labels.csv", index=False)
    code, _, err = run_main(script, ["--label_csv", tmp_path / "labels.csv", "--emo_rule", "MELD", "--out_dir",
                                     tmp_path / "lst"])
    line = one_error_line(err)
    assert code == 2 and "row 22" in line and "'../../ESCAPED'" in line
    assert not (tmp_path / "lst").exists()


# ------------------------------------------------------------------------------------------------ train.py
def test_train_refuses_a_split_list_with_a_bad_name(tiny):
    import train as train_script

    doc = json.load(open(tiny.tmp / "train_lst" / "tiny" / "seed0.json"))
    doc["train_info"]["names"][3] = "../../ESCAPED"
    (tiny.tmp / "bad.json").write_text(json.dumps(doc))
    save = tiny.tmp / "s"
    code, _, err = run_main(train_script, ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "1",
                                           "--split", tiny.tmp / "bad.json", "--save_root", save, "--quiet",
                                           "--device", "cpu", "--run_name", "r"])
    line = one_error_line(err)
    assert code == 2 and "entry #3" in line and "'../../ESCAPED'" in line and "bad.json" in line
    assert not list(save.rglob("r")) and not escaped(tiny.tmp)


@pytest.mark.parametrize("run_name", ["../../x", "/abs/x", "a/b", ".."])
def test_train_refuses_a_run_name_leaving_save_root(tiny, run_name, tmp_path):
    import train as train_script

    save = tiny.tmp / "s"
    target = tmp_path / "abs_target"
    name = str(target) if run_name == "/abs/x" else run_name
    code, _, err = run_main(train_script, ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "1",
                                           "--save_root", save, "--quiet", "--device", "cpu", "--run_name", name])
    line = one_error_line(err)
    assert code == 2 and "--run_name" in line and repr(name) in line
    assert not save.exists() and not target.exists()
    assert not (tiny.tmp / "x").exists() and not (tiny.tmp / "tiny" / "x").exists()
