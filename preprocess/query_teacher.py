"""Ask a vision-language model (the teacher) for an emotion per clip -> teachers/<teacher>.jsonl.

Gemini over its REST API (key in $GEMINI_API_KEY), video + subtitles, 8 threads, 900 requests a minute:

    export GEMINI_API_KEY=...
    python preprocess/query_teacher.py --dataset mer2025 --backend gemini --model gemini-2.5-flash \\
        --media video --video_dir /data/mer2025/video --subtitles /data/mer2025/subtitle.csv \\
        --subtitle_col chinese --lang zh --workers 8 --rpm 900

A vLLM server running Qwen2.5-VL (``vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000``), 8 evenly spread
frames and the audio track of each clip, three answers a clip (self-consistency):

    python preprocess/query_teacher.py --names unlabeled.csv --emo_rule MER --out teachers/qwen-vl.jsonl \\
        --backend openai --base_url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --media frames,audio --frames_dir /data/frames --audio_dir /data/wav --max_frames 8 \\
        --subtitles subtitles.csv --samples 3 --temperature 0.7 --workers 16

    (``--media video --video_dir ...`` sends the whole clip as vLLM's ``video_url``; add ``--media_url file``
    and start vLLM with ``--allowed-local-media-path /data`` to send paths instead of base64.)

Ollama, text only (the subtitle alone), first 20 clips as a trial, then the first request printed, not sent:

    python preprocess/query_teacher.py --dataset demo --backend openai --base_url http://localhost:11434/v1 \\
        --model qwen2.5:7b --media none --subtitles subtitles.csv --limit 20
    python preprocess/query_teacher.py --dataset demo --backend openai --base_url http://localhost:11434/v1 \\
        --model qwen2.5:7b --media none --subtitles subtitles.csv --dry_run

Clips: ``--names CSV`` (a ``name`` column) or ``--dataset X`` (its label, unlabelled and test lists from
config.DATASETS, ``--lists`` picks some). Prompt: ``prompt.txt`` (``--lang zh``: ``prompt_zh.txt``) with the
label set of ``--emo_rule`` filled in, or your own ``--prompt`` file (``{LABELS}``, ``{SCORE_TEMPLATE}`` and
``{SUBTITLE}`` are filled in; without ``{SUBTITLE}`` the subtitle is appended in a delimited block).

Output (``--out``, default ``<teacher_dir of the dataset>/<teacher>.jsonl``): one JSON object a clip with
the teacher format's fields (name, teacher, label, scores, confidence, description) plus confidence_source,
contributions, warnings, error, error_type, raw (the answer text; a list with --samples k), backend, model,
media, n_samples, agreement, usage (tokens), elapsed_s and attempts. See teachers/client.py.

Resuming: rerun the same command. Answered clips are skipped; so are clips whose answer could not be parsed,
was blocked, or whose request the server rejected (HTTP 400...) unless --retry_failed; clips that got no
answer (network failures after all retries, missing media) are asked again. A run killed at any moment
loses at most the clips in flight; a line cut by the kill is removed on the next start.

Exit status: 0 done (per-clip failures are counted in the summary), 2 bad input, 3 the key was refused
(HTTP 401/403), 4 the run stopped early (wrong model or URL, the server failing clip after clip),
130 interrupted. The API key is never printed, logged or written to the output.
"""

import argparse
import json
import os
import sys
import time

import _paths  # noqa: F401
import config
from dataloader.files import DataError, read_names_csv
from common.utils import get_logger as utils_get_logger
from engine.config import emo_rule_of
from teachers.client import (AbortRun, AuthError, MediaSource, TeacherRunner, build_backend,
                                    default_teacher_name, read_subtitles, shorten_base64, summary_line,
                                    with_subtitle)

DATASET_LISTS = ("label_csv", "unlabeled_csv", "test_csv")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("clips and prompt")
    g.add_argument("--names", default=None, help="CSV with a 'name' column: the clips to ask about")
    g.add_argument("--dataset", default=None, help="a config.DATASETS entry: its lists, label set and teacher_dir")
    g.add_argument("--lists", default="label,unlabeled,test",
                   help="with --dataset and no --names: which lists (label, unlabeled, test)")
    g.add_argument("--emo_rule", default=None, help="label set (config.EMO_RULE); default: the dataset's, else MER")
    g.add_argument("--prompt", default=None, help="your prompt file (default: prompt.txt / prompt_zh.txt)")
    g.add_argument("--lang", default="en", choices=["en", "zh"], help="prompt language")
    g.add_argument("--limit", type=int, default=None, help="only the first N listed clips (a trial run)")
    g = p.add_argument_group("server")
    g.add_argument("--backend", default="gemini", choices=["gemini", "openai"])
    g.add_argument("--model", default=None, help="e.g. gemini-2.5-flash, Qwen/Qwen2.5-VL-7B-Instruct, qwen2.5:7b")
    g.add_argument("--base_url", default=None, help="openai: e.g. http://localhost:8000/v1; gemini: API root "
                   "(default https://generativelanguage.googleapis.com)")
    g.add_argument("--api_key_env", default=None, help="environment variable holding the key (default "
                   "GEMINI_API_KEY for gemini; OPENAI_API_KEY for openai, sent only if set)")
    g.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the server's; 1.0 with --samples > 1)")
    g.add_argument("--max_tokens", type=int, default=None, help="answer length limit")
    g.add_argument("--extra_body", default=None,
                   help="JSON merged into each request body, e.g. Gemini safetySettings or vLLM options")
    g.add_argument("--inline_max_mb", type=float, default=15.0,
                   help="gemini: media beyond this (base64 MB per request) go through the Files API")
    g.add_argument("--media_url", default="data", choices=["data", "file"],
                   help="openai: base64 data URLs (default) or file:// paths (a local vLLM)")
    g = p.add_argument_group("media")
    g.add_argument("--media", default="video", help="comma list of video, audio, frames; or none (text only)")
    g.add_argument("--video_dir", default=None, help="<name>.mp4|avi|mkv|mov|webm")
    g.add_argument("--audio_dir", default=None, help="<name>.wav|mp3|flac")
    g.add_argument("--frames_dir", default=None, help="<name>/ folders of images")
    g.add_argument("--max_frames", type=int, default=8, help="frames per clip, evenly spread")
    g.add_argument("--subtitles", default=None, help="CSV: name + a text column")
    g.add_argument("--subtitle_col", default=None,
                   help="the text column (default: the first of text, subtitle, english, chinese)")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, default=4, help="requests in parallel")
    g.add_argument("--rpm", type=float, default=0, help="requests a minute over all workers (0: no limit)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--max_retries", type=int, default=5, help="retries of a request on 429, 5xx, timeouts")
    g.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds (then doubling)")
    g.add_argument("--max_consecutive_failures", type=int, default=20,
                   help="stop when this many clips in a row got no answer (0: never)")
    g.add_argument("--samples", type=int, default=1, help="answers per clip (self-consistency when > 1)")
    g.add_argument("--teacher", default=None, help="teacher name in the records (default from backend, model, media)")
    g.add_argument("--out", default=None, help="output JSON Lines (default <teacher_dir>/<teacher>.jsonl)")
    g.add_argument("--retry_failed", action="store_true",
                   help="also ask again clips whose answer could not be parsed, was blocked or was rejected")
    g.add_argument("--dry_run", action="store_true", help="print the first request (base64 shortened); send nothing")
    g.add_argument("--log", default=None, help="also write the log to this file")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--seed", type=int, default=0, help="seeds the retry jitter")
    return p


def get_logger(log_file=None):
    """The ``mer.teacher`` logger on stderr (and appended to ``log_file``)."""
    return utils_get_logger("mer.teacher", log_file, append=True)


def list_names(args, ds):
    """The clip names: --names, else the dataset's lists (in order, each name once); cut to --limit."""
    if args.names:
        names = read_names_csv(args.names)
    elif ds is not None:
        wanted = [w.strip() for w in args.lists.split(",") if w.strip()]
        bad = [w for w in wanted if f"{w}_csv" not in DATASET_LISTS]
        if bad:
            raise DataError(f"--lists {args.lists}: choose from label, unlabeled, test")
        names = []
        for w in wanted:
            path = ds.get(f"{w}_csv")
            if path:
                names += read_names_csv(path)
        names = list(dict.fromkeys(names))
        if not names:
            raise DataError(f"dataset '{args.dataset}' has none of the lists {args.lists}; give --names")
    else:
        raise DataError("give --names CSV or --dataset NAME")
    return names[:args.limit] if args.limit is not None else names


def dry_run(runner, names):
    """Print the first listed clip's request (no network: large Gemini files show as placeholders)."""
    backend = runner.backend
    for name in names:
        clip = runner.source.find(name)
        if not clip.error:
            break
    else:
        raise DataError(f"none of the {len(names)} clips has its media ({runner.source.media}); nothing to show")
    prompt = with_subtitle(runner.prompt, clip.subtitle, runner.lang)
    url, headers, body = backend.build_request(prompt, clip.items, runner.temperature, runner.timeout, upload=False)
    print(f"# clip {name}; teacher {runner.teacher}; output {runner.out}")
    print(f"POST {url}")
    for key, value in backend.redacted_headers(headers).items():
        print(f"{key}: {value}")
    if not backend.has_key and backend.api_key_env:
        print(f"# ${backend.api_key_env} is not set: no key sent (a {backend.kind} server may need one)")
    print(json.dumps(shorten_base64(body), ensure_ascii=False, indent=1))


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = get_logger(args.log)
    try:
        ds = None
        if args.dataset is not None:
            if args.dataset not in config.DATASETS:
                raise DataError(f"unknown --dataset '{args.dataset}' (config.DATASETS: {', '.join(config.DATASETS)})")
            ds = config.DATASETS[args.dataset]
        emo_rule = emo_rule_of(args.dataset, args.emo_rule) if ds else (args.emo_rule or "MER")
        from teachers.prompt import label_set, render_prompt
        labels = label_set(emo_rule)
        prompt = render_prompt(emo_rule, path=args.prompt, lang=args.lang)
        t0 = time.monotonic()
        names = list_names(args, ds)
        log.info("listed %d clips from %s", len(names), args.names or f"dataset {args.dataset} ({args.lists})")
        extra = None
        if args.extra_body:
            try:
                extra = json.loads(args.extra_body)
            except ValueError as e:
                raise DataError(f"--extra_body is not JSON: {e}") from None
            if not isinstance(extra, dict):
                raise DataError("--extra_body must be a JSON object")
        backend = build_backend(args.backend, args.model, args.base_url, args.api_key_env,
                                require_key=not args.dry_run, max_tokens=args.max_tokens, extra_body=extra,
                                inline_max_mb=args.inline_max_mb, media_url=args.media_url)
        subtitles = read_subtitles(args.subtitles, args.subtitle_col) if args.subtitles else None
        if subtitles is not None:
            log.info("read %d subtitles from %s", len(subtitles), args.subtitles)
        source = MediaSource(args.media, args.video_dir, args.audio_dir, args.frames_dir, args.max_frames, subtitles)
        log.info("read the lists and indexed the media folders in %.1fs", time.monotonic() - t0)
        teacher = args.teacher or default_teacher_name(args.backend, args.model, source.media, args.samples)
        out = args.out
        if out is None:
            if not ds or not ds.get("teacher_dir"):
                raise DataError("give --out (or a --dataset with a teacher_dir in config.DATASETS)")
            out = os.path.join(ds["teacher_dir"], f"{teacher}.jsonl")
        runner = TeacherRunner(backend, prompt, labels, source, out, teacher=teacher, lang=args.lang,
                               workers=args.workers, rpm=args.rpm, timeout=args.timeout,
                               max_retries=args.max_retries, backoff=args.backoff, samples=args.samples,
                               temperature=args.temperature, retry_failed=args.retry_failed,
                               max_consecutive_failures=args.max_consecutive_failures,
                               progress=not args.quiet, log=log, seed=args.seed)
        if args.dry_run:
            dry_run(runner, names)
            return 0
        summary = runner.run(names)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AuthError:  # the runner has logged why
        return 3
    except AbortRun:
        return 4
    print(summary_line(summary))
    return 130 if summary["aborted"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
