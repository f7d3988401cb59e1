"""Which dialogue (or video) each utterance belongs to, and where it sits in it.

Context models read an utterance together with its neighbours. ``DialogueIndex`` maps a sample name to
``(dialogue id, order)``, read from label tables that carry a dialogue column (``config.DATASETS[...]
["group_col"]``: ``video`` for MOSI, ``dialogue`` for MELD) and an ``order`` column, or from a split list's
optional ``dialogues`` and ``orders`` lists (one per name, beside ``names``). ``groups(names)`` cuts
a name list into its dialogues: only the names of that list, so the context of a validation or test
utterance is made of its neighbours in the same list, never of another list and never of another dialogue.
A name without a dialogue id is a dialogue of its own.
"""

import os

import numpy as np
import pandas as pd

from dataloader.files import DataError, _preview, read_csv_names

ORDER_COL = "order"


class DialogueIndex:
    """``name -> dialogue id`` and ``name -> order`` (a number; NaN where unknown)."""

    def __init__(self, dialogue=None, order=None, sources=()):
        self.dialogue = dict(dialogue or {})
        self.order = dict(order or {})
        self.sources = list(sources)

    def __len__(self):
        return len(self.dialogue)

    def __contains__(self, name):
        return name in self.dialogue

    @classmethod
    def from_csvs(cls, paths, group_col="dialogue", order_col=ORDER_COL):
        """Read every CSV of ``paths`` that has ``name`` and ``group_col`` columns (the others are skipped:
        a test list with names only adds nothing). ``order_col`` is optional: without it the order is the
        order of the names in the list being cut. A name given two dialogue ids is an error."""
        index = cls()
        for path in paths:
            if not path:
                continue
            if not os.path.isfile(path):
                raise DataError(f"dialogue table '{path}' does not exist (give a CSV with name,{group_col}"
                                f"[,{order_col}] columns)")
            df = read_csv_names(path, ("name", group_col))
            if "name" not in df.columns or group_col not in df.columns:
                continue
            orders = df[order_col] if order_col in df.columns else None
            index._add(df["name"], df[group_col], orders, path, group_col)
        return index

    def _add(self, names, ids, orders, source, what="dialogue"):
        """Record ``name -> (id, order)``; a missing or empty id leaves the name alone; ``orders`` may be None
        (unknown) or hold non-numbers (unknown for those names). A name given another id than before is an
        error naming ``source``."""
        names = [str(n) for n in names]
        ids = list(ids)
        if orders is None:
            orders = [float("nan")] * len(names)
        orders = pd.to_numeric(pd.Series(list(orders), dtype=object), errors="coerce").astype(float).tolist()
        clash = []
        for n, d, o in zip(names, ids, orders):
            if d is None or (isinstance(d, float) and np.isnan(d)) or str(d).strip() == "":
                continue  # no dialogue id: the utterance stands alone
            d = str(d).strip()
            old = self.dialogue.get(n)
            if old is not None and old != d:
                clash.append(f"{n} ({old} vs {d})")
                continue
            self.dialogue[n] = d
            self.order[n] = o
        if clash:
            raise DataError(f"'{source}' gives {len(clash)} names another {what} than an earlier table: "
                            f"{_preview(clash)}; each utterance belongs to one dialogue")
        self.sources.append(source)

    def add_split(self, split_doc, source="the split list"):
        """Add the optional ``dialogues`` (and ``orders``) lists of a split list's ``train_info`` and
        ``valid_info`` (and ``select_info``, where there is one; one per name; an empty or null dialogue: the name
        stands alone)."""
        for part in ("train_info", "valid_info", "select_info"):
            info = split_doc.get(part) or {}
            if "dialogues" in info:
                self._add(info["names"], info["dialogues"], info.get("orders"), f"{source} ({part})")
        return self

    @classmethod
    def for_dataset(cls, ds_cfg, extra_csvs=(), group_col=None):
        """The index of a data set of ``config.DATASETS``: its ``label_csv``, ``test_csv``, ``test_label_csv`` and
        ``unlabeled_csv`` (those that exist and have the dialogue column), then ``extra_csvs`` (e.g.
        ``--dialogue_csv``). ``group_col`` defaults to the data set's ``group_col``, else ``dialogue``."""
        ds_cfg = ds_cfg or {}
        group_col = group_col or ds_cfg.get("group_col") or "dialogue"
        paths = [ds_cfg.get(k) for k in ("label_csv", "test_csv", "test_label_csv", "unlabeled_csv")]
        paths = [p for p in dict.fromkeys(paths) if p and os.path.isfile(p)]
        paths += [p for p in (extra_csvs or []) if p]
        return cls.from_csvs(paths, group_col)

    def groups(self, names):
        """Positions into ``names``, one int array per dialogue, each sorted by order (then by position in
        ``names``). Dialogues come in the order of their first utterance in ``names``; a name with no
        dialogue id is a dialogue of one. Every position appears exactly once."""
        members, first = {}, []
        for pos, n in enumerate(names):
            d = self.dialogue.get(n)
            key = ("dialogue", d) if d is not None else ("alone", pos)
            if key not in members:
                members[key] = []
                first.append(key)
            members[key].append(pos)
        out = []
        for key in first:
            pos = members[key]
            if len(pos) > 1:
                order = np.array([self.order.get(names[p], np.nan) for p in pos], dtype=float)
                if not np.isnan(order).any():
                    pos = [p for _, p in sorted(zip(order, pos))]
            out.append(np.asarray(pos, dtype=np.int64))
        return out

    def has_dialogues(self):
        """True when some dialogue holds two or more of the indexed names."""
        seen = set()
        for d in self.dialogue.values():
            if d in seen:
                return True
            seen.add(d)
        return False


def check_list_dialogues(index, names, what, groups=None):
    """Refuse a list of two or more names that ``index`` cuts into dialogues of one utterance each, while the data
    set has dialogues: a context model would score every utterance alone, unlike the lists it trained on (the
    dialogues of a list come from the tables named in the message, or --dialogue_csv). A list whose names the
    tables do give, each as a dialogue of its own, is what the user wrote and passes: only names the tables do not
    know (a list of names alone) are refused."""
    groups = index.groups(list(names)) if groups is None else groups
    if len(names) < 2 or any(len(g) > 1 for g in groups) or not index.has_dialogues():
        return
    if any(n in index for n in names):
        return
    raise DataError(f"{what}: its {len(names)} names are {len(names)} dialogues of one utterance for a context "
                    f"model, though the data set has dialogues (read from {', '.join(index.sources) or 'no table'}); "
                    "give the list's dialogue and order: re-import the data set with preprocess/import_dataset.py "
                    "(its test and unlabelled lists carry them), or pass --dialogue_csv CSV with name,dialogue,order")


def describe_groups(groups):
    """A one-line summary of a list cut into dialogues (for the log)."""
    lens = np.array([len(g) for g in groups])
    return (f"{int(lens.sum())} utterances in {len(lens)} dialogues (length mean {lens.mean():.1f}, max "
            f"{lens.max()}; {int((lens == 1).sum())} of one utterance)")
