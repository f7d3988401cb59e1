"""The fields of an answer's record: label, scores, confidence, description and contributions, each read under
its many spellings, with a warning for everything repaired or rescaled."""

import math
import re

from teachers.parse.lenient_json import _PartialStr
from teachers.parse.synonyms import _CJK, _STRIP, _map_loose, _match_label


_FINAL_LABEL_KEYS = ["final_label", "final_emotion", "final_answer", "final_prediction", "final_emotion_label",
                     "最终情感", "最终情绪", "最终标签", "最终情感标签", "最终答案", "最终判断", "最终结果"]
_LABEL_KEYS = _FINAL_LABEL_KEYS + [
    "label", "emotion_label", "predicted_emotion", "predicted_label", "prediction", "emotion", "primary_emotion",
    "dominant_emotion", "main_emotion", "overall_emotion", "emotion_category", "emotion_class", "category",
    "class", "answer", "sentiment", "sentiment_label", "polarity", "情感标签", "情绪标签", "情感类别", "情绪类别",
    "预测情感", "预测标签", "主要情感", "主要情绪", "情感", "情绪", "标签", "情感倾向", "情感极性", "答案"]
_SCORE_KEYS = ["scores", "emotion_scores", "score", "probabilities", "probability", "probs",
               "emotion_probabilities", "emotion_probs", "distribution", "emotion_distribution", "likelihoods",
               "class_scores", "all_scores", "sentiment_scores", "情感得分", "情绪得分", "得分", "分数", "情感分数",
               "情绪分数", "情感概率", "情绪概率", "概率", "情感分布", "情绪分布", "各情感得分", "各类情感得分"]
_CONF_KEYS = ["confidence", "confidence_score", "confidence_level", "certainty", "conf", "置信度", "置信分数",
              "置信度分数", "信心", "确信度", "可信度", "把握"]
_DESC_KEYS = ["reasoning", "analysis", "explanation", "description", "rationale", "reason", "reasons",
              "thought", "thoughts", "thinking", "justification", "evidence", "summary", "observation",
              "observations", "cues", "推理过程", "推理", "分析", "分析过程", "理由", "描述", "解释", "原因", "说明",
              "依据", "情感分析", "思考过程", "线索"]
_DESC_SUFFIXES = ("_analysis", "_description", "_reasoning", "_cues", "分析", "描述")
_CONTRIB_KEYS = ["contributions", "contribution", "modality_contributions", "modality_contribution",
                 "modal_contributions", "modality_weights", "modality_importance", "各模态贡献", "模态贡献",
                 "各模态贡献度", "模态贡献度", "贡献", "贡献度"]
_ITEM_NAME_KEYS = ["emotion", "label", "name", "class", "category", "sentiment", "情感", "情绪", "标签", "类别"]
_ITEM_SCORE_KEYS = ["score", "prob", "probability", "value", "confidence", "weight", "likelihood", "得分", "分数",
                    "概率", "置信度"]
_MODALITY_KEYS = ["modality", "modal", "source", "模态"]
_CONTRIB_VALUE_KEYS = ["contribution", "weight", "value", "score", "importance", "贡献", "贡献度", "权重"]


def _norm_key(key):
    """Lower-case key with parenthesised notes dropped and spaces/hyphens as underscores."""
    k = re.sub(r"\(.*?\)|（.*?）|\[.*?\]", "", str(key)).lower().strip(_STRIP)
    return re.sub(r"[\s\-]+", "_", k)


def _get(record, aliases):
    """(original key, value) of the first alias present in ``record``, else (None, None)."""
    keys = {}
    for k in record:
        keys.setdefault(_norm_key(k), k)
    for alias in aliases:
        if alias in keys:
            return keys[alias], record[keys[alias]]
    return None, None


def _all(record, aliases):
    keys = {}
    for k in record:
        keys.setdefault(_norm_key(k), k)
    return [(keys[a], record[keys[a]]) for a in aliases if a in keys]


def _number(value, loose=False):
    """(x, form, denominator) of a number-like value (form "plain", "percent" or "ratio"), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        x = float(value)
        return (x, "plain", None) if math.isfinite(x) else None
    if not isinstance(value, str):
        return None
    text = value.strip().replace("％", "%").replace("／", "/")
    num = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
    pattern = rf"({num})\s*(%)|({num})\s*/\s*({num})|({num}(?:[eE][-+]?\d+)?)"
    m = re.fullmatch(pattern, text) or (re.search(pattern, text) if loose else None)
    if not m:
        return None
    try:
        if m.group(2):
            out = (float(m.group(1)), "percent", None)
        elif m.group(4):
            out = (float(m.group(3)), "ratio", float(m.group(4)))
        else:
            out = (float(m.group(5)), "plain", None)
    except ValueError:
        return None
    return out if math.isfinite(out[0]) else None


def _fmt(x):
    return f"{x:.4g}"


def _read_confidence(value, warnings):
    """Confidence on the 0-5 scale from what the teacher wrote, or None (with a warning why)."""
    if value is None or value == "":
        return None
    parsed = _number(value, loose=True)
    shown = repr(value) if isinstance(value, str) else _fmt(value) if isinstance(value, (int, float)) else str(value)
    if parsed is None:
        warnings.append(f"confidence {shown} is not a number; ignored")
        return None
    x, form, den = parsed
    if form == "percent":
        conf, how = x / 20.0, "read as a percentage"
    elif form == "ratio":
        if den <= 0 or x < 0 or x > den:
            warnings.append(f"confidence {shown} is not a valid fraction; ignored")
            return None
        conf, how = 5.0 * x / den, (None if den == 5 else f"rescaled from a 0-{_fmt(den)} scale")
    elif 0 <= x <= 5:
        if 0 < x < 1 and x != int(x):
            conf, how = 5.0 * x, "read as a 0-1 fraction"
        else:
            conf, how = x, None
    elif 5 < x <= 10:
        conf, how = x / 2.0, "read as a 0-10 scale"
    elif 10 < x <= 100:
        conf, how = x / 20.0, "read as a percentage"
    else:
        conf, how = None, None
    if conf is None or not 0 <= conf <= 5 + 1e-9:
        warnings.append(f"confidence {shown} is outside 0-5, 0-10, 0-1 and 0-100%; ignored")
        return None
    conf = round(min(max(conf, 0.0), 5.0), 10)
    if how:
        warnings.append(f"confidence {shown} {how}; rescaled to {_fmt(conf)} on 0-5")
    return conf


def _score_pairs(value, labels, warnings):
    """[(key, raw value)] from the shapes a scores field comes in, or None if it is none of them."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, str):
        pairs = re.findall(rf"([A-Za-z{_CJK}]+)\s*[:：=]?\s*([-+]?\d+(?:\.\d+)?\s*%?)", value)
        return pairs or None
    if isinstance(value, list) and value:
        pairs = []
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) or isinstance(v, str) and _number(v)
               for v in value):
            if len(value) != len(labels):
                warnings.append(f"scores are a list of {len(value)} numbers without names, not one per label "
                                f"({len(labels)}); ignored")
                return None
            warnings.append("scores are a list of numbers without names; read in label-set order")
            return list(zip(labels, value))
        for item in value:
            if isinstance(item, dict):
                _, name = _get(item, _ITEM_NAME_KEYS)
                _, score = _get(item, _ITEM_SCORE_KEYS)
                if name is None and len(item) == 1:
                    name, score = next(iter(item.items()))
                if name is not None:
                    pairs.append((name, score))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((item[0], item[1]))
        return pairs or None
    return None


def _read_scores(value, labels, warnings, where="scores"):
    """Scores as a list over ``labels`` (normalised), or None; every repair is a warning."""
    if value is None or value == "":
        return None
    pairs = _score_pairs(value, labels, warnings)
    if pairs is None:
        warnings.append(f"{where} field is not a dict or list of emotion scores; ignored")
        return None
    totals = {}
    unknown, bad, merged, negative = [], [], [], []
    any_percent = False
    for key, raw in pairs:
        if isinstance(raw, dict):
            _, raw = _get(raw, _ITEM_SCORE_KEYS)
        hit = _map_loose(key, labels) if isinstance(key, str) else None
        if hit is None:
            unknown.append(str(key))
            continue
        parsed = _number(raw, loose=True)
        if parsed is None:
            bad.append(f"{key}={raw!r}")
            continue
        x, form, den = parsed
        if form == "percent":
            any_percent = True
        elif form == "ratio":
            x = x / den if den else float("nan")
        if not math.isfinite(x):
            bad.append(f"{key}={raw!r}")
            continue
        if x < 0:
            negative.append(str(key))
            x = 0.0
        lab = hit[0]
        if lab in totals:
            merged.append(lab)
            totals[lab] += x
        else:
            totals[lab] = x
    if unknown:
        warnings.append(f"unknown score keys ignored: {', '.join(unknown)} (labels: {', '.join(labels)})")
    if bad:
        warnings.append(f"non-numeric scores ignored: {', '.join(bad)}")
    if negative:
        warnings.append(f"negative scores set to 0: {', '.join(negative)}")
    if merged:
        warnings.append(f"several score keys name the same label, added up: {', '.join(sorted(set(merged)))}")
    if not totals:
        if pairs:
            warnings.append(f"{where} field has no usable label scores; ignored")
        return None
    total = sum(totals.values())
    if total <= 0:
        warnings.append(f"{where} are all zero; ignored")
        return None
    missing = [lab for lab in labels if lab not in totals]
    if missing:
        warnings.append(f"scores give no value for {', '.join(missing)}; set to 0")
    if abs(total - 1.0) > 0.01:
        kind = " (percentages)" if any_percent or 90 <= total <= 110 else ""
        warnings.append(f"scores sum to {_fmt(total)}{kind}; renormalised to 1")
    return [totals.get(lab, 0.0) / total for lab in labels]


def _labelled_numbers(record, labels):
    """Label-named numeric entries at the top of a record (scores given without a scores key)."""
    out = []
    for k, v in record.items():
        if _match_label(k, labels) and _number(v) is not None:
            out.append((k, v))
    return out


def _has_answer(record, labels):
    return (_get(record, _LABEL_KEYS)[0] is not None or _get(record, _SCORE_KEYS)[0] is not None
            or len(_labelled_numbers(record, labels)) >= 2)


def _locate_record(obj, labels):
    """The dict holding the answer: ``obj`` itself or, breadth-first, a dict nested in it."""
    queue = [obj]
    seen = 0
    while queue and seen < 200:
        d = queue.pop(0)
        seen += 1
        if _has_answer(d, labels):
            return d
        queue.extend(v for v in d.values() if isinstance(v, dict))
    return None


def _as_text(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_as_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def _read_description(record):
    keys = {}
    for k in record:
        keys.setdefault(_norm_key(k), k)
    chosen = [keys[a] for a in _DESC_KEYS if a in keys]
    chosen += [k for n, k in keys.items() if n.endswith(_DESC_SUFFIXES) and k not in chosen]
    chosen = [k for k in record if k in chosen]  # the teacher's order
    parts = [(k, _as_text(record[k])) for k in chosen]
    parts = [(k, t) for k, t in parts if t]
    if len(parts) == 1:
        return parts[0][1]
    return "\n".join(f"{k}: {t}" for k, t in parts)


def _read_contributions(value, warnings):
    if isinstance(value, dict):
        return dict(value) if value else None
    if isinstance(value, list):
        out = {}
        for item in value:
            if isinstance(item, dict):
                _, mod = _get(item, _MODALITY_KEYS)
                _, val = _get(item, _CONTRIB_VALUE_KEYS)
                if mod is not None:
                    out[str(mod)] = val
        if out:
            return out
    warnings.append("contributions field is not a dict of modality -> value; ignored")
    return None


def _read_label_value(value, labels, warnings):
    """(label or None, raw text for messages or None) from a label field's value."""
    if isinstance(value, list):
        items = [v for v in value if isinstance(v, str) and v.strip()]
        if not items:
            return None, None
        if len(items) > 1:
            warnings.append(f"label field is a list {items}; took the first item")
        value = items[0]
    if isinstance(value, _PartialStr):
        warnings.append(f"label '{value}' was cut off; ignored")
        return None, None
    if not isinstance(value, str) or not value.strip():
        return None, (None if value is None or value == "" else str(value))
    hit = _map_loose(value, labels)
    if hit is None:
        return None, value.strip()
    lab, how = hit
    if how == "fallback":
        warnings.append(f"label '{value.strip()}' has no counterpart in the label set; mapped to '{lab}' "
                        "(fallback)")
    elif how == "read":
        warnings.append(f"label '{value.strip()}' is not a bare label; read '{lab}' from it")
    return lab, value.strip()
