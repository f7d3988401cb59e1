"""Convert MERBench / MRAC25 split lists (pickled ``.npy`` dictionaries) to the project's JSON lists.

    python preprocess/convert_lst.py --trust-pickle old/seed0.npy train_lst/mer2025/seed0.json

Those ``.npy`` files are Python pickles: loading one can run arbitrary code. Convert only files you made
yourself or got from a source you trust, and say so with --trust-pickle.
"""

import argparse
import sys

import numpy as np

import _paths  # noqa: F401
from dataloader.files import DataError, write_split_json


def convert(src, dst, trust_pickle=False):
    if not trust_pickle:
        raise DataError(f"'{src}' is a pickle and loading it can execute code; rerun with --trust-pickle "
                        "if you trust where it came from")
    try:
        obj = np.load(src, allow_pickle=True)
    except Exception as e:
        raise DataError(f"cannot read '{src}' as a .npy list: {e}") from e
    doc = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj
    if not isinstance(doc, dict) or "train_info" not in doc or "valid_info" not in doc:
        raise DataError(f"'{src}' does not hold a dict with 'train_info' and 'valid_info'")
    infos = []
    for part in ("train_info", "valid_info"):
        info = dict(doc[part])
        if "names" not in info or "emos" not in info:
            raise DataError(f"'{part}' of '{src}' lacks 'names' or 'emos' (keys: {list(info)})")
        n = len(info["names"])
        vals = info.get("vals")
        if vals is None or len(vals) != n:
            vals = [0.0] * n
        infos.append({"names": list(info["names"]), "emos": [str(e) for e in info["emos"]],
                      "vals": [float(v) for v in vals]})
    write_split_json(dst, infos[0], infos[1])
    return len(infos[0]["names"]), len(infos[1]["names"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="MERBench/MRAC25 .npy list")
    p.add_argument("dst", help="JSON split list to write")
    p.add_argument("--trust-pickle", action="store_true", help="allow loading the pickle (it can run code)")
    args = p.parse_args(argv)
    try:
        ntr, nva = convert(args.src, args.dst, args.trust_pickle)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.dst}: {ntr} train, {nva} valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
