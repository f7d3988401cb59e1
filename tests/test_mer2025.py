"""MER2025 as a data set: a synthetic release in the official layout -> preprocess/mer2025.py -> splits -> train.py;
bad releases refused in one line with nothing written; the registered MER2025 features; and the transductive
use of the test candidates (pseudo labels allowed for mer2025 only, never gold labels, never validation)."""

import json
import os
import types

import numpy as np
import pandas as pd
import pytest

import config
from conftest import load_script
from dataloader.files import DataError, read_split_json

CLASSES = config.EMO_RULE["MER"]
N_LABELLED, N_POOL, N_CAND = 40, 100, 30
FEATS = {"m25-sig-UTT": ("text", 8), "m25-noise-UTT": ("audio", 5), "m25-au-FRA": ("au", 4)}
TRAIN_FLAGS = ["--seed", "0", "--model", "auto_attention", "--epochs", "2", "--lr", "3e-3", "--batch_size", "16",
               "--hidden_dim", "16", "--dropout", "0.1", "--quiet", "--device", "cpu", "--num_workers", "1"]


def make_release(root, feat_root, seed=0):
    """A tiny release in the official layout: 140 clips (video/, audio/, openface_face/), 40 labelled (MER's six
    labels, in turn), 30 candidates among the 100 unlabelled clips, subtitles, and under ``feat_root`` two -UTT
    folders (one carrying the class, one noise) and one -FRA folder of (T, 4) sequences, with a file for every
    labelled clip and candidate and for half of the other clips."""
    rng = np.random.default_rng(seed)
    names = [f"sample_{i:08d}" for i in range(N_LABELLED + N_POOL)]
    y = np.arange(len(names)) % len(CLASSES)
    for folder, ext in (("video", ".mp4"), ("audio", ".wav")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for n in names:
            open(os.path.join(root, folder, n + ext), "wb").close()
    for n in names[::2]:  # face crops for some clips only: the clip list is the union of the media folders
        os.makedirs(os.path.join(root, "openface_face", n), exist_ok=True)
    labelled, pool = names[:N_LABELLED], names[N_LABELLED:]
    cands = [pool[i] for i in rng.permutation(N_POOL)[:N_CAND]]
    pd.DataFrame({"name": labelled, "discrete": [CLASSES[k] for k in y[:N_LABELLED]],
                  "valence": np.round(rng.normal(0, 2, N_LABELLED), 2)}).to_csv(
        os.path.join(root, "track1_train_disdim.csv"), index=False)
    pd.DataFrame({"name": cands, "discrete": "neutral"}).to_csv(os.path.join(root, "track_all_candidates.csv"),
                                                                index=False)
    pd.DataFrame({"name": names, "chinese": [f"字幕{i}" for i in range(len(names))],
                  "english": [f"subtitle {CLASSES[k]} {i}" for i, k in enumerate(y)]}).to_csv(
        os.path.join(root, "subtitle_chieng.csv"), index=False)
    protos = rng.normal(0, 3, (len(CLASSES), 8))
    with_files = set(labelled) | set(cands) | set(pool[::2])
    for feat, (_, dim) in FEATS.items():
        os.makedirs(os.path.join(feat_root, feat), exist_ok=True)
        for n, k in zip(names, y):
            if n not in with_files:
                continue
            if feat == "m25-sig-UTT":
                x = protos[k] + rng.normal(0, 0.3, dim)
            elif feat == "m25-au-FRA":
                x = rng.normal(0, 0.3, (int(rng.integers(3, 9)), dim))
                x[:, k % dim] += 2.0
            else:
                x = rng.normal(0, 1, dim)
            np.save(os.path.join(feat_root, feat, n + ".npy"), x.astype(np.float16))
    return names, labelled, pool, cands


@pytest.fixture
def mer(tmp_path, monkeypatch):
    """A synthetic release, its features registered and config.DATASETS['mer2025'] pointed at tmp_path/out."""
    release, feat_root, out = tmp_path / "mer2025-dataset", tmp_path / "features", tmp_path / "out"
    names, labelled, pool, cands = make_release(str(release), str(feat_root))
    monkeypatch.setattr(config, "CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "PATH_TO_TRAIN_LST", str(tmp_path / "train_lst"))
    for feat, (modality, dim) in FEATS.items():
        monkeypatch.setitem(config.MODALITY_DICTS[modality], feat, [dim, str(feat_root / feat)])
    entry = dict(config.DATASETS["mer2025"])
    for key in ("label_csv", "test_csv", "unlabeled_csv", "transcripts_csv", "subtitle_csv", "teacher_dir"):
        entry[key] = str(out / os.path.basename(entry[key]))
    monkeypatch.setitem(config.DATASETS, "mer2025", entry)
    return types.SimpleNamespace(tmp=tmp_path, release=release, feat_root=feat_root, out=out, names=names,
                                 labelled=labelled, pool=pool, cands=cands, entry=entry)


def convert(mer, *extra):
    script = load_script("preprocess/mer2025.py")
    return script.main(["--release", str(mer.release), "--out", str(mer.out), "--features_root", str(mer.feat_root),
                        *extra])


# ------------------------------------------------------------------------------------------------- conversion


def test_release_converts_to_the_tables_config_reads(mer, capsys):
    assert convert(mer) == 0
    printed = capsys.readouterr().out
    labels = pd.read_csv(mer.out / "track1_train_disdim.csv")
    assert labels["name"].tolist() == mer.labelled and list(labels.columns) == ["name", "discrete", "valence"]
    assert set(labels["discrete"]) == set(CLASSES)
    assert pd.read_csv(mer.out / "test.csv")["name"].tolist() == mer.cands  # the release's order
    pool = pd.read_csv(mer.out / "unlabeled.csv")["name"].tolist()
    assert pool == mer.pool and set(mer.cands) <= set(pool)  # transductive: the candidates stay in the pool
    texts = pd.read_csv(mer.out / "transcripts.csv")
    assert len(texts) == len(mer.names) and texts["text"].iloc[0].startswith("subtitle ")
    assert list(pd.read_csv(mer.out / "subtitle_chieng.csv").columns) == ["name", "chinese", "english"]
    report = json.loads((mer.out / "mer2025_report.json").read_text(encoding="utf-8"))
    assert (report["clips"], report["labelled"], report["candidates"], report["pool"], report["pool_candidates"]) \
        == (140, 40, 30, 100, 30)
    assert report["clip_sources"] == {"video": 140, "audio": 140, "openface_face": 70} and report["transductive"]
    found = {f["feature"]: f for f in report["features"]}
    assert {k: (f["dim"], f["level"], f["registered"]) for k, f in found.items()} == {
        "m25-sig-UTT": (8, "utterance", True), "m25-noise-UTT": (5, "utterance", True),
        "m25-au-FRA": (4, "frame", True)}
    assert found["m25-sig-UTT"]["pool_covered"] == len(set(mer.cands) | set(mer.pool[::2]))
    assert "chinese-hubert-large-UTT" in report["registered_absent"]
    assert "m25-au-FRA: au, frame level, dim 4 as registered" in printed and "wrote track1_train_disdim.csv" in printed
    # the Chinese column on request; a rerun replaces the tables in place
    assert convert(mer, "--transcript_lang", "chinese") == 0
    assert pd.read_csv(mer.out / "transcripts.csv")["text"].iloc[0].startswith("字幕")


def test_converted_release_builds_splits_and_trains(mer, capsys):
    assert convert(mer) == 0
    build_splits = load_script("preprocess/build_splits.py")
    assert build_splits.main(["--dataset", "mer2025", "--seeds", "0"]) == 0
    split = read_split_json(os.path.join(config.PATH_TO_TRAIN_LST, "mer2025", "seed0.json"), CLASSES)
    assert len(split["train_info"]["names"]) + len(split["valid_info"]["names"]) == N_LABELLED
    import train as train_script
    capsys.readouterr()
    assert train_script.main(["--dataset", "mer2025", "--feat", ",".join(FEATS), "--save_root",
                              str(mer.tmp / "saved"), *TRAIN_FLAGS]) == 0
    out = capsys.readouterr().out
    run = out.split("RUN: ")[1].split()[0]
    summary = json.loads(open(os.path.join(run, "summary.json")).read())
    assert summary["best_epoch"] in (1, 2) and "BEST: epoch:" in out
    assert os.path.join("saved", "mer2025", "seed0") in run


def _release_fails(mer, capsys, needle):
    assert convert(mer) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    return err


def _rewrite(path, fn):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


BAD_RELEASES = {
    "missing label table": (lambda m: os.remove(m.release / "track1_train_disdim.csv"),
                            "track1_train_disdim.csv' does not exist: --release must be"),
    "wrong columns": (lambda m: _rewrite(m.release / "track1_train_disdim.csv",
                                         lambda d: d.rename(columns={"name": "id", "discrete": "label"})),
                      "not MER2025's track-1 layout"),
    "headerless table": (lambda m: (m.release / "track1_train_disdim.csv").write_text(
        "sample_00000000,happy,1.0\nsample_00000001,sad,-1.0\n"), "not MER2025's track-1 layout"),
    "duplicate labelled name": (lambda m: _rewrite(m.release / "track1_train_disdim.csv",
                                                   lambda d: pd.concat([d, d.iloc[[3]]])),
                                "lists 1 names more than once: sample_00000003"),
    "unknown label": (lambda m: _rewrite(m.release / "track1_train_disdim.csv",
                                         lambda d: d.assign(discrete=["fear"] + d["discrete"].tolist()[1:])),
                      "labels outside MER2025's six"),
    "labelled name without a clip": (lambda m: _rewrite(
        m.release / "track1_train_disdim.csv",
        lambda d: d.assign(name=["ghost"] + d["name"].tolist()[1:])), "names with no clip in video (140)"),
    "candidate not in the pool": (lambda m: _rewrite(
        m.release / "track_all_candidates.csv",
        lambda d: pd.concat([d, pd.DataFrame({"name": ["sample_99999999"], "discrete": ["neutral"]})])),
        "1 names that are not in the unlabelled pool"),
    "labelled candidate": (lambda m: _rewrite(
        m.release / "track_all_candidates.csv",
        lambda d: pd.concat([d, pd.DataFrame({"name": ["sample_00000000"], "discrete": ["neutral"]})])),
        "holds 1 labelled clips"),
    "duplicate candidate": (lambda m: _rewrite(m.release / "track_all_candidates.csv",
                                               lambda d: pd.concat([d, d.iloc[[0]]])),
                            "lists 1 names more than once: sample_"),
    "labelled name leaving its folder": (lambda m: _rewrite(
        m.release / "track1_train_disdim.csv",
        lambda d: d.assign(name=["../../ESCAPED"] + d["name"].tolist()[1:])), "'../../ESCAPED'"),
    "candidate name with a separator": (lambda m: _rewrite(
        m.release / "track_all_candidates.csv",
        lambda d: d.assign(name=["sub/dir"] + d["name"].tolist()[1:])), "'sub/dir'"),
    "no media": (lambda m: [os.rename(m.release / f, m.release / (f + ".bak"))
                            for f in ("video", "audio", "openface_face")], "no clips under"),
    "feature dim differs from config": (lambda m: config.FEAT_TEXT_DICT.__setitem__(
        "m25-sig-UTT", [16, str(m.feat_root / "m25-sig-UTT")]), "registers 'm25-sig-UTT' with dim 16"),
    "feature file missing for a candidate": (lambda m: os.remove(m.feat_root / "m25-noise-UTT" / (m.cands[0] + ".npy")),
                                             "no file for 0 labelled clips and 1 candidates"),
}


@pytest.mark.parametrize("case", list(BAD_RELEASES))
def test_bad_release_is_refused_in_one_line_and_nothing_is_written(mer, capsys, case):
    spoil, needle = BAD_RELEASES[case]
    spoil(mer)
    _release_fails(mer, capsys, needle)
    assert not mer.out.exists()
    assert not [p for p in mer.tmp.iterdir() if p.name.startswith(".out")]  # no staging folder left behind


def test_failed_rerun_leaves_the_earlier_tables(mer, capsys):
    assert convert(mer) == 0
    before = {p.name: p.read_bytes() for p in mer.out.iterdir()}
    _rewrite(mer.release / "track1_train_disdim.csv", lambda d: d.assign(discrete="joy"))
    _release_fails(mer, capsys, "'joy' x40")
    assert {p.name: p.read_bytes() for p in mer.out.iterdir()} == before


# ------------------------------------------------------------------------------------------------- registry


def test_mer2025_features_are_registered_and_absent_folders_are_harmless():
    check_feat_dim = load_script("preprocess/check_feat_dim.py")
    assert config.find_feature("chinese-hubert-large-UTT") == (
        "audio", 1024, os.path.join(config.FEATURE_ROOT, "mer2025", "chinese-hubert-large-UTT"))
    assert config.find_feature("clip-vit-large-patch14-UTT")[:2] == ("video", 768)
    assert config.find_feature("InternVL_2_5_HiCo_R16-UTT")[:2] == ("video", 4096)
    assert config.find_feature("Qwen2-Audio-7B-UTT")[:2] == ("audio", 1280)
    assert config.find_feature("bloom-7b1-UTT")[:2] == ("text", 4096)
    assert config.is_frame_level("openface-au-FRM") and not config.is_frame_level("chinese-hubert-large-UTT")
    for name, (modality, dim) in config.MER2025_FEATURES.items():
        assert config.find_feature(name)[:2] == (modality, dim), name
        root = config.find_feature(name)[2]
        if not os.path.isdir(root):  # never extracted here: listed as absent, nothing raised
            assert check_feat_dim.check_feature(name)["status"] == "absent"
    entry = config.DATASETS["mer2025"]
    assert entry["emo_rule"] == "MER" and entry["group_col"] is None and entry["transductive"] is True
    assert entry["label_csv"] == os.path.join(config.FEATURE_ROOT, "mer2025", "track1_train_disdim.csv")
    assert not any(config.DATASETS[d].get("transductive") for d in config.DATASETS if d != "mer2025")


# ------------------------------------------------------------------------------------------------- transductive


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def _pseudo_split(mer, n=10, source="consensus"):
    """The seed-0 split plus ``n`` pseudo-labelled candidates, written by the project's own writer."""
    from pseudo.drivers import forbidden_names, write_pseudo_split
    doc = read_split_json(os.path.join(config.PATH_TO_TRAIN_LST, "mer2025", "seed0.json"), CLASSES)
    log = _Log()
    forbidden = forbidden_names(doc, config.DATASETS["mer2025"], log=log)
    frame = pd.DataFrame({"name": mer.cands[:n], "emo": [CLASSES[i % 6] for i in range(n)], "source": source,
                          "confidence": 1.0, "weight": 1.0})
    path = str(mer.tmp / "pseudo.json")
    write_pseudo_split(path, doc, frame, forbidden)
    return path, doc, forbidden, log


def _prepared(mer):
    assert convert(mer) == 0
    assert load_script("preprocess/build_splits.py").main(["--dataset", "mer2025", "--seeds", "0"]) == 0


def test_transductive_candidates_train_as_pseudo_labels_and_the_run_says_so(mer, capsys):
    _prepared(mer)
    path, doc, forbidden, log = _pseudo_split(mer)
    assert set(doc["valid_info"]["names"]) <= forbidden and not forbidden & set(mer.cands)
    assert "transductive: the 30 test candidates" in log.lines[0]
    assert "DATASETS['mer2025']['transductive']" in log.lines[0]
    import train as train_script
    capsys.readouterr()
    assert train_script.main(["--dataset", "mer2025", "--split", path, "--feat", "m25-sig-UTT", "--save_root",
                              str(mer.tmp / "saved"), *TRAIN_FLAGS]) == 0
    run = capsys.readouterr().out.split("RUN: ")[1].split()[0]
    text = open(os.path.join(run, "train.log"), encoding="utf-8").read()
    assert ("transductive: 10 test candidates carry pseudo labels (allowed for data set mer2025: "
            "DATASETS['mer2025']['transductive'])") in text


def test_transductive_never_allows_gold_labels_or_validation(mer):
    from engine.trainer import check_no_test_names
    _prepared(mer)
    path, doc, _, _ = _pseudo_split(mer)
    split = read_split_json(path, CLASSES)
    cfg = types.SimpleNamespace(dataset="mer2025", test_csv=None)
    log = _Log()
    assert check_no_test_names(cfg, split, path, log=log) == 10
    assert "10 test candidates carry pseudo labels" in log.lines[0]
    gold = json.loads(json.dumps(split))
    gold["train_info"]["sources"] = ["labelled"] * len(gold["train_info"]["names"])
    with pytest.raises(DataError, match="a gold label in train_info"):
        check_no_test_names(cfg, gold, path)
    del gold["train_info"]["sources"]  # no sources list: every row is a gold label
    with pytest.raises(DataError, match="a gold label in train_info"):
        check_no_test_names(cfg, gold, path)
    valid = json.loads(json.dumps(doc))
    for key, value in (("names", mer.cands[0]), ("emos", "happy"), ("vals", 0.0)):
        valid["valid_info"][key].append(value)
    valid["valid_info"]["sources"] = ["consensus"] * len(valid["valid_info"]["names"])
    with pytest.raises(DataError, match="in valid_info: .*never validate"):
        check_no_test_names(cfg, valid, path)


def test_without_the_transductive_key_test_names_stay_refused(mer, monkeypatch):
    from engine.trainer import check_no_test_names
    from pseudo.drivers import forbidden_names, write_pseudo_split
    _prepared(mer)
    path, _, _, _ = _pseudo_split(mer)  # written while mer2025 is transductive
    monkeypatch.setitem(config.DATASETS, "mer2025", {**mer.entry, "transductive": False})
    cfg = types.SimpleNamespace(dataset="mer2025", test_csv=None)
    with pytest.raises(DataError, match="remove them from the split \\(test names are only scored\\)"):
        check_no_test_names(cfg, read_split_json(path, CLASSES), path)
    doc = read_split_json(os.path.join(config.PATH_TO_TRAIN_LST, "mer2025", "seed0.json"), CLASSES)
    log = _Log()
    forbidden = forbidden_names(doc, config.DATASETS["mer2025"], log=log)
    assert set(mer.cands) <= forbidden and not log.lines
    frame = pd.DataFrame({"name": mer.cands[:3], "emo": "happy", "source": "teacher", "confidence": 1.0,
                          "weight": 1.0})
    with pytest.raises(DataError, match="validation/test"):
        write_pseudo_split(str(mer.tmp / "bad.json"), doc, frame, forbidden)


def test_every_registered_feature_has_its_command_in_the_readme():
    """Each of config.MER2025_FEATURES has a recipe; the README's MER2025 table has a row naming the feature and,
    for those this project makes, the recipe's model and flags (or says plainly how to bring it); --commands
    prints one entry per feature."""
    import contextlib
    import io
    import os

    import mer2025 as script
    from corpora.mer2025 import FEATURE_RECIPES, feature_command

    assert set(FEATURE_RECIPES) == set(config.MER2025_FEATURES)
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"),
                  encoding="utf-8").read()
    table = readme.split("## MER2025: the runner-up's features from the clips", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for name, (_, dim) in config.MER2025_FEATURES.items():
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, f"{name} has no row in the README's MER2025 table"
        recipe = FEATURE_RECIPES[name]
        if "model" in recipe:
            cell = f"--modality {recipe['modality']} --model {recipe['model']}"
            assert cell + (" " + " ".join(recipe["flags"]) if recipe.get("flags") else "") in row, row
            assert feature_command(name).endswith(cell + (" " + " ".join(recipe["flags"]) if recipe.get("flags")
                                                          else ""))
        elif "external" in recipe:
            assert "not in transformers" in row and feature_command(name) is None
        assert str(dim) in row
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert script.main(["--commands"]) == 0
    assert all(f"{name} (" in out.getvalue() for name in config.MER2025_FEATURES)
