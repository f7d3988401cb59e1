"""Class probabilities of a trained run for any name list; metrics where labels are given.

    python test.py --run saved/demo/seed0/auto_attention/run --names features/demo/test.csv \
        --labels features/demo/test_labels.csv --out saved/demo/test_pred.csv

Writes ``--out`` (name[, label], pred, prob_<class>..., weight_<feature>... where the model has expert
weights, weight_cross-modal for moe); ``--drop_experts F ...`` leaves experts out as if their input were
missing (their feature files are not read). With labels, prints accuracy, weighted F1, a per-class report and the confusion matrix, and
saves the matrix next to ``--out`` as ``<out>_confusion.png``.
"""

import argparse
import os
import sys

from toolkit.files import DataError
from toolkit.trainer import evaluate_run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by train.py (holds best.pth)")
    p.add_argument("--names", required=True, help="CSV with a 'name' column: the samples to predict")
    p.add_argument("--labels", default=None, help="optional CSV name,discrete for scoring")
    p.add_argument("--out", default=None, help="predictions CSV (default: <run>/pred_<names file>.csv)")
    p.add_argument("--drop_experts", nargs="*", default=[], metavar="FEATURE",
                   help="leave these experts out (a modality missing at test time; their files are not read)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--num_workers", type=int, default=4)
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.run, "pred_" + os.path.splitext(os.path.basename(args.names))[0] + ".csv")
    try:
        res = evaluate_run(args.run, args.names, args.labels, out, args.device, args.gpu, args.batch_size,
                           args.num_workers, drop_experts=args.drop_experts)
    except (DataError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"wrote {res['n']} predictions to {out}")
    if "acc" in res:
        print(res["report"])
        print(res["confusion_text"])
        print(f"confusion matrix image: {res['confusion_png']}")
        print(f"TEST: acc:{res['acc']:.4f}, f-score:{res['f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
