"""Seeds, devices, logging and small parsing helpers shared by the scripts."""

import ast
import contextlib
import logging
import os
import random
import sys

import numpy as np

# torch is imported inside the functions that need it, so that torch-free tools (the teacher client on a
# machine that only calls an API) can share this module's logger.


def set_seed(seed):
    """Seed Python, NumPy and torch (CPU and CUDA) and ask cuDNN for deterministic kernels."""
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def torchrun_local_rank():
    """This process's ``LOCAL_RANK`` under torchrun (which sets it with ``RANK`` and ``WORLD_SIZE``), else None."""
    rank = os.environ.get("LOCAL_RANK")
    if rank is None or "WORLD_SIZE" not in os.environ:
        return None
    return int(rank)


def resolve_device(device="auto", gpu=0, local_rank=None):
    """``auto`` picks CUDA (GPU ``gpu``) when available, else the CPU; ``cuda`` without one, or a GPU index
    torch does not see, fails with a ValueError that says what to pass instead. ``local_rank`` (under torchrun,
    see :func:`torchrun_local_rank`): CUDA is GPU ``local_rank`` (``gpu`` is not used), and an explicit index
    (``cuda:0``) is refused, as it would put every rank on that one GPU."""
    import torch
    device = str(device).lower()
    if local_rank is not None and device.startswith("cuda:"):
        raise ValueError(f"--device {device} under torchrun would put every rank on GPU {device[5:]}; give "
                         f"--device cuda or auto (torchrun picks GPU LOCAL_RANK, {local_rank} in this process)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device; "
                             "use --device cpu or --device auto")
        if device == "cuda":
            device = f"cuda:{gpu if local_rank is None else local_rank}"
        index, count = torch.device(device).index or 0, torch.cuda.device_count()
        if index >= count and local_rank is not None:
            raise ValueError(f"torchrun gave this process LOCAL_RANK {local_rank}, but torch sees {count} CUDA "
                             f"device(s); start at most {count} processes per node (--nproc_per_node {count}) or "
                             "set CUDA_VISIBLE_DEVICES")
        if index >= count:
            raise ValueError(f"GPU {index} was asked for (--gpu / --device), but torch sees {count} CUDA "
                             f"device(s), numbered 0 to {count - 1}; pass --gpu 0 or set CUDA_VISIBLE_DEVICES")
    elif device != "cpu":
        raise ValueError(f"unknown --device '{device}': use auto, cpu or cuda")
    return torch.device(device)


def process_device(device="auto", gpu=0):
    """The device of a process that trains or extracts (train.py, preprocess/extract_features.py), resolved by
    :func:`resolve_device` with torchrun's ``LOCAL_RANK`` when there is one, and, when it is a GPU, made the
    process's current CUDA device. Call it before any other CUDA call: pinned memory, ``is_bf16_supported``
    and the caching allocator work on the current device, GPU 0 in every rank otherwise."""
    import torch
    resolved = resolve_device(device, gpu, torchrun_local_rank())
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved.index)
    return resolved


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def add_threads_flag(parser):
    """``--threads N`` on a command that trains or embeds (see :func:`set_threads`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch and the numeric libraries (default: OMP_NUM_THREADS if set, else "
                             "torch's default, one per core); with several jobs on one machine give each cores/jobs")
    return parser


def set_threads(n=None, log=None):
    """Bound the CPU threads of this process: torch's intra-op pool and the BLAS/OpenMP pools of numpy and
    scikit-learn. ``n`` None: ``OMP_NUM_THREADS`` when it is set (torch reads it at start; the BLAS pools are
    bounded to it too), else nothing changes. Two jobs on two cores, each with a thread per core, wait on each
    other's threads: context training ran 8-10x slower. Returns the number of torch threads in use."""
    import torch

    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        n = int(env) if env.isdigit() and int(env) > 0 else None
    elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"--threads {n!r}: give a whole number of threads, 1 or more")
    if n is not None:
        torch.set_num_threads(n)
        for var in THREAD_ENV:  # for processes this one starts (data-loader workers, extraction shards)
            os.environ.setdefault(var, str(n))
        try:
            from threadpoolctl import threadpool_limits  # comes with scikit-learn

            threadpool_limits(n)
        except ImportError:
            pass
        if log is not None:
            log.info(f"CPU threads: {n} (torch, BLAS, OpenMP)")
    return torch.get_num_threads()


def error_line(e):
    """The one line a command prints for a bad-input error: a KeyError's message without the quotes repr adds."""
    return f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}"


def parse_feat_list(text):
    """``"['a','b']"`` (MRAC25 style), ``"a,b"`` or a list -> list of feature names. An empty or malformed list
    and a name given twice are refused (a repeated expert would train twice on one input and count twice)."""
    from common.errors import DataError

    if isinstance(text, (list, tuple)):
        names = [str(t).strip() for t in text]
    else:
        text = str(text).strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = None
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise DataError(f"--feat {text!r} is not a list of feature names: write a,b or \"['a','b']\"")
            names = [v.strip() for v in value]
        else:
            if any(c in text for c in "[]'\""):
                raise DataError(f"--feat {text!r} is not a list of feature names: write a,b or \"['a','b']\"")
            names = [t.strip() for t in text.split(",")]
    if not names or any(not n for n in names):
        raise DataError(f"--feat {text!r} has an empty feature name: give one or more names, e.g. a,b")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"--feat names {', '.join(twice)} more than once: give each feature once")
    return names


def get_logger(name="mer", log_file=None, level=logging.INFO, append=False):
    """A logger writing to stderr and, if given, to ``log_file`` (appended to with ``append``)."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a" if append else "w")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside ``path`` to write to; it replaces ``path`` only when the block ends without an
    error, so a killed or failed write never leaves a partial file that could be read as a result."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def versions(packages=("torch",)):
    """The project's version, Python's, the git commit (when run from a checkout) and those of ``packages``
    that are installed: what made a result, for the files that record it (checkpoints, feature manifests)."""
    import importlib.metadata as md
    import platform
    import subprocess

    import common

    out = {"project": common.__version__, "python": platform.python_version()}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
