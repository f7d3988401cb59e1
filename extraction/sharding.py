"""torchrun ranks: which share of the name list a process takes, its GPU, and the few collective steps.

Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op for one process. Under
``torchrun --nproc_per_node N [--nnodes M ...]`` each process reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (set by torchrun), takes every ``WORLD_SIZE``-th name of the sorted list starting at its rank
(a fixed share, whatever is already done), uses GPU ``LOCAL_RANK``, and joins a gloo process group only to
wait for the others and to share small Python objects (the settings check, the final counts). The feature
files themselves never travel: each process writes its own, so the output folder must be one that every
node sees (a shared file system) in a multi-node run.
"""

import datetime
import os


class Shard:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    def __init__(self, timeout_hours=72.0):
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.group = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():  # gloo: CPU collectives for coordination, on any machine
                dist.init_process_group("gloo", timeout=datetime.timedelta(hours=timeout_hours))
            self.group = True

    @property
    def main(self):
        return self.rank == 0

    def take(self, names):
        """This process's fixed share of ``sorted(names)``."""
        return sorted(names)[self.rank::self.world]

    def barrier(self):
        if self.group:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """``obj`` of rank 0, on every rank."""
        if not self.group:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj):
        """A list of every rank's ``obj``, in rank order, on every rank."""
        if not self.group:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False
