"""Parts of multimodal LLMs as extraction families (``preprocess/extract_features.py --part``).

=============  ===================  =====================================================================
family          parts                 what a clip gives
=============  ===================  =====================================================================
Qwen2-Audio     audio_tower           the audio tower's output (Whisper encoder, avg-pool, LayerNorm): one
                (default),            state per 40 ms of audio, 30 s windows
                language_model
Qwen2.5-Omni    audio_tower,          audio tower: its output after its projection (as wide as the language
                vision_tower,         model), one state per 40 ms; vision tower: after its patch merger (the
                language_model        projector into the language model), per frame pair
InternVL        vision_tower,         vision tower: after the pixel shuffle and the projector, per frame
                language_model
Qwen2.5-VL,     vision_tower,         after the patch merger, per temporal patch (2 frames)
Qwen2-VL        language_model
=============  ===================  =====================================================================

``language_model``: the language model's hidden states over the model's own chat input for the clip, built
by its processor and chat template: one user turn holding the clip's frames (``video``), its audio
(``audio``) and its subtitle (``subtitle``), as ``--inputs`` chooses, then ``--prompt``, then the generation
prompt. States are the sum of the chosen layers (``--layers``; default the last four, MERTools' rule for LLM
features) and are pooled over the user turn's content (media tokens, subtitle and prompt: never the system
prompt, the template's markup or padding; ``--token_pool mean``, the default) or taken at the input's last
token (``--token_pool last``, where the model would start its answer). ``FRM`` is the content tokens' states.

Towers are loaded alone: the model is laid out on the meta device, the part is built for real and given only
its own tensors, read from the safetensors shards that hold them (a hub id fetches those shards only), so a
7 B model's language model never enters memory. A checkpoint without safetensors falls back to the whole
model on the CPU. The language model part loads the whole model (``--device_map auto`` spreads it over the
process's GPUs; ``--load_in 8bit|4bit`` quantises it with bitsandbytes on CUDA).
"""

import json
import os

import numpy as np

from common.errors import DataError
from extraction.encoders import (AudioPreprocessor, Encoder, Prepared, WhisperEncoder, parse_layers,
                                 processor_identity, sum_layers)

# config.model_type -> family
MODEL_TYPES = {"qwen2_audio": "qwen2-audio", "qwen2_audio_encoder": "qwen2-audio", "qwen2_5_omni": "qwen2.5-omni",
               "qwen2_5_omni_thinker": "qwen2.5-omni", "internvl": "internvl", "qwen2_5_vl": "qwen2.5-vl",
               "qwen2_vl": "qwen2-vl"}
# family -> (parts, the first the default), the model class (transformers), the media its chat input takes
FAMILIES = {
    "qwen2-audio": {"parts": ("audio_tower", "language_model"), "cls": "Qwen2AudioForConditionalGeneration",
                    "media": ("audio",)},
    "qwen2.5-omni": {"parts": ("language_model", "audio_tower", "vision_tower"),
                     "cls": "Qwen2_5OmniThinkerForConditionalGeneration", "media": ("video", "audio")},
    "internvl": {"parts": ("language_model", "vision_tower"), "cls": "InternVLForConditionalGeneration",
                 "media": ("video",)},
    "qwen2.5-vl": {"parts": ("language_model", "vision_tower"), "cls": "Qwen2_5_VLForConditionalGeneration",
                   "media": ("video",)},
    "qwen2-vl": {"parts": ("language_model", "vision_tower"), "cls": "Qwen2VLForConditionalGeneration",
                 "media": ("video",)},
}
# the feature modality each part writes (language_model: the user's --modality)
PART_MODALITY = {"audio_tower": "audio", "vision_tower": "visual"}
INPUTS = ("video", "audio", "subtitle")
DEFAULT_PROMPT = "What emotion does the person in this clip express? Answer with one word."
DEFAULT_FRAMES = 8  # frames per clip for the vision parts (uniform); --frames changes it
SUBTITLE_FORMAT = 'The subtitle of this clip: "{subtitle}"\n'
WRAPPERS = {"model", "thinker"}  # names a checkpoint may put before a part's own (model.visual, thinker.audio_tower)
_SENTINEL = "\u2063MERCONTENT\u2063"


def family_of(config):
    return MODEL_TYPES.get(str(getattr(config, "model_type", "")).lower())


def model_class(family):
    import transformers

    return getattr(transformers, FAMILIES[family]["cls"])


def class_config(family, config):
    """The config the family's model class takes: the thinker's for a whole Qwen2.5-Omni checkpoint."""
    if family == "qwen2.5-omni" and hasattr(config, "thinker_config"):
        return config.thinker_config
    return config


def text_width(family, config):
    cfg = class_config(family, config)
    return int(cfg.text_config.hidden_size)


# -------------------------------------------------------------------------------------------------
# Loading a part alone
# -------------------------------------------------------------------------------------------------

def part_key(key, leaf):
    """A checkpoint key's name inside the part ``leaf`` (``visual``, ``audio_tower`` ...), or None: the key is
    ``[wrapper.]*leaf.rest`` with wrappers among :data:`WRAPPERS` (the released checkpoints write ``visual.x``,
    ``thinker.audio_tower.x``; transformers 5 saves ``model.visual.x``)."""
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == leaf:
            return ".".join(parts[i + 1:])
        if p not in WRAPPERS:
            return None
    return None


def find_module(model, leaf):
    """The dotted path of the first submodule named ``leaf`` (``audio_tower`` or ``model.audio_tower``)."""
    for name, _ in model.named_modules():
        if name.split(".")[-1] == leaf:
            return name
    raise DataError(f"model {type(model).__name__} has no submodule '{leaf}'")


def _set_module(model, path, module):
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _rebuild(meta_module, config, dtype):
    """The same module, built for real on the CPU (its non-persistent buffers computed, as its ``__init__``
    does); pretrained sub-models from their own config, plain modules (projectors) from the model's."""
    import torch
    from transformers import PreTrainedModel

    with torch.device("cpu"):
        if isinstance(meta_module, PreTrainedModel):
            return type(meta_module)._from_config(meta_module.config, dtype=dtype)
        return type(meta_module)(config).to(dtype)


def _checkpoint_files(ref, leaves):
    """Paths of the safetensors files that hold the parts' tensors, or None when the checkpoint has none."""
    from transformers.utils import cached_file

    rev = ref.revision if ref.source == "hub" else None

    def fetch(name):
        try:
            return cached_file(ref.path, name, revision=rev, _raise_exceptions_for_missing_entries=False)
        except (OSError, ValueError):
            return None

    index = fetch("model.safetensors.index.json")
    if index:
        with open(index) as fh:
            wmap = json.load(fh)["weight_map"]
        shards = sorted({f for k, f in wmap.items() if any(part_key(k, leaf) is not None for leaf in leaves)})
    else:
        shards = ["model.safetensors"]
    paths = [fetch(f) for f in shards]
    return paths if paths and all(paths) else None


def load_parts(ref, config, family, leaves, dtype, logger=None):
    """The family's model with only the submodules named ``leaves`` real (the rest on the meta device, never
    allocated), their weights read from the safetensors shards that hold them. Returns the model (its parts on
    the CPU) or, where the checkpoint has no safetensors, the whole model loaded the ordinary way."""
    import torch
    import transformers

    cls, cfg = model_class(family), class_config(family, config)
    files = _checkpoint_files(ref, leaves)
    if files is None:
        if logger:
            logger.info(f"model {ref.label}: no safetensors files; loading the whole model on the CPU to take its "
                        f"{', '.join(leaves)}")
        kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": dtype}
        return ref.from_pretrained(cls, **kw).eval()
    from safetensors import safe_open

    states = {leaf: {} for leaf in leaves}
    for path in files:
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                for leaf in leaves:
                    name = part_key(k, leaf)
                    if name is not None:
                        states[leaf][name] = f.get_tensor(k).to(dtype)
    with torch.device("meta"):
        model = cls._from_config(cfg, dtype=dtype)
    for leaf in leaves:
        path = find_module(model, leaf)
        part = _rebuild(model.get_submodule(path), cfg, dtype)
        if not states[leaf]:
            raise DataError(f"model '{ref.spec}': its checkpoint holds no tensor of the {leaf} (keys named "
                            f"[model.|thinker.]{leaf}.*)")
        missing, unexpected = part.load_state_dict(states[leaf], strict=False)
        if missing or unexpected:
            raise DataError(f"model '{ref.spec}': the {leaf}'s weights do not match its config (missing "
                            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        _set_module(model, path, part.eval())
    return model.eval()


def load_whole(ref, config, family, dtype, device, device_map=None, load_in=None):
    """The whole model for the language_model part: on ``device``, or spread by ``device_map``, or quantised."""
    import transformers

    kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": dtype}
    if load_in:
        if device.type != "cuda":
            raise DataError(f"--load_in {load_in} quantises with bitsandbytes, which needs CUDA; on the CPU leave it "
                            "unset")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DataError(f"--load_in {load_in} needs bitsandbytes: pip install bitsandbytes") from None
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_8bit=load_in == "8bit", load_in_4bit=load_in == "4bit", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_type="nf4")
        device_map = device_map or {"": device.index or 0}
    if device_map:
        kw["device_map"] = device_map_for(device_map, device)
    model = ref.from_pretrained(model_class(family), **kw)
    if not device_map:
        model = model.to(device)
    return model.eval()


def device_map_for(spec, device):
    """``--device_map auto``: ``auto`` over the GPUs this process may use. Under torchrun with several processes
    per machine each takes its own slice of the machine's GPUs (LOCAL_RANK's), through ``max_memory``; on the CPU
    the model stays on the CPU."""
    import torch

    if isinstance(spec, dict) or spec != "auto":
        return spec
    if device.type != "cuda":
        return {"": "cpu"}
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world <= 1:
        return "auto"
    n = torch.cuda.device_count()
    per = n // local_world
    if per < 1:
        raise DataError(f"--device_map auto under torchrun: {local_world} processes share {n} GPUs; run at most one "
                        "process per GPU (--nproc_per_node)")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    mine = range(rank * per, (rank + 1) * per)
    return {"device_map": "auto",
            "max_memory": {i: int(torch.cuda.get_device_properties(i).total_memory * 0.9) for i in mine}}


def input_device(model):
    return model.get_input_embeddings().weight.device


# -------------------------------------------------------------------------------------------------
# Audio towers
# -------------------------------------------------------------------------------------------------

class Qwen2AudioTowerEncoder(WhisperEncoder):
    """Qwen2-Audio's audio tower (``Qwen2AudioEncoder``, ``--part audio_tower``): Whisper's encoder over 30 s log-mel
    windows, then a stride-2 average pool and a layer norm; its output (one state per 640 samples, 40 ms) is what
    the projector feeds the language model. Kept to the frames that hold audio, counted as the model counts them
    (``_get_feat_extract_output_lengths`` of the real mel length). The tower returns no per-layer states."""

    def __init__(self, ref, config, model, device, dtype, feature_extractor, sample_rate):
        Encoder.__init__(self, ref, config, model, device, dtype)
        acfg = getattr(config, "audio_config", config)
        self.states, self.layers = "encoder", None
        self.dim = int(acfg.d_model)
        self.mel_hop = int(feature_extractor.hop_length)
        self.max_frames = int(acfg.max_source_positions) // 2  # the avg-pool halves the encoder's frames
        self.preprocessor = AudioPreprocessor(feature_extractor, sample_rate, feature_extractor.chunk_length,
                                              whisper=True)
        self.settings = {"part": "audio_tower", "layers": "tower output", "sample_rate": sample_rate,
                         "window_s": float(feature_extractor.chunk_length)}

    def collate(self, units, lengths):
        import torch

        mel = torch.from_numpy(np.ceil(np.asarray(lengths) / self.mel_hop).astype(np.int64))
        _, frames = self.model._get_feat_extract_output_lengths(mel)
        return {"input_features": torch.from_numpy(np.stack(units)), "frames": frames.clamp(max=self.max_frames)}

    def forward(self, batch):
        import torch

        states = self.model(batch["input_features"]).last_hidden_state.float()
        keep = torch.arange(states.shape[1], device=states.device)[None, :] < batch["frames"][:, None]
        return states, keep


class OmniAudioTowerEncoder(Encoder):
    """Qwen2.5-Omni's audio tower (``Qwen2_5OmniAudioEncoder``): Whisper-style convolutions and layers over 2 s chunks
    of the log-mel, a stride-2 average pool, a LayerNorm and a projection to the language model's width. It packs
    clips of any length into one sequence (no padding enters a clip's states); each 30 s window of a clip is one
    unit, its real mel frames only."""

    modality = "audio"
    default_batch = {"cpu": 4, "cuda": 32}

    def __init__(self, ref, config, model, device, dtype, feature_extractor, sample_rate):
        super().__init__(ref, config, model, device, dtype)
        self.tower = model if not hasattr(model, "audio_tower") else model.audio_tower
        self.dim = int(self.tower.config.output_dim)
        self.mel_hop = int(feature_extractor.hop_length)
        self.preprocessor = AudioPreprocessor(feature_extractor, sample_rate, feature_extractor.chunk_length,
                                              whisper=True)
        self.settings = {"part": "audio_tower", "layers": "tower output (projected)", "sample_rate": sample_rate,
                         "window_s": float(feature_extractor.chunk_length)}

    def collate(self, units, lengths):
        import torch

        mel = np.minimum(np.ceil(np.asarray(lengths) / self.mel_hop).astype(np.int64), units[0].shape[-1])
        feats = np.concatenate([np.asarray(u)[:, :m] for u, m in zip(units, mel)], axis=1)
        return {"input_features": torch.from_numpy(np.ascontiguousarray(feats)), "feature_lens": torch.from_numpy(mel)}

    def forward(self, batch):
        import torch

        lens = batch["feature_lens"]
        after_cnn, out_lens = self.tower._get_feat_extract_output_lengths(lens)
        flat = self.tower(batch["input_features"], feature_lens=lens, aftercnn_lens=after_cnn).last_hidden_state
        return _unpack(flat.float(), out_lens)


def _unpack(flat, lengths):
    """Rows of a packed ``(sum n_i, D)`` tensor -> ``(B, max n_i, D)`` zero-padded, and the mask of real rows."""
    import torch

    lengths = [int(n) for n in lengths]
    T = max(lengths) if lengths else 0
    out = flat.new_zeros((len(lengths), T, flat.shape[-1]))
    keep = torch.zeros((len(lengths), T), dtype=torch.bool, device=flat.device)
    for i, piece in enumerate(torch.split(flat, lengths)):
        out[i, :len(piece)] = piece
        keep[i, :len(piece)] = True
    return out, keep


# -------------------------------------------------------------------------------------------------
# Vision towers
# -------------------------------------------------------------------------------------------------

class VideoPreprocessor:
    """RGB frames ``(T, H, W, 3)`` -> the model's video processor. Qwen's (``per_frame=False``): one unit, the clip's
    flattened patches and its ``(t, h, w)`` grid (frames grouped in pairs, the temporal patch; an odd count has its
    last frame repeated). InternVL's (``per_frame=True``): ``(T, 3, S, S)`` pixels, one unit per frame."""

    kind = "visual"

    def __init__(self, video_processor, per_frame=False):
        self.vp, self.per_frame = video_processor, per_frame

    def __call__(self, frames):
        out = self.vp(videos=[np.asarray(frames)], return_tensors="np")
        px = np.asarray(out["pixel_values_videos"], dtype=np.float32)
        info = {"frames": len(frames)}
        if self.per_frame:
            px = px.reshape((-1,) + px.shape[-3:])
            return Prepared(px, [1] * len(px), info)
        thw = np.asarray(out["video_grid_thw"], dtype=np.int64).reshape(1, 3)
        return Prepared([{"pixel_values_videos": px, "video_grid_thw": thw}], [int(len(px))], info)


class QwenVisionTowerEncoder(Encoder):
    """Qwen2.5-VL's, Qwen2-VL's and Qwen2.5-Omni's vision tower (``visual``) with its patch merger, the projector into
    the language model: one state per merged patch, averaged per temporal patch (2 frames). Clips are packed into
    one sequence (attention never crosses clips), so a clip's states do not depend on its batch."""

    modality = "visual"
    default_batch = {"cpu": 2, "cuda": 16}

    def __init__(self, ref, config, model, device, dtype, processor):
        super().__init__(ref, config, model, device, dtype)
        self.visual = model.get_submodule(find_module(model, "visual"))
        vcfg = self.visual.config
        self.dim = int(getattr(vcfg, "out_hidden_size", None) or getattr(vcfg, "hidden_size"))
        self.merge = int(vcfg.spatial_merge_size)
        vp = processor.video_processor
        self.preprocessor = VideoPreprocessor(vp)
        self.settings = {"part": "vision_tower", "layers": "patch merger output", "temporal_patch":
                         int(vcfg.temporal_patch_size), "video_processor": type(vp).__name__}

    def collate(self, units, lengths):
        import torch

        return {"pixel_values": torch.from_numpy(np.concatenate([u["pixel_values_videos"] for u in units])),
                "grid_thw": torch.from_numpy(np.concatenate([u["video_grid_thw"] for u in units]))}

    def forward(self, batch):
        import torch

        thw = batch["grid_thw"]
        out = self.visual(batch["pixel_values"], grid_thw=thw)
        merged = (out.pooler_output if hasattr(out, "pooler_output") else out).float()
        per_t = (thw[:, 1] * thw[:, 2] // self.merge ** 2).tolist()
        frames = [int(t) for t in thw[:, 0].tolist()]
        rows = [piece.reshape(t, n, -1).mean(1) for piece, t, n in
                zip(torch.split(merged, [t * n for t, n in zip(frames, per_t)]), frames, per_t)]
        return _unpack(torch.cat(rows), frames)


class InternVLVisionTowerEncoder(Encoder):
    """InternVL's vision tower, pixel shuffle and projector (``get_image_features``: what the language model reads
    for an image): one state per frame, the mean over its image tokens. Each frame is one 448 px tile, as InternVL
    reads video frames."""

    modality = "visual"
    default_batch = {"cpu": 4, "cuda": 64}

    def __init__(self, ref, config, model, device, dtype, processor):
        super().__init__(ref, config, model, device, dtype)
        self.base = model.model if hasattr(model, "model") and hasattr(model.model, "get_image_features") else model
        self.dim = int(config.text_config.hidden_size)
        vp = processor.video_processor
        self.preprocessor = VideoPreprocessor(vp, per_frame=True)
        self.settings = {"part": "vision_tower", "layers": "projector output",
                         "vision_feature_layer": config.vision_feature_layer,
                         "video_processor": type(vp).__name__}

    def collate(self, units, lengths):
        import torch

        return {"pixel_values": torch.from_numpy(np.stack(units))}

    def forward(self, batch):
        import torch

        out = self.base.get_image_features(pixel_values=batch["pixel_values"],
                                           vision_feature_layer=self.config.vision_feature_layer,
                                           vision_feature_select_strategy=self.config.vision_feature_select_strategy)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        states = feats.float().mean(1)[:, None, :]
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)


# -------------------------------------------------------------------------------------------------
# The language model over the chat input
# -------------------------------------------------------------------------------------------------

def chat_messages(inputs, prompt, subtitle=None):
    """One user turn: the media items, then the subtitle (when asked) and the prompt."""
    content = [{"type": "video"} if m == "video" else {"type": "audio"} for m in ("video", "audio") if m in inputs]
    text = (SUBTITLE_FORMAT.format(subtitle=subtitle) if subtitle is not None else "") + prompt
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


class ChatPreprocessor:
    """A clip's inputs (``{"video": frames, "audio": wave, "subtitle": text}``) -> the processor's tensors for the
    chat input, one unit; ``span`` marks the user turn's content (from the template's frame around it: the text
    before a sentinel content and after it) or the last token."""

    kind = "chat"

    def __init__(self, processor, family, inputs, prompt, token_pool, sample_rate):
        self.processor, self.family, self.inputs = processor, family, tuple(inputs)
        self.prompt, self.token_pool, self.sample_rate = prompt, token_pool, int(sample_rate)
        self.tok = processor.tokenizer
        frame = self._render([{"role": "user", "content": [{"type": "text", "text": _SENTINEL}]}])
        if frame.count(_SENTINEL) != 1:
            raise DataError(f"the chat template of '{family}' does not place the user's text once; use "
                            "--token_pool last")
        self.prefix, self.suffix = frame.split(_SENTINEL)
        self.prefix_ids = list(self.tok(self.prefix, add_special_tokens=True)["input_ids"])
        self.suffix_ids = list(self.tok(self.suffix, add_special_tokens=False)["input_ids"])

    def _render(self, messages):
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def __call__(self, raw):
        from extraction.media import MediaError

        subtitle = raw.get("subtitle") if "subtitle" in self.inputs else None
        text = self._render(chat_messages(self.inputs, self.prompt, subtitle))
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            raise MediaError("template", "the chat template rendered this clip's turn outside its usual frame")
        kw = {}
        info = {}
        if "video" in self.inputs:
            kw["videos"] = [np.asarray(raw["video"])]
            info["frames"] = len(raw["video"])
        if "audio" in self.inputs:
            kw["audio"] = [np.asarray(raw["audio"], dtype=np.float32)]
            kw["sampling_rate"] = self.sample_rate
            info["duration_s"] = round(len(raw["audio"]) / self.sample_rate, 3)
        # (torch tensors: InternVL's processor flattens its video output as a tensor)
        out = {k: v.numpy() if hasattr(v, "numpy") else v
               for k, v in self.processor(text=[text], return_tensors="pt", **kw).items()}
        ids = np.asarray(out["input_ids"][0], dtype=np.int64)
        n_pre, n_suf = len(self.prefix_ids), len(self.suffix_ids)
        if list(ids[:n_pre]) != self.prefix_ids or (n_suf and list(ids[len(ids) - n_suf:]) != self.suffix_ids):
            raise MediaError("template", "the chat input's tokens do not begin and end as the template's frame does")
        unit = {k: np.asarray(v) for k, v in out.items() if k not in ("input_ids", "attention_mask")
                and isinstance(v, np.ndarray)}
        unit["input_ids"] = ids
        keep = np.zeros(len(ids), dtype=bool)
        if self.token_pool == "last":
            keep[-1] = True
        else:
            keep[n_pre:len(ids) - n_suf] = True
        unit["keep"] = keep
        info["tokens"] = int(keep.sum())
        return Prepared([unit], [len(ids)], info)


class LanguageModelEncoder(Encoder):
    """The language model's hidden states over the chat input (see the module docstring). Units are right-padded
    (a causal model's real tokens never see the padding; the padding probe checks it for each model)."""

    modality = None  # set from --modality
    default_batch = {"cpu": 2, "cuda": 8}

    def __init__(self, ref, config, model, device, dtype, processor, family, modality, inputs, prompt, layers,
                 token_pool, sample_rate):
        super().__init__(ref, config, model, device, dtype)
        self.modality = modality
        cfg = class_config(family, config)
        self.dim = text_width(family, config)
        n_states = int(cfg.text_config.num_hidden_layers) + 1
        self.layers = parse_layers(layers, n_states)
        self.pad_id = self._pad_id(processor.tokenizer)
        self.preprocessor = ChatPreprocessor(processor, family, inputs, prompt, token_pool, sample_rate)
        self.settings = {"part": "language_model", "inputs": list(inputs), "prompt": prompt,
                         "subtitle_format": SUBTITLE_FORMAT if "subtitle" in inputs else None,
                         "layers": layers, "layer_indices": self.layers, "token_pool": token_pool,
                         "chat_template_sha": _sha(str(getattr(processor, "chat_template", None))),
                         "sample_rate": sample_rate if "audio" in inputs else None,
                         "processor": type(processor).__name__}
        ip = getattr(processor, "image_processor", None)
        if ip is not None and "video" in inputs:
            self.settings.update(processor_identity(ip))

    @staticmethod
    def _pad_id(tok):
        for t in (tok.pad_token_id, tok.eos_token_id, 0):
            if t is not None:
                return int(t)

    def collate(self, units, lengths):
        import torch

        L = max(lengths)
        B = len(units)
        ids = np.full((B, L), self.pad_id, dtype=np.int64)
        mask = np.zeros((B, L), dtype=np.int64)
        keep = np.zeros((B, L), dtype=bool)
        for i, u in enumerate(units):
            n = len(u["input_ids"])
            ids[i, :n], mask[i, :n], keep[i, :n] = u["input_ids"], 1, u["keep"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                 "keep": torch.from_numpy(keep)}
        for k in units[0]:
            if k in ("input_ids", "keep"):
                continue
            arrays = [np.asarray(u[k]) for u in units]
            width = max(a.shape[-1] for a in arrays) if arrays[0].ndim else None
            if width is not None and any(a.shape[-1] != width for a in arrays):  # e.g. audio features per clip
                arrays = [np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])]) for a in arrays]
            batch[k] = torch.from_numpy(np.concatenate(arrays) if arrays[0].ndim else np.stack(arrays))
        return batch

    def to_device(self, batch):
        """As every encoder's (floating tensors in the model's dtype; the processor's masks are integers and stay so),
        with the kept-token mask beside."""
        out = super().to_device({k: v for k, v in batch.items() if k != "keep"})
        out["keep"] = batch["keep"].to(self.device)
        return out

    def forward(self, batch):
        keep = batch["keep"]
        inputs = {k: v for k, v in batch.items() if k != "keep"}
        out = self.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1, return_dict=True)
        states = sum_layers(out.hidden_states, self.layers)
        return states, keep.to(states.device)


def _sha(text):
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -------------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------------

def parse_inputs(spec, family, modality):
    """``--inputs`` (comma list of video, audio, subtitle) for the language_model part; default: the modality's
    media (visual: the frames; Qwen2.5-Omni's visual: frames and audio; audio: the audio; text: the subtitle)."""
    media = FAMILIES[family]["media"]
    if spec in (None, "", "default"):
        if modality == "text":
            return ("subtitle",)
        if modality == "visual":
            return tuple(m for m in ("video", "audio") if m in media)
        return ("audio",)
    chosen = tuple(s.strip() for s in str(spec).split(",") if s.strip())
    bad = [s for s in chosen if s not in INPUTS]
    if bad or not chosen:
        raise DataError(f"--inputs '{spec}': a comma list of {', '.join(INPUTS)}")
    unsupported = [s for s in chosen if s != "subtitle" and s not in media]
    if unsupported:
        raise DataError(f"--inputs {','.join(unsupported)}: {family} takes {', '.join(media)} and subtitle")
    need = {"visual": "video", "audio": "audio", "text": "subtitle"}[modality]
    if need not in chosen:
        raise DataError(f"--inputs '{spec}' leaves out the {need}, the input of --modality {modality}")
    return tuple(s for s in INPUTS if s in chosen)


def load_mllm(ref, config, family, part, modality, device, dtype, layers="default", token_pool="default",
              sample_rate=None, prompt=None, inputs=None, device_map=None, load_in=None, logger=None):
    """An Encoder for ``part`` of a multimodal LLM (see the module docstring)."""
    parts = FAMILIES[family]["parts"]
    part = part or parts[0]
    if part not in parts:
        raise DataError(f"--part '{part}': '{ref.spec}' ({family}) has {', '.join(parts)}")
    enc = _load_part(ref, config, family, part, modality, device, dtype, layers, token_pool, sample_rate, prompt,
                     inputs, device_map, load_in, logger)
    enc.default_part = parts[0]
    return enc


def _load_part(ref, config, family, part, modality, device, dtype, layers, token_pool, sample_rate, prompt, inputs,
               device_map, load_in, logger):
    import transformers

    want = PART_MODALITY.get(part)
    if want and modality != want:
        raise DataError(f"--part {part} writes {want} features: use --modality {want}")
    if part != "language_model":
        for flag, value, default in (("--prompt", prompt, None), ("--inputs", inputs, None),
                                     ("--token_pool", token_pool, "default"), ("--load_in", load_in, None),
                                     ("--device_map", device_map, None)):
            if value not in (default, None):
                raise DataError(f"{flag} is for --part language_model; the {part} takes none")
        if layers != "default":
            raise DataError(f"--layers: the {part} gives its output only; leave --layers unset")
    cfg = class_config(family, config)
    if part == "audio_tower":
        fe = ref.from_pretrained(transformers.AutoFeatureExtractor)
        sr = _rate(sample_rate, fe)
        model = load_parts(ref, config, family, ("audio_tower",), dtype, logger)
        tower = model.get_submodule(find_module(model, "audio_tower")).to(device)
        cls = Qwen2AudioTowerEncoder if family == "qwen2-audio" else OmniAudioTowerEncoder
        return cls(ref, cfg, tower, device, dtype, fe, sr)
    from extraction.video_processors import load_processor

    processor, video_backend = load_processor(ref)
    if video_backend == "pil" and logger:
        logger.info(f"{type(processor).__name__}: transformers' video processor needs torchvision, which is not "
                    "installed; frames go through the project's Pillow port of it (extraction/video_processors.py)")
    enc = _load_with_processor(ref, config, cfg, family, part, modality, device, dtype, layers, token_pool,
                               sample_rate, prompt, inputs, device_map, load_in, logger, processor)
    if video_backend and (part == "vision_tower" or "video" in enc.settings.get("inputs", ())):
        enc.settings["video_backend"] = video_backend
    return enc


def _load_with_processor(ref, config, cfg, family, part, modality, device, dtype, layers, token_pool, sample_rate,
                         prompt, inputs, device_map, load_in, logger, processor):
    if part == "vision_tower":
        if family == "internvl":
            model = load_parts(ref, config, family, ("vision_tower", "multi_modal_projector"), dtype, logger)
            for leaf in ("vision_tower", "multi_modal_projector"):
                model.get_submodule(find_module(model, leaf)).to(device)
            return InternVLVisionTowerEncoder(ref, cfg, model, device, dtype, processor)
        model = load_parts(ref, config, family, ("visual",), dtype, logger)
        model.get_submodule(find_module(model, "visual")).to(device)
        return QwenVisionTowerEncoder(ref, cfg, model, device, dtype, processor)
    pool = "mean" if token_pool == "default" else token_pool
    if pool not in ("mean", "last"):
        raise DataError(f"--token_pool '{token_pool}': the language model's states are pooled by mean (over the "
                        "turn's content) or last (the last token)")
    chosen = parse_inputs(inputs, family, modality)
    fe = getattr(processor, "feature_extractor", None)
    sr = _rate(sample_rate, fe) if fe is not None else int(sample_rate or 16000)
    model = load_whole(ref, config, family, dtype, device, device_map, load_in)
    dev = input_device(model)
    enc = LanguageModelEncoder(ref, config, model, dev, dtype, processor, family, modality, chosen,
                               prompt if prompt is not None else DEFAULT_PROMPT,
                               "last4" if layers == "default" else layers, pool, sr)
    if load_in:
        enc.settings["load_in"] = load_in
    return enc


def _rate(sample_rate, fe):
    sr = int(sample_rate or fe.sampling_rate)
    if sr != int(fe.sampling_rate):
        raise DataError(f"--sample_rate {sr} differs from the model's {fe.sampling_rate} Hz; leave it unset")
    return sr


def probe_raw(encoder):
    """Two synthetic clips of different lengths for the padding probe of a multimodal part, or None."""
    rng = np.random.default_rng(0)
    pre = encoder.preprocessor
    sr = getattr(pre, "sample_rate", 16000)

    def frames(n, size=64):
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def wave(s):
        return rng.normal(0, 0.1, int(s * sr)).astype(np.float32)

    if isinstance(pre, ChatPreprocessor):
        a = {"video": frames(2), "audio": wave(1.3), "subtitle": "a short probe"}
        b = {"video": frames(4), "audio": wave(2.1),
             "subtitle": "a longer probe sentence with many more words in it than the first one has"}
        return pre(a), pre(b)
    if isinstance(pre, VideoPreprocessor) and not pre.per_frame:
        return pre(frames(2)), pre(frames(4))
    if isinstance(encoder, OmniAudioTowerEncoder):
        return pre(wave(1.3)), pre(wave(2.1))
    return None
