"""Loader throughput: the MRAC25 design (np.load per sample per feature in __getitem__) against ours.

    python bench/loader_throughput.py [--n 20000] [--batch_size 512] [--num_workers 2]

Writes --n samples x 3 features (dims 1024, 768, 512, float32, one .npy per sample, as extractors write
them) to a scratch folder, then times one epoch of shuffled batches with each loader:

* theirs: a torch Dataset whose __getitem__ np.loads every feature file of the sample, through a DataLoader
  with --num_workers worker processes (files are in the OS page cache: the kindest case for it);
* ours: the packed cache (built once; its cost is printed separately), a SampleSet gathering each feature
  for the whole list, and batches served by index.

What is printed: theirs per epoch; ours once per run (packing the first time; opening the pack and gathering
the list on every run) and per epoch; the speedup of a first epoch (ours including opening and gathering),
of a whole --epochs run (ours including opening and gathering), and, as the last line,
``speedup: <ours / theirs>``: samples per second of one epoch of batches, each loader in its steady state
(theirs re-reads every file every epoch; ours serves the list from memory).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import _paths  # noqa: F401
from dataloader import SampleSet, pack_feature

DIMS = {"bench-video-512": 512, "bench-audio-1024": 1024, "bench-text-768": 768}


class PerFileDataset(Dataset):
    """The MRAC25 loader: one np.load per sample per feature, inside __getitem__."""

    def __init__(self, names, labels, roots):
        self.names, self.labels, self.roots = names, labels, roots

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        name = self.names[i]
        inputs = {f"feat{k}": np.load(os.path.join(r, name + ".npy")).squeeze().astype(np.float32)
                  for k, r in enumerate(self.roots)}
        return inputs, self.labels[i], 0.0, name


def write_features(work, n, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"sample_{i:08d}" for i in range(n)]

    def one(item):
        feat, dim = item
        root = os.path.join(work, feat)
        os.makedirs(root, exist_ok=True)
        block = rng.standard_normal((n, dim), dtype=np.float32)
        for name, row in zip(names, block):
            np.save(os.path.join(root, name + ".npy"), row)
        return root

    with ThreadPoolExecutor(3) as pool:
        roots = list(pool.map(one, DIMS.items()))
    return names, roots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=60, help="run length for the whole-run figure (MRAC25: 60)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = p.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="mer_loader_bench_")
    try:
        t0 = time.time()
        names, roots = write_features(work, args.n)
        labels = np.random.default_rng(1).integers(0, 6, args.n)
        print(f"wrote {args.n} samples x {len(DIMS)} features ({', '.join(map(str, DIMS.values()))} dims) "
              f"in {time.time() - t0:.1f}s")

        torch.manual_seed(0)
        loader = DataLoader(PerFileDataset(names, labels, roots), batch_size=args.batch_size, shuffle=True,
                            num_workers=args.num_workers)
        t0 = time.time()
        seen = 0
        for inputs, emos, _, _ in loader:
            seen += len(emos)
        theirs = time.time() - t0
        assert seen == args.n
        print(f"theirs (np.load per sample, {args.num_workers} workers): {theirs:.2f}s per epoch, "
              f"{args.n / theirs:,.0f} samples/s")

        cache = os.path.join(work, "cache")
        t0 = time.time()
        for feat, root in zip(DIMS, roots):
            pack_feature(feat, root, DIMS[feat], False, cache_root=cache, num_workers=4, progress=False)
        cold = time.time() - t0
        print(f"ours, packing the cache (first run of a feature only): {cold:.2f}s")

        t0 = time.time()
        stores = [pack_feature(f, r, DIMS[f], False, cache_root=cache, progress=False) for f, r in zip(DIMS, roots)]
        samples = SampleSet(stores, names, labels)
        setup = time.time() - t0
        print(f"ours, opening the pack and gathering the list (every run): {setup:.3f}s")
        t0 = time.time()
        seen = 0
        for batch in samples.iter_batches(args.batch_size, shuffle=True, seed=0):
            seen += len(batch["idx"])
        ours = time.time() - t0
        assert seen == args.n
        print(f"ours per epoch: {ours:.3f}s, {args.n / ours:,.0f} samples/s")
        print(f"speedup of a first epoch (ours incl. opening and gathering): {theirs / (setup + ours):.1f}")
        print(f"speedup of a {args.epochs}-epoch run (ours incl. opening and gathering): "
              f"{args.epochs * theirs / (setup + args.epochs * ours):.1f}")
        print(f"speedup: {theirs / ours:.1f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
