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

One module per step: ``synonyms``, ``lenient_json``, ``fields``, ``plain_text`` and ``answer``; their names are
importable from ``teachers.parse``.
"""

from teachers.parse.synonyms import (  # noqa: F401
    _CJK, _CONCEPT_OF, _CONCEPTS, _FALLBACKS, _labels_in_text, _map_loose, _match_label, _norm_word, _STRIP,
    map_label, SYNONYM_GROUPS,
)
from teachers.parse.lenient_json import (  # noqa: F401
    _AFTER_CLOSE, _EOF, _Fail, _find_objects, _KEY_RE, _Lenient, _LITERALS, _NUMBER_RE, _OPEN_BRACE_RE,
    _PartialStr, _QUOTE_CLOSE, _WORD_RE,
)
from teachers.parse.fields import (  # noqa: F401
    _all, _as_text, _CONF_KEYS, _CONTRIB_KEYS, _CONTRIB_VALUE_KEYS, _DESC_KEYS, _DESC_SUFFIXES,
    _FINAL_LABEL_KEYS, _fmt, _get, _has_answer, _ITEM_NAME_KEYS, _ITEM_SCORE_KEYS, _LABEL_KEYS,
    _labelled_numbers, _locate_record, _MODALITY_KEYS, _norm_key, _number, _read_confidence,
    _read_contributions, _read_description, _read_label_value, _read_scores, _SCORE_KEYS, _score_pairs,
)
from teachers.parse.plain_text import (  # noqa: F401
    _CONF_TEXT_RE, _EN_WORD, _map_statement_word, _PAIR_TEXT_RE, _plain_text, _REFUSAL_RE, _shorten,
    _STATEMENT_RES,
)
from teachers.parse.answer import (  # noqa: F401
    _empty_record, _finish, _from_record, _parse, parse_answer,
)
