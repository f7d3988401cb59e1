"""Challenge submissions: a CSV ``name,discrete`` with one row per candidate name, in the candidates' order.

:func:`check_submission` refuses anything a scorer would reject or silently mis-score (duplicate names,
candidates without a prediction, predictions for names that are not candidates, labels outside the label
set); :func:`write_submission` writes the file only after the check passed, atomically.
"""

import os

import pandas as pd

from dataloader.files import DataError, _preview


def check_submission(names, labels, candidates, class_names):
    """Raise :class:`DataError` listing every problem of a submission, each naming the offending values."""
    names = [str(n) for n in names]
    labels = [str(x) for x in labels]
    candidates = [str(c) for c in candidates]
    if len(names) != len(labels):
        raise DataError(f"submission has {len(names)} names but {len(labels)} labels")
    problems = []
    dup = pd.Series(names)[pd.Series(names).duplicated()].unique()
    if len(dup):
        problems.append(f"{len(dup)} names are predicted more than once: {_preview(dup)}")
    dup_c = pd.Series(candidates)[pd.Series(candidates).duplicated()].unique()
    if len(dup_c):
        problems.append(f"{len(dup_c)} names appear more than once in the candidate list: {_preview(dup_c)}")
    have, wanted = set(names), set(candidates)
    missing = [c for c in candidates if c not in have]
    if missing:
        problems.append(f"{len(missing)} candidate names have no prediction: {_preview(missing)} "
                        "(predict every name of the candidate list)")
    extra = [n for n in names if n not in wanted]
    if extra:
        problems.append(f"{len(extra)} predicted names are not in the candidate list: {_preview(extra)} "
                        "(check --candidates, or predict exactly the candidate names)")
    allowed = set(class_names)
    bad = pd.Series([x for x in labels if x not in allowed], dtype=object)
    if len(bad):
        counts = bad.value_counts()
        listing = ", ".join(f"'{k}' x{v}" for k, v in counts.head(5).items())
        more = f" (and {len(counts) - 5} more values)" if len(counts) > 5 else ""
        problems.append(f"{len(bad)} labels are not in the label set {list(class_names)}: {listing}{more}")
    if problems:
        raise DataError("the submission is not valid:\n  " + "\n  ".join(problems))


def label_distribution(labels, class_names):
    """``class -> count`` in label-set order (zeros included)."""
    counts = pd.Series([str(x) for x in labels], dtype=object).value_counts()
    return {c: int(counts.get(c, 0)) for c in class_names}


def write_submission(path, names, labels, candidates, class_names, log=None):
    """Check, then write ``path`` (``name,discrete`` in candidate order) via a temporary file and a rename.

    Returns the label distribution (``class -> count``) and logs it (``log``) or prints it."""
    check_submission(names, labels, candidates, class_names)
    by_name = dict(zip([str(n) for n in names], [str(x) for x in labels]))
    candidates = [str(c) for c in candidates]
    df = pd.DataFrame({"name": candidates, "discrete": [by_name[c] for c in candidates]})
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    dist = label_distribution(df["discrete"], class_names)
    n = max(len(df), 1)
    line = f"submission {path}: {len(df)} names; " + ", ".join(f"{c} {k} ({k / n:.1%})" for c, k in dist.items())
    if log is not None:
        log.info(line)
    else:
        print(line)
    return dist
