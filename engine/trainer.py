"""Training and prediction behind train.py and test.py.

A run folder holds everything needed to inspect or rebuild a run:

* ``args.yaml``: the resolved config (engine/config.py: defaults, model-tune.yaml, ``--config``, flags), its
  hash and identity; ``train.py --config <run>/args.yaml`` replays the run
* ``metrics.csv``: one row per epoch (train loss, valid loss, accuracy, weighted F1, seconds, samples/s)
* ``best.pth``: the state dict of the best epoch (by validation weighted F1) and the config that rebuilds it
* ``last.pth``: model, optimiser and RNG state after the last finished epoch, while the run is unfinished
  (``--resume`` continues from it; it is removed when the run completes)
* ``valid_pred.csv``: validation predictions of the best epoch (name, label, pred, prob_<class>..., ``chose_epoch``:
  1 where the row was among those that chose that epoch)
* epoch selection: the best epoch is chosen on ``valid_info``, or, where the split list has one, on its
  ``select_info`` (the inner hold-out of fold lists, dataloader/splits.py): then ``metrics.csv`` has ``select_*``
  columns beside the ``valid_*`` ones, ``valid_info`` is only predicted, never looked at to choose, and
  ``summary.json`` says which list chose (``epoch_selection``)
* ``loss.png``, ``metrics.png`` (not with ``--no_plots``), ``train.log``; with ``--test``: ``test_pred.csv``,
  ``test_metrics.json``
* ``summary.json``: the best epoch's validation metrics (and the test's), ``epochs_run`` and ``stopped_early``
  (``--patience N``: training stops once N epochs in a row bring no better best epoch)
* with ``--tracker tensorboard``: ``tb/``, the event files (engine/tracking.py; ``--tracker mlflow`` records the
  run outside the folder)

With ``--context K`` (K > 0) the model reads whole dialogues (models/context.py): every list is cut into its
dialogues with the data set's ``DialogueIndex`` (dataloader/dialogue.py), training batches hold whole
dialogues in a seeded random order, and predictions still come back one row per name, in the list's order.
"""

import json
import logging
import os
import resource
import shutil
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

import config
from dataloader import DialogueIndex, MissingFeature, SampleSet, load_features
from dataloader.dialogue import check_list_dialogues, describe_groups
from common.locks import FileLock
from engine.config import check_run_folder, clear_results, versions
from engine.results import RUN_LOCK, check_finished, load_checkpoint, new_checkpoint_id
from models import create_model, model_class
from dataloader.files import SELECT_INFO, DataError, label_indices, read_names_csv, read_split_json
from common.metrics import emotion_metrics, format_confusion, full_report
from engine.plots import plot_confusion, plot_curves
from engine.tracking import make_tracker
from common.utils import (atomic_path, count_parameters, get_logger, process_device, resolve_device, set_seed,
                          set_threads)

def dialogue_args(batch):
    """The keyword arguments a context model takes from a batch of whole dialogues (none otherwise)."""
    if batch.get("dialog_index") is None:
        return {}
    return {"dialog_index": batch["dialog_index"], "dialog_mask": batch["dialog_mask"]}


def attach_dialogues(samples, index, log=None, what="list"):
    """Cut ``samples`` into the dialogues of ``index`` (for a model that reads context)."""
    groups = index.groups(samples.names)
    samples.set_dialogues(groups)
    if log is not None:
        log.info(f"context: {what}: {describe_groups(groups)}")


EVAL_BATCH = 4096  # smallest batch of an evaluation pass: no gradients to keep, so few large batches are cheapest


def eval_batch_size(batch_size):
    """The batch size of evaluation passes for a run trained with ``batch_size``: at least ``EVAL_BATCH``."""
    return max(int(batch_size), EVAL_BATCH)


@torch.no_grad()
def predict(model, samples, batch_size=512, drop=None, return_heads=False):
    """Class probabilities ``(N, C)``, expert weights ``(N, E)`` where the model gives them, and the mean
    cross-entropy of the predictions (comparable across models; auxiliary loss terms left out), rows in the
    order of ``samples.names`` (also when batches hold whole dialogues).
    ``drop``: indices of experts to leave out (a missing modality). ``return_heads``: also return each
    expert head's class probabilities ``(N, H, C)`` (models with heads, e.g. moe; else None).

    Everything stays on the device until the list is done, then comes back in one copy per output (no read-back
    per batch). Predictions are made in float32 whatever ``--amp`` trained the model, so that test.py gives
    back the numbers a run wrote."""
    model.eval()
    probs, weights, heads, idx = [], [], [], []
    loss_sum, counted = None, 0
    for batch in samples.iter_batches(batch_size):
        out = model(batch["feats"], batch["masks"], drop=drop, **dialogue_args(batch))
        idx.append(batch["idx"])
        logits = out["logits"].float()
        probs.append(logits.softmax(-1))
        if out.get("expert_weights") is not None:
            weights.append(out["expert_weights"].float())
        if return_heads and out.get("expert_logits") is not None:
            heads.append(out["expert_logits"].float().softmax(-1))
        if batch["labels"] is not None:
            part = F.cross_entropy(logits, batch["labels"]).double() * len(batch["idx"])
            loss_sum = part if loss_sum is None else loss_sum + part
            counted += len(batch["idx"])
    order = np.argsort(np.concatenate(idx), kind="stable")  # batch order -> list order

    def _rows(parts):
        return torch.cat(parts).cpu().numpy()[order] if parts else None

    probs, weights = _rows(probs), _rows(weights)
    loss = float(loss_sum) / counted if counted else float("nan")
    if return_heads:
        return probs, weights, loss, _rows(heads)
    return probs, weights, loss


def prediction_frame(names, probs, class_names, labels=None, expert_weights=None, feat_names=None, checkpoint=None,
                     selected_on=None):
    """The prediction-CSV table: name[, label], pred, prob_<class>..., weight_<expert>..., ``checkpoint``, the
    id of the checkpoint that predicted (engine/results.py), and, where ``selected_on`` (the names that chose
    the checkpoint's epoch) is known, ``chose_epoch``: 1 on a row among them, whose prediction is then no
    held-out figure (ensembling/oof.py reads it)."""
    df = pd.DataFrame({"name": names})
    if labels is not None:
        df["label"] = [class_names[i] for i in labels]
    df["pred"] = [class_names[i] for i in probs.argmax(1)]
    for j, c in enumerate(class_names):
        df[f"prob_{c}"] = probs[:, j]
    if expert_weights is not None and feat_names is not None:
        heads = list(feat_names) + (["cross-modal"] if expert_weights.shape[1] == len(feat_names) + 1 else [])
        if expert_weights.shape[1] == len(heads):
            for j, f in enumerate(heads):
                df[f"weight_{f}"] = expert_weights[:, j]
    if checkpoint is not None:
        df["checkpoint"] = checkpoint
    if selected_on is not None:
        chose = set(selected_on)
        df["chose_epoch"] = [int(n in chose) for n in df["name"]]
    return df


def write_csv(df, path):
    """A result table, written atomically (common.utils.atomic_path)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")


def write_json(doc, path):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(doc, f, indent=1)


def save_checkpoint(path, model, meta):
    tmp = path + ".tmp"
    torch.save({"state_dict": model.state_dict(), "model": model.model_name, "model_config": model.config,
                **meta}, tmp)
    os.replace(tmp, path)


def load_run(run_dir, device="cpu"):
    """Rebuild the best model of a run folder; returns ``(model, checkpoint dict)``."""
    path = os.path.join(run_dir, "best.pth")
    if not os.path.isfile(path):
        raise DataError(f"run folder '{run_dir}' has no best.pth; is it a finished train.py run?")
    ckpt = load_checkpoint(path)
    cfg = dict(ckpt["model_config"])
    model = create_model(ckpt["model"], **cfg)  # a context run's config holds its context keys
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def _peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(cfg):
    """Train one run as described by ``cfg`` (an ``engine.config.TrainConfig``); returns its summary dict.

    Its steps: resolve and check the config, lock the run folder (a second process on the same folder is refused)
    and decide about it (a folder of other settings is refused), read the split list and the features, build the
    model (and read the resume state): bad input stops here, before the folder is written. Only then are earlier
    results cleared, the config written and the epochs run; the best epoch is kept, summarised and tested."""
    cfg = cfg.resolved()
    class_names = config.EMO_RULE[cfg.emo_rule]
    model_class(cfg.model)  # an unknown model stops here, before a run folder is made for it
    device = process_device(cfg.device, cfg.gpu)  # under torchrun GPU LOCAL_RANK, before any other CUDA call
    set_threads(cfg.threads)
    set_tf32(device, cfg.tf32)
    run_dir = cfg.run_dir()
    existed = os.path.isdir(run_dir)
    lock = FileLock(os.path.join(run_dir, RUN_LOCK), what=f"run folder '{run_dir}'",
                    hint="wait for that run to end, or give another --run_name").acquire()
    try:
        return _train_locked(cfg, class_names, device, run_dir)
    finally:
        empty = set(os.listdir(run_dir)) <= {RUN_LOCK} if os.path.isdir(run_dir) else False
        lock.release(remove=empty)
        if empty and not existed:  # refused before writing: leave no empty run folder behind
            try:
                os.rmdir(run_dir)
            except OSError:
                pass


def _train_locked(cfg, class_names, device, run_dir):
    state = check_run_folder(run_dir, cfg)
    log = get_logger("mer.train")
    if state == "done":
        return finished_run(cfg, run_dir, device, log)
    tracker = make_tracker(cfg.tracker)  # a missing package stops here
    early = _Held()  # what is logged before the run folder may be touched, for its train.log
    log.addHandler(early)
    changed = cfg.changed_inputs_line()  # a replay allowed to train on inputs changed since its run
    if changed:
        log.warning(changed)
    data = load_data(cfg, class_names, device, log)
    model, optimizer, precision = build_model(cfg, data, device, log)
    history, best, start_epoch = resume_state(run_dir, model, optimizer, device, log, precision) \
        if state == "resume" else ([], None, 0)
    # everything is checked: from here on the run folder is written
    if state != "resume":
        clear_results(run_dir)  # nothing of an earlier run may be read as this one's
    log = get_logger("mer.train", os.path.join(run_dir, "train.log"), append=state == "resume")
    early.replay(log)
    log.info(f"run folder {run_dir} ({state}); device {device}"
             + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else "")
             + f"; config {cfg.config_hash()[:12]}")
    log.info(f"split {data.split_path}: {len(data.train)} train, {len(data.valid)} valid"
             + (f", {len(data.select)} select (they choose the best epoch; valid is only predicted)"
                if data.select is not None else "") + f"; features {cfg.feat} dims {data.train.feat_dims}")
    write_config(run_dir, cfg)
    meta = {"feat": cfg.feat, "emo_rule": cfg.emo_rule, "class_names": class_names, "seed": cfg.seed,
            "dataset": cfg.dataset, "dialogue_csv": list(cfg.dialogue_csv), "config": cfg.to_dict(),
            "config_hash": cfg.config_hash(), "versions": versions(),
            "selected_on": {"list": data.selection_list, "names": list(data.chooser.names)}}
    try:
        tracker.start(cfg, run_dir, history)
        best = fit(cfg, model, optimizer, data, run_dir, history, best, start_epoch, meta, device, log, precision,
                   tracker)
        summary = finish(cfg, run_dir, model, history, best, device, log, tracker)
    except BaseException:
        try:
            tracker.close()  # marked failed where the tracker has such a mark
        except Exception as e:  # the error of the run is the one to report
            log.warning(f"--tracker {cfg.tracker}: closing it failed too ({type(e).__name__}: {e})")
        raise
    tracker.close()
    return summary


class _Held(logging.Handler):
    """Holds log records until the run's train.log exists, then writes them there."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def replay(self, log):
        for handler in log.handlers:
            if isinstance(handler, logging.FileHandler):
                for record in self.records:
                    handler.handle(record)


class RunData:
    """The split list of a run and its training and validation sample sets (with their dialogues); ``select``:
    the sample set of the list's ``select_info`` (None without), which then chooses the best epoch."""

    def __init__(self, split_path, split, train, valid, select=None):
        self.split_path, self.split, self.train, self.valid, self.select = split_path, split, train, valid, select

    @property
    def chooser(self):
        """The sample set the best epoch is chosen on."""
        return self.valid if self.select is None else self.select

    @property
    def selection_list(self):
        """The split list's part that chooses the best epoch."""
        return "valid_info" if self.select is None else SELECT_INFO


def load_data(cfg, class_names, device, log):
    """Read and check the split list and the features; cut the lists into dialogues for a context model."""
    split_path = cfg.split_path()
    split = read_split_json(split_path, class_names)
    cidx = {c: i for i, c in enumerate(class_names)}
    train_info, valid_info = split["train_info"], split["valid_info"]
    check_no_test_names(cfg, split, split_path)
    stores = load_features(cfg.feat, num_workers=cfg.num_workers, logger=log, progress=not cfg.quiet)
    max_len = cfg.model_args.get("max_len")
    train_set = SampleSet(stores, train_info["names"], [cidx[e] for e in train_info["emos"]],
                          weights=train_info.get("weights"), max_len=max_len, device=device,
                          source=f"train_info of {split_path}", mmap=cfg.mmap)
    valid_set = SampleSet(stores, valid_info["names"], [cidx[e] for e in valid_info["emos"]],
                          max_len=max_len, device=device, source=f"valid_info of {split_path}", mmap=cfg.mmap)
    select_set = None
    if SELECT_INFO in split:
        select_info = split[SELECT_INFO]
        select_set = SampleSet(stores, select_info["names"], [cidx[e] for e in select_info["emos"]],
                               max_len=max_len, device=device, source=f"{SELECT_INFO} of {split_path}",
                               mmap=cfg.mmap)
    if int(cfg.model_args.get("context") or 0) > 0:
        index = DialogueIndex.for_dataset(config.DATASETS.get(cfg.dataset, {}), list(cfg.dialogue_csv))
        index.add_split(split, split_path)
        log.info(f"context: dialogue ids of {len(index)} names from {index.sources or 'no table'}")
        attach_dialogues(train_set, index, log, "train")
        attach_dialogues(valid_set, index, log, "valid")
        if select_set is not None:
            attach_dialogues(select_set, index, log, "select")
        check_test_dialogues(cfg)
    return RunData(split_path, split, train_set, valid_set, select_set)


def prediction_dialogues(dataset, dialogue_csv, names_csv=None, label_csv=None):
    """The dialogue index a context run predicts a name list with: the data set's tables, ``dialogue_csv``, and
    the list's own CSV and label CSV (where they are files)."""
    extra = list(dialogue_csv or []) + [p for p in (names_csv, label_csv) if isinstance(p, str) and os.path.isfile(p)]
    return DialogueIndex.for_dataset(config.DATASETS.get(dataset), extra)


def check_test_dialogues(cfg):
    """A context run with ``--test``: refuse, before training, a test list whose names would all be dialogues of
    one (see :func:`dataloader.dialogue.check_list_dialogues`)."""
    if not cfg.test:
        return
    ds_cfg = config.DATASETS.get(cfg.dataset, {})
    test_csv = cfg.test_csv or ds_cfg.get("test_csv")
    if not (test_csv and os.path.isfile(test_csv)):
        return
    index = prediction_dialogues(cfg.dataset, cfg.dialogue_csv, test_csv, cfg.test_label_csv or ds_cfg.get(
        "test_label_csv"))
    check_list_dialogues(index, read_names_csv(test_csv), f"test list '{test_csv}'")


def check_no_test_names(cfg, split, split_path, log=None):
    """Refuse a split list that trains or validates on names of the test list (the data set's ``test_csv`` or
    ``--test_csv``): the model would be scored on what it learnt from.

    One exception, for a data set whose ``config.DATASETS`` entry says ``transductive: True`` (MER2025-SEMI:
    the candidates to predict lie inside the unlabelled pool, and labelling them from unlabelled data is
    allowed): test names may sit in ``train_info`` as pseudo-labelled rows, i.e. where the split's ``sources``
    entry is not ``labelled``; a gold label (no ``sources`` list, or ``labelled``) and any test name in
    ``valid_info`` are still refused. When it happens, one line on ``log`` (default the ``mer.train`` logger)
    says how many and why it is allowed. Returns that number."""
    ds_cfg = config.DATASETS.get(cfg.dataset, {})
    test_csv = cfg.test_csv or ds_cfg.get("test_csv")
    if not (test_csv and os.path.isfile(test_csv)):
        return 0
    test = set(read_names_csv(test_csv))
    transductive = bool(ds_cfg.get("transductive"))
    pseudo = 0
    for part in ("train_info", "valid_info", SELECT_INFO):
        if part not in split:
            continue
        info = split[part]
        sources = info.get("sources")
        if not (isinstance(sources, list) and len(sources) == len(info["names"])):
            sources = ["labelled"] * len(info["names"])  # without per-row sources every row is a gold label
        leak = [(n, s) for n, s in zip(info["names"], sources) if n in test]
        if transductive and part == "train_info":
            gold = [n for n, s in leak if str(s) == "labelled"]
            if gold:
                raise DataError(
                    f"split list '{split_path}' gives {len(gold)} names of the test list '{test_csv}' a gold label in "
                    f"train_info (sources 'labelled' or no sources list): {', '.join(gold[:5])}; data set "
                    f"'{cfg.dataset}' is transductive, so test names may train only as pseudo-labelled rows (a "
                    "'sources' entry other than 'labelled', as pseudo_label.py writes them)")
            pseudo = len(leak)
            continue
        if leak:
            how = (f"; remove them from valid_info (data set '{cfg.dataset}' is transductive: test names may train "
                   "as pseudo-labelled rows, never validate)"
                   if transductive else "; remove them from the split (test names are only scored)")
            raise DataError(f"split list '{split_path}' has {len(leak)} names of the test list '{test_csv}' in {part}: "
                            f"{', '.join(n for n, _ in leak[:5])}{how}")
    if pseudo:
        (log or logging.getLogger("mer.train")).info(
            f"transductive: {pseudo} test candidates carry pseudo labels (allowed for data set {cfg.dataset}: "
            f"DATASETS['{cfg.dataset}']['transductive'])")
    return pseudo


def write_config(run_dir, cfg):
    """``args.yaml``: the resolved config, its hash and identity (what ``--config`` replays and what a rerun is
    compared with), and the versions that ran it."""
    doc = {**cfg.to_dict(), "config_hash": cfg.config_hash(), "identity": cfg.identity(), "versions": versions()}
    tmp = os.path.join(run_dir, "args.yaml.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=True)
    os.replace(tmp, os.path.join(run_dir, "args.yaml"))


def build_model(cfg, data, device, log):
    """The model (standardised inputs, an initial checkpoint if given; compiled with ``--compile``), its
    optimiser (``--optimizer``, ``--fused``) and the :class:`Precision` of its steps (``--amp``)."""
    set_seed(cfg.seed)
    n_classes = len(config.EMO_RULE[cfg.emo_rule])
    model = create_model(cfg.model, data.train.feat_dims, data.train.frame_level, n_classes,
                         **cfg.model_args).to(device)
    if cfg.feat_norm == "standard":
        model.input_norm.fit(data.train.feature_stats())
        log.info("inputs standardised with the training list's per-dimension mean and std")
    if cfg.model_pretrain:
        state = load_checkpoint(cfg.model_pretrain, "--model_pretrain",
                                "give a best.pth that train.py wrote, or a state dict saved with torch.save")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise DataError(f"--model_pretrain '{cfg.model_pretrain}' holds a {type(state).__name__}, not a state "
                            "dict; give a best.pth that train.py wrote")
        # an utterance-level run initialises the wrapped model of a context run
        target = model.base if getattr(model, "needs_dialogues", False) and not any(
            str(k).startswith("base.") for k in state) else model
        try:
            target.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as e:
            why = " ".join(str(e).strip().splitlines()[0].split())[:200] if str(e).strip() else type(e).__name__
            raise DataError(f"--model_pretrain '{cfg.model_pretrain}' does not fit model {cfg.model} ({why}); give "
                            "the best.pth of a run with the same --model, --feat and model settings") from None
        log.info(f"initialised from {cfg.model_pretrain}")
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.l2, cfg.fused, log)
    log.info(f"model {cfg.model}: {count_parameters(model):,} parameters; {cfg.model_args}")
    precision = Precision(cfg.amp, device, log)
    if cfg.compile:
        batch = next(data.train.iter_batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 100003))
        compile_model(model, batch, precision, device, log)
    fused = any(g.get("fused") for g in optimizer.param_groups)
    log.info(f"training steps: {cfg.optimizer}{' (fused)' if fused else ''}, amp {precision.amp}"
             + (", TF32 " + ("on" if cfg.tf32 else "off") if device.type == "cuda" else "")
             + (", compiled" if cfg.compile and _is_compiled(model) else ""))
    return model, optimizer, precision


def _is_compiled(model):
    return any("forward" in m.__dict__ for m in compile_targets(model))


def resume_state(run_dir, model, optimizer, device, log, precision=None):
    """Model, optimiser, gradient scaler (fp16) and RNG state of the last finished epoch of an unfinished run."""
    last_path = os.path.join(run_dir, "last.pth")
    state = load_checkpoint(last_path, "resume state", "delete it to train the run again from its first epoch")
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    if precision is not None and precision.scaler is not None and state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    log.info(f"resumed from {last_path} after epoch {state['epoch']}")
    return state["history"], state["best"], state["epoch"]


# ------------------------------------------------------------------------------------------- the training step
# What fit runs for every epoch, in functions of their own so that bench/train_throughput.py times this code and
# not a copy of it.

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The arithmetic of the training steps (``--amp``): ``off`` (float32), ``bf16`` or ``fp16`` autocast; fp16
    adds a gradient scaler (its small range would flush small gradients to zero). The scaler skips a step whose
    gradients overflowed; with a non-fused optimiser it reads that flag back every step (a wait for the device),
    a fused one (``--fused``) takes it on the device. A mode the device cannot run (fp16 autocast where torch
    lacks it, bf16 on a GPU without bf16) falls back to float32 with one warning."""

    def __init__(self, amp="off", device="cpu", log=None):
        self.device = torch.device(device)
        self.amp = amp
        self.dtype = AMP_DTYPES[amp]
        if self.dtype is not None and not _autocast_works(self.device, self.dtype):
            (log or logging.getLogger("mer.train")).warning(
                f"--amp {amp}: torch {torch.__version__} has no {amp} autocast on {self.device.type}; training in "
                "float32 (use --amp off, or bf16)")
            self.amp, self.dtype = "off", None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def _autocast_works(device, dtype):
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return False
    import warnings

    with warnings.catch_warnings():  # torch warns and disables autocast for a dtype it does not support
        warnings.simplefilter("ignore")
        try:
            with torch.autocast(device.type, dtype=dtype):
                return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == dtype
        except (RuntimeError, ValueError):
            return False


def set_tf32(device, on=True):
    """TF32 matrix products and convolutions on a CUDA device (``--no_tf32`` turns them off): float32 inputs,
    10-bit mantissa products, float32 sums; several times faster on Ampere and later, a relative error around
    1e-3 per product, which training does not notice. Nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(on)
        torch.backends.cudnn.allow_tf32 = bool(on)


def make_optimizer(model, name="adam", lr=1e-4, l2=0.0, fused=False, log=None):
    """``adam`` (weight decay as an L2 term in the gradient, as MRAC25) or ``adamw`` (decoupled weight decay).
    ``fused``: torch's one-kernel implementation where it has one for the parameters' device; else the default
    one, with one warning."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    params = [p for p in model.parameters() if p.requires_grad]
    if fused:
        try:
            return cls(params, lr=lr, weight_decay=l2, fused=True)
        except (RuntimeError, ValueError) as e:
            (log or logging.getLogger("mer.train")).warning(
                f"--fused: torch {torch.__version__} has no fused {name} for these parameters ({e}); using the "
                "default implementation")
    return cls(params, lr=lr, weight_decay=l2)


def optimizer_step(model, optimizer, loss, scaler=None):
    """One optimisation step on ``loss``: gradients (scaled by ``scaler`` for fp16), the model's value clipping
    where it has one, the update."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if model.grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_value_(model.parameters(), model.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train_epoch(model, optimizer, batches, precision=None):
    """One pass of optimisation steps over ``batches``. Returns ``(loss sum, samples)``: the sum over batches of
    the batch's loss times its size, as a float64 tensor on the device, and the number of samples.

    Nothing is read back from the device inside the loop (the caller reads the sum once, after the epoch), so on
    a GPU the host queues the steps ahead and never waits for one to finish."""
    precision = precision or Precision("off")
    scaler = precision.scaler
    total, seen = None, 0
    for batch in batches:
        with precision.autocast():
            out = model(batch["feats"], batch["masks"], **dialogue_args(batch))
            loss = model.loss(out, batch["labels"], batch["weights"])
        optimizer_step(model, optimizer, loss, scaler)
        n = len(batch["idx"])
        part = loss.detach().double() * n
        total = part if total is None else total + part
        seen += n
    return (total if total is not None else torch.zeros((), dtype=torch.float64)), seen


COMPILE_BACKEND = "inductor"  # torch.compile's backend (the tests use a cheaper one to check the wiring)


def compile_targets(model):
    """The modules ``--compile`` compiles: the model; in a context model the wrapped model (the dialogue layers
    pack sequences by length, which does not compile), or with expert-level context only the wrapped model's
    encoders, as ``MERModel.encode`` passes their states through the context layers (``expert_context``, set
    per call)."""
    base = getattr(model, "base", None)
    if base is None:
        return [model]
    if getattr(model, "expert_context", None) is None:
        return [base]
    return list(base.encoders)


def _compiler_missing(device):
    if device.type != "cpu":
        return None
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(n and shutil.which(n) for n in names):
        return "no C++ compiler (g++, c++ or clang++; or $CXX) to build the CPU kernels"
    return None


def compile_model(model, batch, precision=None, device="cpu", log=None):
    """``--compile``: ``torch.compile`` the forward of :func:`compile_targets` in place (the state dict keeps its
    keys, so checkpoints are those of an uncompiled run), then try one training and one evaluation forward on
    ``batch`` (a backward too), RNG states restored afterwards so that the run's random draws are not shifted.
    If torch cannot compile here (no C++ compiler for CPU kernels, no triton for GPU ones, an unsupported
    operation) the model stays as it was, with one warning. Returns True when compiled."""
    log = log or logging.getLogger("mer.train")
    device = torch.device(device)
    why = _compiler_missing(device) if COMPILE_BACKEND == "inductor" else None
    if why:
        log.warning(f"--compile: {why}; training without compilation")
        return False
    targets = compile_targets(model)
    for m in targets:
        m.forward = torch.compile(m.forward, backend=COMPILE_BACKEND, dynamic=False)
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    was_training = model.training
    try:
        model.train()
        with (precision or Precision("off")).autocast():
            out = model(batch["feats"], batch["masks"], **dialogue_args(batch))
            loss = model.loss(out, batch["labels"], batch["weights"])
        loss.backward()
        model.eval()
        with torch.no_grad():
            model(batch["feats"], batch["masks"], **dialogue_args(batch))
        ok = True
    except Exception as e:  # whatever the compiler raises: the run goes on without it
        for m in targets:
            m.__dict__.pop("forward", None)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        log.warning(f"--compile: torch.compile failed on {device.type} ({type(e).__name__}: {first}); training "
                    "without compilation")
        ok = False
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
    return ok


def is_better(row, best):
    """Whether epoch ``row`` replaces ``best`` as the best epoch: a higher weighted F1 on the list that chooses
    (``select_*`` where the split has a ``select_info``, else ``valid_*``), or the same F1 at a lower loss there
    (any epoch beats none)."""
    if best is None:
        return True
    on = "select" if "select_f1" in row else "valid"
    return row[f"{on}_f1"] > best[f"{on}_f1"] or (
        row[f"{on}_f1"] == best[f"{on}_f1"] and row[f"{on}_loss"] < best[f"{on}_loss"])


def best_of(history):
    """The best row of ``history`` (the rows of metrics.csv, in order) by :func:`is_better`, or None."""
    best = None
    for row in history:
        if is_better(row, best):
            best = row
    return best


def patience_met(history, patience):
    """``--patience``: whether the ``patience`` epochs after the best one of ``history`` have all been run
    without a better one. Read from the history alone, so that a resumed run counts as the uninterrupted one."""
    if not patience or not history:
        return False
    return len(history) - int(best_of(history)["epoch"]) >= patience


def fit(cfg, model, optimizer, data, run_dir, history, best, start_epoch, meta, device, log, precision=None,
        tracker=None):
    """The epochs: train (:func:`train_epoch`, in ``precision``), validate, keep the best epoch (validation
    weighted F1; ties: lower loss; :func:`is_better`), and after each epoch the state a resume needs. With
    ``--patience N`` it stops once N epochs in a row bring no better best epoch (also a resumed run whose history
    already says so trains no further). Each epoch's row goes to ``tracker`` (engine/tracking.py) too. Returns the
    best epoch's row."""
    class_names = meta["class_names"]
    last_path = os.path.join(run_dir, "last.pth")
    precision = precision or Precision("off", device)
    valid_labels = data.valid.labels.cpu().numpy()
    select_labels = None if data.select is None else data.select.labels.cpu().numpy()
    stop = patience_met(history, cfg.patience)
    for epoch in range(start_epoch, cfg.epochs):
        if stop:
            break
        model.train()
        t_epoch = time.time()
        order_seed = cfg.seed * 100003 + epoch
        batches = data.train.iter_batches(cfg.batch_size, shuffle=True, seed=order_seed)
        losses, seen = train_epoch(model, optimizer, tqdm(
            batches, total=data.train.num_batches(cfg.batch_size, shuffle=True, seed=order_seed),
            desc=f"epoch {epoch + 1}", leave=False, disable=cfg.quiet), precision)
        losses = float(losses)  # the epoch's one read-back of the training loss
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.time() - t_epoch
        probs, weights, valid_loss = predict(model, data.valid, eval_batch_size(cfg.batch_size))
        labels = valid_labels
        m = emotion_metrics(labels, probs.argmax(1))
        row = {"epoch": epoch + 1, "train_loss": losses / seen, "valid_loss": valid_loss, "valid_acc": m["acc"],
               "valid_f1": m["f1"]}
        if data.select is not None:  # the list that chooses the epoch; valid is only recorded
            select_probs, _, select_loss = predict(model, data.select, eval_batch_size(cfg.batch_size))
            ms = emotion_metrics(select_labels, select_probs.argmax(1))
            row.update(select_loss=select_loss, select_acc=ms["acc"], select_f1=ms["f1"])
        row.update(seconds=time.time() - t_epoch, samples_per_s=seen / train_seconds,
                   lr=optimizer.param_groups[0]["lr"])
        history.append(row)
        improved = is_better(row, best)
        if improved:
            best = dict(row, checkpoint=new_checkpoint_id())
            save_checkpoint(os.path.join(run_dir, "best.pth"), model, {**meta, "epoch": epoch + 1,
                                                                       "valid_f1": m["f1"],
                                                                       "checkpoint_id": best["checkpoint"]})
            prediction_frame(data.valid.names, probs, class_names, labels, weights, cfg.feat, best["checkpoint"],
                             meta["selected_on"]["names"]).pipe(write_csv, os.path.join(run_dir, "valid_pred.csv"))
        write_csv(pd.DataFrame(history), os.path.join(run_dir, "metrics.csv"))
        torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "history": history, "best": best, "epoch": epoch + 1,
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "scaler": precision.scaler.state_dict() if precision.scaler is not None else None},
                   last_path + ".tmp")
        os.replace(last_path + ".tmp", last_path)
        log.info(f"epoch {epoch + 1}/{cfg.epochs} train loss {row['train_loss']:.4f} | valid loss "
                 f"{valid_loss:.4f} acc {m['acc']:.4f} F1 {m['f1']:.4f}"
                 + (f" | select F1 {row['select_f1']:.4f}" if "select_f1" in row else "")
                 + f" | {row['seconds']:.2f}s "
                 f"{row['samples_per_s']:.0f} samples/s{'  *best*' if improved else ''}")
        if tracker is not None:
            tracker.log_epoch(row)
        stop = patience_met(history, cfg.patience)
    if stop and len(history) < cfg.epochs:
        log.info(f"early stop after epoch {len(history)}: no better "
                 f"{'select' if data.select is not None else 'validation'} F1 for {cfg.patience} epochs; best "
                 f"epoch {int(best_of(history)['epoch'])}")
    if os.path.isfile(last_path):  # the run is complete: the resume state is no longer needed
        os.remove(last_path)
    return best


def finish(cfg, run_dir, model, history, best, device, log, tracker=None):
    """Plots (not with ``--no_plots``), the summary (``summary.json``, written last: its presence marks a finished
    run), the test; the final metrics to ``tracker``."""
    metrics = pd.DataFrame(history)
    if cfg.plots:
        plot_curves(metrics, os.path.join(run_dir, "loss.png"), os.path.join(run_dir, "metrics.png"))
    summary = {"run_dir": run_dir, "config_hash": cfg.config_hash(), "best_epoch": int(best["epoch"]),
               "valid_loss": best["valid_loss"], "valid_acc": best["valid_acc"], "valid_f1": best["valid_f1"],
               "samples_per_s": float(metrics["samples_per_s"].mean()), "parameters": count_parameters(model),
               "peak_memory_mb": _peak_memory_mb(device), "device": str(device), "checkpoint": best.get("checkpoint"),
               "epochs_run": len(history),
               "stopped_early": bool(patience_met(history, cfg.patience) and len(history) < cfg.epochs),
               "epoch_selection": SELECT_INFO if "select_f1" in best else "valid_info"}
    if "select_f1" in best:
        summary.update(select_loss=best["select_loss"], select_acc=best["select_acc"], select_f1=best["select_f1"])
        log.info(f"best epoch {int(best['epoch'])} chosen on {SELECT_INFO} (select F1 {best['select_f1']:.4f}); "
                 f"valid_info was only predicted: its F1 {best['valid_f1']:.4f} is held out")
    log.info(f"mean train throughput {summary['samples_per_s']:.0f} samples/s on {device}; "
             f"peak memory {summary['peak_memory_mb']:.0f} MB")
    if cfg.test:
        summary.update(evaluate_test(cfg, run_dir, device, log))
    write_json(summary, os.path.join(run_dir, "summary.json"))
    best_line = (f"BEST: epoch:{best['epoch']:.0f}, loss:{best['valid_loss']:.4f}, "
                 f"acc:{best['valid_acc']:.4f}, f-score:{best['valid_f1']:.4f}")
    log.info(best_line)
    print(f"RUN: {run_dir}", flush=True)
    print(best_line, flush=True)
    if tracker is not None:
        tracker.finish(summary)
    return summary


def finished_run(cfg, run_dir, device, log):
    """The summary of a finished run of this config (``--resume``); scored on the test list first if asked
    for and not yet done."""
    log = get_logger("mer.train", os.path.join(run_dir, "train.log"), append=True)
    log.info(f"--resume: {run_dir} is already complete (a finished run of these settings); nothing to train")
    summary_path = os.path.join(run_dir, "summary.json")
    with open(summary_path) as f:
        done = json.load(f)
    done["run_dir"] = run_dir  # where it is now (the folder may have been moved since)
    print(f"RUN: {run_dir}", flush=True)
    if cfg.test and "test_f1" not in done:
        done.update(evaluate_test(cfg, run_dir, device, log))
        write_json(done, summary_path)
    return done


def evaluate_test(cfg, run_dir, device, log):
    """Score the best checkpoint on the data set's test list (labels used for scoring only): writes
    ``test_pred.csv`` (+ its confusion matrix) and, with labels, ``test_metrics.json``."""
    ds_cfg = config.DATASETS.get(cfg.dataset, {})
    test_csv = cfg.test_csv or ds_cfg.get("test_csv")
    label_csv = cfg.test_label_csv or ds_cfg.get("test_label_csv")
    if not test_csv:
        raise DataError(f"--test needs a test list: data set '{cfg.dataset}' has no test_csv; give --test_csv")
    if not (label_csv and os.path.isfile(label_csv)):
        label_csv = None
    res = evaluate_run(run_dir, test_csv, label_csv, os.path.join(run_dir, "test_pred.csv"), device=str(device),
                       batch_size=eval_batch_size(cfg.batch_size), num_workers=cfg.num_workers, log=log,
                       dialogue_csv=list(cfg.dialogue_csv), own_run=True, confusion_png=cfg.plots)
    if label_csv is None:
        return {}
    out = {"test_acc": res["acc"], "test_f1": res["f1"], "checkpoint": res["checkpoint"]}
    write_json(out, os.path.join(run_dir, "test_metrics.json"))
    line = f"TEST: acc:{res['acc']:.4f}, f-score:{res['f1']:.4f}"
    log.info(line)
    print(line, flush=True)
    return out


def evaluate_run(run_dir, names_csv, label_csv=None, out_csv=None, device="auto", gpu=0, batch_size=512,
                 num_workers=4, log=None, drop_experts=(), write_heads=False, dialogue_csv=None,
                 allow_unfinished=False, own_run=False, confusion_png=True):
    """test.py: class probabilities of a run's best model for a name list (a CSV with a ``name`` column, or
    the list itself); metrics where labels are given.
    ``label_csv``: a label CSV, or a dict ``name -> label``.
    ``dialogue_csv``: for a context run, CSVs with ``name``, the dialogue column and ``order`` (default: the
    ones the run was trained with); the run's data set's label tables, ``names_csv`` and ``label_csv`` are
    read too. The names of the list are cut into dialogues (a name with no dialogue id stands alone).
    ``drop_experts``: feature names to leave out, as if that input were missing (its files are not read).
    ``write_heads``: for models with expert heads (moe), also write each head's predictions beside
    ``out_csv`` as ``<out>__head_<expert>.csv`` (same format; ``cross-modal`` for the fused-input head).
    ``allow_unfinished``: predict from a run that is not finished (engine/results.py), else it is refused
    (``own_run``: the run scoring itself at its end, before its summary is written).
    ``confusion_png``: with labels and ``out_csv``, also draw the confusion matrix beside it
    (``<out>_confusion.png``).
    Every prediction row records the checkpoint's id (``checkpoint`` column)."""
    log = log or get_logger("mer.test")
    device = resolve_device(device, gpu)
    model, ckpt = load_run(run_dir, device)
    ckpt_id = str(ckpt.get("checkpoint_id") or "unstamped")
    if not own_run:
        check_finished(run_dir, allow_unfinished, log, ckpt_id)
    class_names, feats = ckpt["class_names"], ckpt["feat"]
    unknown = [f for f in drop_experts if f not in feats]
    if unknown:
        raise DataError(f"--drop_experts {unknown}: not experts of this run; its experts are {feats}")
    drop = [feats.index(f) for f in drop_experts]
    if isinstance(names_csv, (list, tuple)):
        names, names_csv = [str(n) for n in names_csv], f"a list of {len(names_csv)} names"
    else:
        names = read_names_csv(names_csv)
    loaded = iter(load_features([f for f in feats if f not in drop_experts], num_workers=num_workers, logger=log))
    cfg = ckpt["model_config"]
    stores = [MissingFeature(f, cfg["feat_dims"][i], cfg["frame_level"][i]) if i in drop else next(loaded)
              for i, f in enumerate(feats)]
    if drop:
        log.info(f"experts left out: {list(drop_experts)}")
    samples = SampleSet(stores, names, max_len=cfg.get("max_len"), device=device, source=f"'{names_csv}'")
    if getattr(model, "needs_dialogues", False):
        index = prediction_dialogues(ckpt.get("dataset"), dialogue_csv if dialogue_csv is not None else
                                     ckpt.get("dialogue_csv"), names_csv, label_csv)
        check_list_dialogues(index, names, f"name list '{names_csv}'")
        attach_dialogues(samples, index, log, f"'{names_csv}'")
    probs, weights, _, heads = predict(model, samples, batch_size, drop=drop, return_heads=True)
    labels, result = None, {"run_dir": run_dir, "n": len(names), "checkpoint": ckpt_id}
    if isinstance(label_csv, dict):
        missing = [n for n in names if n not in label_csv]
        if missing:
            raise DataError(f"no label for {len(missing)} names of {names_csv}: {missing[:5]}")
        cidx = {c: i for i, c in enumerate(class_names)}
        unknown = sorted({label_csv[n] for n in names} - set(cidx))
        if unknown:
            raise DataError(f"labels {unknown} are not in the run's label set {class_names}")
        labels = np.array([cidx[label_csv[n]] for n in names], dtype=np.int64)
    elif label_csv:
        labels = label_indices(label_csv, names, class_names, f"'{names_csv}'")
    if labels is not None:
        preds = probs.argmax(1)
        result.update(emotion_metrics(labels, preds))
        report, cm = full_report(labels, preds, class_names)
        result["report"], result["confusion"] = report, cm
        result["confusion_text"] = format_confusion(cm, class_names)
    selected_on = (ckpt.get("selected_on") or {}).get("names")
    df = prediction_frame(names, probs, class_names, labels, weights, feats, ckpt_id, selected_on)
    if out_csv:
        os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
        write_csv(df, out_csv)
        result["head_csvs"] = []
        if write_heads and heads is not None:
            head_names = list(feats) + ["cross-modal"] if heads.shape[1] == len(feats) + 1 else list(feats)
            for j, head in enumerate(head_names):
                path = f"{os.path.splitext(out_csv)[0]}__head_{head}.csv"
                write_csv(prediction_frame(names, heads[:, j], class_names, labels, checkpoint=ckpt_id,
                                           selected_on=selected_on), path)
                result["head_csvs"].append(path)
        if labels is not None and confusion_png:
            png = os.path.splitext(out_csv)[0] + "_confusion.png"
            plot_confusion(result["confusion"], class_names, png,
                           title=f"acc {result['acc']:.3f}, weighted F1 {result['f1']:.3f}")
            result["confusion_png"] = png
    result["predictions"] = df
    return result
