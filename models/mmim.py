"""MultiModal InfoMax (Han et al., EMNLP 2021): fusion trained with hierarchical mutual-information bounds."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.base import MERModel, weighted_mean
from models.modules import build_encoders


@register_model("mmim")
class MultimodalInfoMax(MERModel):
    """Expert encoders, a fusion MLP over their concatenated states, a classifier head, and two auxiliary
    objectives as in MMIM:

    * input level: a Gaussian lower bound on the mutual information between the first expert (the anchor,
      text in MMIM) and each other expert: the anchor predicts the other's state (mean and log-variance) and
      the log-likelihood is maximised (weight ``alpha``);
    * fusion level: contrastive predictive coding between the fused representation and each expert's state:
      the fused vector predicts each expert's state, scored against the other samples of the batch with
      InfoNCE (weight ``beta``).

    Simplification: MMIM's entropy estimate with a memory of past batches is left out of the input-level bound.
    """

    def __init__(self, feat_dims, frame_level, num_classes, hidden_dim=128, dropout=0.3, alpha=0.1, beta=0.1,
                 seq_layers=2, seq_heads=4, seq_dim=64, max_len=32, expert_dropout=0.0, input_noise=0.0,
                 grad_clip=-1.0):
        super().__init__(feat_dims=feat_dims, frame_level=frame_level, num_classes=num_classes,
                         hidden_dim=hidden_dim, dropout=dropout, alpha=alpha, beta=beta, seq_layers=seq_layers,
                         seq_heads=seq_heads, seq_dim=seq_dim, max_len=max_len, expert_dropout=expert_dropout,
                         input_noise=input_noise, grad_clip=grad_clip)
        n = len(feat_dims)
        self.alpha, self.beta = float(alpha), float(beta)
        self.encoders = build_encoders(feat_dims, frame_level, hidden_dim, dropout, seq_layers, seq_heads, max_len,
                                       seq_dim)
        self.fusion = nn.Sequential(nn.Linear(n * hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))
        self.fused_dim = hidden_dim
        self.mi_mu = nn.ModuleList(nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                                 nn.Linear(hidden_dim, hidden_dim)) for _ in range(n - 1))
        self.mi_logvar = nn.ModuleList(nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                                     nn.Linear(hidden_dim, hidden_dim)) for _ in range(n - 1))
        self.cpc = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n))

    def fuse(self, feats, masks, keep):
        hiddens = self.encode(feats, masks, keep)
        fused = self.fusion(torch.cat(hiddens, dim=1))
        return {"logits": self.head(fused), "hidden": fused, "hiddens": hiddens, "keep": keep}

    def loss(self, out, labels, weights=None):
        total = weighted_mean(F.cross_entropy(out["logits"], labels, reduction="none"), weights)
        hiddens, fused = out["hiddens"], out["hidden"]
        if self.alpha > 0 and len(hiddens) > 1:
            anchor, lld = hiddens[0], []
            for j, (mu_net, lv_net) in enumerate(zip(self.mi_mu, self.mi_logvar), start=1):
                mu, logvar = mu_net(anchor), lv_net(anchor).clamp(-6, 6)
                lld.append((-(hiddens[j] - mu) ** 2 / logvar.exp() - logvar).mean())
            total = total - self.alpha * torch.stack(lld).mean()
        if self.beta > 0:
            nce = []
            for h, proj in zip(hiddens, self.cpc):
                pred = F.normalize(proj(fused), dim=-1)
                target = F.normalize(h, dim=-1)
                scores = pred @ target.t()  # (B, B): the diagonal holds the true pairs
                nce.append(-(scores.diagonal() - torch.logsumexp(scores, dim=1)).mean())
            total = total + self.beta * torch.stack(nce).mean()
        return total
