"""MELD, text only: the same model without and with conversation context, 5 seeds, on the official split.

    python bench/meld.py [--seeds 0,1,2,3,4] [--model auto_attention] [--context 3] [--device auto]
    python bench/meld.py --feat meld-tfidf-UTT      # one text expert only (no sentence encoder needed)

Converts the release with preprocess/meld.py and computes both text features once (meld-minilm-UTT, a
sentence encoder; meld-tfidf-UTT, TF-IDF + SVD fitted on the official train transcripts), then trains one
run per seed on the official split (train_lst/meld/official.json: train = official train, validation =
official dev; the best epoch by dev weighted F1) without context and with ``--context K``, scores each on the
official test split, and prints a table of mean and std over seeds. Its last line is
``meld test weighted F1 with context: <mean> +- <std>``.

The settings below were chosen on the official dev split only (see docs/results.md).
Published text-only references (test weighted F1): bc-LSTM 0.5644, DialogueRNN 0.5703.
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd

import _paths  # noqa: F401
import config
from engine.config import TrainConfig
from models.context import CONTEXT_LEVELS, context_run_name
from engine.trainer import train
from corpora import meld
from common.utils import add_threads_flag, set_threads


FEATS = ["meld-minilm-UTT", "meld-tfidf-UTT"]


def ensure_data(src, feats=FEATS, log=print):
    """Convert MELD and compute the text features ``feats`` unless they are there."""
    ds = config.DATASETS["meld"]
    split = os.path.join(config.PATH_TO_TRAIN_LST, "meld", "official.json")
    kinds = {v: k for k, v in meld.FEATURES.items()}
    unknown = [f for f in feats if f not in kinds]
    if unknown:
        raise SystemExit(f"bench/meld.py: unknown feature(s) {unknown}; choose from {sorted(kinds)}")
    missing = [f for f in feats if not os.path.isdir(config.find_feature(f)[2])]
    if not os.path.isfile(ds["label_csv"]) or not os.path.isfile(split) or missing:
        meld.convert(src, os.path.dirname(ds["label_csv"]), os.path.dirname(split),
                     features=[kinds[f] for f in (missing or feats)], log=log, progress=False)
    return split


def run_seeds(split, seeds, args, context, save_root):
    rows = []
    for seed in seeds:
        argv = ["--dataset", "meld", "--split", split, "--seed", str(seed), "--feat", ",".join(args.feat),
                "--model", args.model, "--epochs", str(args.epochs), "--lr", str(args.lr),
                "--batch_size", str(args.batch_size), "--hidden_dim", str(args.hidden_dim),
                "--dropout", str(args.dropout), "--l2", str(args.l2), "--device", args.device,
                "--save_root", save_root, "--run_name", context_run_name(context, args.context_level),
                "--context", str(context),
                "--context_hidden", str(args.context_hidden), "--context_level", args.context_level,
                "--test", "--quiet", *(["--patience", str(args.patience)] if args.patience else []),
                *args.extra.split()]
        s = train(TrainConfig.from_argv(argv))
        rows.append({"context": context, "seed": seed, "best_epoch": s["best_epoch"], "valid_f1": s["valid_f1"],
                     "test_acc": s["test_acc"], "test_f1": s["test_f1"]})
        print(f"context {context} seed {seed}: dev weighted F1 {s['valid_f1']:.4f} (epoch {s['best_epoch']}), "
              f"test acc {s['test_acc']:.4f}, test weighted F1 {s['test_f1']:.4f}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=meld.DEFAULT_SRC, help="the MELD release folder ({train,dev,test}_sent_emo.csv)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--feat", default=",".join(FEATS), help="text experts (comma list of " + ", ".join(FEATS) + ")")
    p.add_argument("--model", default="auto_attention")
    p.add_argument("--context", type=int, default=3, help="neighbours on each side for the context run")
    p.add_argument("--context_hidden", type=int, default=128)
    p.add_argument("--context_level", choices=CONTEXT_LEVELS, default="fused",
                   help="where the context layer sits (train.py --context_level)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch_size", type=int, default=64, help="utterances per batch (whole dialogues with context)")
    p.add_argument("--hidden_dim", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--l2", type=float, default=1e-5)
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early stopping (train.py --patience): stop a run once N epochs bring no better validation F1; off by "
                        "default, so the figures of docs/results.md are those of every epoch")
    p.add_argument("--extra", default="", help="further train.py flags, e.g. \"--expert_dropout 0\"")
    p.add_argument("--device", default="auto")
    p.add_argument("--save_root", default=os.path.join(_paths.REPO_ROOT, "saved", "bench_meld"))
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.context < 1:
        p.error("--context must be at least 1 (the run without context is always trained)")

    args.feat = [f.strip() for f in args.feat.split(",") if f.strip()]
    split = ensure_data(args.src, args.feat)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = run_seeds(split, seeds, args, 0, args.save_root) + run_seeds(split, seeds, args, args.context,
                                                                          args.save_root)
    df = pd.DataFrame(rows)
    df.to_csv(os.path.join(args.save_root, "meld_bench.csv"), index=False, float_format="%.6f")
    print(f"\n| {args.model}, text only ({' + '.join(args.feat)}) | dev weighted F1 | test acc | test weighted F1 |")
    print("| --- | --- | --- | --- |")
    for ctx, g in df.groupby("context"):
        label = "no context" if ctx == 0 else f"context {ctx}"
        print(f"| {label} | " + " | ".join(f"{g[c].mean():.4f} +- {g[c].std(ddof=0):.4f}"
                                          for c in ("valid_f1", "test_acc", "test_f1")) + " |")
    print("| DialogueRNN, text (published) | | | 0.5703 |")
    print("| bc-LSTM, text (published) | | | 0.5644 |\n")
    f1 = df.loc[df["context"] == 0, "test_f1"]
    print(f"meld test weighted F1 without context: {f1.mean():.4f} +- {f1.std(ddof=0):.4f}")
    f1 = df.loc[df["context"] == args.context, "test_f1"]
    print(f"meld test weighted F1 with context: {np.mean(f1):.4f} +- {np.std(f1):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
