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
            ax.plot(history["epoch"], history[column], style, label=column)  # 1-based in the CSV
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="Training and validation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_histogram(score: np.ndarray, split: np.ndarray, label: np.ndarray | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    test = split == "test"
    # Scores are errors spanning orders of magnitude: log-spaced bins keep both modes visible.
    positive = score[score > 0]
    low, high = (positive.min(), positive.max()) if len(positive) else (1e-6, 1.0)
    bins = np.geomspace(low, max(high, low * 10), 40)
    if label is None:
        groups = {s: score[split == s] for s in ("train", "val", "test")}
    else:
        groups = {"train (normal)": score[split == "train"],
                  "test normal": score[test & (label == 0)],
                  "test anomalous": score[test & (label == 1)]}
    for name, values in groups.items():
        if len(values):
            ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.5,
                    label=f"{name} (n={len(values)})")
    ax.set(xlabel="anomaly score (reconstruction MSE, log scale)", ylabel="windows",
           title="Score distribution", xscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
