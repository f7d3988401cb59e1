"""What one sample gives the model being fine-tuned, one class per modality.

Each modality class turns a name into a *unit* (a small NumPy structure, made once per run) and a list of
units into a batch of CPU tensors (``collate``), and says in ``identity()`` what in its inputs changes the
model (compared across runs into one feature folder). The trainer and the runner only call these three, so a
new modality (audio: windows of the clip, as extraction cuts them) is one more class in :data:`MODALITIES`.

Text: the utterance alone, or with the previous ``context_window`` utterances of its dialogue (the dialogue
order of the data set's tables, dataloader/dialogue.py), joined with the tokenizer's separator (``[SEP]``
for BERT-style models; a line break for decoder LLMs, whose end-of-text token would end the text), the target
utterance marked by :data:`TARGET_MARK`; with ``speakers`` each utterance is preceded by its speaker's name.
A text too long for ``max_tokens`` loses its oldest context first (the target is kept whole where it fits).
"""

import hashlib

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


MODALITIES = {"text": TextInputs}
