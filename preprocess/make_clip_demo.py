"""Write a few dozen synthetic clips in the MER2025 release layout, for the feature extraction demo and tests.

    python preprocess/make_clip_demo.py [--out features/clipdemo] [--n 48] [--seed 0] [--overwrite] [--no_models]

What it writes and how the clips carry their class: corpora/clip_demo.py (also printed by --help).
"""

import argparse
import os
import shutil
import sys
import time
import _paths  # noqa: F401  (puts the repository root on sys.path)

import config  # noqa: E402
from corpora import clip_demo
from corpora.clip_demo import _folder_size, _is_clip_demo, _video, CLASSES, make_clips, write_models  # noqa: F401  (the library behind this script)

def main(argv=None):
    p = argparse.ArgumentParser(description=clip_demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(config.FEATURE_ROOT, "clipdemo"))
    p.add_argument("--n", type=int, default=48, help="number of clips (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing clip demo folder (clips, models and extracted features)")
    p.add_argument("--no_models", action="store_true", help="write the clips only, not the tiny encoders")
    args = p.parse_args(argv)
    if args.n < len(CLASSES):
        p.error(f"--n must be at least {len(CLASSES)} (one clip per class), got {args.n}")
    if os.path.isdir(args.out) and os.listdir(args.out):
        if not args.overwrite:
            print(f"error: {args.out} exists and is not empty; pass --overwrite to replace it", file=sys.stderr)
            return 1
        if not _is_clip_demo(args.out):
            print(f"error: {args.out} is not a clip demo folder (no README.md written by this script); --overwrite "
                  "replaces only such folders", file=sys.stderr)
            return 1
        # everything goes: features extracted from the old clips must not be read as the new clips' features
        shutil.rmtree(args.out)
    t0 = time.time()
    table = make_clips(args.out, n=args.n, seed=args.seed)
    if not args.no_models:
        write_models(args.out, args.seed)  # filled in by the extraction package: tiny encoders
    counts = table.split.value_counts()
    print(f"wrote {len(table)} clips ({counts.get('train', 0)} labelled, {counts.get('test', 0)} test, "
          f"{counts.get('unlabeled', 0)} unlabelled; audio/, video/, openface_face/, subtitle_chieng.csv, "
          f"label tables, README.md) to {args.out}: {_folder_size(args.out) / 1e6:.1f} MB in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
