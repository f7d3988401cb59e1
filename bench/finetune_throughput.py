"""LoRA training speed of a real-size decoder through the fine-tuning stage's own code: the finetune_throughput step of
bench/gpu_check.sh.

    python bench/finetune_throughput.py --device cuda                 # Qwen2.5-1.5B's shape, random weights, bf16
    python bench/finetune_throughput.py --device cpu --shape tiny     # the same path at a tiny shape (a smoke test)

A Qwen2 with Qwen2.5-1.5B's widths (hidden 1536, 28 layers, 12 heads, 2 key-value heads, intermediate 8960,
vocabulary 151,936; ``--vocab`` cuts it) is built from its config with random weights directly on the device,
in the dtype the stage gives a LoRA base there (bfloat16 on a GPU with bf16, else float32; nothing is
downloaded or written). Then, as preprocess/finetune_encoder.py trains it: finetuning.model.build_model (LoRA
r ``--lora`` with the LLM defaults, alpha 32 on q, k, v, o and the MLP; MiSTER-E's head with a 2048-wide
projection; gradient checkpointing when asked), finetuning.inputs.TextInputs' collate, the focal loss and
finetuning.trainer.Trainer's training epoch (bf16 autocast on CUDA, AdamW, gradient clipping), over batches of
``--batch_size`` x ``--tokens`` random token ids: ``--warmup`` steps, then ``--steps`` timed ones. Once without
and once with gradient checkpointing (``--checkpointing``), each on a freshly built model, printing per run

    grad_checkpointing off: 1,552,...,... parameters, 9,...,... trainable; built in 3.1s; 130.2 samples/s (16,666
    tokens/s), 61.4 ms/step; peak memory 6.02 GiB (GPU)

and last ``samples/s: off X, on Y``. The dataset-free loop is the trainer's own (``Trainer._train_epoch``), so the
figure is what a user's run reaches between its validation passes.
"""

import argparse
import gc
import logging
import os
import sys
import time
import types

import numpy as np

import _paths  # noqa: F401

SHAPES = {
    # Qwen2.5-1.5B (its config.json): hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960
    "qwen2.5-1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512, "max_position_embeddings": 512},
}
N_CLASSES = 7  # MELD's


class RandomBackbone:
    """What finetuning.model.build_model reads of a backbone (``hidden``, ``load``), for a Qwen2 built from its config
    with random weights directly on the device (no files)."""

    def __init__(self, config):
        self.config, self.hidden = config, int(config.hidden_size)

    def load(self, dtype, device, load_in_4bit=False):
        import torch
        import transformers

        if load_in_4bit:
            raise ValueError("a random backbone is not quantised")
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        with torch.device(device):
            net = transformers.AutoModel.from_config(self.config, **{key: dtype})
        return net.to(device)


def run_one(cfg, device, dtype, args, checkpointing, logger):
    """Build, warm up and time one model; returns its figures."""
    import torch

    from finetuning import model as model_mod
    from finetuning.inputs import TextInputs
    from finetuning.parallel import Parallel
    from finetuning.trainer import Examples, Trainer, peak_memory

    d = model_mod.DEFAULTS["llm"]
    settings = {"lora": args.lora, "lora_alpha": d["lora_alpha"], "lora_dropout": d["lora_dropout"],
                "lora_targets": None, "embed_dim": d["embed_dim"], "head_dropout": d["head_dropout"],
                "grad_checkpointing": checkpointing, "load_in_4bit": False, "batch_size": args.batch_size,
                "grad_accum": 1, "lr": d["lr"], "weight_decay": 0.0, "seed": 0}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    torch.manual_seed(0)
    model, targets = model_mod.build_model(RandomBackbone(cfg), N_CLASSES, settings, device, dtype)
    if cuda:
        torch.cuda.synchronize(device)
    built = time.time() - t0
    trainable, total = model_mod.parameter_counts(model)
    tokenizer = types.SimpleNamespace(sep_token=None, eos_token="<|endoftext|>", pad_token_id=None, eos_token_id=0)
    inputs = TextInputs(tokenizer, {}, decoder=True, max_tokens=args.tokens)
    loss = model_mod.make_loss(d["loss"], d["focal_gamma"])
    trainer = Trainer(model, inputs.collate, loss, settings, device, Parallel(device), logger, progress=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0)
    rng = np.random.default_rng(0)

    def examples(steps):
        n = steps * args.batch_size
        units = [rng.integers(1, cfg.vocab_size, args.tokens).astype(np.int64) for _ in range(n)]
        return Examples([f"s{i}" for i in range(n)], units, rng.integers(0, N_CLASSES, n))

    trainer._train_epoch(examples(args.warmup), 1, opt, sched)
    timed = examples(args.steps)
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.time()
    train_loss = trainer._train_epoch(timed, 2, opt, sched)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.time() - t0
    out = {"parameters": total, "trainable": trainable, "built_s": built, "targets": targets,
           "samples_per_s": len(timed) / seconds, "ms_per_step": 1000 * seconds / args.steps,
           "peak_memory": peak_memory(device), "loss": train_loss}
    del trainer, opt, sched, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--shape", default=None, choices=sorted(SHAPES),
                   help="qwen2.5-1.5b (default on cuda) or tiny (default on the CPU)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary size (default the shape's; smaller saves "
                                                          "memory, not time: the embedding is frozen)")
    p.add_argument("--batch_size", type=int, default=None, help="samples per step (default 8; tiny: 2)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per sample (default 128; tiny: 16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10; tiny: 2)")
    p.add_argument("--warmup", type=int, default=None, help="steps before the timing (default 3; tiny: 1)")
    p.add_argument("--lora", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--checkpointing", default="both", choices=["both", "off", "on"],
                   help="runs without and with gradient checkpointing (default both)")
    args = p.parse_args(argv)
    import torch
    import transformers

    from common.utils import process_device
    from finetuning.trainer import bf16_autocast

    transformers.logging.set_verbosity_error()
    device = process_device(args.device)
    shape = args.shape or ("qwen2.5-1.5b" if device.type == "cuda" else "tiny")
    tiny = shape == "tiny"
    for key, big, small in (("batch_size", 8, 2), ("tokens", 128, 16), ("steps", 10, 2), ("warmup", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else big)
        if getattr(args, key) < 1:
            p.error(f"--{key} {getattr(args, key)}: give a positive number")
    spec = dict(SHAPES[shape], **({"vocab_size": args.vocab} if args.vocab else {}))
    cfg = transformers.Qwen2Config(**spec)
    # as the stage's runner: a LoRA base in bf16 where autocast is bf16 (a GPU with bf16), float32 elsewhere
    dtype = torch.bfloat16 if bf16_autocast(device) and args.lora else torch.float32
    detail = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"shape {shape}: hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers}, heads {cfg.num_attention_heads} "
          f"({cfg.num_key_value_heads} kv), intermediate {cfg.intermediate_size}, vocab {cfg.vocab_size}; "
          f"random weights built on {device} in {str(dtype).replace('torch.', '')}", flush=True)
    print(f"device {device}{detail}; autocast {'bf16' if bf16_autocast(device) else 'off'}; batch {args.batch_size} x "
          f"{args.tokens} tokens; LoRA r {args.lora}; {args.warmup} warm-up steps, {args.steps} timed", flush=True)
    logger = logging.getLogger("finetune_throughput")
    rates = {}
    for checkpointing in {"both": (False, True), "off": (False,), "on": (True,)}[args.checkpointing]:
        r = run_one(cfg, device, dtype, args, checkpointing, logger)
        tag = "on" if checkpointing else "off"
        rates[tag] = r["samples_per_s"]
        if tag == "off" or args.checkpointing == "on":
            print(f"LoRA targets: {','.join(r['targets'] or [])}", flush=True)
        print(f"grad_checkpointing {tag}: {r['parameters']:,} parameters, {r['trainable']:,} trainable; built in "
              f"{r['built_s']:.1f}s; {r['samples_per_s']:.1f} samples/s ({r['samples_per_s'] * args.tokens:,.0f} "
              f"tokens/s), {r['ms_per_step']:.1f} ms/step; loss {r['loss']:.4f}; peak memory {r['peak_memory']}",
              flush=True)
    print("samples/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
