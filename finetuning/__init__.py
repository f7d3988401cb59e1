"""Fine-tuning an encoder on the training labels, then writing its embeddings as an ordinary feature
(``preprocess/finetune_encoder.py``; MiSTER-E's first stage, see docs/finetune.md).

* ``inputs``: what a sample gives the model, per modality (text: the utterance, optionally with its dialogue's
  previous utterances), and the collate of a batch;
* ``model``: the backbone (loaded as extraction loads it), LoRA through peft or full fine-tuning, MiSTER-E's
  head (LayerNorm, attentive statistics pooling over real positions, projection, classifier) and the losses;
* ``audio``: speech backbones (HuBERT, wav2vec2, WavLM, Whisper's encoder, Qwen2-Audio), loaded as extraction loads
  them, and the model that pools a clip's windows' real frames;
* ``trainer``: the loop (AdamW, warmup and linear decay, accumulation, early stopping on validation weighted
  F1), per-epoch checkpoints and their resumption, prediction;
* ``parallel``: this process's place among torchrun's processes (the one place rank and world are read);
* ``runner``: the stage: labels from the split list only, the trainings (one, or one per fold with
  ``--folds``), the feature folders through extraction's writer.
"""
