"""Label table -> seeded, stratified train/valid split lists (MRAC25 style, as JSON).

    python preprocess/build_splits.py --dataset demo                  # train_lst/demo/seed{0..4}.json, 80/20
    python preprocess/build_splits.py --dataset demo --kfold 5        # train_lst/demo/fold{0..4}.json
    # folds whose models choose their epoch on their own out-of-fold rows (the former lists; optimistic)
    python preprocess/build_splits.py --dataset demo --kfold 5 --epoch_selection out_of_fold
    python preprocess/build_splits.py --label_csv my.csv --emo_rule MER --out_dir train_lst/mine
    # a data set's official split: a column of the label table (train / valid or dev / test), or two name lists
    python preprocess/build_splits.py --dataset mydata --split_col split          # train_lst/mydata/official.json
    python preprocess/build_splits.py --dataset mydata --train_names train.csv --valid_names dev.csv

Each split is stratified by label; with --group_col (e.g. a video or speaker id) whole groups go to one
side, so validation is speaker-independent. A fold list also holds ``select_info``: --valid_ratio of the fold's
training rows, held out to choose the best epoch (--epoch_selection inner, the default), so that the fold's
validation (out-of-fold) rows are predicted by a model that never looked at them, not even to choose an epoch.
Seed k always gives the same split. Where the label table has the group column and an ``order`` column, the lists
carry ``dialogues`` and ``orders`` for context models.
"""

import argparse
import json
import os
import sys

import _paths  # noqa: F401
import config
from dataloader.files import DataError
from dataloader.splits import build, official_split  # noqa: F401  (the library behind this script)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="data set in config.DATASETS (gives label_csv, emo_rule, group)")
    p.add_argument("--label_csv", default=None, help="label table name,discrete[,valence] (overrides --dataset)")
    p.add_argument("--emo_rule", default=None)
    p.add_argument("--out_dir", default=None, help="default: train_lst/<dataset>")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--valid_ratio", type=float, default=0.2)
    p.add_argument("--kfold", type=int, default=0, help="write K stratified folds instead of seeded hold-outs")
    p.add_argument("--epoch_selection", default="inner", choices=["inner", "out_of_fold"],
                   help="folds: choose each fold model's epoch on an inner hold-out of its training rows "
                        "(--valid_ratio of them, the list's select_info; default), or on its out-of-fold rows "
                        "(optimistic out-of-fold figures)")
    p.add_argument("--group_col", default=None, help="keep groups (video, speaker, dialogue) on one side")
    p.add_argument("--split_col", default=None,
                   help="official split: a column of the label table holding train, valid (or dev) and test")
    p.add_argument("--train_names", default=None, help="official split: CSV with the training names")
    p.add_argument("--valid_names", default=None, help="official split: CSV with the validation names")
    p.add_argument("--name", default="official", help="official split: file name in --out_dir (default official)")
    args = p.parse_args(argv)
    ds = config.DATASETS.get(args.dataset, {}) if args.dataset else {}
    if args.dataset and not ds and not args.label_csv:
        print(f"error: unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})",
              file=sys.stderr)
        return 2
    label_csv = args.label_csv or ds.get("label_csv")
    emo_rule = args.emo_rule or ds.get("emo_rule")
    if not label_csv or not emo_rule:
        print("error: give --dataset, or --label_csv with --emo_rule", file=sys.stderr)
        return 2
    out_dir = args.out_dir or os.path.join(config.PATH_TO_TRAIN_LST, args.dataset or "custom")
    group_col = args.group_col or ds.get("group_col")
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        if args.split_col or args.train_names or args.valid_names:
            written = [official_split(label_csv, emo_rule, os.path.join(out_dir, f"{args.name}.json"), args.split_col,
                                      args.train_names, args.valid_names, group_col)]
        else:
            written = build(label_csv, emo_rule, out_dir, seeds, args.valid_ratio, args.kfold, group_col,
                            args.epoch_selection)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, ntr, nva in written:
        if args.kfold:
            if args.epoch_selection == "inner":
                with open(path) as f:
                    how = f"epoch chosen on {len(json.load(f)['select_info']['names'])} others, select_info"
            else:
                how = "epoch chosen on these out-of-fold rows"
            print(f"{path}: {ntr} train, {nva} valid (out-of-fold; {how})")
        else:
            print(f"{path}: {ntr} train, {nva} valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
