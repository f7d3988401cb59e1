"""Read per-sample ``.npy`` features once, check them, and keep them as one packed array per feature.

A feature folder ``root/<name>.npy`` is packed into ``<cache>/<feature>-<hash of root>/``:

* ``data.npy``: ``(N, dim)`` for utterance-level features, ``(sum of T, dim)`` for frame-level ones
* ``offsets.npy``: frame-level only, ``(N + 1,)`` start row of each sample in ``data``
* ``names.json``: the sample names, in row order
* ``meta.json``: dim, dtype, frame level, and a fingerprint of the source folder (file names, sizes
  and modification times); a changed fingerprint rebuilds the pack.

Every file is checked while packing: unreadable files (pickles included), wrong shapes and NaN/Inf
values stop the run with an error that names the files and the fix. Packs are opened memory-mapped, so
opening one costs nothing; ``SampleSet`` copies the rows a list needs into memory unless asked not to.
"""

import hashlib
import io
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

import config
from dataloader.files import DataError, _preview

CACHE_VERSION = 1


def _scan_folder(root):
    """Sorted ``[(name, path, size, mtime_ns)]`` of the ``.npy`` files in ``root``."""
    if not os.path.isdir(root):
        raise DataError(f"feature folder '{root}' does not exist. Extract the feature there, or fix its "
                        "root in config.py (or MER_FEATURE_ROOT).")
    entries = []
    with os.scandir(root) as it:
        for e in it:
            if e.name.endswith(".npy") and e.is_file():
                st = e.stat()
                entries.append((e.name[:-4], e.path, st.st_size, st.st_mtime_ns))
    entries.sort()
    return entries


def _fingerprint(entries):
    h = hashlib.sha1()
    for name, _, size, mtime in entries:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


_HEADER = re.compile(rb"\{'descr': '([<>|=]?[a-z]\d+)', 'fortran_order': (True|False), 'shape': \(([\d, ]*)\), \}")


def read_npy(path):
    """Read a ``.npy`` file without pickles, fast: one read, the usual header parsed by a regular expression
    (anything unusual goes through numpy's own parser), the data viewed with ``np.frombuffer``."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = buf[6]
    if major == 1:
        hlen, start = int.from_bytes(buf[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(buf[8:12], "little"), 12
    else:
        raise ValueError(f"unknown .npy format version {major}")
    m = _HEADER.match(buf, start, start + hlen)
    if m is None:  # unusual header: numpy's parser (which refuses pickled object arrays)
        return np.load(io.BytesIO(buf), allow_pickle=False)
    dtype = np.dtype(m.group(1).decode())
    shape = tuple(int(x) for x in m.group(3).split(b",") if x.strip())
    count = int(np.prod(shape)) if shape else 1
    if len(buf) - (start + hlen) < count * dtype.itemsize:
        raise ValueError(f"file is truncated (shape {shape}, {dtype})")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=start + hlen)
    return arr.reshape(shape, order="F" if m.group(2) == b"True" else "C")


def _read_one(path):
    try:
        return read_npy(path), None
    except Exception as e:  # unreadable, truncated, or a pickle
        return None, f"{type(e).__name__}: {e}"


class FeatureStore:
    """All samples of one feature, packed in memory (or memory-mapped)."""

    def __init__(self, name, dim, frame_level, names, data, offsets=None, root=None):
        self.name = name
        self.dim = dim
        self.frame_level = frame_level
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.data = data
        self.offsets = offsets
        self.root = root

    def __len__(self):
        return len(self.names)

    def rows(self, names, source="the name list"):
        """Row index of each name; a missing file stops the run with the names and the fix."""
        rows = np.empty(len(names), dtype=np.int64)
        missing = []
        for i, n in enumerate(names):
            r = self.index.get(n)
            if r is None:
                missing.append(n)
            else:
                rows[i] = r
        if missing:
            raise DataError(
                f"feature '{self.name}' has no file for {len(missing)} of {len(names)} names in {source}: "
                f"{_preview(missing)} (expected {self.root}/<name>.npy). Extract the feature for these "
                "samples, or remove them from the list; `python preprocess/check_feat_dim.py` lists all gaps."
            )
        return rows

    def lengths(self, rows):
        return (self.offsets[rows + 1] - self.offsets[rows]).astype(np.int64)

    def gather(self, rows, max_len=None):
        """Features of ``rows``: ``(B, dim)`` float32, or for frame level ``(B, L, dim)`` and a bool mask
        ``(B, L)`` (True on real frames). Sequences longer than ``max_len`` are subsampled evenly."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.frame_level:
            return np.asarray(self.data[rows], dtype=np.float32), None
        starts = self.offsets[rows]
        lens = self.lengths(rows)
        keep = lens if max_len is None else np.minimum(lens, max_len)
        width = max(int(keep.max()) if len(keep) else 1, 1)
        t = np.arange(width)[None, :]
        mask = t < keep[:, None]
        # evenly spaced frame positions; the identity where the sequence fits
        pos = (t * lens[:, None]) // np.maximum(keep[:, None], 1)
        idx = np.where(mask, starts[:, None] + pos, 0)
        x = np.asarray(self.data[idx.reshape(-1)], dtype=np.float32).reshape(len(rows), width, self.dim)
        x[~mask] = 0.0
        return x, mask


class MissingFeature:
    """Stands in for a feature absent at test time (a dropped expert): zeros of the right shape, every name
    "present". The model must be told to drop the expert (``drop``), so these zeros are never used."""

    def __init__(self, name, dim, frame_level):
        self.name, self.dim, self.frame_level, self.root = name, dim, frame_level, None

    def rows(self, names, source=None):
        return np.zeros(len(names), dtype=np.int64)

    def lengths(self, rows):
        return np.ones(len(rows), dtype=np.int64)

    def gather(self, rows, max_len=None):
        if self.frame_level:
            return np.zeros((len(rows), 1, self.dim), np.float32), np.zeros((len(rows), 1), bool)
        return np.zeros((len(rows), self.dim), np.float32), None


def cache_dir_for(name, root, cache_root=None):
    cache_root = cache_root or config.CACHE_ROOT
    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:10]
    return os.path.join(cache_root, f"{name}-{key}")


def pack_feature(name, root, dim, frame_level, cache_root=None, num_workers=4, logger=None, progress=True):
    """Open feature ``name`` from ``root`` through its packed cache (memory-mapped), (re)building it if needed."""
    t0 = time.time()
    entries = _scan_folder(root)
    if not entries:
        raise DataError(f"feature folder '{root}' (feature '{name}') holds no .npy files. Extract the "
                        "feature there or fix its root in config.py.")
    fp = _fingerprint(entries)
    cdir = cache_dir_for(name, root, cache_root)
    meta_path = os.path.join(cdir, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta.get("fingerprint") == fp and meta.get("dim") == dim and meta.get("version") == CACHE_VERSION
                and meta.get("frame_level") == frame_level):
            store = _open_pack(name, cdir, meta, root)
            if logger:
                logger.info(f"feature {name}: {len(store)} samples x {dim} from cache {cdir} "
                            f"({time.time() - t0:.2f}s)")
            return store
        if logger:
            logger.info(f"feature {name}: source folder or config changed, rebuilding cache {cdir}")

    arrays = [None] * len(entries)
    errors = {"unreadable": [], "shape": [], "nonfinite": []}
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        it = pool.map(_read_one, [e[1] for e in entries], chunksize=64)
        for i, (arr, err) in enumerate(tqdm(it, total=len(entries), desc=f"read {name}", unit="file",
                                            disable=not progress, leave=False)):
            fname = entries[i][0] + ".npy"
            if err is not None:
                errors["unreadable"].append(f"{fname} ({err})")
                continue
            if frame_level:
                if arr.ndim == 1 and arr.shape[0] == dim:
                    arr = arr[None, :]
                ok = arr.ndim == 2 and arr.shape[1] == dim and arr.shape[0] >= 1
            else:
                if arr.ndim == 2 and arr.shape[0] == 1:  # (1, dim) as some extractors save it
                    arr = arr[0]
                ok = arr.ndim == 1 and arr.shape[0] == dim
            if not ok:
                errors["shape"].append(f"{fname} {tuple(arr.shape)}")
                continue
            if arr.dtype.kind not in "fiub":
                errors["unreadable"].append(f"{fname} (dtype {arr.dtype} is not numeric)")
                continue
            arrays[i] = arr
    _raise_pack_errors(name, root, dim, frame_level, len(entries), errors)

    dtype = np.float16 if all(a.dtype == np.float16 for a in arrays) else np.float32
    names = [e[0] for e in entries]
    tmp = cdir + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    lens = np.array([a.shape[0] if frame_level else 1 for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    shape = (int(offsets[-1]), dim) if frame_level else (len(arrays), dim)
    data = np.lib.format.open_memmap(os.path.join(tmp, "data.npy"), mode="w+", dtype=dtype, shape=shape)
    for i, a in enumerate(arrays):  # written straight into the pack, no intermediate copy
        data[offsets[i]:offsets[i + 1]] = a
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        sample_of_row = np.repeat(np.arange(len(arrays)), lens)
        bad = sorted({names[k] + ".npy" for k in sample_of_row[~finite]})
        del data
        shutil.rmtree(tmp, ignore_errors=True)
        errors["nonfinite"] = bad
        _raise_pack_errors(name, root, dim, frame_level, len(entries), errors)
    data.flush()
    del data, arrays
    if frame_level:
        np.save(os.path.join(tmp, "offsets.npy"), offsets)
    with open(os.path.join(tmp, "names.json"), "w") as f:
        json.dump(names, f)
    meta = {"version": CACHE_VERSION, "feature": name, "root": os.path.abspath(root), "dim": dim,
            "frame_level": frame_level, "n": len(names), "dtype": np.dtype(dtype).name, "fingerprint": fp}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(cdir, ignore_errors=True)
    os.replace(tmp, cdir)
    store = _open_pack(name, cdir, meta, root)
    if logger:
        logger.info(f"feature {name}: read {len(names)} files x {dim} from {root} in "
                    f"{time.time() - t0:.2f}s, packed to {cdir}")
    return store


def _raise_pack_errors(name, root, dim, frame_level, n_files, errors):
    shape_word = f"(T, {dim})" if frame_level else f"({dim},)"
    parts = []
    if errors["unreadable"]:
        parts.append(f"{len(errors['unreadable'])} unreadable files: {_preview(errors['unreadable'], 3)} "
                     "-> re-extract them (features are loaded with allow_pickle=False)")
    if errors["shape"]:
        bad = errors["shape"]
        if len(bad) == n_files:
            parts.append(f"every file disagrees with the dim {dim} in config.py, e.g. {_preview(bad, 3)} "
                         f"-> set the dim of '{name}' in config.py to what the files hold")
        else:
            parts.append(f"{len(bad)} of {n_files} files do not have shape {shape_word}: {_preview(bad, 5)} "
                         "-> re-extract them")
    if errors["nonfinite"]:
        parts.append(f"{len(errors['nonfinite'])} files hold NaN or Inf: {_preview(errors['nonfinite'], 5)} "
                     "-> re-extract them or replace the bad values")
    if parts:
        raise DataError(f"feature '{name}' in '{root}': " + "; ".join(parts))


def _open_pack(name, cdir, meta, root):
    data = np.load(os.path.join(cdir, "data.npy"), mmap_mode="r", allow_pickle=False)
    with open(os.path.join(cdir, "names.json")) as f:
        names = json.load(f)
    offsets = None
    if meta["frame_level"]:
        offsets = np.load(os.path.join(cdir, "offsets.npy"), allow_pickle=False)
    return FeatureStore(name, meta["dim"], meta["frame_level"], names, data, offsets, root)


def load_features(feat_names, cache_root=None, num_workers=4, logger=None, progress=True):
    """Packed stores for registered features (``config.FEAT_*_DICT``), in the order given (memory-mapped)."""
    stores = []
    for feat in feat_names:
        _, dim, root = config.find_feature(feat)
        frame_level = config.is_frame_level(feat)
        stores.append(pack_feature(feat, root, dim, frame_level, cache_root=cache_root,
                                   num_workers=num_workers, logger=logger, progress=progress))
    return stores
