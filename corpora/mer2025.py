"""The official MER2025 track-1 (MER-SEMI) release, checked and converted to the project's tables (the script:
preprocess/mer2025.py).

The release as its organisers distribute it (Hugging Face data set MERChallenge/MER2025; the layout is the one
MERTools' MER2025/MER2025_Track1 README describes), unpacked into one folder:

  video/<name>.mp4            every clip of the release (132,171 in 2025)
  audio/<name>.wav            their sound tracks
  openface_face/<name>/       MERTools' face crops
  subtitle_chieng.csv         name,chinese,english      the subtitles
  track1_train_disdim.csv     name,discrete,valence     the labelled clips (7,369 in 2025)
  track_all_candidates.csv    name[,...]                the clips to predict (20,000): every test clip is one of
                                                        them, and none is labelled

What the project makes of it, under --out (the names config.DATASETS["mer2025"] reads):

  track1_train_disdim.csv     name,discrete,valence     the labelled clips, labels among config.EMO_RULE["MER"]
  test.csv                    name                      the candidates, in the release's order (the submission's)
  unlabeled.csv               name                      every clip that is not labelled, the candidates included
  transcripts.csv             name,text,chinese,english text: one subtitle language, for the text teachers
  subtitle_chieng.csv         name,chinese,english      the subtitles, for preprocess/extract_features.py
  mer2025_report.json         counts, where the clip names came from, and the feature folders found with dims

The candidates stay in the unlabelled pool on purpose: MER2025-SEMI allows labelling them from unlabelled data
(transductive use), which config.DATASETS["mer2025"]["transductive"] makes an explicit, logged choice.

Every check runs before anything is written, and the files are written into a temporary folder and then moved
into place, so a release that fails a check leaves --out as it was.
"""

import json
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

import config
from dataloader.files import DataError, index_files, natural_key, npy_header, read_table
from extraction.media import AUDIO_EXTS, VIDEO_EXTS

LABEL_FILE = "track1_train_disdim.csv"
CANDIDATE_FILE = "track_all_candidates.csv"
SUBTITLE_FILE = "subtitle_chieng.csv"
LABELS = config.EMO_RULE["MER"]
# where the clip names come from, in this order; None: one sub-folder per clip (MERTools' face crops)
MEDIA = (("video", VIDEO_EXTS), ("audio", AUDIO_EXTS), ("openface_face", None))
SUBTITLE_COLUMNS = ("name", "chinese", "english")
TRANSCRIPT_LANGS = ("english", "chinese")
OUT = {"labels": "track1_train_disdim.csv", "test": "test.csv", "pool": "unlabeled.csv",
       "transcripts": "transcripts.csv", "subtitles": "subtitle_chieng.csv", "report": "mer2025_report.json"}
RELEASE_FIX = "--release must be the unpacked MER2025 release folder"


def _preview(items, k=5):
    items = list(items)
    return ", ".join(str(x) for x in items[:k]) + (f" (and {len(items) - k} more)" if len(items) > k else "")


def _resolve(release, path, default):
    """``path`` as given (absolute, or relative to the working folder when it exists there), else inside the
    release; ``default`` when it is None."""
    path = path or default
    if os.path.isabs(path) or (path != default and os.path.exists(path)):
        return path
    return os.path.join(release, path)


# ------------------------------------------------------------------------------------------------- reading


def _read_csv(path, what, fix):
    """A CSV file as a table of strings (empty cells are empty strings), column names stripped and lower-cased."""
    return read_table(path, what, fix, strings=True, lower=True)


def _names(df, path, what):
    """The ``name`` column, stripped; rows without a name and names given twice are refused."""
    names = df["name"].astype(str).str.strip()
    empty = names == ""
    if empty.any():
        lines = [int(i) + 2 for i in np.flatnonzero(empty.to_numpy())]
        raise DataError(f"{what} '{path}' has {int(empty.sum())} rows without a name (CSV lines {_preview(lines)}); "
                        "fill or drop them")
    dup = names[names.duplicated()].unique()
    if len(dup):
        raise DataError(f"{what} '{path}' lists {len(dup)} names more than once: {_preview(dup)}; each clip must "
                        "appear once (a table merged from two copies?)")
    return names


def read_labels(path, log=print):
    """The label table (``name, discrete, valence``), checked: MER2025's track-1 header, unique names, labels
    among config.EMO_RULE["MER"] (lower-cased), numeric valence (an empty cell becomes 0)."""
    fix = (f"{RELEASE_FIX}, whose {LABEL_FILE} has the header name,discrete,valence "
           "(or give the label table with --labels)")
    df = _read_csv(path, "label table", fix)
    missing = [c for c in ("name", "discrete") if c not in df.columns]
    if missing:
        raise DataError(f"label table '{path}' has the columns {list(df.columns)}, not MER2025's track-1 layout: it "
                        f"needs a header row name,discrete[,valence] as the official {LABEL_FILE} has (a track-2/3 "
                        "table, or a file without its header row, will not do)")
    if df.empty:
        raise DataError(f"label table '{path}' has a header but no rows: {fix}")
    names = _names(df, path, "label table")
    labels = df["discrete"].astype(str).str.strip().str.lower()
    bad = ~labels.isin(LABELS)
    if bad.any():
        counts = labels[bad].value_counts()
        listing = ", ".join(f"'{k}' x{v}" for k, v in counts.head(5).items())
        lines = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())]
        raise DataError(f"label table '{path}' has {int(bad.sum())} labels outside MER2025's six "
                        f"({', '.join(LABELS)}): {listing} (CSV lines {_preview(lines)}); fix those rows (an empty "
                        "label is an unlabelled clip: drop its row, it joins the unlabelled pool)")
    if "valence" in df.columns:
        raw = df["valence"].astype(str).str.strip()
        valence = pd.to_numeric(raw, errors="coerce")
        bad = valence.isna() & (raw != "")
        if bad.any():
            lines = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())]
            raise DataError(f"label table '{path}' has {int(bad.sum())} valence values that are not numbers: "
                            f"{_preview(raw[bad].unique())} (CSV lines {_preview(lines)}); fix them or empty the cells")
        if valence.isna().any():
            log(f"label table: {int(valence.isna().sum())} empty valence cells set to 0")
        valence = valence.fillna(0.0)
    else:
        log(f"label table '{path}' has no valence column: valence set to 0")
        valence = pd.Series(0.0, index=df.index)
    return pd.DataFrame({"name": names.to_numpy(), "discrete": labels.to_numpy(),
                         "valence": valence.astype(float).to_numpy()})


def read_candidates(path):
    """The names to predict, in the file's order (a ``name`` column; other columns, such as a placeholder
    ``discrete``, are ignored), each once."""
    fix = f"{RELEASE_FIX}, with {CANDIDATE_FILE} (or give the list of names to predict with --candidates)"
    df = _read_csv(path, "candidate list", fix)
    if "name" not in df.columns:
        raise DataError(f"candidate list '{path}' has no 'name' column (columns: {list(df.columns)}): it needs a "
                        f"header row with name, as the official {CANDIDATE_FILE} has")
    if df.empty:
        raise DataError(f"candidate list '{path}' has a header but no rows: {fix}")
    return _names(df, path, "candidate list").tolist()


def read_subtitles(path):
    """``{name: (chinese, english)}`` from MER2025's subtitle table; a name given twice with the same texts is
    kept once, with other texts refused."""
    df = _read_csv(path, "subtitle table", f"{RELEASE_FIX}, with {SUBTITLE_FILE} (or give --subtitles)")
    missing = [c for c in SUBTITLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"subtitle table '{path}' has the columns {list(df.columns)}: it needs a header row "
                        f"{','.join(SUBTITLE_COLUMNS)}, as the official {SUBTITLE_FILE} has")
    df = df.assign(name=df["name"].astype(str).str.strip(), chinese=df["chinese"].astype(str).str.strip(),
                   english=df["english"].astype(str).str.strip())
    df = df[df["name"] != ""].drop_duplicates(subset=list(SUBTITLE_COLUMNS))
    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise DataError(f"subtitle table '{path}' gives {len(dup)} names two different subtitles: {_preview(dup)}; "
                        "keep one row per clip")
    return {n: (c, e) for n, c, e in zip(df["name"], df["chinese"], df["english"])}


def list_clips(release, names_csv=None):
    """``(clips, sources)``: every clip name of the release, and for each source the set of names it gives.

    With ``names_csv`` (a CSV with a ``name`` column) that list is the release; else the union of the media
    folders video/ (``<name>.mp4``...), audio/ (``<name>.wav``...) and openface_face/ (``<name>/``)."""
    if names_csv:
        df = _read_csv(names_csv, "clip list", "give a CSV with a 'name' column listing every clip of the release")
        if "name" not in df.columns:
            raise DataError(f"clip list '{names_csv}' has no 'name' column (columns: {list(df.columns)})")
        names = set(_names(df, names_csv, "clip list"))
        return names, {os.path.basename(names_csv): names}
    if not os.path.isdir(release):
        raise DataError(f"release folder '{release}' does not exist: {RELEASE_FIX}")
    sources, archives = {}, []
    for folder, exts in MEDIA:
        path = os.path.join(release, folder)
        if not os.path.isdir(path):
            continue
        if exts is None:
            with os.scandir(path) as it:
                found = {e.name for e in it if e.is_dir() and not e.name.startswith(".")}
        else:
            found = set(index_files(path, exts, folder))
        with os.scandir(path) as it:
            archives += [os.path.join(folder, e.name) for e in it if ".z" in os.path.splitext(e.name)[1].lower()]
        if found:
            sources[folder] = found
    if not sources:
        hint = (f"; unpack the split archives first ({_preview(sorted(archives), 2)}: 7z x <name>.zip)" if archives
                else " (or list every clip name in a CSV: --names_csv)")
        raise DataError(f"no clips under '{release}': none of {', '.join(f + '/' for f, _ in MEDIA)} holds a clip"
                        f"{hint}; {RELEASE_FIX}")
    return set().union(*sources.values()), sources


# ------------------------------------------------------------------------------------------------- features


def _level(name):
    return "frame" if str(name).endswith(config.FRAME_LEVEL_SUFFIXES) else "utterance"


def scan_features(root, labelled, candidates, pool):
    """One record per feature folder under ``root`` (a folder holding ``<name>.npy`` files; MERTools' layout:
    ``<model>-UTT`` of ``(dim,)`` arrays, ``-FRA``/``-FRM`` of ``(T, dim)`` ones): its level, its dim read from
    one file's header, whether config.py registers it (and with which dim and folder) and how many labelled,
    candidate and pool clips have a file. Refused, naming the folder and the fix: an unreadable header, a shape
    that does not fit the level, a dim other than the registered one, labelled or candidate clips without a file
    (they are what every run trains, validates and predicts on)."""
    found = []
    if not root or not os.path.isdir(root):
        return found
    with os.scandir(root) as it:
        folders = sorted((e for e in it if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)
    for entry in folders:
        with os.scandir(entry.path) as it:
            have = {f.name[:-4] for f in it if f.name.endswith(".npy") and not f.name.startswith(".")}
        if not have:
            continue  # not a feature folder (teachers/, openface_face/, ...)
        name, level = entry.name, _level(entry.name)
        sample = next((n for n in labelled if n in have), None) or min(have, key=natural_key)
        path = os.path.join(entry.path, sample + ".npy")
        try:
            shape = tuple(npy_header(path)[0])
        except Exception as e:  # a truncated or foreign file: numpy raises several types
            raise DataError(f"feature file '{path}' has no readable .npy header ({e}); re-extract it") from None
        if level == "frame" and len(shape) != 2:
            raise DataError(f"feature file '{path}' has shape {shape}: a frame-level folder (-FRA, -FRM) holds "
                            "(T, dim) arrays; re-extract it, or rename the folder if it is utterance level (-UTT)")
        if level == "utterance" and not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
            raise DataError(f"feature file '{path}' has shape {shape}: an utterance-level folder holds (dim,) arrays; "
                            "name a folder of (T, dim) sequences with -FRA or -FRM")
        dim = int(shape[-1])
        try:
            modality, config_dim, config_root = config.find_feature(name)
        except KeyError:
            modality, config_dim, config_root = None, None, None
        if config_dim is not None and config_dim != dim:
            raise DataError(f"feature folder '{entry.path}' holds dim {dim} ({os.path.basename(path)}), but config.py "
                            f"registers '{name}' with dim {config_dim}: re-extract it with the registered model, or "
                            "fix its entry in config.py (MER2025_FEATURES or the FEAT_*_DICT of its modality)")
        miss_lab = [n for n in labelled if n not in have]
        miss_cand = [n for n in candidates if n not in have]
        if miss_lab or miss_cand:
            raise DataError(f"feature folder '{entry.path}' has no file for {len(miss_lab)} labelled clips and "
                            f"{len(miss_cand)} candidates (e.g. {_preview((miss_lab + miss_cand)[:3])}): finish "
                            "its extraction (preprocess/extract_features.py resumes), or move the folder out of "
                            "--features_root")
        found.append({
            "feature": name, "folder": entry.path, "level": level, "dim": dim, "files": len(have),
            "registered": config_dim is not None, "modality": modality, "config_dim": config_dim,
            "config_root_matches": (config_root is not None
                                    and os.path.abspath(config_root) == os.path.abspath(entry.path)),
            "labelled_covered": len(labelled), "candidates_covered": len(candidates),
            "pool_covered": sum(1 for n in pool if n in have), "pool": len(pool)})
    return found


# ------------------------------------------------------------------------------------------------- writing


def _write_all(out, frames, report, stale=()):
    """Write every table into a temporary folder beside ``out``, then move them into ``out``, then remove the
    ``stale`` files (outputs of an earlier conversion that this one does not write): a failure while writing leaves
    ``out`` as it was (other files in it, such as feature folders, are never touched)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"--out '{out}' is a file; give a folder")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp", dir=parent)
    try:
        for key, df in frames.items():
            df.to_csv(os.path.join(stage, OUT[key]), index=False)
        with open(os.path.join(stage, OUT["report"]), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
        if not os.path.isdir(out):
            os.replace(stage, out)
            return
        for name in os.listdir(stage):
            os.replace(os.path.join(stage, name), os.path.join(out, name))
        for name in stale:
            os.remove(os.path.join(out, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def stale_outputs(out, frames, inputs=()):
    """The tables of an earlier conversion in ``out`` that this one does not write (the transcripts and subtitles
    of a release converted before with its subtitle table): removed, so that no later step reads them as this
    release's. A file that is one of this conversion's inputs is never among them."""
    out_files = [OUT[k] for k in OUT if k not in frames and k != "report"]
    stale = []
    for name in out_files:
        path = os.path.join(out, name)
        if os.path.isfile(path) and not any(p and os.path.exists(p) and os.path.samefile(p, path) for p in inputs):
            stale.append(name)
    return stale


def _counts(values):
    s = pd.Series(list(values))
    return {c: int((s == c).sum()) for c in LABELS}


def convert(release, out, features_root=None, labels=None, candidates=None, subtitles=None, names_csv=None,
            transcript_lang="english", log=print):
    """Read and check the release, then write the project's tables into ``out``; returns the report (a dict,
    also written as ``mer2025_report.json``). ``labels``, ``candidates``, ``subtitles``: file names inside the
    release (defaults: the official ones) or paths; a missing default subtitle table only skips the subtitle
    files. ``features_root`` (default ``out``): the folder whose ``<model>-UTT``/``-FRA`` folders are checked."""
    t0 = time.time()
    if transcript_lang not in TRANSCRIPT_LANGS:
        raise DataError(f"--transcript_lang '{transcript_lang}': use {' or '.join(TRANSCRIPT_LANGS)}")
    if not os.path.isdir(release):
        raise DataError(f"release folder '{release}' does not exist: {RELEASE_FIX}")
    label_path = _resolve(release, labels, LABEL_FILE)
    cand_path = _resolve(release, candidates, CANDIDATE_FILE)
    sub_path = _resolve(release, subtitles, SUBTITLE_FILE)
    if names_csv and not os.path.isabs(names_csv) and not os.path.exists(names_csv):
        names_csv = os.path.join(release, names_csv)

    table = read_labels(label_path, log)
    cands = read_candidates(cand_path)
    clips, sources = list_clips(release, names_csv)
    labelled = table["name"].tolist()
    where = ", ".join(f"{k} ({len(v)})" for k, v in sources.items())
    lost = [n for n in labelled if n not in clips]
    if lost:
        raise DataError(f"label table '{label_path}' has {len(lost)} names with no clip in {where}: {_preview(lost)}; "
                        "the label table and the media must come from the same release, fully unpacked")
    lab_set = set(labelled)
    gold = [n for n in cands if n in lab_set]
    if gold:
        raise DataError(f"candidate list '{cand_path}' holds {len(gold)} labelled clips of '{label_path}': "
                        f"{_preview(gold)}; the candidates to predict must be unlabelled clips (are the two files "
                        "from the same release?)")
    outside = [n for n in cands if n not in clips]
    if outside:
        raise DataError(f"candidate list '{cand_path}' has {len(outside)} names that are not in the unlabelled pool "
                        f"(no clip in {where}): {_preview(outside)}; every candidate must be a clip of the release "
                        "(a candidate list of another release, or media not fully unpacked?)")
    pool = sorted((n for n in clips if n not in lab_set), key=natural_key)

    subs = None
    if os.path.isfile(sub_path) or subtitles:
        subs = read_subtitles(sub_path)
    else:
        log(f"no subtitle table '{sub_path}': {OUT['transcripts']} and {OUT['subtitles']} are not written")

    roles = {"labelled": labelled, "candidates": cands, "pool": pool}
    feat_root = features_root or out
    if features_root and not os.path.isdir(features_root):
        raise DataError(f"--features_root '{features_root}' is not a folder")
    features = scan_features(feat_root, labelled, cands, pool)
    seen = {f["feature"] for f in features}
    absent = [n for n in config.MER2025_FEATURES if n not in seen]

    # everything is checked: build the tables
    frames = {"labels": table, "test": pd.DataFrame({"name": cands}), "pool": pd.DataFrame({"name": pool})}
    sub_report = None
    if subs is not None:
        order = [n for n in sorted(clips, key=natural_key) if n in subs]
        col = 0 if transcript_lang == "chinese" else 1
        frames["transcripts"] = pd.DataFrame({"name": order, "text": [subs[n][col] for n in order],
                                              "chinese": [subs[n][0] for n in order],
                                              "english": [subs[n][1] for n in order]})
        frames["subtitles"] = frames["transcripts"][list(SUBTITLE_COLUMNS)]
        sub_report = {"file": sub_path, "rows": len(subs), "transcript_lang": transcript_lang,
                      "outside_release": sum(1 for n in subs if n not in clips),
                      "without_subtitle": {k: sum(1 for n in v if n not in subs) for k, v in roles.items()},
                      "empty_text": sum(1 for n in order if not subs[n][col])}
    cand_set = set(cands)
    stale = stale_outputs(out, frames, inputs=(label_path, cand_path, sub_path, names_csv))
    report = {
        "release": release, "out": out, "seconds": None,
        "files": {"labels": label_path, "candidates": cand_path, "subtitles": sub_path if subs is not None else None},
        "clips": len(clips), "clip_sources": {k: len(v) for k, v in sources.items()},
        "clips_missing_from": {k: len(clips) - len(v) for k, v in sources.items()},
        "labelled": len(labelled), "labels": _counts(table["discrete"]),
        "candidates": len(cands), "pool": len(pool), "pool_candidates": sum(1 for n in pool if n in cand_set),
        "transductive": bool(config.DATASETS.get("mer2025", {}).get("transductive")),
        "subtitles": sub_report, "features_root": feat_root, "features": features,
        "registered_absent": absent, "written": [OUT[k] for k in frames] + [OUT["report"]], "removed": stale,
    }
    report["seconds"] = round(time.time() - t0, 2)
    _write_all(out, frames, report, stale)
    for line in describe(report):
        log(line)
    return report


def describe(report):
    """The report as the lines the script prints."""
    lines = [f"release {report['release']}: {report['clips']} clips ("
             + ", ".join(f"{k} {v}" for k, v in report["clip_sources"].items()) + ")"]
    short = {k: v for k, v in report["clips_missing_from"].items() if v}
    if short:
        lines.append("  clips missing from a media folder: " + ", ".join(f"{k} {v}" for k, v in short.items()))
    lines.append(f"labelled: {report['labelled']} (" + ", ".join(f"{k} {v}" for k, v in report["labels"].items()) + ")")
    lines.append(f"candidates: {report['candidates']}, all unlabelled clips of the release")
    lines.append(f"unlabelled pool: {report['pool']} clips, {report['pool_candidates']} of them candidates ("
                 + ("pseudo-labelling them is allowed: config.DATASETS['mer2025']['transductive']"
                    if report["transductive"] else "config.DATASETS['mer2025'] is not transductive: "
                    "pseudo_label.py leaves them out") + ")")
    sub = report["subtitles"]
    if sub:
        miss = ", ".join(f"{k} {v}" for k, v in sub["without_subtitle"].items())
        lines.append(f"subtitles: {sub['rows']} rows ({sub['outside_release']} for clips outside the release); "
                     f"without one: {miss}; transcripts.csv text = {sub['transcript_lang']} "
                     f"({sub['empty_text']} empty)")
    feats = report["features"]
    lines.append(f"features under {report['features_root']}: {len(feats)} folders")
    for f in feats:
        cov = f"labelled and candidates all covered, pool {f['pool_covered']}/{f['pool']}"
        if f["registered"]:
            where = "" if f["config_root_matches"] else " (config.py reads another folder: move it there, or set " \
                                                        "MER_FEATURE_ROOT)"
            lines.append(f"  {f['feature']}: {f['modality']}, {f['level']} level, dim {f['dim']} as registered, "
                         f"{f['files']} files; {cov}{where}")
        else:
            lines.append(f"  {f['feature']}: NOT REGISTERED, {f['level']} level, dim {f['dim']}, {f['files']} files; "
                         f"{cov}; register it in config.py: MER2025_FEATURES[\"{f['feature']}\"] = "
                         f"(\"<video|audio|text|au>\", {f['dim']})")
    if report["registered_absent"]:
        lines.append(f"registered MER2025 features not found there ({len(report['registered_absent'])}): "
                     + ", ".join(report["registered_absent"]))
    lines.append(f"wrote {', '.join(report['written'])} under {report['out']} in {report['seconds']:.1f}s")
    if report.get("removed"):
        lines.append(f"removed {', '.join(report['removed'])}: written by an earlier conversion, not by this one (no "
                     "subtitle table this time), so that no later step reads them as this release's")
    return lines


# ---------------------------------------------------------------------------------------------
# How each of the runner-up's features (config.MER2025_FEATURES) is made from the release's clips.
# Inputs come from DATASETS["mer2025"] (video/, audio/, openface_face/, subtitle_chieng.csv); every
# extraction command writes features/mer2025/<name>, the folder config.py registers.
# ---------------------------------------------------------------------------------------------
_FACE = "face crops (openface_face/)"
_EXTERNAL_FACE = ("a face-expression CNN from MERTools' own checkpoints, not in transformers: extract it with "
                  "MERTools (feature_extraction/visual) and link the folder to features/mer2025/{name}; "
                  "preprocess/mer2025.py --features_root checks it")
FEATURE_RECIPES = {
    # video
    "clip-vit-large-patch14-UTT": {"modality": "visual", "model": "openai/clip-vit-large-patch14", "input": _FACE},
    "clip-vit-base-patch32-UTT": {"modality": "visual", "model": "openai/clip-vit-base-patch32", "input": _FACE},
    "InternVL_2_5_HiCo_R16-UTT": {
        "external": "InternVideo2.5 (HiCo, 16 tokens a frame; OpenGVLab/InternVideo2_5_Chat_8B) ships its own "
                    "modelling code and is not in transformers, so this project does not run it. The same width "
                    "(4096: InternVL2.5-8B's language model) from transformers' InternVL, its language model over "
                    "16 frames of the video, is the command below; it makes a different feature, so it keeps its "
                    "own name (add it to --feat in place of this one)",
        "modality": "visual", "model": "OpenGVLab/InternVL2_5-8B-MPO-hf", "input": "video frames (video/)",
        "flags": ["--part", "language_model", "--frames", "16"], "writes": "InternVL2_5-8B-MPO-hf-frames-UTT",
        "dim": 4096},
    "dinov2-large-UTT": {"modality": "visual", "model": "facebook/dinov2-large", "input": _FACE},
    "videomae-large-UTT": {"modality": "visual", "model": "MCG-NJU/videomae-large", "input": _FACE},
    "videomae-base-UTT": {"modality": "visual", "model": "MCG-NJU/videomae-base", "input": _FACE},
    "manet_UTT": {"external": _EXTERNAL_FACE},
    "emonet_UTT": {"external": _EXTERNAL_FACE},
    "senet50face_UTT": {"external": _EXTERNAL_FACE},
    "resnet50face_UTT": {"external": _EXTERNAL_FACE},
    # audio
    "chinese-hubert-large-UTT": {"modality": "audio", "model": "TencentGameMate/chinese-hubert-large"},
    "chinese-hubert-base-UTT": {"modality": "audio", "model": "TencentGameMate/chinese-hubert-base"},
    "Qwen2-Audio-7B-UTT": {"modality": "audio", "model": "Qwen/Qwen2-Audio-7B", "flags": ["--part", "audio_tower"]},
    "whisper-large-v2-UTT": {"modality": "audio", "model": "openai/whisper-large-v2"},
    "chinese-wav2vec2-large-UTT": {"modality": "audio", "model": "TencentGameMate/chinese-wav2vec2-large"},
    "chinese-wav2vec2-base-UTT": {"modality": "audio", "model": "TencentGameMate/chinese-wav2vec2-base"},
    "wavlm-base-UTT": {"modality": "audio", "model": "microsoft/wavlm-base"},
    # text (the Chinese subtitles: extraction's default column)
    "chinese-roberta-wwm-ext-large-UTT": {"modality": "text", "model": "hfl/chinese-roberta-wwm-ext-large"},
    "chinese-roberta-wwm-ext-UTT": {"modality": "text", "model": "hfl/chinese-roberta-wwm-ext"},
    "chinese-macbert-large-UTT": {"modality": "text", "model": "hfl/chinese-macbert-large"},
    "chinese-macbert-base-UTT": {"modality": "text", "model": "hfl/chinese-macbert-base"},
    "bloom-7b1-UTT": {"modality": "text", "model": "bigscience/bloom-7b1"},
    # this project's own
    "openface-au-FRM": {"script": "python preprocess/run_openface.py --bin <OpenFace>/build/bin/FeatureExtraction "
                                  "--video_dir <release>/video --out openface_out --au_out features/mer2025/openface-au-FRM"},
}


def feature_command(name):
    """The command that makes feature ``name`` of config.MER2025_FEATURES from the release's clips (None where
    the model is not one this project runs: see the recipe's ``external``)."""
    r = FEATURE_RECIPES[name]
    if "script" in r:
        return r["script"]
    if "model" not in r:
        return None
    return " ".join(["python preprocess/extract_features.py --dataset mer2025 --modality", r["modality"], "--model",
                     r["model"]] + list(r.get("flags", [])))


def feature_commands(root=None):
    """``[(name, dim, status, command or the way to bring it)]`` for every feature of config.MER2025_FEATURES; status
    is ``present`` where ``root/<name>`` (default the registered folder) exists, else ``missing``."""
    rows = []
    for name, (_, dim) in config.MER2025_FEATURES.items():
        folder = os.path.join(root, name) if root else config.MODALITY_DICTS[config.MER2025_FEATURES[name][0]][name][1]
        status = "present" if os.path.isdir(folder) else "missing"
        r = FEATURE_RECIPES[name]
        how = feature_command(name)
        if "external" in r:
            how = r["external"].format(name=name) + (f": {how}" if how else "")
        rows.append((name, dim, status, how))
    return rows
