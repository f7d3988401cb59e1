"""Expert ablation over seeds: each expert alone, all experts, and all but one, in a table and a plot.

    python ablation.py --dataset demo --model moe --seeds 0,1,2,3,4 --epochs 20 \
        --feat "['demo-hubert-large-UTT','demo-roberta-large-UTT','demo-videomae-large-UTT']"

Runs (each one train.py run with --test, under <save_root>/<experiment>/...):
  alone:<feature>     the feature alone (as run_eval_unimodal.sh does)
  all                 every listed feature
  without:<feature>   every listed feature but one
``--parts alone,all,without`` picks which. Ends with the table of mean and std accuracy and weighted F1 per
experiment (sorted; test where the data set has test labels, else validation), written as CSV and Markdown,
and a bar chart ``<save_root>/ablation.png``; the drop in F1 without each expert ranks the experts.
Finished runs are kept: rerunning the same command skips them. Runs are named by their settings, so other
--train_args train new runs beside them; the table holds only the runs of this command.

Many runs at once (engine/grid.py): ``--jobs 4`` trains four runs at a time, each its own process with
``--threads max(1, cores // 4)``; ``--gpus 0,1,2,3`` gives each one GPU; ``--cluster slurm`` submits them as a
SLURM job array through submitit. Each process's output is in ``<save_root>/grid/logs/<experiment>_seed<k>.log``;
a failed run is named with its log, the others finish, and the command exits 2 without a table. The table
is the same as with ``--jobs 1`` (the default: one run after another in this process) for the same --threads.
"""

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import pandas as pd  # noqa: E402

import eval_avg_performance as eap  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from common.errors import DataError, OptionalDependencyError  # noqa: E402
from engine.grid import add_grid_flags, grid_options, run_grid  # noqa: E402
from common.utils import add_threads_flag, error_line, parse_feat_list, set_threads  # noqa: E402


def experiments(feats, parts):
    out = []
    if "alone" in parts:
        out += [(f"alone:{f}", [f]) for f in feats]
    if "all" in parts:
        out.append(("all", list(feats)))
    if "without" in parts and len(feats) > 1:
        out += [(f"without:{f}", [g for g in feats if g != f]) for f in feats]
    return out


def plot(table, metric, path, title):
    t = table.sort_values(f"{metric}_mean")
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(t) + 1.5))
    colors = ["tab:red" if e == "all" else "tab:blue" if e.startswith("alone") else "tab:orange"
              for e in t["experiment"]]
    ax.barh(t["experiment"], t[f"{metric}_mean"], xerr=t[f"{metric}_std"], color=colors)
    ax.set_xlabel(metric.replace("_", " ") + " (mean +- std over seeds)")
    lo = max(0.0, float((t[f"{metric}_mean"] - t[f"{metric}_std"]).min()) - 0.05)
    ax.set_xlim(lo, 1.0)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo")
    p.add_argument("--feat", required=True, help="experts, as \"['a','b']\" or a,b")
    p.add_argument("--model", default="moe")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--parts", default="alone,all,without")
    p.add_argument("--save_root", default=None, help="default: saved/ablation_<dataset>_<model>")
    p.add_argument("--train_args", default="", help="further train.py flags, e.g. \"--epochs 20 --lr 1e-3\"")
    add_threads_flag(p)
    add_grid_flags(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    feats = parse_feat_list(args.feat)
    parts = set(args.parts.split(","))
    save_root = args.save_root or os.path.join("saved", f"ablation_{args.dataset}_{args.model}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = experiments(feats, parts)
    print(f"{len(runs)} experiments x {len(seeds)} seeds, model {args.model}, under {save_root}", flush=True)
    try:
        base = TrainConfig.from_argv(args.train_args.split())
        specs, keys = [], []
        for name, fs in runs:
            for seed in seeds:
                folder = name.replace(":", "=")
                cfg = base.replace(dataset=args.dataset, seed=seed, model=args.model, feat=list(fs), test=True,
                                   quiet=True, resume=True, save_root=os.path.join(save_root, folder))
                specs.append((f"{folder}_seed{seed}", cfg))
                keys.append((name, seed))

        def report(i, res):
            s = res.summary
            print(f"{keys[i][0]} seed {keys[i][1]}: weighted F1 {s.get('test_f1', s['valid_f1']):.4f}", flush=True)

        results = run_grid(specs, os.path.join(save_root, "grid"), on_result=report, **grid_options(args))
    except (DataError, KeyError, ValueError, OptionalDependencyError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    rows = [{"experiment": name, "seed": seed, **{k: r.summary.get(k) for k in (
        "valid_acc", "valid_f1", "test_acc", "test_f1")}} for (name, seed), r in zip(keys, results)]
    table = eap.summarise(pd.DataFrame(rows))
    out = os.path.join(save_root, "ablation")
    table.to_csv(out + ".csv", index=False, float_format="%.4f")
    md = eap.to_markdown(table)
    with open(out + ".md", "w") as f:
        f.write(md + "\n")
    metric = "test_f1" if table["test_f1_mean"].notna().any() else "valid_f1"
    plot(table, metric, os.path.join(save_root, "ablation.png"), f"{args.model} on {args.dataset}")
    print(md)
    if "all" in parts and "without" in parts:
        full = table.loc[table["experiment"] == "all", f"{metric}_mean"].iloc[0]
        drops = {r["experiment"][len("without:"):]: full - r[f"{metric}_mean"]
                 for _, r in table.iterrows() if r["experiment"].startswith("without:")}
        ranked = sorted(drops.items(), key=lambda kv: -kv[1])
        print("\nF1 lost without each expert (most important first): "
              + ", ".join(f"{k} {100 * v:+.2f}" for k, v in ranked))
    print(f"\nwrote {out}.csv, {out}.md and {os.path.join(save_root, 'ablation.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
