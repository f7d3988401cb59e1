"""VLM knowledge as features: a teacher's per-emotion scores and an embedding of its description, one expert
each; the script: preprocess/vlm_features.py.
"""

import os
import time
from collections import Counter


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
