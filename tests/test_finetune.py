"""Fine-tuned encoder features (preprocess/finetune_encoder.py, finetuning/): a tiny BERT fine-tuned once a module on a
tiny data set of dialogues whose label is decided by a keyword in the text, then the behaviour the stage promises:
only LoRA and the head train, the keyword is learnt, test labels are never read, padding never counts in the
pooling, the context window builds the expected text, a killed run resumes into the same files, a rerun with
other settings is refused, ``--folds`` writes out-of-fold probabilities, and a tiny Qwen2 gets the LLM defaults."""

import builtins
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import config
from conftest import isolated_feature_config, load_script

LABELS = ["neutral", "joy", "anger"]
KEYWORD = {"neutral": "table", "joy": "sunny", "anger": "furious"}
FILLER = "we went to the shop and then back home after a long day of work with friends".split()
TRAIN_FLAGS = ["--lora", "8", "--lr", "3e-3", "--epochs", "30", "--patience", "30", "--quiet", "--device", "cpu"]


def write_corpus(path, n_dialogues=12, per_dialogue=8, seed=0):
    """Dialogues whose every utterance holds the keyword of its label among filler words; dialogues 0-7 train,
    8-9 valid, 10-11 test. Returns the table (the truth of the test rows stays here, in memory)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_dialogues):
        for u in range(per_dialogue):
            label = LABELS[int(rng.integers(3))]
            words = [str(w) for w in rng.choice(FILLER, 5)]
            words.insert(int(rng.integers(0, 6)), KEYWORD[label])
            part = "train" if d < 8 else ("valid" if d < 10 else "test")
            rows.append({"utt": f"d{d:02d}_u{u}", "emotion": label, "text": " ".join(words), "dia": f"d{d:02d}",
                         "turn": u, "spk": ["ann", "bob"][u % 2], "part": part})
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


@pytest.fixture(scope="module")
def ft(tmp_path_factory):
    """The data set 'ftt' (imported with preprocess/import_dataset.py's importer; its test label table holds
    labels outside the label set, so that reading it would fail), its official split, a tiny BERT and a tiny Qwen2,
    and one fine-tuning run with --folds 2, every file it opened recorded."""
    from corpora.custom import import_corpus
    from dataloader.splits import official_split
    from extraction.tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("finetune")
    mp = pytest.MonkeyPatch()
    isolated_feature_config(mp, root, "text")
    table = write_corpus(root / "corpus.csv")
    columns = {"name": "utt", "label": "emotion", "text": "text", "dialogue": "dia", "order": "turn", "split": "part",
               "speaker": "spk"}
    home = root / "features" / "ftt"
    import_corpus("ftt", str(root / "corpus.csv"), columns, LABELS, out=str(home), log=lambda m: 0)
    config.load_registration(str(home / "dataset.yaml"))
    ds = config.DATASETS["ftt"]
    test_labels = pd.read_csv(ds["test_label_csv"])
    test_labels["discrete"] = "not-a-label"
    test_labels.to_csv(ds["test_label_csv"], index=False)
    official_split(ds["label_csv"], ds["emo_rule"], str(root / "split.json"), split_col="split", group_col="dialogue")
    texts = table["text"].tolist() + ["ann bob : >> [SEP]"]
    bert = save_tiny_model("bert", str(root / "bert"), texts=texts, max_length=128)
    qwen = save_tiny_model("qwen2", str(root / "qwen2"), texts=texts, max_length=128)
    script = load_script("preprocess/finetune_encoder.py")

    opened, real_open = [], builtins.open

    def spy(file, *a, **k):
        opened.append(os.path.abspath(str(file)) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *a, **k)

    mp.setattr(builtins, "open", spy)
    args = ["--dataset", "ftt", "--split", str(root / "split.json"), "--modality", "text", "--model", bert,
            "--feature_name", "bert-ft", "--folds", "2", *TRAIN_FLAGS]
    status = script.main(args)
    mp.setattr(builtins, "open", real_open)

    class Env:
        pass

    env = Env()
    env.root, env.table, env.bert, env.qwen, env.script, env.args = root, table, bert, qwen, script, args
    env.status, env.opened, env.ds, env.split = status, opened, ds, str(root / "split.json")
    env.out = str(home / "bert-ft-UTT")
    yield env
    mp.undo()


def truth(env, names):
    index = env.table.set_index("utt")["emotion"]
    return np.array([LABELS.index(index[n]) for n in names])


def read_feature(folder, names):
    return np.stack([np.load(os.path.join(folder, n + ".npy")) for n in names])


def test_the_keyword_is_learnt_and_every_name_gets_an_embedding(ft):
    assert ft.status == 0
    names = ft.table["utt"].tolist()
    emb = read_feature(ft.out, names)
    assert emb.shape == (len(names), 256) and emb.dtype == np.float16 and np.isfinite(emb).all()
    with np.load(os.path.join(ft.out, "training", "all", "predictions.npz")) as z:
        probs = dict(zip(z["names"].tolist(), z["probs"]))
    test = ft.table[ft.table.part == "test"]["utt"].tolist()
    acc = (np.array([probs[n].argmax() for n in test]) == truth(ft, test)).mean()
    assert acc >= 0.9, acc
    manifest = json.load(open(os.path.join(ft.out, "extract_manifest.json")))
    info = manifest["finetune"]
    assert info["folds"] == 2 and info["seed"] == 0 and info["adapter_hash"].startswith("sha256:")
    assert info["split_hash"] == manifest["settings"]["split"] and manifest["settings"]["lr"] == 3e-3
    assert info["trainings"]["all"]["trainable_parameters"] < info["trainings"]["all"]["total_parameters"]
    reg = open(os.path.join(ft.root, "features", "ftt", "dataset.yaml")).read()
    assert "ftt-bert-ft-UTT:" in reg and "ftt-bert-ft-UTT-probs:" in reg
    assert os.path.isfile(os.path.join(ft.out, "training", "all", "curves.png"))
    assert not glob.glob(os.path.join(ft.out, "training", "*", "checkpoint.pt"))


def test_test_labels_are_never_read(ft):
    """The test label table holds labels outside the label set: reading it would fail the run. It was never opened,
    and the test names got their embeddings."""
    assert ft.status == 0
    assert os.path.abspath(ft.ds["test_label_csv"]) not in ft.opened
    assert os.path.abspath(ft.ds["label_csv"]) in ft.opened  # the name lists are read (names only)
    for n in ft.table[ft.table.part == "test"]["utt"]:
        assert os.path.isfile(os.path.join(ft.out, n + ".npy"))


def test_only_lora_and_head_train_base_weights_stay_bitwise(ft, tmp_path):
    from finetuning.model import Backbone, build_model, make_loss
    from finetuning.parallel import Parallel
    from finetuning.inputs import TextInputs
    from finetuning.trainer import Examples, Trainer
    import logging

    backbone = Backbone(ft.bert)
    settings = {"lora": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_targets": None, "embed_dim": 16,
                "head_dropout": 0.0, "epochs": 2, "batch_size": 4, "grad_accum": 2, "lr": 1e-2, "weight_decay": 0.0,
                "warmup_ratio": 0.0, "patience": 5, "seed": 0}
    torch.manual_seed(0)
    model, targets = build_model(backbone, 3, settings, torch.device("cpu"), torch.float32)
    assert targets == ["query", "key", "value", "dense"]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    texts = dict(zip(ft.table["utt"], ft.table["text"]))
    inputs = TextInputs(backbone.tokenizer, texts)
    names = ft.table["utt"].tolist()[:12]
    ex = Examples(names, [inputs.prepare(n) for n in names], truth(ft, names))
    trainer = Trainer(model, inputs.collate, make_loss("ce"), settings, torch.device("cpu"), Parallel(),
                      logging.getLogger("test"), progress=False)
    trainer.fit(ex, ex, str(tmp_path), key="k")
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert changed and changed <= trainable
    assert all("lora_" in k or k.startswith("head.") for k in trainable)
    assert any(k.startswith("head.") for k in changed) and any("lora_" in k for k in changed)
    from safetensors.torch import load_file
    saved = load_file(os.path.join(ft.out, "adapter", "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    head = json.load(open(os.path.join(ft.out, "adapter", "head.json")))
    assert head["embed_dim"] == 256 and head["classes"] == LABELS


def test_pooling_ignores_padding():
    from finetuning.model import Head

    torch.manual_seed(0)
    head = Head(8, 6, 3, 0.0).eval()
    short, long = torch.randn(1, 5, 8), torch.randn(1, 9, 8)
    alone = head(short, torch.ones(1, 5, dtype=torch.bool))[1]
    padded = torch.cat([short, torch.full((1, 4, 8), 1e4)], 1)  # garbage where the padding is
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :5], mask[1] = True, True
    batch = head(torch.cat([padded, long]), mask)[1]
    assert torch.allclose(alone[0], batch[0], atol=1e-6)


def test_padding_never_changes_an_embedding_end_to_end(ft):
    from finetuning.inputs import TextInputs
    from finetuning.model import Backbone, build_model

    backbone = Backbone(ft.bert)
    settings = {"lora": 0, "embed_dim": 16, "head_dropout": 0.0}
    torch.manual_seed(0)
    model = build_model(backbone, 3, settings, torch.device("cpu"), torch.float32)[0].eval()
    inputs = TextInputs(backbone.tokenizer, {"a": "sunny", "b": " ".join(FILLER)})
    units = [inputs.prepare("a"), inputs.prepare("b")]
    with torch.no_grad():
        alone = model(**inputs.collate(units[:1]))[1][0]
        both = model(**inputs.collate(units))[1][0]
    assert torch.allclose(alone, both, atol=1e-5)


def test_the_context_window_builds_the_expected_text(ft):
    from dataloader.dialogue import DialogueIndex
    from finetuning.inputs import TARGET_MARK, TextInputs, context_text
    from finetuning.model import Backbone

    assert context_text("hi", [], "[SEP]", context=False) == "hi"
    tok = Backbone(ft.bert).tokenizer
    texts = {"x_u0": "one", "x_u1": "two", "x_u2": "three", "x_u3": "four", "y_u0": "other"}
    index = DialogueIndex({n: n[0] for n in texts}, {n: int(n[-1]) for n in texts})
    speakers = {n: ("ann" if int(n[-1]) % 2 == 0 else "bob") for n in texts}
    two = TextInputs(tok, texts, index, None, context_window=2)
    assert two.text_of("x_u3") == f"two [SEP] three [SEP] {TARGET_MARK} four"
    assert two.text_of("x_u0") == f"{TARGET_MARK} one"  # the first utterance has no context
    assert two.text_of("y_u0") == f"{TARGET_MARK} other"  # another dialogue's utterances never enter
    named = TextInputs(tok, texts, index, speakers, context_window=1)
    assert named.text_of("x_u2") == f"bob: two [SEP] {TARGET_MARK} ann: three"
    assert TextInputs(tok, texts, index, None, context_window=0).text_of("x_u2") == "three"
    ids = two.prepare("x_u3")
    assert tok.decode(ids, skip_special_tokens=False).count("[SEP]") == 3  # two separators and BERT's own
    qwen = TextInputs(Backbone(ft.qwen).tokenizer, texts, index, None, context_window=1, decoder=True)
    assert qwen.text_of("x_u1") == f"one\n{TARGET_MARK} two"  # decoders: a line break, then the end-of-text token


def test_a_killed_run_resumes_into_the_same_files(ft, capsys):
    base = ["--dataset", "ftt", "--split", ft.split, "--modality", "text", "--model", ft.bert, "--lora", "8",
            "--lr", "3e-3", "--epochs", "4", "--patience", "9", "--quiet", "--device", "cpu", "--seed", "3"]
    assert ft.script.main(base + ["--feature_name", "whole"]) == 0
    assert ft.script.main(base + ["--feature_name", "killed", "--stop_after_epochs", "2"]) == 130
    folder = os.path.join(ft.root, "features", "ftt")
    ckpt = os.path.join(folder, "killed-UTT", "training", "all", "checkpoint.pt")
    assert os.path.isfile(ckpt) and torch.load(ckpt, weights_only=True)["state"]["epoch"] == 2
    assert ft.script.main(base + ["--feature_name", "killed"]) == 0
    assert "resuming after epoch 2" in capsys.readouterr().err
    a, b = os.path.join(folder, "whole-UTT"), os.path.join(folder, "killed-UTT")
    files = sorted(os.path.relpath(p, a) for p in glob.glob(os.path.join(a, "**", "*"), recursive=True)
                   if os.path.isfile(p) and not p.endswith((".log", "extract_manifest.json")))
    assert files == sorted(os.path.relpath(p, b) for p in glob.glob(os.path.join(b, "**", "*"), recursive=True)
                           if os.path.isfile(p) and not p.endswith((".log", "extract_manifest.json")))
    assert any(f.endswith(".npy") for f in files) and "adapter/adapter_model.safetensors" in files
    for f in files:
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f


def test_a_rerun_with_other_settings_is_refused_naming_them(ft, capsys):
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(ft.out, "*.npy"))}
    args = [a if a != "3e-3" else "1e-3" for a in ft.args]
    assert ft.script.main(args + ["--context_window", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "lr: the folder has 0.003, this run 0.001" in err and "context_window" in err
    assert before == {p: os.path.getmtime(p) for p in glob.glob(os.path.join(ft.out, "*.npy"))}


def test_folds_write_out_of_fold_probabilities(ft):
    probs_dir = ft.out + "-probs"
    names = ft.table["utt"].tolist()
    probs = read_feature(probs_dir, names)
    assert probs.shape == (len(names), 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    folds = []
    for k in range(2):
        with np.load(os.path.join(ft.out, "training", f"fold{k}", "predictions.npz")) as z:
            folds.append(dict(zip(z["names"].tolist(), z["probs"])))
    train = set(json.load(open(ft.split))["train_info"]["names"])
    got = dict(zip(names, probs))
    for n in names:
        has = [f[n] for f in folds if n in f]
        if n in train:  # predicted by the one fold model that never trained on it
            assert len(has) == 1 and np.array_equal(got[n], has[0])
        else:
            assert len(has) == 2 and np.allclose(got[n], np.mean(has, axis=0))
    oof = [n for n in names if n in train]
    assert (probs[[names.index(n) for n in oof]].argmax(1) == truth(ft, oof)).mean() > 0.6


def test_a_tiny_qwen2_gets_lora_on_attention_and_mlp(ft):
    assert ft.script.main(["--dataset", "ftt", "--split", ft.split, "--modality", "text", "--model", ft.qwen,
                           "--epochs", "1", "--quiet", "--device", "cpu", "--feature_name", "qwen-ft"]) == 0
    out = os.path.join(ft.root, "features", "ftt", "qwen-ft-UTT")
    cfg = json.load(open(os.path.join(out, "adapter", "adapter_config.json")))
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 32 and cfg["lora_dropout"] == 0.1
    settings = json.load(open(os.path.join(out, "extract_manifest.json")))["settings"]
    assert settings["kind"] == "llm" and settings["loss"] == "focal" and settings["lr"] == 1e-5
    assert settings["batch_size"] == 8 and settings["separator"] == "\n"
    assert np.load(os.path.join(out, ft.table["utt"][0] + ".npy")).shape == (2048,)


@pytest.mark.parametrize("flags, words", [(["--folds", "1"], "--folds 1"), (["--lora", "-1"], "--lora -1"),
                                          (["--split", "missing.json"], "does not exist"),
                                          (["--context_window", "-2"], "--context_window -2")])
def test_bad_input_is_one_line_and_writes_nothing(ft, capsys, flags, words):
    args = ["--dataset", "ftt", "--split", ft.split, "--model", ft.bert, "--feature_name", "bad", "--quiet",
            "--device", "cpu"]
    for i in range(0, len(flags), 2):
        if flags[i] in args:
            args[args.index(flags[i]) + 1] = flags[i + 1]
        else:
            args += flags[i:i + 2]
    assert ft.script.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err
    assert not os.path.exists(os.path.join(ft.root, "features", "ftt", "bad-UTT"))
