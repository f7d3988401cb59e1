"""Multimodal-LLM parts as extraction families (issue 25): Qwen2-Audio's audio tower (``--part audio_tower``).

Tiny models built from the family's real config class (random weights, saved with ``save_pretrained``) and
loaded through the same code path as a hub checkpoint; the released shape is checked on the meta device."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import config
from extraction import encoders, media, mllm, runner, writer
from extraction.tiny_models import save_tiny_qwen2_audio
from test_extraction import CPU, _clip_alone_and_in_batch, error_lines, run_cli, tone


@pytest.fixture(scope="module")
def qwen2_audio(tmp_path_factory):
    return save_tiny_qwen2_audio(str(tmp_path_factory.mktemp("models") / "Qwen2-Audio-tiny"))


def test_audio_tower_width_frames_and_padding(qwen2_audio):
    import transformers as T

    enc = encoders.load_encoder(qwen2_audio, "audio", CPU)
    assert type(enc.model).__name__ == "Qwen2AudioEncoder"  # the tower alone, not the language model
    assert enc.dim == 32 and enc.family == "qwen2_audio"
    assert enc.settings["part"] == "audio_tower" and enc.settings["window_s"] == 30.0
    prep = enc.preprocessor(tone(300, 2.0))
    assert prep.units[0].shape == (80, 3000)
    states, keep = enc.run(prep.units, prep.lengths)
    assert states.shape == (1, 750, 32) and torch.isfinite(states).all()
    assert int(keep.sum()) == 50  # 2 s = 200 mel frames -> 100 encoder frames -> 50 after the avg-pool
    # the same states as the whole model's tower
    full = T.Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio).eval()
    tower = getattr(full, "audio_tower", None) or full.model.audio_tower
    with torch.no_grad():
        ref = tower(torch.from_numpy(prep.units[0])[None]).last_hidden_state
    torch.testing.assert_close(states, ref.float())
    # a clip alone equals the clip in a batch beside a longer one
    other = enc.preprocessor(tone(500, 5.0))
    alone, batched = _clip_alone_and_in_batch(enc, prep.units, prep.lengths, other.units, other.lengths)
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_bad_part_and_layers_are_refused(qwen2_audio, tmp_path):
    with pytest.raises(encoders.DataError, match="has audio_tower"):
        encoders.load_encoder(qwen2_audio, "audio", CPU, part="vision_tower")
    with pytest.raises(encoders.DataError, match="leave --layers unset"):
        encoders.load_encoder(qwen2_audio, "audio", CPU, layers="-2")
    with pytest.raises(encoders.DataError, match="use --modality audio"):
        encoders.load_encoder(qwen2_audio, "visual", CPU)


def test_cli_utt_and_frm_record_the_part(qwen2_audio, tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    names = ["a0", "a1", "a2"]
    for i, n in enumerate(names):
        media.write_wav(d / f"{n}.wav", tone(200 + 60 * i, 1.0 + 0.7 * i, seed=i))
    csv = tmp_path / "names.csv"
    pd.DataFrame({"name": names}).to_csv(csv, index=False)
    out = tmp_path / "Qwen2-Audio-tiny-UTT"
    code, stdout, err = run_cli("--modality", "audio", "--model", qwen2_audio, "--part", "audio_tower",
                                "--names", csv, "--audio_dir", d, "--out", out)
    assert code == 0, err
    for n in names:
        x = np.load(out / f"{n}.npy")
        assert x.shape == (32,) and np.isfinite(x).all()
    s = json.loads((out / writer.MANIFEST).read_text())["settings"]
    assert (s["part"], s["family"], s["dim"], s["level"]) == ("audio_tower", "qwen2_audio", 32, "UTT")
    frm = tmp_path / "Qwen2-Audio-tiny-FRM"
    code, _, err = run_cli("--modality", "audio", "--model", qwen2_audio, "--level", "FRM", "--names", csv,
                           "--audio_dir", d, "--out", frm)
    assert code == 0, err
    lengths = [np.load(frm / f"{n}.npy").shape for n in names]
    assert lengths == [(25, 32), (42, 32), (60, 32)]  # 40 ms frames of 1.0, 1.7, 2.4 s, as the model counts them
    # the UTT feature is the mean of the FRM frames
    np.testing.assert_allclose(np.load(out / "a1.npy").astype(np.float32),
                               np.load(frm / "a1.npy").astype(np.float32).mean(0), atol=2e-3, rtol=2e-3)
    assert json.loads((frm / writer.MANIFEST).read_text())["settings"]["part"] == "audio_tower"
    # another part is refused with one line
    code, _, err = run_cli("--modality", "audio", "--model", qwen2_audio, "--part", "vision_tower",
                           "--names", csv, "--audio_dir", d, "--out", out)
    assert code == 2 and len(error_lines(err)) == 1 and "--part 'vision_tower'" in err
    # a folder made without the part (another model) refuses this one, naming the part
    code, _, err = run_cli("--modality", "audio", "--model", qwen2_audio, "--names", csv, "--audio_dir", d,
                           "--out", tmp_path / "whisper-like", "--limit", "1")
    assert code == 0, err
    manifest = tmp_path / "whisper-like" / writer.MANIFEST
    m = json.loads(manifest.read_text())
    m["settings"].pop("part")
    manifest.write_text(json.dumps(m))
    code, _, err = run_cli("--modality", "audio", "--model", qwen2_audio, "--names", csv, "--audio_dir", d,
                           "--out", tmp_path / "whisper-like")
    assert code == 2 and "part" in err


def test_released_shape_writes_the_registered_width():
    """Qwen2-Audio-7B's audio tower (transformers' default Qwen2AudioConfig: d_model 1280, 128 mel bins), built on
    the meta device without weights: its states are as wide as config.py registers Qwen2-Audio-7B-UTT."""
    import transformers as T

    cfg = T.Qwen2AudioConfig()
    assert cfg.audio_config.d_model == 1280
    with torch.device("meta"):
        tower = T.Qwen2AudioEncoder._from_config(cfg.audio_config, dtype=torch.bfloat16)
    fe = T.WhisperFeatureExtractor(feature_size=cfg.audio_config.num_mel_bins)
    enc = mllm.Qwen2AudioTowerEncoder(None, cfg, tower, torch.device("meta"), torch.bfloat16, fe, 16000)
    batch = enc.collate([np.zeros((128, 3000), np.float32)], [16000 * 40])
    assert int(batch["frames"][0]) == 750  # a window past 30 s keeps the tower's 750 frames
    with torch.no_grad():
        states, keep = enc.forward({"input_features": batch["input_features"].to("meta", torch.bfloat16),
                                    "frames": batch["frames"].to("meta")})
    assert enc.dim == states.shape[-1] == config.MER2025_FEATURES["Qwen2-Audio-7B-UTT"][1] == 1280
    assert config.MER2025_FEATURES["Qwen2-Audio-7B-UTT"][0] == "audio"


# ------------------------------------------------------------------------------------------------ other families


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    from extraction.tiny_models import save_tiny_qwen2_5_omni

    return save_tiny_qwen2_5_omni(str(tmp_path_factory.mktemp("models") / "Qwen2.5-Omni-tiny"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Three clips of the clip demo (video with its audio track, wav, subtitles) and a names CSV."""
    from corpora.clip_demo import make_clips

    out = tmp_path_factory.mktemp("clipdemo")
    table = make_clips(str(out), n=3, seed=0, progress=False)
    csv = out / "names.csv"
    pd.DataFrame({"name": table.name}).to_csv(csv, index=False)
    return {"root": out, "names": list(table.name), "csv": csv, "frames": list(table.frames)}


def test_omni_audio_tower_equals_the_thinkers_audio_features_and_packs_clips(omni):
    import transformers as T

    enc = encoders.load_encoder(omni, "audio", CPU, part="audio_tower")
    assert type(enc).__name__ == "OmniAudioTowerEncoder" and enc.dim == 48  # projected to the language model's width
    a, b = enc.preprocessor(tone(300, 2.0)), enc.preprocessor(tone(500, 3.3, seed=1))
    states, keep = enc.run(a.units, a.lengths)
    assert int(keep.sum()) == 50 and torch.isfinite(states).all()  # 2 s -> 200 mel frames -> 50 states (40 ms)
    thinker = T.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni).eval()
    mel = torch.from_numpy(a.units[0])[None]
    mask = torch.zeros(1, mel.shape[-1], dtype=torch.long)
    mask[0, :200] = 1
    with torch.no_grad():
        ref = thinker.model.get_audio_features(mel, feature_attention_mask=mask).last_hidden_state
    torch.testing.assert_close(states[0][keep[0]], ref.float())
    alone, batched = _clip_alone_and_in_batch(enc, a.units, a.lengths, b.units, b.lengths)
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
    assert runner.check_batching(enc) and enc.padding_probe["batching"] == "padded"


def test_language_model_states_pool_the_turns_content_only(qwen2_audio):
    """Qwen2-Audio's language model over its chat input: the kept tokens are the user turn's content (the audio,
    then the prompt), never the system prompt or the template's markup; the states are the model's own hidden
    states (sum of the last four); a clip alone equals the clip padded beside a longer one."""
    import transformers as T

    enc = encoders.load_encoder(qwen2_audio, "audio", CPU, part="language_model", prompt="How does she feel?")
    pre, tok = enc.preprocessor, enc.preprocessor.tok
    a, b = pre({"audio": tone(300, 2.0)}), pre({"audio": tone(400, 4.0, seed=1)})
    unit = a.units[0]
    kept = tok.decode(unit["input_ids"][unit["keep"]])
    assert kept.startswith("Audio 1: <|audio_bos|>") and kept.endswith("How does she feel?")
    assert "system" not in kept and "assistant" not in kept
    assert int((unit["input_ids"] == tok.convert_tokens_to_ids("<|AUDIO|>")).sum()) == 50  # 2 s of audio
    states, keep = enc.run(a.units, a.lengths)
    model = T.Qwen2AudioForConditionalGeneration.from_pretrained(qwen2_audio).eval()
    batch = {k: torch.from_numpy(np.asarray(v))[None] if k in ("input_ids",) else torch.from_numpy(np.asarray(v))
             for k, v in unit.items() if k != "keep"}
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    ref = sum(hs[max(0, len(hs) - 4):])  # the last four (the tiny model has 2 layers: all three states)
    torch.testing.assert_close(states[0][keep[0]], ref[0][torch.from_numpy(unit["keep"])].float(), rtol=1e-4,
                               atol=1e-4)
    alone, batched = _clip_alone_and_in_batch(enc, a.units, a.lengths, b.units, b.lengths)
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-5)
    assert enc.settings["prompt"] == "How does she feel?" and enc.settings["inputs"] == ["audio"]
    mapped = encoders.load_encoder(qwen2_audio, "audio", CPU, part="language_model", prompt="How does she feel?",
                                   device_map="auto")  # accelerate's placement; on a CPU machine all on the CPU
    torch.testing.assert_close(mapped.run(a.units, a.lengths)[0], states)
    last = encoders.load_encoder(qwen2_audio, "audio", CPU, part="language_model", token_pool="last")
    u = last.preprocessor({"audio": tone(300, 2.0)}).units[0]
    assert u["keep"].sum() == 1 and u["keep"][-1]  # the token the answer would follow
    with pytest.raises(encoders.DataError, match="--token_pool 'sum'"):
        encoders.load_encoder(qwen2_audio, "audio", CPU, part="language_model", token_pool="sum")
    with pytest.raises(encoders.DataError, match="is for --part language_model"):
        encoders.load_encoder(qwen2_audio, "audio", CPU, part="audio_tower", prompt="x")
    with pytest.raises(encoders.DataError, match="needs CUDA"):
        encoders.load_encoder(qwen2_audio, "audio", CPU, part="language_model", load_in="4bit")


def _utt_and_frm(common, out, frm, names, width=48):
    """``extract_features.py *common`` into ``out`` (UTT) and ``frm`` (FRM): every name gets a finite feature of
    ``width`` at both levels, its UTT the mean of its FRM rows; returns the UTT folder's manifest settings."""
    code, _, err = run_cli(*common, "--out", out)
    assert code == 0, err
    code, _, err = run_cli(*common, "--level", "FRM", "--out", frm)
    assert code == 0, err
    for n in names:
        u, f = np.load(out / f"{n}.npy").astype(np.float32), np.load(frm / f"{n}.npy").astype(np.float32)
        assert u.shape == (width,) and f.ndim == 2 and f.shape[1] == width and np.isfinite(f).all()
        np.testing.assert_allclose(u, f.mean(0), rtol=2e-2, atol=2e-2)
    return json.loads((out / writer.MANIFEST).read_text())["settings"]


def test_cli_language_model_utt_frm_prompt_in_manifest_and_another_prompt_refused(qwen2_audio, demo, tmp_path):
    out = tmp_path / "qa-lm-UTT"
    common = ("--modality", "audio", "--model", qwen2_audio, "--part", "language_model", "--names", demo["csv"],
              "--video_dir", demo["root"] / "video", "--prompt", "Which emotion?")
    s = _utt_and_frm(common, out, tmp_path / "qa-lm-FRM", demo["names"])  # UTT: the mean of the content tokens
    assert (s["part"], s["prompt"], s["inputs"], s["token_pool"]) == ("language_model", "Which emotion?", ["audio"],
                                                                      "mean")
    code, _, err = run_cli(*common[:-1], "Is she happy?", "--out", out)
    assert code == 2 and len(error_lines(err)) == 1 and "prompt" in err
    code, _, err = run_cli(*common, "--level", "FRM", "--token_pool", "last", "--out", tmp_path / "x")
    assert code == 2 and "--token_pool last" in err


def test_a_checkpoint_without_safetensors_loads_the_whole_model_and_gives_the_same_tower(qwen2_audio, tmp_path):
    import shutil

    import transformers as T

    folder = tmp_path / "bin-only"
    shutil.copytree(qwen2_audio, folder)
    model = T.Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    prep = None
    outs = []
    for f in (qwen2_audio, folder):
        enc = encoders.load_encoder(str(f), "audio", CPU, part="audio_tower")
        prep = prep or enc.preprocessor(tone(300, 2.0))
        outs.append(enc.run(prep.units, prep.lengths)[0])
    torch.testing.assert_close(outs[0], outs[1])
    assert mllm.part_key("thinker.audio_tower.layers.0.fc1.weight", "audio_tower") == "layers.0.fc1.weight"
    assert mllm.part_key("model.visual.blocks.0.mlp.weight", "visual") == "blocks.0.mlp.weight"
    assert mllm.part_key("model.language_model.layers.0.visual.w", "visual") is None  # not under a wrapper


def test_released_internvl_shape_writes_the_registered_width():
    """InternVL2.5-8B in transformers' format (InternViT-300M at 448 px, an InternLM2.5-7B language model as Llama:
    4096 wide), laid out on the meta device without weights: its vision tower's projected states and its language
    model's states are 4096 wide, config.py's width for the runner-up's InternVL feature."""
    import transformers as T

    cfg = T.InternVLConfig(
        vision_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           image_size=[448, 448], patch_size=[14, 14]),
        text_config=dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=14336, vocab_size=92553),
        downsample_ratio=0.5)
    with torch.device("meta"):
        model = T.InternVLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    enc = mllm.InternVLVisionTowerEncoder.__new__(mllm.InternVLVisionTowerEncoder)
    encoders.Encoder.__init__(enc, None, cfg, model, torch.device("meta"), torch.bfloat16)
    enc.base = model.model
    with torch.no_grad():
        states, _ = enc.forward({"pixel_values": torch.empty(2, 3, 448, 448, device="meta", dtype=torch.bfloat16)})
    width = config.MER2025_FEATURES["InternVL_2_5_HiCo_R16-UTT"][1]
    assert states.shape == (2, 1, width) == (2, 1, 4096)
    assert mllm.text_width("internvl", cfg) == model.model.language_model.norm.weight.shape[0] == width
    assert config.MER2025_FEATURES["InternVL_2_5_HiCo_R16-UTT"][0] == "video"


@pytest.fixture(scope="module")
def vlms(tmp_path_factory, omni):
    from extraction.tiny_models import save_tiny_internvl, save_tiny_qwen2_5_vl, save_tiny_qwen2_vl

    root = tmp_path_factory.mktemp("models")
    return {"qwen2.5-vl": save_tiny_qwen2_5_vl(str(root / "Qwen2.5-VL-tiny")),
            "qwen2-vl": save_tiny_qwen2_vl(str(root / "Qwen2-VL-tiny")),
            "internvl": save_tiny_internvl(str(root / "InternVL-tiny")), "qwen2.5-omni": omni}


def _frames(n, seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("family,part", [("qwen2.5-vl", "vision_tower"), ("internvl", "vision_tower"),
                                         ("qwen2.5-omni", "vision_tower"), ("qwen2.5-vl", "language_model"),
                                         ("qwen2-vl", "vision_tower")])
def test_vision_parts_width_finite_and_a_clip_alone_equals_it_in_a_batch(vlms, family, part):
    enc = encoders.load_encoder(vlms[family], "visual", CPU, part=part)
    assert enc.dim == 48 and enc.settings["part"] == part
    assert enc.settings["video_backend"] in ("pil", "torchvision")  # the Pillow port without torchvision
    pre = enc.preprocessor
    raw = (lambda n, s: _frames(n, s)) if part == "vision_tower" else \
        (lambda n, s: {"video": _frames(n, s)})
    a, b = pre(raw(4, 0)), pre(raw(8, 1))
    states, keep = enc.run(a.units, a.lengths)
    assert torch.isfinite(states).all()
    if part == "vision_tower":  # a state per frame (InternVL) or per temporal patch of 2 frames (Qwen)
        assert int(keep.sum()) == (4 if family == "internvl" else 2)
    alone, batched = _clip_alone_and_in_batch(enc, a.units, a.lengths, b.units, b.lengths)
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-5)
    assert runner.check_batching(enc)


@pytest.mark.parametrize("family,flags", [
    ("qwen2.5-vl", ("--part", "vision_tower")),
    ("internvl", ("--part", "language_model", "--inputs", "video,subtitle", "--subtitle_col", "english")),
    ("qwen2.5-omni", ("--part", "language_model", "--inputs", "video,audio,subtitle", "--frames", "4"))])
def test_cli_vision_families_utt_and_frm_from_the_clip_demo(vlms, demo, family, flags, tmp_path):
    """Each family extracts UTT and FRM from the clip demo's videos (their audio tracks, its subtitles) through
    preprocess/extract_features.py; the manifest records the part, the inputs and the video processor's backend."""
    root = demo["root"]
    common = ("--modality", "video" if family == "internvl" else "visual", "--model", vlms[family], "--names",
              demo["csv"], "--video_dir", root / "video",
              "--subtitles", root / "subtitle_chieng.csv", *flags)
    frm = tmp_path / "FRM"
    s = _utt_and_frm(common, tmp_path / "UTT", frm, demo["names"])
    assert s["part"] == flags[1] and s["video_backend"] in ("pil", "torchvision") and s["frame_source"] == \
        "whole video frames"
    if flags[1] == "vision_tower":  # 8 frames by default: 4 temporal patches
        assert [np.load(frm / f"{n}.npy").shape[0] for n in demo["names"]] == [4, 4, 4]
    else:
        assert s["inputs"] == flags[3].split(",") and s["prompt"] == mllm.DEFAULT_PROMPT
