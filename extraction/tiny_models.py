"""Small randomly initialised Hugging Face encoders, built from configs and saved with ``save_pretrained``.

They stand in for real checkpoints where nothing may be downloaded: the tests, the clip demo and the
extraction benchmark build one per family and load it by folder through the same code users run on
``TencentGameMate/chinese-hubert-large`` or ``openai/clip-vit-large-patch14``. Each folder holds the model
and its preprocessor (feature extractor, image processor or tokenizer), as a hub checkpoint does.

    save_tiny_model("hubert", "models/tiny-hubert", hidden=64)        # audio
    save_tiny_model("clip", "models/tiny-clip", image_size=32)         # vision (image tower + projection)
    save_tiny_model("bert", "models/tiny-bert", texts=["hello world"])  # text (WordPiece vocab from the texts)

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
                          max_length=2048, seed=0):
    """A tiny Qwen2-Audio (audio tower, projector, Qwen2 language model) with its feature extractor (Whisper's, 30 s
    windows) and a Qwen2 tokenizer holding ``<|audio_bos|>``, ``<|AUDIO|>`` and ``<|audio_eos|>``, saved as the hub
    checkpoint is (``Qwen2AudioForConditionalGeneration``); returns ``folder``. Not in :data:`FAMILIES`: extraction
    takes its audio tower (``--part audio_tower``), the fine-tuning stage the whole model (finetuning/audio.py)."""
    import torch
    import transformers as T
    from transformers import AutoTokenizer

    T.logging.disable_progress_bar()
    T.logging.set_verbosity_error()
    os.makedirs(folder, exist_ok=True)
    _save_llm_tokenizer(folder, list(texts or _DEFAULT_TEXTS) + ["What is the emotion of the person?:"], max_length,
                        "qwen2")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]})
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = T.Qwen2AudioConfig(
        audio_config=dict(d_model=hidden, encoder_layers=layers, encoder_attention_heads=heads,
                          encoder_ffn_dim=2 * hidden, num_mel_bins=num_mel_bins, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=text_hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=1, intermediate_size=2 * text_hidden,
                         vocab_size=len(tok), max_position_embeddings=max_length, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=None),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"))
    T.Qwen2AudioForConditionalGeneration(cfg).eval().save_pretrained(folder)
    T.WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(folder)
    return folder
