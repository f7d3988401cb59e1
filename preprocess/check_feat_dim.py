"""Check every registered feature against what is on disk (reads .npy headers only: fast).

    python preprocess/check_feat_dim.py                       # all features in config.py
    python preprocess/check_feat_dim.py --feat demo-hubert-large-UTT --dataset demo

For each feature: the dim in config.py, the dim(s) found on disk, the number of files, and, with
--dataset or --names, how many names of those lists have no file. Exits 1 where config and disk
disagree (a dim differs, files of mixed shapes, names without a file, or a requested feature whose
folder is absent); features that were simply never extracted are listed as 'absent' (exit 0 unless named
with --feat).
"""

import argparse
import os
import sys
from collections import Counter


import _paths  # noqa: F401
import config
from dataloader.files import DataError, npy_header, read_names_csv


def check_feature(name, names=None):
    """Dict describing feature ``name`` on disk; ``ok`` False where it disagrees with config."""
    modality, dim, root = config.find_feature(name)
    frame = config.is_frame_level(name)
    res = {"feature": name, "modality": modality, "config_dim": dim, "root": root, "files": 0,
           "disk_dims": "", "missing": 0, "missing_examples": [], "status": "ok", "ok": True}
    if not os.path.isdir(root):
        res.update(status="absent", ok=False)
        return res
    files = [f for f in os.listdir(root) if f.endswith(".npy")]
    res["files"] = len(files)
    dims, bad = Counter(), []
    for f in files:
        try:
            shape = npy_header(os.path.join(root, f))[0]
        except Exception as e:
            bad.append(f"{f} (unreadable: {e})")
            continue
        if frame:
            d = shape[-1] if len(shape) == 2 else None
        else:
            d = shape[-1] if (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)) else None
        dims[d] += 1
        if d != dim:
            bad.append(f"{f} {shape}")
    res["disk_dims"] = ",".join(str(d) for d, _ in dims.most_common())
    problems = []
    if bad:
        problems.append(f"{len(bad)} files disagree with dim {dim}, e.g. {bad[:3]}")
    if names is not None:
        have = {f[:-4] for f in files}
        missing = [n for n in names if n not in have]
        res["missing"], res["missing_examples"] = len(missing), missing[:5]
        if missing:
            problems.append(f"{len(missing)} listed names have no file, e.g. {missing[:5]}")
    if not files:
        problems.append("the folder holds no .npy files")
    if problems:
        res.update(status="; ".join(problems), ok=False)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat", nargs="*", default=None, help="features to check (default: all registered)")
    p.add_argument("--dataset", default=None, help="also check the names of this data set's lists")
    p.add_argument("--names", nargs="*", default=[], help="CSV files with a 'name' column to check")
    args = p.parse_args(argv)
    feats = args.feat or config.all_features()
    lists = list(args.names)
    if args.dataset:
        ds = config.DATASETS[args.dataset]
        lists += [ds[k] for k in ("label_csv", "test_csv", "unlabeled_csv") if ds.get(k)]
    names = None
    if lists:
        names = []
        for path in lists:
            try:
                names += read_names_csv(path)
            except DataError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    failed = False
    print(f"{'feature':<32} {'modality':<6} {'config':>6} {'disk':>8} {'files':>7} {'missing':>7}  status")
    for feat in feats:
        try:
            r = check_feature(feat, names)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            return 1
        if r["status"] == "absent":
            failed |= bool(args.feat)
            status = f"absent: no folder {r['root']}"
        else:
            failed |= not r["ok"]
            status = r["status"]
        print(f"{feat:<32} {r['modality']:<6} {r['config_dim']:>6} {r['disk_dims'] or '-':>8} {r['files']:>7} "
              f"{r['missing']:>7}  {status}")
    if failed:
        print("config.py and the disk disagree: fix the dims in config.py or re-extract the listed files",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
