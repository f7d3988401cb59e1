"""Common behaviour of registered models: the checkpoint config and the default loss."""

import torch.nn as nn
import torch.nn.functional as F


class MERModel(nn.Module):
    """Base class: stores the constructor arguments so a checkpoint can rebuild the model."""

    model_name = None

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)
        self.grad_clip = float(config.get("grad_clip", -1.0))

    def loss(self, out, labels, weights=None):
        """Cross-entropy of ``out['logits']``; ``weights`` (B,) scales each sample (pseudo-labels)."""
        ce = F.cross_entropy(out["logits"], labels, reduction="none")
        if weights is None:
            return ce.mean()
        return (ce * weights).sum() / weights.sum().clamp_min(1e-8)
