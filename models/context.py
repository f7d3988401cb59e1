"""Conversation context on top of any registered model (MiSTER-E's context layer; bc-LSTM's idea).

``ContextModel`` wraps an utterance-level ``MERModel``: the model fuses each utterance's experts into its
state ``hidden`` ``(B, D)`` as usual; the utterances of a dialogue then pass through a 1-D convolution over
``2 * context + 1`` neighbours and a bidirectional GRU, a residual adds the utterance's own (projected)
state back, and a new classifier reads the result. No speaker identity is used.

Padding never leaks: padded positions are zeroed before and after the convolution (so an utterance at the
end of a dialogue sees zeros beyond it, however much padding follows) and the GRU runs over packed
sequences. A dialogue only ever sees its own utterances.

Own-state masking (``context_mask`` p, training only): each utterance of a dialogue of two or more is hidden
from the context layer with probability p (its state zeroed, as padding is), so its prediction must come from
its neighbours. Where the utterance features fit the training labels on their own (MOSI's bc-LSTM features
were extracted by networks trained on the training videos) the layer would otherwise learn to copy the
utterance's own state and ignore the dialogue; at test time nothing is hidden.

Loss: cross-entropy of the context prediction plus ``context_aux`` x the wrapped model's own loss on its
utterance-level prediction (its auxiliary terms included: moe's head CE, KL and contrastive losses, mmim's
MI bounds), so the utterance model keeps learning what it would alone.

Where the layer sits (``context_level``):

* ``fused`` (default): one context layer over the model's fused state, with its own classifier (above).
* ``expert``: each expert's state (its encoder's output, before the model fuses the experts) passes through
  its own context layer, as MiSTER-E models context per modality and bc-LSTM's first level does per
  modality; the model then fuses the context-aware expert states and its own head predicts. No extra
  classifier, so the loss is the model's own.
* ``both``: expert-level layers, then the fused-level layer and classifier (bc-LSTM's hierarchy).

An expert-level layer keeps the width of the expert state (the model's ``hidden_dim``); ``context_hidden`` is
the width of the fused-level layer only.

Built by ``models.create_model(..., context=K)`` with K > 0; the wrapper's ``config`` is the wrapped model's
plus the context keys, so a checkpoint rebuilds it with the same call.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.base import weighted_mean

# hyperparameters of the context layer (popped by create_model before the wrapped model is built)
CONTEXT_DEFAULTS = {"context": 0, "context_hidden": 128, "context_dropout": 0.3, "context_aux": 1.0,
                    "context_mask": 0.0, "context_level": "fused"}
CONTEXT_LEVELS = ("fused", "expert", "both")


def context_run_name(context, level="fused"):
    """Run folder name of a benchmark run with ``context`` K: ``ctx<K>``, plus ``_<level>`` off the default."""
    return f"ctx{context}" + ("" if level == "fused" else f"_{level}")


class DialogueContext(nn.Module):
    """Utterance states ``(B, in_dim)`` -> context-aware states ``(B, hidden)``, dialogue by dialogue.

    ``dialog_index`` ``(n, L)``: positions of each dialogue's utterances in the flat batch, in order, -1 on
    padding; ``dialog_mask`` ``(n, L)``: True on real utterances. Every position of the flat batch appears
    exactly once."""

    def __init__(self, in_dim, hidden, context, dropout=0.3, mask=0.0):
        super().__init__()
        if not 0 <= float(mask) < 1:
            raise ValueError(f"context_mask must be in [0, 1), got {mask}")
        self.mask = float(mask)
        if int(context) < 1:
            raise ValueError(f"context must be >= 1 neighbours on each side, got {context}")
        self.context = int(context)
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden))
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=2 * self.context + 1, padding=self.context)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, dialog_index, dialog_mask):
        x = self.proj(h)  # (B, H)
        mask = dialog_mask.unsqueeze(-1).to(x.dtype)  # (n, L, 1)
        seq = x[dialog_index.clamp_min(0)] * mask  # (n, L, H), zeros on padding
        if self.training and self.mask > 0:  # hide some utterances' own states (dialogues of two or more)
            hide = (torch.rand(dialog_mask.shape, device=x.device) < self.mask) & dialog_mask
            hide &= (dialog_mask.sum(1, keepdim=True) > 1)
            seq = seq * (~hide).unsqueeze(-1).to(x.dtype)
        c = F.relu(self.conv(seq.transpose(1, 2)).transpose(1, 2)) * mask
        lengths = dialog_mask.sum(1).cpu()
        packed = pack_padded_sequence(self.drop(c), lengths, batch_first=True, enforce_sorted=False)
        g, _ = self.gru(packed)
        g, _ = pad_packed_sequence(g, batch_first=True, total_length=seq.shape[1])
        z = self.norm(seq + self.drop(self.out(g)))  # residual: the utterance's own state plus its context
        real = dialog_mask.reshape(-1)
        return z.new_zeros(x.shape).index_copy(0, dialog_index.reshape(-1)[real], z.reshape(-1, z.shape[-1])[real])


class ContextModel(nn.Module):
    """A registered model plus dialogue context layers: one per expert (``expert_context``; levels expert and
    both) and/or one on the fused state with a classifier on top (``context_layer``, ``head``; levels fused
    and both). See the module docstring.

    ``forward(feats, masks, drop, dialog_index, dialog_mask)`` returns the wrapped model's outputs; with a
    fused-level layer ``logits`` is the context prediction, the wrapped model's own prediction
    ``utterance_logits`` and the context state ``context_hidden``. Without ``dialog_index`` every utterance is
    its own dialogue."""

    needs_dialogues = True

    def __init__(self, base, context=1, context_hidden=128, context_dropout=0.3, context_aux=1.0, context_mask=0.0,
                 context_level="fused"):
        super().__init__()
        if context_level not in CONTEXT_LEVELS:
            raise ValueError(f"context_level must be one of {', '.join(CONTEXT_LEVELS)}, got '{context_level}'")
        self.base = base
        self.model_name = base.model_name
        self.context_aux = float(context_aux)
        self.config = {**base.config, "context": int(context), "context_hidden": int(context_hidden),
                       "context_dropout": float(context_dropout), "context_aux": float(context_aux),
                       "context_mask": float(context_mask), "context_level": context_level}
        self.expert_context = None
        if context_level in ("expert", "both"):
            width = base.config.get("hidden_dim")
            if not getattr(base, "encoders", None) or width is None:
                raise ValueError(f"model '{base.model_name}' has no per-expert encoders of width hidden_dim, so "
                                 f"context_level '{context_level}' cannot be used; use context_level 'fused'")
            self.expert_context = nn.ModuleList(
                DialogueContext(int(width), int(width), context, float(context_dropout), float(context_mask))
                for _ in base.encoders)
        self.context_layer = self.head = None
        if context_level in ("fused", "both"):
            if getattr(base, "fused_dim", None) is None:
                raise ValueError(f"model '{base.model_name}' does not say the size of its fused state (fused_dim), "
                                 "so a context layer cannot be put on it")
            self.context_layer = DialogueContext(base.fused_dim, int(context_hidden), context, float(context_dropout),
                                                 float(context_mask))
            self.head = nn.Linear(int(context_hidden), base.config["num_classes"])

    # what the trainer reads from a model
    @property
    def input_norm(self):
        return self.base.input_norm

    @property
    def grad_clip(self):
        return self.base.grad_clip

    @property
    def n_experts(self):
        return self.base.n_experts

    def forward(self, feats, masks=None, drop=None, dialog_index=None, dialog_mask=None):
        if dialog_index is None:  # no dialogues given: each utterance alone
            dialog_index = torch.arange(feats[0].shape[0], device=feats[0].device).unsqueeze(1)
            dialog_mask = torch.ones_like(dialog_index, dtype=torch.bool)
        elif dialog_mask is None:
            dialog_mask = dialog_index >= 0
        if self.expert_context is not None:  # read by MERModel.encode while this call lasts
            self.base.expert_context = (self.expert_context, dialog_index, dialog_mask)
        try:
            out = dict(self.base(feats, masks, drop=drop))
        finally:
            self.base.expert_context = None
        if self.context_layer is None:  # expert level only: the model's own fusion and head predict
            return out
        if out.get("hidden") is None:
            raise ValueError(f"model '{self.model_name}' returns no fused state 'hidden' for the context layer")
        state = self.context_layer(out["hidden"], dialog_index, dialog_mask)
        out["utterance_logits"] = out["logits"]
        out["context_hidden"] = state
        out["logits"] = self.head(self.context_layer.drop(state))
        return out

    def loss(self, out, labels, weights=None):
        if self.context_layer is None:
            return self.base.loss(out, labels, weights)
        total = weighted_mean(F.cross_entropy(out["logits"], labels, reduction="none"), weights)
        if self.context_aux > 0:
            total = total + self.context_aux * self.base.loss({**out, "logits": out["utterance_logits"]}, labels,
                                                              weights)
        return total
