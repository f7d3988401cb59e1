"""Extraction throughput: MERTools' design (one clip at a time in the main process) against ours.

    python bench/extract_throughput.py [--clips 48] [--modality audio,visual,text] [--size small]
                                       [--device auto] [--workers N] [--batch_size N]

Synthesises --clips clips (2-8 s wavs, 30-90 face-crop frames of 112x112 in the MERTools layout, 10-40 word
subtitles; for the vision families also 1-3 s videos of 64x64 frames at 10 fps with an audio track) and one
randomly initialised model per modality or family, then times the same clips through the same model object both
ways. ``--modality`` takes a comma list of:

* ``audio``, ``visual``, ``text``: HuBERT, CLIP's image tower, BERT; shapes from --size: ``mini`` 128 wide and
  ``small`` 256 wide x 4 layers, ``base`` and ``large`` the real checkpoints' shapes, for a GPU (``tiny`` is
  ``mini``, ``real`` is ``large``);
* the multimodal LLMs' parts (``extraction/mllm.py``): ``qwen2-audio-tower`` (Qwen2-Audio's audio tower, the Whisper
  encoder with its pooling), ``qwen2-audio-lm`` (its language model over the chat input: the clip's audio and the
  prompt), ``qwen2.5-vl-vision`` (Qwen2.5-VL's vision tower and patch merger over 8 frames a clip) and
  ``qwen2.5-vl-lm`` (its language model over those frames and the prompt). Two shapes: ``tiny`` (64 wide x 2 layers;
  what --size mini, small and tiny give) and ``real`` (what base, large and real give; for a GPU): Qwen2-Audio-7B's
  audio tower (d_model 1280, 32 layers, 20 heads, ffn 5120, 128 mel bins); for ``qwen2-audio-lm`` that tower before a
  Qwen2-1.5B-shaped language model (1536 wide, 28 layers, 12 heads, 2 KV heads, MLP 8960; the real model's is 7 B);
  a Qwen2-VL-2B-like Qwen2.5-VL (vision tower 1280 wide, 32 blocks, 16 heads, MLP 3420, windows of 112 px, full
  attention in blocks 7, 15, 23 and 31, merged into 1536; the same 1.5 B-shaped language model). The tokenizer is
  the tiny one (a few hundred tokens): the vocabulary only sizes the embedding table and the last token's logits.
  A family whose processor cannot load here (the Qwen2.5-VL video processor needs torchvision, or the project's
  fallback) is skipped with one line saying why.

The two designs:

* MERTools' design, as in its ``extract_audio_huggingface.py``, ``extract_vision_huggingface.py`` and
  ``extract_text_huggingface.py``: for each clip in the main process, decode, run the feature extractor,
  image processor or tokenizer, a forward pass under ``torch.no_grad`` (audio cut into zero-padded 10 s
  windows; frames in chunks of 32), the sum of the last four hidden layers (CLIP: the projected embedding),
  the mean, ``np.save``. For the multimodal LLMs (MERTools runs these one clip at a time, in half precision, on
  one GPU): for each clip in the main process, decode, the same preprocessor as ours, the same encoder object
  on that clip alone (``encoder.run``: a batch of that clip's units, in the encoder's dtype), the mean of its
  real states, ``np.save``;
* ours: ``extraction.runner.extract_share``, the code ``preprocess/extract_features.py`` runs: decoding and
  preprocessing in --workers processes, units of many clips batched by length (--batch_size, default the
  encoder's), ``torch.inference_mode``, pinned memory on CUDA, bf16 on CUDA (``--dtype``), atomic writes.

Model loading is outside both timings; both start with one warm-up clip. It prints clips per second for each
modality or family and both designs, the largest relative difference between the two designs' features over clips
where MERTools' zero padding plays no part (a check that both compute the same features; for the multimodal LLMs in
float32 it must be under 1e-3, else the bench fails), and, as its last line, ``speedup: <ratio>``: the MERTools
design's total time over ours for all the modalities and families run (``speedup: n/a`` when every one was
skipped).
"""

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

import _paths  # noqa: F401

SIZES = {  # tiny_models.save_tiny_model arguments per modality
    "mini": {"audio": dict(hidden=128, layers=4, heads=4, intermediate=512, conv_channels=128),
             "visual": dict(hidden=128, layers=4, heads=4, intermediate=512, image_size=224, patch_size=32),
             "text": dict(hidden=128, layers=4, heads=4, intermediate=512, max_length=512)},
    "small": {"audio": dict(hidden=256, layers=4, heads=4, intermediate=1024, conv_channels=256),
              "visual": dict(hidden=256, layers=4, heads=4, intermediate=1024, image_size=224, patch_size=32),
              "text": dict(hidden=256, layers=4, heads=4, intermediate=1024, max_length=512)},
    "base": {"audio": dict(hidden=768, layers=12, heads=12, intermediate=3072, conv_channels=512),  # hubert-base
             "visual": dict(hidden=768, layers=12, heads=12, intermediate=3072, image_size=224, patch_size=32),
             "text": dict(hidden=768, layers=12, heads=12, intermediate=3072, max_length=512)},
    "large": {"audio": dict(hidden=1024, layers=24, heads=16, intermediate=4096, conv_channels=512),  # hubert-large
              "visual": dict(hidden=1024, layers=24, heads=16, intermediate=4096, image_size=224, patch_size=14),
              "text": dict(hidden=1024, layers=24, heads=16, intermediate=4096, max_length=512)},
}
FAMILY = {"audio": "hubert", "visual": "clip", "text": "bert"}
SIZE_ALIAS = {"tiny": "mini", "real": "large"}  # the multimodal LLMs' size names, for the three modalities

# the multimodal LLMs' parts: family (extraction.mllm), part, feature modality, and whether they read the videos
MLLM = {"qwen2-audio-tower": dict(family="qwen2-audio", part="audio_tower", modality="audio", video=False),
        "qwen2-audio-lm": dict(family="qwen2-audio", part="language_model", modality="audio", video=False),
        "qwen2.5-vl-vision": dict(family="qwen2.5-vl", part="vision_tower", modality="visual", video=True),
        "qwen2.5-vl-lm": dict(family="qwen2.5-vl", part="language_model", modality="visual", video=True)}
_QWEN2_1_5B = dict(num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960)
MLLM_SIZES = {  # extraction.tiny_models.save_tiny_<family> arguments
    "tiny": {"qwen2-audio": dict(hidden=64, text_hidden=64, layers=2, heads=2),
             "qwen2.5-vl": dict(vision_hidden=64, text_hidden=64, layers=2, heads=2)},
    "real": {"qwen2-audio": dict(hidden=1280, num_mel_bins=128,  # Qwen2-Audio-7B's audio tower; a tiny text model
                                 audio_config=dict(encoder_layers=32, encoder_attention_heads=20,
                                                   encoder_ffn_dim=5120)),
             "qwen2-audio+lm": dict(text_hidden=1536, text_config=_QWEN2_1_5B),  # with the -lm: a 1.5 B-shaped LM
             "qwen2.5-vl": dict(vision_hidden=1280, text_hidden=1536, patch_size=14, window_size=112,
                                min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 16384,  # the released processor's
                                vision_config=dict(depth=32, num_heads=16, intermediate_size=3420,
                                                   fullatt_block_indexes=[7, 15, 23, 31]),
                                text_config=dict(_QWEN2_1_5B, num_hidden_layers=1)),  # 1536 wide: the merger's out
             "qwen2.5-vl+lm": dict(text_config=_QWEN2_1_5B)},
}
WORDS = ("i really think that we should talk about what happened today because it made me so happy and a little "
         "worried at the same time you know the weather was fine but then everything changed suddenly").split()


def make_clips(work, n, seed=0, videos=False):
    """Synthetic inputs for ``n`` clips: wavs, MERTools face arrays (BGR) and a subtitle table; with ``videos`` also
    ``video/<name>.mp4``: 1-3 s of 64x64 frames at 10 fps with a 16 kHz audio track."""
    from extraction import media

    rng = np.random.default_rng(seed)
    names = [f"clip_{i:05d}" for i in range(n)]
    os.makedirs(os.path.join(work, "audio"))
    for name in names:
        secs = rng.uniform(2, 8)
        t = np.arange(int(secs * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.05 * rng.normal(size=t.size)
        media.write_wav(os.path.join(work, "audio", name + ".wav"), wave.astype(np.float32), 16000)
        face = os.path.join(work, "faces", name)
        os.makedirs(face)
        np.save(os.path.join(face, name + ".npy"), rng.integers(0, 256, (int(rng.integers(30, 91)), 112, 112, 3),
                                                                 dtype=np.uint8))
    subs = [" ".join(rng.choice(WORDS, int(rng.integers(10, 41)))) for _ in names]
    pd.DataFrame({"name": names, "english": subs}).to_csv(os.path.join(work, "subtitles.csv"), index=False)
    if videos:
        vrng = np.random.default_rng(seed + 1)  # its own stream: the other inputs stay those of the same seed
        os.makedirs(os.path.join(work, "video"))
        for name in names:
            secs = vrng.uniform(1, 3)
            t = np.arange(int(secs * 16000)) / 16000
            wave = 0.3 * np.sin(2 * np.pi * vrng.uniform(150, 400) * t) + 0.05 * vrng.normal(size=t.size)
            frames = vrng.integers(0, 256, (int(round(secs * 10)), 64, 64, 3), dtype=np.uint8)
            media.write_video(os.path.join(work, "video", name + ".mp4"), frames, fps=10,
                              audio=wave.astype(np.float32), sample_rate=16000)
    return names, subs


def mertools_audio(model, fe, path, out, device):
    """MERTools' extract_audio_huggingface.py for one clip (10 s windows, zero-padded, layers -4..-1)."""
    import torch

    from extraction import media

    wave = media.load_audio(path, 16000)
    x = fe(wave, sampling_rate=16000, return_tensors="pt").input_values
    maxlen = 16000 * 10
    if x.shape[1] > maxlen:
        padded = torch.zeros((1, int(np.ceil(x.shape[1] / maxlen)) * maxlen))
        padded[:, :x.shape[1]] = x
        x = padded.view(-1, maxlen)
    with torch.no_grad():
        hs = model(x.to(device), output_hidden_states=True).hidden_states
        feat = torch.stack(hs)[[-4, -3, -2, -1]].sum(dim=0)
        feat = feat.reshape(-1, feat.shape[-1]).float().cpu().numpy()
    np.save(out, feat.mean(axis=0))


def mertools_visual(model, processor, path, out, device):
    """MERTools' extract_vision_huggingface.py (CLIP) for one clip: every frame, chunks of 32, projected."""
    import torch

    frames = np.load(path)[..., ::-1]  # its face arrays are BGR (OpenCV); it converts each frame to RGB
    inputs = processor(images=list(frames), return_tensors="pt")["pixel_values"].to(device)
    with torch.no_grad():
        embs = []
        for s in range(0, len(inputs), 32):
            out_ = model.get_image_features(pixel_values=inputs[s:s + 32])
            embs.append(out_ if torch.is_tensor(out_) else out_.pooler_output)
        emb = torch.cat(embs).float().cpu().numpy()
    np.save(out, emb.mean(axis=0))


def mertools_text(model, tokenizer, sentence, out, device):
    """MERTools' extract_text_huggingface.py for one sentence: layers -4..-1, [CLS]/[SEP] dropped, the mean."""
    import torch

    inputs = tokenizer(sentence, return_tensors="pt").to(device)
    with torch.no_grad():
        hs = model(**inputs, output_hidden_states=True).hidden_states
        feat = torch.stack(hs)[[-4, -3, -2, -1]].sum(dim=0)[0, 1:-1].float().cpu().numpy()
    np.save(out, feat.mean(axis=0))


def alternate(theirs, ours, repeat, device):
    """Best times of ``theirs()`` and ``ours()`` (each one whole pass over the clips), run alternately ``repeat``
    times each: neither side gains from going second. Returns ``(t_theirs, t_ours, what ours returned last)``."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_theirs = t_ours = float("inf")
    result = None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        theirs()
        sync()
        t_theirs = min(t_theirs, time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = ours()
        sync()
        t_ours = min(t_ours, time.perf_counter() - t0)
    return t_theirs, t_ours, result


def largest_difference(names, theirs_dir, ours_dir):
    """The largest over clips of max |theirs - ours| / max |theirs|."""
    diffs = []
    for name in names:
        a, b = np.load(os.path.join(theirs_dir, name + ".npy")), np.load(os.path.join(ours_dir, name + ".npy"))
        diffs.append(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)))
    return max(diffs)


def _clear(folder):
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))


def bench_modality(modality, work, names, subs, size, device, dtype, workers, logger, repeat=2, batch_size=None):
    import torch
    import transformers as T

    from extraction import encoders, runner
    from extraction.sources import FrameRule, Sources
    from extraction.tiny_models import save_tiny_model

    size = SIZE_ALIAS.get(size, size)
    folder = os.path.join(work, "models", modality)
    save_tiny_model(FAMILY[modality], folder, texts=subs if modality == "text" else None, **SIZES[size][modality])
    enc = encoders.load_encoder(folder, modality, device, dtype=dtype)
    runner.check_batching(enc)
    src = {"audio": dict(audio_dir=os.path.join(work, "audio")), "visual": dict(face_dir=os.path.join(work, "faces")),
           "text": dict(subtitles=os.path.join(work, "subtitles.csv"), subtitle_col="english")}[modality]
    sources = Sources(modality, frame_rule=FrameRule() if modality == "visual" else None, **src)
    batch = batch_size or enc.default_batch["cuda" if device.type == "cuda" else "cpu"]
    n_workers = runner.default_workers(modality, device) if workers is None else (0 if modality == "text" else workers)

    # MERTools' design: the same model (the same object where ours runs in float32; else a float32 copy of it:
    # MERTools has no dtype option for these families)
    model = enc.model if enc.dtype == torch.float32 else copy.deepcopy(enc.model).float()
    pre = {"audio": T.AutoFeatureExtractor, "visual": T.AutoImageProcessor, "text": T.AutoTokenizer}[modality] \
        .from_pretrained(folder, **(encoders.pillow_processor_kw() if modality == "visual" else {}))
    theirs_dir, ours_dir = os.path.join(work, f"theirs-{modality}"), os.path.join(work, f"ours-{modality}")
    os.makedirs(theirs_dir)
    os.makedirs(ours_dir)

    def one(i, out):
        name = names[i]
        if modality == "audio":
            mertools_audio(model, pre, os.path.join(work, "audio", name + ".wav"), out, device)
        elif modality == "visual":
            mertools_visual(model, pre, os.path.join(work, "faces", name, name + ".npy"), out, device)
        else:
            mertools_text(model, pre, subs[i], out, device)

    one(0, os.path.join(work, "warmup.npy"))  # warm-up, both sides
    os.makedirs(os.path.join(work, f"warmup-{modality}"))
    runner.extract_share(names[:1], sources, enc, os.path.join(work, f"warmup-{modality}"), "UTT", "float32", batch, 0,
                         progress=False)

    # agreement where MERTools' zero padding does not enter (audio under one 10 s window: all of ours here)
    t_theirs, t_ours, diff = time_both(lambda i, n: one(i, os.path.join(theirs_dir, n + ".npy")), names, sources, enc,
                                       ours_dir, batch, n_workers, repeat, device, theirs_dir, modality)
    shape = SIZES[size][modality]
    logger(f"{modality:<6} {FAMILY[modality]} {shape['hidden']}x{shape['layers']}, batch {batch}, workers {n_workers}, "
           f"{enc.padding_probe.get('batching')} batches: MERTools design {len(names) / t_theirs:7.2f} clips/s, ours "
           f"{len(names) / t_ours:7.2f} clips/s: {t_theirs / t_ours:.2f}x  (features agree to {diff:.1e} "
           f"relative{'' if device.type == 'cpu' else ', ours in ' + str(enc.dtype).replace('torch.', '')})")
    return t_theirs, t_ours


def time_both(theirs_one, names, sources, enc, ours_dir, batch, n_workers, repeat, device, theirs_dir, what):
    """Both designs over ``names``, alternating (``theirs_one(i, name)`` writes one clip's feature; ours is
    ``extract_share``): ``(their seconds, our seconds, largest relative difference of the features)``."""
    from extraction import runner

    def theirs():
        for i, n in enumerate(names):
            theirs_one(i, n)

    def ours():
        _clear(ours_dir)
        return runner.extract_share(names, sources, enc, ours_dir, "UTT", "float32", batch, n_workers, progress=False)

    t_theirs, t_ours, rows = alternate(theirs, ours, repeat, device)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{what}: {len(failed)} clips failed in our extractor: {failed[:2]}")
    return t_theirs, t_ours, largest_difference(names, theirs_dir, ours_dir)


# -------------------------------------------------------------------------------------------------
# The multimodal LLMs' parts
# -------------------------------------------------------------------------------------------------

def mllm_size(size):
    return "real" if size in ("base", "large", "real") else "tiny"


def mllm_folder(work, name, size, run):
    """The saved model for bench family ``name`` at ``size`` (``tiny``/``real``), built once per shape and shared
    by the families run (``run``) that take the same shape. Real size: a tower alone needs no real language model,
    so the model gets its 1.5 B-shaped one only when the family's ``-lm`` is run too (else a tiny one; Qwen2.5-VL's
    keeps the real width, which its patch merger projects to)."""
    from extraction import tiny_models

    family = MLLM[name]["family"]
    kw = copy.deepcopy(MLLM_SIZES[size][family])
    with_lm = size == "real" and any(MLLM[n]["family"] == family and MLLM[n]["part"] == "language_model"
                                     for n in set(run) | {name})
    if with_lm:
        kw.update(copy.deepcopy(MLLM_SIZES[size][family + "+lm"]))
    folder = os.path.join(work, "models", f"{family}-{size}" + (("-lm" if with_lm else "-tower") if size == "real"
                                                                else ""))
    if not os.path.isdir(folder):
        build = {"qwen2-audio": tiny_models.save_tiny_qwen2_audio,
                 "qwen2.5-vl": tiny_models.save_tiny_qwen2_5_vl}[family]
        t0 = time.time()
        build(folder, **kw)
        if size == "real":
            print(f"{os.path.basename(folder)}: random weights of the real shape built and saved in "
                  f"{time.time() - t0:.0f}s", flush=True)
    return folder


def load_part(folder, name, device, dtype):
    """The part's Encoder, or ``(None, why)`` where its processor cannot load here (an ImportError: transformers'
    video processors need torchvision)."""
    from extraction import encoders

    spec = MLLM[name]
    try:
        return encoders.load_encoder(folder, spec["modality"], device, dtype=dtype, part=spec["part"]), None
    except ImportError as e:
        why = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")  # its first sentence
        return None, f"{type(e).__name__}: {why[:200]}"


def mllm_sources(name, enc, work):
    """Where the part reads its clips: the wavs (audio tower), the videos' frames (vision tower; 8 uniform, the
    extractor's default for these models), or the chat input's media (language model)."""
    from extraction import runner
    from extraction.sources import ClipInputs, Sources

    def one(kind):
        if kind == "audio":
            return Sources("audio", audio_dir=os.path.join(work, "audio"), sample_rate=getattr(
                enc.preprocessor, "sample_rate", 16000))
        if kind == "video":
            return Sources("visual", video_dir=os.path.join(work, "video"), frame_rule=runner.frame_rule_for(enc))
        return Sources("text", subtitles=os.path.join(work, "subtitles.csv"), subtitle_col="english")

    if MLLM[name]["part"] == "language_model":
        return ClipInputs({k: one(k) for k in enc.settings["inputs"]})
    return one("video" if MLLM[name]["modality"] == "visual" else "audio")


def one_clip_at_a_time(enc, sources, name, out):
    """MERTools' design for a multimodal LLM, for one clip in the main process: decode, the same preprocessor, the
    same encoder on this clip's units alone (in the encoder's dtype), the mean of its real states, ``np.save``."""
    prep = enc.preprocessor(sources.load(name))
    states, keep = enc.run(prep.units, prep.lengths)
    feat = (states * keep[..., None].to(states.dtype)).sum((0, 1)) / keep.sum()
    np.save(out, feat.float().cpu().numpy())


def part_shape(name, enc):
    """``(what runs, width, layers)`` of the part timed."""
    cfg = enc.config
    if MLLM[name]["part"] == "language_model":
        t = cfg.text_config
        return "qwen2", int(t.hidden_size), int(t.num_hidden_layers)
    if MLLM[name]["part"] == "audio_tower":
        a = getattr(cfg, "audio_config", cfg)
        return "whisper", int(a.d_model), int(a.encoder_layers)
    v = cfg.vision_config
    return "vit", int(v.hidden_size), int(v.depth)


def bench_mllm(name, work, names, size, device, dtype, workers, logger, repeat=2, batch_size=None, run=()):
    """One multimodal-LLM family both ways; ``None`` where it was skipped (its processor does not load here)."""
    import torch

    from extraction import runner

    size = mllm_size(size)
    if size == "real" and MLLM[name]["video"]:  # find out on the tiny model before building a 2 B one
        enc, why = load_part(mllm_folder(work, name, "tiny", run), name, device, dtype)
        if enc is None:
            logger(f"{name} skipped: its processor does not load here ({why})")
            return None
        del enc
    enc, why = load_part(mllm_folder(work, name, size, run), name, device, dtype)
    if enc is None:
        logger(f"{name} skipped: its processor does not load here ({why})")
        return None
    runner.check_batching(enc)
    sources = mllm_sources(name, enc, work)
    batch = batch_size or enc.default_batch["cuda" if device.type == "cuda" else "cpu"]
    modality = MLLM[name]["modality"]
    n_workers = runner.default_workers(modality, device) if workers is None else workers
    theirs_dir, ours_dir = os.path.join(work, f"theirs-{name}"), os.path.join(work, f"ours-{name}")
    warm = os.path.join(work, f"warmup-{name}")
    for d in (theirs_dir, ours_dir, warm):
        os.makedirs(d)

    one_clip_at_a_time(enc, sources, names[0], os.path.join(warm, "theirs.npy"))  # warm-up, both sides
    runner.extract_share(names[:1], sources, enc, warm, "UTT", "float32", batch, 0, progress=False)

    t_theirs, t_ours, diff = time_both(
        lambda i, n: one_clip_at_a_time(enc, sources, n, os.path.join(theirs_dir, n + ".npy")), names, sources, enc,
        ours_dir, batch, n_workers, repeat, device, theirs_dir, name)
    if enc.dtype == torch.float32 and not diff < 1e-3:
        raise RuntimeError(f"{name}: the two designs' features differ by {diff:.1e} relative (float32: must be under "
                           "1e-3)")
    what, width, layers = part_shape(name, enc)
    logger(f"{name:<17} {what} {width}x{layers}, batch {batch}, workers {n_workers}, "
           f"{enc.padding_probe.get('batching')} batches: MERTools design {len(names) / t_theirs:7.2f} clips/s, ours "
           f"{len(names) / t_ours:7.2f} clips/s: {t_theirs / t_ours:.2f}x  (features agree to {diff:.1e} "
           f"relative{'' if enc.dtype == torch.float32 else ', both in ' + str(enc.dtype).replace('torch.', '')})")
    return t_theirs, t_ours


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--modality", default="audio,visual,text",
                   help=f"comma list of {', '.join(list(FAMILY) + list(MLLM))} (default: audio,visual,text)")
    p.add_argument("--size", default="small", choices=sorted(SIZES) + sorted(SIZE_ALIAS),
                   help="model shapes (random weights): mini, small (the default): 128 and 256 wide x 4 layers; base, "
                        "large: the real checkpoints' (for a GPU); tiny is mini, real is large. The multimodal LLMs: "
                        "tiny for mini, small and tiny (64 wide x 2 layers); the released shapes for base, large and "
                        "real (for a GPU: Qwen2-Audio-7B's audio tower; a Qwen2-1.5B-shaped language model for the "
                        "-lm families; Qwen2.5-VL's vision tower)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="our model dtype (auto: float32 on CPU, bfloat16 on CUDA); the "
                                                   "multimodal LLMs' one-clip-at-a-time design runs in it too")
    p.add_argument("--workers", type=int, default=None, help="our decoding processes (default: what "
                                                                "extract_features.py uses on this device)")
    p.add_argument("--batch_size", type=int, default=None, help="our batch of units (default: the encoder's, as in "
                                                                "extract_features.py)")
    p.add_argument("--keep", default=None, help="keep the scratch folder here")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each design (alternating; the best counts)")
    args = p.parse_args(argv)
    chosen = [m.strip() for m in args.modality.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in FAMILY and m not in MLLM]
    if unknown or not chosen:
        p.error(f"--modality {args.modality}: a comma list of {', '.join(list(FAMILY) + list(MLLM))}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from common.utils import resolve_device

    device = resolve_device(args.device)

    work = args.keep or tempfile.mkdtemp(prefix="extract_bench_")
    os.makedirs(work, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        t0 = time.time()
        names, subs = make_clips(work, args.clips, videos=any(MLLM[m]["video"] for m in chosen if m in MLLM))
        print(f"{args.clips} clips synthesised in {time.time() - t0:.1f}s; device {device}, torch threads "
              f"{torch.get_num_threads()}, size {args.size}", flush=True)
        total_theirs = total_ours = 0.0
        ran, skipped = [], []
        for modality in chosen:
            if modality in MLLM:
                times = bench_mllm(modality, work, names, args.size, device, args.dtype, args.workers, log, args.repeat,
                                   args.batch_size, chosen)
            else:
                times = bench_modality(modality, work, names, subs, args.size, device, args.dtype, args.workers, log,
                                       args.repeat, args.batch_size)
            if times is None:
                skipped.append(modality)
                continue
            ran.append(modality)
            total_theirs += times[0]
            total_ours += times[1]
        note = f"; skipped: {', '.join(skipped)}" if skipped else ""
        if not ran:
            print(f"all modalities: none ran{note}")
            print("speedup: n/a")
            return 0
        print(f"all modalities: MERTools design {total_theirs:.1f}s, ours {total_ours:.1f}s for {args.clips} clips "
              f"each{note}")
        print(f"speedup: {total_theirs / total_ours:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
