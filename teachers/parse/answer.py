"""The entry point: one raw answer -> one record (see the package docstring for the rules)."""

import json
import re

from teachers.parse.fields import (
    _CONF_KEYS, _CONTRIB_KEYS, _FINAL_LABEL_KEYS, _LABEL_KEYS, _SCORE_KEYS, _all, _get, _labelled_numbers,
    _locate_record, _number, _read_confidence, _read_contributions, _read_description, _read_label_value,
    _read_scores,
)
from teachers.parse.lenient_json import _find_objects
from teachers.parse.plain_text import _plain_text, _shorten


def _empty_record():
    return {"label": None, "scores": None, "confidence": None, "confidence_source": "none", "description": "",
            "contributions": None, "warnings": [], "error": None}


def parse_answer(text, labels):
    """Read one raw teacher answer into a record (see the module docstring); never raises.

    ``labels`` is the label set in its order, e.g. ``config.EMO_RULE["MER"]``. The record has ``label``,
    ``scores`` (label -> float in label-set order, summing to 1, or None), ``confidence`` (0-5 or None),
    ``confidence_source`` ("answer", "score_margin" or "none"), ``description``, ``contributions``,
    ``warnings`` (list of str) and ``error`` (None, or why there is no label).
    """
    out = _empty_record()
    try:
        _parse(text, labels, out)
    except Exception as e:  # noqa: BLE001 - the contract is a record, never an exception
        out.update(label=None, error=f"the parser failed on this answer ({type(e).__name__}: {e}); "
                                     "please report it with the answer text")
    return out


def _parse(text, labels, out):
    warnings = out["warnings"]
    if not isinstance(text, str):
        out["error"] = f"the answer is not text (got {type(text).__name__}); pass the model's output string"
        return
    if isinstance(labels, str):
        out["error"] = f"labels must be a list of label names, not the string {labels!r}; pass e.g. " \
                       "config.EMO_RULE['MER']"
        return
    labels = [str(lab) for lab in (labels or [])]
    if not labels:
        out["error"] = "the label set is empty; pass e.g. config.EMO_RULE['MER']"
        return
    if not text.strip():
        out["error"] = "empty answer"
        return
    text = text[:200_000]

    stripped = text.strip()
    if stripped.startswith('"') and stripped.endswith('"'):
        try:
            inner = json.loads(stripped)
        except ValueError:
            inner = None
        if isinstance(inner, str) and inner.strip():
            warnings.append("the answer was a JSON-encoded string; decoded it")
            text = inner

    think = ""
    close = text.rfind("</think>")
    if close >= 0:
        think = text[:close].replace("<think>", "").strip()
        text = text[close + len("</think>"):]
    elif "<think>" in text:
        out["error"] = "the answer was cut off inside <think>...</think>; there is no final answer"
        out["description"] = text.replace("<think>", "").strip()
        return
    if not text.strip():
        out["error"] = "nothing after </think>: the answer holds only reasoning"
        out["description"] = think
        return

    objects = _find_objects(text)
    with_answer = [o for o in objects if _locate_record(o["obj"], labels) is not None]
    if with_answer:
        finals = [o for o in with_answer if _get(_locate_record(o["obj"], labels), _FINAL_LABEL_KEYS)[0]]
        chosen = (finals or with_answer)[-1]
        if len(objects) > 1:
            k = objects.index(chosen) + 1
            why = "with a final label" if finals else "with a label or scores"
            warnings.append(f"found {len(objects)} JSON objects; used object {k}, the last one {why}")
        _from_record(chosen, labels, out)
        if not out["description"]:
            prose = (text[:chosen["start"]] + "\n" + text[chosen["end"]:])
            prose = re.sub(r"```\w*", "", prose).strip()
            if think:
                out["description"] = think
                warnings.append("no description field; used the <think> reasoning")
            elif len(prose) >= 40:
                out["description"] = prose
                warnings.append("no description field; used the text around the JSON")
        return

    json_keys = None
    if objects:
        json_keys = ", ".join(sorted({str(k) for o in objects for k in o["obj"]})[:12])
        warnings.append(f"the JSON in the answer has no label or scores field (keys: {json_keys}); "
                        "looked for a label in the text")
    label, scores, conf_raw, error = _plain_text(text, labels, warnings, json_keys)
    out["description"] = think or text.strip()
    _finish(label, "no label stated in the text", scores, conf_raw, labels, out, error)


def _from_record(found, labels, out):
    warnings = out["warnings"]
    obj = found["obj"]
    record = _locate_record(obj, labels)
    if found["truncated"]:
        warnings.append("the JSON is truncated (the answer was cut off); kept the fields before the cut")
    if found["repairs"]:
        warnings.append(f"the JSON was not strict; read leniently ({', '.join(sorted(found['repairs']))})")
    if record is not obj:
        warnings.append("the answer fields are nested inside another object; read them there")

    label, raw_label = None, None
    sub = None
    for key, value in _all(record, _LABEL_KEYS):
        if isinstance(value, dict):
            sub = sub or value
            _, value = _get(value, _LABEL_KEYS)
        lab, raw = _read_label_value(value, labels, warnings)
        if lab:
            label = lab
            break
        if raw_label is None:
            raw_label = raw

    def field(aliases):
        for d in (record, sub or {}, obj):
            k, v = _get(d, aliases)
            if k is not None:
                return k, v
        return None, None

    scores = None
    _, conf_raw = field(_CONF_KEYS)
    key, value = field(_SCORE_KEYS)
    if key is not None and _number(value) is not None:
        if conf_raw is None:
            conf_raw = value
            warnings.append(f"'{key}' is a single number, not per-emotion scores; read it as the confidence")
        else:
            warnings.append(f"'{key}' is a single number, not per-emotion scores; ignored")
    elif key is not None:
        scores = _read_scores(value, labels, warnings)
    else:
        pairs = _labelled_numbers(record, labels)
        if len(pairs) < 2 and sub:
            pairs = _labelled_numbers(sub, labels)
        if len(pairs) >= 2:
            scores = _read_scores(dict(pairs), labels, warnings, where="label-named numbers")
    out["description"] = _read_description(record) or (_read_description(sub) if sub else "") or (
        _read_description(obj) if obj is not record else "")
    key, value = field(_CONTRIB_KEYS)
    if key is not None:
        out["contributions"] = _read_contributions(value, warnings)

    error = None
    if label is None:
        if raw_label is not None:
            error = f"unknown label '{_shorten(raw_label, 40)}' (labels: {', '.join(labels)})"
        else:
            error = "the JSON has no usable label and no scores"
    _finish(label, error if raw_label is not None else None, scores, conf_raw, labels, out,
            error if scores is None else None)


def _finish(label, label_problem, scores, conf_raw, labels, out, error):
    """Combine label, scores and confidence into ``out`` with the fallback rules."""
    warnings = out["warnings"]
    if scores is not None:
        out["scores"] = {lab: float(s) for lab, s in zip(labels, scores)}
        top = max(scores)
        tops = [lab for lab, s in zip(labels, scores) if abs(s - top) <= 1e-9]
        if label is None and error is None:
            if len(tops) > 1:
                error = f"no usable label and the top scores tie ({', '.join(tops)}); no label taken"
            else:
                label = tops[0]
                why = label_problem or "no label field"
                warnings.append(f"{why}; used the top score '{label}'")
        elif label is not None and label not in tops:
            warnings.append(f"label '{label}' disagrees with the top score '{tops[0]}'; kept the label")

    conf = _read_confidence(conf_raw, warnings)
    if conf is not None:
        out["confidence"], out["confidence_source"] = conf, "answer"
    elif out["scores"] is not None:
        ranked = sorted(out["scores"].values(), reverse=True) + [0.0]
        out["confidence"] = round(min(max(5.0 * (ranked[0] - ranked[1]), 0.0), 5.0), 10)
        out["confidence_source"] = "score_margin"
        warnings.append("no usable confidence in the answer; derived from the score margin 5 x (top1 - top2)")
    if label is None:
        out["error"] = error or "no label could be read from the answer"
    out["label"] = label
