"""One training configuration: the single source of train.py's defaults, and the identity of a run.

A run's settings come in layers, each overriding the one before:

1. the defaults of :class:`TrainConfig` (the values train.py has always used);
2. ``models/model-tune.yaml``: the model's hyperparameters;
3. a user's YAML, ``--config my.yaml`` (a run's own ``args.yaml`` replays that run);
4. the command-line flags that were given.

:meth:`TrainConfig.resolved` fills in what depends on the data set (label set, split list) and the model
(its hyperparameters); the resolved config is written to the run's ``args.yaml`` and stored in ``best.pth``.

Its *identity* (:meth:`TrainConfig.identity`) is what decides the result: data, features, model and its
hyperparameters, optimisation, and the content (SHA-1) of the split list, the initial checkpoint and the
dialogue tables, so that a file rewritten in place counts as a change. Where a run is written, on which
device, with how many reader threads, whether it is compiled or uses TF32 or a fused optimiser, and whether it is
tested, whether it draws its curves and which experiment tracker records it are not part of it; mixed precision
(``amp``), the optimiser and early stopping (``patience``) are, but only when not at their defaults (off, adam,
none), so that the runs made before those settings existed keep their hashes. The identity's hash names
a run folder by default (``<model>-<hash>``, the seed left out so that the seeds of one setting share a name
across ``seed<k>`` folders) and guards it: a run folder never holds, resumes or reports a run of other
settings (:func:`check_run_folder`).
"""

import argparse
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

import yaml

import config
from common.errors import DataError
from common.names import check_name
from dataloader.files import missing_split
from common.utils import add_threads_flag, parse_feat_list, versions  # noqa: F401  (versions: what ran a run, for args.yaml, best.pth)
from engine.tracking import TRACKERS

DEFAULT_FEATS = ["demo-hubert-large-UTT", "demo-roberta-large-UTT", "demo-clip-vit-base-UTT"]
# model hyperparameters with a flag of their own (any other: --model_args KEY=VALUE)
MODEL_FLAGS = ("hidden_dim", "dropout", "att_norm", "seq_layers", "seq_heads", "seq_dim", "max_len",
               "expert_dropout", "input_noise", "grad_clip", "context", "context_hidden", "context_level")
# what decides a run's result (the rest says where and how it runs)
IDENTITY_FIELDS = ("dataset", "seed", "emo_rule", "feat", "feat_norm", "model", "model_args", "lr", "l2",
                   "batch_size", "epochs")
# settings that change the result but were added later: part of the identity only when not at their default, so
# that every run made before them keeps its hash and its folder name
IDENTITY_UNLESS_DEFAULT = {"amp": "off", "optimizer": "adam", "patience": None}
AMP_MODES = ("off", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class TrainConfig:
    """Everything a train.py run needs. ``model_args`` holds model hyperparameters: before
    :meth:`resolved`, only those set by the user; after, model-tune.yaml's with them on top."""

    # data
    dataset: str = "demo"
    seed: int = 0
    split: str = None  # None: train_lst/<dataset>/seed<seed>.json
    emo_rule: str = None  # None: the data set's
    feat: list = field(default_factory=lambda: list(DEFAULT_FEATS))
    feat_norm: str = "standard"
    dialogue_csv: list = field(default_factory=list)
    # model
    model: str = "auto_attention"
    model_args: dict = field(default_factory=dict)
    model_pretrain: str = None
    # optimisation
    lr: float = 1e-4
    l2: float = 1e-5
    batch_size: int = 64
    epochs: int = 40
    optimizer: str = "adam"  # adam | adamw (identity only when not adam)
    amp: str = "off"  # off | bf16 | fp16: autocast of the training steps (identity only when not off)
    patience: int = None  # early stopping: None off; N >= 1 stops after N epochs without a better best epoch
    #                       (identity only when set)
    # where and how (not part of the identity)
    compile: bool = False  # torch.compile the model (the same maths, other kernels)
    fused: bool = False  # the optimiser's fused kernel where torch has one (the same maths)
    tf32: bool = True  # TF32 matrix products on CUDA (float32 storage, 10-bit mantissa products)
    save_root: str = "./saved"
    run_name: str = None
    save_as_time: bool = False
    resume: bool = False
    test: bool = False
    test_csv: str = None
    test_label_csv: str = None
    device: str = "auto"
    gpu: int = 0
    num_workers: int = 4
    threads: int = None  # CPU threads (common.utils.set_threads); None: OMP_NUM_THREADS, else torch's default
    mmap: bool = False
    quiet: bool = False
    plots: bool = True  # loss.png, metrics.png (and --test's confusion PNG)
    tracker: str = None  # None | tensorboard | mlflow: an experiment tracker also records the run (engine/tracking.py)
    # a --config replay of a run: train on a split list, checkpoint or dialogue table changed since the run was made
    # (else refused). Never written to args.yaml nor read from a YAML: each replay decides it on its command line
    allow_changed_inputs: bool = False
    # the file hashes a run's args.yaml recorded, for the inputs a --config replay still uses (None: not a replay);
    # set by from_yaml / from_namespace, compared by resolved(); never written, never read from a YAML
    recorded_inputs: dict = field(default=None, repr=False, compare=False)

    # --------------------------------------------------------------------------------------- building
    def replace(self, **changes):
        """A copy with ``changes``; model hyperparameters may be given by name (``dropout=0.5``)."""
        names = {f.name for f in dataclasses.fields(self)}
        model_args = dict(self.model_args)
        model_args.update(changes.pop("model_args", None) or {})
        for key in [k for k in changes if k not in names]:
            model_args[key] = changes.pop(key)
        if "feat" in changes:
            changes["feat"] = parse_feat_list(changes["feat"])
        return dataclasses.replace(self, model_args=model_args, **changes)

    @classmethod
    def from_dict(cls, doc, base=None, source="the config"):
        """``base`` (default: the defaults) with the keys of ``doc`` on top. Unknown keys are model
        hyperparameters (an args.yaml of an older version holds them flat); bookkeeping keys are skipped."""
        doc = {k: v for k, v in (doc or {}).items() if k not in BOOKKEEPING}
        if isinstance(doc.get("model_args"), list):  # --model_args KEY=VALUE strings (older args.yaml)
            doc["model_args"] = parse_model_args(doc["model_args"])
        if doc.get("model_args") is not None and not isinstance(doc["model_args"], dict):
            raise DataError(f"{source}: model_args must be a mapping of hyperparameters, got {doc['model_args']!r}")
        return (base or cls()).replace(**doc)

    @classmethod
    def from_yaml(cls, path, base=None):
        if not os.path.isfile(path):
            raise DataError(f"--config '{path}' does not exist")
        with open(path) as f:
            try:
                doc = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise DataError(f"--config '{path}' is not valid YAML: {e}") from None
        if not isinstance(doc, dict):
            raise DataError(f"--config '{path}' must hold a mapping of settings, not {type(doc).__name__}")
        cfg = cls.from_dict(doc, base, source=f"--config '{path}'")
        recorded = recorded_inputs(doc, path, cfg)
        return cfg.replace(recorded_inputs=recorded) if recorded else cfg

    @classmethod
    def from_argv(cls, argv, base=None):
        """train.py's command line (old flags included) over ``base``, or over ``--config`` when given."""
        args = build_parser().parse_args(argv)
        return from_namespace(args, base)

    # --------------------------------------------------------------------------------------- resolving
    def split_path(self):
        return self.split or os.path.join(config.PATH_TO_TRAIN_LST, self.dataset, f"seed{self.seed}.json")

    def resolved(self):
        """The label set, split list and model hyperparameters filled in (model-tune.yaml under the user's)."""
        from models import load_model_config

        if self.dataset not in config.DATASETS and not self.split:
            ignored = f"; ignored registrations: {'; '.join(config.REGISTRATION_PROBLEMS)}" \
                if config.REGISTRATION_PROBLEMS else ""
            raise DataError(f"unknown --dataset '{self.dataset}' (config.DATASETS: {', '.join(config.DATASETS)}); "
                            "register it (preprocess/import_dataset.py, or config.py) or give --split" + ignored)
        emo_rule = emo_rule_of(self.dataset, self.emo_rule)
        tracker = None if self.tracker in (None, "", "none") else self.tracker
        out = dataclasses.replace(self, emo_rule=emo_rule, feat=parse_feat_list(self.feat), tracker=tracker,
                                  model_args={**load_model_config(self.model), **self.model_args})
        out.validate()
        out.check_recorded_inputs()
        return out

    def validate(self):
        """Refuse values no run can use (``--epochs 0``, ``--lr -1``, ``--hidden_dim 0``, ...) with the value and
        the fix, before a run folder is touched."""
        for key, rule in SETTING_RULES.items():
            _check_value(f"--{key}", getattr(self, key), rule)
        for key, rule in MODEL_ARG_RULES.items():
            if self.model_args.get(key) is not None:
                _check_value(f"--{key}", self.model_args[key], rule)
        if self.run_name not in (None, ""):  # a folder under save_root: one name, never a path out of it
            check_name(self.run_name, "--run_name")
        if self.feat_norm not in ("standard", "none"):
            raise DataError(f"--feat_norm {self.feat_norm!r}: use standard or none")
        if self.amp not in AMP_MODES:
            raise DataError(f"--amp {self.amp!r}: use {', '.join(AMP_MODES[1:])} or off (mixed precision of the "
                            "training steps; off: float32)")
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"--optimizer {self.optimizer!r}: use adam or adamw")
        if self.patience is not None:
            try:
                _check_value("--patience", self.patience, (int, 1, None, True))
            except DataError as e:
                raise DataError(f"{e} (epochs without a better validation F1 before training stops; leave it out, "
                                "or patience: null in a --config YAML, for no early stopping)") from None
        if self.tracker not in (None, "", "none") + TRACKERS:
            raise DataError(f"--tracker {self.tracker!r}: use tensorboard or mlflow, or none (no tracker)")
        for key in ("compile", "fused", "tf32", "plots"):
            if not isinstance(getattr(self, key), bool):
                raise DataError(f"{key}: {getattr(self, key)!r} is not true or false (in a --config YAML write "
                                f"{key}: true)")

    def changed_inputs(self):
        """The inputs of a ``--config`` replay whose content differs from the hash its run recorded, as
        ``(setting, path, sha1 there, sha1 now)``; only the files the replay still uses, at the path the run read
        them from (a flag given on the command line is a new choice, not compared). The hashes now are those of
        :meth:`identity` (call on a resolved config), so each file is read once per config."""
        rec = self.recorded_inputs or {}
        if not any(rec.get(k) for k in RECORDED_INPUTS):
            return []
        ident = self.identity()
        now = {"split": {self.split_path(): ident["split_sha1"]},
               "model_pretrain": {self.model_pretrain: ident["model_pretrain_sha1"]},
               "dialogue_csv": dict(zip(self.dialogue_csv, ident["dialogue_csv_sha1"]))}
        return [(what, path, there, now[key][path]) for key, (_, what) in RECORDED_INPUTS.items()
                for path, there in rec.get(key) or [] if path in now[key] and now[key][path] != there]

    def check_recorded_inputs(self):
        """Refuse a ``--config`` replay whose split list, initial checkpoint or dialogue table changed since its
        run was made (a replay would train on other data under the old run's settings), unless
        ``allow_changed_inputs``; then :func:`engine.trainer.train` logs one warning naming them."""
        changed = self.changed_inputs()
        if changed and not self.allow_changed_inputs:
            what, path, there, now = changed[0]
            more = f" (and {', '.join(f'{w} {p!r}' for w, p, _, _ in changed[1:])})" if changed[1:] else ""
            source = (self.recorded_inputs or {}).get("source")
            run = f"the run of '{source}'" if source else "the run"
            raise DataError(f"{what} '{path}'{more} changed since {run} was made (sha1 {there[:12]} there, "
                            f"{now[:12]} now); restore it, or give --allow_changed_inputs to train on it as it is now")

    def changed_inputs_line(self):
        """The warning line of a replay allowed to train on changed inputs, or None."""
        changed = self.changed_inputs()
        if not changed:
            return None
        return ("--allow_changed_inputs: training on inputs changed since the replayed run was made: "
                + "; ".join(f"{w} '{p}' (sha1 {a[:12]} there, {b[:12]} now)" for w, p, a, b in changed))

    # --------------------------------------------------------------------------------------- identity
    def identity(self):
        """What decides the result (call on a resolved config): the identity fields, those of
        ``IDENTITY_UNLESS_DEFAULT`` that are not at their default (``--amp bf16``, ``--optimizer adamw``,
        ``--patience 5``), and the content of the split list, the initial checkpoint and the dialogue tables. The
        files are read once per config (a run asks for its identity several times, and an initial checkpoint can
        be large)."""
        extra = {k: getattr(self, k) for k, default in IDENTITY_UNLESS_DEFAULT.items() if getattr(self, k) != default}
        key = json.dumps([getattr(self, k) for k in IDENTITY_FIELDS] + [extra, self.split_path(), self.model_pretrain,
                                                                        list(self.dialogue_csv)], default=str)
        cached = self.__dict__.get("_identity")
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        out = {k: getattr(self, k) for k in IDENTITY_FIELDS}
        out.update(extra)
        out["feat"] = list(self.feat)
        out["split_sha1"] = file_sha1(self.split_path(), "split list")
        out["model_pretrain_sha1"] = file_sha1(self.model_pretrain, "--model_pretrain") if self.model_pretrain else None
        out["dialogue_csv_sha1"] = [file_sha1(p, "--dialogue_csv") for p in self.dialogue_csv]
        out = json.loads(json.dumps(out, sort_keys=True, default=str))
        self.__dict__["_identity"] = (key, out)
        return dict(out)

    def config_hash(self):
        return _hash(self.identity())

    def default_run_name(self):
        """``<model>-<hash of the identity without the seed>``: the seeds of one setting share the name, each in
        its ``seed<k>`` folder; an explicit split list counts by its path (a default one follows the seed)."""
        ident = {k: v for k, v in self.identity().items() if k not in ("seed", "split_sha1")}
        ident["split"] = self.split
        return f"{self.model}-{_hash(ident)[:8]}"

    def run_dir(self):
        if self.run_name:
            name = self.run_name
        elif self.save_as_time:
            import datetime

            name = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        else:
            name = self.default_run_name()
        return os.path.join(self.save_root, self.dataset, f"seed{self.seed}", self.model, name)

    def to_dict(self):
        """The config as plain data, for ``args.yaml`` and checkpoints (the split list by its path)."""
        out = dataclasses.asdict(self)
        out["split"] = self.split_path()
        for key in NOT_WRITTEN:
            out.pop(key, None)
        return out


# what a setting must be: (type, lowest or None, highest (excluded) or None, is the lowest allowed itself)
SETTING_RULES = {"lr": (float, 0.0, None, False), "l2": (float, 0.0, None, True), "batch_size": (int, 1, None, True),
                 "epochs": (int, 1, None, True), "num_workers": (int, 0, None, True), "seed": (int, 0, None, True),
                 "gpu": (int, 0, None, True)}
MODEL_ARG_RULES = {"hidden_dim": (int, 1, None, True), "dropout": (float, 0.0, 1.0, True),
                   "seq_layers": (int, 1, None, True), "seq_heads": (int, 1, None, True),
                   "seq_dim": (int, 1, None, True), "max_len": (int, 1, None, True),
                   "expert_dropout": (float, 0.0, 1.0, True), "input_noise": (float, 0.0, None, True),
                   "grad_clip": (float, None, None, True), "context": (int, 0, None, True),
                   "context_hidden": (int, 1, None, True)}


def _check_value(flag, value, rule):
    kind, low, high, low_ok = rule
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        kind is float or float(value).is_integer())
    if not ok_type or value != value or value in (float("inf"), float("-inf")):
        raise DataError(f"{flag} {value!r} is not {'a whole number' if kind is int else 'a finite number'}")
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and value >= high
    if too_low or too_high:
        bound = (f"{'at least' if low_ok else 'above'} {low}" + (f" and below {high}" if high is not None else ""))
        raise DataError(f"{flag} {value!r} is out of range: it must be {bound}")


def emo_rule_of(dataset, given=None):
    """The label set of a run: ``given`` (--emo_rule), else the data set's; never a silent default."""
    emo_rule = given or config.DATASETS.get(dataset, {}).get("emo_rule")
    if emo_rule is None:
        raise DataError(f"data set '{dataset}' names no label set: give --emo_rule (config.EMO_RULE: "
                        f"{', '.join(config.EMO_RULE)}) or set emo_rule in its config.DATASETS entry")
    if emo_rule not in config.EMO_RULE:
        raise DataError(f"unknown --emo_rule '{emo_rule}'; config.EMO_RULE has {', '.join(config.EMO_RULE)}")
    return emo_rule


# settings of one invocation only: never in args.yaml or a checkpoint, skipped when a YAML is read
NOT_WRITTEN = ("allow_changed_inputs", "recorded_inputs")
BOOKKEEPING = ("config_hash", "identity", "versions", "list_models", "config", "save_model") + NOT_WRITTEN
# the inputs an args.yaml's identity records by content: setting (and its flag) -> (identity key, name in messages)
RECORDED_INPUTS = {"split": ("split_sha1", "split list"), "model_pretrain": ("model_pretrain_sha1", "--model_pretrain"),
                   "dialogue_csv": ("dialogue_csv_sha1", "--dialogue_csv")}


def recorded_inputs(doc, path, cfg):
    """The files a run's ``args.yaml`` (``doc``, read from ``path`` into ``cfg``) recorded by content in its
    identity, as ``{setting: [[file, sha1], ...], "source": path}``, or None (not a run's args.yaml)."""
    ident = doc.get("identity")
    if not isinstance(ident, dict):
        return None
    paths = {"split": [cfg.split_path()], "model_pretrain": [cfg.model_pretrain], "dialogue_csv": list(cfg.dialogue_csv)}
    out = {}
    for key, (ident_key, _) in RECORDED_INPUTS.items():
        hashes = ident.get(ident_key)
        hashes = hashes if isinstance(hashes, list) else [hashes]
        pairs = [[p, h] for p, h in zip(paths[key], hashes) if p and isinstance(h, str)] \
            if len(hashes) == len(paths[key]) else []
        if pairs:
            out[key] = pairs
    return {**out, "source": str(path)} if out else None


def _hash(doc):
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def file_sha1(path, what):
    if not os.path.isfile(path):
        raise DataError(missing_split(path) if what == "split list" else f"{what} '{path}' does not exist")
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_model_args(items):
    """``["lambda_kl=0.2", "rank=8"]`` -> ``{"lambda_kl": 0.2, "rank": 8}`` (values read as YAML)."""
    return parse_key_values(items, "--model_args")


def parse_key_values(items, flag, what=""):
    """``KEY=VALUE`` strings of ``flag`` -> a dict, values read as YAML; ``what`` says what the pairs are."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise DataError(f"{flag} takes KEY=VALUE pairs{what}, got '{item}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ------------------------------------------------------------------------------------------- run folders
RESULT_FILES = ("summary.json", "best.pth", "last.pth", "metrics.csv", "valid_pred.csv", "test_pred.csv",
                "test_pred_confusion.png", "test_metrics.json", "loss.png", "metrics.png", "args.yaml", "train.log")
RESULT_DIRS = ("tb",)  # --tracker tensorboard's event files


def read_run_config(run_dir):
    """The ``args.yaml`` of a run folder as a dict, or None when there is none."""
    path = os.path.join(run_dir, "args.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return yaml.safe_load(f) or {}
        except yaml.YAMLError:
            return {}


def check_run_folder(run_dir, cfg):
    """What to do with ``run_dir`` for the resolved ``cfg``: ``"new"`` (nothing there), ``"done"`` (a finished
    run of this config), ``"resume"`` (an unfinished one, with ``cfg.resume``) or ``"restart"`` (this config,
    but train again). A folder holding a run of other settings, or of unknown settings (no config hash), is
    refused with the differing settings named, before anything is written."""
    old = read_run_config(run_dir)
    if old is None:
        return "new" if not any(os.path.exists(os.path.join(run_dir, f)) for f in RESULT_FILES) else _unknown(run_dir)
    if not old.get("config_hash"):
        _unknown(run_dir)
    new_hash = cfg.config_hash()
    if old["config_hash"] != new_hash:
        diff = _diff(old.get("identity") or {}, cfg.identity())
        raise DataError(f"run folder '{run_dir}' holds a run of other settings ({diff}); it is neither resumed nor "
                        "replaced: give another --run_name, or leave --run_name out (runs are then named by their "
                        "settings), or delete the folder")
    finished = os.path.isfile(os.path.join(run_dir, "summary.json")) and \
        not os.path.isfile(os.path.join(run_dir, "last.pth"))
    if cfg.resume:
        return "done" if finished else ("resume" if os.path.isfile(os.path.join(run_dir, "last.pth")) else "restart")
    return "restart"


def _unknown(run_dir):
    raise DataError(f"run folder '{run_dir}' holds files of a run whose settings are unknown (no config hash in its "
                    "args.yaml: an older version, or not a train.py run); it is neither resumed nor replaced: give "
                    "another --run_name or delete the folder")


def _diff(old, new):
    keys = sorted(set(old) | set(new))
    parts = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(parts) if parts else "settings differ"


def clear_results(run_dir):
    """Remove every result file of an earlier run, so that none can be read as the new run's."""
    import shutil

    for name in RESULT_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)
    for name in RESULT_DIRS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)


# ------------------------------------------------------------------------------------------- command line
def build_parser():
    """train.py's flags (MRAC25's, plus the project's). Every default is None here: a flag counts only when
    it is given, over ``--config`` and the :class:`TrainConfig` defaults (shown in the help)."""
    from models.context import CONTEXT_LEVELS

    d = TrainConfig()
    p = argparse.ArgumentParser(add_help=True, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--config", default=None, help="a YAML of settings (e.g. a run's args.yaml, to replay it); flags given on "
                                       "the command line override it")
    add("--seed", type=int, help=f"seed of the split list, initialisation and batch order (default {d.seed})")
    add("--dataset", help=f"data set name in config.DATASETS (default {d.dataset}); split: "
                          "train_lst/<dataset>/seed<seed>.json")
    add("--split", help="explicit split list JSON (overrides the one from --dataset/--seed)")
    add("--emo_rule", help="label set in config.EMO_RULE (default: the data set's)")
    add("--save_root", help=f"root of run folders (default {d.save_root})")
    add("--save_as_time", action="store_true", default=None, help="name the run folder by the time")
    add("--run_name", help="name the run folder (default: <model>-<hash of its settings>)")
    add("--save_model", action="store_true", default=None,
        help="kept for MRAC25 compatibility: best.pth is always written, test.py needs it")
    add("--resume", action="store_true", default=None,
        help="continue an unfinished run from its last.pth, or skip a finished one (same settings only)")
    add("--model", help=f"registered model (models/), see --list_models (default {d.model})")
    add("--model_pretrain", help="checkpoint to initialise the model from (e.g. stage 1)")
    add("--feat", help="features, as \"['a','b']\" or a,b; each registered in config.py (default "
                       f"{','.join(d.feat)})")
    add("--lr", type=float, help=f"learning rate (default {d.lr:g})")
    add("--l2", type=float, help=f"weight decay (default {d.l2:g})")
    add("--batch_size", type=int, help=f"default {d.batch_size}")
    add("--num_workers", type=int, help=f"threads reading feature files into the packed cache (default {d.num_workers})")
    add("--epochs", type=int, help=f"default {d.epochs}")
    add("--patience", type=_number, metavar="N",
        help="early stopping: stop when N epochs in a row bring no better best epoch (higher validation weighted F1, "
             "or the same F1 at a lower validation loss: the rule that picks best.pth); the best epoch is still the "
             "one kept, reported and tested. Default: off (all --epochs)")
    add("--optimizer", help=f"adam (weight decay as an L2 gradient term, MRAC25's) or adamw (decoupled weight "
                            f"decay); default {d.optimizer}")
    add("--amp", help="mixed precision of the training steps: bf16, fp16 (with a gradient scaler) or off (float32, "
                      "the default); predictions stay float32")
    add("--compile", action="store_true", default=None,
        help="torch.compile the model (falls back to eager with a warning where torch cannot compile)")
    add("--fused", action="store_true", default=None,
        help="the optimiser's fused kernel where torch has one for the device (else a warning)")
    add("--no_tf32", dest="tf32", action="store_false", default=None,
        help="full float32 matrix products on CUDA (TF32 is on by default there; no effect on the CPU)")
    add_threads_flag(p)
    add("--gpu", type=int, help="CUDA device index (default 0; under torchrun GPU LOCAL_RANK is used)")
    add("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    add("--feat_norm", choices=["standard", "none"],
        help="z-score each feature with the training list's statistics (stored in the checkpoint; default standard)")
    add("--mmap", action="store_true", default=None,
        help="read batches from the memory-mapped packs instead of copying the split into memory")
    add("--test", action="store_true", default=None, help="score the best checkpoint on the data set's test list")
    add("--test_csv", help="test name list (default: the data set's)")
    add("--test_label_csv", help="test labels, for scoring only (default: the data set's)")
    add("--quiet", action="store_true", default=None, help="no progress bars")
    add("--no_plots", dest="plots", action="store_false", default=None,
        help="write no loss.png and metrics.png (nor --test's confusion-matrix PNG), e.g. for grids and tests")
    add("--tracker", metavar="NAME",
        help="also record the run in an experiment tracker (its settings, the per-epoch losses and metrics, the "
             "final ones): tensorboard (event files in <run>/tb/; pip install tensorboard) or mlflow (the server "
             "of MLFLOW_TRACKING_URI if set, else a local file store file:<save_root>/mlruns; pip install "
             "mlflow-skinny). Default: none. The run folder's files are the same either way")
    add("--allow_changed_inputs", action="store_true", default=None,
        help="with --config <run>/args.yaml: train even though the split list, --model_pretrain or a --dialogue_csv "
             "changed since that run was made (refused otherwise), with a warning naming them; never written to "
             "the new run's args.yaml")
    add("--list_models", action="store_true", help="print the registered models and exit")
    g = p.add_argument_group("model hyperparameters (default: models/model-tune.yaml)")
    g.add_argument("--hidden_dim", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--att_norm", choices=["softmax", "none"])
    g.add_argument("--seq_layers", type=int)
    g.add_argument("--seq_heads", type=int)
    g.add_argument("--seq_dim", type=int, help="width inside a frame-level sequence encoder")
    g.add_argument("--max_len", type=int, help="frames kept per frame-level sequence")
    g.add_argument("--expert_dropout", type=float, help="drop whole experts while training")
    g.add_argument("--input_noise", type=float, help="Gaussian noise on standardised inputs")
    g.add_argument("--grad_clip", type=float)
    g.add_argument("--context", type=int, metavar="K",
                   help="conversation context: 0 off (default); K > 0 adds a context layer over whole dialogues "
                        "(a convolution over 2K+1 neighbouring utterances, then a bidirectional GRU) on top of the "
                        "model's fused state (see --context_level)")
    g.add_argument("--context_hidden", type=int, help="width of the fused-level context layer (default 128)")
    g.add_argument("--context_level", choices=CONTEXT_LEVELS,
                   help="where the context layer sits: on the fused state (default), on each expert's state before "
                        "fusion (MiSTER-E, bc-LSTM's first level), or both (bc-LSTM's hierarchy)")
    add("--dialogue_csv", nargs="*", metavar="CSV",
        help="with --context: CSVs with name, the dialogue column (the data set's group_col, else 'dialogue') and "
             "order, read after the data set's label tables; names without a dialogue id stand alone")
    g.add_argument("--model_args", nargs="*", metavar="KEY=VALUE",
                   help="any other model hyperparameter, e.g. --model_args lambda_kl=0.2 lambda_con=0")
    return p


def _number(text):
    """``--patience``'s value as given: a whole number, else a float or the text, refused by
    :meth:`TrainConfig.validate` in one line (argparse would print its usage for ``1.5``)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def from_namespace(args, base=None):
    """A parsed command line over ``base`` (or over ``--config``): the flags that were given win."""
    cfg = base or TrainConfig()
    if getattr(args, "config", None):
        cfg = TrainConfig.from_yaml(args.config, cfg)
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"recorded_inputs"}
    given = {k: v for k, v in vars(args).items() if v is not None and k in names and k != "model_args"}
    if cfg.recorded_inputs:  # an input a flag chooses anew is the user's choice, not compared with the run's
        kept = {k: v for k, v in cfg.recorded_inputs.items() if k not in given}
        cfg = cfg.replace(recorded_inputs=kept)
    model_args = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}
    model_args.update(parse_model_args(getattr(args, "model_args", None)))
    return cfg.replace(**given, model_args=model_args)
