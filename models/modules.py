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


def build_encoders(feat_dims, frame_level, hidden_dim, dropout, seq_layers=2, seq_heads=4, max_len=32, seq_dim=64):
    """One expert encoder per feature, in a ModuleList sized by the selected features."""
    if len(feat_dims) != len(frame_level) or not feat_dims:
        raise ValueError("feat_dims and frame_level must be non-empty lists of the same length")
    return nn.ModuleList(build_expert_encoder(d, fl, hidden_dim, dropout, seq_layers, seq_heads, max_len, seq_dim)
                         for d, fl in zip(feat_dims, frame_level))


def supervised_contrastive(z, labels, valid=None, temperature=0.1):
    """Supervised contrastive loss (Khosla et al., 2020) over a set of embeddings.

    ``z``: ``(M, D)`` L2-normalised; ``labels``: ``(M,)``; ``valid``: ``(M,)`` bool, embeddings to use.
    Every other valid embedding with the same label is a positive of an anchor; anchors with no positive are
    skipped. Returns the mean over anchors of minus the mean log-probability of their positives (0 when no
    anchor has a positive).

    Invalid embeddings are masked out of the ``(M, M)`` similarities instead of being removed (``z[valid]``
    would give a shape that depends on the data), and anchors without positives are weighted 0 instead of
    tested for (``if not has.any()``), so a CUDA step never waits for the device here. Masked similarities
    are set to the dtype's lowest finite value, not -inf: ``exp`` of them is exactly 0, so every log-sum-exp is
    the one over the valid others, and a row with nothing valid stays finite (its gradient is 0, not NaN).
    The value is the one of the earlier form (``z[valid]``, ``-inf`` self-similarities) up to summation order."""
    m = z.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=z.device)
    usable = ~eye if valid is None else (valid[:, None] & valid[None, :] & ~eye)  # anchor i, candidate j
    sim = (z @ z.t() / temperature).float()
    sim = sim.masked_fill(~usable, torch.finfo(sim.dtype).min)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & usable
    n_pos = pos.sum(1)
    has = (n_pos > 0).to(log_prob.dtype)
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp_min(1)
    return -(mean_log_prob * has).sum() / has.sum().clamp_min(1.0)
