"""Training curves and confusion matrices as PNG files (matplotlib, no display needed).

matplotlib is imported when a figure is drawn, not with this module, so that a run without plots
(``--no_plots``) and whatever imports engine.trainer never load it."""

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics, path_loss, path_metric):
    """``metrics``: DataFrame with epoch, train_loss, valid_loss, valid_acc, valid_f1 (and select_f1, where a
    select_info list chose the best epoch)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(metrics["epoch"], metrics["train_loss"], label="train")
    ax.plot(metrics["epoch"], metrics["valid_loss"], label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    ax.set_title("loss")
    fig.tight_layout()
    fig.savefig(path_loss, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(metrics["epoch"], metrics["valid_acc"], label="valid accuracy")
    ax.plot(metrics["epoch"], metrics["valid_f1"], label="valid weighted F1")
    chooser = "valid_f1"
    if "select_f1" in metrics.columns:  # a split with select_info: that list chose the best epoch
        ax.plot(metrics["epoch"], metrics["select_f1"], label="select weighted F1 (chooses the epoch)")
        chooser = "select_f1"
    best = int(np.argmax(metrics[chooser].to_numpy()))
    ax.axvline(metrics["epoch"].iloc[best], color="grey", ls="--", lw=1, label="best epoch")
    ax.set_xlabel("epoch")
    ax.legend()
    ax.set_title("validation metrics")
    fig.tight_layout()
    fig.savefig(path_metric, dpi=100)
    plt.close(fig)


def plot_confusion(cm, class_names, path, title="confusion matrix"):
    plt = _pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(class_names) + 2, 1.0 * len(class_names) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
