"""Hugging Face encoders: loading, what a clip becomes, batched forward passes, layer and token pooling.

A clip becomes one or more *units*, the pieces a model sees at once: audio windows (10 s by default; 30 s
for Whisper), single frames for image models, 16-frame segments for VideoMAE, one token sequence for text.
Units of many clips are batched together (sorted by length, so padding stays small); each unit gives a
``(t, D)`` block of states and a mask of the positions that are real (frames inside the audio, tokens that
are not padding or special tokens). A clip's ``FRM`` feature is its units' real states, concatenated in
order; its ``UTT`` feature is their mean. Padding never enters either.

Work is split in two so that decoding and preprocessing can run in worker processes:

* :class:`Preprocessor` (picklable, no model): raw input (waveform, RGB frames, text) -> units
* :class:`Encoder` (the model, on its device): a list of units -> collated batch -> ``(states, keep)``

Defaults follow MERTools, so that features match the published ones (image processors: the Pillow one, as
in MERTools' time, whether or not torchvision is installed):

============== ===================================================================================
family          default
============== ===================================================================================
audio (HuBERT,  sum of the last four hidden layers, per 20 ms frame; 10 s windows; the feature
wav2vec2, ...)  extractor's per-clip normalisation
Whisper         encoder, last layer, over the frames that hold audio (MERTools: decoder states at
                two start tokens, ``whisper_states="decoder"``)
multimodal      ``--part audio_tower|vision_tower|language_model`` of Qwen2-Audio, Qwen2.5-Omni, InternVL,
LLMs            Qwen2.5-VL and Qwen2-VL: :mod:`extraction.mllm`
CLIP            the projected image embedding of every frame
other images    last layer, summed over tokens, every frame (DINOv2: 64 frames sampled uniformly, the last one
                repeated for a shorter clip)
VideoMAE        the model's output (``last_hidden_state``: the last layer after its final LayerNorm, where the
                config has one), mean over patches, 16 frames sampled uniformly (last one repeated)
text            sum of the last four hidden layers, mean over tokens (special tokens left out)
sentence-trf.   the model's own sentence embedding (with ``--layers``: its transformer's hidden states, as
                MERTools took them, pooled like any text model)
============== ===================================================================================
"""

import glob
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from common.errors import DataError

AUDIO_SSL_TYPES = {"hubert", "wav2vec2", "wav2vec2-conformer", "wavlm", "data2vec-audio", "unispeech",
                   "unispeech-sat", "sew", "sew-d"}
IMAGE_TYPES = {"clip", "clip_vision_model", "siglip", "siglip_vision_model", "dinov2", "dinov2_with_registers",
               "vit", "deit", "beit", "data2vec-vision", "vit_mae", "convnext", "convnextv2", "swin"}
VIDEO_TYPES = {"videomae"}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.gguf")
TOKEN_POOLS = ("sum", "mean", "cls")
MIN_AUDIO_S = 0.025  # one frame of the convolutional front end (400 samples at 16 kHz)


@dataclass
class Prepared:
    """A clip turned into units: a list of arrays, or one array whose rows are the units (frames). ``lengths``
    order and pad the units; ``info`` goes to the report."""
    units: list
    lengths: list
    info: dict


class ModelRef:
    """Where a model comes from: a local folder, a pip package that ships one, or a hub id (cache or network)."""

    def __init__(self, spec, revision=None, trust_remote_code=False):
        self.spec = str(spec)
        self.trust_remote_code = bool(trust_remote_code)
        self.revision = revision
        if self.spec.startswith(("package:", "pip:")):
            from extraction.text_encoders import resolve_package_model
            import importlib.metadata as md

            dist = self.spec.split(":", 1)[1]
            self.path = resolve_package_model(dist)
            self.source, self.label = "package", self.spec
            self.revision = f"{dist}=={md.version(dist)}"
        elif os.path.isdir(self.spec):
            self.path, self.source = self.spec, "folder"
            self.label = os.path.basename(os.path.normpath(self.spec))
        elif os.path.exists(self.spec) or self.spec.startswith((".", "/", "~")) or self.spec.count("/") > 1:
            raise DataError(f"--model '{self.spec}' is not a model folder (no such directory). Give a folder that "
                            "holds config.json and the weights, a hub id such as TencentGameMate/chinese-hubert-large, "
                            "or package:<pip package>")
        else:
            self.path, self.source, self.label = self.spec, "hub", self.spec
            self._resolve_hub()
        self.short_name = os.path.basename(os.path.normpath(self.label.split(":", 1)[-1]))

    def _resolve_hub(self):
        """Find the hub id's commit in the local cache (or fetch config.json); a clear error when neither works."""
        from transformers.utils import cached_file

        try:
            cfg = cached_file(self.spec, "config.json", revision=self.revision)
        except (OSError, ValueError) as e:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            why = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if offline else \
                "the hub could not be reached and it is not in the local Hugging Face cache"
            raise DataError(
                f"cannot load model '{self.spec}': {why} ({str(e).splitlines()[0]}). Download it where there is "
                f"network (huggingface-cli download {self.spec} --local-dir models/{self.spec.split('/')[-1]}) and "
                f"pass that folder: --model models/{self.spec.split('/')[-1]}") from None
        parts = os.path.normpath(cfg).split(os.sep)
        if "snapshots" in parts:  # <cache>/models--org--name/snapshots/<commit>/config.json
            self.revision = parts[parts.index("snapshots") + 1]
        self.folder = os.path.dirname(cfg)

    def weights_id(self):
        """The hub commit, the package version, or a SHA-256 of a local folder's weight files and config."""
        if self.revision:
            return self.revision
        if getattr(self, "_weights_id", None):
            return self._weights_id
        h = hashlib.sha256()
        files = sorted({f for pat in WEIGHT_PATTERNS + ("config.json",) for f in glob.glob(os.path.join(self.path, pat))})
        if not any(not f.endswith("config.json") for f in files):
            raise DataError(f"model folder '{self.path}' holds no weight file ({', '.join(WEIGHT_PATTERNS)})")
        for f in files:
            h.update(os.path.basename(f).encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        self._weights_id = "sha256:" + h.hexdigest()[:16]
        return self._weights_id

    def load_config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path, revision=self.revision if self.source == "hub" else None,
                                              trust_remote_code=self.trust_remote_code)
        except ValueError as e:
            if "trust_remote_code" in str(e):
                raise DataError(f"model '{self.spec}' ships its own modelling code; pass --trust_remote_code if you "
                                "trust it (it runs that code)") from None
            raise DataError(f"cannot read the config of model '{self.spec}': {e}") from None
        except OSError as e:
            raise DataError(f"cannot read the config of model '{self.spec}': {str(e).splitlines()[0]}") from None

    def from_pretrained(self, cls, **kw):
        try:
            return cls.from_pretrained(self.path, revision=self.revision if self.source == "hub" else None,
                                       trust_remote_code=self.trust_remote_code, **kw)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot load {cls.__name__} from '{self.spec}': {str(e).splitlines()[0]}") from None


def parse_layers(spec, n_states):
    """Indices into a model's ``hidden_states`` (``n_states`` = layers + 1; 0 is the embedding output).

    ``last4``: the last four (MERTools); an integer (``-1``, ``12``): that one; ``a:b``: a Python slice.
    The chosen states are summed.
    """
    spec = str(spec).strip()
    if spec == "last4":
        idx = list(range(max(0, n_states - 4), n_states))
    elif ":" in spec:
        try:
            a, b = (int(x) if x.strip() else None for x in spec.split(":", 1))
        except ValueError:
            raise DataError(f"--layers '{spec}': use last4, one index (-1, 12) or a range a:b") from None
        idx = list(range(n_states))[slice(a, b)]
    else:
        try:
            i = int(spec)
        except ValueError:
            raise DataError(f"--layers '{spec}': use last4, one index (-1, 12) or a range a:b") from None
        if not -n_states <= i < n_states:
            raise DataError(f"--layers {i} is outside the model's {n_states} hidden states (0 = embeddings, "
                            f"{n_states - 1} = last layer; negative counts from the end)")
        idx = [i % n_states]
    if not idx:
        raise DataError(f"--layers '{spec}' selects no hidden state of the model's {n_states}")
    return idx


def sum_layers(hidden_states, idx):
    """Sum of the chosen hidden states, in float32 (half-precision sums of four layers can overflow)."""
    out = hidden_states[idx[0]].float()
    for i in idx[1:]:
        out = out + hidden_states[i].float()
    return out


PAD_NOISE_MARGIN = 4  # the padding probe's allowance: this many times the dtype's measured noise ...
PAD_FLOOR_EPS = 32    # ... or this many epsilons of the dtype (bfloat16: 0.25, float16: 0.031) ...
PAD_FLOOR_MIN = 1e-4  # ... and never less than this (float32), whichever is larger


def state_difference(a, b):
    """How far ``b`` is from ``a``, two ``(T, D)`` state sequences of one unit, dimension by dimension: the largest
    ``|b - a|`` over positions and dimensions, each dimension divided by its own RMS over ``a``'s positions (at least
    the median dimension's, so that a nearly silent dimension does not blow up). A few massive dimensions set only
    their own scale, so an error in the ordinary ones cannot hide behind them. ``inf`` when the shapes differ."""
    import torch

    if a.shape != b.shape:
        return float("inf")
    a, b = a.float(), b.float()
    scale = a.pow(2).mean(0).sqrt()
    scale = torch.maximum(scale, scale.median()).clamp_min(torch.finfo(torch.float32).tiny)
    return float(((b - a).abs() / scale).max()) if a.numel() else 0.0


def _pad_stack(arrays, length, value=0):
    """``(B, length, ...)`` array of ``arrays`` (each ``(n_i, ...)``, NumPy or CPU tensors), padded with ``value``."""
    arrays = [np.asarray(a) for a in arrays]
    first = arrays[0]
    out = np.full((len(arrays), length) + first.shape[1:], value, dtype=first.dtype)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out


# -------------------------------------------------------------------------------------------------
# Preprocessors: raw input -> units (run in worker processes; no model inside)
# -------------------------------------------------------------------------------------------------

class AudioPreprocessor:
    """Waveform -> the feature extractor's per-clip normalisation -> windows of ``window_s`` seconds.

    A last window shorter than one second joins the window before it (so no unit is too short to hold
    frames; not for Whisper, whose windows are padded to 30 s); a clip shorter than 25 ms is refused.
    """

    kind = "audio"

    def __init__(self, feature_extractor, sample_rate, window_s, whisper=False):
        self.fe = feature_extractor
        self.sample_rate = int(sample_rate)
        self.window = int(round(window_s * sample_rate))
        self.window_s = window_s
        self.whisper = whisper

    def __call__(self, wave):
        from extraction.media import MediaError

        n = len(wave)
        if n < MIN_AUDIO_S * self.sample_rate:
            raise MediaError("empty_audio", f"the audio holds {n} samples ({n / self.sample_rate:.3f} s), shorter than "
                                            f"one {MIN_AUDIO_S * 1000:.0f} ms frame")
        if not self.whisper:  # MERTools normalises the whole clip, then cuts it into windows
            wave = self.fe(wave, sampling_rate=self.sample_rate, return_tensors="np").input_values[0]
            wave = np.asarray(wave, dtype=np.float32)
        starts = list(range(0, n, self.window))
        if len(starts) > 1 and n - starts[-1] < self.sample_rate and not self.whisper:
            starts.pop()  # (Whisper pads every window to 30 s anyway, and would cut a longer one)
        bounds = [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]
        units, lengths = [], []
        for s, e in bounds:
            piece = wave[s:e]
            if self.whisper:  # (80, 3000) log-mel of a 30 s window; the real length travels in `lengths`
                piece = np.asarray(self.fe(piece, sampling_rate=self.sample_rate, return_tensors="np")
                                   .input_features[0], dtype=np.float32)
            units.append(piece)
            lengths.append(e - s)
        return Prepared(units, lengths, {"duration_s": round(n / self.sample_rate, 3), "windows": len(units)})


def pillow_processor_kw():
    """``AutoImageProcessor.from_pretrained`` arguments that ask for the Pillow image processor, the one of
    MERTools' time: ``backend="pil"`` (transformers 5) or ``use_fast=False`` (4.x). Left to itself, transformers
    takes the torchvision ("fast") processor wherever torchvision is installed, whose resize differs."""
    import transformers

    return {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}


def processor_identity(processor):
    """``{"image_processor": its class name, "image_backend": "pil" | "torchvision" | "other"}``, for the identity
    of the features: a folder made with one processor is not resumed with another."""
    try:  # transformers 5: every image processor derives from one backend class
        from transformers.image_processing_backends import PilBackend, TorchvisionBackend

        backend = "pil" if isinstance(processor, PilBackend) else \
            "torchvision" if isinstance(processor, TorchvisionBackend) else "other"
    except ImportError:  # 4.x: the fast processors derive from BaseImageProcessorFast
        try:
            from transformers.image_processing_utils_fast import BaseImageProcessorFast
        except ImportError:
            BaseImageProcessorFast = ()
        backend = "torchvision" if isinstance(processor, BaseImageProcessorFast) else "pil"
    return {"image_processor": type(processor).__name__, "image_backend": backend}


class ImagePreprocessor:
    """RGB frames ``(T, H, W, 3)`` -> the image processor's pixels, one unit per frame (or one ``num_frames``
    segment for video models).

    Where the processor has the usual rescale and normalise steps (CLIP, ViT, DINOv2, VideoMAE ... all do),
    the worker runs only its resize and crop (Pillow, exactly as the processor does) and sends uint8 pixels,
    a quarter of the bytes; :meth:`to_pixels` rescales and normalises them on the model's device. The result
    equals the processor's own output to float rounding (about 5e-7), and the costliest CPU step leaves the
    workers."""

    kind = "visual"

    def __init__(self, processor, video_frames=None):
        self.processor = processor
        self.video_frames = video_frames
        self.split = all(hasattr(processor, a) for a in ("do_rescale", "rescale_factor", "do_normalize", "image_mean",
                                                         "image_std"))
        if self.split:
            self.rescale = float(processor.rescale_factor) if processor.do_rescale else None
            norm = processor.do_normalize
            self.mean = np.asarray(processor.image_mean, np.float32).reshape(-1, 1, 1) if norm else None
            self.std = np.asarray(processor.image_std, np.float32).reshape(-1, 1, 1) if norm else None
        self._device_stats = {}

    def __call__(self, frames):
        frames = list(frames)
        kw = {"do_rescale": False, "do_normalize": False} if self.split else {}
        if self.video_frames:  # (1, F, 3, H, W): one unit
            px = self.processor(frames, return_tensors="np", **kw)["pixel_values"]
        else:  # (T, 3, H, W): a unit per frame
            px = self.processor(images=frames, return_tensors="np", **kw)["pixel_values"]
        px = np.asarray(px)
        if self.split and px.dtype != np.uint8:  # a processor that works in floats: rescale and normalise here
            px = self._normalize_np(px.astype(np.float32))
        return Prepared(px if px.dtype == np.uint8 else px.astype(np.float32), [1] * len(px), {"frames": len(frames)})

    def _normalize_np(self, x):
        if self.rescale is not None:
            x = x * np.float32(self.rescale)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def to_pixels(self, x, dtype):
        """Units from the workers -> the model's input on its device: uint8 pixels are rescaled and normalised
        in float32 as one multiply-add, ``x * (rescale / std) - mean / std``, then cast to the model's dtype."""
        import torch

        if x.dtype == torch.uint8:
            key = str(x.device)
            if key not in self._device_stats:
                scale = np.float32(self.rescale if self.rescale is not None else 1.0)
                mean = self.mean if self.mean is not None else np.zeros((1, 1, 1), np.float32)
                std = self.std if self.std is not None else np.ones((1, 1, 1), np.float32)
                self._device_stats[key] = (torch.from_numpy((scale / std).astype(np.float32)).to(x.device),
                                           torch.from_numpy((-mean / std).astype(np.float32)).to(x.device))
            mul, add = self._device_stats[key]
            x = torch.addcmul(add, x.float(), mul)
        return x.to(dtype) if dtype is not None else x


class TextPreprocessor:
    """Text -> token ids and a special-token mask, truncated at ``max_tokens`` (the truncation is counted)."""

    kind = "text"

    def __init__(self, tokenizer, max_tokens):
        self.tok = tokenizer
        self.max_tokens = int(max_tokens)

    def __call__(self, text):
        enc = self.tok(text, truncation=True, max_length=self.max_tokens, return_special_tokens_mask=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        special = np.asarray(enc["special_tokens_mask"], dtype=np.int64)
        full = len(self.tok(text, truncation=False, add_special_tokens=True)["input_ids"])
        if not (special == 0).any():
            from extraction.media import MediaError

            raise MediaError("empty_text", "the subtitle gives no token but special ones")
        return Prepared([np.stack([ids, special])], [len(ids)],
                        {"tokens": int((special == 0).sum()), "truncated_tokens": max(0, full - len(ids))})


class SentencePreprocessor:
    """Text for a sentence-transformers model (it tokenises itself); truncation beyond its limit is counted."""

    kind = "text"

    def __init__(self, tokenizer, max_tokens):
        self.tok = tokenizer
        self.max_tokens = int(max_tokens)

    def __call__(self, text):
        n = len(self.tok(text, truncation=False)["input_ids"]) if self.tok is not None else 0
        return Prepared([str(text)], [max(1, n)], {"tokens": n, "truncated_tokens": max(0, n - self.max_tokens)})


# -------------------------------------------------------------------------------------------------
# Encoders: the model side
# -------------------------------------------------------------------------------------------------

class Encoder:
    """Base of the model side. Subclasses set ``dim``, ``pad_safe``, ``preprocessor`` and implement
    :meth:`collate` and :meth:`forward`; ``settings`` holds what identifies their features."""

    modality = None
    default_batch = {"cpu": 16, "cuda": 64}

    def __init__(self, ref, config, model, device, dtype):
        self.ref, self.config, self.model, self.device, self.dtype = ref, config, model, device, dtype
        self.settings = {}
        self.pad_safe = True
        self.padding_probe = None

    def collate(self, units, lengths):
        """Units -> a dict of CPU tensors (floating ones are cast to the model's dtype on transfer)."""
        raise NotImplementedError

    def forward(self, batch):
        """Collated batch on the device -> ``(states (B, T, D) float32, keep (B, T) bool)``."""
        raise NotImplementedError

    def to_device(self, batch):
        """A collated batch on the model's device: floating tensors in the model's dtype; on CUDA through pinned
        memory with non-blocking copies. A tensor travels in its own dtype and is cast on the device: a cast in
        the same ``.to`` would convert it on the host, into pageable memory, and copy that synchronously."""
        import torch

        cuda = self.device.type == "cuda"
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                if cuda:
                    v = v.pin_memory()
                v = v.to(self.device, non_blocking=cuda)
                if v.is_floating_point() and self.dtype is not None and v.dtype != self.dtype:
                    v = v.to(self.dtype)
            out[k] = v
        return out

    def run(self, units, lengths):
        """Collate, move, forward: the convenience path used by probes and tests."""
        import torch

        batch = self.to_device(self.collate(units, lengths))
        with torch.inference_mode():
            return self.forward(batch)

    def _probe_states(self, units, lengths, row=0):
        states, keep = self.run(units, lengths)
        return states[row][keep[row]]

    def check_padding(self, probe_units, probe_lengths):
        """Whether units of different lengths may share a batch. Sets ``pad_safe`` and ``padding_probe``.

        The first probe unit runs alone, and padded beside the longer second; their states are compared by
        :func:`state_difference`. The dtype's own noise is measured the same way, on the unit alone run again
        and beside a copy of itself (another batch shape, no padding). Padding is harmless when the padded run
        differs by at most ``PAD_NOISE_MARGIN`` times that noise, or ``PAD_FLOOR_EPS`` epsilons of the dtype
        (at least ``PAD_FLOOR_MIN``) where the noise measures smaller (a CPU repeats itself exactly, yet rounds a
        longer sequence differently)."""
        import torch

        alone = self._probe_states(probe_units[:1], probe_lengths[:1])
        noise = max(state_difference(alone, self._probe_states(probe_units[:1], probe_lengths[:1])),
                    *(state_difference(alone, self._probe_states([probe_units[0]] * 2, [probe_lengths[0]] * 2, row))
                      for row in (0, 1)))
        diff = state_difference(alone, self._probe_states(probe_units, probe_lengths))
        dtype = self.dtype if self.dtype is not None else torch.float32
        floor = max(PAD_FLOOR_EPS * float(torch.finfo(dtype).eps), PAD_FLOOR_MIN)
        tol = max(floor, PAD_NOISE_MARGIN * noise) if math.isfinite(noise) else floor
        self.pad_safe = diff <= tol  # (NaN compares False: unsafe)
        self.padding_probe = {"difference": diff if math.isfinite(diff) else "shape differs", "noise": noise,
                              "tolerance": tol, "dtype": str(dtype).replace("torch.", ""),
                              "batching": "padded" if self.pad_safe else "equal-length"}
        return self.pad_safe


class AudioSSLEncoder(Encoder):
    """HuBERT, wav2vec2, WavLM, data2vec-audio and kin: hidden states per 20 ms frame."""

    modality = "audio"
    default_batch = {"cpu": 1, "cuda": 32}  # on a CPU the convolutional front end runs fastest one window at a time

    def __init__(self, ref, config, model, device, dtype, feature_extractor, layers, window_s, sample_rate):
        super().__init__(ref, config, model, device, dtype)
        self.layers = parse_layers(layers, config.num_hidden_layers + 1)
        self.dim = int(config.hidden_size)
        self.accepts_mask = bool(getattr(feature_extractor, "return_attention_mask", True))
        self.preprocessor = AudioPreprocessor(feature_extractor, sample_rate, window_s)
        self.settings = {"layers": layers, "layer_indices": self.layers, "sample_rate": sample_rate,
                         "window_s": window_s, "normalize": bool(getattr(feature_extractor, "do_normalize", False))}

    def frames_for(self, n_samples):
        """Frames the convolutional front end gives for ``n_samples`` (no padding in its convolutions)."""
        n = np.asarray(n_samples, dtype=np.int64)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            n = np.maximum((n - k) // s + 1, 0)
        return n

    def collate(self, units, lengths):
        import torch

        L = max(lengths)
        out = {"input_values": torch.from_numpy(_pad_stack(units, L, 0.0)),
               "frames": torch.from_numpy(self.frames_for(lengths))}
        if min(lengths) != L and self.accepts_mask:
            mask = np.zeros((len(units), L), dtype=np.int64)
            for i, n in enumerate(lengths):
                mask[i, :n] = 1
            out["attention_mask"] = torch.from_numpy(mask)
        return out

    def forward(self, batch):
        import torch

        hs = self.model(input_values=batch["input_values"], attention_mask=batch.get("attention_mask"),
                        output_hidden_states=True).hidden_states
        states = sum_layers(hs, self.layers)
        keep = torch.arange(states.shape[1], device=states.device)[None, :] < batch["frames"][:, None]
        return states, keep


class WhisperEncoder(Encoder):
    """Whisper's encoder over 30 s log-mel windows, kept to the frames that hold audio (one per 320 samples);
    or, as MERTools did, the decoder's states at two start tokens (``whisper_states="decoder"``)."""

    modality = "audio"
    default_batch = {"cpu": 4, "cuda": 32}

    def __init__(self, ref, config, model, device, dtype, feature_extractor, layers, states, sample_rate):
        super().__init__(ref, config, model, device, dtype)
        self.states = states
        n_states = (config.decoder_layers if states == "decoder" else config.encoder_layers) + 1
        self.layers = parse_layers(layers, n_states)
        self.dim = int(config.d_model)
        self.hop = int(feature_extractor.hop_length) * 2  # mel hop, then the encoder's stride-2 convolution
        self.max_frames = int(config.max_source_positions)
        self.preprocessor = AudioPreprocessor(feature_extractor, sample_rate, feature_extractor.chunk_length,
                                              whisper=True)
        self.settings = {"layers": layers, "layer_indices": self.layers, "whisper_states": states,
                         "sample_rate": sample_rate, "window_s": float(feature_extractor.chunk_length)}

    def collate(self, units, lengths):
        import torch

        frames = np.minimum(np.ceil(np.asarray(lengths) / self.hop).astype(np.int64), self.max_frames)
        return {"input_features": torch.from_numpy(np.stack(units)), "frames": torch.from_numpy(frames)}

    def forward(self, batch):
        import torch

        x = batch["input_features"]
        if self.states == "decoder":
            start = torch.full((x.shape[0], 2), int(self.config.decoder_start_token_id), device=x.device)
            out = self.model(input_features=x, decoder_input_ids=start, output_hidden_states=True)
            states = sum_layers(out.decoder_hidden_states, self.layers)
            return states, torch.ones(states.shape[:2], dtype=torch.bool, device=x.device)
        hs = self.model.get_encoder()(x, output_hidden_states=True).hidden_states
        states = sum_layers(hs, self.layers)
        keep = torch.arange(states.shape[1], device=x.device)[None, :] < batch["frames"][:, None]
        return states, keep


class ImageEncoder(Encoder):
    """One vector per frame: CLIP's projected image embedding, or hidden states pooled over tokens."""

    modality = "visual"
    default_batch = {"cpu": 32, "cuda": 256}

    def __init__(self, ref, config, model, device, dtype, processor, layers, token_pool):
        super().__init__(ref, config, model, device, dtype)
        self.clip = hasattr(model, "get_image_features")
        vcfg = getattr(config, "vision_config", config)
        self.token_pool = token_pool
        if self.clip and layers == "proj":
            self.layers = None
            self.dim = int(config.projection_dim)
        else:
            self.layers = parse_layers(layers, vcfg.num_hidden_layers + 1)
            self.dim = int(vcfg.hidden_size)
        self.preprocessor = ImagePreprocessor(processor)
        self.settings = {"layers": layers, "layer_indices": self.layers,
                         "token_pool": None if self.layers is None else token_pool, **processor_identity(processor)}

    def collate(self, units, lengths):
        import torch

        return {"pixel_values": torch.from_numpy(np.stack(units))}

    def forward(self, batch):
        import torch

        x = self.preprocessor.to_pixels(batch["pixel_values"], self.dtype)
        if self.layers is None:
            out = self.model.get_image_features(pixel_values=x)
            states = (out if torch.is_tensor(out) else out.pooler_output).float()[:, None, :]
        else:
            tower = self.model.vision_model if self.clip else self.model
            hs = tower(pixel_values=x, output_hidden_states=True).hidden_states
            tokens = sum_layers(hs, self.layers)
            if tokens.dim() == 4:  # convolutional models: (B, C, H, W) maps
                tokens = tokens.flatten(2).transpose(1, 2)
            pooled = {"sum": lambda t: t.sum(1), "mean": lambda t: t.mean(1), "cls": lambda t: t[:, 0]}[self.token_pool]
            states = pooled(tokens)[:, None, :]
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=x.device)


class VideoMAEEncoder(Encoder):
    """VideoMAE on ``num_frames``-frame segments: states per tubelet, mean over its patches.

    The default (``layers="last_hidden_state"``) is the model's output, as MERTools takes it: the last layer
    after the final LayerNorm that models without mean pooling have (``use_mean_pooling`` false, as in
    videomae-base and -large), the last layer itself otherwise. ``--layers`` sums hidden states instead."""

    modality = "visual"
    default_batch = {"cpu": 4, "cuda": 32}

    def __init__(self, ref, config, model, device, dtype, processor, layers):
        super().__init__(ref, config, model, device, dtype)
        self.layers = None if layers == "last_hidden_state" else parse_layers(layers, config.num_hidden_layers + 1)
        self.dim = int(config.hidden_size)
        self.num_frames = int(config.num_frames)
        self.preprocessor = ImagePreprocessor(processor, video_frames=self.num_frames)
        self.settings = {"layers": layers, "layer_indices": self.layers, "segment_frames": self.num_frames,
                         "tubelet_size": int(config.tubelet_size), **processor_identity(processor)}

    def collate(self, units, lengths):
        import torch

        return {"pixel_values": torch.from_numpy(np.stack(units))}

    def forward(self, batch):
        import torch

        x = self.preprocessor.to_pixels(batch["pixel_values"], self.dtype)
        if self.layers is None:
            tokens = self.model(pixel_values=x).last_hidden_state.float()
        else:
            tokens = sum_layers(self.model(pixel_values=x, output_hidden_states=True).hidden_states, self.layers)
        t = self.num_frames // int(self.config.tubelet_size)
        states = tokens.reshape(tokens.shape[0], t, -1, tokens.shape[-1]).mean(2)
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=x.device)


class TextEncoder(Encoder):
    """Encoder-only models (BERT, RoBERTa, MacBERT, ...) and decoder LLMs (Qwen, Llama, Baichuan, ...):
    hidden states per token, right-padded (so a causal model's real tokens never see the padding)."""

    modality = "text"
    default_batch = {"cpu": 32, "cuda": 128}

    def __init__(self, ref, config, model, device, dtype, tokenizer, layers, max_tokens):
        super().__init__(ref, config, model, device, dtype)
        n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        self.layers = parse_layers(layers, int(n_layers) + 1)
        self.dim = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
        tokenizer.padding_side = "right"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.preprocessor = TextPreprocessor(tokenizer, max_tokens)
        self.settings = {"layers": layers, "layer_indices": self.layers, "max_tokens": int(max_tokens),
                         "special_tokens": "excluded"}

    def collate(self, units, lengths):
        import torch

        L = max(lengths)
        ids = np.full((len(units), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(units), L), dtype=np.int64)
        keep = np.zeros((len(units), L), dtype=bool)
        for i, u in enumerate(units):
            n = u.shape[1]
            ids[i, :n], mask[i, :n], keep[i, :n] = u[0], 1, u[1] == 0
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "keep": torch.from_numpy(keep)}

    def forward(self, batch):
        hs = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_hidden_states=True).hidden_states
        return sum_layers(hs, self.layers), batch["keep"]


class SentenceTransformerTextEncoder(Encoder):
    """A sentence-transformers model: its own tokenisation, pooling (and normalisation, if it has one)."""

    modality = "text"
    default_batch = {"cpu": 64, "cuda": 256}

    def __init__(self, ref, model, device):
        super().__init__(ref, None, model, device, None)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(model.max_seq_length or 512)
        self.preprocessor = SentencePreprocessor(getattr(model, "tokenizer", None), self.max_tokens)
        self.settings = {"pooling": "sentence-transformers", "max_tokens": self.max_tokens}

    def collate(self, units, lengths):
        return {"texts": list(units)}

    def forward(self, batch):
        import torch

        emb = self.model.encode(batch["texts"], batch_size=len(batch["texts"]), convert_to_tensor=True,
                                show_progress_bar=False)
        states = emb.float()[:, None, :]
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)


# -------------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------------

def model_kind(config, folder=None):
    """'audio-ssl', 'whisper', 'image', 'video' or 'text' from a config's model_type."""
    mt = str(getattr(config, "model_type", "")).lower()
    if mt in AUDIO_SSL_TYPES:
        return "audio-ssl"
    if mt == "whisper":
        return "whisper"
    from extraction.mllm import MODEL_TYPES

    if mt in MODEL_TYPES:
        return "mllm"
    if mt in VIDEO_TYPES:
        return "video"
    if mt in IMAGE_TYPES:
        return "image"
    if getattr(config, "vocab_size", None):
        return "text"
    return None


KIND_MODALITY = {"audio-ssl": "audio", "whisper": "audio", "image": "visual", "video": "visual", "text": "text"}


def _is_sentence_transformers(folder):
    return folder is not None and os.path.isfile(os.path.join(folder, "modules.json"))


def resolve_dtype(dtype, device):
    """``auto``: float32 on CPU, bfloat16 on CUDA where supported (else float16)."""
    import torch

    name = str(dtype).lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise DataError(f"--dtype '{dtype}': use auto, float32, bfloat16 or float16")
    if device.type == "cpu" and table[name] == torch.float16:
        raise DataError("--dtype float16 is for CUDA; on the CPU use float32 (or bfloat16)")
    return table[name]


def load_encoder(model, modality, device, dtype="auto", layers="default", token_pool="default", window_s=None,
                 sample_rate=None, max_tokens=None, whisper_states="encoder", revision=None, trust_remote_code=False,
                 logger=None, part=None, prompt=None, inputs=None, device_map=None, load_in=None):
    """Load ``model`` (hub id, folder or ``package:<pip>``) as an :class:`Encoder` for ``modality``.

    Defaults (``layers="default"`` ...) are MERTools' for the model's family (see the module docstring).
    ``part`` picks a part of a multimodal LLM (:mod:`extraction.mllm`: audio_tower, vision_tower, language_model;
    ``prompt``, ``inputs``, ``device_map`` and ``load_in`` are the language model part's); other models take none.
    """
    import transformers

    t0 = time.time()
    ref = ModelRef(model, revision=revision, trust_remote_code=trust_remote_code)
    folder = ref.path if ref.source != "hub" else getattr(ref, "folder", None)
    torch_dtype = resolve_dtype(dtype, device)
    transformers.logging.set_verbosity_error()  # our own log says what was loaded; its warnings are noise here
    transformers.logging.disable_progress_bar()

    if _is_sentence_transformers(folder) and layers == "default":  # with --layers: its transformer's hidden states
        if modality != "text":
            raise DataError(f"--model '{model}' is a sentence-transformers (text) model, not a {modality} model")
        from extraction.text_encoders import _import_sentence_transformers

        st = _import_sentence_transformers(model)(folder, device=str(device))
        enc = SentenceTransformerTextEncoder(ref, st.eval(), device)
        enc.family = "sentence-transformers"
    else:
        config = ref.load_config()
        kind = model_kind(config, folder)
        if kind == "mllm":
            from extraction import mllm

            enc = mllm.load_mllm(ref, config, mllm.family_of(config), part, modality, device, torch_dtype,
                                 layers=layers, token_pool=token_pool, sample_rate=sample_rate, prompt=prompt,
                                 inputs=inputs, device_map=device_map, load_in=load_in, logger=logger)
            enc.family = str(config.model_type)
            return _loaded(enc, ref, device, torch_dtype, t0, logger)
        if kind is None or KIND_MODALITY[kind] != modality:
            what = f"a {KIND_MODALITY[kind]} model" if kind else "no model family this extractor knows"
            raise DataError(f"--model '{model}' (model_type '{config.model_type}') is {what}, not a {modality} "
                            f"model: pick --modality {KIND_MODALITY.get(kind, '?')} or another model")
        for flag, value in (("--part", part), ("--prompt", prompt), ("--inputs", inputs),
                            ("--device_map", device_map), ("--load_in", load_in)):
            if value is not None:
                raise DataError(f"{flag}: '{model}' ({config.model_type}) is not a multimodal LLM; leave {flag} unset")
        load_kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch_dtype}
        net = ref.from_pretrained(transformers.AutoModel, **load_kw).to(device).eval()
        if kind in ("audio-ssl", "whisper"):
            fe = ref.from_pretrained(transformers.AutoFeatureExtractor)
            sr = int(sample_rate or fe.sampling_rate)
            if sr != int(fe.sampling_rate):
                raise DataError(f"--sample_rate {sr} differs from the model's {fe.sampling_rate} Hz; leave it unset")
            if kind == "whisper":
                if whisper_states not in ("encoder", "decoder"):
                    raise DataError(f"--whisper_states '{whisper_states}': use encoder or decoder")
                enc = WhisperEncoder(ref, config, net, device, torch_dtype, fe,
                                     "-1" if layers == "default" else layers, whisper_states, sr)
            else:
                enc = AudioSSLEncoder(ref, config, net, device, torch_dtype, fe,
                                      "last4" if layers == "default" else layers, float(window_s or 10.0), sr)
        elif kind in ("image", "video"):
            proc = ref.from_pretrained(transformers.AutoImageProcessor, **pillow_processor_kw())
            if kind == "video":
                enc = VideoMAEEncoder(ref, config, net, device, torch_dtype, proc,
                                      "last_hidden_state" if layers == "default" else layers)
            else:
                is_clip = hasattr(net, "get_image_features")
                lay = ("proj" if is_clip else "-1") if layers == "default" else layers
                pool = "sum" if token_pool == "default" else token_pool
                if pool not in TOKEN_POOLS:
                    raise DataError(f"--token_pool '{token_pool}': use {', '.join(TOKEN_POOLS)}")
                if lay == "proj" and not is_clip:
                    raise DataError(f"--layers proj is CLIP's projected embedding; '{model}' is not a CLIP model")
                enc = ImageEncoder(ref, config, net, device, torch_dtype, proc, lay, pool)
        else:
            tok = ref.from_pretrained(transformers.AutoTokenizer)
            limit = _text_limit(tok, config)
            enc = TextEncoder(ref, config, net, device, torch_dtype, tok, "last4" if layers == "default" else layers,
                              min(int(max_tokens), limit) if max_tokens else limit)
        enc.family = str(config.model_type)
    return _loaded(enc, ref, device, torch_dtype, t0, logger)


def _loaded(enc, ref, device, torch_dtype, t0, logger):
    """Time the load and log what was loaded, from where, on what."""
    enc.load_seconds = time.time() - t0
    if logger:
        where = {"folder": "local folder", "package": "pip package", "hub": "Hugging Face cache/hub"}[ref.source]
        logger.info(f"model {ref.label} ({enc.family}, {where}: {ref.path}) loaded on {device} as "
                    f"{str(torch_dtype).replace('torch.', '')} in {enc.load_seconds:.1f}s; output dim {enc.dim}"
                    + (f"; part {enc.settings['part']}" if enc.settings.get("part") else ""))
    return enc


def _text_limit(tokenizer, config):
    """The longest token sequence the model takes: the tokenizer's limit where it is set, else the config's."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not limit or limit > 1_000_000:
        limit = getattr(config, "max_position_embeddings", None) or 512
        if str(getattr(config, "model_type", "")) in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # RoBERTa's positions start after the padding index
    return int(limit)


def describe(encoder):
    """What identifies the features an encoder writes (compared across runs into one folder)."""
    out = {"model": encoder.ref.label, "weights": encoder.ref.weights_id(), "family": encoder.family,
           "modality": encoder.modality, "dim": encoder.dim,
           "compute_dtype": str(encoder.dtype).replace("torch.", "") if encoder.dtype is not None else "model default"}
    out.update({k: v for k, v in encoder.settings.items() if k != "layer_indices"})
    return json.loads(json.dumps(out))
