"""The fine-tuning loop, its checkpoints, and prediction.

One training (:meth:`Trainer.fit`): AdamW on the trainable weights, a linear warmup then linear decay of the
learning rate, ``grad_accum`` micro-batches per optimiser step, gradients clipped at norm 1, bf16 autocast on
CUDA only (float32 on the CPU), weighted F1 on the validation list after every epoch (common/metrics.py),
early stopping after ``patience`` epochs without a better one, and the best epoch's weights put back at the
end. The order of the training samples in epoch ``e`` is a permutation drawn from ``(seed, e)``, so it does not
depend on what ran before.

After every epoch a checkpoint (``checkpoint.pt``: the trainable weights, the optimiser and scheduler, the RNG
states of Python, NumPy and torch, the history and the best epoch so far with its weights) is written to a
temporary name and renamed into place. A run started again with a checkpoint of the same settings goes on
after its last epoch and ends as the unbroken run would (the same weights, bit for bit, on the CPU).
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


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
        if os.path.isfile(path):
            ck = torch.load(path, map_location="cpu", weights_only=False)  # our own file (RNG states are tuples)
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
            val = self.evaluate(valid)
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
        accum = int(self.s["grad_accum"])
        batches = self._epoch_batches(len(train), epoch)
        labels = torch.from_numpy(train.labels)
        weights = torch.from_numpy(train.weights)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not self.progress)
        opt.zero_grad(set_to_none=True)
        for i, idx in enumerate(bar):
            group_start = (i // accum) * accum
            group_size = min(accum, len(batches) - group_start)
            idx = self.parallel.local(idx)
            batch = self._to_device(self.collate([train.units[k] for k in idx]))
            with _autocast(self.device):
                logits, _ = self.step_model(**batch)
            loss = self.loss(logits, labels[idx].to(self.device), weights[idx].to(self.device))
            (loss / group_size).backward()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if i + 1 == group_start + group_size:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], MAX_GRAD_NORM)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{total / max(1, count):.4f}")
        return total / max(1, count)

    @torch.no_grad()
    def predict(self, examples, batch_size=None):
        """``(embeddings (N, E) float32, probabilities (N, C) float32, logits)`` of ``examples``, in their order;
        batches of similar lengths (sorted), so padding stays small."""
        from tqdm import tqdm

        self.model.eval()
        size = int(batch_size or 2 * int(self.s["batch_size"]))
        order = sorted(range(len(examples)), key=lambda k: -len(examples.units[k]))
        embs, logits = [None] * len(examples), [None] * len(examples)
        bar = tqdm(range(0, len(order), size), desc="predict", leave=False, disable=not self.progress)
        for start in bar:
            idx = order[start:start + size]
            batch = self._to_device(self.collate([examples.units[k] for k in idx]))
            with _autocast(self.device):
                out, emb = self.model(**batch)
            out, emb = out.float().cpu().numpy(), emb.float().cpu().numpy()
            for j, k in enumerate(idx):
                embs[k], logits[k] = emb[j], out[j]
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
