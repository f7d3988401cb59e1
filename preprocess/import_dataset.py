"""Import a data set of one's own from one table: the project's label tables, name lists, transcripts and a
registration file that config.py reads, so that every command takes ``--dataset <name>`` without code.

    python preprocess/import_dataset.py --name mydata --table my_corpus.csv --name_col utt_id --label_col emotion \
        --text_col text --dialogue_col conversation --order_col turn --split_col part --labels neutral,joy,anger,sadness
    python preprocess/import_dataset.py --name clips --table labels.csv --name_col clip --label_col label --emo_rule MER

The table has a row per utterance or clip; a row without a label is unlabelled (the semi-supervised pool) unless
its split is test. Split values: train, valid (or dev), test. Output in ``<FEATURE_ROOT>/<name>/`` (see
corpora/custom.py): train_labels.csv, test.csv, test_labels.csv, unlabeled.csv, transcripts.csv and
``dataset.yaml``, the registration (every config.DATASETS key; ``labels`` when the label set is new; the features
that preprocess/extract_features.py adds; a re-import keeps them). Then: ``build_splits.py --dataset <name> --split_col split`` for the
official split, or ``build_splits.py --dataset <name>`` for seeded ones. Exit status 2 on bad input, with
nothing written.
"""

import argparse
import sys

import _paths  # noqa: F401
from common.errors import DataError
from common.utils import error_line
from corpora.custom import import_corpus


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the data set's name (--dataset in every command)")
    p.add_argument("--table", required=True, help="CSV with a row per utterance or clip")
    p.add_argument("--name_col", default="name", help="column of unique sample names (default name)")
    p.add_argument("--label_col", default="label", help="column of labels; empty cells are unlabelled (default label)")
    p.add_argument("--text_col", default=None, help="column of transcripts (text features, text teachers)")
    p.add_argument("--dialogue_col", default=None, help="column of dialogue (or video) ids, for context models")
    p.add_argument("--order_col", default=None, help="column of each utterance's position in its dialogue")
    p.add_argument("--split_col", default=None, help="column of the official split: train, valid (or dev), test")
    p.add_argument("--speaker_col", default=None, help="column of speaker ids, kept as 'speaker' (optional)")
    p.add_argument("--valence_col", default=None, help="column of valence values (optional; without it the tables "
                                                       "have no valence)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels", default=None, help="a new label set, in class order: a,b,c")
    g.add_argument("--emo_rule", default=None, help="or a label set of config.EMO_RULE (MER, MELD, ...)")
    p.add_argument("--rule_name", default=None, help="the name of a new label set (default: the data set's, "
                                                     "in capitals)")
    p.add_argument("--out", default=None, help="output folder (default <FEATURE_ROOT>/<name>)")
    args = p.parse_args(argv)
    columns = {"name": args.name_col, "label": args.label_col, "text": args.text_col, "dialogue": args.dialogue_col,
               "order": args.order_col, "split": args.split_col, "valence": args.valence_col,
               "speaker": args.speaker_col}
    try:
        labels = args.labels.split(",") if args.labels else None
        import_corpus(args.name, args.table, columns, labels, args.emo_rule or args.rule_name, args.out)
    except DataError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
