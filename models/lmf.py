"""Low-rank Multimodal Fusion (Liu et al., ACL 2018), for any number of experts."""

import torch
import torch.nn as nn

from models import register_model
from models.base import MERModel
from models.modules import build_encoders


@register_model("lmf")
class LowRankFusion(MERModel):
    """Each expert state, with a constant 1 appended, is projected by ``rank`` modality-specific factors;
    the projections are multiplied across experts (the low-rank form of their outer-product tensor) and
    summed over the rank with learned weights. A dropped expert contributes only its bias row (the appended 1),
    as a missing modality does in the full tensor fusion."""

    def __init__(self, feat_dims, frame_level, num_classes, hidden_dim=128, dropout=0.3, rank=4, fusion_dim=64,
                 seq_layers=2, seq_heads=4, seq_dim=64, max_len=32, expert_dropout=0.0, input_noise=0.0,
                 grad_clip=-1.0):
        super().__init__(feat_dims=feat_dims, frame_level=frame_level, num_classes=num_classes,
                         hidden_dim=hidden_dim, dropout=dropout, rank=rank, fusion_dim=fusion_dim,
                         seq_layers=seq_layers, seq_heads=seq_heads, seq_dim=seq_dim, max_len=max_len,
                         expert_dropout=expert_dropout, input_noise=input_noise, grad_clip=grad_clip)
        self.encoders = build_encoders(feat_dims, frame_level, hidden_dim, dropout, seq_layers, seq_heads, max_len,
                                       seq_dim)
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(rank, hidden_dim + 1, fusion_dim))
                                        for _ in feat_dims)
        for f in self.factors:
            nn.init.xavier_normal_(f)
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        nn.init.xavier_normal_(self.rank_weights)
        self.rank_bias = nn.Parameter(torch.zeros(1, fusion_dim))
        self.norm = nn.LayerNorm(fusion_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion_dim, num_classes))
        self.fused_dim = fusion_dim

    def fuse(self, feats, masks, keep):
        hiddens = self.encode(feats, masks, keep)
        ones = hiddens[0].new_ones(hiddens[0].shape[0], 1)
        product = None
        for h, factor in zip(hiddens, self.factors):
            proj = torch.einsum("bh,rhf->rbf", torch.cat([h, ones], dim=1), factor)  # (rank, B, fusion_dim)
            product = proj if product is None else product * proj
        fused = torch.einsum("r,rbf->bf", self.rank_weights[0], product) + self.rank_bias
        fused = self.norm(fused)
        return {"logits": self.head(fused), "hidden": fused}
