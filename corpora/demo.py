"""The demo data set: MER2025-shaped synthetic features, labels and a simulated VLM teacher (the generating
process in the script preprocess/make_demo.py's docstring).
"""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
from extraction.openface_au import AU_C, AU_R  # noqa: E402  (the OpenFace column layout, one definition)

CLASSES = config.EMO_RULE["MER"]  # neutral, angry, happy, sad, worried, surprise
PRIOR = {"neutral": 0.27, "angry": 0.19, "happy": 0.21, "sad": 0.15, "worried": 0.12, "surprise": 0.06}
VALENCE_MEAN = {"neutral": 0.0, "angry": -3.0, "happy": 3.5, "sad": -3.5, "worried": -2.0, "surprise": 1.0}
MODALITIES = ("video", "audio", "text")
CARRY_P = {"video": 0.6, "audio": 0.55, "text": 0.6}
CONFUSED_PAIRS = {
    "video": [("sad", "worried"), ("angry", "neutral")],
    "audio": [("happy", "surprise"), ("sad", "neutral")],
    "text": [("angry", "worried"), ("happy", "neutral")],
}
# feature name -> (modality, dim, noise std, storage dtype)
FEATURES = {
    "demo-clip-vit-base-UTT": ("video", 512, 0.55, np.float16),
    "demo-videomae-large-UTT": ("video", 1024, 0.40, np.float16),
    "demo-hubert-large-UTT": ("audio", 1024, 0.40, np.float16),
    "demo-wav2vec2-base-UTT": ("audio", 768, 0.55, np.float16),
    "demo-roberta-large-UTT": ("text", 1024, 0.40, np.float16),
    "demo-bert-base-UTT": ("text", 768, 0.55, np.float16),
}
LATENT_DIM, NUISANCE_DIM, LATENT_NOISE = 24, 8, 0.55
CORRUPT_P = 0.06
AU_PATTERN = {
    "neutral": [],
    "angry": ["AU04", "AU05", "AU07", "AU23"],
    "happy": ["AU06", "AU12", "AU25"],
    "sad": ["AU01", "AU04", "AU15", "AU17"],
    "worried": ["AU01", "AU02", "AU04", "AU20"],
    "surprise": ["AU01", "AU02", "AU05", "AU26"],
}
AU_FIRE_P = 0.5  # each action unit of the class's pattern fires with this probability
TEACHER_P_CORRECT = {1: 0.55, 2: 0.72, 3: 0.86}
TEACHER_WRONG_BIAS = {"neutral": 2.0, "worried": 2.0, "angry": 1.0, "happy": 1.0, "sad": 1.0, "surprise": 0.7}
TRUTH_CUE_P = 0.35  # a wrong teacher's description still shows the true cue of a carrying modality this often
CONF_IF_RIGHT = [0.01, 0.03, 0.08, 0.18, 0.35, 0.35]
CONF_IF_WRONG = [0.08, 0.17, 0.30, 0.25, 0.14, 0.06]
CUES = {
    "video": {
        "neutral": ["a relaxed, still face", "an expressionless face"],
        "angry": ["lowered, drawn-together brows and tight lips", "a hard stare with a clenched jaw"],
        "happy": ["a broad smile with raised cheeks", "smiling eyes and an open mouth"],
        "sad": ["drooping mouth corners and raised inner brows", "a downcast gaze"],
        "worried": ["raised, tense brows and stretched lips", "a tense face with a furrowed forehead"],
        "surprise": ["wide-open eyes and a dropped jaw", "raised brows and an open mouth"],
    },
    "audio": {
        "neutral": ["a steady, even voice", "a flat tone at normal pace"],
        "angry": ["a loud, sharp voice", "a raised voice with fast, hard speech"],
        "happy": ["a bright, lively voice", "laughter in the voice"],
        "sad": ["a slow, low and quiet voice", "a trembling, soft voice"],
        "worried": ["a hesitant, unsteady voice", "a quick, nervous pitch"],
        "surprise": ["a sudden rise in pitch", "an exclaiming tone"],
    },
    "text": {
        "neutral": ["a matter-of-fact subtitle", "a plain statement"],
        "angry": ["the subtitle complains bitterly", "words of blame and irritation"],
        "happy": ["the subtitle expresses delight", "words of joy and thanks"],
        "sad": ["the subtitle speaks of loss", "words of disappointment and grief"],
        "worried": ["the subtitle voices concern about what may happen", "words of doubt and fear"],
        "surprise": ["the subtitle expresses disbelief", "an exclamation of astonishment"],
    },
}


def _prototypes(rng, modality):
    """Unit-norm class prototypes; each confused pair shares almost the same point."""
    protos = {c: rng.normal(size=LATENT_DIM) for c in CLASSES}
    for a, b in CONFUSED_PAIRS[modality]:
        protos[b] = 0.95 * protos[a] + 0.05 * protos[b]
    return {c: 2.2 * v / np.linalg.norm(v) for c, v in protos.items()}


def generate(n_train, n_unlabeled, n_test, seed=0):
    """All arrays and tables of the demo, in memory (see the module docstring for the process)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_unlabeled + n_test
    names = np.array([f"sample_{i:08d}" for i in rng.permutation(np.arange(1, n + 1) * 7 + 100000)])
    split = np.array(["train"] * n_train + ["unlabeled"] * n_unlabeled + ["test"] * n_test)
    y = rng.choice(len(CLASSES), size=n, p=[PRIOR[c] for c in CLASSES])
    valence = np.clip(np.array([VALENCE_MEAN[CLASSES[k]] for k in y]) + rng.normal(0, 0.8, n), -5, 5).round(2)

    carries = np.stack([rng.random(n) < CARRY_P[m] for m in MODALITIES], axis=1)
    none = ~carries.any(1)
    carries[none, rng.integers(0, 3, none.sum())] = True
    corrupted = np.full(n, "", dtype=object)
    hit = rng.random(n) < CORRUPT_P
    corrupted[hit] = np.array(MODALITIES)[rng.integers(0, 3, hit.sum())]

    nuisance = rng.normal(size=(n, NUISANCE_DIM))
    latents = {}
    for j, m in enumerate(MODALITIES):
        protos = np.stack([_prototypes(rng, m)[c] for c in CLASSES])
        strength = rng.uniform(0.6, 1.4, n) * carries[:, j]
        latents[m] = strength[:, None] * protos[y] + rng.normal(0, LATENT_NOISE, (n, LATENT_DIM))

    feats = {}
    for fname, (m, dim, noise, dtype) in FEATURES.items():
        inp = np.concatenate([latents[m], nuisance], axis=1)
        w = rng.normal(size=(inp.shape[1], dim)) / np.sqrt(inp.shape[1]) * 1.5
        b = rng.normal(0, 0.3, dim)
        x = np.tanh(inp @ w + b) + rng.normal(0, noise, (n, dim))
        bad = corrupted == m
        x[bad] = rng.normal(0, 2.0, (bad.sum(), dim))
        feats[fname] = x.astype(dtype)

    au = _au_sequences(rng, y, carries[:, 0], corrupted == "video")
    teacher = _teacher(rng, names, y, carries, np.random.default_rng([seed, 1]))
    feats["demo-vlm-scores"] = np.array([[r["scores"][c] for c in CLASSES] for r in teacher], dtype=np.float32)

    table = pd.DataFrame({"name": names, "split": split, "discrete": [CLASSES[k] for k in y], "valence": valence,
                          "carries_video": carries[:, 0], "carries_audio": carries[:, 1],
                          "carries_text": carries[:, 2], "corrupted": corrupted})
    return table, feats, au, teacher


def _au_sequences(rng, y, face_carries, face_corrupted):
    seqs = []
    r_index = {a: i for i, a in enumerate(AU_R)}
    c_index = {a: i for i, a in enumerate(AU_C)}
    for k, carry, bad in zip(y, face_carries, face_corrupted):
        t = int(rng.integers(10, 97))
        inten = np.abs(rng.normal(0, 0.7, (t, len(AU_R))))
        if carry and not bad:
            center, width = rng.uniform(0.2, 0.8) * t, max(2.0, t * rng.uniform(0.1, 0.25))
            bump = np.exp(-0.5 * ((np.arange(t) - center) / width) ** 2)
            amp = rng.uniform(0.4, 1.8)
            for au in AU_PATTERN[CLASSES[k]]:
                if rng.random() < AU_FIRE_P:
                    inten[:, r_index[au]] += amp * rng.uniform(0.6, 1.1) * bump
        blinks = rng.random(t) < 0.08
        inten[blinks, r_index["AU45"]] += rng.uniform(1.5, 3.0, blinks.sum())
        if bad:  # tracking failure: jumpy garbage
            inten = rng.uniform(0, 5, (t, len(AU_R)))
        inten = np.clip(inten, 0, 5)
        presence = np.zeros((t, len(AU_C)))
        for au, i in c_index.items():
            if au in r_index:
                presence[:, i] = inten[:, r_index[au]] > 1.0
            else:
                presence[:, i] = rng.random(t) < 0.05
        flip = rng.random(presence.shape) < 0.05
        presence[flip] = 1 - presence[flip]
        seqs.append(np.concatenate([inten, presence], axis=1).astype(np.float32))
    return seqs


def _teacher(rng, names, y, carries, cue_rng):
    """Simulated VLM answers in the teacher JSON Lines format.

    The description is consistent with the teacher's own judgment, as a VLM's reasoning is: its cue phrases
    describe the label it gave; only when it is wrong does a modality that carries the emotion show the true
    class's cue, with probability TRUTH_CUE_P (partial evidence it weighed wrongly). ``cue_rng`` draws that
    choice, so the labels, scores and confidences do not depend on it."""
    records = []
    bias = np.array([TEACHER_WRONG_BIAS[c] for c in CLASSES])
    for name, k, carry in zip(names, y, carries):
        n_carry = int(carry.sum())
        right = rng.random() < TEACHER_P_CORRECT[n_carry]
        if right:
            label = k
            conf = int(rng.choice(6, p=CONF_IF_RIGHT))
        else:
            p = bias.copy()
            p[k] = 0
            label = int(rng.choice(len(CLASSES), p=p / p.sum()))
            conf = int(rng.choice(6, p=CONF_IF_WRONG))
        logits = rng.normal(0, 0.5, len(CLASSES))
        logits[label] += 1.0 + 0.5 * conf
        logits[k] += 0.8  # the truth keeps some mass even when the teacher is wrong
        scores = np.exp(logits) / np.exp(logits).sum()
        cues = []
        for j, m in enumerate(MODALITIES):
            perceived = k if carry[j] and cue_rng.random() < TRUTH_CUE_P else label
            if carry[j] or rng.random() < 0.3:
                cues.append(CUES[m][CLASSES[perceived]][int(rng.integers(0, 2))])
        desc = (f"The main speaker shows {'; '.join(cues)}. "
                f"Overall the strongest emotion appears to be {CLASSES[label]}.")
        records.append({"name": str(name), "label": CLASSES[label],
                        "scores": {c: round(float(s), 4) for c, s in zip(CLASSES, scores)},
                        "confidence": conf, "description": desc, "teacher": "demo-vlm"})
    return records


def write(out, table, feats, au, teacher, workers=8):
    os.makedirs(out, exist_ok=True)
    label_cols = ["name", "discrete", "valence"]
    table[table.split == "train"][label_cols].to_csv(os.path.join(out, "track1_train_disdim.csv"), index=False)
    table[table.split == "unlabeled"][["name"]].to_csv(os.path.join(out, "unlabeled.csv"), index=False)
    table[table.split == "unlabeled"][label_cols].to_csv(os.path.join(out, "unlabeled_truth.csv"), index=False)
    table[table.split == "test"][["name"]].to_csv(os.path.join(out, "test.csv"), index=False)
    table[table.split == "test"][label_cols].to_csv(os.path.join(out, "test_labels.csv"), index=False)
    table.drop(columns=["discrete", "valence"]).to_csv(os.path.join(out, "sample_info.csv"), index=False)
    os.makedirs(os.path.join(out, "teachers"), exist_ok=True)
    with open(os.path.join(out, "teachers", "demo-vlm.jsonl"), "w") as f:
        for r in teacher:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    jobs = []
    for fname, arr in feats.items():
        jobs.append((fname, arr))
    jobs.append(("demo-openface-au-FRM", au))
    names = table["name"].tolist()

    def save_feature(job):
        fname, arr = job
        d = os.path.join(out, fname)
        os.makedirs(d, exist_ok=True)
        for i, name in enumerate(names):
            np.save(os.path.join(d, name + ".npy"), arr[i])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(save_feature, jobs))


def describe(table, teacher):
    """Realised statistics, as Markdown."""
    lines = ["| split | n | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for s in ("train", "unlabeled", "test"):
        part = table[table.split == s]
        counts = part["discrete"].value_counts()
        lines.append(f"| {s} | {len(part)} | " + " | ".join(str(int(counts.get(c, 0))) for c in CLASSES) + " |")
    truth = table.set_index("name")["discrete"]
    right = np.array([r["label"] == truth[r["name"]] for r in teacher])
    conf = np.array([r["confidence"] for r in teacher])
    lines += ["", f"Teacher accuracy: {right.mean():.3f} overall", "", "| confidence | share | accuracy |",
              "|---|---|---|"]
    for c in range(6):
        sel = conf == c
        if sel.any():
            lines.append(f"| {c} | {sel.mean():.3f} | {right[sel].mean():.3f} |")
    k = table[["carries_video", "carries_audio", "carries_text"]].sum(axis=1)
    lines += ["", "Modalities carrying the emotion per sample: "
              + ", ".join(f"{i}: {(k == i).mean():.2f}" for i in (1, 2, 3)),
              f"Samples with a corrupted modality: {(table.corrupted != '').mean():.3f}"]
    return "\n".join(lines)
