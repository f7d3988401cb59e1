"""Write a few dozen synthetic clips in the MER2025 release layout, for the feature extraction demo and tests.

    python preprocess/make_clip_demo.py [--out features/clipdemo] [--n 48] [--seed 0] [--overwrite] [--no_models]

Deterministic for a given --seed (the same bytes for wav, npy and CSV files, the same decoded content for
mp4); 48 clips take a few seconds and about 47 MB, 40 of them the uncompressed face arrays.

What it writes (under --out):

  audio/<name>.wav                  16 kHz mono 16-bit, 1.5-3.0 s (the length varies per clip)
  video/<name>.mp4                  96x96, 10 fps, as long as the wav, with the same audio as an AAC track
  openface_face/<name>/<name>.npy   (T, 112, 112, 3) uint8 BGR "aligned face crops", T = video frames
  subtitle_chieng.csv               name,chinese,english
  track1_train_disdim.csv           name,discrete,valence   labelled clips (MER labels)
  test.csv                          name                    test candidates
  test_labels.csv                   name,discrete,valence   test truth, for scoring only
  unlabeled.csv                     name                    unlabelled clips
  README.md                         this layout, the generating process and the counts per class
  models/tiny-hubert, tiny-clip,    tiny randomly initialised encoders saved with save_pretrained, standing in
    tiny-bert                       for hub checkpoints so that the demo runs offline (not with --no_models)

The generating process
----------------------
Labels: MER's six classes, balanced (n/6 clips each, in a seeded order); 60% labelled, 20% test, 20%
unlabelled, stratified by class. Valence on MER's [-5, 5] scale: a class mean (neutral 0, angry -3,
happy 3.5, sad -3.5, worried -2, surprise 1) plus N(0, 0.3). Each modality carries the class, so even
randomly initialised encoders give features a small classifier can learn from:

* audio: a tone at 200 Hz * 1.35**k (k = class index; +-3% per clip) with its second harmonic, under a
  class envelope (neutral flat, angry 6 Hz pulses, happy rising, sad decaying, worried 3 Hz tremolo,
  surprise a sudden jump at 30% of the clip), plus white noise.
* video: a bright disc of the class's hue (k * 60 degrees) crossing a dark background at the class's
  speed (1.5 + 1.2k pixels a frame, wrapping around), over faint stripes drifting at a class rate, plus noise.
* face crops: the same disc held in the centre, as a face tracker would keep it, its radius pulsing at the
  class's rate over the drifting stripes, plus noise; stored BGR as MERTools' OpenCV crops are.
* subtitles: 6-9 word English sentences mixing 2-3 words of the class's list with neutral filler, and a
  Chinese column built the same way from class words and filler characters.
"""

import colorsys
import os

import numpy as np
import pandas as pd

import _paths  # noqa: F401  (puts the repository root on sys.path)
import config  # noqa: E402
from extraction import media  # noqa: E402

CLASSES = config.EMO_RULE["MER"]  # neutral, angry, happy, sad, worried, surprise
VALENCE_MEAN = {"neutral": 0.0, "angry": -3.0, "happy": 3.5, "sad": -3.5, "worried": -2.0, "surprise": 1.0}
SAMPLE_RATE, FPS, VIDEO_SIZE, FACE_SIZE = 16000, 10, 96, 112
SPLIT_PATTERN = ("train", "test", "train", "unlabeled", "train")  # 60/20/20, dealt along the class-sorted clips
MEDIA_DIRS = ("audio", "video", "openface_face")
WORDS_EN = {
    "neutral": ["schedule", "meeting", "usual", "report", "okay", "normal"],
    "angry": ["furious", "unfair", "hate", "shouting", "annoyed", "enough"],
    "happy": ["wonderful", "great", "love", "smile", "delighted", "lucky"],
    "sad": ["lost", "miss", "crying", "lonely", "sorry", "gone"],
    "worried": ["afraid", "nervous", "maybe", "risk", "trouble", "anxious"],
    "surprise": ["suddenly", "unbelievable", "wow", "really", "shocked", "unexpected"],
}
FILLER_EN = ["the", "we", "it", "was", "today", "and", "I", "think", "that", "about", "this", "then", "you", "so"]
WORDS_ZH = {
    "neutral": ["安排", "会议", "通知", "平常", "报告", "还行"],
    "angry": ["生气", "讨厌", "不公平", "愤怒", "受够了", "烦"],
    "happy": ["开心", "高兴", "太好了", "快乐", "喜欢", "幸运"],
    "sad": ["难过", "伤心", "失望", "哭", "孤单", "想念"],
    "worried": ["担心", "害怕", "紧张", "不安", "万一", "麻烦"],
    "surprise": ["惊讶", "没想到", "竟然", "天哪", "居然", "突然"],
}
FILLER_ZH = ["我", "我们", "今天", "这个", "觉得", "真的", "那个", "就是", "他", "说", "一下", "然后"]


DEMO_MODELS = {"tiny-hubert": "hubert", "tiny-clip": "clip", "tiny-bert": "bert"}


def write_models(out, seed):
    """Tiny randomly initialised encoders under ``<out>/models/``, saved with ``save_pretrained`` as a hub
    checkpoint is: HuBERT (audio, 64-d), CLIP's image tower (32-d projection) and BERT (64-d, its WordPiece
    vocabulary made of the subtitles' words and characters). They stand in for real checkpoints so that the
    demo runs offline; pass a hub id to --model to use a real one."""
    from extraction.tiny_models import save_tiny_model

    subs = pd.read_csv(os.path.join(out, "subtitle_chieng.csv"), dtype=str)
    texts = subs["english"].tolist() + subs["chinese"].tolist()
    folders = {}
    for name, family in DEMO_MODELS.items():
        folders[name] = save_tiny_model(family, os.path.join(out, "models", name), hidden=64, image_size=32,
                                        patch_size=8, texts=texts, max_length=64, seed=seed)
    return folders


def _labels(n, seed):
    """Class index, split and valence per clip: balanced classes, a stratified 60/20/20 split."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(CLASSES))
    order = np.lexsort((rng.random(n), y))  # clips sorted by class, in random order within a class
    split = np.empty(n, dtype=object)
    split[order] = np.array(SPLIT_PATTERN, dtype=object)[np.arange(n) % len(SPLIT_PATTERN)]
    valence = np.array([VALENCE_MEAN[CLASSES[k]] for k in y]) + rng.normal(0, 0.3, n)
    return y, split, np.clip(valence, -5, 5).round(2)


def _audio(k, n_samples, rng):
    """The class's tone under its envelope, plus noise: float32 (n_samples,) in [-1, 1]."""
    t = np.arange(n_samples) / SAMPLE_RATE
    f0 = 200.0 * 1.35 ** k * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * np.pi)
    tone = np.sin(2 * np.pi * f0 * t + phase) + 0.3 * np.sin(4 * np.pi * f0 * t + phase)
    dur = t[-1]
    envelope = {
        "neutral": np.full_like(t, 0.5),
        "angry": 0.7 * (0.4 + 0.6 * np.abs(np.sin(2 * np.pi * 6 * t))),
        "happy": 0.3 + 0.4 * t / dur,
        "sad": 0.1 + 0.6 * np.exp(-t / 0.8),
        "worried": 0.5 * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t)),
        "surprise": np.where(t < 0.3 * dur, 0.15, 0.8),
    }[CLASSES[k]]
    fade = np.minimum(1.0, np.minimum(t, dur - t) / 0.01)
    x = 0.65 * envelope * fade * tone + rng.normal(0, 0.02, n_samples)
    return np.clip(x, -1, 1).astype(np.float32)


def _hue_rgb(k, rng):
    hue = (k / len(CLASSES) + rng.uniform(-0.02, 0.02)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 1.0)) * 230.0


def _stripes(size, n_frames, k, rng):
    """Faint diagonal stripes drifting at the class's rate: (T, size, size) floats."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi * 4
    drift = 0.25 + 0.15 * k
    t = np.arange(n_frames)[:, None, None]
    return 12.0 * (1 + np.sin(phase[None] - 2 * np.pi * drift * t / FPS))


def _disc(size, cx, cy, radius):
    """Soft-edged discs, one per frame: (T, size, size) weights in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.sqrt((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
    return np.clip(radius[:, None, None] - d + 0.5, 0, 1)


def _to_uint8(x, rng):
    return np.clip(np.rint(x + rng.normal(0, 4.0, x.shape)), 0, 255).astype(np.uint8)


def _video(k, n_frames, rng):
    """(T, 96, 96, 3) uint8 RGB: the class-coloured disc crossing the frame at the class's speed."""
    colour = _hue_rgb(k, rng)
    speed = (1.5 + 1.2 * k) * rng.choice([-1, 1])
    t = np.arange(n_frames)
    cx = (rng.uniform(0, VIDEO_SIZE) + speed * t) % VIDEO_SIZE
    cy = np.full(n_frames, rng.uniform(30, VIDEO_SIZE - 30)) + 4 * np.sin(2 * np.pi * t / 12)
    disc = _disc(VIDEO_SIZE, cx, cy, np.full(n_frames, rng.uniform(12, 16)))[..., None]
    background = (18 + _stripes(VIDEO_SIZE, n_frames, k, rng))[..., None]
    return _to_uint8(background * (1 - disc) + colour * disc, rng)


def _face(k, n_frames, rng):
    """(T, 112, 112, 3) uint8 RGB: the class-coloured disc centred, its radius pulsing at the class's rate."""
    colour = _hue_rgb(k, rng)
    t = np.arange(n_frames)
    centre = FACE_SIZE / 2 + rng.normal(0, 1.5, (2, n_frames))
    radius = 34 + 6 * np.sin(2 * np.pi * (0.3 + 0.25 * k) * t / FPS + rng.uniform(0, 2 * np.pi))
    disc = _disc(FACE_SIZE, centre[0], centre[1], radius)[..., None]
    background = (25 + _stripes(FACE_SIZE, n_frames, k, rng))[..., None]
    return _to_uint8(background * (1 - disc) + colour * disc, rng)


def _sentence(words, filler, rng, n_words, k_words):
    chosen = list(rng.choice(filler, n_words - k_words))
    for w in rng.choice(words, k_words, replace=False):
        chosen.insert(int(rng.integers(0, len(chosen) + 1)), str(w))
    return chosen


def _subtitles(k, rng):
    """(chinese, english) sentences built from the class's word lists and neutral filler."""
    cls = CLASSES[k]
    en = _sentence(WORDS_EN[cls], FILLER_EN, rng, int(rng.integers(6, 10)), int(rng.integers(2, 4)))
    en[0] = en[0][0].upper() + en[0][1:]
    end = "!" if cls in ("angry", "surprise") else "."
    zh = _sentence(WORDS_ZH[cls], FILLER_ZH, rng, int(rng.integers(5, 8)), int(rng.integers(2, 4)))
    return "".join(zh) + ("！" if end == "!" else "。"), " ".join(en) + end


def make_clips(out, n=48, seed=0, progress=True):
    """Write ``n`` synthetic clips and their tables under ``out`` (layout in the module docstring).

    Each clip's media come from its own generator seeded with ``(seed, index)``. Returns the table of all
    clips: name, discrete, valence, split, frames, seconds."""
    y, split, valence = _labels(n, seed)
    names = [f"sample_{i:05d}" for i in range(1, n + 1)]
    for d in MEDIA_DIRS:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    rows, subtitles = [], []
    for i, (name, k) in enumerate(zip(names, y)):
        rng = np.random.default_rng([seed, i])
        n_frames = int(rng.integers(15, 31))  # 1.5-3.0 s at 10 fps
        audio = _audio(k, n_frames * SAMPLE_RATE // FPS, rng)
        media.write_wav(os.path.join(out, "audio", name + ".wav"), audio, SAMPLE_RATE)
        media.write_video(os.path.join(out, "video", name + ".mp4"), _video(k, n_frames, rng), fps=FPS,
                          audio=audio, sample_rate=SAMPLE_RATE)
        face_dir = os.path.join(out, "openface_face", name)
        os.makedirs(face_dir, exist_ok=True)
        np.save(os.path.join(face_dir, name + ".npy"), _face(k, n_frames, rng)[..., ::-1])  # BGR, as OpenCV's
        subtitles.append((name, *_subtitles(k, rng)))
        rows.append({"name": name, "discrete": CLASSES[k], "valence": valence[i], "split": split[i],
                     "frames": n_frames, "seconds": n_frames / FPS})
        if progress and ((i + 1) % 12 == 0 or i + 1 == n):
            print(f"  {i + 1}/{n} clips", flush=True)
    table = pd.DataFrame(rows)
    pd.DataFrame(subtitles, columns=["name", "chinese", "english"]).to_csv(
        os.path.join(out, "subtitle_chieng.csv"), index=False, encoding="utf-8")
    labels = ["name", "discrete", "valence"]
    table[table.split == "train"][labels].to_csv(os.path.join(out, "track1_train_disdim.csv"), index=False)
    table[table.split == "test"][["name"]].to_csv(os.path.join(out, "test.csv"), index=False)
    table[table.split == "test"][labels].to_csv(os.path.join(out, "test_labels.csv"), index=False)
    table[table.split == "unlabeled"][["name"]].to_csv(os.path.join(out, "unlabeled.csv"), index=False)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(_readme(table, seed))
    return table


def _readme(table, seed):
    layout, process = __doc__.split("What it writes (under --out):", 1)[1].split("The generating process", 1)
    lines = ["| split | n | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for s in ("train", "test", "unlabeled"):
        part = table[table.split == s]
        counts = part["discrete"].value_counts()
        lines.append(f"| {s} | {len(part)} | " + " | ".join(str(int(counts.get(c, 0))) for c in CLASSES) + " |")
    return (f"# Clip demo ({len(table)} clips, seed {seed})\n\nWritten by `python preprocess/make_clip_demo.py"
            f" --n {len(table)} --seed {seed}`.\n\n## Layout\n\n```\n{layout.strip(chr(10))}\n```\n\n## The generating process\n"
            f"{process.split(chr(10), 2)[2]}\n## Clips per class\n\n" + "\n".join(lines) + "\n\n"
            f"Clip length: {table.seconds.min():.1f}-{table.seconds.max():.1f} s, {int(table.frames.sum())} "
            "video frames in all.\n")


def _is_clip_demo(path):
    readme = os.path.join(path, "README.md")
    if not os.path.isfile(readme):
        return False
    with open(readme, encoding="utf-8") as f:
        return f.readline().startswith("# Clip demo")


def _folder_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
