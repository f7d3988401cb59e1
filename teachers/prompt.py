"""The teacher prompt: ``prompt.txt`` (English) or ``prompt_zh.txt`` (Chinese, for Chinese data such as MER)
with the label set of an ``EMO_RULE`` filled in.

A prompt file may hold two placeholders, replaced verbatim (the rest of the text, JSON braces included, is
left alone): ``{LABELS}`` -> ``neutral, angry, happy, ...`` and ``{SCORE_TEMPLATE}`` ->
``{"neutral": <0-1>, "angry": <0-1>, ...}``. A user's own prompt file (``path``) follows the same rules; a
file without ``{LABELS}`` is accepted with a warning, since the model then cannot know the label set unless
the text names it.
"""

import logging
import os

import config
from common.errors import DataError

PROMPTS = {"en": "prompt.txt", "zh": "prompt_zh.txt"}
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def label_set(emo_rule):
    """The labels of ``emo_rule`` (a config.EMO_RULE key), or a clear error naming the known ones."""
    if emo_rule not in config.EMO_RULE:
        raise DataError(f"unknown emo_rule '{emo_rule}'; known: {', '.join(config.EMO_RULE)} "
                        "(add yours to EMO_RULE in config.py)")
    return list(config.EMO_RULE[emo_rule])


def render_prompt(emo_rule="MER", path=None, lang="en", labels=None):
    """The prompt text for ``emo_rule`` (or an explicit ``labels`` list), from ``path`` or the repo's prompt
    file for ``lang`` (``en`` | ``zh``)."""
    labels = list(labels) if labels is not None else label_set(emo_rule)
    if path is None:
        if lang not in PROMPTS:
            raise DataError(f"no prompt for language '{lang}'; choose one of {', '.join(PROMPTS)} or pass a file")
        path = os.path.join(_REPO_ROOT, PROMPTS[lang])
    if not os.path.isfile(path):
        raise DataError(f"prompt file '{path}' does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "{LABELS}" not in text:
        logging.getLogger(__name__).warning("prompt file '%s' has no {LABELS} placeholder: the label set (%s) is "
                                            "not filled in", path, ", ".join(labels))
    template = "{" + ", ".join(f'"{lab}": <0-1>' for lab in labels) + "}"
    return text.replace("{LABELS}", ", ".join(labels)).replace("{SCORE_TEMPLATE}", template)
