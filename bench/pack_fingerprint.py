"""Pack fingerprint cost: name + size + mtime (the old check) against name + size + mtime + inode + ctime.

    python bench/pack_fingerprint.py [--n 130000] [--dir DIR] [--keep]

Writes --n small ``.npy`` files (float32, 16 values, as an utterance-level feature folder; a MER2025-sized
feature has about 130,000) to a scratch folder, then times, with the folder's metadata in the OS cache
(one untimed pass first), best of --repeat:

* old: the former fingerprint, reimplemented here: scan the folder, SHA-1 over name, size and mtime;
* new: the project's ``dataloader.features.folder_fingerprint`` (the same one scan with inode and ctime
  added; the numbers hashed as one binary block instead of text);
* reopen: ``pack_feature`` on the unchanged folder once its pack exists (scan, fingerprint, opening and
  checking the pack: what every training run pays at its start, per feature).

After the line on writing the files, it prints ``files: N  old: X s  new: Y s  ratio new/old: R``, then
the packing time (once per feature) and the reopen time. Both fingerprints stat every file once (that is
most of their time), so the ratio stays near 1.
"""

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import _paths  # noqa: F401
from dataloader.features import folder_fingerprint, pack_feature

DIM = 16


def old_fingerprint(root):
    """The fingerprint before inode and ctime were added: one scan, SHA-1 over name, size and mtime."""
    entries = []
    with os.scandir(root) as it:
        for e in it:
            if e.name.endswith(".npy") and e.is_file():
                st = e.stat()
                entries.append((e.name[:-4], e.path, st.st_size, st.st_mtime_ns))
    entries.sort()
    h = hashlib.sha1()
    for name, _, size, mtime in entries:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def write_files(root, n, seed=0):
    """``n`` seeded ``.npy`` files of DIM float32 values: one header, then raw bytes (np.save is 10x slower)."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(DIM, np.float32))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    head = buf.getvalue()
    block = rng.standard_normal((n, DIM), dtype=np.float32)
    for i in range(n):
        with open(os.path.join(root, f"sample_{i:08d}.npy"), "wb") as f:
            f.write(head + block[i].tobytes())


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=130000, help="number of feature files")
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (files and pack)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes of each; the best counts")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="mer_fingerprint_bench_", dir=args.dir)
    try:
        root, cache = os.path.join(work, "bench-feat-UTT"), os.path.join(work, "cache")
        t0 = time.time()
        write_files(root, args.n)
        print(f"wrote {args.n} files of {DIM} float32 values in {time.time() - t0:.1f}s", flush=True)

        old_fingerprint(root), folder_fingerprint(root)  # warm the metadata cache
        old = new = float("inf")
        for _ in range(args.repeat):  # alternating, so that both see the same machine load
            old = min(old, best_of(lambda: old_fingerprint(root), 1))
            new = min(new, best_of(lambda: folder_fingerprint(root), 1))
        print(f"files: {args.n}  old: {old:.2f} s  new: {new:.2f} s  ratio new/old: {new / old:.2f}")

        t0 = time.perf_counter()
        pack_feature("bench-feat-UTT", root, DIM, False, cache_root=cache, progress=False)
        print(f"packing (first run of the feature only): {time.perf_counter() - t0:.2f} s")
        reopen = best_of(lambda: pack_feature("bench-feat-UTT", root, DIM, False, cache_root=cache,
                                              progress=False), args.repeat)
        print(f"reopen of the unchanged pack through pack_feature (every run): {reopen:.2f} s, "
              f"ratio reopen/old fingerprint: {reopen / old:.2f}")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
