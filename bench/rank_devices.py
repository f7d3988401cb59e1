"""Under torchrun, each rank says where it works: the torchrun_ranks step of bench/gpu_check.sh.

    python -m torch.distributed.run --standalone --nproc_per_node 2 bench/rank_devices.py --device cuda

Each process takes its device as train.py and preprocess/extract_features.py do (``common.utils.process_device``:
GPU LOCAL_RANK, made current before any other CUDA call), then does what they do first on it (asks for the
extraction dtype, pins and copies an extraction batch and a training batch, runs a model) and prints one line:

    rank 1 local_rank 1 of 2: device cuda:1; current_device 1; contexts 1; model cuda:1; extraction batch cuda:1
    bfloat16; training batch cuda:1 float32; explicit index refused

``contexts``: the GPUs on which this process holds a CUDA context (the driver's primary contexts; ``unknown``
where the driver cannot be asked, ``none`` on the CPU): its own GPU only, never GPU 0 of every rank.
``explicit index``: whether ``--device cuda:0`` is refused under torchrun, as it must be.
"""

import argparse
import ctypes
import os
import sys
import types

import numpy as np

import _paths  # noqa: F401


def cuda_contexts(count):
    """The GPU indices (as torch numbers them) on which this process holds an active primary context; None
    where the CUDA driver cannot be asked."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        active, flags, out = ctypes.c_int(), ctypes.c_uint(), []
        for index in range(count):
            dev = ctypes.c_int()
            if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
                return None
            if lib.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) != 0:
                return None
            if active.value:
                out.append(index)
        return out
    except (OSError, AttributeError):
        return None


def report(device_flag):
    import torch

    from common.utils import process_device, resolve_device
    from dataloader.dataset import SampleSet
    from extraction.encoders import Encoder, resolve_dtype

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = process_device(device_flag)
    cuda = device.type == "cuda"
    dtype = resolve_dtype("auto", device)
    torch.manual_seed(rank)
    model = torch.nn.Linear(8, 4).to(device, dtype)
    encoder = Encoder(None, None, model, device, dtype)
    batch = encoder.to_device({"x": torch.randn(2, 8)})
    with torch.inference_mode():
        y = model(batch["x"])
    loader = types.SimpleNamespace(pin=cuda, device=device)
    train_batch = SampleSet._to_device(loader, np.ones((3, 8), np.float16))
    if cuda:
        torch.cuda.synchronize()
    try:
        resolve_device("cuda:0", local_rank=local)
        explicit = "accepted"
    except ValueError:
        explicit = "refused"
    contexts = cuda_contexts(torch.cuda.device_count()) if cuda else None
    contexts = "none" if not cuda else ("unknown" if contexts is None else ",".join(map(str, contexts)) or "none")
    current = torch.cuda.current_device() if cuda else "none"
    short = lambda t: str(t).replace("torch.", "")  # noqa: E731
    print(f"rank {rank} local_rank {local} of {world}: device {device}; current_device {current}; contexts {contexts}; "
          f"model {next(model.parameters()).device}; extraction batch {y.device} {short(batch['x'].dtype)}; "
          f"training batch {train_batch.device} {short(train_batch.dtype)}; explicit index {explicit}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    from common.utils import error_line

    try:
        report(args.device)
    except ValueError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
