"""Split lists from a label table: seeded, stratified hold-outs (``seed<k>.json``) or k folds (``fold<k>.json``,
each with an inner ``select_info`` list that chooses the fold model's epoch, see :func:`build`), keeping groups
(videos, dialogues) whole where the data set has a group column; a data set's official split (a split column
of the label table, or lists of names: :func:`official_split`); and the low-resource draw of N labelled samples
from a split, the rest becoming the unlabelled pool (:func:`low_resource_split`).

Where the label table has the group column and an ``order`` column, every list carries them as ``dialogues``
and ``orders`` (what context models read, dataloader/dialogue.py).
"""

import os

import numpy as np
import pandas as pd

import config
from dataloader.dialogue import ORDER_COL
from dataloader.files import DataError, _preview, read_label_csv, read_names_csv, read_split_json, write_split_json

TRAIN_VALUES = ("train", "training")
VALID_VALUES = ("valid", "val", "validation", "dev", "development")
LEFT_OUT_VALUES = ("test",)  # rows of the test part stay out of the split list (the data set's test_csv has them)


def _info(df, group_col=None):
    # an empty valence cell (none known: import_dataset.py leaves it empty) is 0.0 in the list's numeric "vals"
    vals = [0.0 if pd.isna(v) else float(v) for v in pd.to_numeric(df["valence"], errors="coerce")]
    info = {"names": df["name"].tolist(), "emos": df["discrete"].tolist(), "vals": vals}
    if group_col and group_col in df.columns:
        info["dialogues"] = ["" if pd.isna(d) else str(d) for d in df[group_col]]
        if ORDER_COL in df.columns:
            info["orders"] = [None if pd.isna(o) else float(o) for o in pd.to_numeric(df[ORDER_COL], errors="coerce")]
    return info


def holdout_split(df, valid_ratio, seed, group_col=None):
    """Indices (train, valid) of one stratified split; by whole groups when ``group_col`` is given."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split  # here: 2 s of import for splits only

    idx = np.arange(len(df))
    if group_col:
        n_folds = max(2, int(round(1 / valid_ratio)))
        sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        tr, va = next(sgkf.split(idx, df["discrete"], df[group_col]))
        return tr, va
    tr, va = train_test_split(idx, test_size=valid_ratio, random_state=seed, stratify=df["discrete"])
    return np.sort(tr), np.sort(va)


def kfold_splits(df, k, seed, group_col=None):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    idx = np.arange(len(df))
    if group_col:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(idx, df["discrete"], df[group_col]))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, df["discrete"]))


EPOCH_SELECTION = ("inner", "out_of_fold")


def inner_split(df, tr, valid_ratio, seed, group_col, where):
    """Indices (train, select) into ``df`` of an inner, stratified hold-out of the training rows ``tr``: the rows
    that choose a fold model's best epoch, so that its out-of-fold rows never do."""
    part = df.iloc[tr].reset_index(drop=True)
    try:
        a, b = holdout_split(part, valid_ratio, seed, group_col)
    except ValueError as e:  # a class too rare in the fold's training rows to stratify
        counts = part["discrete"].value_counts()
        raise DataError(f"{where}: class '{counts.idxmin()}' has {counts.min()} training rows, too few to hold some "
                        f"out for epoch selection ({e}); give fewer folds, or --epoch_selection out_of_fold") from None
    return tr[a], tr[b]


def build(label_csv, emo_rule, out_dir, seeds=(0, 1, 2, 3, 4), valid_ratio=0.2, kfold=0, group_col=None,
          epoch_selection="inner"):
    """Write seeded hold-outs ``seed<k>.json`` (``valid_ratio`` of the rows in ``valid_info``), or with ``kfold``
    K folds ``fold<k>.json``, whose ``valid_info`` lists (the out-of-fold rows) partition the table. Returns
    ``(path, n train, n valid)`` per file.

    ``epoch_selection`` (folds only): ``inner`` (default) moves ``valid_ratio`` of each fold's training rows
    (stratified; whole groups with ``group_col``; seeded by ``seeds[0]`` and the fold) to ``select_info``, the
    list train.py chooses the best epoch on; the fold's ``valid_info`` is then predicted by that epoch's model
    without ever choosing it, an honest out-of-fold prediction. ``out_of_fold``: no ``select_info``; each fold
    model chooses its epoch on its own out-of-fold rows (optimistic out-of-fold figures, all training rows used).
    """
    if epoch_selection not in EPOCH_SELECTION:
        raise DataError(f"epoch selection '{epoch_selection}': use one of {', '.join(EPOCH_SELECTION)}")
    df = read_label_csv(label_csv, config.EMO_RULE[emo_rule])
    if group_col and group_col not in df.columns:
        raise DataError(f"--group_col '{group_col}' is not a column of '{label_csv}' ({list(df.columns)})")
    small = df["discrete"].value_counts()
    need = kfold if kfold else 2
    if small.min() < need:
        raise DataError(f"class '{small.idxmin()}' has {small.min()} samples in '{label_csv}'; a stratified "
                        f"split needs at least {need}")
    written = []
    if kfold:
        folds = []
        for k, (tr, va) in enumerate(kfold_splits(df, kfold, seeds[0], group_col)):
            path = os.path.join(out_dir, f"fold{k}.json")
            extra = {"epoch_selection": epoch_selection}
            if epoch_selection == "inner":
                tr, sel = inner_split(df, np.asarray(tr), valid_ratio, seeds[0] * 1000 + k, group_col,
                                      f"fold {k} of '{label_csv}'")
                extra["select_info"] = _info(df.iloc[sel], group_col)
            folds.append((path, tr, va, extra))
        for path, tr, va, extra in folds:  # every fold checked before the first is written
            write_split_json(path, _info(df.iloc[tr], group_col), _info(df.iloc[va], group_col), extra=extra)
            written.append((path, len(tr), len(va)))
    else:
        for seed in seeds:
            tr, va = holdout_split(df, valid_ratio, seed, group_col)
            path = os.path.join(out_dir, f"seed{seed}.json")
            write_split_json(path, _info(df.iloc[tr], group_col), _info(df.iloc[va], group_col))
            written.append((path, len(tr), len(va)))
    return written


def official_split(label_csv, emo_rule, out_path, split_col=None, train_names=None, valid_names=None, group_col=None):
    """Write a data set's official train/valid split as a split list: from ``split_col``, a column of the label
    table (train: one of TRAIN_VALUES, valid: VALID_VALUES, test rows left out), or from two name lists
    (``train_names``, ``valid_names``: CSVs with a ``name`` column, every name in the label table). Returns
    ``(path, n train, n valid)``. Nothing is written when a check fails."""
    df = read_label_csv(label_csv, config.EMO_RULE[emo_rule])
    if group_col and group_col not in df.columns:
        raise DataError(f"group column '{group_col}' is not a column of '{label_csv}' ({list(df.columns)})")
    if (split_col is None) == (train_names is None or valid_names is None):
        raise DataError("give either --split_col (a column of the label table) or both --train_names and "
                        "--valid_names (name lists)")
    if split_col is not None:
        if split_col not in df.columns:
            raise DataError(f"--split_col '{split_col}' is not a column of '{label_csv}' ({list(df.columns)})")
        part = df[split_col].astype(str).str.strip().str.lower()
        known = set(TRAIN_VALUES) | set(VALID_VALUES) | set(LEFT_OUT_VALUES)
        odd = sorted(set(part) - known)
        if odd:
            raise DataError(f"column '{split_col}' of '{label_csv}' has values {odd}: use {TRAIN_VALUES[0]} for "
                            f"training rows, {VALID_VALUES[0]} (or dev) for validation rows, test for rows to "
                            "leave out")
        train, valid = df[part.isin(TRAIN_VALUES)], df[part.isin(VALID_VALUES)]
        source = f"column '{split_col}' of '{label_csv}'"
    else:
        index = df.set_index("name", drop=False)
        parts = []
        for path in (train_names, valid_names):
            names = read_names_csv(path)
            missing = [n for n in names if n not in index.index]
            if missing:
                raise DataError(f"name list '{path}' has {len(missing)} names that are not in the label table "
                                f"'{label_csv}': {_preview(missing)}; fix the list or the table")
            parts.append(index.loc[names])
        train, valid = parts
        source = f"name lists '{train_names}' (train) and '{valid_names}' (valid)"
    for what, part_df in (("training", train), ("validation", valid)):
        if part_df.empty:
            raise DataError(f"the official split from {source} has no {what} rows")
    both = sorted(set(train["name"]) & set(valid["name"]))
    if both:
        raise DataError(f"the official split from {source} puts {len(both)} names in both train and valid: "
                        f"{_preview(both)}; give each name one side")
    write_split_json(out_path, _info(train, group_col), _info(valid, group_col),
                     extra={"source": f"official split: {source}"})
    return out_path, len(train), len(valid)


def low_resource_split(base_split, n, seed, out_path, emo_rule):
    """N labelled names drawn stratified (seeded) from the training list of ``base_split``; the rest of that list
    becomes the unlabelled pool (its labels kept back, for measuring pseudo-label precision only); the
    validation list stays. Writes the labelled split list to ``out_path``; returns ``(out_path, pool names,
    pool truth {name: label})``."""
    doc = read_split_json(base_split, config.EMO_RULE[emo_rule])
    tr = doc["train_info"]
    names, emos = np.array(tr["names"]), np.array(tr["emos"])
    if not 0 < n < len(names):
        raise DataError(f"N={n} labelled samples: the training list of '{base_split}' has {len(names)}; give "
                        f"1 to {len(names) - 1}")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(names))
    try:
        lab, unl = train_test_split(idx, train_size=n, random_state=seed, stratify=emos)
    except ValueError:  # a class too rare to stratify at this N
        lab, unl = train_test_split(idx, train_size=n, random_state=seed)
    lab, unl = np.sort(lab), np.sort(unl)
    info = {key: [values[i] for i in lab] for key, values in tr.items() if isinstance(values, list)
            and len(values) == len(names)}
    write_split_json(out_path, info, doc["valid_info"], extra={"low_resource": {"n": n, "seed": seed,
                                                                                "base": base_split}})
    return out_path, names[unl].tolist(), dict(zip(names[unl].tolist(), emos[unl].tolist()))
