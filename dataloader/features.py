"""Read per-sample ``.npy`` features once, check them, and keep them as one packed array per feature.

A feature folder ``root/<name>.npy`` is packed into ``<cache>/<feature>-<hash of root>/``:

* ``data.npy``: ``(N, dim)`` for utterance-level features, ``(sum of T, dim)`` for frame-level ones
* ``offsets.npy``: frame-level only, ``(N + 1,)`` start row of each sample in ``data``
* ``names.json``: the sample names, in row order
* ``meta.json``: dim, dtype, shape, frame level, and a fingerprint of the source folder; written last

**Fingerprint.** Every file's name, size, modification time (ns), inode and status-change time (ctime, ns):
one ``stat`` per file, so it costs what name, size and mtime alone cost (``bench/pack_fingerprint.py`` times
both on 130,000 files). Size and mtime are not enough: feature files of one dim all have one size,
and ``cp -p``, ``rsync -a``, tar or ``os.utime`` restore the mtime. A file replaced by another (what
extractors, ``rsync`` and ``mv`` do) gets a new inode; an in-place rewrite changes the ctime, which no user
can set. A changed fingerprint, dim or frame level rebuilds the pack. The price of this strictness is a
harmless rebuild after ``chmod``/``chown`` of the files (they change the ctime), after copying or restoring
the folder (new inodes), or after moving it (another root, another pack). What stays unnoticed is an
in-place rewrite in the same clock tick (a few ms) as the packing scan, with the mtime restored and the
size kept.

**Corruption.** A pack is checked whenever it is opened, without reading its data:
``meta.json`` parses and holds every key; ``data.npy``'s header parses, agrees with the meta's shape and
dtype, and the file is long enough to hold the whole array; ``names.json`` holds the meta's n names;
``offsets.npy`` has n + 1 entries that start at 0, never decrease and end at the row count. A pack that
fails (a full disk, a killed copy, a crash before the data reached the disk) is logged in one line naming
the cache folder and what is wrong, and rebuilt from the source folder. Values inside ``data.npy`` are not
checksummed (that would mean reading the whole pack at every start).

**Concurrency.** Opening an unchanged pack takes no lock. Building one happens under the lock file
``<cache>/<feature>-<hash of root>.lock`` (``common.locks.FileLock``, released by the OS however its holder
exits): the holder checks the pack again (another process may have just built it: it is reused, not
rebuilt), removes leftover ``<pack>.tmp*`` folders (under the lock, only dead processes leave them), builds
into ``<pack>.tmp<pid>`` and swaps it in by renames; a reader that overlaps a swap notices (the pack
folder's inode changed) and waits for the lock. Two first runs of one feature thus pack it once.

Every file is checked while packing: unreadable files (pickles included), non-numeric arrays (bool,
strings, objects), wrong shapes, float64 values beyond the float32 range and NaN/Inf values stop the run
with an error that names the files and the fix. Packs are opened memory-mapped, so opening one costs
nothing; ``SampleSet`` copies the rows a list needs into memory unless asked not to.
"""

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

import config
from common.locks import FileLock, LockHeld
from dataloader.files import DataError, _preview

CACHE_VERSION = 2  # 2: fingerprint with inode and ctime, shape in meta.json
META_KEYS = ("version", "feature", "root", "dim", "frame_level", "n", "dtype", "shape", "fingerprint")
FLOAT32_MAX = float(np.finfo(np.float32).max)
_LOG = logging.getLogger(__name__)  # corruption is reported even when the caller passes no logger


def _scan_folder(root):
    """Sorted ``[(name, size, mtime_ns, inode, ctime_ns)]`` of the ``.npy`` files in ``root``: one ``stat`` each,
    nothing else (no path strings: at 130,000 files every object counts)."""
    if not os.path.isdir(root):
        raise DataError(f"feature folder '{root}' does not exist. Extract the feature there, or fix its "
                        "root in config.py (or MER_FEATURE_ROOT).")
    entries = []
    with os.scandir(root) as it:
        for e in it:
            if e.name.endswith(".npy") and e.is_file():
                st = e.stat()
                entries.append((e.name[:-4], st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    entries.sort()
    return entries


def _fingerprint(entries):
    """SHA-1 over every file's name, size, mtime, inode and ctime (see the module docstring for why all five).
    The numbers are hashed as one binary block, not formatted as text: that keeps it as fast as the old
    name + size + mtime text hash."""
    h = hashlib.sha1("\0".join([e[0] for e in entries]).encode())
    try:
        h.update(np.fromiter((x for e in entries for x in e[1:]), dtype=np.uint64, count=4 * len(entries)).tobytes())
    except (OverflowError, ValueError):  # a time before 1970 or an inode beyond 64 bits
        h.update(repr([e[1:] for e in entries]).encode())
    return h.hexdigest()


def folder_fingerprint(root):
    """The fingerprint a pack of ``root`` is checked against (what ``bench/pack_fingerprint.py`` times)."""
    return _fingerprint(_scan_folder(root))


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

    def gather(self, rows, max_len=None, dtype=np.float32):
        """Features of ``rows``: ``(B, dim)``, or for frame level ``(B, L, dim)`` and a bool mask ``(B, L)`` (True
        on real frames). Sequences longer than ``max_len`` are subsampled evenly. ``dtype``: float32 by default;
        None keeps the pack's own (float16 packs stay float16: half the bytes to copy, cast on the device)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.frame_level:
            return np.asarray(self.data[rows], dtype=dtype), None
        starts = self.offsets[rows]
        lens = self.lengths(rows)
        keep = lens if max_len is None else np.minimum(lens, max_len)
        width = max(int(keep.max()) if len(keep) else 1, 1)
        t = np.arange(width)[None, :]
        mask = t < keep[:, None]
        pos = frame_positions(t, lens[:, None], keep[:, None])
        idx = np.where(mask, starts[:, None] + pos, 0)
        x = np.asarray(self.data[idx.reshape(-1)], dtype=dtype).reshape(len(rows), width, self.dim)
        x[~mask] = 0.0
        return x, mask


def frame_positions(t, lens, kept):
    """Which of a sequence's ``lens`` frames is its ``t``-th kept one when ``kept`` are kept: evenly spaced, the
    identity where the sequence fits (the one subsampling rule of batches read from a pack or from the device)."""
    return (t * lens) // np.maximum(kept, 1)


class MissingFeature:
    """Stands in for a feature absent at test time (a dropped expert): zeros of the right shape, every name
    "present". The model must be told to drop the expert (``drop``), so these zeros are never used."""

    def __init__(self, name, dim, frame_level):
        self.name, self.dim, self.frame_level, self.root = name, dim, frame_level, None

    def rows(self, names, source=None):
        return np.zeros(len(names), dtype=np.int64)

    def lengths(self, rows):
        return np.ones(len(rows), dtype=np.int64)

    def gather(self, rows, max_len=None, dtype=np.float32):
        if self.frame_level:
            return np.zeros((len(rows), 1, self.dim), np.float32), np.zeros((len(rows), 1), bool)
        return np.zeros((len(rows), self.dim), np.float32), None


def cache_dir_for(name, root, cache_root=None):
    cache_root = cache_root or config.CACHE_ROOT
    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:10]
    return os.path.join(cache_root, f"{name}-{key}")


def pack_feature(name, root, dim, frame_level, cache_root=None, num_workers=4, logger=None, progress=True):
    """Open feature ``name`` from ``root`` through its packed cache (memory-mapped), (re)building it if it is
    absent, stale or corrupt. Opening an intact, current pack takes no lock; building takes the pack's lock,
    so that concurrent first runs build it once and the others reuse it."""
    t0 = time.time()
    entries = _scan_folder(root)
    if not entries:
        raise DataError(f"feature folder '{root}' (feature '{name}') holds no .npy files. Extract the "
                        "feature there or fix its root in config.py.")
    cdir = cache_dir_for(name, root, cache_root)
    store, _, _ = _open_checked(name, cdir, root, _fingerprint(entries), dim, frame_level)
    if store is not None:
        if _leftovers(cdir):  # e.g. a packing killed while removing the pack it replaced
            try:
                with FileLock(cdir + ".lock", what=f"feature cache '{cdir}'"):
                    _remove_leftovers(cdir, logger)
            except LockHeld:
                pass  # a live packer holds it: its folder is no leftover
        if logger:
            logger.info(f"feature {name}: {len(store)} samples x {dim} from cache {cdir} ({time.time() - t0:.2f}s)")
        return store

    with FileLock(cdir + ".lock", what=f"feature cache '{cdir}'", wait=True, logger=logger):
        entries = _scan_folder(root)  # again: the folder may have changed while this process waited
        if not entries:
            raise DataError(f"feature folder '{root}' (feature '{name}') holds no .npy files. Extract the "
                            "feature there or fix its root in config.py.")
        fp = _fingerprint(entries)
        store, state, why = _open_checked(name, cdir, root, fp, dim, frame_level)
        if store is not None:  # another process built it while this one waited for the lock
            if logger:
                logger.info(f"feature {name}: {len(store)} samples x {dim} from cache {cdir}, packed meanwhile by "
                            f"another process ({time.time() - t0:.2f}s)")
            return store
        if state == "corrupt":
            (logger or _LOG).warning(f"feature {name}: cache {cdir} is corrupt ({why}); rebuilding it")
        elif state == "stale" and logger:
            logger.info(f"feature {name}: {why}, rebuilding cache {cdir}")
        _remove_leftovers(cdir, logger)
        store = _build_pack(name, root, dim, frame_level, entries, fp, cdir, num_workers, progress)
    if logger:
        logger.info(f"feature {name}: read {len(store)} files x {dim} from {root} in "
                    f"{time.time() - t0:.2f}s, packed to {cdir}")
    return store


def _check_one(name, arr, dim, frame_level):
    """``(array, None)`` with the array in its packed layout, or ``(None, (kind, note))`` naming what is wrong."""
    fname = name + ".npy"
    if arr.dtype.kind not in "fiu":  # bool, complex, strings, records: no feature, whatever the shape
        return None, ("unreadable", f"{fname} (dtype {arr.dtype} is not a numeric feature)")
    if frame_level:
        if arr.ndim == 1 and arr.shape[0] == dim:
            arr = arr[None, :]
        ok = arr.ndim == 2 and arr.shape[1] == dim and arr.shape[0] >= 1
    else:
        if arr.ndim == 2 and arr.shape[0] == 1:  # (1, dim) as some extractors save it
            arr = arr[0]
        ok = arr.ndim == 1 and arr.shape[0] == dim
    if not ok:
        return None, ("shape", f"{fname} {tuple(arr.shape)}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:  # float64 (or wider) becomes float32 in the pack
        finite = np.abs(arr[np.isfinite(arr)])  # NaN and Inf are reported as such, after the conversion
        if finite.size and finite.max() > FLOAT32_MAX:
            return None, ("range", f"{fname} (|x| up to {float(finite.max()):.3g})")
    return arr, None


def _build_pack(name, root, dim, frame_level, entries, fp, cdir, num_workers, progress):
    """Read and check every file, write the pack to ``<cdir>.tmp<pid>`` and swap it in (caller holds the lock)."""
    arrays = [None] * len(entries)
    errors = {"unreadable": [], "shape": [], "range": [], "nonfinite": []}
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        it = pool.map(_read_one, [os.path.join(root, e[0] + ".npy") for e in entries], chunksize=64)
        for i, (arr, err) in enumerate(tqdm(it, total=len(entries), desc=f"read {name}", unit="file",
                                            disable=not progress, leave=False)):
            if err is not None:
                errors["unreadable"].append(f"{entries[i][0]}.npy ({err})")
                continue
            arr, problem = _check_one(entries[i][0], arr, dim, frame_level)
            if problem is not None:
                errors[problem[0]].append(problem[1])
                continue
            arrays[i] = arr
    _raise_pack_errors(name, root, dim, frame_level, len(entries), errors)

    dtype = np.float16 if all(a.dtype == np.float16 for a in arrays) else np.float32
    names = [e[0] for e in entries]
    tmp = cdir + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_pack(name, root, dim, frame_level, entries, fp, arrays, dtype, names, tmp, errors)
    except BaseException:  # a bad value, a full disk, Ctrl-C: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del arrays
    _swap_in(tmp, cdir)
    store, _, why = _open_checked(name, cdir, root, fp, dim, frame_level)
    if store is None:  # only a disk that loses what was just written gets here
        raise DataError(f"feature '{name}': the pack just written to {cdir} does not read back ({why}). Check "
                        "the disk holding the cache (space, errors), or move the cache with MER_CACHE_ROOT.")
    return store


def _write_pack(name, root, dim, frame_level, entries, fp, arrays, dtype, names, tmp, errors):
    """Write data, offsets, names and (last) meta into the folder ``tmp``; NaN/Inf values stop it."""
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
        errors["nonfinite"] = bad
        _raise_pack_errors(name, root, dim, frame_level, len(entries), errors)
    data.flush()
    del data
    if frame_level:
        np.save(os.path.join(tmp, "offsets.npy"), offsets)
    with open(os.path.join(tmp, "names.json"), "w") as f:
        json.dump(names, f)
    meta = {"version": CACHE_VERSION, "feature": name, "root": os.path.abspath(root), "dim": dim,
            "frame_level": frame_level, "n": len(names), "dtype": np.dtype(dtype).name, "shape": list(shape),
            "fingerprint": fp}
    with open(os.path.join(tmp, "meta.json"), "w") as f:  # last: a pack without it is never taken as whole
        json.dump(meta, f, indent=1)


def _swap_in(tmp, cdir):
    """Replace ``cdir`` by ``tmp``: the old pack is renamed aside (``os.replace`` cannot replace a non-empty
    folder), the new one renamed in, the old one removed. A process killed in between leaves ``.tmp*``
    folders and no pack, which the next run rebuilds."""
    if not os.path.lexists(cdir):
        os.replace(tmp, cdir)
        return
    old = f"{tmp}-old"
    os.replace(cdir, old)
    os.replace(tmp, cdir)
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)  # a reader's memory map of the old data.npy stays valid
    else:
        os.remove(old)


def _leftovers(cdir):
    """The ``<cdir>.tmp<pid>`` (and ``.tmp<pid>-old``) paths beside ``cdir``: one listing of the cache folder."""
    parent, base = os.path.split(cdir)
    pattern = re.compile(re.escape(base) + r"\.tmp\d+(-old)?")
    try:
        names = os.listdir(parent or ".")
    except FileNotFoundError:
        return []
    return [os.path.join(parent, n) for n in names if pattern.fullmatch(n)]


def _remove_leftovers(cdir, logger=None):
    """Remove the ``.tmp`` folders of packings that died (the caller holds the lock, so none is live)."""
    for path in _leftovers(cdir):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
        if logger:
            logger.info(f"removed {path}, left by an interrupted packing")


class _Corrupt(Exception):
    """What is wrong with a pack, in words (``names.json is truncated or garbled``)."""


def _read_json(cdir, fname):
    try:
        with open(os.path.join(cdir, fname), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _Corrupt(f"{fname} is missing") from None
    except OSError as e:
        raise _Corrupt(f"{fname} is unreadable: {e.strerror}") from None
    if not raw.strip():
        raise _Corrupt(f"{fname} is empty")
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        raise _Corrupt(f"{fname} is truncated or garbled, not valid JSON") from None


def _data_header(path):
    """``(shape, fortran_order, dtype, data offset, file size)`` of a ``.npy`` file, without reading its data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            return shape, fortran, dtype, f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise _Corrupt("data.npy is missing") from None
    except Exception as e:  # short or garbled header
        raise _Corrupt(f"data.npy has no valid .npy header ({type(e).__name__})") from None


def _open_checked(name, cdir, root, fp, dim, frame_level):
    """Open the pack in ``cdir`` if it is current and whole: ``(store, None, None)``, else
    ``(None, state, why)`` with state ``absent``, ``stale`` (source folder, config or cache format changed),
    ``corrupt`` (a part is missing, truncated or inconsistent) or ``swapped`` (replaced while being read)."""
    try:
        st = os.stat(cdir)
    except FileNotFoundError:
        return None, "absent", None
    try:
        meta = _read_json(cdir, "meta.json")
        if not isinstance(meta, dict):
            raise _Corrupt("meta.json is not a JSON object")
        if meta.get("version") != CACHE_VERSION:
            return None, "stale", f"cache format {meta.get('version')} is not the current {CACHE_VERSION}"
        lacking = [k for k in META_KEYS if k not in meta]
        if lacking:
            raise _Corrupt(f"meta.json lacks {', '.join(lacking)}")
        if meta["fingerprint"] != fp:
            return None, "stale", "source folder changed"
        if meta["dim"] != dim or meta["frame_level"] != frame_level:
            return None, "stale", (f"config changed (dim {meta['dim']} -> {dim}, frame level "
                                   f"{meta['frame_level']} -> {frame_level})")
        n, shape, dtype = meta["n"], meta["shape"], meta["dtype"]
        if (not isinstance(n, int) or n < 1 or not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(s, int) and s >= 0 for s in shape) or shape[1] != dim
                or dtype not in ("float16", "float32") or (not frame_level and shape[0] != n)):
            raise _Corrupt(f"meta.json is inconsistent (n {n!r}, shape {shape!r}, dtype {dtype!r})")

        path = os.path.join(cdir, "data.npy")
        d_shape, fortran, d_dtype, start, size = _data_header(path)
        if list(d_shape) != shape or d_dtype != np.dtype(dtype) or fortran:
            raise _Corrupt(f"data.npy holds {d_shape} {d_dtype}, meta.json says {tuple(shape)} {dtype}")
        need = start + shape[0] * shape[1] * np.dtype(dtype).itemsize
        if size < need:
            raise _Corrupt(f"data.npy is truncated ({size} of {need} bytes)")

        names = _read_json(cdir, "names.json")
        if not isinstance(names, list) or len(names) != n or not all(isinstance(x, str) for x in names):
            got = len(names) if isinstance(names, list) else type(names).__name__
            raise _Corrupt(f"names.json holds {got} names, not the {n} of meta.json")

        offsets = None
        if frame_level:
            try:
                offsets = np.load(os.path.join(cdir, "offsets.npy"), allow_pickle=False)
            except FileNotFoundError:
                raise _Corrupt("offsets.npy is missing") from None
            except Exception as e:  # EOFError, a short read, a garbled header
                raise _Corrupt(f"offsets.npy is truncated or garbled ({type(e).__name__})") from None
            if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) != n + 1:
                raise _Corrupt(f"offsets.npy holds {offsets.shape} {offsets.dtype}, not {n + 1} integers")
            if offsets[0] != 0 or offsets[-1] != shape[0] or (np.diff(offsets) < 0).any():
                raise _Corrupt(f"offsets.npy does not run from 0 up to data.npy's {shape[0]} rows")
            offsets = offsets.astype(np.int64, copy=False)
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except _Corrupt as e:
        return None, "corrupt", str(e)
    try:
        st2 = os.stat(cdir)
    except FileNotFoundError:
        st2 = None
    if st2 is None or (st2.st_ino, st2.st_dev) != (st.st_ino, st.st_dev):  # another process swapped a new pack
        return None, "swapped", "replaced while being read"
    return FeatureStore(name, dim, frame_level, names, data, offsets, root), None, None


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
    if errors["range"]:
        parts.append(f"{len(errors['range'])} files hold values beyond the float32 range (|x| > 3.4e38): "
                     f"{_preview(errors['range'], 5)} -> re-extract them, or rescale or clip the values before "
                     "saving (features are packed as float32)")
    if errors["nonfinite"]:
        parts.append(f"{len(errors['nonfinite'])} files hold NaN or Inf: {_preview(errors['nonfinite'], 5)} "
                     "-> re-extract them or replace the bad values")
    if parts:
        raise DataError(f"feature '{name}' in '{root}': " + "; ".join(parts))


def load_features(feat_names, cache_root=None, num_workers=4, logger=None, progress=True):
    """Packed stores for registered features (``config.FEAT_*_DICT``), in the order given (memory-mapped)."""
    stores = []
    for feat in feat_names:
        _, dim, root = config.find_feature(feat)
        frame_level = config.is_frame_level(feat)
        stores.append(pack_feature(feat, root, dim, frame_level, cache_root=cache_root,
                                   num_workers=num_workers, logger=logger, progress=progress))
    return stores
