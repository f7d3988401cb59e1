"""Issue 23, item 6, "names mangled on import": a name is read as the string written in every table the project
reads (dataloader/files.py's read_table and read_csv_names), so ``001``, ``010``, ``1e3``, ``NA``, ``nan`` and
``None`` stay as written (pandas' defaults made them 1.0, 10.0, 1000.0 and NaN), and an empty name is refused in
one line naming its row (it used to pass as the string 'nan')."""

import json

import pandas as pd

from conftest import load_script
from test_names import one_error_line, run_main

ODD = ["001", "010", "1e3", "NA", "nan", "None", "-1.#IND", "0x1F"]


def as_written(path):
    """The ``name`` column of a CSV this project wrote, as raw text (no parsing at all)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    col = lines[0].split(",").index("name")
    return [line.split(",")[col] for line in lines[1:]]


def test_names_mangled_on_import_stay_as_written(tmp_path):
    script = load_script("preprocess/import_dataset.py")
    labels = ["joy", "neutral"] * 4
    rows = [f"{n},{e},{i % 2},c{i // 4},{i % 4},0.5,train" for i, (n, e) in enumerate(zip(ODD, labels))]
    rows += ["007,,0,c9,0,,train", "NULL,joy,0,c9,1,-0.25,test"]
    (tmp_path / "t.csv").write_text("id,emotion,x,conv,turn,val,part\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    code, _, err = run_main(script, ["--name", "mine", "--table", tmp_path / "t.csv", "--name_col", "id",
                                     "--label_col", "emotion", "--labels", "neutral,joy", "--dialogue_col", "conv",
                                     "--order_col", "turn", "--valence_col", "val", "--split_col", "part",
                                     "--out", out])
    assert code == 0, err
    assert as_written(out / "train_labels.csv") == ODD
    assert as_written(out / "unlabeled.csv") == ["007"]
    assert as_written(out / "test.csv") == ["NULL"]
    table = pd.read_csv(out / "train_labels.csv", dtype=str, keep_default_na=False)
    assert table["valence"].astype(float).tolist() == [0.5] * len(ODD)  # numbers still parsed as numbers
    assert table["order"].astype(float).tolist() == [float(i % 4) for i in range(len(ODD))]


def test_an_empty_name_on_import_is_refused_naming_its_row(tmp_path):
    script = load_script("preprocess/import_dataset.py")
    (tmp_path / "t.csv").write_text("id,emotion\n001,joy\n010,neutral\n,joy\nNA,neutral\n")
    out = tmp_path / "out"
    code, _, err = run_main(script, ["--name", "mine", "--table", tmp_path / "t.csv", "--name_col", "id",
                                     "--label_col", "emotion", "--labels", "neutral,joy", "--out", out])
    line = one_error_line(err)
    assert code == 2 and "row 4" in line and "''" in line and "empty" in line, line
    assert not out.exists()


def test_name_and_label_readers_return_names_as_written(tmp_path):
    from dataloader.files import read_label_csv, read_names_csv

    (tmp_path / "names.csv").write_text("name,score\n" + "\n".join(f"{n},{i}" for i, n in enumerate(ODD)) + "\n")
    assert read_names_csv(str(tmp_path / "names.csv")) == ODD
    labels = ["joy", "neutral"] * 4
    (tmp_path / "labels.csv").write_text("name,discrete,valence\n" + "\n".join(
        f"{n},{e},{'' if i == 2 else i / 10}" for i, (n, e) in enumerate(zip(ODD, labels))) + "\n")
    df = read_label_csv(str(tmp_path / "labels.csv"), ["neutral", "joy"])
    assert df["name"].tolist() == ODD
    assert df["valence"].dtype.kind == "f" and pd.isna(df["valence"][2]) and df["valence"][3] == 0.3


def test_an_empty_name_in_a_label_table_is_refused(tmp_path):
    import pytest

    from common.errors import DataError
    from dataloader.files import read_label_csv

    (tmp_path / "labels.csv").write_text("name,discrete\nNA,joy\n,joy\n")
    with pytest.raises(DataError, match=r"1 rows without a name \(rows 3 "):
        read_label_csv(str(tmp_path / "labels.csv"))


def test_a_split_built_from_such_names_keeps_them(tmp_path):
    script = load_script("preprocess/build_splits.py")
    names = ODD + [f"s{i:03d}" for i in range(20)]
    rows = [f"{n},{['neutral', 'joy'][i % 2]}" for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("name,discrete\n" + "\n".join(rows) + "\n")
    code, _, err = run_main(script, ["--label_csv", tmp_path / "labels.csv", "--emo_rule", "MELD", "--out_dir",
                                     tmp_path / "lst", "--seeds", "0"])
    assert code == 0, err
    doc = json.load(open(tmp_path / "lst" / "seed0.json"))
    got = doc["train_info"]["names"] + doc["valid_info"]["names"]
    assert sorted(got) == sorted(names) and all(isinstance(n, str) for n in got)


def test_a_dialogue_table_keeps_names_and_ids_as_written(tmp_path):
    from dataloader.dialogue import DialogueIndex

    (tmp_path / "t.csv").write_text("name,dialogue,order\n001,NA,0\n1e3,NA,1\nnan,010,0\n")
    index = DialogueIndex.from_csvs([str(tmp_path / "t.csv")])
    assert index.dialogue == {"001": "NA", "1e3": "NA", "nan": "010"}
