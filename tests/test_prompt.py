"""The teacher prompt: label sets filled in, the Chinese variant, a user's file, clear errors."""

import json
import re

import pytest

import config
from common.errors import DataError
from teachers.prompt import render_prompt
from teachers.parse import parse_answer


@pytest.mark.parametrize("rule", sorted(config.EMO_RULE))
def test_every_label_set_is_filled_in(rule):
    text = render_prompt(rule)
    assert "{LABELS}" not in text and "{SCORE_TEMPLATE}" not in text
    labels = config.EMO_RULE[rule]
    assert ", ".join(labels) in text
    # the score template is a JSON object over exactly the label set, in order
    template = re.search(r'"scores": (\{[^{}]*\})', text).group(1)
    assert list(json.loads(re.sub(r"<0-1>", "0", template))) == labels
    for cue in ("action unit", "pitch", "subtitle", "MAIN SPEAKER", "confidence", "contributions"):
        assert cue.lower() in text.lower()


def test_chinese_variant_asks_for_the_keys_the_parser_reads():
    text = render_prompt("MER", lang="zh")
    assert "neutral, angry, happy, sad, worried, surprise" in text
    for key in ("推理过程", "情感得分", "情感标签", "置信度", "各模态贡献"):
        assert key in text
    # an answer that follows the Chinese prompt's format parses
    answer = ('{"推理过程": "嘴角上扬，语调轻快。", "情感得分": {"neutral": 0.1, "angry": 0, "happy": 0.8, "sad": 0, '
              '"worried": 0.05, "surprise": 0.05}, "情感标签": "happy", "置信度": 4, '
              '"各模态贡献": {"面部": 0.5, "身体": 0.1, "声音": 0.2, "文本": 0.2}}')
    rec = parse_answer(answer, config.EMO_RULE["MER"])
    assert rec["label"] == "happy" and rec["confidence"] == 4 and rec["error"] is None


def test_user_prompt_file(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("Pick one of {LABELS}. Reply {\"label\": ...}", encoding="utf-8")
    assert render_prompt("MOSI", path=str(p)) == 'Pick one of negative, positive. Reply {"label": ...}'
    with pytest.raises(DataError, match="does not exist"):
        render_prompt("MER", path=str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="unknown emo_rule 'XYZ'"):
        render_prompt("XYZ")
    with pytest.raises(DataError, match="no prompt for language"):
        render_prompt("MER", lang="fr")
