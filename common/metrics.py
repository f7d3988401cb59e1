"""Classification metrics as the MER challenges report them (accuracy and weighted F1)."""

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def emotion_metrics(labels, preds):
    """Accuracy and weighted F1 of integer predictions."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    return {
        "acc": float(accuracy_score(labels, preds)),
        "f1": float(f1_score(labels, preds, average="weighted", zero_division=0)),
    }


def full_report(labels, preds, class_names):
    """Per-class report text and confusion matrix (rows: truth, columns: prediction)."""
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
