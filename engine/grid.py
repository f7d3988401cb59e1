"""Many train.py runs at once: a grid of runs over a pool of processes on one machine (its CPU cores and GPUs
shared out), or over a cluster through submitit (SLURM job arrays).

    from engine.grid import run_grid
    results = run_grid([("lr1e-3", ["--feat", "a", "--lr", "1e-3"]), ("lr1e-4", cfg)], "saved/grid",
                       jobs=8, gpus=[0, 1, 2, 3])
    # the same from a shell: one run a line, "[name<TAB>]train.py flags"
    python -m engine.grid --specs runs.txt --grid_dir saved/grid --jobs 8 --gpus 0,1,2,3
    python -m engine.grid --specs runs.txt --grid_dir saved/grid --cluster slurm --slurm_partition gpu \
        --slurm_gpus_per_task 1 --slurm_time 60 --jobs 32

A run is one train.py run, given as a ``TrainConfig``, a dict of its settings or a train.py argument list,
optionally with a name (``(name, spec)``). Where the runs go:

* ``jobs`` 1, no GPUs, no cluster: in this process, one after another, as the drivers always did (the first
  error stops the grid, as before);
* otherwise each run is its own process, ``python train.py --config <grid>/specs/<name>.yaml`` (its settings
  written out, so that the process trains exactly the run this process describes), ``jobs`` at a time. With
  ``gpus`` each job slot owns one GPU (``CUDA_VISIBLE_DEVICES`` in its environment, ``--device cuda``); slots
  are dealt out over the GPUs in turn, so ``jobs=8, gpus=[0, 1, 2, 3]`` puts two runs on each GPU. Every
  process gets ``--threads`` (default ``max(1, cores // jobs)``, also for the BLAS/OpenMP pools): two jobs
  with a thread per core each wait on each other's threads (see ``common.utils.set_threads``);
* ``cluster="slurm"``: the same processes as jobs of a SLURM job array submitted by submitit (``jobs``: how
  many run at once); ``cluster="local"`` sends them down the same submission path through submitit's
  LocalExecutor on this machine (``jobs`` at a time), which needs no SLURM.

Each process writes its output (stdout and stderr) to ``<grid>/logs/<name>.log``; the run folder's own
``train.log`` is written as always. The grid reads each run's summary from the folder its process names
(``RUN: <folder>``, then ``summary.json``). A failed run is reported with its name, exit code, log and the
error line of its log, and the others go on; :class:`GridFailed` lists every failure at the end. Runs are
resumed (train.py ``--resume``): a finished run is skipped without starting a process (its summary is read),
an interrupted one continues from its ``last.pth``. Two runs of one grid that would write the same run folder
are trained once. One line per finished run (and a tqdm bar over the runs) shows the progress.

The runs end with their driver: SIGTERM or SIGHUP to it (as Ctrl-C) stops the runs going before it exits
(:meth:`Grid.__enter__`), and on Linux a run of the local pool also gets SIGTERM when its driver dies however it
dies, ``kill -9`` included (:func:`end_with_driver`: ``prctl(PR_SET_PDEATHSIG)``; the runs are in the driver's
process group, so elsewhere ``kill -- -<pgid>`` ends them all). A stopped run resumes from its ``last.pth``.

Results do not depend on the mode but on the settings, the seed and the CPU threads: with the same
``--threads`` a run in its own process gives the numbers of the same run in this process, bit for bit. Another
thread count changes the order of floating-point sums, and training carries that further: of 8 demo runs
(one feature alone, 10 epochs) trained with 2 threads and again with 1, 6 gave the same figures, one another
test F1 in the fourth digit, and one a different best epoch (test F1 0.6182 against 0.6425). Give the same
``--threads`` where two modes must agree.

Why submitit for clusters: it is a small pure-Python package that turns a Python call into a SLURM job (job
arrays included, with a cap on how many run at once), keeps each job's logs and result, and runs the same
submission path locally for testing; the grid needs nothing more. Ray would add a running cluster service and
its scheduler to what is a list of independent processes.
"""

import argparse
import collections
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import config
from common.errors import DataError, OptionalDependencyError

SKIPPED, DONE, FAILED = "skipped", "done", "failed"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DRIVER_ENV = "MER_GRID_DRIVER"  # the pid of the process whose grid started this train.py (see end_with_driver)
DRIVER_SIGNALS = ("SIGTERM", "SIGHUP")  # end a grid's runs with it (SIGINT: KeyboardInterrupt does already)
CLUSTERS = ("slurm", "local")
CLUSTER_TIMEOUT_MIN = 240  # submitit's own default is 5 minutes on SLURM, 2 locally: too short for training


@dataclasses.dataclass
class RunResult:
    """What became of one run: ``status`` done (trained now), skipped (finished before) or failed."""

    name: str
    status: str
    summary: dict = None
    returncode: int = None
    log: str = None
    seconds: float = 0.0
    error: str = None

    @property
    def ok(self):
        return self.status != FAILED

    def line(self):
        """The progress line of a finished run."""
        if not self.ok:
            return f"{self.name}: FAILED ({self.error})"
        s = self.summary or {}
        score = "".join(f", {k.replace('_', ' ')} {s[k]:.4f}" for k in ("valid_f1", "test_f1")
                        if isinstance(s.get(k), (int, float)))
        return f"{self.name}: {self.status} in {self.seconds:.1f}s{score}"


class GridFailed(DataError):
    """Some runs of a grid failed (the others finished); the message names each, its exit code and log."""

    def __init__(self, failed, total):
        self.failed = list(failed)
        super().__init__(f"{len(self.failed)} of {total} runs failed (finished runs are kept; a rerun skips them): "
                         + "; ".join(f"{r.name} ({r.error})" for r in self.failed))


class RunFailed(DataError):
    """A run a driver asked for failed (thrown into that driver, see :func:`drive`)."""

    def __init__(self, result):
        self.result = result
        super().__init__(f"run {result.name} failed ({result.error})")


# ------------------------------------------------------------------------------------------- specs
def as_config(spec):
    """A ``TrainConfig`` from a TrainConfig, a dict of settings, or train.py flags (a list or one string)."""
    from engine.config import TrainConfig

    if isinstance(spec, TrainConfig):
        return spec
    if isinstance(spec, dict):
        return TrainConfig.from_dict(spec)
    if isinstance(spec, str):
        spec = shlex.split(spec)
    return TrainConfig.from_argv([str(a) for a in spec])


def safe_name(name):
    """A run name usable as a file name (letters, digits and ``.=+-_``)."""
    out = re.sub(r"[^A-Za-z0-9.=+_-]+", "_", str(name)).strip("._") or "run"
    return out[:150]


def default_name(cfg):
    """A run's name from where it is written: the last folders of its save_root, its run name, its seed."""
    parts = [p for p in os.path.normpath(cfg.save_root).split(os.sep) if p not in ("", ".", "..")][-2:]
    seed = [] if f"seed{cfg.seed}" in parts else [f"seed{cfg.seed}"]
    return safe_name("_".join(parts + [cfg.run_name or cfg.model] + seed))


def read_specs(path):
    """Runs from a text file (``-``: standard input): one a line, ``[name<TAB>]train.py flags`` (shell words);
    blank lines and ``#`` comments skipped."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, flags = line.partition("\t")
        if not sep:
            name, flags = None, line
        try:
            argv = shlex.split(flags)
        except ValueError as e:
            raise DataError(f"--specs {path}, line {n}: {e}: {line.strip()!r}") from None
        out.append((name.strip() or None if name else None, argv))
    return out


def cpu_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_gpus(text):
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]`` (None or empty: no GPUs); a GPU may be listed twice to weigh it."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        gpus = [int(str(g).strip()) for g in items]
    except ValueError:
        raise DataError(f"--gpus {text!r}: give GPU numbers separated by commas, e.g. 0,1,2,3") from None
    if any(g < 0 for g in gpus):
        raise DataError(f"--gpus {text!r}: GPU numbers start at 0")
    return gpus


def parse_submitit(items):
    """``["slurm_account=x", "timeout_min=60"]`` -> a dict of submitit parameters (values read as YAML)."""
    from engine.config import parse_key_values

    return parse_key_values(items, "--submitit", " (submitit's parameters)")


# ------------------------------------------------------------------------------------------- a run's process
def _finished(cfg):
    """``(run_dir, summary)``: the folder the run will write (None when it cannot be told here: the child
    will say why) and, when a finished run of these settings is there, its summary (train.py --resume)."""
    from engine.config import check_run_folder

    if cfg.save_as_time:
        return None, None
    try:
        resolved = cfg.resolved()
        run_dir = resolved.run_dir()
        state = check_run_folder(run_dir, resolved)
    except Exception:  # the run's own process reports the problem, in its log
        return None, None
    if state != "done":
        return run_dir, None
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return run_dir, None
    if cfg.test and "test_f1" not in summary:  # train.py --resume scores it first
        return run_dir, None
    summary["run_dir"] = run_dir
    return run_dir, summary


def _write_spec(cfg, path):
    """The settings of a run as a YAML that ``train.py --config`` reads back into the same config (the split
    list stays as given: a default one is not written out, since the run's name depends on that)."""
    import yaml

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
    return path


def child_command(spec_path, threads=None, device=None):
    """The train.py command of one run (the python of this process, train.py of this repository)."""
    cmd = [sys.executable, os.path.join(config.REPO_ROOT, "train.py"), "--config", os.path.abspath(spec_path)]
    if threads:
        cmd += ["--threads", str(threads)]
    if device:
        cmd += ["--device", device, "--gpu", "0"]
    return cmd


def child_env(threads=None, gpu=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{DRIVER_ENV: str(os.getpid())})
    if threads:
        env.update({k: str(threads) for k in THREAD_ENV})
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def end_with_driver():
    """In a train.py process that a local grid started (``MER_GRID_DRIVER`` names the driver's pid): ask Linux to
    send this process SIGTERM when the driver ends, however it ends (``prctl(PR_SET_PDEATHSIG)``, so also after a
    SIGKILL of the driver), and end now if the driver is gone already. Linux sends it when the *thread* that
    started the run ends: a :class:`Grid` starts and waits for its runs in the thread that uses it, so use a grid
    from one thread that outlives its runs. The variable is removed from this process's
    environment so that no process it starts takes it for its own. Elsewhere (not Linux) it does nothing: there a
    driver ended by SIGTERM, SIGHUP or Ctrl-C still ends its runs (:meth:`Grid.__enter__`), a SIGKILLed one
    cannot."""
    driver = os.environ.pop(DRIVER_ENV, None)
    if not driver or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != driver:  # the driver ended before the request above: this run has no one to report to
        sys.exit(143)


def _error_line(log_path):
    """The last ``error:`` line of a log (else its last line), to report a failed run in one line."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":")[0]]
    return (errors or lines or [""])[-1][:300]


def collect(name, returncode, log_path, seconds):
    """The result of a finished process: its summary from the folder its ``RUN:`` line names."""
    def failed(why):
        line = _error_line(log_path)
        return RunResult(name, FAILED, returncode=returncode, log=log_path, seconds=seconds,
                         error=f"{why}; log {log_path}" + (f": {line}" if line else ""))

    if returncode != 0:
        return failed(f"exit code {returncode}")
    run_dir = None
    with open(log_path, errors="replace") as f:
        for ln in f:
            if ln.startswith("RUN: "):
                run_dir = ln[len("RUN: "):].rstrip("\n")
    if not run_dir:
        return failed("exit code 0 but no 'RUN: <folder>' line")
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        return failed(f"no readable summary.json in {run_dir} ({e})")
    summary["run_dir"] = run_dir
    return RunResult(name, DONE, summary=summary, returncode=0, log=log_path, seconds=seconds)


def cluster_task(cmd, log_path, cwd, env_updates, threads):
    """One run inside a submitit job (this function is what submitit pickles): the train.py process with its
    output in ``log_path``; returns its exit code. ``--threads``: the job's CPUs (``SLURM_CPUS_PER_TASK``) when
    SLURM gives them, else ``threads``."""
    n = os.environ.get("SLURM_CPUS_PER_TASK") or threads
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_updates)
    if n:
        cmd = list(cmd) + ["--threads", str(n)]
        env.update({k: str(n) for k in THREAD_ENV})
    with open(log_path, "w") as log:
        log.write(f"# {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


# ------------------------------------------------------------------------------------------- the grid
class Grid:
    """Runs train.py runs in this process, over a local pool of processes, or on a cluster (module docstring).

    ``submit(name, spec)`` queues a run and returns its key; ``wait()`` returns ``(key, RunResult)`` of the
    next run to finish. :func:`run_grid` runs a list; :func:`drive` runs driver generators (pseudo/drivers.py)
    that ask for runs one at a time."""

    def __init__(self, grid_dir=None, jobs=1, gpus=None, threads=None, cluster=None, cluster_args=None,
                 resume=True, progress=True, total=None, in_process=None):
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise DataError(f"--jobs {jobs!r}: give a whole number of concurrent runs, 1 or more")
        if cluster not in (None,) + CLUSTERS:
            raise DataError(f"--cluster {cluster!r}: use {' or '.join(CLUSTERS)}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise DataError(f"--threads {threads!r}: give a whole number of threads, 1 or more")
        self.jobs, self.gpus, self.cluster = jobs, parse_gpus(gpus), cluster
        if cluster == "slurm" and self.gpus:
            raise DataError("--gpus names GPUs of this machine; on SLURM ask for them with --slurm_gpus_per_task 1")
        self.in_process = (jobs == 1 and not self.gpus and not cluster) if in_process is None else in_process
        if not self.in_process and not grid_dir:
            raise DataError("several runs at once need a grid folder (grid_dir) for their logs")
        self.grid_dir = grid_dir
        self.threads = threads or max(1, cpu_cores() // jobs)
        self.resume, self.progress, self.total = resume, progress, total
        self.cluster_args = dict(cluster_args or {})
        self._queue = collections.deque()  # (key, name, cfg)
        self._done = collections.deque()  # (key, RunResult) ready to hand out
        self._running = {}  # slot or job -> (key, name, run_dir, t0, handle)
        self._by_dir = {}  # run folder in flight -> [(key, name)] waiting for it
        self._names, self._next_key, self._finished, self._submitted = set(), 0, 0, 0
        self._executor, self._bar = None, None

    # ------------------------------------------------------------------ submitting
    def submit(self, name, spec):
        cfg = as_config(spec)
        name = safe_name(name) if name else default_name(cfg)
        base, k = name, 2
        while name in self._names:  # names are log files: unique within the grid
            name, k = f"{base}-{k}", k + 1
        self._names.add(name)
        key, self._next_key = self._next_key, self._next_key + 1
        if not self.in_process:
            cfg = cfg.replace(resume=self.resume or cfg.resume, quiet=True)
        self._queue.append((key, name, cfg))
        return key

    def wait(self):
        """``(key, RunResult)`` of the next run to finish (in this process: the next one, trained now)."""
        if self.in_process:
            return self._run_here()
        while not self._done:
            if not self._queue and not self._running:
                raise RuntimeError("Grid.wait() with no run submitted")
            self._start_queued()
            if not self._done:
                self._poll()
        key, res = self._done.popleft()
        self._finished += 1
        self._report(res)
        return key, res

    def _run_here(self):
        key, name, cfg = self._queue.popleft()
        t0 = time.time()
        summary = train_here(name, cfg)  # an error stops the grid, as the drivers always did
        self._finished += 1
        return key, RunResult(name, DONE, summary=summary, returncode=0, seconds=time.time() - t0)

    def _start_queued(self):
        """Start queued runs while a slot is free (on SLURM: all of them, as one job array that SLURM runs
        ``jobs`` at a time); a finished run is skipped, a run folder already in flight shares its result."""
        launch = []
        while self._queue and (self.cluster == "slurm" or len(self._running) + len(launch) < self.jobs):
            key, name, cfg = self._queue.popleft()
            run_dir, summary = _finished(cfg) if cfg.resume else (None, None)
            if summary is not None:
                self._done.append((key, RunResult(name, SKIPPED, summary=summary, returncode=0)))
                continue
            if run_dir and run_dir in self._by_dir:
                self._by_dir[run_dir].append((key, name))
                continue
            if run_dir:
                self._by_dir[run_dir] = []
            spec = _write_spec(cfg, os.path.join(self.grid_dir, "specs", name + ".yaml"))
            log_path = os.path.join(self.grid_dir, "logs", name + ".log")
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            launch.append((key, name, run_dir, spec, log_path))
        if not launch:
            return
        if not self.cluster:
            for item in launch:
                self._start_local(*item)
        elif self.cluster == "local":
            for item in launch:
                self._submit_cluster(*item)
        else:
            ex = self._executor_for_cluster()
            with ex.batch():  # one sbatch: a job array
                for item in launch:
                    self._submit_cluster(*item)

    # ------------------------------------------------------------------ local pool
    def _start_local(self, key, name, run_dir, spec, log_path):
        slot = next(s for s in range(self.jobs) if s not in self._running)
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        cmd = child_command(spec, self.threads, "cuda" if gpu is not None else None)
        with open(log_path, "w") as log:
            log.write(f"# {shlex.join(cmd)}" + (f"  (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else "") + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, env=child_env(self.threads, gpu), stdout=log, stderr=subprocess.STDOUT)
        self._running[slot] = (key, name, run_dir, time.time(), (proc, log_path))

    def _poll(self):
        finished = []
        for slot, (key, name, run_dir, t0, handle) in self._running.items():
            code = self._exit_code(handle)
            if code is not None:
                finished.append(slot)
                res = self._result(name, code, handle, time.time() - t0)
                self._done.append((key, res))
                for other_key, other in self._by_dir.pop(run_dir, []) if run_dir else []:
                    self._done.append((other_key, dataclasses.replace(res, name=other)))
        for slot in finished:
            del self._running[slot]
        if not finished:
            time.sleep(2.0 if self.cluster == "slurm" else 0.2)

    def _exit_code(self, handle):
        if self.cluster:
            job = handle[0]
            return 0 if job.done() else None
        return handle[0].poll()

    def _result(self, name, code, handle, seconds):
        if not self.cluster:
            return collect(name, code, handle[1], seconds)
        job, log_path = handle
        try:
            code = job.result()
        except Exception as e:  # the job itself failed: killed, timed out, lost
            err = str(e).strip().splitlines()
            return RunResult(name, FAILED, log=log_path, seconds=seconds,
                             error=f"submitit job {job.job_id} failed: {err[-1] if err else type(e).__name__}; "
                                   f"its logs: {job.paths.stderr}")
        return collect(name, code, log_path, seconds)

    # ------------------------------------------------------------------ cluster (submitit)
    def _executor_for_cluster(self):
        if self._executor is not None:
            return self._executor
        try:
            import submitit
        except ImportError:
            raise OptionalDependencyError("--cluster needs submitit (SLURM job arrays): pip install submitit") from None
        params = {"timeout_min": CLUSTER_TIMEOUT_MIN, "slurm_array_parallelism": self.jobs, "name": "mer-grid"}
        params.update(self.cluster_args)
        ex = submitit.AutoExecutor(folder=os.path.join(self.grid_dir, "submitit", "%j"), cluster=self.cluster)
        # the jobs import this module: this repository goes on their PYTHONPATH, wherever they start
        setup = [f"export PYTHONPATH={shlex.quote(config.REPO_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"]
        params.setdefault(f"{self.cluster}_setup", setup)
        try:
            ex.update_parameters(**params)
        except (NameError, AssertionError, ValueError) as e:
            raise DataError(f"submitit refused the cluster settings: {' '.join(str(e).split())}") from None
        self._executor = ex
        return ex

    def _slurm_gpus(self):
        p = self.cluster_args if self.cluster == "slurm" else {}
        return int(p.get("slurm_gpus_per_task") or p.get("gpus_per_node") or p.get("slurm_gpus_per_node") or 0)

    def _submit_cluster(self, key, name, run_dir, spec, log_path):
        ex = self._executor_for_cluster()
        env, threads = {}, None
        if self.cluster == "local":  # this machine: its GPUs dealt out as by the local pool, --threads likewise
            threads = self.threads
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[self._submitted % len(self.gpus)])
        self._submitted += 1
        cmd = child_command(spec, None, "cuda" if env or self._slurm_gpus() else None)
        job = ex.submit(cluster_task, cmd, log_path, os.getcwd(), env, threads)
        self._running[("job", key)] = (key, name, run_dir, time.time(), (job, log_path))

    # ------------------------------------------------------------------ progress
    def _report(self, res):
        if not self.progress:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, unit="run", desc="grid", file=sys.stderr, dynamic_ncols=True)
        self._bar.update(1)
        self._bar.write(f"[{self._finished}{'/' + str(self.total) if self.total else ''}] {res.line()}",
                        file=sys.stderr)

    def close(self, cancel=False):
        """Close the progress bar; ``cancel``: stop runs still going (an interrupted grid: its runs resume)."""
        if cancel:
            for key, name, run_dir, t0, handle in self._running.values():
                try:
                    handle[0].cancel() if self.cluster else handle[0].terminate()
                except Exception:
                    pass
            for key, name, run_dir, t0, handle in self._running.values():
                if not self.cluster:
                    try:
                        handle[0].wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        handle[0].kill()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        """A grid of processes ends its runs with the driver: SIGTERM or SIGHUP (where its action is the default,
        so ``nohup`` is kept) become :class:`GridInterrupted` in the main thread, and leaving the ``with`` block
        with an exception stops the runs going (:meth:`close`); a run's own process also gets SIGTERM when the
        driver dies without that (Linux, :func:`end_with_driver`)."""
        self._handlers = {}
        if not self.in_process and threading.current_thread() is threading.main_thread():
            for name in DRIVER_SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
                    self._handlers[signum] = signal.signal(signum, self._interrupted)
        return self

    def _interrupted(self, signum, frame):
        self._restore_handlers()  # a second signal while the runs are stopped ends the driver at once
        raise GridInterrupted(signum)

    def _restore_handlers(self):
        for signum, handler in getattr(self, "_handlers", {}).items():
            signal.signal(signum, handler)
        self._handlers = {}

    def __exit__(self, exc_type, *exc):
        try:
            self.close(cancel=exc_type is not None)
        finally:
            self._restore_handlers()
        return False


class GridInterrupted(SystemExit):
    """The driver of a grid got SIGTERM or SIGHUP: its runs are stopped (they resume on a rerun), and the driver
    exits with 128 + the signal number (143 for SIGTERM), the status a shell reports for a process the signal
    ended."""

    def __init__(self, signum):
        super().__init__(128 + int(signum))
        self.signum = signum


def run_grid(specs, grid_dir=None, raise_on_failure=True, on_result=None, **options):
    """Run ``specs`` (each a spec or ``(name, spec)``; see :class:`Grid` for ``options``); returns a
    :class:`RunResult` per spec, in the order of ``specs``. ``on_result(index, result)`` is called as each run
    finishes (in this process: right after it, in order). Raises :class:`GridFailed` after the others finished
    when a run failed (``raise_on_failure``)."""
    items = [s if isinstance(s, tuple) else (None, s) for s in specs]
    results = [None] * len(items)
    with Grid(grid_dir, total=len(items), **options) as grid:
        keys = {grid.submit(name, spec): i for i, (name, spec) in enumerate(items)}
        for _ in items:
            key, res = grid.wait()
            results[keys[key]] = res
            if on_result is not None and res.ok:
                on_result(keys[key], res)
    failed = [r for r in results if not r.ok]
    if failed and raise_on_failure:
        raise GridFailed(failed, len(results))
    return results


def drive(drivers, grid=None):
    """Run driver generators, each yielding ``(name, spec)`` for a run it needs and receiving that run's summary
    (pseudo/drivers.py: two-stage training, the ACL loop); returns each driver's return value.

    In this process (``grid`` None or in-process) each driver runs to its end before the next starts, as
    before. Otherwise every driver's next run is submitted at once: a driver whose run finishes goes on (its
    own steps, e.g. pseudo labels, run here) while the others' runs train. A driver whose run failed gets
    :class:`RunFailed` thrown in (it may handle it); :class:`GridFailed` lists the failures at the end."""
    drivers = list(drivers)
    results = [None] * len(drivers)
    if grid is None or grid.in_process:
        for i, gen in enumerate(drivers):
            try:
                request = next(gen)
                while True:
                    request = gen.send(train_here(*request))
            except StopIteration as stop:
                results[i] = stop.value
        return results
    failed, waiting = [], {}

    def advance(i, send=None, throw=None):
        try:
            request = drivers[i].throw(throw) if throw is not None else (
                drivers[i].send(send) if send is not None else next(drivers[i]))
        except StopIteration as stop:
            results[i] = stop.value
            return
        except RunFailed:
            return
        waiting[grid.submit(*request)] = i

    for i in range(len(drivers)):
        advance(i)
    while waiting:
        key, res = grid.wait()
        i = waiting.pop(key)
        if res.ok:
            advance(i, send=res.summary)
        else:
            failed.append(res)
            advance(i, throw=RunFailed(res))
    if failed:
        raise GridFailed(failed, grid._finished or len(failed))
    return results


def train_here(name, spec):
    """Train one run in this process (train.py's train()); its summary."""
    from engine.trainer import train

    return train(as_config(spec))


# ------------------------------------------------------------------------------------------- command line
def add_grid_flags(parser):
    """``--jobs --gpus --cluster --slurm_* --submitit`` on a command that trains many runs."""
    g = parser.add_argument_group("many runs at once (engine/grid.py)")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at once, each its own process (default 1: one after another in this process); "
                        "without --gpus each gets --threads max(1, cores // N)")
    g.add_argument("--gpus", default=None, metavar="LIST",
                   help="GPUs to spread the runs over, e.g. 0,1,2,3: each run gets one (CUDA_VISIBLE_DEVICES, "
                        "--device cuda); with --jobs 8 two runs share each GPU")
    g.add_argument("--cluster", choices=CLUSTERS, default=None,
                   help="submit the runs through submitit (pip install submitit): slurm (a SLURM job array, --jobs "
                        "at once) or local (the same submission path on this machine, for testing)")
    g.add_argument("--slurm_partition", default=None)
    g.add_argument("--slurm_gpus_per_task", type=int, default=None, help="GPUs per run (--device cuda when > 0)")
    g.add_argument("--slurm_cpus_per_task", type=int, default=None, help="CPUs per run (its --threads)")
    g.add_argument("--slurm_time", default=None, help="time limit per run, in minutes (default 240)")
    g.add_argument("--submitit", nargs="*", default=None, metavar="KEY=VALUE",
                   help="any other submitit parameter, e.g. slurm_account=myproj mem_gb=16 slurm_qos=normal")
    return parser


def grid_options(args, threads=None):
    """The :class:`Grid` options of a command line parsed with :func:`add_grid_flags`."""
    cluster_args = {}
    for key in ("slurm_partition", "slurm_gpus_per_task", "slurm_cpus_per_task"):
        if getattr(args, key, None) is not None:
            cluster_args[key] = getattr(args, key)
    if getattr(args, "slurm_time", None) is not None:
        t = str(args.slurm_time)
        cluster_args["timeout_min" if t.isdigit() else "slurm_time"] = int(t) if t.isdigit() else t
    cluster_args.update(parse_submitit(getattr(args, "submitit", None)))
    if cluster_args and not args.cluster:
        raise DataError("--slurm_* and --submitit settings need --cluster slurm (or local)")
    return {"jobs": args.jobs, "gpus": parse_gpus(args.gpus), "cluster": args.cluster, "cluster_args": cluster_args,
            "threads": threads if threads is not None else getattr(args, "threads", None)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", required=True, help="the runs, one a line: [name<TAB>]train.py flags (- : stdin)")
    p.add_argument("--grid_dir", required=True, help="folder of the runs' settings and logs (<grid_dir>/logs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run (default max(1, cores // jobs))")
    add_grid_flags(p)
    args = p.parse_args(argv)
    try:
        opts = grid_options(args)
        specs = read_specs(args.specs)
        if not specs:
            raise DataError(f"--specs {args.specs}: no runs")
        # from the command line every run is its own process with its log, also one at a time
        grid = Grid(args.grid_dir, total=len(specs), in_process=False, **opts)
        results = [None] * len(specs)
        with grid:
            keys = {grid.submit(name, argv_): i for i, (name, argv_) in enumerate(specs)}
            for _ in specs:
                key, res = grid.wait()
                results[keys[key]] = res
    except (DataError, OptionalDependencyError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"error: run {r.name} failed: {r.error}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} runs finished "
          f"({sum(r.status == SKIPPED for r in results)} skipped as finished before); logs in "
          f"{os.path.join(args.grid_dir, 'logs')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
