"""The teacher report (ACL-MER's Table 1): a teacher's count, coverage, accuracy and weighted F1 per confidence
level and above each threshold; the script: preprocess/teacher_report.py.
"""

import math
import os

import numpy as np
import pandas as pd

import config
from dataloader.files import DataError, read_label_csv
from common.metrics import emotion_metrics
from teachers.records import label_set, read_teacher_jsonl

LEVELS = range(6)
COLUMNS = ["row", "level", "count", "coverage", "correct", "accuracy", "weighted_f1"]
PARTS = {"train": "label_csv", "test": "test_label_csv", "unlabeled": "unlabeled_truth"}


def _predicted(teacher_df, emotions):
    """The teacher's answer per record: its label, else the emotion with the top score."""
    out = []
    for label, scores in zip(teacher_df["label"], teacher_df["scores"]):
        if isinstance(label, str) and label:
            out.append(label)
        else:
            out.append(max(emotions, key=lambda e: scores[e]))  # first in label-set order on a tie
    return out


def teacher_report(teacher_df, labels_df, emo_rule, error_names=()):
    """The per-confidence table of a teacher against ground truth, as a DataFrame with COLUMNS.

    ``teacher_df``: valid records (columns ``name``, ``label``, ``confidence``, ``scores``; as
    vlm_features.read_teacher_jsonl returns them). ``labels_df``: ``name``, ``discrete``. ``error_names``:
    names whose teacher line was skipped (``Problem.name`` of the reader's problems). A row's accuracy and
    F1 are NaN when it has no sample. ``attrs`` holds ``n_labelled`` and ``n_ignored`` (records of samples
    without a label).
    """
    emotions = label_set(emo_rule)
    cidx = {e: i for i, e in enumerate(emotions)}
    truth = dict(zip(labels_df["name"].astype(str), labels_df["discrete"].astype(str)))
    n_labelled = len(truth)
    if n_labelled == 0:
        raise DataError("no labelled sample to score the teacher against")
    bad = sorted({t for t in truth.values() if t not in cidx})
    if bad:
        raise DataError(f"ground-truth labels {bad} are not in the label set {emotions}: pick the right --emo_rule")
    known = teacher_df[teacher_df["name"].isin(truth)].copy()
    n_ignored = len(teacher_df) - len(known)
    known["pred"] = _predicted(known, emotions)
    known["truth"] = [truth[n] for n in known["name"]]
    conf = pd.to_numeric(known["confidence"], errors="coerce").to_numpy(dtype=np.float64)
    level = np.where(np.isnan(conf), -1, np.clip(np.floor(np.nan_to_num(conf, nan=0.0)), 0, 5)).astype(int)

    def row(name, lvl, mask):
        sub = known[mask]
        n = len(sub)
        y = [cidx[t] for t in sub["truth"]]
        p = [cidx.get(x, -1) for x in sub["pred"]]
        m = emotion_metrics(y, p) if n else {"acc": math.nan, "f1": math.nan}
        return {"row": name, "level": lvl, "count": n, "coverage": n / n_labelled,
                "correct": int(sum(a == b for a, b in zip(y, p))), "accuracy": m["acc"], "weighted_f1": m["f1"]}

    rows = [row(f"= {c}", c, level == c) for c in LEVELS]
    rows += [row(f">= {c}", c, ~np.isnan(conf) & (conf >= c)) for c in LEVELS]
    rows.append(row("answered", math.nan, np.ones(len(known), dtype=bool)))
    rows.append(row("no confidence", math.nan, level == -1))
    answered = set(known["name"])
    errors = {n for n in error_names if n in truth and n not in answered}
    n_missing = n_labelled - len(answered) - len(errors)
    for name, n in (("no answer", n_missing), ("error", len(errors))):
        rows.append({"row": name, "level": math.nan, "count": n, "coverage": n / n_labelled, "correct": 0,
                     "accuracy": math.nan, "weighted_f1": math.nan})
    # every labelled sample; a missing or failed answer is a wrong prediction (class -1)
    pred_of = dict(zip(known["name"], known["pred"]))
    y_all = [cidx[t] for t in truth.values()]
    p_all = [cidx.get(pred_of.get(n), -1) for n in truth]
    m = emotion_metrics(y_all, p_all)
    rows.append({"row": "all labelled", "level": math.nan, "count": n_labelled, "coverage": 1.0,
                 "correct": int(sum(a == b for a, b in zip(y_all, p_all))), "accuracy": m["acc"],
                 "weighted_f1": m["f1"]})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs.update(n_labelled=n_labelled, n_ignored=n_ignored)
    return out


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else str(v)


def to_markdown(table, title=None, notes=()):
    """The report as a Markdown table (coverage, accuracy and F1 in percent)."""
    lines = [f"## {title}", ""] if title else []
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    lines += ["| confidence | count | coverage % | accuracy % | weighted F1 % |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.row.replace('>=', '≥')} | {r.count} | {_fmt(r.coverage, True)} | {_fmt(r.accuracy, True)} "
                     f"| {_fmt(r.weighted_f1, True)} |")
    return "\n".join(lines) + "\n"


def plot_report(table, path, title=None):
    """Accuracy and coverage against the confidence threshold (>= c), with the accuracy of each level (= c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_least = table[table["row"].str.startswith(">=")]
    exact = table[table["row"].str.startswith("= ")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(at_least["level"], at_least["accuracy"], "o-", label="accuracy, confidence ≥ c")
    ax.plot(at_least["level"], at_least["coverage"], "s--", label="coverage, confidence ≥ c")
    ax.bar(exact["level"], exact["accuracy"].fillna(0), width=0.4, alpha=0.3, color="grey",
           label="accuracy, confidence = c")
    ax.set_xlabel("confidence threshold c")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(list(LEVELS))
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "teacher accuracy and coverage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def dataset_labels(dataset, parts=None):
    """Label tables of a data set (``[(part, path)]``) that exist on disk, among ``parts``."""
    if dataset not in config.DATASETS:
        raise DataError(f"unknown --dataset '{dataset}' (config.DATASETS: {', '.join(config.DATASETS)})")
    ds = config.DATASETS[dataset]
    parts = list(parts or PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise DataError(f"unknown --parts {unknown}: use {', '.join(PARTS)}")
    found = [(p, ds.get(PARTS[p])) for p in parts if ds.get(PARTS[p]) and os.path.isfile(ds[PARTS[p]])]
    if not found:
        raise DataError(f"data set '{dataset}' has no label table among {parts} on disk; write it first "
                        "(its converter in preprocess/) or give --labels")
    return found


def load_labels(paths, emotions):
    """One ground-truth table from several label CSVs (a name listed twice must agree)."""
    frames = [read_label_csv(p, emotions)[["name", "discrete"]] for p in paths]
    table = pd.concat(frames, ignore_index=True)
    clash = table.groupby("name")["discrete"].nunique()
    if (clash > 1).any():
        raise DataError(f"{int((clash > 1).sum())} names have different labels in {', '.join(paths)}, "
                        f"e.g. {clash[clash > 1].index[0]}")
    return table.drop_duplicates("name").reset_index(drop=True)


def report_file(teacher, label_paths, emo_rule, out, title=None, log=print):
    """Read, score, write ``<out>.csv/.md/.png``; returns the table."""
    emotions = label_set(emo_rule)
    df, problems = read_teacher_jsonl(teacher, emo_rule)
    labels = load_labels(label_paths, emotions)
    table = teacher_report(df, labels, emotions, error_names=[p.name for p in problems if p.name])
    teachers = sorted({t for t in df["teacher"] if t})
    notes = [f"teacher file: {os.path.basename(teacher)} ({', '.join(teachers) or 'no teacher name'}): "
             f"{len(df)} valid records, {len(problems)} skipped lines",
             f"ground truth: {', '.join(os.path.basename(p) for p in label_paths)} "
             f"({table.attrs['n_labelled']} labelled samples); {table.attrs['n_ignored']} records of other samples "
             "ignored",
             f"label set {emo_rule if isinstance(emo_rule, str) else emotions}; confidence level = floor of the "
             "confidence; coverage = share of the labelled samples"]
    title = title or f"Teacher report: {os.path.splitext(os.path.basename(teacher))[0]}"
    md = to_markdown(table, title, notes)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    table.to_csv(out + ".csv", index=False)
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(md)
    plot_report(table, out + ".png", title)
    log(md)
    log(f"wrote {out}.csv, {out}.md and {out}.png")
    return table
