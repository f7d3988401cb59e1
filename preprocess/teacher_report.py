"""How good is a teacher at each confidence level? Accuracy and coverage per level (ACL-MER Table 1 style).

    python preprocess/teacher_report.py --dataset demo --teacher features/demo/teachers/demo-vlm.jsonl
    python preprocess/teacher_report.py --dataset meld --parts test --teacher features/meld/teachers/zeroshot.jsonl
    python preprocess/teacher_report.py --teacher my.jsonl --labels my_labels.csv --emo_rule MER --out saved/my

Reads a teacher file (JSON Lines, see docs/file-formats.md) and the ground truth of the samples it answered: label
tables (``name,discrete``) given with --labels, or a data set's own (--dataset: its label_csv,
test_label_csv and unlabeled_truth, as far as they exist; --parts picks among train, test and unlabeled).
Only labelled samples count; teacher records of other samples are ignored.

The table (one row each):

  = c            records whose confidence falls in level c (floor of the confidence, 0..5)
  >= c           records with confidence >= c: what a pseudo-labelling threshold c would keep
  answered       every valid record of a labelled sample
  no confidence  valid records without a confidence (left out of the levels)
  no answer      labelled samples with no line in the teacher file
  error          labelled samples whose line was skipped (bad JSON, scores missing, an error record ...)
  all labelled   every labelled sample, a missing or failed answer counting as wrong

with count, coverage (count / labelled samples), accuracy and weighted F1 (common.metrics) of the teacher's
label (the top score where a record has no label). Written next to --out (default
saved/teacher_reports/<teacher>-<labels>): ``.csv``, ``.md`` (also printed) and ``.png`` (accuracy and
coverage against the confidence threshold). Exit status 2 on bad input.
"""

import argparse
import os
import sys

import _paths  # noqa: F401
import config
from dataloader.files import DataError
from teachers.report import dataset_labels, report_file, teacher_report  # noqa: F401  (the library behind this script)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher JSON Lines file")
    p.add_argument("--labels", nargs="+", default=None, help="label table(s) name,discrete (overrides --dataset)")
    p.add_argument("--dataset", default=None, help="a config.DATASETS entry: its label tables and label set")
    p.add_argument("--parts", default=None, help="with --dataset: which tables, among train,test,unlabeled "
                   "(default: every one that exists)")
    p.add_argument("--emo_rule", default=None, help="label set in config.EMO_RULE (default: the data set's)")
    p.add_argument("--out", default=None, help="path stem of the .csv/.md/.png "
                   "(default saved/teacher_reports/<teacher>-<labels>)")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    try:
        if args.labels:
            paths = list(args.labels)
            tag = "+".join(os.path.splitext(os.path.basename(x))[0] for x in paths)
        elif args.dataset:
            parts = [x.strip() for x in args.parts.split(",")] if args.parts else None
            found = dataset_labels(args.dataset, parts)
            paths = [path for _, path in found]
            tag = f"{args.dataset}-" + "+".join(part for part, _ in found)
        else:
            raise DataError("give --labels (label tables) or --dataset")
        emo_rule = args.emo_rule or (config.DATASETS[args.dataset]["emo_rule"] if args.dataset else None)
        if not emo_rule:
            raise DataError("give --emo_rule (a label set in config.EMO_RULE) with --labels")
        stem = os.path.splitext(os.path.basename(args.teacher))[0]
        out = args.out or os.path.join(config.SAVE_ROOT, "teacher_reports", f"{stem}-{tag}")
        report_file(args.teacher, paths, emo_rule, out, args.title)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
