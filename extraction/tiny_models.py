"""Small randomly initialised Hugging Face encoders, built from configs and saved with ``save_pretrained``.

They stand in for real checkpoints where nothing may be downloaded: the tests, the clip demo and the
extraction benchmark build one per family and load it by folder through the same code users run on
``TencentGameMate/chinese-hubert-large`` or ``openai/clip-vit-large-patch14``. Each folder holds the model
and its preprocessor (feature extractor, image processor or tokenizer), as a hub checkpoint does.

    save_tiny_model("hubert", "models/tiny-hubert", hidden=64)        # audio
    save_tiny_model("clip", "models/tiny-clip", image_size=32)         # vision (image tower + projection)
    save_tiny_model("bert", "models/tiny-bert", texts=["hello world"])  # text (WordPiece vocab from the texts)

Multimodal LLMs have builders of their own: ``save_tiny_qwen2_audio`` (model, Whisper feature extractor, tokenizer),
``save_tiny_internvl``, ``save_tiny_qwen2_5_vl`` and ``save_tiny_qwen2_5_omni`` (the real model and processor classes, a
Qwen2 tokenizer with the model's special tokens and a chat template imitating the real one; loading their processor
needs torchvision, as transformers' video processors do).

The audio models keep the real convolutional front end (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2:
one frame per 320 samples), so frame counts and window arithmetic are those of the real models.
"""

import json
import os
import re

AUDIO_FAMILIES = ("hubert", "wav2vec2", "wav2vec2-group", "wavlm", "data2vec-audio", "whisper")
VISION_FAMILIES = ("clip", "dinov2", "vit", "videomae")
TEXT_FAMILIES = ("bert", "roberta", "qwen2", "llama")
FAMILIES = AUDIO_FAMILIES + VISION_FAMILIES + TEXT_FAMILIES

_DEFAULT_TEXTS = ["i am so happy today", "this makes me angry", "i feel sad and worried", "what a surprise",
                  "the weather is fine", "今天天气真好", "我很生气", "我有点担心"]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# The multimodal LLMs' chat templates (saved with their processors as chat_template.jinja). Each renders a media item as
# the real template does; the processor then expands that placeholder to one token per visual/audio feature.

# Imitates Qwen/Qwen2.5-VL-7B-Instruct's chat_template.json (the same as Qwen2-VL's).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Imitates Qwen/Qwen2.5-Omni-7B's chat_template.json.
QWEN2_5_OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Imitates OpenGVLab/InternVL3-1B-hf's chat template (no default system turn; a video is <video>).
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _words(texts):
    """Lower-cased words and single CJK characters of ``texts``, in first-seen order."""
    seen = {}
    for t in texts:
        for tok in re.findall(r"[\u4e00-\u9fff]|[a-z0-9']+|[^\sa-z0-9\u4e00-\u9fff]", str(t).lower()):
            seen.setdefault(tok, None)
    return list(seen)


def _save_wordpiece_tokenizer(folder, texts, max_length):
    """A BERT WordPiece tokenizer whose vocabulary is the words of ``texts`` (loaded back by AutoTokenizer)."""
    from transformers import AutoTokenizer

    vocab = _SPECIAL + [w for w in _words(texts) if w not in _SPECIAL]
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_length}, f)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.save_pretrained(folder)
    return len(vocab)


def _save_llm_tokenizer(folder, texts, max_length, family):
    """A byte-level BPE tokenizer trained on ``texts``, shaped like a decoder LLM's: an end-of-text token, no
    padding token, no BOS. Qwen2 gets its own tokenizer class (rebuilt from vocab.json and merges.txt, as a
    real Qwen checkpoint is); Llama a generic fast tokenizer. Returns the vocabulary size."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([str(t) for t in texts], vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    if family == "qwen2":
        bpe.save_model(folder)
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|endoftext|>",
                       "model_max_length": max_length}, f)
        tok = AutoTokenizer.from_pretrained(folder)
        for extra in ("vocab.json", "merges.txt"):
            os.remove(os.path.join(folder, extra))
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                      model_max_length=max_length)
    tok.save_pretrained(folder)
    return len(tok)


def _save_chat_tokenizer(folder, texts, max_length, special_tokens, named_tokens=None, eos_token=None,
                         pad_token=None, chat_template=None):
    """The Qwen2 tokenizer of :func:`_save_llm_tokenizer` with ``special_tokens`` added after its vocabulary (never
    split, in this order), saved to ``folder`` and loaded back. ``named_tokens`` ({attribute: token}) become the
    tokenizer's model-specific attributes that multimodal processors read (``tok.video_token``,
    ``tok.video_token_id``), as in the hub checkpoints' tokenizer_config.json; ``eos_token``/``pad_token`` replace or
    add those; ``chat_template`` (a Jinja string) is saved as chat_template.jinja, which the tokenizer and the
    processor both read."""
    from transformers import AutoTokenizer

    _save_llm_tokenizer(folder, texts, max_length, "qwen2")
    named = {"extra_special_tokens": dict(named_tokens)} if named_tokens else {}
    tok = AutoTokenizer.from_pretrained(folder, **named)
    tok.add_special_tokens({"additional_special_tokens": list(special_tokens)}, replace_extra_special_tokens=False)
    if eos_token is not None:
        tok.eos_token = eos_token
    if pad_token is not None:
        tok.pad_token = pad_token
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def _conv_front_end(hidden, channels=None):
    c = channels or max(16, hidden)
    return dict(conv_dim=(c,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))


def build_tiny_model(family, hidden=32, layers=2, heads=2, image_size=32, patch_size=8, texts=None,
                     max_length=64, seed=0, vocab_size=None, intermediate=None, conv_channels=None, vision_config=None):
    """``(model, kind)`` for ``family``, randomly initialised with ``seed``; ``kind`` names its preprocessor.
    ``vision_config``: more config fields for the vision families (e.g. ``{"use_mean_pooling": True}``)."""
    import torch
    import transformers as T

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family '{family}': use one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate or 2 * hidden)
    if family in ("hubert", "wav2vec2", "wavlm", "wav2vec2-group", "data2vec-audio"):
        kw = dict(common, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  **_conv_front_end(hidden, conv_channels))
        if family == "data2vec-audio":
            return T.Data2VecAudioModel(T.Data2VecAudioConfig(**kw)), "wav2vec2"
        if family == "wav2vec2-group":  # wav2vec2-base's layout: group norm in the first conv layer
            return T.Wav2Vec2Model(T.Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False, **kw)), \
                "wav2vec2-nomask"
        kw.update(feat_extract_norm="layer", do_stable_layer_norm=True)  # the large models' layout
        cls = {"hubert": (T.HubertConfig, T.HubertModel), "wav2vec2": (T.Wav2Vec2Config, T.Wav2Vec2Model),
               "wavlm": (T.WavLMConfig, T.WavLMModel)}[family]
        return cls[1](cls[0](**kw)), "wav2vec2"
    if family == "whisper":
        cfg = T.WhisperConfig(d_model=hidden, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                              decoder_attention_heads=heads, encoder_ffn_dim=2 * hidden, decoder_ffn_dim=2 * hidden,
                              num_mel_bins=80, max_source_positions=1500, max_target_positions=64, vocab_size=64,
                              pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
        return T.WhisperModel(cfg), "whisper"
    vision = dict(common, image_size=image_size, patch_size=patch_size, **(vision_config or {}))
    if family == "clip":
        cfg = T.CLIPConfig(vision_config=vision, projection_dim=hidden // 2,
                           text_config=dict(common, vocab_size=64, max_position_embeddings=32, bos_token_id=1,
                                            eos_token_id=2, pad_token_id=0))
        return T.CLIPModel(cfg), "clip"
    if family == "dinov2":
        return T.Dinov2Model(T.Dinov2Config(**vision)), "bit"
    if family == "vit":
        return T.ViTModel(T.ViTConfig(**vision), add_pooling_layer=False), "vit"
    if family == "videomae":  # videomae-base and -large: no mean pooling, so a final LayerNorm (override to vary)
        return T.VideoMAEModel(T.VideoMAEConfig(**{"num_frames": 16, "tubelet_size": 2, "use_mean_pooling": False,
                                                   **vision})), "videomae"
    texts = list(texts or _DEFAULT_TEXTS)
    n_vocab = len(_SPECIAL) + len(_words(texts)) + 2
    if family == "bert":
        return T.BertModel(T.BertConfig(vocab_size=n_vocab, max_position_embeddings=max_length, **common),
                           add_pooling_layer=False), "wordpiece"
    if family == "roberta":
        return T.RobertaModel(T.RobertaConfig(vocab_size=n_vocab, max_position_embeddings=max_length + 2, pad_token_id=0,
                                              **common), add_pooling_layer=False), "wordpiece"
    llm = dict(common, vocab_size=vocab_size or 300, max_position_embeddings=max_length, num_key_value_heads=1,
               eos_token_id=0, bos_token_id=None, pad_token_id=None)
    if family == "qwen2":
        return T.Qwen2Model(T.Qwen2Config(**llm)), "llm"
    return T.LlamaModel(T.LlamaConfig(**llm)), "llm"


def save_tiny_model(family, folder, hidden=32, layers=2, heads=2, image_size=32, patch_size=8, texts=None,
                    max_length=64, seed=0, intermediate=None, conv_channels=None, vision_config=None):
    """Build a tiny ``family`` model and save it with its preprocessor to ``folder``; returns ``folder``.

    ``texts`` sets the vocabulary of text models (their words and CJK characters); ``max_length`` their
    position limit, so that truncation can be tested. ``intermediate`` (feed-forward width, default
    2 x hidden) and ``conv_channels`` (audio front end, default hidden) let the benchmark build real-size
    shapes (e.g. HuBERT-large: hidden 1024, 24 layers, 16 heads, intermediate 4096, 512 channels).
    ``vision_config`` sets more config fields of a vision family (VideoMAE: ``{"use_mean_pooling": True}``; the
    default is videomae-base's False, whose model ends in a LayerNorm).
    """
    import transformers as T

    T.logging.disable_progress_bar()
    T.logging.set_verbosity_error()  # e.g. "image processor falls back to Pillow without torchvision"
    os.makedirs(folder, exist_ok=True)
    vocab_size = _save_llm_tokenizer(folder, texts or _DEFAULT_TEXTS, max_length, family) \
        if family in ("qwen2", "llama") else None
    model, kind = build_tiny_model(family, hidden, layers, heads, image_size, patch_size, texts, max_length, seed,
                                   vocab_size, intermediate, conv_channels, vision_config)
    model.eval().save_pretrained(folder)
    crop = {"height": image_size, "width": image_size}
    if kind in ("wav2vec2", "wav2vec2-nomask"):
        T.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                   return_attention_mask=kind == "wav2vec2").save_pretrained(folder)
    elif kind == "whisper":
        T.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    elif kind == "clip":
        T.CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=crop).save_pretrained(folder)
    elif kind == "bit":
        T.BitImageProcessor(size={"shortest_edge": image_size}, crop_size=crop).save_pretrained(folder)
    elif kind == "vit":
        T.ViTImageProcessor(size=crop).save_pretrained(folder)
    elif kind == "videomae":
        T.VideoMAEImageProcessor(size={"shortest_edge": image_size}, crop_size=crop).save_pretrained(folder)
    elif kind == "wordpiece":
        _save_wordpiece_tokenizer(folder, texts or _DEFAULT_TEXTS, max_length)
    return folder


def save_tiny_qwen2_audio(folder, hidden=32, text_hidden=48, layers=2, heads=2, num_mel_bins=80, texts=None,
                          max_length=2048, seed=0, audio_config=None, text_config=None):
    """A tiny Qwen2-Audio (audio tower, projector, Qwen2 language model) with its feature extractor (Whisper's, 30 s
    windows) and a Qwen2 tokenizer holding ``<|audio_bos|>``, ``<|AUDIO|>`` and ``<|audio_eos|>``, saved as the hub
    checkpoint is (``Qwen2AudioForConditionalGeneration``); returns ``folder``. Not in :data:`FAMILIES`: extraction
    takes its audio tower (``--part audio_tower``), the fine-tuning stage the whole model (finetuning/audio.py).
    ``audio_config`` and ``text_config`` (dicts) replace fields of the two configs built from the arguments, e.g.
    Qwen2-Audio-7B's tower: ``audio_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20,
    encoder_ffn_dim=5120)`` with ``num_mel_bins=128`` (bench/extract_throughput.py ``--size real``)."""
    import torch
    import transformers as T

    _quiet_transformers()
    os.makedirs(folder, exist_ok=True)
    tok = _save_chat_tokenizer(folder, list(texts or _DEFAULT_TEXTS) + ["What is the emotion of the person?:"],
                               max_length, ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
    torch.manual_seed(seed)
    cfg = T.Qwen2AudioConfig(
        audio_config=dict(dict(d_model=hidden, encoder_layers=layers, encoder_attention_heads=heads,
                               encoder_ffn_dim=2 * hidden, num_mel_bins=num_mel_bins, max_source_positions=1500),
                          **(audio_config or {})),
        text_config=dict(dict(model_type="qwen2", hidden_size=text_hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=1, intermediate_size=2 * text_hidden,
                              vocab_size=len(tok), max_position_embeddings=max_length, eos_token_id=tok.eos_token_id,
                              bos_token_id=None, pad_token_id=None), **(text_config or {})),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"))
    T.Qwen2AudioForConditionalGeneration(cfg).eval().save_pretrained(folder)
    T.WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(folder)
    return folder


_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # InternVL's normalisation
_MLLM_TEXTS = ["What is the emotion of the person?", "Describe the emotion in this video.",
               "You are a helpful assistant."]


def _quiet_transformers():
    import transformers as T

    T.logging.disable_progress_bar()
    T.logging.set_verbosity_error()  # e.g. "image processor falls back to Pillow without torchvision"


def _mrope_section(head_dim):
    """Multimodal RoPE split (temporal, height, width) of half a head, in the real models' proportions: [16, 24, 24]
    for a head of 128."""
    hw = 3 * (head_dim // 2) // 8
    return [head_dim // 2 - 2 * hw, hw, hw]


def _save_mm_processor(folder, processor_cls, tokenizer, chat_template, video_processor, settings=None, **parts):
    """Save ``processor_cls(tokenizer, video processor, **parts)`` to ``folder`` as ``save_pretrained`` does:
    processor_config.json (each sub-processor's settings and ``settings``, e.g. ``{"image_seq_length": 4}``), the
    tokenizer files and chat_template.jinja. ``video_processor`` is ``(class name, kwargs)``. transformers' video
    processors need torchvision: without it the same processor_config.json is written from the parts' settings and
    the video processor's kwargs, so the folder is the one a hub checkpoint has and its processor loads wherever
    torchvision is installed. Without torchvision ``AutoProcessor.from_pretrained`` fails on it, as on the real
    checkpoint; the model, the tokenizer (with the chat template), the image processor and the feature extractor
    load."""
    import transformers as T
    from transformers.utils import is_torchvision_available

    name, video_kwargs = video_processor
    settings = dict(settings or {})
    if is_torchvision_available():
        video = getattr(T, name)(**video_kwargs)
        processor_cls(tokenizer=tokenizer, video_processor=video, chat_template=chat_template, **parts,
                      **settings).save_pretrained(folder)
        return
    config = {}
    for attribute, part in parts.items():
        entry = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in part.to_dict().items()}
        entry.pop("processor_class", None)
        if "image_processor_type" in entry:  # the Pillow fallback's class: save the name the checkpoint has
            entry["image_processor_type"] = entry["image_processor_type"].removesuffix("Pil")
        config[attribute] = entry
    config["video_processor"] = {**video_kwargs, "video_processor_type": name}
    config.update(settings, processor_class=processor_cls.__name__)
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    tokenizer._set_processor_class(processor_cls.__name__)
    tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(chat_template)


def _qwen_vision_config(hidden, layers, heads, patch_size, window_size, out_hidden):
    """The Qwen2.5-VL / Qwen2.5-Omni vision tower's fields: windowed attention except in the last block (the real
    towers attend fully in every 8th block), 2x2 patch merging, 2 frames per temporal patch."""
    return dict(depth=layers, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads, patch_size=patch_size,
                spatial_merge_size=2, temporal_patch_size=2, window_size=window_size, out_hidden_size=out_hidden,
                fullatt_block_indexes=[layers - 1])


def _qwen_text_config(hidden, layers, heads, vocab_size, max_length, eos_token_id):
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=1, vocab_size=vocab_size, max_position_embeddings=max_length,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": _mrope_section(hidden // heads)},
                eos_token_id=eos_token_id, bos_token_id=None, pad_token_id=None)


def save_tiny_internvl(folder, vision_hidden=32, text_hidden=48, layers=2, heads=2, image_size=28, patch_size=7,
                       texts=None, max_length=4096, seed=0):
    """A tiny InternVL3-style model (InternViT vision tower, pixel-shuffle MLP projector, Qwen2 language model), saved
    as OpenGVLab/InternVL3-1B-hf is (``InternVLForConditionalGeneration``, ``InternVLProcessor`` with a GotOCR2 image
    processor, an InternVL video processor, a Qwen2 tokenizer holding ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` and the
    chat template); returns ``folder``. A frame is resized to ``image_size`` px and gives
    ``(image_size // patch_size // 2) ** 2`` tokens (4 by default; 256 for the real 448 px / 14 px)."""
    import torch
    import transformers as T

    if image_size % patch_size or (image_size // patch_size) % 2:
        raise ValueError(f"image_size {image_size} must be an even multiple of patch_size {patch_size} (the pixel "
                         "shuffle halves the patch grid)")
    _quiet_transformers()
    os.makedirs(folder, exist_ok=True)
    image = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
    tok = _save_chat_tokenizer(
        folder, list(texts or _DEFAULT_TEXTS) + _MLLM_TEXTS, max_length,
        ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
         "<box>", "</box>"],
        named_tokens={**image, "video_token": "<video>"}, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=INTERNVL_CHAT_TEMPLATE)
    image_seq_length = (image_size // patch_size // 2) ** 2
    torch.manual_seed(seed)
    cfg = T.InternVLConfig(
        vision_config=dict(hidden_size=vision_hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=2 * vision_hidden, image_size=image_size, patch_size=patch_size),
        text_config=dict(model_type="qwen2", hidden_size=text_hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=1, intermediate_size=2 * text_hidden,
                         vocab_size=len(tok), max_position_embeddings=max_length, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=None),
        image_token_id=tok.context_image_token_id, image_seq_length=image_seq_length, downsample_ratio=0.5)
    T.InternVLForConditionalGeneration(cfg).eval().save_pretrained(folder)
    size = {"height": image_size, "width": image_size}
    norm = dict(image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)
    _save_mm_processor(folder, T.InternVLProcessor, tok, INTERNVL_CHAT_TEMPLATE,
                       ("InternVLVideoProcessor", dict(size=size, **norm)), {"image_seq_length": image_seq_length},
                       image_processor=T.GotOcr2ImageProcessor(size=size, crop_to_patches=False, **norm))
    return folder


def save_tiny_qwen2_5_vl(folder, vision_hidden=32, text_hidden=48, layers=2, heads=2, patch_size=14, window_size=56,
                         min_pixels=28 * 28, max_pixels=56 * 56, texts=None, max_length=4096, seed=0,
                         vision_config=None, text_config=None):
    """A tiny Qwen2.5-VL (windowed-attention vision tower with 2x2 patch merger, Qwen2 language model with multimodal
    RoPE) saved as Qwen/Qwen2.5-VL-7B-Instruct is (``Qwen2_5_VLForConditionalGeneration``, ``Qwen2_5_VLProcessor``
    with the Qwen2-VL image and video processors, a Qwen2 tokenizer holding ``<|vision_start|>``, ``<|image_pad|>``,
    ``<|video_pad|>``... and the chat template); returns ``folder``. Frames are resized to a multiple of
    ``2 * patch_size`` px within ``min_pixels``..``max_pixels`` (32x32 -> 28x28, 64x64 -> 56x56 by default); every two
    frames give ``(h // patch_size // 2) * (w // patch_size // 2)`` tokens (1 to 4 by default). ``vision_config`` and
    ``text_config`` (dicts) replace fields of the two configs built from the arguments (the text model's multimodal
    RoPE split follows its head width), e.g. a Qwen2-VL-2B-like shape in bench/extract_throughput.py ``--size real``."""
    vcfg = dict(_qwen_vision_config(vision_hidden, layers, heads, patch_size, window_size, text_hidden),
                **(vision_config or {}))
    return _save_tiny_qwen_vl(folder, "Qwen2_5_VL", vcfg, text_hidden, layers, heads, patch_size, min_pixels,
                              max_pixels, texts, max_length, seed, text_config)


def save_tiny_qwen2_vl(folder, vision_hidden=32, text_hidden=48, layers=2, heads=2, patch_size=14,
                       min_pixels=28 * 28, max_pixels=56 * 56, texts=None, max_length=4096, seed=0):
    """A tiny Qwen2-VL (full-attention vision tower with its 2x2 patch merger, Qwen2 language model with multimodal
    RoPE) saved as Qwen/Qwen2-VL-7B-Instruct is (``Qwen2VLForConditionalGeneration``, ``Qwen2VLProcessor``, the same
    tokens and chat template as :func:`save_tiny_qwen2_5_vl`); returns ``folder``."""
    vcfg = dict(depth=layers, embed_dim=vision_hidden, hidden_size=text_hidden, num_heads=heads, mlp_ratio=2,
                patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2)
    return _save_tiny_qwen_vl(folder, "Qwen2VL", vcfg, text_hidden, layers, heads, patch_size, min_pixels, max_pixels,
                              texts, max_length, seed)


def _save_tiny_qwen_vl(folder, prefix, vcfg, text_hidden, layers, heads, patch_size, min_pixels, max_pixels, texts,
                       max_length, seed, text_config=None):
    """Qwen2-VL and Qwen2.5-VL (``prefix``: the name their config, model and processor classes start with): the
    tokenizer with the vision tokens and chat template, the model from ``vcfg`` and a tiny Qwen2, the processor."""
    import torch
    import transformers as T

    _quiet_transformers()
    os.makedirs(folder, exist_ok=True)
    tok = _save_chat_tokenizer(
        folder, list(texts or _DEFAULT_TEXTS) + _MLLM_TEXTS, max_length,
        ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
         "<|video_pad|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    torch.manual_seed(seed)
    tcfg = dict(_qwen_text_config(text_hidden, layers, heads, len(tok), max_length, tok.eos_token_id),
                **(text_config or {}))
    if "rope_parameters" not in (text_config or {}):
        tcfg["rope_parameters"]["mrope_section"] = _mrope_section(tcfg["hidden_size"] // tcfg["num_attention_heads"])
    cfg = getattr(T, prefix + "Config")(
        vision_config=vcfg, text_config=tcfg,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    getattr(T, prefix + "ForConditionalGeneration")(cfg).eval().save_pretrained(folder)
    grid = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    _save_mm_processor(folder, getattr(T, prefix + "Processor"), tok, QWEN2_5_VL_CHAT_TEMPLATE,
                       ("Qwen2VLVideoProcessor", dict(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                                      **grid)),
                       image_processor=T.Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **grid))
    return folder


def save_tiny_qwen2_5_omni(folder, vision_hidden=32, audio_hidden=32, text_hidden=48, layers=2, heads=2,
                           num_mel_bins=128, patch_size=14, window_size=56, min_pixels=28 * 28, max_pixels=56 * 56,
                           texts=None, max_length=4096, seed=0):
    """A tiny Qwen2.5-Omni thinker (Whisper-style audio tower, Qwen2.5-VL vision tower, Qwen2 language model) with its
    processor (Whisper feature extractor of ``num_mel_bins`` bins, Qwen2-VL image and video processors, a Qwen2
    tokenizer holding ``<|AUDIO|>``, ``<|audio_bos|>``, ``<|IMAGE|>``, ``<|VIDEO|>``, ``<|vision_bos|>``... and the chat
    template); returns ``folder``. As in Qwen/Qwen2.5-Omni-7B, config.json is a ``Qwen2_5OmniConfig`` and the weights
    are under ``thinker.``, so ``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder)`` loads it as it
    loads the hub checkpoint; the talker and token2wav (speech output) are left out (``enable_audio_output=False``)."""
    import torch
    import transformers as T

    _quiet_transformers()
    os.makedirs(folder, exist_ok=True)
    named = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
             "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
             "vision_eos_token": "<|vision_eos|>"}
    tok = _save_chat_tokenizer(
        folder, list(texts or _DEFAULT_TEXTS) + _MLLM_TEXTS, max_length,
        ["<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|vision_bos|>",
         "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>"],
        named_tokens=named, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN2_5_OMNI_CHAT_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    torch.manual_seed(seed)
    thinker = T.Qwen2_5OmniThinkerConfig(
        audio_config=dict(d_model=audio_hidden, encoder_layers=layers, encoder_attention_heads=heads,
                          encoder_ffn_dim=2 * audio_hidden, num_mel_bins=num_mel_bins, max_source_positions=1500,
                          n_window=100, output_dim=text_hidden),
        vision_config=_qwen_vision_config(vision_hidden, layers, heads, patch_size, window_size, text_hidden),
        text_config=_qwen_text_config(text_hidden, layers, heads, len(tok), max_length, tok.eos_token_id),
        audio_token_index=ids("<|AUDIO|>"), image_token_index=ids("<|IMAGE|>"), video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"), audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"), vision_end_token_id=ids("<|vision_eos|>"))
    cfg = T.Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    T.Qwen2_5OmniForConditionalGeneration(cfg).eval().save_pretrained(folder)
    grid = dict(patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    _save_mm_processor(folder, T.Qwen2_5OmniProcessor, tok, QWEN2_5_OMNI_CHAT_TEMPLATE,
                       ("Qwen2VLVideoProcessor", dict(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                                      **grid)),
                       image_processor=T.Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, **grid),
                       feature_extractor=T.WhisperFeatureExtractor(feature_size=num_mel_bins,
                                                                   return_attention_mask=True))
    return folder
