"""Semi-supervised training drivers: two-stage training with pseudo labels, and the ACL-MER loop.

    # stage 1 on the labelled split, consensus pseudo labels on the unlabelled pool, stage 2
    python semi.py --mode two_stage --strategy consensus --dataset demo --seed 0 \
        --teachers features/demo/teachers/demo-vlm.jsonl \
        --train_args "--model auto_attention --feat demo-roberta-large-UTT,demo-hubert-large-UTT --epochs 30 --lr 1e-3"
    # ACL-MER: train, label (student + teachers), move to the labelled pool, re-initialise, repeat
    python semi.py --mode acl --dataset demo --seed 0 --teachers T1.jsonl T2.jsonl --max_iter 5 --train_args "..."
    # low resource on any data set: 100 labelled, the rest of the training list as the pool
    python semi.py --mode acl --dataset mydata --n_labelled 100 --teachers T.jsonl --train_args "..."

Everything goes under ``--out`` (default ``saved/semi_<dataset>/seed<k>/<mode>[_<strategy>]``): the train.py
run folders, the pseudo-label lists and tables, their precision reports, ``semi.log`` and ``result.json``.
A rerun of the same command skips finished runs; an interrupted ACL loop resumes from its last finished
iteration (``acl_state.json``). Strategy parameters as in pseudo_label.py.

Where the runs train (engine/grid.py): ``--gpus 1`` puts them on GPU 1, ``--cluster slurm`` submits each as a
SLURM job through submitit (process logs in ``<out>/grid/logs``). One seed's runs depend on each other (stage 2
needs stage 1's pseudo labels; each ACL round needs the labels of the round before), so ``--jobs`` above 1
gains nothing here; bench/low_resource.py --jobs runs the drivers of several seeds at once.
"""

import argparse
import json
import os
import shlex
import sys

import pandas as pd

import config
from pseudo_label import build_parser as pl_parser, strategy_kwargs
from dataloader.files import DataError, read_names_csv
from dataloader.splits import low_resource_split
from engine.config import emo_rule_of
from pseudo.drivers import acl_loop, two_stage
from engine.grid import Grid, add_grid_flags, grid_options
from common.errors import OptionalDependencyError
from common.utils import set_threads


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[pl_parser()], add_help=False, conflict_handler="resolve")
    p.add_argument("--mode", default="two_stage", choices=["two_stage", "acl"])
    p.add_argument("--strategy", default="consensus", help="two_stage: none|teacher|student|consensus|acl")
    p.add_argument("--train_args", default="", help="train.py flags for every run (model, features, epochs, ...)")
    p.add_argument("--stage2_init", default="scratch", choices=["scratch", "stage1"],
                   help="stage 2 from a fresh initialisation or from the stage-1 weights")
    p.add_argument("--max_iter", type=int, default=5, help="ACL labelling rounds")
    p.add_argument("--n_labelled", type=int, default=None, metavar="N",
                   help="low-resource run: keep N labelled samples drawn stratified (by --seed) from the split's "
                        "training list; the rest of that list joins the unlabelled pool, its labels kept back to "
                        "measure pseudo-label precision (<out>/labelled.json, <out>/pool_truth.csv)")
    add_grid_flags(p)
    return p


def low_resource_pool(split, args, out, pool=None):
    """``--n_labelled N``: the labelled split of N samples, the pool (the rest of the training list, plus
    ``--unlabeled`` when given) and the CSV of the pool's held-back labels."""
    os.makedirs(out, exist_ok=True)
    labelled, rest, truth = low_resource_split(split, args.n_labelled, args.seed, os.path.join(out, "labelled.json"),
                                               emo_rule_of(args.dataset))
    truth_csv = os.path.join(out, "pool_truth.csv")
    pd.DataFrame({"name": list(truth), "discrete": list(truth.values())}).to_csv(truth_csv, index=False)
    pool = rest + [n for n in (pool or []) if n not in truth]
    print(f"low-resource: {args.n_labelled} labelled from {split} -> {labelled}; pool of {len(pool)}")
    return labelled, pool, truth_csv


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    try:
        ds_cfg = config.DATASETS.get(args.dataset, {})
        split = args.split or os.path.join(config.PATH_TO_TRAIN_LST, args.dataset, f"seed{args.seed}.json")
        pool = read_names_csv(args.unlabeled) if args.unlabeled else None
        truth = args.truth or ds_cfg.get("unlabeled_truth")
        train_args = ["--dataset", args.dataset] + shlex.split(args.train_args)
        if args.threads:
            train_args += ["--threads", str(args.threads)]
        tag = args.mode if args.mode == "acl" else f"{args.mode}_{args.strategy}"
        out = args.out or os.path.join("saved", f"semi_{args.dataset}", f"seed{args.seed}", tag)
        if args.n_labelled is not None:
            split, pool, truth = low_resource_pool(split, args, out, pool)
        grid = Grid(os.path.join(out, "grid"), **grid_options(args))
        if args.mode == "acl":
            kw = strategy_kwargs(argparse.Namespace(**{**vars(args), "strategy": "acl"}))
            kw.pop("t")
            with grid:
                res = acl_loop(args.dataset, args.seed, split, train_args, args.teachers, pool, truth, out,
                               args.max_iter, kw, args.device, grid=grid)
        else:
            if args.strategy not in ("none", "teacher", "student", "consensus", "acl"):
                raise DataError(f"unknown --strategy '{args.strategy}'")
            with grid:
                res = two_stage(args.dataset, args.seed, split, train_args, args.strategy, strategy_kwargs(args),
                                args.teachers, pool, truth, out, args.stage2_init, args.weight,
                                args.weight_by_confidence, args.device, grid=grid)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        s1, s2 = res["stage1"] or {}, res["stage2"]
        print(f"{tag}: {res['n_pseudo']} pseudo labels"
              + (f" (precision {res['precision']:.4f})" if res.get("precision") is not None else ""))
        if s1.get("test_f1") is not None:
            print(f"stage 1 / first iteration: test weighted F1 {s1['test_f1']:.4f}")
        if s2.get("test_f1") is not None:
            print(f"final: test weighted F1 {s2['test_f1']:.4f}, valid {s2['valid_f1']:.4f}")
    except (DataError, ValueError, OptionalDependencyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
