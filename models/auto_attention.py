"""Attention fusion over any number of experts (the MRAC25 ``auto_attention`` model, generalised)."""

import torch
import torch.nn as nn

from models import register_model
from models.base import MERModel
from models.modules import MLPEncoder, build_encoders


@register_model("auto_attention")
class AutoAttention(MERModel):
    """One encoder per feature (3-layer MLP, or a transformer for frame-level features); an MLP over the
    concatenated expert states gives one attention weight per expert; their weighted sum feeds a linear head.

    ``att_norm='none'`` keeps MRAC25's raw linear weights; ``'softmax'`` normalises them per sample.
    A dropped expert (``expert_dropout`` while training, ``drop`` at test time) has its state zeroed and its
    attention weight removed.
    """

    def __init__(self, feat_dims, frame_level, num_classes, hidden_dim=256, dropout=0.3, att_norm="softmax",
                 seq_layers=2, seq_heads=4, seq_dim=64, max_len=32, expert_dropout=0.3, input_noise=0.0,
                 grad_clip=-1.0):
        super().__init__(feat_dims=feat_dims, frame_level=frame_level, num_classes=num_classes,
                         hidden_dim=hidden_dim, dropout=dropout, att_norm=att_norm, seq_layers=seq_layers,
                         seq_heads=seq_heads, seq_dim=seq_dim, max_len=max_len, expert_dropout=expert_dropout,
                         input_noise=input_noise, grad_clip=grad_clip)
        if att_norm not in ("softmax", "none"):
            raise ValueError(f"att_norm must be 'softmax' or 'none', got '{att_norm}'")
        self.att_norm = att_norm
        self.encoders = build_encoders(feat_dims, frame_level, hidden_dim, dropout, seq_layers, seq_heads, max_len,
                                       seq_dim)
        n = len(feat_dims)
        self.attention_mlp = MLPEncoder(hidden_dim * n, hidden_dim, dropout)
        self.fc_att = nn.Linear(hidden_dim, n)
        self.fc_out = nn.Linear(hidden_dim, num_classes)
        self.fused_dim = hidden_dim

    def fuse(self, feats, masks, keep):
        hiddens = self.encode(feats, masks, keep)
        att = self.fc_att(self.attention_mlp(torch.cat(hiddens, dim=1)))  # (B, n)
        if self.att_norm == "softmax":
            att = att.masked_fill(~keep, float("-inf")) if keep is not None else att
            att = att.softmax(dim=-1)
        elif keep is not None:
            att = att * keep
        stacked = torch.stack(hiddens, dim=2)  # (B, hidden, n)
        fused = torch.bmm(stacked, att.unsqueeze(2)).squeeze(2)  # (B, hidden)
        return {"logits": self.fc_out(fused), "hidden": fused, "expert_weights": att}
