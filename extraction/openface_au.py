"""OpenFace 2.x FeatureExtraction CSVs -> (T, 35) AU sequences (17 intensities, 18 presences) per clip; the script:
preprocess/openface_au.py.
"""

import os
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pandas as pd
from tqdm import tqdm

import config
from extraction.writer import registered_as
from common.errors import DataError

AU_R = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
        "AU23", "AU25", "AU26", "AU45"]
AU_C = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
        "AU23", "AU25", "AU26", "AU28", "AU45"]
AU_COLUMNS = [a + "_r" for a in AU_R] + [a + "_c" for a in AU_C]
DIM = len(AU_COLUMNS)  # 35
REPORT_NAME = "openface_report.csv"
REPORT_COLUMNS = ["name", "status", "frames", "faces", "reason"]
_WANTED = set(AU_COLUMNS) | {"success", "face_id", "frame"}


def _numeric(df, col, path):
    """Column ``col`` as float; blanks become NaN, any other text is a parse error naming the file."""
    try:
        return pd.to_numeric(df[col], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as e:
        raise DataError(f"'{path}': column '{col}' holds non-numeric values ({e}); is it an OpenFace "
                        "FeatureExtraction CSV?") from None


def convert_clip(csv_path):
    """One OpenFace CSV -> ``(array or None, info)``.

    ``array`` is float32 ``(T, 35)`` (``_r`` columns in AU_R order, then ``_c`` columns in AU_C order), or
    None when the clip has no usable frame. ``info`` holds ``name``, ``status`` ('ok' or 'empty'),
    ``frames`` (rows of the output), ``faces`` (distinct face_ids among successful frames), ``reason``
    (why the clip is empty, or what was dropped), ``rows`` (frames in the file), ``successful``,
    ``face_id`` (the face kept, or None) and ``nan_frames`` (successful frames of the kept face dropped
    for NaN AU values). Raises DataError naming the file when it cannot be read or lacks columns.
    """
    name = os.path.splitext(os.path.basename(csv_path))[0]
    try:
        df = pd.read_csv(csv_path, skipinitialspace=True, usecols=lambda c: str(c).strip() in _WANTED,
                         low_memory=False)
    except FileNotFoundError:
        raise DataError(f"'{csv_path}' does not exist") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"'{csv_path}' is empty (no header): rerun OpenFace FeatureExtraction on this clip") \
            from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"'{csv_path}' cannot be parsed as a CSV ({str(e).strip()}): is it a complete OpenFace "
                        "FeatureExtraction output?") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ["success"] + AU_COLUMNS if c not in df.columns]
    if missing:
        au_missing = [c for c in missing if c != "success"]
        if len(au_missing) == len(AU_COLUMNS):  # one phrase rather than 35 names
            missing = [c for c in missing if c == "success"] + [f"all {DIM} AU columns (AU01_r .. AU45_c)"]
        raise DataError(f"'{csv_path}' lacks column(s) {', '.join(missing)}: run OpenFace FeatureExtraction "
                        "with -aus (or with no output-selection flag) so it writes success, AU.._r and AU.._c")
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataError(f"'{csv_path}' has duplicate column(s) {', '.join(dup)}")

    info = {"name": name, "status": "empty", "frames": 0, "faces": 0, "reason": "", "rows": int(len(df)),
            "successful": 0, "face_id": None, "nan_frames": 0}
    if len(df) == 0:
        info["reason"] = "the file holds no frames"
        return None, info

    success = _numeric(df, "success", csv_path)
    ok = success.to_numpy() > 0.5  # success is 0/1; NaN counts as unsuccessful
    faces = _numeric(df, "face_id", csv_path).fillna(-1).to_numpy() if "face_id" in df.columns else \
        np.zeros(len(df))
    frame = _numeric(df, "frame", csv_path).to_numpy() if "frame" in df.columns else np.arange(len(df), dtype=float)
    au = np.stack([_numeric(df, c, csv_path).to_numpy() for c in AU_COLUMNS], axis=1)
    finite = np.isfinite(au).all(axis=1)

    info["successful"] = int(ok.sum())
    info["faces"] = int(len(np.unique(faces[ok])))
    if not ok.any():
        info["reason"] = f"no successful frame (success == 0 in all {len(df)} frames)"
        return None, info

    # the face seen longest: most usable (successful, NaN-free) frames, then most successful, then lowest id
    notes = []
    ids = np.unique(faces[ok])
    if len(ids) > 1:
        usable = np.array([(ok & finite & (faces == f)).sum() for f in ids])
        seen = np.array([(ok & (faces == f)).sum() for f in ids])
        best = ids[np.lexsort((ids, -seen, -usable))[0]]
        notes.append(f"kept face {best:g} of {len(ids)} faces ({int(seen[ids == best][0])} of "
                     f"{int(ok.sum())} successful frames)")
    else:
        best = ids[0]
    info["face_id"] = int(best) if float(best).is_integer() else float(best)
    keep = ok & (faces == best)
    nan_rows = keep & ~finite
    info["nan_frames"] = int(nan_rows.sum())
    keep &= finite
    if not keep.any():
        info["reason"] = (f"all {int(nan_rows.sum())} successful frames of face {best:g} hold NaN AU values"
                          + (f" ({notes[0]})" if notes else ""))
        return None, info
    if info["nan_frames"]:
        notes.append(f"dropped {info['nan_frames']} frame(s) with NaN AU values")
    n_unsuccessful = int((~ok).sum())
    if n_unsuccessful:
        notes.append(f"dropped {n_unsuccessful} unsuccessful frame(s)")
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(frame[idx], kind="stable")]
    arr = au[idx].astype(np.float32)
    info.update(status="ok", frames=int(len(arr)), reason="; ".join(notes))
    return arr, info


def _save_atomic(path, arr):
    """np.save through a temporary name, so an interrupted run never leaves a truncated .npy to skip."""
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def _npy_frames(path):
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except Exception:
        return None


def list_clips(src, out=None):
    """Sorted ``(name, csv_path)`` of the clips in ``src``; DataError when there is none."""
    if not os.path.isdir(src):
        raise DataError(f"--src '{src}' is not a folder: give the folder of OpenFace FeatureExtraction CSVs "
                        "(one <clip>.csv per clip)")
    same = out is not None and os.path.isdir(out) and os.path.samefile(src, out)
    files = sorted(f for f in os.listdir(src) if f.lower().endswith(".csv") and not (same and f == REPORT_NAME)
                   and os.path.isfile(os.path.join(src, f)))
    if not files:
        raise DataError(f"--src '{src}' holds no .csv files: give the folder OpenFace FeatureExtraction wrote "
                        "to with -out_dir")
    return [(os.path.splitext(f)[0], os.path.join(src, f)) for f in files]


def _convert_one(name, csv_path, out, overwrite):
    """Convert one clip and write its .npy; returns the report row (never raises)."""
    dst = os.path.join(out, name + ".npy")
    if not overwrite and os.path.isfile(dst):
        return {"name": name, "status": "skipped", "frames": _npy_frames(dst), "faces": None,
                "reason": "output exists (use --overwrite to convert again)"}, None
    try:
        arr, info = convert_clip(csv_path)
    except Exception as e:  # a broken file is reported, never stops the run
        msg = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
        arr, info = None, {"name": name, "status": "error", "frames": 0, "faces": None, "reason": msg,
                           "nan_frames": 0}
    if arr is not None:
        _save_atomic(dst, arr)
    elif overwrite and os.path.isfile(dst):
        os.remove(dst)  # a stale output of an earlier run would be read as this clip's features
    return {k: info.get(k) for k in REPORT_COLUMNS}, info


def convert_folder(src, out, num_workers=4, overwrite=False, progress=True):
    """Convert every ``<clip>.csv`` of ``src`` into ``out/<clip>.npy``; returns the report DataFrame.

    The report (one row per clip, sorted by name; columns name, status, frames, faces, reason) is also
    written to ``out/openface_report.csv``; its ``attrs['nan_frames']`` holds the NaN frames dropped.
    """
    clips = list_clips(src, out)
    os.makedirs(out, exist_ok=True)
    rows, nan_frames = [], 0
    with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
        futures = [pool.submit(_convert_one, name, path, out, overwrite) for name, path in clips]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="openface AU", unit="clip",
                        disable=not progress):
            row, info = fut.result()
            rows.append(row)
            nan_frames += int((info or {}).get("nan_frames") or 0)
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS).sort_values("name", kind="stable").reset_index(drop=True)
    for col in ("frames", "faces"):
        report[col] = report[col].astype("Int64")
    report["reason"] = report["reason"].fillna("")
    report.to_csv(os.path.join(out, REPORT_NAME), index=False)
    report.attrs["nan_frames"] = nan_frames
    return report


def summarize(report, out, max_listed=20):
    """The end-of-run summary, as text: counts per status and the clips that got no .npy."""
    counts = report["status"].value_counts()
    done = report.loc[report.status.isin(["ok", "skipped"]), "frames"].dropna()
    lines = [f"{len(report)} clips: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "skipped", "empty",
                                                                                        "error")),
             f"frames written: {int(report.loc[report.status == 'ok', 'frames'].sum())}; "
             f"frames dropped for NaN AU values: {report.attrs.get('nan_frames', 0)}"]
    if len(done):
        lines.append(f"frames per clip (converted): min {int(done.min())}, median {float(done.median()):g}, "
                     f"max {int(done.max())}")
    failed = report[report.status.isin(["empty", "error"])]
    if len(failed):
        lines.append(f"{len(failed)} clips got no .npy:")
        for r in failed.head(max_listed).itertuples():
            lines.append(f"  {r.name} [{r.status}]: {r.reason}")
        if len(failed) > max_listed:
            lines.append(f"  ... and {len(failed) - max_listed} more")
    lines.append(f"report: {os.path.join(out, REPORT_NAME)}")
    registered = registered_as(out, [config.FEAT_AU_DICT])
    if registered:
        lines.append(f"registered in config.py as {', '.join(registered)}")
    else:
        lines.append(f"register it in config.py: FEAT_AU_DICT[\"<name>-openface-au-FRM\"] = [{DIM}, {out!r}]")
    return "\n".join(lines)
