"""Common behaviour of registered models: input standardisation, the checkpoint config, the default loss."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputNorm(nn.Module):
    """Per-feature z-scoring with statistics of the training list, kept as buffers (so in the checkpoint).

    Until ``fit`` is called the statistics are the identity (mean 0, std 1)."""

    def __init__(self, feat_dims):
        super().__init__()
        self.n = len(feat_dims)
        for i, d in enumerate(feat_dims):
            self.register_buffer(f"mean{i}", torch.zeros(d))
            self.register_buffer(f"std{i}", torch.ones(d))

    @torch.no_grad()
    def fit(self, stats):
        """``stats``: one ``(mean, std)`` pair of 1-d tensors per feature; tiny stds are floored."""
        for i, (mean, std) in enumerate(stats):
            getattr(self, f"mean{i}").copy_(mean)
            getattr(self, f"std{i}").copy_(std.clamp_min(1e-3 * max(float(std.max()), 1e-6)))

    def forward(self, feats, masks):
        out = []
        for i, (x, m) in enumerate(zip(feats, masks)):
            x = (x - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            if m is not None:  # keep padded frames at zero
                x = x * m.unsqueeze(-1)
            out.append(x)
        return out


def expert_keep_mask(batch_size, n_experts, p, device, generator=None):
    """Bool ``(B, n_experts)``: each expert dropped with probability ``p`` per sample, at least one kept.

    One uniform draw ``u`` per sample and expert: expert j is kept where ``u >= p``. A sample that lost every
    expert gets back the one with the largest ``u``: given that all its draws fell below ``p`` they are i.i.d.
    uniform on ``[0, p)``, so that expert is uniform over the experts, as a fresh ``randint`` pick would be.
    Written without data-dependent branches or shapes (no ``.any()`` test, no count read back to size a draw),
    so a CUDA step never waits for the device here. Against the earlier form (a ``randint`` of as many picks as
    samples lost everything) the masks are identical wherever a sample kept an expert; the rescued expert has
    the same distribution but comes from ``u`` instead of extra random numbers, so a seed's later random draws
    are no longer shifted by those picks."""
    u = torch.rand(batch_size, n_experts, device=device, generator=generator)
    keep = u >= p
    rescue = (torch.arange(n_experts, device=u.device) == u.argmax(1, keepdim=True)) & ~keep.any(1, keepdim=True)
    return keep | rescue


def drop_experts(keep, drop, batch_size, n_experts, device):
    """``keep`` (``(B, n_experts)`` bool, or None for all) without the experts ``drop`` (indices); a sample whose
    ``keep`` loses every expert left after ``drop`` uses all of those instead. A ``torch.where`` over the batch,
    not an assignment through a boolean index (which would make a CUDA step wait for the device); the same
    masks as that earlier form."""
    bad = [i for i in drop if not 0 <= i < n_experts]
    if bad or len(set(drop)) >= n_experts:
        raise ValueError(f"cannot drop experts {sorted(drop)} of {n_experts}: keep at least one")
    fixed = torch.ones(batch_size, n_experts, dtype=torch.bool, device=device)
    fixed[:, list(drop)] = False
    if keep is None:
        return fixed
    both = keep & fixed
    return torch.where(both.any(1, keepdim=True), both, fixed)


class MERModel(nn.Module):
    """Base class of every registered model.

    Subclasses implement ``fuse(feats, masks, keep) -> dict(logits=..., hidden=..., ...)``, ``hidden`` being
    the fused representation ``(B, fused_dim)`` the classifier reads (a context layer reads it too, see
    models/context.py), and set ``self.fused_dim``. ``forward`` first
    standardises the inputs, adds Gaussian noise of std ``input_noise`` while training, and builds ``keep``,
    a ``(B, n_experts)`` bool mask of the experts a sample may use: while training each expert is dropped
    with probability ``expert_dropout`` (at least one kept); at any time ``drop`` (expert indices) removes
    experts, e.g. a modality missing at test time. ``keep`` is None when every expert is in use.
    The constructor arguments are kept so a checkpoint can rebuild the model."""

    model_name = None
    needs_dialogues = False  # True for context models: forward also takes the batch's dialogues
    fused_dim = None
    expert_context = None  # set by ContextModel for the length of one call (see encode)

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)
        self.grad_clip = float(config.get("grad_clip", -1.0))
        self.expert_dropout = float(config.get("expert_dropout", 0.0))
        self.input_noise = float(config.get("input_noise", 0.0))
        self.n_experts = len(config["feat_dims"])
        self.input_norm = InputNorm(config["feat_dims"])

    def forward(self, feats, masks=None, drop=None):
        masks = list(masks) if masks is not None else [None] * len(feats)
        feats = self.input_norm(feats, masks)
        if self.training and self.input_noise > 0:  # Gaussian feature noise, in standardised units
            feats = [x + self.input_noise * torch.randn_like(x) * (1 if m is None else m.unsqueeze(-1))
                     for x, m in zip(feats, masks)]
        b, device = feats[0].shape[0], feats[0].device
        keep = None
        if self.training and self.expert_dropout > 0 and self.n_experts > 1:
            keep = expert_keep_mask(b, self.n_experts, self.expert_dropout, device)
        if drop:
            keep = drop_experts(keep, drop, b, self.n_experts, device)
        return self.fuse(feats, masks, keep)

    def fuse(self, feats, masks, keep):
        raise NotImplementedError

    def encode(self, feats, masks, keep):
        """Each expert's state from ``self.encoders``, zeroed for dropped experts (``keep`` False).

        Inside a ``ContextModel`` with expert-level context, ``expert_context`` holds (one context layer per
        expert, dialog_index, dialog_mask) for the current call, and each state passes through its layer."""
        hiddens = [enc(x, m) for enc, x, m in zip(self.encoders, feats, masks)]
        if self.expert_context is not None:
            layers, index, mask = self.expert_context
            hiddens = [layer(h, index, mask) for layer, h in zip(layers, hiddens)]
        if keep is None:
            return hiddens
        return [h * keep[:, i:i + 1].to(h.dtype) for i, h in enumerate(hiddens)]

    def loss(self, out, labels, weights=None):
        """Cross-entropy of ``out['logits']``; ``weights`` (B,) scales each sample (pseudo-labels)."""
        return weighted_mean(F.cross_entropy(out["logits"], labels, reduction="none"), weights)


def weighted_mean(values, weights=None):
    """The batch's mean of ``values`` with each sample scaled by its weight: ``sum(w * v) / B``.

    Dividing by the batch size (not by the sum of weights) makes a weight mean the same in every batch: a
    pseudo-label of weight 0.5 counts half as much as a labelled sample, whether its batch is mixed or holds
    only pseudo-labels (normalising by the weights' sum would scale an all-0.5 batch back to weight 1)."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / values.shape[0]


def masked_mean(values, mask):
    """The mean of ``values`` over the entries where ``mask`` is 1 (e.g. the real utterances of padded videos)."""
    return (values * mask).sum() / mask.sum().clamp_min(1e-8)
