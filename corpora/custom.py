"""A data set of one's own, from one table, into the project's tables and a registration file (the script:
preprocess/import_dataset.py).

The input is one CSV with a row per utterance or clip: a name, a label (empty for unlabelled rows), and
optionally a transcript, a dialogue id and the utterance's position in it, an official split (train, valid or
dev, test) and a valence. Column names are given by the user (``columns``), so any corpus layout imports without
code. The output, in ``out`` (default ``<FEATURE_ROOT>/<name>``):

  train_labels.csv   name,discrete[,valence][,dialogue,order][,speaker][,split]: the labelled rows of train and valid
  test.csv           name[,dialogue,order][,speaker]: the rows of the test split (absent without a split column or
                     test rows); their dialogues, so that a context model reads a test utterance with its neighbours
  test_labels.csv    their labels where the table has them, for scoring only
  unlabeled.csv      name[,dialogue,order][,speaker]: rows without a label outside the test split (the
                     semi-supervised pool)
  transcripts.csv    name,text[,dialogue,order][,speaker]: every row's transcript (text teachers and text features)
  dataset.yaml       the registration config.py reads (every DATASETS key; the label set if it is new)

A valence column is written only when the table has one (``valence``), its empty cells left empty. A re-import
into a folder that holds a ``dataset.yaml`` of the same data set keeps its feature registrations (added by
preprocess/extract_features.py) and the keys this importer does not write (e.g. ``audio_dir`` added by hand).

Every check runs before anything is written: names unique, non-empty and file names (common/names.py: no
separator, ``..`` or absolute path), labels in the label set, split values
known, a dialogue id with an order where orders are given. The files are written into a temporary folder and
moved into place, so a failed import leaves nothing behind.
"""

import os
import shutil

import pandas as pd
import yaml

import config
from common.names import check_names
from dataloader.files import DataError, _preview, read_table

REGISTRATION = "dataset.yaml"
SPLIT_VALUES = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
                "dev": "valid", "development": "valid", "test": "test"}


def read_corpus(table, columns, labels):
    """The user's table with the project's column names (name, discrete, text, dialogue, order, speaker, split,
    valence), checked. ``columns``: project column -> the table's column (name and label required). ``labels``:
    the label set, in class order."""
    df = read_table(table, "corpus table", names=[columns.get(k) for k in ("name", "dialogue", "text", "speaker")])
    missing = [f"--{key}_col {col!r}" for key, col in columns.items() if col and col not in df.columns]
    if missing:
        raise DataError(f"corpus table '{table}' has no column for {', '.join(missing)} (columns: {list(df.columns)})")
    out = pd.DataFrame({"name": df[columns["name"]].astype(str).str.strip()})
    check_names(out["name"].tolist(), f"corpus table '{table}' (--name_col {columns['name']!r})", row_offset=2)
    dup = out["name"][out["name"].duplicated()].unique()
    if len(dup):
        raise DataError(f"corpus table '{table}' lists {len(dup)} names more than once: {_preview(dup)}")
    raw = df[columns["label"]]
    out["discrete"] = raw.where(raw.isna(), raw.astype(str).str.strip().str.lower()).replace("", None)
    bad = sorted(set(out["discrete"].dropna()) - set(labels))
    if bad:
        raise DataError(f"corpus table '{table}': labels {bad[:8]} are not in the label set {list(labels)}; give "
                        "--labels with every label, or fix the table")
    if columns.get("valence"):  # an empty cell stays empty (no valence known), never a made-up 0.0
        out["valence"] = pd.to_numeric(df[columns["valence"]], errors="coerce")
    if columns.get("text"):
        out["text"] = df[columns["text"]].fillna("").astype(str).str.strip()
    if columns.get("dialogue"):
        out["dialogue"] = df[columns["dialogue"]].fillna("").astype(str).str.strip()
        if columns.get("order"):
            order = pd.to_numeric(df[columns["order"]], errors="coerce")
            lost = out["name"][order.isna() & (out["dialogue"] != "")]
            if len(lost):
                raise DataError(f"corpus table '{table}': {len(lost)} rows of a dialogue have no numeric "
                                f"{columns['order']!r}: {_preview(lost)}")
            out["order"] = order
    elif columns.get("order"):
        raise DataError("--order_col needs --dialogue_col: an order is a position within a dialogue")
    if columns.get("speaker"):
        out["speaker"] = df[columns["speaker"]].fillna("").astype(str).str.strip()
    if columns.get("split"):
        values = df[columns["split"]].fillna("").astype(str).str.strip().str.lower()
        odd = sorted(set(values) - set(SPLIT_VALUES))
        if odd:
            raise DataError(f"corpus table '{table}': split column {columns['split']!r} has values {odd[:8]}; use "
                            "train, valid (or dev) and test")
        out["split"] = values.map(SPLIT_VALUES)
    return out


def import_corpus(name, table, columns, labels=None, emo_rule=None, out=None, log=print):
    """Write the tables and ``dataset.yaml`` of data set ``name`` from ``table`` (see the module docstring);
    returns the registration dict. ``labels``: a new label set (registered as ``emo_rule``, default the name in
    capitals); else ``emo_rule`` names one of config.EMO_RULE."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise DataError(f"--name {name!r}: a data set name is letters, digits, - and _ (e.g. mydata)")
    if labels:
        labels = [str(x).strip().lower() for x in labels]
        if len(set(labels)) != len(labels) or len(labels) < 2 or not all(labels):
            raise DataError(f"--labels {labels}: give two or more different labels")
        emo_rule = emo_rule or name.upper()
        if emo_rule in config.EMO_RULE and list(config.EMO_RULE[emo_rule]) != labels:
            raise DataError(f"label set '{emo_rule}' already exists with {config.EMO_RULE[emo_rule]}; give another "
                            "--emo_rule name for the new labels")
    elif emo_rule:
        if emo_rule not in config.EMO_RULE:
            raise DataError(f"unknown --emo_rule '{emo_rule}' (config.EMO_RULE: {', '.join(config.EMO_RULE)}); or "
                            "give the labels with --labels a,b,c")
        labels = list(config.EMO_RULE[emo_rule])
    else:
        raise DataError("give the label set: --labels a,b,c (a new one) or --emo_rule NAME (config.EMO_RULE)")
    reused = emo_rule in config.BUILTIN_EMO_RULES and labels == list(config.EMO_RULE[emo_rule])
    df = read_corpus(table, columns, labels)
    out = out or os.path.join(config.FEATURE_ROOT, name)
    kept = kept_registration(os.path.join(out, REGISTRATION), name)
    split = df["split"] if "split" in df.columns else pd.Series("train", index=df.index)
    labelled = df["discrete"].notna()
    train = df[labelled & (split != "test")]
    test = df[split == "test"]
    pool = df[~labelled & (split != "test")]
    if train.empty:
        raise DataError(f"corpus table '{table}' has no labelled rows outside the test split")
    small = train["discrete"].value_counts()
    absent = [c for c in labels if c not in small.index]
    if absent:
        log(f"note: labels {absent} have no labelled row")
    keep = [c for c in ("name", "discrete", "valence", "dialogue", "order", "speaker", "split") if c in df.columns]
    listed = [c for c in ("name", "dialogue", "order", "speaker") if c in df.columns]  # test and unlabelled lists
    reg = {"name": name, "emo_rule": emo_rule, "label_csv": "train_labels.csv",
           "test_csv": "test.csv" if len(test) else None,
           "test_label_csv": "test_labels.csv" if len(test) and test["discrete"].notna().all() else None,
           "unlabeled_csv": "unlabeled.csv" if len(pool) else None, "unlabeled_truth": None,
           "transcripts_csv": "transcripts.csv" if "text" in df.columns else None,
           "subtitle_csv": "transcripts.csv" if "text" in df.columns else None,
           "teacher_dir": "teachers", "group_col": "dialogue" if "dialogue" in df.columns else None,
           "features": kept.pop("features", None) or {}}
    if not reused:
        reg["labels"] = labels
    reg.update({k: v for k, v in kept.items() if k not in reg})
    tmp = out.rstrip(os.sep) + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        train[keep].to_csv(os.path.join(tmp, "train_labels.csv"), index=False)
        if len(test):
            test[listed].to_csv(os.path.join(tmp, "test.csv"), index=False)
            if reg["test_label_csv"]:
                test[keep].to_csv(os.path.join(tmp, "test_labels.csv"), index=False)
        if len(pool):
            pool[listed].to_csv(os.path.join(tmp, "unlabeled.csv"), index=False)
        if "text" in df.columns:
            df[[c for c in ("name", "text", "dialogue", "order", "speaker") if c in df.columns]].to_csv(
                os.path.join(tmp, "transcripts.csv"), index=False)
        write_registration(os.path.join(tmp, REGISTRATION), reg, table)
        os.makedirs(out, exist_ok=True)
        for f in os.listdir(tmp):
            os.replace(os.path.join(tmp, f), os.path.join(out, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    how = (f"reuses the built-in label set {emo_rule} of config.EMO_RULE" if reused else
           f"new label set {emo_rule}, registered in {REGISTRATION}")
    log(f"{name}: {len(train)} labelled ({(split[labelled] == 'valid').sum()} in the official valid part), "
        f"{len(test)} test, {len(pool)} unlabelled; {how}: {labels}; wrote {out}")
    if reg["features"]:
        log(f"kept {len(reg['features'])} feature registration(s) of the earlier import: {', '.join(reg['features'])}"
            " (check them against the new lists: python preprocess/check_feat_dim.py --dataset " + name + ")")
    return reg


def kept_registration(path, name):
    """What a re-import keeps of the ``dataset.yaml`` at ``path`` (an earlier import of data set ``name``): its
    features and the keys the importer does not write; ``{}`` where there is none, or it is another data set's."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"'{path}' cannot be read ({e}); it holds the data set's feature registrations: fix it, or "
                        "move it away to import afresh") from None
    if not isinstance(doc, dict) or str(doc.get("name")) != name:
        return {}
    owned = {"name", "emo_rule", "labels", "label_csv", "test_csv", "test_label_csv", "unlabeled_csv",
             "unlabeled_truth", "transcripts_csv", "subtitle_csv", "teacher_dir", "group_col"}
    kept = {k: v for k, v in doc.items() if k not in owned}
    if not isinstance(kept.get("features") or {}, dict):
        raise DataError(f"'{path}': 'features' is not a mapping of feature name -> modality, dim, folder; fix it, or "
                        "move the file away to import afresh")
    return kept


def write_registration(path, reg, source=None):
    head = (f"# data set '{reg['name']}' for config.py (read from <FEATURE_ROOT>/*/{REGISTRATION}); paths are "
            "relative to this folder.\n# Written by preprocess/import_dataset.py" + (f" from {source}" if source else "")
            + "; features are added by preprocess/extract_features.py.\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(head)
        yaml.safe_dump(reg, f, sort_keys=False, allow_unicode=True)
