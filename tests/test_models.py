"""Every registered model: forward/backward on tiny data; the sequence encoder's padding invariance."""

import inspect

import pytest
import torch

from models import MODEL_REGISTRY, create_model, list_models, load_model_config
from models.modules import SequenceEncoder


def _batch(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(b, 12, generator=g), torch.randn(b, 7, generator=g), torch.randn(b, 9, 4, generator=g)]
    lens = torch.tensor([9, 3, 5, 1, 7][:b])
    masks = [None, None, torch.arange(9)[None, :] < lens[:, None]]
    feats[2] = feats[2] * masks[2][..., None]
    return feats, masks


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_is_finite(name):
    torch.manual_seed(0)
    cfg = load_model_config(name)
    cfg.update(hidden_dim=16, seq_dim=8, seq_heads=2, max_len=16)
    model = create_model(name, [12, 7, 4], [False, False, True], num_classes=6, **cfg)
    feats, masks = _batch()
    out = model(feats, masks)
    assert out["logits"].shape == (5, 6) and torch.isfinite(out["logits"]).all()
    loss = model.loss(out, torch.tensor([0, 1, 2, 3, 5]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    w = out.get("expert_weights")
    if w is not None:  # one weight per expert (+1 for a cross-modal expert), a distribution per sample
        assert w.shape[0] == 5 and w.shape[1] in (3, 4)
        if name == "moe" or cfg.get("att_norm") == "softmax":
            assert torch.allclose(w.sum(1), torch.ones(5), atol=1e-5) and (w >= 0).all()


def test_attention_weights_are_a_distribution_with_softmax_and_raw_without():
    torch.manual_seed(0)
    feats, masks = _batch()
    soft = create_model("auto_attention", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8, seq_heads=2)
    w = soft(feats, masks)["expert_weights"]
    assert torch.allclose(w.sum(1), torch.ones(5), atol=1e-6) and (w >= 0).all()
    raw = create_model("auto_attention", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8, seq_heads=2,
                       att_norm="none")
    assert not torch.allclose(raw(feats, masks)["expert_weights"].sum(1), torch.ones(5))
    with pytest.raises(ValueError, match="att_norm"):
        create_model("auto_attention", [3], [False], 2, att_norm="sigmoid")
    with pytest.raises(KeyError, match="registered models"):
        create_model("no_such_model", [3], [False], 2)


def test_sequence_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = SequenceEncoder(4, 16, dropout=0.1, layers=2, heads=2, max_len=20, seq_dim=8).eval()
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    x[1, 3:] = 0
    padded = torch.cat([x, torch.randn(2, 9, 4)], dim=1)  # garbage in the padding
    padded_mask = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a = enc(x, mask)
        b = enc(padded, padded_mask)
        c = enc(x[1:, :3], None)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a[1:], c, atol=1e-5)
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.randn(1, 21, 4))


def test_expert_dropout_removes_whole_experts_only_while_training():
    from models.base import expert_keep_mask
    g = torch.Generator().manual_seed(0)
    keep = expert_keep_mask(1000, 3, 0.9, "cpu", generator=g)
    # kept share: (1 - p) + p^3 / 3 (a sample that lost all three gets one back)
    assert keep.any(1).all() and abs(float(keep.float().mean()) - (0.1 + 0.9 ** 3 / 3)) < 0.03
    torch.manual_seed(0)
    feats, masks = _batch()
    model = create_model("auto_attention", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8,
                         seq_heads=2, expert_dropout=0.6)
    model.train()
    w = model(feats, masks)["expert_weights"]
    assert torch.allclose(w.sum(1), torch.ones(5), atol=1e-6) and (w == 0).any()
    model.eval()
    w = model(feats, masks)["expert_weights"]
    assert (w > 0).all()


def test_input_noise_only_while_training():
    torch.manual_seed(0)
    feats, masks = _batch()
    model = create_model("auto_attention", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8,
                         seq_heads=2, dropout=0.0, input_noise=0.5)
    model.eval()
    a, b = model(feats, masks)["logits"], model(feats, masks)["logits"]
    assert torch.equal(a, b)
    model.train()
    c, d = model(feats, masks)["logits"], model(feats, masks)["logits"]
    assert not torch.allclose(c, d) and torch.isfinite(c).all()


def test_unknown_hyperparameter_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError, match="no hyperparameter att_norm; it takes: .*lambda_kl"):
        create_model("moe", [3], [False], 2, att_norm="softmax")


@pytest.mark.parametrize("combine,cross", [("average", "attention"), ("product", "concat"), ("product", "attention")])
def test_moe_variants_train_and_drop_experts(combine, cross):
    torch.manual_seed(0)
    model = create_model("moe", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8, seq_heads=2,
                         combine=combine, cross=cross)
    feats, masks = _batch()
    out = model(feats, masks)
    model.loss(out, torch.tensor([0, 1, 2, 3, 5])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    a, b = model(feats, masks), model(feats, masks, drop=[1])
    assert torch.allclose(a["expert_weights"].sum(1), torch.ones(5), atol=1e-5)
    assert (b["expert_weights"][:, 1] == 0).all() and torch.isfinite(b["logits"]).all()
    if combine == "product":  # the gated sum of the kept heads' logits = (number kept) x the gated mean
        mean = (a["expert_weights"].unsqueeze(-1) * a["expert_logits"]).sum(1)
        assert torch.allclose(a["logits"], 4 * mean, atol=1e-5)
    with pytest.raises(ValueError, match="combine"):
        create_model("moe", [3], [False], 2, combine="max")


def test_moe_lambda_head_weighs_the_heads_cross_entropy_only():
    import torch.nn.functional as F
    torch.manual_seed(0)
    feats, masks = _batch()
    labels = torch.tensor([0, 1, 2, 3, 5])
    losses = {}
    for lh in (0.0, 1.0, 0.3):
        torch.manual_seed(0)
        model = create_model("moe", [12, 7, 4], [False, False, True], 6, hidden_dim=16, seq_dim=8, seq_heads=2,
                             lambda_kl=0.0, lambda_con=0.0, lambda_head=lh).eval()
        with torch.no_grad():
            out = model(feats, masks)
            losses[lh] = float(model.loss(out, labels))
            fused = float(F.cross_entropy(out["logits"], labels))
            heads = float(F.cross_entropy(out["expert_logits"].reshape(-1, 6), labels.repeat_interleave(4)))
    assert losses[0.0] == pytest.approx(fused, abs=1e-5)  # no head term: the fused cross-entropy alone
    assert losses[1.0] == pytest.approx(fused + heads, abs=1e-5)  # every head kept in eval: their mean CE
    assert losses[0.3] == pytest.approx(fused + 0.3 * heads, abs=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_constructor_defaults_are_the_model_tune_yaml_ones(name):
    # a model built in code (create_model without the yaml) behaves as a train.py run with no flags
    params = inspect.signature(MODEL_REGISTRY[name].__init__).parameters
    cfg = load_model_config(name)
    assert cfg, f"models/model-tune.yaml has no entry for '{name}'"
    unknown = sorted(set(cfg) - set(params))
    assert not unknown, f"'{name}' in model-tune.yaml has keys its constructor does not take: {unknown}"
    differ = {k: (v, params[k].default) for k, v in cfg.items() if params[k].default != v}
    assert not differ, f"'{name}': model-tune.yaml value vs constructor default differ: {differ}"
