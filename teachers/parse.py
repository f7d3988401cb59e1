"""Read the raw answer of a VLM/LLM emotion teacher into one record, whatever shape the answer has.

    from teachers.parse import parse_answer
    rec = parse_answer(raw_text, config.EMO_RULE["MER"])
    rec["label"], rec["scores"], rec["confidence"], rec["warnings"], rec["error"]

A teacher is asked for a JSON object (label, per-emotion scores, a 0-5 confidence, its reasoning, per-modality
contributions) and answers with prose around it, markdown fences, Chinese keys and full-width punctuation,
single quotes, comments, trailing commas, percentages, an output cut off at the token limit, or a refusal.
``parse_answer`` never raises: what it cannot read becomes a warning, and an answer with no usable label
gets ``error``. It needs only the standard library.

The record (``parse_answer``):

  label              a label of ``labels`` (as spelt there), or None
  scores             {label: float} over ALL labels in label-set order, non-negative, summing to 1; None when
                     the answer has no scores
  confidence         float in [0, 5], or None
  confidence_source  "answer" (given by the teacher), "score_margin" (5 x (top1 - top2) of the normalised
                     scores, when the answer has no usable confidence) or "none"
  description        the reasoning text (reasoning, analysis, explanation, 推理过程, 分析, 理由 ...); without
                     such a field, the text of a <think> block or the prose around the JSON (>= 40 characters)
                     with a warning; the whole text for a plain-text answer; "" if none
  contributions      {modality: value} as the teacher gave it (values not converted), or None
  warnings           list of str: everything that was repaired, rescaled, mapped by fallback or ignored
  error              None, or why no label could be obtained (label is None exactly when error is set; the
                     other fields still report what the answer held, e.g. a confidence next to an unknown label)

Rules, in order:

* JSON is looked for anywhere in the text (fences and prose are skipped); each ``{`` is read strictly
  (``json``) and, failing that, leniently: single and curly quotes, full-width ，：｛｝, Python literals
  (True/None), ``//``, ``#`` and ``/* */`` comments, trailing or missing commas, unquoted keys (a word
  followed by a colon) and unquoted one-line values, numbers with ``%`` or ``a/b``. A JSON object cut off at
  the end of the text keeps the fields before the cut (a number or key at the very end is dropped, as it may
  be incomplete; a cut-off label is treated as missing, a cut-off description is kept) with a warning.
* Of several objects, the record is the last one with a label or scores field (a "final_..." label key
  first); a warning says so. An object wrapping the record ({"result": {...}}) is searched breadth-first.
  An answer that is a JSON-encoded string is decoded first. After ``</think>`` only the text after it is
  read; an answer cut off inside ``<think>`` is an error.
* The label is the first label key whose value maps to a label (``map_label``; a value such as
  "Happy (joyful)" or "高兴/开心" that names exactly one label is read with a warning, a list gives its first
  item with a warning). A missing or unknown label with scores present takes the top score (a tie at the
  top is an error, not a guess); a label that disagrees with the top score is kept, with a warning.
* Scores are a dict, a list of {emotion, score} items or [emotion, score] pairs, a list of numbers in label
  order (warning), or label-named numbers at the record's top level. Keys are mapped through synonyms
  (two keys for one label are added up, with a warning); unknown keys, negative values (clipped to 0) and
  non-numbers are reported. Missing labels get 0 (warning). Scores not summing to 1 within 0.01
  (percentages, 0-10 scales, independent ratings) are renormalised with a warning; all-zero scores are
  dropped.
* Confidence: ``x%`` -> x/20; ``a/b`` -> 5a/b (warning unless b = 5); a plain number in [0, 5] is taken as
  it is, except a non-integer below 1, which is a 0-1 fraction -> 5x; (5, 10] is a 0-10 scale -> x/2;
  (10, 100] a percentage -> x/20; anything else (words like "high", negatives, > 100) is ignored. Every
  rescaling is a warning. A single number under a scores key ({"emotion": "happy", "score": 0.92}) is read
  as the confidence when there is none (warning). With no usable confidence it comes from the score margin
  (warning), else None.
* Without any JSON record (no JSON, or JSON with neither label nor scores), a plain-text statement is read ("Label: happy", "**Emotion:** Joy", "the emotion
  expressed is most likely sad", "情感标签：高兴", or an answer that is just a label word), and label-named
  numbers ("happy: 70%") as scores, with a warning. Several different stated labels are an error unless one
  is marked final ("Final answer: sad"); prose that merely mentions labels is an error, never a guess.

Synonyms (``SYNONYM_GROUPS``, ``map_label``): a word maps to the label of the label set spelt like it
(case, spaces and surrounding punctuation ignored), else to the one label of the set in the word's synonym
group (joy -> happy for MER, happy -> joy for MELD), else through the group's fallbacks, tried in this order:

  fear     -> worried, negative       (fear -> worried only where the set has no fear-like label: MER)
  worried  -> fear, negative          (anxious -> fear for MELD and CREMA-D, fearful for RAVDESS)
  calm     -> neutral                 (calm stays calm where the set has it: RAVDESS)
  excited  -> happy, positive         (excited stays excited in IEMOCAP)
  happy    -> positive                sad, angry, disgust, frustrated -> negative   (sentiment sets: MOSI)

Surprise and neutral have no fallback. The groups are disjoint and no label set of ``config.EMO_RULE`` has two
labels in one group, so a mapping is never ambiguous there; for a custom set that has (e.g. happy and joy),
an exact spelling still maps and a synonym of both returns None.
"""

import json
import math
import re

# ---------------------------------------------------------------------------------------------------------
# Synonyms
# ---------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------
# Lenient JSON
# ---------------------------------------------------------------------------------------------------------

class _Fail(Exception):
    """Not JSON-like at this position."""


class _EOF(Exception):
    """The text ended inside a value."""


class _PartialStr(str):
    """A string value cut off by the end of the text."""


_QUOTE_CLOSE = {'"': '"', "'": "'", "“": "”“", "”": "”", "‘": "’‘", "’": "’", "＂": "＂", "＇": "＇"}
_AFTER_CLOSE = ",:}]，：｝］\n\r#"
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*%|\s*/\s*\d+(?:\.\d+)?)?")
_WORD_RE = re.compile(rf"[A-Za-z_{_CJK}][\w{_CJK}\-]*(?:[ \t]+[A-Za-z_{_CJK}][\w{_CJK}\-]*)*")
_KEY_RE = re.compile(rf"[A-Za-z_{_CJK}][\w{_CJK} \-]{{0,40}}?(?=\s*[:：])")
_LITERALS = {"true": True, "false": False, "null": None, "none": None,
             "nan": float("nan"), "infinity": float("inf")}


class _Lenient:
    """A forgiving reader of one JSON-like object; ``repairs`` names what was not strict JSON."""

    MAX_DEPTH = 40

    def __init__(self, s):
        self.s = s
        self.n = len(s)
        self.repairs = set()
        self.truncated = False

    def ws(self, i):
        s, n = self.s, self.n
        while i < n:
            c = s[i]
            if c in " \t\r\n\u3000\ufeff\xa0":
                i += 1
            elif s.startswith("//", i) or c == "#":
                j = s.find("\n", i)
                i = n if j < 0 else j
                self.repairs.add("comments")
            elif s.startswith("/*", i):
                j = s.find("*/", i + 2)
                i = n if j < 0 else j + 2
                self.repairs.add("comments")
            else:
                break
        return i

    def value(self, i, depth):
        if depth > self.MAX_DEPTH:
            raise _Fail()
        i = self.ws(i)
        if i >= self.n:
            raise _EOF()
        c = self.s[i]
        if c in "{｛":
            return self.obj(i, depth + 1)
        if c in "[［":
            return self.array(i, depth + 1)
        if c in _QUOTE_CLOSE:
            return self.string(i)
        m = _NUMBER_RE.match(self.s, i)
        if m:
            if m.end() >= self.n:
                raise _EOF()  # possibly cut inside the number
            text = m.group()
            if "%" in text or "/" in text:
                self.repairs.add("numbers with % or /")
                return text, m.end()
            try:
                x = float(text)
            except ValueError:
                raise _Fail() from None
            return (int(x) if re.fullmatch(r"[-+]?\d+", text) else x), m.end()
        m = _WORD_RE.match(self.s, i)
        if m:
            if m.end() >= self.n:
                raise _EOF()
            word = m.group()
            if word.lower() in _LITERALS:
                if word not in ("true", "false", "null"):
                    self.repairs.add("Python literals")
                return _LITERALS[word.lower()], m.end()
            self.repairs.add("unquoted values")
            return word.strip(), m.end()
        raise _Fail()

    def string(self, i):
        s, n = self.s, self.n
        closers = _QUOTE_CLOSE[s[i]]
        if s[i] != '"':
            self.repairs.add("single or curly quotes")
        out = []
        j = i + 1
        while j < n:
            c = s[j]
            if c == "\\" and j + 1 < n:
                e = s[j + 1]
                if e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[j + 2:j + 6] or ""):
                    out.append(chr(int(s[j + 2:j + 6], 16)))
                    j += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(e, e))
                j += 2
                continue
            if c in closers:
                k = j + 1
                while k < n and s[k] in " \t":
                    k += 1
                if k >= n or s[k] in _AFTER_CLOSE or s.startswith("//", k):
                    return "".join(out), j + 1
            out.append(c)
            j += 1
        self.truncated = True
        return _PartialStr("".join(out)), n

    def key(self, i):
        if self.s[i] in _QUOTE_CLOSE:
            k, i = self.string(i)
            if isinstance(k, _PartialStr):
                raise _EOF()
            return k, i
        m = _KEY_RE.match(self.s, i)
        if not m:
            raise _Fail()
        self.repairs.add("unquoted keys")
        return m.group().strip(), m.end()

    def _skip_junk(self, i, stops):
        """Skip plain text after a value up to a separator; None if it holds quotes or brackets."""
        j = i
        while j < self.n and self.s[j] not in stops:
            if self.s[j] in "{}[]｛｝［］\"“”":
                return None
            j += 1
        self.repairs.add("text after a value")
        return j

    def _is_key(self, i):
        """Whether a quoted key followed by a colon starts at ``i`` (a comma was left out before it)."""
        repairs = set(self.repairs)
        try:
            _, j = self.key(i)
        except (_Fail, _EOF):
            return False
        finally:
            self.repairs = repairs
        j = self.ws(j)
        return j < self.n and self.s[j] in ":："

    def _separator(self, i, closers):
        """Index after the comma at ``i``; notes full-width and trailing commas."""
        c = self.s[i]
        if c == "，":
            self.repairs.add("full-width punctuation")
        j = self.ws(i + 1)
        if j < self.n and self.s[j] in closers:
            self.repairs.add("trailing commas")
        return i + 1

    def obj(self, i, depth):
        s = self.s
        out = {}
        i += 1
        while True:
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in "}｝":
                return out, i + 1
            if c in ",，":
                self.repairs.add("extra commas")
                i += 1
                continue
            try:
                k, i = self.key(i)
                i = self.ws(i)
                if i >= self.n:
                    raise _EOF()
                if s[i] not in ":：":
                    raise _Fail()
                if s[i] == "：":
                    self.repairs.add("full-width punctuation")
                v, i = self.value(i + 1, depth)
            except _EOF:
                self.truncated = True
                return out, self.n
            out[k] = v
            end_of_value = i
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in ",，":
                i = self._separator(i, "}｝")
                continue
            if c in "}｝":
                return out, i + 1
            if _KEY_RE.match(s, i) or c in _QUOTE_CLOSE and ("\n" in s[end_of_value:i] or self._is_key(i)):
                self.repairs.add("missing commas")
                continue
            j = self._skip_junk(i, ",，}｝\n")
            if j is None or j == i:
                raise _Fail()
            if j < self.n and s[j] in ",，":
                j = self._separator(j, "}｝")
            elif j < self.n and s[j] in "}｝":
                return out, j + 1
            i = j

    def array(self, i, depth):
        s = self.s
        out = []
        i += 1
        while True:
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in "]］":
                return out, i + 1
            if c in ",，":
                self.repairs.add("extra commas")
                i += 1
                continue
            try:
                v, i = self.value(i, depth)
            except _EOF:
                self.truncated = True
                return out, self.n
            out.append(v)
            end_of_value = i
            i = self.ws(i)
            if i >= self.n:
                self.truncated = True
                return out, self.n
            c = s[i]
            if c in ",，":
                i = self._separator(i, "]］")
                continue
            if c in "]］":
                return out, i + 1
            if "\n" in s[end_of_value:i] or c in _QUOTE_CLOSE or c in "{[｛［" or _NUMBER_RE.match(s, i):
                self.repairs.add("missing commas")
                continue
            j = self._skip_junk(i, ",，]］\n")
            if j is None or j == i:
                raise _Fail()
            if j < self.n and s[j] in ",，":
                j = self._separator(j, "]］")
            elif j < self.n and s[j] in "]］":
                return out, j + 1
            i = j


_OPEN_BRACE_RE = re.compile("[{｛]")


def _find_objects(text, max_tries=300):
    """Top-level JSON-like objects in ``text``: dicts with start, end, truncated and repairs."""
    found = []
    decoder = json.JSONDecoder()
    i = tries = 0
    while tries < max_tries:
        m = _OPEN_BRACE_RE.search(text, i)
        if not m:
            break
        start = m.start()
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, start)
            repairs, truncated = set(), False
        except (ValueError, RecursionError):
            parser = _Lenient(text)
            try:
                obj, end = parser.obj(start, 1)
            except (_Fail, _EOF, RecursionError):
                i = start + 1
                continue
            repairs, truncated = parser.repairs, parser.truncated
        if isinstance(obj, dict) and obj:
            found.append({"obj": obj, "start": start, "end": end, "truncated": truncated, "repairs": repairs})
            i = end
        else:
            i = start + 1
    return found


# ---------------------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------
# Plain text
# ---------------------------------------------------------------------------------------------------------

_EN_WORD = r"(?:\*\*|__)?\s*[\"'“‘]?(?P<word>[A-Za-z]+)"
_STATEMENT_RES = [
    re.compile(r"(?P<final>\bfinal\s+)?\b(?:emotion\s+label|emotion|label|answer|prediction|predicted\s+"
               r"(?:emotion|label)|sentiment|classification)[\"'”]?\s*(?:\*\*|__)?\s*[:：=\-]\s*" + _EN_WORD,
               re.IGNORECASE),
    re.compile(r"(?P<final>\bfinal\s+)?\b(?:emotion|sentiment|label|answer)\b[^.\n:：]{0,60}?\b(?:is|would be|"
               r"appears to be|seems to be)\s+(?:most\s+likely\s+|probably\s+|likely\s+|clearly\s+|best\s+"
               r"described\s+as\s+|predominantly\s+|mainly\s+)?" + _EN_WORD, re.IGNORECASE),
    re.compile(r"(?P<final>\bfinal(?:ly)?\b[^.\n]{0,20})?\b(?:classify|classified|label|labelled|labeled|"
               r"categori[sz]e|categori[sz]ed)\b[^.\n]{0,40}?\bas\s+(?:an?\s+)?" + _EN_WORD, re.IGNORECASE),
    re.compile(rf"(?P<final>最终)?(?:情感标签|情绪标签|情感类别|情绪类别|情感倾向|情感|情绪|标签|答案)"
               rf"\s*(?:\*\*)?\s*(?:应为|应该是|为|是|：|:)\s*(?:\*\*)?\s*[“\"'「]?(?P<word>[{_CJK}]{{1,5}}|[A-Za-z]+)"),
]
_CONF_TEXT_RE = re.compile(r"(?:confidence|certainty|置信度|信心)[^\d\n]{0,20}?(?P<num>\d+(?:\.\d+)?\s*(?:%|/\s*\d+)?)",
                           re.IGNORECASE)
_PAIR_TEXT_RE = re.compile(rf"(?<![A-Za-z{_CJK}])(?P<key>[A-Za-z{_CJK}]{{1,30}})(?:\*\*)?\s*[:：=]\s*(?:\*\*)?\s*"
                           r"(?P<val>\d+(?:\.\d+)?\s*%?)")
_REFUSAL_RE = re.compile(r"\b(?:sorry|cannot|can't|can not|unable|not able|as an ai)\b|抱歉|无法|不能|对不起", re.IGNORECASE)


def _map_statement_word(word, labels):
    hit = _match_label(word, labels)
    if hit or not re.match(f"[{_CJK}]", word):
        return hit
    for k in range(len(word) - 1, 0, -1):  # 高兴的表情 -> 高兴
        hit = _match_label(word[:k], labels)
        if hit:
            return hit
    return None


def _plain_text(text, labels, warnings, json_keys=None):
    """(label, scores, confidence, error) read from prose; label None with an error when none is stated."""
    statements = []
    for rx in _STATEMENT_RES:
        for m in rx.finditer(text):
            hit = _map_statement_word(m.group("word"), labels)
            if hit:
                statements.append((m.start(), bool(m.group("final")), hit[0], m.group().strip()))
    statements.sort()
    bare = re.sub(r"^(?:```\w*|\*\*|__)|(?:```|\*\*|__)$", "", text.strip()).strip()
    if not statements and len(bare) <= 30:
        hit = _match_label(bare, labels)
        if hit:
            statements.append((0, False, hit[0], bare))

    pairs = [(m.group("key"), m.group("val")) for m in _PAIR_TEXT_RE.finditer(text)
             if _match_label(m.group("key"), labels)]
    scores = None
    if len({_match_label(k, labels)[0] for k, _ in pairs}) >= 2:
        scores = _read_scores(pairs, labels, warnings, where="scores in the text")
    conf_match = _CONF_TEXT_RE.search(text)
    conf_raw = conf_match.group("num") if conf_match else None

    finals = [s for s in statements if s[1]]
    distinct = sorted({s[2] for s in statements}, key=lambda lab: labels.index(lab))
    label, error = None, None
    if finals:
        label = finals[-1][2]
        warnings.append(f"no JSON answer; read the label from plain text ('{finals[-1][3]}')")
    elif len(distinct) == 1:
        label = distinct[0]
        warnings.append(f"no JSON answer; read the label from plain text ('{statements[0][3]}')")
    elif len(distinct) > 1:
        error = f"the text states several labels ({', '.join(distinct)}) and none as final; no label taken"
    elif scores is not None:
        warnings.append("no JSON answer; read the scores from plain text")
    if label is None and scores is None and error is None:
        error = "no JSON object found and no label stated in the text" if json_keys is None else (
            f"the JSON has no label or scores field (keys: {json_keys}) and the text states no label")
        if _REFUSAL_RE.search(text):
            error += f" (it looks like a refusal: '{_shorten(text)}')"
    return label, scores, conf_raw, error


def _shorten(text, k=80):
    text = " ".join(str(text).split())
    return text if len(text) <= k else text[:k - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# The answer
# ---------------------------------------------------------------------------------------------------------

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
