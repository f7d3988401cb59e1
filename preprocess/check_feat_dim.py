"""Check every registered feature against what is on disk (reads .npy headers only: fast).

    python preprocess/check_feat_dim.py                       # all features in config.py
    python preprocess/check_feat_dim.py --feat demo-hubert-large-UTT --dataset demo
    python preprocess/check_feat_dim.py --dataset mydata              # the features of one data set

For each feature: the dim in config.py, the dim(s) found on disk, the number of files, and, with
--dataset or --names, how many names of those lists have no file. With --dataset and no --feat, the features
checked are the data set's (those its registration lists, else those whose folder lies in its folder). Exits 1
where config and disk disagree, printing one fix per problem (set the dim, re-extract files, extract missing
names, extract an absent requested feature); features of the whole registry that were never extracted are
listed as 'absent' (exit 0 unless named with --feat or belonging to --dataset).
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
    res["unreadable"] = sum("(unreadable" in b for b in bad)
    res["bad_dims"] = len(bad) - res["unreadable"]
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
    p.add_argument("--feat", nargs="*", default=None,
                   help="features to check (default: the --dataset's features, else every registered one)")
    p.add_argument("--dataset", default=None, help="check this data set's features against the names of its lists")
    p.add_argument("--names", nargs="*", default=[], help="CSV files with a 'name' column to check")
    args = p.parse_args(argv)
    lists = list(args.names)
    if args.dataset:
        if args.dataset not in config.DATASETS:
            print(f"error: unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})",
                  file=sys.stderr)
            return 2
        ds = config.DATASETS[args.dataset]
        lists += [ds[k] for k in ("label_csv", "test_csv", "unlabeled_csv") if ds.get(k)]
    feats = args.feat or (config.dataset_features(args.dataset) if args.dataset else config.all_features())
    if not feats:
        print(f"error: data set '{args.dataset}' has no registered features (none listed in its registration, none "
              "under its folder); extract some (preprocess/extract_features.py) or name them with --feat",
              file=sys.stderr)
        return 1
    names = None
    if lists:
        names, seen = [], set()
        for path in lists:  # a name in two lists (MER2025's candidates are in the pool too) counts once
            try:
                for n in read_names_csv(path):
                    if n not in seen:
                        seen.add(n)
                        names.append(n)
            except DataError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    fixes = []
    print(f"{'feature':<32} {'modality':<6} {'config':>6} {'disk':>8} {'files':>7} {'missing':>7}  status")
    for feat in feats:
        try:
            r = check_feature(feat, names)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            return 1
        if r["status"] == "absent":
            status = f"absent: no folder {r['root']}"
            if args.feat or args.dataset:
                fixes.append(f"{feat}: no folder {r['root']}: extract the feature there, or fix its root in config.py")
        else:
            status = r["status"]
            fixes += fixes_for(feat, r, args.dataset)
        print(f"{feat:<32} {r['modality']:<6} {r['config_dim']:>6} {r['disk_dims'] or '-':>8} {r['files']:>7} "
              f"{r['missing']:>7}  {status}")
    for line in fixes:
        print(line, file=sys.stderr)
    return 1 if fixes else 0


def fixes_for(feat, r, dataset):
    """What to do about each problem of a checked feature (one line each)."""
    out = []
    disk = [d for d in r["disk_dims"].split(",") if d]
    if r.get("bad_dims"):
        if len(disk) == 1 and disk[0] != "None":
            out.append(f"{feat}: every file holds dim {disk[0]}, config.py says {r['config_dim']}: set the dim in "
                       "config.py (or the data set's dataset.yaml) to what the files hold")
        else:
            out.append(f"{feat}: files of dims {r['disk_dims']} in one folder: re-extract the files whose dim is not "
                       f"{r['config_dim']}")
    if r.get("unreadable"):
        out.append(f"{feat}: {r['unreadable']} unreadable files: re-extract them")
    if r["missing"]:
        whose = f"of data set '{dataset}'" if dataset else "of the given lists"
        out.append(f"{feat}: {r['missing']} names {whose} have no file (e.g. {', '.join(r['missing_examples'][:3])}): "
                   "extract them (preprocess/extract_features.py" + (f" --dataset {dataset}" if dataset else "")
                   + "), or remove them from the lists")
    if r["files"] == 0:
        out.append(f"{feat}: the folder {r['root']} holds no .npy files: extract the feature there")
    return out


if __name__ == "__main__":
    sys.exit(main())
