"""Answers without a JSON record: a stated label ("Label: happy", "情感标签：高兴") and label-named numbers."""

import re

from teachers.parse.fields import _read_scores
from teachers.parse.synonyms import _CJK, _match_label

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
