"""Write a few dozen synthetic clips in the MER2025 release layout, for the feature extraction demo and tests.

    python preprocess/make_clip_demo.py [--out features/clipdemo] [--n 48] [--seed 0] [--overwrite] [--no_models]

Deterministic for a given --seed (the same bytes for wav, npy and CSV files, the same decoded content for
mp4); 48 clips take a few seconds and about 47 MB, 40 of them the uncompressed face arrays.

What it writes (under --out):

  audio/<name>.wav                  16 kHz mono 16-bit, 1.5-3.0 s (the length varies per clip)
  video/<name>.mp4                  96x96, 10 fps, as long as the wav, with the same audio as an AAC track
  openface_face/<name>/<name>.npy   (T, 112, 112, 3) uint8 BGR "aligned face crops", T = video frames
  subtitle_chieng.csv               name,chinese,english
  track1_train_disdim.csv           name,discrete,valence   labelled clips (MER labels)
  test.csv                          name                    test candidates
  test_labels.csv                   name,discrete,valence   test truth, for scoring only
  unlabeled.csv                     name                    unlabelled clips
  README.md                         this layout, the generating process and the counts per class
  models/tiny-hubert, tiny-clip,    tiny randomly initialised encoders saved with save_pretrained, standing in
    tiny-bert                       for hub checkpoints so that the demo runs offline (not with --no_models)

The generating process
----------------------
Labels: MER's six classes, balanced (n/6 clips each, in a seeded order); 60% labelled, 20% test, 20%
unlabelled, stratified by class. Valence on MER's [-5, 5] scale: a class mean (neutral 0, angry -3,
happy 3.5, sad -3.5, worried -2, surprise 1) plus N(0, 0.3). Each modality carries the class, so even
randomly initialised encoders give features a small classifier can learn from:

* audio: a tone at 200 Hz * 1.35**k (k = class index; +-3% per clip) with its second harmonic, under a
  class envelope (neutral flat, angry 6 Hz pulses, happy rising, sad decaying, worried 3 Hz tremolo,
  surprise a sudden jump at 30% of the clip), plus white noise.
* video: a bright disc of the class's hue (k * 60 degrees) crossing a dark background at the class's
  speed (1.5 + 1.2k pixels a frame, wrapping around), over faint stripes drifting at a class rate, plus noise.
* face crops: the same disc held in the centre, as a face tracker would keep it, its radius pulsing at the
  class's rate over the drifting stripes, plus noise; stored BGR as MERTools' OpenCV crops are.
* subtitles: 6-9 word English sentences mixing 2-3 words of the class's list with neutral filler, and a
  Chinese column built the same way from class words and filler characters.
"""

import argparse
import os
import shutil
import sys
import time
import _paths  # noqa: F401  (puts the repository root on sys.path)

import config  # noqa: E402
from corpora.clip_demo import _folder_size, _is_clip_demo, _video, CLASSES, make_clips, write_models  # noqa: F401  (the library behind this script)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
