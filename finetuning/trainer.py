"""The fine-tuning loop, its checkpoints, and prediction.

One training (:meth:`Trainer.fit`): AdamW on the trainable weights, a linear warmup then linear decay of the
learning rate, ``grad_accum`` micro-batches per optimiser step, gradients clipped at norm 1, bf16 autocast on
CUDA only (float32 on the CPU), weighted F1 on the validation list after every epoch (common/metrics.py),
early stopping after ``patience`` epochs without a better one, and the best epoch's weights put back at the
end. The order of the training samples in epoch ``e`` is a permutation drawn from ``(seed, e)``, so it does not
depend on what ran before.

After every epoch a checkpoint (``checkpoint.pt``: the trainable weights, the optimiser and scheduler, the RNG
states of Python, NumPy and torch, the history and the best epoch so far with its weights) is written to a
temporary name and renamed into place. It holds tensors, numbers, strings and containers only, and is read back
with ``weights_only=True`` (common.checkpoints.load_checkpoint: a truncated or foreign file is a one-line error). A
run started again with a checkpoint of the same settings goes on after its last epoch and ends as the unbroken
run would (the same weights, bit for bit, on the CPU).

Dropout draws from torch's generator seeded at the start of each epoch from ``(seed, epoch, rank)``, so an
epoch's masks depend neither on what ran before (a resumed run draws what the unbroken one drew) nor on another
rank's. Under torchrun (finetuning/parallel.py) every rank takes its slice of each global batch, its loss scaled
by its share of the batch's sample weights times the number of ranks, so DDP's mean of the gradients is the
gradient of the global batch's loss; the validation list and the names to embed are predicted in shards and
gathered; rank 0's validation figures decide early stopping and the best epoch (broadcast), and rank 0 writes
the checkpoint. With dropout the ranks' masks differ from those one process would draw: a run matches the
one-process run only with dropout off (tests/test_finetune_scale.py), and statistically otherwise.
"""

import contextlib
import math
import os
import random
import time

import numpy as np
import torch

from common.errors import DataError
from common.metrics import emotion_metrics
from common.checkpoints import load_checkpoint
from finetuning.model import load_trainable, trainable_state

CHECKPOINT = "checkpoint.pt"
MAX_GRAD_NORM = 1.0


class Examples:
    """Samples of one list: ``names``, their ``units`` (the modality's model inputs), class ``labels`` (None
    for names to predict only) and loss ``weights`` (1 unless a pseudo-label list gives them)."""

    def __init__(self, names, units, labels=None, weights=None):
        self.names, self.units = list(names), list(units)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.weights = np.ones(len(self.names), np.float32) if weights is None else np.asarray(weights, np.float32)

    def __len__(self):
        return len(self.names)

    def subset(self, idx):
        idx = list(idx)
        return Examples([self.names[i] for i in idx], [self.units[i] for i in idx],
                        None if self.labels is None else self.labels[idx], self.weights[idx])


def bf16_autocast(device):
    """Whether the forward passes run under bf16 autocast: on a CUDA device that supports bf16 only (float32
    everywhere on the CPU)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _autocast(device):
    if bf16_autocast(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _rng_state():
    """The RNG states of Python, NumPy and torch in what ``weights_only=True`` loading accepts: lists, numbers,
    strings and tensors (NumPy's key array as an int64 tensor; Python's state tuple as a list)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [int(version), [int(v) for v in internal], gauss],
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_seed(seed, epoch, rank):
    """torch's seed for the dropout of ``epoch`` on ``rank``."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1, np.uint64)[0] >> 1)


def peak_memory(device):
    """Peak memory of this process so far, as text: CUDA's allocator on a GPU, the resident set on the CPU."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB (GPU)"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB (CPU, resident)"


class Trainer:
    """Trains and runs one model. ``settings``: epochs, batch_size, grad_accum, lr, weight_decay, warmup_ratio,
    patience, seed; ``loss``: ``loss(logits, targets, weights)``; ``collate``: units -> a batch of CPU tensors."""

    def __init__(self, model, collate, loss, settings, device, parallel, logger, progress=True):
        self.model, self.collate, self.loss, self.s = model, collate, loss, settings
        self.device, self.parallel, self.logger, self.progress = device, parallel, logger, progress
        self.step_model = parallel.wrap(model, device)

    def _to_device(self, batch):
        return {k: v.to(self.device, non_blocking=self.device.type == "cuda") for k, v in batch.items()}

    def _epoch_batches(self, n, epoch):
        order = np.random.default_rng([int(self.s["seed"]), int(epoch)]).permutation(n)
        size = int(self.s["batch_size"])
        return [order[i:i + size] for i in range(0, n, size)]

    def fit(self, train, valid, folder, key, stop_after=None):
        """Train on ``train``, choose the epoch on ``valid``; checkpoints in ``folder`` (``key``: the settings they
        belong to). Returns ``{"history", "best_epoch", "best_f1", "epochs_run", "seconds"}``; the model holds the
        best epoch's weights. ``stop_after``: stop as a kill would, after that many epochs of this process."""
        s = self.s
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
        micro = math.ceil(len(train) / int(s["batch_size"]))
        steps = math.ceil(micro / int(s["grad_accum"])) * int(s["epochs"])
        warmup = int(float(s["warmup_ratio"]) * steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: (k + 1) / max(1, warmup) if k < warmup else max(0.0, (steps - k) / max(1, steps - warmup)))
        state = {"epoch": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "best": None, "since_best": 0,
                 "stopped": False}
        path = os.path.join(folder, CHECKPOINT)
        if self.parallel.broadcast(os.path.isfile(path)):  # rank 0 says; every rank reads the same file
            ck = load_checkpoint(path, "fine-tuning checkpoint", "delete it to start over")
            if ck.get("key") != key:
                raise DataError(f"'{path}' is a checkpoint of other settings; delete it to start over")
            load_trainable(self.model, ck["trainable"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            _set_rng_state(ck["rng"])
            state = ck["state"]
            self.logger.info(f"resuming after epoch {state['epoch']} from {path} (best val F1 "
                             f"{state['best_f1']:.4f} at epoch {state['best_epoch']})")
        t_start, ran = time.time(), 0
        while state["epoch"] < int(s["epochs"]) and not state["stopped"]:
            epoch = state["epoch"] + 1
            t0 = time.time()
            train_loss = self._train_epoch(train, epoch, opt, sched)
            val = self.parallel.broadcast(self.evaluate(valid))  # rank 0's figures decide, on every rank
            f1 = val["f1"]
            if f1 > state["best_f1"]:
                state.update(best_f1=f1, best_epoch=epoch, best=trainable_state(self.model), since_best=0)
            else:
                state["since_best"] += 1
            seconds = time.time() - t0
            state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"],
                                     "val_f1": f1, "val_acc": val["acc"], "lr": sched.get_last_lr()[0],
                                     "seconds": round(seconds, 2)})
            state["epoch"] = epoch
            state["stopped"] = state["since_best"] >= int(s["patience"])
            self.logger.info(f"epoch {epoch}/{s['epochs']}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
                             f"val weighted F1 {f1:.4f} (acc {val['acc']:.4f}); best {state['best_f1']:.4f} at "
                             f"epoch {state['best_epoch']}; {seconds:.1f}s, {len(train) / seconds:.1f} samples/s"
                             + ("; early stop" if state["stopped"] else ""))
            if self.parallel.main:
                self._save(path, key, opt, sched, state)
            self.parallel.barrier()  # no rank leaves (a kill, the end) while rank 0 writes
            ran += 1
            if stop_after is not None and ran >= stop_after:
                raise KeyboardInterrupt(f"stopped after {ran} epochs (--stop_after_epochs)")
        load_trainable(self.model, state["best"])
        return {"history": state["history"], "best_epoch": state["best_epoch"], "best_f1": state["best_f1"],
                "epochs_run": state["epoch"], "seconds": time.time() - t_start}

    def _save(self, path, key, opt, sched, state):
        tmp = f"{path}.{os.getpid()}.tmp"
        torch.save({"key": key, "trainable": trainable_state(self.model), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": _rng_state(), "state": state}, tmp)
        os.replace(tmp, path)

    def _train_epoch(self, train, epoch, opt, sched):
        from tqdm import tqdm

        self.model.train()
        torch.manual_seed(_epoch_seed(self.s["seed"], epoch, self.parallel.rank))
        accum = int(self.s["grad_accum"])
        world = self.parallel.world
        batches = self._epoch_batches(len(train), epoch)
        labels = torch.from_numpy(train.labels)
        weights = torch.from_numpy(train.weights)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not self.progress)
        opt.zero_grad(set_to_none=True)
        for i, idx in enumerate(bar):
            group_start = (i // accum) * accum
            group_size = min(accum, len(batches) - group_start)
            sync = i + 1 == group_start + group_size
            mine, scale, counted = self.parallel.local(idx), 1.0, True
            if world > 1:  # this rank's share of the global batch's loss: DDP's mean of the ranks' gradients
                scale = world * float(weights[mine].sum()) / max(float(weights[idx].sum()), 1e-12)
                if not len(mine):  # fewer samples than ranks: a pass with no weight, as DDP needs every rank
                    mine, scale, counted = idx[:1], 0.0, False
            batch = self._to_device(self.collate([train.units[k] for k in mine]))
            with self.parallel.no_sync(self.step_model, sync):
                with _autocast(self.device):
                    logits, _ = self.step_model(**batch)
                loss = self.loss(logits, labels[mine].to(self.device), weights[mine].to(self.device))
                ((loss * scale if world > 1 else loss) / group_size).backward()
            if counted:
                total += float(loss.detach()) * len(mine)
                count += len(mine)
            if sync:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], MAX_GRAD_NORM)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{total / max(1, count):.4f}")
        if world > 1:
            parts = self.parallel.gather((total, count))
            total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        return total / max(1, count)

    @torch.no_grad()
    def predict(self, examples, batch_size=None):
        """``(embeddings (N, E) float32, probabilities (N, C) float32, logits)`` of ``examples``, in their order;
        batches of similar lengths (sorted), so padding stays small. Under torchrun each rank predicts every
        ``world``-th of the sorted names and every rank gets all of them (gathered)."""
        from tqdm import tqdm

        self.model.eval()
        size = int(batch_size or 2 * int(self.s["batch_size"]))
        order = sorted(range(len(examples)), key=lambda k: -len(examples.units[k]))
        embs, logits = [None] * len(examples), [None] * len(examples)
        mine = order[self.parallel.rank::self.parallel.world]
        bar = tqdm(range(0, len(mine), size), desc="predict", leave=False, disable=not self.progress)
        for start in bar:
            idx = mine[start:start + size]
            batch = self._to_device(self.collate([examples.units[k] for k in idx]))
            with _autocast(self.device):
                out, emb = self.model(**batch)
            out, emb = out.float().cpu().numpy(), emb.float().cpu().numpy()
            for j, k in enumerate(idx):
                embs[k], logits[k] = emb[j], out[j]
        if self.parallel.world > 1:
            for part in self.parallel.gather([(k, embs[k], logits[k]) for k in mine]):
                for k, e, z in part:
                    embs[k], logits[k] = e, z
        if not len(examples):
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        logits = np.stack(logits).astype(np.float32)
        z = np.exp(logits - logits.max(1, keepdims=True))
        return np.stack(embs).astype(np.float32), (z / z.sum(1, keepdims=True)).astype(np.float32), logits

    def evaluate(self, examples):
        """Loss, accuracy and weighted F1 on a labelled list."""
        _, probs, logits = self.predict(examples)
        with torch.no_grad():
            loss = float(self.loss(torch.from_numpy(logits), torch.from_numpy(examples.labels),
                                   torch.from_numpy(examples.weights)))
        return {"loss": loss, **emotion_metrics(examples.labels, probs.argmax(1))}


def plot_history(history, path, title):
    """Training loss, validation loss and validation weighted F1 per epoch, as a PNG (matplotlib, imported here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_f1"] for h in history], color="tab:green", marker="o", label="val weighted F1")
    ax2.set_ylabel("val weighted F1")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
