"""Pseudo labels for an unlabelled pool: one strategy over stage-1 run(s) and teacher files -> a split list.

    python pseudo_label.py --dataset demo --seed 0 --strategy consensus \
        --runs saved/demo/seed0/auto_attention/run --teachers features/demo/teachers/demo-vlm.jsonl
    python pseudo_label.py --dataset demo --strategy acl --runs RUN --teachers T1.jsonl T2.jsonl --iteration 2
    python pseudo_label.py --dataset demo --strategy teacher --teachers T.jsonl --min_conf 4

Strategies (pseudo/strategies.py): none | teacher (T-PL) | student (S-PL, class-balanced) | consensus (MRAC25:
model and teacher agree) | acl (ACL-MER refinement). Writes (default ``train_lst/<dataset>/pseudo_<strategy>_
seed<seed>.json``) the split list: the labelled training list plus the pseudo-labelled samples with their
``weights``, ``sources`` and ``confidences``; the validation list unchanged. Beside it: the chosen samples
(``.csv``) and, where the pool's truth is known (the demo's unlabeled_truth, or --truth), the precision and
count per class and per source (``_report.csv``). Train stage 2 on it with ``train.py --split <it>``.
"""

import argparse
import os
import sys

import config
from engine.config import emo_rule_of
from pseudo import strategies as pseudo
from dataloader.files import DataError, read_names_csv, read_split_json
from pseudo.drivers import (forbidden_names, read_truth, student_probs, teacher_matrix, write_pseudo_split)
from common.utils import add_threads_flag, get_logger, set_threads


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo")
    p.add_argument("--seed", type=int, default=0, help="picks the labelled split train_lst/<dataset>/seed<k>.json")
    p.add_argument("--split", default=None, help="labelled split list (default: from --dataset/--seed)")
    p.add_argument("--strategy", required=True, choices=pseudo.STRATEGIES)
    p.add_argument("--runs", nargs="*", default=[], help="stage-1 run folder(s) (student, consensus, acl)")
    p.add_argument("--teachers", nargs="*", default=[], help="teacher JSON Lines file(s)")
    p.add_argument("--unlabeled", default=None, help="pool CSV with a name column (default: the data set's)")
    p.add_argument("--truth", default=None, help="pool truth CSV name,discrete (default: the data set's, if any)")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g = p.add_argument_group("strategy parameters")
    g.add_argument("--min_conf", type=float, default=None, help="teacher confidence threshold (teacher: 4, consensus: 0)")
    g.add_argument("--min_prob", type=float, default=0.0, help="model probability threshold (student, consensus)")
    g.add_argument("--top_k", type=int, default=None, help="cap per class (student, acl: 200; consensus: none)")
    g.add_argument("--rule", default="all", choices=["all", "majority"], help="consensus over several runs/teachers")
    g.add_argument("--teacher_index", type=int, default=0, help="which teacher file T-PL uses")
    g.add_argument("--iteration", type=int, default=0, help="ACL iteration t (p_t = max(p_init - gamma t, p_min))")
    for k, v in pseudo.ACL_DEFAULTS.items():
        if k != "top_k":
            g.add_argument(f"--{k}", type=float, default=v, help=f"ACL (default {v})")
    g.add_argument("--weight", type=float, default=1.0, help="loss weight of a pseudo-labelled sample")
    g.add_argument("--weight_by_confidence", action="store_true", help="multiply the weight by the confidence")
    add_threads_flag(p)
    return p


def strategy_kwargs(args):
    if args.strategy == "teacher":
        return {"min_conf": 4.0 if args.min_conf is None else args.min_conf, "teacher": args.teacher_index}
    if args.strategy == "student":
        return {"top_k": 200 if args.top_k is None else args.top_k, "min_prob": args.min_prob}
    if args.strategy == "consensus":
        return {"rule": args.rule, "min_prob": args.min_prob, "min_conf": args.min_conf or 0.0,
                "top_k": args.top_k or 0}
    if args.strategy == "acl":
        return {"t": args.iteration, "p_init": args.p_init, "gamma": args.gamma, "p_min": args.p_min,
                "theta": args.theta, "c_t": args.c_t, "top_k": 200 if args.top_k is None else args.top_k}
    return {}


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    log = get_logger("mer.pseudo")
    try:
        ds_cfg = config.DATASETS.get(args.dataset, {})
        emo_rule = emo_rule_of(args.dataset)
        class_names = config.EMO_RULE[emo_rule]
        split = args.split or os.path.join(config.PATH_TO_TRAIN_LST, args.dataset, f"seed{args.seed}.json")
        doc = read_split_json(split, class_names)
        forbidden = forbidden_names(doc, ds_cfg)
        pool_csv = args.unlabeled or ds_cfg.get("unlabeled_csv")
        if not pool_csv:
            raise DataError(f"data set '{args.dataset}' has no unlabelled list; give --unlabeled")
        labelled = set(doc["train_info"]["names"])
        pool = [n for n in read_names_csv(pool_csv) if n not in forbidden and n not in labelled]
        log.info(f"pool {pool_csv}: {len(pool)} unlabelled samples")
        if args.strategy in ("student", "consensus", "acl") and not args.runs:
            raise DataError(f"strategy '{args.strategy}' needs stage-1 run folder(s): --runs")
        if args.strategy in ("teacher", "consensus", "acl") and not args.teachers:
            raise DataError(f"strategy '{args.strategy}' needs teacher file(s): --teachers")
        probs = student_probs(args.runs, pool, args.device) if args.runs else None
        if probs is not None and args.strategy != "consensus":
            probs = probs[0] if len(probs) == 1 else sum(probs) / len(probs)
        t_lab, t_conf, _ = teacher_matrix(args.teachers, pool, emo_rule, log) if args.teachers else (None, None, None)
        if args.strategy in ("teacher", "consensus", "acl") and pool:
            for path, row in zip(args.teachers, t_lab):
                if not (row >= 0).any():
                    raise DataError(f"teacher file {path} has no usable answer for any of the {len(pool)} samples "
                                    f"of the pool {pool_csv} (0% coverage): the teacher's names do not match the "
                                    f"pool's names; label the pool with that teacher, or give the right --teachers "
                                    f"or --unlabeled")
        kw = strategy_kwargs(args)
        sel = pseudo.select(args.strategy, probs, t_lab, t_conf, **kw)
        frame = pseudo.selection_frame(sel, pool, class_names, args.weight, args.weight_by_confidence)
        out = args.out or os.path.join(config.PATH_TO_TRAIN_LST, args.dataset,
                                       f"pseudo_{args.strategy}_seed{args.seed}.json")
        write_pseudo_split(out, doc, frame, forbidden, {"strategy": args.strategy, "params": kw,
                                                        "runs": args.runs, "teachers": args.teachers})
        stem = os.path.splitext(out)[0]
        frame.to_csv(stem + ".csv", index=False)
        truth = read_truth(args.truth or ds_cfg.get("unlabeled_truth"), emo_rule)
        report = pseudo.precision_report(frame, truth, class_names)
        report.to_csv(stem + "_report.csv", index=False)
        print(report.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        print(f"{len(frame)} pseudo labels -> {out}")
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
