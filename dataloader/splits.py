"""Seeded, stratified split lists from a label table: hold-out (``seed<k>.json``) or k folds (``fold<k>.json``),
keeping groups (videos, dialogues) whole where the data set has a group column.
"""

import os

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

import config
from dataloader.files import DataError, read_label_csv, write_split_json


def _info(df):
    info = {"names": df["name"].tolist(), "emos": df["discrete"].tolist(), "vals": df["valence"].tolist()}
    return info


def holdout_split(df, valid_ratio, seed, group_col=None):
    """Indices (train, valid) of one stratified split; by whole groups when ``group_col`` is given."""
    idx = np.arange(len(df))
    if group_col:
        n_folds = max(2, int(round(1 / valid_ratio)))
        sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        tr, va = next(sgkf.split(idx, df["discrete"], df[group_col]))
        return tr, va
    tr, va = train_test_split(idx, test_size=valid_ratio, random_state=seed, stratify=df["discrete"])
    return np.sort(tr), np.sort(va)


def kfold_splits(df, k, seed, group_col=None):
    idx = np.arange(len(df))
    if group_col:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(idx, df["discrete"], df[group_col]))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, df["discrete"]))


def build(label_csv, emo_rule, out_dir, seeds=(0, 1, 2, 3, 4), valid_ratio=0.2, kfold=0, group_col=None):
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
        for k, (tr, va) in enumerate(kfold_splits(df, kfold, seeds[0], group_col)):
            path = os.path.join(out_dir, f"fold{k}.json")
            write_split_json(path, _info(df.iloc[tr]), _info(df.iloc[va]))
            written.append((path, len(tr), len(va)))
    else:
        for seed in seeds:
            tr, va = holdout_split(df, valid_ratio, seed, group_col)
            path = os.path.join(out_dir, f"seed{seed}.json")
            write_split_json(path, _info(df.iloc[tr]), _info(df.iloc[va]))
            written.append((path, len(tr), len(va)))
    return written
