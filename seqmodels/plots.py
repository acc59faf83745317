"""PNG plots a person can look at (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def loss_curves(history: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for column in ("train_loss", "val_loss", "train_recon", "val_recon", "train_task", "val_task"):
        if column in history and history[column].notna().any():
            style = "-" if column.endswith("loss") else ":"
            ax.plot(history["epoch"] + 1, history[column], style, label=column)
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="Training and validation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_histogram(score: np.ndarray, split: np.ndarray, label: np.ndarray | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    test = split == "test"
    bins = np.histogram_bin_edges(score, bins=40)
    if label is None:
        groups = {s: score[split == s] for s in ("train", "val", "test")}
    else:
        groups = {"train (normal)": score[split == "train"],
                  "test normal": score[test & (label == 0)],
                  "test anomalous": score[test & (label == 1)]}
    for name, values in groups.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.5, density=True, label=f"{name} (n={len(values)})")
    ax.set(xlabel="anomaly score (reconstruction MSE)", ylabel="density", title="Score distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
