"""Training speed: a step loop without host syncs, mixed precision, compilation, the optimiser flags and what
they do to a run's identity; the sync-free expert dropout and contrastive loss against their earlier formulas."""

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import train as train_script
from conftest import tiny_env, train_args
from dataloader import SampleSet, load_features, pack_feature
from engine import trainer
from engine.config import IDENTITY_FIELDS, TrainConfig
from engine.trainer import Precision, compile_targets, make_optimizer, predict, train, train_epoch
from models import create_model
from models.base import drop_experts, expert_keep_mask
from models.modules import supervised_contrastive

def needs_cuda(test):
    """Marked ``cuda`` (bench/gpu_check.sh selects these with -m cuda) and skipped without a CUDA device."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def _metrics(summary):
    return pd.read_csv(os.path.join(summary["run_dir"], "metrics.csv"))


def _log(summary):
    with open(os.path.join(summary["run_dir"], "train.log")) as f:
        return f.read()


# ------------------------------------------------------------------------------------------- the old formulas
def old_expert_keep_mask(batch_size, n_experts, p, generator):
    """The earlier expert dropout: a randint pick for every sample that lost all its experts (a count read back)."""
    keep = torch.rand(batch_size, n_experts, generator=generator) >= p
    none = ~keep.any(1)
    if none.any():
        pick = torch.randint(0, n_experts, (int(none.sum()),), generator=generator)
        keep[none.nonzero(as_tuple=True)[0], pick] = True
    return keep


def old_drop(keep, drop, b, n):
    fixed = torch.ones(b, n, dtype=torch.bool)
    fixed[:, list(drop)] = False
    keep = fixed if keep is None else (keep & fixed)
    keep[~keep.any(1)] = fixed[~keep.any(1)]
    return keep


def old_supervised_contrastive(z, labels, valid=None, temperature=0.1):
    """The earlier form: invalid embeddings removed (z[valid]), early returns on the data."""
    if valid is not None:
        z, labels = z[valid], labels[valid]
    m = z.shape[0]
    if m < 2:
        return z.sum() * 0.0
    sim = z @ z.t() / temperature
    self_mask = torch.eye(m, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has]
    return -mean_log_prob.mean()


def test_expert_dropout_matches_the_old_formula_where_it_draws_nothing_extra():
    b, n, p = 4000, 3, 0.7
    old = old_expert_keep_mask(b, n, p, torch.Generator().manual_seed(5))
    new = expert_keep_mask(b, n, p, "cpu", generator=torch.Generator().manual_seed(5))
    u = torch.rand(b, n, generator=torch.Generator().manual_seed(5))  # the uniform draws both start from
    lost = ~(u >= p).any(1)
    assert 0 < int(lost.sum()) < b
    assert torch.equal(new[~lost], old[~lost])  # a sample that kept an expert: the same mask
    # a sample that lost all: exactly one expert back in both, the new one the largest draw's
    assert (new[lost].sum(1) == 1).all() and (old[lost].sum(1) == 1).all()
    assert torch.equal(new[lost].float().argmax(1), u[lost].argmax(1))
    # ... which is uniform over the experts, as the old randint pick (each share within 4 standard errors)
    g = torch.Generator().manual_seed(0)
    picks = torch.cat([expert_keep_mask(20000, n, 0.95, "cpu", generator=g) for _ in range(3)])
    u_all = torch.rand(60000, n, generator=torch.Generator().manual_seed(0))
    share = picks[~(u_all >= 0.95).any(1)].float().mean(0)
    k = int((~(u_all >= 0.95).any(1)).sum())
    assert torch.all((share - 1 / n).abs() < 4 * (1 / n * (1 - 1 / n) / k) ** 0.5), share


def test_dropping_experts_matches_the_old_boolean_index_assignment():
    g = torch.Generator().manual_seed(1)
    for drop in ([0], [1, 2], [3]):
        keep = torch.rand(500, 4, generator=g) >= 0.6
        assert torch.equal(drop_experts(keep, drop, 500, 4, "cpu"), old_drop(keep.clone(), drop, 500, 4))
        assert torch.equal(drop_experts(None, drop, 500, 4, "cpu"), old_drop(None, drop, 500, 4))
    with pytest.raises(ValueError, match="keep at least one"):
        drop_experts(None, [0, 1, 2, 3], 5, 4, "cpu")


@pytest.mark.parametrize("case", ["all valid", "some invalid", "one valid", "no positives", "none valid"])
def test_contrastive_loss_matches_the_old_formula_in_value_and_gradient(case):
    g = torch.Generator().manual_seed(3)
    m = 24
    raw = torch.randn(m, 8, generator=g)
    labels = torch.randint(0, 3, (m,), generator=g)
    valid = torch.rand(m, generator=g) > 0.3
    if case == "all valid":
        valid = None
    elif case == "one valid":
        valid = torch.zeros(m, dtype=torch.bool)
        valid[4] = True
    elif case == "no positives":
        labels = torch.arange(m)
    elif case == "none valid":
        valid = torch.zeros(m, dtype=torch.bool)
    values, grads = [], []
    for fn in (old_supervised_contrastive, supervised_contrastive):
        x = raw.clone().requires_grad_(True)
        z = F.normalize(x, dim=-1)
        loss = fn(z, labels, valid, 0.1)
        loss.backward()
        values.append(loss.detach())
        grads.append(x.grad)
    assert torch.isfinite(values[1]) and torch.isfinite(grads[1]).all()
    assert torch.allclose(values[1], values[0], atol=1e-6, rtol=1e-6), (values, case)
    assert torch.allclose(grads[1], grads[0], atol=1e-6), case
    if case in ("one valid", "no positives", "none valid"):
        assert float(values[1]) == 0.0


# ------------------------------------------------------------------------------------------- no host syncs
class _Reads:
    """Records the ways a tensor's value reaches Python (on a GPU each one waits for the device), with the
    caller's file and line. The optimisers' own step counters are left out: torch keeps them on the host even
    for GPU parameters (``torch/optim``), so reading them costs no wait."""

    NAMES = ("item", "tolist", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch):
        import sys

        self.calls = []
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, _name=name, **k):
                if self.on:
                    f = sys._getframe(1)
                    where = f"{f.f_code.co_filename}:{f.f_lineno}"
                    if f"torch{os.sep}optim{os.sep}" not in where:
                        self.calls.append(f"{_name} at {where}")
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)
        self.on = False


@pytest.mark.parametrize("model_name", ["auto_attention", "moe"])
def test_training_steps_read_nothing_back_from_the_device(tiny, monkeypatch, model_name):
    stores = load_features(["tiny-signal", "tiny-noise", "tiny-au"])
    samples = SampleSet(stores, tiny.names[:96], tiny.y[:96], weights=np.full(96, 0.5), max_len=8)
    torch.manual_seed(0)
    model = create_model(model_name, samples.feat_dims, samples.frame_level, 3, hidden_dim=16, seq_dim=8,
                         seq_heads=2, max_len=8, expert_dropout=0.5)
    optimizer = make_optimizer(model, "adamw", 1e-3, 1e-5)
    reads = _Reads(monkeypatch)
    reads.on = True
    total, seen = train_epoch(model, optimizer, samples.iter_batches(16, shuffle=True, seed=1),
                              Precision("bf16", "cpu"))
    reads.on = False
    assert reads.calls == [] and seen == 96
    assert total.dtype == torch.float64 and np.isfinite(float(total))


def test_device_gathered_frames_and_float16_packs_equal_the_pack_reads(tiny, tmp_path):
    stores = load_features(["tiny-signal", "tiny-au"])
    root = tmp_path / "half"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in tiny.names:
        np.save(root / f"{name}.npy", rng.normal(size=6).astype(np.float16))
    half = pack_feature("half", str(root), 6, False, cache_root=str(tmp_path / "c"), progress=False)
    stores.append(half)
    ram = SampleSet(stores, tiny.names, tiny.y, max_len=5)
    mapped = SampleSet(stores, tiny.names, tiny.y, max_len=5, mmap=True)
    assert ram._dense[2].dtype == torch.float16 and ram._frames[1] is not None  # kept half; frames gathered
    for idx in ([3, 1, 7], list(range(40, 70)), [0]):
        a, b = ram.batch(idx), mapped.batch(idx)
        for x, y in zip(a["feats"], b["feats"]):
            assert x.dtype == torch.float32 and torch.equal(x, y)
        assert torch.equal(a["masks"][1], b["masks"][1])
        x, m = stores[1].gather(stores[1].rows([tiny.names[i] for i in idx]), max_len=5)
        assert torch.equal(a["feats"][1], torch.from_numpy(x)) and torch.equal(a["masks"][1], torch.from_numpy(m))


def test_one_large_evaluation_batch_predicts_what_small_batches_do(tiny):
    stores = load_features(["tiny-signal", "tiny-au"])
    samples = SampleSet(stores, tiny.names, tiny.y, max_len=8)
    torch.manual_seed(0)
    model = create_model("moe", samples.feat_dims, samples.frame_level, 3, hidden_dim=16, seq_dim=8, seq_heads=2,
                         max_len=8)
    small = predict(model, samples, 7, return_heads=True)
    large = predict(model, samples, trainer.eval_batch_size(16), return_heads=True)
    for a, b in zip(small[:2] + small[3:], large[:2] + large[3:]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert small[2] == pytest.approx(large[2], abs=1e-5)
    assert trainer.eval_batch_size(16) == trainer.EVAL_BATCH and trainer.eval_batch_size(10**5) == 10**5


# ------------------------------------------------------------------------------------------- the flags in runs
@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_master):
    """A plain float32 run of 5 epochs on the tiny data with a frame-level expert (the runs below compare), trained
    once for the module on its own copy of the tiny data set; ``save_root`` says where its runs are."""
    mp = pytest.MonkeyPatch()
    try:
        env = tiny_env(tmp_path_factory.mktemp("reference"), mp, tiny_master)
        out = train(train_args(env, "--feat", "tiny-signal,tiny-noise,tiny-au", "--epochs", "5", "--max_len", "8",
                               "--seq_dim", "16", "--seq_heads", "2", "--run_name", "ref"))
    finally:
        mp.undo()
    return dict(out, save_root=str(env.tmp / "saved"))


def _run(tiny, name, *flags):
    return train(train_args(tiny, "--feat", "tiny-signal,tiny-noise,tiny-au", "--epochs", "5", "--max_len", "8",
                            "--seq_dim", "16", "--seq_heads", "2", "--run_name", name, *flags))


# the largest difference of the epochs' training losses allowed, relative to the float32 run's largest loss
# (measured: bf16 0.2%, fp16 0.03%, adamw 0.06%, fused 0)
@pytest.mark.parametrize("flags,tol", [(("--amp", "bf16"), 0.03), (("--amp", "fp16"), 0.01),
                                       (("--optimizer", "adamw"), 0.01), (("--fused",), 1e-5),
                                       (("--optimizer", "adamw", "--fused"), 0.01)])
def test_flags_train_the_same_data_to_close_losses(tiny, reference, flags, tol):
    s = _run(tiny, "_".join(f.strip("-") for f in flags), *flags)
    ref, got = _metrics(reference), _metrics(s)
    assert len(got) == 5 and got["train_loss"].iloc[-1] < got["train_loss"].iloc[0]
    diff = (got["train_loss"] - ref["train_loss"]).abs().max()
    assert diff <= tol * ref["train_loss"].abs().max() + 1e-6, (flags, diff, got["train_loss"].tolist(),
                                                                ref["train_loss"].tolist())
    assert s["valid_f1"] > 0.9
    log = _log(s)
    if "--fused" in flags:
        assert "(fused)" in log  # torch has fused Adam/AdamW on the CPU
    if "--amp" in flags:
        assert f"amp {flags[1]}" in log and diff > 0  # autocast did change the arithmetic
        ckpt = torch.load(os.path.join(s["run_dir"], "best.pth"), weights_only=True)
        assert all(v.dtype != torch.bfloat16 and v.dtype != torch.float16 for v in ckpt["state_dict"].values())


def test_compile_traces_the_model_and_changes_nothing_it_should_not(tiny, reference, monkeypatch):
    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")  # graph capture without building C++ kernels
    s = _run(tiny, "compiled", "--compile")
    assert "compiled" in _log(s) and "--compile" not in _log(s)  # compiled, and no fallback warning
    ref, got = _metrics(reference), _metrics(s)
    np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=1e-4)
    ckpt = torch.load(os.path.join(s["run_dir"], "best.pth"), weights_only=True)
    ref_ckpt = torch.load(os.path.join(reference["run_dir"], "best.pth"), weights_only=True)
    assert list(ckpt["state_dict"]) == list(ref_ckpt["state_dict"])  # no _orig_mod. prefixes
    assert os.path.dirname(os.path.relpath(s["run_dir"], tiny.tmp / "saved")) == \
        os.path.dirname(os.path.relpath(reference["run_dir"], reference["save_root"]))
    assert s["config_hash"] == reference["config_hash"]  # --compile is not part of the identity


def test_compile_trains_a_list_whose_last_batch_is_smaller_with_expert_dropout(tiny, monkeypatch):
    """96 training samples in batches of 20 end with a batch of 16: the compiled model meets a second batch size.
    A dynamic-shape retrace of expert dropout's random draw failed there (bench/gpu_check.sh found it); the run
    must compile, train every epoch and give the eager run's losses."""
    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")
    args = ("--feat", "tiny-signal,tiny-noise", "--epochs", "3", "--batch_size", "20", "--expert_dropout", "0.3")
    eager = train(train_args(tiny, *args, "--run_name", "eager"))
    comp = train(train_args(tiny, *args, "--run_name", "compiled", "--compile"))
    assert "compiled" in _log(comp) and "--compile" not in _log(comp)  # compiled, no fallback warning
    assert len(_metrics(comp)) == 3
    np.testing.assert_allclose(_metrics(comp)["train_loss"], _metrics(eager)["train_loss"], rtol=1e-4)


def test_compile_failure_falls_back_with_one_warning_and_the_same_result(tiny, reference, monkeypatch):
    def broken(fn, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no working C++ compiler\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    s = _run(tiny, "fallback", "--compile")
    warnings = [line for line in _log(s).splitlines() if "--compile" in line]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0] and "without compilation" in warnings[0]
    pd.testing.assert_frame_equal(_metrics(s)[["train_loss", "valid_loss", "valid_f1"]],
                                  _metrics(reference)[["train_loss", "valid_loss", "valid_f1"]])
    monkeypatch.setattr(trainer, "_compiler_missing", lambda device: "no C++ compiler (g++, c++ or clang++)")
    s = _run(tiny, "nocc", "--compile")
    assert sum("--compile: no C++ compiler" in line for line in _log(s).splitlines()) == 1


def test_compile_keeps_the_context_models_side_channel(dialogues, monkeypatch):
    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")
    for level in ("expert", "fused"):
        model = create_model("auto_attention", [6], [False], 3, hidden_dim=16, context=1, context_level=level)
        targets = compile_targets(model)
        assert targets == (list(model.base.encoders) if level == "expert" else [model.base])
    args = ["--dataset", "dia", "--feat", "dia-cue", "--epochs", "3", "--batch_size", "32", "--context", "1"]
    plain = train(train_args(dialogues, *args, "--context_level", "both", "--run_name", "plain"))
    comp = train(train_args(dialogues, *args, "--context_level", "both", "--run_name", "comp", "--compile"))
    assert "compiled" in _log(comp)
    np.testing.assert_allclose(_metrics(comp)["train_loss"], _metrics(plain)["train_loss"], rtol=1e-4)


def test_context_model_trains_under_bf16(dialogues):
    # the dialogue layers (packed GRU) under autocast: the same data to close losses
    args = ["--dataset", "dia", "--feat", "dia-cue", "--epochs", "4", "--batch_size", "32", "--context", "1",
            "--context_level", "both"]
    ref = _metrics(train(train_args(dialogues, *args, "--run_name", "f32")))["train_loss"]
    got = _metrics(train(train_args(dialogues, *args, "--run_name", "bf16", "--amp", "bf16")))["train_loss"]
    assert 0 < (got - ref).abs().max() <= 0.03 * ref.abs().max(), (ref.tolist(), got.tolist())


# ------------------------------------------------------------------------------------------- identity and errors
def test_new_settings_join_the_identity_only_off_their_defaults(tiny):
    base = train_args(tiny).resolved()
    old_keys = set(IDENTITY_FIELDS) | {"split_sha1", "model_pretrain_sha1", "dialogue_csv_sha1"}
    assert set(base.identity()) == old_keys  # so every earlier run keeps its hash and folder name
    same = train_args(tiny, "--compile", "--fused", "--no_tf32", "--amp", "off", "--optimizer", "adam").resolved()
    assert same.config_hash() == base.config_hash() and same.default_run_name() == base.default_run_name()
    assert (same.compile, same.fused, same.tf32) == (True, True, False)
    for flags, key, value in ((("--amp", "bf16"), "amp", "bf16"), (("--optimizer", "adamw"), "optimizer", "adamw")):
        cfg = train_args(tiny, *flags).resolved()
        assert set(cfg.identity()) == old_keys | {key} and cfg.identity()[key] == value
        assert cfg.config_hash() != base.config_hash() and cfg.default_run_name() != base.default_run_name()
    replay = TrainConfig.from_dict({**train_args(tiny, "--amp", "fp16").to_dict()}).resolved()
    assert replay.amp == "fp16" and replay.config_hash() == train_args(tiny, "--amp", "fp16").resolved().config_hash()


def test_wrong_flags_are_refused_in_one_line(tiny, capsys):
    args = ["--dataset", "tiny", "--feat", "tiny-signal", "--epochs", "1", "--save_root", str(tiny.tmp / "s"),
            "--quiet", "--device", "cpu"]
    for flag, value, hint in (("--amp", "fp8", "use bf16, fp16 or off"), ("--optimizer", "sgd", "use adam or adamw")):
        assert train_script.main(args + [flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} '{value}'" in err[0] and hint in err[0], err
    assert not list((tiny.tmp / "s").rglob("*.pth"))


def test_unsupported_fused_and_amp_fall_back_with_a_warning(monkeypatch, caplog):
    model = torch.nn.Linear(3, 2)
    real = torch.optim.AdamW

    def no_fused(params, fused=False, **k):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **k)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    with caplog.at_level(logging.WARNING):
        opt = make_optimizer(model, "adamw", 1e-3, 0.0, fused=True, log=logging.getLogger("t"))
    assert isinstance(opt, real) and "--fused" in caplog.text and "default implementation" in caplog.text
    monkeypatch.setattr(trainer, "_autocast_works", lambda device, dtype: False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        p = Precision("fp16", "cpu", logging.getLogger("t"))
    assert p.amp == "off" and p.scaler is None and "--amp fp16" in caplog.text


# ------------------------------------------------------------------------------------------- on a GPU
@needs_cuda
@pytest.mark.parametrize("flags", [(), ("--amp", "bf16"), ("--amp", "fp16"), ("--fused",), ("--compile",)])
def test_cuda_runs_with_each_flag(tiny, flags):
    ref = _run(tiny, "cuda_ref", "--device", "cuda")
    s = _run(tiny, "cuda_" + "_".join(f.strip("-") for f in flags), "--device", "cuda", *flags)
    assert s["valid_f1"] > 0.9 and "cuda" in s["device"]
    diff = (_metrics(s)["train_loss"] - _metrics(ref)["train_loss"]).abs().max()
    assert diff <= 0.15 * _metrics(ref)["train_loss"].abs().max()
    if "--compile" in flags:
        assert "compiled" in _log(s)


@needs_cuda
@pytest.mark.parametrize("model_name", ["auto_attention", "moe"])
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_cuda_steps_never_wait_for_the_device(tiny, model_name, amp):
    device = torch.device("cuda")
    stores = load_features(["tiny-signal", "tiny-noise", "tiny-au"])
    samples = SampleSet(stores, tiny.names, tiny.y, max_len=8, device=device)
    torch.manual_seed(0)
    model = create_model(model_name, samples.feat_dims, samples.frame_level, 3, hidden_dim=16, seq_dim=8,
                         seq_heads=2, max_len=8, expert_dropout=0.5).to(device)
    optimizer = make_optimizer(model, "adam", 1e-3, 1e-5, fused=True)

    def steady(batches):  # syncs are errors from the third step on (first steps: lazy initialisation)
        for k, batch in enumerate(batches):
            if k == 2:
                torch.cuda.set_sync_debug_mode("error")
            yield batch
        torch.cuda.set_sync_debug_mode(0)

    try:
        total, seen = train_epoch(model, optimizer, steady(samples.iter_batches(16, shuffle=True, seed=0)),
                                  Precision(amp, device))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert seen == len(tiny.names) and np.isfinite(float(total))
