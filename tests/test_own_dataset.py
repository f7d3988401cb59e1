"""The "Bring your own data set" walk-through of docs/datasets.md, command by command, on a synthetic conversation data set this test
writes: one table -> registered data set -> official split -> text features -> training with and without context
-> teacher -> low-resource table -> ensemble and submission. The commands are read from the page itself;
features/, train_lst/ and saved/ move to temporary folders."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from common.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "tests/test_own_dataset.py runs the commands of the next block"
LABELS = ["neutral", "joy", "anger", "sadness"]
CUES = {"joy": ["great", "wonderful", "fantastic", "such good news"], "anger": ["furious", "unacceptable", "so annoying",
                                                                           "outrageous"],
        "sadness": ["heartbreaking", "so lonely", "depressing", "a loss"],
        "neutral": ["at noon", "on the list", "in the other room", "scheduled"]}
FILLER = ["Yes.", "Hmm.", "Right, go on.", "Really?", "I see what you mean.", "Okay."]
SUBJECTS = ["the trip", "my job", "this news", "the game", "our plan", "the weather"]


def write_corpus(path, n_dialogues=90, seed=0):
    """Dialogues with one mood each: most utterances say it with a cue word; a third are fillers ("Hmm.") that
    carry the dialogue's mood as their label, recoverable only from the neighbours. 10% of training labels are
    left empty (the unlabelled pool); dialogues 60-74 are the official dev part, 75-89 the test part."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_dialogues):
        mood = LABELS[d % 4]
        part = "train" if d < 60 else ("dev" if d < 75 else "test")
        for t in range(int(rng.integers(4, 8))):
            if rng.random() < 0.35:
                label, text = mood, str(rng.choice(FILLER))
            else:
                label = mood if rng.random() < 0.8 else str(rng.choice(LABELS))
                text = f"{str(rng.choice(SUBJECTS)).capitalize()} is {rng.choice(CUES[label])}."
            unlabelled = part == "train" and rng.random() < 0.1
            rows.append({"utt_id": f"c{d:03d}_u{t}", "conversation": f"c{d:03d}", "turn": t, "part": part,
                         "text": text, "emotion": "" if unlabelled else label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def readme_commands():
    text = open(os.path.join(REPO, "docs", "datasets.md"), encoding="utf-8").read()
    block = text[text.index(MARKER):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[:block.index("```")].replace("\\\n", " ")
    return [line.strip() for line in block.strip().splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow  # a walk-through of separate processes: about 95 s
def test_readme_own_data_set_runs_end_to_end(tmp_path):
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == [
        "preprocess/import_dataset.py", "preprocess/build_splits.py", "preprocess/extract_features.py",
        "preprocess/check_feat_dim.py", "train.py", "train.py", "preprocess/offline_teacher.py",
        "bench/low_resource.py", "ensemble.py"]
    corpus = write_corpus(tmp_path / "my_corpus.csv")
    env = dict(os.environ, MER_FEATURE_ROOT=str(tmp_path / "features"), MER_TRAIN_LST=str(tmp_path / "train_lst"),
               MER_CACHE_ROOT=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    outputs = []
    for cmd in commands:
        for folder in ("features", "train_lst", "saved"):
            cmd = re.sub(rf"(?<![\w/]){folder}/", str(tmp_path / folder) + "/", cmd)
        argv = shlex.split(cmd.replace("my_corpus.csv", str(tmp_path / "my_corpus.csv")))
        argv = [sys.executable] + argv[1:]
        if argv[1] == "train.py":
            argv += ["--save_root", str(tmp_path / "saved"), "--quiet"]
        elif argv[1] in ("preprocess/extract_features.py", "preprocess/offline_teacher.py"):
            argv += ["--quiet"]
        res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout + res.stderr)

    home = tmp_path / "features" / "convo"
    reg = yaml.safe_load((home / "dataset.yaml").read_text())
    assert reg["emo_rule"] == "CONVO" and reg["labels"] == LABELS and reg["group_col"] == "dialogue"
    assert reg["features"]["convo-minilm-UTT"] == {"modality": "text", "dim": 384, "folder": "minilm-UTT"}
    labelled = corpus[(corpus.part != "test") & (corpus.emotion != "")]
    assert len(pd.read_csv(home / "train_labels.csv")) == len(labelled)
    assert pd.read_csv(home / "test.csv")["name"].tolist() == corpus[corpus.part == "test"]["utt_id"].tolist()
    assert len(pd.read_csv(home / "unlabeled.csv")) == ((corpus.part == "train") & (corpus.emotion == "")).sum()
    split = json.loads((tmp_path / "train_lst" / "convo" / "official.json").read_text())
    assert set(split["valid_info"]["names"]) == set(labelled[labelled.part == "dev"]["utt_id"])
    turn, conv = dict(zip(corpus.utt_id, corpus.turn)), dict(zip(corpus.utt_id, corpus.conversation))
    info = split["train_info"]
    assert info["orders"] == [float(turn[n]) for n in info["names"]]
    assert info["dialogues"] == [conv[n] for n in info["names"]]
    assert "registered in" in outputs[2] and "as convo-minilm-UTT" in outputs[2]
    assert re.search(r"^convo-minilm-UTT .* ok$", outputs[3], re.M) and "demo-" not in outputs[3]

    scores = {}
    for run in ("context", "no-context"):
        metrics = json.loads((tmp_path / "saved" / "convo" / "seed0" / "auto_attention" / run /
                              "test_metrics.json").read_text())
        scores[run] = metrics["test_f1"]
    # fillers carry their dialogue's mood: only the context model can get them right
    assert scores["context"] > scores["no-context"] + 0.05, scores
    table = pd.read_csv(tmp_path / "saved" / "low_resource_convo" / "table.csv")
    assert sorted(table["strategy"]) == ["acl", "none", "teacher"] and (table["n"] == 40).all()
    sub = pd.read_csv(tmp_path / "saved" / "convo_submission.csv")
    assert sub["name"].tolist() == corpus[corpus.part == "test"]["utt_id"].tolist()
    assert set(sub["discrete"]) <= set(LABELS)

    # check_feat_dim: a missing file is a missing name to extract, not a dim to fix
    os.remove(home / "minilm-UTT" / "c080_u1.npy")
    res = subprocess.run([sys.executable, "preprocess/check_feat_dim.py", "--dataset", "convo"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "1 names of data set 'convo' have no file (e.g. c080_u1): extract them" in res.stderr
    assert "fix the dims" not in res.stderr and "set the dim" not in res.stderr


@pytest.mark.parametrize("change,message", [
    (lambda df: df.assign(utt_id=["dup"] * 2 + df.utt_id.tolist()[2:]), "lists 1 names more than once: dup"),
    (lambda df: df.assign(emotion=["fear"] + df.emotion.tolist()[1:]), "labels ['fear'] are not in the label set"),
    (lambda df: df.assign(part=["holdout"] + df.part.tolist()[1:]), "values ['holdout']; use train, valid"),
    (lambda df: df.assign(turn=["x"] + df.turn.tolist()[1:]), "1 rows of a dialogue have no numeric 'turn'"),
    (lambda df: df.drop(columns="text"), "no column for --text_col 'text'"),
])
def test_import_refuses_a_bad_table_in_one_line_and_writes_nothing(tmp_path, change, message):
    from corpora.custom import import_corpus

    df = change(write_corpus(tmp_path / "ok.csv", n_dialogues=8))
    df.to_csv(tmp_path / "bad.csv", index=False)
    columns = {"name": "utt_id", "label": "emotion", "text": "text", "dialogue": "conversation", "order": "turn",
               "split": "part"}
    with pytest.raises(DataError, match=re.escape(message)) as e:
        import_corpus("convo", str(tmp_path / "bad.csv"), columns, LABELS, out=str(tmp_path / "out"))
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "out")


def test_a_registration_file_registers_data_set_label_set_and_features(tmp_path, monkeypatch):
    import config
    from corpora.custom import import_corpus

    write_corpus(tmp_path / "c.csv", n_dialogues=8)
    columns = {"name": "utt_id", "label": "emotion", "text": "text", "dialogue": "conversation", "order": "turn",
               "split": "part"}
    import_corpus("regtest", str(tmp_path / "c.csv"), columns, LABELS, out=str(tmp_path / "regtest"), log=lambda m: 0)
    for name in ("DATASETS", "EMO_RULE", "FEAT_TEXT_DICT"):  # registering changes these; the test's copies go after
        monkeypatch.setattr(config, name, dict(getattr(config, name)))
    monkeypatch.setattr(config, "MODALITY_DICTS", {**config.MODALITY_DICTS, "text": config.FEAT_TEXT_DICT})
    assert config.load_registration(str(tmp_path / "regtest" / "dataset.yaml")) == "regtest"
    ds = config.DATASETS["regtest"]
    assert config.EMO_RULE["REGTEST"] == LABELS and ds["emo_rule"] == "REGTEST"
    assert ds["label_csv"] == str(tmp_path / "regtest" / "train_labels.csv") and ds["group_col"] == "dialogue"
    path = config.register_feature("regtest", "regtest-x-UTT", "text", 8, str(tmp_path / "regtest" / "x-UTT"))
    assert yaml.safe_load(open(path))["features"]["regtest-x-UTT"] == {"modality": "text", "dim": 8, "folder": "x-UTT"}
    assert config.find_feature("regtest-x-UTT") == ("text", 8, str(tmp_path / "regtest" / "x-UTT"))
    assert config.dataset_features("regtest") == ["regtest-x-UTT"]
    assert open(path).read().startswith("# data set 'regtest'")  # the file's comments survive
