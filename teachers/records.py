"""Teacher records: the JSON Lines a teacher writes (``name``, ``label``, ``scores``, ``confidence``,
``description``, ``teacher``), read and checked line by line.

A line that is not such a record (bad JSON, no name, scores that miss an emotion of the label set or name one
outside it, negative or non-numeric scores, a confidence outside 0-5, a name seen before) becomes a
:class:`Problem` with its line number; the rest is returned as a DataFrame. Every step that reads a teacher's
answers (VLM features, the teacher report, pseudo labels, re-ranking) reads them here.
"""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

import config
from common.errors import DataError

COLUMNS = ["line", "name", "label", "confidence", "teacher", "description", "scores"]


@dataclass
class Problem:
    """One skipped line of a teacher file: ``kind`` is malformed, missing, unknown or duplicate."""
    line: int
    kind: str
    reason: str
    name: str = None

    def __str__(self):
        who = f" ({self.name})" if self.name else ""
        return f"line {self.line}{who}: {self.reason}"


def label_set(emo_rule):
    """The ordered emotions of a label-set name in config.EMO_RULE, or of an explicit list."""
    if isinstance(emo_rule, str):
        if emo_rule not in config.EMO_RULE:
            raise DataError(f"unknown --emo_rule '{emo_rule}' (config.EMO_RULE: {', '.join(config.EMO_RULE)})")
        return list(config.EMO_RULE[emo_rule])
    return [str(e) for e in emo_rule]


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_record(obj, emotions):
    """A checked record dict, or ``(kind, reason)`` saying why the line is skipped."""
    if not isinstance(obj, dict):
        return "malformed", f"not a JSON object but {type(obj).__name__}"
    name = obj.get("name")
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        return "malformed", "no 'name' (a non-empty string)"
    name = name.strip()
    if "/" in name or "\\" in name or name.startswith("."):
        return "malformed", f"name '{name}' is not a plain file name"
    scores = obj.get("scores")
    if not isinstance(scores, dict) or not scores:
        return "malformed", "no 'scores' object (emotion -> number)"
    clean = {}
    for key, value in scores.items():
        k = str(key).strip().lower()
        if k in clean:
            return "malformed", f"emotion '{k}' appears twice in 'scores'"
        if not _is_number(value) or value < 0:
            return "malformed", f"score of '{key}' is {value!r}; scores must be finite numbers >= 0"
        clean[k] = float(value)
    unknown = sorted(set(clean) - set(emotions))
    missing = [e for e in emotions if e not in clean]
    if unknown:
        extra = f"; missing {missing}" if missing else ""
        return "unknown", f"unknown emotions {unknown} in 'scores' (label set: {', '.join(emotions)}){extra}"
    if missing:
        return "missing", f"'scores' lacks emotions {missing}"
    if sum(clean.values()) <= 0:
        return "malformed", "all scores are 0"
    desc = obj.get("description")
    if not isinstance(desc, str):
        return "malformed", "no 'description' (a string)"
    label = obj.get("label")
    if label is not None:
        label = str(label).strip().lower()
        if label not in emotions:
            return "unknown", f"label '{label}' is not in the label set ({', '.join(emotions)})"
    conf = obj.get("confidence")
    if conf is not None and (not _is_number(conf) or not 0 <= conf <= 5):
        return "malformed", f"confidence {conf!r} is not a number in 0-5"
    teacher = obj.get("teacher")
    return {"name": name, "label": label, "confidence": float(conf) if conf is not None else np.nan,
            "teacher": None if teacher is None else str(teacher), "description": desc,
            "scores": {e: clean[e] for e in emotions}}


def read_teacher_jsonl(path, emo_rule="MER"):
    """Read a teacher file: ``(DataFrame, problems)``.

    The frame has one row per valid record, in file order, with columns ``line`` (1-based), ``name``,
    ``label``, ``confidence``, ``teacher``, ``description`` and ``scores`` (a dict in label-set order, not yet
    renormalised). ``problems`` lists a :class:`Problem` for each skipped line; blank lines are ignored.
    """
    emotions = label_set(emo_rule)
    if not os.path.isfile(path):
        raise DataError(f"teacher file '{path}' does not exist")
    rows, problems, seen = [], [], {}
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8-sig"))  # -sig: a BOM (Windows editors) must not cost line 1
            except UnicodeDecodeError as e:
                problems.append(Problem(i, "malformed", f"not UTF-8 text ({e.reason} at byte {e.start})"))
                continue
            except json.JSONDecodeError as e:
                problems.append(Problem(i, "malformed", f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            rec = _parse_record(obj, emotions)
            if isinstance(rec, tuple):
                name = obj.get("name") if isinstance(obj, dict) and isinstance(obj.get("name"), str) else None
                problems.append(Problem(i, rec[0], rec[1], name))
                continue
            if rec["name"] in seen:
                problems.append(Problem(i, "duplicate", f"name seen before on line {seen[rec['name']]}",
                                        rec["name"]))
                continue
            seen[rec["name"]] = i
            rec["line"] = i
            rows.append(rec)
    return pd.DataFrame(rows, columns=COLUMNS), problems


def score_matrix(df, emo_rule="MER"):
    """``(n, n_emotions)`` float32 scores in label-set order, each row renormalised to sum 1."""
    emotions = label_set(emo_rule)
    if len(df) == 0:
        return np.zeros((0, len(emotions)), dtype=np.float32)
    x = np.array([[s[e] for e in emotions] for s in df["scores"]], dtype=np.float64)
    return (x / x.sum(axis=1, keepdims=True)).astype(np.float32)
