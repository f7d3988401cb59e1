"""The GPU acceptance check: every part of the project that needs CUDA, in one call, within a time budget.

    bench/gpu_check.sh OUT_DIR [--device cuda|cpu] [--budget SECONDS] [--only STEP,...] [--keep]
    python bench/gpu_check.py OUT_DIR [same flags]                   # what bench/gpu_check.sh runs

The steps, in this order (each with its own timeout; every step runs whatever became of the ones before):

  cuda_tests       python -m pytest -q -m cuda tests -p no:cacheprovider (the tests marked cuda)
  train_fp32       bench/train_throughput.py --device cuda (train.py's steps against MRAC25's loader and a bare loop)
  train_bf16       the same with --amp bf16 (on the files and packs the fp32 step wrote)
  extract          bench/extract_throughput.py --device cuda --size base (MERTools' extraction design against ours)
  torchrun_extract a 1-GPU torchrun of preprocess/extract_features.py over a synthetic clip demo with its tiny
                   saved HuBERT (nothing is downloaded): one feature file per clip, of the registered width
  torchrun_ranks   bench/rank_devices.py under a 2-process torchrun (1 process on a machine with one GPU, said in
                   the note): each rank's device, current CUDA device, CUDA contexts, model and copied batches must
                   be GPU LOCAL_RANK's, and an explicit --device cuda:0 refused
  grid             python -m engine.grid: 4 train.py runs at once on GPU 0 (--jobs 4 --gpus 0), a small demo data set
  compile          one train.py --compile run; its train.log must say "compiled" (no fallback to eager). Its
                   training list is not a multiple of the batch size, as real data: the last batch is smaller
  finetune_cuda    bench/finetune_cuda.py: a tiny Qwen2 (keyword texts) and a tiny HuBERT (pitch tones) fine-tuned
                   with LoRA through preprocess/finetune_encoder.py on CUDA (bf16 autocast over a bfloat16 base, as
                   seen inside the training's forward pass; finite embeddings, one per name, of --embed_dim), with --load_in_4bit
                   (skipped, saying so, without bitsandbytes), under a 2-process torchrun (each rank on GPU
                   LOCAL_RANK; skipped, saying so, with one GPU), and on the CPU beside them: both devices must learn
                   the labels; their validation F1 side by side
  finetune_throughput
                   bench/finetune_throughput.py: LoRA r 8 training samples/s and peak memory of a Qwen2 of
                   Qwen2.5-1.5B's shape (random weights built on the GPU in bf16), batch 8 x 128 tokens, without and
                   with gradient checkpointing, through finetuning's model, head and trainer
  extract_mllm     bench/extract_throughput.py --modality qwen2-audio-tower,qwen2.5-vl-vision --size real: clips/s
                   of Qwen2-Audio-7B's audio tower and of Qwen2.5-VL's vision tower (a 2 B model's shape, random
                   weights, bf16), one clip at a time against ours

With --device cpu the same steps run on the CPU at tiny sizes, a smoke test of this script (CI's): the CUDA
tests are then all skipped or deselected ("no CUDA tests ran" counts as ok there), the grid trains --device cpu
runs, a --compile fallback for want of a C++ compiler is "skipped", not a failure, finetune_cuda runs its CPU parts
(its CUDA parts "skipped") and finetune_throughput a tiny shape. With --device cuda and no
GPU visible it stops at once, with one line saying to use --device cpu.

What it writes into OUT_DIR:

  gpu_check.json   the machine (python, torch, CUDA, GPU name and memory, ...) and, per step, its commands,
                   status (ok, skipped, failed, timed-out, not-run), seconds, return code, timeout, a note, the
                   figures parsed from its output and the last lines of that output; the total seconds and "ok"
  gpu_check.log    every command's full output, each under a header line
  work/            the steps' data (demo data set, clip demo, feature folders, feature caches, run folders);
                   removed when every step passed (kept with --keep, or for a look when one failed)

Nothing is written into the repository: the data sets, split lists and feature caches go to OUT_DIR/work through
config.py's MER_FEATURE_ROOT, MER_TRAIN_LST and MER_CACHE_ROOT, run folders through --save_root. Scratch files
(the benches' temporary folders, torch.compile's cache, pytest's --basetemp) go to TMPDIR=OUT_DIR/work/tmp, or,
where that path is too long for the sockets multiprocessing makes there, to a new folder in the system's temporary
folder; either is removed at the end. HF_HUB_OFFLINE=1: no step downloads anything.

Time: the whole check stays within --budget seconds (default 450 with cuda, under 8 minutes with the machine
facts and the clean-up; 480 with cpu): each command's timeout is the lesser of its step's time left and the
budget's; a step that finds the budget spent is "not-run" (a failure). The exit status is 0 when every step is
ok or skipped, 1 otherwise, 2 for bad arguments (or --device cuda without a GPU), 130 when interrupted.
"""

import argparse
import ast
import datetime
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK, SKIPPED, FAILED, TIMED_OUT, NOT_RUN = "ok", "skipped", "failed", "timed-out", "not-run"
PASSING = (OK, SKIPPED)
TAIL_LINES = 20
WORK_MARK = ".gpu_check_work"  # in OUT_DIR/work: this script made the folder, so it may empty it
DEFAULT_BUDGET = {"cuda": 450, "cpu": 480}
# the tiny HuBERT of the clip demo (corpora/clip_demo.py) and the feature it is registered as in config.py
CLIP_MODEL, CLIP_FEATURE = "tiny-hubert", "clipdemo-tiny-hubert-UTT"
GRID_RUNS = 4
FINETUNE_TIMEOUT = {"cuda": 150, "cpu": 240}  # the finetune_cuda step: its CPU runs beside the CUDA ones on a GPU
MAX_TMP_PATH = 60  # longest TMPDIR under which multiprocessing's socket paths stay within 107 bytes


class Step:
    """One step: ``commands`` (argument lists, run in order from the repository root; or a function returning
    them, called when the step starts), ``timeout`` in seconds for all of them together, ``before`` (a function
    called first, or None) and ``check(ctx, rc, text) -> (figures, verdict)``: what the step's output (``text``,
    all its commands') and the last command's exit code say; ``verdict`` is None (ok) or ``(status, note)``. A
    command before the last that fails ends the step as failed; the last one's exit code is the check's to judge."""

    def __init__(self, name, description, commands, timeout, check, before=None):
        self.name, self.description, self.commands = name, description, commands
        self.timeout, self.check, self.before = timeout, check, before


# ------------------------------------------------------------------------------------------- parsing
def _num(text):
    return float(text.replace(",", ""))


def parse_pytest(text):
    """Counts of pytest's summary line (``3 passed, 2 skipped, 500 deselected in 9.1s``) and its seconds."""
    out = {}
    for line in reversed(text.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)", line)
        seconds = re.search(r" in ([\d.]+)s", line)
        if found and seconds:
            for n, what in found:
                what = {"error": "errors", "warning": "warnings"}.get(what, what)
                out[what] = int(n)
            out["seconds"] = float(seconds.group(1))
            break
    return out


def parse_train_throughput(text):
    """bench/train_throughput.py's figures: per model samples/s of each loader and the two ratios; the lowest
    ratios over the models (its last two lines); the device line."""
    figs, models = {}, {}
    for line in text.splitlines():
        m = re.match(r"(\S+): list gathered on the device in ([\d.]+)s; samples/s: ours ([\d,.]+) \| MRAC25 "
                     r"\((\d+) workers\) ([\d,.]+) \| bare ([\d,.]+)", line)
        if m:
            models.setdefault(m.group(1), {}).update(
                gather_s=float(m.group(2)), ours_samples_per_s=_num(m.group(3)), mrac25_workers=int(m.group(4)),
                mrac25_samples_per_s=_num(m.group(5)), bare_samples_per_s=_num(m.group(6)))
            continue
        m = re.match(r"(\S+): ours/MRAC25 ([\d.]+), ours/bare ([\d.]+)$", line)
        if m:
            models.setdefault(m.group(1), {}).update(ours_over_mrac25=float(m.group(2)),
                                                     ours_over_bare=float(m.group(3)))
            continue
        m = re.match(r"ours/(MRAC25|bare): ([\d.]+)$", line)
        if m:
            figs["ours/" + m.group(1)] = float(m.group(2))
            continue
        m = re.match(r"device (\S+)(?: \((.*?)\))?; batch (\d+); amp (\S+); compile (\S+); (\S+) timed steps", line)
        if m:
            figs.update(device=m.group(1), device_detail=m.group(2), batch_size=int(m.group(3)), amp=m.group(4),
                        compile=m.group(5), timed_steps=m.group(6))
            continue
        m = re.match(r"(wrote|reused) (\d+) samples .* in ([\d.]+)s$", line)
        if m:
            figs.update(samples=int(m.group(2)), files_written=m.group(1) == "wrote", write_s=float(m.group(3)))
            continue
        m = re.match(r"packed \(or opened\) the \d+ features in ([\d.]+)s", line)
        if m:
            figs["pack_s"] = float(m.group(1))
    if models:
        figs["models"] = models
    return figs


def parse_extract_throughput(text):
    """bench/extract_throughput.py's figures: per modality clips/s of both designs, their ratio and how far the
    features agree; the total times and ``speedup: <ratio>`` (its last line)."""
    figs, mods = {}, {}
    for line in text.splitlines():
        m = re.match(r"(audio|visual|text|qwen[\w.-]+)\s+(\S+) (\d+)x(\d+), batch (\d+), workers (\d+), (.+?) batches: MERTools "
                     r"design\s+([\d.]+) clips/s, ours\s+([\d.]+) clips/s: ([\d.]+)x\s+\(features agree to "
                     r"([\d.eE+-]+) relative", line)
        if m:
            mods[m.group(1)] = {"family": m.group(2), "hidden": int(m.group(3)), "layers": int(m.group(4)),
                                "batch": int(m.group(5)), "workers": int(m.group(6)), "batching": m.group(7),
                                "mertools_clips_per_s": float(m.group(8)), "ours_clips_per_s": float(m.group(9)),
                                "speedup": float(m.group(10)), "max_relative_difference": float(m.group(11))}
            continue
        m = re.match(r"(\d+) clips synthesised in [\d.]+s; device (\S+), torch threads (\d+), size (\S+)", line)
        if m:
            figs.update(clips=int(m.group(1)), device=m.group(2), size=m.group(4))
            continue
        m = re.match(r"all modalities: MERTools design ([\d.]+)s, ours ([\d.]+)s", line)
        if m:
            figs.update(mertools_s=float(m.group(1)), ours_s=float(m.group(2)))
            continue
        m = re.match(r"speedup: ([\d.]+)$", line)
        if m:
            figs["speedup"] = float(m.group(1))
    if mods:
        figs["modalities"] = mods
    return figs


def parse_grid(text):
    """engine.grid's lines: ``<name>: done in 12.3s, valid f1 0.5, test f1 0.4`` per run and ``N of M runs
    finished``."""
    figs, runs = {}, {}
    for line in text.splitlines():
        m = re.search(r"(\S+): (done|skipped) in ([\d.]+)s(?:, valid f1 ([\d.]+))?(?:, test f1 ([\d.]+))?", line)
        if m:
            runs[m.group(1)] = {"status": m.group(2), "seconds": float(m.group(3)),
                                "valid_f1": m.group(4) and float(m.group(4)),
                                "test_f1": m.group(5) and float(m.group(5))}
            continue
        m = re.search(r"(\d+) of (\d+) runs finished", line)
        if m:
            figs.update(runs_finished=int(m.group(1)), runs=int(m.group(2)))
    if runs:
        figs["per_run"] = runs
    return figs


def _npy_shape(path):
    """``(shape, dtype descr)`` from a .npy file's header (no array read)."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file")
        major = f.read(2)[0]
        size = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        header = ast.literal_eval(f.read(size).decode("latin1"))
    return tuple(header["shape"]), header["descr"]


def error_line(text):
    """The last line of ``text`` that names an exception (``ValueError: ...``) or says ``error: ...``; else ''."""
    found = re.findall(r"^(?:[\w.]+(?:Error|Exception|Interrupt)\b.*|error: .*)$", text, re.M)
    return found[-1].strip()[:300] if found else ""


def failed_note(rc, text):
    """The note of a command that exited with ``rc``: the code and the error line of its output."""
    line = error_line(text)
    return (FAILED, f"exit code {rc}" + (f": {line}" if line else ""))


def _tail(text, n=TAIL_LINES):
    return text.splitlines()[-n:]


def _seconds_of(line):
    """Seconds since midnight of a log line that starts ``HH:MM:SS`` (None for other lines)."""
    m = re.match(r"(\d\d):(\d\d):(\d\d) ", line)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) if m else None


# ------------------------------------------------------------------------------------------- the steps
class Context:
    """Where everything goes and how big things are, for ``device`` (cuda or cpu)."""

    def __init__(self, out_dir, device, python):
        self.out, self.device, self.py = out_dir, device, python
        self.cuda = device == "cuda"
        self.gpus = None  # how many torch sees (the machine facts), for the torchrun_ranks step
        self.work = os.path.join(out_dir, "work")
        self.features = os.path.join(self.work, "features")
        self.train_lst = os.path.join(self.work, "train_lst")
        self.cache = os.path.join(self.work, "cache")
        self.tmp = None  # set by prepare_work

    def make_tmp(self):
        """TMPDIR of the steps: OUT_DIR/work/tmp, or where that path is long, a new folder in the system's
        temporary folder (removed at the end too): multiprocessing puts sockets under TMPDIR, and a socket's
        path may not exceed 107 bytes (a DataLoader's workers fail with 'AF_UNIX path too long')."""
        tmp = os.path.join(self.work, "tmp")
        if len(tmp) <= MAX_TMP_PATH:
            os.makedirs(tmp)
        else:
            tmp = tempfile.mkdtemp(prefix="gpu_check_")
        self.tmp = tmp

    def env(self):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   MER_FEATURE_ROOT=self.features, MER_TRAIN_LST=self.train_lst, MER_CACHE_ROOT=self.cache,
                   TMPDIR=self.tmp, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        return env


def check_cuda_tests(ctx, rc, text):
    figs = parse_pytest(text)
    passed, skipped = figs.get("passed", 0), figs.get("skipped", 0)
    if not ctx.cuda:
        if rc == 5 or (rc == 0 and passed == 0):
            how = f"{figs.get('deselected', 0)} deselected" if rc == 5 else f"{skipped} skipped"
            return figs, (OK, f"no CUDA tests ran (CPU run: {how})")
        return figs, None if rc == 0 else (FAILED, f"pytest exit code {rc}")
    if rc == 5:
        return figs, (FAILED, "no test carries the cuda marker (pytest selected none): no CUDA tests ran")
    if rc != 0:
        return figs, (FAILED, f"pytest exit code {rc}: {figs.get('failed', 0)} failed, {figs.get('errors', 0)} errors")
    if passed == 0:
        return figs, (FAILED, f"every CUDA test was skipped ({skipped}) on a machine with a GPU")
    return figs, (OK, f"{skipped} skipped") if skipped else None


def check_train_throughput(ctx, rc, text):
    figs = parse_train_throughput(text)
    if rc != 0:
        return figs, failed_note(rc, text)
    models = figs.get("models", {})
    rates = [v for m in models.values() for k, v in m.items() if k.endswith("samples_per_s")]
    if "ours/MRAC25" not in figs or "ours/bare" not in figs or not models:
        return figs, (FAILED, "no 'ours/MRAC25:' and 'ours/bare:' lines, or no per-model samples/s, in its output")
    if not rates or min(rates) <= 0:
        return figs, (FAILED, "a samples/s figure is not positive")
    if not str(figs.get("device", "")).startswith(ctx.device):
        return figs, (FAILED, f"it ran on {figs.get('device')}, not {ctx.device}")
    return figs, None


MLLM_FAMILIES = ("qwen2-audio-tower", "qwen2.5-vl-vision")


def check_extract_throughput(ctx, rc, text, mllm=False):
    figs = parse_extract_throughput(text)
    if rc != 0:
        return figs, failed_note(rc, text)
    mods = figs.get("modalities", {})
    want = set(MLLM_FAMILIES) if mllm else {"audio", "visual", "text"}
    if "speedup" not in figs or set(mods) != want:
        return figs, (FAILED, f"no 'speedup:' line, or not a line for each of {', '.join(sorted(want))}")
    if min(v for m in mods.values() for k, v in m.items() if k.endswith("clips_per_s")) <= 0:
        return figs, (FAILED, "a clips/s figure is not positive")
    if not str(figs.get("device", "")).startswith(ctx.device):
        return figs, (FAILED, f"it ran on {figs.get('device')}, not {ctx.device}")
    return figs, None


def check_torchrun_extract(ctx, rc, text):
    """One file per clip of the demo, each of the registered width, the manifest complete (1 process)."""
    demo = os.path.join(ctx.features, "clipdemo")
    out = os.path.join(demo, "tiny-hubert-UTT")
    figs = {}
    m = re.search(r"rank 0: (\d+) clips in ([\d.]+)s \(([\d.]+) clips/s\): (\d+) written, (\d+) failed", text)
    if m:
        figs.update(clips=int(m.group(1)), seconds=float(m.group(2)), clips_per_s=float(m.group(3)),
                    written=int(m.group(4)), failed=int(m.group(5)))
    if rc != 0:
        return figs, failed_note(rc, text)
    names = set()
    for table in ("track1_train_disdim.csv", "test.csv", "unlabeled.csv"):
        with open(os.path.join(demo, table), encoding="utf-8") as f:
            names.update(line.split(",")[0] for line in f.read().splitlines()[1:] if line.strip())
    files = sorted(glob.glob(os.path.join(out, "*.npy")))
    shapes = {_npy_shape(p) for p in files}
    sys.path.insert(0, REPO)
    try:
        import config  # the registered width of the feature (the same whatever MER_FEATURE_ROOT says)
        dim = config.FEAT_AUDIO_DICT[CLIP_FEATURE][0]
    finally:
        sys.path.remove(REPO)
    with open(os.path.join(out, "extract_manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    last = manifest.get("runs", [{}])[-1]
    figs.update(names=len(names), files=len(files), shapes=sorted(list(s) for s, _ in shapes),
                file_dtypes=sorted({d for _, d in shapes}), registered_dim=dim,
                manifest_status=manifest.get("status"), processes=last.get("processes"), device=last.get("device"))
    if {os.path.basename(p)[:-4] for p in files} != names:
        return figs, (FAILED, f"{len(files)} feature files for {len(names)} clips (or other names)")
    if {s for s, _ in shapes} != {(dim,)}:
        return figs, (FAILED, f"feature shapes {sorted(shapes)}, not ({dim},) as registered for {CLIP_FEATURE}")
    if manifest.get("status") != "complete" or last.get("processes") != 1:
        return figs, (FAILED, f"manifest: status {manifest.get('status')}, {last.get('processes')} processes")
    if not str(last.get("device", "")).startswith(ctx.device):
        return figs, (FAILED, f"extracted on {last.get('device')}, not {ctx.device}")
    return figs, None


RANK_LINE = re.compile(r"rank (\d+) local_rank (\d+) of (\d+): device (\S+); current_device (\S+); contexts (\S+); "
                       r"model (\S+); extraction batch (\S+) (\S+); training batch (\S+) (\S+); explicit index (\S+)")


def parse_rank_devices(text):
    """bench/rank_devices.py's line of each rank: ``{rank: {local_rank, world, device, current_device, contexts,
    model, extraction_batch, extraction_dtype, training_batch, training_dtype, explicit_index}}``."""
    keys = ("local_rank", "world", "device", "current_device", "contexts", "model", "extraction_batch",
            "extraction_dtype", "training_batch", "training_dtype", "explicit_index")
    ranks = {}
    for m in RANK_LINE.finditer(text):
        rec = dict(zip(keys, m.groups()[1:]))
        rec["local_rank"], rec["world"] = int(rec["local_rank"]), int(rec["world"])
        ranks[int(m.group(1))] = rec
    return ranks


def rank_processes(ctx):
    """Processes of the torchrun_ranks step: 2, or on CUDA as many GPUs as there are when that is fewer."""
    return 2 if not ctx.cuda else max(1, min(2, ctx.gpus or 1))


def check_torchrun_ranks(ctx, rc, text):
    """Each rank works on GPU LOCAL_RANK (the CPU with --device cpu), holds a context there only, and refuses an
    explicit index; every rank reported."""
    ranks = parse_rank_devices(text)
    n = rank_processes(ctx)
    figs = {"processes": n, "ranks": ranks}
    if rc != 0:
        return figs, failed_note(rc, text)
    if sorted(ranks) != list(range(n)):
        return figs, (FAILED, f"ranks {sorted(ranks)} reported, not 0 to {n - 1}")
    for rank, r in sorted(ranks.items()):
        want = f"cuda:{r['local_rank']}" if ctx.cuda else "cpu"
        wrong = [k for k in ("device", "model", "extraction_batch", "training_batch") if r[k] != want]
        if ctx.cuda and r["current_device"] != str(r["local_rank"]):
            wrong.append("current_device")
        if ctx.cuda and r["contexts"] not in (str(r["local_rank"]), "unknown"):
            wrong.append("contexts")
        model_dtypes = ("bfloat16", "float16") if ctx.cuda else ("float32",)
        if r["extraction_dtype"] not in model_dtypes:
            wrong.append("extraction_dtype")
        if r["training_dtype"] != "float32":
            wrong.append("training_dtype")
        if wrong:
            found = ", ".join(f"{k} {r[k]}" for k in wrong)
            return figs, (FAILED, f"rank {rank} (LOCAL_RANK {r['local_rank']}): {found}; expected {want}")
        if r["explicit_index"] != "refused":
            return figs, (FAILED, f"rank {rank}: --device cuda:0 under torchrun was {r['explicit_index']}, not refused")
    if ctx.cuda and n < 2:
        return figs, (OK, f"{ctx.gpus or 'no'} GPU: 1 process; the 2-rank check was skipped (it needs 2 GPUs)")
    return figs, None


def _summaries(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "summary.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            out[os.path.relpath(os.path.dirname(path), root)] = json.load(f)
    return out


def check_grid(ctx, rc, text):
    figs = parse_grid(text)
    summaries = _summaries(os.path.join(ctx.work, "grid_runs"))
    keep = ("valid_f1", "test_f1", "samples_per_s", "peak_memory_mb", "device", "best_epoch")
    figs["summaries"] = {k: {f: s.get(f) for f in keep} for k, s in summaries.items()}
    if rc != 0:
        return figs, failed_note(rc, text)
    if len(summaries) != GRID_RUNS or figs.get("runs_finished") != GRID_RUNS:
        return figs, (FAILED, f"{len(summaries)} finished runs of {GRID_RUNS}")
    devices = {str(s.get("device")) for s in summaries.values()}
    if not all(d.startswith(ctx.device) for d in devices):
        return figs, (FAILED, f"runs trained on {sorted(devices)}, not {ctx.device}")
    f1 = [s["test_f1"] for s in summaries.values() if isinstance(s.get("test_f1"), (int, float))]
    if f1:
        figs["mean_test_f1"] = sum(f1) / len(f1)
    return figs, None


def check_compile(ctx, rc, text):
    m = re.search(r"^RUN: (.+)$", text, re.M)
    figs = {}
    log_lines = []
    if m and os.path.isfile(os.path.join(m.group(1), "train.log")):
        with open(os.path.join(m.group(1), "train.log"), encoding="utf-8") as f:
            log_lines = f.read().splitlines()
    else:  # a run that crashed prints no RUN: line; its log lines are in its output
        log_lines = text.splitlines()
    steps = [line for line in log_lines if "training steps:" in line]
    warnings = [line for line in log_lines if "--compile:" in line]
    figs["compiled"] = bool(steps) and "compiled" in steps[-1]
    if warnings:
        figs["warning"] = warnings[-1]
    built = [_seconds_of(line) for line in log_lines if re.search(r" INFO model \S+: [\d,]+ parameters", line)]
    done = [_seconds_of(line) for line in steps]
    if built and done and built[0] is not None and done[0] is not None:
        figs["compile_s"] = (done[0] - built[0]) % 86400  # the first forward and backward passes included
    if m:
        summary = _summaries(m.group(1)).get(".", {})
        figs.update({k: summary.get(k) for k in ("valid_f1", "test_f1", "samples_per_s", "device")})
    if not ctx.cuda and warnings and "no C++ compiler" in warnings[-1]:
        return figs, (SKIPPED, "skipped: no compiler (" + warnings[-1].split("--compile: ", 1)[1] + ")")
    if rc != 0:
        status, note = failed_note(rc, text)
        return figs, (status, note + (f"; {warnings[-1]}" if warnings else ""))
    if not figs["compiled"]:
        return figs, (FAILED, "train.log does not say compiled" + (f": {warnings[-1]}" if warnings else ""))
    return figs, None


FINETUNE_PART = re.compile(r"^part (\S+): (ok|failed|skipped)(?: in ([\d.]+)s)?(?:: (.*))?$", re.M)


def _finetune_bench():
    """bench/finetune_cuda.py as a module (its parsing of the runs' lines and its list of parts)."""
    import importlib.util

    bench = os.path.join(REPO, "bench")
    spec = importlib.util.spec_from_file_location("gpu_check_finetune_cuda", os.path.join(bench, "finetune_cuda.py"))
    module = importlib.util.module_from_spec(spec)
    added = bench not in sys.path
    if added:
        sys.path.append(bench)  # its "import _paths"
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(bench)
    return module


def parse_finetune_cuda(text):
    """bench/finetune_cuda.py's lines: per part its verdict (``part <name>: ok|failed|skipped in Ns: note``), what
    its run saw inside the training (``observed``, per rank) and wrote (``result``); ``compare <modality>:
    val_f1 cuda X, cpu Y``; the counts of its last line."""
    runs = _finetune_bench().parse(text)
    parts = {}
    for m in FINETUNE_PART.finditer(text):
        rec = {"status": m.group(2), "seconds": m.group(3) and float(m.group(3)), "note": m.group(4)}
        run = runs.get(m.group(1), {})
        if run.get("result"):
            rec["result"] = run["result"]
        if run.get("observed"):
            rec["observed"] = run["observed"]
        parts[m.group(1)] = rec
    figs = {"parts": parts}
    compare = {m.group(1): {"cuda": float(m.group(2)), "cpu": float(m.group(3))}
               for m in re.finditer(r"^compare (\w+): val_f1 cuda ([\d.]+), cpu ([\d.]+)$", text, re.M)}
    if compare:
        figs["compare_val_f1"] = compare
    m = re.search(r"^finetune_cuda: (\d+) ok, (\d+) skipped, (\d+) failed in ([\d.]+)s$", text, re.M)
    if m:
        figs.update(ok=int(m.group(1)), skipped=int(m.group(2)), failed=int(m.group(3)), seconds=float(m.group(4)))
    return figs


def check_finetune_cuda(ctx, rc, text):
    """Every part has its verdict; none failed; the parts of this device ran (text and audio on CUDA, or on the
    CPU with --device cpu); the skipped ones are named in the note with their reasons."""
    figs = parse_finetune_cuda(text)
    parts = figs["parts"]
    expected = _finetune_bench().PARTS
    failed = [f"{k}: {v['note']}" for k, v in parts.items() if v["status"] == FAILED]
    if failed:
        return figs, (FAILED, "; ".join(failed))
    missing = [k for k in expected if k not in parts]
    if missing:
        return figs, (FAILED, f"no verdict for {', '.join(missing)}" + (f" ({failed_note(rc, text)[1]})" if rc else ""))
    if rc != 0:
        return figs, failed_note(rc, text)
    must = ("text_cuda", "audio_cuda") if ctx.cuda else ("text_cpu", "audio_cpu")
    not_run = [k for k in must if parts[k]["status"] != OK]
    if not_run:
        return figs, (FAILED, f"{', '.join(not_run)} did not run: {parts[not_run[0]]['note']}")
    skipped = [f"{k} ({v['note']})" for k, v in parts.items() if v["status"] == SKIPPED]
    return figs, (OK, "skipped: " + "; ".join(skipped)) if skipped else None


THROUGHPUT_RUN = re.compile(r"^grad_checkpointing (on|off): ([\d,]+) parameters, ([\d,]+) trainable; built in "
                            r"([\d.]+)s; ([\d.,]+) samples/s \(([\d,]+) tokens/s\), ([\d.]+) ms/step; loss (\S+); "
                            r"peak memory ([\d.]+) GiB \((.*)\)$", re.M)


def parse_finetune_throughput(text):
    """bench/finetune_throughput.py's figures: the shape, device, batch and, per gradient checkpointing (off, on),
    parameters, samples/s, ms/step, loss and peak memory."""
    figs, runs = {}, {}
    m = re.search(r"^shape (\S+): hidden (\d+), layers (\d+), heads (\d+) \((\d+) kv\), intermediate (\d+), "
                  r"vocab (\d+); random weights built on (\S+) in (\S+)$", text, re.M)
    if m:
        figs.update(shape=m.group(1), hidden=int(m.group(2)), layers=int(m.group(3)), heads=int(m.group(4)),
                    kv_heads=int(m.group(5)), intermediate=int(m.group(6)), vocab=int(m.group(7)),
                    device=m.group(8), base_dtype=m.group(9))
    m = re.search(r"^device (\S+)(?: \((.*?)\))?; autocast (\S+); batch (\d+) x (\d+) tokens; LoRA r (\d+); "
                  r"(\d+) warm-up steps, (\d+) timed$", text, re.M)
    if m:
        figs.update(device_detail=m.group(2), autocast=m.group(3), batch_size=int(m.group(4)), tokens=int(m.group(5)),
                    lora=int(m.group(6)), warmup_steps=int(m.group(7)), timed_steps=int(m.group(8)))
    for m in THROUGHPUT_RUN.finditer(text):
        runs[m.group(1)] = {"parameters": int(_num(m.group(2))), "trainable": int(_num(m.group(3))),
                            "built_s": float(m.group(4)), "samples_per_s": _num(m.group(5)),
                            "tokens_per_s": _num(m.group(6)), "ms_per_step": float(m.group(7)),
                            "loss": float(m.group(8)), "peak_memory_gib": float(m.group(9)),
                            "peak_memory_of": m.group(10)}
    if runs:
        figs["grad_checkpointing"] = runs
    return figs


def check_finetune_throughput(ctx, rc, text):
    figs = parse_finetune_throughput(text)
    runs = figs.get("grad_checkpointing", {})
    if rc != 0:
        return figs, failed_note(rc, text)
    if set(runs) != {"off", "on"}:
        return figs, (FAILED, f"runs {sorted(runs)} in its output, not off and on (gradient checkpointing)")
    if not all(r["samples_per_s"] > 0 and r["loss"] == r["loss"] and abs(r["loss"]) != float("inf")
               for r in runs.values()):
        return figs, (FAILED, "a samples/s figure is not positive or a loss is not finite")
    if not str(figs.get("device", "")).startswith(ctx.device):
        return figs, (FAILED, f"it ran on {figs.get('device')}, not {ctx.device}")
    if ctx.cuda and (figs.get("shape") != "qwen2.5-1.5b" or figs.get("base_dtype") != "bfloat16"
                     or figs.get("autocast") != "bf16"):
        return figs, (FAILED, f"shape {figs.get('shape')}, base {figs.get('base_dtype')}, autocast "
                              f"{figs.get('autocast')}; expected qwen2.5-1.5b in bfloat16 under bf16 autocast")
    return figs, None


def build_steps(ctx):
    """The eleven steps of the check, sized for ctx.device."""
    py, cuda, dev = ctx.py, ctx.cuda, ctx.device
    steps = []

    steps.append(Step(
        "cuda_tests", "the tests marked cuda (pytest -m cuda)",
        lambda: [[py, "-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider", "-rs",
                  "--basetemp", os.path.join(ctx.tmp, "pytest")]],
        240 if cuda else 120, check_cuda_tests))

    bench_dir = os.path.join(ctx.work, "train_bench")  # written by the fp32 step, reused by the bf16 one
    sizes = ["--n", "10000"] if cuda else ["--n", "200", "--batch_size", "16", "--steps", "3", "--warmup", "1",
                                          "--repeats", "1", "--num_workers", "1"]
    train = [py, "bench/train_throughput.py", "--device", dev, *sizes, "--workdir", bench_dir]
    steps.append(Step("train_fp32", "bench/train_throughput.py (float32)", [train], 150 if cuda else 90,
                      check_train_throughput))
    steps.append(Step("train_bf16", "bench/train_throughput.py --amp bf16", [train + ["--amp", "bf16"]],
                      120 if cuda else 90, check_train_throughput))

    sizes = ["--size", "base", "--clips", "32"] if cuda else ["--size", "mini", "--clips", "4", "--repeat", "1"]
    steps.append(Step("extract", "bench/extract_throughput.py", [[py, "bench/extract_throughput.py", "--device", dev,
                                                                  *sizes]],
                      180 if cuda else 90, check_extract_throughput))

    demo = os.path.join(ctx.features, "clipdemo")
    steps.append(Step(
        "torchrun_extract", "a 1-process torchrun of preprocess/extract_features.py (clip demo, tiny HuBERT)",
        [[py, "preprocess/make_clip_demo.py", "--out", demo, "--n", "48" if cuda else "12"],
         [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "preprocess/extract_features.py",
          "--dataset", "clipdemo", "--modality", "audio", "--model", os.path.join(demo, "models", CLIP_MODEL),
          "--out", os.path.join(demo, "tiny-hubert-UTT"), "--device", dev, "--quiet"]],
        120 if cuda else 90, check_torchrun_extract))

    steps.append(Step(
        "torchrun_ranks", "the device of each torchrun rank (bench/rank_devices.py)",
        lambda: [[py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(rank_processes(ctx)),
                  "bench/rank_devices.py", "--device", dev]],
        60, check_torchrun_ranks))

    # a small demo data set (600 labelled: 480 train + 120 valid per split, not a multiple of the batch of 64)
    make_demo = [[py, "preprocess/make_demo.py", "--out", os.path.join(ctx.features, "demo"), "--n_train", "600",
                  "--n_unlabeled", "60", "--n_test", "200"],
                 [py, "preprocess/build_splits.py", "--dataset", "demo", "--seeds", "0,1,2,3"]]
    feats = "demo-hubert-large-UTT,demo-bert-base-UTT,demo-openface-au-FRM"
    specs = os.path.join(ctx.work, "grid_specs.txt")

    def write_specs():
        with open(specs, "w", encoding="utf-8") as f:
            f.write("# name<TAB>train.py flags: written by bench/gpu_check.py\n")
            for seed in range(GRID_RUNS):
                flags = ["--dataset", "demo", "--seed", str(seed), "--feat", feats, "--model", "auto_attention",
                         "--lr", "1e-3", "--epochs", "10" if cuda else "2", "--test", "--quiet",
                         "--save_root", os.path.join(ctx.work, "grid_runs")] + ([] if cuda else ["--device", "cpu"])
                f.write(f"seed{seed}\t{shlex.join(flags)}\n")

    grid = [py, "-m", "engine.grid", "--specs", specs, "--grid_dir", os.path.join(ctx.work, "grid"),
            "--jobs", str(GRID_RUNS)] + (["--gpus", "0"] if cuda else [])
    steps.append(Step("grid", f"python -m engine.grid: {GRID_RUNS} train.py runs at once"
                      + (" on GPU 0" if cuda else " on the CPU"), make_demo + [grid], 150,
                      check_grid, before=write_specs))

    # the CPU run compiles a one-expert model: fewer kernels for the C++ compiler of a small machine
    feats_compile = feats if cuda else "demo-hubert-large-UTT"
    compile_cmd = [py, "train.py", "--dataset", "demo", "--seed", "0", "--feat", feats_compile, "--model",
                   "auto_attention", "--lr", "1e-3", "--epochs", "5" if cuda else "1", "--batch_size", "64",
                   "--device", dev, "--compile", "--test", "--quiet",
                   "--save_root", os.path.join(ctx.work, "compile_run")]

    def compile_commands():  # the demo data set is the grid step's; made here when that step did not run
        have = os.path.isfile(os.path.join(ctx.train_lst, "demo", "seed0.json"))
        return ([] if have else make_demo) + [compile_cmd]

    steps.append(Step("compile", "train.py --compile (its log must say compiled)", compile_commands,
                      180, check_compile))

    # tiny text and speech models fine-tuned through preprocess/finetune_encoder.py on CUDA and, beside, on the CPU
    timeout = FINETUNE_TIMEOUT[dev]
    steps.append(Step(
        "finetune_cuda", "bench/finetune_cuda.py: tiny Qwen2 and HuBERT fine-tuned on " + (
            "CUDA (bf16 autocast, 4-bit, ranks) and on the CPU" if cuda else "the CPU (the CUDA parts skipped)"),
        lambda: [[py, "bench/finetune_cuda.py", os.path.join(ctx.work, "finetune"), "--device", dev,
                  "--gpus", str(ctx.gpus or 0), "--budget", str(timeout - 10),
                  "--part_timeout", "90" if cuda else "150"]],
        timeout, check_finetune_cuda))

    steps.append(Step(
        "finetune_throughput", "bench/finetune_throughput.py: LoRA samples/s " + (
            "on Qwen2.5-1.5B's shape (bf16), without and with gradient checkpointing" if cuda
            else "at a tiny shape on the CPU"),
        [[py, "bench/finetune_throughput.py", "--device", dev]], 90, check_finetune_throughput))

    # multimodal LLMs: Qwen2-Audio-7B's audio tower and Qwen2.5-VL's vision tower (2 B model), random weights, bf16
    mllm_size = ["--size", "real", "--clips", "16"] if cuda else ["--size", "tiny", "--clips", "4", "--repeat", "1"]
    steps.append(Step(
        "extract_mllm", "bench/extract_throughput.py: " + ", ".join(MLLM_FAMILIES) + (
            " at the released shapes (bf16)" if cuda else " at tiny shapes"),
        [[py, "bench/extract_throughput.py", "--device", dev, "--modality", ",".join(MLLM_FAMILIES), *mllm_size]],
        240 if cuda else 90, lambda c, rc, text: check_extract_throughput(c, rc, text, mllm=True)))
    return steps


# ------------------------------------------------------------------------------------------- running
def run_command(argv, timeout, log, env, cwd=REPO):
    """Run ``argv`` with its output appended to the open file ``log``; ``(exit code, output, timed out)``. On
    timeout its whole process group (torchrun's and the grid's children too) is stopped."""
    log.flush()
    start = os.fstat(log.fileno()).st_size  # the log is opened for appending: every write goes to its end
    timed_out = False
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop_group(proc)
        rc = proc.returncode
    except BaseException:  # interrupted: nothing of ours is left running
        _stop_group(proc)
        raise
    _stop_group(proc, grace=0)  # leftovers of a finished command (a loader's worker, a stuck child)
    log.flush()
    with open(log.name, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    return rc, text, timed_out


def _stop_group(proc, grace=10.0):
    """SIGTERM, then after ``grace`` seconds SIGKILL, to the process group of ``proc`` (its session)."""
    for sig in ((signal.SIGTERM, signal.SIGKILL) if grace else (signal.SIGKILL,)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=grace or 5)
            if grace:
                time.sleep(0.2)  # children that exit on the signal
        except subprocess.TimeoutExpired:
            continue
    if proc.returncode is None:
        proc.wait()


def run_step(step, ctx, log, deadline, env):
    """Run one step; its record for the JSON."""
    t0 = time.monotonic()
    try:
        commands = step.commands() if callable(step.commands) else step.commands
    except Exception as e:  # a problem of this script's own: the step fails, the rest go on
        commands, problem = [], f"{type(e).__name__}: {e}"
    else:
        problem = None
    rec = {"name": step.name, "description": step.description,
           "commands": [shlex.join(str(a) for a in c) for c in commands], "timeout_s": step.timeout,
           "status": None, "seconds": 0.0, "returncode": None, "note": None, "figures": {}, "tail": []}
    text, rc = "", None
    if problem:
        rec.update(status=FAILED, note=problem)
        return rec
    if deadline - t0 < 5:
        rec.update(status=NOT_RUN, note="the time budget was spent before this step")
        log.write(f"\n===== {step.name}: not run (the time budget was spent)\n")
        return rec
    try:
        if step.before:
            step.before()
        for i, argv in enumerate(commands):
            now = time.monotonic()
            left = min(step.timeout - (now - t0), deadline - now)
            if left < 1:
                rec.update(status=TIMED_OUT, note=f"no time left for command {i + 1} of {len(commands)}")
                break
            log.write(f"\n===== {step.name} [{i + 1}/{len(commands)}] {shlex.join(map(str, argv))}  "
                      f"(timeout {left:.0f}s)\n")
            rc, out, timed_out = run_command(argv, left, log, env)
            text += out
            log.write(f"===== {step.name} [{i + 1}/{len(commands)}] exit code {rc} after "
                      f"{time.monotonic() - now:.1f}s{' (timed out)' if timed_out else ''}\n")
            if timed_out:
                budget = deadline - now <= step.timeout - (now - t0)
                rec.update(status=TIMED_OUT, note=f"command {i + 1} stopped after {left:.0f}s"
                           + (" (the check's time budget)" if budget else f" (the step's timeout {step.timeout}s)"))
                break
            if rc != 0 and i < len(commands) - 1:
                what = argv[2] if argv[1] == "-m" else os.path.basename(str(argv[1]))
                line = error_line(out)
                rec.update(status=FAILED,
                           note=f"command {i + 1} ({what}) exit code {rc}" + (f": {line}" if line else ""))
                break
    except Exception as e:  # a problem of this script's own (writing a file): the step fails, the rest go on
        rec.update(status=FAILED, note=f"{type(e).__name__}: {e}")
    rec["returncode"] = rc
    try:
        figures, verdict = step.check(ctx, rc, text)
    except Exception as e:
        figures, verdict = {}, (FAILED, f"checking its output: {type(e).__name__}: {e}")
    rec["figures"] = figures
    if rec["status"] is None:
        status, note = verdict or (OK, None)
        rec.update(status=status, note=note)
    rec["seconds"] = round(time.monotonic() - t0, 1)
    rec["tail"] = _tail(text)
    log.write(f"===== {step.name}: {rec['status']}{' (' + rec['note'] + ')' if rec['note'] else ''} in "
              f"{rec['seconds']}s\n")
    log.flush()
    return rec


FACTS = r"""
import json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform()}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               torch_threads=torch.get_num_threads())
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    out["cudnn"] = cudnn
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   gpu_capability=f"{p.major}.{p.minor}", gpu_count=torch.cuda.device_count(),
                   bf16_supported=torch.cuda.is_bf16_supported())
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
for name in ("numpy", "transformers", "triton"):
    try:
        out[name] = __import__(name).__version__
    except Exception:
        out[name] = None
print(json.dumps(out))
"""


def machine_facts(python, env):
    """Python, torch, CUDA, GPU name and memory, ... (from the python the steps run), the driver and the commit."""
    facts = {"cpu_cores": os.cpu_count()}
    try:
        res = subprocess.run([python, "-c", FACTS], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        facts.update(json.loads(res.stdout.strip().splitlines()[-1]))
    except Exception as e:  # reported, not fatal: the steps say what works
        facts["facts_error"] = f"{type(e).__name__}: {e}"
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            facts["driver"] = res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else None
        except Exception:
            facts["driver"] = None
    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=30,
                             cwd=REPO)
        facts["commit"] = res.stdout.strip() or None
    except Exception:
        facts["commit"] = None
    return facts


def prepare_work(ctx):
    """An empty OUT_DIR/work (one this script made before is emptied; anything else there is refused)."""
    if os.path.exists(ctx.work):
        if not os.path.isfile(os.path.join(ctx.work, WORK_MARK)):
            raise SystemExit(f"error: {ctx.work} exists and was not made by this script; give another OUT_DIR")
        shutil.rmtree(ctx.work)
    os.makedirs(ctx.work)
    open(os.path.join(ctx.work, WORK_MARK), "w").close()
    ctx.make_tmp()


def write_json(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def run_check(out_dir, device, steps, ctx, budget, facts=None, keep=False):
    """Run ``steps`` in order within ``budget`` seconds; write gpu_check.json and gpu_check.log into ``out_dir``.
    Returns the exit status (0 when every step is ok or skipped)."""
    t0 = time.monotonic()
    deadline = t0 + budget
    json_path, log_path = os.path.join(out_dir, "gpu_check.json"), os.path.join(out_dir, "gpu_check.log")
    env = ctx.env()
    report = {"script": "bench/gpu_check.sh", "device": device,
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "budget_s": budget,
              "seconds": None, "ok": None, "failed": [], "machine": facts or {}, "steps": []}
    status = 1
    open(log_path, "w").close()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"bench/gpu_check.sh {out_dir} --device {device}: started {report['started']}\n"
                  f"machine: {json.dumps(report['machine'])}\n")
        try:
            for step in steps:
                print(f"[{time.monotonic() - t0:5.0f}s] {step.name}: {step.description} ...", flush=True)
                started = time.monotonic()
                rec = run_step(step, ctx, log, deadline, env)
                report["steps"].append(rec)
                print(f"[{time.monotonic() - t0:5.0f}s] {step.name}: {rec['status']} in {rec['seconds']}s"
                      + (f" ({rec['note']})" if rec["note"] else ""), flush=True)
                write_json(json_path, report)  # as it goes: a killed check leaves what it found
            status = 0
        except KeyboardInterrupt:
            report["interrupted"] = True
            report["steps"].append({"name": step.name, "description": step.description, "status": FAILED,
                                    "seconds": round(time.monotonic() - started, 1), "note": "interrupted"})
            status = 130
        failed = [r["name"] for r in report["steps"] if r["status"] not in PASSING]
        report.update(failed=failed, ok=status == 0 and not failed, seconds=round(time.monotonic() - t0, 1))
        if status == 0 and failed:
            status = 1
        # scratch of no use for a diagnosis goes always; the rest when every step passed (and not --keep)
        for d in [ctx.tmp] + ([ctx.work] if report["ok"] and not keep else [os.path.join(ctx.work, "train_bench")]):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        report["work_kept"] = os.path.isdir(ctx.work)
        log.write(f"\nfinished in {report['seconds']}s: " + ("all steps passed" if report["ok"] else
                                                            f"failed: {', '.join(failed) or 'interrupted'}") + "\n")
    write_json(json_path, report)
    print(f"gpu_check: {'ok' if report['ok'] else 'FAILED (' + ', '.join(failed or ['interrupted']) + ')'} in "
          f"{report['seconds']}s; figures in {json_path}, output in {log_path}", flush=True)
    return status


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder for gpu_check.json, gpu_check.log and work/ (made if missing)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (default): the GPU check; cpu: the same steps at tiny sizes, a smoke test of the script")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for all the steps together (default 450 with cuda, 480 with cpu)")
    p.add_argument("--only", default=None, help="run only these steps (comma-separated names), e.g. to rerun one")
    p.add_argument("--keep", action="store_true", help="keep OUT_DIR/work even when every step passed")
    args = p.parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    if os.path.commonpath([out_dir, REPO]) == out_dir:
        p.error(f"OUT_DIR {args.out_dir} holds the repository; give a folder of its own")
    ctx = Context(out_dir, args.device, sys.executable)
    steps = build_steps(ctx)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(names) - {s.name for s in steps})
        if unknown:
            p.error(f"--only: no step {', '.join(unknown)}; the steps: {', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in names]
    facts = machine_facts(ctx.py, dict(os.environ, HF_HUB_OFFLINE="1"))
    if args.device == "cuda" and not facts.get("cuda_available"):
        why = facts.get("torch_error") or f"torch {facts.get('torch')} sees no CUDA device"
        print(f"error: --device cuda, but {why}; for the CPU smoke test run bench/gpu_check.sh OUT_DIR --device cpu",
              file=sys.stderr)
        return 2
    ctx.gpus = facts.get("gpu_count") or 0
    os.makedirs(out_dir, exist_ok=True)
    prepare_work(ctx)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill from outside stops the step's processes and writes the JSON
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[args.device]
    return run_check(out_dir, args.device, steps, ctx, budget, facts, args.keep)


if __name__ == "__main__":
    sys.exit(main())
