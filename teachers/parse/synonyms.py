"""Emotion words to labels: synonym groups per concept, their fallbacks, and label words found in free text."""

import re


_CONCEPTS = {
    "happy": {"happy", "happiness", "joy", "joyful", "joyous", "glad", "cheerful", "delighted", "pleased",
              "content", "amused", "高兴", "开心", "快乐", "喜悦", "愉快", "欢乐", "欣喜", "愉悦", "喜"},
    "excited": {"excited", "excitement", "enthusiastic", "thrilled", "兴奋", "激动"},
    "angry": {"angry", "anger", "mad", "furious", "annoyed", "irritated", "rage", "enraged", "irate",
              "生气", "愤怒", "恼怒", "气愤", "发怒", "怒", "不满"},
    "frustrated": {"frustrated", "frustration", "沮丧", "挫败", "烦躁"},
    "sad": {"sad", "sadness", "sorrow", "sorrowful", "unhappy", "depressed", "grief", "heartbroken",
            "悲伤", "伤心", "难过", "哀伤", "忧伤", "失落", "痛苦", "悲", "不开心"},
    "worried": {"worried", "worry", "anxious", "anxiety", "nervous", "concerned", "uneasy", "apprehensive",
                "tense", "stressed", "担心", "焦虑", "担忧", "紧张", "不安", "忧虑"},
    "fear": {"fear", "fearful", "scared", "afraid", "frightened", "terrified", "panic", "horrified",
             "恐惧", "害怕", "惊恐", "恐慌"},
    "surprise": {"surprise", "surprised", "surprising", "astonished", "astonishment", "amazed", "amazement",
                 "shocked", "shock", "startled", "惊讶", "吃惊", "惊奇", "震惊", "意外", "惊喜"},
    "neutral": {"neutral", "neutrality", "no emotion", "expressionless", "中性", "中立", "无明显情绪", "无情绪",
                "平淡"},
    "calm": {"calm", "calmness", "relaxed", "peaceful", "serene", "composed", "平静", "冷静", "放松", "淡定"},
    "disgust": {"disgust", "disgusted", "disgusting", "revulsion", "厌恶", "恶心", "反感",
                "嫌弃"},
    "positive": {"positive", "积极", "正面", "正向", "正面情感", "积极情感"},
    "negative": {"negative", "消极", "负面", "负向", "负面情感", "消极情感"},
}

_FALLBACKS = {
    "fear": ["worried", "negative"],
    "worried": ["fear", "negative"],
    "calm": ["neutral"],
    "excited": ["happy", "positive"],
    "happy": ["positive"],
    "sad": ["negative"],
    "angry": ["negative"],
    "disgust": ["negative"],
    "frustrated": ["negative"],
}

SYNONYM_GROUPS = [set(words) for words in _CONCEPTS.values()]

_CONCEPT_OF = {w: c for c, words in _CONCEPTS.items() for w in words}
assert len(_CONCEPT_OF) == sum(len(w) for w in _CONCEPTS.values()), "a word is in two synonym groups"

_CJK = "\u4e00-\u9fff"
_STRIP = " \t\r\n\u3000\"'`“”‘’＂＇*_.,;:!?。，；：！？、()（）[]【】<>《》「」~-"


def _norm_word(word):
    """Lower-case, surrounding punctuation and markdown removed, inner whitespace collapsed."""
    if word is None or isinstance(word, bool):
        return ""
    return " ".join(str(word).lower().strip(_STRIP).split())


def _match_label(word, labels):
    """(label, how) with how "exact", "synonym" or "fallback"; None when no label (or two) fit."""
    w = _norm_word(word)
    if not w:
        return None
    by_norm = {}
    for lab in labels:
        by_norm.setdefault(_norm_word(lab), lab)
    if w in by_norm:
        return by_norm[w], "exact"
    concept = _CONCEPT_OF.get(w)
    if concept is None and w.endswith("的"):
        concept = _CONCEPT_OF.get(w[:-1])
    if concept is None:
        return None
    for k, c in enumerate([concept] + _FALLBACKS.get(concept, [])):
        hits = [lab for n, lab in by_norm.items() if _CONCEPT_OF.get(n) == c]
        if len(hits) == 1:
            return hits[0], "synonym" if k == 0 else "fallback"
        if len(hits) > 1:
            return None
    return None


def map_label(word, labels):
    """The label of ``labels`` that ``word`` names, or None.

    Exact (case- and space-insensitive) match first, then the one label in the word's synonym group
    (``SYNONYM_GROUPS``), then the group's fallbacks (see the module docstring: fear -> worried only when the
    set has no fear-like label). None for an unknown word or when two labels of the set would fit.
    """
    try:
        found = _match_label(word, [str(lab) for lab in labels])
    except Exception:  # noqa: BLE001 - a mapping helper must not raise on odd input
        return None
    return found[0] if found else None


def _labels_in_text(text, labels):
    """{label: first position} of the labels a short free text names (negated words skipped)."""
    low = str(text).lower()
    found = {}
    words = [(m.group(), m.start()) for m in re.finditer(r"[a-z]+", low)]
    for k, (w, pos) in enumerate(words):
        if k and words[k - 1][0] in ("not", "no", "non", "without"):
            continue
        hit = _match_label(w, labels)
        if hit:
            found.setdefault(hit[0], pos)
    taken = [False] * len(low)
    for w in sorted((w for w in _CONCEPT_OF if re.search(f"[{_CJK}]", w)), key=len, reverse=True):
        for m in re.finditer(re.escape(w), low):
            if any(taken[m.start():m.end()]):
                continue
            for j in range(m.start(), m.end()):
                taken[j] = True
            if m.start() and low[m.start() - 1] in "不没无非":
                continue
            hit = _match_label(w, labels)
            if hit:
                found.setdefault(hit[0], m.start())
    return found


def _map_loose(value, labels):
    """(label, how) for a label-like string; how "read" when the label was found inside a longer text."""
    hit = _match_label(value, labels)
    if hit:
        return hit
    named = _labels_in_text(value, labels)
    if len(named) == 1:
        return next(iter(named)), "read"
    return None
