"""Serve batches from packed features: whole-array gathers, no per-sample file reads.

``SampleSet`` is one list of samples (a train, valid or test list) over the selected features.
Utterance-level features of the list are gathered once into tensors on the training device;
frame-level ones are padded per batch from the packed frames with a mask.

For context models a list can be cut into dialogues (``set_dialogues``, see dataloader/dialogue.py): batches
then hold whole dialogues, their utterances flat as in the utterance mode, plus ``dialog_index``
``(n_dialogues, max_len)``, each dialogue's positions in the flat batch in order (-1 on padding), and
``dialog_mask`` (True on real utterances).
"""

import numpy as np
import torch

from common.errors import DataError


class SampleSet:
    """Samples ``names`` over feature ``stores``, with optional labels and per-sample loss weights.

    Utterance-level features of the list are copied into one tensor per feature on ``device``; with
    ``mmap=True`` they stay in the memory-mapped pack and each batch is read from it (for data sets larger
    than memory)."""

    def __init__(self, stores, names, labels=None, weights=None, max_len=None, device="cpu",
                 source="the name list", mmap=False):
        self.stores = stores
        self.names = list(names)
        if not self.names:
            raise DataError(f"{source} is empty")
        self.max_len = max_len
        self.device = torch.device(device)
        self.rows = [s.rows(self.names, source) for s in stores]
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        # utterance features: one gather for the whole list, kept on the device
        self._dense = []
        for store, rows in zip(stores, self.rows):
            if store.frame_level or mmap:
                self._dense.append(None)
            else:
                x, _ = store.gather(rows)
                self._dense.append(torch.from_numpy(x).to(self.device))
        if self.labels is not None:
            self.labels = self.labels.to(self.device)
        if self.weights is not None:
            self.weights = self.weights.to(self.device)
        self.dialogues = None

    def __len__(self):
        return len(self.names)

    @property
    def feat_dims(self):
        return [s.dim for s in self.stores]

    @property
    def frame_level(self):
        return [s.frame_level for s in self.stores]

    def feature_stats(self):
        """Per-feature ``(mean, std)`` over this list (frame-level: over real frames), as CPU tensors."""
        stats = []
        for store, rows, dense in zip(self.stores, self.rows, self._dense):
            if dense is not None:
                x = dense.double()
            elif not store.frame_level:
                x = torch.from_numpy(np.asarray(store.data[np.sort(rows)], dtype=np.float64))
            else:
                lens = store.lengths(rows)
                idx = np.concatenate([np.arange(s, s + n) for s, n in zip(store.offsets[rows], lens)])
                x = torch.from_numpy(np.asarray(store.data[idx], dtype=np.float64))
            stats.append((x.mean(0).float().cpu(), x.std(0, unbiased=False).float().cpu()))
        return stats

    def batch(self, idx):
        """Batch of positions ``idx`` (into this list): dict with feats, masks, labels, weights, idx."""
        idx_np = np.asarray(idx, dtype=np.int64)
        idx_t = torch.as_tensor(idx_np, device=self.device)
        feats, masks = [], []
        for store, rows, dense in zip(self.stores, self.rows, self._dense):
            if dense is not None:
                feats.append(dense.index_select(0, idx_t))
                masks.append(None)
            else:
                x, m = store.gather(rows[idx_np], self.max_len)
                feats.append(torch.from_numpy(x).to(self.device, non_blocking=True))
                masks.append(None if m is None else torch.from_numpy(m).to(self.device, non_blocking=True))
        out = {"feats": feats, "masks": masks, "idx": idx_np}
        out["labels"] = None if self.labels is None else self.labels.index_select(0, idx_t)
        out["weights"] = None if self.weights is None else self.weights.index_select(0, idx_t)
        return out

    def iter_batches(self, batch_size, shuffle=False, seed=0, drop_last=False):
        """Yield batches; with ``shuffle`` the order comes from ``seed`` alone (reproducible). Once the list
        is cut into dialogues (``set_dialogues``), batches of whole dialogues (``drop_last`` is ignored)."""
        if self.dialogues is not None:
            for plan in self._dialogue_plan(batch_size, shuffle, seed):
                yield self.dialogue_batch(plan)
            return
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - (n % batch_size) if (drop_last and n > batch_size) else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size])

    def num_batches(self, batch_size, drop_last=False, shuffle=False, seed=0):
        if self.dialogues is not None:
            return len(self._dialogue_plan(batch_size, shuffle, seed))
        n = len(self)
        if drop_last and n > batch_size:
            return n // batch_size
        return (n + batch_size - 1) // batch_size

    # ------------------------------------------------------------------ dialogue mode (context models)

    def set_dialogues(self, groups):
        """Cut the list into dialogues: ``groups`` holds one int array of positions (into this list) per
        dialogue, in dialogue order; every position exactly once (``DialogueIndex.groups`` gives that).
        ``None`` returns to single utterances."""
        if groups is None:
            self.dialogues = None
            return
        groups = [np.asarray(g, dtype=np.int64).reshape(-1) for g in groups]
        flat = np.concatenate(groups) if groups else np.empty(0, np.int64)
        if len(flat) != len(self) or not np.array_equal(np.sort(flat), np.arange(len(self))):
            raise ValueError(f"dialogue groups must hold every position of the {len(self)} names exactly once")
        if any(len(g) == 0 for g in groups):
            raise ValueError("a dialogue group is empty")
        self.dialogues = groups

    def _dialogue_plan(self, batch_size, shuffle, seed):
        """Lists of dialogue numbers, one per batch: dialogues (shuffled by ``seed``) are added to a batch
        until the next one would take it past ``batch_size`` utterances; a longer dialogue is a batch alone."""
        n = len(self.dialogues)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        plans, cur, size = [], [], 0
        for d in order:
            k = len(self.dialogues[d])
            if cur and size + k > batch_size:
                plans.append(cur)
                cur, size = [], 0
            cur.append(int(d))
            size += k
        if cur:
            plans.append(cur)
        return plans

    def dialogue_batch(self, dialogue_ids):
        """Batch of whole dialogues (numbers into ``self.dialogues``): ``batch`` of their utterances, flat in
        dialogue order, plus ``dialog_index`` and ``dialog_mask`` (see the module docstring)."""
        groups = [self.dialogues[d] for d in dialogue_ids]
        lens = np.array([len(g) for g in groups])
        width = int(lens.max())
        index = np.full((len(groups), width), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for row, (s, k) in enumerate(zip(starts, lens)):
            index[row, :k] = np.arange(s, s + k)
        out = self.batch(np.concatenate(groups))
        out["dialog_index"] = torch.as_tensor(index, device=self.device)
        out["dialog_mask"] = out["dialog_index"] >= 0
        return out
