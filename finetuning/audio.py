"""Speech models in the fine-tuning stage: HuBERT, wav2vec2, WavLM (and their kin), Whisper's encoder, Qwen2-Audio.

The backbone is loaded as extraction loads it (extraction.encoders: ``ModelRef``, ``model_kind``, ``AutoModel`` and
the model's ``AutoFeatureExtractor``), and a clip is cut into the windows extraction cuts
(:class:`finetuning.inputs.AudioInputs`). Each window runs through the model; a clip's frame states are its
windows' real frames, concatenated in order, and the head (finetuning.model.Head) pools over those frames only:

=============  ===========================================================================================
kind           what the head reads
=============  ===========================================================================================
audio-ssl      HuBERT, wav2vec2, WavLM, data2vec-audio ...: the last hidden layer, one frame per 320 samples
               (20 ms); windows padded in a batch with the attention mask where the feature extractor gives one
               (large models), else run in groups of equal length (base models: padding would change them)
whisper        Whisper's encoder (the decoder is dropped): 30 s log-mel windows, the frames that hold audio
               (one per 320 samples; the rest of the fixed 30 s input is masked out of the pooling)
qwen2-audio    Qwen2-Audio: its audio tower's frame states (one per 640 samples, 40 ms), through the multi-modal
               projector into the language model, as Qwen2-Audio's processor lays them out
               (``<|audio_bos|>`` frames ``<|audio_eos|>`` per window, then the prompt, MiSTER-E's by default); the
               head reads the language model's last hidden layer over every real position
=============  ===========================================================================================

LoRA goes on the attention projections of the speech encoders (``q_proj, k_proj, v_proj, out_proj``; WavLM: its
feed-forward layers, see :data:`WAVLM_TARGETS`) and on
the language model of Qwen2-Audio only (every projection, as for text LLMs; its audio tower and projector stay
frozen, as in MiSTER-E's ``train_salmonn.py``). Full fine-tuning (``--lora 0``, speech encoders only) trains every
weight but the convolutional front end (the feature encoder of HuBERT and kin, Whisper's two convolutions), as is
usual. LayerDrop is off (every rank of a data-parallel run must use every weight); SpecAugment stays as the
model's config sets it (on in training only).
"""

import numpy as np
import torch
import torch.nn as nn

from common.errors import DataError
from finetuning.model import FinetuneModel

SPEECH_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# WavLM's attention hands its projections' weights to torch's multi_head_attention_forward, past the modules' own
# forward, where a LoRA adapter would never act: its adapters go on the feed-forward layers
WAVLM_TARGETS = ("intermediate_dense", "output_dense")
LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QWEN2_AUDIO_EXCLUDE = r".*audio_tower.*"  # peft exclude_modules: no adapter in the audio tower
AUDIO_KINDS = ("audio-ssl", "whisper", "qwen2-audio")


def audio_kind(config):
    """``audio-ssl``, ``whisper`` or ``qwen2-audio`` for a speech model's config, else None."""
    from extraction.encoders import model_kind

    if str(getattr(config, "model_type", "")) == "qwen2_audio":
        return "qwen2-audio"
    kind = model_kind(config)
    return kind if kind in AUDIO_KINDS else None


class AudioBackbone:
    """A speech model reference: config, kind, feature extractor (and Qwen2-Audio's tokenizer), what identifies its
    weights; the same interface as finetuning.model.Backbone."""

    modality = "audio"

    def __init__(self, spec, modality="audio", revision=None, trust_remote_code=False):
        import transformers

        from extraction.encoders import KIND_MODALITY, ModelRef, model_kind

        self.ref = ModelRef(spec, revision=revision, trust_remote_code=trust_remote_code)
        self.config = self.ref.load_config()
        self.kind = audio_kind(self.config)
        if self.kind is None:
            kind = model_kind(self.config)
            what = f"a {KIND_MODALITY[kind]} model" if kind else "no model family the project knows"
            raise DataError(f"--model '{spec}' (model_type '{self.config.model_type}') is {what}, not an audio model "
                            "(HuBERT, wav2vec2, WavLM, Whisper, Qwen2-Audio)")
        self.family = "audio-llm" if self.kind == "qwen2-audio" else "speech"
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.feature_extractor = self.ref.from_pretrained(transformers.AutoFeatureExtractor)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        cfg = self.config
        if self.kind == "qwen2-audio":
            self.hidden = int(cfg.text_config.hidden_size)
            self.tokenizer = self.ref.from_pretrained(transformers.AutoTokenizer)
            self.lora_exclude = QWEN2_AUDIO_EXCLUDE
        else:
            self.hidden = int(cfg.d_model if self.kind == "whisper" else cfg.hidden_size)
            self.tokenizer, self.lora_exclude = None, None
        self.model_class = AudioFinetuneModel

    def check(self, settings):
        """Refuse settings this kind cannot take, in one line."""
        if self.kind == "qwen2-audio" and not settings["lora"]:
            raise DataError("--lora 0: full fine-tuning of Qwen2-Audio (a 7B model) is not offered; give --lora r "
                            "(LoRA on its language model)")
        inert = sorted(set(settings.get("lora_targets") or ()) & set(SPEECH_TARGETS))
        if str(self.config.model_type) == "wavlm" and settings["lora"] and inert:
            raise DataError(f"--lora_targets {','.join(inert)}: WavLM's attention reads these weights directly "
                            "(torch's multi_head_attention_forward), so LoRA there never acts; use "
                            f"{','.join(WAVLM_TARGETS)} (the default)")

    def load(self, dtype, device, load_in_4bit=False):
        """The pretrained weights as text backbones load them (finetuning.model.Backbone.load: ``AutoModel``,
        optionally 4-bit), then: Whisper's encoder alone, LayerDrop off, the convolutional front end frozen."""
        from finetuning.model import Backbone

        if load_in_4bit:
            net = Backbone.load(self, dtype, device, load_in_4bit=True)
        else:
            net = Backbone.load(self, dtype, device)
        if self.kind == "whisper":
            net = net.get_encoder()
        for module in [net, *net.modules()]:
            for attr in ("layerdrop", "encoder_layerdrop"):
                if isinstance(getattr(getattr(module, "config", None), attr, None), float):
                    setattr(module.config, attr, 0.0)
                if isinstance(getattr(module, attr, None), float):
                    setattr(module, attr, 0.0)
        if self.kind == "audio-ssl":  # as HF's freeze_feature_encoder() of the *ForCTC / *ForSequenceClassification
            front = net.feature_extractor
            front._freeze_parameters() if hasattr(front, "_freeze_parameters") else front.requires_grad_(False)
        elif self.kind == "whisper":
            for conv in (net.conv1, net.conv2):
                conv.requires_grad_(False)
        else:
            net.audio_tower.requires_grad_(False)
            net.multi_modal_projector.requires_grad_(False)
        return net

    def default_targets(self):
        """LoRA's default targets: the speech encoders' attention projections; Qwen2-Audio's language model's
        projections (``lora_exclude`` keeps the adapters out of its audio tower)."""
        import transformers

        from finetuning.model import default_targets

        with torch.device("meta"):
            net = transformers.AutoModel.from_config(self.config, trust_remote_code=self.ref.trust_remote_code)
        leaves = {name.rsplit(".", 1)[-1] for name, m in net.named_modules() if isinstance(m, nn.Linear)}
        wanted = LLM_TARGETS if self.kind == "qwen2-audio" else \
            WAVLM_TARGETS if str(self.config.model_type) == "wavlm" else SPEECH_TARGETS
        found = [t for t in wanted if t in leaves]
        return found if len(found) >= 2 else default_targets(net)

    def token_limit(self):
        return None

    def describe(self):
        out = {"model": self.ref.label, "weights": self.ref.weights_id(), "family": str(self.config.model_type),
               "kind": self.family, "modality": self.modality, "audio_kind": self.kind}
        if self.kind == "qwen2-audio":
            out["lora_scope"] = "language model (audio tower and projector frozen)"
        return out


def _dtype_of(module):
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _by_clip(pieces, clip):
    """Per-window ``(frames, D)`` states and their clip indices -> ``(B, T, D)`` states (each clip's windows
    concatenated in order, right-padded with zeros) and the ``(B, T)`` mask of real frames."""
    groups = [[] for _ in range(max(clip) + 1)]
    for piece, b in zip(pieces, clip):
        groups[b].append(piece)
    seqs = [torch.cat(g, 0) for g in groups]
    states = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([len(s) for s in seqs], device=states.device)
    return states, torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]


class AudioFinetuneModel(FinetuneModel):
    """Backbone (LoRA-wrapped or not) and head over the frames of whole clips:
    ``forward(**batch) -> (logits, embedding)``, the batch from :class:`finetuning.inputs.AudioInputs`."""

    def _net(self):
        return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

    def forward(self, **batch):
        net = self._net()
        if "input_ids" in batch:
            states, mask = self._qwen2_audio(net, batch)
        else:
            frames, clip = batch["frames"].tolist(), batch["clip"].tolist()
            if "input_values" in batch:
                out = self._ssl(net, batch)
            else:
                x = batch["input_features"]
                out = net(input_features=x.to(_dtype_of(net))).last_hidden_state
            states, mask = _by_clip([out[w, :frames[w]] for w in range(len(frames))], clip)
        return self.head(states, mask)

    def _ssl(self, net, batch):
        """HuBERT and kin: ``(W, F, D)`` last-layer states of the windows. With an attention mask the windows are
        padded together; without one (base models, whose group norm would see the padding) each group of
        windows of one length runs alone, unpadded, its states padded afterwards."""
        x = batch["input_values"].to(_dtype_of(net))
        mask = batch.get("attention_mask")
        lengths = batch["lengths"]
        if mask is not None or bool((lengths == lengths.max()).all()):
            return self._ssl_run(net, x, mask)
        outs = {}
        for n in sorted(set(lengths.tolist())):
            idx = (lengths == n).nonzero().squeeze(1)
            states = self._ssl_run(net, x[idx, :n], None)
            for j, w in enumerate(idx.tolist()):
                outs[w] = states[j]
        longest = max(len(s) for s in outs.values())
        return torch.stack([nn.functional.pad(outs[w], (0, 0, 0, longest - len(outs[w])))
                            for w in range(len(outs))])

    @staticmethod
    def _ssl_run(net, x, mask):
        kw = {"input_values": x, "attention_mask": mask}
        cfg = net.config
        if net.training and getattr(cfg, "apply_spec_augment", False) and getattr(cfg, "mask_time_prob", 0) > 0:
            frames = int(net._get_feat_extract_output_lengths(torch.tensor(x.shape[1])))
            if frames <= int(cfg.mask_time_length):  # too short for one SpecAugment span: none (HF would refuse)
                kw["mask_time_indices"] = torch.zeros(x.shape[0], frames, dtype=torch.bool, device=x.device)
        return net(**kw).last_hidden_state

    @staticmethod
    def _qwen2_audio(net, batch):
        """Qwen2-Audio as ``Qwen2AudioModel.forward`` runs it (the audio tower with the mask of real mel frames, the
        projector, the frames scattered into the audio positions of the token sequence), then the language
        model; returns its last hidden layer and the mask of real positions."""
        from transformers.masking_utils import create_bidirectional_mask

        tower, projector, lm = net.audio_tower, net.multi_modal_projector, net.language_model
        feats = batch["input_features"].to(_dtype_of(tower))
        feat_len, out_len = tower._get_feat_extract_output_lengths(batch["feature_attention_mask"].sum(-1))
        n_windows, _, n_mel = feats.shape
        positions = (n_mel - 2) // 2 + 1
        real = (torch.arange(positions, device=feats.device)[None, :] < feat_len[:, None]).long()
        frozen = not any(p.requires_grad for p in [*tower.parameters(), *projector.parameters()])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            mask4 = create_bidirectional_mask(config=tower.config, attention_mask=real,
                                              inputs_embeds=feats.new_zeros(n_windows, positions, 1))
            audio = projector(tower(feats, attention_mask=mask4).last_hidden_state)
        keep = torch.arange(audio.shape[1], device=audio.device)[None, :] < out_len[:, None]
        audio = audio[keep]
        slots = batch["audio_slots"].bool()
        if int(slots.sum()) != audio.shape[0]:
            raise RuntimeError(f"Qwen2-Audio: {int(slots.sum())} audio positions for {audio.shape[0]} audio frames")
        embeds = lm.get_input_embeddings()(batch["input_ids"])
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), audio.to(embeds.dtype))
        attention = batch["attention_mask"]
        states = lm(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        return states, attention.bool()
