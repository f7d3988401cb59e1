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
iteration (``acl_state.json``). A rerun with other settings (``--train_args``, ``--strategy`` parameters,
teachers, ``--weight``, ``--stage2_init``, ``--n_labelled``) is refused before anything is written, naming what
differs. ``result.json`` is removed before a rerun writes anything and written last, its count read back from
the pseudo-label list it names. Strategy parameters as in pseudo_label.py.

Where the runs train (engine/grid.py): ``--gpus 1`` puts them on GPU 1, ``--cluster slurm`` submits each as a
SLURM job through submitit (process logs in ``<out>/grid/logs``). One seed's runs depend on each other (stage 2
needs stage 1's pseudo labels; each ACL round needs the labels of the round before), so ``--jobs`` above 1
gains nothing here; bench/low_resource.py --jobs runs the drivers of several seeds at once.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile

import pandas as pd

import config
from pseudo_label import build_parser as pl_parser, strategy_kwargs
from dataloader.files import DataError, read_names_csv, read_split_json
from dataloader.splits import low_resource_split
from engine.config import emo_rule_of
from pseudo.drivers import acl_loop, check_acl, check_pool_dialogues, check_two_stage, read_inputs, two_stage
from engine.grid import Grid, add_grid_flags, grid_options
from common.errors import OptionalDependencyError
from common.utils import atomic_path, error_line, set_threads


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


def low_resource_pool(split, args, stage, pool=None):
    """``--n_labelled N``: the labelled split of N samples (written into the folder ``stage``, moved into
    ``--out`` by :func:`keep_low_resource` once every stage's settings are checked), the pool (the rest of the
    training list, plus ``--unlabeled`` when given) and the pool's held-back labels."""
    labelled, rest, truth = low_resource_split(split, args.n_labelled, args.seed, os.path.join(stage, "labelled.json"),
                                               emo_rule_of(args.dataset))
    pool = rest + [n for n in (pool or []) if n not in truth]
    return labelled, pool, truth


def keep_low_resource(labelled, truth, out):
    """Move the labelled split into ``<out>/labelled.json`` and write the pool's labels ``<out>/pool_truth.csv``;
    returns their paths."""
    os.makedirs(out, exist_ok=True)
    split = os.path.join(out, "labelled.json")
    shutil.move(labelled, split)
    shutil.rmtree(os.path.dirname(labelled), ignore_errors=True)
    truth_csv = os.path.join(out, "pool_truth.csv")
    pd.DataFrame({"name": list(truth), "discrete": list(truth.values())}).to_csv(truth_csv, index=False)
    return split, truth_csv


def write_result(res, path):
    """``result.json``, written last (a rerun removes the old one before it writes anything else), with the count
    of pseudo labels read back from the list it names, so that the two never disagree."""
    if res.get("pseudo_split"):
        doc = read_split_json(res["pseudo_split"])
        res["n_pseudo"] = sum(s != "labelled" for s in doc["train_info"].get("sources") or [])
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(res, f, indent=1, default=str)


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    lr_stage = None
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
        base_split = split
        if args.n_labelled is not None:
            lr_stage = tempfile.mkdtemp(prefix="semi_low_resource_")
            split, pool, truth_map = low_resource_pool(split, args, lr_stage, pool)
        grid = Grid(os.path.join(out, "grid"), **grid_options(args))
        acl_kw = None
        # every stage's settings and every input, before anything is written (train.py checks its own run folder
        # likewise; the drivers check them again, and write nothing before)
        if args.mode == "acl":
            acl_kw = strategy_kwargs(argparse.Namespace(**{**vars(args), "strategy": "acl"}))
            acl_kw.pop("t")
            check_acl(args.dataset, args.seed, split, train_args, args.teachers, out, acl_kw, args.device)
        else:
            check_two_stage(args.dataset, args.seed, split, train_args, args.strategy, strategy_kwargs(args),
                            args.teachers, out, args.stage2_init, args.weight, args.weight_by_confidence,
                            args.device)
        inputs = read_inputs(args.dataset, split, pool, None if lr_stage else truth,
                             args.teachers if args.mode == "acl" or args.strategy != "none" else ())
        check_pool_dialogues(args.dataset, train_args, inputs[2], args.unlabeled)
        result_path = os.path.join(out, "result.json")
        if os.path.isfile(result_path):  # it describes the lists this run may rewrite
            os.remove(result_path)
        if lr_stage:
            split, truth = keep_low_resource(split, truth_map, out)
            lr_stage = None
            print(f"low-resource: {args.n_labelled} labelled from {base_split} -> {split}; pool of {len(pool)}")
        if args.mode == "acl":
            with grid:
                res = acl_loop(args.dataset, args.seed, split, train_args, args.teachers, pool, truth, out,
                               args.max_iter, acl_kw, args.device, grid=grid)
        else:
            with grid:
                res = two_stage(args.dataset, args.seed, split, train_args, args.strategy, strategy_kwargs(args),
                                args.teachers, pool, truth, out, args.stage2_init, args.weight,
                                args.weight_by_confidence, args.device, grid=grid)
        write_result(res, result_path)
        s1, s2 = res["stage1"] or {}, res["stage2"]
        print(f"{tag}: {res['n_pseudo']} pseudo labels"
              + (f" (precision {res['precision']:.4f})" if res.get("precision") is not None else ""))
        if s1.get("test_f1") is not None:
            print(f"stage 1 / first iteration: test weighted F1 {s1['test_f1']:.4f}")
        if s2.get("test_f1") is not None:
            print(f"final: test weighted F1 {s2['test_f1']:.4f}, valid {s2['valid_f1']:.4f}")
    except (DataError, KeyError, ValueError, OptionalDependencyError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    finally:
        if lr_stage:
            shutil.rmtree(lr_stage, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
