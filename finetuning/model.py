"""The model being fine-tuned: a backbone loaded as extraction loads it, LoRA or full fine-tuning, MiSTER-E's head.

Backbone: a hub id, a local folder or ``package:<pip>`` (extraction.encoders.ModelRef: the same cache, offline
and revision rules as feature extraction), loaded with ``AutoModel`` (the bare transformer: a decoder LLM without
its language-model head). Its family decides the defaults (:data:`DEFAULTS`): ``llm`` for decoder LLMs (Qwen,
Llama, Mistral, ...), ``encoder`` for BERT-style encoders (BERT, RoBERTa, MPNet, MiniLM, sentence-transformers
folders, whose transformer is loaded without their pooling); ``speech`` and ``audio-llm`` for speech models
(finetuning/audio.py: HuBERT and kin, Whisper's encoder, Qwen2-Audio, whose backbone class brings its own
model class and LoRA exclusions).

LoRA (``lora`` = its rank r > 0) through peft: the base weights are frozen and never change; the adapters go on
the attention projections, and for LLMs on the MLP too (:func:`default_targets`). ``lora`` 0: every weight
trains (full fine-tuning, for small encoders).

Head (MiSTER-E's ``text_qwen.py``): a LayerNorm over the last hidden layer, attentive statistics pooling over
the real positions only (the attention mask; padding gets weight exactly 0), a projection to ``embed_dim`` (its
output is the embedding that is written), then ReLU, dropout and a linear classifier.
"""

import warnings

import numpy as np
import torch
import torch.nn as nn

from common.errors import DataError

DECODER_TYPES = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "llama", "mistral", "mixtral", "gemma", "gemma2",
                 "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "falcon", "bloom", "opt", "baichuan",
                 "internlm2", "deepseek_v2", "olmo", "olmo2", "stablelm", "starcoder2"}
# candidate LoRA targets, by the leaf names of a family's linear layers (the first set the model has wins)
TARGET_SETS = (
    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # Llama, Qwen, Mistral
    ("query", "key", "value", "dense"),  # BERT, RoBERTa, MiniLM (attention output and feed-forward: 'dense')
    ("q", "k", "v", "o"),  # MPNet
    ("q_lin", "k_lin", "v_lin", "out_lin"),  # DistilBERT
    ("query_key_value", "dense"),  # GPT-NeoX, Falcon
    ("c_attn", "c_proj"),  # GPT-2
)
LLM_ATTENTION_ONLY = ("q_proj", "k_proj", "v_proj", "o_proj")

# Defaults per family; MiSTER-E's values for LLMs (text_qwen.py). "lr_lora" is the encoder's rate with LoRA.
DEFAULTS = {
    "llm": {"lora": 8, "lora_alpha": 32, "lora_dropout": 0.1, "lr": 1e-5, "batch_size": 8, "epochs": 20,
            "embed_dim": 2048, "loss": "focal", "focal_gamma": 2.0, "patience": 5, "max_tokens": 128,
            "max_tokens_context": 512, "head_dropout": 0.5},
    "encoder": {"lora": 0, "lora_alpha": None, "lora_dropout": 0.1, "lr": 3e-5, "lr_lora": 5e-4, "batch_size": 16,
                "epochs": 10, "embed_dim": 256, "loss": "ce", "focal_gamma": 2.0, "patience": 3, "max_tokens": 128,
                "max_tokens_context": 512, "head_dropout": 0.1},
    # speech encoders (HuBERT, wav2vec2, WavLM, Whisper's encoder; finetuning/audio.py): LoRA on the attention
    "speech": {"lora": 8, "lora_alpha": None, "lora_dropout": 0.1, "lr": 3e-5, "lr_lora": 5e-4, "batch_size": 8,
               "epochs": 10, "embed_dim": 256, "loss": "ce", "focal_gamma": 2.0, "patience": 3, "head_dropout": 0.1},
    # Qwen2-Audio: LoRA on its language model, the LLM values
    "audio-llm": {"lora": 8, "lora_alpha": 32, "lora_dropout": 0.1, "lr": 1e-5, "batch_size": 8, "epochs": 20,
                  "embed_dim": 2048, "loss": "focal", "focal_gamma": 2.0, "patience": 5, "head_dropout": 0.5},
}


def family_of(config):
    """``llm`` for decoder LLMs, ``encoder`` for BERT-style encoders."""
    mt = str(getattr(config, "model_type", "")).lower()
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    if mt in DECODER_TYPES or getattr(config, "is_decoder", False) or any(a.endswith("ForCausalLM") for a in archs):
        return "llm"
    return "encoder"


def default_targets(model):
    """The leaf names of ``model``'s linear layers that LoRA adapts by default (see :data:`TARGET_SETS`)."""
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
              if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"}
    for group in TARGET_SETS:
        found = [t for t in group if t in leaves]
        if len(found) >= 2:
            return found
    raise DataError(f"no default LoRA targets for this model (its linear layers: {sorted(leaves)[:12]}); name them "
                    "with --lora_targets a,b,c")


class Backbone:
    """A loaded model reference: its config, family, tokenizer and what identifies its weights."""

    def __init__(self, spec, modality="text", revision=None, trust_remote_code=False):
        from extraction.encoders import KIND_MODALITY, ModelRef, model_kind

        self.ref = ModelRef(spec, revision=revision, trust_remote_code=trust_remote_code)
        self.config = self.ref.load_config()
        kind = model_kind(self.config)
        if kind is None or KIND_MODALITY[kind] != modality:
            what = f"a {KIND_MODALITY[kind]} model" if kind else "no model family the project knows"
            raise DataError(f"--model '{spec}' (model_type '{self.config.model_type}') is {what}, not a {modality} "
                            "model")
        if modality != "text":
            raise DataError(f"--modality {modality}: fine-tuning takes text models for now")
        self.modality, self.family = modality, family_of(self.config)
        self.hidden = int(getattr(self.config, "hidden_size", None) or getattr(self.config, "n_embd"))
        self.tokenizer = self._tokenizer()

    def _tokenizer(self):
        import transformers

        tok = self.ref.from_pretrained(transformers.AutoTokenizer)
        tok.padding_side = "right"
        return tok

    def token_limit(self):
        from extraction.encoders import _text_limit

        return _text_limit(self.tokenizer, self.config)

    def load(self, dtype, device, load_in_4bit=False):
        """A fresh copy of the pretrained weights (``AutoModel``) in ``dtype`` on ``device``; ``load_in_4bit``: the
        linear layers quantised to 4-bit NF4 by bitsandbytes (bf16 compute, CUDA only; see :func:`check_4bit`)."""
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        if load_in_4bit:
            quant = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                    bnb_4bit_compute_dtype=torch.bfloat16,
                                                    bnb_4bit_use_double_quant=True)
            return self.ref.from_pretrained(transformers.AutoModel, quantization_config=quant,
                                            device_map={"": device.index or 0}, **{key: torch.bfloat16})
        return self.ref.from_pretrained(transformers.AutoModel, **{key: dtype}).to(device)

    def default_targets(self):
        """:func:`default_targets` of this model, read from its structure built on the meta device (no weights)."""
        import transformers

        with torch.device("meta"):
            net = transformers.AutoModel.from_config(self.config, trust_remote_code=self.ref.trust_remote_code)
        return default_targets(net)

    def describe(self):
        return {"model": self.ref.label, "weights": self.ref.weights_id(), "family": str(self.config.model_type),
                "kind": self.family, "modality": self.modality}


# ------------------------------------------------------------------------------------------------ the head
class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling: attention weights over the real positions (mask True), then the weighted
    mean and standard deviation, concatenated: ``(B, T, D), (B, T) -> (B, 2D)``. Padding positions get weight
    exactly 0 (their logits are -inf, their states zeroed), so a sample pools to the same vector alone or padded
    in a batch."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.attention = nn.Parameter(torch.empty(dim, 1))
        nn.init.normal_(self.attention, mean=0.0, std=1.0)

    def forward(self, x, mask):
        logits = (torch.tanh(self.proj(x)) @ self.attention).squeeze(-1)
        w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1).unsqueeze(-1)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        mean = (x * w).sum(1)
        var = ((x * x) * w).sum(1) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-5).sqrt()], dim=1)


class Head(nn.Module):
    """LayerNorm -> attentive statistics pooling -> projection (the embedding) -> ReLU, dropout, classifier."""

    def __init__(self, hidden, embed_dim, n_classes, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.pool = AttentiveStatsPooling(hidden)
        self.project = nn.Linear(2 * hidden, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, states, mask):
        """``(B, T, hidden)`` states and a ``(B, T)`` bool mask of real positions -> ``(logits, embedding)``."""
        emb = self.project(self.pool(self.norm(states.float()), mask))
        return self.classifier(self.dropout(torch.relu(emb))), emb


class FinetuneModel(nn.Module):
    """Backbone (LoRA-wrapped or not) and head: ``forward(input_ids, attention_mask) -> (logits, embedding)``."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask):
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(states, attention_mask.bool())


def check_4bit(device, lora):
    """Refuse ``--load_in_4bit`` where it cannot run, in one line naming the fix: without LoRA (4-bit weights do
    not train), off CUDA (bitsandbytes' 4-bit kernels), or without the bitsandbytes package."""
    import importlib.util

    if not lora:
        raise DataError("--load_in_4bit freezes the base in 4 bits and trains LoRA adapters on it: give --lora r "
                        "(e.g. --lora 8), or drop --load_in_4bit for full fine-tuning")
    if device.type != "cuda":
        raise DataError(f"--load_in_4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels), and this run is on "
                        f"{device.type}: drop --load_in_4bit on the CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DataError("--load_in_4bit needs the bitsandbytes package: pip install bitsandbytes")


def build_model(backbone, n_classes, settings, device, dtype):
    """The model to train: ``backbone.load(dtype)`` with LoRA (``settings["lora"]`` > 0) or all weights trainable,
    and a new head (float32). ``settings["load_in_4bit"]``: the base in 4 bits (bitsandbytes), made ready for
    training by peft's ``prepare_model_for_kbit_training`` (norms and embeddings in float32) before the LoRA
    adapters go on. Returns ``(model, lora targets or None)``."""
    four_bit = bool(settings.get("load_in_4bit"))
    net = backbone.load(dtype, device, load_in_4bit=True) if four_bit else backbone.load(dtype, device)
    targets = None
    if four_bit:
        from peft import prepare_model_for_kbit_training

        net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=bool(settings.get("grad_checkpointing")),
                                              gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings["lora"] > 0:
        from peft import LoraConfig, get_peft_model

        targets = list(settings["lora_targets"] or default_targets(net))
        cfg = LoraConfig(r=int(settings["lora"]), lora_alpha=float(settings["lora_alpha"]),
                         lora_dropout=float(settings["lora_dropout"]), target_modules=targets, bias="none",
                         exclude_modules=getattr(backbone, "lora_exclude", None))  # Qwen2-Audio: not its audio tower
        with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question; nothing for the user
            warnings.simplefilter("ignore", FutureWarning)
            net = get_peft_model(net, cfg)
    else:
        net = net.float()
    if settings.get("grad_checkpointing"):
        base = net.get_base_model() if hasattr(net, "get_base_model") else net
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base.config, "use_cache"):
            base.config.use_cache = False
    head = Head(backbone.hidden, int(settings["embed_dim"]), n_classes, float(settings["head_dropout"]))
    model_class = getattr(backbone, "model_class", FinetuneModel)  # audio: finetuning.audio.AudioFinetuneModel
    return model_class(net, head.to(device=device, dtype=torch.float32)), targets


def parameter_counts(model):
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_state(model):
    """The trained part of ``model`` (LoRA adapters or every backbone weight, and the head), copied to the CPU."""
    return {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state):
    """Put ``state`` (from :func:`trainable_state`) back into ``model``; every trainable weight must be there."""
    params = dict(model.named_parameters())
    missing = [k for k, p in params.items() if p.requires_grad and k not in state]
    if missing or any(k not in params for k in state):
        raise DataError(f"a checkpoint does not fit this model ({len(missing)} weights missing); delete it to "
                        "start over")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def save_model(model, folder, info):
    """The trained model for reuse: the peft adapter (``save_pretrained``: adapter_config.json and
    adapter_model.safetensors) or, with full fine-tuning, the whole backbone; the head as head.safetensors and
    head.json (``info``: what rebuilds it). Returns a short hash of the saved weights."""
    import hashlib
    import json
    import os

    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    model.backbone.save_pretrained(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
              os.path.join(folder, "head.safetensors"))
    with open(os.path.join(folder, "head.json"), "w") as f:
        json.dump(info, f, indent=1)
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with open(os.path.join(folder, name), "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
    return "sha256:" + h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ losses
def class_weights(labels, n_classes):
    """Inverse class frequencies of ``labels``, scaled to mean 1 over the classes present (absent: 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return w / w[counts > 0].mean()


def make_loss(kind, gamma=2.0, weights=None, smoothing=0.0):
    """``loss(logits, targets, sample_weights) -> scalar``: cross-entropy (``ce``) or focal loss (``focal``:
    the cross-entropy of each sample times ``(1 - p_true) ** gamma``, MiSTER-E's with alpha 1), both with optional
    class weights and label smoothing; the weighted mean over the batch (sample weights: pseudo-label weights)."""
    import torch.nn.functional as F

    if kind not in ("ce", "focal"):
        raise DataError(f"--loss '{kind}': use ce or focal")
    smoothing = float(smoothing)
    if not 0.0 <= smoothing < 1.0:
        raise DataError(f"--label_smoothing {smoothing}: give a number in [0, 1)")

    def loss(logits, targets, sample_weights):
        logp = F.log_softmax(logits.float(), dim=1)
        true = logp.gather(1, targets[:, None]).squeeze(1)
        per = -(1.0 - smoothing) * true - smoothing * logp.mean(1)
        if weights is not None:
            per = per * torch.as_tensor(weights, dtype=per.dtype, device=per.device)[targets]
        if kind == "focal":
            per = per * (1.0 - true.exp()).clamp(min=0.0) ** float(gamma)
        w = sample_weights.to(per.dtype)
        return (per * w).sum() / w.sum().clamp(min=1e-12)

    return loss
