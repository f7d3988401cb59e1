"""Run a user's OpenFace 2.x FeatureExtraction binary over many videos: AU CSVs and aligned face crops.

    python preprocess/run_openface.py --bin ~/OpenFace/build/bin/FeatureExtraction \\
        --video_dir /data/mer2025/video --names mer2025_names.csv --out openface_out --workers 4 \\
        --au_out features/mer2025/openface-au-FRM --faces_out features/mer2025/openface-face

The project does not ship OpenFace: build FeatureExtraction from https://github.com/TadasBaltrusaitis/OpenFace
(Linux) or take FeatureExtraction.exe from a Windows release, and point --bin at it.

Clips: ``<video_dir>/<name>.<mp4|avi|mkv|mov|webm|flv|mpg|mpeg>``; the names come from --names (a CSV with a
``name`` column), else from --dataset (the union of its label_csv, test_csv and unlabeled_csv; the entry's
``video_dir`` is used when --video_dir is not given), else every video in --video_dir. A name without a video
is reported as ``missing``, not fatal.

Each clip runs (no shell, an argument list) as

    FeatureExtraction -f <video> -out_dir <out>/.tmp/<name>.<pid> -of <name> -aus -pose -gaze -simalign
        -simsize <size> -format_aligned bmp -nobadaligned [--extra_args ...]

with stdout and stderr in ``<out>/logs/<name>.log``, at most --workers at once and --timeout seconds each (the
process group is killed). Only when the binary exits 0 and wrote a CSV whose header names ``frame`` and
``success`` are its results moved into place: the aligned folder first, then the CSV, so ``<out>/<name>.csv``
exists only for finished clips. A rerun skips them (--overwrite runs them again), a run killed at any moment
leaves no partial CSV in --out, and private folders of dead runs under ``<out>/.tmp`` are removed at the next
start. Output, under --out:

  <name>.csv                    OpenFace's CSV (frame, face_id, timestamp, confidence, success, gaze, pose,
                                AU.._r, AU.._c)
  <name>_aligned/               similarity-aligned faces frame_det_00_000001.bmp ... (--size pixels; only the
                                frames with a detected face, -nobadaligned)
  logs/<name>.log               the command line, OpenFace's stdout and stderr; logs/<name>_of_details.txt
  logs/openface_run_report.csv  one row per listed clip: name, status (ok, skipped, missing, failed,
                                timeout), seconds, returncode, frames, reason, log, and with --faces_out
                                faces (ok, skipped, empty, error), face_frames, faces_reason. It lives in
                                logs/ so that openface_au.convert_folder, which reads every <out>/*.csv, never
                                takes it for a clip.

Then, when at least one clip is finished (ok or skipped):
  --au_out DIR     openface_au.convert_folder(<out>, DIR): (T, 35) AU sequences, DIR/openface_report.csv
  --faces_out DIR  MERTools face crops DIR/<name>/<name>.npy: (T, H, W, 3) uint8, BGR (OpenCV order), the
                   aligned images in frame order; a clip without an aligned image gets no array.
A clip that OpenFace processed in this run has its .npy files written again. Exit status: 0 when every
listed clip is ok or skipped, 1 when any is missing, failed or timed out, 2 on bad input (no binary at --bin,
an unknown dataset, no video folder).
"""

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from tqdm import tqdm

import _paths  # noqa: F401
from extraction import openface_au
from dataloader.files import DataError
from common.utils import get_logger
from extraction.openface_runner import _pack_all, _result, _summary, _write_report, clean_stale_tmp, list_clips, LOG_DIR, REPORT_NAME, resolve_binary, Runner, TMP_DIR  # noqa: F401  (the library behind this script)

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="OpenFace 2.x FeatureExtraction executable")
    p.add_argument("--video_dir", default=None, help="folder of <name>.<mp4|avi|mkv|mov|webm|flv|mpg|mpeg> "
                   "(default with --dataset: its video_dir)")
    p.add_argument("--out", required=True, help="OpenFace output: <name>.csv, <name>_aligned/, logs/")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--names", default=None, help="CSV with a 'name' column: the clips to run")
    g.add_argument("--dataset", default=None, help="a config.DATASETS entry: the union of its name lists")
    p.add_argument("--workers", type=int, default=4, help="FeatureExtraction processes at once")
    p.add_argument("--au_out", default=None, help="then convert the CSVs to (T, 35) AU sequences here")
    p.add_argument("--faces_out", default=None, help="then pack MERTools face crops <dir>/<name>/<name>.npy")
    p.add_argument("--size", type=int, default=112, help="aligned face size in pixels (-simsize)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per clip before it is killed (0: none)")
    p.add_argument("--extra_args", default="", help="more FeatureExtraction flags, e.g. \"-nomask\"")
    p.add_argument("--overwrite", action="store_true", help="run finished clips again, rewrite arrays")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    t_start = time.time()
    try:
        binary = resolve_binary(args.bin)
        if args.workers < 1 or args.size < 1:
            raise DataError(f"--workers ({args.workers}) and --size ({args.size}) must be at least 1")
        extra = shlex.split(args.extra_args, posix=os.name == "posix")
        video_dir, clips = list_clips(args)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = args.out
    os.makedirs(os.path.join(out, LOG_DIR), exist_ok=True)
    os.makedirs(os.path.join(out, TMP_DIR), exist_ok=True)
    logger = get_logger("mer.openface", os.path.join(out, LOG_DIR, "run_openface.log"), append=True)
    removed = clean_stale_tmp(out)
    if removed:
        logger.info(f"removed {removed} unfinished folder(s) of an earlier, killed run from {out}/{TMP_DIR}")
    runner = Runner(binary, out, args.size, extra, args.timeout, args.overwrite, video_dir)
    n_video = sum(v is not None for _, v in clips)
    source = f"--names {args.names}" if args.names else f"--dataset {args.dataset}" if args.dataset else "the folder"
    logger.info(f"{len(clips)} clips from {source}, {n_video} with a video in {video_dir}; output {out}; "
                f"{args.workers} workers, timeout {args.timeout:g}s")
    to_run = [(n, v) for n, v in clips if v is not None
              and (args.overwrite or not os.path.isfile(os.path.join(out, n + ".csv")))]
    if to_run:
        logger.info(f"{len(to_run)} to run; first command: {shlex.join(runner.command(*to_run[0]))}")

    rows = {}
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    pool = ThreadPoolExecutor(max_workers=args.workers)
    bar = tqdm(total=len(clips), desc="openface", unit="clip", disable=args.quiet)
    interrupted = False
    futures = {}
    try:
        futures = {pool.submit(runner.run, n, v): n for n, v in clips}
        for fut in as_completed(futures):
            row = _result(fut, futures[fut])
            rows[row["name"]] = row
            key = row["status"] if row["status"] in ("ok", "skipped") else "failed"
            counts[key] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: killing the running FeatureExtraction processes")
        runner.kill_all()
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        pool.shutdown(wait=True)
        bar.close()
    for fut in futures:  # clips that ended after a Ctrl-C
        if fut.done() and not fut.cancelled() and futures[fut] not in rows:
            row = _result(fut, futures[fut])
            rows[row["name"]] = row
    ordered = [rows[n] for n, _ in clips if n in rows]
    run_seconds = time.time() - t_start
    logger.info(f"OpenFace done in {run_seconds:.1f}s ({counts['ok']} ok, {counts['skipped']} skipped, "
                f"{counts['failed']} without output)")

    try:
        os.rmdir(os.path.join(out, TMP_DIR))  # only when empty: another run may be using it
    except OSError:
        pass
    finished = [r for r in ordered if r["status"] in ("ok", "skipped")]
    fresh = {r["name"] for r in ordered if r["status"] == "ok"}
    report_path = os.path.join(out, LOG_DIR, REPORT_NAME)
    code = 0 if all(r["status"] in ("ok", "skipped") for r in ordered) and not interrupted else 1
    if args.faces_out and finished and not interrupted:
        _pack_all(ordered, out, args.faces_out, fresh, args.overwrite, args.workers, not args.quiet)
    _write_report(ordered, report_path, bool(args.faces_out))
    lines = _summary(ordered, report_path, run_seconds)
    if interrupted:
        lines.insert(0, f"interrupted: {len(clips) - len(ordered)} clips not run (a rerun resumes)")
        print("\n".join(lines))
        return 130

    if args.faces_out and finished:
        packed = [r for r in finished if r.get("faces") in ("ok", "skipped")]
        lines.append(f"face crops: {len(packed)} arrays in {args.faces_out} "
                     f"({sum(r.get('faces') == 'ok' for r in finished)} written)")
        for r in [r for r in finished if r.get("faces") in ("empty", "error")][:20]:
            lines.append(f"  {r['name']} [no face array, {r['faces']}]: {r['faces_reason']}")
    print("\n".join(lines))

    if args.au_out and finished:
        if not args.overwrite:
            for name in fresh:  # OpenFace ran again: the AU sequence of an older CSV must not be kept
                stale = os.path.join(args.au_out, name + ".npy")
                if os.path.isfile(stale):
                    os.remove(stale)
        try:
            au_report = openface_au.convert_folder(out, args.au_out, args.workers, args.overwrite,
                                                   progress=not args.quiet)
            print("AU sequences: " + openface_au.summarize(au_report, args.au_out))
        except DataError as e:
            print(f"error: AU conversion: {e}", file=sys.stderr)
            code = 1
    elif args.au_out:
        print("no finished clip: nothing to convert to AU sequences")

    ds = args.dataset or "<dataset>"
    print("next:")
    if finished:
        face_dir = args.faces_out or out
        print(f"  python preprocess/extract_features.py --dataset {ds} --modality visual "
              f"--face_dir {shlex.quote(face_dir)} --model <hub id or folder>"
              + ("" if args.faces_out else "   # or rerun with --faces_out DIR for MERTools arrays"))
        if not args.au_out:
            print(f"  python preprocess/openface_au.py --src {shlex.quote(out)} --out features/{ds}/openface-au-FRM")
            print(f"  then in config.py: FEAT_AU_DICT[\"{ds}-openface-au-FRM\"] = "
                  f"[{openface_au.DIM}, 'features/{ds}/openface-au-FRM']")
    if code:
        print(f"  rerun the same command to retry the {len(ordered) - len(finished)} clips without output")
    logger.info(f"finished in {time.time() - t_start:.1f}s; report {report_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
