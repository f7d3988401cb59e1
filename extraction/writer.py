"""Feature folders: atomic ``.npy`` files, the manifest that says what made them, and the report.

A feature folder holds one ``<name>.npy`` per clip and, beside them:

* ``extract_manifest.json``: the settings that identify the features (model and weights, layers, pooling,
  level, sample rate, frames, dtypes ...), the project and library versions, and the counts of the last
  run. A rerun whose settings differ is refused, naming the differences, so one folder never mixes
  features of two models or two settings.
* ``extract_report.csv``: one row per clip of the last run: ``ok``, ``redone`` (its input changed since its
  file was written), ``exists`` (kept from an earlier run) or the reason code of a failure, with the reason,
  the input file, what was cut (windows, frames, truncated tokens) and the input's fingerprint.
* ``extract.log``: the log of rank 0 (other ranks: ``extract.rank<k>.log``).
* ``.extract.lock``: held (``common.locks.FileLock``) by the one extraction writing the folder, from before the
  manifest is checked to the end of the run; a second extraction is refused naming the first. The OS frees it
  when its holder dies (SIGKILL included).

The manifest also records each clip's input fingerprint (``input_fingerprints``, see
:meth:`extraction.sources.Sources.fingerprint`), so that a rerun redoes the clips whose input changed.

Each ``.npy`` is written to a hidden temporary name and renamed into place, so a process killed at any
moment leaves either the whole file or none; a left-over temporary file is never read as a feature.
"""

import glob
import json
import os
import socket
import time

import numpy as np
import pandas as pd

import config
from common.errors import DataError
from common.locks import FileLock
from common.names import check_name, check_names
from dataloader.files import npy_header

MANIFEST = "extract_manifest.json"
REPORT = "extract_report.csv"
LOCK = ".extract.lock"
REPORT_COLUMNS = ["name", "status", "reason", "input", "duration_s", "windows", "frames", "tokens",
                  "truncated_tokens", "rank", "input_fingerprint"]
# manifest entries that must have one JSON type, when present
_MANIFEST_TYPES = {"settings": dict, "input_fingerprints": dict, "runs": list, "counts": dict}
FORMAT = "mer-semi-features/1"
_TMP_GLOB = ".*.npy.*.tmp"


def feature_path(folder, name):
    """``<folder>/<name>.npy``, the one place a clip's name becomes a file name: a name that would leave the
    folder (a separator, ``..``, an absolute path; common/names.py) is refused, the last guard behind the readers."""
    return os.path.join(folder, check_name(name, "clip name") + ".npy")


def save_npy(path, arr):
    """``np.save`` through a hidden temporary file in the same folder, then an atomic rename."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def is_valid_feature(path, dim, level, dtype):
    """True when ``path`` is a complete feature file of this folder's kind: shape ``(dim,)`` (UTT) or
    ``(T >= 1, dim)`` (FRM), dtype ``dtype``, and exactly as many bytes as its header promises."""
    try:
        shape, dt, offset = npy_header(path)
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return False
    if np.dtype(dt) != np.dtype(dtype):
        return False
    ok_shape = shape == (dim,) if level == "UTT" else (len(shape) == 2 and shape[0] >= 1 and shape[1] == dim)
    return bool(ok_shape) and size == offset + int(np.prod(shape)) * np.dtype(dt).itemsize


def clean_stale_tmp(folder, older_than_s=600):
    """Remove temporary files left by killed runs (a file being written now is younger than a few seconds)."""
    now, removed = time.time(), 0
    for p in glob.glob(os.path.join(folder, _TMP_GLOB)):
        try:
            if now - os.path.getmtime(p) > older_than_s:
                os.remove(p)
                removed += 1
        except OSError:
            pass
    return removed


def versions():
    """What made a feature folder: the project, Python, git and the extraction libraries' versions."""
    from common.utils import versions as all_versions

    return all_versions(("torch", "transformers", "av", "sentence-transformers", "opencv-python-headless"))


def read_manifest(folder):
    """The folder's manifest (a dict), or None when it has none; one that cannot be read or is not shaped as
    this module writes it (a JSON object, its settings an object ...) is refused in one line."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    fix = f"it says what made the features in '{folder}'; restore it, or extract into another --out"
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"'{path}' cannot be read ({e}): {fix}") from None
    if not isinstance(doc, dict):
        raise DataError(f"'{path}' holds a JSON {type(doc).__name__}, not an object: {fix}")
    for key, kind in _MANIFEST_TYPES.items():
        if key in doc and not isinstance(doc[key], kind):
            raise DataError(f"'{path}': its '{key}' is a JSON {type(doc[key]).__name__}, not "
                            f"{'an object' if kind is dict else 'a list'}: {fix}")
    return doc


def write_manifest(folder, doc):
    path = os.path.join(folder, MANIFEST)
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def missing_folders(path):
    """The folders that making ``path`` would create, deepest first."""
    made, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        made.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return made


def lock_folder(folder):
    """Hold ``folder``'s lock (made with the folder when missing) for one extraction; while it is held another
    is refused in one line naming the holder (pid, host, since when, command) and the fix."""
    lock = FileLock(os.path.join(folder, LOCK), what=f"feature folder '{folder}'",
                    hint="wait for that extraction to end (or stop it), or extract into another folder "
                         "(--out or --feature_name)")
    try:
        return lock.acquire()
    except OSError as e:
        raise DataError(f"cannot make the feature folder '{folder}' ({e}): give another --out") from None


def unlock_folder(lock, made=()):
    """Release ``lock`` (if any; removing its file) and remove the folders of ``made`` (:func:`missing_folders`)
    that are empty: a refused first run leaves nothing behind; a folder holding anything is never touched."""
    if lock is not None:
        lock.release(remove=True)
    for d in made:
        try:
            os.rmdir(d)
        except OSError:
            break


def settings_diff(old, new):
    """``["key: folder has A, this run B", ...]`` for every identity setting that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: the folder has {old.get(k)!r}, this run {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_folder(folder, identity):
    """Refuse a folder whose features were made with other settings, or by something unknown.

    Returns the existing manifest (or None for a new or empty folder)."""
    doc = read_manifest(folder)
    if doc is None:
        n = len(glob.glob(os.path.join(folder, "*.npy"))) if os.path.isdir(folder) else 0
        if n:
            raise DataError(f"'{folder}' already holds {n} .npy files but no {MANIFEST}, so what made them is unknown; "
                            "extract into another folder (--out or --feature_name), or move those files away")
        return None
    diff = settings_diff(doc.get("settings", {}), identity)
    if diff:
        raise DataError(f"'{folder}' holds features made with other settings ({'; '.join(diff)}). Extract into "
                        "another folder (--out or --feature_name), or delete this one to start over")
    return doc


def write_report(folder, rows):
    """The report of one run, sorted by name; returns it as a DataFrame."""
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS).sort_values("name", kind="stable").reset_index(drop=True)
    path = os.path.join(folder, REPORT)
    tmp = path + f".{os.getpid()}.tmp"
    report.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return report


def write_features(out, feature, names, matrix, info=None):
    """Write ``<out>/<feature>/<name>.npy`` (one float32 row per name, each written atomically) and ``info.json``;
    return the folder. For features computed as one matrix (teacher scores and descriptions, transcripts)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(f"feature '{feature}': {len(names)} names but a matrix of shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError(f"feature '{feature}' has NaN/Inf values; nothing written")
    check_names([str(n) for n in names], f"feature '{feature}'")
    folder = os.path.join(out, feature)
    os.makedirs(folder, exist_ok=True)
    for name, row in zip(names, matrix):
        save_npy(feature_path(folder, str(name)), row)
    doc = {"feature": feature, "dim": int(matrix.shape[1]), "n_samples": len(names)}
    doc.update(info or {})
    with open(os.path.join(folder, "info.json"), "w") as f:
        json.dump(doc, f, indent=1)
    return folder


def registry_root(folder):
    """How config.py spells a feature folder: ``_feat("demo", "x")`` under FEATURE_ROOT, else the path."""
    folder, base = os.path.abspath(folder), os.path.abspath(config.FEATURE_ROOT)
    rel = os.path.relpath(folder, base)
    if rel.startswith(os.pardir) or os.path.isabs(rel):
        return repr(folder)
    return "_feat(" + ", ".join(repr(x) for x in rel.split(os.sep)).replace("'", '"') + ")"


def registered_as(folder, tables=None):
    """Names under which config.py already registers ``folder`` (in ``tables``, default every feature dictionary)."""
    folder = os.path.abspath(folder)
    tables = config.MODALITY_DICTS.values() if tables is None else tables
    return [k for table in tables for k, (_, root) in table.items() if os.path.abspath(root) == folder]
