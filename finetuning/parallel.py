"""This process's place among torchrun's processes, for fine-tuning: the one module that reads rank and world.

The rest of the stage asks only these questions: am I the process that writes (``main``)? which part of a
global batch is mine (``local``)? the model to step (``wrap``)? what did rank 0 decide (``broadcast``)? what did
every rank compute (``gather``)? Without torchrun (no ``WORLD_SIZE``) there is one process and each answer is the
trivial one.

Data parallelism (DDP) under ``torchrun --nproc_per_node N``: the process group is gloo on the CPU and nccl on
CUDA (each rank on GPU ``LOCAL_RANK``, chosen by common.utils.process_device before this is built). A global
batch is what one process would take (``--batch_size``); every rank takes its slice ``batch[rank::world]``, its
loss scaled so that DDP's mean of the ranks' gradients is the gradient of the whole batch's loss (the trainer
does this), so an update equals the one-process update up to the order of the float sums in the all-reduce.
Rank 0 takes the folder's lock and writes every file; the others only compute.
"""

import datetime
import os

from extraction.sharding import Shard

TIMEOUT_HOURS = 72.0


class Parallel:
    def __init__(self, device=None):
        self.shard = None
        if _world() > 1:
            import torch.distributed as dist

            if not dist.is_initialized():  # nccl for CUDA tensors; gloo (CPU collectives) otherwise
                backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
                dist.init_process_group(backend, timeout=datetime.timedelta(hours=TIMEOUT_HOURS))
            self.shard = Shard(TIMEOUT_HOURS)
        self.rank = self.shard.rank if self.shard else 0
        self.world = self.shard.world if self.shard else 1

    @property
    def main(self):
        return self.rank == 0

    def local(self, batch):
        """This rank's part of a global batch (a list of sample positions)."""
        return batch[self.rank::self.world]

    def wrap(self, model, device):
        """The module the optimiser steps: ``model``, inside DistributedDataParallel when there are many ranks.

        Only the trainable weights are synchronised (from rank 0 at the start, their gradients averaged at each
        step): the frozen base is loaded from the same files on every rank and is never broadcast (gigabytes for
        an LLM). ``find_unused_parameters``: a backbone's pooler, computed but not read by the head, gets no
        gradient."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        DDP._set_params_and_buffers_to_ignore_for_model(model, frozen + [n for n, _ in model.named_buffers()])
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                   find_unused_parameters=True)

    def no_sync(self, step_model, sync):
        """A context for a micro-batch's forward and backward: the gradients are all-reduced only when ``sync``
        (the last micro-batch before an optimiser step), as they add up the same either way."""
        import contextlib

        if self.world == 1 or sync:
            return contextlib.nullcontext()
        return step_model.no_sync()

    def barrier(self):
        if self.shard:
            self.shard.barrier()

    def broadcast(self, obj):
        """``obj`` of rank 0, on every rank."""
        return self.shard.broadcast(obj) if self.shard else obj

    def gather(self, obj):
        """Every rank's ``obj``, in rank order, on every rank."""
        return self.shard.gather(obj) if self.shard else [obj]

    def close(self):
        if self.shard:
            self.shard.close()


def _world():
    return int(os.environ.get("WORLD_SIZE", 1))
