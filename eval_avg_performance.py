"""Mean and std of accuracy and weighted F1 over seeds, one row per experiment, sorted.

    python eval_avg_performance.py --save_root saved/unimodal [--out saved/unimodal/summary]

Finds every run folder below --save_root (``.../seed<k>/<model>/<run>/summary.json``); runs whose paths
differ only in ``seed<k>`` form one experiment, named by the rest of the path (for run_eval_unimodal.sh:
the feature). Writes ``<out>.csv`` and ``<out>.md`` and prints the Markdown table. Rows are sorted by test
weighted F1 where the runs were scored on a test list, else by validation weighted F1.
"""

import argparse
import glob
import json
import os
import re
import sys

import pandas as pd


def _experiment_names(paths):
    """Path parts without ``seed<k>``, minus the parts every run shares (when all paths align). The run
    folder's own name (train.py names runs by their settings) counts only where one folder holds runs of
    several settings."""
    parts = [[p for p in path if not re.fullmatch(r"seed\d+", p)] for path in paths]
    runs_per_folder = {}
    for p in parts:
        runs_per_folder.setdefault(tuple(p[:-1]), set()).add(p[-1] if p else None)
    if parts and all(len(v) == 1 for v in runs_per_folder.values()):
        parts = [p[:-1] or p for p in parts]
    if len({len(p) for p in parts}) == 1 and len({tuple(p) for p in parts}) > 1:
        varying = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        parts = [[p[i] for i in varying] for p in parts]
    return ["/".join(p) for p in parts]


def collect(save_root):
    rows, rels = [], []
    for path in sorted(glob.glob(os.path.join(save_root, "**", "summary.json"), recursive=True)):
        rel = os.path.relpath(os.path.dirname(path), save_root).split(os.sep)
        seeds = [p for p in rel if re.fullmatch(r"seed\d+", p)]
        with open(path) as f:
            s = json.load(f)
        rels.append(rel)
        rows.append({"seed": int(seeds[-1][4:]) if seeds else -1, **{
            k: s.get(k) for k in ("valid_acc", "valid_f1", "test_acc", "test_f1")}})
    df = pd.DataFrame(rows)
    if rows:
        df.insert(0, "experiment", _experiment_names(rels))
    return df


def summarise(runs):
    """One row per experiment: number of seeds, mean and std of each metric."""
    out = []
    for key, g in runs.groupby("experiment", sort=False):
        row = {"experiment": key, "seeds": len(g)}
        for m in ("valid_acc", "valid_f1", "test_acc", "test_f1"):
            vals = pd.to_numeric(g[m], errors="coerce").dropna()
            row[f"{m}_mean"] = vals.mean() if len(vals) else float("nan")
            row[f"{m}_std"] = vals.std(ddof=0) if len(vals) else float("nan")
        out.append(row)
    table = pd.DataFrame(out)
    sort_key = "test_f1_mean" if table["test_f1_mean"].notna().any() else "valid_f1_mean"
    return table.sort_values(sort_key, ascending=False).reset_index(drop=True)


def to_markdown(table):
    cols = [("valid_acc", "valid acc"), ("valid_f1", "valid F1"), ("test_acc", "test acc"), ("test_f1", "test F1")]
    cols = [(m, h) for m, h in cols if table[f"{m}_mean"].notna().any()]
    lines = ["| experiment | seeds | " + " | ".join(h for _, h in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = [f"{r[f'{m}_mean']:.4f} +- {r[f'{m}_std']:.4f}" for m, _ in cols]
        lines.append(f"| {r['experiment']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save_root", default="./saved")
    p.add_argument("--out", default=None, help="output prefix (default: <save_root>/summary)")
    p.add_argument("--highlight", default=None,
                   help="an experiment to set against the best of the others (e.g. the multimodal run)")
    args = p.parse_args(argv)
    runs = collect(args.save_root)
    if runs.empty:
        print(f"error: no finished runs (summary.json) below '{args.save_root}'", file=sys.stderr)
        return 1
    table = summarise(runs)
    out = args.out or os.path.join(args.save_root, "summary")
    table.to_csv(out + ".csv", index=False, float_format="%.4f")
    md = to_markdown(table)
    with open(out + ".md", "w") as f:
        f.write(md + "\n")
    print(md)
    print(f"\nwrote {out}.csv and {out}.md")
    if args.highlight:
        return compare(table, args.highlight)
    return 0


def compare(table, name):
    """Print how experiment ``name`` does against the best other experiment (test F1, else valid F1)."""
    metric = "test_f1_mean" if table["test_f1_mean"].notna().any() else "valid_f1_mean"
    if name not in set(table["experiment"]):
        print(f"error: --highlight '{name}' is not among the experiments", file=sys.stderr)
        return 1
    mine = table.loc[table["experiment"] == name, metric].iloc[0]
    others = table[table["experiment"] != name].sort_values(metric, ascending=False)
    if others.empty:
        return 0
    best = others.iloc[0]
    word = metric.replace("_mean", "").replace("_f1", " weighted F1")
    print(f"{name}: {word} {mine:.4f} vs best other {best[metric]:.4f} ({best['experiment']}): "
          f"{100 * (mine - best[metric]):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
