"""Building blocks shared by the fusion models: one encoder per expert (feature)."""

import torch
import torch.nn as nn


class MLPEncoder(nn.Module):
    """Utterance-level expert: 3 x (Linear, ReLU, Dropout), as in MERBench/MRAC25."""

    def __init__(self, in_dim, hidden_dim, dropout=0.3):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(3):
            layers += [nn.Linear(d, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden_dim
        self.net = nn.Sequential(*layers)

    def forward(self, x, mask=None):
        return self.net(x)


class SequenceEncoder(nn.Module):
    """Frame-level expert: a transformer over frames with a learnable CLS token, learned positions and
    a padding mask. ``x``: ``(B, T, in_dim)``, ``mask``: ``(B, T)`` True on real frames. Returns the CLS
    state projected to ``(B, hidden_dim)``; padded frames never reach it, so extra padding leaves the output
    unchanged. The transformer works at width ``seq_dim`` (narrower than ``hidden_dim`` keeps it cheap)."""

    def __init__(self, in_dim, hidden_dim, dropout=0.3, layers=2, heads=4, max_len=64, seq_dim=64):
        super().__init__()
        self.max_len = max_len
        self.proj = nn.Sequential(nn.Linear(in_dim, seq_dim), nn.LayerNorm(seq_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, seq_dim))
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, seq_dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(seq_dim, heads, dim_feedforward=2 * seq_dim, dropout=dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(seq_dim)
        self.out = nn.Linear(seq_dim, hidden_dim)

    def forward(self, x, mask=None):
        b, t, _ = x.shape
        if t > self.max_len:
            raise ValueError(f"sequence of {t} frames is longer than the encoder's max_len {self.max_len}; "
                             "raise --max_len or let the loader subsample (same --max_len)")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
        h = self.proj(x)
        h = torch.cat([self.cls.expand(b, -1, -1), h], dim=1) + self.pos[:, : t + 1]
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), mask.bool()], dim=1)
        h = self.transformer(h, src_key_padding_mask=~keep)
        return self.out(self.norm(h[:, 0]))


def build_expert_encoder(in_dim, frame_level, hidden_dim, dropout, seq_layers=2, seq_heads=4, max_len=64,
                         seq_dim=64):
    if frame_level:
        return SequenceEncoder(in_dim, hidden_dim, dropout, seq_layers, seq_heads, max_len, seq_dim)
    return MLPEncoder(in_dim, hidden_dim, dropout)
