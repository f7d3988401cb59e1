"""Issue 23's fidelity cases of the extractor: features computed as MERTools computes them (VideoMAE's
``last_hidden_state``, DINOv2's 64 frames), the image processor's backend chosen and named in the identity, a
padding probe that sees a leak in a few ordinary dimensions in bfloat16, and a WAV cut short reported as
``truncated``. Tiny seeded models built from configs; every medium synthesised here."""

import json
import os
import struct
import types

import numpy as np
import pandas as pd
import pytest
import torch

from extraction import encoders, media, runner, writer
from extraction.sources import Sources
from extraction.tiny_models import save_tiny_model

CPU = torch.device("cpu")
SR = 16000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity_models")
    return {fam: save_tiny_model(fam, str(root / fam)) for fam in ("clip", "dinov2", "vit", "videomae", "hubert", "bert",
                                                                   "llama", "wav2vec2-group")}


def run_cli(*args):
    """preprocess/extract_features.py's main() in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    import extract_features

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = extract_features.main([*map(str, args), "--quiet"])
    return code, out.getvalue(), err.getvalue()


def pooled(enc, units, lengths, level):
    ext = runner.Extractor(enc, level, 4)
    return ext.pool(ext.run_units(list(units), list(lengths), on_error=pytest.fail))


def numbered_frames(t, step=1, h=40, w=40):
    """Frame i is a flat grey of 10 + step * i: its brightness names it (``step`` 9 survives a video codec)."""
    assert 10 + step * (t - 1) <= 255
    return np.broadcast_to((10 + step * np.arange(t))[:, None, None, None].astype(np.uint8), (t, h, w, 3)).copy()


def frame_ids(frames, step=1):
    return np.rint((np.asarray(frames).reshape(len(frames), -1).mean(1) - 10) / step).astype(int).tolist()


def pil_processor(folder):
    """The image processor of ``folder`` with its Pillow backend, as MERTools' transformers had it."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return transformers.AutoImageProcessor.from_pretrained(folder, **({"backend": "pil"} if major >= 5 else
                                                                      {"use_fast": False}))


def mertools_uniform(n_total, n):
    """The frame indices MERTools' uniform resampling keeps: min(n, n_total) steps of n_total / that count, then
    the last index repeated up to n."""
    k = min(n, n_total)
    idx = [int(x) for x in np.arange(0, n_total, n_total / k)]
    return (idx + [idx[-1]] * n)[:n]


# ------------------------------------------------------------------------------------------------ case 7


@pytest.mark.parametrize("use_mean_pooling", [False, True])
def test_case7_videomae_takes_last_hidden_state_with_and_without_mean_pooling(tmp_path, use_mean_pooling):
    """MERTools: ``model(pixel_values).last_hidden_state`` (the final LayerNorm where use_mean_pooling is false, as
    in videomae-base/large), viewed as (16 / tubelet, patches, D), the mean over patches."""
    import transformers

    folder = save_tiny_model("videomae", str(tmp_path / "videomae"), vision_config={"use_mean_pooling": use_mean_pooling})
    enc = encoders.load_encoder(folder, "visual", CPU)
    frames = runner.frame_rule_for(enc).select(np.random.default_rng(7).integers(0, 256, (11, 40, 40, 3), np.uint8))
    processor = pil_processor(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(processor(list(frames), return_tensors="pt")["pixel_values"], output_hidden_states=True)
    cfg = model.config
    per_frame = (cfg.image_size // cfg.patch_size) ** 2
    expected = out.last_hidden_state.view(16 // cfg.tubelet_size, per_frame, -1).mean(1).numpy()
    prep = enc.preprocessor(frames)
    np.testing.assert_allclose(pooled(enc, prep.units, prep.lengths, "FRM"), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled(enc, prep.units, prep.lengths, "UTT"), expected.mean(0), rtol=1e-5, atol=1e-5)
    gap = float((out.hidden_states[-1] - out.last_hidden_state).abs().max())
    assert (gap > 0.1) == (not use_mean_pooling)  # the LayerNorm is what differs
    assert encoders.describe(enc)["layers"] == "last_hidden_state"
    # --layers still takes hidden states (here the last one, without the final LayerNorm)
    hidden = encoders.load_encoder(folder, "visual", CPU, layers="-1")
    np.testing.assert_allclose(pooled(hidden, prep.units, prep.lengths, "FRM"),
                               out.hidden_states[-1].view(8, per_frame, -1).mean(1).numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ case 8


def test_case8_dinov2_gives_a_short_clip_64_frames_as_mertools_samples_them(tmp_path, models):
    dino = encoders.load_encoder(models["dinov2"], "visual", CPU)
    rule = runner.frame_rule_for(dino)
    for n_total in (1, 10, 63, 64, 65, 100, 200):
        assert frame_ids(rule.select(numbered_frames(n_total))) == mertools_uniform(n_total, 64), n_total
    # face crops and video files alike: a 10-frame clip gives 64 frames, the last repeated
    faces = tmp_path / "faces" / "short"
    faces.mkdir(parents=True)
    np.save(faces / "short.npy", numbered_frames(10)[..., ::-1])  # BGR, as MERTools saved them
    got = Sources("visual", face_dir=tmp_path / "faces", frame_rule=rule).load("short")
    assert frame_ids(got) == mertools_uniform(10, 64) == list(range(10)) + [9] * 54
    (tmp_path / "video").mkdir()
    media.write_video(tmp_path / "video" / "short.mp4", numbered_frames(10, step=9), fps=10)
    assert frame_ids(Sources("visual", video_dir=tmp_path / "video", frame_rule=rule).load("short"), step=9) == \
        mertools_uniform(10, 64)
    # --frames N keeps the family's rule: N frames, the last repeated
    assert frame_ids(runner.frame_rule_for(dino, frames=16).select(numbered_frames(5))) == mertools_uniform(5, 16)
    # the other families as MERTools: CLIP and ViT every frame; VideoMAE 16, the last repeated
    for fam in ("clip", "vit"):
        assert frame_ids(runner.frame_rule_for(encoders.load_encoder(models[fam], "visual", CPU))
                         .select(numbered_frames(10))) == list(range(10))
    video = runner.frame_rule_for(encoders.load_encoder(models["videomae"], "visual", CPU))
    assert frame_ids(video.select(numbered_frames(10))) == mertools_uniform(10, 16)
    # through the command: 64 frame states for the 10-frame clip
    pd.DataFrame({"name": ["short"]}).to_csv(tmp_path / "names.csv", index=False)
    code, _, err = run_cli("--modality", "visual", "--model", models["dinov2"], "--names", tmp_path / "names.csv",
                           "--face_dir", tmp_path / "faces", "--out", tmp_path / "out", "--level", "FRM")
    assert code == 0, err
    assert np.load(tmp_path / "out" / "short.npy").shape == (64, 32)
    assert pd.read_csv(tmp_path / "out" / writer.REPORT).frames.tolist() == [64]
    assert json.loads((tmp_path / "out" / writer.MANIFEST).read_text())["settings"]["frames"] == \
        "64 uniform (last repeated)"


# ------------------------------------------------------------------------------------------------ case 9


def test_case9_image_processor_is_pillow_named_in_the_identity_and_another_is_refused(tmp_path, models, monkeypatch):
    import transformers

    asked = []
    original = transformers.AutoImageProcessor.from_pretrained
    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained",
                        lambda *a, **k: (asked.append(dict(k)), original(*a, **k))[1])
    for fam in ("clip", "dinov2", "vit", "videomae"):
        enc = encoders.load_encoder(models[fam], "visual", CPU)
        name = type(enc.preprocessor.processor).__name__
        identity = encoders.describe(enc)
        assert (identity["image_processor"], identity["image_backend"]) == (name, "pil"), fam
        assert not name.endswith("Fast")
    # asked for explicitly, not left to whether torchvision is installed
    assert len(asked) == 4 and all(k.get("backend") == "pil" or k.get("use_fast") is False for k in asked)
    monkeypatch.undo()

    faces = tmp_path / "faces" / "a"
    faces.mkdir(parents=True)
    np.save(faces / "a.npy", numbered_frames(3))
    pd.DataFrame({"name": ["a"]}).to_csv(tmp_path / "names.csv", index=False)
    args = ("--modality", "visual", "--model", models["clip"], "--names", tmp_path / "names.csv", "--face_dir",
            tmp_path / "faces", "--out", tmp_path / "out")
    assert run_cli(*args)[0] == 0
    manifest_path = tmp_path / "out" / writer.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    ours = manifest["settings"]["image_processor"]
    assert ours.startswith("CLIPImageProcessor") and manifest["settings"]["image_backend"] == "pil"
    # the same folder, as a machine with torchvision would have made it: refused, naming the difference
    manifest["settings"].update(image_processor="CLIPImageProcessorFast", image_backend="torchvision")
    manifest_path.write_text(json.dumps(manifest))
    os.remove(tmp_path / "out" / "a.npy")
    code, _, err = run_cli(*args)
    assert code == 2 and f"image_processor: the folder has 'CLIPImageProcessorFast', this run '{ours}'" in err
    assert "image_backend: the folder has 'torchvision', this run 'pil'" in err
    assert not (tmp_path / "out" / "a.npy").exists()


# ------------------------------------------------------------------------------------------------ case 10


class PaddingLeak(torch.nn.Module):
    """A text model whose hidden states gain ``leak`` times the number of padded positions in dimensions 3 and 7,
    beside a massive activation of ``outlier`` in dimension 0 (as large language models have)."""

    def __init__(self, model, leak, outlier=200.0):
        super().__init__()
        self.model, self.leak, self.outlier = model, leak, outlier

    def forward(self, input_ids, attention_mask, output_hidden_states=True):
        hs = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        n_pad = (attention_mask == 0).sum(1).to(hs[0].dtype)[:, None]
        out = []
        for h in hs:
            h = h.clone()
            h[..., 0] += self.outlier
            h[..., [3, 7]] += self.leak * n_pad[..., None]
            out.append(h)
        return types.SimpleNamespace(hidden_states=tuple(out))


def old_rule(enc, units, lengths):
    """The probe before issue 23: max |padded - alone| over the largest |alone| of all dimensions."""
    a_states, a_keep = enc.run(units[:1], lengths[:1])
    b_states, b_keep = enc.run(units, lengths)
    a, b = a_states[0][a_keep[0]].float(), b_states[0][b_keep[0]].float()
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_case10_padding_probe_compares_each_dimension_against_the_dtypes_noise(models, dtype):
    torch.manual_seed(0)
    old_tolerance = {"float32": 1e-3, "bfloat16": 5e-2}[dtype]
    # (a) padding that is harmless passes, in float32 and in bfloat16
    for fam, modality in (("hubert", "audio"), ("bert", "text"), ("llama", "text")):
        enc = encoders.load_encoder(models[fam], modality, CPU, dtype=dtype)
        assert runner.check_batching(enc), (fam, enc.padding_probe)
        probe = enc.padding_probe
        assert probe["batching"] == "padded" and probe["difference"] <= probe["tolerance"]
        assert probe["dtype"] == dtype and probe["noise"] >= 0
    # a front end that sees the padding is still caught
    group = encoders.load_encoder(models["wav2vec2-group"], "audio", CPU, dtype=dtype)
    assert not runner.check_batching(group) and group.padding_probe["batching"] == "equal-length"
    # (b) a leak of the padded length into two ordinary dimensions: the old rule, divided by the outlier, passed it
    enc = encoders.load_encoder(models["bert"], "text", CPU, dtype=dtype)
    enc.model = PaddingLeak(enc.model, leak={"float32": 1e-3, "bfloat16": 0.05}[dtype])
    units, lengths = runner.probe_inputs(enc)
    assert lengths[1] - lengths[0] >= 8
    assert old_rule(enc, units, lengths) <= old_tolerance
    assert not runner.check_batching(enc), enc.padding_probe
    assert enc.padding_probe["difference"] > 2 * enc.padding_probe["tolerance"]
    # without the leak the same wrapped model (outlier included) passes
    enc.model.leak = 0.0
    assert runner.check_batching(enc), enc.padding_probe


# ------------------------------------------------------------------------------------------------ WAV cut short


def test_smaller_wav_whose_header_promises_more_samples_is_reported_truncated(tmp_path, models):
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR) + rng.normal(0, 0.01, 3 * SR)).astype(np.float32)
    audio = tmp_path / "audio"
    audio.mkdir()
    media.write_wav(audio / "whole.wav", wave)
    data = (audio / "whole.wav").read_bytes()
    (audio / "cut.wav").write_bytes(data[:len(data) - 2 * 2 * SR - 32])  # 2.001 s of 3 s cut off
    with pytest.raises(media.MediaError) as info:
        media.load_audio(audio / "cut.wav")
    assert info.value.code == "truncated"
    message = str(info.value)
    assert "\n" not in message and "3.000 s" in message and "0.999 s" in message and "cut.wav" in message
    # a header that states no length (a WAV written as a stream: size 0xFFFFFFFF) is read to its end, as before
    stream = bytearray(data)
    at = stream.find(b"data")
    stream[4:8] = stream[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)
    (audio / "stream.wav").write_bytes(bytes(stream))
    np.testing.assert_array_equal(media.load_audio(audio / "stream.wav"), media.load_audio(audio / "whole.wav"))
    # through the command: reported, with both durations, and nothing written for it
    pd.DataFrame({"name": ["whole", "cut", "stream"]}).to_csv(tmp_path / "names.csv", index=False)
    code, stdout, _ = run_cli("--modality", "audio", "--model", models["hubert"], "--names", tmp_path / "names.csv",
                              "--audio_dir", audio, "--out", tmp_path / "out")
    report = pd.read_csv(tmp_path / "out" / writer.REPORT).set_index("name")
    assert code == 1 and report.loc["cut", "status"] == "truncated"
    assert "3.000 s" in report.loc["cut", "reason"] and "0.999 s" in report.loc["cut", "reason"]
    assert report.loc[["whole", "stream"], "status"].eq("ok").all()
    assert not (tmp_path / "out" / "cut.npy").exists() and "truncated 1" in stdout
