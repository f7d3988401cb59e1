"""Fine-tuning on CUDA against the CPU: the finetune_cuda step of bench/gpu_check.sh.

    python bench/finetune_cuda.py WORK --device cuda      # every part (the CPU ones beside the CUDA ones)
    python bench/finetune_cuda.py WORK --device cpu       # the CPU parts only; the CUDA ones say "skipped"

Makes, under WORK (nothing in the repository, nothing downloaded), a tiny data set 'ftcheck' of three labels
whose every utterance holds its label's keyword among filler words and whose clip is a tone of its label's pitch
(train, valid, test and unlabelled names, imported with the project's importer), a tiny Qwen2 and a tiny HuBERT
(extraction.tiny_models), then fine-tunes them through preprocess/finetune_encoder.py (LoRA r 8), each run a
process of its own with a timeout, a failed part never stopping the others:

  text_cuda         the tiny Qwen2 on CUDA: bf16 autocast must be on in the training's forward pass (on a GPU with
                    bf16) over a frozen base in bfloat16; the embeddings finite, one per name, of --embed_dim
  audio_cuda        the tiny HuBERT on the tones (1 s windows), the same checks
  text_4bit_cuda    text_cuda with --load_in_4bit (the base's linear layers in bitsandbytes' 4 bits); skipped,
                    saying so, where bitsandbytes is not installed
  text_ranks_cuda   text_cuda under a 2-process torchrun: each rank's states, model and current CUDA device must
                    be GPU LOCAL_RANK's; skipped, saying so, with fewer than 2 GPUs
  text_cpu          text_cuda on the CPU (float32, no autocast): its validation F1 beside the CUDA one
  audio_cpu         audio_cuda on the CPU

Both devices must learn the keyword and the pitch (validation weighted F1 >= 0.8). With --device cuda the CPU
parts run beside the CUDA ones (a few threads each). Each run's own process prints what it saw inside the
training (``observed``: the device of the hidden states the head reads and of the model, torch's autocast state
and dtype during a training forward pass, the frozen base's and the adapters' dtypes, the 4-bit layers, the
current CUDA device) and what it wrote (``result``: validation F1, files, width, dtype, finiteness, peak
memory); then this script prints per part one line ``part <name>: ok|failed|skipped ...``, per modality
``compare <modality>: val_f1 cuda X, cpu Y``, and last ``finetune_cuda: N ok, N skipped, N failed``. Exit
status 0 when no part failed, 1 otherwise.
"""

import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import _paths  # noqa: F401

REPO = _paths.REPO_ROOT
DATASET = "ftcheck"
LABELS = ["neutral", "joy", "anger"]
KEYWORD = {"neutral": "table", "joy": "sunny", "anger": "furious"}
PITCH = {"neutral": 220.0, "joy": 440.0, "anger": 880.0}
FILLER = "we went to the shop and then back home after a long day of work with friends".split()
SR = 16000
PARTS = ("text_cuda", "audio_cuda", "text_4bit_cuda", "text_ranks_cuda", "text_cpu", "audio_cpu")
LEARNT_F1 = 0.8  # validation weighted F1 that says the keyword (or the pitch) was learnt
EMBED_DIM = 64
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
OBSERVED = re.compile(r"observed (\S+) rank (\d+) local_rank (\d+) of (\d+): states (\S+) (\S+); model (\S+); "
                      r"autocast (\S+); base (\S+); adapters (\S+); quantised (\d+); current_device (\S+); "
                      r"bf16_supported (\S+)")
RESULT = re.compile(r"\bresult (\S+): val_f1 ([\d.]+); best_epoch (\d+) of (\d+); files (\d+) of (\d+); width (\S+) "
                    r"\(embed_dim (\d+)\); dtype (\S+); finite (\S+); device (\S+); peak_memory (.+)$")


# ------------------------------------------------------------------------------------------- the data
def write_data(work, n_train=96, n_valid=24, n_test=12, n_unlabelled=4, seed=0):
    """The data set (texts, clips, tables, dataset.yaml under config.FEATURE_ROOT), its split list and the two
    tiny models; returns ``{"split", "qwen2", "hubert", "audio_dir"}``."""
    import pandas as pd

    import config
    from corpora.custom import import_corpus
    from dataloader.splits import official_split
    from extraction.media import write_wav
    from extraction.tiny_models import save_tiny_model

    rng = np.random.default_rng(seed)
    audio_dir = os.path.join(work, "ftcheck_audio")
    os.makedirs(audio_dir, exist_ok=True)
    parts = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test + ["pool"] * n_unlabelled
    rows = []
    for i, part in enumerate(parts):
        label = LABELS[i % len(LABELS)]
        words = [str(w) for w in rng.choice(FILLER, 5)]
        words.insert(int(rng.integers(0, 6)), KEYWORD[label])
        name = f"u{i:03d}"
        t = np.arange(int(float(rng.uniform(0.4, 1.6)) * SR)) / SR
        wave = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * PITCH[label] * t + rng.uniform(0, 2 * np.pi))
        wave = (wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        write_wav(os.path.join(audio_dir, f"{name}.wav"), wave, SR)
        rows.append({"utt": name, "emotion": "" if part == "pool" else label, "text": " ".join(words),
                     "part": "train" if part == "pool" else part})
    table = os.path.join(work, "ftcheck_corpus.csv")
    pd.DataFrame(rows).to_csv(table, index=False)
    home = os.path.join(config.FEATURE_ROOT, DATASET)
    import_corpus(DATASET, table, {"name": "utt", "label": "emotion", "text": "text", "split": "part"}, LABELS,
                  out=home, log=lambda m: None)
    config.load_registration(os.path.join(home, config.REGISTRATION_FILE))
    ds = config.DATASETS[DATASET]
    split = os.path.join(work, "ftcheck_split.json")
    official_split(ds["label_csv"], ds["emo_rule"], split, split_col="split")
    texts = [r["text"] for r in rows]
    models = os.path.join(work, "ftcheck_models")
    return {"split": split, "audio_dir": audio_dir,
            "qwen2": save_tiny_model("qwen2", os.path.join(models, "tiny-qwen2"), texts=texts, max_length=64),
            "hubert": save_tiny_model("hubert", os.path.join(models, "tiny-hubert"))}


def part_flags(part, data, epochs, threads=None, patience=3):
    """preprocess/finetune_encoder.py's flags for ``part``."""
    text = part.startswith("text")
    flags = ["--dataset", DATASET, "--split", data["split"], "--modality", "text" if text else "audio",
             "--model", data["qwen2"] if text else data["hubert"], "--feature_name", part.replace("_", "-"),
             "--lora", "8", "--lr", "3e-3", "--loss", "ce", "--head_dropout", "0.1", "--epochs", str(epochs),
             "--patience", str(patience), "--batch_size", "8",
             "--embed_dim", str(EMBED_DIM), "--seed", "0", "--quiet", "--device",
             "cpu" if part.endswith("_cpu") else "cuda"]
    if not text:
        flags += ["--audio_dir", data["audio_dir"], "--window_s", "1"]
    if part == "text_4bit_cuda":
        flags += ["--load_in_4bit"]
    if threads:
        flags += ["--threads", str(threads)]
    return flags


# ------------------------------------------------------------------------------------------- inside a run
def observe(label, argv):
    """Run preprocess/finetune_encoder.py's main(argv) in this process, watching the model it builds: prints the
    ``observed`` line (every rank) and, on rank 0 after a finished run, the ``result`` line. Returns its status."""
    import torch

    import finetuning.model as fm

    seen = {}
    build = fm.build_model

    def watched_build(backbone, n_classes, settings, device, dtype):
        model, targets = build(backbone, n_classes, settings, device, dtype)
        frozen = [p.dtype for p in model.backbone.parameters() if not p.requires_grad and p.is_floating_point()]
        trainable = [p.dtype for n, p in model.backbone.named_parameters() if p.requires_grad and "lora_" in n]
        seen.update(base=_most(frozen), adapters=_most(trainable) if trainable else "none",
                    model=str(next(model.head.parameters()).device),
                    quantised=sum(type(m).__name__ == "Linear4bit" for m in model.backbone.modules()))

        def before_head(module, args):
            if module.training and "states" not in seen:  # the first training forward pass
                states, kind = args[0], args[0].device.type
                seen.update(states=f"{states.device} {str(states.dtype).replace('torch.', '')}",
                            autocast=_autocast_state(torch, kind),
                            current_device=str(torch.cuda.current_device()) if kind == "cuda" else "none")

        model.head.register_forward_pre_hook(before_head)
        return model, targets

    fm.build_model = watched_build
    spec = importlib.util.spec_from_file_location("finetune_encoder", os.path.join(REPO, "preprocess",
                                                                                    "finetune_encoder.py"))
    script = importlib.util.module_from_spec(spec)
    sys.path.append(os.path.join(REPO, "preprocess"))
    spec.loader.exec_module(script)
    status = 1
    try:
        status = script.main(argv)
    finally:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        print(f"observed {label} rank {rank} local_rank {os.environ.get('LOCAL_RANK', 0)} of {world}: states "
              f"{seen.get('states', 'none none')}; model {seen.get('model', 'none')}; autocast "
              f"{seen.get('autocast', 'none')}; base {seen.get('base', 'none')}; adapters "
              f"{seen.get('adapters', 'none')}; "
              f"quantised {seen.get('quantised', 0)}; current_device {seen.get('current_device', 'none')}; "
              f"bf16_supported {'yes' if bf16 else 'no'}", flush=True)
    if status == 0 and int(os.environ.get("RANK", 0)) == 0:
        print(result_line(label, argv), flush=True)
    return status


def _autocast_state(torch, kind):
    """``bf16``, ``fp16`` (torch's autocast on for ``kind``, in that dtype) or ``off``."""
    try:
        on, dtype = torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)
    except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: CUDA's only, by the old names
        if kind != "cuda":
            return "off"
        on, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    if not on:
        return "off"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def _most(dtypes):
    if not dtypes:
        return "none"
    names = [str(d).replace("torch.", "") for d in dtypes]
    return max(set(names), key=names.count)


def result_line(label, argv):
    """What the run wrote: validation F1 of the whole-list training, the feature files against the names of its
    report, their width, dtype and finiteness, the device and peak memory of its manifest."""
    import config
    from extraction.writer import read_manifest

    feature = argv[argv.index("--feature_name") + 1]
    out = os.path.join(config.FEATURE_ROOT, DATASET, f"{feature}-UTT")
    manifest = read_manifest(out)
    ft = manifest["finetune"]
    best = ft["trainings"]["all"]
    import pandas as pd

    names = pd.read_csv(os.path.join(out, "extract_report.csv"))["name"].astype(str).tolist()
    arrays = [np.load(p) for p in sorted(glob.glob(os.path.join(out, "*.npy")))]
    widths = sorted({a.shape[-1] if a.ndim == 1 else -1 for a in arrays})
    dtypes = sorted({str(a.dtype) for a in arrays})
    finite = bool(arrays) and all(np.isfinite(a.astype(np.float32)).all() for a in arrays)
    return (f"result {label}: val_f1 {best['best_f1']:.4f}; best_epoch {best['best_epoch']} of {best['epochs_run']}; "
            f"files {len(arrays)} of {len(names)}; width {','.join(map(str, widths)) or 'none'} (embed_dim "
            f"{ft['settings']['embed_dim']}); dtype {','.join(dtypes) or 'none'}; finite {'yes' if finite else 'no'}; "
            f"device {ft['device']}; peak_memory {ft['peak_memory']}")


# ------------------------------------------------------------------------------------------- judging
def parse(text):
    """``{part: {"observed": {rank: {...}}, "result": {...}}}`` from the ``observed`` and ``result`` lines."""
    out = {}
    for m in OBSERVED.finditer(text):
        keys = ("rank", "local_rank", "world", "states_device", "states_dtype", "model", "autocast", "base",
                "adapters", "quantised", "current_device", "bf16_supported")
        rec = dict(zip(keys, m.groups()[1:]))
        for k in ("rank", "local_rank", "world", "quantised"):
            rec[k] = int(rec[k])
        rec["bf16_supported"] = rec["bf16_supported"] == "yes"
        out.setdefault(m.group(1), {}).setdefault("observed", {})[rec["rank"]] = rec
    for line in text.splitlines():
        m = RESULT.search(line)
        if m:
            g = m.groups()
            out.setdefault(g[0], {})["result"] = {
                "val_f1": float(g[1]), "best_epoch": int(g[2]), "epochs_run": int(g[3]), "files": int(g[4]),
                "names": int(g[5]), "width": g[6], "embed_dim": int(g[7]), "dtype": g[8], "finite": g[9] == "yes",
                "device": g[10], "peak_memory": g[11].strip()}
    return out


def judge(part, found, ranks=1):
    """None when ``found`` (parse()'s record of ``part``) shows a good run, else what is wrong."""
    res, obs = found.get("result"), found.get("observed") or {}
    cuda = part.endswith("_cuda")
    if not res:
        return "no result line (the run did not finish)"
    if sorted(obs) != list(range(ranks)):
        return f"observed ranks {sorted(obs)}, not 0 to {ranks - 1}"
    if res["files"] != res["names"] or res["files"] == 0:
        return f"{res['files']} feature files for {res['names']} names"
    if res["width"] != str(res["embed_dim"]):
        return f"embedding width {res['width']}, not {res['embed_dim']} (--embed_dim)"
    if not res["finite"]:
        return "embeddings not finite"
    if not res["device"].startswith("cuda" if cuda else "cpu"):
        return f"the manifest says it ran on {res['device']}"
    for rank, o in sorted(obs.items()):
        want = f"cuda:{o['local_rank']}" if cuda else "cpu"
        wrong = [f"{k} {o[k]}" for k in ("states_device", "model") if o[k] != want]
        if cuda and o["current_device"] != str(o["local_rank"]):
            wrong.append(f"current_device {o['current_device']}")
        if wrong:
            return f"rank {rank}: {', '.join(wrong)}; expected {want}"
        if cuda and o["bf16_supported"] and not part.startswith("text_4bit"):
            # (the states' dtype is the last layer's: a LayerNorm gives float32 under autocast, Qwen2's RMSNorm bf16)
            if o["autocast"] != "bf16" or o["base"] != "bfloat16":
                return (f"rank {rank}: autocast {o['autocast']}, base {o['base']}; expected bf16 autocast over a "
                        "bfloat16 base")
        if part.startswith("text_4bit"):
            if o["quantised"] < 1:
                return "no 4-bit layer in the model (--load_in_4bit)"
            if o["bf16_supported"] and o["autocast"] != "bf16":
                return f"autocast {o['autocast']}, not bf16"
        if not cuda and (o["autocast"] != "off" or o["states_dtype"] != "float32"):
            return f"on the CPU: autocast {o['autocast']}, states {o['states_dtype']} (expected off, float32)"
    if part in ("text_cuda", "audio_cuda", "text_cpu", "audio_cpu") and res["val_f1"] < LEARNT_F1:
        return f"validation F1 {res['val_f1']:.4f} < {LEARNT_F1}: the {'keyword' if 'text' in part else 'pitch'} " \
               "was not learnt"
    return None


# ------------------------------------------------------------------------------------------- running
def _error_line(text):
    found = re.findall(r"^(?:[\w.]+(?:Error|Exception)\b.*|error: .*)$", text, re.M)
    return found[-1].strip()[:240] if found else ""


class Job:
    def __init__(self, part, argv, log_path, env):
        self.part, self.argv, self.log_path, self.t0 = part, argv, log_path, time.monotonic()
        self.log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, env=env)  # our process group: a kill of the check reaches it
        self.timed_out = False

    def wait(self, deadline):
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.stop()
        self.log.close()
        self.seconds = time.monotonic() - self.t0
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            self.text = f.read()
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # torchrun passes it to its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_observe"]:  # inside one run: python bench/finetune_cuda.py _observe LABEL -- FLAGS
        return observe(argv[1], argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", help="folder for the data set, the models and the runs (made if missing)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default): every part; cpu: the "
                                                                               "CPU parts")
    p.add_argument("--gpus", type=int, default=None, help="GPUs of the machine (default: as torch counts them)")
    p.add_argument("--epochs", type=int, default=8, help="at most this many epochs a run (default 8; patience 3)")
    p.add_argument("--budget", type=float, default=300, help="seconds for everything (default 300)")
    p.add_argument("--part_timeout", type=float, default=120, help="seconds for one run (default 120)")
    p.add_argument("--parts", default=None, help=f"only these parts, comma-separated (of {', '.join(PARTS)})")
    args = p.parse_args(argv)
    wanted = [k.strip() for k in args.parts.split(",")] if args.parts else list(PARTS)
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        p.error(f"--parts: no part {', '.join(unknown)}; the parts: {', '.join(PARTS)}")
    deadline = time.monotonic() + args.budget
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    # everything under WORK, whatever the environment says; a run before in WORK is started over
    os.environ.update(MER_FEATURE_ROOT=os.path.join(work, "features"), MER_CACHE_ROOT=os.path.join(work, "cache"),
                      MER_TRAIN_LST=os.path.join(work, "train_lst"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    shutil.rmtree(os.path.join(work, "features", DATASET), ignore_errors=True)
    signal.signal(signal.SIGTERM, _interrupt)  # the check's timeout: stop the runs, say so
    t0 = time.monotonic()
    data = write_data(work)
    print(f"data set {DATASET}: {len(LABELS)} labels, keyword texts and pitch tones; tiny Qwen2 and HuBERT; made in "
          f"{time.monotonic() - t0:.1f}s", flush=True)
    cuda = args.device == "cuda"
    gpus = args.gpus
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if cuda else 0
    skipped = {}
    if not cuda:
        skipped.update({k: "--device cpu: no CUDA part" for k in PARTS if k.endswith("_cuda")})
    else:
        if importlib.util.find_spec("bitsandbytes") is None:
            skipped["text_4bit_cuda"] = "bitsandbytes is not installed (pip install bitsandbytes)"
        if gpus < 2:
            skipped["text_ranks_cuda"] = f"{gpus} GPU: the 2-rank check needs 2 GPUs"
    cores = os.cpu_count() or 2
    threads = max(1, min(4, cores // 4)) if cuda else None  # the CPU runs go beside the CUDA ones

    def command(part):
        flags = part_flags(part, data, args.epochs, threads if part.endswith("_cpu") else None)
        script = [os.path.join(REPO, "bench", "finetune_cuda.py"), "_observe", part, "--", *flags]
        if part == "text_ranks_cuda":
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script]
        return [sys.executable, *script]

    env = dict(os.environ)
    statuses, texts = {}, []
    cpu_parts = [k for k in ("text_cpu", "audio_cpu") if k in wanted]
    order = [k for k in PARTS if k.endswith("_cuda") and k in wanted]
    jobs = []
    try:
        if cuda:  # beside the CUDA runs; waited for at the end
            jobs += [Job(k, command(k), os.path.join(work, f"{k}.log"), env) for k in cpu_parts]
        else:
            order = cpu_parts + order
        for part in order:
            if part in skipped:
                statuses[part] = (SKIPPED, skipped[part])
                print(f"part {part}: skipped: {skipped[part]}", flush=True)
                continue
            job = Job(part, command(part), os.path.join(work, f"{part}.log"), env)
            jobs.insert(0, job)
            statuses[part] = finish(job, min(deadline, time.monotonic() + args.part_timeout))
            texts.append(jobs.pop(0).text)
        while jobs:
            job = jobs[0]
            statuses[job.part] = finish(job, min(deadline, job.t0 + args.part_timeout * 1.5))
            texts.append(jobs.pop(0).text)
    except KeyboardInterrupt:
        for job in jobs:
            job.stop()
        print("interrupted", flush=True)
        return 130
    found = parse("\n".join(texts))
    for modality in ("text", "audio"):
        f1 = {d: found.get(f"{modality}_{d}", {}).get("result", {}).get("val_f1") for d in ("cuda", "cpu")}
        if all(v is not None for v in f1.values()):
            print(f"compare {modality}: val_f1 cuda {f1['cuda']:.4f}, cpu {f1['cpu']:.4f}", flush=True)
    counts = {s: sum(v[0] == s for v in statuses.values()) for s in (OK, SKIPPED, FAILED)}
    print(f"finetune_cuda: {counts[OK]} ok, {counts[SKIPPED]} skipped, {counts[FAILED]} failed in "
          f"{time.monotonic() - t0:.1f}s", flush=True)
    return 1 if counts[FAILED] else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def finish(job, deadline):
    """Wait for ``job``, copy its output here, judge it and print its ``part`` line; ``(status, note)``."""
    rc = job.wait(deadline)
    print(f"----- {job.part}: {' '.join(job.argv[1:4])} ... (exit code {rc}"
          f"{', timed out' if job.timed_out else ''})\n{job.text.rstrip()}\n-----", flush=True)
    found = parse(job.text).get(job.part, {})
    if job.timed_out:
        verdict = f"timed out after {job.seconds:.0f}s"
    elif rc != 0:
        line = _error_line(job.text)
        verdict = f"exit code {rc}" + (f": {line}" if line else "")
    else:
        verdict = judge(job.part, found, ranks=2 if job.part == "text_ranks_cuda" else 1)
    if verdict:
        print(f"part {job.part}: failed in {job.seconds:.1f}s: {verdict}", flush=True)
        return FAILED, verdict
    res = found["result"]
    obs = found["observed"][0]
    print(f"part {job.part}: ok in {job.seconds:.1f}s: val_f1 {res['val_f1']:.4f}, autocast {obs['autocast']}, "
          f"states {obs['states_dtype']}, {res['files']} files of width {res['width']}", flush=True)
    return OK, None


if __name__ == "__main__":
    sys.exit(main())
