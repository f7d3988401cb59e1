"""Running a user's OpenFace FeatureExtraction binary over many videos: parallel, resumable, kill-safe, each
failure reported; the AU CSVs and aligned faces handed on; the script: preprocess/run_openface.py.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pandas as pd
from tqdm import tqdm

import config
from extraction.media import VIDEO_EXTS, MediaError, load_image_folder
from extraction.sources import dataset_names
from extraction.writer import save_npy
from common.names import name_problem
from dataloader.files import DataError, index_files, read_names_csv

TMP_DIR = ".tmp"
LOG_DIR = "logs"
REPORT_NAME = "openface_run_report.csv"  # written to <out>/logs/, out of convert_folder's sight
REPORT_COLUMNS = ["name", "status", "seconds", "returncode", "frames", "reason", "log"]
FACE_COLUMNS = ["faces", "face_frames", "faces_reason"]
DATASET_LISTS = ("label_csv", "test_csv", "unlabeled_csv")
BUILD_HINT = ("point --bin to FeatureExtraction of OpenFace 2.x (build it from "
              "https://github.com/TadasBaltrusaitis/OpenFace: build/bin/FeatureExtraction; on Windows "
              "FeatureExtraction.exe of a release)")


# ----------------------------------------------------------------------------------------------- inputs
def resolve_binary(path):
    """The absolute path of an executable FeatureExtraction, or DataError (one line) saying what is wrong.

    A bare name (no folder) is also looked up on PATH. The path is made absolute because OpenFace finds its
    model files next to argv[0].
    """
    found = path
    if not os.path.dirname(path) and not os.path.isfile(path):
        found = shutil.which(path) or path
    if not os.path.exists(found):
        raise DataError(f"--bin '{path}' does not exist: {BUILD_HINT}")
    if not os.path.isfile(found):
        raise DataError(f"--bin '{path}' is not a file: {BUILD_HINT}")
    if not os.access(found, os.X_OK):
        raise DataError(f"--bin '{path}' is not executable (chmod +x it): {BUILD_HINT}")
    return os.path.abspath(found)


def list_clips(args):
    """``(video_dir, [(name, video path or None)])`` from --names, --dataset or the video folder."""
    video_dir = args.video_dir
    names = None
    if args.names:
        names = read_names_csv(args.names)
    elif args.dataset:
        names = dataset_names(args.dataset)[0]
    if args.dataset and not video_dir:
        ds = config.DATASETS.get(args.dataset)
        video_dir = ds.get("video_dir") if ds else None
        if not video_dir:
            raise DataError(f"dataset '{args.dataset}' has no video_dir in config.DATASETS: give --video_dir")
    if not video_dir:
        raise DataError("give --video_dir (the folder of <name>.<mp4|avi|mkv|...> videos)")
    videos = index_files(video_dir, VIDEO_EXTS, "video")
    if names is None:
        names = sorted(videos)
        if not names:
            raise DataError(f"--video_dir '{video_dir}' holds no video ({', '.join(VIDEO_EXTS)})")
    names = list(dict.fromkeys(names))
    return video_dir, [(n, videos.get(n)) for n in names]


# ------------------------------------------------------------------------------------------ running
def build_command(binary, video, out_dir, name, size, extra):
    """FeatureExtraction's argument list (flags of OpenFace 2.x, see the module docstring)."""
    return [binary, "-f", os.path.abspath(video), "-out_dir", os.path.abspath(out_dir), "-of", name,
            "-aus", "-pose", "-gaze", "-simalign", "-simsize", str(size), "-format_aligned", "bmp",
            "-nobadaligned", *extra]


def _pid_alive(pid):
    if pid == os.getpid():
        return False  # a folder of ours at start-up can only be left from a former process with our pid
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale_tmp(out):
    """Remove ``<out>/.tmp/<name>.<pid>`` folders whose run is dead; returns how many were removed."""
    root = os.path.join(out, TMP_DIR)
    if not os.path.isdir(root):
        return 0
    removed = 0
    for entry in os.listdir(root):
        stem, _, pid = entry.rpartition(".")
        if not stem or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed += 1
    return removed


def csv_problem(path):
    """``(frames, problem)`` of an OpenFace CSV: data rows, and what is wrong (None when usable)."""
    if os.path.getsize(path) == 0:
        return 0, "OpenFace wrote an empty CSV (0 bytes)"
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [c.strip() for c in f.readline().split(",")]
        frames = sum(1 for line in f if line.strip())
    if "frame" not in header or "success" not in header:
        return frames, f"the CSV has no FeatureExtraction header (first line: {', '.join(header[:5])})"
    return frames, None


def _last_line(text, pattern=None):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if pattern is not None:
        lines = [ln for ln in lines if re.search(pattern, ln, re.IGNORECASE)]
    return lines[-1] if lines else ""


def _failure_reason(stderr, stdout_log, returncode):
    """The last stderr line; else OpenFace's last error line on stdout (it prints errors there)."""
    reason = _last_line(stderr)
    if not reason and os.path.isfile(stdout_log):
        with open(stdout_log, encoding="utf-8", errors="replace") as f:
            reason = _last_line(f.read()[-20000:], r"error|fatal|could not|failed")
    return reason or f"exit status {returncode} and no message"


class Runner:
    """Runs FeatureExtraction on clips, one private temporary folder each; thread-safe."""

    def __init__(self, binary, out, size=112, extra=(), timeout=600.0, overwrite=False, video_dir="<video_dir>"):
        self.binary, self.out, self.size, self.extra = binary, out, size, list(extra)
        self.video_dir = video_dir
        self.timeout = timeout if timeout and timeout > 0 else None
        self.overwrite = overwrite
        self.log_dir = os.path.join(out, LOG_DIR)
        self.tmp_root = os.path.join(out, TMP_DIR)
        self._procs = {}
        self._lock = threading.Lock()
        self.stopping = False

    def tmp_dir(self, name):
        return os.path.join(self.tmp_root, f"{name}.{os.getpid()}")

    def command(self, name, video):
        return build_command(self.binary, video, self.tmp_dir(name), name, self.size, self.extra)

    def kill_all(self):
        """Kill every running FeatureExtraction (on Ctrl-C)."""
        self.stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill(proc)

    def run(self, name, video):
        """One clip -> its report row (never raises for a clip's own failure)."""
        row = {"name": name, "status": "", "seconds": 0.0, "returncode": None, "frames": None, "reason": "",
               "log": ""}
        problem = name_problem(name)  # the project's one rule (common/names.py), checked before any path is made
        if problem:
            row.update(status="missing", reason=f"'{name}' is not a file name (it {problem})")
            return row
        final_csv = os.path.join(self.out, name + ".csv")
        if not self.overwrite and os.path.isfile(final_csv):
            row.update(status="skipped", reason="finished before (use --overwrite to run it again)")
            return row
        if video is None:
            row.update(status="missing",
                       reason=f"no video {self.video_dir}/{name}.<{'|'.join(e[1:] for e in VIDEO_EXTS)}>")
            return row
        if self.stopping:
            row.update(status="failed", reason="interrupted before it started")
            return row
        tmp = self.tmp_dir(name)
        log = os.path.join(self.log_dir, name + ".log")
        row["log"] = log
        cmd = self.command(name, video)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        t0 = time.time()
        try:
            try:
                returncode, stderr, timed_out = self._execute(cmd, tmp, log)
            except OSError as e:  # the binary vanished or cannot start (e.g. built for another system)
                row.update(status="failed", seconds=round(time.time() - t0, 2), reason=f"cannot run {cmd[0]}: {e}")
                return row
            row["seconds"] = round(time.time() - t0, 2)
            row["returncode"] = returncode
            if timed_out:
                row.update(status="timeout", reason=f"killed after the --timeout of {self.timeout:g} s")
            elif self.stopping:
                row.update(status="failed", reason="interrupted (Ctrl-C)")
            elif returncode != 0:
                row.update(status="failed", reason=_failure_reason(stderr, log, returncode))
            else:
                try:
                    row.update(self._finish(name, tmp))
                except OSError as e:
                    row.update(status="failed", reason=f"cannot move the output into --out: {e}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return row

    def _execute(self, cmd, tmp, log):
        """Run ``cmd``: stdout to ``log`` (after the command line), stderr appended to it at the end."""
        err_path = os.path.join(tmp, "stderr.txt")
        popen_kw = {"start_new_session": True} if os.name == "posix" else {}
        timed_out = False
        with open(log, "w", encoding="utf-8") as logf, open(err_path, "w+", encoding="utf-8",
                                                            errors="replace") as errf:
            logf.write("$ " + shlex.join(cmd) + "\n")
            logf.flush()
            proc = subprocess.Popen(cmd, stdout=logf, stderr=errf, stdin=subprocess.DEVNULL, shell=False,
                                    **popen_kw)
            with self._lock:
                self._procs[id(proc)] = proc
            try:
                returncode = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
                returncode = proc.wait()
            finally:
                with self._lock:
                    self._procs.pop(id(proc), None)
            errf.seek(0)
            stderr = errf.read()
            logf.write(f"--- stderr ---\n{stderr}--- exit status {returncode}"
                       + (" (killed: timeout)" if timed_out else "") + "\n")
        return returncode, stderr, timed_out

    def _finish(self, name, tmp):
        """Check the clip's output in ``tmp`` and move it into ``out``: aligned folder first, CSV last."""
        csvs = sorted(f for f in os.listdir(tmp) if f.lower().endswith(".csv")
                      and os.path.isfile(os.path.join(tmp, f)))
        if name + ".csv" in csvs:
            csv_name = name + ".csv"
        elif len(csvs) == 1:  # OpenFace cuts -of at its last dot: 'a.b' is written as a.csv
            csv_name = csvs[0]
        elif not csvs:
            return {"status": "failed", "reason": "exit status 0 but no CSV written (could OpenFace read the "
                                                  "video? see the log)"}
        else:
            return {"status": "failed", "reason": f"several CSVs written ({', '.join(csvs)})"}
        src_csv = os.path.join(tmp, csv_name)
        frames, problem = csv_problem(src_csv)
        if problem:
            return {"status": "failed", "frames": frames, "reason": problem}
        stem = os.path.splitext(csv_name)[0]
        dst_csv = os.path.join(self.out, name + ".csv")
        dst_aligned = os.path.join(self.out, name + "_aligned")
        if os.path.isfile(dst_csv):
            os.remove(dst_csv)  # --overwrite: never a new aligned folder beside an old CSV
        if os.path.isdir(dst_aligned) and not os.path.islink(dst_aligned):
            shutil.rmtree(dst_aligned)  # a stale folder (a run killed between the two moves, or --overwrite)
        elif os.path.lexists(dst_aligned):
            os.remove(dst_aligned)
        src_aligned = os.path.join(tmp, stem + "_aligned")
        if os.path.isdir(src_aligned):
            os.replace(src_aligned, dst_aligned)
        details = os.path.join(tmp, stem + "_of_details.txt")
        if os.path.isfile(details):
            os.replace(details, os.path.join(self.log_dir, name + "_of_details.txt"))
        os.replace(src_csv, dst_csv)
        return {"status": "ok", "frames": frames}


def _kill(proc):
    """Kill a FeatureExtraction and, on POSIX, its process group (a wrapper script's children too)."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


# ---------------------------------------------------------------------------------------- face crops
def pack_faces(aligned_dir, dst):
    """Aligned images -> ``dst`` (.npy, (T, H, W, 3) uint8, BGR), atomically; returns ``(status, frames,
    reason)`` with status 'ok', 'empty' (no image: no array written) or 'error'. The images are read as the
    visual extractor reads a face folder (extraction.media.load_image_folder: natural frame order)."""
    try:
        frames = load_image_folder(aligned_dir)
    except MediaError as e:
        if e.code in ("missing_file", "no_frames"):
            why = "no aligned folder" if e.code == "missing_file" else "no aligned image (no frame with a detected face)"
            return "empty", 0, f"{why}: {aligned_dir}"
        return "error", 0, str(e)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    save_npy(dst, np.ascontiguousarray(frames[..., ::-1]))  # RGB -> BGR, the order of MERTools' arrays
    return "ok", int(len(frames)), ""


def face_path(faces_out, name):
    return os.path.join(faces_out, name, name + ".npy")


# --------------------------------------------------------------------------------------------- main

def _result(fut, name):
    """A clip's report row; an unexpected error (disk full, permissions) fails that clip, not the run."""
    try:
        return fut.result()
    except Exception as e:
        return {"name": name, "status": "failed", "seconds": None, "returncode": None, "frames": None,
                "reason": f"{type(e).__name__}: {e}", "log": ""}


def _write_report(rows, path, with_faces):
    cols = REPORT_COLUMNS + (FACE_COLUMNS if with_faces else [])
    report = pd.DataFrame(rows, columns=cols)
    for col in ("returncode", "frames") + (("face_frames",) if with_faces else ()):
        report[col] = report[col].astype("Int64")
    report.to_csv(path, index=False)
    return report


def _pack_all(rows, out, faces_out, fresh, overwrite, workers, progress):
    """Pack the finished clips' aligned images; fills the rows' face columns."""
    todo = []
    for row in rows:
        if row["status"] not in ("ok", "skipped"):
            continue
        dst = face_path(faces_out, row["name"])
        if os.path.isfile(dst) and not overwrite and row["name"] not in fresh:
            try:
                n = int(np.load(dst, mmap_mode="r").shape[0])
            except Exception:
                n = None
            row.update(faces="skipped", face_frames=n, faces_reason="exists (use --overwrite to pack it again)")
            continue
        todo.append(row)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(pack_faces, os.path.join(out, r["name"] + "_aligned"),
                               face_path(faces_out, r["name"])): r for r in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="face crops", unit="clip",
                        disable=not progress):
            status, n, reason = fut.result()
            futures[fut].update(faces=status, face_frames=n, faces_reason=reason)
            dst = face_path(faces_out, futures[fut]["name"])
            if status != "ok" and os.path.isfile(dst):
                os.remove(dst)  # an array of an earlier run would pass for this run's faces


def _summary(rows, report_path, seconds, max_listed=20):
    counts = pd.Series([r["status"] for r in rows]).value_counts()
    lines = [f"{len(rows)} clips in {seconds:.1f}s: " + ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("ok", "skipped", "missing", "failed", "timeout"))]
    bad = [r for r in rows if r["status"] in ("missing", "failed", "timeout")]
    if bad:
        lines.append(f"{len(bad)} clips without OpenFace output:")
        for r in bad[:max_listed]:
            lines.append(f"  {r['name']} [{r['status']}]: {r['reason']}" + (f" (log: {r['log']})" if r["log"] else ""))
        if len(bad) > max_listed:
            lines.append(f"  ... and {len(bad) - max_listed} more")
    lines.append(f"report: {report_path}")
    return lines
