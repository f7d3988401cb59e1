"""Extraction throughput: MERTools' design (one clip at a time in the main process) against ours.

    python bench/extract_throughput.py [--clips 48] [--modality audio,visual,text] [--size small]
                                       [--device auto] [--workers N]

Synthesises --clips clips (2-8 s wavs, 30-90 face-crop frames of 112x112 in the MERTools layout, 10-40 word
subtitles) and one randomly initialised model per modality (HuBERT, CLIP's image tower, BERT; shapes from
--size: ``small`` 256 wide x 4 layers, ``base`` and ``large`` the real checkpoints' shapes, for a GPU), then
times the same clips through the same model object both ways:

* MERTools' design, as in its ``extract_audio_huggingface.py``, ``extract_vision_huggingface.py`` and
  ``extract_text_huggingface.py``: for each clip in the main process, decode, run the feature extractor,
  image processor or tokenizer, a forward pass under ``torch.no_grad`` (audio cut into zero-padded 10 s
  windows; frames in chunks of 32), the sum of the last four hidden layers (CLIP: the projected embedding),
  the mean, ``np.save``;
* ours: ``extraction.runner.extract_share``, the code ``preprocess/extract_features.py`` runs: decoding and
  preprocessing in --workers processes, units of many clips batched by length, ``torch.inference_mode``,
  pinned memory on CUDA, bf16 on CUDA (``--dtype``), atomic writes.

Model loading is outside both timings; both start with one warm-up clip. It prints clips per second for each
modality and both designs, the largest relative difference between the two designs' features over clips
where MERTools' zero padding plays no part (a check that both compute the same features), and, as its
last line, ``speedup: <ratio>``: the MERTools design's total time over ours for all the modalities run.
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
WORDS = ("i really think that we should talk about what happened today because it made me so happy and a little "
         "worried at the same time you know the weather was fine but then everything changed suddenly").split()


def make_clips(work, n, seed=0):
    """Synthetic inputs for ``n`` clips: wavs, MERTools face arrays (BGR) and a subtitle table."""
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


def bench_modality(modality, work, names, subs, size, device, dtype, workers, logger, repeat=2):
    import torch
    import transformers as T

    from extraction import encoders, runner
    from extraction.sources import FrameRule, Sources
    from extraction.tiny_models import save_tiny_model

    folder = os.path.join(work, "models", modality)
    save_tiny_model(FAMILY[modality], folder, texts=subs if modality == "text" else None, **SIZES[size][modality])
    enc = encoders.load_encoder(folder, modality, device, dtype=dtype)
    runner.check_batching(enc)
    src = {"audio": dict(audio_dir=os.path.join(work, "audio")), "visual": dict(face_dir=os.path.join(work, "faces")),
           "text": dict(subtitles=os.path.join(work, "subtitles.csv"), subtitle_col="english")}[modality]
    sources = Sources(modality, frame_rule=FrameRule() if modality == "visual" else None, **src)
    batch = enc.default_batch["cuda" if device.type == "cuda" else "cpu"]
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

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_theirs = t_ours = float("inf")
    for rep in range(repeat):  # alternating, best of each: neither side gains from going second
        sync()
        t0 = time.perf_counter()
        for i, name in enumerate(names):
            one(i, os.path.join(theirs_dir, name + ".npy"))
        sync()
        t_theirs = min(t_theirs, time.perf_counter() - t0)
        for f in os.listdir(ours_dir):
            os.remove(os.path.join(ours_dir, f))
        t0 = time.perf_counter()
        rows = runner.extract_share(names, sources, enc, ours_dir, "UTT", "float32", batch, n_workers, progress=False)
        sync()
        t_ours = min(t_ours, time.perf_counter() - t0)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} clips failed in our extractor: {failed[:2]}")

    # agreement where MERTools' zero padding does not enter (audio under one 10 s window: all of ours here)
    diffs = []
    for name in names:
        a, b = np.load(os.path.join(theirs_dir, name + ".npy")), np.load(os.path.join(ours_dir, name + ".npy"))
        diffs.append(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)))
    shape = SIZES[size][modality]
    logger(f"{modality:<6} {FAMILY[modality]} {shape['hidden']}x{shape['layers']}, batch {batch}, workers {n_workers}, "
           f"{enc.padding_probe.get('batching')} batches: MERTools design {len(names) / t_theirs:7.2f} clips/s, ours "
           f"{len(names) / t_ours:7.2f} clips/s: {t_theirs / t_ours:.2f}x  (features agree to {max(diffs):.1e} "
           f"relative{'' if device.type == 'cpu' else ', ours in ' + str(enc.dtype).replace('torch.', '')})")
    return t_theirs, t_ours


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--modality", default="audio,visual,text")
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="our model dtype (auto: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="our decoding processes (default: what "
                                                                "extract_features.py uses on this device)")
    p.add_argument("--keep", default=None, help="keep the scratch folder here")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each design (alternating; the best counts)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from common.utils import resolve_device

    device = resolve_device(args.device)

    work = args.keep or tempfile.mkdtemp(prefix="extract_bench_")
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.time()
        names, subs = make_clips(work, args.clips)
        print(f"{args.clips} clips synthesised in {time.time() - t0:.1f}s; device {device}, torch threads "
              f"{torch.get_num_threads()}, size {args.size}", flush=True)
        total_theirs = total_ours = 0.0
        for modality in [m.strip() for m in args.modality.split(",") if m.strip()]:
            t_theirs, t_ours = bench_modality(modality, work, names, subs, args.size, device, args.dtype, args.workers,
                                              lambda s: print(s, flush=True), args.repeat)
            total_theirs += t_theirs
            total_ours += t_ours
        print(f"all modalities: MERTools design {total_theirs:.1f}s, ours {total_ours:.1f}s for {args.clips} clips each")
        print(f"speedup: {total_theirs / total_ours:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
