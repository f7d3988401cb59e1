"""Serve batches from packed features: whole-array gathers, no per-sample file reads.

``SampleSet`` is one list of samples (a train, valid or test list) over the selected features.
Utterance-level features of the list are gathered once into tensors on the training device; so are the
frames of frame-level ones (subsampled to ``max_len`` once, kept flat with each sample's start and length),
and each batch pads its own frames on the device with a mask. A step thus reads nothing from the host: the
shuffled order of an epoch is copied to the device once and each batch's positions are a slice of it.
Float16 packs stay float16 in that copy (half the memory) and each batch is cast to float32.

With ``mmap=True`` nothing is copied up front: each batch is read from the memory-mapped packs, in pinned
memory when the device is a GPU so that its copy does not make the host wait.

For context models a list can be cut into dialogues (``set_dialogues``, see dataloader/dialogue.py): batches
then hold whole dialogues, their utterances flat as in the utterance mode, plus ``dialog_index``
``(n_dialogues, max_len)``, each dialogue's positions in the flat batch in order (-1 on padding), and
``dialog_mask`` (True on real utterances).
"""

import numpy as np
import torch

from common.errors import DataError
from dataloader.features import frame_positions


STATS_CHUNK_VALUES = 1 << 22  # values read at a time by SampleSet.feature_stats (32 MB as float64)


def streamed_moments(chunks, dim):
    """``(mean, std, n)`` over the rows of ``chunks``, an iterable of ``(rows, dim)`` arrays read one at a time:
    float64 ``(dim,)`` mean and population std, and the row count (mean 0, std 1 where there is no row).

    Each chunk's own mean and sum of squared deviations are taken in float64 (two passes over the chunk), then
    merged with the running ones by Chan et al.'s parallel update, so only one chunk is ever held, and a mean
    far from zero costs no precision (a sum of squares minus the squared mean would cancel it away)."""
    n, mean, m2 = 0, np.zeros(dim), np.zeros(dim)
    for x in chunks:
        x = np.asarray(x, dtype=np.float64).reshape(-1, dim)
        k = len(x)
        if not k:
            continue
        mu = x.mean(0)
        dev = x - mu
        delta = mu - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + np.einsum("ij,ij->j", dev, dev) + delta * delta * (n * k / total)
        n = total
    if not n:
        return np.zeros(dim), np.ones(dim), 0
    return mean, np.sqrt(m2 / n), n


def _stat_chunks(store, rows, dense=None):
    """The rows of a list for :func:`streamed_moments`, a chunk of about ``STATS_CHUNK_VALUES`` values at a time:
    from ``dense`` (the list's copy on the device) where given, else read from the pack in pack order; the real
    frames of a frame-level feature, whole clips per chunk (a clip longer than a chunk is a chunk of its own)."""
    per_chunk = max(1, STATS_CHUNK_VALUES // max(int(store.dim), 1))
    if dense is not None:
        for i in range(0, len(dense), per_chunk):
            yield dense[i:i + per_chunk].double().cpu().numpy()
        return
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if not store.frame_level:
        for i in range(0, len(rows), per_chunk):
            yield store.data[rows[i:i + per_chunk]]
        return
    starts, lens = store.offsets[rows], store.lengths(rows)
    ends = np.cumsum(lens)
    i = 0
    while i < len(rows):
        before = ends[i - 1] if i else 0
        j = max(i + 1, int(np.searchsorted(ends, before + per_chunk, side="right")))
        clip = np.repeat(np.arange(i, j), lens[i:j])
        frame = np.arange(len(clip)) - (ends[clip] - lens[clip] - before)
        yield store.data[starts[clip] + frame]
        i = j


class _Frames:
    """The frames of one frame-level feature for a whole list, on the device: ``flat`` ``(sum of kept, dim)``
    in the pack's dtype, each sample's ``start`` in it and ``kept`` frame count (on the device, and the counts
    on the host too: a batch's padded width is read there, without asking the device)."""

    def __init__(self, store, rows, max_len, device):
        lens = store.lengths(rows)
        kept = lens if max_len is None else np.minimum(lens, max_len)
        starts = np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(np.int64)
        sample = np.repeat(np.arange(len(rows)), kept)
        t = np.arange(int(kept.sum())) - starts[sample]
        src = store.offsets[rows][sample] + frame_positions(t, lens[sample], kept[sample])
        data = np.asarray(store.data[src])
        if data.dtype != np.float16:
            data = data.astype(np.float32, copy=False)
        self.flat = torch.from_numpy(data).to(device)
        self.start = torch.from_numpy(starts).to(device)
        self.kept = torch.from_numpy(kept.astype(np.int64)).to(device)
        self.kept_host = kept.astype(np.int64)

    def batch(self, idx_np, idx_t):
        """``(B, L, dim)`` float32 frames, zero on padding, and the ``(B, L)`` mask; L the batch's longest."""
        width = max(int(self.kept_host[idx_np].max()) if len(idx_np) else 1, 1)
        t = torch.arange(width, device=self.flat.device)
        kept = self.kept.index_select(0, idx_t)
        mask = t[None, :] < kept[:, None]
        src = torch.where(mask, self.start.index_select(0, idx_t)[:, None] + t[None, :], 0)
        x = self.flat.index_select(0, src.reshape(-1)).view(len(idx_np), width, -1).float()
        return x.masked_fill_(~mask.unsqueeze(-1), 0.0), mask


class SampleSet:
    """Samples ``names`` over feature ``stores``, with optional labels and per-sample loss weights.

    The features of the list are copied to ``device`` once (see the module docstring); with ``mmap=True``
    they stay in the memory-mapped packs and each batch is read from them (for data sets larger than memory)."""

    def __init__(self, stores, names, labels=None, weights=None, max_len=None, device="cpu",
                 source="the name list", mmap=False):
        self.stores = stores
        self.names = list(names)
        if not self.names:
            raise DataError(f"{source} is empty")
        self.max_len = max_len
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.rows = [s.rows(self.names, source) for s in stores]
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        # whole-list copies on the device: (N, dim) for utterance features, _Frames for frame-level ones;
        # None where batches are read from the pack (mmap, or a MissingFeature without a pack)
        self._dense, self._frames = [], []
        for store, rows in zip(stores, self.rows):
            dense = frames = None
            if not mmap and not store.frame_level:
                x, _ = store.gather(rows, dtype=None)
                dense = torch.from_numpy(x).to(self.device)
            elif not mmap and getattr(store, "offsets", None) is not None:
                frames = _Frames(store, rows, max_len, self.device)
            self._dense.append(dense)
            self._frames.append(frames)
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
        """Per-feature ``(mean, std)`` over this list (frame-level: over all real frames), as float32 CPU tensors.

        Streamed (:func:`streamed_moments`): the rows are read a chunk of about ``STATS_CHUNK_VALUES`` values at a
        time (whole clips, in pack order), so no more than one chunk is held as float64."""
        stats = []
        for store, rows, dense in zip(self.stores, self.rows, self._dense):
            mean, std, _ = streamed_moments(_stat_chunks(store, rows, dense), store.dim)
            stats.append((torch.from_numpy(mean).float(), torch.from_numpy(std).float()))
        return stats

    def _to_device(self, array):
        """A host array (read from a pack, or an index), on the device; floating point becomes float32 there
        (a float16 pack travels as float16). Through pinned memory and an asynchronous copy on a GPU."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.pin:
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=self.pin)
        return t.float() if t.is_floating_point() else t

    def batch(self, idx, idx_t=None):
        """Batch of positions ``idx`` (into this list): dict with feats, masks, labels, weights, idx.
        ``idx_t``: the same positions already on the device (a slice of the epoch's order), else copied."""
        idx_np = np.asarray(idx, dtype=np.int64)
        if idx_t is None:
            idx_t = torch.as_tensor(idx_np, device=self.device)
        feats, masks = [], []
        for store, rows, dense, frames in zip(self.stores, self.rows, self._dense, self._frames):
            if dense is not None:
                feats.append(dense.index_select(0, idx_t).float())
                masks.append(None)
            elif frames is not None:
                x, m = frames.batch(idx_np, idx_t)
                feats.append(x)
                masks.append(m)
            else:
                x, m = store.gather(rows[idx_np], self.max_len, dtype=None)
                feats.append(self._to_device(x))
                masks.append(None if m is None else self._to_device(m))
        out = {"feats": feats, "masks": masks, "idx": idx_np}
        out["labels"] = None if self.labels is None else self.labels.index_select(0, idx_t)
        out["weights"] = None if self.weights is None else self.weights.index_select(0, idx_t)
        return out

    def iter_batches(self, batch_size, shuffle=False, seed=0, drop_last=False):
        """Yield batches; with ``shuffle`` the order comes from ``seed`` alone (reproducible). Once the list
        is cut into dialogues (``set_dialogues``), batches of whole dialogues (``drop_last`` is ignored).
        The epoch's order goes to the device in one copy; each batch takes its slice of it."""
        if self.dialogues is not None:
            plans = self._dialogue_plan(batch_size, shuffle, seed)
            flat = np.concatenate([self.dialogues[d] for plan in plans for d in plan])
            flat_t = torch.as_tensor(flat, device=self.device)
            start = 0
            for plan in plans:
                stop = start + sum(len(self.dialogues[d]) for d in plan)
                yield self.dialogue_batch(plan, flat_t[start:stop])
                start = stop
            return
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        order_t = torch.as_tensor(order, device=self.device)
        stop = n - (n % batch_size) if (drop_last and n > batch_size) else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size], order_t[start:start + batch_size])

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

    def dialogue_batch(self, dialogue_ids, idx_t=None):
        """Batch of whole dialogues (numbers into ``self.dialogues``): ``batch`` of their utterances, flat in
        dialogue order, plus ``dialog_index`` and ``dialog_mask`` (see the module docstring). ``idx_t``: those
        positions already on the device (``iter_batches`` passes a slice of the epoch's order)."""
        groups = [self.dialogues[d] for d in dialogue_ids]
        lens = np.array([len(g) for g in groups])
        width = int(lens.max())
        index = np.full((len(groups), width), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for row, (s, k) in enumerate(zip(starts, lens)):
            index[row, :k] = np.arange(s, s + k)
        out = self.batch(np.concatenate(groups), idx_t)
        out["dialog_index"] = self._to_device(index)
        out["dialog_mask"] = out["dialog_index"] >= 0
        return out
