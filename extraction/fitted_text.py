"""``extract_features.py --modality text --model tfidf-svd``: a text feature that needs no model, for any data set.

TF-IDF (word 1-2 grams, sublinear tf) and a truncated SVD to ``--dim`` components (extraction/text_encoders.py),
fitted on the texts of the training list only: the data set's label table, its ``train`` rows where it has a
split column (never validation, test or unlabelled rows), or the names of ``--fit_names``. Every name is then
encoded with the fitted pair and written as an ordinary feature folder through the extraction writer, as the
model-based runs write theirs (extraction/runner.py): the folder's lock, ``extract_manifest.json`` (settings,
input fingerprints, and ``fitted_on``), ``extract_report.csv``, the registration in the data set's
``dataset.yaml``; beside them ``encoder.pkl``, the fitted pair (a pickle: load it only if you wrote it).

The fitted texts are part of the settings (a hash of the training names and texts), so features of two fits
never mix in one folder: a changed training list or training transcript is refused, naming the folder.
"""

import hashlib
import os
import time
from types import SimpleNamespace

import numpy as np

import config
from common.errors import DataError
from dataloader.files import read_label_csv, read_names_csv
from dataloader.splits import TRAIN_VALUES
from extraction import runner, writer
from extraction.media import MediaError
from extraction.sources import Sources
from extraction.text_encoders import TfidfSvdEncoder

MODELS = ("tfidf-svd", "tfidf")
SEED = 0


def wanted(args):
    """True for a run this module makes (``--modality text --model tfidf-svd``)."""
    return args.modality == "text" and str(args.model).strip().lower() in MODELS


class FittedEncoder:
    """What the runner's folder functions read of an encoder, for a fitted TF-IDF+SVD."""

    def __init__(self, enc):
        self.enc, self.dim, self.device = enc, enc.dim, "cpu"
        self.ref = SimpleNamespace(source="fitted", label="tfidf-svd", short_name="tfidf", path="")
        self.padding_probe = {"batching": "one matrix, no padding"}


def training_names(args, ds):
    """``(names, where from)``: the names whose texts fit the TF-IDF+SVD."""
    if args.fit_names:
        return read_names_csv(args.fit_names), f"--fit_names '{args.fit_names}'"
    label_csv = ds.get("label_csv")
    if not label_csv:
        raise DataError("tfidf-svd is fitted on the training texts: give --dataset (its label table's train rows) "
                        "or --fit_names CSV with the training names")
    table = read_label_csv(label_csv)
    if "split" in table.columns:
        train = table[table["split"].astype(str).str.strip().str.lower().isin(TRAIN_VALUES)]
        return train["name"].tolist(), f"the train rows of '{label_csv}'"
    return table["name"].tolist(), f"'{label_csv}'"


def fit_texts(sources, names, where):
    """The non-empty texts of ``names``, in their order; refused when a name has no row in the texts."""
    missing = [n for n in names if n not in sources.texts]
    if missing:
        raise DataError(f"{len(missing)} training names of {where} have no text in {sources.describe()}, e.g. "
                        f"{missing[:3]}; give a texts CSV with every training name")
    pairs = [(n, str(sources.texts[n]).strip()) for n in names]
    return [(n, t) for n, t in pairs if t and t.lower() != "nan"]


def run(args, logger):
    """Fit, encode and write the feature of ``args``; returns the exit status (0 done, 1 some names failed)."""
    t0 = time.time()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise DataError("tfidf-svd is one fit and one matrix: run it without torchrun")
    runner.check_args(args)
    if args.level != "UTT":
        raise DataError(f"--level {args.level}: tfidf-svd gives one vector per text (UTT)")
    names, lists = runner.resolve_names(args)
    ds = config.DATASETS.get(args.dataset, {}) if args.dataset else {}
    sources = Sources("text", **runner.input_folders(args, ds), subtitle_col=args.subtitle_col)
    train, where = training_names(args, ds)
    pairs = fit_texts(sources, train, where)
    if not pairs:
        raise DataError(f"no training text to fit tfidf-svd on ({where})")
    enc = TfidfSvdEncoder(dim=args.dim, seed=SEED).fit([t for _, t in pairs])
    fitted = FittedEncoder(enc)
    out, feature = runner.output_folder(args, fitted, sources)
    digest = hashlib.sha256("\n".join(f"{n}\t{t}" for n, t in sorted(pairs)).encode("utf-8")).hexdigest()[:16]
    identity = {"model": "tfidf-svd", "family": "tfidf-svd", "modality": "text", "dim": enc.dim, "seed": SEED,
                "ngram_range": [1, 2], "sublinear_tf": True, "fit_texts": f"sha256:{digest}", "level": "UTT",
                "file_dtype": args.save_dtype, **sources.identity()}
    lock, verdict, recorded = runner.take_folder(out, identity, fitted, sources, names, lists, logger)
    if verdict:
        raise DataError(verdict)
    try:
        logger.info(f"feature {feature}: tfidf-svd fitted on {len(pairs)} texts of {where} in {time.time() - t0:.1f}s "
                    f"({enc.info()})")
        status = _write(args, logger, out, feature, names, sources, fitted, recorded or {}, t0)
        manifest = writer.read_manifest(out)
        manifest["fitted_on"] = {"texts": len(pairs), "names": where, "fit_texts": f"sha256:{digest}",
                                 **enc.info()}
        writer.write_manifest(out, manifest)
        enc.save(os.path.join(out, "encoder.pkl"))
        return status
    finally:
        writer.unlock_folder(lock)


def _write(args, logger, out, feature, names, sources, fitted, recorded, t0):
    done, changed, fps, _ = runner.split_done(names, out, fitted, "UTT", args.save_dtype, sources, recorded)
    for n in changed:
        os.remove(writer.feature_path(out, n))
    skip, redo = set(done), set(changed)
    rows = [runner._report_row(n, "exists", "", sources.input_of(n), None, 0, fps[n] or recorded.get(n))
            for n in done]
    todo, texts = [], []
    for n in (n for n in names if n not in skip):
        try:
            texts.append(sources.load(n))
            todo.append(n)
        except MediaError as e:
            rows.append(runner._report_row(n, e.code, str(e), sources.input_of(n), None, 0, fps[n]))
    x = fitted.enc.encode(texts).astype(args.save_dtype) if texts else np.zeros((0, fitted.dim))
    for n, row in zip(todo, x):
        writer.save_npy(writer.feature_path(out, n), row)
        rows.append(runner._report_row(n, "redone" if n in redo else "ok", runner.INPUT_CHANGED if n in redo else "",
                                       sources.input_of(n), {"tokens": None}, 0, fps[n]))
    logger.info(f"{len(todo)} texts encoded, {len(done)} already there, {len(changed)} redone as their text changed")
    report = runner.close_folder(out, rows, names, fitted, 1, time.time() - t0)
    ok = report.status.isin(runner.DONE)
    registered = runner.register_in_dataset(args.dataset, out, feature, "text", fitted.dim, "UTT", ok.any())
    print(runner.summarize(report, out, feature, "text", fitted.dim, registered=registered))
    return 0 if ok.all() else 1
