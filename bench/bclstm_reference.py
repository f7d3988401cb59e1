"""bc-LSTM as its authors released it, re-implemented: the reference for the MOSI context figure.

    python bench/bclstm_reference.py [--seeds 0,1,2,3,4] [--device auto]
    python bench/bclstm_reference.py --dataset meld --feat meld-minilm-UTT,meld-tfidf-UTT

The bc-LSTM paper (Poria et al., ACL 2017) reports 0.803 test accuracy on the MOSI features in
../shared/data/mosi-bclstm. Its released code (declare-lab/multimodal-deep-learning, bc-LSTM/lstm.py) trains
the hierarchical model below; its README says the paper's SVM on the penultimate layer was left out "at some
performance cost". This script follows that recipe so that the framework's own figure (``python
bench/mosi_bclstm.py --context``) can be set beside what the recipe gives on the same features and split:

* level 1, one per feature: each video's utterances, in order, through a bidirectional LSTM (300 per
  direction, dropout 0.6 on its inputs), dropout 0.9, a 100-wide tanh layer, dropout 0.9, a softmax;
* level 2: the three 100-wide level-1 states of each utterance, concatenated, through the same network with
  input dropout 0.4 and a 500-wide ReLU layer; its prediction is the result;
* each level: Adadelta (lr 1.0, rho 0.95), batches of 10 videos, the loss over real utterances only, the last
  20% of the training videos (in list order) for validation, stopped 10 epochs after the best validation
  loss (at most 200) and, as the released code does, kept at its last epoch.

Features go in raw, as in the released code; ``--standardise`` z-scores them with the training list's
statistics first (the audio features' scale, std 23, saturates the LSTM's input). Each seed sets the
initialisation, dropout and batch order.
The last line is ``bc-LSTM reference test accuracy: <mean> +- <std>``.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import _paths  # noqa: F401
import config
from dataloader import DialogueIndex, load_features
from models.base import masked_mean
from dataloader.files import label_indices, read_names_csv, read_label_csv
from common.utils import add_threads_flag, resolve_device, set_seed, set_threads
from corpora.mosi import convert as convert_mosi

FEATS = ["mosi-bclstm-text", "mosi-bclstm-audio", "mosi-bclstm-video"]


class ContextualLSTM(nn.Module):
    """One level of bc-LSTM: (videos, utterances, dim) -> class logits and the penultimate states."""

    def __init__(self, in_dim, width, num_classes, input_dropout, activation, lstm_width=300):
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout)
        self.lstm = nn.LSTM(in_dim, lstm_width, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.9)
        self.dense = nn.Linear(2 * lstm_width, width)
        self.activation = activation
        self.out = nn.Linear(width, num_classes)

    def forward(self, x, mask):
        h, _ = self.lstm(self.input_dropout(x) * mask.unsqueeze(-1))
        state = self.activation(self.dense(self.drop(h)))
        return self.out(self.drop(state)), state


def by_video(values, groups):
    """Per-utterance ``values`` (rows in list order) -> ``(videos, longest video, ...)`` in each video's
    order (``groups``: positions per video, from ``DialogueIndex.groups``), zeros on padding."""
    out = np.zeros((len(groups), max(len(g) for g in groups), *values.shape[1:]), dtype=values.dtype)
    for i, g in enumerate(groups):
        out[i, :len(g)] = values[g]
    return torch.from_numpy(out)


def masked_ce(logits, y, mask):
    """Mean cross-entropy over the real utterances (``mask`` 1) of padded videos."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return masked_mean(loss, mask.reshape(-1))


def fit_level(x, y, mask, width, num_classes, input_dropout, activation, seed, device, max_epochs=200, patience=10,
              lstm_width=300):
    """Train one level as the released code does; returns the model (last epoch) and the epochs run."""
    set_seed(seed)
    model = ContextualLSTM(x.shape[-1], width, num_classes, input_dropout, activation, lstm_width).to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    n_train = int(round(len(x) * 0.8))
    x, y, mask = x.to(device), y.to(device), mask.to(device)
    gen = torch.Generator().manual_seed(seed)
    best, waited, epoch = float("inf"), 0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, 10):
            b = order[start:start + 10].to(device)
            opt.zero_grad()
            masked_ce(model(x[b], mask[b])[0], y[b], mask[b]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            valid_loss = float(masked_ce(model(x[n_train:], mask[n_train:])[0], y[n_train:], mask[n_train:]))
        if valid_loss < best:
            best, waited = valid_loss, 0
        else:
            waited += 1
            if waited >= patience:
                break
    return model.eval(), epoch


def standardise(train_x, train_mask, *others):
    real = train_mask.reshape(-1) > 0
    flat = train_x.reshape(-1, train_x.shape[-1])[real]
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    return [((t - mean) / std) * m.unsqueeze(-1) for t, m in [(train_x, train_mask), *others]]


def run_seed(data, num_classes, seed, device, max_epochs, lstm_width=300, log=print):
    """Both levels for one seed; returns the level-2 test accuracy and its epochs."""
    (train_x, train_y, train_mask), (test_x, test_y, test_mask) = data
    states_train, states_test = [], []
    for name in train_x:
        model, epochs = fit_level(train_x[name], train_y, train_mask, 100, num_classes, 0.6, torch.tanh, seed,
                                  device, max_epochs, lstm_width=lstm_width)
        with torch.no_grad():
            s_train = model(train_x[name].to(device), train_mask.to(device))[1].cpu()
            logits, s_test = model(test_x[name].to(device), test_mask.to(device))
        acc = accuracy(logits.cpu(), test_y, test_mask)
        log(f"  seed {seed} level 1 {name}: {epochs} epochs, test accuracy {acc:.4f}")
        states_train.append(s_train)
        states_test.append(s_test.cpu())
    x_train, x_test = torch.cat(states_train, -1), torch.cat(states_test, -1)
    model, epochs = fit_level(x_train, train_y, train_mask, 500, num_classes, 0.4, torch.relu, seed, device,
                              max_epochs, lstm_width=lstm_width)
    with torch.no_grad():
        logits = model(x_test.to(device), test_mask.to(device))[0].cpu()
    return accuracy(logits, test_y, test_mask), epochs


def accuracy(logits, y, mask):
    hit = (logits.argmax(-1) == y).float() * mask
    return float(hit.sum() / mask.sum())


def load_data(dataset, feats, standardise_inputs=False, log=print):
    ds = config.DATASETS[dataset]
    classes = config.EMO_RULE[ds["emo_rule"]]
    train_names = read_label_csv(ds["label_csv"], classes)["name"].tolist()
    test_names = read_names_csv(ds["test_csv"])
    index = DialogueIndex.for_dataset(ds)
    stores = load_features(feats, progress=False)
    out = []
    for names, label_csv in ((train_names, ds["label_csv"]), (test_names, ds["test_label_csv"])):
        groups = index.groups(names)
        x = {s.name: by_video(s.gather(s.rows(names))[0], groups) for s in stores}
        y = by_video(label_indices(label_csv, names, classes), groups)
        out.append((x, y, by_video(np.ones(len(names), dtype=np.float32), groups)))
        log(f"{len(names)} utterances in {len(groups)} videos/dialogues")
    (train_x, train_y, train_mask), (test_x, test_y, test_mask) = out
    if standardise_inputs:
        for name in feats:
            train_x[name], test_x[name] = standardise(train_x[name], train_mask, (test_x[name], test_mask))
    return out, len(classes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mosi")
    p.add_argument("--feat", default=",".join(FEATS), help="one level-1 network per feature (comma list)")
    p.add_argument("--src", default=os.path.join(_paths.REPO_ROOT, "..", "shared", "data", "mosi-bclstm"),
                   help="MOSI release, converted with preprocess/mosi_bclstm.py when the data set is missing")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--max_epochs", type=int, default=200)
    p.add_argument("--standardise", action="store_true", help="z-score the features (training statistics)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.dataset not in config.DATASETS:
        p.error(f"unknown data set '{args.dataset}'; known: {', '.join(sorted(config.DATASETS))}")
    ds = config.DATASETS[args.dataset]
    if args.dataset == "mosi" and not os.path.isfile(ds["label_csv"]):
        convert_mosi(args.src, os.path.dirname(ds["label_csv"]))
    device = resolve_device(args.device)
    feats = [f.strip() for f in args.feat.split(",") if f.strip()]
    start = time.time()
    data, num_classes = load_data(args.dataset, feats, args.standardise)
    accs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        acc, epochs = run_seed(data, num_classes, seed, device, args.max_epochs)
        accs.append(acc)
        print(f"seed {seed}: level 2 {epochs} epochs, test accuracy {acc:.4f}", flush=True)
    print(f"{len(accs)} seeds in {time.time() - start:.0f} s on {device}")
    print(f"bc-LSTM reference test accuracy: {np.mean(accs):.4f} +- {np.std(accs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
