"""The device of each torchrun rank and the way batches reach it (issue 23, cases 11 and 12), on the CPU: torch is
made to see two CUDA devices (nothing is run on them) and the torchrun environment is set by hand.

Case 11: train.py and preprocess/extract_features.py make GPU LOCAL_RANK the current device of each rank before
any other CUDA call (pinned memory, ``is_bf16_supported``), and refuse an explicit index (``cuda:0``) under
torchrun, in one line, before anything is written. Case 12: a pinned batch travels in its own dtype and is cast
on the device, never converted on the host into pageable memory. bench/gpu_check.sh checks the same on a GPU."""

import contextlib
import io
import json
import types

import numpy as np
import pytest
import torch
import yaml

import train as train_script
from engine import trainer
from extraction import encoders, runner

CUDA = torch.device("cuda")


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two CUDA devices; returns the list of calls that choose or touch one, in order."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device",
                        lambda d: calls.append(("set_device", d if isinstance(d, int) else torch.device(d).index)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: calls.append(("is_bf16_supported",)) or True)
    return calls


def torchrun(monkeypatch, local_rank, world=2):
    """The environment torchrun gives rank ``local_rank`` of ``world`` processes on one node; the gloo group of
    extraction's shards is not really started."""
    for key, value in {"LOCAL_RANK": local_rank, "RANK": local_rank, "WORLD_SIZE": world,
                       "LOCAL_WORLD_SIZE": world}.items():
        monkeypatch.setenv(key, str(value))
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: None)


def extract(tmp_path, *flags):
    """preprocess/extract_features.py in this process, over two names; (exit code, error lines)."""
    import extract_features

    names = tmp_path / "names.csv"
    names.write_text("name\nclip1\nclip2\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = extract_features.main(["--names", str(names), "--modality", "audio", "--model", "tiny-hubert",
                                      "--out", str(tmp_path / "features"), "--quiet", *flags])
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, [line for line in err.getvalue().splitlines() if line.startswith("error:")]


def stop_at_model_load(monkeypatch, calls):
    """Extraction stops where the model would load; that load asks for the dtype (``is_bf16_supported``) first."""
    def load_encoder(model, modality, device, dtype="auto", **kw):
        calls.append(("load_encoder", str(device)))
        encoders.resolve_dtype(dtype, device)
        raise runner.DataError("stopped where the model loads")

    monkeypatch.setattr(runner.enc_mod, "load_encoder", load_encoder)


def train_cli(tmp_path, *flags, config=None):
    """train.py in this process (the run itself replaced: it records its device); (exit code, error lines)."""
    split = tmp_path / "split.json"  # hashed into the run's identity; the replaced run reads nothing else
    split.write_text(json.dumps({part: {"names": ["a"], "emos": ["neutral"]} for part in ("train_info", "valid_info")}))
    argv = ["--split", str(split), "--save_root", str(tmp_path / "runs"), "--quiet", *flags]
    if config is not None:
        path = tmp_path / "args.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = ["--config", str(path), *argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train_script.main(argv)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, [line for line in err.getvalue().splitlines() if line.startswith("error:")]


def record_run(monkeypatch, calls):
    def run(cfg, class_names, device, run_dir):
        calls.append(("train", str(device)))
        return {}

    monkeypatch.setattr(trainer, "_train_locked", run)


# ------------------------------------------------------------------------------------------------ case 11
def test_case11_explicit_cuda_index_under_torchrun_is_refused(tmp_path, monkeypatch, two_gpus):
    torchrun(monkeypatch, local_rank=1)
    stop_at_model_load(monkeypatch, two_gpus)
    code, errors = extract(tmp_path, "--device", "cuda:0")
    assert code == 2 and len(errors) == 1, errors
    assert "--device cuda:0" in errors[0] and "torchrun" in errors[0] and "--device cuda" in errors[0]
    assert two_gpus == [] and not (tmp_path / "features").exists()

    record_run(monkeypatch, two_gpus)  # train.py: an index can come from a replayed args.yaml
    code, errors = train_cli(tmp_path, config={"device": "cuda:0"})
    assert code == 2 and len(errors) == 1, errors
    assert "--device cuda:0" in errors[0] and "torchrun" in errors[0] and "--device cuda" in errors[0]
    assert two_gpus == [] and not (tmp_path / "runs").exists()

    # without torchrun an index is the user's choice, as before
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key)
    assert train_cli(tmp_path, config={"device": "cuda:1"}) == (0, [])
    assert ("train", "cuda:1") in two_gpus


def test_case11_each_rank_sets_its_own_cuda_device(tmp_path, monkeypatch, two_gpus):
    torchrun(monkeypatch, local_rank=1)
    stop_at_model_load(monkeypatch, two_gpus)
    for device in ("cuda", "auto"):
        two_gpus.clear()
        code, errors = extract(tmp_path, "--device", device)
        assert code == 2 and errors == ["error: stopped where the model loads"]
        # GPU LOCAL_RANK is the current device before the first call that would open a context
        assert two_gpus == [("set_device", 1), ("load_encoder", "cuda:1"), ("is_bf16_supported",)], device

    record_run(monkeypatch, two_gpus)
    for flags in (["--device", "cuda"], ["--device", "auto", "--gpu", "0"]):
        two_gpus.clear()
        assert train_cli(tmp_path, *flags) == (0, [])
        assert two_gpus == [("set_device", 1), ("train", "cuda:1")], flags

    # a rank with no GPU of its own (3 processes, 2 GPUs) is refused, naming the fix
    torchrun(monkeypatch, local_rank=2, world=3)
    two_gpus.clear()
    code, errors = extract(tmp_path, "--device", "cuda")
    assert code == 2 and len(errors) == 1 and "LOCAL_RANK 2" in errors[0] and "--nproc_per_node" in errors[0]
    assert two_gpus == []

    # torchrun on the CPU (the tests' 2-process extraction): no CUDA call at all
    torchrun(monkeypatch, local_rank=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    two_gpus.clear()
    assert extract(tmp_path, "--device", "auto") == (2, ["error: stopped where the model loads"])
    assert two_gpus == [("load_encoder", "cpu")]


# ------------------------------------------------------------------------------------------------ case 12
class CopyLog:
    """``Tensor.pin_memory``, ``.to`` and ``.float`` recorded; a copy to CUDA stays on the host, marked as on the
    GPU. ``steps``: ``(what, from, to, dtype before, dtype after)`` with places host, pinned and cuda."""

    def __init__(self, monkeypatch):
        self.steps = []
        to, to_float = torch.Tensor.to, torch.Tensor.float

        def place(t):
            return getattr(t, "_place", "host")

        def pin_memory(t, *args):
            out = t.clone()
            out._place = "pinned"
            self.steps.append(("pin_memory", place(t), "pinned", str(t.dtype), str(t.dtype)))
            return out

        def move(t, *args, **kwargs):
            device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
            kwargs.pop("non_blocking", None)
            for a in args:
                if isinstance(a, torch.dtype):
                    dtype = a
                elif isinstance(a, (str, torch.device)):
                    device = a
                else:
                    raise AssertionError(f"unexpected .to argument {a!r}")
            where = place(t) if device is None else ("cuda" if torch.device(device).type == "cuda" else "host")
            out = to(t, dtype=dtype or t.dtype, copy=True, **kwargs)
            out._place = where
            self.steps.append(("to", place(t), where, str(t.dtype), str(out.dtype)))
            return out

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", move)
        monkeypatch.setattr(torch.Tensor, "float", lambda t, *a, **k: move(t, torch.float32))

    def host_casts(self):
        """Steps that change the dtype of a tensor not yet on the GPU (a conversion into pageable host memory)."""
        return [s for s in self.steps if s[1] != "cuda" and s[3] != s[4]]


def test_case12_pinned_copy_moves_first_then_casts_on_the_device(monkeypatch):
    torch.manual_seed(0)
    batch = {"input_values": torch.randn(2, 8), "attention_mask": torch.ones(2, 8, dtype=torch.long), "n": 2}
    expected = batch["input_values"].to(torch.bfloat16)
    enc = object.__new__(encoders.Encoder)  # to_device reads only the device and the dtype
    enc.device, enc.dtype = CUDA, torch.bfloat16
    log = CopyLog(monkeypatch)
    out = enc.to_device(batch)
    assert log.host_casts() == [], log.steps
    assert out["n"] == 2
    assert out["input_values"].dtype == torch.bfloat16 and out["input_values"]._place == "cuda"
    assert out["attention_mask"].dtype == torch.long and out["attention_mask"]._place == "cuda"
    assert torch.equal(out["input_values"], expected)  # the same rounding as a cast on the host
    moves = [s for s in log.steps if s[2] == "cuda" and s[1] != "cuda"]
    assert moves and all(s[1] == "pinned" for s in moves), log.steps  # through pinned memory, asynchronously

    # the training loader's copies (a float16 pack becomes float32): moved first, cast on the GPU too
    from dataloader.dataset import SampleSet

    log.steps.clear()
    t = SampleSet._to_device(types.SimpleNamespace(pin=True, device=CUDA), np.ones((3, 4), np.float16))
    assert t.dtype == torch.float32 and t._place == "cuda"
    assert log.host_casts() == [] and log.steps[0][0] == "pin_memory", log.steps
