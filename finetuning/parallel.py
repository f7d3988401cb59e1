"""This process's place among torchrun's processes, for fine-tuning: the one module that reads rank and world.

The rest of the stage asks only these questions: am I the process that writes (``main``)? which part of a
global batch is mine (``local``)? the model to step (``wrap``)? Without torchrun (no ``WORLD_SIZE``) there is one
process and each answer is the trivial one. Rank, world and the gloo group come from
:class:`extraction.sharding.Shard`, as for extraction.

Data parallelism (DDP: each rank a slice of every global batch, gradients averaged, rank 0 writes) plugs in
here: ``local`` slices a batch, ``wrap`` wraps the model. It is not yet proven that a 2-process run matches a
1-process run with the same global batch, so :meth:`Parallel.check` refuses ``WORLD_SIZE > 1`` until a test
does (docs/finetune.md).
"""

from common.errors import DataError
from extraction.sharding import Shard


class Parallel:
    def __init__(self):
        self.shard = Shard() if _world() > 1 else None
        self.rank = self.shard.rank if self.shard else 0
        self.world = self.shard.world if self.shard else 1

    @property
    def main(self):
        return self.rank == 0

    def check(self):
        if self.world > 1:
            self.close()
            raise DataError(f"finetune_encoder.py under torchrun ({self.world} processes): data-parallel fine-tuning "
                            "is not available yet; run one process (python preprocess/finetune_encoder.py ...)")

    def local(self, batch):
        """This rank's part of a global batch (a list of sample positions)."""
        return batch[self.rank::self.world]

    def wrap(self, model, device):
        """The module the optimiser steps: ``model``, inside DistributedDataParallel when there are many ranks."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self):
        if self.shard:
            self.shard.barrier()

    def broadcast(self, obj):
        return self.shard.broadcast(obj) if self.shard else obj

    def close(self):
        if self.shard:
            self.shard.close()


def _world():
    import os

    return int(os.environ.get("WORLD_SIZE", 1))
