"""Seed ensemble and re-ranking rules on the demo: does voting beat the best single run, and do the rules
undo a planted labelling bias?

    python bench/ensemble.py [--seeds 0,1,2,3,4] [--model auto_attention] [--epochs 30] [--bias_rate 0.4]

Part 1 (the demo as it is): one run per seed, each on its own split (train_lst/demo/seed<k>.json, as
MERBench's seeds: a different 80/20 draw of the labelled pool, a different initialisation and batch order),
each scored on the test list; the runs vote (majority and soft; weighted voting needs the members'
validation predictions on one shared list, so part 1 also votes the runs of part 2's shared split when
``--shared_split`` is given). Part 2 (a demo variant with a planted bias): in the
labelled pool, a share ``--bias_rate`` of the sad, surprise and neutral clips are labelled worried (an
annotator habit the MER2025 runner-up corrected for); the test labels stay true. The same seeds are trained
on that variant, soft-voted, and re-ranked with ``--rules`` (default: the shipped rerank_rules.yaml, with the
demo's teacher). The rule report shows validation F1 before and after each rule: validation labels carry the
planted bias, so a rule that helps on test may be flagged there (that is the point of a prior-knowledge rule).

Prints both tables and ends with ``ensemble gain over best single run: <weighted F1 points>`` (part 1, soft
voting minus the best single run's test weighted F1). Finished runs are skipped on a rerun.

Many runs at once (engine/grid.py): ``--jobs N`` trains the seeds of each part N at a time, each its own
process (``--gpus 0,1`` spreads them over GPUs, ``--cluster slurm`` submits them through submitit); the
figures are those of ``--jobs 1`` (the default: one run after another in this process) for the same --threads.
Process logs: ``<save_root>/grid/logs``.
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd

import _paths  # noqa: F401
import config
from engine.config import TrainConfig
from ensembling.voting import fit_weights, read_members, vote
from dataloader.files import read_label_csv
from common.metrics import emotion_metrics
from ensembling.rerank import Validation, load_rules, rerank, teacher_answers
from engine.grid import GridFailed, add_grid_flags, grid_options, run_grid
from common.errors import OptionalDependencyError
from common.utils import add_threads_flag, get_logger, set_threads
from dataloader import splits as build_splits


FEATS = ("demo-clip-vit-base-UTT,demo-videomae-large-UTT,demo-hubert-large-UTT,demo-wav2vec2-base-UTT,"
         "demo-roberta-large-UTT,demo-bert-base-UTT,demo-vlm-scores")
BIASED_FROM = ("sad", "surprise", "neutral")


def plant_bias(label_csv, out_csv, rate, target="worried", sources=BIASED_FROM, seed=0):
    """Copy of a label CSV where a share ``rate`` of the ``sources`` clips are labelled ``target``."""
    df = read_label_csv(label_csv, config.EMO_RULE["MER"])
    rng = np.random.default_rng(seed)
    flip = df["discrete"].isin(sources).to_numpy() & (rng.random(len(df)) < rate)
    df.loc[flip, "discrete"] = target
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    df.to_csv(out_csv, index=False)
    return int(flip.sum())


def train_seeds(split, seeds, root, args, log):
    """One run per seed on ``split`` (None: each seed's own split train_lst/demo/seed<k>.json), ``--jobs`` at
    a time (engine/grid.py); their run folders, in the order of ``seeds``."""
    specs = [(f"{os.path.relpath(root, args.save_root)}_seed{seed}", TrainConfig.from_argv([
        "--dataset", "demo", "--seed", str(seed), "--feat", args.feat, "--model", args.model,
        "--epochs", str(args.epochs), "--lr", str(args.lr), "--save_root", root, "--device", args.device,
        "--test", "--quiet", "--resume"] + (["--split", split] if split else [])
        + (["--patience", str(args.patience)] if args.patience else []))) for seed in seeds]

    def report(i, res):
        s = res.summary
        log.info(f"{root} seed {seeds[i]}: valid F1 {s['valid_f1']:.4f}, test F1 {s['test_f1']:.4f}")

    results = run_grid(specs, os.path.join(args.save_root, "grid"), on_result=report, **grid_options(args))
    return [r.summary["run_dir"] for r in results]


def members(runs, class_names):
    test = read_members([os.path.join(r, "test_pred.csv") for r in runs], class_names)
    valid = read_members([os.path.join(r, "valid_pred.csv") for r in runs], class_names)
    return test, valid


def f1_acc(labels, pred):
    m = emotion_metrics(labels, pred)
    return m["f1"], m["acc"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--model", default="auto_attention")
    p.add_argument("--feat", default=FEATS)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early stopping (train.py --patience): stop a run once N epochs bring no better validation F1; off by "
                        "default, so the figures of docs/results.md are those of every epoch")
    p.add_argument("--bias_rate", type=float, default=0.4)
    p.add_argument("--rules", default=os.path.join(_paths.REPO_ROOT, "rerank_rules.yaml"))
    p.add_argument("--device", default="auto")
    p.add_argument("--save_root", default=os.path.join(_paths.REPO_ROOT, "saved", "bench_ensemble"))
    add_threads_flag(p)
    add_grid_flags(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    try:
        return bench(args)
    except (GridFailed, OptionalDependencyError) as e:  # a failed run of several at once, a missing submitit
        print(f"error: {e}", file=sys.stderr)
        return 2


def bench(args):
    log = get_logger("mer.bench_ensemble", os.path.join(args.save_root, "bench.log"), append=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    ds = config.DATASETS["demo"]
    class_names = config.EMO_RULE["MER"]
    test_truth = dict(zip(*[read_label_csv(ds["test_label_csv"], class_names)[c] for c in ("name", "discrete")]))

    # part 1: the demo as it is, each seed on its own split
    missing = [k for k in seeds if not os.path.isfile(os.path.join(config.PATH_TO_TRAIN_LST, "demo", f"seed{k}.json"))]
    if missing:
        build_splits.build(ds["label_csv"], "MER", os.path.join(config.PATH_TO_TRAIN_LST, "demo"), tuple(seeds))
    runs = train_seeds(None, seeds, os.path.join(args.save_root, "clean"), args, log)
    test = read_members([os.path.join(r, "test_pred.csv") for r in runs], class_names)
    rows = []
    for i, run in enumerate(runs):
        v = pd.read_csv(os.path.join(run, "valid_pred.csv"))
        vl, vp = v["label"].map(class_names.index).to_numpy(), v["pred"].map(class_names.index).to_numpy()
        rows.append((f"run seed{seeds[i]} (own split)", *f1_acc(vl, vp), *f1_acc(test.labels, test.probs[i].argmax(1))))
    best_single = max(r[3] for r in rows)
    for mode in ("majority", "soft"):
        _, tp = vote(test.probs, mode)
        rows.append((f"ensemble: {mode}", np.nan, np.nan, *f1_acc(test.labels, tp)))
    t1 = pd.DataFrame(rows, columns=["member", "valid F1", "valid acc", "test F1", "test acc"])
    soft_f1 = t1.loc[t1["member"] == "ensemble: soft", "test F1"].item()
    print(f"part 1: {len(seeds)} seeds of {args.model} on the demo, each on its own split")
    print(t1.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}"))
    # the same with one shared split (only initialisation and batch order differ), where weights can be fitted
    shared = os.path.join(config.PATH_TO_TRAIN_LST, "demo", "seed0.json")
    sruns = train_seeds(shared, seeds, os.path.join(args.save_root, "shared"), args, log)
    stest, svalid = members(sruns, class_names)
    srows = [(f"run seed{k} (split seed0)", *f1_acc(svalid.labels, svalid.probs[i].argmax(1)),
              *f1_acc(stest.labels, stest.probs[i].argmax(1))) for i, k in enumerate(seeds)]
    weights = fit_weights(svalid.probs, svalid.labels)
    for mode in ("majority", "soft", "weighted"):
        w = weights if mode == "weighted" else None
        _, vp = vote(svalid.probs, mode, w)
        _, tp = vote(stest.probs, mode, w)
        srows.append((f"ensemble: {mode}", *f1_acc(svalid.labels, vp), *f1_acc(stest.labels, tp)))
    t2 = pd.DataFrame(srows, columns=["member", "valid F1", "valid acc", "test F1", "test acc"])
    print("\npart 1b: the same seeds on one shared split (seed0): only initialisation and batch order differ")
    print(t2.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"weighted voting weights (fitted on validation): {np.round(weights, 3).tolist()}")

    # part 2: planted bias toward worried in the labels; rules re-rank the soft vote
    bias_root = os.path.join(args.save_root, f"bias{args.bias_rate:g}")
    bias_csv = os.path.join(bias_root, "labels.csv")
    n_flipped = plant_bias(ds["label_csv"], bias_csv, args.bias_rate)
    bias_split_dir = os.path.join(bias_root, "train_lst")
    build_splits.build(bias_csv, "MER", bias_split_dir, (0,))
    bruns = train_seeds(os.path.join(bias_split_dir, "seed0.json"), seeds, os.path.join(bias_root, "runs"), args,
                        log)
    btest, bvalid = members(bruns, class_names)
    scores, pred = vote(btest.probs, "soft")
    v_scores, v_pred = vote(bvalid.probs, "soft")
    teacher = teacher_answers(os.path.join(ds["teacher_dir"], "demo-vlm.jsonl"), class_names, log)
    rules = load_rules(args.rules, class_names)
    res = rerank(rules, scores, class_names, btest.names, teacher,
                 Validation(v_scores, bvalid.labels, bvalid.names, teacher, v_pred), pred=pred)
    truth = np.array([class_names.index(test_truth[n]) for n in btest.names])
    f_before, a_before = f1_acc(truth, pred)
    f_after, a_after = f1_acc(truth, res.pred)
    worried = class_names.index("worried")
    print(f"\npart 2: planted bias, {n_flipped} of the labelled clips of {', '.join(BIASED_FROM)} relabelled "
          f"worried (rate {args.bias_rate}); test labels true")
    print(f"soft vote of {len(seeds)} seeds: test F1 {f_before:.4f} (acc {a_before:.4f}); predicted worried "
          f"{int((pred == worried).sum())}, truly worried {int((truth == worried).sum())}")
    step_pred = pred.copy()
    for i, rule in enumerate(rules):  # the test F1 after each rule, applied in order
        step = rerank(rules[:i + 1], scores, class_names, btest.names, teacher,
                      Validation(v_scores, bvalid.labels, bvalid.names, teacher, v_pred), pred=pred)
        f, _ = f1_acc(truth, step.pred)
        print(f"  after rule {i + 1} ({rule['type']}): test F1 {f:.4f}; changed {int((step.pred != step_pred).sum())}")
        step_pred = step.pred
    print(f"after the rules: test F1 {f_after:.4f} (acc {a_after:.4f}); predicted worried "
          f"{int((res.pred == worried).sum())}")
    rep = res.report[["rule", "type", "test_changed", "valid_changed", "valid_f1_before", "valid_f1_after", "flag"]]
    print(rep.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4f}"))
    print(f"rules gain on the planted-bias variant: {(f_after - f_before) * 100:.2f}")
    print(f"ensemble gain over best single run: {(soft_f1 - best_single) * 100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
