"""Semi-supervised drivers over train.py runs: two-stage training with pseudo labels, and the ACL-MER loop.

Both drivers are plain sequences of files, so each step can be inspected or rerun:

* stage 1 / iteration ``t``: a train.py run (``<root>/stage1``, ``<root>/acl_iter<t>``) on a split list;
* the student's class probabilities on the unlabelled pool (``evaluate_run``), the teachers' answers
  (teacher JSON Lines files), a selection (``pseudo/strategies.py``);
* a pseudo-label list in the split-list format: ``train_info`` = the labelled training list plus the
  pseudo-labelled samples, with per-sample ``weights``, ``sources`` and ``confidences``; ``valid_info`` =
  the labelled validation list, untouched. A pseudo label never lands on a validation or test name
  (checked, :func:`write_pseudo_split` raises);
* ``pseudo_<strategy>.csv`` (the chosen samples) and ``pseudo_<strategy>_report.csv`` (precision and count
  per class and source where the truth of the pool is known);
* stage 2 / the next iteration: a train.py run on that list.

Finished runs of the same settings are skipped on a rerun (train.py ``--resume`` semantics; a stage folder
holding a run of other settings, e.g. after other ``--train_args`` or another pseudo-label list, is refused,
naming what differs, so an old F1 is never reported for new settings) and the ACL loop keeps its state in
``acl_state.json`` after every finished iteration, so an interrupted loop resumes where it stopped.

Every stage's settings are checked before the driver writes anything (:func:`check_two_stage`,
:func:`check_acl`): the training settings of each stage folder already there, and the strategy, its parameters,
teachers, seed and weights recorded in the pseudo-label list its stage-2 (or ACL) run trained on (and
``acl_state.json``'s parameters). A pseudo-label list is written only after the run folder that will train on it
accepted it (:func:`_write_checked_list`): a list that comes out different under the same settings (a teacher
file edited in place) is refused before it, its CSV or its report replace the old ones.

Runs at once (``grid``, an ``engine.grid.Grid``): each driver is a generator (:func:`two_stage_steps`,
:func:`acl_steps`) that asks for one run at a time and gets its summary back, so that ``engine.grid.drive`` can
run many drivers together: the stage-1 runs of several seeds (or of several N in the low-resource bench) train
at once, and a driver whose run finished makes its pseudo labels while the others train. Within one driver
the runs stay sequential: stage 2 needs stage 1's pseudo labels, and each ACL round the labels of the round
before. Without ``grid`` (or with one job) the drivers run in this process, one run after another, as before.
"""

import json
import logging
import os
import re
import time

import numpy as np
import pandas as pd

import config
from engine.config import emo_rule_of
from pseudo import strategies as pseudo
from dataloader.files import (SELECT_INFO, DataError, read_label_csv, read_names_csv, read_split_json,
                              write_split_json)
from common.utils import get_logger
from engine.grid import RunFailed, drive


def teacher_matrix(paths, names, emo_rule, log=None):
    """Teachers' labels ``(T, N)`` (class index, -1 where no usable answer) and confidences ``(T, N)`` (NaN
    where missing) for ``names``, from teacher JSON Lines files; also the teachers' names. ``log``: a logger, or
    a list that gets the lines."""
    from teachers.records import read_teacher_jsonl
    class_names = config.EMO_RULE[emo_rule]
    cidx = {c: i for i, c in enumerate(class_names)}
    pos = {n: i for i, n in enumerate(names)}
    labels = np.full((len(paths), len(names)), -1, dtype=np.int64)
    conf = np.full((len(paths), len(names)), np.nan)
    teachers = []
    for t, path in enumerate(paths):
        df, problems = read_teacher_jsonl(path, emo_rule)
        teachers.append(os.path.splitext(os.path.basename(path))[0])
        hit = 0
        for name, lab, cf in zip(df["name"], df["label"], df["confidence"]):
            i = pos.get(name)
            if i is None or lab not in cidx:
                continue
            labels[t, i] = cidx[lab]
            conf[t, i] = np.nan if cf is None else float(cf)
            hit += 1
        line = (f"teacher {teachers[-1]} ({path}): answers for {hit}/{len(names)} pool samples"
                + (f"; {len(problems)} unusable lines skipped" if problems else ""))
        if isinstance(log, list):  # lines kept for a log that is not open yet
            log.append(line)
        elif log:
            log.info(line)
    return labels, conf, teachers


def read_truth(path, emo_rule):
    """``name -> label`` from a label CSV (``name,discrete``), or {} without one."""
    if not path or not os.path.isfile(path):
        return {}
    df = read_label_csv(path, config.EMO_RULE[emo_rule])
    return dict(zip(df["name"], df["discrete"]))


def forbidden_names(split_doc, ds_cfg, log=None):
    """Names that must never receive a pseudo label: the validation list and the data set's test list.

    A transductive data set (``ds_cfg["transductive"]``, e.g. MER2025-SEMI, whose candidates to predict lie
    inside the unlabelled pool and may be labelled from it) keeps its test names out of this set, so that they
    stay in the pool; the choice is logged (on ``log``, default the ``mer.pseudo`` logger). The validation
    names stay forbidden whatever the data set, and so do those of ``select_info`` (a fold list's epoch-selection
    rows: a pseudo label there would choose the epoch with the teacher's answer)."""
    out = set(split_doc["valid_info"]["names"]) | set(split_doc.get(SELECT_INFO, {}).get("names", []))
    test_csv = ds_cfg.get("test_csv")
    if test_csv and os.path.isfile(test_csv):
        test = set(read_names_csv(test_csv))
        if ds_cfg.get("transductive"):
            name = next((k for k, v in config.DATASETS.items() if v is ds_cfg), None)
            where = f"DATASETS['{name}']['transductive']" if name else "the data set's 'transductive' key"
            if log is None:
                log = logging.getLogger("mer.pseudo")
                log = log if log.handlers else get_logger("mer.pseudo")
            log.info(
                f"transductive: the {len(test)} test candidates of '{test_csv}' stay in the unlabelled pool and may "
                f"get pseudo labels (allowed for data set {name or '?'}: {where})")
        else:
            out |= test
    return out


def write_pseudo_split(path, split_doc, frame, forbidden=(), meta=None):
    """The labelled split plus the pseudo-labelled rows of ``frame`` (``name, emo, source, confidence,
    weight``) as one split list; raises if a pseudo name is in ``forbidden`` or already labelled."""
    names = frame["name"].tolist()
    leak = sorted(set(names) & set(forbidden))
    if leak:
        raise DataError(f"pseudo labels for {len(leak)} validation/test names ({', '.join(leak[:5])}): the "
                        "unlabelled pool must not hold them; remove them from the pool")
    train = split_doc["train_info"]
    dup = sorted(set(names) & set(train["names"]))
    if dup:
        raise DataError(f"pseudo labels for {len(dup)} names that are already labelled ({', '.join(dup[:5])})")
    n = len(train["names"])
    info = {"names": list(train["names"]) + names, "emos": list(train["emos"]) + frame["emo"].tolist(),
            "vals": list(train["vals"]) + [0.0] * len(names),
            "weights": list(train.get("weights", [1.0] * n)) + frame["weight"].astype(float).tolist(),
            "sources": list(train.get("sources", ["labelled"] * n)) + frame["source"].tolist(),
            "confidences": list(train.get("confidences", [1.0] * n)) + frame["confidence"].astype(float).tolist()}
    for key, fill in (("dialogues", ""), ("orders", None)):  # context lists: pseudo rows take theirs from the tables
        if key in train:
            info[key] = list(train[key]) + [fill] * len(names)
    extra = {"pseudo": meta or {}}
    if SELECT_INFO in split_doc:  # a fold list keeps choosing its epoch on its own selection rows
        extra[SELECT_INFO] = split_doc[SELECT_INFO]
    write_split_json(path, info, split_doc["valid_info"], extra=extra)
    return path


# identity keys of a stage taken from files its driver writes later (its pseudo-label list; stage 1's weights with
# --stage2_init stage1): compared when those are written (_write_checked_list); the other settings before anything
LATER_INPUTS = ("split_sha1", "model_pretrain_sha1")
REFUSED_FIX = ("it is neither resumed nor replaced, and nothing was written: give another --out, or delete that "
               "folder to train it again")


def pseudo_meta(strategy, params, teachers, seed, weight=1.0, weight_by_confidence=False, **extra):
    """What a pseudo-label list records of the settings that made it (its ``pseudo`` key); the weights only when
    not at their defaults (1, off), so that the lists written before they were recorded keep their content."""
    meta = {"strategy": strategy, **extra, "params": params, "teachers": list(teachers), "seed": seed}
    if weight != 1.0:
        meta["weight"] = weight
    if weight_by_confidence:
        meta["weight_by_confidence"] = True
    return json.loads(json.dumps(meta, default=str))


def _meta_settings(meta):
    """A list's ``pseudo`` record as flat settings to compare (parameters by name, weights with their defaults)."""
    meta = dict(meta or {})
    params = meta.pop("params", None) or {}
    out = {"weight": 1.0, "weight_by_confidence": False, **meta}
    out.update({k: v for k, v in params.items()})
    return out


def check_stage(train_args, split, out_dir, run_name, seed, device="auto", later=False, init=False, meta=None):
    """Check one stage's run folder before a driver writes anything; returns its state (train.py's
    ``check_run_folder``: new, done, resume, restart; "checked" for a ``later`` one). Refused (:class:`DataError`), naming what differs: bad
    training settings, and a folder holding a run of other settings. ``later``: the stage trains on a list the
    driver writes later (``split`` then only stands in for it): its content is compared when it is written, and
    here the other settings, whether it starts from stage 1's weights (``init``), and the pseudo-label settings
    ``meta`` against those recorded in the list that run trained on."""
    from engine.config import check_run_folder, read_run_config
    from models import model_class

    cfg = train_config(train_args, split, out_dir, run_name, seed, None, device).resolved()
    try:
        model_class(cfg.model)
    except KeyError as e:
        raise DataError(e.args[0]) from None
    run_dir = cfg.run_dir()
    old = read_run_config(run_dir)
    if not later or not old or not old.get("config_hash"):  # nothing to compare piecewise: train.py's own check
        return check_run_folder(run_dir, cfg)
    there = {k: v for k, v in (old.get("identity") or {}).items() if k not in LATER_INPUTS}
    now = {k: v for k, v in cfg.identity().items() if k not in LATER_INPUTS}
    # whether the run starts from given weights: stage 1's (``init``), or a --model_pretrain of ``train_args`` (then
    # every stage has one; the files themselves are compared when the list is written)
    there["from stage 1's weights"] = (old.get("identity") or {}).get("model_pretrain_sha1") is not None
    now["from stage 1's weights"] = bool(init) or cfg.model_pretrain is not None
    diff = _diff(there, now)
    if not diff and meta is not None:
        made = _list_meta(old.get("split"))
        if made is not None:  # the settings this driver records (an ACL list's iteration number is not one)
            now = _meta_settings(meta)
            diff = _diff({k: v for k, v in _meta_settings(made).items() if k in now}, now)
    if diff:
        raise DataError(f"stage folder '{run_dir}' holds a run of other settings ({diff}); {REFUSED_FIX}")
    return "checked"


def _list_meta(path):
    """The ``pseudo`` record of the pseudo-label list at ``path`` (None when it cannot be read)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, TypeError, ValueError):
        return None
    return doc.get("pseudo") if isinstance(doc, dict) else None


def _diff(there, now):
    keys = sorted(set(there) | set(now), key=str)
    return "; ".join(f"{k}: {_show(there.get(k))} there, {_show(now.get(k))} now" for k in keys
                     if there.get(k) != now.get(k))


def _show(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def check_two_stage(dataset, seed, split, train_args, strategy, strategy_kw, teachers=(), out_dir=None,
                    stage2_init="scratch", weight=1.0, weight_by_confidence=False, device="auto", tag=None):
    """Every setting of a :func:`two_stage` run checked before it writes anything: the strategy and its teachers,
    stage 1's folder, and stage 2's (its training settings and the pseudo-label settings its list recorded).
    Returns stage 1's folder state."""
    if strategy not in pseudo.STRATEGIES:
        raise DataError(f"unknown --strategy '{strategy}': use {', '.join(pseudo.STRATEGIES)}")
    if strategy in ("teacher", "consensus", "acl") and not teachers:
        raise DataError(f"strategy '{strategy}' needs at least one teacher file (--teachers)")
    state = check_stage(train_args, split, out_dir, "stage1", seed, device)
    if strategy != "none":
        check_stage(train_args, split, out_dir, f"stage2_{tag or strategy}", seed, device, later=True,
                    init=stage2_init == "stage1",
                    meta=pseudo_meta(strategy, strategy_kw, teachers, seed, weight, weight_by_confidence))
    return state


def check_acl(dataset, seed, split, train_args, teachers, out_dir, acl_kw=None, device="auto"):
    """Every setting of an :func:`acl_loop` run checked before it writes anything: its teachers, the stage-1 and
    ``acl_iter<t>`` folders already there, and the parameters recorded in ``acl_state.json``."""
    if not teachers:
        raise DataError("the ACL loop needs at least one teacher file (--teachers)")
    kw = json.loads(json.dumps({**pseudo.ACL_DEFAULTS, **(acl_kw or {})}))
    state_path = os.path.join(out_dir, "acl_state.json")
    if os.path.isfile(state_path):
        try:
            with open(state_path) as f:
                made = json.load(f)
        except ValueError as e:
            raise DataError(f"'{state_path}' is not valid JSON ({e}); delete the folder '{out_dir}' to start the "
                            "loop again") from None
        diff = _diff(_meta_settings({"params": made.get("params")}), _meta_settings({"params": kw}))
        if diff:
            raise DataError(f"'{state_path}' holds an ACL loop of other settings ({diff}); it is not resumed, and "
                            f"nothing was written: give another --out, or delete '{out_dir}' to start the loop again")
    check_stage(train_args, split, out_dir, "stage1", seed, device)
    model_dir = os.path.dirname(train_config(train_args, split, out_dir, "stage1", seed, None, device).run_dir())
    done = sorted(n for n in (os.listdir(model_dir) if os.path.isdir(model_dir) else [])
                  if re.fullmatch(r"acl_iter\d+", n))
    for run_name in done:
        check_stage(train_args, split, out_dir, run_name, seed, device, later=True,
                    meta={"strategy": "acl", "params": kw, "teachers": list(teachers)})


def train_config(train_args, split, save_root, run_name, seed, model_pretrain=None, device="auto"):
    """The settings of one driver run: ``train_args`` (train.py flags) with its split list, folder and seed;
    resumed (a finished run of the same settings is skipped; one of other settings in its folder is refused,
    never reported) and tested."""
    from engine.config import TrainConfig

    cfg = TrainConfig.from_argv(list(train_args)).replace(
        split=split, save_root=save_root, run_name=run_name, seed=seed, device=device, resume=True, quiet=True,
        test=True)
    if model_pretrain:
        cfg = cfg.replace(model_pretrain=model_pretrain)
    return cfg


def train_run(train_args, split, save_root, run_name, seed, model_pretrain=None, device="auto"):
    """One train.py run in this process (see :func:`train_config`); returns its summary dict."""
    from engine.trainer import train

    return train(train_config(train_args, split, save_root, run_name, seed, model_pretrain, device))


def run_drivers(drivers, grid=None):
    """Run driver generators (:func:`two_stage_steps`, :func:`acl_steps`); returns each one's result. In this
    process (``grid`` None or of one job): one driver after another, each run by :func:`train_run`, as before.
    Otherwise through ``engine.grid.drive``: every driver's runs go to ``grid`` as they are asked for."""
    if grid is None or grid.in_process:
        out = []
        for gen in drivers:
            try:
                request = next(gen)
                while True:
                    request = gen.send(train_run(*request))
            except StopIteration as stop:
                out.append(stop.value)
        return out
    return drive([_grid_requests(gen) for gen in drivers], grid)


def _grid_requests(gen):
    """A driver's requests (:func:`train_run` arguments) as ``engine.grid.drive`` takes them: (name, config)."""
    send, throw = None, None
    while True:
        try:
            request = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        send, throw = None, None
        try:
            send = yield None, train_config(*request)
        except RunFailed as e:
            throw = e


def student_probs(run_dirs, names, device="auto"):
    """Each run's class probabilities ``(N, C)`` on ``names`` (its best checkpoint)."""
    from engine.trainer import evaluate_run
    out = []
    for run_dir in run_dirs:
        df = evaluate_run(run_dir, list(names), device=device, log=get_logger("mer.semi.predict"))["predictions"]
        out.append(df[[c for c in df.columns if c.startswith("prob_")]].to_numpy(dtype=np.float64))
    return out


def cached_student_probs(run_dir, names, cache_path, device="auto"):
    """:func:`student_probs` of one run, kept in ``cache_path`` (npz with the names) so that strategies
    sharing a stage-1 run on one pool predict it once; recomputed when the run's checkpoint is newer."""
    ckpt = os.path.join(run_dir, "best.pth")
    if os.path.isfile(cache_path) and os.path.getmtime(cache_path) >= os.path.getmtime(ckpt):
        z = np.load(cache_path, allow_pickle=False)
        if z["names"].tolist() == list(names):
            return z["probs"]
    probs = student_probs([run_dir], names, device)[0]
    tmp = cache_path + ".tmp.npz"
    np.savez(tmp, names=np.array(list(names)), probs=probs)
    os.replace(tmp, cache_path)
    return probs


def _result(summary):
    return {k: summary.get(k) for k in ("valid_f1", "valid_acc", "test_f1", "test_acc", "best_epoch", "run_dir")}


def _select(strategy, kw, probs, t_lab, t_conf, pool, class_names, truth, weight, weight_by_conf):
    """The chosen samples (``name, emo, source, confidence, weight``), their precision report, counts per class
    and precision where the truth is known; nothing written."""
    sel = pseudo.select(strategy, probs, t_lab, t_conf, **kw)
    frame = pseudo.selection_frame(sel, pool, class_names, weight=weight, weight_by_confidence=weight_by_conf)
    report = pseudo.precision_report(frame, truth, class_names)
    counts = {c: int((frame["emo"] == c).sum()) for c in class_names}
    allrow = report[report["group"] == "all"].iloc[0]
    prec = None if np.isnan(allrow["precision"]) else float(allrow["precision"])
    return frame, report, counts, prec


def _write_selection(out_dir, tag, frame, report, counts, prec, log):
    frame.to_csv(os.path.join(out_dir, f"pseudo_{tag}.csv"), index=False)
    report.to_csv(os.path.join(out_dir, f"pseudo_{tag}_report.csv"), index=False)
    allrow = report[report["group"] == "all"].iloc[0]
    log.info(f"{tag}: {len(frame)} pseudo labels {counts}"
             + (f"; precision {prec:.4f} on {int(allrow['scored'])} with known truth" if prec is not None else ""))


def _write_checked_list(path, split_doc, frame, forbidden, meta, stage):
    """Write the pseudo-label list ``path`` only when the run folder that trains on it accepts it: ``stage`` is
    that run's :func:`train_config` arguments (without the split list). The list is written beside ``path`` first
    and checked as that run's split list (train.py's ``check_run_folder``); refused, it is removed and ``path``
    is left as it was."""
    from engine.config import check_run_folder

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.new{os.getpid()}")
    try:
        write_pseudo_split(tmp, split_doc, frame, forbidden, meta)
        train_args, out_dir, run_name, seed, init, device = stage
        cfg = train_config(train_args, tmp, out_dir, run_name, seed, init, device).resolved()
        check_run_folder(cfg.run_dir(), cfg)
        os.replace(tmp, path)
    except DataError as e:
        raise DataError(f"{e} (its pseudo-label list '{path}' was not rewritten)") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def two_stage(dataset, seed, split, train_args, strategy, strategy_kw, teachers=(), pool=None, truth_csv=None,
              out_dir=None, stage2_init="scratch", weight=1.0, weight_by_confidence=False, device="auto", log=None,
              tag=None, grid=None):
    """Stage 1 on ``split``; pseudo labels on ``pool`` by ``strategy``; stage 2 on labelled + pseudo.
    Returns a dict with stage-1 and stage-2 metrics and the pseudo-label counts and precision. ``tag`` names
    the stage-2 files (default: the strategy), so variants of one strategy can share a folder. ``grid``: where
    the runs train (``engine.grid.Grid``; default: in this process)."""
    return run_drivers([two_stage_steps(dataset, seed, split, train_args, strategy, strategy_kw, teachers, pool,
                                        truth_csv, out_dir, stage2_init, weight, weight_by_confidence, device, log,
                                        tag)], grid)[0]


def two_stage_steps(dataset, seed, split, train_args, strategy, strategy_kw, teachers=(), pool=None, truth_csv=None,
                    out_dir=None, stage2_init="scratch", weight=1.0, weight_by_confidence=False, device="auto",
                    log=None, tag=None):
    """:func:`two_stage` as a generator (:func:`run_drivers`): yields each run it needs as the arguments of
    :func:`train_run` and receives its summary; returns the result dict. Everything is checked (settings of both
    stages, split list, pool, teachers) before anything is written."""
    tag = tag or strategy
    class_names = config.EMO_RULE[emo_rule_of(dataset)]
    check_two_stage(dataset, seed, split, train_args, strategy, strategy_kw, teachers, out_dir, stage2_init, weight,
                    weight_by_confidence, device, tag)
    split_doc, forbidden, pool, truth, t_lab, t_conf, notes = read_inputs(
        dataset, split, pool, truth_csv, teachers if strategy != "none" else ())
    # everything is checked: from here on the folder is written
    os.makedirs(out_dir, exist_ok=True)
    log = log or get_logger("mer.semi", os.path.join(out_dir, "semi.log"), append=True)
    for line in notes:
        log.info(line)
    t0 = time.time()
    s1 = yield (train_args, split, out_dir, "stage1", seed, None, device)
    log.info(f"stage 1: valid F1 {s1['valid_f1']:.4f}" + (f", test F1 {s1['test_f1']:.4f}" if 'test_f1' in s1 else ""))
    result = {"strategy": strategy, "stage1": _result(s1)}
    if strategy == "none":
        result.update(stage2=_result(s1), n_pseudo=0, precision=None, counts={})
        return result
    probs = (cached_student_probs(s1["run_dir"], pool, os.path.join(out_dir, "pool_probs_stage1.npz"), device)
             if strategy != "teacher" else None)
    frame, report, counts, prec = _select(strategy, strategy_kw, probs, t_lab, t_conf, pool, class_names, truth,
                                          weight, weight_by_confidence)
    pseudo_path = os.path.join(out_dir, f"pseudo_{tag}.json")
    init = os.path.join(s1["run_dir"], "best.pth") if stage2_init == "stage1" else None
    _write_checked_list(pseudo_path, split_doc, frame, forbidden,
                        pseudo_meta(strategy, strategy_kw, teachers, seed, weight, weight_by_confidence),
                        (train_args, out_dir, f"stage2_{tag}", seed, init, device))
    _write_selection(out_dir, tag, frame, report, counts, prec, log)
    s2 = yield (train_args, pseudo_path, out_dir, f"stage2_{tag}", seed, init, device)
    log.info(f"stage 2 ({tag}, {len(frame)} pseudo labels): valid F1 {s2['valid_f1']:.4f}"
             + (f", test F1 {s2['test_f1']:.4f}" if 'test_f1' in s2 else "") + f"; {time.time() - t0:.1f}s")
    result.update(stage2=_result(s2), n_pseudo=len(frame), precision=prec, counts=counts, pseudo_split=pseudo_path)
    return result


def read_inputs(dataset, split, pool=None, truth_csv=None, teachers=()):
    """A driver's inputs, read and checked before it writes anything: the split list, the names that must never
    get a pseudo label, the unlabelled pool (the data set's when None), its truth (``name -> label``), the
    teachers' labels and confidences on the pool (None without teachers), and the lines that say what was read
    (for the driver's log)."""
    ds_cfg = config.DATASETS.get(dataset, {})
    emo_rule = emo_rule_of(dataset)
    split_doc = read_split_json(split, config.EMO_RULE[emo_rule])
    forbidden = forbidden_names(split_doc, ds_cfg)
    pool, notes = _pool(pool, ds_cfg, split_doc, forbidden)
    truth = read_truth(truth_csv, emo_rule)
    t_lab, t_conf, _ = teacher_matrix(list(teachers), pool, emo_rule, notes) if teachers else (None, None, None)
    return split_doc, forbidden, pool, truth, t_lab, t_conf, notes


def check_pool_dialogues(dataset, train_args, pool, pool_csv=None):
    """A context student (``--context K`` in ``train_args``) predicts the pool by dialogues: refuse, before stage 1
    trains or anything is written, a pool whose names the tables do not know, all dialogues of one (an unlabelled
    list of names alone, e.g. from an older import); see :func:`dataloader.dialogue.check_list_dialogues`."""
    from engine.config import TrainConfig
    from dataloader.dialogue import DialogueIndex, check_list_dialogues

    cfg = TrainConfig.from_argv(list(train_args))
    if int(cfg.model_args.get("context") or 0) <= 0:
        return
    extra = list(cfg.dialogue_csv) + ([pool_csv] if pool_csv and os.path.isfile(pool_csv) else [])
    index = DialogueIndex.for_dataset(config.DATASETS.get(dataset, {}), extra)
    check_list_dialogues(index, list(pool), f"the unlabelled pool{f' {pool_csv!r}' if pool_csv else ''}")


def _pool(pool, ds_cfg, split_doc, forbidden):
    """The unlabelled pool without labelled, validation and test names, and the lines that say so (for the
    driver's log, written once everything is checked)."""
    if pool is None:
        csv = ds_cfg.get("unlabeled_csv")
        if not csv:
            raise DataError("no unlabelled pool: the data set has no unlabeled_csv; give --unlabeled")
        pool = read_names_csv(csv)
    labelled = set(split_doc["train_info"]["names"])
    kept = [n for n in pool if n not in forbidden and n not in labelled]
    notes = [f"unlabelled pool: {len(pool) - len(kept)} names dropped (labelled, validation or test)"] \
        if len(kept) < len(pool) else []
    return kept, notes + [f"unlabelled pool: {len(kept)} samples"]


def acl_loop(dataset, seed, split, train_args, teachers, pool=None, truth_csv=None, out_dir=None, max_iter=5,
             acl_kw=None, device="auto", log=None, grid=None):
    """ACL-MER: train from scratch, label with refined student+teacher scores, move the chosen samples into
    the labelled pool, repeat for ``max_iter`` labelling rounds or until nothing new is chosen; the last
    model (trained on the final pool) is the result. State in ``<out_dir>/acl_state.json``. The rounds are
    sequential (each trains on the labels of the round before); ``grid``: where they train (default: here)."""
    return run_drivers([acl_steps(dataset, seed, split, train_args, teachers, pool, truth_csv, out_dir, max_iter,
                                  acl_kw, device, log)], grid)[0]


def acl_steps(dataset, seed, split, train_args, teachers, pool=None, truth_csv=None, out_dir=None, max_iter=5,
              acl_kw=None, device="auto", log=None):
    """:func:`acl_loop` as a generator (see :func:`two_stage_steps`). Everything is checked (the settings of the
    folders already there, ``acl_state.json``'s parameters, split list, pool, teachers) before anything is
    written."""
    class_names = config.EMO_RULE[emo_rule_of(dataset)]
    kw = {**pseudo.ACL_DEFAULTS, **(acl_kw or {})}
    check_acl(dataset, seed, split, train_args, teachers, out_dir, kw, device)
    base_doc, forbidden, pool, truth, t_lab_all, t_conf_all, notes = read_inputs(dataset, split, pool, truth_csv,
                                                                                  teachers)
    # everything is checked: from here on the folder is written
    os.makedirs(out_dir, exist_ok=True)
    log = log or get_logger("mer.semi", os.path.join(out_dir, "semi.log"), append=True)
    for line in notes:
        log.info(line)
    state_path = os.path.join(out_dir, "acl_state.json")
    state = {"taken": [], "history": [], "done": False, "params": kw, "max_iter": max_iter}
    if os.path.isfile(state_path):
        with open(state_path) as f:
            state = json.load(f)
        log.info(f"ACL: resuming after {len(state['history'])} finished iterations ({len(state['taken'])} taken)")
    taken = pd.DataFrame(state["taken"], columns=["name", "emo", "source", "confidence", "weight"])
    t = final_iteration(state)
    while True:
        cur_split = split if t == 0 else os.path.join(out_dir, f"acl_iter{t}.json")
        # iteration 0 is the labelled-only model: the same run as two_stage's stage 1, shared with it
        summary = yield (train_args, cur_split, out_dir, "stage1" if t == 0 else f"acl_iter{t}", seed, None, device)
        if state["done"] or t >= max_iter:
            break
        taken_names = set(taken["name"])
        remaining = [i for i, n in enumerate(pool) if n not in taken_names]
        if not remaining:
            log.info("ACL: the unlabelled pool is used up")
            state["done"], state["final_iteration"] = True, t
            _save_state(state_path, state)
            break
        rem_names = [pool[i] for i in remaining]
        probs = (cached_student_probs(summary["run_dir"], rem_names, os.path.join(out_dir, "pool_probs_stage1.npz"),
                                      device) if t == 0 else student_probs([summary["run_dir"]], rem_names, device)[0])
        sel_kw = {k: kw[k] for k in ("p_init", "gamma", "p_min", "theta", "top_k", "c_t")}
        frame, report, counts, prec = _select("acl", {**sel_kw, "t": t}, probs, t_lab_all[:, remaining],
                                              t_conf_all[:, remaining], rem_names, class_names, truth, 1.0, False)
        if len(frame):  # the next round's list, accepted by its run folder before this round's files are written
            taken = pd.concat([taken, frame.assign(source=f"acl_iter{t}")], ignore_index=True)
            _write_checked_list(os.path.join(out_dir, f"acl_iter{t + 1}.json"), base_doc, taken, forbidden,
                                {"strategy": "acl", "iteration": t + 1, "params": kw, "teachers": list(teachers)},
                                (train_args, out_dir, f"acl_iter{t + 1}", seed, None, device))
        _write_selection(out_dir, f"acl_iter{t}", frame, report, counts, prec, log)
        state["history"].append({"iteration": t, "p_t": pseudo.acl_p_t(t, kw["p_init"], kw["gamma"], kw["p_min"]),
                                 "taken": len(frame), "counts": counts, "precision": prec,
                                 "valid_f1": summary["valid_f1"], "test_f1": summary.get("test_f1"),
                                 "pool_left": len(rem_names) - len(frame)})
        log.info(f"ACL iteration {t}: valid F1 {summary['valid_f1']:.4f}; took {len(frame)}")
        if len(frame) == 0:  # the model just trained, on acl_iter{t} (or the labelled list), is the result
            state["done"], state["final_iteration"] = True, t
            _save_state(state_path, state)
            break
        state["taken"] = taken.to_dict("records")
        _save_state(state_path, state)
        t += 1
    all_prec = pseudo.precision_report(taken, truth, class_names) if len(taken) else None
    prec = None
    if all_prec is not None:
        p = all_prec[all_prec["group"] == "all"]["precision"].iloc[0]
        prec = None if np.isnan(p) else float(p)
    return {"strategy": "acl", "stage1": state["history"][0] if state["history"] else None,
            "stage2": _result(summary), "n_pseudo": len(taken), "precision": prec,
            "counts": {c: int((taken["emo"] == c).sum()) for c in class_names}, "history": state["history"]}


def final_iteration(state):
    """The iteration a (re)started loop trains or reads next: after a finished loop, the one whose model is the
    result (a round that took no sample wrote no ``acl_iter<t+1>.json``: its own model is the last); else the
    first that has not been trained."""
    t = len(state["history"])
    if state.get("done"):
        if "final_iteration" in state:
            return int(state["final_iteration"])
        if state["history"] and state["history"][-1]["taken"] == 0:  # a state file of an earlier version
            return t - 1
    return t


def _save_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)
