"""Training throughput: train.py's own training steps against the MRAC25 design and against a bare loop.

    python bench/train_throughput.py [--n 20000] [--steps 60] [--batch_size 64] [--models auto_attention,moe]
                                     [--device auto|cpu|cuda] [--amp off|bf16|fp16] [--compile] [--keep]
    # MER2025's scale: 130,000 samples (780,000 files: about 5 min to write and pack on 2 cores, once with --keep)
    python bench/train_throughput.py --n 130000 --keep --workdir /tmp/mer_train_bench

Writes --n synthetic samples of a MER2025-like feature set to a scratch folder, one .npy per sample and
feature as extractors write them: five utterance-level features (1024, 1024, 768, 768 and 512 dims) and one
frame-level AU feature (T x 35, T uniform in 10..60), 6 classes. Then, for each model of --models (its
models/model-tune.yaml hyperparameters; train.py's defaults: Adam, lr 1e-4, weight decay 1e-5), it times the
same optimisation steps fed three ways, each from the same initial weights with a fresh optimiser:

* ours: ``engine.trainer.train_epoch`` (the function train.py's epochs run) over ``SampleSet.iter_batches``
  of the packed features (``dataloader.features.pack_feature``), the list gathered on the device once;
* MRAC25: a ``torch.utils.data.Dataset`` whose ``__getitem__`` np.loads the sample's six files, through a
  ``DataLoader`` with --num_workers worker processes (frames subsampled to max_len as ours, padded per batch
  in the collate), each batch copied to the device, the loss read back every step (``loss.item()``);
* bare: the limit, a loop over contiguous slices of tensors already on the device (no loader, no
  bookkeeping), the same forward, loss, backward and optimiser step.

What is measured: --steps optimisation steps of one shuffled epoch (default 60 on the CPU, a fraction of an
epoch; the whole epoch on a GPU, or with --steps 0), after --warmup steps that are not timed (worker start-up,
first allocations, compilation). samples/s = samples of the timed steps / seconds, the device synchronised
before the clock stops. Each loader is timed --repeats times, alternating with the others (a slow stretch of a
shared machine then hits all three), and the best of each is kept; the MRAC25 files are in the page cache by
then, the kindest case for it. Setting up (writing the files, packing them, gathering the list) is timed and
printed separately, not in samples/s.

Printed: per model, samples/s of each loader and the ratios ours/MRAC25 and ours/bare; then the lowest of each
ratio over the models, the last line being ``ours/bare: <ratio>``.
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import _paths  # noqa: F401
from dataloader import SampleSet, pack_feature
from engine.config import TrainConfig
from engine.trainer import Precision, compile_model, make_optimizer, optimizer_step, set_tf32, train_epoch
from models import create_model, load_model_config
from common.utils import resolve_device, set_seed

UTT = {"bench-utt1-1024": 1024, "bench-utt2-1024": 1024, "bench-utt3-768": 768, "bench-utt4-768": 768,
       "bench-utt5-512": 512}
FRAME = ("bench-au-FRM", 35)
T_RANGE = (10, 60)
N_CLASSES = 6


# ------------------------------------------------------------------------------------------- the data
def _npy_header(shape):
    """The bytes np.save writes before the data of a float32 array of ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def write_features(work, n, seed=0):
    """``n`` samples x (five utterance features + one frame feature) under ``work``, one .npy per sample and
    feature (np.save's format, written directly: at 780,000 files np.save's own overhead would dominate).
    Returns the names and each feature's folder. An existing folder holding the n files is reused (--keep)."""
    names = [f"sample_{i:08d}" for i in range(n)]
    feats = dict(UTT, **{FRAME[0]: FRAME[1]})
    roots = {f: os.path.join(work, f) for f in feats}
    if all(os.path.isdir(r) and len(os.listdir(r)) == n for r in roots.values()):
        return names, roots, False
    rng = np.random.default_rng(seed)
    lengths = rng.integers(T_RANGE[0], T_RANGE[1] + 1, n)

    def one(feat):
        dim, root = feats[feat], roots[feat]
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        frame = feat == FRAME[0]
        local = np.random.default_rng([seed, dim, frame])
        head = {} if frame else {None: _npy_header((dim,))}
        for start in range(0, n, 4096):
            stop = min(start + 4096, n)
            if frame:
                block = local.standard_normal((int(lengths[start:stop].sum()), dim), dtype=np.float32)
                cuts = np.concatenate([[0], np.cumsum(lengths[start:stop])])
                rows = [block[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
            else:
                rows = local.standard_normal((stop - start, dim), dtype=np.float32)
            for name, row in zip(names[start:stop], rows):
                key = row.shape[0] if frame else None
                if key not in head:
                    head[key] = _npy_header(row.shape)
                with open(os.path.join(root, name + ".npy"), "wb") as f:
                    f.write(head[key])
                    f.write(row.tobytes())

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, feats))
    return names, roots, True


class PerFileDataset(Dataset):
    """The MRAC25 design: every feature file of the sample np.loaded in ``__getitem__``; frame sequences
    subsampled evenly to ``max_len`` (the rule of ours), padded per batch by :func:`collate`."""

    def __init__(self, names, labels, roots, max_len):
        self.names, self.labels, self.roots, self.max_len = names, labels, roots, max_len

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        name = self.names[i]
        out = []
        for feat, root in self.roots.items():
            x = np.load(os.path.join(root, name + ".npy")).astype(np.float32)
            if feat == FRAME[0] and self.max_len and x.shape[0] > self.max_len:
                x = x[(np.arange(self.max_len) * x.shape[0]) // self.max_len]
            out.append(x)
        return out, int(self.labels[i])


def collate(items):
    feats, masks = [], []
    for k, feat in enumerate(list(UTT) + [FRAME[0]]):
        xs = [it[0][k] for it in items]
        if feat != FRAME[0]:
            feats.append(torch.from_numpy(np.stack(xs)))
            masks.append(None)
            continue
        width = max(x.shape[0] for x in xs)
        pad = np.zeros((len(xs), width, xs[0].shape[1]), np.float32)
        mask = np.zeros((len(xs), width), bool)
        for j, x in enumerate(xs):
            pad[j, :len(x)] = x
            mask[j, :len(x)] = True
        feats.append(torch.from_numpy(pad))
        masks.append(torch.from_numpy(mask))
    return feats, masks, torch.tensor([it[1] for it in items])


# ------------------------------------------------------------------------------------------- the loops
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(model, optimizer, precision, samples, args, device, epoch_seed):
    """train_epoch over SampleSet batches: --warmup untimed steps, then --steps timed ones (their loss sum read
    back once, as fit does)."""
    batches = samples.iter_batches(args.batch_size, shuffle=True, seed=epoch_seed)
    train_epoch(model, optimizer, islice(batches, args.warmup), precision)
    _sync(device)
    t0 = time.perf_counter()
    total, seen = train_epoch(model, optimizer, islice(batches, args.steps or None), precision)
    float(total)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def time_theirs(model, optimizer, precision, loader, args, device):
    """The MRAC25 loop: each batch copied to the device, forward, loss, backward, step, ``loss.item()``."""
    model.train()
    scaler = precision.scaler
    it = iter(loader)

    def run(steps):
        seen = 0
        for feats, masks, labels in islice(it, steps):
            feats = [x.to(device) for x in feats]
            masks = [None if m is None else m.to(device) for m in masks]
            labels = labels.to(device)
            with precision.autocast():
                out = model(feats, masks)
                loss = model.loss(out, labels)
            optimizer_step(model, optimizer, loss, scaler)
            loss.item()
            seen += len(labels)
        return seen

    run(args.warmup)
    _sync(device)
    t0 = time.perf_counter()
    seen = run(args.steps or None)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def time_bare(model, optimizer, precision, tensors, args, device):
    """Contiguous slices of device tensors, the same step; nothing else."""
    model.train()
    feats, masks, labels = tensors
    scaler = precision.scaler
    bs = args.batch_size

    def run(first, steps):
        for k in range(first, first + steps):
            sl = slice(k * bs, (k + 1) * bs)
            with precision.autocast():
                out = model([x[sl] for x in feats], [None if m is None else m[sl] for m in masks])
                loss = model.loss(out, labels[sl])
            optimizer_step(model, optimizer, loss, scaler)
        return steps * bs

    run(0, args.warmup)
    _sync(device)
    t0 = time.perf_counter()
    seen = run(args.warmup, args.timed_steps)
    _sync(device)
    return seen / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000,
                   help="samples (MER2025's scale is 130000: 780,000 files, about 5 min to write and pack on 2 cores; "
                        "with --keep once)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps of an epoch; 0: the whole epoch (default: 60 on the CPU, the whole epoch on a GPU)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the clock starts")
    p.add_argument("--repeats", type=int, default=2, help="timings of each loader, alternating (the best is kept)")
    p.add_argument("--batch_size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--models", default="auto_attention,moe")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (as train.py --compile)")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers of the MRAC25 design")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch folder (files and packs), and reuse it when given again as --workdir")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(str(e))
    set_tf32(device, True)
    if args.steps is None:
        args.steps = 60 if device.type == "cpu" else 0
    need = (args.warmup + (args.steps or 1)) * args.batch_size
    if need > args.n:
        p.error(f"--warmup + --steps = {args.warmup + args.steps} steps of {args.batch_size} need {need} samples, "
                f"more than --n {args.n}: lower --steps or raise --n")
    work = args.workdir or tempfile.mkdtemp(prefix="mer_train_bench_")
    os.makedirs(work, exist_ok=True)
    if args.keep:
        print(f"scratch folder {work} is kept (give it as --workdir to reuse its files and packs)")
    try:
        t0 = time.time()
        names, roots, wrote = write_features(os.path.join(work, "files"), args.n)
        print(f"{'wrote' if wrote else 'reused'} {args.n} samples x {len(UTT)} utterance features "
              f"({', '.join(map(str, UTT.values()))} dims) + {FRAME[0]} (T x {FRAME[1]}, T in {T_RANGE[0]}.."
              f"{T_RANGE[1]}), one .npy each, in {time.time() - t0:.1f}s")
        labels = np.random.default_rng(1).integers(0, N_CLASSES, args.n)
        t0 = time.time()
        cache = os.path.join(work, "cache")
        stores = [pack_feature(f, roots[f], d, f == FRAME[0], cache_root=cache, num_workers=4, progress=False)
                  for f, d in list(UTT.items()) + [FRAME]]
        print(f"packed (or opened) the {len(stores)} features in {time.time() - t0:.1f}s")
        print(f"device {device}" + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else
                                    f" ({torch.cuda.get_device_name(device)})")
              + f"; batch {args.batch_size}; amp {args.amp}; compile {'on' if args.compile else 'off'}; "
              f"{args.steps or 'all'} timed steps after {args.warmup}")
        lowest = {"MRAC25": [], "bare": []}
        for name in models:
            hp = load_model_config(name)
            max_len = hp.get("max_len")
            t0 = time.time()
            samples = SampleSet(stores, names, labels, max_len=max_len, device=device)
            setup = time.time() - t0
            args.timed_steps = args.steps or (args.n // args.batch_size - args.warmup)  # bare: full batches
            # bare: the first samples of a shuffled order, as contiguous device tensors
            order = np.random.default_rng(7).permutation(args.n)[:(args.warmup + args.timed_steps) * args.batch_size]
            big = samples.batch(order)
            tensors = (big["feats"], big["masks"], big["labels"])
            set_seed(0)
            model = create_model(name, samples.feat_dims, samples.frame_level, N_CLASSES, **hp).to(device)
            init = {k: v.clone() for k, v in model.state_dict().items()}
            cfg = TrainConfig()

            def fresh():
                """The initial weights, a new optimiser and a new Precision (an fp16 scaler starts afresh)."""
                model.load_state_dict(init)
                set_seed(0)
                return make_optimizer(model, cfg.optimizer, cfg.lr, cfg.l2), Precision(args.amp, device)

            if args.compile:
                compile_model(model, next(samples.iter_batches(args.batch_size)), Precision(args.amp, device),
                              device)
            rates = {"ours": [], "bare": [], "MRAC25": []}
            for r in range(args.repeats):  # alternating, so that a slow stretch of a shared machine hits all three
                rates["bare"].append(time_bare(model, *fresh(), tensors, args, device))
                rates["ours"].append(time_ours(model, *fresh(), samples, args, device, r))
                loader = DataLoader(PerFileDataset(names, labels, roots, max_len), batch_size=args.batch_size,
                                    shuffle=True, num_workers=args.num_workers, collate_fn=collate,
                                    generator=torch.Generator().manual_seed(r))
                rates["MRAC25"].append(time_theirs(model, *fresh(), loader, args, device))
                del loader
            del tensors, big
            ours, bare, theirs = max(rates["ours"]), max(rates["bare"]), max(rates["MRAC25"])
            print(f"{name}: list gathered on the device in {setup:.2f}s; samples/s: ours {ours:,.0f} | MRAC25 "
                  f"({args.num_workers} workers) {theirs:,.0f} | bare {bare:,.0f}")
            print(f"{name}: ours/MRAC25 {ours / theirs:.2f}, ours/bare {ours / bare:.2f}")
            lowest["MRAC25"].append(ours / theirs)
            lowest["bare"].append(ours / bare)
            del samples
        print(f"lowest over {', '.join(models)}:")
        print(f"ours/MRAC25: {min(lowest['MRAC25']):.2f}")
        print(f"ours/bare: {min(lowest['bare']):.2f}")
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
