"""Gated mixture of experts ("more is better", MER2025 runner-up; gate and losses after MiSTER-E)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.base import MERModel, weighted_mean
from models.modules import build_encoders, supervised_contrastive


@register_model("moe")
class MixtureOfExperts(MERModel):
    """Every feature is an expert with its own encoder and classifier head; a cross-modal expert reads all
    expert states; a gate conditioned on all expert states weighs the N+1 heads' logits (softmax, so weights
    are comparable across samples) into the prediction.

    Loss = CE(gated prediction) + ``lambda_head`` (0.3) x mean CE of the N+1 heads + ``lambda_kl`` x mean
    KL(gated || head) (the gated prediction is the stopped-gradient target, keeping experts consistent) +
    ``lambda_con`` x a supervised contrastive loss over the experts' projected states (a sample's experts, and
    samples of the same label, are positives). Dropped experts (``expert_dropout`` while training, ``drop`` at
    test time) lose their gate weight and their loss terms; the cross-modal expert sees their states as zeros.
    """

    def __init__(self, feat_dims, frame_level, num_classes, hidden_dim=256, dropout=0.5, seq_layers=2, seq_heads=4,
                 seq_dim=64, max_len=32, expert_dropout=0.3, input_noise=0.0, lambda_kl=0.1, lambda_con=0.1,
                 temperature=0.1, proj_dim=64, grad_clip=-1.0, combine="average", cross="concat", lambda_head=0.3):
        super().__init__(feat_dims=feat_dims, frame_level=frame_level, num_classes=num_classes,
                         hidden_dim=hidden_dim, dropout=dropout, seq_layers=seq_layers, seq_heads=seq_heads,
                         seq_dim=seq_dim, max_len=max_len, expert_dropout=expert_dropout, input_noise=input_noise,
                         lambda_kl=lambda_kl, lambda_con=lambda_con, temperature=temperature, proj_dim=proj_dim,
                         grad_clip=grad_clip, combine=combine, cross=cross, lambda_head=lambda_head)
        if combine not in ("average", "product"):
            raise ValueError(f"combine must be 'average' or 'product', got '{combine}'")
        if cross not in ("concat", "attention"):
            raise ValueError(f"cross must be 'concat' or 'attention', got '{cross}'")
        self.combine, self.cross_kind = combine, cross
        n = len(feat_dims)
        self.lambda_kl, self.lambda_con, self.temperature = float(lambda_kl), float(lambda_con), float(temperature)
        self.lambda_head = float(lambda_head)
        self.encoders = build_encoders(feat_dims, frame_level, hidden_dim, dropout, seq_layers, seq_heads, max_len,
                                       seq_dim)
        self.heads = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(n))
        cross_in = hidden_dim if cross == "attention" else n * hidden_dim
        self.cross = nn.Sequential(nn.Linear(cross_in, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        if cross == "attention":  # the auto_attention fusion: per-sample softmax weights over expert states
            self.cross_att = nn.Sequential(nn.Linear(n * hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                           nn.Linear(hidden_dim, n))
        self.cross_head = nn.Linear(hidden_dim, num_classes)
        self.gate = nn.Sequential(nn.Linear(n * hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_dim, n + 1))
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                                nn.Linear(hidden_dim, proj_dim)) for _ in range(n))
        self.fused_dim = hidden_dim

    def fuse(self, feats, masks, keep):
        hiddens = self.encode(feats, masks, keep)
        cat = torch.cat(hiddens, dim=1)
        if self.cross_kind == "attention":
            att = self.cross_att(cat)
            att = (att.masked_fill(~keep, float("-inf")) if keep is not None else att).softmax(dim=-1)
            cross_in = (torch.stack(hiddens, dim=1) * att.unsqueeze(-1)).sum(dim=1)
        else:
            cross_in = cat
        cross_state = self.cross(cross_in)
        logits_k = [head(h) for head, h in zip(self.heads, hiddens)] + [self.cross_head(cross_state)]
        expert_logits = torch.stack(logits_k, dim=1)  # (B, N+1, C)
        b = cat.shape[0]
        heads_kept = torch.ones(b, len(logits_k), dtype=torch.bool, device=cat.device)
        if keep is not None:
            heads_kept[:, :-1] = keep
        gate = self.gate(cat).masked_fill(~heads_kept, float("-inf")).softmax(dim=-1)  # (B, N+1)
        logits = (gate.unsqueeze(-1) * expert_logits).sum(dim=1)
        if self.combine == "product":  # a gated product of experts: the weighted sum of logits, not their mean
            logits = logits * heads_kept.sum(dim=1, keepdim=True).float()
        # the fused state (what a context layer reads): the gate-weighted sum of the N+1 experts' states
        hidden = (gate.unsqueeze(-1) * torch.stack(hiddens + [cross_state], dim=1)).sum(dim=1)
        return {"logits": logits, "expert_logits": expert_logits, "expert_weights": gate, "heads_kept": heads_kept,
                "hiddens": hiddens, "hidden": hidden}

    def loss(self, out, labels, weights=None):
        kept = out["heads_kept"].float()  # (B, N+1)
        b, k, c = out["expert_logits"].shape
        fused = F.cross_entropy(out["logits"], labels, reduction="none")
        head_ce = F.cross_entropy(out["expert_logits"].reshape(b * k, c), labels.repeat_interleave(k),
                                  reduction="none").view(b, k)
        head_ce = (head_ce * kept).sum(1) / kept.sum(1)
        target = out["logits"].detach().log_softmax(-1).unsqueeze(1)  # (B, 1, C)
        log_heads = out["expert_logits"].log_softmax(-1)
        kl = (target.exp() * (target - log_heads)).sum(-1)  # (B, N+1)
        kl = (kl * kept).sum(1) / kept.sum(1)
        total = weighted_mean(fused + self.lambda_head * head_ce + self.lambda_kl * kl, weights)
        if self.lambda_con > 0 and len(self.proj) > 1:
            z = torch.cat([F.normalize(p(h), dim=-1) for p, h in zip(self.proj, out["hiddens"])], dim=0)
            valid = out["heads_kept"][:, :-1].t().reshape(-1)  # expert-major, as z
            total = total + self.lambda_con * supervised_contrastive(z, labels.repeat(len(self.proj)), valid,
                                                                     self.temperature)
        return total
