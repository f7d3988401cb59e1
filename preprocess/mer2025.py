"""Check the official MER2025 track-1 (MER-SEMI) release and write the project's tables for ``--dataset mer2025``.

    python preprocess/mer2025.py --release /data/mer2025-dataset
    python preprocess/mer2025.py --release /data/mer2025-dataset --features_root /data/mer2025-dataset-process/features

Input (--release: the unpacked release, as the organisers distribute it on Hugging Face, MERChallenge/MER2025):

  video/<name>.mp4, audio/<name>.wav, openface_face/<name>/   the clips (their names make the release)
  track1_train_disdim.csv     name,discrete,valence   the labelled clips (--labels)
  track_all_candidates.csv    name                    the clips to predict (--candidates)
  subtitle_chieng.csv         name,chinese,english    the subtitles (--subtitles; optional)

--names_csv (a CSV with a name column listing every clip) replaces the media folders as the list of clips.

Checks, each refused in one line naming the file and the fix, before anything is written: the label table's
layout (a header name,discrete[,valence]), unique names, labels among config.EMO_RULE["MER"], numeric valence,
every labelled name a clip of the release; the candidates unique, unlabelled and clips of the release; the
subtitle table's layout; and every feature folder under --features_root (default: --out), MERTools'
``<model>-UTT`` (``(dim,)`` per clip) or ``-FRA``/``-FRM`` (``(T, dim)``): its dim read from one file's
header and compared with config.py's, and a file for every labelled clip and candidate.

Output, under --out (default ``<FEATURE_ROOT>/mer2025``, where config.DATASETS["mer2025"] reads it):

  track1_train_disdim.csv     name,discrete,valence   labelled clips
  test.csv                    name                    the candidates, in the release's order
  unlabeled.csv               name                    every clip that is not labelled, the candidates included
                                                      (transductive use: config.DATASETS["mer2025"]["transductive"])
  transcripts.csv             name,text,chinese,english   text = --transcript_lang (default english, what the
                                                      offline teachers read)
  subtitle_chieng.csv         name,chinese,english    for preprocess/extract_features.py --dataset mer2025
  mer2025_report.json         counts, clip sources, feature folders found (dims, coverage, registered or not)

``--commands`` prints, for each of the runner-up's features (config.MER2025_FEATURES), whether its folder is there and
the command that makes it from the release's clips (or how to bring one this project does not run); no --release.

Then: ``python preprocess/check_feat_dim.py --dataset mer2025 --feat ...``, ``python preprocess/build_splits.py
--dataset mer2025`` and ``python train.py --dataset mer2025 ...``. Exit status 2 on bad input.
"""

import argparse
import os
import sys

import _paths  # noqa: F401
import config
from dataloader.files import DataError
from corpora.mer2025 import (CANDIDATE_FILE, LABEL_FILE, SUBTITLE_FILE, TRANSCRIPT_LANGS,  # noqa: F401
                             convert, feature_commands)  # the library behind this script


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release", default=None, help="the unpacked MER2025 release folder")
    p.add_argument("--commands", action="store_true", help="print how to make each registered MER2025 feature, and "
                   "which are there; convert nothing")
    p.add_argument("--out", default=os.path.join(config.FEATURE_ROOT, "mer2025"))
    p.add_argument("--features_root", default=None,
                   help="folder of <model>-UTT / -FRA feature folders to check (default: --out)")
    p.add_argument("--labels", default=None, help=f"label table (default: {LABEL_FILE} in the release)")
    p.add_argument("--candidates", default=None, help=f"names to predict (default: {CANDIDATE_FILE} in the release)")
    p.add_argument("--subtitles", default=None, help=f"subtitle table (default: {SUBTITLE_FILE} in the release)")
    p.add_argument("--names_csv", default=None, help="CSV listing every clip name (default: the media folders)")
    p.add_argument("--transcript_lang", default="english", choices=TRANSCRIPT_LANGS,
                   help="the subtitle column transcripts.csv gives as text")
    args = p.parse_args(argv)
    if args.commands:
        for name, dim, status, how in feature_commands():
            print(f"{name} ({dim}, {status}):\n    {how}")
        return 0
    if not args.release:
        p.error("--release is required (or --commands)")
    try:
        convert(args.release, args.out, features_root=args.features_root, labels=args.labels,
                candidates=args.candidates, subtitles=args.subtitles, names_csv=args.names_csv,
                transcript_lang=args.transcript_lang)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
