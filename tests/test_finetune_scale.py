"""Fine-tuning at scale (issue 24, items 7 and 8), on the CPU: data parallelism under torchrun (a 2-process gloo run
gives the embeddings of a 1-process run with the same global batch), the checkpoint read back with
``weights_only=True``, gradient checkpointing and accumulation that leave the training unchanged, float32 on the
CPU (bf16 autocast only on CUDA), and ``--load_in_4bit`` refused in one line where it cannot run.

The tiny BERT here has no dropout (nor do the LoRA adapters and the head): with dropout, two ranks draw other
masks than one process would, and the runs agree only statistically (finetuning/trainer.py)."""

import contextlib
import glob
import io
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import config
from conftest import REPO, isolated_feature_config, load_script
from test_finetune import LABELS, write_corpus

SCRIPT = os.path.join(REPO, "preprocess", "finetune_encoder.py")
NO_DROPOUT = ["--lora_dropout", "0", "--head_dropout", "0"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """The data set 'fts' under its own feature root (a subprocess finds it through MER_FEATURE_ROOT), its
    official split and a tiny BERT without dropout."""
    from corpora.custom import import_corpus
    from dataloader.splits import official_split
    from extraction.tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("finetune_scale")
    mp = pytest.MonkeyPatch()
    isolated_feature_config(mp, root, "text")
    table = write_corpus(root / "corpus.csv", seed=1)
    columns = {"name": "utt", "label": "emotion", "text": "text", "dialogue": "dia", "order": "turn", "split": "part"}
    home = root / "features" / "fts"
    import_corpus("fts", str(root / "corpus.csv"), columns, LABELS, out=str(home), log=lambda m: 0)
    config.load_registration(str(home / "dataset.yaml"))
    official_split(config.DATASETS["fts"]["label_csv"], config.DATASETS["fts"]["emo_rule"], str(root / "split.json"),
                   split_col="split", group_col="dialogue")
    bert = save_tiny_model("bert", str(root / "bert"), texts=table["text"].tolist() + ["[SEP]"], max_length=64)
    cfg_path = os.path.join(bert, "config.json")
    cfg = json.load(open(cfg_path))
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    json.dump(cfg, open(cfg_path, "w"))

    class Env:
        pass

    env = Env()
    env.root, env.table, env.bert, env.split = root, table, bert, str(root / "split.json")
    env.home, env.script = str(home), load_script("preprocess/finetune_encoder.py")
    env.base = ["--dataset", "fts", "--split", env.split, "--modality", "text", "--model", bert, "--quiet",
                "--device", "cpu"]
    yield env
    mp.undo()


def cli(env, *flags):
    """finetune_encoder.py in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = env.script.main([*env.base, *flags])
    return status, err.getvalue()


def examples_and_inputs(env, n):
    from finetuning.inputs import TextInputs
    from finetuning.model import Backbone
    from finetuning.trainer import Examples

    backbone = Backbone(env.bert)
    texts = dict(zip(env.table["utt"], env.table["text"]))
    inputs = TextInputs(backbone.tokenizer, texts)
    names = env.table["utt"].tolist()[:n]
    labels = [LABELS.index(e) for e in env.table["emotion"][:n]]
    return backbone, inputs, Examples(names, [inputs.prepare(k) for k in names], labels)


SETTINGS = {"lora": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_targets": None, "embed_dim": 16,
            "head_dropout": 0.0, "epochs": 1, "batch_size": 8, "grad_accum": 1, "lr": 1e-2, "weight_decay": 0.0,
            "warmup_ratio": 0.0, "patience": 5, "seed": 0}


def fit(env, settings, folder, record=None):
    """A model built with ``torch.manual_seed(0)`` and trained by Trainer.fit; returns (model, fit result)."""
    from finetuning.model import build_model, make_loss
    from finetuning.parallel import Parallel
    from finetuning.trainer import Trainer

    os.makedirs(folder, exist_ok=True)
    backbone, inputs, ex = examples_and_inputs(env, settings.get("n", 8))
    torch.manual_seed(0)
    model, _ = build_model(backbone, 3, settings, torch.device("cpu"), torch.float32)
    trainer = Trainer(model, inputs.collate, make_loss("ce"), settings, torch.device("cpu"), Parallel(),
                      logging.getLogger("test"), progress=False)
    return model, trainer.fit(ex, ex, str(folder), key="k")


def trainable(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


# ------------------------------------------------------------------------------------------------ torchrun
@pytest.mark.slow  # torchrun starts two fine-tuning processes (about 20 s on 2 cores)
def test_two_processes_give_the_embeddings_of_one(ds):
    """torchrun --nproc_per_node 2 (gloo, one thread each) against one process, the same flags: the same global
    batch of 9 (ranks take 5 and 4; the last batch of the 64 training names holds 1, so rank 1 makes a pass of
    weight 0), 2 micro-batches per step, 3 epochs. The embeddings agree to 1e-4 of their scale: the ranks sum
    their gradients in another order than one process does (DDP's all-reduce, then the mean), and a micro-batch
    padded to its own longest text runs other matrix shapes, so the float roundings differ (about 1e-7 relative
    per step) and Adam carries them on; measured: 2.7e-6 on embeddings up to 1.5. Rank 0 alone writes."""
    flags = [*NO_DROPOUT, "--lora", "8", "--lr", "3e-3", "--epochs", "3", "--patience", "9", "--batch_size", "9",
             "--grad_accum", "2", "--save_dtype", "float32", "--seed", "5"]
    assert cli(ds, *flags, "--feature_name", "one")[0] == 0
    env = dict(os.environ, MER_FEATURE_ROOT=str(ds.root / "features"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          SCRIPT, *ds.base, *flags, "--feature_name", "two"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    one, two = os.path.join(ds.home, "one-UTT"), os.path.join(ds.home, "two-UTT")
    names = ds.table["utt"].tolist()
    a = np.stack([np.load(os.path.join(one, n + ".npy")) for n in names])
    b = np.stack([np.load(os.path.join(two, n + ".npy")) for n in names])
    scale = np.abs(a).max()
    print(f"1 vs 2 processes: max |difference| {np.abs(a - b).max():.3g}, embeddings up to {scale:.3g}")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * scale)
    h1 = pd.read_csv(os.path.join(one, "training", "all", "history.csv"))
    h2 = pd.read_csv(os.path.join(two, "training", "all", "history.csv"))
    assert h1["epoch"].tolist() == h2["epoch"].tolist() == [1, 2, 3]
    assert h1["val_f1"].tolist() == h2["val_f1"].tolist()
    np.testing.assert_allclose(h2["train_loss"], h1["train_loss"], rtol=1e-4)
    manifest = json.load(open(os.path.join(two, "extract_manifest.json")))
    assert manifest["runs"][-1]["processes"] == 2 and manifest["status"] == "complete"
    # rank 0 wrote every file, the other rank none: the same files as one process, and no rank-1 log
    files = lambda d: sorted(os.path.relpath(p, d) for p in glob.glob(os.path.join(d, "**", "*"), recursive=True))
    assert files(one) == files(two) and not glob.glob(os.path.join(ds.home, "**", "*rank1*"), recursive=True)
    assert "2 processes (torchrun)" in open(os.path.join(two, "finetune.log")).read()


# ------------------------------------------------------------------------------------------------ resume loading
def test_the_checkpoint_loads_with_weights_only_and_a_truncated_one_is_one_line(ds):
    flags = ["--lora", "4", "--epochs", "3", "--feature_name", "ck"]
    assert cli(ds, *flags, "--stop_after_epochs", "1")[0] == 130
    path = os.path.join(ds.home, "ck-UTT", "training", "all", "checkpoint.pt")
    ck = torch.load(path, map_location="cpu", weights_only=True)  # tensors, numbers, strings and containers only
    assert ck["state"]["epoch"] == 1 and isinstance(ck["rng"]["numpy"]["keys"], torch.Tensor)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    status, err = cli(ds, *flags)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(lines) == 1, err
    assert "fine-tuning checkpoint" in lines[0] and "truncated" in lines[0] and "delete it to start over" in lines[0]


def test_rng_states_survive_the_round_trip(tmp_path):
    import random

    from finetuning.trainer import _rng_state, _set_rng_state

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.normal()  # a cached Gaussian in NumPy's state
    torch.save(_rng_state(), tmp_path / "rng.pt")
    want = (random.random(), np.random.normal(), np.random.random(), torch.rand(3))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.normal(), np.random.random(), torch.rand(3))
    assert got[:3] == want[:3] and torch.equal(got[3], want[3])


# ------------------------------------------------------------------------------------------------ scale options
def test_grad_checkpointing_is_on_and_changes_no_loss(ds, tmp_path):
    from finetuning.model import Backbone, build_model
    from finetuning.runner import resolve_settings

    args = ds.script.build_parser().parse_args([*ds.base, "--grad_checkpointing", "--lora", "4"])
    s = resolve_settings(args, Backbone(ds.bert))
    assert s["grad_checkpointing"] is True
    model, _ = build_model(Backbone(ds.bert), 3, {**s, "lora_targets": ["query", "value"]}, torch.device("cpu"),
                           torch.float32)
    base = model.backbone.get_base_model()
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing

    settings = {**SETTINGS, "epochs": 3, "batch_size": 4, "n": 12}
    runs, calls = {}, {}
    for on in (False, True):
        model, result = fit(ds, {**settings, "grad_checkpointing": on}, tmp_path / str(on))
        runs[on] = (result["history"], trainable(model))
        layer = model.backbone.get_base_model().encoder.layer[0]
        calls[on] = []
        handle = layer.attention.register_forward_hook(lambda *a, c=calls[on]: c.append(1))
        model.train()
        _, ins, ex = examples_and_inputs(ds, 4)
        model(**ins.collate(ex.units))[0].sum().backward()
        handle.remove()
    assert len(calls[False]) == 1 and len(calls[True]) == 2  # the layer ran again in the backward pass
    np.testing.assert_allclose([h["train_loss"] for h in runs[True][0]], [h["train_loss"] for h in runs[False][0]],
                               rtol=1e-5)
    for k, v in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][k], v, rtol=1e-4, atol=1e-6)


def test_grad_accumulation_equals_the_larger_batch(ds, tmp_path, monkeypatch):
    """Batch 8 in one micro-batch, or 4 and 4 accumulated: the same gradient at the first (and only) update, and
    so the same weights after it."""
    grads, step = [], torch.optim.AdamW.step

    def record(opt, *a, **k):
        grads.append([None if p.grad is None else p.grad.detach().clone()
                      for g in opt.param_groups for p in g["params"]])
        return step(opt, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    one, _ = fit(ds, {**SETTINGS, "batch_size": 8, "grad_accum": 1}, tmp_path / "one")
    two, _ = fit(ds, {**SETTINGS, "batch_size": 4, "grad_accum": 2}, tmp_path / "two")
    assert len(grads) == 2  # one update each
    assert sum(g is not None for g in grads[0]) > 10
    for g1, g2 in zip(*grads):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)
    w1, w2 = trainable(one), trainable(two)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6)


def test_the_cpu_trains_in_float32_and_bf16_autocast_is_for_cuda_only(ds, tmp_path, monkeypatch):
    from finetuning import trainer

    model, _ = fit(ds, SETTINGS, tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert isinstance(trainer._autocast(torch.device("cpu")), contextlib.nullcontext)
    _, ins, ex = examples_and_inputs(ds, 2)
    with trainer._autocast(torch.device("cpu")):
        logits, emb = model(**ins.collate(ex.units))
    assert logits.dtype == emb.dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.warns(UserWarning):  # this machine has no CUDA: torch makes the context, disabled
        ctx = trainer._autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and ctx.device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100: float32
    assert not trainer.bf16_autocast(torch.device("cuda"))


@pytest.mark.parametrize("flags, words", [(["--lora", "8"], ["--load_in_4bit needs a CUDA GPU", "drop --load_in_4bit"]),
                                          (["--lora", "0"], ["--load_in_4bit", "give --lora r"])])
def test_load_in_4bit_is_refused_on_the_cpu_in_one_line(ds, flags, words):
    status, err = cli(ds, "--load_in_4bit", *flags, "--feature_name", "q4")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(w in lines[0] for w in words), lines[0]
    assert not os.path.exists(os.path.join(ds.home, "q4-UTT"))
    assert "bitsandbytes" not in sys.modules  # imported only when a 4-bit model loads


def test_load_in_4bit_without_bitsandbytes_names_the_install(ds, monkeypatch):
    """On a (pretended) CUDA machine without the package: one line naming pip install bitsandbytes, before any
    model loads or any file is written."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    base = [a if a != "cpu" else "cuda" for a in ds.base]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = ds.script.main([*base, "--load_in_4bit", "--lora", "8", "--feature_name", "q4cuda"])
    assert status == 2 and err.getvalue().strip() == ("error: --load_in_4bit needs the bitsandbytes package: pip "
                                                      "install bitsandbytes")
    assert not os.path.exists(os.path.join(ds.home, "q4cuda-UTT"))
