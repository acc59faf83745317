"""Scores against labels and against a PCA baseline of the same latent size.

PCA is the honest yardstick for an autoencoder: a linear model with the same code size,
fitted on the same training windows. If the network cannot beat it on reconstruction
error or on anomaly AUROC, the network is not earning its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from seqmodels.config import SPLITS


@dataclass
class Scored:
    """Per-row anomaly scores with split and (optional) label."""

    split: np.ndarray
    score: np.ndarray
    label: np.ndarray | None


def auroc(score: np.ndarray, label: np.ndarray | None) -> tuple[float | None, str | None]:
    """ROC-AUC, or None with the reason when it is undefined."""
    if label is None:
        return None, "no labels in the data"
    classes = np.unique(label)
    if len(classes) < 2:
        return None, f"only label {classes.tolist()} present; AUROC needs normal and anomalous rows"
    return float(roc_auc_score(label, score)), None


def summarise(scored: Scored) -> dict[str, Any]:
    per_split = {s: float(scored.score[scored.split == s].mean())
                 for s in SPLITS if np.any(scored.split == s)}
    test = scored.split == "test"
    if scored.label is not None:
        # Held-out normal rows measure reconstruction quality; anomalous rows *should*
        # reconstruct badly, so the all-of-test figure mixes two opposite goals.
        for name, value in (("test_normal", 0), ("test_anomalous", 1)):
            rows = test & (scored.label == value)
            if rows.any():
                per_split[name] = float(scored.score[rows].mean())
    value, reason = auroc(scored.score[test], None if scored.label is None else scored.label[test])
    summary: dict[str, Any] = {"mse": per_split, "test_auroc": value}
    if reason:
        summary["test_auroc_note"] = reason
    return summary


def pca_scores(x: np.ndarray, split: np.ndarray, latent_dim: int, seed: int) -> np.ndarray:
    """Per-row reconstruction MSE of a PCA with `latent_dim` components fitted on train rows."""
    train = x[split == "train"]
    components = min(latent_dim, train.shape[0], train.shape[1])
    pca = PCA(n_components=components, random_state=seed).fit(train)
    reconstruction = pca.inverse_transform(pca.transform(x))
    return ((reconstruction - x) ** 2).mean(axis=1)


def evaluate_scores(model: Scored, pca: Scored) -> dict[str, Any]:
    model_summary, pca_summary = summarise(model), summarise(pca)
    result = {"model": model_summary, "pca": pca_summary}
    for split in ("test", "test_normal"):
        if split in model_summary["mse"]:
            pca_mse = max(pca_summary["mse"][split], 1e-12)
            result[f"{split}_mse_ratio_vs_pca"] = model_summary["mse"][split] / pca_mse
    return result


def class_accuracy(frame: pd.DataFrame) -> dict[str, float]:
    """Classifier-head accuracy per split."""
    hits = frame["predicted_class"].to_numpy() == frame["label"].to_numpy()
    split = frame["split"].to_numpy().astype(str)
    return {s: float(hits[split == s].mean()) for s in SPLITS if np.any(split == s)}


def score_table(frame: pd.DataFrame, anomaly_labels: bool = True) -> Scored:
    """Scores with their anomaly labels; class labels (images) are not anomaly labels."""
    label = frame["label"].to_numpy() if anomaly_labels and "label" in frame.columns else None
    return Scored(split=frame["split"].to_numpy().astype(str), score=frame["score"].to_numpy(np.float64),
                  label=label)


def unigram_cross_entropy(tokens: np.ndarray, split: np.ndarray, pad: int = 0) -> np.ndarray:
    """Per-row mean -log p(token) under the training unigram distribution (the baseline a
    sequence autoencoder must beat by far); padding ignored, add-one smoothing."""
    train = tokens[split == "train"]
    counts = np.bincount(train[train != pad].ravel(), minlength=tokens.max() + 1).astype(np.float64) + 1.0
    counts[pad] = 0.0
    neg_log_p = -np.log(np.where(counts > 0, counts / counts.sum(), 1.0))
    mask = tokens != pad
    return (neg_log_p[tokens] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def evaluate_tokens(tokens: np.ndarray, decoded: np.ndarray | None, score: np.ndarray,
                    split: np.ndarray) -> dict[str, Any]:
    """Cross-entropy per token (model vs unigram) and greedy exact-match, per split."""
    unigram = unigram_cross_entropy(tokens, split)
    splits = [s for s in SPLITS if np.any(split == s)]
    result: dict[str, Any] = {
        "model": {"cross_entropy": {s: float(score[split == s].mean()) for s in splits}},
        "unigram": {"cross_entropy": {s: float(unigram[split == s].mean()) for s in splits}},
    }
    if decoded is not None:
        exact = (decoded == tokens).all(axis=1)
        result["model"]["exact_match"] = {s: float(exact[split == s].mean()) for s in splits}
    return result
