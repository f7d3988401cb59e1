"""Label sets, feature registry and default paths: the one place a user edits.

Feature dictionaries map a feature name to ``[dim, root]``: ``root`` is a folder holding one
``<sample>.npy`` per sample, of shape ``(dim,)`` (utterance level) or ``(T, dim)`` (frame level,
``FEAT_AU_DICT`` only). ``preprocess/check_feat_dim.py`` compares every entry with what is on disk.

Every path defaults to a folder inside this repository. Two environment variables move them without
editing code:

* ``MER_FEATURE_ROOT``: base folder of the feature folders and data sets (default ``<repo>/features``)
* ``MER_CACHE_ROOT``: where packed feature arrays are cached (default ``<FEATURE_ROOT>/.cache``)
* ``MER_TRAIN_LST``: where split lists are written and read (default ``<repo>/train_lst``)

To add your own feature, add one line to the dictionary of its modality, e.g.::

    FEAT_AUDIO_DICT["chinese-hubert-large-UTT"] = [1024, os.path.join(FEATURE_ROOT, "mer2025", "chinese-hubert-large-UTT")]

then run ``python preprocess/check_feat_dim.py --feat chinese-hubert-large-UTT``.
"""

import os

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
FEATURE_ROOT = os.environ.get("MER_FEATURE_ROOT", os.path.join(REPO_ROOT, "features"))
CACHE_ROOT = os.environ.get("MER_CACHE_ROOT", os.path.join(FEATURE_ROOT, ".cache"))
PATH_TO_TRAIN_LST = os.environ.get("MER_TRAIN_LST", os.path.join(REPO_ROOT, "train_lst"))
SAVE_ROOT = os.path.join(REPO_ROOT, "saved")
MODEL_TUNE_YAML = os.path.join(REPO_ROOT, "models", "model-tune.yaml")

# ---------------------------------------------------------------------------------------------
# Label sets: the order is the class index order of every model, prediction and metric.
# ---------------------------------------------------------------------------------------------
EMO_RULE = {
    # MER2023-2025 discrete track
    "MER": ["neutral", "angry", "happy", "sad", "worried", "surprise"],
    # MELD (Poria et al., 2019)
    "MELD": ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"],
    # CMU-MOSI binary sentiment (label 0 -> negative, 1 -> positive)
    "MOSI": ["negative", "positive"],
    # IEMOCAP six-class protocol
    "IEMOCAP": ["happy", "sad", "neutral", "angry", "excited", "frustrated"],
    # CREMA-D six acted emotions
    "CREMAD": ["neutral", "angry", "happy", "sad", "fear", "disgust"],
    # RAVDESS eight speech emotions
    "RAVDESS": ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"],
}
BUILTIN_EMO_RULES = frozenset(EMO_RULE)  # the label sets above; a dataset.yaml's `labels` registers others


def _feat(*parts):
    return os.path.join(FEATURE_ROOT, *parts)


# ---------------------------------------------------------------------------------------------
# Feature registry, one dictionary per modality: name -> [dim, root]
# The demo entries are written by `python preprocess/make_demo.py`; the MOSI entries by
# `python preprocess/mosi_bclstm.py`.
# ---------------------------------------------------------------------------------------------
FEAT_VIDEO_DICT = {
    "demo-clip-vit-base-UTT": [512, _feat("demo", "demo-clip-vit-base-UTT")],
    # the clip demo (`python preprocess/make_clip_demo.py`, then preprocess/extract_features.py; docs/features.md)
    "clipdemo-tiny-clip-UTT": [32, _feat("clipdemo", "tiny-clip-UTT")],
    "demo-videomae-large-UTT": [1024, _feat("demo", "demo-videomae-large-UTT")],
    "mosi-bclstm-video": [100, _feat("mosi", "mosi-bclstm-video")],
}

FEAT_AUDIO_DICT = {
    "demo-hubert-large-UTT": [1024, _feat("demo", "demo-hubert-large-UTT")],
    "demo-wav2vec2-base-UTT": [768, _feat("demo", "demo-wav2vec2-base-UTT")],
    "mosi-bclstm-audio": [73, _feat("mosi", "mosi-bclstm-audio")],
    "clipdemo-tiny-hubert-UTT": [64, _feat("clipdemo", "tiny-hubert-UTT")],
    "clipdemo-tiny-hubert-FRM": [64, _feat("clipdemo", "tiny-hubert-FRM")],
}

FEAT_TEXT_DICT = {
    "demo-roberta-large-UTT": [1024, _feat("demo", "demo-roberta-large-UTT")],
    "demo-bert-base-UTT": [768, _feat("demo", "demo-bert-base-UTT")],
    "mosi-bclstm-text": [100, _feat("mosi", "mosi-bclstm-text")],
    # MOSI transcripts embedded by the project: `python preprocess/mosi_bclstm.py --text_features minilm,tfidf`
    "mosi-minilm-UTT": [384, _feat("mosi", "mosi-minilm-UTT")],
    "mosi-tfidf-UTT": [128, _feat("mosi", "mosi-tfidf-UTT")],
    # MELD transcripts, written by `python preprocess/meld.py --features minilm,tfidf`
    "meld-minilm-UTT": [384, _feat("meld", "meld-minilm-UTT")],
    "meld-tfidf-UTT": [256, _feat("meld", "meld-tfidf-UTT")],
    "clipdemo-tiny-bert-UTT": [64, _feat("clipdemo", "tiny-bert-langeng-UTT")],
}

# Frame-level (T, dim) sequences, e.g. OpenFace: 17 AU intensities (_r) then 18 AU presences (_c).
FEAT_AU_DICT = {
    "demo-openface-au-FRM": [35, _feat("demo", "demo-openface-au-FRM")],
}

# Knowledge from a vision-language model: per-emotion scores, description embeddings.
FEAT_VLM_DICT = {
    "demo-vlm-scores": [6, _feat("demo", "demo-vlm-scores")],
    # description embeddings, written by `python preprocess/vlm_features.py --dataset demo --teacher ...`
    "demo-vlm-desc-tfidf": [64, _feat("demo", "demo-vlm-desc-tfidf")],
    "demo-vlm-desc-minilm": [384, _feat("demo", "demo-vlm-desc-minilm")],
}

MODALITY_DICTS = {
    "video": FEAT_VIDEO_DICT,
    "audio": FEAT_AUDIO_DICT,
    "text": FEAT_TEXT_DICT,
    "au": FEAT_AU_DICT,
    "vlm": FEAT_VLM_DICT,
}
FRAME_LEVEL_MODALITIES = {"au"}
# Any feature whose name ends in one of these is a frame-level (T, dim) sequence, whatever its modality:
# `-FRM` folders written by preprocess/extract_features.py --level FRM, `-FRA` folders written by MERTools.
FRAME_LEVEL_SUFFIXES = ("-FRM", "-FRA")

# ---------------------------------------------------------------------------------------------
# MER2025 features, name -> (modality, dim), registered below as FEATURE_ROOT/mer2025/<name>, where
# `preprocess/extract_features.py --dataset mer2025` writes them (docs/features.md, "MER2025").
# Names and dims: the feature dictionaries of the MRAC25 runner-up's code (github.com/zhuyjan/MER2025-MRAC25,
# config.py; paper arXiv:2508.06036), which keep MERTools' naming (github.com/zeroQiaoba/MERTools, MER2025/
# MER2025_Track1: `<model>-UTT`, `-FRA` for frame level). Whisper's and Qwen2-Audio's 1280 is their audio
# encoder's width. openface-au-FRM is this project's OpenFace AU sequence ((T, 35): preprocess/openface_au.py,
# run_openface.py --au_out), not a file of theirs.
# A registered folder that does not exist costs nothing: it matters only to a run that uses the feature
# (train.py stops naming the folder; preprocess/check_feat_dim.py lists it as absent). An entry written in
# a FEAT_*_DICT above wins over the one made here.
# ---------------------------------------------------------------------------------------------
MER2025_FEATURES = {
    # video (face crops, frames)
    "clip-vit-large-patch14-UTT": ("video", 768),
    "clip-vit-base-patch32-UTT": ("video", 512),
    "InternVL_2_5_HiCo_R16-UTT": ("video", 4096),
    "dinov2-large-UTT": ("video", 1024),
    "videomae-large-UTT": ("video", 1024),
    "videomae-base-UTT": ("video", 768),
    "manet_UTT": ("video", 1024),
    "emonet_UTT": ("video", 256),
    "senet50face_UTT": ("video", 512),
    "resnet50face_UTT": ("video", 512),
    # audio
    "chinese-hubert-large-UTT": ("audio", 1024),
    "chinese-hubert-base-UTT": ("audio", 768),
    "Qwen2-Audio-7B-UTT": ("audio", 1280),
    "whisper-large-v2-UTT": ("audio", 1280),
    "chinese-wav2vec2-large-UTT": ("audio", 1024),
    "chinese-wav2vec2-base-UTT": ("audio", 768),
    "wavlm-base-UTT": ("audio", 768),
    # text (the Chinese subtitles)
    "chinese-roberta-wwm-ext-large-UTT": ("text", 1024),
    "chinese-roberta-wwm-ext-UTT": ("text", 768),
    "chinese-macbert-large-UTT": ("text", 1024),
    "chinese-macbert-base-UTT": ("text", 768),
    "bloom-7b1-UTT": ("text", 4096),
    # OpenFace AU sequences: 17 intensities, then 18 presences
    "openface-au-FRM": ("au", 35),
}


def _register(features, dataset):
    """Put ``{name: (modality, dim)}`` into the modality dictionaries with roots FEATURE_ROOT/<dataset>/<name>,
    leaving alone any name a dictionary already holds."""
    for name, (modality, dim) in features.items():
        MODALITY_DICTS[modality].setdefault(name, [int(dim), _feat(dataset, name)])


_register(MER2025_FEATURES, "mer2025")

# ---------------------------------------------------------------------------------------------
# Data sets: where each one's label tables live. `--dataset NAME` in the scripts refers to these.
#   label_csv:        name,discrete[,valence]   labelled training pool (splits are drawn from it)
#   test_csv:         name                      names to predict
#   test_label_csv:   name,discrete[,valence]   test ground truth, used only for scoring
#   unlabeled_csv:    name                      unlabelled pool (semi-supervised learning)
#   unlabeled_truth:  name,discrete             hidden truth of the unlabelled pool (demo only)
#   transcripts_csv:  name,text                 utterance transcripts (offline text teachers read them)
# Raw material for preprocess/extract_features.py (each optional; its flags --audio_dir ... override them):
#   audio_dir:        <name>.wav|flac|...       audio files
#   video_dir:        <name>.mp4|avi|mkv|...    video files (their audio track, or their frames)
#   face_dir:         <name>/<name>.npy         face crops in the MERTools layout, or <name>/ image folders
#   subtitle_csv:     name,chinese,english      subtitles (the MER2025 subtitle_chieng.csv layout)
# Entries may be missing (None) for data sets that lack them.
#   transductive:     True | False (default)    whether the challenge lets the test names be pseudo-labelled.
#                     True (MER2025-SEMI: the candidates to predict lie inside the unlabelled pool, and
#                     labelling them from unlabelled data is allowed): pseudo_label.py and semi.py keep the test
#                     names in the pool, and train.py accepts them in train_info as pseudo-labelled rows only
#                     (their `sources` entry is not "labelled"), never as gold labels and never in valid_info;
#                     both log how many. False or absent: test names never get a pseudo label (refused).
# ---------------------------------------------------------------------------------------------
DATASETS = {
    "demo": {
        "emo_rule": "MER",
        "label_csv": _feat("demo", "track1_train_disdim.csv"),
        "test_csv": _feat("demo", "test.csv"),
        "test_label_csv": _feat("demo", "test_labels.csv"),
        "unlabeled_csv": _feat("demo", "unlabeled.csv"),
        "unlabeled_truth": _feat("demo", "unlabeled_truth.csv"),
        "teacher_dir": _feat("demo", "teachers"),
        "group_col": None,
    },
    "mosi": {
        "emo_rule": "MOSI",
        "label_csv": _feat("mosi", "train_labels.csv"),
        "test_csv": _feat("mosi", "test.csv"),
        "test_label_csv": _feat("mosi", "test_labels.csv"),
        "unlabeled_csv": None,
        "unlabeled_truth": None,
        "teacher_dir": _feat("mosi", "teachers"),
        # utterances of one video share a speaker: validation splits keep videos whole
        "group_col": "video",
        "transcripts_csv": _feat("mosi", "transcripts.csv"),
    },
    # written by `python preprocess/meld.py`: label_csv is the official train + dev, the official dev split
    # is train_lst/meld/official.json
    "meld": {
        "emo_rule": "MELD",
        "label_csv": _feat("meld", "train_labels.csv"),
        "test_csv": _feat("meld", "test.csv"),
        "test_label_csv": _feat("meld", "test_labels.csv"),
        "unlabeled_csv": None,
        "unlabeled_truth": None,
        "teacher_dir": _feat("meld", "teachers"),
        # the utterances of one dialogue are each other's context: validation splits keep dialogues whole
        "group_col": "dialogue",
        "transcripts_csv": _feat("meld", "transcripts.csv"),
    },
    # a few dozen synthetic clips in the MER2025 release layout: `python preprocess/make_clip_demo.py`
    "clipdemo": {
        "emo_rule": "MER",
        "label_csv": _feat("clipdemo", "track1_train_disdim.csv"),
        "test_csv": _feat("clipdemo", "test.csv"),
        "test_label_csv": _feat("clipdemo", "test_labels.csv"),
        "unlabeled_csv": _feat("clipdemo", "unlabeled.csv"),
        "unlabeled_truth": None,
        "teacher_dir": None,
        "group_col": None,
        "audio_dir": _feat("clipdemo", "audio"),
        "video_dir": _feat("clipdemo", "video"),
        "face_dir": _feat("clipdemo", "openface_face"),
        "subtitle_csv": _feat("clipdemo", "subtitle_chieng.csv"),
    },
    # MER2025 track 1 (MER-SEMI), written from the official release by `python preprocess/mer2025.py --release
    # DIR`: the labelled clips, the candidates to predict (test.csv: the organisers keep the labels) and every
    # other clip as the unlabelled pool, candidates included; features: MER2025_FEATURES above
    "mer2025": {
        "emo_rule": "MER",
        "label_csv": _feat("mer2025", "track1_train_disdim.csv"),
        "test_csv": _feat("mer2025", "test.csv"),
        "test_label_csv": None,
        "unlabeled_csv": _feat("mer2025", "unlabeled.csv"),
        "unlabeled_truth": None,
        "teacher_dir": _feat("mer2025", "teachers"),
        "group_col": None,
        "transcripts_csv": _feat("mer2025", "transcripts.csv"),
        "subtitle_csv": _feat("mer2025", "subtitle_chieng.csv"),
        "transductive": True,
    },
}


# ---------------------------------------------------------------------------------------------
# Data sets registered by a file instead of code: every <FEATURE_ROOT>/<folder>/dataset.yaml (written by
# `python preprocess/import_dataset.py`; features are added to it by preprocess/extract_features.py). It holds
# the DATASETS keys above with paths relative to its folder, `labels` for a new label set (registered under
# its emo_rule), and `features: {name: {modality, dim, folder}}`. An entry written in this file wins over a
# registration of the same name.
# ---------------------------------------------------------------------------------------------
REGISTRATION_FILE = "dataset.yaml"
REGISTRATION_PROBLEMS = []  # "<file>: <problem>" of registration files that could not be read
_PATH_KEYS = ("label_csv", "test_csv", "test_label_csv", "unlabeled_csv", "unlabeled_truth", "transcripts_csv",
              "teacher_dir", "audio_dir", "video_dir", "face_dir", "subtitle_csv")


def load_registration(path):
    """Register the data set, label set and features one ``dataset.yaml`` describes; returns the data set's name."""
    import yaml

    folder = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8-sig") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict) or not doc.get("name") or not doc.get("emo_rule"):
        raise ValueError("it needs at least 'name' and 'emo_rule'")
    name, rule = str(doc["name"]), str(doc["emo_rule"])
    if doc.get("labels"):
        EMO_RULE.setdefault(rule, [str(x) for x in doc["labels"]])
    if rule not in EMO_RULE:
        raise ValueError(f"emo_rule '{rule}' is not in config.EMO_RULE; add 'labels: [...]' to register it")
    entry = {k: (os.path.join(folder, str(v)) if k in _PATH_KEYS and v not in (None, "") else v)
             for k, v in doc.items() if k not in ("name", "labels", "features")}
    feats = doc.get("features") or {}
    for feat, spec in feats.items():
        if spec.get("modality") not in MODALITY_DICTS:
            raise ValueError(f"feature '{feat}': modality must be one of {', '.join(MODALITY_DICTS)}")
        MODALITY_DICTS[spec["modality"]].setdefault(feat, [int(spec["dim"]), os.path.join(folder, str(spec["folder"]))])
    entry.update(registration=os.path.abspath(path), features=list(feats))
    DATASETS.setdefault(name, entry)
    return name


def register_feature(dataset, feature, modality, dim, folder):
    """Add a feature to a data set's ``dataset.yaml`` (and to this process's registry); returns the file."""
    import yaml

    path = DATASETS[dataset]["registration"]
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    doc = yaml.safe_load(text) or {}
    rel = os.path.relpath(os.path.abspath(folder), os.path.dirname(path))
    doc.setdefault("features", {})
    doc["features"] = dict(doc["features"] or {}, **{feature: {"modality": modality, "dim": int(dim), "folder": rel}})
    head = "".join(line for line in text.splitlines(True) if line.startswith("#"))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(head)
        yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    MODALITY_DICTS[modality][feature] = [int(dim), os.path.abspath(folder)]
    DATASETS[dataset].setdefault("features", []).append(feature)
    return path


def dataset_features(dataset):
    """The registered features of a data set: those its registration lists, else those whose folder lies in the
    folder of its label table (features/<dataset>/...)."""
    ds = DATASETS[dataset]
    if ds.get("features"):
        return list(ds["features"])
    home = os.path.dirname(os.path.abspath(ds["label_csv"])) if ds.get("label_csv") else None
    if not home:
        return []
    return [k for table in MODALITY_DICTS.values() for k, (_, root) in table.items()
            if os.path.abspath(root).startswith(home + os.sep)]


def _load_registrations(root):
    if not os.path.isdir(root):
        return
    for sub in sorted(os.listdir(root)):
        path = os.path.join(root, sub, REGISTRATION_FILE)
        if os.path.isfile(path):
            try:
                load_registration(path)
            except Exception as e:  # one bad file must not stop every command; it is named where it matters
                REGISTRATION_PROBLEMS.append(f"{path}: {e}")
                import sys

                print(f"warning: data set registration {path} is ignored: {e}; fix it", file=sys.stderr)


_load_registrations(FEATURE_ROOT)


def find_feature(name):
    """Return ``(modality, dim, root)`` of a registered feature, or raise naming the dictionaries."""
    for modality, table in MODALITY_DICTS.items():
        if name in table:
            dim, root = table[name]
            return modality, int(dim), root
    known = sorted(k for table in MODALITY_DICTS.values() for k in table)
    raise KeyError(
        f"feature '{name}' is not registered in config.py. Known features: {', '.join(known)}. "
        "Add it to the FEAT_*_DICT of its modality as name: [dim, root]."
    )


def is_frame_level(name):
    """True for a registered feature that holds (T, dim) sequences: the AU dictionary, or a name ending in
    ``-FRM``/``-FRA`` in any dictionary."""
    modality, _, _ = find_feature(name)
    return modality in FRAME_LEVEL_MODALITIES or str(name).endswith(FRAME_LEVEL_SUFFIXES)


def all_features():
    """Every registered feature name, in registry order."""
    return [k for table in MODALITY_DICTS.values() for k in table]
