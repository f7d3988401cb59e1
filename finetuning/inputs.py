"""What one sample gives the model being fine-tuned, one class per modality.

Each modality class turns a name into a *unit* (a small NumPy structure, made once per run: ``prepare``, or
``prepare_all`` for every name with its failures), a list of units into a batch of CPU tensors (``collate``),
and says in ``identity()`` what in its inputs changes the model (compared across runs into one feature
folder); ``has_input``, ``input_key`` (what identifies a name's input, as text) and ``info`` (for the report)
complete it. The trainer and the runner call only these, so a modality is one class in :data:`MODALITIES`.

Text: the utterance alone, or with the previous ``context_window`` utterances of its dialogue (the dialogue
order of the data set's tables, dataloader/dialogue.py), joined with the tokenizer's separator (``[SEP]``
for BERT-style models; a line break for decoder LLMs, whose end-of-text token would end the text), the target
utterance marked by :data:`TARGET_MARK`; with ``speakers`` each utterance is preceded by its speaker's name.
A text too long for ``max_tokens`` loses its oldest context first (the target is kept whole where it fits).

Audio (:class:`AudioInputs`): the clip decoded as extraction decodes it (extraction.sources.Sources: an audio file,
or a video's audio track; mono, resampled to the model's rate), cut into extraction's windows
(extraction.encoders.AudioPreprocessor: ``window_s`` seconds, 10 by default, a last piece under a second joined to
the window before it; Whisper and Qwen2-Audio: 30 s windows). A unit is a :class:`Clip`, its windows' samples
(held in memory: 4 bytes a sample, about 230 MB an hour of audio); ``collate`` flattens the windows of a batch's
clips and says which clip each window belongs to and how many frames of it are real (finetuning.audio).
"""

import hashlib
import os

import numpy as np

from common.errors import DataError

TARGET_MARK = ">>"


def context_text(target, previous=(), sep="\n", speaker=None, context=True):
    """The text a model reads for one utterance.

    ``target``: its text; ``previous``: ``[(speaker or None, text), ...]`` of the utterances before it, oldest
    first; ``speaker``: the target's speaker (None: no name). Without ``context`` the target alone (its speaker
    before it when given); with it, the previous utterances and the marked target, joined by `` sep ``."""
    def line(who, text):
        return f"{who}: {text}" if who else str(text)

    if not context:
        return line(speaker, target)
    parts = [line(w, t) for w, t in previous] + [f"{TARGET_MARK} {line(speaker, target)}"]
    return f" {sep} ".join(parts) if sep.strip() else sep.join(parts)


def text_digest(pairs):
    """A short SHA-256 of ``[(name, text), ...]`` (sorted), for the manifest and the settings."""
    h = hashlib.sha256()
    for n, t in sorted(pairs):
        h.update(f"{n}\t{t}\n".encode("utf-8"))
    return "sha256:" + h.hexdigest()[:16]


class TextInputs:
    """Names -> token ids for a text backbone; ``collate`` pads on the right (a causal model's real tokens
    never see the padding) and gives the attention mask that the pooling reads as "real"."""

    modality = "text"

    def __init__(self, tokenizer, texts, dialogues=None, speakers=None, context_window=0, max_tokens=128,
                 decoder=False, subtitle_col=None):
        self.tok, self.texts, self.dialogues = tokenizer, texts, dialogues
        self.speakers = speakers
        self.context_window = int(context_window)
        self.max_tokens = int(max_tokens)
        self.decoder = bool(decoder)
        self.subtitle_col = subtitle_col
        if self.context_window < 0:
            raise DataError(f"--context_window {context_window}: give 0 (the utterance alone) or a number of "
                            "previous utterances")
        self.sep = "\n" if decoder or not getattr(tokenizer, "sep_token", None) else tokenizer.sep_token
        # a decoder LLM (Qwen, Llama) adds no token of its own: its end-of-text token closes the text (MiSTER-E)
        self.eos = tokenizer.eos_token if decoder and tokenizer.eos_token else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self._previous = {}
        if self.context_window and dialogues is not None:
            names = [n for n in texts]
            for group in dialogues.groups(names):
                ordered = [names[p] for p in group]
                for i, n in enumerate(ordered):
                    self._previous[n] = ordered[max(0, i - self.context_window):i]

    def has_input(self, name):
        text = self.texts.get(name)
        return text is not None and str(text).strip() not in ("", "nan")

    def text_of(self, name):
        """The text the model reads for ``name`` (context and marks included)."""
        who = (lambda n: self.speakers.get(n) or None) if self.speakers is not None else (lambda n: None)
        previous = [(who(p), str(self.texts[p]).strip()) for p in self._previous.get(name, [])
                    if self.has_input(p)]
        return context_text(str(self.texts[name]).strip(), previous, self.sep, who(name), self.context_window > 0)

    def input_key(self, name):
        """What the model reads for ``name``, as text (compared across runs through the training-list digest)."""
        return self.text_of(name)

    def prepare_all(self, names):
        """``({name: unit}, {name: MediaError})`` (a text never fails here: a name without text has no input)."""
        return {n: self.prepare(n) for n in names}, {}

    @staticmethod
    def info(unit):
        """What the extraction report says of a unit."""
        return {"tokens": len(unit)}

    def prepare(self, name):
        """``name`` -> its unit: an int64 array of token ids (truncated from the left at ``max_tokens``)."""
        text = self.text_of(name) + (self.eos or "")
        self.tok.truncation_side = "left"
        ids = self.tok(text, truncation=True, max_length=self.max_tokens)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def collate(self, units):
        """Units -> ``{"input_ids", "attention_mask"}`` (CPU tensors, right-padded)."""
        import torch

        length = max(len(u) for u in units)
        ids = np.full((len(units), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(units), length), dtype=np.int64)
        for i, u in enumerate(units):
            ids[i, :len(u)], mask[i, :len(u)] = u, 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    @staticmethod
    def length(unit):
        return len(unit)

    def identity(self):
        return {"context_window": self.context_window, "speakers": self.speakers is not None,
                "max_tokens": self.max_tokens, "separator": self.sep, "target_mark": TARGET_MARK,
                "subtitle_col": self.subtitle_col}


class Clip:
    """One clip's windows (float32 sample arrays, as extraction.encoders.AudioPreprocessor cuts them) and their
    real lengths in samples; ``len()`` is the clip's length in samples (batches of similar lengths predict
    together)."""

    __slots__ = ("windows", "lengths", "duration_s")

    def __init__(self, windows, lengths, duration_s):
        self.windows, self.lengths, self.duration_s = windows, [int(n) for n in lengths], duration_s

    def __len__(self):
        return int(sum(self.lengths))


class _Deferred:
    """Stands in for Whisper's feature extractor inside extraction's AudioPreprocessor, so that its windows come
    back as samples: the log-mel (80 or 128 x 3000 floats a window) is computed in ``collate``, on the training
    device, instead of being held in memory for every clip."""

    class _Out:
        def __init__(self, piece):
            self.input_features = [piece]

    def __call__(self, piece, sampling_rate=None, return_tensors=None):
        return self._Out(piece)


class AudioInputs:
    """Names -> :class:`Clip` units for a speech backbone (finetuning.audio.AudioBackbone); ``collate`` gives the
    model's inputs for every window of a batch's clips, plus ``clip`` (the clip of each window), ``lengths``
    (samples) and ``frames`` (real frames of each window), so that padding never enters the pooling."""

    modality = "audio"

    def __init__(self, backbone, sources, window_s=None, prompt=None, device=None, workers=None):
        from extraction.encoders import AudioPreprocessor

        self.kind, self.sources, self.config = backbone.kind, sources, backbone.config
        self.fe, self.sample_rate = backbone.feature_extractor, int(backbone.sample_rate)
        # Whisper's feature extractor computes the log-mel with torch on the device it is given
        self.fe_device = {"device": str(device)} if device is not None and device.type == "cuda" else {}
        self.workers = int(workers or min(8, os.cpu_count() or 1))
        self.prompt = None
        if self.kind == "audio-ssl":
            self.window_s = float(window_s or 10.0)
            if not self.window_s >= 1.0:
                raise DataError(f"--window_s {window_s}: give a window of 1 second or more")
            self.pre = AudioPreprocessor(self.fe, self.sample_rate, self.window_s)
            # as extraction.encoders.AudioSSLEncoder: large models take a mask; base models would see padding
            self.accepts_mask = bool(getattr(self.fe, "return_attention_mask", True))
        else:
            self.window_s = float(self.fe.chunk_length)
            if window_s is not None and float(window_s) != self.window_s:
                raise DataError(f"--window_s {window_s}: {backbone.config.model_type} reads windows of "
                                f"{self.window_s:g} s (its fixed input); leave --window_s unset")
            self.pre = AudioPreprocessor(_Deferred(), self.sample_rate, self.window_s, whisper=True)
            self.hop = int(self.fe.hop_length) * 2  # as extraction.encoders.WhisperEncoder
            self.max_frames = int(getattr(self.config, "max_source_positions", 1500))
        if self.kind == "qwen2-audio":
            tok = backbone.tokenizer
            self.prompt = DEFAULT_PROMPT if prompt is None else str(prompt)
            self.prompt_ids = list(tok(self.prompt, add_special_tokens=False)["input_ids"]) if self.prompt else []
            self.audio_id = int(getattr(self.config, "audio_token_id", None)
                                if getattr(self.config, "audio_token_id", None) is not None
                                else self.config.audio_token_index)

            def special(token):
                i = tok.convert_tokens_to_ids(token)
                return None if i is None or i == tok.unk_token_id else int(i)

            self.bos, self.eos = special("<|audio_bos|>"), special("<|audio_eos|>")
            self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        elif prompt:
            raise DataError("--prompt is for Qwen2-Audio (the text its language model reads after the audio)")

    def has_input(self, name):
        return name in self.sources.audio or name in self.sources.video

    def input_key(self, name):
        """The input file's fingerprint (size and modification time, as extraction records it)."""
        return str(self.sources.fingerprint(name))

    def prepare(self, name):
        """``name`` -> its :class:`Clip` (extraction.media.MediaError when the file cannot be decoded or is too
        short)."""
        prepared = self.pre(self.sources.load(name))
        return Clip([np.asarray(w, dtype=np.float32) for w in prepared.units], prepared.lengths,
                    prepared.info["duration_s"])

    def prepare_all(self, names):
        """``({name: Clip}, {name: MediaError})``, decoded by a pool of threads (PyAV decodes outside the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        from extraction.media import MediaError

        def one(name):
            try:
                return name, self.prepare(name), None
            except MediaError as e:
                return name, None, e

        names = list(names)
        if self.workers > 1 and len(names) > 16:
            with ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(one, names))
        else:
            results = [one(n) for n in names]
        return {n: u for n, u, e in results if e is None}, {n: e for n, _, e in results if e is not None}

    @staticmethod
    def info(unit):
        return {"duration_s": unit.duration_s, "windows": len(unit.windows)}

    def frames_for(self, lengths):
        """Real frames of windows of ``lengths`` samples: the convolutional front end's count (audio-ssl, as
        extraction), one per 320 samples up to the encoder's positions (Whisper), or the audio tower's output
        length from the real mel frames (Qwen2-Audio, in ``collate``)."""
        if self.kind == "audio-ssl":
            from extraction.encoders import AudioSSLEncoder

            return AudioSSLEncoder.frames_for(self, lengths)
        return np.minimum(np.ceil(np.asarray(lengths) / self.hop).astype(np.int64), self.max_frames)

    def collate(self, units):
        """Clips -> CPU tensors for finetuning.audio.AudioFinetuneModel (windows of all clips, in clip order)."""
        import torch

        from extraction.encoders import _pad_stack

        pieces, lengths, clip = [], [], []
        for b, unit in enumerate(units):
            for piece, n in zip(unit.windows, unit.lengths):
                pieces.append(piece)
                lengths.append(n)
                clip.append(b)
        out = {"clip": torch.tensor(clip, dtype=torch.int64), "lengths": torch.tensor(lengths, dtype=torch.int64)}
        if self.kind == "audio-ssl":
            longest = max(lengths)
            out["input_values"] = torch.from_numpy(_pad_stack(pieces, longest, 0.0))
            out["frames"] = torch.from_numpy(np.asarray(self.frames_for(lengths), dtype=np.int64))
            if self.accepts_mask:
                mask = np.zeros((len(pieces), longest), dtype=np.int64)
                for i, n in enumerate(lengths):
                    mask[i, :n] = 1
                out["attention_mask"] = torch.from_numpy(mask)
            return out
        if self.kind == "whisper":
            feats = self.fe(pieces, sampling_rate=self.sample_rate, return_tensors="np", **self.fe_device)
            out["input_features"] = torch.from_numpy(np.asarray(feats.input_features, dtype=np.float32))
            out["frames"] = torch.from_numpy(self.frames_for(lengths))
            return out
        enc = self.fe(pieces, sampling_rate=self.sample_rate, return_attention_mask=True, padding="max_length",
                      return_tensors="np", **self.fe_device)  # as Qwen2AudioProcessor calls it
        mel_mask = np.asarray(enc.attention_mask, dtype=np.int64)
        n_audio = (((mel_mask.sum(1) - 1) // 2 + 1) - 2) // 2 + 1  # Qwen2AudioProcessor's num_audio_tokens
        rows = [[] for _ in units]
        for w, b in enumerate(clip):
            rows[b] += [(self.bos, 0)] * (self.bos is not None) + [(self.audio_id, 1)] * int(n_audio[w])
            rows[b] += [(self.eos, 0)] * (self.eos is not None)
        rows = [r + [(i, 0) for i in self.prompt_ids] for r in rows]
        longest = max(len(r) for r in rows)
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        slots, mask = np.zeros((len(rows), longest), dtype=bool), np.zeros((len(rows), longest), dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = [i for i, _ in r]
            slots[b, :len(r)] = [s for _, s in r]
            mask[b, :len(r)] = 1
        out.update(input_features=torch.from_numpy(np.asarray(enc.input_features, dtype=np.float32)),
                   feature_attention_mask=torch.from_numpy(mel_mask), input_ids=torch.from_numpy(ids),
                   attention_mask=torch.from_numpy(mask), audio_slots=torch.from_numpy(slots))
        return out

    def identity(self):
        out = {"window_s": self.window_s, "sample_rate": self.sample_rate, "audio_kind": self.kind,
               "audio_input": "clip in windows; frames of all windows pooled (padding masked)", "layerdrop": 0.0}
        if self.kind == "audio-ssl":
            out.update(normalize=bool(getattr(self.fe, "do_normalize", False)),
                       batching="padded with attention mask" if self.accepts_mask else "equal-length groups")
        if self.kind == "qwen2-audio":
            out.update(prompt=self.prompt, audio_markers=[self.bos is not None, self.eos is not None])
        return out


DEFAULT_PROMPT = "What is the emotion of the person?:"  # MiSTER-E's train_salmonn.py (finetuning.audio)
MODALITIES = {"text": TextInputs, "audio": AudioInputs}
