"""Class probabilities of trained runs for any name list; metrics where labels are given.

    python test.py --run saved/demo/seed0/auto_attention/run --names features/demo/test.csv \
        --labels features/demo/test_labels.csv --out saved/demo/test_pred.csv
    # many runs at once, each expert head of a moe run too (ensemble input), on the test list
    python test.py --run saved/demo/seed*/moe/run --names features/demo/test.csv --out_dir saved/preds/test --heads
    # the same runs on their validation lists (scored with the split's labels): what ensemble.py fits on
    python test.py --run saved/demo/seed*/moe/run --split_valid --out_dir saved/preds/valid --heads

Writes predictions CSVs (name[, label], pred, prob_<class>..., weight_<feature>... where the model has expert
weights, weight_cross-modal for moe): ``--out`` for one run; with ``--out_dir``, ``<out_dir>/<run id>.csv``
per run (the run id is the run folder's path below the save root, joined with ``_``, e.g.
``demo_seed0_moe_run``), and with ``--heads`` ``<run id>__head_<expert>.csv`` per expert head.
``--split_valid`` predicts each run's own validation list (from the split list recorded in its args.yaml) and
scores it with that list's labels. ``--drop_experts F ...`` leaves experts out as if their input were missing
(their feature files are not read). With labels, prints accuracy, weighted F1, a per-class report and the
confusion matrix, and saves the matrix next to each output as ``<out>_confusion.png``. A run trained with
``--context`` reads each name's dialogue from its data set's label tables (``--dialogue_csv`` adds others):
the names of the list are cut into dialogues, and names without a dialogue id stand alone.

Only finished runs are read (``summary.json`` written, no ``last.pth``); ``--allow_unfinished`` takes the best
epoch so far of a stopped or running one. Every output row names the checkpoint it came from (``checkpoint``
column), so that a prediction file can be checked against its run later (engine/results.py).
"""

import argparse
import os
import sys

import yaml

from dataloader.files import DataError, read_split_json
from engine.trainer import evaluate_run
from common.utils import add_threads_flag, error_line, set_threads


def run_id(run_dir):
    """``saved/demo/seed0/moe/run`` -> ``demo_seed0_moe_run`` (the last four path parts: dataset, seed,
    model, run name, as train.py lays them out; fewer when the path is shorter)."""
    parts = os.path.normpath(os.path.abspath(run_dir)).split(os.sep)
    return "_".join(p for p in parts[-4:] if p)


def valid_list(run_dir):
    """Names and labels of the validation list a run was trained with (its args.yaml ``split``)."""
    args_path = os.path.join(run_dir, "args.yaml")
    if not os.path.isfile(args_path):
        raise DataError(f"'{args_path}' does not exist: is '{run_dir}' a train.py run folder?")
    with open(args_path) as f:
        split = yaml.safe_load(f).get("split")
    if not split:
        raise DataError(f"'{args_path}' names no split list")
    info = read_split_json(split)["valid_info"]
    return list(info["names"]), dict(zip(info["names"], info["emos"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, nargs="+", help="run folder(s) written by train.py (each holds best.pth)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--names", help="CSV with a 'name' column: the samples to predict")
    src.add_argument("--split_valid", action="store_true", help="each run's own validation list, with its labels")
    p.add_argument("--labels", default=None, help="optional CSV name,discrete for scoring")
    p.add_argument("--out", default=None, help="predictions CSV of a single run (default: <run>/pred_<names>.csv)")
    p.add_argument("--out_dir", default=None, help="folder for <run id>.csv per run (needed with several runs)")
    p.add_argument("--heads", action="store_true", help="also write each expert head's predictions (moe)")
    p.add_argument("--drop_experts", nargs="*", default=[], metavar="FEATURE",
                   help="leave these experts out (a modality missing at test time; their files are not read)")
    p.add_argument("--dialogue_csv", nargs="*", default=None, metavar="CSV",
                   help="context runs: CSVs with name, dialogue id and order for the names (default: the run's "
                        "data set's label tables, the --names and --labels files)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--allow_unfinished", action="store_true",
                   help="predict from a run that is not finished (stopped, or still training) with its best epoch so "
                        "far; without it such a run is refused")
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if len(args.run) > 1 and not args.out_dir:
        p.error("several --run folders need --out_dir")
    if args.out and len(args.run) > 1:
        p.error("--out names one file: use --out_dir with several runs")
    try:
        ids = [run_id(r) for r in args.run]
        if len(set(ids)) < len(ids):
            raise DataError(f"two runs share a run id ({ids}); give folders that differ in dataset/seed/model/name")
        for run, rid in zip(args.run, ids):
            if args.split_valid:
                names, labels = valid_list(run)
                tag = "valid"
            else:
                names, labels, tag = args.names, args.labels, os.path.splitext(os.path.basename(args.names))[0]
            if args.out_dir:
                out = os.path.join(args.out_dir, rid + ".csv")
            else:
                out = args.out or os.path.join(run, f"pred_{tag}.csv")
            res = evaluate_run(run, names, labels, out, args.device, args.gpu, args.batch_size, args.num_workers,
                               drop_experts=args.drop_experts, write_heads=args.heads, dialogue_csv=args.dialogue_csv,
                               allow_unfinished=args.allow_unfinished)
            print(f"{run}: wrote {res['n']} predictions to {out}"
                  + (f" (+ {len(res['head_csvs'])} expert heads)" if res.get("head_csvs") else ""))
            if "acc" in res:
                if len(args.run) == 1:
                    print(res["report"])
                    print(res["confusion_text"])
                    print(f"confusion matrix image: {res['confusion_png']}")
                print(f"TEST: acc:{res['acc']:.4f}, f-score:{res['f1']:.4f}")
    except (DataError, KeyError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
