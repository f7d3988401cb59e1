"""Readers and writers of the project's file formats (see docs/file-formats.md).

* label table: CSV ``name,discrete[,valence]`` (extra columns, e.g. a dialogue id, are kept)
* name list: CSV with a ``name`` column
* split list: JSON ``{"train_info": {"names", "emos", "vals"}, "valid_info": {...}}``
"""

import json
import os
import re

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from common.errors import DataError  # noqa: F401  (raised here; re-exported for the readers' callers)
from common.names import check_names


def _preview(items, k=5):
    items = list(items)
    shown = ", ".join(str(x) for x in items[:k])
    more = f" (and {len(items) - k} more)" if len(items) > k else ""
    return f"{shown}{more}"


NA_STRINGS = sorted(STR_NA_VALUES)  # the cells pandas reads as missing in a number column ('', NA, nan, None, ...)


def read_csv_names(path, names=("name",), **kw):
    """``pd.read_csv`` with the columns ``names`` (matched on the stripped header; "name" and id-like columns)
    read as written: strings, nothing taken for missing, so ``001``, ``1e3``, ``NA``, ``nan`` and ``None`` stay as
    they are and an empty cell is ''. Every other column is parsed as pandas does (numbers, empty cells NaN)."""
    names = {str(n).strip() for n in names if n}
    header = pd.read_csv(path, nrows=0, **{k: v for k, v in kw.items() if k == "encoding"}).columns
    keep = [c for c in header if str(c).strip() in names]
    na = {c: NA_STRINGS for c in header if c not in keep}
    return pd.read_csv(path, dtype={c: str for c in keep}, keep_default_na=False, na_values=na, **kw)


def read_table(path, what, fix=None, strings=False, lower=False, names=("name",)):
    """A CSV as a DataFrame (UTF-8, a BOM allowed); a missing, empty, header-only, undecodable or malformed file is
    refused with its name and ``fix`` (a default one where none is given), and so are rows without a name.
    ``strings``: every cell a string, empty cells empty strings; else the columns ``names`` (always "name") are
    strings as written (see :func:`read_csv_names`); ``lower``: column names lower-cased."""
    tail = f": {fix}" if fix else ""
    if not os.path.isfile(path):
        raise DataError(f"{what} '{path}' does not exist{tail}")
    try:
        if strings:
            df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
        else:
            df = read_csv_names(path, ("name", *names), encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} '{path}' is empty{tail or ': it needs a header row and one row per sample'}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{what} '{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8, "
                        "e.g. iconv -f GBK -t UTF-8") from None
    except pd.errors.ParserError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{what} '{path}' is not a valid CSV ({first}){tail}") from None
    df.columns = [str(c).strip().lower() if lower else str(c).strip() for c in df.columns]
    if "name" in df.columns:
        empty = df["name"].isna() | (df["name"].astype(str).str.strip() == "")
        if empty.any():
            raise DataError(f"{what} '{path}' has {int(empty.sum())} rows without a name (rows "
                            f"{_preview((df.index[empty] + 2).tolist())} counting the header as 1); fill or drop them")
        df["name"] = df["name"].astype(str).str.strip()
        check_names(df["name"].tolist(), f"{what} '{path}'", row_offset=2)
    if df.empty and len(df.columns):
        raise DataError(f"{what} '{path}' has a header but no rows{tail or '; it needs one row per sample'}")
    return df


def read_names_csv(path):
    """Names from a CSV with a ``name`` column (other columns are ignored)."""
    df = read_table(path, "name list")
    if "name" not in df.columns:
        raise DataError(f"'{path}' has no 'name' column (columns: {list(df.columns)}); "
                        "a name list is a CSV whose header includes 'name'")
    names = df["name"].astype(str).tolist()
    check_names(names, f"name list '{path}'", row_offset=2)
    dup = pd.Series(names)[pd.Series(names).duplicated()].unique()
    if len(dup):
        raise DataError(f"'{path}' lists {len(dup)} names more than once: {_preview(dup)}")
    return names


def check_labels(emos, emo_rule, source):
    """Raise if any label is outside the label set, naming the values and their count."""
    allowed = set(emo_rule)
    bad = [e for e in emos if e not in allowed]
    if bad:
        counts = pd.Series(bad).value_counts()
        listing = ", ".join(f"'{k}' x{v}" for k, v in counts.head(5).items())
        raise DataError(
            f"{len(bad)} labels in {source} are not in the label set {emo_rule}: {listing}"
            + (f" (and {len(counts) - 5} more values)" if len(counts) > 5 else "")
            + ". Fix the labels or pick the right --emo_rule (config.EMO_RULE)."
        )


def read_label_csv(path, emo_rule=None):
    """A label table as a DataFrame with at least ``name``, ``discrete`` and ``valence`` columns.

    Labels are lower-cased and stripped; with ``emo_rule`` every label is checked against the set.
    A missing ``valence`` column is filled with 0.
    """
    df = read_table(path, "label table")
    for col in ("name", "discrete"):
        if col not in df.columns:
            raise DataError(f"label table '{path}' has no '{col}' column (columns: {list(df.columns)}); "
                            "expected name,discrete[,valence]")
    check_names(df["name"].tolist(), f"label table '{path}'", row_offset=2)
    empty = df["discrete"].isna() | (df["discrete"].astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"label table '{path}' has {int(empty.sum())} rows with an empty label: "
                        f"{_preview(df['name'][empty])}; fill them, or move unlabelled samples to the unlabelled list")
    df["discrete"] = df["discrete"].astype(str).str.strip().str.lower()
    if "valence" not in df.columns:
        df["valence"] = 0.0
    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise DataError(f"label table '{path}' lists {len(dup)} names more than once: {_preview(dup)}")
    if emo_rule is not None:
        check_labels(df["discrete"].tolist(), emo_rule, f"'{path}'")
    return df


def write_split_json(path, train_info, valid_info, extra=None):
    """Write a split list; each info is a dict with ``names``, ``emos`` and ``vals`` lists."""
    doc = {"train_info": _clean_info(train_info), "valid_info": _clean_info(valid_info)}
    if extra:
        doc.update(extra)
        if SELECT_INFO in extra:
            doc[SELECT_INFO] = _clean_info(extra[SELECT_INFO])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def _clean_info(info):
    out = {
        "names": [str(n) for n in info["names"]],
        "emos": [str(e) for e in info["emos"]],
        "vals": [float(v) for v in info.get("vals", [0.0] * len(info["names"]))],
    }
    for key, value in info.items():  # keep optional per-sample columns (weights, sources, ...)
        if key not in out:
            out[key] = [v.item() if isinstance(v, np.generic) else v for v in value]
    if not (len(out["names"]) == len(out["emos"]) == len(out["vals"])):
        raise DataError("split info has names, emos and vals of different lengths")
    return out


def missing_split(path):
    """The message for a split list that does not exist, with the fix that fits the file: build_splits.py writes
    ``seed<k>.json`` and ``fold<k>.json``; other lists come from the command that wrote them."""
    base = os.path.basename(path)
    if re.fullmatch(r"(seed|fold)\d+\.json", base):
        return (f"split list '{path}' does not exist; build it with `python preprocess/build_splits.py --dataset "
                f"<name>`{' --kfold K' if base.startswith('fold') else ''}")
    return (f"split list '{path}' does not exist; check the path, or rerun the command that writes it "
            "(pseudo_label.py, semi.py, bench/low_resource.py write theirs into their output folder)")


SELECT_INFO = "select_info"  # optional third list of a split: the names that choose the best epoch (fold lists)


def read_split_json(path, emo_rule=None):
    """Read and check a split list; returns the dict with ``train_info`` and ``valid_info`` (and ``select_info``,
    where the list has one: the names train.py chooses the best epoch on instead of ``valid_info``; the three
    lists must be disjoint)."""
    if not os.path.isfile(path):
        raise DataError(missing_split(path))
    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"split list '{path}' is not valid JSON: {e}") from e
    parts = ("train_info", "valid_info") + ((SELECT_INFO,) if SELECT_INFO in doc else ())
    for part in parts:
        if part not in doc:
            raise DataError(f"split list '{path}' has no '{part}' (keys: {list(doc)})")
        info = doc[part]
        if not isinstance(info, dict):
            raise DataError(f"'{part}' in split list '{path}' is not an object with 'names' and 'emos' lists")
        for key in ("names", "emos"):
            if key not in info:
                raise DataError(f"'{part}' in '{path}' has no '{key}' list")
        info.setdefault("vals", [0.0] * len(info["names"]))
        check_names(info["names"], f"'{part}' names of split list '{path}'")
        if not (len(info["names"]) == len(info["emos"]) == len(info["vals"])):
            raise DataError(f"'{part}' in '{path}' has names, emos and vals of different lengths")
        info["emos"] = [str(e).strip().lower() for e in info["emos"]]
        for key in ("dialogues", "orders"):  # optional, for context models (dataloader/dialogue.py)
            if key in info and len(info[key]) != len(info["names"]):
                raise DataError(f"'{part}' in '{path}' has {len(info[key])} {key} for {len(info['names'])} names; "
                                f"give one per name (an empty {key[:-1]} for a name that stands alone)")
        dup = pd.Series(info["names"])[pd.Series(info["names"]).duplicated()].unique()
        if len(dup):
            raise DataError(f"'{part}' in '{path}' lists {len(dup)} names more than once: {_preview(dup)}; "
                            "give each sample once (a repeated sample counts twice in the loss and the scores)")
        if "weights" in info:
            info["weights"] = _check_weights(info["weights"], len(info["names"]), f"'{part}' in '{path}'")
        if emo_rule is not None:
            check_labels(info["emos"], emo_rule, f"'{part}' of '{path}'")
    overlap = set(doc["train_info"]["names"]) & set(doc["valid_info"]["names"])
    if overlap:
        raise DataError(f"split list '{path}' has {len(overlap)} names in both train and valid: "
                        f"{_preview(sorted(overlap))}")
    if SELECT_INFO in doc:
        select = set(doc[SELECT_INFO]["names"])
        for part in ("train_info", "valid_info"):
            both = select & set(doc[part]["names"])
            if both:
                raise DataError(f"split list '{path}' has {len(both)} names in both {SELECT_INFO} and {part}: "
                                f"{_preview(sorted(both))}; the names that choose the epoch must be neither trained on "
                                "nor predicted as held out (rebuild it with preprocess/build_splits.py --kfold K)")
    return doc


def _check_weights(weights, n, where):
    """Per-sample loss weights: one finite number >= 0 per name, not all 0."""
    if not isinstance(weights, list) or len(weights) != n:
        got = len(weights) if isinstance(weights, list) else type(weights).__name__
        raise DataError(f"{where} has {got} weights for {n} names; give one weight per name (or no 'weights')")
    bad = [(i, w) for i, w in enumerate(weights)
           if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0]
    if bad:
        shown = ", ".join(f"#{i}: {w!r}" for i, w in bad[:5])
        raise DataError(f"{where} has {len(bad)} weights that are not finite numbers >= 0 ({shown}); fix them")
    if n and not any(weights):
        raise DataError(f"{where} has weights that are all 0: nothing would be learnt; fix them or drop 'weights'")
    return [float(w) for w in weights]


def label_indices(label_csv, names, class_names, source="the name list"):
    """Class index of each of ``names`` from a label table; every name must be in it."""
    table = read_label_csv(label_csv, class_names).set_index("name")
    missing = [n for n in names if n not in table.index]
    if missing:
        raise DataError(f"labels '{label_csv}' lack {len(missing)} names of {source}: {_preview(missing)}")
    cidx = {c: i for i, c in enumerate(class_names)}
    return np.array([cidx[e] for e in table.loc[list(names), "discrete"]], dtype=np.int64)


def npy_header(path):
    """``(shape, dtype, data offset)`` from a ``.npy`` file's header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, dtype, f.tell()


# ------------------------------------------------------------------------------------------------ media tables
SUBTITLE_COLUMNS = ("text", "subtitle", "english", "chinese")  # read_subtitles' default column, the first present


def natural_key(text):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def index_files(folder, exts, what):
    """``{stem: path}`` of the files in ``folder`` with one of ``exts`` (the earlier extension wins)."""
    if not os.path.isdir(folder):
        raise DataError(f"--{what}_dir '{folder}' is not a folder")
    rank = {e: i for i, e in enumerate(exts)}
    found = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if ext in rank and entry.is_file():
                old = found.get(stem)
                if old is None or rank[ext] < rank[os.path.splitext(old)[1].lower()]:
                    found[stem] = entry.path
    return found


def read_subtitles(path, column=None):
    """``{name: subtitle}`` from a CSV with a ``name`` column and a text column (``column``, else the first of
    text, subtitle, english, chinese). Empty cells give empty strings; a repeated name keeps its first row."""
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"subtitle file '{path}' does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df.columns = [str(c).strip() for c in df.columns]
    if "name" not in df.columns:
        raise DataError(f"subtitle file '{path}' has no 'name' column (columns: {list(df.columns)})")
    if column is None:
        column = next((c for c in SUBTITLE_COLUMNS if c in df.columns), None)
        if column is None:
            raise DataError(f"subtitle file '{path}' has none of the columns {', '.join(SUBTITLE_COLUMNS)} "
                            f"(columns: {list(df.columns)}); name the text column with --subtitle_col")
    elif column not in df.columns:
        raise DataError(f"subtitle file '{path}' has no column '{column}' (columns: {list(df.columns)})")
    check_names([str(n).strip() for n in df["name"]], f"subtitle file '{path}'", row_offset=2)
    subs = {}
    for name, text in zip(df["name"], df[column]):
        subs.setdefault(str(name).strip(), str(text).strip())
    return subs
