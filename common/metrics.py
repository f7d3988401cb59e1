"""Classification metrics as the MER challenges report them (accuracy and weighted F1), a per-class report and
the confusion matrix.

Every run computes them (after each epoch, and on the test list with ``--test``), so they are computed here in
numpy with scikit-learn's definitions and layout (``accuracy_score``, ``f1_score(average="weighted",
zero_division=0)``, ``classification_report(digits=4, zero_division=0)``, ``confusion_matrix``; checked against
them in tests/test_metrics_device.py): importing scikit-learn cost about 2 s of every train.py process."""

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


def confusion(labels, preds, n_classes):
    """The confusion matrix ``(n_classes, n_classes)`` of integer labels 0..n-1 (rows: truth, columns: prediction)."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    return np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def full_report(labels, preds, class_names, digits=4):
    """Per-class report text (precision, recall, F1 and support per class, then accuracy, macro and weighted
    averages; scikit-learn's ``classification_report`` layout) and confusion matrix (rows: truth, columns:
    prediction) of integer labels and predictions in ``range(len(class_names))``."""
    k = len(class_names)
    cm = confusion(labels, preds, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    total = int(support.sum())
    heading = "weighted avg"
    width = max(max(len(c) for c in class_names), len(heading), digits)
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    text = ("{:>{width}s} " + " {:>9}" * 4).format("", "precision", "recall", "f1-score", "support", width=width)
    text += "\n\n"
    for j, name in enumerate(class_names):
        text += row.format(name, precision[j], recall[j], f1[j], int(support[j]), width=width, digits=digits)
    text += "\n"
    accuracy = float(tp.sum() / total) if total else 0.0
    text += ("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n").format(
        "accuracy", "", "", accuracy, total, width=width, digits=digits)
    weights = support / total if total else np.zeros(k)
    for name, avg in (("macro avg", lambda v: v.mean()), ("weighted avg", lambda v: (v * weights).sum())):
        text += row.format(name, avg(precision), avg(recall), avg(f1), total, width=width, digits=digits)
    return text, cm


def format_confusion(cm, class_names):
    width = max(8, max(len(c) for c in class_names) + 1)
    head = " " * width + "".join(f"{c[:width - 1]:>{width}}" for c in class_names)
    rows = [f"{name:<{width}}" + "".join(f"{v:>{width}d}" for v in row)
            for name, row in zip(class_names, cm)]
    return "\n".join(["truth \\ pred", head] + rows)
