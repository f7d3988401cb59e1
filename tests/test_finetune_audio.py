"""Fine-tuning speech models (preprocess/finetune_encoder.py --modality audio, finetuning/audio.py): tiny HuBERT,
wav2vec2 (base layout: no attention mask), WavLM, Whisper and Qwen2-Audio built from configs, on a tiny data set of
tones whose label is their pitch (written as WAV files with extraction's media helpers). A tiny HuBERT and a tiny
Qwen2-Audio are fine-tuned once a module through the command line; then: the pitch is learnt and every name gets
an embedding, test labels are never read, only the adapters and the head train (the frozen parts stay bit for
bit), full fine-tuning leaves the convolutional front end alone, a clip pools to the same embedding alone and
padded in a batch beside a longer clip cut into several windows, Whisper's fixed 30 s input is pooled over the
real frames only, a killed run resumes into the same files, a rerun with other windows is refused, and the audio
flags are refused where they do not apply."""

import builtins
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import config
from conftest import isolated_feature_config, load_script

LABELS = ["low", "high"]
PITCH = {"low": 220.0, "high": 880.0}
SR = 16000
FLAGS = ["--lr", "3e-3", "--quiet", "--device", "cpu", "--batch_size", "8"]


def tone(label, seconds, rng):
    """A tone of the label's pitch (with a random phase, loudness and a little noise)."""
    t = np.arange(int(seconds * SR)) / SR
    wave = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * PITCH[label] * t + rng.uniform(0, 2 * np.pi))
    return (wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write_corpus(root, n_train=24, n_valid=8, n_test=8, n_unlabelled=2, seed=0):
    """Clips of 0.4 to 2.6 s (the longer ones cut into two windows with --window_s 1) in ``root/audio``; the table."""
    from extraction.media import write_wav

    rng = np.random.default_rng(seed)
    os.makedirs(root / "audio", exist_ok=True)
    rows = []
    parts = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test + ["pool"] * n_unlabelled
    for i, part in enumerate(parts):
        label = LABELS[i % 2]
        name = f"c{i:03d}"
        write_wav(str(root / "audio" / f"{name}.wav"), tone(label, float(rng.uniform(0.4, 2.6)), rng), SR)
        rows.append({"utt": name, "emotion": "" if part == "pool" else label,
                     "part": "train" if part == "pool" else part, "truth": label})
    table = pd.DataFrame(rows)
    table.drop(columns=["truth"]).to_csv(root / "corpus.csv", index=False)
    return table


@pytest.fixture(scope="module")
def fa(tmp_path_factory):
    """The data set 'fta' (imported with the project's importer, its audio_dir set; its test label table holds labels
    outside the label set, so that reading it would fail), its official split, the tiny models, and one
    fine-tuning run each of HuBERT (LoRA, 1 s windows) and Qwen2-Audio (LoRA on the language model), every file
    they opened recorded."""
    from corpora.custom import import_corpus
    from dataloader.splits import official_split
    from extraction.tiny_models import save_tiny_model, save_tiny_qwen2_audio

    root = tmp_path_factory.mktemp("finetune_audio")
    mp = pytest.MonkeyPatch()
    isolated_feature_config(mp, root, "audio")
    table = write_corpus(root)
    home = root / "features" / "fta"
    import_corpus("fta", str(root / "corpus.csv"), {"name": "utt", "label": "emotion", "split": "part"}, LABELS,
                  out=str(home), log=lambda m: 0)
    config.load_registration(str(home / "dataset.yaml"))
    ds = config.DATASETS["fta"]
    ds["audio_dir"] = str(root / "audio")
    test_labels = pd.read_csv(ds["test_label_csv"])
    test_labels["discrete"] = "not-a-label"
    test_labels.to_csv(ds["test_label_csv"], index=False)
    official_split(ds["label_csv"], ds["emo_rule"], str(root / "split.json"), split_col="split")
    models = {fam: save_tiny_model(fam, str(root / fam)) for fam in ("hubert", "wav2vec2-group", "wavlm", "whisper")}
    models["qwen2-audio"] = save_tiny_qwen2_audio(str(root / "qwen2-audio"))
    script = load_script("preprocess/finetune_encoder.py")

    opened, real_open = [], builtins.open

    def spy(file, *a, **k):
        opened.append(os.path.abspath(str(file)) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *a, **k)

    base = ["--dataset", "fta", "--split", str(root / "split.json"), "--modality", "audio"]
    mp.setattr(builtins, "open", spy)
    status = script.main(base + ["--model", models["hubert"], "--feature_name", "hubert-ft", "--window_s", "1",
                                 "--epochs", "5", "--patience", "5", *FLAGS])
    qwen_status = script.main(base + ["--model", models["qwen2-audio"], "--feature_name", "qwen2-audio-ft",
                                      "--epochs", "3", "--patience", "3", *FLAGS])
    mp.setattr(builtins, "open", real_open)

    class Env:
        pass

    env = Env()
    env.root, env.table, env.models, env.script, env.base, env.ds = root, table, models, script, base, ds
    env.status, env.qwen_status, env.opened = status, qwen_status, opened
    env.out, env.qwen_out = str(home / "hubert-ft-UTT"), str(home / "qwen2-audio-ft-UTT")
    yield env
    mp.undo()


def accuracy(out, table, part="test"):
    with np.load(os.path.join(out, "training", "all", "predictions.npz")) as z:
        probs = dict(zip(z["names"].tolist(), z["probs"]))
    rows = table[table.part == part]
    return float(np.mean([LABELS[probs[n].argmax()] == t for n, t in zip(rows.utt, rows.truth)]))


def test_hubert_learns_the_pitch_and_every_name_gets_an_embedding(fa):
    assert fa.status == 0
    names = fa.table["utt"].tolist()
    emb = np.stack([np.load(os.path.join(fa.out, n + ".npy")) for n in names])
    assert emb.shape == (len(names), 256) and emb.dtype == np.float16 and np.isfinite(emb).all()
    assert accuracy(fa.out, fa.table) >= 0.9
    manifest = json.load(open(os.path.join(fa.out, "extract_manifest.json")))
    s = manifest["settings"]
    assert s["modality"] == "audio" and s["audio_kind"] == "audio-ssl" and s["kind"] == "speech"
    assert s["window_s"] == 1.0 and s["lora_targets"] == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert s["method"] == "lora" and s["lora"] == 8 and s["lora_alpha"] == 16 and s["batching"].startswith("padded")
    report = pd.read_csv(os.path.join(fa.out, "extract_report.csv"))
    assert set(report.status) == {"ok"} and report.windows.max() == 2 and report.windows.min() == 1
    assert report.input_fingerprint.notna().all()
    reg = open(os.path.join(fa.root, "features", "fta", "dataset.yaml")).read()
    assert "fta-hubert-ft-UTT:" in reg and "modality: audio" in reg
    cfg = json.load(open(os.path.join(fa.out, "adapter", "adapter_config.json")))
    assert sorted(cfg["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "out_proj"])


def test_qwen2_audio_learns_with_lora_on_its_language_model_only(fa):
    from safetensors.torch import load_file

    assert fa.qwen_status == 0
    names = fa.table["utt"].tolist()
    assert all(np.load(os.path.join(fa.qwen_out, n + ".npy")).shape == (2048,) for n in names)
    assert accuracy(fa.qwen_out, fa.table) >= 0.9
    saved = load_file(os.path.join(fa.qwen_out, "adapter", "adapter_model.safetensors"))
    assert saved and all("lora_" in k and ".language_model." in k for k in saved)
    assert {k.split(".")[-3] for k in saved} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"}
    s = json.load(open(os.path.join(fa.qwen_out, "extract_manifest.json")))["settings"]
    assert s["kind"] == "audio-llm" and s["loss"] == "focal" and s["lora_alpha"] == 32 and s["window_s"] == 30.0
    assert s["prompt"] == "What is the emotion of the person?:" and s["audio_markers"] == [True, True]


def test_test_labels_are_never_read(fa):
    assert fa.status == 0 and fa.qwen_status == 0
    assert os.path.abspath(fa.ds["test_label_csv"]) not in fa.opened
    for n in fa.table[fa.table.part == "test"]["utt"]:
        assert os.path.isfile(os.path.join(fa.out, n + ".npy"))


def test_a_killed_run_resumes_into_the_same_files(fa, capsys):
    """SpecAugment draws from NumPy's generator and LoRA's dropout from torch's: both are in the checkpoint, so a run
    killed after an epoch and started again ends with the files of an unbroken run, bit for bit."""
    import glob

    base = fa.base + ["--model", fa.models["hubert"], "--window_s", "1", "--epochs", "3", "--patience", "9", "--seed",
                      "3", *FLAGS]
    assert fa.script.main(base + ["--feature_name", "whole"]) == 0
    assert fa.script.main(base + ["--feature_name", "killed", "--stop_after_epochs", "1"]) == 130
    assert fa.script.main(base + ["--feature_name", "killed"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().err
    folder = os.path.join(fa.root, "features", "fta")
    a, b = os.path.join(folder, "whole-UTT"), os.path.join(folder, "killed-UTT")

    def files(root):
        return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                      if os.path.isfile(p) and not p.endswith((".log", "extract_manifest.json")))

    assert files(a) == files(b) and "adapter/adapter_model.safetensors" in files(a)
    for f in files(a):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f


def test_a_rerun_with_other_windows_is_refused_naming_them(fa, capsys):
    args = fa.base + ["--model", fa.models["hubert"], "--feature_name", "hubert-ft", "--window_s", "2",
                      "--epochs", "5", "--patience", "5", *FLAGS]
    assert fa.script.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "window_s: the folder has 1.0, this run 2.0" in err, err


def _units(fa, family, names, window_s=None):
    from extraction.sources import Sources
    from finetuning.audio import AudioBackbone
    from finetuning.inputs import AudioInputs

    backbone = AudioBackbone(fa.models[family])
    inputs = AudioInputs(backbone, Sources("audio", audio_dir=str(fa.root / "audio"), sample_rate=backbone.sample_rate),
                         window_s=window_s)
    units, failed = inputs.prepare_all(names)
    assert not failed
    return backbone, inputs, [units[n] for n in names]


SETTINGS = {"lora": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_targets": None, "embed_dim": 16,
            "head_dropout": 0.0, "epochs": 2, "batch_size": 4, "grad_accum": 1, "lr": 1e-2, "weight_decay": 0.0,
            "warmup_ratio": 0.0, "patience": 5, "seed": 0}


def _fit(fa, family, settings, tmp_path, window_s=None):
    import logging

    from finetuning.model import build_model, make_loss
    from finetuning.parallel import Parallel
    from finetuning.trainer import Examples, Trainer

    names = fa.table[fa.table.part == "train"]["utt"].tolist()[:8]
    backbone, inputs, units = _units(fa, family, names, window_s)
    settings = {**settings, "lora_targets": backbone.default_targets() if settings["lora"] else None}
    torch.manual_seed(0)
    model, _ = build_model(backbone, 2, settings, torch.device("cpu"), torch.float32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    labels = [LABELS.index(t) for t in fa.table.set_index("utt").loc[names, "truth"]]
    ex = Examples(names, units, labels)
    Trainer(model, inputs.collate, make_loss("ce"), settings, torch.device("cpu"), Parallel(),
            logging.getLogger("test"), progress=False).fit(ex, ex, str(tmp_path), key="k")
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    return model, changed, trainable


@pytest.mark.parametrize("family", ["hubert", "wavlm", "whisper", "qwen2-audio"])
def test_only_the_adapters_and_the_head_train(fa, tmp_path, family):
    model, changed, trainable = _fit(fa, family, SETTINGS, tmp_path, 1.0 if backbone_is_ssl(family) else None)
    assert all("lora_" in k or k.startswith("head.") for k in trainable)
    assert changed <= trainable
    lora = {k for k in trainable if "lora_B" in k}  # B starts at zero: it moved only if the adapter acts
    assert lora and lora <= changed, sorted(lora - changed)[:4]
    assert any(k.startswith("head.") for k in changed)
    if family == "qwen2-audio":
        assert all(".language_model." in k for k in trainable if "lora_" in k)


def test_full_finetuning_keeps_the_convolutional_front_end(fa, tmp_path):
    model, changed, trainable = _fit(fa, "hubert", {**SETTINGS, "lora": 0, "lr": 1e-3}, tmp_path, window_s=1.0)
    front = {k for k, _ in model.named_parameters() if k.startswith("backbone.feature_extractor.")}
    assert front and not front & trainable and not front & changed
    assert any(".encoder.layers." in k for k in changed) and any(k.startswith("head.") for k in changed)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2-group", "wavlm", "whisper", "qwen2-audio"])
def test_a_clip_pools_alike_alone_and_padded_beside_a_longer_one(fa, family):
    """A short clip (one window) alone and in a batch with a long one (two windows of 1 s and 1.6 s for HuBERT and
    kin: padded with the attention mask, or run in equal-length groups for the base layout without one)."""
    from finetuning.model import build_model

    durations = {n: len(u) for n, u in zip(fa.table.utt, _units(fa, "hubert", fa.table.utt.tolist())[2])}
    short, long_ = min(durations, key=durations.get), max(durations, key=durations.get)
    backbone, inputs, units = _units(fa, family, [short, long_], 1.0 if backbone_is_ssl(family) else None)
    if backbone_is_ssl(family):
        assert len(units[1].windows) == 2 and len(units[0].windows) == 1
    torch.manual_seed(0)
    model = build_model(backbone, 2, {**SETTINGS, "lora": 0}, torch.device("cpu"), torch.float32)[0].eval()
    with torch.no_grad():
        alone = model(**inputs.collate(units[:1]))[1][0]
        both = model(**inputs.collate(units))[1]
        long_alone = model(**inputs.collate(units[1:]))[1][0]
    assert torch.allclose(alone, both[0], atol=1e-5) and torch.allclose(long_alone, both[1], atol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-3)


def backbone_is_ssl(family):
    return family in ("hubert", "wav2vec2-group", "wavlm")


def test_whisper_pools_over_the_real_frames_of_its_30_s_input(fa):
    from finetuning.model import build_model

    name = fa.table.utt[0]
    backbone, inputs, units = _units(fa, "whisper", [name])
    batch = inputs.collate(units)
    frames = int(np.ceil(units[0].lengths[0] / 320))
    assert batch["input_features"].shape[-1] == 3000 and int(batch["frames"][0]) == frames < 1500
    torch.manual_seed(0)
    model = build_model(backbone, 2, {**SETTINGS, "lora": 0}, torch.device("cpu"), torch.float32)[0].eval()
    with torch.no_grad():
        states = model.backbone(input_features=batch["input_features"]).last_hidden_state
        emb = model(**batch)[1]
        real = model.head(states[:, :frames], torch.ones(1, frames, dtype=torch.bool))[1]
        everything = model.head(states, torch.ones(1, states.shape[1], dtype=torch.bool))[1]
    assert torch.allclose(emb, real, atol=1e-5) and not torch.allclose(emb, everything, atol=1e-3)


def test_spec_augment_takes_a_window_too_short_for_its_span(fa):
    """In training, HuBERT's SpecAugment masks spans of 10 frames; a 0.1 s window (4 frames) alone gets none."""
    from finetuning.inputs import Clip
    from finetuning.model import build_model

    backbone, inputs, _ = _units(fa, "hubert", [])
    model = build_model(backbone, 2, {**SETTINGS, "lora": 0}, torch.device("cpu"), torch.float32)[0].train()
    clip = Clip([np.random.default_rng(0).standard_normal(1600).astype(np.float32)], [1600], 0.1)
    logits, _ = model(**inputs.collate([clip]))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("flags, words", [
    (["--context_window", "2"], "--context_window: text flags"),
    (["--window_s", "0.5"], "--window_s 0.5"),
    (["--model", "qwen2-audio", "--lora", "0"], "full fine-tuning of Qwen2-Audio"),
    (["--model", "whisper", "--window_s", "10"], "reads windows of 30 s"),
    (["--model", "wavlm", "--lora_targets", "q_proj,v_proj"], "WavLM's attention"),
    (["--prompt", "hi"], "--prompt is for Qwen2-Audio"),
])
def test_bad_audio_input_is_one_line_and_writes_nothing(fa, capsys, flags, words):
    args = fa.base + ["--model", fa.models["hubert"], "--feature_name", "bad", "--quiet", "--device", "cpu"]
    for i in range(0, len(flags), 2):
        value = fa.models.get(flags[i + 1], flags[i + 1]) if flags[i] == "--model" else flags[i + 1]
        if flags[i] in args:
            args[args.index(flags[i]) + 1] = value
        else:
            args += [flags[i], value]
    assert fa.script.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert not os.path.exists(os.path.join(fa.root, "features", "fta", "bad-UTT"))
