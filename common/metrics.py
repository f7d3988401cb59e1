"""Classification metrics as the MER challenges report them (accuracy and weighted F1).

:func:`emotion_metrics` runs after every epoch of every run, so it is computed here in numpy (the same
definitions as scikit-learn's ``accuracy_score`` and ``f1_score(average="weighted", zero_division=0)``, checked
against them in tests/test_metrics_device.py); importing scikit-learn costs about 2 s of every process start,
so only :func:`full_report` imports it, when it is called."""

import numpy as np


def emotion_metrics(labels, preds):
    """Accuracy and weighted F1 of integer predictions.

    Weighted F1: each class's F1 = 2 TP / (2 TP + FP + FN) (0 where it has neither truth nor prediction),
    weighted by the class's share of the true labels, over the classes that occur in ``labels`` or ``preds``
    (a class only predicted has weight 0), as scikit-learn's ``f1_score(average="weighted", zero_division=0)``."""
    labels = np.asarray(labels).ravel()
    preds = np.asarray(preds).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"{labels.size} labels but {preds.size} predictions")
    if labels.size == 0:
        return {"acc": 0.0, "f1": 0.0}
    classes, both = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    y, p = both[:labels.size], both[labels.size:]
    k = len(classes)
    tp = np.bincount(y[y == p], minlength=k).astype(np.float64)
    support = np.bincount(y, minlength=k).astype(np.float64)
    predicted = np.bincount(p, minlength=k).astype(np.float64)
    denom = support + predicted  # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return {"acc": float(tp.sum() / labels.size), "f1": float((f1 * support).sum() / support.sum())}


def full_report(labels, preds, class_names):
    """Per-class report text and confusion matrix (rows: truth, columns: prediction)."""
    from sklearn.metrics import classification_report, confusion_matrix

    idx = list(range(len(class_names)))
    text = classification_report(labels, preds, labels=idx, target_names=class_names,
                                 digits=4, zero_division=0)
    cm = confusion_matrix(labels, preds, labels=idx)
    return text, cm


def format_confusion(cm, class_names):
    width = max(8, max(len(c) for c in class_names) + 1)
    head = " " * width + "".join(f"{c[:width - 1]:>{width}}" for c in class_names)
    rows = [f"{name:<{width}}" + "".join(f"{v:>{width}d}" for v in row)
            for name, row in zip(class_names, cm)]
    return "\n".join(["truth \\ pred", head] + rows)
